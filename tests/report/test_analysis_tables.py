"""Which config keys are a matrix's axes, for the seeds, comparison and profile tables."""

from __future__ import annotations

from bench.report.analysis import parse_target, varying_axes


def _summary(model: str, optimizer: str, seed: int, **extra) -> dict:
    config = {"model": model, "optimizer": optimizer, "seed": seed, "lr": 0.003, "checkpoint": True,
              "tie_weights": model == "gpt1", **extra}
    return {"config": config, "status": "ok", "best_val_loss": 2.0}


def test_axes_skip_seed_operational_keys_component_only_keys_and_dependent_keys():
    cells = [_summary("gpt1", "adam", 0, betas=[0.9, 0.999], checkpoint=False),
             _summary("lstm", "sgd", 1), _summary("gpt1", "sgd", 2), _summary("lstm", "adam", 0, betas=[0.9, 0.95])]
    # betas: only Adam cells have it; tie_weights: fixed by model; checkpoint: operational; seed: averaged over.
    assert varying_axes(cells) == ["model", "optimizer"]


def test_targets_parse_as_loss_or_perplexity():
    assert parse_target("1.5") == 1.5 and parse_target(None) is None
    assert abs(parse_target("ppl=4.0") - 1.3862943611198906) < 1e-12
