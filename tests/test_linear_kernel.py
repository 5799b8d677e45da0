"""The fully connected kernel (kernels/linear.py) and nn.Linear's weight layout.

The kernel must give the naive loop's sums bit for bit (same order, one
multiply and one add per term, zero terms skipped), on one thread and on all;
the layer's forward and input gradient must match float64 finite differences
and PyTorch; a frozen weight is held once, in the forward layout, through
every change; the bfloat16 copies follow every change of the weight."""
import pickle

import _need as need
import numpy as np
import pytest
from _reference import one_and_all_threads, rng, serial_kernels  # noqa: F401 (fixture)

import tinygrad_explain as te
from tinygrad_explain import kernels as K
from tinygrad_explain.core import nn, ops
from tinygrad_explain.kernels import _numba
from tinygrad_explain.training import optim

pytestmark = pytest.mark.usefixtures("serial_kernels")


def sparse(shape, seed, dtype=np.float32):
    """Random values with a third of the columns zero in every row (as after a ReLU)
    and some single zeros."""
    a = rng(seed).standard_normal(shape).astype(dtype)
    a[:, 1::3] = 0
    a[rng(seed + 1).random(shape) < 0.2] = 0
    return a


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N,J,C", [(1, 37, 700), (3, 64, 33), (8, 29, 257), (16, 9, 16)])
def test_kernel_equals_naive_loop_bit_for_bit(monkeypatch, dtype, N, J, C):
    monkeypatch.setattr(K.linear, "MIN_BLOCK", 16)       # several column blocks, one ragged
    a, m = sparse((N, J), 1, dtype), rng(2).standard_normal((J, C)).astype(dtype)
    out = K.linear.rows_times(a, m)
    ref = K.linear.naive(a, m, np.empty((N, C), dtype))
    assert out.dtype == dtype and out.tobytes() == ref.tobytes()
    np.testing.assert_allclose(out, a.astype(np.float64) @ m, rtol=1e-4 if dtype == np.float32 else 1e-12,
                               atol=1e-5 if dtype == np.float32 else 1e-12)


def test_kernel_skips_only_zero_columns():
    a = np.zeros((2, 10), np.float32)
    a[0, 3], a[1, 7] = 1, -2
    assert K.linear.active(a).tolist() == [3, 7]
    assert K.linear.active(a[:1]).tolist() == [3]
    m = rng(3).standard_normal((10, 5)).astype(np.float32)
    assert K.linear.rows_times(a, m).tobytes() == np.stack([m[3], -2 * m[7]]).tobytes()
    assert (K.linear.rows_times(np.zeros((1, 10), np.float32), m) == 0).all()


def test_pack_is_the_transpose():
    w = rng(4).standard_normal((37, 50)).astype(np.float32)
    assert K.linear.pack(w).flags.c_contiguous and (K.linear.pack(w) == w.T).all()
    assert K.linear.pack(w, np.float64).dtype == np.float64


def test_kernels_parallel_equal_serial(monkeypatch):
    numba = need.module("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has a single thread here")
    monkeypatch.setattr(_numba, "PARALLEL_MIN", 0)
    monkeypatch.setattr(K.linear, "MIN_BLOCK", 16)
    calls = {"parallel": 0}
    for k in (K.linear._rows_times, K.linear._transpose):
        def counting(*a, _par=k.parallel):
            calls["parallel"] += 1
            return _par(*a)
        monkeypatch.setattr(k, "parallel", counting)
    x, g = sparse((5, 200), 5), sparse((5, 300), 6)
    w, b = rng(7).standard_normal((300, 200)).astype(np.float32), rng(8).standard_normal(300).astype(np.float32)

    def run():
        wt = K.linear.pack(w)
        return [wt, K.linear.forward(x, wt, b), K.linear.backward(g, w)]
    serial, parallel = one_and_all_threads(run)
    assert calls["parallel"] > 0, "the parallel kernels never ran"
    for a, c in zip(serial, parallel):
        assert a.tobytes() == c.tobytes()


def _layer(dtype=np.float64, n_in=23, n_out=11, seed=0):
    te.manual_seed(seed)
    layer = nn.Linear(n_in, n_out)
    layer.weight.data = layer.weight.data.astype(dtype)
    layer.bias.data = layer.bias.data.astype(dtype)
    return layer


