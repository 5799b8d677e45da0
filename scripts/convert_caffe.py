#!/usr/bin/env python
"""Convert Caffe's bvlc_alexnet.caffemodel to a tinygrad-explain model file.

    python scripts/convert_caffe.py bvlc_alexnet.caffemodel weights/alexnet_caffe.h5

Only the weights are read from the .caffemodel (no protobuf package needed);
the layer graph is this project's bvlc_alexnet (227x227 BGR input, LRN,
grouped conv2/4/5).  Expected problems -- a missing, truncated or
non-AlexNet file -- print one line and exit with code 2.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("input", help="bvlc_alexnet .caffemodel (binary NetParameter)")
    ap.add_argument("output", help="HDF5 model file to write, e.g. weights/alexnet_caffe.h5")
    args = ap.parse_args(argv)
    from tinygrad_explain.convert import convert_caffe
    try:
        model = convert_caffe(args.input, args.output)
    except (ValueError, KeyError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"convert_caffe: error: {msg}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: Caffe bvlc_alexnet, input {model.input_shape}, "
          f"{model.num_classes} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
