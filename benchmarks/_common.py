"""Helpers shared by the benchmark scripts: machine description, markdown tables, timing, peak memory.

Not part of grpo_lib: these scripts measure it. Every script prints plain markdown (a header of `#`
lines naming the machine, then tables), so its output can be pasted into docs/performance.md as is.

Peak memory on CPU. `tracemalloc` does not see torch's allocations, and torch has no CPU counterpart of
`torch.cuda.max_memory_allocated`. We read the kernel's resident-set high-water mark instead:

    peak = VmHWM after the call - VmRSS before it        (both from /proc/self/status)

after resetting VmHWM to the current RSS (`echo 5 > /proc/self/clear_refs`, Linux >= 4.0). Two things
make this honest for tensors: the worker process is started with `MALLOC_MMAP_THRESHOLD_=65536`, so
glibc serves every allocation above 64 KiB with its own mmap and returns it to the kernel on free (no
freed memory is silently reused from the heap, which would hide it), and torch writes every element of
an op's output, so allocated pages are resident pages. Where the peak cannot be reset, the first call's
peak is used (`peak_source` says which).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

GIB = 2**30
MIB = 2**20

WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
"""environment for a measuring subprocess: every allocation over 64 KiB is its own mmap (see above)"""


# --- the machine ---------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ('unknown' elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    """CPU cores this process may run on (the affinity mask, else os.cpu_count())."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_average() -> str:
    """The 1/5/15-minute load averages, as `uptime` shows them."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_lines(device: str = "cpu", threads: str | None = None) -> list[str]:
    """`#` header lines: date, CPU model and cores, GPU (if used), Python / torch / transformers, load.

    threads: how to describe the torch threads (default: this process's torch.get_num_threads()).
    """
    import torch
    import transformers

    lines = [
        f"# date (UTC): {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M')}",
        f"# CPU: {cpu_model()}, {usable_cores()} usable cores; torch threads per process: "
        f"{threads if threads is not None else torch.get_num_threads()}",
    ]
    if device.startswith("cuda"):
        lines.append(f"# GPU: {torch.cuda.get_device_name(device)}")
    lines.append(f"# python {platform.python_version()}, torch {torch.__version__}, "
                 f"transformers {transformers.__version__}")
    lines.append(f"# load average at start (1/5/15 min): {load_average()}")
    return lines


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'; a CUDA request on a machine without CUDA is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise SystemExit(f"--device must be auto, cpu or cuda[:K], got {device!r}")
    return device


# --- tables ---------------------------------------------------------------------------------------
def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; every row must have one cell per header."""
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row {row!r} has {len(row)} cells for {len(headers)} headers")
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def fmt_bytes(n: float) -> str:
    """Bytes as GiB (>= 1 GiB) or MiB."""
    return f"{n / GIB:.2f} GiB" if abs(n) >= GIB else f"{n / MIB:.1f} MiB"


# --- time ----------------------------------------------------------------------------------------
def timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None] | None = None) -> list[float]:
    """Wall seconds of `repeats` calls of fn (sync, e.g. torch.cuda.synchronize, before each clock read)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return times


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


# --- CPU memory ----------------------------------------------------------------------------------
def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_bytes() -> int | None:
    """Current resident set size (VmRSS) in bytes, None where /proc is missing."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb * 1024


def hwm_bytes() -> int | None:
    """Resident set high-water mark (VmHWM) in bytes."""
    kb = _status_kb("VmHWM")
    return None if kb is None else kb * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_peak_bytes(fn: Callable[[], object]) -> tuple[int | None, str, float]:
    """One call of fn: (peak resident bytes above the level before the call, how it was measured, seconds)."""
    import gc

    gc.collect()
    reset = reset_peak_rss()
    base = rss_bytes()
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    peak = hwm_bytes()
    if base is None or peak is None:
        return None, "unavailable", seconds
    return max(0, peak - base), "VmHWM-VmRSS (reset)" if reset else "VmHWM-VmRSS (not reset)", seconds
