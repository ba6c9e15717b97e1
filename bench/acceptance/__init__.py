"""The GPU acceptance checks of ``benchmarks/gpu_acceptance.py``, minus the GPU.

The script measures (on CUDA) and records plain numbers per check; this package turns those
numbers into pass / fail / skip lines (:mod:`bench.acceptance.rules`) and writes the markdown
report (:mod:`bench.acceptance.report`). Nothing here touches a device, so the rules and the
report are tested on recorded numbers on any machine.
"""

from bench.acceptance.report import render_report
from bench.acceptance.rules import CHECKS, Check, Verdict, judge_all

__all__ = ["CHECKS", "Check", "Verdict", "judge_all", "render_report"]
