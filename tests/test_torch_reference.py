"""Both AlexNet layouts against PyTorch (CPU) with the same random weights:
class scores, ``until=`` outputs, and input gradients under the three ReLU
rules (torch autograd for backprop, captum's GuidedBackprop / Deconvolution
for the other two).  Tolerance: 1e-4 of the reference's largest magnitude.

Everything runs in float32, the engine's production dtype, with the Numba
kernels on one thread (fast on a busy machine); one test checks that the
parallel kernels give the same bits on the full-size caffe AlexNet.  One caveat of any
float32 comparison through ReLUs: a pre-activation within rounding error of 0
may get opposite signs in the two implementations, which flips one ReLU and
changes the gradient by far more than rounding.  The seeds below are fixed and
have no such flip; should a kernel change ever produce one, the failure message
says so (``relu sign flips``) -- then it is the test point, not the engine.
"""
import warnings

import _need as need
import numpy as np
import pytest

torch = need.module("torch")

from _reference import rel_err, serial_kernels, torch_alexnet, torch_state_dict  # noqa: E402,F401

import tinygrad_explain as te  # noqa: E402

pytestmark = pytest.mark.usefixtures("serial_kernels")

TOL = 1e-4
TARGETS = [5, 17]          # one target class per image of the batch of 2


class Pair:
    """One te AlexNet and its torch twin, with the expensive passes done once:
    one torch forward records every module's output (hooks); one te forward
    with ``retain_graph`` serves the scores and all three rules' backward."""

    def __init__(self, variant):
        torch.manual_seed(0)
        torch.set_num_threads(2)
        self.variant = variant
        self.tm = torch_alexnet(variant)
        self.m = te.models.alexnet(variant)
        self.m.load_state_dict(torch_state_dict(self.tm, self.m.layer_names))
        H = self.m.input_shape[1]
        self.x = np.random.default_rng(0).standard_normal((2, 3, H, H)).astype(np.float32)
        self.ref_acts = {}

        def keep(name):
            return lambda mod, inp, out: self.ref_acts.__setitem__(name, out.numpy())
        hooks = [mod.register_forward_hook(keep(name)) for name, mod in zip(self.m.layer_names, self.tm)]
        with torch.no_grad():
            self.ref_scores = self.tm(torch.from_numpy(self.x)).numpy()
        for h in hooks:
            h.remove()
        self._xt = self._scores = None
        self._grads = {}

    def onehot(self):
        g = np.zeros((2, 1000), np.float32)
        g[np.arange(2), TARGETS] = 1
        return g

    def scores(self):
        if self._scores is None:
            self._xt = te.Tensor(self.x.copy(), requires_grad=True)
            self._scores = self.m(self._xt)
        return self._scores

    def te_grad(self, rule):
        if rule not in self._grads:
            s = self.scores()
            self._xt.grad = None
            with te.relu_backward(rule):
                s.backward(self.onehot(), retain_graph=True)
            self._grads[rule] = self._xt.grad
        return self._grads[rule]

    def relu_sign_flips(self):
        """{relu layer: number of inputs whose sign differs between te and torch}."""
        flips = {}
        names = self.m.layer_names
        for i, name in enumerate(names):
            if name.startswith("relu"):
                a = self.m(self.x, until=names[i - 1]).numpy()
                n = int((np.sign(a) != np.sign(self.ref_acts[names[i - 1]])).sum())
                if n:
                    flips[name] = n
        return flips

    def check_grad(self, got, ref, what):
        err = rel_err(got, ref)
        if not err <= TOL:
            pytest.fail(f"{self.variant} {what}: relative error {err:.3g} > {TOL} "
                        f"(relu sign flips between te and torch: {self.relu_sign_flips() or 'none'})")


@pytest.fixture(scope="module", params=["torchvision", "caffe"])
def pair(request):
    return Pair(request.param)


def test_scores(pair):
    s = pair.scores()
    assert s.shape == (2, 1000) and s.dtype == np.float32
    assert rel_err(s.numpy(), pair.ref_scores) <= TOL


def test_until_outputs(pair):
    names = ["conv1", "pool5", "fc7"] + (["norm1"] if pair.variant == "caffe" else [])
    for name in names:
        ref = pair.ref_acts[name]
        out = pair.m(pair.x, until=name)
        assert out.shape == ref.shape == (2,) + pair.m.shapes[name], name
        assert rel_err(out.numpy(), ref) <= TOL, name
    assert rel_err(pair.ref_acts["fc8"], pair.ref_scores) == 0      # the hooks saw the right modules


def test_backprop_gradient(pair):
    xt = torch.tensor(pair.x, requires_grad=True)
    pair.tm(xt).backward(torch.from_numpy(pair.onehot()))
    pair.check_grad(pair.te_grad("backprop"), xt.grad.numpy(), "backprop")


@pytest.mark.parametrize("rule", ["guided", "deconvnet"])
def test_guided_and_deconvnet_match_captum(pair, rule):
    captum_attr = need.module("captum.attr")
    cls = {"guided": captum_attr.GuidedBackprop, "deconvnet": captum_attr.Deconvolution}[rule]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = cls(pair.tm).attribute(torch.tensor(pair.x, requires_grad=True), target=TARGETS).detach().numpy()
    pair.check_grad(pair.te_grad(rule), ref, rule)


def test_rules_differ(pair):
    """Sanity: the three rules give three different maps (the comparisons above are not vacuous)."""
    g = {r: pair.te_grad(r) for r in te.RELU_RULES}
    assert not np.allclose(g["backprop"], g["guided"], rtol=0, atol=1e-3 * np.abs(g["backprop"]).max())
    assert not np.allclose(g["guided"], g["deconvnet"], rtol=0, atol=1e-3 * np.abs(g["guided"]).max())


def test_full_size_parallel_kernels_equal_serial(pair):
    """The production path (all Numba threads) on a full-size network gives
    the serial results bit for bit.  caffe only: it has every kernel type
    (grouped conv, LRN, overlapping max-pool)."""
    numba = need.module("numba")
    if pair.variant != "caffe":
        pytest.skip("run once, on the caffe layout")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has a single thread here")
    serial_scores, serial_grad = pair.scores().numpy(), pair.te_grad("backprop")
    prev = numba.get_num_threads()
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    try:
        xt = te.Tensor(pair.x.copy(), requires_grad=True)
        s = pair.m(xt)
        s.backward(pair.onehot())
    finally:
        numba.set_num_threads(prev)
    assert s.numpy().tobytes() == serial_scores.tobytes()
    assert xt.grad.tobytes() == serial_grad.tobytes()


def test_from_network_twins_the_embedded_model():
    """torch_reference.from_network (the benchmark's torch twin of any Network): the
    embedded model's scores and input gradient, float64 on both sides."""
    from tinygrad_explain.testing.torch_reference import from_network
    model = te.load_model()
    seq = from_network(model).double()
    x = np.random.default_rng(0).standard_normal((3,) + model.input_shape)
    xt = te.Tensor(x, requires_grad=True)
    model.astype(np.float64)
    s = model(xt)
    s[:, 2].sum().backward()
    tx = torch.tensor(x, requires_grad=True)
    ts = seq(tx)
    ts[:, 2].sum().backward()
    assert len(seq) == len(model.layers)
    np.testing.assert_allclose(s.numpy(), ts.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(xt.grad, tx.grad.numpy(), rtol=1e-9, atol=1e-12)
