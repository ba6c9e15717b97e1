"""The `bench` command line: list, run, report, plot, fit, eval, data."""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from typing import Any, Sequence

from bench.errors import BenchError

DEFAULT_OUTPUTS = "outputs"


def _outputs_root(args: argparse.Namespace) -> str:
    return args.outputs or os.environ.get("BENCH_OUTPUTS") or DEFAULT_OUTPUTS


class _Parser(argparse.ArgumentParser):
    """argparse, except that a misspelt subcommand gets one line with a did-you-mean (exit 2)
    instead of the usage block and the whole list of choices."""

    def error(self, message: str) -> None:  # type: ignore[override]
        commands = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
        wrong = re.match(rf"argument {re.escape(commands.dest)}: invalid choice: '([^']*)'", message) \
            if commands is not None and commands.dest else None
        if commands is None or wrong is None:
            super().error(message)
        names = list(commands.choices)
        match = difflib.get_close_matches(wrong.group(1), names, n=1, cutoff=0.5)
        hint = f"did you mean {match[0]!r}?" if match else f"choose from {', '.join(names)}"
        self.exit(2, f"{self.prog}: error: unknown command {wrong.group(1)!r}; {hint}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bench", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _add_plugin_options(parser, "global_")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_list, _add_keys, _add_run, _add_estimate, _add_report, _add_plot, _add_fit, _add_eval,
                _add_data):
        add(sub)
    return parser


def _version() -> str:
    from bench import __version__
    return __version__


# One pair of functions per subcommand: `_add_X` declares its arguments and names `_X` as the
# handler, which maps them onto bench.commands (imported there, so `bench --help` needs no torch).

def _add_list(sub: argparse._SubParsersAction) -> None:
    listing = sub.add_parser("list", help="show every registered model, optimizer, dataset, tokenizer and schedule")
    listing.add_argument("--verbose", "-v", action="store_true",
                         help="also show every plugin: its module, distribution and whether it loaded")
    _add_plugin_options(listing, "")
    listing.set_defaults(handler=_list)


def _list(args: argparse.Namespace) -> int:
    from bench.commands import list_components
    return list_components(verbose=args.verbose, plugins=_plugin_selection(args))


def _add_keys(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="show every harness key a cell may set, with its default and rule")
    keys.set_defaults(handler=_keys)


def _keys(args: argparse.Namespace) -> int:
    from bench.commands import list_keys
    return list_keys()


def _add_run(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="train every cell of a matrix file")
    _add_plugin_options(run, "")
    run.add_argument("matrix", help="path to a matrix TOML file")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    run.add_argument("--filter", help="key=value[,key=value] or a substring of cell names")
    run.add_argument("--dry-run", action="store_true", help="print the resolved cells; train nothing")
    run.add_argument("--force", action="store_true", help="rerun cells that are already complete")
    run.add_argument("--outputs", help=f"results folder (default: $BENCH_OUTPUTS or ./{DEFAULT_OUTPUTS})")
    run.add_argument("--executor", help="how cells run: local (default) or ray; `bench list` shows every executor")
    run.add_argument("--jobs", type=int, help="cells trained at once (local: worker processes; default 1)")
    run.add_argument("--ray-address", help="Ray cluster to use with --executor ray (default: start a local one)")
    run.add_argument("--tracker", action="append", metavar="NAME", default=[],
                     help="also record every cell with this experiment tracker (tensorboard, wandb, mlflow or a "
                          "plugin's; repeatable); adds to the matrix's `trackers` key")
    run.add_argument("--threads", type=int, help="torch threads per cell on CPU, the same in every executor (results "
                                                 "are bitwise equal across executors at equal threads; default 0: all "
                                                 "cores in this process, a share per --jobs worker, num_cpus on Ray)")
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from bench.commands import run_matrix
    executor = {"name": args.executor or ("ray" if args.ray_address else None), "jobs": args.jobs,
                "address": args.ray_address, "threads": args.threads}
    return run_matrix(args.matrix, device=args.device, filter_expr=args.filter, dry_run=args.dry_run,
                      force=args.force, outputs=_outputs_root(args), executor=executor,
                      plugins=_plugin_selection(args), trackers=args.tracker)


