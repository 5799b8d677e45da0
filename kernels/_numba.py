"""Shared Numba settings for every CPU kernel: parallel loops over
independent rows/planes (prange), on-disk cache, and no fastmath (results
must be reproducible and exactly IEEE)."""
from numba import njit, prange  # noqa: F401

kernel = njit(parallel=True, cache=True, nogil=True)
