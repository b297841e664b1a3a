"""Counting: probability map -> particles (``postprocess``), calibrating the post-processing on
validation images (``calibrate``) and a baseline with no network (``classical``). Numpy and OpenCV
only. Import the sub-modules directly; this package imports nothing so that
``skipnas.train.metrics`` and ``skipnas.counting.calibrate`` can import each other's modules freely."""

from __future__ import annotations
