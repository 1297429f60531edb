"""keras.applications models (weights=None, 32x32 inputs): every layer served by an estimator, no
unsupported-layer warning, and predictions that track measurement; the supported-layers table."""
import math
from pathlib import Path

import keras
import numpy as np
import pytest
from keras.src.applications.convnext import LayerScale, StochasticDepth
from helpers import assert_application_tracks, propagated

from autoinit_sym.estimators.base import EstimationContext
from autoinit_sym.estimators.registry import lookup
from autoinit_sym.supported_layers import (END, START, markdown_table, probed_paragraph, readme_is_current, rows,
                                          update_readme)

@pytest.mark.parametrize("name", ["MobileNetV2", "ConvNeXtTiny"])
def test_application_initializes_and_tracks(name, caplog):
    """The larger applications are in tests/slow/test_large_applications.py."""
    assert_application_tracks(name, caplog)


@pytest.mark.parametrize("mean,var", [(0.0, 1.0), (5.0, 0.01), (-3.0, 25.0)])
def test_convnext_layers_match_noise(mean, var):
    x = np.random.default_rng(0).normal(mean, math.sqrt(var), (20000, 8)).astype("float32")
    scale = LayerScale(0.5, 8)
    scale.build((None, 8))
    scale.gamma.assign(np.linspace(0.1, 2.0, 8))
    for layer in (scale, StochasticDepth(0.3)):
        y = keras.ops.convert_to_numpy(layer(x, training=True)).astype(float)
        pred_mean, pred_var = propagated(lookup(layer)(layer, EstimationContext()), [mean], [var])
        assert abs(y.mean() - pred_mean) <= 0.03 * math.sqrt(pred_var)
        assert abs(math.log(y.var() / pred_var)) <= 0.03


def test_inception_resnet_scale_layer():
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    a, b = keras.Input((4,)), keras.Input((4,))
    layer = CustomScaleLayer(0.17)
    layer([a, b])
    estimator = lookup(layer)(layer, EstimationContext(), node=layer._inbound_nodes[0])
    assert propagated(estimator, [1.0, 2.0], [3.0, 4.0]) == pytest.approx((1.34, 3.0 + 0.17 ** 2 * 4.0))


def test_table_lists_every_served_layer():
    table = markdown_table()
    names = {row.name for row in rows()}
    for expected in ("keras.layers.MaxPooling2D", "keras.layers.SpatialDropout2D", "keras.layers.BatchNormalization",
                     "keras.ops.multiply", "keras.src.applications.convnext.LayerScale"):
        assert expected in names and f"`{expected}`" in table
    assert all(row.method for row in rows())
    probed = probed_paragraph()
    assert "`RandomFlip`" in probed and "`Dense`" not in probed and "`MaxPooling2D`" not in probed


def test_readme_region():
    text = f"intro\n{START}\nold table\n{END}\noutro\n"
    updated = update_readme(text)
    assert readme_is_current(updated) and not readme_is_current(text)
    assert updated.startswith("intro\n") and updated.endswith(f"{END}\noutro\n")
    with pytest.raises(ValueError, match="supported-layers:start"):
        update_readme("no markers")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert START in readme and END in readme, "README lost its supported-layers markers"
    assert readme_is_current(readme), "README supported-layers table is stale: regenerate it"
