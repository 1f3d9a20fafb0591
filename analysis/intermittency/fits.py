"""Maximum-likelihood fits of dwell-time distributions, with censoring.

Dwell times are counted in frames. A dwell of k frames is taken to be a
continuous dwell of length tau (frames) seen at frame resolution, i.e. one
with ``k - 1/2 <= tau < k + 1/2``; so for a continuous model with survival
function ``S`` (``S(x) = P(tau >= x)``), restricted to ``tau >= t_min - 1/2``:

- a complete dwell of k frames contributes ``log[S(k - 1/2) - S(k + 1/2)]``,
- a right-censored dwell (cut by the end of the trace, bleaching or a gap:
  it lasted *at least* k frames) contributes ``log S(k - 1/2)``,

each less ``log S(t_min - 1/2)``. Dwells shorter than ``t_min`` are left out.
Left-censored dwells (the first of a trace, or the first after a gap: their
start was not seen) are not given to these functions at all (see
:mod:`.dwells`).

Models (continuous densities, tau >= x0 = t_min - 1/2):

- ``power_law``: ``p ∝ tau**-alpha`` (alpha > 1), ``S(x) = (x/x0)**(1-alpha)``;
- ``truncated_power_law``: ``p ∝ tau**-alpha exp(-tau/tau_c)``, ``S`` from the
  upper incomplete gamma function;
- ``exponential``: ``p ∝ exp(-tau/tau_0)``.

The lower cut-off ``t_min`` is chosen as Clauset, Shalizi & Newman (SIAM
Review 51, 2009) do and as the ``powerlaw`` package does: the value that
minimizes the Kolmogorov-Smirnov distance between the fitted power law and
the data above it, here with the Kaplan-Meier estimate of the survival
function so that censored dwells count correctly (``powerlaw`` itself has no
censoring, which is why the likelihoods are written here, on scipy). Standard
errors come from the observed Fisher information (the numerical curvature of
the log-likelihood at its maximum). Models are compared by AIC and by the
log-likelihood ratio (Vuong's normalized test for power law vs exponential,
the nested chi-square test for power law vs truncated power law).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import optimize, special, stats

__all__ = ["DwellFit", "ModelFit", "fit_dwell_times", "fit_power_law", "kaplan_meier"]

_HALF = 0.5
_ALPHA_RANGE = (1.0005, 6.0)
_MIN_DWELLS = 10
_MAX_TMIN_CANDIDATES = 40


@dataclass(frozen=True)
class ModelFit:
    """One model fitted to the dwells at or above ``t_min``.

    Attributes
    ----------
    name : str
        ``power_law``, ``truncated_power_law`` or ``exponential``.
    params : dict of str to float
        ``alpha`` (1), ``tau_c_frames`` (frames), ``tau_frames`` (frames).
    errors : dict of str to float
        Standard errors of ``params`` (NaN when the curvature is not defined).
    loglik : float
        Maximized log-likelihood.
    aic : float
        ``2 k - 2 loglik``.
    """

    name: str
    params: dict[str, float]
    errors: dict[str, float]
    loglik: float
    aic: float


@dataclass(frozen=True)
class DwellFit:
    """The fits of one set of dwells (one state: ON or OFF; one spot or the ensemble).

    Attributes
    ----------
    t_min : int
        Lower cut-off, frames (dwells shorter than this are not fitted).
    n_complete, n_censored : int
        Dwells at or above ``t_min`` used, complete and right-censored.
    models : dict of str to ModelFit
    best : str
        The model with the lowest AIC.
    ks_distance : float
        KS distance between the power law and the Kaplan-Meier survival at ``t_min``.
    compare : dict of str to float
        ``R_pl_vs_exp`` / ``p_pl_vs_exp``: normalized log-likelihood ratio
        (positive favours the power law) and its two-sided p-value (Vuong);
        ``R_pl_vs_tpl`` / ``p_pl_vs_tpl``: log-likelihood ratio (negative favours
        the truncated form) and the p-value of the nested test.
    """

    t_min: int
    n_complete: int
    n_censored: int
    models: dict[str, ModelFit]
    best: str
    ks_distance: float
    compare: dict[str, float] = field(default_factory=dict)

    @property
    def alpha(self) -> float:
        """The power-law exponent (NaN when no fit)."""
        m = self.models.get("power_law")
        return m.params["alpha"] if m else math.nan

    @property
    def alpha_error(self) -> float:
        m = self.models.get("power_law")
        return m.errors["alpha"] if m else math.nan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------- survival functions
def _upper_gamma(s: float, x: np.ndarray) -> np.ndarray:
    """Gamma(s, x), the upper incomplete gamma function, for any real s and x > 0 (also s <= 0)."""
    x = np.asarray(x, dtype=np.float64)
    if s > 0:
        return special.gammaincc(s, x) * special.gamma(s)
    if s == 0:
        return special.exp1(x)
    # Gamma(s, x) = (Gamma(s + 1, x) - x**s exp(-x)) / s, recursively up to s + 1 > 0.
    return (_upper_gamma(s + 1.0, x) - x**s * np.exp(-x)) / s


def _log_survival(name: str, theta: np.ndarray, x: np.ndarray, x0: float) -> np.ndarray:
    """log S(x) / S(x0) for the model ``name`` with parameters ``theta`` (x >= x0 > 0)."""
    if name == "power_law":
        (alpha,) = theta
        return (1.0 - alpha) * np.log(x / x0)
    if name == "exponential":
        (tau,) = theta
        return -(x - x0) / tau
    alpha, tau_c = theta
    s = 1.0 - alpha
    with np.errstate(under="ignore", over="ignore", divide="ignore", invalid="ignore"):
        num = _upper_gamma(s, x / tau_c)
        den = _upper_gamma(s, np.array([x0 / tau_c]))[0]
        return np.log(np.maximum(num, 1e-300)) - math.log(max(den, 1e-300))


class _Data:
    """Dwells at or above t_min as distinct values with counts (dwells are whole frames: few distinct values)."""

    def __init__(self, complete: np.ndarray, censored: np.ndarray) -> None:
        self.c, self.wc = np.unique(np.asarray(complete, dtype=np.float64), return_counts=True)
        self.r, self.wr = np.unique(np.asarray(censored, dtype=np.float64), return_counts=True)
        self.n = int(self.wc.sum() + self.wr.sum())
        self.wc = self.wc.astype(np.float64)
        self.wr = self.wr.astype(np.float64)

    @property
    def longest(self) -> float:
        return float(max(self.c.max(initial=1.0), self.r.max(initial=1.0)))

    def mean(self) -> float:
        return float((self.c @ self.wc + self.r @ self.wr) / max(self.n, 1))


def _terms(name: str, theta: np.ndarray, data: _Data, x0: float) -> tuple[np.ndarray, np.ndarray]:
    """Log-likelihood of each distinct complete and censored value."""
    ls_low = _log_survival(name, theta, data.c - _HALF, x0)
    ls_high = _log_survival(name, theta, data.c + _HALF, x0)
    # log(S(a) - S(b)) = log S(a) + log(1 - exp(log S(b) - log S(a)))
    with np.errstate(divide="ignore", invalid="ignore"):
        complete = ls_low + np.log(-np.expm1(np.minimum(ls_high - ls_low, -1e-300)))
    return complete, _log_survival(name, theta, data.r - _HALF, x0)


def _neg_loglik(name: str, theta: np.ndarray, data: _Data, x0: float) -> float:
    complete, censored = _terms(name, theta, data, x0)
    total = float(complete @ data.wc) + float(censored @ data.wr)
    return -total if math.isfinite(total) else math.inf


def _pointwise_loglik(name: str, theta: np.ndarray, data: _Data, x0: float) -> np.ndarray:
    complete, censored = _terms(name, theta, data, x0)
    return np.concatenate(
        [np.repeat(complete, data.wc.astype(np.int64)), np.repeat(censored, data.wr.astype(np.int64))]
    )


def _hessian(fun, theta: np.ndarray) -> np.ndarray:
    """Central-difference Hessian of ``fun`` at ``theta`` (relative steps)."""
    n = len(theta)
    h = np.maximum(np.abs(theta), 1e-3) * 1e-3
    out = np.empty((n, n))
    f0 = fun(theta)
    for i in range(n):
        for j in range(i, n):
            if i == j:
                e = np.zeros(n)
                e[i] = h[i]
                out[i, i] = (fun(theta + e) - 2 * f0 + fun(theta - e)) / h[i] ** 2
            else:
                ei = np.zeros(n)
                ej = np.zeros(n)
                ei[i], ej[j] = h[i], h[j]
                out[i, j] = out[j, i] = (
                    fun(theta + ei + ej) - fun(theta + ei - ej) - fun(theta - ei + ej) + fun(theta - ei - ej)
                ) / (4 * h[i] * h[j])
    return out


def _errors(fun, theta: np.ndarray) -> np.ndarray:
    try:
        cov = np.linalg.inv(_hessian(fun, theta))
        diag = np.diag(cov)
        return np.where(diag > 0, np.sqrt(np.abs(diag)), np.nan)
    except np.linalg.LinAlgError:
        return np.full(len(theta), np.nan)


# ---------------------------------------------------------------------- the models
def _fit_model(name: str, data: _Data, x0: float, alpha0: float = 1.5) -> ModelFit:
    fun = lambda th: _neg_loglik(name, th, data, x0)
    if name == "power_law":
        res = optimize.minimize_scalar(
            lambda a: fun(np.array([a])), bounds=_ALPHA_RANGE, method="bounded", options={"xatol": 1e-5}
        )
        theta = np.array([res.x])
        names: tuple[str, ...] = ("alpha",)
    elif name == "exponential":
        mean = max(data.mean() - x0, 0.5)
        res = optimize.minimize_scalar(
            lambda lt: fun(np.exp(np.array([lt]))),
            bounds=(math.log(mean) - 8, math.log(mean) + 8),
            method="bounded",
            options={"xatol": 1e-6},
        )
        theta = np.exp(np.array([res.x]))
        names = ("tau_frames",)
    else:
        fun_p = lambda p: fun(np.array([p[0], math.exp(p[1])]))
        best = None
        longest = data.longest
        for a0, lt0 in ((alpha0, math.log(10 * longest)), (max(alpha0 - 0.5, 0.1), math.log(max(longest / 5, 1.0)))):
            if True:
                r = optimize.minimize(
                    fun_p, np.array([a0, lt0]), method="L-BFGS-B", bounds=[(0.0, 6.0), (math.log(0.5), math.log(1e9))]
                )
                if best is None or r.fun < best.fun:
                    best = r
        assert best is not None
        theta = np.array([best.x[0], math.exp(best.x[1])])
        names = ("alpha", "tau_c_frames")
    nll = fun(theta)
    err = _errors(fun, theta)
    k = len(theta)
    return ModelFit(
        name=name,
        params={n: float(v) for n, v in zip(names, theta)},
        errors={n: float(e) for n, e in zip(names, err)},
        loglik=-float(nll),
        aic=2 * k + 2 * float(nll) if data.n else math.nan,
    )


def kaplan_meier(complete: np.ndarray, censored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier estimate of ``P(K >= k)`` at each distinct complete dwell ``k`` (frames).

    A censored dwell of c frames lasted at least c frames: it is at risk at
    every k <= c. Returns ``(k, S)`` with ``S[i] = P(K >= k[i])`` just before the
    events at ``k[i]`` are removed.
    """
    complete = np.sort(np.asarray(complete, dtype=np.float64))
    censored = np.sort(np.asarray(censored, dtype=np.float64))
    times, events = np.unique(complete, return_counts=True)
    at_risk = (len(complete) - np.searchsorted(complete, times, side="left")) + (
        len(censored) - np.searchsorted(censored, times, side="left")
    )
    survival_after = np.cumprod(1.0 - events / np.maximum(at_risk, 1))
    before = np.concatenate([[1.0], survival_after[:-1]])
    return times, before


