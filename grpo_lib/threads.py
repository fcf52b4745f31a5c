"""CPU threads for a training run: use every core this process may use, and give cores back when others need them.

A CPU step of the tiny preset is hundreds of small torch ops (a decode step, a forward, a backward). Each op
splits its work across the process's OpenMP threads and waits for all of them. On an idle machine two
threads make a step about 1.3x faster than one (docs/performance.md, "Threads: the default layout"). When
another program holds one of the cores, the op waits for a thread the kernel has descheduled, and a step
gets 2-3x *slower* than with one thread. Letting threads sleep sooner (`OMP_WAIT_POLICY=PASSIVE`) stops the
collapse but costs the idle machine its speed-up (measured in the same table), so neither fixed setting is
right on a laptop where other programs come and go.

The rule here: start with the cores this process may use (`os.sched_getaffinity`, divided among torchrun's
local processes) and, between steps, look at how much CPU *other* programs used on those cores during the
last step (Linux's /proc/stat minus this process's own CPU time). Every core they keep busy is a core fewer
for torch. `--num-threads N` fixes the count (no adjusting). Changing the thread count does not change a
run's numbers on the machines we measured (the tiny preset's metrics and final weights are bit-identical
with 1 and 2 threads: tests/test_threads.py), but a run that must be bit-for-bit reproducible anywhere pins
`--num-threads`.

Choices made here:
1. The default thread count is the cores this process may use (`os.sched_getaffinity`; `os.cpu_count` where
   that does not exist), divided among torchrun's local processes, instead of torch's own default (all
   physical cores of the machine, even those a container or `taskset` does not give us).
2. One plain process adjusts between steps: threads = usable cores - round(other programs' busy cores), with
   a 0.25-core allowance for background noise, never below 1. Measured by the CPU time of the last step's
   interval, not the load average (which lags a minute and counts our own spinning threads). Under torchrun
   the count stays fixed (the sibling ranks' CPU would read as "other programs"); so does a run without
   /proc/stat (macOS, Windows: the start count is kept).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

#: busy cores of other programs that still count as "idle" (daemons, a terminal, the notebook's own kernel)
NOISE_CORES = 0.25


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def start_threads(num_threads: int | None, local_world_size: int | None = None) -> int:
    """Torch threads per process at the start of a run: `num_threads` when given, else the usable cores
    divided by the local processes (torchrun's LOCAL_WORLD_SIZE, 1 without torchrun), at least 1."""
    if num_threads is not None:
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be None or an int >= 1, got {num_threads!r}")
        return num_threads
    if local_world_size is None:
        local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, usable_cores() // max(1, local_world_size))


def threads_for(others_busy_cores: float, max_threads: int) -> int:
    """Threads to use when other programs kept `others_busy_cores` cores busy (choice 2).

    >>> [threads_for(x, 2) for x in (0.0, 0.2, 0.3, 0.67, 1.0, 1.5, 2.0)]
    [2, 2, 1, 1, 1, 1, 1]
    >>> [threads_for(x, 8) for x in (0.0, 1.0, 2.6, 9.0)]
    [8, 7, 5, 1]
    """
    taken = max(0, math.ceil(others_busy_cores - NOISE_CORES))
    return max(1, min(max_threads, max_threads - taken))


@dataclass(frozen=True)
class CpuSample:
    """One reading: wall time, busy seconds of the watched cores (all programs), this process's CPU seconds."""
    wall: float
    busy: float
    own: float


def read_cpu_sample(cores: frozenset[int] | None = None, stat_path: str = "/proc/stat") -> CpuSample | None:
    """Busy CPU seconds of `cores` (all of them when None) from /proc/stat, with this process's CPU time.

    None where /proc/stat cannot be read (macOS, Windows): the caller keeps its thread count. Busy time is
    every /proc/stat column but idle and iowait (user, nice, system, irq, softirq, steal).
    """
    try:
        with open(stat_path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:
            cpu = int(name[3:])
        except ValueError:
            continue
        if cores is not None and cpu not in cores:
            continue
        values = [int(v) for v in rest.split()]
        idle = values[3] + (values[4] if len(values) > 4 else 0)           # idle + iowait
        busy += sum(values[:8]) - idle                                     # guest time is already in user
    t = os.times()
    return CpuSample(wall=time.monotonic(), busy=busy / tick, own=t.user + t.system)


@dataclass
class ThreadGovernor:
    """Sets torch's thread count at the start of a run and (when `adaptive`) between steps.

    `update()` once per step, before sampling: it reads how busy other programs kept this process's cores
    since the last call and sets `torch.set_num_threads(threads_for(...))`. `restore()` puts back the count
    the caller had (a notebook keeps its own). `history` counts the steps run at each thread count.
    """
    max_threads: int
    adaptive: bool = True
    sample: Callable[[], CpuSample | None] | None = None
    min_interval: float = 0.2               # seconds: a shorter interval is too noisy to act on
    threads: int = field(init=False)
    others: float = field(init=False, default=0.0)
    history: dict[int, int] = field(init=False, default_factory=dict)
    _before: int = field(init=False)
    _last: CpuSample | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.sample is None:
            cores = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
            self.sample = lambda: read_cpu_sample(cores)
        self._before = torch.get_num_threads()
        self.threads = self.max_threads
        torch.set_num_threads(self.threads)
        self._last = self.sample() if self.adaptive else None
        if self._last is None:
            self.adaptive = False

    @classmethod
    def for_run(cls, num_threads: int | None, world_size: int, device: str) -> "ThreadGovernor | None":
        """The governor of one run (choices 1-2): None on an accelerator (torch's CPU threads left alone)."""
        if device != "cpu":
            return None
        return cls(max_threads=start_threads(num_threads), adaptive=num_threads is None and world_size == 1)

    def update(self) -> int:
        """Adjust the thread count to the last interval's load (adaptive only); returns the count for this step."""
        if self.adaptive:
            now = self.sample()
            if now is not None and self._last is not None and now.wall - self._last.wall >= self.min_interval:
                interval = now.wall - self._last.wall
                self.others = max(0.0, ((now.busy - self._last.busy) - (now.own - self._last.own)) / interval)
                target = threads_for(self.others, self.max_threads)
                if target != self.threads:
                    torch.set_num_threads(target)
                    self.threads = target
                self._last = now
        self.history[self.threads] = self.history.get(self.threads, 0) + 1
        return self.threads

    def restore(self) -> None:
        """Give the caller back its own thread count."""
        torch.set_num_threads(self._before)

    def summary(self) -> dict:
        """What summary.json records: the start count, whether it adapted, steps run at each count."""
        return {"num_threads_start": self.max_threads, "num_threads_adaptive": self.adaptive,
                "steps_at_num_threads": {str(k): v for k, v in sorted(self.history.items())}}
