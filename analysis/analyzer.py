"""The streaming analyzer: one frame in, one row of results out.

No I/O and no sockets here: :class:`StreamingAnalyzer` keeps the state a stream
needs (spot catalog, drift-corrected running mean, ON levels, the last drift)
and turns each frame into a :class:`~plstream.analysis.results.FrameRecord`.
It never holds more than one frame of the movie.

Per frame t:

1. ADU -> photons with the camera model.
2. The frame is added to the drift-corrected running mean (at the predicted,
   i.e. previous, drift rounded to whole pixels).
3. On the detection schedule (frames 0, 1, 2, 4, 8, ... then every N), the
   running mean is searched for spots not yet known; new spots get the next IDs.
4. Every known spot is fitted (Poisson MLE, pixel-integrated Gaussian) in a
   small region around its predicted position.
5. Drift = robust inverse-variance weighted mean of (fit - reference position)
   over successful fits; with too few, cross-correlation of the frame with the
   running mean, and the spots are re-fitted if that moved them.
6. Photometry (aperture + annulus median, PSF-weighted) at the drift-corrected
   reference positions, ON or OFF alike (forced photometry).
7. ON/OFF per spot; successful fits refine the reference positions.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np

from plstream.analysis.blinking import OnOffClassifier
from plstream.analysis.camera import CameraModel, to_photons
from plstream.analysis.detect import detect_spots
from plstream.analysis.drift import DriftEstimate, drift_by_correlation, drift_from_spots
from plstream.analysis.fit import SpotFits, fit_spots
from plstream.analysis.integrate import integrate_spots
from plstream.analysis.mean_image import RunningMean
from plstream.analysis.results import FrameRecord
from plstream.analysis.spots import SpotCatalog
from plstream.config import Settings

__all__ = ["StreamingAnalyzer", "Geometry"]

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


@dataclass(frozen=True)
class Geometry:
    """Sizes derived from the PSF width (px)."""

    psf_sigma_px: float
    roi_size_px: int
    aperture_radius_px: float
    annulus_inner_px: float
    annulus_outer_px: float

    @classmethod
    def from_settings(cls, settings: Settings, sigma: float) -> "Geometry":
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
        self._settings = settings
        self._shape = (int(shape[0]), int(shape[1]))
        self._camera = camera
        self._read_variance = float(camera.read_variance_photons)
        self._photons = np.empty(self._shape, dtype=np.float32)
        self._mean = RunningMean(self._shape)
        self._spots = SpotCatalog()
        self._classifier = OnOffClassifier(settings.blinking)
        self._sigma_known = settings.psf.sigma_px is not None
        sigma = settings.psf.sigma_px or settings.psf.initial_sigma_px
        self._geometry = Geometry.from_settings(settings, sigma)
        self._warm = np.full((0, 5), np.nan)
        self._held: list[FrameRecord] = []
        self._inliers: np.ndarray | None = None  # spots used in this frame's drift estimate
        self._gauge_settled = False
        self._drift = np.zeros(2)
        self._frame_index = 0
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
        """
        if raw.shape != self._shape:
            raise ValueError(f"frame {seq} has shape {raw.shape}, the stream's frames are {self._shape}")
        t = self._frame_index
        image = to_photons(raw, self._camera, out=self._photons)
        predicted = self._drift
        self._mean.add(image, predicted)
        if self._detection_due(t):
            self._detect(image, t, predicted)

        centers = self._spots.xy + predicted
        fits = self._fit(image, centers)
        success = self._fit_success(fits)
        drift = self._estimate_drift(t, fits, success)
        if drift.method == "correlation" and len(self._spots):
            if np.hypot(*(drift.xy - predicted)) > self._settings.drift.refit_jump_px:
                fits = self._fit(image, self._spots.xy + drift.xy)
                success = self._fit_success(fits)
                drift = self._estimate_drift(t, fits, success, fallback=drift)
        self.method_counts[drift.method] = self.method_counts.get(drift.method, 0) + 1
        drift_xy = drift.xy
        positions = self._spots.xy + drift_xy

        g = self._geometry
        phot = integrate_spots(
            image,
            positions,
            aperture_radius_px=g.aperture_radius_px,
            annulus_inner_px=g.annulus_inner_px,
            annulus_outer_px=g.annulus_outer_px,
            psf_sigma_px=g.psf_sigma_px,
            read_variance=self._read_variance,
        )
        off_variance = phot.intensity_variance - np.maximum(np.nan_to_num(phot.intensity), 0.0)
        noise_sigma = np.sqrt(np.maximum(off_variance, 1e-12))
        state = np.empty(len(self._spots), dtype=np.int8)
        self._classifier.classify(phot.intensity, noise_sigma, state)

        self._refine_references(fits, success, drift_xy)
        self._remember_warm_start(fits, success)
        self._drift = drift_xy
        self._frame_index += 1

        nan = np.nan
        record = FrameRecord(
            index=t,
            seq=int(seq),
            timestamp=float(timestamp),
            drift_xy=drift_xy.copy(),
            intensity=phot.intensity.astype(np.float32),
            background=phot.background.astype(np.float32),
            weighted=phot.weighted.astype(np.float32),
            fit_x=np.where(success, fits.x, nan),
            fit_y=np.where(success, fits.y, nan),
            fit_amplitude=np.where(success, fits.photons, nan).astype(np.float32),
            fit_sigma=np.where(success, fits.sigma, nan).astype(np.float32),
            fit_background=np.where(success, fits.background, nan).astype(np.float32),
            fit_uncertainty=np.where(success, fits.uncertainty, nan).astype(np.float32),
            fit_success=success.astype(np.int8),
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

    def _detect(self, image: np.ndarray, t: int, drift_xy: np.ndarray) -> None:
        det = self._settings.detection
        g = self._geometry
        known = self._spots.xy.copy()
        found = detect_spots(
            self._mean.mean(),
            self._mean.counts,
            psf_sigma_px=g.psf_sigma_px,
            read_variance=self._read_variance,
            threshold_sigma=det.threshold_sigma if t <= max(_EARLY_DETECTIONS) else det.late_threshold_sigma,
            border_px=det.border_px,
            exclude_xy=known if len(known) else None,
            exclude_radius_px=det.match_radius_px,
        )
        if len(found.xy) == 0:
            return
        if not self._sigma_known:
            self._measure_sigma(image, found.xy + drift_xy)
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
        ids = self._spots.add(found.xy, t)
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

    def _fit(self, image: np.ndarray, centers: np.ndarray) -> SpotFits:
        warm = self._warm
        if warm.shape[0] < centers.shape[0]:
            grown = np.full((centers.shape[0], 5), np.nan)
            grown[: warm.shape[0]] = warm
            self._warm = warm = grown
        return fit_spots(
            image,
            centers,
            sigma_init=self._geometry.psf_sigma_px,
            roi_size=self._geometry.roi_size_px,
            read_variance=self._read_variance,
            max_iterations=self._settings.fit.max_iterations,
            initial=warm[: centers.shape[0]],
        )

    def _fit_success(self, fits: SpotFits) -> np.ndarray:
        return fits.success & (fits.photons_snr >= self._settings.fit.min_photons_snr)

    def _estimate_drift(
        self, t: int, fits: SpotFits, success: np.ndarray, fallback: DriftEstimate | None = None
    ) -> DriftEstimate:
        if t == 0:
            return DriftEstimate(0.0, 0.0, 0.0, int(np.count_nonzero(success)), "reference")
        spots = self._spots
        n = len(spots)
        if n:
            displacement = np.column_stack([fits.x, fits.y]) - spots.xy
            variance = fits.uncertainty**2 + spots.position_variance()
            usable = success & (spots.weight > 0)
            inliers = np.zeros(n, dtype=np.bool_)
            estimate = drift_from_spots(displacement, variance, usable, inliers_out=inliers)
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

    def _refine_references(self, fits: SpotFits, success: np.ndarray, drift_xy: np.ndarray) -> None:
        spots = self._spots
        n = len(spots)
        if n == 0:
            return
        measured = np.column_stack([fits.x, fits.y]) - drift_xy
        first_fit = spots.weight == 0
        near = np.hypot(*(measured - spots.xy).T) <= self._settings.detection.match_radius_px
        inliers = self._inliers
        if inliers is None or inliers.shape[0] != n:
            inliers = np.zeros(n, dtype=np.bool_)
        use = success & ((first_fit & near) | inliers)
        spots.refine(measured, fits.uncertainty**2, use)
        self._inliers = None

    def _remember_warm_start(self, fits: SpotFits, success: np.ndarray) -> None:
        n = len(self._spots)
        params = np.column_stack([fits.x, fits.y, fits.photons, fits.sigma, fits.background])
        self._warm[:n] = np.where(success[:, None], params, np.nan)