def _add_estimate(sub: argparse._SubParsersAction) -> None:
    estimate = sub.add_parser("estimate", help="time a few real steps of every cell; print hours and dollars")
    _add_plugin_options(estimate, "")
    estimate.add_argument("matrix", help="path to a matrix TOML file")
    estimate.add_argument("--steps", type=int, default=20, help="steps to time per cell (>= 20; default 20)")
    estimate.add_argument("--cost-per-hour", type=float, default=1.50, help="dollars per device hour (default 1.50)")
    estimate.add_argument("--filter", help="key=value[,key=value] or a substring of cell names")
    estimate.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    estimate.add_argument("--outputs", help=f"where estimate.json goes, under <matrix>/ (default: $BENCH_OUTPUTS "
                                            f"or ./{DEFAULT_OUTPUTS})")
    estimate.set_defaults(handler=_estimate)


def _estimate(args: argparse.Namespace) -> int:
    from bench.commands import estimate
    return estimate(args.matrix, device=args.device, filter_expr=args.filter, steps=args.steps,
                    cost_per_hour=args.cost_per_hour, outputs=_outputs_root(args), plugins=_plugin_selection(args))


def _add_report(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="print tables from finished runs")
    report.add_argument("--matrix", help="matrix name (default: every matrix under the outputs folder)")
    report.add_argument("--sort", default="ppl", help="ppl, time, memory, params or name")
    report.add_argument("--format", default="text",
                        help="text (terminal, the default), github, markdown, latex, html, csv or json")
    report.add_argument("--outputs", help=f"results folder (default: $BENCH_OUTPUTS or ./{DEFAULT_OUTPUTS})")
    report.add_argument("--where", action="append", metavar="COND",
                        help="keep cells where key=value (also !=, <, <=, >, >=; comma-separated or repeated), "
                             "e.g. model=lstm,n_layer=1 or best_val_ppl<20")
    report.add_argument("--tables", help="comma-separated subset of perplexity, time, memory, aggregate, params, "
                                         "versions, hellaswag, seeds, time_to_target, fair, target_test, speedup, "
                                         "studies (default: all)")
    report.add_argument("--peak-tflops", type=float, metavar="TFLOPS",
                        help="device peak TFLOP/s for the MFU column, overriding what each cell stored")
    report.add_argument("--plots", metavar="DIR", help="also write loss/perplexity PNGs under DIR/<matrix>/")
    report.add_argument("--best-config", metavar="FILE",
                        help="write the best configuration of a sweep (one per group) as a matrix file and exit: "
                             "only keys that differ from the defaults, named after the sweep so `bench run FILE` "
                             "reuses the cells it already trained")
    report.add_argument("--target", metavar="LOSS",
                        help="time-to-target table against this val loss (or ppl=X for a perplexity); "
                             "overrides the matrix's target_loss/target_ppl")
    report.add_argument("--profiles", action="store_true",
                        help="AlgoPerf performance profiles: a score table and <plots or outputs/plots>/<matrix>/"
                             "performance_profile.png")
    report.add_argument("--algorithm", default="optimizer", metavar="KEY",
                        help="the axis whose values --profiles compares (default optimizer); the other axes "
                             "define the workloads")
    report.add_argument("--measure", default="time", choices=["time", "step", "tokens", "flops"],
                        help="cost to target that --profiles compares (default time: training seconds)")
    report.add_argument("--tolerance", type=float, default=1.02,
                        help="without a given target, --profiles sets each workload's target to this factor "
                             "x the best val loss reached on it (default 1.02)")
    report.add_argument("--alpha", type=float, default=0.05,
                        help="significance level of every pairwise test; Holm-corrected across a table's pairs "
                             "(default 0.05)")
    report.add_argument("--target-alpha", type=float, default=0.01,
                        help="level of the one-sample t test against the target loss (speedrun rule; default 0.01)")
    report.add_argument("--sigma", type=float, default=0.0013,
                        help="known seed-to-seed sd of the val loss for the z rule (default 0.0013)")
    report.add_argument("--z-margin", type=float, default=0.004,
                        help="z rule threshold on (target - mean) x sqrt(n) (default 0.004)")
    report.add_argument("--reference", metavar="VALUE",
                        help="value of --algorithm that speedups are measured against by D_eff / D (default adamw "
                             "when present)")
    report.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from bench.commands import report
    which = [t.strip() for t in args.tables.split(",") if t.strip()] if args.tables else None
    return report(outputs=_outputs_root(args), matrix=args.matrix, sort=args.sort, fmt=args.format,
                  where=args.where, plots=args.plots, peak_tflops=args.peak_tflops, which=which,
                  target=args.target, profiles=args.profiles, algorithm=args.algorithm, measure=args.measure,
                  tolerance=args.tolerance, best_config=args.best_config, alpha=args.alpha,
                  target_alpha=args.target_alpha, sigma=args.sigma, z_margin=args.z_margin, reference=args.reference,
                  plugins=_plugin_selection(args))


