"""The one exception type for problems a user can cause and fix."""

from __future__ import annotations


class SkipnasError(Exception):
    """Bad input: a missing file, a malformed topology, a wrong storage URL, ...

    The message names the file (or value) and the fix. The CLI prints it as one line and
    exits with code 2; anything else is a bug and keeps its traceback.
    """
