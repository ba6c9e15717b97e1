"""Memory and utilisation of a training run, sampled in the background, each figure labelled
with where it came from.

A :class:`MemorySampler` thread reads a few probes every ``interval_s`` while a cell trains:

* :class:`NvmlProbe` (CUDA runs): this process's GPU memory as the driver sees it (the
  compute-process list, matched on our PID), the device's used memory and GPU utilisation.
* :class:`RssProbe` (always): the process's resident set size from ``/proc/self/statm``.

:func:`cell_sampler` builds the right probes for a device. NVML being absent, failing to
start or failing mid-run never raises: the probe is dropped and the reason is kept in the
result, so the report can say why a figure is missing. Next to the sampled figures the
result carries the torch allocator peaks (CUDA) or the OS lifetime peak RSS (getrusage).
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch

DEFAULT_INTERVAL_S = 0.1
_PROCESS_QUERIES = ("nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2",
                    "nvmlDeviceGetComputeRunningProcesses")


@dataclass
class RunningStat:
    """Mean and peak of a stream of readings without storing them; ``None`` readings are skipped."""

    count: int = 0
    total: float = 0.0
    peak: float | None = None

    def add(self, value: float | None) -> None:
        if value is None:
            return
        self.count += 1
        self.total += value
        self.peak = value if self.peak is None else max(self.peak, value)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


class Probe(Protocol):
    name: str
    source: str

    def read(self) -> dict[str, float | None]: ...

    def close(self) -> None: ...


class RssProbe:
    """Resident set size of this process, read from procfs (Linux); cheap enough for 10 Hz."""

    name = "rss"
    source = "process RSS from /proc/self/statm"

    def __init__(self, statm_path: str = "/proc/self/statm"):
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        # Kept open: one pread per sample instead of open/read/close, each of which would
        # hand the GIL back and forth with the training thread.
        self._fd: int | None = os.open(statm_path, os.O_RDONLY)
        try:
            self.read()  # fail here (OSError, ValueError) rather than in the sampling thread
        except BaseException:
            self.close()
            raise

    def read(self) -> dict[str, float | None]:
        if self._fd is None:
            raise OSError("RssProbe is closed")
        resident_pages = int(os.pread(self._fd, 256, 0).split()[1])
        return {"rss_bytes": resident_pages * self._page}

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class NvmlProbe:
    """One GPU through NVML. ``nvml`` is the pynvml module, or an object with the same functions
    (tests inject one to exercise the arithmetic and the error paths without a GPU)."""

    name = "nvml"

    def __init__(self, nvml: Any, *, index: int = 0, uuid: str | None = None, pid: int | None = None):
        self._nvml = nvml
        self.pid = os.getpid() if pid is None else pid
        nvml.nvmlInit()
        try:
            self.handle, how = self._open(index, uuid)
            name = nvml.nvmlDeviceGetName(self.handle)
            self.device_name = name.decode() if isinstance(name, bytes) else str(name)
            self._query = self._process_query()
        except BaseException:
            nvml.nvmlShutdown()
            raise
        self.source = f"NVML ({self.device_name}, {how}, {self._query.__name__})"

    def _open(self, index: int, uuid: str | None) -> tuple[Any, str]:
        # torch's cuda:N is renumbered by CUDA_VISIBLE_DEVICES, NVML's index is not: the UUID
        # names the same board in both.
        if uuid:
            try:
                return self._nvml.nvmlDeviceGetHandleByUUID(uuid), "matched by UUID"
            except Exception:  # noqa: BLE001 - fall back to the index, said so in the source
                pass
        return self._nvml.nvmlDeviceGetHandleByIndex(index), f"NVML index {index}"

    def _process_query(self) -> Callable[[Any], list]:
        # Newer drivers answer the _v3 call, older ones only _v2 or the unversioned one.
        last_error: Exception | None = None
        for name in _PROCESS_QUERIES:
            query = getattr(self._nvml, name, None)
            if query is None:
                continue
            try:
                query(self.handle)
                return query
            except Exception as exc:  # noqa: BLE001 - try the next variant
                last_error = exc
        raise RuntimeError(f"no NVML compute-process query works here: {last_error}")

    def read(self) -> dict[str, float | None]:
        nvml = self._nvml
        mine = [p.usedGpuMemory for p in self._query(self.handle) if p.pid == self.pid]
        known = [m for m in mine if m is not None]
        return {
            # None when the driver does not list us (another PID namespace) or hides the figure.
            "process_bytes": float(sum(known)) if known else None,
            "device_used_bytes": float(nvml.nvmlDeviceGetMemoryInfo(self.handle).used),
            "gpu_util_pct": float(nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu),
        }

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutting down a broken library is not worth a crash
            pass


class _Sampling:
    """State shared with the thread. The thread holds this, not the sampler, so dropping the
    sampler (a cell that raised before ``stop``) lets ``__del__`` end the thread."""

    def __init__(self, probes: list[Probe]):
        self.probes = list(probes)
        self.stats: dict[str, RunningStat] = {}
        self.errors: dict[str, str] = {}
        self.samples = 0
        self.thread_cpu_s: float | None = None
        self.stop = threading.Event()
        # Re-entrant: a garbage collection inside sample_once may run the finalizer on this thread.
        self.lock = threading.RLock()

    def sample_once(self) -> None:
        with self.lock:
            for probe in list(self.probes):
                try:
                    readings = probe.read()
                except Exception as exc:  # noqa: BLE001 - measurement must never end a run
                    self.errors[probe.name] = f"{type(exc).__name__}: {exc}"
                    self.probes.remove(probe)
                    probe.close()
                    continue
                for key, value in readings.items():
                    self.stats.setdefault(key, RunningStat()).add(value)
            self.samples += 1

    def loop(self, interval_s: float) -> None:
        while not self.stop.wait(interval_s):
            self.sample_once()
        self.thread_cpu_s = time.thread_time()  # the sampler's own cost, reported with its figures


class MemorySampler:
    """Samples its probes every ``interval_s`` on a daemon thread between ``start`` and ``stop``.

    One sample is taken synchronously at ``start`` and one at ``stop``, so even a run shorter
    than the interval has a mean and a peak. ``stop`` returns :meth:`result`.
    """

    def __init__(self, probes: list[Probe], interval_s: float = DEFAULT_INTERVAL_S,
                 notes: dict[str, str] | None = None):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s
        self.sources = {p.name: p.source for p in probes}
        self.notes = dict(notes or {})
        self._state = _Sampling(probes)
        self._thread: threading.Thread | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> MemorySampler:
        if self._thread is not None:
            raise RuntimeError("MemorySampler.start() called twice; use a new sampler per run")
        self._state.sample_once()
        self._thread = threading.Thread(target=self._state.loop, args=(self.interval_s,),
                                        name="bench-memory-sampler", daemon=True)
        self._finalizer = weakref.finalize(self, _halt, self._state, self._thread)
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        if self._finalizer is not None and self._finalizer.alive:
            self._finalizer()  # stops and joins the thread, takes the last sample, closes the probes
        elif self._thread is None:
            for probe in self._state.probes:  # never started: release NVML all the same
                probe.close()
            self._state.probes.clear()
        return self.result()

    def __enter__(self) -> MemorySampler:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def result(self) -> dict[str, Any]:
        """Mean and peak of every reading, the sample count, and where each figure came from."""
        state = self._state
        with state.lock:
            figures: dict[str, Any] = {"samples": state.samples, "interval_ms": round(self.interval_s * 1000, 3),
                                       "sampler_cpu_s": state.thread_cpu_s}
            for key, stat in state.stats.items():
                figures[f"{key}_mean"] = stat.mean
                figures[f"{key}_peak"] = stat.peak
            figures["sources"] = {**self.sources, **self.notes}
            if state.errors:
                figures["errors"] = dict(state.errors)
            return figures


def _halt(state: _Sampling, thread: threading.Thread) -> None:
    state.stop.set()
    if thread is not threading.current_thread():
        thread.join()
    state.sample_once()  # the final reading, taken after the last training step
    for probe in state.probes:
        probe.close()
    state.probes.clear()


def nvml_module() -> Any:
    import pynvml  # nvidia-ml-py; imported late so a broken install only loses the NVML figures

    return pynvml


def cell_sampler(device: torch.device, interval_s: float = DEFAULT_INTERVAL_S,
                 nvml_loader: Callable[[], Any] = nvml_module) -> MemorySampler:
    """The sampler for a training run on ``device``; never raises for missing NVML or procfs."""
    probes: list[Probe] = []
    notes: dict[str, str] = {}
    if device.type == "cuda":
        try:
            index = device.index if device.index is not None else torch.cuda.current_device()
            uuid = _torch_uuid(index)
            probes.append(NvmlProbe(nvml_loader(), index=index, uuid=uuid))
        except Exception as exc:  # noqa: BLE001 - no NVML: keep training, say why
            notes["nvml"] = f"unavailable: {type(exc).__name__}: {exc}".splitlines()[0][:200]
    try:
        probes.append(RssProbe())
    except (OSError, ValueError, IndexError) as exc:
        notes["rss"] = f"unavailable: {type(exc).__name__}: {exc}"
    return MemorySampler(probes, interval_s, notes)


def _torch_uuid(index: int) -> str | None:
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    return f"GPU-{uuid}" if uuid is not None else None


def start_sampling(device: torch.device, interval_ms: float) -> MemorySampler:
    """A started sampler for one cell's training; ``interval_ms = 0`` gives one that never
    samples (for measuring the sampler's own overhead, or when every thread counts)."""
    if interval_ms <= 0:
        return MemorySampler([], notes={"sampler": "disabled (memory_interval_ms = 0)"})
    return cell_sampler(device, interval_ms / 1000).start()


def device_name(device: torch.device, sampled: dict[str, Any]) -> str | None:
    """The GPU's name as NVML reported it while sampling, else as torch reports it; None on CPU."""
    source = (sampled.get("sources") or {}).get("nvml", "")
    if source.startswith("NVML ("):
        return source[len("NVML ("):].split(",")[0]
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return None


# -- allocator and OS peaks -----------------------------------------------------------------


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def os_peak_rss_bytes() -> int:
    # ru_maxrss is KiB on Linux and bytes on macOS; it is the whole process's lifetime peak,
    # so for the second cell of a matrix it may still be the first cell's.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def run_memory(device: torch.device, sampled: dict[str, Any]) -> dict[str, Any]:
    """The ``memory`` entry of a cell summary: sampled figures plus allocator/OS peaks, with a
    ``source`` naming the figure the tables treat as the cell's memory."""
    figures = {k: v for k, v in sampled.items() if k not in ("sources", "errors")}
    sources = dict(sampled.get("sources") or {})
    out: dict[str, Any] = {
        "nvml_process_mean_bytes": figures.get("process_bytes_mean"),
        "nvml_process_peak_bytes": figures.get("process_bytes_peak"),
        "nvml_device_used_mean_bytes": figures.get("device_used_bytes_mean"),
        "nvml_device_used_peak_bytes": figures.get("device_used_bytes_peak"),
        "gpu_util_mean_pct": figures.get("gpu_util_pct_mean"),
        "gpu_util_peak_pct": figures.get("gpu_util_pct_peak"),
        "rss_mean_bytes": figures.get("rss_bytes_mean"),
        "rss_sampled_peak_bytes": figures.get("rss_bytes_peak"),
        "rss_peak_bytes": os_peak_rss_bytes(),
        "samples": figures.get("samples"),
        "interval_ms": figures.get("interval_ms"),
        "sampler_cpu_s": figures.get("sampler_cpu_s"),
    }
    if device.type == "cuda":
        try:
            out["allocated_peak_bytes"] = torch.cuda.max_memory_allocated(device)
            out["reserved_peak_bytes"] = torch.cuda.max_memory_reserved(device)
            sources["allocator"] = "torch.cuda.max_memory_allocated / max_memory_reserved"
        except RuntimeError as exc:  # a failed cell may leave the CUDA context unusable
            sources["allocator"] = f"unavailable: {exc}".splitlines()[0][:200]
    sources["os_peak"] = "getrusage ru_maxrss (process lifetime peak)"
    if out["nvml_process_peak_bytes"] is not None:
        out["source"] = "NVML process memory"
    elif device.type == "cuda":
        out["source"] = "torch.cuda allocator (NVML process figure unavailable)"
    elif out["rss_mean_bytes"] is not None:
        out["source"] = "process RSS (CPU run, no GPU memory)"
    else:
        out["source"] = "getrusage ru_maxrss (CPU run, lifetime peak only)"
    out["sources"] = sources
    if sampled.get("errors"):
        out["errors"] = dict(sampled["errors"])
    return out
