"""The engine core, the bottom layer: ``Tensor`` and reverse-mode autodiff (``engine``), every
differentiable op (``ops``), layers and networks (``nn``, ``models``, ``graph``), the plain-NumPy
references (``naive``), finite-difference checks (``gradcheck``), devices (``device``) and the
one way files are read and written (``safe_io``).  The kernels are ``tinygrad_explain.kernels``.
Imports nothing from the layers above (data, modelfiles, training, explain, apps)."""
