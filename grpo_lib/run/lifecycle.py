"""`Run`: everything that happens around a GRPO step, so that grpo_lib.train can read as Algorithm 1.

    with Run(cfg, make_optimizer, ...) as run:        # start: processes, output folder + lock, resume, data and
        for step, ref_model in run.steps():           #   model, fingerprint, evaluation before; π_ref ← π_θ per iteration
            with run.phase("sampling"): ...           # what the run is doing, for the failed summary and the timings
            run.record(step, batch, updates)          # metrics, the non-finite stop, callback, evaluation, checkpoint
        return run.finish()                           # evaluation after, the final model, summary.json
                                                      # any exception: summary.json "failed" (or "stopped"), one error

Choices made here (1-2 tested in tests/test_train.py, tests/test_failures.py and tests/test_checkpoint.py; 3-3
tested in tests/test_failures.py, tests/test_ddp.py and tests/test_lock_and_signals.py):
1. A run's lifecycle has one owner: `Run` starts it (bad settings fail before the process group and any
   model; the output folder is locked and checked before the data and the model load), and ends it the
   same way whatever stops it (`__exit__`: the files closed, the threads and signal handlers restored,
   summary.json written by grpo_lib.run.failures, the lock released). The algorithm never touches files.
2. The weights fingerprint (`weights_fingerprint`: Σ w·(1 + position/numel) in fp64) of rank 0's starting
   model is recorded in every checkpoint and compared on resume, so a run never silently rebuilds π_ref
   from a different starting model.
3. The test fault hook is a `Run` option only tests set (`faults`; `train` passes none, so the
   GRPO_LIB_FAULT environment variable is read, which reaches a run a test starts from the command line or
   under torchrun): "raise@S" or "nan@S", optionally ":rankR" (comma-separated for several),
   raises on (or poisons the advantages of) step S as its policy update starts, so the tests reach the
   failure paths; "pause@S" waits there for a stop signal (grpo_lib.run.failures choice 5), so a test can
   send one mid-run from outside. Real runs leave both unset.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from grpo_lib import dist, runcache
from grpo_lib.config import GRPOConfig
from grpo_lib.data import build_prompt, check_prompts_fit, load_problems, max_context
from grpo_lib.dynamic_sampling import draw_problems
from grpo_lib.evaluation import EvalResult, evaluate
from grpo_lib.lora import apply_lora, is_adapter, merge_adapters, reference_model, require_peft
from grpo_lib.models import count_parameters, load_policy
from grpo_lib.precision import dtype_name, resolve_precision
from grpo_lib.rewards import reward_functions
from grpo_lib.rollout import RewardFunc, ScoredRollout, set_gradient_checkpointing
from grpo_lib.run import checkpoint, rundir
from grpo_lib.run.failures import (FailureRecorder, NonFiniteMetricError, NonFiniteWeightsError, RunStopped, StopNow,
                                   StopSignals, logits_finite, max_abs_weight, non_finite, parameters_finite)
from grpo_lib.run.layout import MODEL_SUBDIR, run_dir_of
from grpo_lib.run.runlog import RunLog, completed_summary, step_metrics, versions
from grpo_lib.threads import ThreadGovernor

FAULT_ENV = "GRPO_LIB_FAULT"
"""the test hook's variable (choice 3): "raise@S", "nan@S", "pause@S", optionally ":rankR"; unset in real runs"""
UPDATE_PHASE = "the policy update"
"""the phase whose start the test hook acts at (after scoring, before the μ updates)"""


@dataclass
class TrainResult:
    """What `train` returns: per-step history, evaluations, the summary, and the trained model.

    `result["reward"]` is the list of a metric over steps (None where a step lacks it).

    Attributes:
        history: one dict per step (the records of metrics.jsonl).
        evals: one dict per evaluation: step and the EvalResult fields.
        summary: the content of summary.json.
        eval_before, eval_after: EvalResult before and after training.
        model, tokenizer: the trained policy (unwrapped) and its tokenizer.
        output_dir: where the files were written.
    """

    history: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    summary: dict[str, Any]
    eval_before: EvalResult
    eval_after: EvalResult
    model: nn.Module = field(repr=False)
    tokenizer: Any = field(repr=False)
    output_dir: Path | None = None

    def __getitem__(self, key: str) -> list:
        if not any(key in rec for rec in self.history):
            raise KeyError(f"no metric {key!r}; metrics: {sorted(self.history[0]) if self.history else []}")
        return [rec.get(key) for rec in self.history]


