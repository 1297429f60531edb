"""export_table: the four formats parse back and their formulas reproduce the engine's numbers."""
import csv
import io
import json

import pytest
import sympy

from autoinit_sym.moment_engine import catalog
from autoinit_sym import export_table, moments
from autoinit_sym.moment_engine.expressions import X

POINTS = [(0.0, 1.0), (0.3, 1.7), (-1.2, 0.4)]   # (mu, sigma)


def _check_row(row: dict) -> None:
    """The row's formulas, sympified, evaluate to what moments() computes."""
    name, params = row["name"], row["parameters"]
    m = moments(name, **params)
    definition = sympy.sympify(row["definition"])
    for x in (-2.5, -0.3, 0.7, 4.0):
        assert float(definition.subs("x", x)) == pytest.approx(float(m.expr.subs(X, x)), rel=1e-12, abs=1e-15)
    assert float(row["mean_at_0_1"]) == pytest.approx(float(m.mean(0.0, 1.0)), rel=1e-15, abs=1e-30)
    assert float(row["variance_at_0_1"]) == pytest.approx(float(m.variance(0.0, 1.0)), rel=1e-15)
    assert row["method"] == m.method
    if m.method == "quadrature":
        assert not row["mean"] and not row["second_moment"]
        return
    mean, second = sympy.sympify(row["mean"]), sympy.sympify(row["second_moment"])
    for mu, sigma in POINTS:
        at = {"mu": mu, "sigma": sigma}
        expected_mean = float(m.mean(mu, sigma**2))
        assert float(mean.subs(at).evalf(30)) == pytest.approx(expected_mean, rel=1e-10, abs=1e-12), name
        assert float(second.subs(at).evalf(30)) == pytest.approx(
            float(m.variance(mu, sigma**2)) + expected_mean**2, rel=1e-10, abs=1e-12), name


def test_json_round_trip_covers_every_registered_activation():
    rows = json.loads(export_table(format="json"))
    assert [r["name"] for r in rows] == catalog.names()
    for row in rows:
        _check_row(row)


def test_csv_round_trip():
    names = ["relu", "elu", "tanh", "threshold", "gelu", "hard_silu"]
    rows = list(csv.DictReader(io.StringIO(export_table(format="csv", names=names))))
    assert [r["name"] for r in rows] == names
    for row in rows:
        _check_row({**row, "parameters": json.loads(row["parameters"])})


def _split_cells(line: str) -> list[str]:
    cells, current, escaped = [], "", False
    for ch in line.strip()[1:-1]:
        if ch == "|" and not escaped:
            cells.append(current)
            current = ""
        else:
            current += ch
        escaped = ch == "\\" and not escaped
    return cells + [current]


def test_markdown_is_a_table_with_escaped_pipes():
    names = ["softsign", "relu", "tanh", "hard_tanh"]
    lines = export_table(format="markdown", names=names).strip().splitlines()
    header, separator, body = lines[0], lines[1], lines[2:]
    width = len(_split_cells(header))
    assert width == 8 and set(separator.replace("|", "")) == {"-"}
    assert len(_split_cells(separator)) == width
    assert len(body) == len(names)
    for line, name in zip(body, names):
        cells = _split_cells(line)
        assert len(cells) == width and cells[0].strip() == name
    assert "\\|" in body[0]          # softsign's |x| is escaped, not a cell border


def test_latex_table():
    text = export_table(format="latex", names=["leaky_relu", "sigmoid"])
    lines = text.strip().splitlines()
    assert lines[0].startswith(r"\begin{longtable}") and lines[-1] == r"\end{longtable}"
    body = [l for l in lines if l.startswith(("leaky", "sigmoid"))]
    assert len(body) == 2 and all(l.endswith(r"\\") for l in body)
    assert r"leaky\_relu" in text and "negative\\_slope=0.2" in text


def test_names_accepts_a_comma_separated_string():
    rows = json.loads(export_table(format="json", names="relu, tanh"))
    assert [r["name"] for r in rows] == ["relu", "tanh"]


@pytest.mark.parametrize("kwargs,match", [
    ({"format": "html"}, r"unknown table format 'html'; valid formats: \['markdown', 'latex', 'json', 'csv'\]"),
    ({"format": "json", "names": ["relu", "rleu"]}, "unknown activation 'rleu'"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        export_table(**kwargs)
