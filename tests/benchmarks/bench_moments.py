"""Moment-engine accuracy and speed, for every registered activation.

Accuracy: worst relative error of E[f(X)] and Var[f(X)], X ~ N(mu, var), against the mpmath
reference of ``tests/helpers.py`` (``reference``, 32 digits), on a moderate grid (|mu| <= 3,
0.01 <= var <= 25) and an extreme one (|mu| <= 100, 1e-8 <= var <= 1e6). Reference values
below 1e-30 are judged by absolute error; on the extreme grid, points whose true values
overflow float64 are skipped, and where the variance is not resolvable next to the mean
(var < 1e-10 E[f^2]) the returned variance must only stay below that level.

Speed: per-pair cost of ``mean_variance`` (both in one call) at ``pairs`` (mu, var) pairs against
two scipy.integrate.quad calls per pair (mean and second moment of the same function,
as NumPy code), the reference implementation's approach; for a closed form also against the
engine's own quadrature path (``quadrature.gaussian_moments``) at the same pairs. First use: the wall time of the
first ``moments(...)`` and evaluation in a fresh process (derivation and compilation).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .cost_meter import best_time, timed
from .figures import new_figure, save
from .schema import make_result, write_result

TINY_VALUE = 1e-30         # reference values below this are judged by absolute error
RESOLVABLE = 1e-10         # variance resolvable when var >= RESOLVABLE * E[f^2]
MODERATE_FLOOR = 1e-9      # issue 2's accuracy floors, drawn in the plot
EXTREME_FLOOR = 1e-6
VARIANTS = {"gelu_tanh": ("gelu", {"approximate": True})}  # extra parameter settings


@dataclass(frozen=True)
class Settings:
    moderate_mu: int          # grid sizes (points per axis)
    moderate_var: int
    extreme_mu: tuple[float, ...]
    extreme_var: int
    pairs: int = 10_000       # vectorized evaluation size
    quad_pairs: int = 20      # pairs timed with scipy.quad
    repeats: int = 3
    names: tuple[str, ...] | None = None  # None: every registered activation


PRESETS = {
    "tiny": Settings(moderate_mu=2, moderate_var=2, extreme_mu=(-100.0, 100.0), extreme_var=2,
                     pairs=1000, quad_pairs=3, repeats=1, names=("relu", "tanh")),
    "quick": Settings(moderate_mu=4, moderate_var=3, extreme_mu=(-100.0, -20.0, -1.0, 0.0, 2.0, 100.0),
                      extreme_var=4, quad_pairs=20, repeats=5),
    "full": Settings(moderate_mu=13, moderate_var=9,
                     extreme_mu=(-100.0, -50.0, -20.0, -5.0, -1.0, -0.1, 0.0, 0.1, 1.0, 5.0, 20.0, 50.0, 100.0),
                     extreme_var=15, quad_pairs=100, repeats=5),
}


def activation_list(names: tuple[str, ...] | None) -> list[tuple[str, str, dict]]:
    """(label, registered name, parameters) for every activation to benchmark."""
    from autoinit_sym.moment_engine import catalog

    out = []
    for name in catalog.names() if names is None else names:
        entry = catalog.get(name)
        out.append((name, name, dict(entry.example) if entry.required else {}))
    if names is None:
        out += [(label, name, params) for label, (name, params) in VARIANTS.items()]
    return sorted(out)


def grids(settings: Settings) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Flattened (mu, var) points of the moderate and extreme grids."""
    def mesh(mus, variances):
        m, v = np.meshgrid(np.asarray(mus, float), np.asarray(variances, float))
        return m.ravel(), v.ravel()

    return {
        "moderate": mesh(np.linspace(-3, 3, settings.moderate_mu),
                         np.geomspace(0.01, 25, settings.moderate_var)),
        "extreme": mesh(settings.extreme_mu, np.geomspace(1e-8, 1e6, settings.extreme_var)),
    }


def _error(got: float, ref: float) -> float:
    """Relative error, absolute below TINY_VALUE; inf for a non-finite result."""
    if not math.isfinite(got):
        return math.inf
    scale = abs(ref)
    return abs(got - ref) / scale if scale >= TINY_VALUE else abs(got - ref)


