"""The tiny preset's training run at each thread layout, on an idle machine and beside a CPU-heavy program.

Each configuration is one real run of the command line (`python -m grpo_lib.train --preset tiny`, or under
`torchrun --nproc_per_node=2` for 2 processes), started fresh; the step time is the median of its
metrics.jsonl's `step_seconds` after the first step (warm-up). "Loaded" runs start a busy loop (one Python
process spinning on one core: what a browser tab, a compile or a second notebook does to a laptop) before the
run and stop it after. OMP_WAIT_POLICY=PASSIVE makes OpenMP's idle threads sleep at once instead of spinning.

Layouts (P x T = processes x torch threads per process):
    auto      the default: the usable cores, fewer while other programs hold cores (grpo_lib.threads)
    1x1, 1x2  one process, --num-threads 1 or 2 (fixed)
    2x1       torchrun, 2 processes of 1 thread (the default under torchrun on 2 cores)

Run:
    python benchmarks/bench_threads.py                  # every layout, idle and loaded, 20 steps (~5 min quiet)
    python benchmarks/bench_threads.py --layouts auto,1x1 --loads loaded --steps 10
    python benchmarks/bench_threads.py --quick          # auto only, idle, 2 steps (tests/test_benchmarks.py)

Read the load average printed before and after: a run beside other programs you did not start is not idle.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, machine_lines, markdown_table  # noqa: E402

LAYOUTS = ("auto", "1x1", "1x2", "2x1")
LOADS = ("idle", "loaded")
BUSY_LOOP = "while True: pass"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/bench_threads.py",
                                description="Step time of the tiny preset's run at each thread layout, idle and "
                                            "beside a CPU-heavy program, with and without OMP_WAIT_POLICY=PASSIVE.")
    p.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated, from {', '.join(LAYOUTS)}")
    p.add_argument("--loads", default=",".join(LOADS), help="comma-separated: idle, loaded")
    p.add_argument("--passive", default="off,on",
                   help="OMP_WAIT_POLICY=PASSIVE: off, on or off,on (default both, for 1x2 and auto only)")
    p.add_argument("--steps", type=int, default=20, help="training steps per run (default 20)")
    p.add_argument("--quick", action="store_true", help="auto only, idle, 2 steps, PASSIVE off (seconds; for the tests)")
    p.add_argument("--json", default=None, help="also write the raw results to this file")
    return p


def command(layout: str, steps: int, out: str) -> list[str]:
    """The command line of one run."""
    base = ["--preset", "tiny", "--steps", str(steps), "--eval-n", "8", "--output-dir", out, "--report-to", "none",
            "--log-every", "1000"]
    if layout == "2x1":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "grpo_lib.train", *base]
    threads = {"auto": [], "1x1": ["--num-threads", "1"], "1x2": ["--num-threads", "2"]}[layout]
    return [sys.executable, "-m", "grpo_lib.train", *base, *threads]


def one_run(layout: str, load: str, passive: bool, steps: int) -> dict:
    """Run one configuration; returns its median step time, spread and (auto) the steps at each thread count."""
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", WANDB_MODE="offline")
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if load == "loaded" else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = str(Path(tmp) / "run")
            t0 = time.perf_counter()
            proc = subprocess.run(command(layout, steps, out), env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(f"{layout} ({load}) failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
            records = [json.loads(line) for line in Path(out, "metrics.jsonl").read_text().splitlines()]
            summary = json.loads(Path(out, "summary.json").read_text())
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    times = [r["step_seconds"] for r in records[1:]] or [records[0]["step_seconds"]]
    return {"layout": layout, "load": load, "passive": passive, "steps": len(records),
            "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "wall_s": wall,
            "steps_at_num_threads": summary.get("steps_at_num_threads")}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    layouts = ["auto"] if args.quick else [x for x in args.layouts.split(",") if x]
    loads = ["idle"] if args.quick else [x for x in args.loads.split(",") if x]
    passives = ["off"] if args.quick else [x for x in args.passive.split(",") if x]
    steps = 2 if args.quick else args.steps
    bad = [x for x in layouts if x not in LAYOUTS] + [x for x in loads if x not in LOADS] + \
        [x for x in passives if x not in ("off", "on")]
    if bad:
        raise SystemExit(f"unknown layout/load/passive value(s): {', '.join(bad)}")
    print("\n".join(machine_lines("cpu", threads="as in the table")))   # with the load average at start
    results = []
    for load in loads:
        for layout in layouts:
            for passive in passives:
                if passive == "on" and layout not in ("auto", "1x2"):
                    continue                      # PASSIVE only changes how a process's own threads wait
                r = one_run(layout, load, passive == "on", steps)
                results.append(r)
                print(f"# {layout} {load} passive={passive}: median {r['median_s']:.3f} s/step "
                      f"(load average now {load_average()})", flush=True)
    print(f"# load average at end (1/5/15 min): {load_average()}")
    base = {r["load"]: r["median_s"] for r in results if r["layout"] == "1x1" and not r["passive"]}
    rows = []
    for r in results:
        ref = base.get(r["load"])
        counts = r["steps_at_num_threads"]
        rows.append([r["layout"], r["load"], "PASSIVE" if r["passive"] else "default", f"{r['median_s'] * 1000:.0f}",
                     f"{r['min_s'] * 1000:.0f}-{r['max_s'] * 1000:.0f}",
                     f"{ref / r['median_s']:.2f}x" if ref else "-",
                     ", ".join(f"{v} steps at {k}" for k, v in counts.items()) if counts else "-"])
    print(f"\n## The tiny preset's step at each thread layout ({steps} steps per run, median after the first)\n")
    print(markdown_table(["layout (P x T)", "machine", "OMP wait", "step ms", "min-max ms",
                          "speed vs 1x1 on the same load", "threads used (auto)"], rows))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