def _ks_distance(alpha: float, complete: np.ndarray, censored: np.ndarray, t_min: int) -> float:
    if len(complete) == 0:
        return math.inf
    k, s_emp = kaplan_meier(complete, censored)
    s_model = ((k - _HALF) / (t_min - _HALF)) ** (1.0 - alpha)
    return float(np.max(np.abs(s_emp - s_model)))


def fit_power_law(complete: np.ndarray, censored: np.ndarray, t_min: int) -> ModelFit:
    """The censored power-law MLE for the dwells of at least ``t_min`` frames."""
    c = np.asarray(complete, dtype=np.float64)
    r = np.asarray(censored, dtype=np.float64)
    return _fit_model("power_law", _Data(c[c >= t_min], r[r >= t_min]), t_min - _HALF)


def _choose_t_min(complete: np.ndarray, censored: np.ndarray, min_tail: int) -> tuple[int, float]:
    values = np.unique(complete.astype(np.int64))
    candidates = [int(v) for v in values if np.count_nonzero(complete >= v) >= min_tail]
    if len(candidates) > _MAX_TMIN_CANDIDATES:  # log-spaced subset of the possible cut-offs
        idx = np.unique(np.round(np.geomspace(1, len(candidates), _MAX_TMIN_CANDIDATES)).astype(int) - 1)
        candidates = [candidates[i] for i in idx]
    best = (int(values[0]) if len(values) else 1, math.inf)
    for t in candidates:
        c, r = complete[complete >= t], censored[censored >= t]
        alpha = _fit_model("power_law", _Data(c, r), t - _HALF).params["alpha"]
        d = _ks_distance(alpha, c, r, t)
        if d < best[1]:
            best = (t, d)
    return best


