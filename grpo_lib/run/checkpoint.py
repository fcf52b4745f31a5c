"""Checkpoints that a run can resume from exactly, and that are never loaded half-written.

A checkpoint is one folder, OUTPUT_DIR/checkpoints/step-XXXXXX/ (the step is the number of completed
sampling steps), holding:

    model/                   π_θ as `save_pretrained` writes it, in the master weights' dtype: config.json,
                             generation_config.json, model.safetensors, the tokenizer files. It loads with
                             AutoModelForCausalLM.from_pretrained and AutoTokenizer.from_pretrained
    reference.safetensors    π_ref's weights, only when β > 0, mid-iteration, and π_ref is no longer the
                             starting model (from the second outer iteration on)
    optimizer.pt             AdamW state (moments, step counts, param groups)
    scheduler.pt             the learning-rate schedule's position
    rng-rank0.pt ...         python `random`, numpy and torch (CPU, and CUDA when used) RNG states of
                             EVERY rank, one file per rank
    trainer_state.json       step, outer iteration, world size, the config, the metrics history, the
                             evaluations so far
    manifest.json            written last: the files above with their sizes and sha256 checksums

Choices made here (1-7 tested in tests/test_checkpoint.py, the 2-process case in tests/test_ddp.py;
8-8 tested in tests/test_failures.py):
1. Atomic writes: everything is written into a hidden temporary folder (`.tmp-step-XXXXXX-<pid>`),
   manifest.json last, then the folder is renamed to its final name with `os.replace` (atomic on one
   file system). A run killed while writing leaves only a temporary folder, which is never loaded; a
   folder without a manifest, or whose files do not match it, is refused with a clear message. A write
   that fails removes its temporary folder and raises a CheckpointError naming the step; a full disk is
   said to be one (`disk_full`: ENOSPC, or under 64 MiB left) rather than guessed at.
2. Safe loading: weights through safetensors, everything else through `torch.load(weights_only=True)`
   (no arbitrary pickles), or JSON.
3. Rank 0 writes the whole checkpoint. The other ranks send it their RNG states (an all-gather), so
   writing needs no shared file system. Resuming does: every rank reads the checkpoint, and
   `open_checkpoint_on_every_rank` makes all ranks fail at once, naming the rank and path, when one of
   them cannot read it (instead of the others hanging in a collective).
4. The reference model: DeepSeekMath's outer loop resets π_ref ← π_θ at the start of every iteration. A
   checkpoint taken at an iteration boundary needs no π_ref (the next step resets it). Inside the first
   iteration π_ref is the starting model: trainer_state.json records "reference": "initial" and resume
   rebuilds it from the starting model (cfg.model), which saves a model's worth of disk per checkpoint
   (3 GB for Qwen2.5-1.5B in bf16). Inside a later iteration π_ref is saved.
5. A resumed run must use the same configuration: `config_differences` lists the fields that differ,
   except harmless ones (`RESUME_MAY_DIFFER`: where to write, how to log, threads, device), and
   `train` refuses to continue when the list is not empty. It must also use the same number of
   processes, since every rank restores its own RNG state and its own slice of the prompts. A field
   added to the config after a checkpoint was written counts as its default there
   (`FIELDS_ADDED_LATER`: the defaults that give the run it was), so older checkpoints still resume.
6. Checksums: the manifest records each file's size and sha256. Finding the latest checkpoint compares
   sizes only (cheap); the checkpoint chosen for a resume is verified file by file, so a file damaged
   in place (same size, flipped bytes) is named. When the newest checkpoint of an output dir is damaged,
   the resume falls back to the newest good one and says so (printed, and recorded in summary.json as
   "skipped_checkpoints"); a checkpoint folder given by name is never replaced by another.
7. Rotation (`--save-total-limit K`, `rotate_checkpoints`): after a new checkpoint is complete (renamed
   into place), all but the newest K complete ones are deleted; never before, so a crash while writing
   still leaves K complete checkpoints.
8. A checkpoint is exactly what its manifest lists: π_θ is loaded from the weight files it lists and no
   others, and a weight or state file it does not list (`unlisted_weight_files`: an extra model/*.safetensors
   would be merged into the weights) makes the checkpoint refused, naming the file. The manifest must list
   the core files (`CORE_FILES` and π_θ's weights) with their sizes and sha256; an emptied manifest is
   refused. A format-1 manifest (sizes only, written before checksums) still loads, with a printed
   warning that its files cannot be verified byte for byte. A damaged trainer_state.json (not JSON, or
   without its step, config, history ...) is refused naming the file.
9. LoRA runs (lora_r > 0): model/ holds the merged model (W + (α/r)·B A, so it loads with from_pretrained
   like any checkpoint's model/) and `ADAPTERS_FILE` the adapters alone; optimizer.pt holds AdamW's state
   of the adapters. The base weights are not saved (LoRA never changes them): a resumed LoRA run rebuilds
   them from its starting model, which must be the run's (the fingerprint of the base weights recorded in
   the checkpoint, checked at every LoRA resume), then loads the adapters. tests/test_lora_resume.py.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from grpo_lib import dist, lora
from grpo_lib.models import frozen_copy
from grpo_lib.run.layout import CHECKPOINTS_SUBDIR, MODEL_SUBDIR, checkpoint_dir

MANIFEST = "manifest.json"
STATE_FILE = "trainer_state.json"
MODEL_FILE = "model.safetensors"
"""format 1 (older checkpoints): π_θ as one safetensors file at the top of the checkpoint"""
REFERENCE_FILE = "reference.safetensors"
ADAPTERS_FILE = "adapters.safetensors"
"""LoRA runs: the adapters (every lora_A / lora_B) by parameter name (choice 9)"""
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
FORMAT_VERSION = 2
"""2: the manifest records {"bytes", "sha256"} per file (1: the size only; still readable)"""

RESUME_MAY_DIFFER = frozenset({
    "output_dir", "report_to", "wandb_project", "log_every", "progress", "eval_every", "eval_batch_size",
    "num_threads", "device", "save_every", "resume", "dist_timeout_minutes", "overwrite", "save_total_limit",
    "save_dtype", "save_on_stop",
})
"""config fields that may change between a run and its resumption (they do not change the training)"""


def reference_at(step: int, beta: float, steps_per_iteration: int) -> str:
    """π_ref after `step` completed steps, as a checkpoint records it (choice 4): "none" (β = 0, or an iteration
    boundary: the next step resets π_ref ← π_θ), "initial" (inside the first outer iteration: the starting
    model, not saved) or "saved" (inside a later outer iteration: its weights are in the checkpoint)."""
    if beta <= 0 or step % steps_per_iteration == 0:
        return "none"
    return "initial" if step // steps_per_iteration == 0 else "saved"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: missing, half-written, or written by another configuration."""


