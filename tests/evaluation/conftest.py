"""A small HellaSwag file in the official jsonl schema, and a strictly offline Hugging Face stack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# Official keys, in the official order. The texts carry WikiHow-style "[header]"/"[title]"
# markers and lower-case ctx_b fragments so that lm-eval's preprocessing has work to do.
ITEMS = [
    ("Roof shingle removal", "A man is sitting on a roof.", "he",
     ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
      "is holding a rubik's cube.", "starts pulling up roofing on a roof."], 3),
    ("Making a cake", "[header] How to bake a cake [title] Preheat the oven.", "",
     ["[step] Mix flour and sugar in a bowl.", "Sing loudly to the oven.",
      "The cake is a lie [substeps] really.", "Paint the kitchen blue."], 0),
    ("Washing dishes", "A woman stands at a sink full of dishes.", "she",
     ["turns on the water and scrubs a plate.", "flies away on a broom.",
      "eats the sponge.", "throws the plates out of the window."], 0),
    ("Walking the dog", "A boy holds a leash attached to a small dog.", "the dog",
     ["barks and runs along the sidewalk.", "reads a newspaper.",
      "drives a car down the road.", "bakes a loaf of bread."], 0),
    ("Playing guitar", "A man sits on a stool with a guitar on his lap. He tunes the strings.", "then he",
     ["strums a chord and starts to sing.", "eats the guitar.",
      "paints the stool red.", "jumps into a swimming pool."], 0),
    ("Cleaning windows", "[title] Spray the glass with cleaner. [step] Wipe in circles.", "",
     ["Dry the window with a soft cloth.", "Throw the cloth on the roof.",
      "Plant a tree in the cloth.", "Eat the cleaner."], 0),
]


def hellaswag_record(index: int, item) -> dict:
    label, ctx_a, ctx_b, endings, gold = item
    return {"ind": index, "activity_label": label, "ctx_a": ctx_a, "ctx_b": ctx_b,
            "ctx": f"{ctx_a} {ctx_b}".strip(), "split": "val", "split_type": "indomain",
            "label": gold, "endings": endings, "source_id": f"test~{index}"}


def write_hellaswag(data_dir: Path, items=ITEMS) -> Path:
    path = data_dir / "hellaswag" / "hellaswag_val.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(hellaswag_record(i, item)) + "\n" for i, item in enumerate(items)))
    return path


@pytest.fixture
def offline_hf(monkeypatch, tmp_path):
    """No network for `datasets`/`huggingface_hub`, and no fallback to the user's own data folder."""
    import datasets.config
    import huggingface_hub.constants

    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(name, "1")
    # Both libraries read the variables once at import; set the values they already read too.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture
def hellaswag_data(offline_hf, monkeypatch, tmp_path) -> Path:
    """BENCH_DATA_DIR holding hellaswag/hellaswag_val.jsonl with :data:`ITEMS`; returns the file."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("BENCH_DATA_DIR", str(data_dir))
    return write_hellaswag(data_dir)


TEXT = "The quick brown fox jumps over the lazy dog. A man is sitting on a roof.\n"
MATRIX = """
name = "hs"
[defaults]
optimizer = "adamw"
seq_len = 16
batch_size = 4
max_steps = 6
steps_per_epoch = 3
log_every = 3
n_layer = 1
n_embd = 16
n_hidden = 16
n_head = 2
n_positions = 32
vocab_size = 16
train_tokens = 2000
valid_tokens = 300
test_tokens = 300

[matrix]
include = [
  {{ model = "gpt2-tiny", dataset = "text", tokenizer = "byte", train_path = "{train}", valid_path = "{valid}", test_path = "{test}" }},
  {{ model = "lstm", dataset = "synthetic" }},
]

[eval]
hellaswag = {hellaswag}
limit = 4
batch_size = 3
"""


def write_matrix_files(folder: Path, hellaswag: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, repeats in (("train", 40), ("valid", 4), ("test", 4)):  # short evaluation splits: fast
        paths[split] = folder / f"{split}.txt"
        paths[split].write_text(TEXT * repeats)
    matrix = folder / "hs.toml"
    matrix.write_text(MATRIX.format(hellaswag=str(hellaswag).lower(), **{k: str(v) for k, v in paths.items()}))
    return matrix


def cell_dirs(outputs: Path) -> dict[str, Path]:
    """{"text": dir, "tokens": dir} by the cell's dataset."""
    dirs = {}
    for config in (outputs / "hs").glob("*/config.json"):
        dataset = json.loads(config.read_text())["config"]["dataset"]
        dirs["text" if dataset == "text" else "tokens"] = config.parent
    return dirs


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A finished text cell and a finished token cell, trained once per session."""
    from bench.cli import main

    folder = tmp_path_factory.mktemp("trained")
    outputs = folder / "outputs"
    assert main(["run", str(write_matrix_files(folder, hellaswag=False)), "--device", "cpu",
                 "--outputs", str(outputs)]) == 0
    return cell_dirs(outputs)
