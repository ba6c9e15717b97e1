"""`bench fit`: scaling-law and hyperparameter-transfer fits over a matrix's finished cells or a file of
runs. Nothing here imports torch (``bench.commands`` does), so a fit starts quickly."""

from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError


def _fit_summaries(matrix: str, outputs: str, where: list[str] | None) -> tuple[str, list[dict]]:
    """MATRIX is a matrix file (its name picks the results) or a results folder name."""
    from bench.matrix import load_matrix
    from bench.report.select import matrix_summaries
    name = load_matrix(matrix).name if matrix.endswith(".toml") or Path(matrix).is_file() else matrix
    return name, matrix_summaries(outputs, name, where)[name]


def _file_rows(path: str, where: list[str] | None) -> list[dict]:
    """A file's runs that pass --where (tested against its columns)."""
    from bench.fit_input import read_records
    from bench.report.select import parse_where
    rows = read_records(path)
    conditions = parse_where(where)
    kept = [r for r in rows if all(c.holds(r) for c in conditions)]
    if not kept:
        raise BenchError(f"--from {path}: no run passes --where {' '.join(where or [])}")
    return kept


def _plot_path(out: str | None, outputs: str, name: str, file: str) -> Path:
    return Path(out or Path(outputs) / "plots") / name / file


def fit_isoflop(*, matrix: str | None, from_file: str | None, outputs: str, where: list[str] | None,
                budgets: list[float], size: str, bootstrap: int, seed: int, out: str | None,
                methods: tuple[str, ...] = ("vertex", "min"), columns: dict[str, str | None] | None = None) -> int:
    """CS336's IsoFLOP fit (both methods), approach 3 and leave-one-budget-out, over a matrix's finished
    cells or a file of runs."""
    from bench.report import fit_plots, fits
    if bootstrap < 0:
        raise BenchError(f"--bootstrap must be >= 0, got {bootstrap}")
    if from_file:
        from bench.fit_input import isoflop_frame
        cells, how = isoflop_frame(_file_rows(from_file, where), from_file, columns or {})
        name = Path(from_file).stem
        header = f"IsoFLOP fit of {from_file}: {len(cells)} runs, {cells['budget'].nunique()} budgets; {how}."
        result = fits.isoflop_analysis(cells, header, extrapolate=budgets, n_boot=bootstrap, seed=seed, methods=methods)
    else:
        assert matrix is not None
        name, summaries = _fit_summaries(matrix, outputs, where)
        result = fits.isoflop_report(summaries, matrix=name, size=size, extrapolate=budgets, n_boot=bootstrap,
                                     seed=seed, methods=methods)
    path = _plot_path(out, outputs, name, "isoflop.png")
    law = result.parametric.law if result.parametric is not None else None
    fit_plots.save(fit_plots.isoflop_figure(result.cells, result.fits, law,
                                            budgets, f"{name}: IsoFLOP fits"), path)
    print(result.text)
    print(f"\nfigure: {path}")
    return 0


def fit_hparam(*, matrix: str | None, from_file: str | None, outputs: str, where: list[str] | None, x: str, y: str,
               at: float | None, out: str | None, loss_column: str | None = None) -> int:
    """The best value of a hyperparameter at each scale, its power law and its extrapolation."""
    from bench.report import fit_plots, fits
    if from_file:
        from bench.fit_input import hparam_frame
        frame = hparam_frame(_file_rows(from_file, where), from_file, x, y, loss_column)
        name = Path(from_file).stem
        result = fits.hparam_analysis(frame, f"in {from_file}", x=x, y=y, at=at, loss_note="loss = the file's column")
    else:
        assert matrix is not None
        name, summaries = _fit_summaries(matrix, outputs, where)
        result = fits.hparam_report(summaries, matrix=name, x=x, y=y, at=at)
    path = _plot_path(out, outputs, name, f"hparam_{y}_vs_{x}.png")
    fit_plots.save(fit_plots.hparam_figure(result.cells, result.best, result.law, x, y, at,
                                           f"{name}: {y} transfer across {x}"), path)
    print(result.text)
    print(f"\nfigure: {path}")
    return 0
