"""Hyperparameter values written on a command line (``asp-bench --set``, ``asp-service serve --set``)."""

from __future__ import annotations

from typing import Any


def parse_value(text: str) -> Any:
    """'100' -> 100, '1e-3' -> 0.001, 'true' -> True, 'none' -> None, else the string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_assignments(items: list[str], flag: str = "--set") -> dict[str, Any]:
    """``["lam=0.5", "importance_stride=4"]`` -> ``{"lam": 0.5, "importance_stride": 4}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{flag} expects name=value, got {item!r}")
        out[key.strip()] = parse_value(value)
    return out
