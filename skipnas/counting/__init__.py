"""Counting: probability map -> particles (``postprocess``), calibrating the post-processing on
validation images (``calibrate``) and a baseline with no network (``classical``). Numpy and OpenCV
only. Import the sub-modules directly; this package imports nothing, so one sub-module loads alone."""

from __future__ import annotations