class Run:
    """One training run around the algorithm: `with Run(...) as run:` starts it, `finish()` ends it.

    Args:
        cfg: the run's settings.
        make_optimizer: (model, cfg) -> (optimizer, scheduler); called once the model is loaded (the
            optimizer lives for the whole run; a resumed run restores its state from the checkpoint).
        model, tokenizer: an already loaded policy and tokenizer; None loads cfg.model.
        reward_funcs: name -> reward function; None uses cfg.reward_funcs (grpo_lib.rewards).
        callback: called on every rank after every step with (metrics record, scored rollout).
        faults: the test fault hook (choice 3); None reads GRPO_LIB_FAULT. Only tests set either.

    Attributes (once started): model (π_θ, unwrapped), policy (DDP-wrapped under torchrun), tokenizer,
    optimizer, scheduler, precision, reward_funcs, train_problems, rank, world_size, N_global, log,
    eval_before; `cached`: the TrainResult of this exact run when a test session already ran it
    (grpo_lib.runcache), else None.
    """

    def __init__(self, cfg: GRPOConfig, make_optimizer: Callable[[nn.Module, GRPOConfig], tuple[Any, Any]], *,
                 model: nn.Module | None = None, tokenizer: Any = None,
                 reward_funcs: Mapping[str, RewardFunc] | None = None,
                 callback: Callable[[dict[str, Any], ScoredRollout], None] | None = None, faults: str | None = None):
        self.cfg, self.make_optimizer, self.callback = cfg, make_optimizer, callback
        self.model, self.tokenizer, self._reward_funcs = model, tokenizer, reward_funcs
        self.faults = parse_faults(os.environ.get(FAULT_ENV, "") if faults is None else faults)
        self.plain = all(arg is None for arg in (model, tokenizer, reward_funcs, callback))
        self.cached: TrainResult | None = None
        self.result: TrainResult | None = None
        self.ref_model: nn.Module | None = None
        self.seconds: dict[str, float] = {}
        self.log: RunLog | None = None
        self.lock: rundir.RunLock | None = None
        self._signals: StopSignals | None = None
        self.governor: ThreadGovernor | None = None

    # ------------------------------------------------------------------ start
    def __enter__(self) -> "Run":
        cfg = self.cfg
        self.t_start = time.perf_counter()
        # bad settings fail here, before the process group and any model: the batch (naming --N) and the precision
        cfg.N_per_rank(dist.env_rank()[2])
        self.N_global = cfg.global_N(dist.env_rank()[2])
        self.precision = resolve_precision(cfg.dtype, cfg.precision,
                                           dist.resolve_device(cfg.device, dist.env_rank()[1]))  # names --dtype / --precision
        self.info = info = dist.init_distributed(cfg.device, timeout_minutes=cfg.dist_timeout_minutes)
        self.rank, self.world_size = info.rank, info.world_size
        torch.manual_seed(cfg.seed)                  # same model init on every rank (and DDP broadcasts rank 0's)
        # every rank must see the checkpoint: if one cannot, all fail now, naming the rank and the path
        self.ckpt = ckpt = (checkpoint.open_checkpoint_on_every_rank(cfg.resume, cfg.to_dict(), self.world_size)
                            if cfg.resume else None)
        # the output folder, checked (and cleared with --overwrite) before any heavy work (grpo_lib.run.rundir)
        out = Path(cfg.output_dir)
        self.lock = self._take_output_dir(out) if info.is_main else None   # one run per folder, held to the end
        self.failure = FailureRecorder(out, cfg.to_dict(), self.world_size, None if ckpt is None else ckpt.path,
                                       None if ckpt is None else ckpt.skipped, write=info.is_main)
        try:
            # within one test session (GRPO_RUN_CACHE, set only by the test command) a run with exactly these
            # settings that already finished is copied instead of trained again (grpo_lib.runcache)
            self.cache = runcache.reusable(cfg, world_size=self.world_size, plain=self.plain)
            if self.cache and (cached := runcache.load(cfg)) is not None:
                self.cached = cached
                return self
            self._signals = StopSignals().__enter__()   # SIGTERM/SIGINT/SIGHUP: stop at the next step (failures choice 5)
            self.failure.signals = self._signals
            self._start()
        except BaseException as e:
            if not self.__exit__(type(e), e, e.__traceback__):
                raise
        return self

    def _take_output_dir(self, out: Path) -> rundir.RunLock:
        """Lock the output folder (grpo_lib.run.rundir choice 4), then check it (and clear it with --overwrite)."""
        lock = rundir.lock_output_dir(out)
        try:
            if lock.taken_over:
                dist.print0(f"note: took over the lock of {out} from a run that ended without releasing it "
                            f"(killed?): {rundir.describe_holder(lock.taken_over)}")
            here = self.ckpt is not None and run_dir_of(self.ckpt.path)
            continuing = bool(here) and os.path.realpath(here) == os.path.realpath(out)
            cleared = rundir.prepare_output_dir(out, overwrite=self.cfg.overwrite, continuing=continuing)
            if cleared:
                dist.print0(f"--overwrite: deleted the earlier run's {', '.join(cleared)} in {out}")
        except BaseException:
            lock.release()
            raise
        return lock

    def _start(self) -> None:
        """Data and model, the optimizer, DDP, the checkpoint's state, the evaluation before training."""
        cfg, info, ckpt, precision, failure = self.cfg, self.info, self.ckpt, self.precision, self.failure
        world, N_local = self.world_size, cfg.N_per_rank(self.world_size)
        failure.phase = "loading the data and the model"
        start_reference = self._load_data_and_model()
        failure.stop_point(0 if ckpt is None else ckpt.step, info.device)   # a signal while loading: stop before evaluating
        self.reward_funcs = (dict(self._reward_funcs) if self._reward_funcs is not None
                             else reward_functions(cfg.reward_funcs))
        self.n_params = count_parameters(self.model)
        attn = getattr(self.model.config, "_attn_implementation", None) or "eager"
        self.run_info = {"world_size": world, "device": info.device, "attn_implementation": attn,
                         **precision.to_dict(), "prompts_per_device": N_local, "completions_per_device": N_local * cfg.G,
                         "global_prompts": self.N_global, "global_batch": self.N_global * cfg.G,
                         "micro_batch_size": cfg.micro_batch_size}
        dist.print0(f"GRPO | preset {cfg.preset} | model {self.model_name} ({self.n_params:,} parameters) on "
                    f"{info.device} x {world} process(es) | attention {attn}")
        dist.print0(f"precision: {precision.describe()}")
        dist.print0(f"batch: {N_local} prompts x G = {cfg.G} = {N_local * cfg.G} completions per GPU (process); "
                    f"global batch over {world} process(es): {self.N_global} prompts = {self.N_global * cfg.G} "
                    f"completions per step; {cfg.total_steps} steps x mu = {cfg.mu} updates; "
                    f"{len(self.train_problems)} training / {len(self.eval_problems)} held-out problems")
        if ckpt is not None:
            for note in ckpt.skipped:                # a damaged newer checkpoint is never passed over silently
                dist.print0(f"warning: skipped damaged checkpoint {note}")
            dist.print0(f"resuming from {ckpt.path} after step {ckpt.step}")
        failure.phase = "opening the output files"
        self.log = RunLog(cfg, info.is_main, history=ckpt.history if ckpt is not None else [],   # a resumed run continues
                          evals=ckpt.evals if ckpt is not None else [])
        # CPU threads: the usable cores, one given back per core other programs keep busy (grpo_lib.threads);
        # the caller's own count is restored when the run ends (a notebook keeps its own)
        self.governor = ThreadGovernor.for_run(cfg.num_threads, world, info.device)
        self.optimizer, self.scheduler = self.make_optimizer(self.model, cfg)
        # the DDP constructor broadcasts rank 0's weights, so every rank starts from the same π_θ
        self.policy = self.model if world == 1 else DistributedDataParallel(
            self.model, device_ids=[info.local_rank] if info.device.startswith("cuda") else None)
        if start_reference is not None:
            dist.broadcast_module(start_reference)   # π_ref = rank 0's starting model on every rank
        self.start_step = 0
        if ckpt is not None:                         # AdamW, the schedule, π_ref, this rank's RNG
            self.ref_model = ckpt.resume(self.model, self.optimizer, self.scheduler, rank=self.rank, beta=cfg.beta,
                                         steps_per_iteration=cfg.steps, start_reference=start_reference,
                                         reference_dtype=precision.reference_dtype)
            self.start_step = ckpt.step
        # evaluate before training (after DDP's broadcast; a resumed run kept the first run's evaluation)
        failure.phase = "evaluation before training"
        self.eval_before = (self.evaluate(0, "eval before") if ckpt is None
                            else EvalResult.from_dict(ckpt.state["eval_before"]))
        failure.accuracy_before = self.eval_before.strict_accuracy
        failure.stop_point(self.start_step, info.device)

    def _load_data_and_model(self) -> nn.Module | None:
        """Problems, then π_θ (in the master dtype) and its tokenizer, checked against each other before training.

        Returns π_ref rebuilt from the starting model when a resumed checkpoint needs it (it lies in the first
        outer iteration, where π_ref was not saved: grpo_lib.run.checkpoint choice 4), else None; records
        `weights_fingerprint` of rank 0's starting model (choice 2).
        """
        cfg, ckpt, precision = self.cfg, self.ckpt, self.precision
        # problems first: a missing data file fails before a model download
        self.train_problems = load_problems(cfg.task, "train", data_dir=cfg.data_dir)
        self.eval_problems = load_problems(cfg.task, "test", data_dir=cfg.data_dir, n=cfg.eval_n)
        if cfg.lora_r:
            require_peft()                           # before the model loads
        if self.model is None:
            self.model, self.tokenizer = load_policy(cfg.model, device=self.info.device, dtype=precision.param_dtype,
                                                     compute_dtype=precision.compute_dtype)
            self.model_name = cfg.model
        elif self.tokenizer is None:
            raise ValueError("train(cfg, model=...) needs the model's tokenizer too: train(cfg, model=m, tokenizer=tok)")
        else:
            self.model.to(device=self.info.device, dtype=precision.param_dtype)
            self.model_name = f"{type(self.model).__name__} passed to train()"
        if cfg.lora_r:
            self.model = apply_lora(self.model, cfg)   # LoRA adapters (peft); the rest frozen
        model = self.model
        # rank 0's starting weights are the run's (DDP broadcasts them); recorded in checkpoints whose π_ref is them
        self.start_fingerprint = dist.all_gather_objects(weights_fingerprint(model))[0]
        start_reference = None
        if ckpt is not None:
            initial = ckpt.reference_needed(cfg.beta, cfg.steps) == "initial"
            if initial or cfg.lora_r:                # LoRA: the base weights come from the starting model
                ckpt.check_fingerprint(self.start_fingerprint, cfg.resume, lora_run=bool(cfg.lora_r))
            if initial:                              # before the checkpoint's weights (LoRA: the adapters off)
                start_reference = reference_model(model, precision.reference_dtype, first_iteration=True)
            ckpt.load_model(model)                   # π_θ as it was after step ckpt.step (LoRA: its adapters)
        if cfg.gradient_checkpointing:
            set_gradient_checkpointing(model, True)  # for the updates; generation switches it off
        # every prompt plus max_completion_length must fit the model's context
        for what, problems in (("training prompt", self.train_problems), ("evaluation prompt", self.eval_problems)):
            prompts = [build_prompt(self.tokenizer, p["question"], cfg.system_prompt) for p in problems]
            check_prompts_fit(self.tokenizer, prompts, cfg.max_completion_length, max_context(model.config), what=what)
        return start_reference

    # ------------------------------------------------------------------ the steps
    def steps(self) -> Iterator[tuple[int, nn.Module | None]]:
        """Algorithm 1's two outer loops as one: (step, π_ref) for the 0-based steps still to run (I·M in all).

        Before each step: a safe point for a stop signal (--save-on-stop checkpoints the point first), and at
        the start of every outer iteration π_ref ← π_θ (a frozen copy, bf16 in mixed precision; None with β = 0).
        """
        cfg, failure = self.cfg, self.failure
        self.log.start_steps(self.start_step)
        failure.in_loop = True
        t_train = time.perf_counter()
        for step in range(self.start_step, cfg.total_steps):   # I outer iterations of M steps, as one loop
            saved_here = step == self.start_step or (cfg.save_every and step % cfg.save_every == 0)
            # a signal: stop here, between steps (failures choice 5); --save-on-stop checkpoints this point first
            failure.stop_point(step, self.info.device, save=None if not cfg.save_on_stop or saved_here else (
                lambda: self._save(step - 1)))
            if self.governor is not None:
                self.governor.update()                      # fewer threads while other programs hold cores
            self.t_step = time.perf_counter()
            failure.step, failure.phase = step + 1, "sampling"
            if step % cfg.steps == 0 and cfg.beta > 0:      # π_ref ← π_θ at the start of every outer iteration
                self.ref_model = None                       # free the old copy first
                # bf16 in mixed precision; with LoRA, the base model (adapters off) in the first iteration
                self.ref_model = reference_model(self.model, self.precision.reference_dtype,
                                                 first_iteration=step < cfg.steps)
            yield step, self.ref_model
        self.log.end_steps()
        self.train_seconds = time.perf_counter() - t_train
        self.ref_model = None

    def prompts(self, step: int, draw: int = 0) -> tuple[list[dict], list[str]]:
        """This rank's problems of `step` (N/K of the step's N, the same on any number of ranks) and their prompts;
        draw d >= 1: the extra prompts of DAPO's dynamic sampling (grpo_lib.dynamic_sampling.draw_problems)."""
        cfg = self.cfg
        problems = draw_problems(self.train_problems, step, draw, self.N_global, cfg.seed, self.rank, self.world_size,
                                 cfg.dynamic_sampling_max_draws)
        return problems, [build_prompt(self.tokenizer, p["question"], self.cfg.system_prompt) for p in problems]

    @contextlib.contextmanager
    def phase(self, name: str, batch: ScoredRollout | None = None) -> Iterator[None]:
        """What the run is doing now (named in summary.json and the error if it fails here), and its wall time.

        `batch` is read only by the test fault hook, at the start of UPDATE_PHASE (choice 3)."""
        self.failure.phase = name
        if self.faults and name == UPDATE_PHASE and batch is not None:
            inject_fault(self.faults, self.failure.step, self.rank, batch, self._signals)
        t0 = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - t0

    def check_weights(self, when: str) -> None:
        """Stop when an update left NaN or inf in the weights: one fused check, before anything uses them."""
        if not parameters_finite(self.model.parameters()):
            raise NonFiniteWeightsError(self.failure.step, f"the weights hold NaN or inf {when}",
                                        self.failure.last_checkpoint)

    def record(self, step: int, batch: ScoredRollout, updates: list[dict[str, float]]) -> dict[str, Any]:
        """After the updates of `step`: the logits check, the metrics record (all ranks), the non-finite stop,
        the callback, an evaluation every eval_every steps, a checkpoint every save_every steps."""
        cfg, failure = self.cfg, self.failure
        self._check_logits(batch.rollout, step)     # before the next sampling or a save
        record = self._step_record(batch, updates, step)
        record.update(batch.metrics)                 # the options' metrics: dynamic_sampling/*, sampling/*
        self.log.step(record)
        bad = non_finite(record)                     # same on every rank: the record is all-reduced
        if bad:                                      # __exit__ writes the failed summary.json
            raise NonFiniteMetricError(step + 1, bad, failure.last_checkpoint)
        if self.callback is not None:
            failure.phase = "the step's callback"
            self.callback(record, batch)
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.total_steps:
            failure.phase = "evaluation"
            self.evaluate(step + 1, f"eval @ {step + 1}")
        if cfg.save_every and (step + 1) % cfg.save_every == 0:
            failure.phase = f"writing checkpoint step-{step + 1:06d}"
            failure.last_checkpoint = self._save(step)
        return record

    def evaluate(self, step: int, desc: str) -> EvalResult:
        """The held-out evaluation (greedy), recorded in evals.jsonl."""
        cfg, t0 = self.cfg, time.perf_counter()
        with self.precision.context():               # bf16 matmuls on the current fp32 weights (mixed precision)
            result = evaluate(self.model, self.tokenizer, self.eval_problems, system_prompt=cfg.system_prompt,
                              max_new_tokens=cfg.max_completion_length, batch_size=cfg.eval_batch_size,
                              progress=cfg.progress, desc=desc)
        self.log.eval(step, result, time.perf_counter() - t0)
        return result

    def _check_logits(self, rollout: Any, step: int) -> None:
        """Stop at `step` when the updated weights, though finite, are so large (--lr 1e10) that the logits of
        one row of this step's batch overflow: one forward pass of one sequence, one all-reduce.

        The forward pass runs under the run's precision context, like every other one: outside autocast, fp32
        master weights would reach the attention in fp32, which FlashAttention-2 refuses (a crash at step 1)."""
        with self.precision.context():
            bad_here = not logits_finite(self.model, rollout.input_ids, rollout.attention_mask)
        if dist.all_reduce_sum(torch.tensor(float(bad_here), device=self.info.device)).item():   # every rank stops
            raise NonFiniteWeightsError(step + 1, "the updated weights give NaN or inf logits (largest |w| = "
                                        f"{max_abs_weight(self.model.parameters()):.3g})", self.failure.last_checkpoint)

    def _step_record(self, batch: ScoredRollout, updates: list[dict[str, float]], step: int) -> dict[str, Any]:
        """The metrics record of one step (grpo_lib.run.runlog.METRICS), over the completions and tokens of all ranks."""
        cfg, device = self.cfg, self.info.device
        record = step_metrics(batch, updates, cfg.G, device=device)
        record.update(dist.all_reduce_metrics({"generation_seconds": batch.rollout.generation_seconds,
                                               "scoring_seconds": batch.scoring_seconds,
                                               "update_seconds": self.seconds.get(UPDATE_PHASE, 0.0)},
                                              op="mean", device=device))
        tokens = record["completions/mean_length"] * self.N_global * cfg.G
        step_seconds = time.perf_counter() - self.t_step
        return {"step": step + 1, "iteration": step // cfg.steps + 1, **record,
                "learning_rate": self.scheduler.get_last_lr()[0], "step_seconds": step_seconds,
                "tokens_per_second": tokens / step_seconds, "wall_seconds": time.perf_counter() - self.t_start}

    def _save(self, step: int) -> Path | None:
        """Checkpoint after `step` (rank 0 writes, all ranks send their RNG), then keep the newest save_total_limit.

        π_ref is saved only when `checkpoint.reference_at` says so (inside an outer iteration after the first);
        inside the first it is the starting model, recorded as "initial" with the starting weights' fingerprint.
        """
        cfg = self.cfg
        reference = checkpoint.reference_at(step + 1, cfg.beta, cfg.steps)
        state = {"step": step + 1, "iteration": step // cfg.steps + 1, "world_size": self.world_size,
                 "config": cfg.to_dict(), "history": self.log.history, "evals": self.log.evals,
                 "eval_before": self.eval_before.to_dict(), "reference": reference,
                 "start_fingerprint": self.start_fingerprint, "run": self.run_info, "versions": versions()}
        saved = checkpoint.save_checkpoint(self.log.out, step + 1, model=self.model, optimizer=self.optimizer,
                                           scheduler=self.scheduler,
                                           reference=self.ref_model if reference == "saved" else None,
                                           state=state, tokenizer=self.tokenizer, keep=cfg.save_total_limit)
        dist.print0(f"checkpoint: {saved}")
        return saved

    # ------------------------------------------------------------------ end
    def finish(self) -> TrainResult:
        """Evaluate after training, save the final model (rank 0), write summary.json: the run's TrainResult."""
        cfg, failure, log, precision = self.cfg, self.failure, self.log, self.precision
        failure.phase = "evaluation after training"
        eval_after = self.evaluate(cfg.total_steps, "eval after")
        summary = completed_summary(cfg, model_name=self.model_name, world_size=self.world_size,
                                    device=self.info.device, n_params=self.n_params, eval_before=self.eval_before,
                                    eval_after=eval_after, train_seconds=self.train_seconds,
                                    wall_seconds=time.perf_counter() - self.t_start)
        summary.update(failure.resume_record())
        summary.update(self.run_info, saved_dtype=cfg.save_dtype or dtype_name(precision.param_dtype))
        if self.governor is not None:
            summary.update(self.governor.summary())     # steps_at_num_threads
        failure.phase = "saving the final model"
        self.model = merge_adapters(self.model)      # LoRA: W + (α/r)·B A, a plain model (else unchanged)
        if self.info.is_main:   # in the master weights' dtype (fp32 in mixed precision) unless --save-dtype
            checkpoint.save_pretrained_model(self.model, self.tokenizer, log.out / MODEL_SUBDIR, dtype=cfg.save_dtype)
            summary["wall_seconds"] = time.perf_counter() - self.t_start
            log.summary(summary)
            dist.print0(f"accuracy {self.eval_before.strict_accuracy:.1%} -> {eval_after.strict_accuracy:.1%} "
                        f"in {summary['wall_seconds']:.0f} s; outputs in {log.out}")
        dist.barrier()
        self.result = TrainResult(history=log.history, evals=log.evals, summary=summary, eval_before=self.eval_before,
                                  eval_after=eval_after, model=self.model, tokenizer=self.tokenizer, output_dir=log.out)
        return self.result

    def __exit__(self, kind: Any, e: BaseException | None, tb: Any) -> bool:
        """End the run whatever ended it: close the files, restore threads and signal handlers, then record a
        stop (summary.json "stopped") or a failure ("failed", one clear error), and release the folder's lock."""
        try:
            if self.log is not None:
                self.log.close()
            if self.governor is not None:
                self.governor.restore()
            if self._signals is not None:
                self._signals.__exit__(None, None, None)
            if e is None and self.result is not None:
                self.model.eval()
                if self.cache:
                    runcache.store(self.cfg, self.result)
            elif isinstance(e, (RunStopped, StopNow)):   # a signal: summary.json "stopped", how to resume
                self.failure.stopped(e)
            elif isinstance(e, Exception):               # every failure: summary.json "failed", one clear error
                wrapped = self.failure.fail(e)
                if wrapped is not None:
                    raise wrapped from e
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None
        return False


