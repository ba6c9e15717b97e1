"""`--where` filters for reports and plots: ``key OP value`` conditions, all of which must hold.

Keys are a cell's config keys (``model``, ``optimizer``, ``n_layer``, ``lr``, ...), ``layers``
(= ``n_layer``), ``name``, ``status``, ``id``, or any number in its summary
(``best_val_ppl``, ``train_time_s``, ...). OP is one of ``= != < <= > >=``; values compare as
numbers when both sides are numbers (so ``lr=3e-3`` matches 0.003), else as text.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Iterable

from bench.errors import BenchError
from bench.store import ResultStore, matrix_names

_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(!=|<=|>=|=|<|>)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Condition:
    key: str
    op: str
    value: str

    def holds(self, fields: dict[str, Any]) -> bool:
        actual = fields.get(self.key)
        if actual is None:
            return self.op == "!=" and self.value.lower() not in ("none", "null", "-")
        left, right = _number(actual), _number(self.value)
        if left is not None and right is not None:
            return _compare(left, self.op, right)
        if self.op in ("=", "!="):
            return (str(actual) == self.value) == (self.op == "=")
        raise BenchError(f"--where {self.key}{self.op}{self.value}: {self.op} needs numbers, "
                         f"but {self.key} is {actual!r}; use = or != for text")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _compare(left: float, op: str, right: float) -> bool:
    return {"=": left == right, "!=": left != right, "<": left < right, "<=": left <= right,
            ">": left > right, ">=": left >= right}[op]


def parse_where(expressions: Iterable[str] | None) -> list[Condition]:
    conditions = []
    for expression in expressions or []:
        for part in expression.split(","):
            if not part.strip():
                continue
            match = _CONDITION.match(part)
            if not match or not match.group(3):
                raise BenchError(f"--where {part.strip()!r}: write key=value (or !=, <, <=, >, >=), "
                                 "several separated by commas, e.g. --where model=lstm,n_layer=1")
            conditions.append(Condition(*match.groups()))
    return conditions


def cell_fields(summary: dict[str, Any]) -> dict[str, Any]:
    """What a condition can look at in one cell summary."""
    config = summary.get("config") or {}
    scalars = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
    return {**scalars, **config, "layers": config.get("n_layer")}


def filter_summaries(summaries: list[dict[str, Any]], expressions: Iterable[str] | None) -> list[dict[str, Any]]:
    conditions = parse_where(expressions)
    if not conditions:
        return summaries
    fields = [cell_fields(s) for s in summaries]
    known = set().union(*fields) if fields else set()
    for condition in conditions:
        if condition.key not in known:
            close = difflib.get_close_matches(condition.key, sorted(known), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else "use a config key such as model or optimizer"
            raise BenchError(f"--where: no cell has a field {condition.key!r}; {hint}")
    return [s for s, f in zip(summaries, fields) if all(c.holds(f) for c in conditions)]


def matrix_summaries(outputs: str, matrix: str | None, where: list[str] | None) -> dict[str, list[dict]]:
    """Summaries of each requested matrix, after --where; errors when there is nothing to show."""
    names = [matrix] if matrix else matrix_names(outputs)
    if not names:
        raise BenchError(f"no results under {outputs!r}; run `bench run MATRIX` first")
    selected = {}
    for name in names:
        summaries = ResultStore(outputs, name).summaries()
        if not summaries:
            raise BenchError(f"no results for matrix {name!r} under {outputs!r}; known: "
                             f"{', '.join(matrix_names(outputs)) or 'none'}")
        selected[name] = filter_summaries(summaries, where)
    if where and not any(selected.values()):
        raise BenchError(f"--where {' '.join(where)!r} matches no cell; loosen the condition")
    return {name: summaries for name, summaries in selected.items() if summaries}