def fit_dwell_times(
    complete: np.ndarray,
    censored: np.ndarray | None = None,
    *,
    t_min: int | None = None,
    min_tail: int = 50,
) -> DwellFit | None:
    """Fit power law, truncated power law and exponential to dwell times (frames) by maximum likelihood.

    Parameters
    ----------
    complete : array of int
        Complete dwells, frames (>= 1).
    censored : array of int, optional
        Right-censored dwells, frames: each lasted at least this long.
    t_min : int, optional
        Lower cut-off, frames; None chooses it from the data (minimum KS
        distance, keeping at least ``min_tail`` complete dwells above it).
    min_tail : int
        Fewest complete dwells at or above a candidate ``t_min``.

    Returns
    -------
    DwellFit, or None when there are fewer than 10 complete dwells.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> tau = 0.5 * (1 - rng.random(5000)) ** (-1 / 0.6)  # alpha = 1.6 above 0.5 frames
    >>> fit = fit_dwell_times(np.maximum(np.round(tau), 1).astype(int), t_min=3)
    >>> abs(fit.alpha - 1.6) < 0.1
    True
    """
    c = np.asarray(complete, dtype=np.float64).ravel()
    r = np.asarray(censored if censored is not None else [], dtype=np.float64).ravel()
    c, r = c[c >= 1], r[r >= 1]
    if len(c) < _MIN_DWELLS:
        return None
    if t_min is None:
        t_min, ks = _choose_t_min(c, r, min(min_tail, max(_MIN_DWELLS, len(c) // 2)))
    c, r = c[c >= t_min], r[r >= t_min]
    if len(c) < _MIN_DWELLS:
        return None
    x0 = t_min - _HALF
    data = _Data(c, r)
    models = {"power_law": _fit_model("power_law", data, x0)}
    alpha0 = models["power_law"].params["alpha"]
    for name in ("truncated_power_law", "exponential"):
        models[name] = _fit_model(name, data, x0, alpha0)
    ks = _ks_distance(models["power_law"].params["alpha"], c, r, t_min)
    pl, tpl, ex = models["power_law"], models["truncated_power_law"], models["exponential"]
    compare: dict[str, float] = {}
    # Vuong: power law vs exponential (non-nested), normalized log-likelihood ratio.
    diff = _pointwise_loglik("power_law", np.array([pl.params["alpha"]]), data, x0) - _pointwise_loglik(
        "exponential", np.array([ex.params["tau_frames"]]), data, x0
    )
    sd = float(np.std(diff))
    compare["R_pl_vs_exp"] = float(np.sum(diff))
    z = float(np.sum(diff)) / (sd * math.sqrt(len(diff))) if sd > 0 else 0.0
    compare["p_pl_vs_exp"] = float(2 * stats.norm.sf(abs(z)))
    # Nested: power law is the truncated one with tau_c -> infinity (boundary: halved chi-square(1)).
    lr = pl.loglik - tpl.loglik
    compare["R_pl_vs_tpl"] = float(lr)
    compare["p_pl_vs_tpl"] = float(0.5 * stats.chi2.sf(max(-2 * lr, 0.0), 1)) if lr < 0 else 1.0
    best = min(models, key=lambda n: models[n].aic)
    return DwellFit(
        t_min=int(t_min),
        n_complete=len(c),
        n_censored=len(r),
        models=models,
        best=best,
        ks_distance=ks,
        compare=compare,
    )
