"""The dashboard window (offscreen Qt) on a real analysis result: live through a LiveResultServer, and from the file."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tifffile

pytest.importorskip("pytestqt")
from pyqtgraph.Qt import QtCore, QtGui

from plstream.analysis.result_file import Results, load_results
from plstream.dashboard import DashboardModel, FileFeed, StreamFeed
from plstream.dashboard.views.app import run_dashboard
from plstream.dashboard.views.image_panel import ImagePanel
from plstream.dashboard.views.window import DashboardWindow
from plstream.stream.live.messages import LiveRequest, LiveUpdate
from plstream.stream.live.server import LiveResultServer

pytestmark = pytest.mark.timeout(120)

WAIT_MS = 10_000


@pytest.fixture(scope="module")
def analyzed(small_movie, tmp_path_factory) -> tuple[Results, np.ndarray]:
    """A real result file from ``plstream replay`` on the small simulated movie, and the movie."""
    from plstream import cli

    movie_path = small_movie[0]
    out = tmp_path_factory.mktemp("dash") / "small.h5"
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # the CLI configures logging; put pytest's back
    try:
        assert cli.main(["replay", str(movie_path), "--out", str(out), "--headless"]) == 0
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return load_results(out), tifffile.imread(movie_path)


class ResultsProvider:
    """Serves a finished result as a running analyzer would: pages of rows, the latest frame, a mean image."""

    def __init__(self, results: Results, movie: np.ndarray, session_id: str, state: str = "running") -> None:
        self.results, self.movie, self.session_id, self.state = results, movie, session_id, state
        self.mean = movie.astype(np.float32).mean(axis=0)

    def __call__(self, request: LiveRequest) -> LiveUpdate:
        r = self.results
        total = r.n_frames
        start = request.since_frame if request.session_id == self.session_id else 0
        end = min(total, start + request.max_frames)
        n_spots = int(np.count_nonzero(r.spots_first_frame < max(end, 1)))
        status = {
            "state": self.state,
            "message": "",
            "frames_received": total,
            "frames_analyzed": total,
            "frames_failed": 0,
            "frames_missing": 0,
            "gaps": 0,
            "spots": n_spots,
            "source_frames": total,
            "frames_per_second": 100.0,
            "elapsed_s": 3.0,
            "lag_s": 0.01,
            "lag_frames": 1,
        }
        new_image = request.image_version != total
        return LiveUpdate(
            session_id=self.session_id,
            info={"shape": list(self.movie.shape[1:]), "psf_sigma_px": 1.3},
            status=status,
            first_frame=start,
            n_frames_total=total,
            seq=r.seq[start:end],
            timestamp=r.timestamp[start:end],
            drift_xy=r.drift_xy[start:end],
            intensity=r.intensity[start:end, :n_spots],
            state=r.state[start:end, :n_spots],
            spots_x=r.spots_x[:n_spots],
            spots_y=r.spots_y[:n_spots],
            spots_first_frame=r.spots_first_frame[:n_spots],
            image=self.movie[total - 1] if new_image else None,
            image_frame=total - 1,
            image_version=total,
            mean_image=self.mean if request.mean_version != 1 else None,
            mean_version=1,
        )


@pytest.fixture
def served(analyzed, context):
    results, movie = analyzed
    server = LiveResultServer(context, "tcp://127.0.0.1:0", ResultsProvider(results, movie, "session-A"))
    server.start()
    yield server
    server.close()


def open_window(qtbot, model: DashboardModel, feed) -> DashboardWindow:
    window = DashboardWindow(model, feed, redraw_hz=30)
    qtbot.addWidget(window)
    window.resize(1400, 900)
    window.show()
    feed.start(model)
    return window


def expected_trace(results: Results, spot: int) -> np.ndarray:
    return results.intensity[results.spots_first_frame[spot] :, spot]


def shows_trace(window: DashboardWindow, results: Results, spot: int) -> bool:
    """The drawn curve is the spot's whole trace (not decimated: 300 frames < 2 x the plot width)."""
    return np.array_equal(window.trace_panel.curve_data(spot)[1], expected_trace(results, spot), equal_nan=True)


def click_spot(qtbot, window: DashboardWindow, spot: int, modifier=QtCore.Qt.KeyboardModifier.NoModifier) -> None:
    panel = window.image_panel
    x, y = panel.spot_xy[spot]
    scene_pos = panel.view.mapViewToScene(QtCore.QPointF(float(x), float(y)))
    pos = panel.plot.mapFromScene(scene_pos)
    qtbot.mouseClick(panel.plot.viewport(), QtCore.Qt.MouseButton.LeftButton, modifier, pos)


