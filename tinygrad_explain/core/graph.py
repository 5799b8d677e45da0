"""Networks as graphs of named nodes: residual additions, concatenations.

A :class:`GraphNetwork` is a :class:`~tinygrad_explain.core.models.Network` whose
nodes may take several inputs.  Each node is a layer with a name and the names
of the nodes it reads (``"input"`` is the network's input); the nodes are held
in a topological order (every node after the nodes it reads) and the last node
is the network's output.  Everything that works on a Network works on a graph
network -- ``layers``, ``layer_names``, ``shapes``, ``state_dict``,
``astype``, ``to``, ``eval``, the model file, ``model(x, until=, keep=,
start=)`` -- and every explainer that takes a layer name takes a node name
("layer4.1.relu2").

    x -> conv1 -> relu1 -> conv2 ----> add -> relu2 -> ...
           \\________________________/^            (a residual block)

``start=`` runs the network from a node's output: allowed where every path from
the input to the nodes to run goes through that node (the output of a residual
block, not a node inside it); otherwise a clear error names the node that also
needs an earlier one, and :attr:`GraphNetwork.cut_nodes` lists the nodes one
may start from.

The merge layers live here: :class:`Add` (element-wise sum of equal shapes,
``dx_k = dy`` for every input) and :class:`Concat` (along channels,
``ops.concat``; each input gets its slice of ``dy``).
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

import numpy as np

from . import nn
from .engine import Tensor, release_intermediate
from .models import LayerOutputs, Network, keep_output, layer_output_shape

#: the name a node uses for the network's input
INPUT = "input"


class Add(nn.Layer):
    """y = x_1 + x_2 + ... (inputs of one shape): a residual connection.
    Chain rule: dL/dx_k = dL/dy for every k (the engine's Add)."""
    type = "add"
    merge = True

    def out_shape(self, *shapes: tuple) -> tuple:
        if len(set(map(tuple, shapes))) != 1:
            raise ValueError(f"add: inputs of different shapes {[tuple(s) for s in shapes]}")
        return tuple(shapes[0])

    def __call__(self, *xs: Tensor) -> Tensor:
        _check_merge(self, xs)
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return y


class Concat(nn.Layer):
    """y = [x_1, x_2, ...] along the channel axis (GoogLeNet's inception, SqueezeNet's
    fire modules).  Chain rule: dL/dx_k is dL/dy's slice of x_k's channels (``ops.concat``)."""
    type = "concat"
    merge = True

    def out_shape(self, *shapes: tuple) -> tuple:
        rest = {tuple(s[1:]) for s in shapes}
        if len(rest) != 1:
            raise ValueError(f"concat: inputs differ beyond the channel axis {[tuple(s) for s in shapes]}")
        return (sum(int(s[0]) for s in shapes),) + tuple(shapes[0][1:])

    def __call__(self, *xs: Tensor) -> Tensor:
        from . import ops
        _check_merge(self, xs)
        return ops.concat(list(xs), axis=1)


def _check_merge(layer, xs):
    """A merge layer called with one input is a chain's loop run over a graph: refuse it."""
    if len(xs) < 2:
        raise TypeError(f"{layer.type}: needs two or more inputs, got {len(xs)} (a graph node: run the "
                        "network, model(x, until=...), not its layers one after the other)")


#: layer types that only graphs have (the model file's "add" and "concat")
GRAPH_LAYER_TYPES = {cls.type: cls for cls in (Add, Concat)}


def node_from_spec(spec: dict) -> nn.Layer:
    """A layer from its spec: the graph's own types, then nn's (``nn.layer_from_spec``)."""
    t = spec.get("type")
    if t in GRAPH_LAYER_TYPES:
        if set(spec) - {"type", "name", "inputs"}:
            raise ValueError(f"bad arguments for layer type {t!r}: {sorted(set(spec) - {'type', 'name', 'inputs'})}")
        return GRAPH_LAYER_TYPES[t]()
    spec = {k: v for k, v in spec.items() if k != "inputs"}
    try:
        return nn.layer_from_spec(spec)
    except ValueError as e:
        if str(e).startswith("unknown layer type"):
            raise ValueError(f"{e}; graph types: {sorted(GRAPH_LAYER_TYPES)}") from None
        raise


class GraphNetwork(Network):
    """A network of named nodes, each a layer reading one or more earlier nodes.

    ``nodes``  ``(name, layer, inputs)`` in topological order; ``inputs`` a node name or a
               list of them (``"input"``: the network's input); ``(name, layer)`` reads the
               node before it (the input for the first), so a plain list of layers is a chain.
    ``input_shape``, ``class_names``, ``preprocessing`` as for :class:`Network`.
    Names are non-empty strings without "/" (they are HDF5 group names in the model file),
    never ``"input"``.  Every node must lead to the output, the last node."""

    def __init__(self, nodes: Iterable[tuple], input_shape: Sequence[int],
                 class_names: Sequence[str] | None = None, preprocessing: dict | None = None) -> None:
        nodes = list(nodes)
        layers, inputs, previous = [], {}, INPUT
        for k, node in enumerate(nodes):
            if not isinstance(node, (tuple, list)) or len(node) not in (2, 3):
                raise ValueError(f"node {k}: expected (name, layer) or (name, layer, inputs), got {node!r}")
            name, layer = node[0], node[1]
            if not isinstance(name, str) or not name:
                raise ValueError(f"node names must be non-empty strings, got {name!r}")
            if name == INPUT or "/" in name:
                raise ValueError(f"node name {name!r} is not allowed (not {INPUT!r}, no '/')")
            ins = (previous,) if len(node) == 2 or node[2] is None else node[2]
            ins = (ins,) if isinstance(ins, str) else tuple(ins)
            if not ins or not all(isinstance(i, str) for i in ins):
                raise ValueError(f"node {name!r}: inputs must be node names, got {node[2]!r}")
            for i in ins:
                if i != INPUT and i not in inputs:
                    raise ValueError(f"node {name!r} reads {i!r}, which is not an earlier node"
                                     + (" (nodes must come after the nodes they read)" if i in
                                        [n[0] for n in nodes if isinstance(n, (tuple, list))] else ""))
            merge = getattr(layer, "merge", False)
            if merge and len(ins) < 2:
                raise ValueError(f"node {name!r} ({layer.type}) needs at least two inputs, got {list(ins)}")
            if not merge and len(ins) != 1:
                raise ValueError(f"node {name!r} ({layer.type}) takes one input, got {list(ins)}")
            if name in inputs:
                raise ValueError(f"duplicate node name {name!r}")
            inputs[name] = ins
            layers.append((name, layer))
            previous = name
        if not layers:
            raise ValueError("a graph network needs at least one node")
        self.inputs = inputs
        super().__init__(layers, input_shape, class_names, preprocessing)
        dead = [n for n in self.layer_names if n not in self.ancestors(self.layer_names[-1])]
        if dead:
            raise ValueError(f"nodes {dead} do not lead to the output {self.layer_names[-1]!r} "
                             "(a graph network has one output, its last node)")

    # ----- structure -----------------------------------------------------
    def _infer_shapes(self):
        shapes = {INPUT: self.input_shape}
        for name, layer in self.layers.items():
            ins = [shapes[i] for i in self.inputs[name]]
            if getattr(layer, "merge", False):
                try:
                    s = tuple(layer.out_shape(*ins))
                except ValueError as e:
                    raise ValueError(f"node {name!r}: {e} (from {list(self.inputs[name])})") from None
            else:
                s = layer_output_shape(name, layer, ins[0], self.input_shape)
            shapes[name] = s
        del shapes[INPUT]
        return shapes

    def architecture(self) -> list[dict]:
        """The JSON-able list of node specs, each with its name and ``inputs``."""
        return [dict(name=n, **l.spec(), inputs=list(self.inputs[n])) for n, l in self.layers.items()]

    def reads(self, name: str) -> tuple[str, ...]:
        """The nodes node ``name`` takes (``"input"``: the network's input)."""
        return tuple(self.inputs[self._layer_name(name, "reads")])

    def ancestors(self, name: str) -> set[str]:
        """``name`` and every node it depends on (not ``"input"``)."""
        seen, todo = set(), [name]
        while todo:
            n = todo.pop()
            if n in seen or n == INPUT:
                continue
            seen.add(n)
            todo.extend(self.inputs[n])
        return seen

    def feeds(self, below: str, above: str) -> bool:
        """Whether node ``above``'s output depends on node ``below``'s (a path leads there)."""
        return below != above and below in self.ancestors(above)

    @property
    def cut_nodes(self) -> list[str]:
        """The nodes ``start=`` may name: those every path from the input to the output
        goes through (no later node reads anything earlier than them)."""
        order = {n: k for k, n in enumerate(self.layer_names)}
        order[INPUT] = -1
        earliest_read = [min(order[i] for i in self.inputs[n]) for n in self.layer_names]
        out, low = [], len(order)
        for k in range(len(self.layer_names) - 1, -1, -1):
            if low >= k:                        # nothing after node k reads a node before it
                out.append(self.layer_names[k])
            low = min(low, earliest_read[k])
        return out[::-1]

    # ----- forward -------------------------------------------------------
    def _plan(self, until, keep, start):
        """The nodes to run, in order, for ``model(x, until=, keep=, start=)``."""
        names = self.layer_names
        until = names[-1] if until is None else self._layer_name(until, "until")
        if start is not None:
            start = self._layer_name(start, "start")
            if start == names[-1]:
                raise ValueError(f"start={start!r} is the last node: no node is left to run")
        keep = [] if keep is None else [self._layer_name(k, "keep") for k in keep]
        need = self.ancestors(until)
        if start is not None:
            if start not in need or start == until:
                raise ValueError(f"until={until!r} does not come after start={start!r}: no node would run")
            below = self.ancestors(start)
            need -= below
        for k in keep:
            if k not in need:
                raise ValueError(f"keep: node {k!r} is not run (this call runs the nodes "
                                 f"{'after ' + repr(start) + ' ' if start else ''}that {until!r} depends on)")
        run = [n for n in names if n in need]
        if start is not None:
            for n in run:
                for i in self.inputs[n]:
                    if i != start and i not in need:
                        k = names.index(start)
                        cuts = self.cut_nodes
                        near = [c for c in cuts if names.index(c) < k][-2:] + \
                            [c for c in cuts if names.index(c) > k][:2]
                        raise ValueError(
                            f"start={start!r}: node {n!r} also reads {i!r}, which is not computed from "
                            f"{start!r} (a path around it); start from a node every path goes through"
                            + (f", e.g. {near} (model.cut_nodes lists them)" if near else ""))
        return run

    def __call__(self, x: Tensor | np.ndarray, until: str | None = None, keep: str | Sequence[str] | None = None,
                 start: str | None = None) -> Tensor | LayerOutputs:
        """Forward pass; as :meth:`Network.__call__`, on node names.  Only the nodes that
        ``until`` (default: the output) and ``keep`` depend on are run; with ``start``, only
        those computed from that node's output ``x`` -- refused, naming the node, when one
        of them also reads a node before ``start`` (see :attr:`cut_nodes`)."""
        if isinstance(keep, str):
            keep = (keep,)
        if keep is not None:
            try:
                keep = list(keep)
            except TypeError:
                raise TypeError(f"keep must be a layer name or a list of layer names, got {keep!r}") from None
        run = self._plan(until, keep, start)
        x = self.check_input(x, after=start)
        readers = {}                        # node -> how many nodes still to run read it
        for n in run:
            for i in self.inputs[n]:
                readers[i] = readers.get(i, 0) + 1
        given = x
        values = {INPUT if start is None else start: x}
        kept = LayerOutputs()
        for name in run:
            ins = self.inputs[name]
            y = self.layers[name](*[values[i] for i in ins])
            for i in ins:                   # free what no later node reads
                readers[i] -= 1
                if readers[i] == 0:
                    v = values.pop(i)
                    if v is not given:      # its array too, unless the graph's backward needs it
                        release_intermediate(v, y, *values.values())
            if keep is not None and name in keep:
                kept[name] = keep_output(y)
            values[name] = y
        y = values[run[-1]]
        if keep is None:
            return y
        kept[run[-1]] = y
        kept.output = y
        return kept

    def _layer_name(self, name, argument):
        if not isinstance(name, str) or name not in self.layers:
            near = difflib.get_close_matches(str(name), self.layer_names, n=3)
            listing = self.layer_names if len(self.layer_names) <= 40 else \
                f"{len(self.layer_names)} nodes, model.layer_names lists them"
            raise KeyError(f"{argument}: unknown node {name!r}" + (f" (did you mean {near}?)" if near else "")
                           + f"; nodes: {listing}")
        return name

    def __repr__(self):
        lines = [f"GraphNetwork(input {self.input_shape})"]
        for n, l in self.layers.items():
            src = "" if self.inputs[n] == (self._previous(n),) else f" <- {', '.join(self.inputs[n])}"
            lines.append(f"  {n:<8} {l.spec()}{src} -> {self.shapes[n]}")
        return "\n".join(lines)

    def _previous(self, name):
        k = self.layer_names.index(name)
        return self.layer_names[k - 1] if k else INPUT


def graph_from_architecture(arch: Sequence[dict], input_shape: Sequence[int], **kw) -> GraphNetwork:
    """Rebuild a GraphNetwork from ``GraphNetwork.architecture()`` output (an entry
    without ``inputs`` reads the entry before it)."""
    nodes = []
    for i, spec in enumerate(arch):
        if "name" not in spec:
            raise ValueError(f"architecture entry {i} has no 'name'")
        try:
            layer = node_from_spec(spec)
        except ValueError as e:
            raise ValueError(f"node {spec['name']!r}: {e}") from None
        ins = spec.get("inputs")
        if ins is not None and not (isinstance(ins, list) and all(isinstance(v, str) for v in ins)):
            raise ValueError(f"node {spec['name']!r}: 'inputs' must be a list of node names, got {ins!r}")
        nodes.append((spec["name"], layer, ins))
    return GraphNetwork(nodes, input_shape, **kw)
