"""The numba kernels of the analysis: small pure functions over arrays, outputs passed in.

Each module here imports only numpy, numba, math, the other kernel modules
and, for the twins and type hints, the standard ``types``, ``typing`` and
``collections.abc`` (an import-linter contract checks it); the public wrappers that validate
input and allocate outputs are the modules one level up (``detect``, ``fit``,
``integrate``, ...). Kernels that run over numba's threads are written once
and compiled twice, serial and parallel, by :mod:`.twins`.
"""
