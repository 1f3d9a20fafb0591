"""The dashboard on the real analyzer: live from a replay, across an analyzer restart, and against the result file.

Unlike ``test_dashboard.py`` (a fake provider serving a finished result), these
tests run ``analyze_with_source_process`` with live serving in a background
thread and point a :class:`StreamFeed` at it, as ``plstream replay --live`` and
``plstream dashboard --connect`` do.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from plstream.analysis.result_file import Results, load_results
from plstream.config import load_settings
from plstream.dashboard import DashboardModel, FileFeed, StreamFeed
from plstream.dashboard.views.window import DashboardWindow
from plstream.orchestration import AnalysisOutcome, analyze_with_source_process
from plstream.source_spec import SourceSpec

pytestmark = pytest.mark.timeout(120)

RUN_MS = 45_000
"""Bound on waiting for a whole analysis (the first one in a process also compiles the kernels)."""
WAIT_MS = 10_000
"""Bound on waiting for the window to show what the model already holds."""
JOIN_S = 30.0
"""Bound on waiting for an analysis thread to return (linger and source-process join included)."""
ALL_POINTS = 10**6
"""``max_points`` larger than any movie here: traces are not decimated."""


@pytest.fixture(scope="module")
def other_movie(tmp_path_factory) -> Path:
    """A second, shorter simulated movie (other seed, fewer emitters): a different run to restart with."""
    from plstream.acquire_adapters import SimulationParams, write_movie

    path = tmp_path_factory.mktemp("other_movie") / "other.tif"
    write_movie(path, SimulationParams(shape=(128, 128), n_frames=160, n_emitters=12), seed=11)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveAnalysis:
    """``analyze_with_source_process`` with live serving, run in a background thread."""

    def __init__(self, movie: Path, out: Path, endpoint: str, linger_s: float) -> None:
        self.movie, self.out, self.requested, self.linger_s = movie, out, endpoint, linger_s
        self.endpoint = ""
        self.live = threading.Event()
        self.outcome: AnalysisOutcome | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-live-analysis", daemon=True)

    def _ready(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.live.set()

    def _run(self) -> None:
        try:
            self.outcome = analyze_with_source_process(
                SourceSpec.file(self.movie),
                load_settings(),
                self.out,
                live_endpoint=self.requested,
                on_live_ready=self._ready,
                linger_s=self.linger_s,
            )
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            self.error = exc

    def join(self) -> Results:
        """Wait for the analysis to return; its result file."""
        self.thread.join(JOIN_S)
        assert not self.thread.is_alive(), f"the analysis of {self.movie.name} did not return within {JOIN_S:g} s"
        assert self.error is None, repr(self.error)
        assert self.outcome is not None and self.outcome.status == "complete", self.outcome
        return load_results(self.out)


@contextlib.contextmanager
def live_analysis(
    movie: Path, out: Path, endpoint: str = "tcp://127.0.0.1:0", *, linger_s: float = 2.0
) -> Iterator[LiveAnalysis]:
    """Start a live analysis; yields once its result server is bound; always waits for the thread."""
    run = LiveAnalysis(movie, out, endpoint, linger_s)
    run.thread.start()
    try:
        assert run.live.wait(JOIN_S) or not run.thread.is_alive(), "the live endpoint was not bound in time"
        assert run.error is None, repr(run.error)
        yield run
    finally:
        run.thread.join(JOIN_S)


@contextlib.contextmanager
def dashboard(qtbot, feed: StreamFeed | FileFeed) -> Iterator[tuple[DashboardWindow, DashboardModel]]:
    """A shown window on a new model fed by ``feed``; the feed is stopped and the window closed after."""
    model = DashboardModel()
    window = DashboardWindow(model, feed, redraw_hz=30)
    qtbot.addWidget(window)
    window.resize(1400, 900)
    window.show()
    feed.start(model)
    try:
        yield window, model
    finally:
        feed.stop()
        window.close()


def stream_feed(endpoint: str) -> StreamFeed:
    return StreamFeed(endpoint, poll_interval_s=0.02, timeout_s=0.3, retry_interval_s=0.05)


def has_all(model: DashboardModel, state: str = "complete") -> bool:
    """The model holds a finished run: its final state and every row the server had."""
    status = model.status
    return status.get("state") == state and model.caught_up and model.n_frames == status.get("frames_analyzed")


def file_trace(results: Results, spot: int) -> np.ndarray:
    """The result file's intensity trace of ``spot`` from the frame it was found in (what the dashboard draws)."""
    return results.intensity[results.spots_first_frame[spot] :, spot]


def shows_trace(window: DashboardWindow, results: Results, spot: int) -> bool:
    drawn = window.trace_panel.curve_data(spot)[1]
    expected = file_trace(results, spot)
    return drawn.shape == expected.shape and np.allclose(drawn, expected, rtol=1e-6, equal_nan=True)


