"""A run's output folder: checked before any heavy work, and never silently written over.

Choices made here (1-3 tested in tests/test_failures.py; 4-4 tested in tests/test_lock_and_signals.py):
1. The folder is checked first, before the data and the model load: it must be a folder or creatable
   (not a file, not under a file) and writable (a probe file is created and removed), so a typo in
   --output-dir costs seconds, not a model download.
2. A folder that holds a run (any of `RUN_OUTPUTS`: metrics, evaluations, summary, final model,
   checkpoints) is refused for a fresh run, so a finished run's results are never replaced by
   accident, and a later --resume can never pick up an older run's checkpoint. `--overwrite` deletes
   those outputs (checkpoints included) first; other files in the folder are left alone.
3. `--resume DIR` continues the run in DIR itself (`run_dir_of` in grpo_lib.run.layout; `prepare_output_dir`
   lets it continue there): the folder the checkpoint sits in, not the output folder recorded inside it,
   so a copied or moved run never writes into the original.
4. One run per folder (`lock_output_dir`): the run takes an exclusive lock on OUTPUT_DIR/.grpo-run.lock
   (`fcntl.flock`) at the folder check, before anything else, and holds it until it ends; under
   torchrun rank 0 holds it for every rank. The command line takes it earlier still, at process start,
   before importing torch (`lock_output_dir_at_start`: the imports take seconds), so of two runs
   started close together the first one always wins. A second run on the folder is refused at its
   folder check, naming the process that holds it (pid, host, start time). The kernel releases the lock of a process that dies,
   even by kill -9: the next run takes it over and says which run left it (a clean end removes the lock
   file; a killed run leaves it, with its pid, host and start time). On a network file system without working flock the lock protects nothing more
   than before; runs there need separate folders.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from grpo_lib.run.layout import LOCK_FILE, RUN_OUTPUTS, SUMMARY_FILE   # the standard library only: cheap before torch


class OutputDirError(ValueError):
    """The output folder cannot be used: not creatable, not writable, or it holds another run."""


class OutputDirBusy(OutputDirError):
    """Another run (a live process) holds the output folder's lock. `.holder`: its pid, host, start time."""

    def __init__(self, message: str, holder: dict[str, Any]):
        super().__init__(message)
        self.holder = holder


class RunLock:
    """The lock a run holds on its output folder (`lock_output_dir`); `release()` gives it back.

    Attributes:
        path: OUTPUT_DIR/.grpo-run.lock.
        taken_over: the holder record a killed run left in the lock file (None when the lock was free).
    """

    def __init__(self, path: Path, fd: int, taken_over: dict[str, Any] | None):
        self.path, self._fd, self.taken_over = path, fd, taken_over

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file (a clean end leaves nothing behind) and give the lock back; idempotent."""
        if self._fd is None:
            return
        import fcntl

        fd, self._fd = self._fd, None
        try:                      # removed while still held: a run that opened it now sees a new file next time
            os.unlink(self.path)
        except OSError:
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def describe_holder(holder: dict[str, Any]) -> str:
    """'pid 1234 on host h, started 2026-01-01T12:00:00Z' (or what the lock file holds of it)."""
    if not holder:
        return "a process that is just starting (its details are not written yet)"
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {holder.get('started', '?')}"
            + (f" ({holder['command']})" if holder.get("command") else ""))


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        text = os.pread(fd, 65536, 0).decode("utf-8", "replace").strip()
        holder = json.loads(text) if text else {}
        return holder if isinstance(holder, dict) else {"unreadable": text[:200]}
    except (OSError, ValueError):
        return {}


_early_lock: RunLock | None = None
"""the lock `lock_output_dir_at_start` took for this process's --output-dir, until `lock_output_dir` takes it"""
_early_created: list[Path] = []
"""the folders `lock_output_dir_at_start` created, removed again (when empty) if the run never uses its lock"""


