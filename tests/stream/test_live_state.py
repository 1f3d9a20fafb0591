"""The analyzer's live history (LiveState), and a whole run served live and pulled by a client."""

from __future__ import annotations

import threading
import time
import tracemalloc

import numpy as np
import pytest
import zmq

from plstream.analysis.result_file import FrameRecord, load_results
from plstream.cli import main
from plstream.config import load_settings
from plstream.dashboard.desktop import display_available
from plstream.orchestration import analyze_with_source_process
from plstream.source_spec import SourceSpec
from plstream.stream.live.client import LiveResultClient
from plstream.stream.live.history import LiveState
from plstream.stream.live.messages import LiveRequest, LiveUpdate

_FINAL_STATES = ("complete", "interrupted", "error")


def _value(t: int, j: int) -> float:
    """Intensity of spot j in frame t in the synthetic records (exact in float32)."""
    return float(t * 1000 + j)


def _spots_at(t: int) -> int:
    """S_t of the synthetic records: 1 spot at first, one more every 5 frames."""
    return 1 + t // 5


def _record(t: int, n_spots: int) -> FrameRecord:
    j = np.arange(n_spots)
    f32 = np.zeros(n_spots, np.float32)
    return FrameRecord(
        index=t,
        seq=10 + t,
        timestamp=0.01 * t,
        drift_xy=np.array([0.1 * t, -0.2 * t]),
        intensity=(t * 1000.0 + j).astype(np.float32),
        background=f32,
        weighted=f32,
        fit_x=f32,
        fit_y=f32,
        fit_amplitude=f32,
        fit_sigma=f32,
        fit_background=f32,
        fit_uncertainty=f32,
        fit_success=np.ones(n_spots, np.int8),
        state=((t + j) % 2).astype(np.int8),
    )


def _check_rows(update: LiveUpdate) -> None:
    """Every row of ``update`` holds what _record wrote, NaN / -1 beyond S_t."""
    for i in range(update.n_frames):
        t = update.first_frame + i
        s_t = _spots_at(t)
        assert update.seq[i] == 10 + t
        assert update.drift_xy[i, 0] == pytest.approx(0.1 * t)
        expected = [_value(t, j) if j < s_t else np.nan for j in range(update.n_spots)]
        np.testing.assert_array_equal(update.intensity[i], np.array(expected, np.float32))
        states = [(t + j) % 2 if j < s_t else -1 for j in range(update.n_spots)]
        np.testing.assert_array_equal(update.state[i], states)


def _state(**kwargs) -> LiveState:
    return LiveState({"result_path": "r.h5"}, lambda: {"state": "running"}, **kwargs)


def _fill(state: LiveState, n: int) -> None:
    for t in range(n):
        state.append(_record(t, _spots_at(t)))


def _all(state: LiveState, **kwargs) -> LiveUpdate:
    return state.update_for(LiveRequest(session_id=state.session_id, max_frames=10**6, **kwargs))


# ---------------------------------------------------------------- unit tests
def test_empty_state_answers_with_no_rows():
    update = _state().update_for(LiveRequest())
    assert (update.n_frames, update.n_spots, update.n_frames_total, update.first_frame) == (0, 0, 0, 0)
    assert update.intensity.shape == (0, 0) and update.status == {"state": "running"}
    assert update.image is None and update.mean_image is None and update.image_version == -1
    assert len(update.session_id) == 32 and update.info == {"result_path": "r.h5"}


def test_append_with_growing_spots_pads_with_nan_and_minus_one():
    state = _state(initial_frames=4, initial_spots=2)
    _fill(state, 50)
    update = _all(state)
    assert update.n_frames == update.n_frames_total == state.n_frames == 50
    assert update.n_spots == _spots_at(49) == 10
    assert update.intensity.dtype == np.float32 and update.state.dtype == np.int8
    _check_rows(update)
    # No spot table yet: positions unknown (NaN), discovery frames from the rows.
    assert np.isnan(update.spots_x).all()
    np.testing.assert_array_equal(update.spots_first_frame, [5 * j for j in range(10)])
    state.set_spots(np.arange(4.0), np.arange(4.0) + 0.5, [0, 5, 10, 15])
    update = _all(state)
    np.testing.assert_array_equal(update.spots_x[:4], [0, 1, 2, 3])
    assert np.isnan(update.spots_x[4:]).all() and update.n_spots == 10


def test_a_spot_table_ahead_of_the_rows_widens_the_reply():
    state = _state(initial_spots=2)
    _fill(state, 3)
    state.set_spots(np.zeros(6), np.zeros(6), np.zeros(6, np.int64))
    update = _all(state)
    assert update.intensity.shape == (3, 6)
    _check_rows(update)