def weights_fingerprint(model: nn.Module) -> float:
    """A cheap number that identifies a model's weights: Σ over parameters of Σ w·(1 + position/numel), in fp64.
    LoRA adapters are left out: with LoRA it identifies the base weights, what a LoRA checkpoint does not hold.

    Recorded in checkpoints whose π_ref is the starting model (not saved) and in LoRA checkpoints, and compared
    on resume (choice 2).
    """
    total = 0.0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if is_adapter(name):
                continue
            w = p.detach().reshape(-1).double()
            ramp = torch.linspace(1.0, 2.0, w.numel(), dtype=torch.float64, device=w.device)
            total += float((w * ramp).sum())
    return total


# --- the test hook (choice 3): a step raises, goes NaN or pauses, so the tests reach the failure paths ---
def parse_faults(spec: str) -> list[tuple[str, int, int | None]]:
    """"raise@2:rank1,nan@3" -> [("raise", 2, 1), ("nan", 3, None)] (the test hook, choice 3)."""
    faults = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        try:
            what, _, where = item.partition("@")
            step_text, _, rank_text = where.partition(":")
            rank = int(rank_text.removeprefix("rank")) if rank_text else None
            if what not in ("raise", "nan", "pause"):
                raise ValueError(what)
            faults.append((what, int(step_text), rank))
        except ValueError:
            raise ValueError(f"{FAULT_ENV}={spec!r}: each item must be 'raise@STEP', 'nan@STEP' or 'pause@STEP', optionally "
                             f"followed by ':rankR' (a test hook; unset it for real runs)") from None
    return faults


def inject_fault(faults: list[tuple[str, int, int | None]], step: int, rank: int, batch: ScoredRollout,
                 signals: StopSignals | None = None) -> None:
    """Act on the faults of `step` (1-based) on this rank: raise, poison the advantages, or wait for a signal."""
    for what, at, on_rank in faults:
        if at == step and on_rank in (None, rank):
            if what == "pause":              # wait (mid-step) for a stop signal, so a test can send one from outside
                print(f"{FAULT_ENV}: paused in step {step}, waiting for a signal", file=sys.stderr, flush=True)
                deadline = time.monotonic() + 600
                while signals is not None and signals.received is None and time.monotonic() < deadline:
                    time.sleep(0.02)
            elif what == "raise":
                raise RuntimeError(f"{FAULT_ENV}: injected failure on rank {rank} at step {step}")
            else:
                batch.advantages = torch.full_like(batch.advantages, float("nan"))   # -> NaN loss and gradient
