"""Helpers shared by the benchmark scripts (not a public module; run the scripts, not this).

What lives here, so no script copies another:

- simulated movies: :func:`simulation_params` (crowded fields get a smaller
  emitter separation), :func:`cached_movie` (written once with
  :func:`~plstream.acquire_adapters.write_movie`, reused by later runs),
  :func:`camera_model_of`, :func:`warm_up`;
- the analyzer's stages timed from the outside: :class:`StageTimer` and
  :func:`instrument_analyzer`, which wrap the analyzer's stage functions with
  ``time.perf_counter`` for the duration of a ``with`` block;
- memory of a process tree from ``/proc``: :func:`process_tree`,
  :func:`rss_kib`, :func:`peak_rss_kib`, :class:`MemorySampler`;
- the analyzer watched from outside where a session creates it:
  :func:`watch_analyzers` (its counters, the moment each result row comes
  out);
- command line, settings and output: :func:`add_common_arguments` /
  :func:`parse_arguments` (``--seed``, ``--no-live``, ``--set key=value`` as on
  the plstream command line, ``-v``), :func:`settings_from`,
  :func:`live_results_kwargs`, :func:`machine_description`, :func:`format_table`.

The scripts import it as ``_common`` (they put their own folder on
``sys.path`` by being run as ``python benchmarks/<script>.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib
import itertools
import json
import logging
import math
import os
import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from plstream.acquire_adapters import SimulationParams, write_movie
from plstream.analysis import StreamingAnalyzer
from plstream.analysis.camera import CameraModel, resolve_camera_model
from plstream.analysis.warmup import compile_kernels
from plstream.config import Settings, SettingsError, load_settings

__all__ = [
    "ANALYZER_STAGES",
    "DEFAULT_CACHE",
    "AnalyzerWatch",
    "MemorySampler",
    "StageTimer",
    "add_common_arguments",
    "cached_movie",
    "camera_model_of",
    "configure_logging",
    "format_table",
    "instrument_analyzer",
    "live_results_kwargs",
    "machine_description",
    "parse_arguments",
    "peak_rss_kib",
    "process_tree",
    "reset_peak_rss",
    "rss_kib",
    "settings_from",
    "settings_note",
    "simulation_params",
    "warm_up",
    "watch_analyzers",
]

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path("/tmp/plstream-bench")
"""Where simulated movies are cached between runs (``--cache`` overrides it)."""

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
    import numba

    return (
        f"{cpu}, {cpus} CPUs{memory}; Python {platform.python_version()}, numpy {np.__version__}, "
        f"numba {numba.__version__} ({numba.get_num_threads()} threads)"
    )


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str = "", notes: Sequence[str] = ()
) -> str:
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


def add_common_arguments(
    parser: argparse.ArgumentParser, *, seed: bool = True, settings: bool = True, live_served_by: str = ""
) -> None:
    """The options the scripts share: ``--seed``, ``--no-live``, ``--set`` and ``-v``.

    ``--no-live`` is added when ``live_served_by`` names the plstream command
    that serves live results by default; ``--set section.key=value``
    (repeatable, into ``overrides``) is as on the plstream command line.
    """
    if seed:
        parser.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    if live_served_by:
        parser.add_argument(
            "--no-live",
            action="store_true",
            help=f"do not serve live results to dashboards ({live_served_by} serves them by default)",
        )
    if settings:
        parser.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="change a setting, as plstream --set does (e.g. fit.parallel=false); repeatable",
        )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)")


def parse_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` and configure logging from ``-v`` (see :func:`add_common_arguments`)."""
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    return args


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
        logger.info(
            "%d emitters in %dx%d px: minimum separation lowered from %.1f to %.2f px",
            emitters,
            size,
            size,
            params.min_separation_px,
            separation,
        )
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
    try:
        return resolve_camera_model(description.get("camera"), {}, None)
    except ValueError as exc:
        raise ValueError(
            f"the source {description.get('path', '')} states no full camera model ({exc}); "
            "benchmarks need simulated movies (plstream simulate) that carry it"
        ) from exc


def warm_up(settings: Settings, description: dict[str, Any], frames: Iterable[np.ndarray], n_frames: int = 40) -> None:
    """Compile every kernel the analysis of these frames needs (their shape, read-only as received from ZeroMQ).

    ``description`` is the source's ``describe()``; the first ``n_frames`` of
    ``frames`` are analyzed and the results dropped.
    """
    compile_kernels()
    analyzer = StreamingAnalyzer(settings, tuple(description["shape"]), camera_model_of(description))
    for t, data in enumerate(itertools.islice(frames, n_frames)):
        data.setflags(write=False)  # frames from ZeroMQ are read-only views
        analyzer.process(t, float(t), data)
    analyzer.finish()


def live_results_kwargs(settings: Settings, serve: bool) -> dict[str, Any]:
    """Keyword arguments that make ``analyze_stream`` / ``analyze_with_source_process`` serve live results.

    Empty when ``serve`` is False or when live results are turned off in the
    settings (``live.endpoint`` empty).
    """
    return {"live_endpoint": settings.live.endpoint} if serve and settings.live.endpoint else {}


# ---------------------------------------------------------------------- analyzer stages
ANALYZER_STAGES: tuple[tuple[str, str], ...] = (
    ("photons+mean", "plstream.analysis.analyzer:RunningMean.add_raw"),
    ("detection", "plstream.analysis.analyzer:StreamingAnalyzer._detect"),
    ("fit", "plstream.analysis.analyzer:StreamingAnalyzer._fit"),
    ("drift", "plstream.analysis.analyzer:StreamingAnalyzer._estimate_drift"),
    ("integration", "plstream.analysis.analyzer:integrate_spots_into"),
    ("on/off", "plstream.analysis.analyzer:OnOffClassifier.classify"),
)
"""Stage name and the function that does it (``module:attribute.path``), where the analyzer looks it up.

"photons+mean" converts ADU to photons and adds the
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


def _resolve(target: str) -> tuple[Any, str]:
    """``"module:Owner.attr"`` -> (owner object, attribute name); AttributeError naming ``target`` if it is gone."""
    module_name, _, path = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent, None)
    if name not in getattr(owner, "__dict__", {}):
        raise AttributeError(f"{target} does not exist (the analyzer changed?): update _common.ANALYZER_STAGES")
    return owner, name


@contextlib.contextmanager
def instrument_analyzer(timer: StageTimer, stages: Sequence[tuple[str, str]] = ANALYZER_STAGES) -> Iterator[list[str]]:
    """Time the analyzer's stages into ``timer`` inside the ``with`` block; yields the stage names, in order.

    The functions are replaced where the analyzer looks them up (its module's
    globals and its classes) and restored on exit, so every
    :class:`~plstream.analysis.analyzer.StreamingAnalyzer` in this process is
    timed meanwhile.
    """
    restore: list[tuple[Any, str, Any]] = []
    try:
        for stage, target in stages:
            owner, name = _resolve(target)
            original = vars(owner)[name]
            setattr(owner, name, timer.wrap(stage, original))
            restore.append((owner, name, original))
        yield [stage for stage, _ in stages]
    finally:
        for owner, name, original in reversed(restore):
            setattr(owner, name, original)


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

    def start(self) -> MemorySampler:
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
            import resource

            self.peak_self_kib = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        self.peak_children_kib = sum(self._children.values())

    def __enter__(self) -> MemorySampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
