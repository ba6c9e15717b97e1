"""Progress on the terminal: a live bar on a TTY, plain periodic lines otherwise (CI logs)."""

from __future__ import annotations

import sys
import time

from bench.eta import StepRate, format_duration  # format_duration: also this module's public name
from bench.hookspecs import hookimpl


class ConsoleLogger:
    plain_interval_s = 10.0

    def __init__(self, stream=None):
        self._stream = stream
        self.total_steps = 1
        self.last_plain = 0.0
        self.rate = StepRate()

    @property
    def stream(self):
        return self._stream or sys.stderr  # looked up late so redirected stderr is honoured

    @property
    def live(self) -> bool:
        return self.stream.isatty()

    @hookimpl
    def bench_run_start(self, cell, total_steps):
        self.total_steps = max(total_steps, 1)
        self.last_plain = time.monotonic()
        self.rate = StepRate()  # a fresh start per cell: its warm-up is skipped again
        if not self.live:
            print(f"{cell['name']}: training {total_steps} steps", file=self.stream, flush=True)

    @hookimpl
    def bench_log_step(self, cell, step, metrics):
        fraction = step / self.total_steps
        text = f"step {step}/{self.total_steps} loss {metrics['train_loss']:.4f} lr {metrics['lr']:.2e}"
        text += self._rate(step, metrics["elapsed_s"])
        if self.live:
            filled = int(24 * fraction)
            bar = "#" * filled + "." * (24 - filled)
            print(f"\r  {cell['name']} [{bar}] {text}", end="", file=self.stream, flush=True)
        elif time.monotonic() - self.last_plain >= self.plain_interval_s:
            self.last_plain = time.monotonic()
            print(f"  {cell['name']}: {text}", file=self.stream, flush=True)

    def _rate(self, step: int, elapsed_s: float) -> str:
        """Steps per second of training time (bench.eta.StepRate: warm-up skipped, a few logs first)
        and the time left; fed on every log, shown from the first log once there is a rate."""
        rate = self.rate.log(step, elapsed_s)
        if rate is None:
            return ""
        return f" {rate:.1f} steps/s, {format_duration((self.total_steps - step) / rate)} left"

    @hookimpl
    def bench_evaluation(self, cell, epoch, step, metrics):
        if self.live:
            print("\r\033[K", end="", file=self.stream)
        print(f"  {cell['name']}: epoch {epoch} step {step}: val loss {metrics['loss']:.4f} "
              f"ppl {metrics['ppl']:.2f}", file=self.stream, flush=True)


console = ConsoleLogger()
# pluggy registers this module; the hook implementations live on the instance.
bench_run_start = console.bench_run_start
bench_log_step = console.bench_log_step
bench_evaluation = console.bench_evaluation
