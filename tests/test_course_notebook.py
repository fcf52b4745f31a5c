"""grpo_lib.course.notebook: the display helpers the notebooks use (run here without a notebook), and
run_torchrun, a real 2-process torchrun job from Python, its retry, and its error."""
import pytest
import torch

from grpo_lib.course.notebook import markdown_table, run_torchrun, show_source, source_of
from grpo_lib.toy import ToyPolicy, score_answer


def test_source_of_returns_the_real_code():
    src = source_of(score_answer)
    assert src.startswith("def score_answer(answer: str) -> float:")
    assert "_WORKING.search(answer)" in src
    method = source_of(ToyPolicy.probs)
    assert method.startswith("def probs(self)")              # dedented, so it reads as top-level code


def test_source_of_refuses_objects_without_source():
    with pytest.raises(TypeError, match="cannot show the source"):
        source_of(len)
    with pytest.raises(TypeError, match="cannot show the source"):
        source_of(3)


def test_show_source_prints_outside_ipython(capsys):
    show_source(score_answer)
    out = capsys.readouterr().out
    assert "def score_answer" in out and "return 2.0 if" in out


def test_markdown_table_formats_floats_tensors_and_escapes_pipes():
    table = markdown_table(["variant", "A"], [["sample | std", 1.0], ["population", torch.tensor(1.2247449)]])
    text = getattr(table, "data", table)                     # IPython Markdown keeps the text in .data
    assert text.splitlines() == [
        "| variant | A |",
        "|---|---|",
        r"| sample \| std | 1.0000 |",
        "| population | 1.2247 |",
    ]


def test_markdown_table_refuses_ragged_rows():
    with pytest.raises(ValueError, match="row 1 has 1 values for 2 columns"):
        markdown_table(["a", "b"], [[1, 2], [3]])


# --- run_torchrun ---------------------------------------------------------------------------------------


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
