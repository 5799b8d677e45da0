"""Shared helpers for the engine tests (not a test module itself).

* ``rng``, ``away_from_zero``, ``distinct``: seeded test inputs (no ReLU kinks
  near a sample, no max-pool ties).
* ``one_and_all_threads``: a function's results serial and parallel.
* ``numeric_grad``: central differences of a scalar function of an array,
  independent of ``te.gradcheck`` (used where gradcheck's random output
  direction would get in the way, e.g. the sign-dependent ReLU rules).
* ``tiny_network``: a small Network with every layer type AlexNet uses.
* ``torch_rule_relu``: a torch ReLU whose backward follows a ReLU rule (what Captum's hooks do).
* ``torch_alexnet`` / ``torch_state_dict``: PyTorch reference AlexNets whose
  ``nn.Sequential`` has exactly one module per te layer, in te's order, so
  that module ``i`` is ``te_model.layer_names[i]`` and ``seq[:i + 1]`` is the
  prefix network that ``te_model(x, until=layer_names[i])`` must match.
"""
from __future__ import annotations

import numpy as np
import pytest

import tinygrad_explain as te
from tinygrad_explain.core import nn


def rng(seed=0):
    return np.random.default_rng(seed)


def away_from_zero(shape, seed=0, lo=0.1):
    """Standard normal values, pushed to |v| >= lo (no kinks within eps of a sample)."""
    v = rng(seed).standard_normal(shape)
    return np.where(v >= 0, v + lo, v - lo)


def distinct(shape, seed=0, spacing=1e-2):
    """Values all different by >= spacing (no max-pool ties), negative and positive."""
    n = int(np.prod(shape))
    return (rng(seed).permutation(n) - n / 2).reshape(shape) * spacing


@pytest.fixture(scope="module")
def serial_kernels():
    """Run the Numba kernels on one thread for a module of tiny-array tests.

    Gradient checks call kernels thousands of times on arrays of a few hundred
    elements; each parallel launch costs a thread-pool round trip that, on a
    busy 2-core machine, is ~1000x the work itself.  The parallel paths are
    tested separately (``test_kernels_parallel_equals_serial``, and the
    full-size AlexNets in test_torch_reference.py run with all threads)."""
    try:
        import numba
    except ImportError:
        yield
        return
    prev = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(prev)


def one_and_all_threads(run):
    """(run() on one Numba thread, run() on all of them), the thread count restored after."""
    import numba
    prev = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        serial = run()
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        return serial, run()
    finally:
        numba.set_num_threads(prev)


def edit(path, fn):
    """Open an HDF5 file for writing, let ``fn(f)`` change it, return the path."""
    import h5py
    with h5py.File(path, "r+") as f:
        fn(f)
    return path


def forward_difference(t, axis=-1):
    """y = t[..., 1:] - t[..., :-1] along ``axis``, by indexing (what total variation
    sums): its gradient is indexing's scatter, dx[..., 1:] += g, dx[..., :-1] -= g."""
    hi = [slice(None)] * t.ndim
    lo = list(hi)
    hi[axis], lo[axis] = slice(1, None), slice(0, -1)
    return t[tuple(hi)] - t[tuple(lo)]


# d f / d arr by central differences: the package's one finite-difference loop
numeric_grad = te.central_differences


def tiny_network(seed=0, lrn_alpha=1e-4, dropout=True):
    """(2, 9, 9) input -> 3 classes; conv/relu/LRN/maxpool/grouped conv/flatten/linear/dropout."""
    te.manual_seed(seed)
    layers = [("conv1", nn.Conv2d(2, 4, 3, stride=1, padding=1)), ("relu1", nn.ReLU()),
              ("norm1", nn.LocalResponseNorm(3, lrn_alpha, 0.75, 1.0)),
              ("pool1", nn.MaxPool2d(3, 2)),
              ("conv2", nn.Conv2d(4, 6, 3, stride=1, padding=1, groups=2)), ("relu2", nn.ReLU()),
              ("flatten", nn.Flatten()),
              ("fc1", nn.Linear(6 * 4 * 4, 5)), ("relu3", nn.ReLU())]
    if dropout:
        layers.append(("drop", nn.Dropout(0.5)))
    layers.append(("fc2", nn.Linear(5, 3)))
    return te.Network(layers, (2, 9, 9))


