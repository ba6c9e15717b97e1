"""How a cell's training can end other than by finishing, and the checks that decide it."""

from __future__ import annotations

import math


class Diverged(RuntimeError):
    """The training loss became non-finite, or rose far above what the model should ever reach."""

    def __init__(self, step: int, loss: float, reason: str | None = None):
        super().__init__(reason or f"train loss became {loss} at step {step}")
        self.step = step
        self.loss = loss


class Interrupted(Exception):
    """A graceful stop was requested; the cell saved its state after ``step``."""

    def __init__(self, step: int, cause: str):
        super().__init__(f"stopped by {cause} after step {step}; rerun the same command to resume")
        self.step = step


class Halted(Exception):
    """The cell reached its ``halt_at_step``: validated and checkpointed, ready to be continued."""

    def __init__(self, step: int, validation: dict[str, float]):
        super().__init__(f"halted at step {step} (halt_at_step); rerun with a later halt_at_step to continue")
        self.step = step
        self.validation = validation


def check_divergence(step: int, mean_loss: float, *, floor: float, factor: float, ceiling: float | None) -> None:
    """Raise :class:`Diverged` for a non-finite loss, one above ``ceiling`` (ln(vocab) plus the
    ``divergence_margin``: worse than guessing uniformly by that many nats), or (``factor > 0``)
    one above factor x its running minimum ``floor``."""
    if not math.isfinite(mean_loss):
        raise Diverged(step, mean_loss)
    if ceiling is not None and mean_loss > ceiling:
        raise Diverged(step, mean_loss, f"train loss {mean_loss:.4g} at step {step} is above {ceiling:.4g} "
                                        f"(ln(vocab) + divergence_margin): worse than uniform guessing")
    if factor > 0 and mean_loss > factor * floor:
        raise Diverged(step, mean_loss, f"train loss {mean_loss:.4g} at step {step} exceeds divergence_factor "
                                        f"{factor:g} x its running minimum {floor:.4g}")


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or the CPU allocator's RuntimeError."""
    import torch  # the runner imports this module before torch is needed anywhere else
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
