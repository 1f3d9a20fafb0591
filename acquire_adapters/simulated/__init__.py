"""The simulated camera (:mod:`.camera`), its physics (:mod:`._model`), its numba
kernels (:mod:`._kernels`) and the ground truth it saves (:mod:`.truth`)."""
