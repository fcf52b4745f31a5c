"""grpo_lib.course.notebook: the display helpers the notebooks use (run here without a notebook), and
run_torchrun, a real 2-process torchrun job from Python, and a failed job's error (never rerun)."""
import re

import pytest
import torch

from grpo_lib.course.notebook import markdown_table, run_torchrun, show_lines, show_source, source_lines, source_of
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


def test_source_lines_shows_the_matching_lines_numbered_as_in_the_file():
    import inspect

    from grpo_lib.loss import grpo_loss
    lines, first = inspect.getsourcelines(grpo_loss)
    i = next(k for k, line in enumerate(lines) if 'if loss_type == "cispo":   # sg' in line)
    text = source_lines(grpo_loss, 'if loss_type == "cispo":   # sg', after=1)
    shown = text.splitlines()
    assert len(shown) == 2 and shown[0].startswith(f"{first + i}  if loss_type")       # dedented to the piece
    assert shown[1].split(None, 1)[1] == lines[i + 1].strip()
    two = source_lines(grpo_loss, "def grpo_loss(", 'if loss_type == "cispo":   # sg').splitlines()
    assert len(two) == 3 and two[1] == "..."                                          # a gap is marked
    with pytest.raises(ValueError, match="contains 'no such line'"):
        source_lines(grpo_loss, "no such line")


def test_show_lines_prints_outside_ipython(capsys):
    show_lines(score_answer, "def score_answer")
    assert "def score_answer(answer: str) -> float:" in capsys.readouterr().out


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
# torchrun starts every rank with `python -u`, so `print(text)` is two writes and the ranks' lines can interleave
# in the shared stdout. These job scripts write each line with one `os.write` (atomic for a pipe up to 4096
# bytes), and the test finds each rank's line by its pattern, not by its position.

# every rank reports its rank, the world size torchrun gave it, its thread count and an extra variable
REPORT = """
import os, sys
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
line = f"rank {rank} of {world}, threads {os.environ['OMP_NUM_THREADS']}, extra {os.environ.get('EXTRA')}\\n"
os.write(1, line.encode())                       # one write: the other rank's output cannot split the line
"""

# every rank notes that it started (one file per rank and start), says why it fails on stderr, exits 5
FAILS = """
import os, sys, pathlib
rank = int(os.environ["RANK"])
folder = pathlib.Path(sys.argv[1])
starts = len(list(folder.glob(f"start-rank{rank}-*")))
(folder / f"start-rank{rank}-{starts}").write_text("x")
# Exit only once both ranks have started: torchrun stops the other rank when one fails, so a rank that
# failed at once could end the job before a slow sibling (a loaded machine) had written its start file.
import time
deadline = time.monotonic() + 60
while len(list(folder.glob("start-rank*"))) < 2 and time.monotonic() < deadline:
    time.sleep(0.05)
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


# --- check(...): the one collapsed check of a lesson section ----------------------------------------------------
def test_check_lists_what_it_verified_collapsed():
    import torch

    from grpo_lib.course.notebook import Checked, check
    shown = check("1.6 · demo", ("1 + 1 = 2", 1 + 1 == 2), ("a tensor fact", torch.tensor(True)), ("lazy", lambda: True))
    assert isinstance(shown, Checked) and shown.facts == ("1 + 1 = 2", "a tensor fact", "lazy")
    assert repr(shown).splitlines() == ["✓ 1.6 · demo: 3 facts checked", "  ✓ 1 + 1 = 2", "  ✓ a tensor fact", "  ✓ lazy"]
    html_ = shown._repr_html_()
    assert html_.startswith("<details><summary>✓ 1.6 · demo: 3 facts checked</summary>") and "<details open" not in html_
    assert html_.count("<li>") == 3
    assert repr(check("one", ("alone", True))).startswith("✓ one: 1 fact checked")


def test_check_raises_naming_every_failing_fact():
    import pytest
    import torch

    from grpo_lib.course.notebook import check
    with pytest.raises(AssertionError) as err:
        check("demo", ("true", True), ("false one", False), ("raises", lambda: 1 / 0), ("many", torch.ones(3)))
    msg = str(err.value)
    assert msg.startswith("demo: 3 of 4 facts do not hold")
    assert "✗ false one" in msg and "ZeroDivisionError" in msg and "use .all()" in msg and "✗ true" not in msg


def test_check_refuses_malformed_facts():
    import pytest

    from grpo_lib.course.notebook import check
    for bad in ((), (("no value",),), ((1, True),)):
        with pytest.raises(ValueError):
            check("demo", *bad)


def test_load_scaled_stretches_only_on_a_busy_machine(monkeypatch):
    import os

    from grpo_lib.course import notebook
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (5.0, 1.0, 1.0))
    assert notebook.load_scaled(600) == 1500.0                       # 2.5 runnable per core: 2.5x
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 1.0, 1.0))
    assert notebook.load_scaled(600) == 600.0                        # a quiet machine: never shortened
