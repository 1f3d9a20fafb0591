"""How fast the dashboard draws a big run: 500 spots x 100,000 frames, offscreen.

Builds a :class:`~plstream.dashboard.DashboardModel` from synthetic pages (as a
live feed would deliver them), then times, in the GUI thread:

- ``apply`` of the whole history in 4096-frame pages (a late joiner's catch-up);
- one trace extraction (clip + peak decimation) and one metrics refresh;
- full forced redraws of the window with N selected traces;
- "live" redraws: 10 new frames per redraw (the timer's steady state).

Run by hand (prints figures, asserts nothing)::

    QT_QPA_PLATFORM=offscreen python benchmarks/dashboard_render.py [--frames 100000] [--spots 500]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from plstream.dashboard import DashboardModel
from plstream.stream.live.messages import LiveUpdate


def make_page(
    rng: np.random.Generator,
    t0: int,
    n: int,
    n_spots: int,
    shape: tuple[int, int],
    xy: np.ndarray,
    session: str = "bench",
) -> LiveUpdate:
    """n frames of blinking traces for n_spots spots (ON ~2000 photons, OFF ~0)."""
    state = (rng.random((n, n_spots)) < 0.4).astype(np.int8)
    intensity = (state * np.float32(2000) + rng.normal(0, 40, (n, n_spots)).astype(np.float32)).astype(np.float32)
    frames = np.arange(t0, t0 + n)
    image = rng.poisson(20, shape).astype(np.uint16)
    return LiveUpdate(
        session_id=session,
        info={"shape": list(shape), "psf_sigma_px": 1.3, "frame_rate_hz": 100.0},
        status={
            "state": "running",
            "message": "",
            "frames_received": t0 + n,
            "frames_analyzed": t0 + n,
            "gaps": 0,
            "spots": n_spots,
            "frames_per_second": 1000.0,
            "elapsed_s": (t0 + n) / 1000,
            "lag_s": 0.01,
            "lag_frames": 2,
        },
        first_frame=t0,
        n_frames_total=t0 + n,
        seq=frames.astype(np.int64),
        timestamp=frames * 0.01,
        drift_xy=np.column_stack([np.sin(frames / 5000.0), frames / 50000.0]),
        intensity=intensity,
        state=state,
        spots_x=xy[:, 0],
        spots_y=xy[:, 1],
        spots_first_frame=np.zeros(n_spots, np.int64),
        image=image,
        image_frame=t0 + n - 1,
        image_version=t0 + n,
        mean_image=image.astype(np.float32),
        mean_version=t0 + n,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--spots", type=int, default=500)
    parser.add_argument("--selected", type=int, default=5)
    parser.add_argument("--redraws", type=int, default=60)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shape = (512, 512)
    xy = rng.uniform(5, 507, (args.spots, 2))

    model = DashboardModel()
    apply_s = 0.0
    for t0 in range(0, args.frames, 4096):
        page = make_page(rng, t0, min(4096, args.frames - t0), args.spots, shape, xy)
        started = time.perf_counter()
        model.apply(page)
        apply_s += time.perf_counter() - started
    print(
        f"model: {model.n_frames:,} frames x {model.n_spots} spots; apply of the history: {apply_s:.2f} s "
        f"({model.n_frames / apply_s:,.0f} frames/s)"
    )
    started = time.perf_counter()
    model.trace(0, "seconds", max_points=3000)
    print(f"one trace (100k -> 3000 points, peak): {1000 * (time.perf_counter() - started):.1f} ms")
    started = time.perf_counter()
    model.metrics(force=True)
    print(f"metrics refresh (median ON, switches, ON fraction): {1000 * (time.perf_counter() - started):.1f} ms")

    from pyqtgraph.Qt import QtWidgets

    from plstream.dashboard.views.window import DashboardWindow, configure_pyqtgraph

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    configure_pyqtgraph()
    window = DashboardWindow(model, redraw_hz=30)
    window.timer.stop()  # drive redraws by hand
    window.resize(1600, 1000)
    window.show()
    app.processEvents()
    window.select_brightest(args.selected)
    window.redraw(force=True)
    app.processEvents()

    cpu0, started = time.process_time(), time.perf_counter()
    for _ in range(args.redraws):
        window.redraw(force=True)
        window.grab()  # forces the paint a screen would do
    wall = time.perf_counter() - started
    print(
        f"forced full redraw + paint, {args.selected} traces: {args.redraws / wall:.1f} redraws/s "
        f"({1000 * wall / args.redraws:.1f} ms each; CPU {(time.process_time() - cpu0) / wall:.2f} s/s)"
    )

    t = model.n_frames
    pages = [make_page(rng, t + 10 * i, 10, args.spots, shape, xy) for i in range(args.redraws)]
    cpu0, started = time.process_time(), time.perf_counter()
    for page in pages:
        model.apply(page)
        window.redraw()
        window.grab()
    wall = time.perf_counter() - started
    print(
        f"live redraw (+10 frames each) + paint: {args.redraws / wall:.1f} redraws/s "
        f"({1000 * wall / args.redraws:.1f} ms each; CPU {(time.process_time() - cpu0) / wall:.2f} s/s); "
        f"labels shown: {window.image_panel.n_labels} of {model.n_spots} spots"
    )
    window.close()


if __name__ == "__main__":
    main()