@pytest.mark.parametrize("N", [1, 4])
def test_layer_gradcheck_through_the_kernel(N, monkeypatch):
    """Input gradient of the layer (packed forward, kernel backward) in float64;
    and all three gradients of the op with a packed weight."""
    seen = []
    monkeypatch.setattr(K.linear, "rows_times", lambda *a, _f=K.linear.rows_times: seen.append(1) or _f(*a))
    layer = _layer()
    x = rng(9).standard_normal((N, 23))
    assert te.gradcheck(layer, [x])
    w, b = layer.weight.data.copy(), layer.bias.data.copy()
    assert te.gradcheck(lambda x, w, b: te.linear(x, w, b, packed=lambda: (K.linear.pack(w.data), None)), [x, w, b])
    assert te.gradcheck(te.linear, [x, layer.weight.data, layer.bias.data])       # the column-major weight as given
    assert len(seen) > 100, "the kernel did not run"


@pytest.mark.parametrize("N", [1, 8, 32, 33])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_matches_torch(N, dtype, monkeypatch):
    torch = need.module("torch")
    read = []
    monkeypatch.setattr(K.linear, "forward", lambda x, wt, b=None, _f=K.linear.forward: read.append(wt) or _f(x, wt, b))
    layer = _layer(dtype, 300, 130)
    x = sparse((N, 300), 10, dtype)
    g = sparse((N, 130), 11, dtype)
    xt = te.Tensor(x, requires_grad=True)
    for _ in range(2):
        xt.grad = None
        y = layer(xt)
        y.backward(g)
    w = layer.weight.data
    assert K.linear.in_forward_layout(w) and not w.flags.c_contiguous
    # up to the crossover the kernel ran, on the weight's own array (no copy)
    assert len(read) == (2 if N <= ops.Linear.SKINNY_MAX_ROWS else 0)
    assert all(np.shares_memory(wt, w) and wt.flags.c_contiguous for wt in read)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.linear(tx, torch.tensor(layer.weight.data), torch.tensor(layer.bias.data))
    ty.backward(torch.tensor(g))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), **tol)
    np.testing.assert_allclose(xt.grad, tx.grad.numpy(), **tol)


def _fresh_scores(layer, x):
    """What a new layer given a C-ordered copy of the same weights computes."""
    other = nn.Linear(layer.in_features, layer.out_features)
    other.weight.data, other.bias.data = layer.weight.data.copy(), layer.bias.data.copy()
    other.storage = layer.storage
    return other(x).numpy()


def test_pack_into_a_slice_and_from_the_forward_layout():
    w = rng(20).standard_normal((6, 37)).astype(np.float32)
    big = np.zeros((37, 10), np.float32)
    K.linear.pack(w, out=big[:, 2:8])
    assert (big[:, 2:8] == w.T).all() and (big[:, :2] == 0).all() and (big[:, 8:] == 0).all()
    f = K.linear.pack(w).T                                    # held in the forward layout
    assert K.linear.in_forward_layout(f) and not f.flags.c_contiguous
    for dtype in (None, np.float64, "bfloat16"):              # the same result from either layout
        assert K.linear.pack(f, dtype).tobytes() == K.linear.pack(w, dtype).tobytes()


def test_frozen_weight_is_held_once_in_the_forward_layout():
    te.manual_seed(3)
    layer = nn.Linear(23, 11)
    w = layer.weight.data
    assert w.shape == (11, 23) and K.linear.in_forward_layout(w) and not w.flags.c_contiguous
    te.manual_seed(3)
    drawn = nn._uniform((11, 23), 1 / np.sqrt(23))           # the values drawn row by row: seeds keep their weights
    assert w.tobytes(order="C") == drawn.tobytes()
    x = sparse((2, 23), 12)
    layer(x)
    assert layer.weight.data is w and layer.packed_nbytes == 0
    assert np.shares_memory(layer.packed_weight()[0], w)     # the forward matrix is the weight, not a copy

    def held(why):
        y = layer(x).numpy()
        d = layer.weight.data
        assert K.linear.in_forward_layout(d) and not d.flags.c_contiguous, why
        assert y.tobytes() == _fresh_scores(layer, x).tobytes(), why

    layer.weight.data *= 2                                    # in place: nothing to announce
    held("in place")
    net = te.models.Network([("fc", layer)], (23,))
    ones = np.ones((11, 23), np.float32)
    net.load_state_dict({"fc.weight": ones, "fc.bias": np.zeros(11, np.float32)})
    assert K.linear.in_forward_layout(layer.weight.data)     # read straight into the layout
    assert (net.state_dict()["fc.weight"] == ones).all()
    held("load_state_dict")
    net.load_state_dict(dict(net.state_dict()))               # from another network's column-major weight
    held("load_state_dict of a held weight")
    net.astype(np.float64)
    assert layer(x.astype(np.float64)).dtype == np.float64
    held("astype")
    net.astype(np.float32)
    layer.weight.data = rng(21).standard_normal((11, 23)).astype(np.float32)   # C order, assigned
    held("assigned")
    net.requires_grad_(True)                                  # trainable: C order, no copy, BLAS forward
    assert layer.weight.data.flags.c_contiguous and layer.packed_weight() is None
    np.testing.assert_allclose(layer(x).numpy(), x @ layer.weight.data.T + layer.bias.data, rtol=1e-6)
    net.requires_grad_(False)
    held("frozen again")
    back = pickle.loads(pickle.dumps(layer))
    assert back._packed is None and back.weight.data.tobytes() == layer.weight.data.tobytes()


