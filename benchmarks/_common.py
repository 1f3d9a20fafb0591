"""Helpers shared by the benchmark scripts (not a public module; run the scripts, not this).

What lives here, so no script copies another:

- simulated movies: :func:`simulation_params` (crowded fields get a smaller
  emitter separation), :func:`cached_movie` (written once with
  :func:`~plstream.acquire_adapters.write_movie`, reused by later runs),
  :func:`camera_model_of`;
- the analyzer's stages timed from the outside: :class:`StageTimer` and
  :func:`instrument_analyzer`, which wrap the analyzer's stage functions with
  ``time.perf_counter`` for the duration of a ``with`` block;
- memory of a process tree from ``/proc``: :func:`process_tree`,
  :func:`rss_kib`, :func:`reset_peak_rss`, :class:`MemorySampler`;
- the analyzer watched from outside where a session creates it:
  :func:`watch_analyzers` (its counters, the moment each result row comes
  out), :func:`fits_made`;
- settings and output: :func:`add_settings_argument` / :func:`settings_from`
  (``--set key=value`` as on the plstream command line),
  :func:`configure_logging`, :func:`machine_description`, :func:`format_table`.

The scripts import it as ``_common`` (they put their own folder on
``sys.path`` by being run as ``python benchmarks/<script>.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib
import inspect
import json
import logging
import math
import os
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from plstream.acquire_adapters import SimulationParams, write_movie
from plstream.analysis import StreamingAnalyzer
from plstream.analysis.camera import CameraModel
from plstream.config import Settings, SettingsError, load_settings

__all__ = [
    "DEFAULT_CACHE",
    "MACHINE_COMMAND",
    "ANALYZER_STAGES",
    "AnalyzerWatch",
    "MemorySampler",
    "StageTimer",
    "add_settings_argument",
    "cached_movie",
    "camera_model_of",
    "configure_logging",
    "fits_made",
    "format_table",
    "instrument_analyzer",
    "live_results_kwargs",
    "machine_description",
    "process_tree",
    "reset_peak_rss",
    "rss_kib",
    "settings_from",
    "settings_note",
    "simulation_params",
    "watch_analyzers",
]

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path("/tmp/plstream-bench")
"""Where simulated movies are cached between runs (``--cache`` overrides it)."""

MACHINE_COMMAND = "lscpu | grep -E 'Model name|^CPU\\(s\\)|Thread|MHz'; free -g | head -2; uname -sr; nproc"
"""Shell command that describes the machine a result table came from (quoted in the README)."""

# Fraction of the usable area the emitters' exclusion disks may cover before the
# separation is reduced (random sequential addition jams at ~0.55).
_MAX_COVERAGE = 0.3


# ---------------------------------------------------------------------- output
def configure_logging(verbose: int) -> None:
    """Log to stderr: warnings by default, INFO with ``-v``, DEBUG with ``-vv``."""
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(name)s: %(levelname)s: %(message)s", force=True)


def machine_description() -> str:
    """One line: CPU model, logical CPUs available to this process, memory, Python, numpy, numba and its threads."""
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 2**20:.0f} GiB RAM"
                break
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    import numba  # noqa: PLC0415 - only for its version

    return (f"{cpu}, {cpus} CPUs{memory}; Python {platform.python_version()}, numpy {np.__version__}, "
            f"numba {numba.__version__} ({numba.get_num_threads()} threads)")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str = "",
                 notes: Sequence[str] = ()) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned.

    Cells that are ``None`` print as ``-``; floats should be formatted by the caller.
    """
    cells = [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [values[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(values[1:], widths[1:])]
        return "  ".join(parts).rstrip()

    out = [title] if title else []
    out += [line([str(h) for h in headers]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    out += list(notes)
    return "\n".join(out)


def add_settings_argument(parser: argparse.ArgumentParser) -> None:
    """``--set section.key=value`` (repeatable), as on the plstream command line."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change a setting, as plstream --set does (e.g. fit.parallel=false); repeatable")


def settings_note(overrides: Sequence[str]) -> str:
    """``"settings: defaults"`` or ``"settings: defaults + a=b, c=d"``, for a table's title."""
    return "settings: defaults" + (" + " + ", ".join(overrides) if overrides else "")


def settings_from(parser: argparse.ArgumentParser, overrides: Sequence[str]) -> Settings:
    """The default settings with ``--set`` overrides, writing results over existing files.

    A bad override ends the program with ``parser``'s usage error, which names it.
    """
    try:
        return load_settings(None, list(overrides)).replace("output", overwrite=True)
    except SettingsError as exc:
        parser.error(str(exc))
        raise  # parser.error exits; this line is for type checkers


# ---------------------------------------------------------------------- simulated movies
def simulation_params(size: int, frames: int, emitters: int, **overrides: Any) -> SimulationParams:
    """Parameters of a ``size`` x ``size`` px simulated movie (the project's defaults otherwise).

    When ``emitters`` would not fit at the default minimum separation (their
    exclusion disks would cover more than 30 % of the field), the separation
    is reduced so they do; the returned params say what was used
    (``min_separation_px``).
    """
    params = SimulationParams(shape=(size, size), n_frames=frames, n_emitters=emitters, **overrides)
    usable = max(size - 1 - 2 * params.margin_px, 1.0) ** 2
    if emitters and emitters * math.pi * (params.min_separation_px / 2) ** 2 > _MAX_COVERAGE * usable:
        separation = 2.0 * math.sqrt(_MAX_COVERAGE * usable / (emitters * math.pi))
        logger.info("%d emitters in %dx%d px: minimum separation lowered from %.1f to %.2f px",
                    emitters, size, size, params.min_separation_px, separation)
        params = SimulationParams(**{**params.as_dict(), "shape": (size, size), "min_separation_px": separation})
    return params


def _movie_name(params: SimulationParams, seed: int) -> str:
    digest = hashlib.sha1(json.dumps(params.as_dict(), sort_keys=True).encode()).hexdigest()[:8]
    rows, cols = params.shape
    return f"sim-{rows}x{cols}-{params.n_frames}f-{params.n_emitters}e-seed{seed}-{digest}.tif"


def cached_movie(folder: Path, params: SimulationParams, seed: int = 0) -> Path:
    """The simulated movie for ``params`` in ``folder``, written on first use (with its ``.truth.h5``).

    The file name holds the size, frames, emitters, seed and a hash of every
    parameter, so a cached movie is only reused for the same simulation.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / _movie_name(params, seed)
    if path.exists():
        logger.info("using the cached movie %s", path)
        return path
    rows, cols = params.shape
    gib = rows * cols * np.dtype(params.dtype).itemsize * params.n_frames / 2**30
    print(f"simulating {path.name} ({gib:.2f} GiB, once; cached in {folder})...", flush=True)
    started = time.monotonic()
    write_movie(path, params, seed=seed)
    logger.info("simulated %s in %.1f s", path.name, time.monotonic() - started)
    return path


def camera_model_of(description: dict[str, Any]) -> CameraModel:
    """The camera model a source states in ``describe()`` (simulated movies always do)."""
    camera = description.get("camera")
    if not camera:
        raise ValueError(f"the source {description.get('path', '')} states no camera model; benchmarks need "
                         "simulated movies (plstream simulate) that carry offset, gain and read noise")
    return CameraModel(float(camera["offset_adu"]), float(camera["gain_adu_per_e"]), float(camera["read_noise_e"]),
                       {"offset_adu": "metadata", "gain_adu_per_e": "metadata", "read_noise_e": "metadata"})


def live_results_kwargs(function: Callable[..., Any], settings: Any, serve: bool) -> dict[str, Any]:
    """Keyword arguments that make ``function`` serve live results as the CLI does (``live.endpoint``).

    Empty when ``serve`` is False, when live results are turned off in the
    settings, or when ``function`` (``analyze_stream``,
    ``analyze_with_source_process``) takes no ``live_endpoint``.
    """
    endpoint = getattr(getattr(settings, "live", None), "endpoint", "")
    if not serve or not endpoint or "live_endpoint" not in inspect.signature(function).parameters:
        return {}
    return {"live_endpoint": endpoint}


# ---------------------------------------------------------------------- analyzer stages
ANALYZER_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("photons+mean", ("plstream.analysis.analyzer:to_photons", "plstream.analysis.analyzer:RunningMean.add",
                      "plstream.analysis.analyzer:RunningMean.add_raw")),
    ("detection", ("plstream.analysis.analyzer:StreamingAnalyzer._detect",)),
    ("fit", ("plstream.analysis.analyzer:StreamingAnalyzer._fit",)),
    ("drift", ("plstream.analysis.analyzer:StreamingAnalyzer._estimate_drift",)),
    ("integration", ("plstream.analysis.analyzer:integrate_spots", "plstream.analysis.analyzer:integrate_spots_into")),
    ("on/off", ("plstream.analysis.analyzer:OnOffClassifier.classify",)),
)
"""Stage name and the functions that do it (``module:attribute.path``), where the analyzer looks them up.

A stage is timed through every one of its functions that exists (the
analyzer is being optimized: ADU->photons and the running mean were separate
calls and are now one; photometry moved to an ``_into`` variant); when the
analyzer changes again, add the new name here. "photons+mean" converts ADU to photons and adds the
frame to the drift-corrected running mean; detection includes the PSF-width
measurement and building the mean image it searches; drift includes the
cross-correlation fallback. Time spent in ``StreamingAnalyzer.process``
outside these is reported as "other" (reference refinement, warm starts,
building the result rows, settling the reference offset).
"""


@dataclass
class StageTimer:
    """Exclusive wall time per stage (a stage called inside another counts only for itself).

    Attributes
    ----------
    totals : dict of str to float
        Seconds per stage since the last :meth:`reset`.
    calls : dict of str to int
        Calls per stage since the last :meth:`reset`.
    """

    totals: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    _children: list[float] = field(default_factory=list)

    def reset(self) -> None:
        """Forget the times measured so far."""
        self.totals = dict.fromkeys(self.totals, 0.0)
        self.calls = dict.fromkeys(self.calls, 0)

    def wrap(self, stage: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` timed under ``stage`` (works for plain functions and for methods set on a class)."""
        self.totals.setdefault(stage, 0.0)
        self.calls.setdefault(stage, 0)
        clock = time.perf_counter
        children = self._children

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            children.append(0.0)
            started = clock()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = clock() - started
                inner = children.pop()
                self.totals[stage] += elapsed - inner
                self.calls[stage] += 1
                if children:
                    children[-1] += elapsed

        return timed


def _resolve(target: str) -> tuple[Any, str] | None:
    """``"module:Owner.attr"`` -> (owner object, attribute name), or None when it does not exist."""
    module_name, _, path = target.partition(":")
    try:
        owner: Any = importlib.import_module(module_name)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
    except (ImportError, AttributeError):
        return None
    return (owner, name) if callable(getattr(owner, name, None)) else None


@contextlib.contextmanager
def instrument_analyzer(timer: StageTimer, stages: Sequence[tuple[str, Sequence[str]]] = ANALYZER_STAGES
                        ) -> Iterator[list[str]]:
    """Time the analyzer's stages into ``timer`` inside the ``with`` block; yields the stages instrumented.

    The functions are replaced where the analyzer looks them up (its module's
    globals and its classes) and restored on exit, so every
    :class:`~plstream.analysis.analyzer.StreamingAnalyzer` in this process is
    timed meanwhile. A stage none of whose functions exists any more (the
    analyzer changed) is logged and left out; its time then counts as "other".
    """
    restore: list[tuple[Any, str, Any, bool]] = []
    done: list[str] = []
    try:
        for stage, targets in stages:
            for target in targets:
                found = _resolve(target)
                if found is None:
                    logger.debug("stage %r: %s not found", stage, target)
                    continue
                owner, name = found
                own = name in vars(owner)
                original = vars(owner)[name] if own else getattr(owner, name)
                if isinstance(original, (staticmethod, classmethod)):
                    logger.warning("stage %r: %s is a %s and is not timed", stage, target, type(original).__name__)
                    continue
                setattr(owner, name, timer.wrap(stage, original))
                restore.append((owner, name, original, own))
                if stage not in done:
                    done.append(stage)
            if stage not in done:
                logger.warning("stage %r is not timed: none of %s exists (has the analyzer changed?)",
                               stage, ", ".join(targets))
        yield done
    finally:
        for owner, name, original, own in reversed(restore):
            if own:
                setattr(owner, name, original)
            else:
                delattr(owner, name)


def fits_made(analyzer: StreamingAnalyzer) -> int | None:
    """Fits the analyzer has made so far (``fits_made``; spots it pre-screened as OFF are not fitted).

    None when this version of the analyzer does not count them (then every
    known spot is fitted in every frame: count spot-frames instead).
    """
    made = getattr(analyzer, "fits_made", None)
    return int(made) if isinstance(made, (int, np.integer)) else None


@dataclass
class AnalyzerWatch:
    """What :func:`watch_analyzers` saw: the analyzers that ran, and when each result row came out.

    Attributes
    ----------
    analyzers : list of StreamingAnalyzer
        Every analyzer whose ``process`` was called, in order of first call.
    rows : dict of int to (float, int)
        ``seq -> (time.time() when process returned the row, rows returned together)``
        (only when watching rows).
    """

    analyzers: list[StreamingAnalyzer] = field(default_factory=list)
    rows: dict[int, tuple[float, int]] = field(default_factory=dict)


@contextlib.contextmanager
def watch_analyzers(*, rows: bool = False) -> Iterator[AnalyzerWatch]:
    """Watch ``StreamingAnalyzer.process`` from outside (wrapped on the class, restored on exit).

    Used where the analyzer is created out of reach (inside a session): to
    read its counters afterwards and, with ``rows``, to time the moment each
    result row is produced.
    """
    watch = AnalyzerWatch()
    seen: set[int] = set()
    original = StreamingAnalyzer.process
    clock = time.time

    @functools.wraps(original)
    def process(self: StreamingAnalyzer, seq: int, timestamp: float, raw: np.ndarray) -> Any:
        records = original(self, seq, timestamp, raw)
        if rows and records:
            now = clock()
            for record in records:
                watch.rows[int(record.seq)] = (now, len(records))
        if id(self) not in seen:
            seen.add(id(self))
            watch.analyzers.append(self)
        return records

    StreamingAnalyzer.process = process  # type: ignore[method-assign]
    try:
        yield watch
    finally:
        StreamingAnalyzer.process = original  # type: ignore[method-assign]


# ---------------------------------------------------------------------- memory (/proc, Linux)
def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from ``/proc``; just ``[pid]`` elsewhere)."""
    parents: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                except (OSError, IndexError):
                    continue
                parents[int(entry)] = int(fields[1])
    tree = [pid]
    for candidate in tree:  # grows while iterating: breadth-first
        tree.extend(child for child, parent in parents.items() if parent == candidate and child not in tree)
    return tree


def _status_kib(pid: int, keys: Sequence[str]) -> dict[str, int]:
    values = dict.fromkeys(keys, 0)
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in values:
                values[key] = int(line.split()[1])
    return values


def rss_kib(pid: int) -> tuple[int, int]:
    """Resident memory of ``pid``: (anonymous, file-backed + shared) KiB; (0, 0) when unreadable."""
    v = _status_kib(pid, ("RssAnon", "RssFile", "RssShmem"))
    return v["RssAnon"], v["RssFile"] + v["RssShmem"]


def peak_rss_kib(pid: int) -> int:
    """Peak resident memory of ``pid`` (VmHWM), KiB; 0 when unreadable."""
    return _status_kib(pid, ("VmHWM",))["VmHWM"]


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) so a later :func:`peak_rss_kib` covers only what follows.

    Returns False where the kernel does not allow it (not Linux, or too old).
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class MemorySampler:
    """Samples the resident memory of this process and its descendants in a thread.

    Attributes (valid after :meth:`stop`)
    ----------
    peak_total_kib : int
        Largest sampled sum of RSS (anonymous + file-backed) over the tree.
    peak_self_kib : int
        This process's VmHWM at the end (reset at start when the kernel allows it).
    peak_children_kib : int
        Sum over descendants of the last VmHWM seen of each (their own peaks).
    """

    def __init__(self, interval_s: float = 0.2) -> None:
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-memory-sampler", daemon=True)
        self._children: dict[int, int] = {}
        self.peak_total_kib = 0
        self.peak_self_kib = 0
        self.peak_children_kib = 0
        self.self_peak_was_reset = False

    def _sample(self) -> None:
        me = os.getpid()
        total = 0
        for pid in process_tree(me):
            anon, file = rss_kib(pid)
            total += anon + file
            if pid != me:
                self._children[pid] = max(self._children.get(pid, 0), peak_rss_kib(pid))
        self.peak_total_kib = max(self.peak_total_kib, total)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def start(self) -> "MemorySampler":
        self.self_peak_was_reset = reset_peak_rss()
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.peak_self_kib = peak_rss_kib(os.getpid())
        if not self.peak_self_kib:  # no /proc: the process's lifetime peak (KiB on Linux)
            import resource  # noqa: PLC0415 - POSIX only

            self.peak_self_kib = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        self.peak_children_kib = sum(self._children.values())

    def __enter__(self) -> "MemorySampler":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
