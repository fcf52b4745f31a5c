"""How a run fails: one way, whatever the cause, and never after writing damaged work.

Choices made here (1-4 tested in tests/test_failures.py and tests/test_train.py; 5-5 tested in
tests/test_lock_and_signals.py and tests/test_ddp.py):
1. Whatever stops a run after its output folder is checked (a NaN loss, weights that blew up, an
   exception in sampling or a reward function, a full disk while saving, a bad file), `train` ends the
   same way: summary.json gets "status": "failed" with the message, the step and the last good
   checkpoint, and the error names the step, what the run was doing, and the cause, in one paragraph.
2. The weights are checked after every update (`parameters_finite`: one fused max-|w| per tensor, one
   host sync), so a blow-up stops the run before the next sampling and before any checkpoint: a
   checkpoint never holds NaN weights. AdamW with a huge learning rate, or float16 on a CPU, can
   overflow the weights even when the loss and the gradient were finite.
3. An error before the first step (a bad file, a missing model, a prompt too long) keeps its own type
   (ValueError, OSError ...) so a caller can tell it apart; from the first step on it is wrapped in
   `RunFailed`, which keeps the original as `.cause`.
4. The command line turns every known error into "error: <message>" on stderr and exit status 1, without
   a traceback (`known_error`); `--debug` shows the traceback too.
5. A signal ends a run like a failure (`StopSignals`, `RunStopped`): SIGTERM, SIGINT (Ctrl-C) and SIGHUP,
   how Slurm, Kubernetes, `timeout` and a closed terminal stop a job, only set a flag; the run stops at
   the next safe point (the start of a step, so never inside an update or a checkpoint write), writes
   summary.json with "status": "stopped", the signal, the last completed step, the last checkpoint and
   the command that resumes it, and exits with 128 + the signal's number, without a traceback. Under
   torchrun the ranks agree (one all-reduce per step) and all stop at the same step. A second signal
   stops at once (KeyboardInterrupt), still recording "stopped" in summary.json. Handlers are installed
   only in the main thread, for the length of `train`, and the previous ones are restored after it.
   With `--save-on-stop` a checkpoint of the last completed step is written before stopping.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist

from grpo_lib import dist
from grpo_lib.run.layout import SUMMARY_FILE, run_dir_of
from grpo_lib.run.runlog import write_summary

CHECKED_METRICS = ("loss", "grad_norm", "kl", "reward")
"""metrics that must stay finite; the run stops at the first step where one is NaN or inf"""


def non_finite(record: Mapping[str, float]) -> dict[str, float]:
    """The `CHECKED_METRICS` of a record that are NaN or inf (empty when the step is healthy)."""
    return {k: record[k] for k in CHECKED_METRICS if not math.isfinite(record[k])}


class NonFiniteMetricError(FloatingPointError):
    """A NaN or inf loss, grad norm, KL or reward: the run stops at that step (the message names both)."""

    def __init__(self, step: int, bad: Mapping[str, float], last_checkpoint: Path | None):
        self.step, self.bad, self.last_checkpoint = step, dict(bad), last_checkpoint
        what = ", ".join(f"{k} = {v}" for k, v in bad.items())
        super().__init__(f"training stopped at step {step}: non-finite {what}; {_keep(last_checkpoint)}. Try a lower "
                         "--lr or --max-grad-norm, or check the reward functions.")


class NonFiniteWeightsError(NonFiniteMetricError):
    """The weights blew up in an update (the loss and gradient before it may have been finite): they hold
    NaN or inf, or they are so large that the model's logits overflow."""

    def __init__(self, step: int, what: str, last_checkpoint: Path | None):
        self.step, self.bad, self.last_checkpoint = step, {"weights": math.nan}, last_checkpoint
        FloatingPointError.__init__(
            self, f"training stopped at step {step}: {what}, so the next sampling would fail and no checkpoint "
            f"is written with them; {_keep(last_checkpoint)}. Try a lower --lr or --max-grad-norm, or --dtype "
            "float32 (float16 overflows easily, especially on a CPU).")


class RunFailed(RuntimeError):
    """A run stopped by an exception from its first step on; `.cause` is the original exception.

    Attributes:
        step: the 1-based step it happened in (the last step for the final evaluation or save).
        phase: what the run was doing ("sampling", "the policy update", "writing checkpoint step-000004" ...).
        cause: the exception.
        last_checkpoint: the newest checkpoint written before it, or None.
    """

    def __init__(self, step: int, phase: str, cause: BaseException, last_checkpoint: Path | None):
        self.step, self.phase, self.cause, self.last_checkpoint = step, phase, cause, last_checkpoint
        super().__init__(f"training stopped at step {step} ({phase}): {describe(cause)}; {_keep(last_checkpoint)}.")


