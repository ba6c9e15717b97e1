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

Batching: requests are sorted by total length (longest first, so similar lengths share a
batch and little padding is wasted), right-padded to the longest row of their batch, and
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

from typing import Any

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from bench.evaluate import autocast_context

UNBOUNDED_MAX_LENGTH = 1024

# One tokenized request: ((context, continuation) strings or None, context ids, continuation ids).
TokenRequest = tuple[Any, list[int], list[int]]


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
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        # Longest first: similar lengths share a batch, and an out-of-memory error shows at once.
        order = sorted(range(len(requests)), key=lambda i: -(len(requests[i][1]) + len(requests[i][2])))
        bar = tqdm(total=len(requests), desc="bench loglikelihood", disable=disable_tqdm or not self.progress)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            for index, score in zip(chunk, self._score_batch([requests[i] for i in chunk])):
                results[index] = score
                strings = requests[index][0]
                if strings is not None:  # rolling windows carry no strings and are cached by their caller
                    self.cache_hook.add_partial("loglikelihood", strings, score)
            bar.update(len(chunk))
        bar.close()
        return results  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole strings, in lm-eval's disjoint rolling windows of ``max_length``."""
        windows: list[TokenRequest] = []
        owners: list[int] = []
        for owner, (string,) in enumerate(req.args for req in requests):
            token_windows = get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1)
            for context, continuation in map(make_disjoint_window, token_windows):
                windows.append((None, context, continuation))
                owners.append(owner)
        totals = [0.0] * len(requests)
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
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

    def _model_input(self, context: list[int], continuation: list[int]) -> list[int]:
        if not context:
            raise ValueError("a request needs at least one context token (lm-eval supplies the prefix "
                             "token for an empty context)")
        if len(continuation) > self.max_length:
            raise ValueError(f"a continuation of {len(continuation)} tokens cannot be scored within "
                             f"max_length {self.max_length}")
        return (context + continuation)[-(self.max_length + 1):][:-1]

    @torch.no_grad()
    def _score_batch(self, batch: list[TokenRequest]) -> list[tuple[float, bool]]:
        inputs = [self._model_input(context, continuation) for _, context, continuation in batch]
        width = max(len(row) for row in inputs)
        padded = torch.full((len(inputs), width), self._prefix_token, dtype=torch.long)
        rows, positions, targets = [], [], []
        for row, (tokens, (_, _, continuation)) in enumerate(zip(inputs, batch)):
            padded[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            # The logits at input position p predict token p + 1: the continuation's n tokens are
            # predicted by the last n real positions of the row.
            first = len(tokens) - len(continuation)
            rows += [row] * len(continuation)
            positions += range(first, len(tokens))
            targets += continuation
        rows_t = torch.tensor(rows, dtype=torch.long, device=self._device)
        with autocast_context(self._device, self.dtype):
            logits = self.model(padded.to(self._device))
        # Only the continuation positions go through log-softmax: for a 50k vocabulary the full
        # (B, T, V) log-probabilities would double the memory of the forward pass.
        picked = logits[rows_t, torch.tensor(positions, device=self._device)].float()
        targets_t = torch.tensor(targets, dtype=torch.long, device=self._device)
        token_logprobs = picked.log_softmax(dim=-1).gather(1, targets_t[:, None]).squeeze(1)
        misses = (picked.argmax(dim=-1) != targets_t).to(torch.float64)
        sums = torch.zeros(len(batch), 2, dtype=torch.float64, device=self._device)
        sums.index_add_(0, rows_t, torch.stack([token_logprobs.double(), misses], dim=1))
        sums = sums.cpu()  # the one device-to-host copy of this batch
        return [(float(total), bool(missed == 0)) for total, missed in sums.tolist()]
