"""Built-in executors: ``local`` (this machine) and ``ray`` (a Ray cluster; needs the ``ray`` extra)."""

from __future__ import annotations

from bench import Component, hookimpl


def _local(**options):
    from bench.executors.local import LocalExecutor
    return LocalExecutor(**options)


def _ray(**options):
    from bench.executors.ray import RayExecutor  # imports Ray itself only when a run uses it
    return RayExecutor(**options)


@hookimpl
def bench_executors():
    return [
        Component("local", _local, {"jobs": 1, "threads": 0},
                  "cells in this process, or `jobs` worker processes (one GPU, or a share of the CPU cores, each); "
                  "threads > 0: every cell trains with that many torch threads"),
        Component("ray", _ray, {"address": "", "jobs": 0, "num_cpus": 1.0, "num_gpus": -1.0, "retries": 1,
                                   "threads": 0},
                  "each cell a Ray task; address '' starts a local cluster; num_gpus -1: 1 if the cluster has GPUs; "
                  "threads 0: num_cpus torch threads"),
    ]