@pytest.mark.parametrize("storage", [None, "bfloat16"])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_optimiser_steps_reach_the_frozen_forward(opt, storage):
    """Frozen between steps (as when a trained model is explained between
    epochs): the forward after a step uses the stepped weights."""
    layer = _layer(np.float32)
    layer.storage = storage
    x = sparse((3, 23), 13)
    before = layer(x).numpy()
    make = {"sgd": lambda p: optim.SGD(p, lr=0.1, momentum=0.9), "adam": lambda p: optim.Adam(p, lr=0.1)}[opt]
    params = [layer.weight, layer.bias]
    o = make(params)
    for p in params:
        p.grad = np.ones_like(p.data)
    o.step()
    y = layer(x).numpy()
    assert not np.array_equal(y, before)
    assert y.tobytes() == _fresh_scores(layer, x).tobytes()


def test_functional_linear_without_a_packed_copy_uses_blas_forward():
    x, w = rng(14).standard_normal((2, 7)), rng(15).standard_normal((5, 7))
    np.testing.assert_allclose(te.linear(te.Tensor(x), te.Tensor(w)).numpy(), x @ w.T, rtol=1e-12)


def test_bfloat16_rounding_and_kernel():
    w = rng(16).standard_normal((40, 300)).astype(np.float32)
    h = K.linear.to_bfloat16(w)
    back = K.linear.from_bfloat16(h)
    assert (np.abs(back - w) <= np.abs(w) * 2.0 ** -8).all()            # round to nearest: half an ulp of 8 bits
    ties = np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8], np.float32)          # exactly between two bfloat16 values
    assert K.linear.from_bfloat16(K.linear.to_bfloat16(ties)).tolist() == [1.0, 1 + 2 ** -6]   # to even
    a = sparse((3, 40), 17)
    assert K.linear.rows_times(a, h).tobytes() == K.linear.rows_times(a, back).tobytes()
    with pytest.raises(TypeError, match="float32"):
        K.linear.rows_times(a.astype(np.float64), h)


def test_bfloat16_storage_is_an_option_with_bounded_error():
    """Off by default; when chosen, both products use the rounded weights (the
    same result as float32 weights rounded to bfloat16 beforehand), with the
    error that rounding implies."""
    layer = _layer(np.float32, 300, 130)
    assert layer.storage is None
    x, g = sparse((4, 300), 18), sparse((4, 130), 19)

    def run(l):
        xt = te.Tensor(x, requires_grad=True)
        y = l(xt)
        y.backward(g)
        return y.numpy(), xt.grad
    y32, dx32 = run(layer)
    layer.storage = "bfloat16"
    y16, dx16 = run(layer)
    assert layer.packed_weight()[0].dtype == np.uint16 and layer.packed_nbytes == 2 * 2 * 300 * 130
    rounded = _layer(np.float32, 300, 130)
    rounded.weight.data = K.linear.from_bfloat16(K.linear.to_bfloat16(layer.weight.data))
    yr = run(rounded)[0]
    dxr = K.linear.backward(g, rounded.weight.data.copy())     # the kernel on the rounded W (C order), as bfloat16's
    assert y16.tobytes() == yr.tobytes() and dx16.tobytes() == dxr.tobytes()
    aw = np.abs(layer.weight.data.astype(np.float64))          # each weight moves by <= 2^-8 of itself
    assert np.abs(y16 - y32).max() > 0 and (np.abs(y16 - y32) <= 2 ** -8 * (np.abs(x) @ aw.T) + 1e-5).all()
    assert np.abs(dx16 - dx32).max() > 0 and (np.abs(dx16 - dx32) <= 2 ** -8 * (np.abs(g) @ aw) + 1e-5).all()
    layer.storage = None
    assert run(layer)[0].tobytes() == y32.tobytes()
    with pytest.raises(ValueError, match="storage"):
        layer.storage = "float16"
