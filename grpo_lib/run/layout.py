"""The run folder's names, defined once: what a run writes into its --output-dir.

    OUTPUT_DIR/
        metrics.jsonl            one record per step (grpo_lib.run.runlog.METRICS)
        evals.jsonl              one record per held-out evaluation
        summary.json             "status": "completed", "failed" or "stopped", with the accuracies or the error
        model/                   the final π_θ, as save_pretrained writes it (from_pretrained loads it)
        checkpoints/step-XXXXXX/ one checkpoint per --save-every steps (grpo_lib.run.checkpoint)
        .grpo-run.lock           held while a run writes here (grpo_lib.run.rundir choice 4)

Only the standard library is imported here: `grpo_lib.run.rundir` reads these names before torch is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

METRICS_FILE = "metrics.jsonl"
EVALS_FILE = "evals.jsonl"
SUMMARY_FILE = "summary.json"
MODEL_SUBDIR = "model"
"""π_θ as `save_pretrained` writes it (config, generation config, safetensors, tokenizer): from_pretrained loads it;
the final model of a run, and π_θ inside every checkpoint"""
CHECKPOINTS_SUBDIR = "checkpoints"
LOCK_FILE = ".grpo-run.lock"
"""the lock a run holds on its output folder: JSON with the holder's pid, host and start time"""

RUN_OUTPUTS = (METRICS_FILE, EVALS_FILE, SUMMARY_FILE, MODEL_SUBDIR, CHECKPOINTS_SUBDIR)
"""what a run writes into its output folder: a folder holding any of them holds a run (grpo_lib.run.rundir)"""


def checkpoint_dir(output_dir: str | os.PathLike, step: int) -> Path:
    """OUTPUT_DIR/checkpoints/step-XXXXXX for `step` completed steps (zero-padded so names sort by step)."""
    return Path(output_dir) / CHECKPOINTS_SUBDIR / f"step-{step:06d}"


def run_dir_of(checkpoint_folder: str | os.PathLike) -> Path | None:
    """The run folder a checkpoint sits in (RUN/checkpoints/step-XXXXXX -> RUN), or None if it sits alone."""
    folder = Path(checkpoint_folder)
    if folder.parent.name == CHECKPOINTS_SUBDIR:
        return folder.parent.parent
    return None
