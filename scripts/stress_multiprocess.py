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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="rounds (default 20)")
    parser.add_argument("--only", choices=PARTS, help="run only this part")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per part and round (default 900)")
    parser.add_argument("--log-dir", type=Path, help="write each failed part's stdout/stderr here")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    parts = [args.only] if args.only else list(PARTS)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    env.pop("GRPO_LIB_FAULT", None)
    if args.log_dir:
        args.log_dir.mkdir(parents=True, exist_ok=True)
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
