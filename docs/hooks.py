"""MkDocs hooks: reference tables generated from bench's own code at build time, so the pages can
never drift from it. A page asks for one with a marker line such as ``<!-- bench:keys -->``."""

from __future__ import annotations

import argparse
import re
from typing import Any

MARKER = re.compile(r"^<!-- bench:(\w+) -->$", re.MULTILINE)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def harness_keys() -> str:
    """Every key of bench.schema.TRAINER_KEYS: default, rule, meaning, and whether it is part of a cell's id."""
    from bench.cells import LATER_KEY_NEUTRALS, OPERATIONAL_KEYS
    from bench.schema import TRAINER_KEYS

    rows = ["| key | default | allowed | meaning | in the cell id |", "|---|---|---|---|---|"]
    for name, key in TRAINER_KEYS.items():
        identity = ("no (operational)" if name in OPERATIONAL_KEYS else
                    f"yes, except at {LATER_KEY_NEUTRALS[name]!r}" if name in LATER_KEY_NEUTRALS else "yes")
        rows.append(f"| `{name}` | `{key.default!r}` | {_cell(key.requirement or 'any')} | {_cell(key.help)} "
                    f"| {identity} |")
    return "\n".join(rows)


def _actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {}


def _command(lines: list[str], path: str, parser: argparse.ArgumentParser, summary: str) -> None:
    subs = _subparsers(parser)
    lines.append(f"### `{path}`\n")
    if summary:
        lines.append(summary + "\n")
    actions = _actions(parser)
    if actions:
        lines.append("| argument | default | help |")
        lines.append("|---|---|---|")
        for action in actions:
            name = ", ".join(action.option_strings) or action.dest
            takes_value = bool(action.option_strings) and action.nargs != 0
            metavar = action.metavar or (action.dest.upper() if takes_value else "")
            shown = f"{name} {metavar}".strip() if takes_value else name
            default = "" if action.default in (None, argparse.SUPPRESS, False, []) else f"`{action.default}`"
            if action.choices:
                default += f" (one of {', '.join(map(str, action.choices))})"
            lines.append(f"| `{shown}` | {default} | {_cell(action.help or '')} |")
        lines.append("")
    helps = _helps(parser)
    for name, sub in subs.items():
        _command(lines, f"{path} {name}", sub, helps.get(name, ""))


def cli() -> str:
    """Every command, subcommand and flag, read from bench.cli's argparse parser."""
    from bench.cli import build_parser

    lines: list[str] = []
    _command(lines, "bench", build_parser(), "")
    return "\n".join(lines)


def components() -> str:
    """The built-in components of each kind, as `bench list` shows them."""
    from bench.components import KINDS
    from bench.registry import load_plugins

    registry = load_plugins().registry
    lines = []
    for kind in KINDS:
        lines.append(f"### {kind}s\n")
        lines.append("| name | defaults | description |")
        lines.append("|---|---|---|")
        for entry in registry.entries(kind):
            component = entry.component
            defaults = ", ".join(f"`{k}={v!r}`" for k, v in component.defaults.items()) or "-"
            lines.append(f"| `{component.name}` | {_cell(defaults)} | {_cell(component.description)} |")
        lines.append("")
    return "\n".join(lines)


GENERATORS = {"keys": harness_keys, "cli": cli, "components": components}


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    def expand(match: re.Match) -> str:
        generator = GENERATORS.get(match.group(1))
        if generator is None:
            raise ValueError(f"unknown reference marker {match.group(0)}; known: {', '.join(GENERATORS)}")
        return generator()
    return MARKER.sub(expand, markdown)
