"""Does the result look like particles? Plain-language warnings for a run's summary.

A run can finish without an error and still be wrong for its data: a
textured background read as thousands of "spots" that no Gaussian fits, a
particle width at the bound of what can be measured, frames whose drift
could not be measured at all. :func:`result_warnings` says so, in sentences
a user can act on; the session stores them in the summary (``warnings``) and
the command line prints them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["result_warnings"]

_MAX_SPOTS_PER_PX = 1.0 / 400.0  # one particle per 20 x 20 px is already crowded
_MIN_SPOTS_FOR_DENSITY = 500
_MIN_FITS = 50
_LOW_SUCCESS = 0.25


def result_warnings(
    *,
    n_spots: int,
    frames: int,
    shape: tuple[int, int],
    fits_made: int,
    fits_succeeded: int,
    method_counts: Mapping[str, int],
    analyzer_warnings: Sequence[str] = (),
) -> list[str]:
    """Sentences about what looks wrong in a run's results (empty when nothing does).

    Parameters
    ----------
    n_spots : int
        Spots found.
    frames : int
        Frames analyzed.
    shape : (int, int)
        Frame shape, px.
    fits_made, fits_succeeded : int
        Spot fits made (after the pre-screen) and successful.
    method_counts : mapping
        Frames per drift method (``spots``, ``registration``, ``kept``, ``reference``).
    analyzer_warnings : sequence of str
        What the analysis itself noticed (e.g. a width at a bound).
    """
    out = list(dict.fromkeys(analyzer_warnings))  # in order, once each
    area = shape[0] * shape[1]
    if frames and n_spots == 0:
        out.append(
            "0 spots found: nothing in these frames stands out from the noise and the background texture as a "
            "particle (detection.threshold_sigma, detection.polarity)"
        )
    crowded = max(_MIN_SPOTS_FOR_DENSITY, int(area * _MAX_SPOTS_PER_PX))
    success = fits_succeeded / fits_made if fits_made else 1.0
    if n_spots > crowded:
        out.append(
            f"{n_spots} spots in {shape[0]}x{shape[1]} px (one per {area / n_spots:.0f} px²) is more than particles "
            "usually are: texture, scratches or a wrong noise model may be making spots"
        )
    if fits_made >= _MIN_FITS and success < _LOW_SUCCESS:
        out.append(
            f"only {100 * success:.0f} % of the {fits_made} spot fits succeeded: many spots may not be particles "
            "of the measured width (psf.sigma_px, detection.polarity)"
        )
    kept = int(method_counts.get("kept", 0))
    if frames > 1 and kept:
        out.append(
            f"the drift of {kept} of {frames} frames could not be measured (no consistent spots and no image "
            "structure to register): it was kept from the frame before"
        )
    return out
