"""Reuse of a finished run within one test session: the student copy of a notebook does not train again.

`bash scripts/dev.sh test` executes every notebook twice (the instructor copy, then the student copy, whose
lesson cells are the same). With GRPO_RUN_CACHE set to a folder (the test command sets a fresh, empty one for
each invocation), `train()` stores each finished run there, and a later `train()` with exactly the same
settings returns a copy of it instead of training again, saying so. The same holds for a multi-process job that
a notebook launches with `grpo_lib.course.notebook.run_torchrun` (`job_key`, `load_job`, `store_job`). Nothing
else ever sets the variable, so a learner's `train()` always trains and a learner's job always runs.

Choices made here (1-3 tested in tests/test_runcache.py; 4-4 tested in tests/test_job_cache.py):
1. Opt-in, per session: the cache lives only as long as one test command, and it starts empty, so every
   test command still runs each training for real once (in the instructor copy); a changed engine can
   never be hidden by a run finished before the change. The key also holds a fingerprint of grpo_lib's
   source and the torch and transformers versions.
2. Exact settings only: the key is every field of the config except `output_dir` (and `progress`, which only
   changes the progress bar). A run given its own model, tokenizer, reward functions or callback, a resumed
   run, and a multi-process run are never reused by `train()`: their behaviour is not a function of the config
   alone (a whole multi-process job launched from a notebook is reused as a job: choice 4).
3. The reused run is a copy: its files are copied into the new `output_dir` and the returned TrainResult is
   loaded from a file, so the two copies never share a model object (a full pickle, `weights_only=False`:
   safe only because the folder is this command's own `mktemp -d`, mode 0700, written by this same process
   tree). The random-number states (torch, Python, NumPy) are restored to what the real run left, so the
   cells after `train()` draw the same numbers.
4. A torchrun job (`run_torchrun`) is reused only when what it is given is the same: its arguments, its process
   count, the extra environment it is given, the bytes of every file its arguments name, grpo_lib's source
   fingerprint, and every file and folder in its *job folder*: the one temporary folder (made by
   `tempfile.mkdtemp`, directly in the temporary directory) that holds every path its arguments name, and the
   folder it writes. What it reads without an argument naming it (the shipped tiny model, the data sets) does not
   change within one test command, the cache's lifetime. The two copies of a notebook make their own temporary
   folders, so the folder's own path is replaced by a placeholder in the arguments, the environment, the files
   and the output before comparing, and the new folder's path is put back when the finished job's folder and
   output are restored. A job with no path argument, with a path outside the temporary directory or paths in two
   folders, called with `force=True`, or that failed, is never reused; nor is one whose folder ends with a
   symlink or a binary file holding the folder's path (it could not be put back faithfully), nor one whose
   folder is larger than `JOB_FOLDER_LIMITS` (2,000 entries, 256 MiB: not one job's own folder, e.g. pytest's
   shared one). Restoring only removes what the job removed and writes what it left: nothing else is touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

ENV = "GRPO_RUN_CACHE"
IGNORED_FIELDS = ("output_dir", "progress")


def source_fingerprint() -> str:
    """sha256 over every .py file of grpo_lib (path and bytes), with the torch and transformers versions."""
    import transformers

    root = Path(__file__).resolve().parent
    h = hashlib.sha256(f"torch {torch.__version__} transformers {transformers.__version__}".encode())
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def run_key(cfg: Any) -> str:
    """The cache key of a config: its fields (but IGNORED_FIELDS) and grpo_lib's source fingerprint."""
    fields = {k: v for k, v in cfg.to_dict().items() if k not in IGNORED_FIELDS}
    blob = json.dumps(fields, sort_keys=True, default=str) + source_fingerprint()
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cache_dir() -> Path | None:
    folder = os.environ.get(ENV)
    return Path(folder) if folder else None


