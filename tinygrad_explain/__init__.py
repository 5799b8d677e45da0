"""tinygrad-explain: a from-scratch autodiff engine for explaining CNNs by backprop to the input.

    import tinygrad_explain as te
    model = te.load_model()                      # the embedded model (weights/)
    x = te.Tensor(image, requires_grad=True)     # (1, C, H, W) float32, preprocessed
    scores = model(x)                            # (1, classes) unnormalised scores
    scores[0, c].backward()                      # dS_c / dx  ->  x.grad
"""
from .engine import Tensor, Function, no_grad, relu_backward, manual_seed, RELU_RULES  # noqa: F401
from .device import set_num_threads  # noqa: F401
from . import ops  # noqa: F401  (attaches Tensor operators)
from .ops import (conv2d, linear, relu, max_pool2d, local_response_norm, adaptive_avg_pool2d,  # noqa: F401
                  dropout, flatten, log_softmax, cross_entropy, shift_diff)
from .gradcheck import gradcheck, GradcheckError  # noqa: F401
from . import nn, models  # noqa: F401
from .models import Network  # noqa: F401
from .modelfile import save_model, load_model, ModelFileError  # noqa: F401
from . import image, imagenet, explain  # noqa: F401

__version__ = "0.1.0"