def test_live_replay_shows_every_spot_trace_and_frame_count(qtbot, small_movie, tmp_path):
    movie = small_movie[0]
    with live_analysis(movie, tmp_path / "live.h5", linger_s=2.0) as run:
        feed = stream_feed(run.endpoint)
        with dashboard(qtbot, feed) as (window, model):
            qtbot.waitUntil(lambda: has_all(model), timeout=RUN_MS)
            results = run.join()  # the server has closed: the window keeps what it was sent
            assert model.session_count == 1 and model.n_frames == results.n_frames == 300
            assert model.n_spots == results.n_spots > 0

            qtbot.waitUntil(lambda: window.image_panel.n_markers == results.n_spots, timeout=WAIT_MS)
            np.testing.assert_array_equal(model.spot_positions(), np.column_stack([results.spots_x, results.spots_y]))

            spot = window.select_brightest(1)[0]
            assert window.selection == [spot]
            qtbot.waitUntil(lambda: shows_trace(window, results, spot), timeout=WAIT_MS)
            trace = model.trace(spot, max_points=ALL_POINTS)
            assert not trace.decimated and trace.x[0] == results.spots_first_frame[spot]
            np.testing.assert_allclose(trace.intensity, file_trace(results, spot), rtol=1e-6, equal_nan=True)

            other = (spot + 1) % results.n_spots
            window.set_selection([spot, other])
            qtbot.waitUntil(lambda: shows_trace(window, results, other), timeout=WAIT_MS)

            health = model.health()
            assert health["frames_analyzed"] == f"{results.n_frames:,}" == health["frames_shown"]
            assert health["spots"] == f"{results.n_spots:,}"
            assert health["banner_text"].startswith("Stream ended: complete (300 frames)")
            qtbot.waitUntil(lambda: window.health_panel.banner_text == model.health()["banner_text"], timeout=WAIT_MS)


def test_dashboard_survives_the_analyzer_stopping_and_restarting(qtbot, small_movie, other_movie, tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"  # both analyses serve here, one after the other
    feed = stream_feed(endpoint)
    with dashboard(qtbot, feed) as (window, model):
        qtbot.waitUntil(lambda: window.health_panel.banner_text.startswith("Connecting"), timeout=WAIT_MS)

        with live_analysis(small_movie[0], tmp_path / "first.h5", endpoint, linger_s=2.0) as first:
            assert first.endpoint == endpoint
            qtbot.waitUntil(lambda: has_all(model), timeout=RUN_MS)
            first_session = model.session_id
            first_results = first.join()
        assert model.n_frames == first_results.n_frames
        # The first analyzer is gone: the dashboard says so but keeps its data.
        qtbot.waitUntil(lambda: not model.connected, timeout=WAIT_MS)
        banner = model.health()
        assert banner["banner_text"].endswith("(analyzer gone)"), banner["banner_text"]
        assert banner["banner_text"].startswith("Stream ended: complete")
        qtbot.waitUntil(lambda: window.health_panel.banner_text.endswith("(analyzer gone)"), timeout=WAIT_MS)
        assert model.n_frames == first_results.n_frames and model.session_id == first_session

        window.set_selection([0])
        with live_analysis(other_movie, tmp_path / "second.h5", endpoint, linger_s=2.0) as second:
            assert second.endpoint == endpoint
            qtbot.waitUntil(lambda: model.session_id != first_session and has_all(model), timeout=RUN_MS)
            second_results = second.join()
        assert model.session_count == 2
        assert model.n_frames == second_results.n_frames == 160 != first_results.n_frames
        assert model.n_spots == second_results.n_spots
        qtbot.waitUntil(lambda: window.image_panel.n_markers == second_results.n_spots, timeout=WAIT_MS)
        assert window.selection == [0]  # the selection survives the restart and shows the new run's trace
        qtbot.waitUntil(lambda: shows_trace(window, second_results, 0), timeout=WAIT_MS)
        assert model.health()["frames_analyzed"] == "160"


def test_result_file_shows_what_the_live_dashboard_showed(qtbot, small_movie, tmp_path):
    out = tmp_path / "live.h5"
    live_model = DashboardModel()  # the live side without a window: the same model a window would read
    with live_analysis(small_movie[0], out, linger_s=2.0) as run:
        live_feed = stream_feed(run.endpoint)
        live_feed.start(live_model)
        try:
            qtbot.waitUntil(lambda: has_all(live_model), timeout=RUN_MS)
        finally:
            live_feed.stop()
        results = run.join()

    with dashboard(qtbot, FileFeed(out, poll_interval_s=0.05)) as (window, model):
        qtbot.waitUntil(lambda: has_all(model), timeout=WAIT_MS)
        qtbot.waitUntil(lambda: window.image_panel.n_markers == live_model.n_spots, timeout=WAIT_MS)
        assert model.n_frames == live_model.n_frames == results.n_frames
        assert model.n_spots == live_model.n_spots == results.n_spots
        np.testing.assert_array_equal(model.spot_positions(), live_model.spot_positions())
        for spot in range(model.n_spots):
            from_file, live = model.trace(spot, max_points=ALL_POINTS), live_model.trace(spot, max_points=ALL_POINTS)
            assert not from_file.decimated and not live.decimated
            np.testing.assert_array_equal(from_file.x, live.x)
            np.testing.assert_allclose(from_file.intensity, live.intensity, rtol=1e-6, equal_nan=True)
            np.testing.assert_array_equal(from_file.on, live.on)
        for a, b in zip(model.drift(max_points=ALL_POINTS), live_model.drift(max_points=ALL_POINTS)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(model.drift(max_points=ALL_POINTS)[1], results.drift_xy[:, 0])
        health, live_health = model.health(), live_model.health()
        for key in ("frames_received", "frames_analyzed", "frames_shown", "gaps", "spots"):
            assert health[key] == live_health[key], key
        assert health["banner_text"] == f"Stream ended: complete ({results.n_frames} frames)"
