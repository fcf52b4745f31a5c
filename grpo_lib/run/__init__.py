"""A training run's lifecycle: everything that happens around a GRPO step, in one room.

    layout.py      the run folder's names (metrics.jsonl, summary.json, model/, checkpoints/, the lock)
    lifecycle.py   `Run`: start (processes, output folder, resume, data and model, evaluation before),
                   `steps()`, `phase()`, `record()`, `finish()`, and the failed summary on any exception
    rundir.py      the output folder: checked, locked, never silently written over
    runlog.py      the per-step metrics, metrics.jsonl / evals.jsonl / summary.json, W&B, the console
    checkpoint.py  checkpoints that resume exactly, never loaded half-written
    failures.py    how a run fails or stops: one way, whatever the cause

`grpo_lib.train` is the algorithm and imports `Run`; nothing here imports `grpo_lib.train` or `grpo_lib.cli`.
This file imports nothing, so `grpo_lib.run.rundir` (the early lock, taken before torch is imported) stays cheap.
"""
