"""The serial and parallel twins of a kernel (``kernels.twins``): one body, two compilations, two caches.

numba names a function's cache files after its module, ``__qualname__`` and
first line, and keys the entries in them by signature and bytecode, not by
compile flags. Were both twins compiled from the same function object they
would share one cache entry, and a process loading from the cache would run
whichever variant was written last under both names. These tests compile one
real kernel in a fresh process with its own ``NUMBA_CACHE_DIR``, then load it
in a second one and check what each dispatcher got.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
from numba.core.dispatcher import Dispatcher

from plstream.analysis.kernels.twins import PARALLEL_SUFFIX, serial_and_parallel

_MODULES = ("background", "detect", "mean")
_TWINS = {
    "background": {"tile_medians", "tile_clipped_means", "cubic_upsample"},
    "detect": {"map_stats", "correlate_gauss_box", "kernel_energy", "significance", "local_maxima"},
    "mean": {"ingest", "ingest_rigid"},
}
_PROCESS_TIMEOUT_S = 240  # the first process compiles three small kernels (~10-30 s on 2 cores)

# Run in a fresh interpreter: both twins of detect.map_stats on a small image, then report what each got.
_PROBE = textwrap.dedent(
    """
    import json
    import numpy as np
    from plstream.analysis.kernels import detect

    image = np.arange(70 * 9, dtype=np.float32).reshape(70, 9)  # 3 blocks of rows
    n_map = np.ones((70, 9), dtype=np.float32)
    report = {"equal": bool(np.array_equal(detect.map_stats(image, n_map), detect.map_stats_parallel(image, n_map)))}
    for disp in (detect.map_stats, detect.map_stats_parallel):
        (overload,) = disp.overloads.values()
        report[disp.py_func.__qualname__] = {
            "parallel_option": bool(disp.targetoptions.get("parallel", False)),
            "cache_hits": sum(disp.stats.cache_hits.values()),
            "cache_misses": sum(disp.stats.cache_misses.values()),
            "compiled_qualname": overload.fndesc.qualname,
            # numba re-starts its thread pool on loading code with parfors (numba.core.typed_passes)
            "reloads_parfors": any(f.__name__ == "_reload_parfors" for f in overload.reload_init),
        }
    print(json.dumps(report))
    """
)


def _twin_pairs(module_name):
    module = importlib.import_module(f"plstream.analysis.kernels.{module_name}")
    for name, serial in vars(module).items():
        parallel = getattr(module, name + PARALLEL_SUFFIX, None)
        if isinstance(serial, Dispatcher) and isinstance(parallel, Dispatcher):
            yield name, serial, parallel


@pytest.mark.parametrize("module_name", _MODULES)
def test_each_twin_pair_is_one_body_compiled_serial_and_parallel(module_name):
    pairs = list(_twin_pairs(module_name))
    assert {name for name, _, _ in pairs} == _TWINS[module_name]
    for name, serial, parallel in pairs:
        assert parallel.py_func.__code__ is serial.py_func.__code__, f"{name}: the twins must share one body"
        assert parallel.py_func is not serial.py_func, f"{name}: the parallel twin must be a copy (own cache file)"
        assert serial.py_func.__qualname__ == name
        assert parallel.py_func.__qualname__ == name + PARALLEL_SUFFIX
        assert not serial.targetoptions.get("parallel", False)
        assert parallel.targetoptions["parallel"] is True
        assert serial.targetoptions["nogil"] and parallel.targetoptions["nogil"]


def _probe(cache_dir):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=_PROCESS_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_twins_write_separate_caches_and_each_loads_its_own_variant(tmp_path):
    first = _probe(tmp_path)
    assert first["equal"]
    for qualname in ("map_stats", "map_stats_parallel"):
        assert first[qualname]["cache_misses"] == 1, "a fresh cache directory: each twin compiles once"
        assert first[qualname]["cache_hits"] == 0, "the parallel twin must not pick up the serial twin's entry"

    index_files = sorted(p.name for p in tmp_path.rglob("detect.map_stats*.nbi"))
    assert len(index_files) == 2, index_files
    lines = {re.fullmatch(r"detect\.(map_stats(?:_parallel)?)-(\d+)\.py\d+.*\.nbi", f).groups() for f in index_files}
    assert {name for name, _ in lines} == {"map_stats", "map_stats_parallel"}
    assert len({line for _, line in lines}) == 1, "one body: both cache files carry its first line"

    second = _probe(tmp_path)  # a fresh process: everything comes from the cache
    assert second["equal"]
    for qualname, parallel in (("map_stats", False), ("map_stats_parallel", True)):
        got = second[qualname]
        assert got["cache_hits"] == 1 and got["cache_misses"] == 0, got
        assert got["parallel_option"] is parallel
        assert got["compiled_qualname"] == qualname, "the cache entry loaded belongs to another function"
        assert got["reloads_parfors"] is parallel, "the code loaded from the cache is the wrong variant"


def test_serial_and_parallel_names_the_copy_and_refuses_a_dispatcher_or_a_parallel_option():
    def double(x, out):
        """Twice x."""
        for i in range(x.size):
            out[i] = 2.0 * x[i]

    serial, parallel = serial_and_parallel(double, nogil=True)  # compiles nothing until called
    assert serial.py_func is double
    assert parallel.py_func.__name__ == "double_parallel"
    assert parallel.py_func.__qualname__.endswith("<locals>.double_parallel")
    assert parallel.py_func.__module__ == __name__
    assert parallel.__doc__.endswith("Twice x.")
    with pytest.raises(TypeError, match="Remove its @njit decorator"):
        serial_and_parallel(serial)
    with pytest.raises(ValueError, match="parallel"):
        serial_and_parallel(double, parallel=True)
