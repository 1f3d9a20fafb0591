"""The dashboard's Qt-free half: decimation, the growing model, spot metrics, health texts and the feeds."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest
import zmq

from plstream.analysis.result_file import FrameRecord, ResultWriter
from plstream.dashboard import DashboardModel, FileFeed, StreamFeed
from plstream.dashboard._numeric import median_where_on, peak_decimate, run_outline, state_counts
from plstream.stream.live.messages import LiveRequest, LiveUpdate

pytestmark = pytest.mark.timeout(60)

STATUS = {"state": "running", "message": "", "frames_received": 0, "frames_analyzed": 0, "spots": 0}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_data(n_frames: int, n_spots: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(intensity (T, S) float32, state (T, S) int8, first_frame (S,)) with NaN/-1 before discovery."""
    rng = np.random.default_rng(seed)
    first = np.sort(rng.integers(0, max(1, n_frames // 2), n_spots))
    state = (rng.random((n_frames, n_spots)) < 0.4).astype(np.int8)
    state[rng.random((n_frames, n_spots)) < 0.05] = -1
    intensity = np.where(state == 1, rng.normal(2000, 100, state.shape), rng.normal(0, 30, state.shape))
    intensity = intensity.astype(np.float32)
    for s, f in enumerate(first):
        intensity[:f, s] = np.nan
        state[:f, s] = -1
    return intensity, state, first


def make_update(
    intensity, state, first_spot_frame, t0: int, t1: int, *, session: str = "s1", total=None, status=None
) -> LiveUpdate:
    """Rows t0..t1-1, with the spots discovered before t1 (as a server would send them)."""
    n_spots = int(np.count_nonzero(first_spot_frame < t1))
    st = dict(STATUS, frames_received=t1, frames_analyzed=t1, spots=n_spots, **(status or {}))
    return LiveUpdate(
        session_id=session,
        info={"shape": [32, 48], "frame_rate_hz": 50.0},
        status=st,
        first_frame=t0,
        n_frames_total=t1 if total is None else total,
        seq=np.arange(t0, t1, dtype=np.int64),
        timestamp=np.arange(t0, t1) * 0.02,
        drift_xy=np.column_stack([np.arange(t0, t1) * 0.01, -np.arange(t0, t1) * 0.02]),
        intensity=intensity[t0:t1, :n_spots],
        state=state[t0:t1, :n_spots],
        spots_x=np.arange(n_spots, dtype=np.float64) * 2 + 3,
        spots_y=np.arange(n_spots, dtype=np.float64) + 4,
        spots_first_frame=first_spot_frame[:n_spots].astype(np.int64),
    )


def naive_metrics(intensity: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The obviously-correct twin: loops per spot."""
    n_spots = intensity.shape[1]
    bright, switches, frac = np.full(n_spots, np.nan), np.zeros(n_spots, int), np.full(n_spots, np.nan)
    for s in range(n_spots):
        st = state[:, s]
        measured = st[st >= 0]
        on_values = intensity[st == 1, s]
        on_values = on_values[np.isfinite(on_values)]
        if on_values.size:
            bright[s] = np.median(on_values)
        if measured.size:
            frac[s] = np.mean(measured == 1)
        switches[s] = int(np.count_nonzero(np.diff(measured) != 0))
    return bright, switches, frac


# ---------------------------------------------------------------------- numeric helpers
def test_peak_decimation_keeps_every_bins_min_and_max():
    rng = np.random.default_rng(1)
    y = rng.normal(0, 1, 100_003).astype(np.float32)
    y[[5, 50_000, 99_999]] = [40.0, -35.0, 50.0]  # one-sample spikes
    index, out, _ = peak_decimate(y, 2000)
    assert len(out) <= 2000 and np.all(np.diff(index) >= 0)
    assert out.max() == y.max() and out.min() == y.min()
    k = index[1] - index[0] + 1
    for b in (0, 17, len(out) // 2 - 1):
        chunk = y[b * k : (b + 1) * k]
        assert (out[2 * b], out[2 * b + 1]) == (chunk.min(), chunk.max())


def test_peak_decimation_short_series_and_nan_bins_without_warnings():
    y = np.arange(10, dtype=np.float32)
    index, out, comp = peak_decimate(y, 100, y * 2)
    assert np.array_equal(out, y) and np.array_equal(index, np.arange(10)) and np.array_equal(comp, y * 2)
    y = np.full(1000, np.nan, np.float32)
    y[600:] = 1.0
    on = np.zeros(1000, np.float32)
    on[700] = 1.0
    index, out, on_out = peak_decimate(y, 100, on)
    assert np.isnan(out[0]) and np.nanmax(out) == 1.0
    assert on_out.max() == 1.0 and on_out.sum() == 2  # "any ON in the bin", both points of one bin


def test_run_outline_keeps_each_runs_ends():
    x = np.arange(10.0)
    values = np.array([0, 0, 0, 1, 1, 1, 1, 0, 0, 0], np.float32)
    xo, vo = run_outline(x, values)
    assert list(xo) == [0, 2, 3, 6, 7, 9] and list(vo) == [0, 0, 1, 1, 0, 0]
    xo, vo = run_outline(x, np.ones(10, np.float32))
    assert list(xo) == [0, 9]


def test_state_counts_and_median_match_naive_twin():
    intensity, state, _ = make_data(500, 30, seed=3)
    bright, switches, frac = naive_metrics(intensity, state)
    last = np.full(30, -1, np.int8)
    on, measured, sw, last_out = state_counts(state[:250].T.copy(), last)  # in two blocks: carries over
    on2, measured2, sw2, _ = state_counts(state[250:].T.copy(), last_out)
    assert np.array_equal(sw + sw2, switches)
    with np.errstate(invalid="ignore"):
        assert np.allclose((on + on2) / (measured + measured2), frac, equal_nan=True)
    assert np.allclose(median_where_on(intensity.T, state.T), bright, equal_nan=True)


# ---------------------------------------------------------------------- model
def test_model_grows_with_frames_and_spots_and_traces_match():
    intensity, state, first = make_data(700, 40, seed=2)
    model = DashboardModel(initial_frames=4, initial_spots=2)
    for t0 in range(0, 700, 64):
        assert model.apply(make_update(intensity, state, first, t0, min(700, t0 + 64), total=700))
    assert (model.n_frames, model.n_spots) == (700, 40)
    for spot in (0, 17, 39):
        trace = model.trace(spot, max_points=10_000)
        f = first[spot]
        assert not trace.decimated and trace.x[0] == f
        assert np.array_equal(trace.intensity, intensity[f:, spot], equal_nan=True)
        assert np.array_equal(trace.on, np.where(state[f:, spot] < 0, np.nan, state[f:, spot]), equal_nan=True)
    bright, switches, frac = naive_metrics(intensity, state)
    m = model.metrics()
    assert np.allclose(m.brightness, bright) and np.array_equal(m.switches, switches)
    assert np.allclose(m.on_fraction, frac, equal_nan=True)
    assert model.brightest(3) == list(np.argsort(-bright, kind="stable")[:3])


def test_model_overwrite_reset_and_hole():
    intensity, state, first = make_data(100, 5, seed=4)
    model = DashboardModel()
    model.apply(make_update(intensity, state, first, 0, 60))
    changed = intensity.copy()
    changed[40:60] += 1000
    changed_state = state.copy()
    changed_state[40:60] = 1
    model.apply(make_update(changed, changed_state, first, 40, 100))  # rows 40..59 re-sent, overwritten
    assert model.n_frames == 100
    assert np.array_equal(model.trace(0).intensity, changed[first[0] :, 0], equal_nan=True)
    assert np.array_equal(model.metrics(force=True).switches, naive_metrics(changed, changed_state)[1])
    before = model.rows_version
    model.apply(make_update(intensity, state, first, 150, 160))  # a hole: rows ignored, asked again
    assert model.rows_version == before and model.next_request().since_frame == 100
    model.apply(make_update(intensity, state, first, 0, 10, session="s2"))  # analyzer restarted
    assert (model.session_id, model.n_frames, model.session_count) == ("s2", 10, 2)


def test_next_request_seconds_axis_and_range_clipping():
    intensity, state, first = make_data(5000, 3, seed=5)
    model = DashboardModel()
    assert model.next_request(100) == LiveRequest("", 0, -1, -1, 100)
    model.apply(make_update(intensity, state, first, 0, 5000))
    assert model.next_request(7) == LiveRequest("s1", 5000, -1, -1, 7)
    trace = model.trace(0, "seconds", max_points=400, x_range=(10.0, 20.0))
    assert 9.9 <= trace.x[0] <= 10.0 and 20.0 <= trace.x[-1] <= 20.1  # one frame either side
    assert trace.decimated and len(trace.x) <= 400
    x, dx, dy = model.drift("seconds", max_points=100)
    assert len(x) <= 100 and dx.max() == pytest.approx(49.99) and dy.min() == pytest.approx(-99.98)


def test_health_banners():
    clock = FakeClock()
    model = DashboardModel(clock=clock, stall_s=5.0)
    model.source_name = "tcp://127.0.0.1:1"
    assert model.health()["banner_text"].startswith("Connecting")
    intensity, state, first = make_data(10, 2)
    model.set_connection(True)
    model.apply(make_update(intensity, state, first, 0, 0, status={"state": "waiting"}))
    assert model.health()["banner_text"] == "Waiting for frames"
    model.apply(make_update(intensity, state, first, 0, 10))
    health = model.health()
    assert (health["banner_level"], health["frames_shown"], health["spots"]) == ("ok", "10", "2")
    clock.now += 6
    assert model.health()["banner_text"].startswith("Source stopped")
    model.set_connection(False, "no answer within 2 s")
    assert model.health()["banner_text"].startswith("Connection lost — retrying")
    model.set_connection(True)
    model.apply(make_update(intensity, state, first, 10, 10, status={"state": "error", "message": "disk full"}))
    assert model.health()["banner_text"] == "Analysis error: disk full"
    model.apply(make_update(intensity, state, first, 10, 10, status={"state": "complete"}))
    assert model.health()["banner_text"].startswith("Stream ended: complete")
    model.set_connection(False)
    assert model.health()["banner_text"].endswith("(analyzer gone)")


# ---------------------------------------------------------------------- feeds
def _record(t: int, n_spots: int) -> FrameRecord:
    v = np.full(n_spots, 1000.0 + t, np.float32)
    return FrameRecord(
        t,
        t,
        t * 0.1,
        np.array([0.01 * t, 0.0]),
        v,
        v,
        v,
        v,
        v,
        v,
        v,
        v,
        v,
        np.ones(n_spots, np.int8),
        (np.arange(n_spots) + t) % 2,
    )


def test_file_feed_follows_a_growing_file_then_its_final_status(tmp_path):
    path = tmp_path / "growing.h5"
    model = DashboardModel()
    writer = ResultWriter(
        path, run_info={"settings_json": "{}", "source_json": '{"shape": [16, 16]}'}, flush_interval_s=0.05
    )
    feed = FileFeed(path, poll_interval_s=0.05)
    try:
        for t in range(20):
            writer.append(_record(t, 3))
        writer.set_spots([1.0, 5.0, 9.0], [2.0, 6.0, 10.0], [0, 0, 0])
        deadline = time.monotonic() + 10
        while writer.frames_committed < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        feed.start(model)
        assert feed.caught_up.wait(10), feed.error
        assert model.health()["banner_level"] == "ok" and model.n_spots == 3
        for t in range(20, 50):
            writer.append(_record(t, 3))
    finally:
        writer.close("complete", {"frames_analyzed": 50})
    deadline = time.monotonic() + 10
    while feed.running and time.monotonic() < deadline:
        time.sleep(0.02)
    feed.stop()
    assert not feed.running and model.n_frames == 50 and model.status["state"] == "complete"
    assert model.trace(1).intensity[-1] == 1049.0 and model.health()["banner_text"].startswith("Stream ended")


def test_file_feed_reports_a_missing_file(tmp_path):
    model = DashboardModel()
    feed = FileFeed(tmp_path / "nope.h5")
    feed.start(model)
    deadline = time.monotonic() + 5
    while feed.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert feed.error and "nope.h5" in feed.error
    assert "nope.h5" in model.health()["banner_text"]


def test_stream_feed_pages_through_history_and_survives_server_restart():
    from plstream.stream.live.server import LiveResultServer

    intensity, state, first = make_data(1000, 6, seed=9)
    session = {"id": "A"}

    def provider(request: LiveRequest) -> LiveUpdate:
        start = request.since_frame if request.session_id == session["id"] else 0
        end = min(1000, start + request.max_frames)
        return make_update(intensity, state, first, start, end, session=session["id"], total=1000)

    context = zmq.Context()
    model = DashboardModel()
    server = LiveResultServer(context, "tcp://127.0.0.1:0", provider)
    server.start()
    endpoint = server.endpoint
    feed = StreamFeed(endpoint, context, poll_interval_s=0.01, timeout_s=0.3, retry_interval_s=0.05, max_frames=128)
    try:
        feed.start(model)
        assert feed.caught_up.wait(10)
        assert model.n_frames == 1000 and model.connected
        server.close()
        deadline = time.monotonic() + 5
        while model.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert model.health()["banner_text"].startswith("Connection lost")
        session["id"] = "B"
        server = LiveResultServer(context, endpoint, provider)
        server.start()
        deadline = time.monotonic() + 10
        while not (model.session_id == "B" and model.n_frames == 1000) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert model.session_id == "B" and model.n_frames == 1000 and model.session_count == 2
    finally:
        feed.stop()
        server.close()
        context.term()


def test_model_and_feeds_import_without_qt():
    import subprocess

    code = (
        "import sys, plstream.dashboard, plstream.dashboard.feeds; "
        "assert not [m for m in sys.modules if m.startswith(('PySide', 'PyQt', 'pyqtgraph'))], 'Qt imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_model_is_safe_under_a_concurrent_feed():
    intensity, state, first = make_data(3000, 8, seed=11)
    model = DashboardModel()
    done = threading.Event()

    def feed() -> None:
        for t0 in range(0, 3000, 50):
            model.apply(make_update(intensity, state, first, t0, t0 + 50))
        done.set()

    thread = threading.Thread(target=feed)
    thread.start()
    while not done.is_set():
        if model.n_spots:
            trace = model.trace(0, max_points=300)
            assert len(trace.x) == len(trace.intensity) == len(trace.on)
            model.metrics()
    thread.join(10)
    assert model.n_frames == 3000
