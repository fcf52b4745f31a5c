"""grpo_lib.notebook.run_torchrun: a real 2-process torchrun job from Python, and a failed job's error.

torchrun starts every rank with `python -u`, so `print(text)` is two writes and the ranks' lines can
interleave in the shared stdout. The job scripts here write each line with one `os.write` (atomic for
a pipe up to 4096 bytes), and the test reads each rank's line by its pattern, not by line position.
"""
import re

import pytest

from grpo_lib.notebook import run_torchrun

# every rank reports its rank, the world size torchrun gave it, its thread count and an extra variable
REPORT = """
import os, sys
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
line = f"rank {rank} of {world}, threads {os.environ['OMP_NUM_THREADS']}, extra {os.environ.get('EXTRA')}\\n"
os.write(1, line.encode())                       # one write: the line cannot be split by the other rank's
"""

# every rank notes that it started (one file per rank and start), says why it fails on stderr, exits 5
FAILS = """
import os, sys, pathlib
rank = int(os.environ["RANK"])
folder = pathlib.Path(sys.argv[1])
starts = len(list(folder.glob(f"start-rank{rank}-*")))
(folder / f"start-rank{rank}-{starts}").write_text("x")
os.write(2, f"rank {rank}: boom on purpose\\n".encode())
sys.exit(5)
"""


def test_a_job_returns_every_rank_s_output_with_its_environment(tmp_path):
    (tmp_path / "job.py").write_text(REPORT)
    proc = run_torchrun([tmp_path / "job.py"], nproc=2, env={"EXTRA": "yes"}, timeout=120)
    assert proc.returncode == 0
    found = sorted(re.findall(r"rank \d of \d, threads \d+, extra \w+", proc.stdout))
    assert found == ["rank 0 of 2, threads 1, extra yes", "rank 1 of 2, threads 1, extra yes"]


def test_a_failed_job_runs_once_and_raises_with_its_status_and_stderr(tmp_path, capsys):
    (tmp_path / "job.py").write_text(FAILS)
    with pytest.raises(RuntimeError, match=r"torchrun exited with status 1 \(2 processes: ") as info:
        run_torchrun([tmp_path / "job.py", tmp_path], nproc=2, timeout=120)
    assert "boom on purpose" in str(info.value)
    assert "exitcode  : 5" in str(info.value)                   # torchrun's report names the rank's exit code
    assert sorted(p.name for p in tmp_path.glob("start-*")) == ["start-rank0-0", "start-rank1-0"]  # never rerun
    assert capsys.readouterr().out == ""                        # no "starting it once more" note
