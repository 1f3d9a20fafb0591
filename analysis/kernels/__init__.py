"""The numba kernels of the analysis: small pure functions over arrays, outputs passed in.

Each module here imports only numpy, numba, math and the other kernel modules
(an import-linter contract checks it); the public wrappers that validate
input and allocate outputs are the modules one level up (``detect``, ``fit``,
``integrate``, ...). Kernels that run over numba's threads are written once
and compiled twice, serial and parallel, by :mod:`.twins`.
"""
