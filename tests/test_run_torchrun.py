"""grpo_lib.notebook.run_torchrun: a real 2-process torchrun job from Python, its retry, and its error."""
import pytest

from grpo_lib.notebook import run_torchrun


# Fails the first time (when the marker file is absent, rank 0 creates it and both ranks exit 3), then succeeds;
# every rank prints its rank and the world size torchrun gave it.
FLAKY = """
import os, sys, pathlib
marker = pathlib.Path(sys.argv[1]) / "tried"
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
print(f"rank {rank} of {world}, threads {os.environ['OMP_NUM_THREADS']}, extra {os.environ.get('EXTRA')}")
if not marker.exists():
    import time; time.sleep(0.5)
    if rank == 0:
        marker.write_text("x")
    sys.exit(3)
"""


def test_a_failed_job_is_started_once_more_and_says_so(tmp_path, capsys):
    (tmp_path / "job.py").write_text(FLAKY)
    proc = run_torchrun([tmp_path / "job.py", tmp_path], nproc=2, env={"EXTRA": "yes"}, timeout=120)
    assert proc.returncode == 0
    assert sorted(line for line in proc.stdout.splitlines() if line.startswith("rank")) == [
        "rank 0 of 2, threads 1, extra yes", "rank 1 of 2, threads 1, extra yes"]
    note = capsys.readouterr().out
    assert note.startswith("(torchrun exited with status 1") and "starting it once more" in note


def test_a_job_that_keeps_failing_raises_with_its_stderr(tmp_path):
    (tmp_path / "job.py").write_text("import sys\nprint('boom on purpose', file=sys.stderr)\nsys.exit(5)\n")
    with pytest.raises(RuntimeError, match=r"torchrun failed 2 time\(s\)") as info:
        run_torchrun([tmp_path / "job.py"], nproc=2, timeout=120, retries=1)
    assert "boom on purpose" in str(info.value)
