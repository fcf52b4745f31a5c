"""Run the multi-process tests and notebook 06's torchrun cells N times in a row; report every failure.

A multi-process job that fails once in twenty is a bug, not bad luck: this script is how the course shows
that its gloo jobs (DDP on CPU processes) end cleanly every time. Each round runs, in fresh processes:

1. `pytest tests/test_course_notebook.py tests/test_ddp.py` (torchrun jobs, a torch.multiprocessing spawn of
   2 gloo ranks, a rank that dies on purpose);
2. the code cells of notebooks/06_multi_gpu_qwen.ipynb that call `run_torchrun` (the 2-rank DDP gradient
   demo, the tiny preset on 2 processes with checkpoints, and its resume from one), taken from the committed
   notebook and run as one script after the notebook's own imports. `run_torchrun` never reruns a job, so a failed job fails the round.

Usage (from the repository root, with the project's Python):

    python scripts/stress_multiprocess.py                 # 20 rounds of both parts
    python scripts/stress_multiprocess.py --runs 3 --only notebook
    python scripts/stress_multiprocess.py --log-dir /tmp/stress   # keep every failed round's output

It prints one line per part and round, then the failure count; the exit status is 1 when anything
failed. A failure whose output holds "terminate called", "SIGABRT" or "Signal 6" is marked as an abort
(a rank killed at shutdown).

Notebook mode (`--nbmake`) runs whole notebooks the way the test command does (`pytest --nbmake`, one fresh
kernel each), first `--runs` times on their own, then `--loaded-runs` times beside a CPU-heavy process (one
busy-looping process per core, started before and stopped after each run):

    python scripts/stress_multiprocess.py --nbmake                          # 04, 05, 06: 20 + 10 runs each
    python scripts/stress_multiprocess.py --nbmake --runs 3 --loaded-runs 2 --notebooks 04

Each run's wall time and its slowest cell (from the executed notebook's per-cell timings) are printed. The
run fails the check when a notebook fails, or when a run takes more than 2x the median of its group (alone,
or loaded): a cell that waits for a reply that already arrived (notebook 04's widget stall, 15 minutes
under nbmake) shows up as one run far slower than the others.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "06_multi_gpu_qwen.ipynb"
TESTS = ("tests/test_course_notebook.py", "tests/test_ddp.py")
ABORT_SIGNS = ("terminate called", "SIGABRT", "Signal 6")
PARTS = ("tests", "notebook")


def notebook_torchrun_script(notebook: Path = NOTEBOOK) -> str:
    """The notebook's first code cell (its imports) and every code cell calling run_torchrun, as one script."""
    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    sources = ["".join(c["source"]) for c in cells]
    chosen = [sources[0]] + [s for s in sources[1:] if "run_torchrun(" in s]
    if len(chosen) < 2:
        raise SystemExit(f"{notebook}: no code cell calls run_torchrun(...); nothing to stress")
    body = "\n\n".join(s for s in chosen if not s.lstrip().startswith("%"))
    return "import matplotlib\nmatplotlib.use('Agg')\n" + body + "\nprint('notebook torchrun cells: ok')\n"


def run_part(part: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run one part once in a fresh process; a timeout counts as a failure (returncode 124)."""
    if part == "tests":
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *TESTS]
    else:
        script = Path(tempfile.mkdtemp(prefix="stress-nb06-")) / "nb06_torchrun_cells.py"
        script.write_text(notebook_torchrun_script())
        cmd = [sys.executable, str(script)]
    try:
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        return subprocess.CompletedProcess(cmd, 124, out, err + f"\n(timed out after {timeout:.0f} s)")


NBMAKE_NOTEBOOKS = ("04", "05", "06")
SLOWER_THAN_MEDIAN = 2.0


def notebook_path(prefix: str) -> Path:
    found = sorted((REPO / "notebooks").glob(f"{prefix}_*.ipynb"))
    if len(found) != 1:
        raise SystemExit(f"--notebooks {prefix}: expected one notebooks/{prefix}_*.ipynb, found {len(found)}")
    return found[0]


def cpu_hogs() -> list[subprocess.Popen]:
    """One busy-looping process per core (the 'CPU-heavy process beside the notebook')."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def slowest_cell(executed: Path) -> tuple[int, float] | None:
    """(cell index, seconds) of the slowest code cell, from nbclient's per-cell timestamps."""
    from datetime import datetime

    if not executed.exists():
        return None
    cells = json.loads(executed.read_text())["cells"]
    best = None
    for i, cell in enumerate(cells):
        t = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in t and "shell.execute_reply" in t:
            a, b = (datetime.fromisoformat(t[k].replace("Z", "+00:00"))
                    for k in ("iopub.execute_input", "shell.execute_reply"))
            if best is None or (b - a).total_seconds() > best[1]:
                best = (i, (b - a).total_seconds())
    return best


def run_nbmake(nb: Path, env: dict[str, str], timeout: float, keep: Path) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake", "--nbmake-timeout=900",
           str(nb.relative_to(REPO))]
    t = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env={**env, "GRPO_KEEP_EXECUTED": str(keep)}, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        proc = subprocess.CompletedProcess(cmd, 124, out, f"(timed out after {timeout:.0f} s)")
    return proc, time.monotonic() - t