def _add_plot(sub: argparse._SubParsersAction) -> None:
    plot = sub.add_parser("plot", help="write loss and perplexity curves of finished runs as PNG files")
    plot.add_argument("--matrix", help="matrix name (default: every matrix under the outputs folder)")
    plot.add_argument("--outputs", help=f"results folder (default: $BENCH_OUTPUTS or ./{DEFAULT_OUTPUTS})")
    plot.add_argument("--out", metavar="DIR", help="where the PNGs go, one folder per matrix "
                                                  "(default: <outputs>/plots)")
    plot.add_argument("--where", action="append", metavar="COND", help="same filters as `bench report --where`")
    plot.set_defaults(handler=_plot)


def _plot(args: argparse.Namespace) -> int:
    from bench.commands import plot
    return plot(outputs=_outputs_root(args), matrix=args.matrix, where=args.where,
                out=args.out or os.path.join(_outputs_root(args), "plots"))


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, e.g. 1e19,1e23") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give positive numbers, e.g. 1e19,1e23")
    return values


def _add_fit(sub: argparse._SubParsersAction) -> None:
    fit = sub.add_parser("fit", help="scaling-law and hyperparameter-transfer fits over finished cells or a "
                                     "file of runs")
    kind = fit.add_subparsers(dest="fit_kind", required=True)
    isoflop = kind.add_parser("isoflop", help="CS336 IsoFLOP fit (N_opt, D_opt power laws) and Chinchilla's "
                                              "parametric L(N, D)")
    hparam = kind.add_parser("hparam", help="best hyperparameter per scale, its power law and extrapolation")
    for parser in (isoflop, hparam):
        parser.add_argument("matrix", nargs="?",
                            help="a matrix file (its results are read) or a matrix name under the outputs")
        parser.add_argument("--from", dest="from_file", metavar="FILE",
                            help="fit a .csv or .json file of runs instead of a matrix's results")
        parser.add_argument("--outputs", help=f"results folder (default: $BENCH_OUTPUTS or ./{DEFAULT_OUTPUTS})")
        parser.add_argument("--where", action="append", metavar="COND", help="same filters as `bench report --where`; "
                            "with --from they test the file's columns, e.g. experiment=NAME")
        parser.add_argument("--out", metavar="DIR", help="where the PNG goes (default: <outputs>/plots/<matrix>/)")
        parser.add_argument("--loss-column", metavar="NAME",
                            help="--from: the loss column (default final_loss or loss)")
    isoflop.add_argument("--budgets", default="1e19,1e23,1e24", type=_floats,
                         help="comma-separated compute budgets (FLOPs) to extrapolate to (default 1e19,1e23,1e24)")
    isoflop.add_argument("--n", dest="size", default="params", choices=["params", "non_embedding_params"],
                         help="which parameter count is N (default params: all parameters)")
    isoflop.add_argument("--method", choices=["vertex", "min"],
                         help="N_opt per budget: vertex (parabola minimum) or min (lowest-loss run); default both, "
                              "side by side")
    isoflop.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    isoflop.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    isoflop.add_argument("--params-column", metavar="NAME",
                         help="--from: parameter count N (default parameters, params)")
    isoflop.add_argument("--tokens-column", metavar="NAME",
                         help="--from: training tokens D (default tokens; absent: D = C / 6N)")
    isoflop.add_argument("--budget-column", metavar="NAME",
                         help="--from: compute budget C (default compute_budget, budget; absent: C = 6ND)")
    isoflop.set_defaults(handler=_fit_isoflop)
    hparam.add_argument("--x", required=True, help="the scale each group of cells shares: params, "
                        "non_embedding_params, tokens or flops (with --from: a column)")
    hparam.add_argument("--y", required=True, help="the hyperparameter (a config key, or with --from a column), "
                        "e.g. lr or batch_size")
    hparam.add_argument("--at", type=float, help="extrapolate the fitted value to this scale")
    hparam.set_defaults(handler=_fit_hparam)


