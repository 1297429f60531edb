"""Formula tables of the registered activations: markdown, LaTeX, JSON or CSV.

Per activation (at its Keras default parameters): the definition f(x), E[f(X)] and
E[f(X)^2] for X ~ N(mu, sigma^2) as formulas (None/empty when only quadrature is
available), the method, and the mean and variance at (mu, var) = (0, 1). Markdown
and LaTeX show formulas with ``sympy.latex``; JSON and CSV hold ``str`` forms that
``sympy.sympify`` parses back (symbols ``x``, ``mu``, ``sigma``).
"""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Callable, Iterable

import sympy

from autoinit_sym.moment_engine import catalog
from autoinit_sym.moment_engine.activation_moments import ActivationMoments, moments

FORMATS = ("markdown", "latex", "json", "csv")
COLUMNS = ("name", "parameters", "definition", "mean", "second_moment", "method",
           "mean_at_0_1", "variance_at_0_1")
_HEADERS = ("activation", "parameters", "f(x)", "E[f(X)], X ~ N(mu, sigma^2)", "E[f(X)^2]",
            "method", "mean at (0, 1)", "variance at (0, 1)")


def _rows(names: Iterable[str]) -> list[tuple[str, ActivationMoments]]:
    rows = []
    for name in names:
        entry = catalog.get(name)
        rows.append((name, moments(name, **{**entry.example})))
    return rows


def _record(name: str, m: ActivationMoments, formula: Callable[[sympy.Expr], Any]) -> dict[str, Any]:
    return {
        "name": name,
        "parameters": m.params,
        "definition": formula(m.expr),
        "mean": None if m.mean_expr is None else formula(m.mean_expr),
        "second_moment": None if m.second_moment_expr is None else formula(m.second_moment_expr),
        "method": m.method,
        "mean_at_0_1": float(m.mean(0.0, 1.0)),
        "variance_at_0_1": float(m.variance(0.0, 1.0)),
    }


def _latex(expr: sympy.Expr) -> str:
    return sympy.latex(expr).replace("\n", " ")


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _markdown(records: list[dict[str, Any]]) -> str:
    def cell(value: Any, math: bool = False) -> str:
        if value is None:
            return "(quadrature)"
        text = f"${value}$" if math else str(value)
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(_HEADERS) + " |", "|" + "---|" * len(_HEADERS)]
    for r in records:
        cells = [cell(r["name"]), cell(_params_text(r["parameters"])),
                 cell(r["definition"], True), cell(r["mean"], True), cell(r["second_moment"], True),
                 cell(r["method"]), cell(f"{r['mean_at_0_1']:.10g}"), cell(f"{r['variance_at_0_1']:.10g}")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _latex_table(records: list[dict[str, Any]]) -> str:
    def text(value: str) -> str:
        return value.replace("_", r"\_")

    lines = [r"\begin{longtable}{llllllll}",
             r"activation & parameters & $f(x)$ & $E[f(X)]$ & $E[f(X)^2]$ & method & mean $(0,1)$"
             r" & variance $(0,1)$ \\", r"\hline"]
    for r in records:
        math = [f"${v}$" if v is not None else "(quadrature)"
                for v in (r["definition"], r["mean"], r["second_moment"])]
        lines.append(" & ".join([text(r["name"]), text(_params_text(r["parameters"])), *math,
                                 text(r["method"]), f"{r['mean_at_0_1']:.10g}",
                                 f"{r['variance_at_0_1']:.10g}"]) + r" \\")
    lines.append(r"\end{longtable}")
    return "\n".join(lines) + "\n"


def _json(records: list[dict[str, Any]]) -> str:
    return json.dumps(records, indent=2)


def _csv(records: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({**r, "parameters": json.dumps(r["parameters"]),
                         **{k: "" if r[k] is None else r[k] for k in ("mean", "second_moment")},
                         "mean_at_0_1": repr(r["mean_at_0_1"]),
                         "variance_at_0_1": repr(r["variance_at_0_1"])})
    return out.getvalue()


_WRITERS = {"markdown": (_latex, _markdown), "latex": (_latex, _latex_table),
            "json": (str, _json), "csv": (str, _csv)}


def export_table(format: str = "markdown", names: Iterable[str] | None = None) -> str:
    """The formula table of ``names`` (default: all registered) in ``format``
    ("markdown", "latex", "json" or "csv")."""
    if format not in _WRITERS:
        raise ValueError(f"unknown table format {format!r}; valid formats: {list(FORMATS)}")
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    formula, write = _WRITERS[format]
    selected = catalog.names() if names is None else list(names)
    return write([_record(name, m, formula) for name, m in _rows(selected)])
