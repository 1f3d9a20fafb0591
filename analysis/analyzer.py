"""The streaming analyzer: one frame in, one row of results out.

No I/O and no sockets here: :class:`StreamingAnalyzer` keeps the state a stream
needs (spot catalog, drift-corrected running mean, ON levels, the last drift)
and turns each frame into a :class:`~plstream.analysis.result_file.layout.FrameRecord`.
It never holds more than one frame of the movie.

Per frame t:

1. ADU -> photons with the camera model, and the frame is added to the
   drift-corrected running mean (at the predicted, i.e. previous, drift
   rounded to whole pixels): one pass over the pixels.
2. On the detection schedule (frames 0, 1, 2, 4, 8, 16, 32, then every
   ``detection.every_frames``), the running mean is searched for spots not
   yet known; new spots get the next IDs. After frame 32 each search covers
   one band of ``detection.late_band_px`` rows, the bands in turn.
3. Each known spot whose pre-screen box at its predicted position holds
   significant photons (``fit.prescreen_sigma``) is fitted (Poisson MLE,
   pixel-integrated Gaussian) in a small region around that position.
4. Drift = robust inverse-variance weighted mean of (fit - reference position)
   over successful fits; with too few, cross-correlation of the frame with the
   running mean, and the spots are re-fitted if that moved them.
5. Photometry (aperture + annulus median, PSF-weighted) at the drift-corrected
   reference positions, ON or OFF alike (forced photometry).
6. ON/OFF per spot; successful fits refine the reference positions.

What a row holds for a spot that is OFF: its photometry (intensity,
background, weighted) is measured as for any spot, so its trace has a value
(near 0) in every frame. Its fit columns are NaN and ``fit_success`` is 0:
either the pre-screen found no signal and no fit was made, or the fit was made
and failed (or was below ``fit.min_photons_snr``); the two are not told apart.
A spot only partly ON in a frame is usually fitted (its photons pass the
pre-screen). Drift, reference positions and warm starts use successful fits
only, so skipping the hopeless ones changes none of them.

With ``fit.parallel`` the per-spot and per-pixel work is spread over numba's
threads; the rows are bit-identical to the serial ones (the work is cut into
the same blocks either way, see ``tests/test_parallel.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np

from plstream.analysis._threads import prefer_passive_waiting
from plstream.analysis.blinking import OnOffClassifier
from plstream.analysis.camera import CameraModel
from plstream.analysis.detect import detect_spots
from plstream.analysis.drift import DriftEstimate, drift_by_correlation, drift_from_spots
from plstream.analysis.fit import fit_spots, fit_spots_into
from plstream.analysis.integrate import Photometry, integrate_spots_into, photometry_scratch
from plstream.analysis.kernels import bookkeeping as _ak
from plstream.analysis.mean_image import RunningMean
from plstream.analysis.result_file import FrameRecord
from plstream.analysis.resume import AnalyzerState
from plstream.analysis.spots import SpotCatalog
from plstream.config import Settings

__all__ = ["Geometry", "StreamingAnalyzer"]

logger = logging.getLogger(__name__)

# Early frames are searched often so spots are found at once; later ones every N frames.
_EARLY_DETECTIONS = frozenset({0, 1, 2, 4, 8, 16, 32})
# Auto PSF width: fits needed, and their photon SNR, before the median sigma is trusted.
_MIN_FITS_FOR_SIGMA = 3
_SIGMA_FIT_MIN_SNR = 20.0
_SIGMA_PATIENCE_FRAMES = 50
# Frames whose records are held back until the reference offset (the "gauge") is settled.
_GAUGE_FRAMES = 24
_GAUGE_MIN_MEASURED = 6
# Rows added on each side of a late detection band (background tiles and filter are off near a cut edge).
_BAND_MARGIN_PX = 32


@dataclass(frozen=True)
class Geometry:
    """Sizes derived from the PSF width (px)."""

    psf_sigma_px: float
    roi_size_px: int
    aperture_radius_px: float
    annulus_inner_px: float
    annulus_outer_px: float

    @classmethod
    def from_settings(cls, settings: Settings, sigma: float) -> Geometry:
        roi = settings.fit.roi_size_px or 2 * math.ceil(3.0 * sigma) + 1
        roi = min(max(int(roi) | 1, 5), 15)
        integ = settings.integration
        radius = integ.aperture_radius_px or 2.5 * sigma
        inner = integ.annulus_inner_px or radius + 2.0
        outer = integ.annulus_outer_px or inner + 4.0
        if not 0 < radius < inner < outer:
            raise ValueError(
                f"integration settings need 0 < aperture_radius_px ({radius}) < annulus_inner_px "
                f"({inner}) < annulus_outer_px ({outer})"
            )
        return cls(float(sigma), roi, float(radius), float(inner), float(outer))


class _FrameWork:
    """Per-spot buffers of the analyzer, grown (geometrically) as spots are found.

    ``warm`` (fit parameters of the last successful fit, the next warm start)
    and ``last_background`` (the last photometric background, for the fit
    pre-screen) carry over from frame to frame; the rest is scratch for one
    frame. Rows are spot IDs except in the fit inputs/outputs (``index``,
    ``centers``, ``initial``, ``params``, ...), whose first k rows are the k
    spots selected for fitting.
    """

    def __init__(self) -> None:
        self.capacity = 0
        self.warm = np.full((0, 5), np.nan)
        self.last_background = np.full(0, np.nan)
        self._scratch_key: tuple[float, float] | None = None
        self._scratch = np.empty(0)
        self._allocate(64)

    def _allocate(self, capacity: int) -> None:
        c, kept = capacity, self.capacity
        warm, self.warm = self.warm, np.full((c, 5), np.nan)
        self.warm[:kept] = warm[:kept]
        last, self.last_background = self.last_background, np.full(c, np.nan)
        self.last_background[:kept] = last[:kept]
        self.index = np.empty(c, dtype=np.int64)
        self.centers = np.empty((c, 2))
        self.initial = np.empty((c, 5))
        self.params = np.empty((c, 5))
        self.crlb = np.empty((c, 5))
        self.loglik = np.empty(c)
        self.iterations = np.empty(c, dtype=np.int32)
        self.status = np.empty(c, dtype=np.int8)
        self.fit = np.empty((c, _ak.N_FIT_COLUMNS))
        self.success = np.zeros(c, dtype=np.bool_)
        self.displacement = np.empty((c, 2))
        self.variance = np.empty(c)
        self.usable = np.zeros(c, dtype=np.bool_)
        self.inliers = np.zeros(c, dtype=np.bool_)
        self.no_inliers = np.zeros(c, dtype=np.bool_)
        self.noise_sigma = np.empty(c)
        self.photometry = Photometry.empty(c)
        self.capacity = c

    def ensure(self, n_spots: int) -> _FrameWork:
        """Room for ``n_spots`` spots (the carried rows keep their values)."""
        if n_spots > self.capacity:
            self._allocate(max(n_spots, 2 * self.capacity))
        return self

    def photometry_scratch(self, geometry: Geometry) -> np.ndarray:
        """The photometry work buffer for this geometry (made again when the PSF width changes)."""
        key = (geometry.annulus_outer_px, geometry.psf_sigma_px)
        if key != self._scratch_key:
            self._scratch = photometry_scratch(*key)
            self._scratch_key = key
        return self._scratch


class StreamingAnalyzer:
    """Analyze a stream of frames one at a time.

    Parameters
    ----------
    settings : Settings
        The effective settings of the run.
    shape : (int, int)
        Frame shape (rows, columns).
    camera : CameraModel
        Offset, gain and read noise used to convert ADU to photons.
    """

    def __init__(self, settings: Settings, shape: tuple[int, int], camera: CameraModel) -> None:
        if len(shape) != 2 or min(shape) < 8:
            raise ValueError(f"frames must be 2-D and at least 8x8 px, got shape {tuple(shape)}")
        if settings.fit.parallel:
            prefer_passive_waiting()  # before numba starts its thread pool
        self._settings = settings
        self._shape = (int(shape[0]), int(shape[1]))
        self._camera = camera
        self._read_variance = float(camera.read_variance_photons)
        self._parallel = bool(settings.fit.parallel)
        self._photons = np.empty(self._shape, dtype=np.float32)
        self._mean = RunningMean(self._shape)
        self._spots = SpotCatalog()
        self._classifier = OnOffClassifier(settings.blinking)
        self._sigma_known = settings.psf.sigma_px is not None
        sigma = settings.psf.sigma_px or settings.psf.initial_sigma_px
        self._geometry = Geometry.from_settings(settings, sigma)
        self._work = _FrameWork()
        self.fits_made = 0
        """Spot fits made so far (spots skipped by the pre-screen are not fitted)."""
        self._held: list[FrameRecord] = []
        self._inliers: np.ndarray | None = None  # spots used in this frame's drift estimate
        self._gauge_settled = False
        self._drift = np.zeros(2)
        self._frame_index = 0
        self._late_searches = 0
        self.method_counts: dict[str, int] = {}

    # ------------------------------------------------------------------ properties
    @property
    def frames_analyzed(self) -> int:
        return self._frame_index

    @property
    def geometry(self) -> Geometry:
        return self._geometry

    @property
    def psf_sigma_measured(self) -> bool:
        """True once the PSF width is known (given in the settings or measured from the data)."""
        return self._sigma_known

    @property
    def spots(self) -> SpotCatalog:
        return self._spots

    @property
    def drift(self) -> np.ndarray:
        """Drift of the last analyzed frame, (dx, dy) px."""
        return self._drift.copy()

    def running_mean(self) -> np.ndarray:
        """The drift-corrected mean image so far (photons/px/frame, reference coordinates)."""
        return self._mean.mean()

    def restore(self, state: AnalyzerState) -> None:
        """Continue a run from its saved state (see :mod:`plstream.analysis.resume` for what is exact).

        The next frame processed gets index ``state.frames``; the reference
        offset counts as settled (a run is resumed only after its first rows).
        """
        if self._frame_index:
            raise RuntimeError("restore() must come before the first frame")
        self._frame_index = int(state.frames)
        self._spots.restore(state.spots_xy, state.spots_weight, state.spots_first_frame)
        if state.mean_image is not None:
            self._mean.restore(state.mean_image, state.mean_shifts)
        self._drift = np.asarray(state.drift_xy, dtype=np.float64).copy()
        self._geometry = Geometry.from_settings(self._settings, self._settings.psf.sigma_px or state.psf_sigma_px)
        self._sigma_known = True
        self._gauge_settled = True
        n = len(self._spots)
        work = self._work.ensure(n)
        work.warm[:n] = state.warm
        work.last_background[:n] = state.last_background
        self._classifier.restore(state.on_level)
        every = max(1, self._settings.detection.every_frames)
        band = self._settings.detection.late_band_px
        if 0 < band < self._shape[0]:  # the band searched next, as if the run had not stopped
            self._late_searches = sum(1 for t in range(max(_EARLY_DETECTIONS) + 1, state.frames) if t % every == 0)
        self.method_counts = dict(state.method_counts)

    # ------------------------------------------------------------------ per frame
    def process(self, seq: int, timestamp: float, raw: np.ndarray) -> list[FrameRecord]:
        """Analyze one frame; returns the result rows that are final now (in frame order).

        The rows of the first frames are held back until the reference offset is
        settled (see :meth:`_settle_gauge`), so the first call returns an empty
        list and a later one several rows; :meth:`finish` returns what is left.

        Parameters
        ----------
        seq : int
            The frame's sequence number in the stream.
        timestamp : float
            Its timestamp, s.
        raw : (H, W) array
            Raw camera data, ADU.

        Returns
        -------
        list of FrameRecord
            Their arrays are new (not reused by later calls); the caller may keep them.
        """
        if raw.shape != self._shape:
            raise ValueError(f"frame {seq} has shape {raw.shape}, the stream's frames are {self._shape}")
        t = self._frame_index
        predicted = self._drift
        camera = self._camera
        image = self._mean.add_raw(
            raw, camera.offset_adu, camera.gain_adu_per_e, predicted, self._photons, parallel=self._parallel
        )
        if self._detection_due(t):
            self._detect(image, t, predicted)
        n = len(self._spots)
        work = self._work.ensure(n)

        self._fit(image, predicted, work)
        drift = self._estimate_drift(t, work)
        if drift.method == "correlation" and n:
            if np.hypot(*(drift.xy - predicted)) > self._settings.drift.refit_jump_px:
                self._fit(image, drift.xy, work)
                drift = self._estimate_drift(t, work, fallback=drift)
        self.method_counts[drift.method] = self.method_counts.get(drift.method, 0) + 1
        drift_xy = drift.xy

        g = self._geometry
        phot = integrate_spots_into(
            image,
            self._spots.xy,
            work.photometry,
            aperture_radius_px=g.aperture_radius_px,
            annulus_inner_px=g.annulus_inner_px,
            annulus_outer_px=g.annulus_outer_px,
            psf_sigma_px=g.psf_sigma_px,
            read_variance=self._read_variance,
            scratch=work.photometry_scratch(g),
            offset_xy=(drift_xy[0], drift_xy[1]),
            parallel=self._parallel,
        )
        noise_sigma = work.noise_sigma[:n]
        _ak.off_noise_sigma(phot.intensity, phot.intensity_variance, noise_sigma)
        state = np.empty(n, dtype=np.int8)
        self._classifier.classify(phot.intensity, noise_sigma, state)

        fit, success = work.fit[:n], work.success[:n]
        inliers = self._inliers if self._inliers is not None else work.no_inliers[:n]
        spots = self._spots
        _ak.refine_references(
            fit,
            success,
            inliers,
            drift_xy[0],
            drift_xy[1],
            self._settings.detection.match_radius_px,
            spots.xy,
            spots.weight,
            work.warm[:n],
        )
        self._inliers = None
        work.last_background[:n] = phot.background
        self._drift = drift_xy
        self._frame_index += 1

        row32 = np.empty((7, n), dtype=np.float32)
        fit_xy = np.empty((2, n))
        fit_success = np.empty(n, dtype=np.int8)
        _ak.write_record(phot.intensity, phot.background, phot.weighted, fit, success, row32, fit_xy, fit_success)
        record = FrameRecord(
            index=t,
            seq=int(seq),
            timestamp=float(timestamp),
            drift_xy=drift_xy.copy(),
            intensity=row32[0],
            background=row32[1],
            weighted=row32[2],
            fit_x=fit_xy[0],
            fit_y=fit_xy[1],
            fit_amplitude=row32[3],
            fit_sigma=row32[4],
            fit_background=row32[5],
            fit_uncertainty=row32[6],
            fit_success=fit_success,
            state=state,
        )
        if self._gauge_settled:
            return [record]
        self._held.append(record)
        if len(self._held) >= _GAUGE_FRAMES:
            return self._release_held()
        return []

    def finish(self) -> list[FrameRecord]:
        """The result rows still held back (call once the stream has ended)."""
        return self._release_held() if not self._gauge_settled else []

    # ------------------------------------------------------------------ reference offset
    def _release_held(self) -> list[FrameRecord]:
        held, self._held = self._held, []
        self._gauge_settled = True
        return self._settle_gauge(held)

    def _settle_gauge(self, held: list[FrameRecord]) -> list[FrameRecord]:
        """Tie the reference positions to frame 0 using the first frames together.

        Frame 0 defines the reference, but one frame's fits are noisy: their mean
        error (about sigma_loc / sqrt(spots ON in frame 0)) would offset every
        later drift. Once the first frames have refined the reference positions,
        each held frame's drift is measured again against them, a smooth
        (quadratic) curve is fitted through those drifts, and its value at frame 0
        (which must be zero) is the offset removed from the reference positions
        and the held drifts. Fits and traces do not depend on this offset.
        """
        spots = self._spots
        if len(held) == 0 or len(spots) == 0:
            return held
        ref = spots.xy.copy()
        ref_var = spots.position_variance()
        t, drift, weight = [], [], []
        for record in held:
            n = record.n_spots
            fitted = np.column_stack([record.fit_x, record.fit_y]).astype(np.float64)
            unc = np.asarray(record.fit_uncertainty, dtype=np.float64)
            usable = (np.asarray(record.fit_success) == 1) & (spots.weight[:n] > 0) & np.isfinite(unc)
            estimate = drift_from_spots(fitted - ref[:n], unc**2 + ref_var[:n], usable)
            if estimate.n_spots >= self._settings.drift.min_spots:
                t.append(record.index)
                drift.append(estimate.xy)
                weight.append(1.0 / max(estimate.standard_error, 1e-6))
        if len(t) < _GAUGE_MIN_MEASURED:
            return held
        times = np.asarray(t, dtype=np.float64)
        measured = np.asarray(drift)
        degree = 2 if len(t) >= 10 else 1
        offset = np.array([np.polyval(np.polyfit(times, measured[:, k], degree, w=weight), 0.0) for k in range(2)])
        spots.shift(offset)
        corrected = dict(zip(t, measured - offset))
        out = []
        for record in held:
            new = corrected.get(record.index)
            if record.index == 0:
                new = np.zeros(2)
            if new is not None:
                record = dataclasses.replace(record, drift_xy=np.asarray(new, dtype=np.float64))
            out.append(record)
        self._drift = np.asarray(out[-1].drift_xy, dtype=np.float64).copy()
        logger.debug("reference offset settled from %d frames: %.4f, %.4f px", len(t), *offset)
        return out

    # ------------------------------------------------------------------ steps
    def _detection_due(self, t: int) -> bool:
        every = max(1, self._settings.detection.every_frames)
        return t in _EARLY_DETECTIONS or t % every == 0 or not self._sigma_known

    def _next_search_rows(self, t: int) -> tuple[int, int]:
        """Reference rows to search at frame t: all of them, or after the search phase the next band."""
        height = self._shape[0]
        band = self._settings.detection.late_band_px
        if t <= max(_EARLY_DETECTIONS) or not self._sigma_known or band <= 0 or band >= height:
            return 0, height
        n_bands = -(-height // band)
        k = self._late_searches % n_bands
        self._late_searches += 1
        return k * height // n_bands, (k + 1) * height // n_bands

    def _detect(self, image: np.ndarray, t: int, drift_xy: np.ndarray) -> None:
        """Search the running mean (or, late, one band of it) for spots not in the catalog yet.

        A band is searched in a crop with ``_BAND_MARGIN_PX`` more rows on each
        side (the background map and the filter near a cut edge are off), and
        keeps the spots whose position rounds to a row of the band.
        """
        det = self._settings.detection
        g = self._geometry
        height = self._shape[0]
        first, stop = self._next_search_rows(t)
        whole = first == 0 and stop == height
        lo, hi = (0, height) if whole else (max(0, first - _BAND_MARGIN_PX), min(height, stop + _BAND_MARGIN_PX))
        known = self._spots.xy - np.array([0.0, lo])
        mean, counts = self._mean.mean_and_counts(lo, hi)
        found = detect_spots(
            mean,
            counts,
            psf_sigma_px=g.psf_sigma_px,
            read_variance=self._read_variance,
            threshold_sigma=det.threshold_sigma if t <= max(_EARLY_DETECTIONS) else det.late_threshold_sigma,
            border_px=det.border_px,
            exclude_xy=known if len(known) else None,
            exclude_radius_px=det.match_radius_px,
            parallel=self._parallel,
        )
        xy = found.xy + np.array([0.0, lo])
        if not whole:
            row = np.floor(xy[:, 1] + 0.5)
            xy = xy[(row >= first) & (row < stop)]
        if len(xy) == 0:
            return
        if not self._sigma_known:
            self._measure_sigma(image, xy + drift_xy)
            if not self._sigma_known and t < _SIGMA_PATIENCE_FRAMES:
                return  # wait for enough bright spots before the catalog starts
            if not self._sigma_known:
                logger.warning(
                    "could not measure the PSF width from the first %d frames (too few bright spots); "
                    "using psf.initial_sigma_px = %.2f px. Set psf.sigma_px if you know it.",
                    t,
                    self._geometry.psf_sigma_px,
                )
                self._sigma_known = True
        ids = self._spots.add(xy, t)
        logger.debug("frame %d: %d new spots (IDs %d-%d)", t, len(ids), ids[0], ids[-1])

    def _measure_sigma(self, image: np.ndarray, centers: np.ndarray) -> None:
        """Set the PSF width from the median fitted sigma of bright candidates (psf.sigma_px = auto)."""
        fits = fit_spots(
            image,
            centers,
            sigma_init=self._geometry.psf_sigma_px,
            roi_size=self._geometry.roi_size_px,
            read_variance=self._read_variance,
            max_iterations=self._settings.fit.max_iterations,
        )
        good = fits.success & (fits.photons_snr >= _SIGMA_FIT_MIN_SNR)
        if np.count_nonzero(good) < _MIN_FITS_FOR_SIGMA:
            return
        sigma = float(np.median(fits.sigma[good]))
        self._geometry = Geometry.from_settings(self._settings, sigma)
        self._sigma_known = True
        logger.info(
            "PSF sigma measured from %d spots: %.3f px (ROI %d px, aperture %.2f px)",
            int(np.count_nonzero(good)),
            sigma,
            self._geometry.roi_size_px,
            self._geometry.aperture_radius_px,
        )

    def _fit(self, image: np.ndarray, drift_xy: np.ndarray, work: _FrameWork) -> None:
        """Fit the spots at reference position + ``drift_xy`` into ``work`` (fit table, drift inputs).

        Spots whose pre-screen box shows no significant signal (``fit.prescreen_sigma``)
        are not fitted: their row of the fit table stays NaN, as for a failed fit.
        """
        spots = self._spots
        n = len(spots)
        fs = self._settings.fit
        g = self._geometry
        k = _ak.select_for_fit(
            image,
            spots.xy,
            float(drift_xy[0]),
            float(drift_xy[1]),
            work.warm[:n],
            work.last_background[:n],
            max(1, math.ceil(1.5 * g.psf_sigma_px)),
            self._read_variance,
            float(fs.prescreen_sigma),
            work.index,
            work.centers,
            work.initial,
        )
        fit_spots_into(
            image,
            work.centers[:k],
            work.params[:k],
            work.crlb[:k],
            work.loglik[:k],
            work.iterations[:k],
            work.status[:k],
            sigma_init=g.psf_sigma_px,
            roi_size=g.roi_size_px,
            read_variance=self._read_variance,
            max_iterations=fs.max_iterations,
            initial=work.initial[:k],
            parallel=self._parallel,
        )
        self.fits_made += k
        _ak.scatter_fits(
            work.index[:k],
            work.params[:k],
            work.crlb[:k],
            work.status[:k],
            float(fs.min_photons_snr),
            spots.xy,
            spots.weight,
            work.fit[:n],
            work.success[:n],
            work.displacement[:n],
            work.variance[:n],
            work.usable[:n],
        )

    def _estimate_drift(self, t: int, work: _FrameWork, fallback: DriftEstimate | None = None) -> DriftEstimate:
        n = len(self._spots)
        if t == 0:
            return DriftEstimate(0.0, 0.0, 0.0, int(np.count_nonzero(work.success[:n])), "reference")
        if n:
            inliers = work.inliers[:n]
            estimate = drift_from_spots(work.displacement[:n], work.variance[:n], work.usable[:n], inliers_out=inliers)
            if estimate.n_spots >= self._settings.drift.min_spots:
                self._inliers = inliers
                return estimate
        if fallback is not None:
            return fallback
        if n and self._mean.n_frames > 1:
            return drift_by_correlation(
                self._mean.mean(), self._photons, upsample=self._settings.drift.correlation_upsample
            )
        return DriftEstimate(float(self._drift[0]), float(self._drift[1]), math.inf, 0, "carried")
