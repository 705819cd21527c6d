"""The format-free pieces a report is made of: tables, bar charts and load curves."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    params: str = ""               # the parameters printed beside the results
    notes: list[str] = field(default_factory=list)
    key: str = ""                  # machine name (workload.name, "alloc", "seeds" ...)


@dataclass
class Chart:
    title: str
    unit: str
    labels: list[str]
    values: list[float]
    key: str = ""


@dataclass
class Curve:
    """Throughput versus clients for one bench: one line per backend."""

    title: str
    series: dict[str, list[tuple[int, float]]]
