"""Numba kernel for the streaming per-frame on/off decision (numpy, numba and math only)."""

import math

from numba import njit


@njit(cache=True, nogil=True)
def classify_on_off(
    intensity,
    noise_sigma,
    on_level,
    level_fraction,
    min_significance,
    rate_up,
    rate_down,
    state_out,
):
    """Decide ON/OFF per spot for one frame and update each spot's ON level in place.

    A spot is ON when its intensity exceeds ``level_fraction * on_level`` and is
    at least ``min_significance`` noise standard deviations above zero. Before
    a spot's ON level is known (``NaN``), the significance test alone decides,
    and the first ON intensity starts the level. The level then follows ON
    intensities: quickly upwards (a first, partly-on frame underestimates it),
    slowly downwards (partly-on frames should not drag it down).

    Parameters
    ----------
    intensity : (S,) float
        Background-subtracted intensity this frame, photons (NaN = not measured).
    noise_sigma : (S,) float
        Standard deviation of the intensity when the spot is OFF, photons.
    on_level : (S,) float64
        Running ON level per spot, photons; updated in place.
    level_fraction, min_significance, rate_up, rate_down : float
        See ``BlinkingSettings``.
    state_out : (S,) int8
        Written: 1 ON, 0 OFF, -1 not measurable (NaN intensity or noise).
    """
    for i in range(intensity.shape[0]):
        value = intensity[i]
        sigma = noise_sigma[i]
        if not (math.isfinite(value) and math.isfinite(sigma)) or sigma <= 0.0:
            state_out[i] = -1
            continue
        significant = value >= min_significance * sigma
        level = on_level[i]
        if math.isfinite(level):
            is_on = significant and value >= level_fraction * level
        else:
            is_on = significant
        if is_on:
            state_out[i] = 1
            if not math.isfinite(level):
                on_level[i] = value
            elif value > level:
                on_level[i] = level + rate_up * (value - level)
            else:
                on_level[i] = level + rate_down * (value - level)
        else:
            state_out[i] = 0
