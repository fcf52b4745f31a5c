"""grpo_lib.runcache choice 4: within one test command (GRPO_RUN_CACHE), a torchrun job launched by
`run_torchrun` with exactly the same command line and inputs is restored, not launched again; anything else
launches. The launcher is replaced by a stand-in job that runs in this process (it writes files that name its
folder, a binary file, a subfolder, deletes an input, and prints its folder), and the tests count its launches:
the real launch is tested in tests/test_course_notebook.py, the real notebook job by notebook 06 under the test
command (its student copy reuses the instructor copy's three jobs)."""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from grpo_lib import runcache
from grpo_lib.course import notebook
from grpo_lib.course.notebook import run_torchrun

BINARY = bytes(range(256)) * 4                       # not UTF-8: a file the cache copies byte for byte


@pytest.fixture
def launches(monkeypatch, tmp_path):
    """GRPO_RUN_CACHE set to a fresh folder, the temporary directory moved into tmp_path, and the list of the
    commands really launched; a job whose arguments hold "--fail" exits 1, one with "--binary-path" writes a
    binary file holding its folder's path, one with "--resume" reads a file an earlier job wrote."""
    monkeypatch.setenv(runcache.ENV, str(tmp_path / "cache"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    ran: list[list[str]] = []

    def stand_in(cmd, env, timeout):
        ran.append(cmd)
        folder = Path(cmd[-1])
        if "--fail" in cmd:
            return subprocess.CompletedProcess(cmd, 1, "", "rank 1: boom")
        (folder / "sub").mkdir(exist_ok=True)
        (folder / "sub" / "summary.json").write_text(f'{{"output_dir": "{folder}", "extra": "{env.get("EXTRA")}"}}')
        (folder / "weights.bin").write_bytes(BINARY + (str(folder).encode() if "--binary-path" in cmd else b""))
        (folder / "old.txt").unlink(missing_ok=True)           # a job may delete what it was given
        if "--resume" in cmd:                                  # a job that reads what an earlier job left
            (folder / "resumed.txt").write_text("after " + (folder / "sub" / "summary.json").read_text())
        return subprocess.CompletedProcess(cmd, 0, f"wrote {folder}/sub/summary.json\n", f"note from {folder}\n")
    monkeypatch.setattr(notebook, "_launch", stand_in)
    return ran


def job_dir(script: str = "print('job')", old: str | None = "given") -> Path:
    """A fresh temporary folder holding the job's script (and an input file it deletes)."""
    folder = Path(tempfile.mkdtemp(prefix="job-"))
    (folder / "job.py").write_text(script)
    if old is not None:
        (folder / "old.txt").write_text(old)
    return folder


def call(folder: Path, *extra: str, **kwargs) -> subprocess.CompletedProcess:
    return run_torchrun([folder / "job.py", *extra, folder], nproc=2, **kwargs)


def test_an_identical_job_in_another_folder_is_restored_not_launched_and_says_so(launches, capsys):
    a, b = job_dir(), job_dir()
    first = call(a, "--steps", "2", env={"EXTRA": "yes"})
    assert capsys.readouterr().out == ""
    second = call(b, "--steps", "2", env={"EXTRA": "yes"})
    assert len(launches) == 1                                                   # launched once
    assert "[run cache] reused the finished torchrun job" in capsys.readouterr().out
    # the output and the files are the second folder's own, as if its job had run
    assert second.returncode == 0 and second.args[-1] == str(b)
    assert (second.stdout, second.stderr) == (f"wrote {b}/sub/summary.json\n", f"note from {b}\n")
    assert first.stdout == f"wrote {a}/sub/summary.json\n"
    assert (b / "sub" / "summary.json").read_text() == f'{{"output_dir": "{b}", "extra": "yes"}}'
    assert (b / "weights.bin").read_bytes() == BINARY
    assert sorted(p.name for p in b.rglob("*")) == sorted(p.name for p in a.rglob("*")) == \
        ["job.py", "sub", "summary.json", "weights.bin"]                          # old.txt deleted in both


def test_a_job_that_reads_the_first_job_s_folder_is_reused_after_it(launches):
    """Notebook 06's resume: a second job on the folder the first job left; its key holds that folder's files."""
    a, b = job_dir(), job_dir()
    call(a), call(a, "--resume")
    call(b), call(b, "--resume")
    assert [cmd[-2] for cmd in launches] == [str(a / "job.py"), "--resume"]               # b's two: reused
    assert (b / "resumed.txt").read_text() == f'after {{"output_dir": "{b}", "extra": "None"}}'


@pytest.mark.parametrize("change", ["argument", "processes", "environment", "script", "input file", "no input file",
                                    "engine source"])
def test_any_other_command_line_or_input_launches_again(launches, monkeypatch, change):
    call(job_dir(), "--steps", "2", env={"EXTRA": "yes"})
    folder = job_dir(script="print('another job')" if change == "script" else "print('job')",
                     old={"input file": "changed", "no input file": None}.get(change, "given"))
    args, kwargs = ["--steps", "3" if change == "argument" else "2"], {"env": {"EXTRA": "no" if change == "environment" else "yes"}}
    if change == "engine source":
        monkeypatch.setattr(runcache, "source_fingerprint", lambda: "another grpo_lib")
    run_torchrun([folder / "job.py", *args, folder], nproc=3 if change == "processes" else 2, **kwargs)
    assert len(launches) == 2


def test_force_or_no_cache_folder_always_launches(launches, monkeypatch, tmp_path):
    call(job_dir())
    call(job_dir(), force=True)
    assert len(launches) == 2
    monkeypatch.delenv(runcache.ENV)
    call(job_dir())
    call(job_dir())
    assert len(launches) == 4
    assert not (tmp_path / "cache").exists() or len(list((tmp_path / "cache" / "jobs").iterdir())) == 1


def test_a_failed_job_is_never_kept(launches):
    for _ in range(2):
        with pytest.raises(RuntimeError, match="torchrun exited with status 1"):
            call(job_dir(), "--fail")
    assert len(launches) == 2


def test_a_binary_file_holding_the_folder_s_path_is_not_kept(launches):
    call(job_dir(), "--binary-path")
    call(job_dir(), "--binary-path")
    assert len(launches) == 2


def test_the_job_folder_is_the_one_temporary_folder_of_every_path_argument(launches, tmp_path):
    a, b = job_dir(), job_dir()
    assert runcache.job_folder([a / "job.py", "-m", "x", "--out", str(a / "run" / "new")]) == a
    assert runcache.job_folder(["-m", "grpo_lib.train", "--steps", "2"]) is None           # no path
    assert runcache.job_folder([a / "job.py", b]) is None                                   # two folders
    assert runcache.job_folder([a / "job.py", Path(sys.executable)]) is None                # one outside
    assert runcache.job_folder([tmp_path / "tmp"]) is None                                  # the temp dir itself
    call_outside = run_torchrun([a / "job.py", "--data", tmp_path / "elsewhere", a])
    run_torchrun([b / "job.py", "--data", tmp_path / "elsewhere", b])
    assert call_outside.returncode == 0 and len(launches) == 2                              # never reused


def test_a_folder_too_big_to_be_one_job_s_own_is_never_reused(launches, monkeypatch):
    monkeypatch.setattr(runcache, "JOB_FOLDER_LIMITS", (3, 10**6))        # job.py and old.txt: 2 entries
    call(job_dir()), call(job_dir())                                       # 2 entries before, 4 after: kept
    assert len(launches) == 1
    big = job_dir()
    for i in range(2):
        (big / f"more{i}.txt").write_text("x")
    call(big), call(big)                                                   # 4 entries: never hashed, never kept
    assert len(launches) == 3
    monkeypatch.setattr(runcache, "JOB_FOLDER_LIMITS", (100, 10))          # 10 bytes
    call(job_dir())
    assert len(launches) == 4
