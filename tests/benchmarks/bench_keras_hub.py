"""keras_hub backbones: how much AutoInit redraws, how well it predicts, what it costs.

Small random backbones (the quick preset: 2 layers, hidden 128, vocabulary 1000, sequence length
32; ViT on 32x32 images with 8x8 patches; a pre-activation ResNet) built with ``from_config``.
Per model:

- ``redrawn_share``: trainable parameters AutoInit's rules redrew, over all trainable parameters;
  ``warnings``: the messages AutoInit logged (a count and the texts), ``error``: why it refused;
- ``median_log_error`` / ``p90_log_error``: over the layer calls inside the blocks (calls of the
  opened composite layers; every call where nothing was opened), |log(mean over draws of the
  measured variance / predicted variance)|, each draw a fresh weight draw measured on inputs of the
  statistics AutoInit assumes (Gaussian images; token ids uniform over the vocabulary, padding mask
  all ones, segment ids uniform over 0 and 1);
- ``residual_ratio``: the residual stream (the input of the final normalization; BERT: the last
  block's output) measured / predicted, mean over draws;
- ``init_s`` / ``build_s`` / ``ratio``: best time of ``initialize_model`` against that of
  ``from_config``;
- tied-embedding causal LMs (GPT2, Gemma): the initial logit variance and cross-entropy on random
  tokens against log(vocabulary size), mean over draws.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

from .cost_meter import best_time
from .schema import make_result, write_result

TEXT_MODELS = ("bert", "gpt2", "gemma", "llama", "mistral", "qwen")
IMAGE_MODELS = ("vit", "resnet")
CAUSAL_LMS = ("gpt2", "gemma")


@dataclass(frozen=True)
class Settings:
    models: tuple[str, ...]
    causal_lms: tuple[str, ...]
    layers: int = 2
    hidden: int = 128
    heads: int = 2
    intermediate: int = 256
    vocabulary: int = 1000
    sequence_length: int = 32
    image_size: int = 32
    samples: int = 32          # sequences (images) measured per draw
    draws: tuple[int, ...] = (0, 1, 2, 3)
    repeats: int = 2           # timing repeats (best of)


PRESETS = {
    "tiny": Settings(models=("gpt2",), causal_lms=("gpt2",), hidden=32, intermediate=64,
                     vocabulary=100, sequence_length=8, samples=8, draws=(0,), repeats=1),
    "quick": Settings(models=TEXT_MODELS + IMAGE_MODELS, causal_lms=CAUSAL_LMS),
    "full": Settings(models=TEXT_MODELS + IMAGE_MODELS, causal_lms=CAUSAL_LMS, samples=128,
                     draws=tuple(range(8)), repeats=3),
}

FINAL_NORMS = {"gpt2": "layer_norm", "vit": "ln", "gemma": "final_normalization", "llama": "sequence_output_layernorm",
               "mistral": "sequence_output_layernorm", "qwen": "sequence_output_layernorm"}
"""The final normalization of each backbone (BERT normalizes after each block: none), whose input
is the residual stream."""


def backbone(settings: Settings, name: str) -> Any:
    """A small random keras_hub backbone ``name``."""
    import keras_hub

    s = settings
    decoder = dict(vocabulary_size=s.vocabulary, num_layers=s.layers, num_query_heads=s.heads,
                   num_key_value_heads=1, hidden_dim=s.hidden, intermediate_dim=s.intermediate)
    builders = {
        "bert": lambda: keras_hub.models.BertBackbone(
            vocabulary_size=s.vocabulary, num_layers=s.layers, num_heads=s.heads, hidden_dim=s.hidden,
            intermediate_dim=s.intermediate, max_sequence_length=s.sequence_length),
        "gpt2": lambda: keras_hub.models.GPT2Backbone(
            vocabulary_size=s.vocabulary, num_layers=s.layers, num_heads=s.heads, hidden_dim=s.hidden,
            intermediate_dim=s.intermediate, max_sequence_length=s.sequence_length),
        "gemma": lambda: keras_hub.models.GemmaBackbone(**decoder, head_dim=s.hidden // s.heads),
        "llama": lambda: keras_hub.models.LlamaBackbone(**decoder),
        "mistral": lambda: keras_hub.models.MistralBackbone(**decoder),
        "qwen": lambda: keras_hub.models.QwenBackbone(**decoder),
        "vit": lambda: keras_hub.models.ViTBackbone(
            image_shape=(s.image_size, s.image_size, 3), patch_size=s.image_size // 4, num_layers=s.layers,
            num_heads=s.heads, hidden_dim=s.hidden, mlp_dim=s.intermediate),
        "resnet": lambda: keras_hub.models.ResNetBackbone(
            input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 128],
            stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
            use_pre_activation=True, image_shape=(s.image_size, s.image_size, 3)),
    }
    if name not in builders:
        raise ValueError(f"unknown keras_hub model {name!r}; valid: {sorted(builders)}")
    return builders[name]()


def causal_lm(model: Any, name: str) -> Any:
    """The causal language model on ``model`` (its token embedding doubles as the output projection)."""
    import keras_hub

    task = {"gpt2": keras_hub.models.GPT2CausalLM, "gemma": keras_hub.models.GemmaCausalLM}[name]
    return task(backbone=model, preprocessor=None)


def model_inputs(settings: Settings, graph: Any, rows: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Inputs of the statistics AutoInit assumes, in ``graph``'s input order."""
    out = []
    for input_name, shape in zip(graph.input_names, graph.input_shapes):
        dims = (rows, *[settings.sequence_length if d is None else d for d in shape[1:]])
        if "token_ids" in input_name:
            out.append(rng.integers(0, settings.vocabulary, dims).astype("int32"))
        elif "padding_mask" in input_name:
            out.append(np.ones(dims, dtype="int32"))
        elif "segment_ids" in input_name:
            out.append(rng.integers(0, 2, dims).astype("int32"))
        else:
            out.append(rng.normal(0.0, 1.0, dims).astype("float32"))
    return out


