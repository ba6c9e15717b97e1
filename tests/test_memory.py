"""The memory sampler: its arithmetic, its thread's lifecycle and its behaviour when NVML fails.

NVML is injected as a small object with pynvml's function names so the real probe and sampler
code runs without a GPU; the real library is exercised when a GPU is present.
"""

from __future__ import annotations

import gc
import itertools
import os
import threading
from types import SimpleNamespace

import pynvml
import pytest
import torch

from bench import memory
from bench.memory import MemorySampler, NvmlProbe, RssProbe, RunningStat

MIB = 2**20


class FakeNvml:
    """pynvml's surface as NvmlProbe uses it, with scripted readings and failures."""

    class NVMLError(Exception):
        pass

    def __init__(self, *, pid: int, process_mib=(100, 300, 200), fail_after: int | None = None,
                 broken_queries=(), uuid_works: bool = True):
        self.pid = pid
        self._process = itertools.cycle(process_mib)
        self._util = itertools.cycle((10, 90, 50))
        self.fail_after = fail_after
        self.broken_queries = set(broken_queries)
        self.uuid_works = uuid_works
        self.reads = 0
        self.process_values: list[float] = []
        self.util_values: list[float] = []
        self.init_calls = self.shutdown_calls = 0
        self.opened_by: str | None = None
        for name in memory._PROCESS_QUERIES:
            setattr(self, name, self._make_query(name))

    def nvmlInit(self):
        self.init_calls += 1

    def nvmlShutdown(self):
        self.shutdown_calls += 1

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if not self.uuid_works:
            raise self.NVMLError("Not Found")
        self.opened_by = "uuid"
        return "handle"

    def nvmlDeviceGetHandleByIndex(self, index):
        self.opened_by = f"index {index}"
        return "handle"

    def nvmlDeviceGetName(self, handle):
        return b"NVIDIA H100 80GB HBM3"

    def _make_query(self, name):
        def query(handle):
            if name in self.broken_queries:
                raise self.NVMLError("Function Not Found")
            self.reads += 1
            if self.fail_after is not None and self.reads > self.fail_after:
                raise self.NVMLError("GPU is lost")
            mine = next(self._process) * MIB
            self.process_values.append(float(mine))
            # Two entries for our PID (two contexts) and one of another process, which must be ignored.
            return [SimpleNamespace(pid=self.pid, usedGpuMemory=mine / 2),
                    SimpleNamespace(pid=self.pid, usedGpuMemory=mine / 2),
                    SimpleNamespace(pid=self.pid + 1, usedGpuMemory=10_000 * MIB)]
        query.__name__ = name
        return query

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=4096 * MIB, total=81559 * MIB)

    def nvmlDeviceGetUtilizationRates(self, handle):
        value = next(self._util)
        self.util_values.append(float(value))
        return SimpleNamespace(gpu=value, memory=0)


def test_running_stat_mean_and_peak_skip_missing_readings():
    stat = RunningStat()
    assert stat.mean is None and stat.peak is None
    for value in (3.0, None, 1.0, 8.0, None):
        stat.add(value)
    assert stat.count == 3
    assert stat.mean == pytest.approx(4.0)
    assert stat.peak == 8.0


def test_nvml_probe_sums_this_process_entries_only():
    fake = FakeNvml(pid=os.getpid(), process_mib=(300,))
    probe = NvmlProbe(fake, uuid="GPU-1234")
    fake.process_values.clear()  # the probe tried its query once while opening
    reading = probe.read()
    assert reading["process_bytes"] == 300 * MIB  # both of our contexts, not the other PID's 10 GB
    assert reading["device_used_bytes"] == 4096 * MIB
    assert reading["gpu_util_pct"] in (10.0, 90.0, 50.0)
    assert fake.opened_by == "uuid"
    assert "NVIDIA H100 80GB HBM3" in probe.source and "_v3" in probe.source
    probe.close()
    assert fake.shutdown_calls == 1


def test_nvml_probe_falls_back_to_older_query_and_to_the_index():
    fake = FakeNvml(pid=os.getpid(), broken_queries={"nvmlDeviceGetComputeRunningProcesses_v3"},
                    uuid_works=False)
    probe = NvmlProbe(fake, index=2, uuid="GPU-1234")
    assert fake.opened_by == "index 2"
    assert "nvmlDeviceGetComputeRunningProcesses_v2" in probe.source
    assert probe.read()["process_bytes"] is not None


def test_nvml_probe_reports_none_when_our_pid_is_not_listed():
    # In a container the driver lists host PIDs; we must not claim another process's memory.
    fake = FakeNvml(pid=os.getpid() + 7)
    reading = NvmlProbe(fake).read()
    assert reading["process_bytes"] is None
    assert reading["device_used_bytes"] == 4096 * MIB


