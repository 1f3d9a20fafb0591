"""The dashboard's blinking statistics (from the rows it holds) and its blinking panel."""

from __future__ import annotations

import numpy as np
import pytest

from plstream.analysis.result_file import FrameRecord, ResultWriter, load_results
from plstream.dashboard import DashboardModel, results_to_update
from plstream.dashboard.blinking import blinking_snapshot

pytestmark = pytest.mark.timeout(120)


def _traces(n_frames: int, n_spots: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two-state traces (S, T): photons, and the true states."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n_spots, n_frames), np.int8)
    for i in range(n_spots):
        t, state = 0, int(rng.integers(2))
        while t < n_frames:
            d = int(np.ceil(rng.pareto(0.7) + 1))
            truth[i, t : t + d] = state
            t, state = t + d, 1 - state
    mean = 400.0 * truth
    return mean + rng.normal(0.0, np.sqrt(900.0 + mean)), truth


def test_snapshot_recovers_the_states_and_fits_the_dwells():
    x, truth = _traces(1500, 12)
    snap = blinking_snapshot(np.arange(1500), x, (x > 200).astype(np.int8), rows_version=3)
    assert snap.states.shape == (12, 1500) and snap.rows_version == 3
    assert np.mean(snap.states == truth) > 0.99
    assert np.all(np.abs(snap.levels[:, 1] - 400.0) < 30.0)
    for plot in (snap.on, snap.off):
        assert plot.n_complete > 100 and np.isfinite(plot.alpha) and len(plot.line_x) == len(plot.line_y) > 0


@pytest.fixture
def model(tmp_path):
    x, _ = _traces(600, 6, seed=1)
    path = tmp_path / "r.h5"
    with ResultWriter(path, run_info={}) as writer:
        for t in range(600):
            v = x[:, t].astype(np.float32)
            nan = np.full(6, np.nan)
            writer.append(
                FrameRecord(
                    index=t,
                    seq=t,
                    timestamp=0.01 * t,
                    drift_xy=np.zeros(2),
                    intensity=v,
                    background=np.full(6, 40.0),
                    weighted=v,
                    fit_x=nan,
                    fit_y=nan,
                    fit_amplitude=nan,
                    fit_sigma=nan,
                    fit_background=nan,
                    fit_uncertainty=nan,
                    fit_success=np.zeros(6, np.int8),
                    state=(v > 200).astype(np.int8),
                )
            )
        writer.set_spots(np.arange(6) * 10.0 + 5, np.full(6, 20.0), np.zeros(6, np.int64))
    m = DashboardModel()
    m.apply(results_to_update(load_results(path)))
    return m


def test_model_computes_blinking_from_its_rows_in_the_background(model):
    snap = model.blinking(wait=True)
    assert snap is not None and snap.n_frames == 600 and snap.states.shape == (6, 600)
    assert model.blinking_version == 1
    assert model.blinking() is snap, "no new rows: no recomputation"


def test_blinking_panel_draws_distributions_and_the_selected_trace(model, qtbot):
    from plstream.dashboard.views.window import DashboardWindow

    window = DashboardWindow(model)
    qtbot.addWidget(window)
    window.set_selection([2])
    window.right_tabs.setCurrentIndex(1)
    model.blinking(wait=True)
    window.redraw(force=True)
    panel = window.blinking_panel
    assert len(panel._points[1].xData) > 3 and len(panel._lines[0].xData) > 0
    drawn = sum(len(item.xData) for item in panel._trace_points.values() if item.xData is not None)
    assert drawn == 600
    assert "α =" in panel._labels[1].textItem.toPlainText()
    window.close()