def test_since_and_max_frames_page_through_the_history():
    state = _state()
    _fill(state, 23)
    rows, since, pages = [], 0, 0
    while True:
        update = state.update_for(LiveRequest(session_id=state.session_id, since_frame=since, max_frames=7))
        assert update.first_frame == since and update.n_frames <= 7
        _check_rows(update)
        rows.extend(update.seq.tolist())
        since += update.n_frames
        pages += 1
        if not update.more:
            break
    assert rows == list(range(10, 33)) and pages == 4
    beyond = state.update_for(LiveRequest(session_id=state.session_id, since_frame=99))
    assert (beyond.first_frame, beyond.n_frames, beyond.more) == (23, 0, False)


@pytest.mark.parametrize("session_id", ["", "another-analyzer"])
def test_a_viewer_from_another_session_gets_everything_from_frame_0(session_id):
    state = _state()
    _fill(state, 12)
    state.offer_image(11, np.ones((4, 5), np.uint16))
    state.set_mean_image(np.ones((4, 5)))
    update = state.update_for(LiveRequest(session_id=session_id, since_frame=8, image_version=5, mean_version=5))
    assert update.first_frame == 0 and update.n_frames == 12
    assert update.image is not None and update.mean_image is not None


def test_images_are_sent_only_when_newer_and_are_private_copies():
    state = _state()
    frame = np.arange(12, dtype=np.uint16).reshape(3, 4)
    state.offer_image(7, frame)
    frame[:] = 0  # the caller may reuse its buffer
    update = _all(state)
    assert (update.image_version, update.image_frame, update.mean_version) == (0, 7, -1)
    np.testing.assert_array_equal(update.image, np.arange(12).reshape(3, 4))
    assert update.image.dtype == np.uint16 and not update.image.flags.writeable
    assert _all(state, image_version=0).image is None
    state.offer_image(8, frame)
    assert _all(state, image_version=0).image_version == 1
    state.set_mean_image(np.full((3, 4), 2.5))
    update = _all(state, image_version=1)
    assert update.image is None and update.mean_version == 0 and update.mean_image.dtype == np.float32
    assert _all(state, image_version=1, mean_version=0).mean_image is None
    assert (state.image_version, state.mean_version) == (1, 0)


def test_bad_input_is_refused_with_the_reason():
    state = _state()
    with pytest.raises(ValueError, match="row 0 is next"):
        state.append(_record(3, 2))
    state.set_spots(np.zeros(3), np.zeros(3), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="shrank from 3 to 2"):
        state.set_spots(np.zeros(2), np.zeros(2), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="2-D"):
        state.offer_image(0, np.zeros(5))


