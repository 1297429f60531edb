"""Smoke test of the benchmark suite: every benchmark's tiny preset runs, writes a result
file of the documented shape and a PNG, and the report renders and rewrites the README region."""
import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import BENCHMARKS, report
from benchmarks.schema import ResultSchemaError, read_result, validate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TABLE_ONLY = {"keras_hub", "legacy", "large_variables"}
"""Benchmarks whose results are tables only (no plot)."""
RUN_PY = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """Every benchmark runs once with their tiny preset into one folder."""
    import importlib

    out = tmp_path_factory.mktemp("bench")
    for name in BENCHMARKS:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        module.run(module.PRESETS["tiny"], out, "tiny")
    return out


@pytest.mark.parametrize("name", BENCHMARKS)
def test_result_file_has_schema_and_plots(results, name):
    doc = read_result(results / f"{name}.json")
    assert doc["benchmark"] == name and doc["preset"] == "tiny"
    assert doc["machine"]["cpu_count"] >= 1 and doc["machine"]["versions"]["keras"]
    assert doc["plots"] or name in TABLE_ONLY
    for plot in doc["plots"]:
        data = (results / plot).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_moment_figures(results):
    rows = read_result(results / "moments.json")["results"]["activations"]
    assert {r["name"] for r in rows} == {"relu", "tanh"}
    for row in rows:
        for grid in ("moderate", "extreme"):
            assert row[grid]["points"] > 0
            assert 0 <= row[grid]["max_rel_err_mean"] < 1e-6  # the engine is far better than this
        assert row["cost"]["speedup"] > 1 and row["first_use_s"] > 0


def test_init_cost_figures(results):
    res = read_result(results / "init_cost.json")["results"]
    for row in res["synthetic"] + res["recurrent"]:
        assert row["build_s"] > 0 and row["init_s"] > 0
        assert math.isclose(row["ratio"], row["init_s"] / row["build_s"])
        assert sum(row["methods"].values()) >= row["layers"] - 1  # every call but the input


def test_signal_figures(results):
    for row in read_result(results / "signal.json")["results"]["networks"]:
        n = len(row["layers"])
        assert n and len(row["default_var"]) == len(row["autoinit_var"]) == len(row["predicted_var"]) == n
        assert all(v > 0 for v in row["autoinit_var"] + row["default_var"])
        assert len(row["autoinit_var_by_seed"]) == len(row["seeds"])
        assert row["autoinit_var"] == pytest.approx(row["autoinit_var_by_seed"][0])  # one draw


def test_new_figures(results):
    hub = read_result(results / "keras_hub.json")["results"]["backbones"]
    assert all(not r["error"] and r["redrawn_share"] > 0.9 for r in hub)
    legacy = read_result(results / "legacy.json")["results"]["models"]
    assert all(r["init_s"] > 0 and r["layers"] > 1 for r in legacy)
    big = read_result(results / "large_variables.json")["results"]["measurements"]
    assert all(r["largest_mb"] > 0 and r["autoinit_write_s"] > 0 for r in big)
    cold = read_result(results / "cold_start.json")["results"]["processes"]
    assert all(math.isclose(r["ratio"], r["cold_s"] / r["warm_s"]) for r in cold)


def test_training_figures(results):
    res = read_result(results / "training.json")["results"]
    assert {r["init"] for r in res["runs"]} == {"keras_default", "he_normal", "lecun_normal", "autoinit",
                                           "autoinit_calibrated", "lsuv"}
    assert all(0 <= r["test_accuracy"] <= 1 for r in res["runs"])
    assert len(res["summary"]) == len(res["runs"])  # one seed in the tiny preset


@pytest.mark.parametrize("damage", ["drop_key", "bad_benchmark", "row_key", "empty_table", "bad_plot"])
def test_schema_rejects_damaged_results(results, damage):
    doc = json.loads((results / "training.json").read_text())
    validate(doc)
    broken = copy.deepcopy(doc)
    if damage == "drop_key":
        del broken["machine"]
    elif damage == "bad_benchmark":
        broken["benchmark"] = "nonsense"
    elif damage == "row_key":
        del broken["results"]["runs"][0]["test_accuracy"]
    elif damage == "empty_table":
        broken["results"]["summary"] = []
    else:
        broken["plots"] = ["../escape.png"]
    with pytest.raises(ResultSchemaError):
        validate(broken)


def test_report_renders_every_section_and_rewrites_readme(results, tmp_path):
    markdown = report.render(results, base=results)
    for heading in ("Activation moments", "Initialization cost", "Signal propagation", "Training deep",
                    "keras_hub backbones", "Keras 2 (tf_keras) configs", "Very large variables", "Cold start"):
        assert f"### {heading}" in markdown
    for name in ("moments", "init_cost", "signal", "training"):
        assert f"]({name}.png)" in markdown
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{report.START}\nold text\n{report.END}\n\nafter\n")
    assert report.main(["--results", str(results), "--update-readme", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old text" not in text and text.startswith("# Title") and text.endswith("after\n")
    assert "### Training deep" in text.split(report.START)[1].split(report.END)[0]


def test_report_without_markers_fails_clearly(results, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    assert report.main(["--results", str(results), "--update-readme", "--readme", str(readme)]) == 1
    assert "lacks the markers" in capsys.readouterr().err
    assert readme.read_text() == "# no markers\n"


def test_runner_rejects_unknown_benchmark():
    proc = subprocess.run([sys.executable, str(RUN_PY), "--only", "moments,nope"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "unknown benchmark(s) ['nope']" in proc.stderr