def reusable(cfg: Any, *, world_size: int, plain: bool) -> bool:
    """True when this call may be served from (or stored in) the cache: choice 2."""
    return cache_dir() is not None and plain and world_size == 1 and not cfg.resume


def load(cfg: Any) -> Any | None:
    """The cached TrainResult of exactly this config, copied into cfg.output_dir, or None."""
    folder = cache_dir() / run_key(cfg)
    if not (folder / "result.pt").is_file():
        return None
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for item in (folder / "files").iterdir():
        target = out / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)
    result = torch.load(folder / "result.pt", weights_only=False)
    result.output_dir = out
    _set_rng(torch.load(folder / "rng.pt", weights_only=False))
    print(f"[run cache] reused the finished run with exactly these settings ({ENV}={cache_dir()}, "
          f"key {folder.name}): files copied to {out}; no training ran")
    return result


def store(cfg: Any, result: Any) -> None:
    """Keep a finished run (its files and its TrainResult) under its key."""
    folder = cache_dir() / run_key(cfg)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(Path(cfg.output_dir), tmp / "files")
    torch.save(result, tmp / "result.pt")
    torch.save(_get_rng(), tmp / "rng.pt")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _get_rng() -> dict[str, Any]:
    import random

    import numpy as np
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}


def _set_rng(state: dict[str, Any]) -> None:
    import random

    import numpy as np
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


# --- whole torchrun jobs (choice 4) ------------------------------------------------------------------------
JOB_FOLDER = "<grpo job folder>"
"""what stands for the job folder's own path in the key and in the stored files and output"""
JOB_FOLDER_LIMITS = (2_000, 256 * 2**20)
"""(entries, bytes): a bigger folder is not one job's own (e.g. pytest's shared folder), and is never reused"""


def job_folder(args: Sequence[Any]) -> Path | None:
    """The one temporary folder (directly in the temporary directory) holding every path in `args`, or None.

    An argument is a path when it is a `Path` or a string with a path separator. None when there is no such
    argument, or when one lies outside the temporary directory, or two lie in different folders (choice 4).
    """
    tmp_root = Path(os.path.realpath(tempfile.gettempdir()))
    found: set[Path] = set()
    for arg in args:
        if not (isinstance(arg, os.PathLike) or os.sep in str(arg)):
            continue
        path = Path(os.path.realpath(os.path.abspath(arg)))
        if path == tmp_root or not path.is_relative_to(tmp_root):
            return None
        found.add(tmp_root / path.relative_to(tmp_root).parts[0])
    if len(found) != 1:
        return None
    folder = Path(tempfile.gettempdir()) / found.pop().name      # as mkdtemp names it (the temp dir unresolved)
    return folder if folder.is_dir() and _small(folder) else None


def _small(folder: Path) -> bool:
    """At most JOB_FOLDER_LIMITS entries and bytes under `folder` (stops counting at the first excess)."""
    entries, size = 0, 0
    for root, dirs, files in os.walk(folder):
        entries += len(dirs) + len(files)
        size += sum(os.lstat(os.path.join(root, f)).st_size for f in files)
        if entries > JOB_FOLDER_LIMITS[0] or size > JOB_FOLDER_LIMITS[1]:
            return False
    return True


def _forms(folder: Path) -> list[str]:
    """The folder's path as a job may write it (as given, and resolved), longest first."""
    return sorted({str(folder), os.path.realpath(folder)}, key=len, reverse=True)


def _placeheld(data: bytes, forms: list[str]) -> bytes:
    for form in forms:
        data = data.replace(form.encode(), JOB_FOLDER.encode())
    return data


def _tree(folder: Path) -> list[tuple[str, Path]]:
    """Every folder, file and symlink under `folder` as (path relative to it, path), in a fixed order."""
    entries = []
    for root, dirs, files in os.walk(folder):     # never follows a symlink
        for name in dirs + files:
            path = Path(root) / name
            entries.append((str(path.relative_to(folder)), path))
    return sorted(entries)