def opened_graph(settings: Settings, model: Any) -> tuple[Any, set[str]]:
    """AutoInit's graph of ``model`` (sequence length ``settings.sequence_length``) with its
    composite layers opened, and the keys of the calls of the unopened graph (outside the blocks)."""
    from autoinit_sym.walk import walker
    from autoinit_sym.walk.graph import build_graph
    from autoinit_sym.walk.loading import resolve_shapes
    from autoinit_sym.walk.tracing import open_layers

    outside = {call.key for call in build_graph(model).calls}
    graph = build_graph(model)
    resolve_shapes(graph, None, settings.sequence_length)
    open_layers(graph, walker.opens(walker.WalkContext()))
    return graph, outside


def measured_draw(settings: Settings, model: Any, graph: Any, seed: int, norm: str | None
                  ) -> tuple[dict[str, float], float | None]:
    """Per call key the measured output variance over all elements, and the variance of the final
    normalization's input (None without one), for the weights now in ``model``."""
    from autoinit_sym.walk.graph import run_graph
    from autoinit_sym.walk.tracing import TRACE_BATCH

    rng = np.random.default_rng(seed)
    sums: dict[str, list[float]] = {}
    residual: list[float] = []
    done = 0
    while done < settings.samples:
        rows = min(TRACE_BATCH, settings.samples - done)  # the batch opened layers were traced at
        values = run_graph(graph, model_inputs(settings, graph, rows, rng), training=True)
        for call in graph.calls:
            if len(call.outputs) != 1 or call.outputs[0] not in values:
                continue
            y = np.asarray(_numpy(values[call.outputs[0]]), dtype=np.float64)
            if y.dtype.kind == "f" and y.size:
                sums.setdefault(call.key, []).append(float(y.var()))
            if norm is not None and call.operation.name == norm and not call.submodel:
                residual.append(float(np.asarray(_numpy(values[call.inputs[0]]), dtype=np.float64).var()))
        done += rows
    return {k: float(np.mean(v)) for k, v in sums.items()}, (float(np.mean(residual)) if residual else None)


def _numpy(value: Any) -> Any:
    import keras

    return keras.ops.convert_to_numpy(value)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def initialized(settings: Settings, model: Any, seed: int) -> tuple[Any, list[str]]:
    """AutoInit's estimates for ``model`` (weights drawn with ``seed``; text models at
    ``settings.sequence_length``) and its warnings."""
    from autoinit_sym import AutoInit

    handler = _Collect()
    logger = logging.getLogger("autoinit_sym")
    logger.addHandler(handler)
    try:
        autoinit = AutoInit(weight_init_config={"seed": seed}, sequence_length=settings.sequence_length)
        _, estimates = autoinit.initialize_model(model, return_estimates=True)
    finally:
        logger.removeHandler(handler)
    return estimates, handler.messages


def redrawn_share(model: Any, estimates: Any) -> float:
    """Trainable parameters whose variable AutoInit redrew, over all trainable parameters."""
    redrawn = {path for estimate in estimates.values() for path in estimate.weights}
    sizes = {v.path: int(np.prod(v.shape)) for v in model.trainable_variables}
    total = sum(sizes.values())
    return sum(n for path, n in sizes.items() if path in redrawn) / total if total else 0.0


def predicted_vars(estimates: Any) -> dict[str, float]:
    return {k: e.var for k, e in estimates.items() if isinstance(e.var, float) and e.var > 0}


def log_errors(predicted: dict[str, float], measured: list[dict[str, float]], keys: set[str]) -> list[float]:
    """|log(mean over draws of measured / predicted)| for each of ``keys`` measured in every draw."""
    out = []
    for key in sorted(keys):
        values = [m[key] for m in measured if key in m]
        if key in predicted and len(values) == len(measured) and np.mean(values) > 0:
            out.append(abs(math.log(float(np.mean(values)) / predicted[key])))
    return out


