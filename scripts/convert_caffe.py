#!/usr/bin/env python
"""Convert Caffe's bvlc_alexnet.caffemodel to a tinygrad-explain model file.

    python scripts/convert_caffe.py bvlc_alexnet.caffemodel weights/alexnet_caffe.h5

Only the weights are read from the .caffemodel (no protobuf package needed);
the layer graph is this project's bvlc_alexnet (227x227 BGR input, LRN,
grouped conv2/4/5).  Expected problems -- a missing, truncated or
non-AlexNet file -- print one line and exit with code 2.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout


def main(argv=None):
    from tinygrad_explain.modelfiles.convert import cli
    return cli("caffe", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