def job_key(cmd_args: Sequence[Any], nproc: int, env: dict[str, str] | None, folder: Path) -> str:
    """The cache key of a job: everything choice 4 lists, with the folder's path replaced by JOB_FOLDER."""
    forms = _forms(folder)
    h = hashlib.sha256(source_fingerprint().encode())
    described = json.dumps({"args": [str(a) for a in cmd_args], "nproc": nproc,
                            "env": sorted((env or {}).items())}, sort_keys=True)
    h.update(_placeheld(described.encode(), forms))
    for arg in cmd_args:                          # the files the arguments name (a script outside the folder)
        path = Path(str(arg))
        if (isinstance(arg, os.PathLike) or os.sep in str(arg)) and path.is_file():
            h.update(b"\0file\0" + _placeheld(path.read_bytes(), forms))
    for rel, path in _tree(folder):               # the folder: every entry's name, kind and bytes
        if path.is_symlink():
            h.update(b"\0link\0" + rel.encode() + b"\0" + _placeheld(os.readlink(path).encode(), forms))
        elif path.is_dir():
            h.update(b"\0dir\0" + rel.encode())
        else:
            h.update(b"\0file\0" + rel.encode() + b"\0" + _placeheld(path.read_bytes(), forms))
    return h.hexdigest()[:24]


def load_job(key: str, folder: Path, cmd: list[str]) -> subprocess.CompletedProcess | None:
    """The finished job stored under `key`: its folder restored into `folder` (JOB_FOLDER back to `folder`'s
    path), and its CompletedProcess (stdout and stderr likewise); None when there is none."""
    stored = cache_dir() / "jobs" / key
    if not (stored / "output.json").is_file():
        return None
    output = json.loads((stored / "output.json").read_text())
    left = dict(_tree(stored / "files"))          # the folder holds the stored job's input (the key says so) ...
    for rel, path in reversed(_tree(folder)):     # ... so remove what the job removed (deepest first) ...
        if rel not in left or path.is_dir() != left[rel].is_dir() or path.is_symlink():
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    mark, here = JOB_FOLDER.encode(), str(folder).encode()
    for rel, path in left.items():                # ... and write what it left (parents come first)
        target = folder / rel
        if path.is_dir():
            target.mkdir(exist_ok=True)
        else:
            target.write_bytes(path.read_bytes().replace(mark, here))
    print(f"[run cache] reused the finished torchrun job with exactly this command line and inputs "
          f"({ENV}={cache_dir()}, key {key}): its folder and output restored; nothing was launched")
    return subprocess.CompletedProcess(cmd, 0, output["stdout"].replace(JOB_FOLDER, str(folder)),
                                       output["stderr"].replace(JOB_FOLDER, str(folder)))


def store_job(key: str, folder: Path, proc: subprocess.CompletedProcess) -> bool:
    """Keep a finished job's folder and output under `key` (the key of its inputs). False, keeping nothing, when
    it could not be put back faithfully: a symlink, or a binary file holding the folder's path (choice 4)."""
    forms = _forms(folder)
    stored = cache_dir() / "jobs" / key
    tmp = stored.with_name(key + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "files").mkdir(parents=True)
    for rel, path in _tree(folder):
        target = tmp / "files" / rel
        if path.is_symlink():
            shutil.rmtree(tmp)
            return False
        if path.is_dir():
            target.mkdir()
            continue
        data = path.read_bytes()
        held = _placeheld(data, forms)
        if held != data:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                shutil.rmtree(tmp)
                return False
        target.write_bytes(held)
    text = lambda s: _placeheld((s or "").encode(), forms).decode()
    (tmp / "output.json").write_text(json.dumps({"stdout": text(proc.stdout), "stderr": text(proc.stderr)}))
    shutil.rmtree(stored, ignore_errors=True)
    tmp.rename(stored)
    return True
