"""AutoInit's weight settings (``weight_init_config``), validated once."""
from __future__ import annotations

from dataclasses import dataclass

DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform", "orthogonal")


@dataclass
class WeightInitConfig:
    """Validated ``weight_init_config`` (see ``AutoInit``)."""

    distribution: str = "truncated_normal"
    constrain_weights: bool = False
    monte_carlo_samples: int = 100_000
    recurrent_monte_carlo_samples: int = 10_000
    seed: int = 0

    KEYS = ("distribution", "constrain_weights", "monte_carlo_samples",
            "recurrent_monte_carlo_samples", "seed")

    @classmethod
    def from_dict(cls, config: dict | None) -> "WeightInitConfig":
        if config is None:
            return cls()
        if not isinstance(config, dict):
            raise TypeError(f"weight_init_config must be a dict or None, got {type(config).__name__}")
        unknown = sorted(set(config) - set(cls.KEYS))
        if unknown:
            raise ValueError(f"unknown weight_init_config key(s) {unknown}; valid keys: {list(cls.KEYS)}")
        out = cls(**config)
        if out.distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {out.distribution!r}; valid choices: {list(DISTRIBUTIONS)}")
        for key in ("monte_carlo_samples", "recurrent_monte_carlo_samples"):
            value = getattr(out, key)
            if not (isinstance(value, (int, float)) and value >= 1):
                raise ValueError(f"{key} must be a positive number, got {value!r}")
            setattr(out, key, int(value))
        if not isinstance(out.seed, int) or isinstance(out.seed, bool):
            raise ValueError(f"seed must be an int, got {out.seed!r}")
        return out
