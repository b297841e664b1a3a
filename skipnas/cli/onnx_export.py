"""``skipnas onnx``: a model folder's network as model.onnx beside its weights."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from skipnas.cli._common import console


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "onnx",
        help="write MODEL_DIR/model.onnx (any image size), checked against PyTorch, for skipnas count --engine onnx",
        description="Export a model folder's network to ONNX (dynamic batch, height and width) as model.onnx beside "
        "its weights, after checking that onnxruntime's output matches PyTorch's within 1e-4 on random inputs. "
        'Needs pip install "skipnas[onnx]". Count with it: skipnas count MODEL_DIR IMAGES --engine onnx.',
    )
    parser.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="folder written by skipnas train or export")
    parser.set_defaults(func=_onnx)


def _onnx(args: argparse.Namespace) -> int:
    from skipnas.onnxio import write_onnx

    path = write_onnx(args.model_dir)
    console().print(f"wrote {path} (inputs: image, N x C x H x W, H and W any size; outputs: logits)")
    return 0