def rng_state() -> dict[str, Any]:
    """This process's random number generator states: python `random`, numpy, torch CPU (and CUDA if used).

    Stored as tensors, ints and tuples only, so `torch.load(weights_only=True)` can read it back.
    """
    version, py_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": (version, torch.tensor(py_state, dtype=torch.int64), gauss),
        "numpy": (np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss),
                  float(np_gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` recorded (the CUDA part only where CUDA is in use)."""
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(int(x) for x in py_state.tolist()), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_pretrained_model(model: nn.Module, tokenizer: Any, folder: str | os.PathLike, dtype: str | None = None,
                          state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """`save_pretrained` of the model (config, generation config, safetensors) and its tokenizer into `folder`.

    `AutoModelForCausalLM.from_pretrained(folder)` and `AutoTokenizer.from_pretrained(folder)` load it.

    Args:
        model: π_θ, unwrapped.
        tokenizer: its tokenizer (None: no tokenizer files).
        folder: where to write.
        dtype: None keeps the parameters' dtype (fp32 master weights in mixed precision); "bfloat16" or
            "float32" saves a converted copy (the model itself is not changed).
        state_dict: the weights to write instead of the model's own (a LoRA run's merged weights, choice 9;
            not with dtype).
    """
    folder = Path(folder)
    if state_dict is not None:
        if dtype is not None:
            raise ValueError("save_pretrained_model: pass state_dict or dtype, not both")
        model.save_pretrained(folder, state_dict=state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        return folder
    to_save = model
    if dtype is not None and next(model.parameters()).dtype != getattr(torch, dtype):
        import copy

        to_save = copy.deepcopy(model).to(getattr(torch, dtype))
    to_save.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def save_checkpoint(output_dir: str | os.PathLike, step: int, *, model: nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any, reference: nn.Module | None,
                    state: dict[str, Any], tokenizer: Any = None, keep: int | None = None) -> Path | None:
    """Write checkpoint `step` atomically. Called on EVERY rank (it gathers the RNG states); rank 0 writes.

    Args:
        output_dir: the run's output folder; the checkpoint goes to output_dir/checkpoints/step-XXXXXX.
        step: completed sampling steps.
        model: π_θ, unwrapped (not DDP).
        optimizer, scheduler: AdamW and its LambdaLR.
        reference: π_ref when it must be saved (β > 0, inside an outer iteration, and no longer the
            starting model), else None.
        state: JSON-ready trainer state (step, iteration, world_size, config, history, evals, ...).
        tokenizer: written with the model into model/, so that folder loads with from_pretrained.
        keep: --save-total-limit: after this checkpoint is complete, delete all but the newest `keep`
            complete checkpoints (`rotate_checkpoints`); None keeps all.

    Returns:
        The checkpoint folder on rank 0, None on the other ranks.

    Used by: grpo_lib.run.lifecycle.Run (notebooks/06_multi_gpu_qwen.ipynb shows rotation and resume)
    """
    rng_states = dist.all_gather_objects(rng_state())              # every rank's, in rank order
    final = None
    if dist.is_main():
        final = checkpoint_dir(output_dir, step)
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in final.parent.glob(".tmp-step-*"):              # left by a run killed while writing
            shutil.rmtree(stale, ignore_errors=True)
        tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
        try:
            tmp.mkdir()
            if lora.is_lora(model):                                 # merged model + the adapters apart (choice 9)
                save_pretrained_model(model, tokenizer, tmp / MODEL_SUBDIR, state_dict=lora.merged_state_dict(model))
                save_file(lora.adapter_state(model), str(tmp / ADAPTERS_FILE))
            elif hasattr(model, "save_pretrained"):                 # a transformers model: loadable with from_pretrained
                save_pretrained_model(model, tokenizer, tmp / MODEL_SUBDIR)
            else:                                                   # any other torch module: its weights only
                save_model(model, str(tmp / MODEL_FILE))
            if reference is not None:
                save_model(reference, str(tmp / REFERENCE_FILE))
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
            torch.save(scheduler.state_dict(), tmp / SCHEDULER_FILE)
            for r, rng in enumerate(rng_states):
                torch.save(rng, tmp / f"rng-rank{r}.pt")
            (tmp / STATE_FILE).write_text(json.dumps({"format": FORMAT_VERSION, **state}, indent=1))
            _write_manifest(tmp, step)                              # last: its presence means "complete"
        except Exception as e:                                     # a full disk, a lost mount: no half folder stays
            full = disk_full(e, final.parent)                       # measured before the partial folder goes
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(f"could not write checkpoint {final.name} into {final.parent} "
                                  f"({type(e).__name__}: {' '.join(str(e).split())[:300]}); its partial folder "
                                  f"{tmp.name} was removed. "
                                  + (f"The disk is full ({full}): free some space (or keep fewer checkpoints with "
                                     "--save-total-limit) and resume from the last checkpoint."
                                     if full else "")) from e
        if final.exists():                                         # an older checkpoint of the same step
            shutil.rmtree(final)
        os.replace(tmp, final)                                      # atomic: the folder appears whole
        if keep is not None:
            rotate_checkpoints(output_dir, keep, current=final)     # only now: the new one is complete
    dist.barrier()
    return final


DISK_FULL_BYTES = 64 << 20
"""less free space than this (64 MiB) after a failed write is reported as a full disk"""


def disk_full(e: BaseException, where: Path) -> str | None:
    """'N bytes free on the file system of WHERE' when the failed write `e` ran out of space (ENOSPC in
    the error or its causes, or under `DISK_FULL_BYTES` left), else None. torch's zip writer reports a
    full disk as "unexpected pos ...", so the free space is what tells."""
    import errno

    chain, seen = [e], set()
    while chain:
        err = chain.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno == errno.ENOSPC or "No space left on device" in str(err):
            return f"no space left on the file system of {where}"
        chain += [err.__cause__, err.__context__]
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return None
    return f"{free:,} bytes free on the file system of {where}" if free < DISK_FULL_BYTES else None


def rotate_checkpoints(output_dir: str | os.PathLike, keep: int, current: Path | None = None) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints of output_dir (--save-total-limit); return the deleted.

    "Newest" is by step, among the complete checkpoints up to `current` (the one just written, never
    deleted); checkpoints of later steps (left by an earlier run that went further) and incomplete or
    temporary folders are not touched here.
    """
    if keep < 1:
        raise ValueError(f"--save-total-limit must be >= 1, got {keep}")
    root = Path(output_dir) / CHECKPOINTS_SUBDIR
    limit = int(current.name[5:]) if current is not None else None
    complete = sorted((int(p.name[5:]), p) for p in root.iterdir()
                      if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()
                      and (limit is None or int(p.name[5:]) <= limit) and is_complete(p))
    doomed = [p for _, p in complete[:-keep]] if len(complete) > keep else []
    for p in doomed:
        if current is not None and p == current:
            continue
        shutil.rmtree(p)
    return doomed


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, as hex (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_manifest(folder: Path, step: int) -> None:
    files = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}
    manifest = {"format": FORMAT_VERSION, "step": step, "files": files, "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=1))
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def is_complete(folder: str | os.PathLike, verify: bool = False) -> bool:
    """True when `folder` has a manifest and every file it lists, with the listed size (and, with
    `verify`, the listed sha256)."""
    return _incomplete_reason(Path(folder), verify=verify) is None


CORE_FILES = (STATE_FILE, OPTIMIZER_FILE, SCHEDULER_FILE, "rng-rank0.pt")
"""what every checkpoint's manifest must list (plus π_θ's weights: model/*.safetensors, or format 1's
model.safetensors)"""
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
"""files that hold weights or state: each one in a checkpoint must be listed in its manifest (choice 8)"""


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a checkpoint folder, checked for shape (choice 8).

    Raises:
        CheckpointError: missing, unreadable, listing no files or not the core files (`CORE_FILES` and
            π_θ's weights), or (format 2) an entry without its size and sha256.
    """
    folder = Path(folder)
    why, manifest = _manifest_problem(folder)
    if why is not None:
        raise CheckpointError(f"{folder}: {why}")
    return manifest


def _manifest_problem(folder: Path) -> tuple[str | None, dict[str, Any]]:
    path = folder / MANIFEST
    if not path.is_file():
        return f"no {MANIFEST} (a checkpoint gets it last, so this one was not completely written)", {}
    try:
        manifest = json.loads(path.read_text())
        files = dict(manifest["files"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return f"{MANIFEST} is unreadable", {}
    if not files:
        return f"{MANIFEST} lists no files, so nothing in this checkpoint can be verified", manifest
    weights = [n for n in files if n == MODEL_FILE or (n.startswith(f"{MODEL_SUBDIR}/") and n.endswith(".safetensors"))]
    missing = [n for n in CORE_FILES if n not in files] + ([] if weights else [f"{MODEL_SUBDIR}/*.safetensors"])
    if missing:
        return f"{MANIFEST} does not list {', '.join(missing)}, which every checkpoint holds", manifest
    checksummed = manifest.get("format", 1) >= 2
    for name, entry in files.items():
        if checksummed and not (isinstance(entry, dict) and isinstance(entry.get("bytes"), int)
                                and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64):
            return f"{MANIFEST} (format {manifest.get('format')}) gives {name} without its size and sha256", manifest
        if not checksummed and not isinstance(entry, (int, dict)):
            return f"{MANIFEST} gives {name} no size", manifest
    return None, manifest


def manifest_has_checksums(folder: str | os.PathLike) -> bool:
    """False for a format-1 manifest (sizes only): its files cannot be verified byte for byte (choice 8)."""
    try:
        return json.loads((Path(folder) / MANIFEST).read_text()).get("format", 1) >= 2
    except (OSError, ValueError, AttributeError):
        return False


def unlisted_weight_files(folder: str | os.PathLike, manifest: dict[str, Any]) -> list[str]:
    """Weight and state files (`WEIGHT_SUFFIXES`) in `folder` that its manifest does not list."""
    folder = Path(folder)
    listed = set(manifest.get("files", {}))
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.name.endswith(WEIGHT_SUFFIXES) and (p.is_file() or p.is_symlink())
                  and p.relative_to(folder).as_posix() not in listed)


def _incomplete_reason(folder: Path, verify: bool = False) -> str | None:
    why, manifest = _manifest_problem(folder)
    if why is not None:
        return why
    files = dict(manifest["files"])
    for name, entry in files.items():
        size, digest = (entry, None) if isinstance(entry, int) else (entry.get("bytes"), entry.get("sha256"))
        f = folder / name
        if not f.is_file():
            return f"{name} is listed in {MANIFEST} but missing"
        if f.stat().st_size != size:
            return f"{name} has {f.stat().st_size} bytes, {MANIFEST} says {size}"
        if verify and digest is not None and file_sha256(f) != digest:
            return f"{name} is damaged: its sha256 differs from the one in {MANIFEST} (same size, changed bytes)"
    extra = unlisted_weight_files(folder, manifest)
    if extra:
        return (f"{', '.join(extra)} {'is' if len(extra) == 1 else 'are'} not listed in {MANIFEST} (added after "
                "the checkpoint was written; it would be loaded with the weights), so the checkpoint is refused: "
                "remove the file or use another checkpoint")
    return None


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step under output_dir/checkpoints, or None.

    Temporary folders (a write in progress or killed) and incomplete folders are skipped.
    """
    root = Path(output_dir) / CHECKPOINTS_SUBDIR
    if not root.is_dir():
        return None
    found = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit() and is_complete(p):
            found.append((int(p.name[5:]), p))
    return max(found)[1] if found else None


def find_checkpoint(path: str | os.PathLike) -> Path:
    """Resolve a --resume argument: a checkpoint folder itself, or an output dir (its latest good checkpoint).

    Raises:
        CheckpointError: the folder does not exist, holds no complete checkpoint, or is a half-written
            or damaged one; the message names --resume and the file.
    """
    return resolve_checkpoint(path)[0]


def resolve_checkpoint(path: str | os.PathLike) -> tuple[Path, list[str]]:
    """(the checkpoint a --resume argument names, the damaged newer checkpoints skipped on the way).

    A checkpoint folder is verified (sizes and sha256) and used as it is, or refused. An output dir gives
    its newest checkpoint that verifies; each newer one that does not is listed as "step-XXXXXX: why".

    Raises:
        CheckpointError: as `find_checkpoint`.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"--resume {path}: no such folder (give a checkpoint folder such as "
                              f"runs/tiny/{CHECKPOINTS_SUBDIR}/step-000010, or the run's output dir)")
    if (folder / STATE_FILE).exists() or (folder / MANIFEST).exists() or folder.name.startswith((".tmp-", "step-")):
        why = _incomplete_reason(folder, verify=True)
        if why is not None:
            raise CheckpointError(f"--resume {path}: not a complete checkpoint: {why}. Use an earlier checkpoint, "
                                  f"or the output dir to pick the latest complete one.")
        return folder, []
    root = folder / CHECKPOINTS_SUBDIR
    steps = sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()),
                   key=lambda p: int(p.name[5:]), reverse=True) if root.is_dir() else []
    skipped = []
    for candidate in steps:
        why = _incomplete_reason(candidate, verify=True)
        if why is None:
            return candidate, skipped
        skipped.append(f"{candidate.name}: {why}")
    detail = ("; skipped: " + "; ".join(skipped)) if skipped else " (was the run started with --save-every K?)"
    raise CheckpointError(f"--resume {path}: no complete checkpoint in {root}{detail}")


@dataclass
class Checkpoint:
    """A complete checkpoint folder, opened for resuming (see `open_checkpoint`).

    Attributes:
        path: the folder.
        state: trainer_state.json: step, iteration, world_size, config, history, evals, eval_before.
        requested: the --resume argument that led here.

    Used by: grpo_lib.run.lifecycle.Run (notebooks/06_multi_gpu_qwen.ipynb shows rotation and resume)
    """

    path: Path
    state: dict[str, Any]
    requested: str | None = None
    """the --resume argument that led here (an output dir or this folder), for messages"""
    skipped: list[str] = field(default_factory=list)
    """newer checkpoints passed over as damaged ("step-XXXXXX: why"); the run announces and records them"""

    @property
    def step(self) -> int:
        """completed sampling steps: the resumed run continues with step + 1 (1-based)"""
        return int(self.state["step"])

    @property
    def history(self) -> list[dict[str, Any]]:
        """the metric records of steps 1..step (metrics.jsonl is rewritten from them, then continued)"""
        return list(self.state["history"])

    @property
    def evals(self) -> list[dict[str, Any]]:
        """the evaluation records up to this step"""
        return list(self.state["evals"])

    @property
    def reference_is_initial(self) -> bool:
        """True when π_ref was the starting model at this step (not saved: rebuild it from the starting model)."""
        return self.state.get("reference") == "initial"

    def reference_needed(self, beta: float, steps_per_iteration: int) -> str:
        """What a run resumed from here needs for π_ref (choice 4): "none" (β = 0, or an iteration boundary:
        the next step resets π_ref ← π_θ), "initial" (the starting model, not saved: rebuild it) or "saved"."""
        if reference_at(self.step, beta, steps_per_iteration) == "none":
            return "none"
        return "initial" if self.reference_is_initial else "saved"

    def check_fingerprint(self, start_fingerprint: float, requested: Any = None, lora_run: bool = False) -> None:
        """Refuse to rebuild π_ref ("initial"), or a LoRA run's base weights (`lora_run`, choice 9), from a
        starting model whose weights fingerprint is not the one recorded here
        (grpo_lib.run.lifecycle.weights_fingerprint)."""
        saved = self.state.get("start_fingerprint")
        if saved is not None and not math.isclose(saved, start_fingerprint, rel_tol=1e-6):
            what = (f"{self.path.name} is a LoRA checkpoint: it holds the adapters, and its base weights are the "
                    f"starting model's" if lora_run else
                    f"{self.path.name} was taken in the first outer iteration, where π_ref is the starting model, so "
                    f"π_ref was not saved")
            raise CheckpointError(
                f"--resume {requested or self.requested or self.path}: {what}; but the model this run starts "
                f"from is not that model (weights fingerprint {start_fingerprint:.6g}, saved {saved:.6g}). Resume with "
                f"the same --model (or the same model passed to train()).")

    def load_model(self, model: nn.Module) -> None:
        """Copy the saved π_θ weights into `model` (same architecture), with safetensors: exactly the
        weight files the manifest lists (choice 8). A LoRA model gets the saved adapters and keeps its base
        weights, the starting model's (choice 9)."""
        folder = self.path / MODEL_SUBDIR
        files = read_manifest(self.path)["files"]
        if lora.is_lora(model) or ADAPTERS_FILE in files:
            where = f"--resume {self.requested or self.path}: {self.path.name}"
            if ADAPTERS_FILE not in files:
                raise CheckpointError(f"{where} holds no LoRA adapters (written by a run without LoRA); resume it "
                                      "without --lora-r")
            if not lora.is_lora(model):
                raise CheckpointError(f"{where} holds LoRA adapters; resume it with the run's --lora-r")
            path = self.path / ADAPTERS_FILE
            try:
                state = load_file(str(path), device=str(next(model.parameters()).device))
            except Exception as e:
                raise _unreadable(path, e) from e
            try:
                lora.load_adapter_state(model, state)
            except ValueError as e:
                raise CheckpointError(f"{path}: {e}") from e
            return
        listed = sorted(self.path / n for n in files
                        if n.startswith(f"{MODEL_SUBDIR}/") and n.endswith(".safetensors"))
        if listed:
            _load_pretrained_weights(model, folder, listed)
        else:                                                       # format 1
            _load_weights(model, self.path / MODEL_FILE)

    def load_reference(self, model: nn.Module) -> bool:
        """Copy the saved π_ref into `model` and return True; False when the checkpoint has no π_ref."""
        if not (self.path / REFERENCE_FILE).exists():
            return False
        _load_weights(model, self.path / REFERENCE_FILE)
        return True

    def load_optimizer(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        """Restore AdamW's state and the schedule's position (`torch.load(weights_only=True)`)."""
        device = next((p.device for g in optimizer.param_groups for p in g["params"]), torch.device("cpu"))
        optimizer.load_state_dict(_torch_load(self.path / OPTIMIZER_FILE, map_location=device))
        scheduler.load_state_dict(_torch_load(self.path / SCHEDULER_FILE))

    def restore_rng(self, rank: int) -> None:
        """Restore rank `rank`'s RNG states (python, numpy, torch, CUDA)."""
        set_rng_state(_torch_load(self.path / f"rng-rank{rank}.pt"))


    def resume(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, *, rank: int,
               beta: float, steps_per_iteration: int, start_reference: nn.Module | None = None,
               reference_dtype: torch.dtype | None = None) -> nn.Module | None:
        """Continue a run from here: AdamW, the schedule, π_ref (inside an outer iteration) and this rank's RNG.

        π_θ's weights are loaded earlier (`load_model`, before the DDP wrapper broadcasts them).

        Args:
            model: π_θ (unwrapped), already holding this checkpoint's weights.
            optimizer, scheduler: freshly built for the run (`grpo_lib.train.make_optimizer`).
            rank: this process's rank.
            beta, steps_per_iteration: the run's β and M; with β > 0 a checkpoint inside an outer iteration
                must hold π_ref, or record that π_ref is the starting model (choice 4).
            start_reference: π_ref rebuilt from the starting model (frozen), used when the checkpoint
                records "reference": "initial".
            reference_dtype: dtype of a π_ref loaded from the checkpoint (bf16 in mixed precision).

        Returns:
            π_ref, frozen, when β > 0 and the checkpoint is inside an outer iteration; else None (the next
            step resets π_ref ← π_θ).

        Raises:
            CheckpointError: π_ref is needed but the checkpoint holds none.

        Used by: grpo_lib.run.lifecycle.Run (notebooks/06_multi_gpu_qwen.ipynb shows rotation and resume)
        """
        self.load_optimizer(optimizer, scheduler)
        ref_model = None
        needed = self.reference_needed(beta, steps_per_iteration)
        if needed == "initial":
            if start_reference is None:
                raise CheckpointError(f"--resume {self.requested or self.path}: π_ref is the starting model here "
                                      "(not saved), and no starting model was given to rebuild it")
            ref_model = start_reference
        elif needed == "saved":
            ref_model = frozen_copy(model, reference_dtype)
            if not self.load_reference(ref_model):
                raise CheckpointError(f"--resume {self.requested or self.path}: {self.path.name} is inside an outer iteration with "
                                      "beta > 0 but holds no reference model")
        self.restore_rng(rank)
        return ref_model


def _unreadable(path: Path, e: Exception) -> CheckpointError:
    return CheckpointError(f"{path}: cannot be read ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
                           "this checkpoint file is damaged: resume from an earlier checkpoint")


def _torch_load(path: Path, **kwargs: Any) -> Any:
    try:
        return torch.load(path, weights_only=True, **kwargs)
    except Exception as e:
        raise _unreadable(path, e) from e

def _load_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import load_model

    try:
        missing, unexpected = load_model(model, str(path), strict=False, device=str(next(model.parameters()).device))
    except Exception as e:                        # a damaged header or body: name the file, not just the error
        raise _unreadable(path, e) from e
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the model (missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]})")


def _load_pretrained_weights(model: nn.Module, folder: Path, files: list[Path] | None = None) -> None:
    """Load the *.safetensors `files` (None: every one in `folder`) of a save_pretrained folder into
    `model`; tied weights may be absent."""
    from safetensors.torch import load_file

    device = str(next(model.parameters()).device)
    state: dict[str, torch.Tensor] = {}
    for f in (sorted(folder.glob("*.safetensors")) if files is None else files):
        try:
            state.update(load_file(str(f), device=device))
        except Exception as e:                    # missing, or a damaged header: name the file
            raise _unreadable(f, e) from e
    result = model.load_state_dict(state, strict=False)
    own = model.state_dict()
    loaded_ptrs = {own[k].data_ptr() for k in state if k in own}
    missing = [k for k in result.missing_keys if own[k].data_ptr() not in loaded_ptrs]   # tied = shares storage
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{folder}: weights do not fit the model (missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(result.unexpected_keys)[:5]})")


FIELDS_ADDED_LATER: dict[str, Any] = {
    # the post-R1 options (off by default, so a checkpoint written before they existed ran with these values)
    "importance_sampling_level": "token", "kl_estimator": "k3", "use_bias_correction_kl": False,
    "multi_objective_aggregation": "sum_then_normalize", "vllm_importance_sampling_correction": False,
    "vllm_importance_sampling_mode": "sequence_mask", "vllm_importance_sampling_clip_min": None,
    "vllm_importance_sampling_clip_max": 3.0,
    "save_on_stop": False,                     # how a stopped run ends, added with the stop signals
    # the sampler, dynamic sampling and LoRA options (off by default)
    "sampler_perturbation": "none", "dynamic_sampling": False, "dynamic_sampling_max_draws": 10, "lora_r": 0,
    "lora_alpha": 32.0, "lora_dropout": 0.0,
    "lora_target_modules": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "lora_lr_multiplier": 10.0,
    "mask_truncated_completions": False,       # DAPO's overlong filtering (off by default)
}
"""config fields newer than some checkpoints -> the value an older checkpoint's run had (choice 5)"""


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'field: saved X, now Y' for every config field that differs, except those in RESUME_MAY_DIFFER.

    Both are `GRPOConfig.to_dict()` dicts; a JSON round trip makes tuples and lists compare equal.
    """
    saved = {**FIELDS_ADDED_LATER, **saved}
    saved, current = json.loads(json.dumps(saved)), json.loads(json.dumps(current))
    out = []
    for name in sorted(set(saved) | set(current)):
        if name in RESUME_MAY_DIFFER:
            continue
        if saved.get(name) != current.get(name):
            out.append(f"{name}: saved {saved.get(name)!r}, now {current.get(name)!r}")
    return out


def open_checkpoint(path: str | os.PathLike, config: dict[str, Any], world_size: int) -> Checkpoint:
    """Find, check and open the checkpoint to resume from.

    Args:
        path: the --resume argument (a checkpoint folder or an output dir).
        config: the resuming run's `GRPOConfig.to_dict()`.
        world_size: the resuming run's number of processes.

    Raises:
        CheckpointError: no complete checkpoint there, a different configuration (the message lists the
            differing fields), or a different number of processes.

    Used by: grpo_lib.run.lifecycle.Run (notebooks/06_multi_gpu_qwen.ipynb shows rotation and resume)
    """
    folder, skipped = resolve_checkpoint(path)
    state = read_state(folder, path)
    if not manifest_has_checksums(folder):
        dist.print0(f"warning: {folder.name} has a format-1 {MANIFEST} (file sizes only, no sha256), written before "
                    "checksums were recorded: a file changed in place cannot be detected. Resuming anyway.")
    diffs = config_differences(state["config"], config)
    if diffs:
        raise CheckpointError(
            f"--resume {path}: {folder.name} was written with a different configuration, so the run would not "
            "continue the same training. Differing options:\n  - " + "\n  - ".join(diffs)
            + f"\nUse the saved values (only {', '.join(sorted(RESUME_MAY_DIFFER - {'resume'}))} may change), "
            "or start a new run without --resume.")
    if int(state["world_size"]) != world_size:
        raise CheckpointError(
            f"--resume {path}: {folder.name} was written by {state['world_size']} process(es), this run has "
            f"{world_size}; each rank resumes its own RNG stream and prompts, so use "
            f"--nproc_per_node={state['world_size']}.")
    return Checkpoint(path=folder, state=state, requested=str(path), skipped=skipped)


def read_state(folder: Path, requested: str | os.PathLike | None = None) -> dict[str, Any]:
    """trainer_state.json of a checkpoint folder, checked for the keys a resume needs.

    Raises:
        CheckpointError: unreadable, not a JSON object, or without step, world_size, config (a mapping),
            history or evals; the message names the file.
    """
    path = folder / STATE_FILE
    where = f"--resume {requested}: " if requested is not None else ""
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{where}cannot read {path}: {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}{path} is damaged: not a JSON object")
    missing = [k for k in ("step", "world_size", "config", "history", "evals", "eval_before") if k not in state]
    if missing or not isinstance(state.get("config"), dict):
        raise CheckpointError(f"{where}{path} is damaged: " + (f"it has no {', '.join(missing)}" if missing else
                              "its config is not a mapping") + "; resume from another checkpoint")
    return state


def open_checkpoint_on_every_rank(path: str | os.PathLike, config: dict[str, Any], world_size: int) -> Checkpoint:
    """`open_checkpoint` on every rank, then agree: if any rank cannot open it, every rank raises at once.

    Resuming under torchrun needs the checkpoint on every rank (each restores its own RNG state and
    the weights from it): on several machines without a shared file system a rank may not see it. A
    rank that failed alone would leave the others waiting in the next collective until the timeout;
    here the ranks exchange their results first, and all raise a CheckpointError naming each rank that
    cannot read the checkpoint, the path it tried, and why.

    Raises:
        CheckpointError: on every rank when any rank fails.
    """
    try:
        ckpt, problem = open_checkpoint(path, config, world_size), None
    except CheckpointError as e:
        ckpt, problem = None, str(e)
    host = os.uname().nodename if hasattr(os, "uname") else "?"
    results = dist.all_gather_objects((problem, host, os.fspath(path)))
    failed = [(r, msg, h, where) for r, (msg, h, where) in enumerate(results) if msg is not None]
    if failed:
        if len(results) == 1:
            raise CheckpointError(failed[0][1])
        lines = [f"rank {r} (host {h}) cannot resume from {where!r}: {msg}" for r, msg, h, where in failed]
        raise CheckpointError("--resume: every rank must be able to read the checkpoint (copy it to every "
                              "machine, or use a shared file system):\n  - " + "\n  - ".join(lines))
    return ckpt


def saved_config(path: str | os.PathLike) -> dict[str, Any]:
    """The configuration stored in the checkpoint that `path` (a --resume argument) resolves to."""
    folder = find_checkpoint(path)
    return read_state(folder, path)["config"]
