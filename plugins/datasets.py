"""Built-in datasets: two synthetic token sources with a known floor, and three text corpora.

Token datasets (tag ``"tokens"``, no tokenizer involved)
--------------------------------------------------------

``synthetic`` (the default; needs no files) samples a sparse first-order Markov chain over
``vocab_size`` tokens. Its construction, all from ``numpy.random.Generator(data_seed)``:

1. A random ordering ``o`` of all tokens defines a cycle ``o[0] -> o[1] -> ... -> o[V-1] -> o[0]``;
   every state gets its cycle successor, so every token reaches every other: the chain is
   *irreducible*.
2. State ``o[V-2]`` also gets ``o[0]`` as a successor, closing a second cycle of length ``V-1``.
   Cycle lengths ``V`` and ``V-1`` are coprime, so the chain is *aperiodic*: it has a unique
   stationary distribution ``pi`` and forgets its start state.
3. Every state is topped up to ``branching`` distinct successors with tokens drawn uniformly
   from the rest, never itself (no self-loops: a model must actually track the last token).
4. Each state's ``branching`` transition probabilities are drawn from a symmetric
   ``Dirichlet(alpha)`` (floored at 1e-6 and renormalised, so a tiny ``alpha`` cannot zero out
   the cycle edge and break step 1).

The sequence starts from a draw of ``pi`` (so it is stationary from the first token) and runs
for ``train_tokens + valid_tokens + test_tokens`` steps, cut in that order into the splits.

The floor: for a stationary Markov chain the entropy rate is
``H = sum_s pi(s) * H(P[s, :]) = -sum_s pi(s) sum_t P[s, t] ln P[s, t]`` nats per token, the
expected loss of the true conditional distribution; no model can do better on average, so
``exp(H)`` is the perplexity floor. ``pi`` comes from power iteration on the lazy chain
``(I + P) / 2`` (same ``pi``, guaranteed to converge). A model that conditions on the previous
token can reach the floor, so the gap ``ppl - exp(H)`` measures how much a model left on the table.

``random-tokens`` draws i.i.d. uniform ids from ``{0, ..., k-1}`` (ids ``>= k`` of a larger
``vocab_size`` never occur): nothing is learnable beyond the unigram, entropy rate ``ln k``.
Useful to check that a model reaches ``ppl = k`` and does not overfit noise.

Text datasets (tag ``"text"``, tokenized by the cell's tokenizer)
-----------------------------------------------------------------

``text`` reads three local UTF-8 files named by ``train_path``/``valid_path``/``test_path``.
Every text split is a :class:`bench.data.corpus.TextFile`: it stays on disk and is streamed
through the tokenizer once (the token cache keys it by size, mtime and sampled blocks), so a
text dataset never holds its text as one string.
``wikitext2`` is the *tokenized* WikiText-2 of pytorch/examples' word_language_model (words
separated by spaces, rare words replaced by ``<unk>``; not the raw release usually paired with
GPT-2's BPE: under GPT-2 each ``<unk>`` is three tokens, ~14 % of all tokens). It is tagged
``"words"``, so reports add per-word perplexity (exp of the total NLL over the split's words,
one end-of-line counted per line) that compares with word-level results. ``tinyshakespeare`` is
Karpathy's 1.1 MB ``input.txt``. Both are found through
:func:`bench.data.datadir.locate` (``BENCH_DATA_DIR``) or downloaded and sha256-checked.
tinyshakespeare ships as one file; it is cut into train 90% / valid 5% / test 5% of its
characters, each cut moved forward to just after the next newline so no line is split and the
three splits tile the file exactly. Every text dataset takes ``max_chars`` (0 = everything) to
truncate each split for quick runs (the first ``max_chars`` characters of each split).
"""

from __future__ import annotations

import dataclasses
import math
from bisect import bisect_right
from pathlib import Path

import numpy as np

from bench.components import Component
from bench.data.corpus import Corpus, TextFile
from bench.data.datadir import locate
from bench.data.token_cache import token_dtype
from bench.errors import DataMissingError
from bench.hookspecs import hookimpl

# -- synthetic Markov chain -----------------------------------------------------------------

SYNTHETIC_DEFAULTS = {
    "vocab_size": 64,
    "branching": 4,
    "alpha": 1.0,
    "train_tokens": 200_000,
    "valid_tokens": 20_000,
    "test_tokens": 20_000,
    "data_seed": 0,
}
_MIN_PROB = 1e-6


