#!/usr/bin/env python
"""Convert torchvision's AlexNet checkpoint (.pth) to a tinygrad-explain model file.

    python scripts/convert_torchvision.py alexnet-owt-7be5be79.pth weights/alexnet_torchvision.h5

The .pth is read without torch and without unpickling arbitrary objects
(see tinygrad_explain/torch_checkpoint.py).  Expected problems -- a missing,
truncated, unsafe or non-AlexNet file -- print one line and exit with code 2.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("input", help="torchvision AlexNet state dict saved by torch.save (zip format)")
    ap.add_argument("output", help="HDF5 model file to write, e.g. weights/alexnet_torchvision.h5")
    args = ap.parse_args(argv)
    from tinygrad_explain.convert import convert_torchvision
    try:
        model = convert_torchvision(args.input, args.output)
    except (ValueError, KeyError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"convert_torchvision: error: {msg}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: torchvision AlexNet, input {model.input_shape}, "
          f"{model.num_classes} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