def kink_margin(model, x):
    """How far the point ``x`` is from a non-differentiable point of ``model``:
    the smallest |ReLU input| and the smallest gap between the largest and the
    second largest value of any max-pool window whose maximum is positive
    (ties among zeros of a ReLU are harmless: those zeros are locally constant).
    Central differences with a step well below this margin are exact to O(eps^2)."""
    from numpy.lib.stride_tricks import sliding_window_view
    margin = np.inf
    h = te.Tensor(np.asarray(x, np.float64))
    with te.no_grad():
        for layer in model.layers.values():
            a = h.numpy()
            if isinstance(layer, nn.ReLU):
                margin = min(margin, float(np.abs(a).min()))
            elif isinstance(layer, nn.MaxPool2d):
                k, s, p = layer.kernel_size, layer.stride, layer.padding
                a = np.pad(a, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
                win = sliding_window_view(a, (k, k), axis=(2, 3))[:, :, ::s, ::s]
                win = np.sort(win.reshape(win.shape[:4] + (k * k,)), axis=-1)
                top = win[..., -1] > 0
                if top.any():
                    margin = min(margin, float((win[..., -1] - win[..., -2])[top].min()))
            h = layer(h)
    return margin


# --------------------------------------------------------------------------
# PyTorch reference AlexNets (same module order as te.models.alexnet)
# --------------------------------------------------------------------------
def torch_alexnet(variant, num_classes=1000):
    """The package's independent PyTorch AlexNet (tinygrad_explain.testing.torch_reference):
    module ``i`` of the Sequential is te layer ``i``, so ``seq[:i + 1]`` is a prefix net."""
    import torch.nn as tnn

    from tinygrad_explain.testing.torch_reference import layers
    return tnn.Sequential(*layers(variant, num_classes)).eval()


def torch_state_dict(torch_model, layer_names):
    """PyTorch state dict ("16.weight") -> te state dict ("fc6.weight")."""
    out = {}
    for k, v in torch_model.state_dict().items():
        i, p = k.split(".")
        out[f"{layer_names[int(i)]}.{p}"] = v.detach().cpu().numpy()
    return out


def rel_err(a, ref):
    """max |a - ref| relative to the largest magnitude of ref."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    assert a.shape == ref.shape, (a.shape, ref.shape)
    return float(np.abs(a - ref).max() / np.abs(ref).max())


# --------------------------------------------------------------------------
# torchvision's classifiers in plain PyTorch (torchvision does not install here)
# --------------------------------------------------------------------------
# Written after torchvision.models' definitions (module names as theirs, so the ONNX node
# names are theirs), with one change: where torchvision calls F.relu (GoogLeNet's
# BasicConv2d, ResNet's shared self.relu stays a module) an nn.ReLU module does it, because
# Captum's Deconvolution / GuidedBackprop hook nn.ReLU modules only.  ``width`` divides the
# channel counts (the structure is kept) so that float64 gradients stay quick.
def torch_classifiers():
    """{name: builder(num_classes, width) -> nn.Module} and the input size each test uses."""
    import torch
    from torch import nn as T

    def cbr(cin, cout, k, s=1, p=0, groups=1, act=T.ReLU, eps=1e-5):
        return [T.Conv2d(cin, cout, k, s, p, groups=groups, bias=False), T.BatchNorm2d(cout, eps=eps), act()]

    class VGG(T.Module):
        def __init__(self, num_classes=10, width=8):
            super().__init__()
            cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
            layers, cin = [], 3
            for v in cfg:
                if v == "M":
                    layers.append(T.MaxPool2d(2, 2))
                else:
                    layers += [T.Conv2d(cin, v // width, 3, padding=1), T.BatchNorm2d(v // width), T.ReLU()]
                    cin = v // width
            self.features = T.Sequential(*layers)
            self.avgpool = T.AdaptiveAvgPool2d((7, 7))
            hidden = 4096 // (2 * width)
            self.classifier = T.Sequential(T.Linear(cin * 49, hidden), T.ReLU(), T.Dropout(),
                                           T.Linear(hidden, hidden), T.ReLU(), T.Dropout(),
                                           T.Linear(hidden, num_classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    class BasicBlock(T.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = T.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = T.BatchNorm2d(planes)
            self.relu = T.ReLU()
            self.conv2 = T.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = T.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + identity)

    class Bottleneck(T.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = T.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = T.BatchNorm2d(planes)
            self.conv2 = T.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = T.BatchNorm2d(planes)
            self.conv3 = T.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = T.BatchNorm2d(planes * 4)
            self.relu = T.ReLU()
            self.downsample = downsample

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            return self.relu(self.bn3(self.conv3(out)) + identity)

    class ResNet(T.Module):
        def __init__(self, block, layers, num_classes=10, width=1):
            super().__init__()
            self.inplanes = 64 // width
            self.conv1 = T.Conv2d(3, self.inplanes, 7, 2, 3, bias=False)
            self.bn1 = T.BatchNorm2d(self.inplanes)
            self.relu = T.ReLU()
            self.maxpool = T.MaxPool2d(3, 2, 1)
            for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
                setattr(self, f"layer{i + 1}", self._make_layer(block, planes // width, n, 1 if i == 0 else 2))
            self.avgpool = T.AdaptiveAvgPool2d((1, 1))
            self.fc = T.Linear(512 // width * block.expansion, num_classes)

        def _make_layer(self, block, planes, blocks, stride):
            downsample = None
            if stride != 1 or self.inplanes != planes * block.expansion:
                downsample = T.Sequential(T.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                          T.BatchNorm2d(planes * block.expansion))
            layers = [block(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * block.expansion
            layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
            return T.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    def divisible(v, d=8):
        new = max(d, int(v + d / 2) // d * d)
        return new + d if new < 0.9 * v else new

    class InvertedResidual(T.Module):
        def __init__(self, inp, oup, stride, t):
            super().__init__()
            hidden = int(round(inp * t))
            self.use_res_connect = stride == 1 and inp == oup
            layers = [T.Sequential(*cbr(inp, hidden, 1, act=T.ReLU6))] if t != 1 else []
            layers += [T.Sequential(*cbr(hidden, hidden, 3, stride, 1, groups=hidden, act=T.ReLU6)),
                       T.Conv2d(hidden, oup, 1, 1, 0, bias=False), T.BatchNorm2d(oup)]
            self.conv = T.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetV2(T.Module):
        def __init__(self, num_classes=10, width=1):
            super().__init__()
            mult = 1.0 / width
            cin, last = divisible(32 * mult), divisible(1280 * max(1.0, mult))
            features = [T.Sequential(*cbr(3, cin, 3, 2, 1, act=T.ReLU6))]
            for t, c, n, s in [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1],
                               [6, 160, 3, 2], [6, 320, 1, 1]]:
                cout = divisible(c * mult)
                for i in range(n):
                    features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                    cin = cout
            features.append(T.Sequential(*cbr(cin, last, 1, act=T.ReLU6)))
            self.features = T.Sequential(*features)
            self.classifier = T.Sequential(T.Dropout(0.2), T.Linear(last, num_classes))

        def forward(self, x):
            x = T.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
            return self.classifier(torch.flatten(x, 1))

    class Fire(T.Module):
        def __init__(self, inplanes, squeeze, e1, e3):
            super().__init__()
            self.squeeze, self.squeeze_activation = T.Conv2d(inplanes, squeeze, 1), T.ReLU()
            self.expand1x1, self.expand1x1_activation = T.Conv2d(squeeze, e1, 1), T.ReLU()
            self.expand3x3, self.expand3x3_activation = T.Conv2d(squeeze, e3, 3, padding=1), T.ReLU()

        def forward(self, x):
            x = self.squeeze_activation(self.squeeze(x))
            return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                              self.expand3x3_activation(self.expand3x3(x))], 1)

    class SqueezeNet(T.Module):
        def __init__(self, num_classes=10, width=1):
            super().__init__()
            w = width
            M = lambda: T.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
            self.features = T.Sequential(
                T.Conv2d(3, 64 // w, 3, 2), T.ReLU(), M(),
                Fire(64 // w, 16 // w, 64 // w, 64 // w), Fire(128 // w, 16 // w, 64 // w, 64 // w), M(),
                Fire(128 // w, 32 // w, 128 // w, 128 // w), Fire(256 // w, 32 // w, 128 // w, 128 // w), M(),
                Fire(256 // w, 48 // w, 192 // w, 192 // w), Fire(384 // w, 48 // w, 192 // w, 192 // w),
                Fire(384 // w, 64 // w, 256 // w, 256 // w), Fire(512 // w, 64 // w, 256 // w, 256 // w))
            self.classifier = T.Sequential(T.Dropout(0.5), T.Conv2d(512 // w, num_classes, 1), T.ReLU(),
                                           T.AdaptiveAvgPool2d((1, 1)))

        def forward(self, x):
            return torch.flatten(self.classifier(self.features(x)), 1)

    class BasicConv2d(T.Module):
        def __init__(self, cin, cout, kernel_size, stride=1, padding=0):
            super().__init__()
            self.conv = T.Conv2d(cin, cout, kernel_size, stride, padding, bias=False)
            self.bn = T.BatchNorm2d(cout, eps=0.001)
            self.relu = T.ReLU()            # torchvision: F.relu (see above)

        def forward(self, x):
            return self.relu(self.bn(self.conv(x)))

    class Inception(T.Module):
        def __init__(self, cin, c1, c3r, c3, c5r, c5, pp):
            super().__init__()
            self.branch1 = BasicConv2d(cin, c1, 1)
            self.branch2 = T.Sequential(BasicConv2d(cin, c3r, 1), BasicConv2d(c3r, c3, 3, padding=1))
            self.branch3 = T.Sequential(BasicConv2d(cin, c5r, 1), BasicConv2d(c5r, c5, 3, padding=1))
            self.branch4 = T.Sequential(T.MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv2d(cin, pp, 1))

        def forward(self, x):
            return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)

    class GoogLeNet(T.Module):
        def __init__(self, num_classes=10, width=1):
            super().__init__()

            def inc(*c):
                return Inception(*[v // width for v in c])
            w = width
            self.conv1 = BasicConv2d(3, 64 // w, 7, 2, 3)
            self.maxpool1 = T.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2 = BasicConv2d(64 // w, 64 // w, 1)
            self.conv3 = BasicConv2d(64 // w, 192 // w, 3, padding=1)
            self.maxpool2 = T.MaxPool2d(3, 2, ceil_mode=True)
            self.inception3a = inc(192, 64, 96, 128, 16, 32, 32)
            self.inception3b = inc(256, 128, 128, 192, 32, 96, 64)
            self.maxpool3 = T.MaxPool2d(3, 2, ceil_mode=True)
            self.inception4a = inc(480, 192, 96, 208, 16, 48, 64)
            self.inception4b = inc(512, 160, 112, 224, 24, 64, 64)
            self.inception4c = inc(512, 128, 128, 256, 24, 64, 64)
            self.inception4d = inc(512, 112, 144, 288, 32, 64, 64)
            self.inception4e = inc(528, 256, 160, 320, 32, 128, 128)
            self.maxpool4 = T.MaxPool2d(2, 2, ceil_mode=True)
            self.inception5a = inc(832, 256, 160, 320, 32, 128, 128)
            self.inception5b = inc(832, 384, 192, 384, 48, 128, 128)
            self.avgpool = T.AdaptiveAvgPool2d((1, 1))
            self.dropout = T.Dropout(0.2)
            self.fc = T.Linear(1024 // w, num_classes)

        def forward(self, x):
            x = self.maxpool1(self.conv1(x))
            x = self.maxpool2(self.conv3(self.conv2(x)))
            x = self.maxpool3(self.inception3b(self.inception3a(x)))
            for k in "abcde":
                x = getattr(self, f"inception4{k}")(x)
            x = self.inception5b(self.inception5a(self.maxpool4(x)))
            return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))

    return {
        # name: (builder, input side)
        "vgg16_bn": (lambda: VGG(width=8), 224),
        "resnet18": (lambda: ResNet(BasicBlock, [2, 2, 2, 2]), 64),
        "resnet50": (lambda: ResNet(Bottleneck, [3, 4, 6, 3], width=4), 64),
        "mobilenet_v2": (lambda: MobileNetV2(width=2), 64),
        "squeezenet1_1": (lambda: SqueezeNet(), 64),
        "googlenet": (lambda: GoogLeNet(width=2), 64),
    }


def torch_classifier(name, seed=0):
    """A torchvision-architecture classifier (``torch_classifiers``), in eval mode, with
    random weights and non-trivial batch-norm statistics: each BN's running mean and
    variance are the batch statistics of random images (so activations stay O(1) through
    50 layers), then moved by a random shift and scale, and its weight and bias random.
    Returns (module, input size)."""
    import torch
    build, size = torch_classifiers()[name]
    torch.manual_seed(seed)
    m = build()
    bns = [b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    for b in bns:
        b.momentum = 1.0                       # running stats := this batch's
    m.train()
    with torch.no_grad():
        m(torch.randn(4, 3, size, size))
        for b in bns:
            c = b.num_features
            b.running_mean += 0.1 * torch.randn(c) * b.running_var.sqrt()
            b.running_var *= torch.empty(c).uniform_(0.5, 2.0)
            b.weight.copy_(torch.empty(c).uniform_(0.5, 1.5))
            b.bias.copy_(0.2 * torch.randn(c))
            b.momentum = 0.1
    return m.eval(), size


def torch_rule_relu(rule: str):
    """``f(a)``: torch's ReLU whose backward is ``rule``'s -- backprop g*[a>0], deconvnet g*[g>0],
    guided g*[a>0]*[g>0] -- the independent twin of ``te.relu_backward(rule)``."""
    import torch

    class RuleReLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return a.clamp(min=0)

        @staticmethod
        def backward(ctx, g):
            (a,) = ctx.saved_tensors
            if rule == "deconvnet":
                return g.clamp(min=0)
            return g * (a > 0) if rule == "backprop" else g.clamp(min=0) * (a > 0)

    return RuleReLU.apply
