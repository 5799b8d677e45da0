"""Rebuild a network from its architecture description (``Network.architecture()``, what a model file
stores): a chain of layers as a :class:`~tinygrad_explain.core.models.Network`, a description whose
entries name their ``inputs`` as a :class:`~tinygrad_explain.core.graph.GraphNetwork`.  Above both
(``models`` < ``graph`` < ``architecture``), so neither has to import the other to dispatch."""
from __future__ import annotations

from collections.abc import Sequence

from . import nn
from .graph import graph_from_architecture
from .models import Network


def from_architecture(arch: Sequence[dict], input_shape: Sequence[int], **kw) -> Network:
    """Rebuild a Network from ``Network.architecture()`` output -- a GraphNetwork
    (tinygrad_explain.core.graph) when any entry names its ``inputs``."""
    if any(isinstance(spec, dict) and "inputs" in spec for spec in arch):
        return graph_from_architecture(arch, input_shape, **kw)
    layers = []
    for i, spec in enumerate(arch):
        if "name" not in spec:
            raise ValueError(f"architecture entry {i} has no 'name'")
        try:
            layers.append((spec["name"], nn.layer_from_spec(spec)))
        except ValueError as e:
            raise ValueError(f"layer {spec['name']!r}: {e}") from None
    return Network(layers, input_shape, **kw)
