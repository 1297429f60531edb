"""The README's table of supported layers and operations, generated from the estimator registry.

``markdown_table()`` renders one row per registered layer/operation class (family,
public name, estimator, method, one-line rule taken from the estimator's docstring) and
``probed_paragraph()`` lists the public layers without one;
``readme_is_current(text)`` / ``update_readme(text)`` check and rewrite the README region
between ``<!-- supported-layers:start -->`` and ``<!-- supported-layers:end -->``.
Keras is imported only when the registry is read (the family modules need it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

START = "<!-- supported-layers:start -->"
END = "<!-- supported-layers:end -->"


@dataclass(frozen=True)
class Row:
    """One supported layer or operation class."""

    family: str
    name: str
    estimator: str
    method: str
    rule: str


def _public_name(cls: type) -> str:
    """``keras.layers.Dense`` / ``keras.ops.add`` where Keras exports the class, else its module path."""
    import keras

    if getattr(keras.layers, cls.__name__, None) is cls:
        return f"keras.layers.{cls.__name__}"
    if cls.__module__.startswith("keras.src.ops."):
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
        if hasattr(keras.ops, snake):
            return f"keras.ops.{snake}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _rule(estimator: type, limit: int = 160) -> str:
    """The first sentence of the estimator's docstring, on one line (shortened past ``limit``)."""
    doc = " ".join((estimator.__doc__ or "").split())
    sentence = doc.split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= limit else sentence[:limit - 1].rstrip() + "…"


def served_classes() -> dict[type, type]:
    """Layer/operation class -> estimator class: every registered class, plus every public
    ``keras.layers`` class served through a registered parent (e.g. SpatialDropout2D, LSTM).
    Rules of the optional families (keras_hub) are left out: they are registered only once their
    package is imported, and the README lists them in its own section, so the table does not
    depend on what a process happened to import."""
    from autoinit_sym.estimators.registry import OPTIONAL_FAMILIES, registered

    optional = {f"{__package__}.estimators.{family}" for family in OPTIONAL_FAMILIES}
    table = {cls: rule for cls, rule in registered().items() if rule.__module__ not in optional}
    served = dict(table)
    for cls in _public_layer_classes():
        if cls not in served:
            parent = next((c for c in cls.__mro__ if c in table), None)
            if parent is not None:
                served[cls] = table[parent]
    return served


NOT_PROBED = ("Layer", "Wrapper", "InputLayer")
"""Base classes (a subclass is looked up by its own class) and the graph's inputs."""


def unsupported_layers() -> list[str]:
    """Public ``keras.layers`` classes with no estimator (they are probed, with a warning)."""
    served = served_classes()
    return sorted({_public_name(cls) for cls in _public_layer_classes()
                   if cls not in served and cls.__name__ not in NOT_PROBED})


def _public_layer_classes() -> list[type]:
    """The ``keras.layers.Layer`` subclasses exported by ``keras.layers``, in name order."""
    import keras

    return [cls for name in dir(keras.layers)
            if isinstance(cls := getattr(keras.layers, name), type) and issubclass(cls, keras.layers.Layer)]


def rows() -> list[Row]:
    """Every served class, sorted by family then name."""
    out = []
    for cls, estimator in served_classes().items():
        family = estimator.__module__.rsplit(".", 1)[-1]
        method = getattr(estimator, "method_label", None) or estimator.method
        out.append(Row(family, _public_name(cls), estimator.__name__, method, _rule(estimator)))
    return sorted(out, key=lambda r: (r.family, r.name))


def markdown_table() -> str:
    """The markdown table (header included), ending with a newline."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| Family | Layer / operation | Estimator | Method | Rule |", "|---|---|---|---|---|"]
    lines += [f"| {r.family} | `{r.name}` | {r.estimator} | {r.method} | {cell(r.rule)} |" for r in rows()]
    return "\n".join(lines) + "\n"


def _region(text: str) -> tuple[int, int]:
    start, end = text.find(START), text.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"the README has no region between {START!r} and {END!r} (both markers, in order)")
    return start + len(START), end


def probed_paragraph() -> str:
    """The public ``keras.layers`` classes without a rule (:func:`unsupported_layers`), as a
    paragraph ending with a newline."""
    names = ", ".join(f"`{name.rsplit('.', 1)[-1]}`" for name in unsupported_layers())
    return (f"\nWithout a rule, so probed with a warning when a model calls them directly "
            f"(preprocessing and augmentation layers, RNN cells used inside the layers above, "
            f"wrappers around other frameworks): {names}.\n")


def update_readme(text: str) -> str:
    """``text`` with the region between the markers replaced by the current table and the
    list of probed layers."""
    start, end = _region(text)
    return text[:start] + "\n" + markdown_table() + probed_paragraph() + text[end:]


def readme_is_current(text: str) -> bool:
    """Whether the README region between the markers holds exactly the current table."""
    return update_readme(text) == text