def accuracy(m, mus: np.ndarray, variances: np.ndarray) -> dict:
    """Worst errors of mean and variance over the points against the mpmath reference."""
    from helpers import reference  # tests/ is on sys.path (run.py, conftest)

    got_mean, got_var = np.asarray(m.mean(mus, variances)), np.asarray(m.variance(mus, variances))
    worst = {"mean": (0.0, None), "var": (0.0, None)}
    counts = {"points": 0, "skipped_overflow": 0, "unresolvable": 0,
              "unresolvable_violations": 0, "bad_values": 0}
    for mu, var, gm, gv in zip(mus, variances, got_mean, got_var):
        ref_mean, ref_var = reference(m.expr, float(mu), float(var))
        if not (math.isfinite(ref_mean) and math.isfinite(ref_var) and math.isfinite(ref_mean * ref_mean + ref_var)):
            counts["skipped_overflow"] += 1
            continue
        counts["points"] += 1
        counts["bad_values"] += int(not (math.isfinite(gm) and math.isfinite(gv) and gv >= 0))
        candidates = {"mean": _error(gm, ref_mean)}
        level = RESOLVABLE * (ref_var + ref_mean * ref_mean)
        if ref_var >= level:
            candidates["var"] = _error(gv, ref_var)
        else:
            counts["unresolvable"] += 1
            counts["unresolvable_violations"] += int(not (0 <= gv <= level))
        for key, err in candidates.items():
            if worst[key][1] is None or err > worst[key][0]:
                worst[key] = (err, [float(mu), float(var)])
    return {"max_rel_err_mean": worst["mean"][0], "worst_point_mean": worst["mean"][1],
            "max_rel_err_var": worst["var"][0], "worst_point_var": worst["var"][1], **counts}


def quad_moments(f, mu: float, var: float) -> tuple[float, float]:
    """E[f] and E[f^2] by two scipy.quad calls over the real line (the baseline; its own
    warnings and overflows are silenced, its accuracy is not what is measured)."""
    import warnings

    from scipy.integrate import IntegrationWarning, quad

    sigma = math.sqrt(var)
    norm = 1 / math.sqrt(2 * math.pi)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", IntegrationWarning)
        first = quad(lambda z: f(mu + sigma * z) * np.exp(-z * z / 2) * norm, -np.inf, np.inf)[0]
        second = quad(lambda z: f(mu + sigma * z) ** 2 * np.exp(-z * z / 2) * norm, -np.inf, np.inf)[0]
    return first, second


def cost(m, settings: Settings, rng: np.random.Generator) -> dict:
    """Per-pair seconds: vectorized mean + variance vs two scipy.quad calls; their ratio. For a
    closed form, also the engine's quadrature path at the same pairs and its ratio to the closed form."""
    from autoinit_sym.moment_engine import quadrature
    from autoinit_sym.moment_engine.expressions import numpy_function

    mus = rng.uniform(-3, 3, settings.pairs)
    variances = np.exp(rng.uniform(math.log(0.01), math.log(25), settings.pairs))
    vectorized = best_time(lambda: m.mean_variance(mus, variances), settings.repeats) / settings.pairs
    f_array = numpy_function(m.expr)
    engine_quadrature = {}
    if m.method == "closed_form":
        seconds = best_time(lambda: quadrature.gaussian_moments(f_array, m.breakpoints, mus, variances),
                            settings.repeats) / settings.pairs
        engine_quadrature = {"engine_quadrature_per_pair_s": seconds,
                             "closed_form_speedup_over_engine_quadrature": seconds / vectorized}

    def f(x: float) -> np.float64:
        return f_array(np.float64(x))[()]

    n = settings.quad_pairs
    quad_total, _ = timed(lambda: [quad_moments(f, mus[i], variances[i]) for i in range(n)])
    return {"pairs": settings.pairs, "vectorized_per_pair_s": vectorized,
            "quad_pairs_timed": n, "quad_per_pair_s": quad_total / n,
            "speedup": (quad_total / n) / vectorized, **engine_quadrature}


