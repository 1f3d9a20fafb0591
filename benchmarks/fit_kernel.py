"""Throughput and accuracy of the Gaussian fitter (``analysis.fit``) on simulated spots.

Draws Poisson pixels of pixel-integrated Gaussian spots (sigma 1.3 px,
background 10 photons/px) on a grid far enough apart that ROIs never see a
neighbour, fits them from their rounded true centres (cold start: no warm
start, as for a new spot), and prints one table: ROI 7x7 and 9x9 x {serial,
parallel} x {bright N=1000, dim N=200, off N=0, off after on}. "off after on"
is a dark spot warm-started from the parameters of its last ON frame, what the
analyzer does when a particle blinks off.

Columns: fits/s per core (spots / best wall time / threads), mean and
largest LM iterations, the fractions of successful (``FitStatus.OK``) and
no-signal (``FitStatus.NO_SIGNAL``) fits, and accuracy beside the speed:
std(x - x_true) / sqrt(CRLB_x) (the CRLB of the true parameters; 1.00 is
efficient) and the bias of x and y (px), over the successful fits. Run by
hand::

    .venv/bin/python benchmarks/fit_kernel.py [--spots 20000] [--repeats 5] [--threads 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time

import _common
import numba
import numpy as np
from scipy.special import erf

from plstream.analysis.fit import FitStatus, crlb_for, fit_spots_into

SIGMA_PX = 1.3
BACKGROUND = 10.0  # photons/px
PITCH_PX = 16  # grid pitch; the 15 px render window of a spot never reaches a neighbour's ROI
HALF_WINDOW = 7  # rendered window is 15x15 px (5.4 sigma either side)
CASES = (("bright", 1000.0, False), ("dim", 200.0, False), ("off", 0.0, False), ("off after on", 0.0, True))
ON_PHOTONS = 1000.0  # warm start of the "off after on" row


def simulate(rng: np.random.Generator, n_spots: int, photons: float) -> tuple[np.ndarray, np.ndarray]:
    """One frame (float32 photons) of ``n_spots`` grid spots; returns (image, (S, 5) true params)."""
    per_row = int(np.ceil(np.sqrt(n_spots)))
    idx = np.arange(n_spots)
    margin = PITCH_PX
    x = margin + PITCH_PX * (idx % per_row) + rng.uniform(-0.5, 0.5, n_spots)
    y = margin + PITCH_PX * (idx // per_row) + rng.uniform(-0.5, 0.5, n_spots)
    shape = (2 * margin + PITCH_PX * ((n_spots - 1) // per_row) + 1, 2 * margin + PITCH_PX * (per_row - 1) + 1)
    offsets = np.arange(-HALF_WINDOW, HALF_WINDOW + 1)
    cols = np.round(x).astype(np.int64)[:, None] + offsets  # (S, 15)
    rows = np.round(y).astype(np.int64)[:, None] + offsets
    scale = 1.0 / (np.sqrt(2.0) * SIGMA_PX)
    ex = 0.5 * (erf((cols - x[:, None] + 0.5) * scale) - erf((cols - x[:, None] - 0.5) * scale))
    ey = 0.5 * (erf((rows - y[:, None] + 0.5) * scale) - erf((rows - y[:, None] - 0.5) * scale))
    expected = np.full(shape, BACKGROUND)
    expected[rows[:, :, None], cols[:, None, :]] += photons * ey[:, :, None] * ex[:, None, :]  # windows are disjoint
    image = rng.poisson(expected).astype(np.float32)
    truth = np.column_stack([x, y, np.full(n_spots, photons), np.full(n_spots, SIGMA_PX), np.full(n_spots, BACKGROUND)])
    return image, truth


def time_fits(image, centers, initial, roi, parallel, repeats):
    """Best wall time of ``repeats`` fits of all spots, and the outputs of the last one."""
    n = centers.shape[0]
    out = (np.empty((n, 5)), np.empty((n, 5)), np.empty(n), np.empty(n, np.int32), np.empty(n, np.int8))
    kwargs = {"sigma_init": SIGMA_PX, "roi_size": roi, "initial": initial, "parallel": parallel}
    fit_spots_into(image[:64, :64], centers[:1], *(a[:1] for a in out), **{**kwargs, "initial": None})  # compile
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        fit_spots_into(image, centers, *out, **kwargs)
        best = min(best, time.perf_counter() - started)
    return best, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spots", type=int, default=20000, help="spots per case (default 20000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell; the best is kept (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="numba threads of the parallel rows (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    threads = min(args.threads, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(threads)
    rng = np.random.default_rng(args.seed)
    frames = {name: simulate(rng, args.spots, photons) for name, photons, _ in CASES}

    print(f"machine: {_common.machine_description()}")
    print(
        f"{args.spots} spots per case, sigma {SIGMA_PX} px, background {BACKGROUND:g} photons/px, "
        f"cold start from the rounded true centre; best of {args.repeats} runs\n"
    )
    header = (
        f"{'ROI':>5} {'mode':<12} {'spots':<13} {'N':>5} {'fits/s/core':>12} {'mean it':>8} {'max it':>7} "
        f"{'success':>8} {'no-sig':>7} {'std/sqrtCRLB x,y':>17} {'bias x,y px':>16}"
    )
    print(header)
    print("-" * len(header))
    for roi in (7, 9):
        for parallel in (False, True):
            mode = f"parallel({threads})" if parallel else "serial"
            used = threads if parallel else 1
            for name, photons, warm in CASES:
                image, truth = frames[name]
                centers = np.round(truth[:, :2])
                initial = None
                if warm:
                    initial = truth.copy()
                    initial[:, 2] = ON_PHOTONS
                best, (params, _, _, iters, status) = time_fits(image, centers, initial, roi, parallel, args.repeats)
                ok = status == FitStatus.OK
                rate = len(centers) / best / used
                accuracy = f"{'-':>17} {'-':>16}"
                if photons > 0 and ok.any():
                    bound = crlb_for(truth[ok], roi)
                    err = params[ok, :2] - truth[ok, :2]
                    eff = err.std(axis=0) / np.sqrt(bound[:, :2].mean(axis=0))
                    bias = err.mean(axis=0)
                    accuracy = f"{eff[0]:>8.3f},{eff[1]:>8.3f} {bias[0]:>+7.4f},{bias[1]:>+8.4f}"
                print(
                    f"{roi:>3}x{roi:<1} {mode:<12} {name:<13} {photons:>5.0f} {rate:>12,.0f} {iters.mean():>8.2f} "
                    f"{iters.max():>7d} {ok.mean():>8.3f} {np.mean(status == FitStatus.NO_SIGNAL):>7.3f} {accuracy}"
                )
    print(f"\nthreading layer: {numba.threading_layer()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
