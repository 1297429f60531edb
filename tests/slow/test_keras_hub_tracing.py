"""keras_hub backbones through AutoInit: their blocks are opened by tracing (walk/tracing.py) and
their integer inputs (token ids, padding masks) probed with valid values (slow: builds keras_hub
models; keras_hub is optional)."""

import keras
import numpy as np
import pytest

from autoinit_sym import AutoInit
from autoinit_sym.walk import walker
from autoinit_sym.walk.graph import build_graph, input_values, run_graph
from autoinit_sym.walk.loading import resolve_shapes
from autoinit_sym.walk.monte_carlo import gaussian_rows
from autoinit_sym.walk.tracing import open_layers
from helpers import model_state

SMALL = dict(vocabulary_size=1000, num_layers=2, hidden_dim=128, intermediate_dim=256)
HEADS = {"GPT2Backbone": dict(num_heads=2, max_sequence_length=32),
         "BertBackbone": dict(num_heads=2, max_sequence_length=32),
         "LlamaBackbone": dict(num_query_heads=2, num_key_value_heads=1),
         "GemmaBackbone": dict(num_query_heads=2, num_key_value_heads=1, head_dim=64)}


def backbone(name: str):
    keras_hub = pytest.importorskip("keras_hub")
    return getattr(keras_hub.models, name)(**SMALL, **HEADS[name])


@pytest.mark.parametrize("name", list(HEADS))
def test_text_backbone_is_opened_and_probes_its_masks(name):
    """Token ids and an integer padding mask of unknown length: the blocks are opened, nothing
    is passed through, and more than 95% of the trainable parameters are redrawn."""
    _, estimates = AutoInit(sequence_length=32).initialize_model(backbone(name), return_estimates=True)
    assert sum("/" in key for key in estimates) > 10  # calls inside the two blocks, prefixed by block
    assert not [key for key, e in estimates.items() if e.method in ("pass_through", "probe")]
    assert estimates.report.share > 0.95


def test_backbone_left_untouched_by_tracing():
    model = backbone("GPT2Backbone")
    def state():
        return model_state(model)

    before = state()
    graph = build_graph(model)
    resolve_shapes(graph, None, 32)
    open_layers(graph, walker.opens(walker.WalkContext()))
    rng = np.random.default_rng(0)
    inputs = [gaussian_rows(rng, 5, shape, dtype, 0.0, 1.0, values)  # batch 5: retraced
              for shape, dtype, values in zip(graph.input_shapes, graph.input_dtypes, input_values(graph))]
    values = run_graph(graph, inputs, training=False)
    expected = model(dict(zip(graph.input_names, inputs)))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(values[graph.outputs[0]]),
                               keras.ops.convert_to_numpy(expected), rtol=1e-4, atol=1e-5)
    assert state() == before
