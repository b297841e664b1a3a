"""``skipnas serve``: a local counting page. :mod:`.corrections` holds one image's particles and
edits (numpy only), :mod:`.workspace` the model, the uploads and the work folder, :mod:`.app` the web app."""
