"""The `bench` command line: list, run, report."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from bench.errors import BenchError

DEFAULT_OUTPUTS = "outputs"


def _outputs_root(args: argparse.Namespace) -> str:
    return args.outputs or os.environ.get("BENCH_OUTPUTS") or DEFAULT_OUTPUTS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="show every registered model, optimizer, dataset, tokenizer and schedule")

    run = sub.add_parser("run", help="train every cell of a matrix file")
    run.add_argument("matrix", help="path to a matrix TOML file")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    run.add_argument("--filter", help="key=value[,key=value] or a substring of cell names")
    run.add_argument("--dry-run", action="store_true", help="print the resolved cells; train nothing")
    run.add_argument("--force", action="store_true", help="rerun cells that are already complete")
    run.add_argument("--outputs", help=f"results folder (default: $BENCH_OUTPUTS or ./{DEFAULT_OUTPUTS})")

    report = sub.add_parser("report", help="print tables from finished runs")
    report.add_argument("--matrix", help="matrix name (default: every matrix under the outputs folder)")
    report.add_argument("--sort", default="ppl", help="ppl, time, memory, params or name")
    report.add_argument("--format", default="github", help="github, markdown, latex, html or csv")
    report.add_argument("--outputs", help=f"results folder (default: $BENCH_OUTPUTS or ./{DEFAULT_OUTPUTS})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            from bench.commands import list_components
            return list_components()
        if args.command == "run":
            from bench.commands import run_matrix
            return run_matrix(args.matrix, device=args.device, filter_expr=args.filter, dry_run=args.dry_run,
                              force=args.force, outputs=_outputs_root(args))
        if args.command == "report":
            from bench.commands import report
            return report(outputs=_outputs_root(args), matrix=args.matrix, sort=args.sort, fmt=args.format)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
