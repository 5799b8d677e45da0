"""Model files: the HDF5 model file (``modelfile``), the safe readers and converters of PyTorch,
Caffe and ONNX networks, and where the shipped files live (``shipped``).  Imports only from the
layers below (``core``, ``data``)."""