def _fit_source(args: argparse.Namespace) -> dict[str, Any]:
    if (args.matrix is None) == (args.from_file is None):
        raise BenchError("give either a matrix (its finished cells are fitted) or --from FILE (a .csv or .json of "
                         "runs), not both and not neither")
    return {"matrix": args.matrix, "from_file": args.from_file, "outputs": _outputs_root(args), "where": args.where,
            "out": args.out}


def _fit_isoflop(args: argparse.Namespace) -> int:
    from bench.fit_command import fit_isoflop
    columns = {"params": args.params_column, "tokens": args.tokens_column, "budget": args.budget_column,
               "loss": args.loss_column}
    return fit_isoflop(**_fit_source(args), budgets=args.budgets, size=args.size, bootstrap=args.bootstrap,
                       seed=args.seed, methods=(args.method,) if args.method else ("vertex", "min"), columns=columns)


def _fit_hparam(args: argparse.Namespace) -> int:
    from bench.fit_command import fit_hparam
    return fit_hparam(**_fit_source(args), x=args.x, y=args.y, at=args.at, loss_column=args.loss_column)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser("eval", help="score finished cells on downstream benchmarks (lm-eval)")
    benchmark = evaluate.add_subparsers(dest="benchmark", required=True)
    hellaswag = benchmark.add_parser("hellaswag", help="re-score a finished cell's best weights on HellaSwag")
    hellaswag.add_argument("--run", required=True, metavar="CELL_DIR", help="a cell folder, outputs/<matrix>/<cell-id>")
    hellaswag.add_argument("--limit", type=int, default=0, help="score the first N items only (default 0: all)")
    hellaswag.add_argument("--batch-size", type=int, default=16, help="requests per forward pass (default 16)")
    hellaswag.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    hellaswag.add_argument("--log-samples", action="store_true",
                           help="also keep per-item results in CELL_DIR/hellaswag_samples.jsonl")
    _add_plugin_options(hellaswag, "")
    hellaswag.set_defaults(handler=_eval_hellaswag)


