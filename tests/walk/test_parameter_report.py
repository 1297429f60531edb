"""The report of what an initialization redrew (walk/report.py): exact counts over the model's
trainable parameters, the kept layers with why, and the warning when too much was kept."""
import json
import logging
import re

import keras
import pytest

from autoinit_sym import AutoInit
from autoinit_sym.walk.report import BY_RULE, CHOSEN, KEPT_WARNING


class Scale(keras.layers.Layer):
    """A learned per-feature scale behind a check on the values: cannot be traced, so probed."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        if keras.ops.any(keras.ops.isnan(x)):
            raise ValueError("NaN input")
        return x * self.scale

    def compute_output_shape(self, input_shape):
        return input_shape


def report_model(scale_width: int) -> keras.Model:
    x = keras.Input((16,))
    h = keras.layers.Dense(32, name="first")(x)
    h = keras.layers.Dense(scale_width, name="frozen", trainable=False)(h)
    h = Scale(name="scale")(h)
    return keras.Model(x, keras.layers.Dense(4, name="last")(h))


def kernel_sizes(model, *names):
    return sum(int(keras.ops.size(model.get_layer(n).kernel)) for n in names)


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if "KEPT_WARNING" in r.getMessage()]


def test_counts_reasons_and_text(caplog):
    model = report_model(8)
    frozen = model.get_layer("frozen").count_params()
    with caplog.at_level(logging.WARNING):
        model, estimates = AutoInit().initialize_model(model, return_estimates=True)
    report = estimates.report
    assert report.total == model.count_params() - frozen  # trainable parameters only
    assert report.redrawn == kernel_sizes(model, "first", "last")
    scale_reason = next(k.reason for k in report.kept if k.layer == "scale")
    assert scale_reason.startswith("not traceable (") and scale_reason.endswith("); probed")
    assert {(k.layer, k.reason): k.parameters for k in report.kept} == {
        ("first", BY_RULE): 32, ("last", BY_RULE): 4, ("scale", scale_reason): 8}  # biases, the scale
    assert report.redrawn + sum(k.parameters for k in report.kept) == report.total
    assert re.fullmatch(rf"redrew {report.redrawn} of {report.total} parameters \(\d+\.\d%\); kept their own "
                        r"initializers: .*scale \(8: not traceable .*", report.text())
    assert report.unaccounted_share == pytest.approx(8 / report.total)
    assert warnings_of(caplog) == []  # 8 of 716 is under KEPT_WARNING
    assert estimates["scale"].kept == {model.get_layer("scale").scale.path: scale_reason}
    assert json.loads(json.dumps(report.summary()))["redrawn"] == report.redrawn
    assert json.loads(json.dumps(estimates["scale"].summary()))["kept"] == estimates["scale"].kept


def test_warning_when_more_than_a_few_per_cent_kept(caplog):
    model = report_model(400)  # the probed scale holds 400 of about 8700 trainable parameters
    with caplog.at_level(logging.WARNING):
        _, estimates = AutoInit().initialize_model(model, return_estimates=True)
    assert estimates.report.unaccounted_share > KEPT_WARNING
    (warning,) = warnings_of(caplog)
    assert estimates.report.text() in warning


def test_layers_kept_by_choice_are_counted_but_not_warned_about(caplog):
    model = report_model(8)
    with caplog.at_level(logging.WARNING):
        model, estimates = AutoInit().initialize_model(model, return_estimates=True, layers=["last", "scale"])
    chosen = [k for k in estimates.report.kept if k.reason == CHOSEN]
    assert {k.layer for k in chosen} == {"first"} and chosen[0].parameters == model.get_layer("first").count_params()
    assert estimates.report.redrawn == kernel_sizes(model, "last")
    assert warnings_of(caplog) == []


def test_estimates_stay_an_ordered_mapping():
    x = keras.Input((8,))
    model = keras.Model(x, keras.layers.Dense(4, name="d")(x))
    _, estimates = AutoInit().initialize_model(model, return_estimates=True)
    assert list(estimates) == ["d"] and estimates["d"].var == pytest.approx(1.0)
    assert estimates.report.text() == "redrew 32 of 36 parameters (88.9%); kept their own initializers: d (4: its rule keeps it)"
