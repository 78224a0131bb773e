"""The leaf of the import graph: the exceptions and range checks every layer shares.

It imports nothing of hymarl (an import-linter contract in pyproject.toml keeps it so), so
``envs/`` and ``modules/`` can raise :class:`ConfigError` without importing the runner's config.
"""

from __future__ import annotations

import math
from typing import Any


class ConfigError(ValueError):
    """A config that cannot run. Raised before any run is created."""


class RegistryError(KeyError):
    """Unknown registry key; the message lists what is available."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


def fmt_value(v: Any) -> str:
    """A value as it appears in an error message: strings quoted, the rest as str()."""
    return repr(v) if isinstance(v, str) else str(v)


def invalid(key: str, value: Any, rule: str) -> str:
    """The one wording of a bad value: ``key=value is invalid: rule``."""
    return f"{key}={fmt_value(value)} is invalid: {rule}"


def check_range(errors: list[str], key: str, value: Any, lo: float, hi: float, lo_open=False, hi_open=False) -> None:
    """Append an error if value is not in the interval; brackets follow lo_open/hi_open."""
    ok = isinstance(value, (int, float)) and not math.isnan(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        errors.append(invalid(key, value, f"must be in {lb}{lo}, {hi}{rb}"))
