"""Test-only references (PyTorch twins of the networks), for the tests and benchmarks; nothing in
the library imports this package, and it needs the ``reference`` extra (torch)."""
