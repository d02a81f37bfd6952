"""What every rule is: metadata beside the code, a typed config, canonical tables in, hits out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pandas as pd

from spendwatch.findings import Hit, Severity
from spendwatch.records import Tables

from ..features import Features


@dataclass(frozen=True)
class RuleConfig:
    """Base of every rule's config. `belief` is the hit's mass on abuse at full strength."""

    enabled: bool = True


class Rule:
    """A detector: `Rule(config).run(tables, features)` returns hits; it keeps no state between runs.

    Subclasses set the class attributes below and say in their docstring what they catch and what they miss.
    `severity` is what the rule's hit gives alone after fusion (the fusion cut-offs decide the real one).
    """

    id: ClassVar[str]
    title: ClassVar[str]
    severity: ClassVar[Severity]
    technique: ClassVar[str]  # MITRE ATT&CK technique id
    family: ClassVar[str]  # fusion counts one hit per family (one fact is not evidence twice)
    config_type: ClassVar[type[RuleConfig]]

    def __init__(self, config: RuleConfig | None = None) -> None:
        self.config = config if config is not None else self.config_type()
        if not isinstance(self.config, self.config_type):
            raise TypeError(f"rule {self.id}: config must be {self.config_type.__name__}")

    def run(self, tables: Tables, features: Features | None = None) -> list[Hit]:
        if not self.config.enabled:
            return []
        try:
            return self.hits(tables, features if features is not None else Features(tables))
        except Exception as exc:  # re-raise with the rule named, so a scan log says which rule broke
            raise RuntimeError(f"while running rule {self.id}: {exc}") from exc

    def hits(self, tables: Tables, features: Features) -> list[Hit]:
        raise NotImplementedError


def fmt_time(value: object) -> str:
    """Short UTC time for evidence sentences."""
    strftime = getattr(value, "strftime", None)
    return strftime("%Y-%m-%d %H:%M UTC") if strftime is not None else "?"


def fmt_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def none_if_na(value: object) -> str | None:
    """A cell as str, or None where it is missing (NaN, NA, None)."""
    return None if value is None or bool(pd.isna(value)) else str(value)  # type: ignore[call-overload]