def logit_statistics(settings: Settings, model: Any, seed: int) -> tuple[float, float]:
    """Variance of the logits and mean cross-entropy of random next tokens, on random tokens."""
    import keras

    rng = np.random.default_rng(seed)
    shape = (settings.samples, settings.sequence_length)
    tokens = rng.integers(0, settings.vocabulary, shape).astype("int32")
    logits = np.asarray(keras.ops.convert_to_numpy(
        model({"token_ids": tokens, "padding_mask": np.ones(shape, "int32")})), dtype=np.float64)
    targets = rng.integers(0, settings.vocabulary, shape)
    top = logits.max(axis=-1, keepdims=True)
    log_norm = (top + np.log(np.exp(logits - top).sum(axis=-1, keepdims=True)))[..., 0]
    chosen = np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return float(logits.var()), float(np.mean(log_norm - chosen))


def evaluate(settings: Settings, name: str) -> dict:
    """One backbone's row (module docstring)."""
    import keras

    keras.utils.set_random_seed(0)
    model = backbone(settings, name)
    config, cls = model.get_config(), type(model)
    row: dict[str, Any] = {"model": name, "params": int(sum(np.prod(v.shape) for v in model.trainable_variables))}
    try:
        estimates, warnings = initialized(settings, model, settings.draws[0])
    except Exception as err:  # the benchmark records a refusal instead of stopping
        return {**row, "error": f"{type(err).__name__}: {err}", "redrawn_share": 0.0, "warnings": [],
                "median_log_error": None, "p90_log_error": None, "residual_ratio": None,
                "build_s": None, "init_s": None, "ratio": None}
    row.update(error=None, redrawn_share=redrawn_share(model, estimates), warnings=warnings)
    graph, outside = opened_graph(settings, model)
    predicted = predicted_vars(estimates)
    inner = {k for k in predicted if k not in outside} or set(predicted)
    norm = FINAL_NORMS.get(name)
    measured, residuals = [], []
    for seed in settings.draws:
        if seed != settings.draws[0]:
            estimates, _ = initialized(settings, model, seed)
        per_call, residual = measured_draw(settings, model, graph, seed, norm)
        measured.append(per_call)
        residuals.append(residual)
    errors = log_errors(predicted, measured, inner)
    row.update(calls_compared=len(errors), calls_inside_blocks=bool(inner - set(outside)),
               median_log_error=median(errors) if errors else None,
               p90_log_error=float(np.quantile(errors, 0.9)) if errors else None)
    row["residual_ratio"] = residual_ratio(estimates, norm, residuals)
    row["build_s"] = best_time(lambda: cls.from_config(config), settings.repeats)
    row["init_s"] = best_time(lambda: initialized(settings, model, 0), settings.repeats)
    row["ratio"] = row["init_s"] / row["build_s"]
    if name in settings.causal_lms:
        row.update(causal_lm_figures(settings, model, name))
    keras.backend.clear_session()
    return row


def residual_ratio(estimates: Any, norm: str | None, residuals: list[float | None]) -> float | None:
    """Measured / predicted variance of the final normalization's input (mean over draws)."""
    calls = [e for e in estimates.values() if norm is not None and e.layer == norm]
    if not calls or None in residuals or not calls[-1].inputs[0].var > 0:
        return None
    return float(np.mean(residuals)) / calls[-1].inputs[0].var


def causal_lm_figures(settings: Settings, model: Any, name: str) -> dict:
    """Initial logit variance and cross-entropy of the causal LM on ``model`` (mean over draws)."""
    task = causal_lm(model, name)
    variances, entropies = [], []
    for seed in settings.draws:
        initialized(settings, task, seed)
        variance, entropy = logit_statistics(settings, task, seed)
        variances.append(variance)
        entropies.append(entropy)
    return {"logit_var": float(np.mean(variances)), "cross_entropy": float(np.mean(entropies)),
            "log_vocabulary": math.log(settings.vocabulary)}


def headline(rows: list[dict]) -> dict:
    out: dict[str, Any] = {}
    for row in rows:
        name = row["model"]
        out[f"redrawn_share_{name}"] = row["redrawn_share"]
        out[f"warnings_{name}"] = len(row["warnings"])
        out[f"median_log_error_{name}"] = row["median_log_error"]
        out[f"p90_log_error_{name}"] = row["p90_log_error"]
        out[f"residual_ratio_{name}"] = row["residual_ratio"]
        out[f"init_over_build_{name}"] = row["ratio"]
        if "logit_var" in row:
            out[f"logit_var_{name}"] = row["logit_var"]
            out[f"cross_entropy_over_log_v_{name}"] = row["cross_entropy"] / row["log_vocabulary"]
    return out


def run(settings: Settings, out_dir: Path, preset: str) -> dict:
    start = time.perf_counter()
    rows = [evaluate(settings, name) for name in settings.models]
    doc = make_result("keras_hub", preset, asdict(settings), {"backbones": rows}, headline(rows), [],
                      time.perf_counter() - start)
    write_result(doc, out_dir)
    return doc
