"""AutoInit's weight settings (``weight_init_config``), validated once."""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numpy as np

DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform", "orthogonal")
MIN_SAMPLES = 2
"""Fewest Monte Carlo samples (``monte_carlo_samples``, ``recurrent_monte_carlo_samples``):
a variance needs two."""
MAX_SAMPLES = 2**31 - 1
"""Most Monte Carlo samples: the largest count NumPy and every backend index without overflow."""


def _integer(key: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int: a Python or NumPy integer (not a bool, not a float) within bounds."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral):
        raise ValueError(f"weight_init_config[{key!r}] must be an integer, got {value!r} "
                         f"({type(value).__name__})")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"weight_init_config[{key!r}] must be between {minimum} and {maximum}, got {value}")
    return value


@dataclass
class WeightInitConfig:
    """Validated ``weight_init_config`` (see ``AutoInit``).

    ``distribution``: one of :data:`DISTRIBUTIONS`; ``constrain_weights``: a bool;
    ``monte_carlo_samples`` / ``recurrent_monte_carlo_samples``: integers from
    :data:`MIN_SAMPLES` to :data:`MAX_SAMPLES`; ``seed``: None or any integer (NumPy integers too).

    ``seed=None`` (the default) draws fresh weights on every initialization, from Keras's seeding
    (``walk.weights.base_seed``): ``keras.utils.set_random_seed(s)`` followed by the same calls
    draws the same weights again, as Keras's unseeded initializers do. ``seed=<int>`` draws the
    same weights on every run and in any process. Either way, every seed is derived from a
    position in the walk, never from a layer name (``EstimationContext.seed_for``), and the
    Monte Carlo sampling (recurrent layers, probes) is seeded by ``seed``, or 0 when it is None:
    its estimates depend only on the model, the weights drawn and ``seed``.
    """

    distribution: str = "truncated_normal"
    constrain_weights: bool = False
    monte_carlo_samples: int = 100_000
    recurrent_monte_carlo_samples: int = 10_000
    seed: int | None = None

    KEYS = ("distribution", "constrain_weights", "monte_carlo_samples",
            "recurrent_monte_carlo_samples", "seed")

    @classmethod
    def from_dict(cls, config: dict | None) -> "WeightInitConfig":
        """Check every key of ``config`` (a dict or None); ValueError names the key, what was
        wrong and the valid choices."""
        if config is None:
            return cls()
        if not isinstance(config, dict):
            raise TypeError(f"weight_init_config must be a dict or None, got {type(config).__name__}")
        unknown = sorted(set(config) - set(cls.KEYS), key=str)
        if unknown:
            raise ValueError(f"unknown weight_init_config key(s) {unknown}; valid keys: {list(cls.KEYS)}")
        out = cls(**config)
        if not isinstance(out.distribution, str) or out.distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {out.distribution!r}; valid choices: {list(DISTRIBUTIONS)}")
        if not isinstance(out.constrain_weights, (bool, np.bool_)):
            raise ValueError(f"weight_init_config['constrain_weights'] must be True or False, "
                             f"got {out.constrain_weights!r} ({type(out.constrain_weights).__name__})")
        out.constrain_weights = bool(out.constrain_weights)
        for key in ("monte_carlo_samples", "recurrent_monte_carlo_samples"):
            setattr(out, key, _integer(key, getattr(out, key), MIN_SAMPLES, MAX_SAMPLES))
        out.seed = None if out.seed is None else _integer("seed", out.seed)
        return out