def lock_output_dir_at_start(argv: list[str] | None = None) -> RunLock | None:
    """Lock the --output-dir named on the command line now, before the heavy imports (choice 4).

    Called at the top of `python -m grpo_lib` and `python -m grpo_lib.trl.recipe`, before
    `import torch`: importing torch and transformers takes seconds, with more than 0.5 s of jitter on a
    loaded machine, so a lock taken only at the folder check let a run started 0.5 s later win the
    race. Taken here, the run that started first holds it. `lock_output_dir` later hands this same
    lock to the run when its folder is the same one (flock belongs to one open file: opening and
    locking the file again in this process would refuse this very run); if the run ends without
    asking for it (a bad option, --help, another output folder), it is released at exit and the
    folders it created are removed again, so nothing is left that today's runs would not leave.

    Does nothing (returns None) without `--output-dir X` / `--output-dir=X` (or `--output_dir`), for
    --help, on a torchrun rank other than 0 (rank 0 holds the lock for all), when another run holds
    the lock (the run is refused at the folder check, with today's message, after its options are
    checked), and when the folder cannot be used (the folder check reports it). Only the standard
    library is imported here.
    """
    import atexit
    import sys

    global _early_lock
    argv = list(sys.argv[1:] if argv is None else argv)
    if _early_lock is not None or os.environ.get("RANK", "0") != "0" or "-h" in argv or "--help" in argv:
        return None
    out = None
    for i, a in enumerate(argv):                         # the last one wins, as in argparse
        if a in ("--output-dir", "--output_dir") and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            out = argv[i + 1]
        elif a.startswith(("--output-dir=", "--output_dir=")):
            out = a.split("=", 1)[1]
    if not out:
        return None
    missing = []
    for parent in [Path(out), *Path(out).parents]:     # the folders this lock would create (removed if unused)
        if os.path.lexists(parent):
            break
        missing.append(parent)
    try:
        _early_lock = lock_output_dir(out)
    except (OutputDirError, OSError):                    # busy, or not usable: the folder check says so, as today
        _remove_empty(missing)
        return None
    _early_created[:] = missing
    atexit.register(_release_early_lock, os.getpid())
    return _early_lock


def _release_early_lock(pid: int | None = None) -> None:
    """Give back a lock `lock_output_dir_at_start` took that the run never asked for, and remove its folders."""
    global _early_lock
    if pid is not None and pid != os.getpid():           # a forked child exiting: the lock is its parent's
        return
    lock, _early_lock = _early_lock, None
    if lock is not None:
        lock.release()
        _remove_empty(_early_created)
    _early_created.clear()


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:                               # deepest first
        try:
            folder.rmdir()
        except OSError:                                  # not empty (or gone): leave it
            pass


def _take_early_lock(out: Path) -> RunLock | None:
    """The lock `lock_output_dir_at_start` holds if it is `out`'s (this process now owns it), else None."""
    global _early_lock
    lock = _early_lock
    if lock is None or not lock.held:
        return None
    try:
        a, b = os.stat(out / LOCK_FILE, follow_symlinks=False), os.fstat(lock._fd)
        same = (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
    except OSError:
        same = False
    if not same:                                         # the run writes elsewhere: give that folder back now
        _release_early_lock()
        return None
    _early_lock = None
    _early_created.clear()
    return lock


def lock_output_dir(out: str | os.PathLike) -> RunLock:
    """Take the exclusive lock on `out` (created if needed) for this run (choice 4); release it when the run ends.

    When `lock_output_dir_at_start` already locked `out` in this process, that lock is returned.

    Raises:
        OutputDirBusy: another live process holds it (the message names its pid, host and start time).
        OutputDirError: `out` is not a usable folder, or the lock file is a symlink or cannot be opened.
    """
    import fcntl
    import sys

    out = check_writable(out)
    early = _take_early_lock(out)
    if early is not None:
        return early
    path = out / LOCK_FILE
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                         0o644)
        except OSError as e:
            raise OutputDirError(f"--output-dir {out}: cannot open its lock file {LOCK_FILE} ({e.strerror or e}; "
                                 "a symlink there is refused); remove it and start again") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:                                   # held by a live process (BlockingIOError)
            holder = _read_holder(fd)
            os.close(fd)
            raise OutputDirBusy(
                f"--output-dir {out} is in use by another run: {describe_holder(holder)}. Two runs in one folder "
                "would overwrite each other's metrics and checkpoints; wait for that run to end (or stop it), or "
                "choose another --output-dir.", holder) from None
        try:                                              # the holder before us removed the file as we opened it
            if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    else:
        raise OutputDirError(f"--output-dir {out}: its lock file {LOCK_FILE} keeps changing; is another run starting?")
    previous = _read_holder(fd)                           # left by a run that was killed: the kernel freed its lock
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
          "command": " ".join(sys.argv)[:300]}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    return RunLock(path, fd, previous or None)