def test_memory_grows_by_doubling_and_appends_in_between_allocate_nothing():
    state = _state(initial_frames=16, initial_spots=4)
    n_frames, n_spots = 2000, 300
    for t in range(n_frames):
        state.append(_record(t, 1 + t * (n_spots - 1) // (n_frames - 1)))
    cap_t, cap_s = state.capacity
    assert n_frames <= cap_t < 2 * n_frames and n_spots <= cap_s < 2 * n_spots
    assert state.reallocations <= int(np.log2(cap_t / 16)) + int(np.log2(cap_s / 4))
    assert state.nbytes <= 4 * (5 * n_frames * n_spots + 32 * n_frames)  # ~5 bytes x T x S, doubled per axis
    records = [_record(t, n_spots) for t in range(n_frames, n_frames + 40)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for record in records:
            state.append(record)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - before < 16_384, "appending within capacity should not allocate per frame"


def test_a_reader_thread_sees_only_whole_rows_while_the_buffers_grow():
    state = _state(initial_frames=8, initial_spots=1)
    n_frames = 1500
    problems: list[BaseException] = []
    seen: list[int] = []

    def read() -> None:
        since, deadline = 0, time.monotonic() + 30
        try:
            while len(seen) < n_frames and time.monotonic() < deadline:
                update = state.update_for(LiveRequest(session_id=state.session_id, since_frame=since, max_frames=64))
                _check_rows(update)
                assert update.n_spots >= (_spots_at(since + update.n_frames - 1) if update.n_frames else 0)
                seen.extend(update.seq.tolist())
                since += update.n_frames
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            problems.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    _fill(state, n_frames)
    reader.join(40)
    assert not reader.is_alive()
    assert not problems, problems[0]
    assert seen == [10 + t for t in range(n_frames)]
    assert state.reallocations >= 10


def test_display_check():
    assert display_available({}, "linux") is False
    assert display_available({"WAYLAND_DISPLAY": "wayland-0"}, "linux") is True
    assert display_available({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"}, "linux") is False
    assert display_available({}, "darwin") is True and display_available({}, "win32") is True


@pytest.mark.parametrize("argv", [["dashboard"], ["dashboard", "r.h5", "--connect", "tcp://127.0.0.1:5560"]])
def test_dashboard_needs_exactly_one_of_a_result_file_and_connect(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "RESULT.h5" in capsys.readouterr().err


# ---------------------------------------------------------------- a whole run, pulled live
class _Puller:
    """Pulls a live analysis like a dashboard would, from its own thread, until the final state."""

    def __init__(self, context: zmq.Context) -> None:
        self._context = context
        self.thread: threading.Thread | None = None
        self.endpoint = ""
        self.updates: list[LiveUpdate] = []
        self.rows: list[LiveUpdate] = []
        self.error: BaseException | None = None

    def start(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.thread = threading.Thread(target=self._run, name="test-live-puller", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with LiveResultClient(self._context, self.endpoint, timeout_s=2.0) as client:
                session, since, image, mean = "", 0, -1, -1
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    request = LiveRequest(session, since, image, mean, max_frames=100)
                    update = client.fetch(request)
                    if update is None:
                        continue
                    if update.session_id != session:
                        self.rows.clear()
                    session, image, mean = update.session_id, update.image_version, update.mean_version
                    since = update.first_frame + update.n_frames
                    self.updates.append(update)
                    if update.n_frames:
                        self.rows.append(update)
                    if update.status["state"] in _FINAL_STATES and not update.more:
                        return
                    if not update.more:
                        time.sleep(0.05)
                raise AssertionError("the live analysis did not reach a final state in time")
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def history(self, n_spots: int) -> dict[str, np.ndarray]:
        """The pulled rows as whole arrays, older rows padded to ``n_spots`` columns."""

        def pad(a: np.ndarray, fill: float) -> np.ndarray:
            out = np.full((a.shape[0], n_spots), fill, a.dtype)
            out[:, : a.shape[1]] = a
            return out

        return {
            "first": np.array([u.first_frame for u in self.rows]),
            "seq": np.concatenate([u.seq for u in self.rows]),
            "drift_xy": np.concatenate([u.drift_xy for u in self.rows]),
            "intensity": np.concatenate([pad(u.intensity, np.nan) for u in self.rows]),
            "state": np.concatenate([pad(u.state, -1) for u in self.rows]),
        }


def test_a_live_client_pulls_the_same_history_as_the_result_file(small_movie, tmp_path):
    path, _, _ = small_movie
    out = tmp_path / "live.h5"
    settings = load_settings()
    with zmq.Context() as context:
        puller = _Puller(context)
        outcome = analyze_with_source_process(
            SourceSpec.file(path),
            settings,
            out,
            live_endpoint="tcp://127.0.0.1:0",
            on_live_ready=puller.start,
            linger_s=3.0,  # time for a busy test machine's puller to see the final state
        )
        assert puller.thread is not None, "on_live_ready was not called"
        puller.thread.join(30)
        assert not puller.thread.is_alive()
    assert outcome.status == "complete", outcome.error
    assert puller.error is None, repr(puller.error)
    assert puller.endpoint.startswith("tcp://127.0.0.1:") and not puller.endpoint.endswith(":0")

    results = load_results(out)
    final = puller.updates[-1]
    assert final.status["state"] == "complete" and final.status["frames_analyzed"] == 300
    assert final.n_frames_total == results.n_frames == 300
    assert final.info["shape"] == [128, 128] and final.info["result_path"] == str(out)
    assert final.info["frame_rate_hz"] == pytest.approx(100.0)
    assert final.status["lag_s"] is not None and final.status["lag_s"] < 60
    assert isinstance(final.status["lag_frames"], int)
    assert [u.status["state"] for u in puller.updates].count("complete") >= 1
    assert final.mean_version >= 0 and final.image_version >= 0

    np.testing.assert_array_equal(final.spots_x, results.spots_x)
    np.testing.assert_array_equal(final.spots_y, results.spots_y)
    np.testing.assert_array_equal(final.spots_first_frame, results.spots_first_frame)
    pulled = puller.history(results.n_spots)
    assert np.all(np.diff(pulled["first"]) > 0)
    np.testing.assert_array_equal(pulled["seq"], results.seq)
    np.testing.assert_array_equal(pulled["drift_xy"], results.drift_xy)
    np.testing.assert_allclose(pulled["intensity"], results.intensity, equal_nan=True, rtol=1e-6)
    np.testing.assert_array_equal(pulled["state"], results.state)


def test_replay_cli_serves_live_results_where_it_says(small_movie, tmp_path, capsys):
    path, _, _ = small_movie
    out = tmp_path / "cli.h5"
    code = main(
        [
            "replay",
            str(path),
            "--out",
            str(out),
            "--headless",
            "--live",
            "tcp://127.0.0.1:0",
            "--set",
            "live.linger_s=0",
        ]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "plstream: live results at tcp://127.0.0.1:" in err
    assert "plstream dashboard --connect tcp://127.0.0.1:" in err
    assert load_results(out).n_frames == 300
