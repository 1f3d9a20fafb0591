"""The streaming analyzer: one frame in, one row of results out.

No I/O and no sockets here: :class:`StreamingAnalyzer` keeps the state a stream
needs (spot catalog, drift-corrected running mean, ON levels, the last drift)
and turns each frame into a :class:`~plstream.analysis.result_file.layout.FrameRecord`.
It never holds more than one frame of the movie.

Per frame t:

1. ADU -> working units with the signal model (photons for a known camera
   and bright particles; see :mod:`~plstream.analysis.signal`), and the frame
   is added to the drift-corrected running mean (at the predicted, i.e.
   previous, drift rounded to whole pixels, or through its rotation): one
   pass over the pixels.
2. On the detection schedule (frames 0, 1, 2, 4, 8, 16, 32, then every
   ``detection.every_frames``), the running mean is searched for spots not
   yet known; new spots get the next IDs. After frame 32 each search covers
   one band of ``detection.late_band_px`` rows, the bands in turn.
3. Each known spot whose pre-screen box at its predicted position (the
   reference position through the previous frame's rigid transform) holds
   significant photons (``fit.prescreen_sigma``) is fitted (Poisson MLE,
   pixel-integrated Gaussian) in a small region around that position.
4. Drift = robust weighted rigid fit (translation + rotation about the image
   centre, :func:`~plstream.analysis.drift.rigid_from_spots`) of the
   successful fits to their reference positions; with too few consistent
   spots (or ``drift.method = "registration"``), image registration against
   the mean of the earlier frames, and the spots are re-fitted if that moved
   them.
5. Photometry (aperture + annulus median, PSF-weighted) at the reference
   positions through the frame's rigid transform, ON or OFF alike (forced
   photometry).
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
import itertools
import logging
import math
import statistics
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from plstream.analysis._threads import prefer_passive_waiting
from plstream.analysis.blinking import OnOffClassifier
from plstream.analysis.camera import CameraModel
from plstream.analysis.detect import detect_spots
from plstream.analysis.drift import DriftEstimate, RotationSmoother, register_frame, rigid_from_spots
from plstream.analysis.fit import ROI_SIZE_MAX, ROI_SIZE_MIN, default_roi_size, fit_spots, fit_spots_into
from plstream.analysis.integrate import Photometry, integrate_spots_into, photometry_scratch
from plstream.analysis.kernels import bookkeeping as _ak
from plstream.analysis.kernels.drift import rigid_apply
from plstream.analysis.mean_image import RunningMean
from plstream.analysis.result_file import FrameRecord
from plstream.analysis.result_file.layout import DRIFT_METHODS, rotation_center_xy
from plstream.analysis.resume import AnalyzerState
from plstream.analysis.signal import SignalModel
from plstream.analysis.spots import SpotCatalog
from plstream.analysis.width import MAX_WIDTH_PX, blob_widths
from plstream.config import Settings

__all__ = ["Geometry", "StreamingAnalyzer"]

logger = logging.getLogger(__name__)

# Early frames are searched often so spots are found at once; later ones every N frames.
_EARLY_DETECTIONS = frozenset({0, 1, 2, 4, 8, 16, 32})
# Auto PSF width: fits needed, and their photon SNR, before the median sigma is trusted.
_MIN_FITS_FOR_SIGMA = 3
_ENOUGH_FITS_FOR_SIGMA = 10
_SIGMA_FIT_MIN_SNR = 20.0
_SIGMA_PATIENCE_FRAMES = 50
_WIDTH_CANDIDATES = 50  # the most significant candidates whose width is measured
# Candidates wider than this fraction of the half fit region are fitted in a larger one.
_WIDE_FRACTION = 0.5
# A measured width this far (ratio) from the one the candidates were found with: search again.
_REDETECT_LOG_RATIO = math.log(1.5)
# Frames whose records are held back until the reference offset (the "gauge") is settled.
_GAUGE_FRAMES = 24
_GAUGE_MIN_MEASURED = 6
_GAUGE_MAX_CHI2 = 9.0
# Rows added on each side of a late detection band (background tiles and filter are off near a cut edge).
_BAND_MARGIN_PX = 32
# The rotation is measured only when its standard error moves the field's corners by at most this (px).
_ROTATION_GATE_PX = 0.1
# Spots must agree: a spot-based drift needs this fraction of the usable spots as inliers.
_MIN_INLIER_FRACTION = 0.5
_VELOCITY_FRAMES = 3  # the predicted motion is the median of this many frame-to-frame changes


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
        roi = min(max(int(roi) | 1, ROI_SIZE_MIN), ROI_SIZE_MAX)
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


def _at_frame_zero(times: np.ndarray, values: np.ndarray, errors: np.ndarray) -> float:
    """A smooth curve through the first frames' measurements, evaluated at frame 0.

    A quadratic (a line for fewer than 10 frames) weighted by the standard
    errors; when the measurements do not follow it (reduced chi-square above
    9: a drift or rotation that changes fast), a line through the three
    earliest frames only.
    """
    weights = 1.0 / errors
    degree = 2 if times.size >= 10 else 1
    coefficients = np.polyfit(times, values, degree, w=weights)
    dof = times.size - degree - 1
    if dof > 0:
        chi2 = float(np.sum(((values - np.polyval(coefficients, times)) * weights) ** 2)) / dof
        if chi2 > _GAUGE_MAX_CHI2:
            coefficients = np.polyfit(times[:3], values[:3], 1, w=weights[:3])
    return float(np.polyval(coefficients, 0.0))


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
        self.positions = np.empty((c, 2))  # reference positions through this frame's (predicted) rigid transform
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
    camera : CameraModel or None
        Offset, gain and read noise used to convert ADU to photons (None: see ``signal``).
    signal : SignalModel, optional
        How raw ADU become working units and results output units (polarity,
        noise model); default: bright particles and ``camera`` (photons).
    drift_spots : (K,) bool array or None
        Restrict the drift to these spot IDs (True); spots beyond K do not take part.
    """

    def __init__(
        self,
        settings: Settings,
        shape: tuple[int, int],
        camera: CameraModel | None,
        *,
        signal: SignalModel | None = None,
    ) -> None:
        if len(shape) != 2 or min(shape) < 8:
            raise ValueError(f"frames must be 2-D and at least 8x8 px, got shape {tuple(shape)}")
        if signal is None:
            if camera is None:
                raise ValueError("StreamingAnalyzer needs a camera model or a signal model")
            signal = SignalModel.from_camera(camera)
        if settings.fit.parallel:
            prefer_passive_waiting()  # before numba starts its thread pool
        self._settings = settings
        self._shape = (int(shape[0]), int(shape[1]))
        self._camera = camera
        self._signal = signal
        self._read_variance = float(signal.read_variance)
        self._center = rotation_center_xy(self._shape)
        self._field_radius = 0.5 * math.hypot(*self._shape)
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
        self._rotation = 0.0
        self._frame_index = 0
        self._late_searches = 0
        self._drift_spots: np.ndarray | None = None  # spot IDs allowed to measure the drift (None: all)
        self._reference_boxes: np.ndarray | None = None  # user-picked particles, placed at the next frame
        self._rotation_smoother = RotationSmoother(settings.drift.rotation_smoothing_frames)
        self._level: float | None = None  # the last frame's overall level (Gaussian signal model)
        self._history: list[tuple[float, float, float]] = []  # the last frames' (dx, dy, theta)
        self._predicted = (0.0, 0.0, 0.0)  # this frame's predicted (dx, dy, theta)
        self.method_counts: dict[str, int] = {}
        self.fits_succeeded = 0
        """Successful spot fits so far."""
        self.warnings: list[str] = []
        """What looked wrong with the data so far (sentences, for the run's summary)."""

    # ------------------------------------------------------------------ properties
    @property
    def frames_analyzed(self) -> int:
        return self._frame_index

    @property
    def shape(self) -> tuple[int, int]:
        """Frame shape (rows, columns), px."""
        return self._shape

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
        """Drift of the last analyzed frame, (dx, dy) px (the translation about :attr:`rotation_center`)."""
        return self._drift.copy()

    @property
    def rotation(self) -> float:
        """Rotation of the last analyzed frame about :attr:`rotation_center`, rad."""
        return self._rotation

    @property
    def rotation_center(self) -> tuple[float, float]:
        """The centre of the drift's rotation (the image centre), px (x, y)."""
        return self._center

    @property
    def signal(self) -> SignalModel:
        return self._signal

    def running_mean(self) -> np.ndarray:
        """The drift-corrected mean image so far (output units per px per frame, reference coordinates)."""
        return self._signal.levels_out(self._mean.mean())

    def set_drift_spots(self, ids: np.ndarray | None) -> None:
        """Let only the spots ``ids`` measure the drift (None: every spot)."""
        self._drift_spots = None if ids is None else np.unique(np.asarray(ids, dtype=np.int64))

    def set_reference_boxes(self, boxes: np.ndarray) -> None:
        """Particles picked by the user, as search boxes ``x0, y0, x1, y1`` (K, 4) in frame-0 px.

        In the next frame analyzed, each box's particle is located (the
        strongest blob in it, refined by a fit), becomes a spot (the next
        IDs), and only these spots measure the drift from then on.
        """
        self._reference_boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)

    def _transform(self, xy: np.ndarray, drift_xy: np.ndarray, theta: float, out: np.ndarray) -> np.ndarray:
        """Reference positions ``xy`` (S, 2) through the rigid transform (drift, theta) into ``out``."""
        rigid_apply(xy, math.cos(theta), math.sin(theta), *self._center, float(drift_xy[0]), float(drift_xy[1]), out)
        return out

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
        predicted, predicted_theta = self._predict()
        self._predicted = (float(predicted[0]), float(predicted[1]), predicted_theta)
        signal = self._signal
        image = self._mean.add_raw(
            raw,
            signal.offset_adu,
            signal.adu_per_unit,
            predicted,
            self._photons,
            parallel=self._parallel,
            rotation=predicted_theta,
            center_xy=self._center,
        )
        if self._reference_boxes is not None:
            self._place_reference_spots(image, t, predicted, predicted_theta)
        if self._detection_due(t):
            self._detect(image, t, predicted, predicted_theta)
        n = len(self._spots)
        work = self._work.ensure(n)
        if signal.noise == "gaussian":
            self._follow_illumination(image, work, n)

        self._fit(image, predicted, predicted_theta, work)
        drift = self._estimate_drift(t, work)
        if drift.method == "registration" and n:
            if np.hypot(*(drift.xy - predicted)) > self._settings.drift.refit_jump_px:
                self._fit(image, drift.xy, drift.theta, work)
                drift = self._estimate_drift(t, work, fallback=drift)
        if drift.rotation_fitted:
            drift = self._smooth_rotation(t, drift, work)
        self.method_counts[drift.method] = self.method_counts.get(drift.method, 0) + 1
        drift_xy, theta = drift.xy, float(drift.theta)
        if np.isfinite(drift_xy).all():
            self._mean.move_last(raw, self._photons, drift_xy, rotation=theta, center_xy=self._center)

        g = self._geometry
        positions = self._transform(self._spots.xy, drift_xy, theta, work.positions[:n])
        phot = integrate_spots_into(
            image,
            positions,
            work.photometry,
            aperture_radius_px=g.aperture_radius_px,
            annulus_inner_px=g.annulus_inner_px,
            annulus_outer_px=g.annulus_outer_px,
            psf_sigma_px=g.psf_sigma_px,
            read_variance=self._read_variance,
            scratch=work.photometry_scratch(g),
            parallel=self._parallel,
        )
        noise_sigma = work.noise_sigma[:n]
        _ak.off_noise_sigma(phot.intensity, phot.intensity_variance, noise_sigma)
        state = np.empty(n, dtype=np.int8)
        self._classifier.classify(phot.intensity, noise_sigma, state)

        fit, success = work.fit[:n], work.success[:n]
        inliers = self._inliers if self._inliers is not None else work.no_inliers[:n]
        if self._drift_spots is not None and self._inliers is not None:
            inliers = inliers | self._consistent(work, n, positions)
        spots = self._spots
        _ak.refine_references(
            fit,
            success,
            inliers,
            drift_xy[0],
            drift_xy[1],
            math.cos(theta),
            math.sin(theta),
            self._center[0],
            self._center[1],
            self._settings.detection.match_radius_px,
            spots.xy,
            spots.weight,
            work.warm[:n],
        )
        self._inliers = None
        work.last_background[:n] = phot.background
        self._drift = drift_xy
        self._rotation = theta
        self._history.append((float(drift_xy[0]), float(drift_xy[1]), theta))
        del self._history[: -(_VELOCITY_FRAMES + 1)]
        self._frame_index += 1
        self.fits_succeeded += int(np.count_nonzero(success))

        row32 = np.empty((7, n), dtype=np.float32)
        fit_xy = np.empty((2, n))
        fit_success = np.empty(n, dtype=np.int8)
        _ak.write_record(phot.intensity, phot.background, phot.weighted, fit, success, row32, fit_xy, fit_success)
        if not signal.identity:
            for row in (0, 2, 3):  # intensity, weighted, fitted amplitude: amounts
                row32[row] = signal.amounts_out(row32[row])
            for row in (1, 5):  # backgrounds: levels
                row32[row] = signal.levels_out(row32[row])
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
            drift_rotation=theta,
            drift_uncertainty=drift.uncertainty,
            drift_method=DRIFT_METHODS.get(drift.method, -1),
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
        error (about sigma_loc / sqrt(spots ON in frame 0)), and their mean
        rotation, would offset every later drift. Once the first frames have
        refined the reference positions, each held frame's rigid transform is
        measured again against them, smooth (quadratic) curves are fitted
        through its translation and rotation, and their value at frame 0 (which
        must be the identity) is removed from the reference positions and the
        held transforms. Fits and traces do not depend on it.
        """
        spots = self._spots
        if len(held) == 0 or len(spots) == 0:
            return held
        ref = spots.xy.copy()
        ref_var = spots.position_variance()
        allowed = self._drift_mask(len(spots))
        rotate = self._settings.drift.rotation
        t, measured, errors, rotated = [], [], [], []
        for record in held:
            n = record.n_spots
            fitted = np.column_stack([record.fit_x, record.fit_y]).astype(np.float64)
            unc = np.asarray(record.fit_uncertainty, dtype=np.float64)
            usable = (np.asarray(record.fit_success) == 1) & (spots.weight[:n] > 0) & np.isfinite(unc)
            if allowed is not None:
                usable &= allowed[:n]
            estimate = rigid_from_spots(
                ref[:n],
                fitted - ref[:n],
                unc**2 + ref_var[:n],
                usable,
                center_xy=self._center,
                predicted=(float(record.drift_xy[0]), float(record.drift_xy[1]), float(record.drift_rotation)),
                fit_rotation=rotate,
                field_radius_px=self._field_radius,
                rotation_gate_px=_ROTATION_GATE_PX,
            )
            enough = self._settings.drift.min_spots
            if self._drift_spots is not None:
                enough = min(enough, self._drift_spots.size)
            if estimate.n_spots >= enough:
                t.append(record.index)
                measured.append((estimate.dx, estimate.dy, estimate.theta))
                errors.append((max(estimate.standard_error, 1e-6), max(estimate.se_theta, 1e-12)))
                rotated.append(estimate.rotation_fitted)
        if not t or (len(t) < _GAUGE_MIN_MEASURED and t[0] != 0):
            return held
        times = np.asarray(t, dtype=np.float64)
        values = np.asarray(measured)
        se = np.asarray(errors)
        fitted = np.asarray(rotated, dtype=np.bool_)
        if len(t) < _GAUGE_MIN_MEASURED:
            # a short movie: too few frames for a curve, frame 0's own measurement ties the reference to it
            offset, theta0 = values[0, :2].copy(), float(values[0, 2]) if fitted[0] else 0.0
        else:
            offset = np.array([_at_frame_zero(times, values[:, k], se[:, 0]) for k in range(2)])
            theta0 = 0.0
            if np.count_nonzero(fitted) >= _GAUGE_MIN_MEASURED:
                theta0 = _at_frame_zero(times[fitted], values[fitted, 2], se[fitted, 1])
        spots.transform(theta0, self._center, offset)
        corrected = {}
        for index, (dx, dy, theta) in zip(t, values):
            th = theta - theta0
            c, s = math.cos(th), math.sin(th)
            corrected[index] = (
                np.array([dx - (c * offset[0] - s * offset[1]), dy - (s * offset[0] + c * offset[1])]),
                th,
            )
        out = []
        for record in held:
            new = corrected.get(record.index)
            if record.index == 0:
                new = (np.zeros(2), 0.0)
            if new is not None:
                record = dataclasses.replace(
                    record, drift_xy=np.asarray(new[0], dtype=np.float64), drift_rotation=float(new[1])
                )
            out.append(record)
        self._drift = np.asarray(out[-1].drift_xy, dtype=np.float64).copy()
        self._rotation = float(out[-1].drift_rotation)
        logger.debug(
            "reference offset settled from %d frames: %.4f, %.4f px, %.3g rad", len(t), offset[0], offset[1], theta0
        )
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

    def _detect(self, image: np.ndarray, t: int, drift_xy: np.ndarray, theta: float) -> None:
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
            self._measure_sigma(image, self._transform(xy, drift_xy, theta, np.empty_like(xy)))
            if self._sigma_known and abs(math.log(self._geometry.psf_sigma_px / g.psf_sigma_px)) > _REDETECT_LOG_RATIO:
                self._detect(image, t, drift_xy, theta)  # the candidates were looked for at a wrong width
                return
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
        """Set the PSF width from the median fitted sigma of bright candidates (psf.sigma_px = auto).

        The fits start from the configured initial width in their usual region,
        unless a scale-space look at the candidates (:func:`~plstream.analysis.width.blob_widths`)
        finds them too wide for it: then they start from that width in a
        region three widths wide (up to ``fit.ROI_SIZE_MAX``). A width at a
        bound of either method is reported as a warning, never silently clamped.
        """
        centers = centers[:_WIDTH_CANDIDATES]
        sigma_init, roi = self._geometry.psf_sigma_px, self._geometry.roi_size_px
        widths = blob_widths(image, centers)
        measured = np.isfinite(widths.sigma)
        if np.count_nonzero(measured) >= _MIN_FITS_FOR_SIGMA:
            guess = float(np.median(widths.sigma[measured]))
            if guess > _WIDE_FRACTION * 0.5 * roi:
                sigma_init, roi = guess, default_roi_size(guess)
            if np.count_nonzero(
                widths.at_bound[measured] & (widths.sigma[measured] >= MAX_WIDTH_PX)
            ) > 0.5 * np.count_nonzero(measured):
                self.warnings.append(
                    f"the particles look at least {MAX_WIDTH_PX:g} px wide (sigma), the largest width plstream "
                    "measures; set psf.sigma_px if they are wider"
                )
        fits = fit_spots(
            image,
            centers,
            sigma_init=sigma_init,
            roi_size=roi,
            read_variance=self._read_variance,
            max_iterations=self._settings.fit.max_iterations,
        )
        good = fits.success & (fits.photons_snr >= _SIGMA_FIT_MIN_SNR)
        if np.count_nonzero(good) < _ENOUGH_FITS_FOR_SIGMA:
            # few very bright candidates (e.g. a handful of large aggregates among many small particles):
            # let the fainter, more numerous ones have their say too
            relaxed = fits.success & (fits.photons_snr >= 0.5 * _SIGMA_FIT_MIN_SNR)
            if np.count_nonzero(relaxed) > np.count_nonzero(good):
                good = relaxed
        if np.count_nonzero(good) < _MIN_FITS_FOR_SIGMA:
            return
        sigma = float(np.median(fits.sigma[good]))
        if np.count_nonzero(fits.sigma[good] >= 0.95 * 0.5 * roi) > 0.5 * np.count_nonzero(good):
            self.warnings.append(
                f"the fitted PSF width {sigma:.2f} px is at the bound of its {roi} px fit region; the particles may "
                "be wider than measured: set psf.sigma_px"
            )
        self._geometry = Geometry.from_settings(self._settings, sigma)
        if 2 * math.ceil(3.0 * sigma) + 1 > self._geometry.roi_size_px:
            self.warnings.append(
                f"the particles (sigma {sigma:.2f} px) are wider than the largest fit region ({ROI_SIZE_MAX} px) "
                "covers; fits use that region"
            )
        self._sigma_known = True
        logger.info(
            "PSF sigma measured from %d spots: %.3f px (ROI %d px, aperture %.2f px)",
            int(np.count_nonzero(good)),
            sigma,
            self._geometry.roi_size_px,
            self._geometry.aperture_radius_px,
        )

    def _fit(self, image: np.ndarray, drift_xy: np.ndarray, theta: float, work: _FrameWork) -> None:
        """Fit the spots at their reference positions through (``drift_xy``, ``theta``) into ``work``.

        Spots whose pre-screen box shows no significant signal (``fit.prescreen_sigma``)
        are not fitted: their row of the fit table stays NaN, as for a failed fit.
        """
        spots = self._spots
        n = len(spots)
        fs = self._settings.fit
        g = self._geometry
        predicted = self._transform(spots.xy, drift_xy, theta, work.positions[:n])
        k = _ak.select_for_fit(
            image,
            predicted,
            0.0,
            0.0,
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
        allowed = self._drift_mask(n)
        if allowed is not None:
            work.usable[:n] &= allowed

    def _place_reference_spots(self, image: np.ndarray, t: int, drift_xy: np.ndarray, theta: float) -> None:
        """Turn the user's boxes into spots that alone measure the drift (see :meth:`set_reference_boxes`)."""
        boxes, self._reference_boxes = self._reference_boxes, None
        assert boxes is not None
        g = self._geometry
        height, width = image.shape
        found = []
        for x0, y0, x1, y1 in boxes:
            corners = np.array([[x0, y0], [x1 - 1, y1 - 1]], dtype=np.float64)
            (fx0, fy0), (fx1, fy1) = self._transform(corners, drift_xy, theta, np.empty_like(corners))
            c0, c1 = max(0, math.floor(min(fx0, fx1))), min(width, math.ceil(max(fx0, fx1)) + 1)
            r0, r1 = max(0, math.floor(min(fy0, fy1))), min(height, math.ceil(max(fy0, fy1)) + 1)
            centre = np.array([0.5 * (fx0 + fx1), 0.5 * (fy0 + fy1)])
            if c1 - c0 >= 3 and r1 - r0 >= 3:
                crop = ndimage.gaussian_filter(np.asarray(image[r0:r1, c0:c1], dtype=np.float64), g.psf_sigma_px)
                row, col = np.unravel_index(int(np.argmax(crop)), crop.shape)
                centre = np.array([c0 + col, r0 + row], dtype=np.float64)
                fits = fit_spots(
                    image,
                    centre[None, :],
                    sigma_init=g.psf_sigma_px,
                    roi_size=g.roi_size_px,
                    read_variance=self._read_variance,
                    max_iterations=self._settings.fit.max_iterations,
                )
                if fits.success[0] and c0 <= fits.x[0] < c1 and r0 <= fits.y[0] < r1:
                    centre = np.array([fits.x[0], fits.y[0]])
            found.append(centre)
        frame_xy = np.asarray(found, dtype=np.float64).reshape(-1, 2)
        # back to reference coordinates
        c, s = math.cos(theta), math.sin(theta)
        u = frame_xy[:, 0] - self._center[0] - drift_xy[0]
        v = frame_xy[:, 1] - self._center[1] - drift_xy[1]
        ref = np.column_stack([c * u + s * v + self._center[0], -s * u + c * v + self._center[1]])
        ids = self._spots.add(ref, t)
        self._drift_spots = ids.astype(np.int64)
        logger.info("drift measured by %d picked particles (spot IDs %s)", len(ids), ", ".join(map(str, ids)))

    def _predict(self) -> tuple[np.ndarray, float]:
        """The drift expected in the next frame: the last one, moved on by the recent steady motion.

        The motion per frame is the median of the last three frame-to-frame
        changes (each axis and the rotation on its own): a steady drift is
        predicted without lag (so a fast-moving sample is placed in the running
        mean where it is), and a single jump does not throw the next prediction off.
        """
        history = self._history
        if len(history) < 2:
            return self._drift, self._rotation
        recent = history[-(_VELOCITY_FRAMES + 1) :]
        velocity = [statistics.median(b[k] - a[k] for a, b in itertools.pairwise(recent)) for k in range(3)]
        return self._drift + np.array(velocity[:2]), self._rotation + velocity[2]

    def _follow_illumination(self, image: np.ndarray, work: _FrameWork, n: int) -> None:
        """Shift the spots' last backgrounds by the change of the frame's overall level.

        A bright field flickers: its level may change between frames by more
        than a particle's whole signal, and the fit pre-screen, which compares
        a box at the spot with the spot's last background, would then find
        nothing. The level is the median of every 8th pixel in each direction.
        """
        level = float(np.median(image[::8, ::8]))
        if self._level is not None and math.isfinite(level):
            work.last_background[:n] += level - self._level
        self._level = level

    def _smooth_rotation(self, t: int, drift: DriftEstimate, work: _FrameWork) -> DriftEstimate:
        """The frame's rotation from the trend of the last ones (``drift.rotation_smoothing_frames``).

        For a spot-based drift the translation is then solved again with that
        rotation (the same spots); a registration keeps its translation.
        """
        theta, se_theta = self._rotation_smoother.update(t, drift.theta, drift.se_theta)
        if theta == drift.theta:
            return drift
        if drift.method != "spots":
            return dataclasses.replace(drift, theta=theta, se_theta=se_theta)
        n = len(self._spots)
        usable = work.usable[:n] & work.inliers[:n]
        again = rigid_from_spots(
            self._spots.xy,
            work.displacement[:n],
            work.variance[:n],
            usable,
            center_xy=self._center,
            predicted=(drift.dx, drift.dy, theta),
            fit_rotation=False,
        )
        if again.n_spots < self._settings.drift.min_spots:
            return drift
        return dataclasses.replace(
            drift, dx=again.dx, dy=again.dy, theta=theta, se_x=again.se_x, se_y=again.se_y, se_theta=se_theta
        )

    def _consistent(self, work: _FrameWork, n: int, positions: np.ndarray) -> np.ndarray:
        """(n,) bool: successful fits that agree with the frame's rigid transform (within 5 sigma or 0.25 px).

        With user-picked drift particles the other spots are never drift
        inliers; these are the fits that may still refine their reference positions.
        """
        fitted = work.fit[:n, : _ak.FIT_Y + 1]
        limit = np.maximum(5.0 * work.fit[:n, _ak.FIT_UNC], 0.25)
        with np.errstate(invalid="ignore"):
            close = (np.abs(fitted - positions) <= limit[:, None]).all(axis=1)
        return close & work.success[:n]

    def _drift_mask(self, n: int) -> np.ndarray | None:
        """(n,) bool: the spots allowed to measure the drift, or None for all."""
        if self._drift_spots is None:
            return None
        mask = np.zeros(n, dtype=np.bool_)
        ids = self._drift_spots[self._drift_spots < n]
        mask[ids] = True
        return mask

    def _estimate_drift(self, t: int, work: _FrameWork, fallback: DriftEstimate | None = None) -> DriftEstimate:
        """This frame's rigid transform: from the spots, by registration, or kept (see ``drift.method``)."""
        n = len(self._spots)
        if t == 0:
            return DriftEstimate(
                0.0, 0.0, 0.0, int(np.count_nonzero(work.success[:n])), "reference", se_x=0.0, se_y=0.0, se_theta=0.0
            )
        ds = self._settings.drift
        predicted = self._predicted
        from_spots = None
        if n and ds.method != "registration":
            inliers = work.inliers[:n]
            from_spots = rigid_from_spots(
                self._spots.xy,
                work.displacement[:n],
                work.variance[:n],
                work.usable[:n],
                center_xy=self._center,
                predicted=predicted,
                fit_rotation=ds.rotation,
                field_radius_px=self._field_radius,
                rotation_gate_px=_ROTATION_GATE_PX,
                inliers_out=inliers,
            )
            usable = int(np.count_nonzero(work.usable[:n]))
            enough = ds.min_spots if self._drift_spots is None else min(ds.min_spots, self._drift_spots.size)
            if from_spots.n_spots >= enough and from_spots.n_spots >= _MIN_INLIER_FRACTION * usable:
                self._inliers = inliers
                return from_spots
        if fallback is not None:
            return fallback
        if ds.method != "spots" and self._mean.n_frames > 1:
            registered = register_frame(
                self._mean.mean_without_last(self._photons),
                self._photons,
                center_xy=self._center,
                predicted=predicted,
                sigma_px=self._geometry.psf_sigma_px,
                upsample=ds.correlation_upsample,
                fit_rotation=ds.rotation,
            )
            if math.isfinite(registered.dx) and math.isfinite(registered.dy):
                return registered
        if from_spots is not None and from_spots.n_spots > 0:
            self._inliers = work.inliers[:n]
            return from_spots
        return DriftEstimate(float(self._drift[0]), float(self._drift[1]), math.inf, 0, "kept", theta=self._rotation)
