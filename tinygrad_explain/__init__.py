"""tinygrad-explain: a from-scratch autodiff engine for explaining CNNs by backprop to the input.

    import tinygrad_explain as te
    model = te.load_model()                      # the embedded model (weights/)
    x = te.Tensor(image, requires_grad=True)     # (1, C, H, W) float32, preprocessed
    scores = model(x)                            # (1, classes) unnormalised scores
    scores[0, c].backward()                      # dS_c / dx  ->  x.grad
"""
import importlib.util as _ilu
import os as _os
import sys as _sys


def _map_checkout_kernels():
    """Make ``tinygrad_explain.kernels`` importable from a source checkout.

    The kernels live at the checkout's top level (``kernels/``, beside this
    package) and an install maps them into the package.  Running from a clone
    that was never installed (``PYTHONPATH=. python ...``), or from a second
    checkout while another one is installed, must use *this* checkout's
    kernels: map them here, before anything imports them.  (An editable install
    maps them the same way, through setuptools' own import hook; why the folder is
    mapped rather than moved into the package: docs/kernels.md.)"""
    name = __name__ + ".kernels"
    here = _os.path.dirname(_os.path.abspath(__file__))
    if name in _sys.modules or _os.path.isdir(_os.path.join(here, "kernels")):
        return                                   # already imported, or an installed wheel
    root = _os.path.join(_os.path.dirname(here), "kernels")
    init = _os.path.join(root, "__init__.py")
    if not _os.path.isfile(init):
        raise ImportError(f"tinygrad_explain: the kernels package is missing: no {init} beside the package "
                          "(in a checkout it is the top-level kernels/ folder); restore it, or install the "
                          "project with `pip install -e .` from a complete checkout")
    spec = _ilu.spec_from_file_location(name, init, submodule_search_locations=[root])
    module = _ilu.module_from_spec(spec)
    _sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del _sys.modules[name]
        raise
    _sys.modules[__name__].kernels = module      # te.kernels, as an ordinary import would set it


_map_checkout_kernels()

from .core.engine import Tensor, Function, no_grad, relu_backward, manual_seed, RELU_RULES  # noqa: F401
from .core.device import set_num_threads  # noqa: F401
from .core import ops  # noqa: F401  (attaches Tensor operators)
from .core.ops import (conv2d, linear, relu, max_pool2d, local_response_norm, adaptive_avg_pool2d,  # noqa: F401
                  dropout, flatten, unflatten, upsample, exp, log, amax, softmax, logsumexp, log_softmax, cross_entropy)
from .core.gradcheck import gradcheck, GradcheckError, central_differences  # noqa: F401
from .core import engine, device, nn, models, graph, naive, safe_io  # noqa: F401
from .core.models import Network  # noqa: F401
from .core.graph import GraphNetwork  # noqa: F401
from .modelfiles import modelfile, onnx_import, shipped  # noqa: F401
from .modelfiles.modelfile import save_model, load_model, ModelFileError  # noqa: F401
from .data import image, imagenet, scenes, fashion_mnist  # noqa: F401
from .training import optim  # noqa: F401
from . import explain  # noqa: F401
from . import _aliases
from .version import __version__  # noqa: F401

_aliases.install()                               # the old flat paths (tinygrad_explain.engine, ...) for one release
