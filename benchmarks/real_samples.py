"""Acceptance figures of issue 11: real bright-field frames, a rotating stage, dark particles on a bright field.

Each case runs the real command line (``plstream replay``, ``plstream export``)
and prints its figures::

    .venv/bin/python benchmarks/real_samples.py bright-field [--data DIR] [--keep DIR]
    .venv/bin/python benchmarks/real_samples.py rotation     [--frames 600] [--seed 0] [--keep DIR]
    .venv/bin/python benchmarks/real_samples.py dark         [--frames 600] [--seed 0] [--keep DIR]
    .venv/bin/python benchmarks/real_samples.py edge-cases   [--keep DIR]

- ``bright-field``: the five real frames (``../shared/data/bright-field-particles``,
  Viacheslav Shkirskiy, CC BY 4.0) with no settings; the drift compared frame
  by frame with whole-frame phase correlation (scikit-image, upsampled 100x;
  as is, and plain cross-correlation of smoothed frames) and with particles fitted independently; then the
  aligned stack and its validation report.
- ``rotation``: 256x256, 50 emitters, drift up to 4 px, 1 degree of rotation
  over the movie; the drift model checked model-free (each emitter's
  reference position carried by the fitted drift vs its true position).
- ``dark``: the acceptance movie's emitters as dark particles absorbing light
  from a bright field (1000 photons/px), 3000 photons each.
- ``edge-cases``: a 2-frame movie, uniform noise, pure texture.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import tifffile
from scipy import ndimage
from skimage.registration import phase_cross_correlation

from plstream.acquire_adapters import SimulationParams, load_truth, write_movie
from plstream.analysis.evaluation import evaluate
from plstream.analysis.fit import fit_spots
from plstream.analysis.result_file import load_results
from plstream.analysis.signal import SignalModel
from plstream.cli import main as plstream_main

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPOSITORY / ".." / "shared" / "data" / "bright-field-particles"
# particles seen in frame 0 of the real data: an independent measure of its drift (fitted one by one)
_PARTICLES = ((295.9, 257.5), (395.4, 235.4), (417.0, 254.0), (450.0, 254.0), (194.7, 284.4), (388.2, 21.6))


def _replay(movie: Path, out: Path, *extra: str) -> None:
    status = plstream_main(["replay", str(movie), "--out", str(out), "--overwrite", "--headless", *extra])
    if status != 0:
        raise SystemExit(f"plstream replay failed with exit status {status}")


def _phase_correlation(frames: list[np.ndarray], smoothed: bool) -> np.ndarray:
    """Whole-frame registration of each frame on frame 0: scikit-image's phase correlation as is
    (upsampled 100x), or plain cross-correlation (normalization=None) of Gaussian-smoothed (2 px) frames,
    which the pixel-level fixed pattern of the camera does not pull towards 0."""
    reference = frames[0].astype(np.float64)
    out = [np.zeros(2)]
    for frame in frames[1:]:
        a, b = reference, frame.astype(np.float64)
        if smoothed:
            a, b = ndimage.gaussian_filter(a, 2.0), ndimage.gaussian_filter(b, 2.0)
            shift, _, _ = phase_cross_correlation(a - a.mean(), b - b.mean(), upsample_factor=100, normalization=None)
        else:
            shift, _, _ = phase_cross_correlation(a, b, upsample_factor=100)
        out.append(-shift[::-1])  # (dx, dy) of the content
    return np.asarray(out)


def _particles(frames: list[np.ndarray], signal: SignalModel) -> np.ndarray:
    """Median motion of a few particles, each fitted frame after frame from where it was."""
    motions = []
    for start in _PARTICLES:
        xy, track = np.asarray(start, dtype=np.float64), []
        for frame in frames:
            fit = fit_spots(signal.to_working(frame), xy[None, :], sigma_init=1.6, roi_size=11)
            xy = np.array([fit.x[0], fit.y[0]]) if fit.success[0] else xy
            track.append(xy)
        motions.append(np.asarray(track) - track[0])
    return np.median(motions, axis=0)


def bright_field(data: Path, folder: Path) -> int:
    frames = [tifffile.imread(data / f"{i}.tif") for i in range(1, 6)]
    result = folder / "bright_field.h5"
    print(f"$ plstream replay {data} --out {result}")
    _replay(data, result)
    results = load_results(result)
    print(f"\nspots: {results.n_spots}; polarity: {results.analysis.get('polarity')}", end=" ")
    print(f"({results.analysis.get('polarity_reason')})")
    print(f"units: {results.signal_units}; warnings: {results.summary.get('warnings')}")
    ours = np.asarray(results.drift_xy)
    phase = _phase_correlation(frames, smoothed=False)
    band = _phase_correlation(frames, smoothed=True)
    particles = _particles(frames, SignalModel.from_dict(results.analysis["signal"]))
    print(
        "\nframe  plstream dx, dy (rot deg)   phase corr.      |diff|   smoothed xcorr   |diff|   particles  ", end=""
    )
    print("      |diff|")
    for t in range(len(frames)):
        row = [
            f"{t:5d}  {ours[t, 0]:+6.3f} {ours[t, 1]:+6.3f} ({np.degrees(results.drift_rotation[t]):+.3f})",
        ]
        for other in (phase, band, particles):
            row.append(f"{other[t, 0]:+6.3f} {other[t, 1]:+6.3f}  {np.hypot(*(ours[t] - other[t])):6.3f}")
        print("   ".join(row))
    for name, other in (
        ("phase correlation", phase),
        ("smoothed cross-correlation", band),
        ("particles", particles),
    ):
        print(f"largest |plstream - {name}|: {np.hypot(*(ours - other).T).max():.3f} px")
    aligned = folder / "bright_field_aligned.tif"
    print(f"\n$ plstream export aligned {result} --out {aligned}")
    plstream_main(["export", "aligned", str(result), "--out", str(aligned), "--overwrite"])
    report = folder / "bright_field_validation"
    print(f"\n$ plstream export validation {result} --out {report}")
    status = plstream_main(["export", "validation", str(result), "--out", str(report), "--overwrite"])
    # the same particles, aligned by the whole-frame phase correlation instead: what would that leave?
    other = folder / "bright_field_phase_correlation.h5"
    shutil.copyfile(result, other)
    with h5py.File(other, "r+") as f:
        f["/drift/xy"][...] = phase
        f["/drift/rotation"][...] = 0.0
    print("\nfor comparison, the same validation of an alignment by whole-frame phase correlation:")
    plstream_main(
        [
            "export",
            "validation",
            str(other),
            "--out",
            str(folder / "phase_correlation_validation"),
            "--overwrite",
            "--particles",
            ",".join(map(str, _validated(report))),
        ]
    )
    return status


def _validated(report: Path) -> list[int]:
    with open(report / "validation_summary.csv", newline="") as f:
        return [int(row["spot"]) for row in csv.DictReader(f) if row["spot"] != "all"]


def _simulated(folder: Path, name: str, params: SimulationParams, seed: int) -> int:
    movie = folder / f"{name}.tif"
    truth = write_movie(movie, params, seed=seed)
    result = folder / f"{name}.h5"
    print(f"$ plstream replay {movie} --out {result}")
    _replay(movie, result)
    evaluation = evaluate(load_results(result), load_truth(truth))
    print(evaluation.table())
    return 0


def edge_cases(folder: Path) -> int:
    rng = np.random.default_rng(5)
    base = ndimage.gaussian_filter(rng.normal(0, 1, (300, 300)), 3) * 3000 + 20000
    movies = {
        "two_frames.tif": np.stack([tifffile.imread(DEFAULT_DATA / "1.tif"), tifffile.imread(DEFAULT_DATA / "3.tif")])
        if (DEFAULT_DATA / "1.tif").exists()
        else rng.normal(1000, 30, (2, 200, 200)).astype(np.uint16),
        "noise.tif": rng.normal(1000, 30, (20, 200, 200)).clip(0).astype(np.uint16),
        "texture.tif": np.stack(
            [
                (
                    ndimage.shift(base, (0.5 * t, 0.7 * t), order=3, mode="nearest")[50:250, 50:250]
                    + rng.normal(0, 20, (200, 200))
                ).astype(np.uint16)
                for t in range(12)
            ]
        ),
    }
    for name, stack in movies.items():
        movie = folder / name
        tifffile.imwrite(movie, stack)
        print(f"\n$ plstream replay {movie} --out {movie.with_suffix('.h5')}")
        _replay(movie, movie.with_suffix(".h5"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=("bright-field", "rotation", "dark", "edge-cases"))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the real frames' folder")
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="folder to keep the movies and results in")
    args = parser.parse_args(argv)

    def run(folder: Path) -> int:
        if args.case == "bright-field":
            return bright_field(args.data.resolve(), folder)
        if args.case == "rotation":
            params = SimulationParams(
                shape=(256, 256), n_frames=args.frames, n_emitters=50, drift_max_px=4.0, rotation_max_deg=1.0
            )
            return _simulated(folder, "rotation", params, args.seed)
        if args.case == "dark":
            params = SimulationParams(
                shape=(256, 256),
                n_frames=args.frames,
                n_emitters=60,
                contrast="dark",
                background_photons=1000.0,
                photons_per_frame=3000.0,
            )
            return _simulated(folder, "dark", params, args.seed)
        return edge_cases(folder)

    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        return run(args.keep)
    with tempfile.TemporaryDirectory() as folder:
        return run(Path(folder))


if __name__ == "__main__":
    sys.exit(main())