def test_live_dashboard_shows_every_spot_and_the_selected_traces(qtbot, analyzed, served):
    results, _ = analyzed
    model = DashboardModel()
    feed = StreamFeed(served.endpoint, poll_interval_s=0.02, timeout_s=0.5, retry_interval_s=0.1)
    window = open_window(qtbot, model, feed)
    qtbot.waitUntil(lambda: feed.caught_up.is_set() and model.n_frames == results.n_frames, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.image_panel.n_markers == results.n_spots, timeout=WAIT_MS)
    assert window.image_panel.n_labels == results.n_spots  # 20 spots: all labelled
    assert "mean" in window.image_panel.caption.text()

    spot = window.select_brightest(1)[0]
    qtbot.waitUntil(lambda: shows_trace(window, results, spot), timeout=WAIT_MS)
    x, _ = window.trace_panel.curve_data(spot)
    assert x[0] == results.spots_first_frame[spot] and x[-1] == results.n_frames - 1

    other = (spot + 1) % results.n_spots
    click_spot(qtbot, window, other)
    assert window.selection == [other]
    click_spot(qtbot, window, spot, QtCore.Qt.KeyboardModifier.ShiftModifier)
    assert window.selection == [other, spot]
    qtbot.waitUntil(lambda: len(window.trace_panel.curve_data(other)[1]) > 0, timeout=WAIT_MS)
    assert window.trace_panel.table.selectionModel().selectedRows().__len__() == 2

    window.set_x_axis("seconds")
    seconds = (results.timestamp - results.timestamp[0])[results.spots_first_frame[spot] :]

    def in_seconds() -> bool:
        x = window.trace_panel.curve_data(spot)[0]
        return x.shape == seconds.shape and np.allclose(x, seconds)

    qtbot.waitUntil(in_seconds, timeout=WAIT_MS)

    window.set_image_mode("latest")  # spots drawn where they are in the latest frame: shifted by its drift
    qtbot.waitUntil(lambda: "Latest frame" in window.image_panel.caption.text(), timeout=WAIT_MS)
    dx, dy = results.drift_xy[-1]
    assert np.allclose(window.image_panel.spot_xy, np.column_stack([results.spots_x + dx, results.spots_y + dy]))
    assert window.redraw_count > 0


def test_spot_list_sorts_by_brightness_and_blinking(qtbot, analyzed, served):
    results, _ = analyzed
    model = DashboardModel()
    window = open_window(qtbot, model, StreamFeed(served.endpoint, poll_interval_s=0.02, timeout_s=0.5))
    qtbot.waitUntil(lambda: window.trace_panel.table_model.rowCount() == results.n_spots, timeout=WAIT_MS)
    table = window.trace_panel.table_model
    metrics = model.metrics(force=True)
    assert table.spot_at(0) == int(np.nanargmax(metrics.brightness))  # brightest first by default
    window.trace_panel.table.sortByColumn(2, QtCore.Qt.SortOrder.DescendingOrder)
    assert metrics.switches[table.spot_at(0)] == metrics.switches.max()
    window.trace_panel.table.sortByColumn(3, QtCore.Qt.SortOrder.AscendingOrder)
    assert metrics.on_fraction[table.spot_at(0)] == np.nanmin(metrics.on_fraction)
    flags = QtCore.QItemSelectionModel.SelectionFlag
    window.trace_panel.table.selectionModel().select(table.index(1, 0), flags.ClearAndSelect | flags.Rows)
    qtbot.waitUntil(lambda: window.selection == [table.spot_at(1)], timeout=WAIT_MS)


def test_lost_connection_banner_then_restarted_analyzer_reloads(qtbot, analyzed, served, context):
    results, movie = analyzed
    endpoint = served.endpoint
    model = DashboardModel()
    feed = StreamFeed(endpoint, context, poll_interval_s=0.02, timeout_s=0.3, retry_interval_s=0.05)
    window = open_window(qtbot, model, feed)
    qtbot.waitUntil(lambda: model.n_frames == results.n_frames, timeout=WAIT_MS)
    window.set_selection([0])
    served.close()
    qtbot.waitUntil(lambda: window.health_panel.banner_text.startswith("Connection lost"), timeout=WAIT_MS)
    assert window.health_panel.banner_level == "error"

    restarted = LiveResultServer(context, endpoint, ResultsProvider(results, movie, "session-B", state="complete"))
    restarted.start()
    try:
        qtbot.waitUntil(lambda: model.session_id == "session-B" and model.n_frames == results.n_frames, timeout=WAIT_MS)
        assert model.session_count == 2
        qtbot.waitUntil(lambda: window.health_panel.banner_text.startswith("Stream ended"), timeout=WAIT_MS)
        qtbot.waitUntil(lambda: window.image_panel.n_markers == results.n_spots, timeout=WAIT_MS)
        qtbot.waitUntil(lambda: shows_trace(window, results, 0), timeout=WAIT_MS)
    finally:
        feed.stop()
        restarted.close()