class RunStopped(RuntimeError):
    """A run stopped by a signal at a safe point (choice 5). `.signal_name`, `.step` (the last completed
    step), `.last_checkpoint`, `.resume_command` (None without a checkpoint), `.exit_status` = 128 + signal."""

    def __init__(self, signum: int, step: int, last_checkpoint: Path | None, resume_command: str | None):
        self.signum, self.signal_name = signum, signal_name(signum)
        self.step, self.last_checkpoint, self.resume_command = step, last_checkpoint, resume_command
        self.exit_status = 128 + signum
        how = (f"the last checkpoint is {last_checkpoint}; continue with: {resume_command}"
               if resume_command else "no checkpoint was written before it (see --save-every and --save-on-stop): "
               "start again, with --overwrite in the same folder")
        super().__init__(f"the run was stopped by {self.signal_name} after step {step}; {how}.")


class StopNow(KeyboardInterrupt):
    """A second stop signal: the run ends at once, wherever it is (choice 5). `.exit_status` = 128 + signal."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum, self.exit_status = signum, 128 + signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")


class StopSignals:
    """Turn SIGTERM, SIGINT and SIGHUP into a stop at the next safe point (choice 5), while in a `with` block.

    The first signal sets `.received` and prints one line; a second raises `StopNow` at once.
    `FailureRecorder.stop_point` (called at the safe points, on every rank) asks `pending` and raises
    `RunStopped` when any rank got a signal.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():   # signal.signal works only there
            for name in STOP_SIGNALS:
                if hasattr(signal, name):
                    sig = getattr(signal, name)
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise StopNow(f"{signal_name(signum)} received a second time: stopping at once", signum)
        self.received = signum
        print(f"\n{signal_name(signum)} received: the run stops after the current step and records it "
              "(send it again to stop at once)", file=sys.stderr, flush=True)

    def pending(self, device: str | torch.device = "cpu") -> int | None:
        """The signal number when this rank or any other got one (one all-reduce under torchrun), else None."""
        if not dist.is_initialized():                 # one process: no tensor, no device sync
            return self.received
        here = torch.tensor(float(self.received or 0), device=device)
        tdist.all_reduce(here, op=tdist.ReduceOp.MAX)
        return int(here.item()) or None


def resume_command(out: Path, last_checkpoint: Path | None, world_size: int) -> str | None:
    """The command that continues a run in `out` from its last checkpoint (None without one)."""
    if last_checkpoint is None:
        return None
    launcher = (f"torchrun --standalone --nproc_per_node={world_size} -m grpo_lib" if world_size > 1
                else "python -m grpo_lib")
    run = run_dir_of(last_checkpoint)
    if run is not None and os.path.realpath(run) == os.path.realpath(out):
        return f"{launcher} --resume {out}"                        # the run folder: its newest good checkpoint
    return f"{launcher} --resume {last_checkpoint} --output-dir {out}"


def _keep(last_checkpoint: Path | None) -> str:
    return (f"the last good checkpoint is {last_checkpoint} (resume with --resume {last_checkpoint})"
            if last_checkpoint is not None else "no checkpoint was written before it (see --save-every)")


def describe(e: BaseException, limit: int = 600) -> str:
    """'TypeName: message' on one line (whitespace collapsed), at most `limit` characters."""
    text = " ".join(str(e).split()).rstrip(".")
    if len(text) > limit:
        text = text[:limit] + " ..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def parameters_finite(parameters: Iterable[torch.Tensor]) -> bool:
    """True when every parameter is finite: one fused max-|w| per tensor (NaN propagates), one host sync."""
    params = [p.detach() for p in parameters]
    if not params:
        return True
    maxima = torch._foreach_norm(params, ord=math.inf)       # per tensor: max |w| (inf or NaN if any is)
    return bool(torch.isfinite(torch.stack([m.float() for m in maxima])).all())


def max_abs_weight(parameters: Iterable[torch.Tensor]) -> float:
    """max |w| over all parameters (for the message when the weights blew up)."""
    params = [p.detach() for p in parameters]
    return max((m.float().item() for m in torch._foreach_norm(params, ord=math.inf)), default=0.0)


