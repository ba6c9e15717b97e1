"""An lm-evaluation-harness model backed by any registered bench model and its tokenizer.

:class:`BenchLM` subclasses lm-eval's ``TemplateLM`` (itself an ``lm_eval.api.model.LM``), so
lm-eval's own code turns ``(context, continuation)`` strings into token ids: trailing spaces of
the context move into the continuation, the pair is encoded as one string and split where the
context's encoding ends, and an empty context becomes the prefix token. Scores are therefore
computed exactly as lm-eval's Hugging Face backend would compute them for the same tokenizer.

Scoring rules (the same as lm-eval's ``HFLM`` for causal models):

* the model reads ``(context + continuation)[-(max_length + 1):][:-1]``: a context too long for
  the model loses tokens on the left, never the continuation;
* the log-likelihood of a request is the sum of ``log_softmax`` over the continuation tokens,
  and ``is_greedy`` says whether every continuation token is the argmax of its logits.

One extension: a continuation longer than ``max_length`` (which ``HFLM`` refuses) is scored in
consecutive windows of at most ``max_length`` predicted tokens, the last window first, each
window reading the ``max_length`` tokens before its last target. Every continuation token is
still scored exactly once, with as much left context as a window holds; a small model with a
short context (a byte-level GPT with 64 positions, say) can thus still take HellaSwag.

Batching: windows are sorted by length (longest first, so similar lengths share a batch and
little padding is wasted), right-padded to the longest row of their batch, and
scored with one forward pass per batch. Right padding is safe for every causal model (a
transformer's mask and a recurrent model's left-to-right scan both keep later positions out of
earlier outputs), so no attention mask is needed. Results come back in request order.

The prefix token (the stand-in context of an empty-context request, and the first input of
``loglikelihood_rolling``) is the tokenizer's end-of-text token, as in lm-eval's ``HFLM``; a
tokenizer without one (``byte``) uses the encoding of ``"\\n"``, the nearest thing to a document
boundary in plain text.

Models without a context limit (``context_length is None``, e.g. the LSTM) are evaluated with
``max_length`` :data:`UNBOUNDED_MAX_LENGTH` unless the caller passes another: long enough for any
HellaSwag item, short enough to bound the memory of one batch.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from bench.accel import autocast_context
from bench.lm import Head, HiddenAfter, prefix_reader, split

UNBOUNDED_MAX_LENGTH = 1024

# One tokenized request: ((context, continuation) strings or None, context ids, continuation ids).
TokenRequest = tuple[Any, list[int], list[int]]
# What one row of a batch scores: the model's input ids and the ids its last positions must predict.
Window = tuple[list[int], list[int]]


class BenchLM(TemplateLM):
    """Score text with a bench ``LanguageModel`` through lm-eval's ``LM`` interface.

    ``model`` is moved to ``device`` (default: where its parameters already are) and put in eval
    mode. ``batch_size`` is the number of requests per forward pass. ``dtype`` is the cell's
    compute dtype (``"float32"`` or ``"bfloat16"`` autocast); log-softmax is always float32.
    """

    backend = "causal"

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, batch_size: int = 16,
                 max_length: int | None = None, device: str | torch.device | None = None,
                 dtype: str = "float32", progress: bool = False) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        limit = getattr(model, "context_length", None)
        max_length = max_length or limit or UNBOUNDED_MAX_LENGTH
        if limit is not None and max_length > limit:
            raise ValueError(f"max_length {max_length} exceeds the model's context length {limit}")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self._device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self._device).eval()
        # Not `self.tokenizer`: lm-eval reads Hugging Face attributes (chat templates, pad
        # tokens) from an attribute of that name.
        self.text_tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = int(max_length)
        self.dtype = dtype
        self.progress = progress
        eot = getattr(tokenizer, "eot_token", None)
        self._prefix_token = eot if eot is not None else tokenizer.encode("\n")[0]

    # -- what TemplateLM needs -----------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self._prefix_token

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        # bench tokenizers add no special tokens, so the flag has nothing to switch.
        return list(self.text_tokenizer.encode(string))

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm or not self.progress)

    def _loglikelihood_tokens(self, requests: list[TokenRequest], disable_tqdm: bool = False,
                              **kwargs) -> list[tuple[float, bool]]:
        totals = [0.0] * len(requests)
        greedy = [True] * len(requests)  # an empty continuation is trivially greedy
        groups, rest = self._shared_contexts(requests)
        windows: list[Window] = []
        owners: list[int] = []
        for owner in rest:
            _, context, continuation = requests[owner]
            for window in self.windows(context, continuation):
                windows.append(window)
                owners.append(owner)
        bar = tqdm(total=len(windows) + sum(map(len, groups.values())), desc="bench loglikelihood",
                   disable=disable_tqdm or not self.progress)
        for prefix, members in groups.items():
            scores = self._score_shared(list(prefix), [requests[owner] for owner in members])
            for owner, (logprob, is_greedy) in zip(members, scores):
                totals[owner], greedy[owner] = logprob, is_greedy
            bar.update(len(members))
        # Longest first: similar lengths share a batch, and an out-of-memory error shows at once.
        order = sorted(range(len(windows)), key=lambda i: -len(windows[i][0]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            for index, (logprob, is_greedy) in zip(chunk, self._score_batch([windows[i] for i in chunk])):
                totals[owners[index]] += logprob
                greedy[owners[index]] &= is_greedy
            bar.update(len(chunk))
        bar.close()
        results = list(zip(totals, greedy))
        for (strings, _, _), score in zip(requests, results):
            if strings is not None:  # rolling windows carry no strings and are cached by their caller
                self.cache_hook.add_partial("loglikelihood", strings, score)
        return results

    def _shared_contexts(self, requests: list[TokenRequest]) -> tuple[dict[tuple[int, ...], list[int]], list[int]]:
        """Requests whose context several continuations share (a HellaSwag item's four endings),
        grouped by the context minus its last token, when the model can read a shared prefix once
        (``hidden_after``) and each request fits one window; the indices of all others."""
        groups: dict[tuple[int, ...], list[int]] = {}
        rest: list[int] = []
        can_share = prefix_reader(self.model) is not None
        for owner, (_, context, continuation) in enumerate(requests):
            fits = len(context) >= 2 and continuation and len(context) + len(continuation) - 1 <= self.max_length
            if can_share and fits:
                groups.setdefault(tuple(context[:-1]), []).append(owner)
            else:
                rest.append(owner)
        rest += [owner for members in groups.values() if len(members) == 1 for owner in members]
        return {prefix: members for prefix, members in groups.items() if len(members) > 1}, sorted(rest)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole strings, in lm-eval's disjoint rolling windows of ``max_length``."""
        pieces: list[TokenRequest] = []
        owners: list[int] = []
        for owner, (string,) in enumerate(req.args for req in requests):
            token_windows = get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1)
            for context, continuation in map(make_disjoint_window, token_windows):
                pieces.append((None, context, continuation))
                owners.append(owner)
        totals = [0.0] * len(requests)
        scores = self._loglikelihood_tokens(pieces, disable_tqdm=disable_tqdm)
        for owner, (logprob, _) in zip(owners, scores):
            totals[owner] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        raise NotImplementedError(
            "bench's lm-eval adapter scores text (loglikelihood and loglikelihood_rolling tasks such "
            "as hellaswag); generation tasks (generate_until) are not supported")

    def get_model_info(self) -> dict[str, Any]:
        return {"bench_model": type(self.model).__name__, "max_length": self.max_length,
                "tokenizer": getattr(self.text_tokenizer, "name", None)}

    # -- scoring -----------------------------------------------------------------------------

    def windows(self, context: list[int], continuation: list[int]) -> list[Window]:
        """The rows that score ``continuation`` after ``context``: one row unless the continuation
        is longer than ``max_length``; none for an empty continuation."""
        if not context:
            raise ValueError("a request needs at least one context token (lm-eval supplies the prefix "
                             "token for an empty context)")
        tokens = context + continuation
        rows: list[Window] = []
        end = len(tokens)
        while end > len(context):
            first = max(len(context), end - self.max_length)  # first target of this window
            # Inputs: the max_length tokens before the last target (fewer at the very start).
            rows.append((tokens[max(0, end - 1 - self.max_length):end - 1], tokens[first:end]))
            end = first
        return rows

    def _continuation_logits(self, padded: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Float32 logits at ``(rows[i], positions[i])``: the head runs at those positions only when
        the model exposes ``hidden`` and ``head`` (with the GPT-2 vocabulary the head is ~94 % of a
        small model's arithmetic and ~2/3 of a HellaSwag batch's positions are context or padding);
        otherwise the full forward pass, whose (B, T, V) logits are dropped at once."""
        parts = split(self.model)
        with autocast_context(self._device, self.dtype):
            if parts is not None:
                hidden, head = parts
                return head(hidden(padded)[rows, positions]).float()
            logits = self.model(padded)
            return logits[rows, positions].float()

    @torch.inference_mode()
    def _score_batch(self, batch: list[Window]) -> list[tuple[float, bool]]:
        width = max(len(inputs) for inputs, _ in batch)
        padded = torch.full((len(batch), width), self._prefix_token, dtype=torch.long)
        rows: list[int] = []
        positions: list[int] = []
        targets: list[int] = []
        for row, (inputs, predicted) in enumerate(batch):
            padded[row, :len(inputs)] = torch.tensor(inputs, dtype=torch.long)
            # The logits at input position p predict token p + 1: the window's n targets are
            # predicted by the last n real positions of the row.
            first = len(inputs) - len(predicted)
            rows += [row] * len(predicted)
            positions += range(first, len(inputs))
            targets += predicted
        rows_t, positions_t = self._on_device(rows), self._on_device(positions)
        picked = self._continuation_logits(padded.to(self._device), rows_t, positions_t)
        return self._reduce(picked, rows_t, self._on_device(targets), len(batch))

    @torch.inference_mode()
    def _score_shared(self, prefix: list[int], requests: list[TokenRequest]) -> list[tuple[float, bool]]:
        """Requests whose contexts all equal ``prefix`` + one token, the prefix read once: row r reads
        the context's last token and its continuation but the last, and predicts the continuation."""
        width = max(len(continuation) for _, _, continuation in requests)
        padded = torch.full((len(requests), width), self._prefix_token, dtype=torch.long)
        rows: list[int] = []
        targets: list[int] = []
        for row, (_, context, continuation) in enumerate(requests):
            padded[row, :len(continuation)] = torch.tensor(context[-1:] + continuation[:-1], dtype=torch.long)
            rows += [row] * len(continuation)
            targets += continuation
        positions = [p for _, _, continuation in requests for p in range(len(continuation))]
        rows_t, positions_t = self._on_device(rows), self._on_device(positions)
        hidden_after, head = cast(tuple[HiddenAfter, Head], prefix_reader(self.model))  # _shared_contexts checked
        with autocast_context(self._device, self.dtype):
            h = hidden_after(self._on_device(prefix)[None], padded.to(self._device))
            picked = head(h[rows_t, positions_t]).float()
        return self._reduce(picked, rows_t, self._on_device(targets), len(requests))

    def _on_device(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self._device)

    def _reduce(self, picked: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor,
                n_rows: int) -> list[tuple[float, bool]]:
        """Per row: the sum of the targets' log-probabilities under ``picked`` (one logits row per
        target) and whether every target was the argmax."""
        token_logprobs = picked.log_softmax(dim=-1).gather(1, targets[:, None]).squeeze(1)
        misses = (picked.argmax(dim=-1) != targets).to(torch.float64)
        sums = torch.zeros(n_rows, 2, dtype=torch.float64, device=self._device)
        sums.index_add_(0, rows, torch.stack([token_logprobs.double(), misses], dim=1))
        sums = sums.cpu()  # the one device-to-host copy of this batch
        return [(float(total), bool(missed == 0)) for total, missed in sums.tolist()]
