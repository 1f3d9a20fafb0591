"""Accuracy of the refined blinking states and the dwell-time fits, against the simulator's truth.

Two movies, each simulated, replayed through ``plstream replay`` (the whole
pipeline) and scored:

1. **Exponents** (``--part exponents``): power-law blinking with known
   exponents (alpha_on 1.6, alpha_off 1.8, no truncation, no bleaching),
   120 emitters, 5000 frames. The ensemble exponents stored in the result
   file (``/blinking/ensemble``) are compared with the truth and with the
   *reference*: the same fit applied to the simulator's true per-frame
   ON/OFF sequences (ON = ON for at least half the exposure).
2. **Dim movie** (``--part dim``): 400 photons per ON frame, background 40
   photons/px, 1000 frames, 60 emitters. ON/OFF accuracy of the causal and
   the refined states on the frames that are clearly ON or OFF (ON for at
   least 90 % or at most 10 % of the exposure), and the mean complete ON and
   OFF dwell times against those of the true sequences (same censoring rules).

Run by hand::

    .venv/bin/python benchmarks/blinking_accuracy.py [--part exponents|dim|all] [--seed 0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from plstream.acquire_adapters import SimulationParams, load_truth, write_movie
from plstream.analysis.evaluation import _match
from plstream.analysis.intermittency import DwellTable, dwells_from_states, fit_dwell_times
from plstream.analysis.result_file import load_results
from plstream.cli import main as plstream_main

EXPONENT_MOVIE = {
    "shape": (256, 256),
    "n_frames": 5000,
    "n_emitters": 120,
    "on_exponent": 1.6,
    "off_exponent": 1.8,
    "on_truncation_frames": math.inf,
    "off_truncation_frames": math.inf,
    "bleach_on_frames": math.inf,
}
DIM_MOVIE = {
    "shape": (256, 256),
    "n_frames": 1000,
    "n_emitters": 60,
    "photons_per_frame": 400.0,
    "background_photons": 40.0,
}


def _replay(folder: Path, name: str, params: SimulationParams, seed: int) -> tuple[object, object, float]:
    movie = folder / f"{name}_seed{seed}.tif"
    result = folder / f"{name}_seed{seed}.h5"
    started = time.monotonic()
    truth_path = write_movie(movie, params, seed=seed)
    print(f"simulated {params.n_frames} frames ({params.n_emitters} emitters) in {time.monotonic() - started:.0f} s")
    started = time.monotonic()
    status = plstream_main(["replay", str(movie), "--out", str(result), "--overwrite", "--headless"])
    if status != 0:
        raise SystemExit(f"plstream replay failed with exit status {status}")
    return load_results(result), load_truth(truth_path), time.monotonic() - started


def _matched(results, truth):
    found = np.column_stack([results.spots_x, results.spots_y])
    return _match(found, np.asarray(truth.positions_xy), 1.0)


def _dwells(states: np.ndarray, seq: np.ndarray) -> DwellTable:
    return DwellTable.concatenate([dwells_from_states(states[:, i], seq, spot=i) for i in range(states.shape[1])])


def exponents(folder: Path, seed: int) -> bool:
    params = SimulationParams(**EXPONENT_MOVIE)
    r, truth, elapsed = _replay(folder, "powerlaw", params, seed)
    print(f"replayed in {elapsed:.0f} s; {r.n_spots} spots found of {truth.n_emitters}")
    true_states = (truth.on_fraction[r.seq] >= 0.5).astype(np.int8)
    reference = _dwells(true_states, r.seq)
    ok = True
    print("\n  state  truth  plstream (result file)                         reference (true sequences)")
    for name, state, alpha in (("on", 1, params.on_exponent), ("off", 0, params.off_exponent)):
        a, e = r.ensemble[f"alpha_{name}"], r.ensemble[f"alpha_{name}_error"]
        ref = fit_dwell_times(*reference.of_state(state))
        assert ref is not None
        covered = abs(a - alpha) <= 1.96 * e
        within = abs(a - alpha) <= 0.1
        ok &= covered and within
        print(
            f"  {name:<5}  {alpha:.2f}   {a:.3f} ± {e:.3f} (t_min {r.ensemble[f't_min_{name}_frames']}, "
            f"{r.ensemble[f'n_{name}_dwells']} dwells, {r.ensemble[f'model_{name}']}) "
            f"|Δ| {abs(a - alpha):.3f} {'≤' if within else '>'} 0.1, "
            f"{'covered' if covered else 'NOT covered'} at 1.96 SE"
            f"   {ref.alpha:.3f} ± {ref.alpha_error:.3f} (t_min {ref.t_min}, {ref.n_complete} dwells)"
        )
    return ok


def dim(folder: Path, seed: int) -> bool:
    params = SimulationParams(**DIM_MOVIE)
    r, truth, elapsed = _replay(folder, "dim", params, seed)
    rows, cols = _matched(r, truth)
    on_fraction = truth.on_fraction[r.seq][:, cols]
    clear = (on_fraction >= 0.9) | (on_fraction <= 0.1)
    true_on = on_fraction >= 0.5
    print(f"replayed in {elapsed:.0f} s; {len(rows)} of {truth.n_emitters} emitters matched")
    print(f"\n  frames clearly ON or OFF: {np.count_nonzero(clear)} of {clear.size}")
    accuracy = {}
    for label, states in (("causal (/blinking/state)", r.state), ("refined (/blinking/segmented)", r.segmented)):
        s = states[:, rows]
        measured = clear & (s >= 0)
        right = np.where(true_on, s == 1, s == 0)[measured]
        accuracy[label] = float(np.mean(right))
        print(f"  ON/OFF accuracy, {label:<30} {accuracy[label]:.4f}   ({np.count_nonzero(~right)} wrong)")
    truth_dwells = _dwells(true_on.astype(np.int8), r.seq)
    ok = accuracy["refined (/blinking/segmented)"] >= 0.99
    print("\n  mean complete dwell (frames)   truth     refined   error    causal    error")
    for name, state in (("ON", 1), ("OFF", 0)):
        t = truth_dwells.of_state(state)[0].mean()
        values = []
        for states in (r.segmented, r.state):
            values.append(_dwells(states[:, rows], r.seq).of_state(state)[0].mean())
        err = [v / t - 1 for v in values]
        ok &= abs(err[0]) <= 0.05
        print(f"  {name:<30} {t:7.3f}   {values[0]:7.3f}  {err[0]:+6.1%}   {values[1]:7.3f}  {err[1]:+6.1%}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("exponents", "dim", "all"), default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="folder to keep the movies and results in")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        ok = True
        if args.part in ("exponents", "all"):
            ok &= exponents(folder, args.seed)
        if args.part in ("dim", "all"):
            ok &= dim(folder, args.seed)
    print("\nall bars met" if ok else "\nMISSED a bar")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
