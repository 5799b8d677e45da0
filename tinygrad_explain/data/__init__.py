"""Data: images (file <-> model input), the scenes data set, Fashion-MNIST, ImageNet's class names,
and the shipped data files beside them (``*.npz``, ``*.txt``).  Imports only from ``core``."""