def markov_chain(
    vocab_size: int, branching: int, alpha: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The sparse transition table: ``succ[s, j]`` is a successor of ``s`` with probability
    ``prob[s, j]``; shapes ``(vocab_size, branching)``. See the module docstring."""
    order = rng.permutation(vocab_size)
    succ = np.empty((vocab_size, branching), dtype=np.int64)
    for i, state in enumerate(order):
        fixed = [order[(i + 1) % vocab_size]]
        if i == vocab_size - 2:
            fixed.append(order[0])  # the (V-1)-cycle that makes the chain aperiodic
        taken = {int(state), *map(int, fixed)}
        need = branching - len(fixed)
        # Draw from the tokens not taken yet, by index into the sorted complement.
        picks = rng.choice(vocab_size - len(taken), size=need, replace=False)
        others = _complement_values(np.sort(picks), sorted(taken))
        succ[state] = np.concatenate([np.asarray(fixed, dtype=np.int64), others])
    prob = rng.dirichlet(np.full(branching, float(alpha)), size=vocab_size)
    prob = np.maximum(prob, _MIN_PROB)
    prob /= prob.sum(axis=1, keepdims=True)
    return succ, prob


def _complement_values(sorted_ranks: np.ndarray, sorted_excluded: list[int]) -> np.ndarray:
    """Map ranks within ``{0..V-1} minus excluded`` back to token ids (O(k log k), not O(V))."""
    values = sorted_ranks.astype(np.int64)
    for ex in sorted_excluded:  # shift past each excluded id at or below the running value
        values = values + (values >= ex)
    return values


def stationary_distribution(succ: np.ndarray, prob: np.ndarray, tol: float = 1e-13) -> np.ndarray:
    """``pi`` with ``pi P = pi``, by power iteration on the lazy chain ``(I + P) / 2``."""
    vocab_size = succ.shape[0]
    pi = np.full(vocab_size, 1.0 / vocab_size)
    flat_succ = succ.ravel()
    for _ in range(1_000_000):
        step = np.bincount(flat_succ, weights=(pi[:, None] * prob).ravel(), minlength=vocab_size)
        new = 0.5 * (pi + step)
        new /= new.sum()
        if np.abs(new - pi).sum() < tol:
            return new
        pi = new
    raise RuntimeError("stationary distribution did not converge")  # unreachable for irreducible chains


def entropy_rate(succ: np.ndarray, prob: np.ndarray, pi: np.ndarray | None = None) -> float:
    """Entropy rate in nats per token: ``sum_s pi(s) * H(P[s, :])``."""
    if pi is None:
        pi = stationary_distribution(succ, prob)
    row_entropy = -(prob * np.log(prob)).sum(axis=1)
    return float(pi @ row_entropy)


def sample_chain(
    succ: np.ndarray, prob: np.ndarray, length: int, start: int, rng: np.random.Generator
) -> np.ndarray:
    """``length`` states following ``start`` (exclusive), by inverse-CDF sampling.

    The uniforms are drawn up front and the loop runs on plain Python lists with
    :func:`bisect.bisect_right`; that is ~0.2 us per step, ~0.1 s for 240k tokens, and
    bit-for-bit reproducible from the seed.
    """
    cdf = np.cumsum(prob, axis=1)
    cdf[:, -1] = 1.0  # guard against rounding: u < 1 must always land on a successor
    cdf_rows, succ_rows = cdf.tolist(), succ.tolist()
    uniforms = rng.random(length).tolist()
    out = [0] * length
    state = start
    for t, u in enumerate(uniforms):
        state = succ_rows[state][bisect_right(cdf_rows[state], u)]
        out[t] = state
    return np.asarray(out, dtype=np.int64)


def synthetic(
    vocab_size: int = 64,
    branching: int = 4,
    alpha: float = 1.0,
    train_tokens: int = 200_000,
    valid_tokens: int = 20_000,
    test_tokens: int = 20_000,
    data_seed: int = 0,
) -> Corpus:
    """A seeded sparse Markov chain with a known perplexity floor (see module docstring)."""
    if vocab_size < 3:
        raise ValueError(f"synthetic: vocab_size must be >= 3, got {vocab_size}")
    if not 2 <= branching <= vocab_size - 1:
        raise ValueError(
            f"synthetic: branching must be in [2, vocab_size-1] = [2, {vocab_size - 1}], got {branching}"
        )
    if not alpha > 0:
        raise ValueError(f"synthetic: alpha must be > 0, got {alpha}")
    sizes = _split_sizes("synthetic", train_tokens, valid_tokens, test_tokens)

    rng = np.random.default_rng(data_seed)
    succ, prob = markov_chain(vocab_size, branching, alpha, rng)
    pi = stationary_distribution(succ, prob)
    h = entropy_rate(succ, prob, pi)
    start = int(rng.choice(vocab_size, p=pi))
    stream = sample_chain(succ, prob, sum(sizes), start, rng).astype(token_dtype(vocab_size))
    return Corpus(
        name="synthetic",
        splits=_cut(stream, sizes),
        vocab_size=vocab_size,
        entropy_rate=h,
        notes={
            "source": (
                f"seeded sparse first-order Markov chain (vocab {vocab_size}, {branching} successors "
                f"per token, Dirichlet({alpha:g}) probabilities, data_seed {data_seed})"
            ),
            "floor": (
                f"perplexity floor = exp(entropy rate) of the generating Markov chain = "
                f"exp({h:.4f}) = {math.exp(h):.3f}"
            ),
        },
    )


# -- i.i.d. uniform tokens -------------------------------------------------------------------


def random_tokens(
    k: int = 8,
    vocab_size: int = 8,
    train_tokens: int = 50_000,
    valid_tokens: int = 10_000,
    test_tokens: int = 10_000,
    data_seed: int = 0,
) -> Corpus:
    """I.i.d. uniform ids in ``{0..k-1}``: entropy rate ``ln k``, nothing else to learn."""
    if k < 1:
        raise ValueError(f"random-tokens: k must be >= 1, got {k}")
    if vocab_size < k:
        raise ValueError(f"random-tokens: vocab_size ({vocab_size}) must be >= k ({k})")
    sizes = _split_sizes("random-tokens", train_tokens, valid_tokens, test_tokens)
    rng = np.random.default_rng(data_seed)
    stream = rng.integers(0, k, size=sum(sizes)).astype(token_dtype(vocab_size))
    h = math.log(k)
    return Corpus(
        name="random-tokens",
        splits=_cut(stream, sizes),
        vocab_size=vocab_size,
        entropy_rate=h,
        notes={
            "source": f"i.i.d. uniform over {{0..{k - 1}}} (vocab {vocab_size}, data_seed {data_seed})",
            "floor": f"perplexity floor = exp(entropy rate) = exp(ln {k}) = {k}",
        },
    )


def _split_sizes(dataset: str, *sizes: int) -> tuple[int, ...]:
    for split, n in zip(("train_tokens", "valid_tokens", "test_tokens"), sizes):
        if int(n) != n or n < 1:
            raise ValueError(f"{dataset}: {split} must be a positive integer, got {n!r}")
    return tuple(int(n) for n in sizes)


def _cut(stream: np.ndarray, sizes: tuple[int, ...]) -> dict[str, np.ndarray]:
    a, b = sizes[0], sizes[0] + sizes[1]
    return {"train": stream[:a], "valid": stream[a:b], "test": stream[b:]}


# -- text corpora ----------------------------------------------------------------------------

_WIKITEXT2_URL = "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2/"
WIKITEXT2_FILES = {
    "wikitext-2/train.txt": (
        _WIKITEXT2_URL + "train.txt",
        "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
    ),
    "wikitext-2/valid.txt": (
        _WIKITEXT2_URL + "valid.txt",
        "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
    ),
    "wikitext-2/test.txt": (
        _WIKITEXT2_URL + "test.txt",
        "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
    ),
}
TINYSHAKESPEARE_FILES = {
    "tinyshakespeare/input.txt": (
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    ),
}
TINYSHAKESPEARE_CUTS = (0.90, 0.95)  # train | valid | test boundaries, as fractions of characters


def _read_text(path: Path) -> str:
    """The file's exact content (no newline translation)."""
    return path.read_bytes().decode("utf-8")


def _truncate(splits: dict[str, TextFile], max_chars: int, dataset: str) -> dict[str, str | TextFile]:
    if int(max_chars) != max_chars or max_chars < 0:
        raise ValueError(f"{dataset}: max_chars must be an integer >= 0 (0 = all), got {max_chars!r}")
    return {name: dataclasses.replace(split, max_chars=int(max_chars)) for name, split in splits.items()}


def text(train_path: str = "", valid_path: str = "", test_path: str = "", max_chars: int = 0) -> Corpus:
    """Three local UTF-8 text files, one per split."""
    splits = {}
    for split, key, value in (
        ("train", "train_path", train_path),
        ("valid", "valid_path", valid_path),
        ("test", "test_path", test_path),
    ):
        if not value:
            raise DataMissingError(
                f"dataset 'text' needs {key} set to a UTF-8 text file for its {split} split "
                f"(add `{key} = \"path/to/{split}.txt\"` to [defaults] or [matrix])"
            )
        path = Path(value).expanduser()
        if not path.is_file():
            raise DataMissingError(f"dataset 'text': {key} {str(path)!r} is not a readable file")
        splits[split] = TextFile(path)
    return Corpus(name="text", splits=_truncate(splits, max_chars, "text"), notes={"source": "local files"})


def wikitext2(max_chars: int = 0) -> Corpus:
    """WikiText-2 as pytorch/examples word_language_model ships it: tokenized words with <unk>."""
    root = locate(list(WIKITEXT2_FILES), dataset="wikitext2", downloads=WIKITEXT2_FILES)
    splits = {split: TextFile(root / "wikitext-2" / f"{split}.txt") for split in ("train", "valid", "test")}
    return Corpus(
        name="wikitext2",
        splits=_truncate(splits, max_chars, "wikitext2"),
        notes={"source": f"WikiText-2 from {root / 'wikitext-2'}"},
    )


def split_at_newlines(content: str, fractions: tuple[float, ...]) -> list[str]:
    """Cut ``content`` at each fraction of its length, moved forward to just after the next
    newline (or to the end). The pieces tile ``content`` exactly, in order."""
    cuts, previous = [], 0
    for fraction in fractions:
        at = max(int(len(content) * fraction), previous)
        newline = content.find("\n", at)
        at = len(content) if newline < 0 else newline + 1
        cuts.append(at)
        previous = at
    bounds = [0, *cuts, len(content)]
    return [content[a:b] for a, b in zip(bounds, bounds[1:])]


def tinyshakespeare(max_chars: int = 0) -> Corpus:
    """Karpathy's tiny Shakespeare, cut 90/5/5 at line boundaries into train/valid/test."""
    root = locate(list(TINYSHAKESPEARE_FILES), dataset="tinyshakespeare", downloads=TINYSHAKESPEARE_FILES)
    path = root / "tinyshakespeare" / "input.txt"
    # The cuts are found on the decoded text (1.1 MB) and kept as byte offsets into the file.
    sizes = [len(part.encode("utf-8")) for part in split_at_newlines(_read_text(path), TINYSHAKESPEARE_CUTS)]
    bounds = [0, sizes[0], sizes[0] + sizes[1], sum(sizes)]
    splits = {split: TextFile(path, start, end) for split, start, end in zip(("train", "valid", "test"), bounds,
                                                                            bounds[1:])}
    return Corpus(
        name="tinyshakespeare",
        splits=_truncate(splits, max_chars, "tinyshakespeare"),
        notes={"source": f"tinyshakespeare/input.txt from {root}, split 90/5/5 at newlines"},
    )


# -- registration ----------------------------------------------------------------------------


@hookimpl
def bench_datasets() -> list[Component]:
    tokens, texts = frozenset({"tokens"}), frozenset({"text"})
    return [
        Component(
            name="synthetic",
            factory=synthetic,
            defaults=SYNTHETIC_DEFAULTS,
            description="seeded sparse Markov chain; known perplexity floor exp(entropy rate); no files",
            tags=tokens,
        ),
        Component(
            name="random-tokens",
            factory=random_tokens,
            defaults={
                "k": 8,
                "vocab_size": 8,
                "train_tokens": 50_000,
                "valid_tokens": 10_000,
                "test_tokens": 10_000,
                "data_seed": 0,
            },
            description="i.i.d. uniform ids over {0..k-1}; floor ppl = k",
            tags=tokens,
        ),
        Component(
            name="text",
            factory=text,
            defaults={"train_path": "", "valid_path": "", "test_path": "", "max_chars": 0},
            description="your own UTF-8 files: train_path, valid_path, test_path",
            tags=texts,
        ),
        Component(
            name="wikitext2",
            factory=wikitext2,
            defaults={"max_chars": 0},
            description="WikiText-2, tokenized with <unk> (pytorch/examples copy) from BENCH_DATA_DIR/wikitext-2/, "
                        "else downloaded; adds per-word perplexity",
            tags=texts | {"words"},
        ),
        Component(
            name="tinyshakespeare",
            factory=tinyshakespeare,
            defaults={"max_chars": 0},
            description="tiny Shakespeare (1.1 MB), split 90/5/5 at line boundaries",
            tags=texts,
        ),
    ]
