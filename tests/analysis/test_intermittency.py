"""Refined blinking states, dwell times with censoring, and the maximum-likelihood dwell-time fits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from plstream.analysis.intermittency import (
    GRAY,
    OFF,
    ON,
    Segmenter,
    SegmentParams,
    dwells_from_states,
    fit_dwell_times,
    summarize,
)
from plstream.analysis.intermittency.fits import kaplan_meier
from plstream.analysis.kernels import segment as _k
from plstream.analysis.kernels import states as _states


def _optimal_partition(y: np.ndarray, penalty: float) -> list[int]:
    """Exact optimal partitioning, O(n^2): the slow, obviously correct twin of the PELT kernel."""
    n = len(y)
    best = [-penalty] + [math.inf] * n
    back = [0] * (n + 1)
    for t in range(1, n + 1):
        for s in range(t):
            seg = y[s:t]
            value = best[s] + float(np.sum((seg - seg.mean()) ** 2)) + penalty
            if value < best[t]:
                best[t], back[t] = value, s
    cps, t = [], n
    while t > 0:
        if back[t] > 0:
            cps.append(back[t])
        t = back[t]
    return sorted(cps)


@pytest.mark.parametrize("seed", range(6))
def test_pelt_kernel_finds_the_optimal_partition(seed):
    rng = np.random.default_rng(seed)
    levels = rng.choice([0.0, 4.0, 9.0], size=6)
    y = np.concatenate([lv + rng.standard_normal(rng.integers(3, 15)) for lv in levels])
    n = len(y)
    work = [np.empty(n + 1) for _ in range(3)] + [np.empty(n + 1, np.int64) for _ in range(2)]
    cps = np.empty(n + 1, np.int64)
    k = _k.pelt(y, n, 10.0, 10_000, *work, cps)
    assert list(cps[:k]) == _optimal_partition(y, 10.0)


def _two_state_trace(rng, n_frames, on_level=400.0, noise_off=30.0, mean_dwell=12.0):
    truth = np.empty(n_frames, np.int8)
    state, t = int(rng.integers(2)), 0
    while t < n_frames:
        d = int(rng.geometric(1.0 / mean_dwell))
        truth[t : t + d] = state
        state, t = 1 - state, t + d
    mean = truth * on_level
    x = mean + rng.normal(0.0, np.sqrt(noise_off**2 + mean))
    return truth, x


def _run(segmenter, x, background=None, seq=None):
    n, s = x.shape
    seq = np.arange(n) if seq is None else seq
    causal = np.where(x > 0.5 * np.nanmax(x, axis=0), 1, 0).astype(np.int8)
    provisional = segmenter.push_block(seq, x, causal, background)
    segmenter.finish()
    final = np.full((n, s), -1, np.int8)
    for spot, first, count, state in segmenter.take_runs():
        final[first : first + count, spot] = state
    return provisional, final


def test_segmenter_recovers_two_states_and_every_frame_becomes_final():
    rng = np.random.default_rng(1)
    truths, traces = zip(*(_two_state_trace(rng, 700) for _ in range(4)))
    x = np.column_stack(traces)
    seg = Segmenter(SegmentParams(lag_frames=40, max_window_frames=120, update_every_frames=25))
    provisional, final = _run(seg, x, background=np.full_like(x, 40.0))
    truth = np.column_stack(truths)
    assert np.all(final >= 0), "every frame of the run has a final state after finish()"
    assert np.mean(final == truth) >= 0.995
    assert np.mean(provisional == truth) >= 0.97
    assert np.all(seg.final_frames() == 700)
    levels = seg.levels()
    assert np.allclose(levels[:, 1], 400.0, rtol=0.05) and np.all(np.abs(levels[:, 0]) < 15.0)
    assert np.all(np.isnan(levels[:, 2])), "a two-state particle has no GRAY level"


def test_segmenter_is_final_within_the_lag_while_frames_arrive():
    rng = np.random.default_rng(2)
    _, x = _two_state_trace(rng, 400)
    p = SegmentParams(lag_frames=40, max_window_frames=120, update_every_frames=20)
    seg = Segmenter(p)
    causal = (x > 200).astype(np.int8)
    for t in range(400):
        seg.push(t, x[t : t + 1], causal[t : t + 1])
        if t >= 200:
            assert t + 1 - seg.final_frames()[0] <= p.lag_frames + p.update_every_frames
    runs = seg.take_runs()
    covered = np.zeros(400, int)
    for _, first, count, _ in runs:
        covered[first : first + count] += 1
    assert covered.max() == 1, "a frame is made final once"
    assert np.all(covered[: seg.final_frames()[0]] == 1)


def test_segmenter_finds_a_long_gray_level():
    rng = np.random.default_rng(3)
    truth = np.repeat([ON, GRAY, ON, OFF, GRAY, ON, OFF], [80, 60, 50, 70, 40, 60, 40]).astype(np.int8)
    mean = np.select([truth == ON, truth == GRAY], [500.0, 180.0], 0.0)
    x = (mean + rng.normal(0.0, np.sqrt(30.0**2 + mean)))[:, None]
    _, final = _run(Segmenter(), x)
    assert np.mean(final[:, 0] == truth) >= 0.97


def test_a_particle_blinking_faster_than_the_frames_has_no_gray_level():
    rng = np.random.default_rng(8)
    on_fraction = rng.random(600)  # every frame partly on: no steady intermediate level
    mean = 400.0 * on_fraction
    x = (mean + rng.normal(0.0, np.sqrt(30.0**2 + mean)))[:, None]
    seg = Segmenter()
    _, final = _run(seg, x)
    assert np.isnan(seg.levels()[0, 2])
    assert not np.any(final == GRAY)


def test_gaps_end_dwells_and_nan_frames_are_not_measured():
    rng = np.random.default_rng(4)
    _, x = _two_state_trace(rng, 300)
    x = x[:, None].copy()
    x[:30] = np.nan  # found at frame 30
    seq = np.arange(300)
    seq[150:] += 5  # five frames never arrived before row 150
    seg = Segmenter(SegmentParams(lag_frames=30, max_window_frames=90, update_every_frames=10))
    _, final = _run(seg, x, seq=seq)
    assert np.all(final[:30] == -1) and np.all(final[30:] >= 0)
    _, runs = seg.runs(0)
    assert runs.starts_piece[0] and runs.start[0] == 30
    assert any(s == 150 and p for s, p in zip(runs.start, runs.starts_piece)), "a dwell does not span the gap"


def test_dwells_are_censored_at_the_ends_gaps_and_bleaching():
    states = np.array([-1, -1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 1, 1] + [0] * 120, np.int8)
    table = dwells_from_states(states, bleach_min_frames=100)
    assert list(table.length) == [2, 3, 3, 1, 2, 120]
    assert list(table.left_censored) == [True, False, False, False, False, False]
    assert list(table.right_censored) == [False, False, False, False, True, True]
    assert list(table.bleached) == [False, False, False, False, True, False]
    seq = np.arange(len(states))
    seq[6:] += 3
    table = dwells_from_states(states, seq, bleach_min_frames=0)
    assert list(table.length[:3]) == [2, 2, 1] and table.right_censored[1] and table.left_censored[2]


def _pareto_frames(rng, alpha, n, t0=0.5):
    tau = t0 * (1.0 - rng.random(n)) ** (-1.0 / (alpha - 1.0))
    return np.maximum(np.floor(tau + 0.5), 1).astype(np.int64)


def test_power_law_fit_recovers_the_exponent_with_censoring():
    rng = np.random.default_rng(5)
    dwells = _pareto_frames(rng, 1.7, 6000)
    limit = 400  # traces end: long dwells are cut and right-censored
    complete, censored = dwells[dwells < limit], np.full(np.count_nonzero(dwells >= limit), limit)
    fit = fit_dwell_times(complete, censored)
    assert fit is not None and fit.t_min >= 1
    assert abs(fit.alpha - 1.7) < 3 * fit.alpha_error + 0.02
    assert 0.005 < fit.alpha_error < 0.05
    naive = fit_dwell_times(complete, t_min=fit.t_min)  # dropping the censored dwells biases alpha upwards
    assert naive is not None and naive.alpha > fit.alpha
    assert fit.best in ("power_law", "truncated_power_law") and fit.compare["R_pl_vs_exp"] > 0


def test_exponential_dwells_choose_the_exponential_model():
    rng = np.random.default_rng(6)
    dwells = np.maximum(np.round(rng.exponential(8.0, 3000)), 1).astype(int)
    fit = fit_dwell_times(dwells, t_min=2)
    assert fit is not None and fit.best in ("exponential", "truncated_power_law")
    assert abs(fit.models["exponential"].params["tau_frames"] - 8.0) < 0.6
    assert fit.compare["R_pl_vs_exp"] < 0


def test_kaplan_meier_without_censoring_is_the_empirical_survival():
    k, s = kaplan_meier(np.array([1, 1, 2, 4]), np.array([]))
    assert list(k) == [1, 2, 4] and np.allclose(s, [1.0, 0.5, 0.25])


def test_summary_of_a_segmenter_has_one_row_per_spot():
    rng = np.random.default_rng(7)
    x = np.column_stack([_two_state_trace(rng, 600, mean_dwell=6.0)[1] for _ in range(3)])
    seg = Segmenter()
    _run(seg, x)
    summary = summarize(seg, per_spot_fits=False)
    assert summary.spot_stats.shape == (3, 21)
    frac = summary.column("on_fraction") + summary.column("off_fraction") + summary.column("gray_fraction")
    assert np.allclose(frac, 1.0)
    assert np.all(summary.column("mean_on_frames") > 3) and np.all(summary.column("n_frames") == 600)
    attrs = summary.ensemble_attrs()
    assert {"alpha_on", "alpha_off", "alpha_on_error", "t_min", "model"} <= set(attrs)
    assert OFF == 0 and ON == 1 and GRAY == 2


@pytest.mark.parametrize("seed", range(4))
def test_levels_kernel_matches_its_python_twin(seed):
    from plstream.analysis.intermittency.segmenter import spot_levels

    rng = np.random.default_rng(seed)
    n = 60
    spot = rng.integers(0, 4, n)
    level = rng.choice([0.0, 5.0, 150.0, 400.0], n) + rng.normal(0.0, 10.0, n)
    length = rng.integers(1, 30, n).astype(float)
    rss = length * rng.uniform(0.5, 2.0, n)
    out = np.full((4, 3), -9.0)
    p = SegmentParams()
    _states.spot_levels(spot, level, length, rss, np.full(4, 900.0), p.on_fraction, p.off_fraction, 5.0, 20.0, 5.0, out)
    for i in range(4):
        mine = spot == i
        expected = spot_levels(level[mine], length[mine], rss[mine], 900.0, p) if mine.any() else (-9.0,) * 3
        np.testing.assert_allclose(out[i], expected, equal_nan=True)


def test_a_partly_on_frame_gets_the_state_it_spent_most_of_the_exposure_in():
    """Bright spots: ON frames are much noisier than OFF ones, yet a 40 %-on frame is OFF and a 60 %-on one ON."""
    rng = np.random.default_rng(9)
    n = 900
    fraction = np.repeat(np.tile([1.0, 0.0], 9), 50)
    partial = np.arange(25, n, 50)  # one partly-on frame in the middle of every dwell
    fraction[partial] = np.where(fraction[partial] > 0.5, 0.4, 0.6)
    mean = 2000.0 * fraction
    x = np.column_stack([mean + rng.normal(0.0, np.sqrt(15.0**2 + mean)) for _ in range(3)])
    _, final = _run(Segmenter(), x, background=np.full_like(x, 20.0))
    assert np.all(final[partial] == (fraction[partial] > 0.5)[:, None])