@torch.no_grad()
def logits_finite(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> bool:
    """True when the model's logits for one sequence are finite: a one-row forward pass that catches
    weights that are finite but so large (a learning rate of 1e10) that every forward overflows.

    Only the last position's logits are computed (`logits_to_keep=1`: one vocabulary row, not P+T of
    them); every layer still runs on the whole row, so an overflow anywhere in it shows there."""
    logits = model(input_ids=input_ids[:1], attention_mask=attention_mask[:1], logits_to_keep=1).logits
    return bool(torch.isfinite(logits).all())


class FailureRecorder:
    """Where a run is (step, phase, last checkpoint), and what to write and raise when it fails."""

    def __init__(self, out: Path, config: Mapping[str, Any], world_size: int, resumed_from: Any = None,
                 skipped: list[str] | None = None, write: bool = True):
        self.out, self.config, self.world_size, self.write = out, dict(config), world_size, write
        self.step, self.phase, self.in_loop = 0, "setup", False
        self.last_checkpoint: Path | None = resumed_from
        self.resumed_from, self.skipped = resumed_from, list(skipped or [])
        self.accuracy_before: float | None = None
        self.signals: StopSignals | None = None

    def resume_record(self) -> dict[str, Any]:
        """What summary.json records about a resume: where from, and the damaged checkpoints skipped."""
        if self.resumed_from is None:
            return {}
        return {"resumed_from": str(self.resumed_from), "skipped_checkpoints": self.skipped}

    def stop_point(self, completed: int, device: str | torch.device = "cpu",
                   save: Callable[[], Path | None] | None = None) -> None:
        """A safe point (choice 5): raise `RunStopped` (after `completed` steps) when any rank got a signal;
        `save` (--save-on-stop, called on every rank) writes a checkpoint of this point first."""
        signum = None if self.signals is None else self.signals.pending(device)
        if signum is not None:
            if save is not None:
                self.phase = f"writing checkpoint step-{completed:06d} (--save-on-stop)"
                self.last_checkpoint = save()
            raise RunStopped(signum, completed, self.last_checkpoint,
                             resume_command(self.out, self.last_checkpoint, self.world_size))

    def stopped(self, e: RunStopped | StopNow) -> None:
        """Record a stop (`RunStopped`, or `StopNow` from a second signal) in summary.json (rank 0)."""
        if isinstance(e, RunStopped):
            message, step, by = str(e), e.step, e.signal_name
        else:
            step = max(self.step - 1, 0) if self.in_loop else 0
            by = signal_name(e.signum) if isinstance(e, StopNow) else "KeyboardInterrupt"
            message = (f"the run was stopped at once by a second signal, during step {self.step} ({self.phase}); "
                       + (f"the last checkpoint is {self.last_checkpoint}; continue with: "
                          f"{resume_command(self.out, self.last_checkpoint, self.world_size)}"
                          if self.last_checkpoint is not None else "no checkpoint was written before it"))
        if self.write:
            summary = {"status": "stopped", "stopped_by": by, "message": message, "stopped_after_step": step,
                       "stopped_during": self.phase,
                       "last_checkpoint": None if self.last_checkpoint is None else str(self.last_checkpoint),
                       "resume_command": resume_command(self.out, self.last_checkpoint, self.world_size),
                       "world_size": self.world_size, "accuracy_before": self.accuracy_before,
                       "preset": self.config.get("preset"), "model": self.config.get("model"),
                       **self.resume_record(), "config": self.config}
            try:
                write_summary(self.out, summary)
            except OSError as write_error:
                print(f"warning: could not write {self.out / SUMMARY_FILE}: {describe(write_error)}", flush=True)

    def fail(self, e: Exception) -> Exception | None:
        """Record failure `e` in summary.json (rank 0); return the exception to raise (None: raise `e` itself)."""
        error: Exception | None = None
        if isinstance(e, (NonFiniteMetricError, RunFailed)):
            message = str(e)
        elif self.in_loop:
            error = RunFailed(self.step, self.phase, e, self.last_checkpoint)
            message = str(error)
        else:
            message = f"the run stopped before step 1 ({self.phase}): {describe(e)}"
        if self.write:
            summary = {"status": "failed", "error": message, "failed_step": self.step or None,
                       "failed_during": self.phase,
                       "last_checkpoint": None if self.last_checkpoint is None else str(self.last_checkpoint),
                       "world_size": self.world_size, "accuracy_before": self.accuracy_before,
                       "preset": self.config.get("preset"), "model": self.config.get("model"),
                       **self.resume_record(), "config": self.config}
            try:
                write_summary(self.out, summary)
            except OSError as write_error:                  # a full disk: the message still reaches the user
                print(f"warning: could not write {self.out / SUMMARY_FILE}: {describe(write_error)}", flush=True)
        return error


KNOWN_ERRORS = (ValueError, OSError, ImportError, RunFailed, NonFiniteMetricError, RunStopped)
"""what the command line reports as a message (exit 1) rather than a traceback; CheckpointError,
OutputDirError and ConnectionError are among them (ValueError / OSError subclasses)"""


def known_error(e: BaseException) -> bool:
    """True for the errors the command line reports without a traceback (`KNOWN_ERRORS`)."""
    return isinstance(e, KNOWN_ERRORS)
