"""Counts in words for the lines bench prints: "1 cell", "12 cells"."""


def plural(count: int, noun: str, many: str | None = None) -> str:
    return f"{count} {noun if count == 1 else many or noun + 's'}"
