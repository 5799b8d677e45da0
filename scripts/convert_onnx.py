#!/usr/bin/env python
"""Convert an ONNX image classifier to a tinygrad-explain model file.

    python scripts/convert_onnx.py resnet18.onnx weights/resnet18.h5 --imagenet
    python scripts/convert_onnx.py net.onnx net.h5 --mean 0.5 0.5 0.5 --std 0.25 0.25 0.25 --class-names classes.txt

The ONNX file is read with the onnx package as data (tinygrad_explain/modelfiles/onnx_import.py
lists the supported ops and what is refused); the preprocessing, which ONNX does not
hold, is stored from the options.  Expected problems -- a missing, damaged or
unsupported file -- print one line and exit with code 2.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout


def main(argv=None):
    from tinygrad_explain.modelfiles.onnx_import import cli
    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
