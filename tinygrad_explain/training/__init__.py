"""Training: the loop (``train``), the optimisers and schedules (``optim``), pickle-free checkpoints,
data-parallel helper processes (``parallel``) and adversarial training (``adversarial``).  Imports
only from the layers below (``core``, ``data``, ``modelfiles``)."""
