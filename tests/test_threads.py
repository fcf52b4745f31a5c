"""grpo_lib.threads: the default thread count follows the usable cores and gives cores back to other programs.

Unit tests drive the governor with hand-made CPU readings (the arithmetic of choice 2, checked by hand);
one test reads the real /proc/stat beside a real busy loop; one runs the tiny preset at 1 and 2 threads and
checks the claim the module's docstring makes (same metrics, same weights).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from grpo_lib import threads
from grpo_lib.threads import CpuSample, ThreadGovernor, read_cpu_sample, start_threads, threads_for


@pytest.fixture(autouse=True)
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_for_gives_a_core_back_per_busy_core_beyond_the_noise_allowance():
    assert [threads_for(x, 2) for x in (0.0, 0.25, 0.26, 0.67, 1.25, 1.26, 5.0)] == [2, 2, 1, 1, 1, 1, 1]
    assert [threads_for(x, 8) for x in (0.0, 0.9, 1.3, 2.6, 7.0, 9.0)] == [8, 7, 6, 5, 1, 1]
    assert threads_for(0.0, 1) == 1


def test_start_threads_divides_the_usable_cores_among_local_processes(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert start_threads(None) == 8
    assert start_threads(None, local_world_size=2) == 4
    assert start_threads(None, local_world_size=16) == 1            # never 0
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert start_threads(None) == 2
    assert start_threads(3) == 3                                      # --num-threads wins
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="num_threads"):
            start_threads(bad)


def test_usable_cores_is_the_affinity_not_the_machine(monkeypatch):
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no sched_getaffinity on this platform")
    assert threads.usable_cores() == len(os.sched_getaffinity(0))
    # a process limited to one core (taskset, a container's cpuset) sees one usable core, whatever the machine has
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert threads.usable_cores() == 1 and start_threads(None) == 1


def test_read_cpu_sample_counts_busy_columns_of_the_watched_cores(tmp_path):
    tick = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    #             user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  999 0 0 0 0 0 0 0 0 0\n"
                    "cpu0 100 10 20 500 30 1 2 3 50 0\n"
                    "cpu1 200 0 40 100 0 0 0 0 0 0\n"
                    "cpu7 1000 0 0 0 0 0 0 0 0 0\n"
                    "intr 12345\nctxt 999\n")
    s = read_cpu_sample(frozenset({0, 1}), str(stat))
    # cpu0: 100+10+20+1+2+3 = 136 busy (idle 500 and iowait 30 are not; guest is already in user); cpu1: 240
    assert s.busy == pytest.approx((136 + 240) / tick)
    assert read_cpu_sample(None, str(stat)).busy == pytest.approx((136 + 240 + 1000) / tick)
    assert s.own > 0 and s.wall > 0
    assert read_cpu_sample(None, str(tmp_path / "missing")) is None


class FakeReadings:
    """CpuSample readings handed out one per call: (wall, busy, own) seconds."""

    def __init__(self, *readings):
        self.readings = [CpuSample(*r) for r in readings]

    def __call__(self):
        return self.readings.pop(0)


def test_the_governor_follows_other_programs_load_between_steps():
    torch.set_num_threads(3)
    gov = ThreadGovernor(max_threads=2, sample=FakeReadings(
        (0.0, 0.0, 0.0),
        (1.0, 2.0, 4 / 3),      # cores saturated, we got 1.33 of them: others held 0.67 -> 1 thread
        (2.0, 4.0, 7 / 3),      # others 1.0 -> still 1
        (2.1, 4.1, 7 / 3),      # 0.1 s: too short to judge -> unchanged, reading kept for the next interval
        (3.0, 6.0, 13 / 3),     # over 1.0 s: busy +2.0, ours +2.0 -> others 0 -> 2 threads
        (4.0, 7.9, 6.0),        # busy +1.9, ours +1.667: others 0.23, within the noise allowance -> 2
    ))
    assert torch.get_num_threads() == 2 and gov.threads == 2          # the start count is set at once
    assert [gov.update() for _ in range(5)] == [1, 1, 1, 2, 2]
    assert gov.others == pytest.approx(0.233, abs=1e-3)
    assert torch.get_num_threads() == 2
    assert gov.summary() == {"num_threads_start": 2, "num_threads_adaptive": True,
                             "steps_at_num_threads": {"1": 3, "2": 2}}
    gov.restore()
    assert torch.get_num_threads() == 3                               # the caller's own count comes back


def test_a_fixed_count_or_no_proc_stat_never_adjusts():
    calls = []
    fixed = ThreadGovernor(max_threads=1, adaptive=False, sample=lambda: calls.append(1) or CpuSample(0, 0, 0))
    assert [fixed.update() for _ in range(3)] == [1, 1, 1] and calls == []
    blind = ThreadGovernor(max_threads=2, sample=lambda: None)       # macOS, Windows: no /proc/stat
    assert not blind.adaptive and [blind.update() for _ in range(2)] == [2, 2]


def test_for_run_adapts_only_a_plain_cpu_process_without_num_threads(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert ThreadGovernor.for_run(None, 1, "cuda:0") is None
    auto = ThreadGovernor.for_run(None, 1, "cpu")
    assert auto.max_threads == 4 and auto.adaptive == (read_cpu_sample() is not None)
    assert not ThreadGovernor.for_run(2, 1, "cpu").adaptive
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    under_torchrun = ThreadGovernor.for_run(None, 2, "cpu")
    assert under_torchrun.max_threads == 2 and not under_torchrun.adaptive


def test_a_busy_program_beside_us_takes_a_thread_away():
    """The real /proc/stat: while a busy loop spins and we sleep, the governor sees about one busy core."""
    if read_cpu_sample() is None or threads.usable_cores() < 2:
        pytest.skip("needs /proc/stat and at least 2 usable cores")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        gov = ThreadGovernor(max_threads=threads.usable_cores())
        time.sleep(1.0)
        gov.update()
    finally:
        busy.kill()
        busy.wait()
    assert gov.others >= 0.75, gov.others                            # the loop held (about) one core
    assert gov.threads <= gov.max_threads - 1


@pytest.mark.skipif(threads.usable_cores() < 2, reason="needs 2 usable cores")
def test_one_and_two_threads_give_the_same_run(tmp_path):
    """What the module docstring claims on this machine: thread count changes speed, not numbers."""
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"t{n}"
        subprocess.run([sys.executable, "-m", "grpo_lib.train", "--preset", "tiny", "--steps", "3", "--eval-n", "8",
                        "--num-threads", str(n), "--output-dir", str(out), "--report-to", "none"],
                       check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        runs[n] = ([{k: v for k, v in r.items() if "seconds" not in k and "per_second" not in k} for r in records],
                   (out / "model" / "model.safetensors").read_bytes(),
                   json.loads((out / "summary.json").read_text()))
    assert runs[1][0] == runs[2][0] and len(runs[1][0]) == 3
    assert runs[1][1] == runs[2][1]                                   # the final weights, byte for byte
    assert runs[1][2]["steps_at_num_threads"] == {"1": 3} and runs[2][2]["steps_at_num_threads"] == {"2": 3}
