"""Reuse of a finished run within one test session: the student copy of a notebook does not train again.

`bash scripts/dev.sh test` executes every notebook twice (the instructor copy, then the student copy, whose
lesson cells are the same). With GRPO_RUN_CACHE set to a folder (the test command sets a fresh, empty one for
each invocation), `train()` stores each finished run there, and a later `train()` with exactly the same
settings returns a copy of it instead of training again, saying so. Nothing else ever sets the variable, so
a learner's `train()` always trains.

Choices made here:
1. Opt-in, per session: the cache lives only as long as one test command, and it starts empty, so every
   test command still runs each training for real once (in the instructor copy); a changed engine can
   never be hidden by a run finished before the change. The key also holds a fingerprint of grpo_lib's
   source and the torch and transformers versions.
2. Exact settings only: the key is every field of the config except `output_dir` (and `progress`, which only
   changes the progress bar). A run given its own model, tokenizer, reward functions or callback, a resumed
   run, and a multi-process run are never reused: their behaviour is not a function of the config alone.
3. The reused run is a copy: its files are copied into the new `output_dir` and the returned TrainResult is
   loaded from a file, so the two copies never share a model object (a full pickle, `weights_only=False`:
   safe only because the folder is this command's own `mktemp -d`, mode 0700, written by this same process
   tree). The random-number states (torch, Python, NumPy) are restored to what the real run left, so the
   cells after `train()` draw the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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