def _eval_hellaswag(args: argparse.Namespace) -> int:
    from bench.commands import eval_hellaswag
    return eval_hellaswag(run=args.run, limit=args.limit, batch_size=args.batch_size, device=args.device,
                          plugins=_plugin_selection(args), log_samples=args.log_samples)


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="prepare your own data: tokenize files into token shards")
    action = data.add_subparsers(dest="data_action", required=True)
    prep = action.add_parser(
        "prepare", help="tokenize text, JSONL or Parquet files into llm.c token shards plus manifest.json",
        description="Tokenize text (.txt: a file is a document), JSONL (one object per line, its --field) or "
                    "Parquet (its --field column) files, or folders of them, plain or .gz/.zst, into llm.c shards "
                    "and a manifest.json that `dataset = \"token-files\"` with `manifest = \"OUT\"` reads. "
                    "Streams; resumable: run the same command again after an interruption.")
    prep.add_argument("inputs", nargs="*", metavar="INPUT", help="train inputs: files or folders")
    prep.add_argument("--out", required=True, metavar="DIR", help="output folder (new, or one this command made)")
    prep.add_argument("--train", nargs="+", default=[], metavar="INPUT", help="more train inputs")
    prep.add_argument("--valid", nargs="+", default=[], metavar="INPUT", help="inputs of the valid split")
    prep.add_argument("--test", nargs="+", default=[], metavar="INPUT", help="inputs of the test split")
    prep.add_argument("--valid-docs", type=int, default=0, metavar="N",
                      help="hold out the first N documents of the train inputs as the valid split")
    prep.add_argument("--test-docs", type=int, default=0, metavar="N",
                      help="hold out the next N documents as the test split")
    prep.add_argument("--field", default="text", help="JSONL field / Parquet column holding the text (default text)")
    prep.add_argument("--tokenizer", default="gpt2", help="any tokenizer plugin (default gpt2; `bench list`)")
    prep.add_argument("--workers", type=int, default=None,
                      help="tokenizing processes (default: the CPUs this process may use)")
    prep.add_argument("--shard-tokens", default="100M", metavar="N",
                      help="tokens per shard, e.g. 100M (default, as llm.c), 1e6, 50000")
    prep.add_argument("--hf", metavar="NAME[:CONFIG]",
                      help="a Hugging Face dataset as the train input, streamed (needs bench-lm[hf])")
    prep.add_argument("--hf-split", default="train", help="the split of --hf to read (default train)")
    prep.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _add_plugin_options(prep, "")
    prep.set_defaults(handler=_data_prepare)


def _data_prepare(args: argparse.Namespace) -> int:
    from bench.data.prepare_command import default_workers, run_prepare
    return run_prepare(out=args.out, train=args.inputs + args.train, valid=args.valid, test=args.test,
                       field=args.field, tokenizer=args.tokenizer, workers=args.workers or default_workers(),
                       shard_tokens=args.shard_tokens, valid_docs=args.valid_docs, test_docs=args.test_docs,
                       hf=args.hf, hf_split=args.hf_split, plugins=_plugin_selection(args),
                       progress=not args.no_progress)


def _add_plugin_options(parser: argparse.ArgumentParser, prefix: str) -> None:
    """Accepted before the subcommand and after it (argparse keeps the two places in separate lists)."""
    group = parser.add_argument_group("plugins")
    group.add_argument("--disable-plugin", action="append", metavar="NAME", dest=f"{prefix}disable_plugin", default=[],
                       help="do not load this plugin (an entry-point or distribution name; repeatable; "
                            "also $BENCH_DISABLE_PLUGINS=name,...)")
    group.add_argument("--plugin", action="append", metavar="MODULE", dest=f"{prefix}plugin", default=[],
                       help="load this module or entry point as a plugin (repeatable); with "
                            "$BENCH_DISABLE_PLUGIN_AUTOLOAD=1 only these (and the built-ins) load")


def _plugin_selection(args: argparse.Namespace) -> Any:
    from bench.registry import PluginSelection
    return PluginSelection.from_options(args.global_disable_plugin + getattr(args, "disable_plugin", []),
                                        args.global_plugin + getattr(args, "plugin", []))


# What a process killed by SIGPIPE reports to its shell (128 + 13), as `yes | head` does.
BROKEN_PIPE_EXIT = 141


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.handler(args)
        sys.stdout.flush()  # inside the try: a reader that left (`bench report | head`) shows up here
        return code
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _discard_stdout()
        return BROKEN_PIPE_EXIT
    except KeyboardInterrupt:  # a second Ctrl-C; the first one's checkpoint still resumes the cell
        print("\nbench: interrupted", file=sys.stderr)
        return 130


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush of what is still buffered does not
    fail again on the closed pipe (and print "Exception ignored ... BrokenPipeError")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real file descriptor behind stdout (e.g. captured in tests)
        pass


if __name__ == "__main__":
    sys.exit(main())
