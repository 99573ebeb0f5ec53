"""Config validation shared by the models: errors name the field, the value and the rule."""

from __future__ import annotations

from typing import Any


def check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def check_float(name: str, value: object, low: float, high: float, *, low_open: bool) -> None:
    """``value`` must be a number in ``[low, high)`` (``(low, high)`` when ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a float, got {value!r}")
    above = value > low if low_open else value >= low
    if not (above and value < high):
        interval = f"{'(' if low_open else '['}{low}, {high})"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")


def parse_sizes(text: str) -> tuple[int, ...] | None:
    """``"64,32"`` -> ``(64, 32)``; ``None`` unless every comma-separated part is an int > 0.

    Layer sizes are comma-separated strings in the configs so a config stays a flat JSON value
    (see `models.ncf.NCFConfig`); each config words its own error around this parse.
    """
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and int(part) > 0 for part in parts):
        return None
    return tuple(int(part) for part in parts)


# The fields the neural configs (NCF, two-tower, SASRec) share, checked in their field order.


def check_schedule(config: Any) -> None:
    """``epochs`` and ``batch_size`` (ints >= 1) and ``learning_rate`` (> 0)."""
    check_int("epochs", config.epochs, 1)
    check_int("batch_size", config.batch_size, 1)
    check_float("learning_rate", config.learning_rate, 0.0, float("inf"), low_open=True)


def check_sampling(config: Any) -> None:
    """``negatives`` (int >= 1) and ``weight_decay`` (>= 0)."""
    check_int("negatives", config.negatives, 1)
    check_float("weight_decay", config.weight_decay, 0.0, float("inf"), low_open=False)


def check_early_stopping(config: Any) -> None:
    """``validation_fraction`` in [0, 1), ``patience`` (int >= 1) and ``seed`` (int >= 0)."""
    check_float("validation_fraction", config.validation_fraction, 0.0, 1.0, low_open=False)
    check_int("patience", config.patience, 1)
    check_int("seed", config.seed, 0)