def test_result_file_shows_the_same_spots_and_traces(qtbot, analyzed):
    results, _ = analyzed
    model = DashboardModel()
    feed = FileFeed(results.path, poll_interval_s=0.05)
    window = open_window(qtbot, model, feed)
    qtbot.waitUntil(
        lambda: feed.caught_up.is_set() and window.image_panel.n_markers == results.n_spots, timeout=WAIT_MS
    )
    assert window.health_panel.banner_text.startswith("Stream ended: complete")
    window.set_selection([3, 5])
    qtbot.waitUntil(lambda: shows_trace(window, results, 3) and shows_trace(window, results, 5), timeout=WAIT_MS)
    drift = window.drift_panel.dx_curve
    qtbot.waitUntil(lambda: np.array_equal(drift.getData()[1], results.drift_xy[:, 0]), timeout=WAIT_MS)


def test_screenshot_of_a_result_file(qtbot, analyzed, tmp_path):
    results, _ = analyzed
    png = tmp_path / "dash.png"
    assert run_dashboard(result_path=results.path, screenshot=png, select=3, timeout_s=20) == 0
    image = QtGui.QImage(str(png))
    assert image.width() >= 1200 and image.height() >= 800
    gray = image.convertToFormat(QtGui.QImage.Format.Format_Grayscale8)
    pixels = np.frombuffer(gray.constBits(), np.uint8, gray.sizeInBytes()).astype(float)
    assert pixels.std() > 20  # not blank


def test_screenshot_gives_up_when_no_analyzer_answers(qtbot, tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        status = run_dashboard(connect="tcp://127.0.0.1:1", screenshot=tmp_path / "x.png", timeout_s=0.5)
    assert status == 1 and not (tmp_path / "x.png").exists()
    assert "no complete data" in caplog.text


def synthetic_update(n_spots: int, image: np.ndarray, version: int, session: str = "synthetic") -> LiveUpdate:
    rng = np.random.default_rng(version)
    rows, cols = image.shape
    return LiveUpdate(
        session_id=session,
        info={"shape": [rows, cols]},
        status={"state": "running"},
        first_frame=0,
        n_frames_total=2,
        seq=np.arange(2),
        timestamp=np.arange(2) * 0.01,
        drift_xy=np.zeros((2, 2)),
        intensity=rng.normal(1000, 10, (2, n_spots)).astype(np.float32),
        state=np.ones((2, n_spots), np.int8),
        spots_x=rng.uniform(0, cols - 1, n_spots),
        spots_y=rng.uniform(0, rows - 1, n_spots),
        spots_first_frame=np.zeros(n_spots, np.int64),
        image=image,
        image_frame=1,
        image_version=version,
    )


def test_image_panel_labels_only_when_few_spots_in_view_and_levels_held(qtbot):
    now = [0.0]
    panel = ImagePanel(label_limit=300, clock=lambda: now[0])
    qtbot.addWidget(panel)
    panel.resize(700, 700)
    panel.show()
    panel.set_mode("latest")
    model = DashboardModel()
    dim = np.random.default_rng(0).poisson(20, (512, 512)).astype(np.uint16)
    model.apply(synthetic_update(500, dim, version=1))
    panel.update_view(model, {})
    assert panel.n_markers == 500 and panel.n_labels == 0  # 500 in view: no labels
    levels = panel.levels
    panel.view.setRange(xRange=(100, 160), yRange=(100, 160), padding=0)
    panel.update_view(model, {})
    assert 0 < panel.n_labels <= 300  # zoomed in: the spots in view are labelled
    model.apply(synthetic_update(500, dim * 10, version=2))
    panel.update_view(model, {})
    assert panel.levels == levels  # a new frame within a second keeps the levels: no flicker
    now[0] += 1.5
    model.apply(synthetic_update(500, dim * 10, version=3))
    panel.update_view(model, {})
    assert panel.levels[1] > 5 * levels[1]