def check_writable(out: str | os.PathLike) -> Path:
    """Create `out` if needed and prove it is writable (a probe file); return it as a Path.

    Raises:
        OutputDirError: `out` is a file, sits under a file, or cannot be created or written; the
            message names --output-dir and the path that is in the way.
    """
    out = Path(out)
    for parent in [out, *out.parents]:
        if parent.exists():
            if not parent.is_dir():
                where = "is a file" if parent == out else f"sits under {parent}, which is a file"
                raise OutputDirError(f"--output-dir {out}: {where}, not a folder; choose another --output-dir")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise OutputDirError(f"--output-dir {out}: cannot create or write there ({e.strerror or e}); "
                             "choose a folder you can write to") from None
    return out


def existing_run_outputs(out: str | os.PathLike) -> list[str]:
    """The names in `RUN_OUTPUTS` that hold work in `out`.

    Empty files and folders do not count, nor does a summary.json of a run that failed before writing
    anything else (a run stopped by a typo in --data-dir leaves nothing worth keeping).
    """
    out = Path(out)
    found = []
    for name in RUN_OUTPUTS:
        p = out / name
        if (p.is_dir() and any(p.iterdir())) or (p.is_file() and p.stat().st_size > 0):
            found.append(name)
    if found == [SUMMARY_FILE] and _failed_summary(out / SUMMARY_FILE):
        return []
    return found


def _failed_summary(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("status") in ("failed", "stopped")
    except (OSError, ValueError, AttributeError):
        return False


def clear_run(out: str | os.PathLike) -> list[str]:
    """Delete the run outputs (`RUN_OUTPUTS`) in `out`; return the names deleted."""
    out = Path(out)
    removed = [name for name in RUN_OUTPUTS if (out / name).exists() or (out / name).is_symlink()]
    for name in removed:
        p = out / name
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    return removed


def prepare_output_dir(out: str | os.PathLike, *, overwrite: bool = False, continuing: bool = False) -> list[str]:
    """Check `out` before a run starts; with `overwrite`, clear the run it holds.

    Args:
        out: the run's output folder (--output-dir).
        overwrite: delete an earlier run's outputs there instead of refusing (--overwrite).
        continuing: True when this run resumes the run that lives in `out` (its outputs are this run's).

    Returns:
        the names of the outputs deleted (with `overwrite`), else [].

    Raises:
        OutputDirError: `out` is not a usable folder, or holds a run and neither `continuing` nor `overwrite`.
    """
    out = check_writable(out)
    found = existing_run_outputs(out)
    if not found or continuing:
        return []
    if not overwrite:
        raise OutputDirError(
            f"--output-dir {out} already holds a run ({', '.join(found)}): a new run would replace its results. "
            f"Continue it with --resume {out}, choose another --output-dir, or pass --overwrite to delete "
            "that run's outputs (checkpoints included) and start again.")
    return clear_run(out)