def test_sampler_mean_and_peak_are_those_of_every_reading_taken():
    fake = FakeNvml(pid=os.getpid())
    probe = NvmlProbe(fake)
    fake.process_values.clear()
    fake.util_values.clear()
    sampler = MemorySampler([probe], interval_s=0.005)
    sampler.start()
    assert sampler.running
    threading.Event().wait(0.05)
    result = sampler.stop()
    assert not sampler.running
    assert result["samples"] >= 2  # one at start, one at stop, whatever the scheduler did between
    assert result["samples"] == len(fake.process_values)
    values = fake.process_values
    assert result["process_bytes_mean"] == pytest.approx(sum(values) / len(values))
    assert result["process_bytes_peak"] == max(values)
    assert result["gpu_util_pct_mean"] == pytest.approx(sum(fake.util_values) / len(fake.util_values))
    assert result["sources"]["nvml"].startswith("NVML (")
    assert result["sampler_cpu_s"] >= 0  # the thread's own CPU time, measured as it exits
    assert fake.shutdown_calls == 1
    assert sampler.stop() == result  # stopping twice changes nothing


def test_sampler_survives_nvml_failing_mid_run_and_keeps_the_other_probes():
    # Read 1 is the probe's opening check, read 2 the sample at start; whichever comes next fails.
    fake = FakeNvml(pid=os.getpid(), fail_after=2)
    sampler = MemorySampler([NvmlProbe(fake), RssProbe()], interval_s=0.002)
    sampler.start()
    threading.Event().wait(0.05)
    result = sampler.stop()
    assert "GPU is lost" in result["errors"]["nvml"]
    assert result["process_bytes_peak"] is not None  # the readings before the failure are kept
    assert result["rss_bytes_peak"] > 0 and result["samples"] >= 2
    assert fake.shutdown_calls == 1


def test_sampler_lifecycle_errors_and_unstarted_result():
    sampler = MemorySampler([RssProbe()], interval_s=0.01)
    assert sampler.result()["samples"] == 0
    assert sampler.stop()["samples"] == 0  # never started: nothing to stop
    with pytest.raises(ValueError):
        MemorySampler([], interval_s=0)
    started = MemorySampler([RssProbe()], interval_s=0.01).start()
    with pytest.raises(RuntimeError, match="twice"):
        started.start()
    started.stop()


def test_stopping_an_unstarted_sampler_releases_nvml():
    fake = FakeNvml(pid=os.getpid())
    assert MemorySampler([NvmlProbe(fake)]).stop()["samples"] == 0
    assert fake.init_calls == fake.shutdown_calls == 1


def test_dropped_sampler_stops_its_thread():
    # A cell that raises never reaches stop(); losing the sampler must end the thread anyway.
    sampler = MemorySampler([RssProbe()], interval_s=0.01).start()
    thread = sampler._thread
    del sampler
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_cell_sampler_without_nvml_keeps_training_and_says_why(monkeypatch):
    def init_fails():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    # Fault injected into the real pynvml module, so the real import and init path runs.
    monkeypatch.setattr(pynvml, "nvmlInit", init_fails)
    monkeypatch.setattr(memory, "_torch_uuid", lambda index: None)
    sampler = memory.cell_sampler(torch.device("cuda", 0), interval_s=0.01)
    result = sampler.start().stop()
    assert "unavailable" in result["sources"]["nvml"] and "Driver" in result["sources"]["nvml"]
    assert result["rss_bytes_mean"] > 0


def test_run_memory_on_cpu_names_rss_as_the_source():
    sampled = memory.start_sampling(torch.device("cpu"), interval_ms=10).stop()
    figures = memory.run_memory(torch.device("cpu"), sampled)
    assert figures["source"].startswith("process RSS")
    assert figures["rss_mean_bytes"] > 0 and figures["rss_sampled_peak_bytes"] >= figures["rss_mean_bytes"]
    assert figures["rss_peak_bytes"] > 0 and figures["nvml_process_peak_bytes"] is None
    assert figures["samples"] >= 2 and figures["interval_ms"] == 10
    assert "getrusage" in figures["sources"]["os_peak"]


def test_disabled_sampling_records_nothing_and_says_so():
    sampled = memory.start_sampling(torch.device("cpu"), interval_ms=0).stop()
    assert sampled["samples"] == 0 and "disabled" in sampled["sources"]["sampler"]
    assert memory.run_memory(torch.device("cpu"), sampled)["source"].startswith("getrusage")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device and its NVML")
def test_real_nvml_sees_this_process_allocation():
    device = torch.device("cuda", 0)
    block = torch.empty(256 * MIB, dtype=torch.uint8, device=device)
    torch.cuda.synchronize(device)
    sampled = memory.start_sampling(device, interval_ms=20)
    threading.Event().wait(0.2)
    figures = memory.run_memory(device, sampled.stop())
    assert figures["nvml_device_used_peak_bytes"] >= 256 * MIB
    assert figures["allocated_peak_bytes"] >= 256 * MIB
    if figures["nvml_process_peak_bytes"] is not None:  # None where NVML lists host PIDs (containers)
        assert figures["nvml_process_peak_bytes"] >= 256 * MIB
    assert memory.device_name(device, sampled.result())
    del block
