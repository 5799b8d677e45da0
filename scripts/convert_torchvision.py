#!/usr/bin/env python
"""Convert torchvision's AlexNet checkpoint (.pth) to a tinygrad-explain model file.

    python scripts/convert_torchvision.py alexnet-owt-7be5be79.pth weights/alexnet_torchvision.h5

The .pth is read without torch and without unpickling arbitrary objects
(see tinygrad_explain/modelfiles/torch_checkpoint.py).  Expected problems -- a missing,
truncated, unsafe or non-AlexNet file -- print one line and exit with code 2.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout


def main(argv=None):
    from tinygrad_explain.modelfiles.convert import cli
    return cli("torchvision", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