def first_use(name: str, params: dict):
    """(seconds, moments object) of the first derivation + compilation + evaluation."""
    from autoinit_sym import moments

    def derive():
        m = moments(name, **params)
        m.mean(0.0, 1.0), m.variance(0.0, 1.0)
        return m

    return timed(derive)


def headline(rows: list[dict]) -> dict:
    out: dict = {"activations": len(rows)}
    for method in ("closed_form", "quadrature"):
        group = [r for r in rows if r["method"] == method]
        out[f"{method}_count"] = len(group)
        if group:
            out[f"min_speedup_{method}"] = min(r["cost"]["speedup"] for r in group)
            out[f"median_speedup_{method}"] = float(np.median([r["cost"]["speedup"] for r in group]))
    for grid in ("moderate", "extreme"):
        out[f"worst_rel_err_{grid}"] = max(max(r[grid]["max_rel_err_mean"], r[grid]["max_rel_err_var"])
                                           for r in rows)
        out[f"bad_values_{grid}"] = sum(r[grid]["bad_values"] for r in rows)
    out["unresolvable_violations_extreme"] = sum(r["extreme"]["unresolvable_violations"] for r in rows)
    out["max_first_use_s"] = max(r["first_use_s"] for r in rows)
    return out


def plot(rows: list[dict], out_dir: Path) -> str:
    """Left: worst relative error per activation and grid. Right: speed-up over scipy.quad."""
    fig, axes = new_figure(1, 2, panel_size=(6.4, 0.26 * len(rows) + 1.6))
    labels = [r["name"] + (" (Q)" if r["method"] == "quadrature" else "") for r in rows]
    ys = np.arange(len(rows))
    ax = axes[0][0]
    for grid, marker, color in (("moderate", "o", "#1f77b4"), ("extreme", "s", "#d62728")):
        for stat, fill in (("max_rel_err_mean", color), ("max_rel_err_var", "none")):
            values = [max(r[grid][stat], 1e-18) for r in rows]
            ax.scatter(values, ys, marker=marker, facecolors=fill, edgecolors=color,
                       label=f"{grid}: {'mean' if 'mean' in stat else 'variance'}")
    ax.axvline(MODERATE_FLOOR, color="#1f77b4", ls=":", lw=1)
    ax.axvline(EXTREME_FLOOR, color="#d62728", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yticks(ys, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("worst relative error vs mpmath (floored at 1e-18)")
    ax.set_title("Accuracy; dotted: issue floors 1e-9 / 1e-6")
    ax.legend(fontsize=7, loc="lower right")
    ax = axes[0][1]
    colors = ["#1f77b4" if r["method"] == "closed_form" else "#ff7f0e" for r in rows]
    ax.barh(ys, [r["cost"]["speedup"] for r in rows], color=colors)
    ax.axvline(1000, color="#1f77b4", ls=":", lw=1)
    ax.axvline(100, color="#ff7f0e", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yticks(ys, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("per-pair speed-up over 2x scipy.quad")
    ax.set_title("Speed (blue: closed form, orange (Q): quadrature)")
    return save(fig, out_dir, "moments.png")


def run(settings: Settings, out_dir: Path, preset: str) -> dict:
    start = time.perf_counter()
    from autoinit_sym import moments  # noqa: F401  (loads the engine: import cost is not first-use cost)

    rng = np.random.default_rng(0)
    points = grids(settings)
    rows = []
    for label, name, params in activation_list(settings.names):
        seconds, m = first_use(name, params)
        row = {"name": label, "activation": name, "params": params, "method": m.method,
               "first_use_s": seconds}
        for grid, (mus, variances) in points.items():
            row[grid] = accuracy(m, mus, variances)
        row["cost"] = cost(m, settings, rng)
        rows.append(row)
    grid_info = {g: {"points": int(len(mu)), "mu": [float(mu.min()), float(mu.max())],
                     "var": [float(v.min()), float(v.max())]} for g, (mu, v) in points.items()}
    doc = make_result("moments", preset, asdict(settings), {"activations": rows, "grids": [grid_info]},
                      headline(rows), [plot(rows, out_dir)], time.perf_counter() - start)
    write_result(doc, out_dir)
    return doc
