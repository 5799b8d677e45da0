"""The gradient flowing back through a network, layer by layer (what the explorer's layer view draws).

    rows = layer_flow(model, x, target, rule="guided")

One forward pass keeping the output of every layer the target depends on
(``model(x, keep=...)``, each retaining its gradient), one backward pass from the
target under a ReLU ``rule`` (backprop, deconvnet, guided), then one row per layer,
from the input up to the target's layer:

    name, type, shape   the layer (the input's type is "image")
    inputs              the nodes it reads (in a graph network not always the row before)
    grad_norm           ||dS/d(output)||, the norm of the gradient arriving at that layer
    map                 for a 4-D output: where the gradient is large, sum_c |dS/d(output)|
                        (H, W) (the input's: max_c |dS/dx|)
    active              a ReLU's fraction of units whose input was > 0
    passed              ... the fraction of its input's gradient entries that are not zero
    arrived             ... the fraction of its output's gradient entries that are not zero
    mask                ... per position, the fraction of channels it passed back (H, W) in [0, 1]

Every number is computed from ``x`` (one image, model space (1, C, H, W)); the maps are
NumPy arrays, drawn by the caller (``apps.explorer`` turns them into PNGs).
"""
from __future__ import annotations

import numpy as np

from ..core.engine import Tensor, relu_backward
from ._common import resolve_objective


def layer_flow(model, x: np.ndarray, target, rule: str = "backprop") -> list[dict]:
    """One row per layer from the input up to the target's layer (see the module's docstring)."""
    m = model
    names = m.layer_names
    obj = resolve_objective(m, target, 1)          # the seed te.explain.gradient starts from
    run = [n for n in names[:names.index(obj.layer) + 1] if n == obj.layer or m.feeds(n, obj.layer)]
    leaf = Tensor(np.array(x, copy=True), requires_grad=True)
    with relu_backward(rule):
        outs = m(leaf, until=obj.layer, keep=run)
        outs.output.backward(obj.seed_like(outs.output))
    rows = []
    for n in run:
        t = outs[n]
        g = t.grad if t.grad is not None else np.zeros(t.shape, np.float32)
        row = {"name": n, "type": m.layers[n].type, "shape": list(t.shape[1:]), "inputs": list(m.reads(n)),
               "grad_norm": float(np.linalg.norm(g))}
        if g.ndim == 4:
            row["map"] = np.abs(g[0]).sum(0)
        below = leaf if m.reads(n)[0] == "input" else outs[m.reads(n)[0]]   # the node it reads (a graph)
        if m.layers[n].type == "relu":
            gin = below.grad if below.grad is not None else np.zeros(below.shape, np.float32)
            row["active"] = float((below.data > 0).mean())
            row["passed"] = float((gin != 0).mean())
            row["arrived"] = float((g != 0).mean())
            if gin.ndim == 4:
                row["mask"] = (gin[0] != 0).mean(0)
        rows.append(row)
    g = leaf.grad if leaf.grad is not None else np.zeros(leaf.shape, np.float32)
    return [{"name": "input", "type": "image", "shape": list(x.shape[1:]), "grad_norm": float(np.linalg.norm(g)),
             "map": np.abs(g[0]).max(0)}] + rows