def nbmake_mode(args, env: dict[str, str]) -> int:
    notebooks = [notebook_path(n) for n in args.notebooks]
    keep_root = Path(tempfile.mkdtemp(prefix="stress-nbmake-"))
    failures: list[str] = []
    times: dict[tuple[str, str], list[float]] = {}
    t0 = time.monotonic()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    for group, count in (("alone", args.runs), ("loaded", args.loaded_runs)):
        for i in range(1, count + 1):
            for nb in notebooks:
                hogs = cpu_hogs() if group == "loaded" else []
                try:
                    keep = keep_root / f"{group}{i:02d}"
                    proc, took = run_nbmake(nb, env, args.timeout, keep)
                finally:
                    for h in hogs:
                        h.kill()
                        h.wait()
                times.setdefault((nb.stem, group), []).append(took)
                cell = slowest_cell(keep / nb.relative_to(REPO))
                where = f"slowest cell {cell[0]}: {cell[1]:.0f} s" if cell else "no cell timings"
                status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
                if proc.returncode != 0:
                    failures.append(f"{nb.stem} {group} run {i}: exit {proc.returncode}")
                    log = proc.stdout + proc.stderr
                    if args.log_dir:
                        (args.log_dir / f"{nb.stem}-{group}{i:02d}.log").write_text(log)
                    else:
                        print(log[-3000:])
                print(f"{nb.stem:28s} {group:6s} run {i:2d}/{count}: {took:6.1f} s  {status}  ({where}; "
                      f"load {os.getloadavg()[0]:.2f})", flush=True)
    print()
    for (stem, group), ts in sorted(times.items()):
        med = sorted(ts)[len(ts) // 2] if len(ts) % 2 else sum(sorted(ts)[len(ts) // 2 - 1:len(ts) // 2 + 1]) / 2
        slow = [t for t in ts if t > SLOWER_THAN_MEDIAN * med]
        print(f"{stem:28s} {group:6s} {len(ts):2d} runs: median {med:6.1f} s, min {min(ts):6.1f}, max {max(ts):6.1f}"
              f" ({max(ts) / med:.2f}x median)" + (f"  {len(slow)} SLOWER THAN {SLOWER_THAN_MEDIAN:g}x" if slow else ""))
        if slow:
            failures.append(f"{stem} {group}: {len(slow)} run(s) slower than {SLOWER_THAN_MEDIAN:g}x the median "
                            f"({', '.join(f'{t:.0f} s' for t in slow)} vs {med:.0f} s)")
    print(f"\n{len(failures)} failure(s); executed notebooks in {keep_root} ({time.monotonic() - t0:.0f} s in all)")
    for f in failures:
        print("  -", f)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="rounds (default 20)")
    parser.add_argument("--only", choices=PARTS, help="run only this part")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds per part and round, or per notebook run (default 1800: twice nbmake's cell timeout)")
    parser.add_argument("--log-dir", type=Path, help="write each failed part's stdout/stderr here")
    parser.add_argument("--nbmake", action="store_true",
                        help="notebook mode: run whole notebooks under nbmake, alone and beside a CPU-heavy process")
    parser.add_argument("--notebooks", nargs="+", default=list(NBMAKE_NOTEBOOKS),
                        help="notebook mode: which notebooks, by number (default: 04 05 06)")
    parser.add_argument("--loaded-runs", type=int, default=10,
                        help="notebook mode: runs beside a CPU-heavy process (default 10); --runs counts the runs alone")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    if args.loaded_runs < 0:
        parser.error(f"--loaded-runs must be >= 0, got {args.loaded_runs}")
    parts = [args.only] if args.only else list(PARTS)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    env.pop("GRPO_LIB_FAULT", None)
    env.pop("GRPO_RUN_CACHE", None)         # every run launches its jobs and trains: nothing is reused
    if args.log_dir:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    if args.nbmake:
        return nbmake_mode(args, env)
    failures: list[str] = []
    t0 = time.monotonic()
    for i in range(1, args.runs + 1):
        for part in parts:
            t = time.monotonic()
            proc = run_part(part, env, args.timeout)
            log = proc.stdout + proc.stderr
            status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
            if proc.returncode != 0:
                kind = "abort" if any(s in log for s in ABORT_SIGNS) else "error"
                failures.append(f"round {i} {part}: {kind}, exit {proc.returncode}")
                status += f" [{kind}]"
                if args.log_dir:
                    (args.log_dir / f"round{i:02d}-{part}.log").write_text(log)
                else:
                    print(log[-3000:])
            print(f"round {i:2d}/{args.runs} {part:8s} {status} ({time.monotonic() - t:.0f} s)", flush=True)
    print(f"\n{len(failures)} failure(s) in {args.runs} round(s) x {len(parts)} part(s) "
          f"({time.monotonic() - t0:.0f} s in all)")
    for f in failures:
        print("  -", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
