"""The same GRPO run on TRL's GRPOTrainer: for learners who outgrow grpo_lib's engine.

    python -m grpo_lib.trl_recipe --preset tiny                     # the tiny CPU run, trained by TRL
    python -m grpo_lib.trl_recipe --preset tiny --steps 40 --output-dir runs/tiny-trl
    accelerate launch --num_processes 8 -m grpo_lib.trl_recipe --preset qwen2.5-1.5b-gsm8k --N 8 \
        --trl use_vllm=true --trl vllm_mode=colocate        # 8 GPUs (docs/trl.md); not run here

Every option of `python -m grpo_lib.train` is accepted (same parser, same presets), plus
`--trl KEY=VALUE` (repeatable) for TRL-only options such as vLLM generation. `trl_args` maps
our GRPOConfig onto TRL's `GRPOConfig` field by field (`TRL_NAMES` is the table; docs/trl.md prints it);
the model, tokenizer, prompts (same order, step by step), reward functions and held-out evaluation are
grpo_lib's, so the two runs differ only in the trainer. The output folder gets the same summary.json
fields as `grpo_lib.train` (plus "trainer": "trl" and TRL's version), metrics.jsonl (TRL's log
history, TRL's metric names), evals.jsonl and model/.

Choices made here:
1. TRL's defaults are set for large GPU runs, and several are wrong for this run; each is overridden:
   bf16 off on the CPU (TRL defaults to bf16=True), gradient checkpointing off (TRL defaults to on),
   `loss_type` (TRL: "dapo") and `beta` (TRL: 0.0) from our config, the KL term *not* multiplied by the
   ratio (`use_bias_correction_kl=False`, DeepSeekMath eq. 3; TRL 1.16 defaults to True), learning-rate
   schedule constant (TRL: linear decay), AdamW (`adamw_torch`, TRL: fused), no dataset shuffling
   (the dataset already holds our step-by-step prompt order).
2. TRL's batch sizes count *completions*, ours count prompts: per_device_train_batch_size = B = N·G
   (or micro_batch_size, with gradient_accumulation_steps = B / micro_batch_size), so one optimizer step
   sees the same N prompts x G completions as one step of ours.
3. μ (our `mu`) is TRL's `num_iterations`. Our outer loop (π_ref ← π_θ every M steps when I > 1) is
   TRL's `sync_ref_model` with `ref_model_mixup_alpha=1.0` and `ref_model_sync_steps=M`.
4. The held-out evaluation (greedy, strict accuracy with a Wilson interval) is grpo_lib's `evaluate`,
   before and after training, and every `eval_every` steps through a TrainerCallback.
5. Without TRL the command stops at once with how to install it (`pip install -e ".[trl]"`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from grpo_lib.config import GRPOConfig
from grpo_lib.trl_compare import INSTALL_HINT, trl_available

# our option -> TRL's option (or how TRL gets it). The docs table (docs/trl.md) is this dict;
# tests/test_trl_recipe.py checks that every GRPOConfig field is here.
TRL_NAMES: dict[str, str] = {
    "G": "num_generations",
    "epsilon": "epsilon",
    "epsilon_high": "epsilon_high (None -> epsilon)",
    "beta": "beta (+ use_bias_correction_kl=False: KL not multiplied by ρ)",
    "mu": "num_iterations",
    "num_iterations": "sync_ref_model=True, ref_model_sync_steps=steps, ref_model_mixup_alpha=1.0 (when > 1)",
    "loss_type": "loss_type",
    "scale_rewards": "scale_rewards",
    "temperature": "temperature (top_k=0, top_p=1.0, repetition_penalty=1.0)",
    "reward_funcs": "reward_funcs= (the same Python functions; reward_weights all 1: summed)",
    "N": "per_device_train_batch_size = N·G completions (TRL counts completions)",
    "prompts_per_device": "per_device_train_batch_size = prompts_per_device·G completions (TRL counts completions)",
    "steps": "max_steps = num_iterations · steps",
    "max_completion_length": "max_completion_length",
    "lr": "learning_rate",
    "weight_decay": "weight_decay",
    "adam_beta1": "adam_beta1",
    "adam_beta2": "adam_beta2",
    "max_grad_norm": "max_grad_norm",
    "lr_schedule": "lr_scheduler_type: constant -> 'constant' / 'constant_with_warmup', cosine -> 'cosine_with_min_lr' (min_lr_rate=0.1)",
    "warmup_steps": "warmup_steps",
    "model": "model= (loaded by grpo_lib.models.load_policy, passed as an object)",
    "dtype": "bf16 / fp16 (False on the CPU) and the dtype the model is loaded in",
    "precision": "bf16=True with fp32 weights is TRL's (Trainer's) mixed precision, like our 'mixed'; 'pure' has no TRL flag (load the model in bf16)",
    "save_dtype": "(none: TRL saves the model in the dtype it trains in)",
    "task": "train_dataset= (the same problems, in our step-by-step order; shuffle_dataset=False)",
    "data_dir": "train_dataset= (GSM8K jsonl files)",
    "system_prompt": "the prompt strings of train_dataset (same build_prompt)",
    "gradient_checkpointing": "gradient_checkpointing",
    "micro_batch_size": "per_device_train_batch_size (+ gradient_accumulation_steps = B / micro_batch_size)",
    "eval_n": "grpo_lib.evaluation.evaluate (TRL's own eval scores rewards, not held-out accuracy)",
    "eval_batch_size": "grpo_lib.evaluation.evaluate",
    "eval_every": "a TrainerCallback calling grpo_lib.evaluation.evaluate",
    "seed": "seed, data_seed",
    "device": "use_cpu (cpu) / accelerate's device placement (cuda)",
    "num_threads": "torch.set_num_threads (no TRL option)",
    "output_dir": "output_dir",
    "report_to": "report_to",
    "wandb_project": "WANDB_PROJECT environment variable",
    "log_every": "logging_steps",
    "progress": "disable_tqdm = not progress",
    "preset": "(recorded in summary.json)",
    "save_every": "save_strategy='steps', save_steps (0 -> save_strategy='no')",
    "save_total_limit": "save_total_limit",
    "resume": "trainer.train(resume_from_checkpoint=...)",
    "overwrite": "the same output-folder check before training (grpo_lib.rundir.prepare_output_dir; TRL has none)",
    "dist_timeout_minutes": "ddp_timeout (seconds)",
}


def _resolve_device(cfg: GRPOConfig) -> str:
    if cfg.device != "auto":
        return cfg.device
    if torch.cuda.is_available():                 # under accelerate launch / torchrun: this process's GPU
        return f"cuda:{os.environ['LOCAL_RANK']}" if "LOCAL_RANK" in os.environ else "cuda"
    return "cpu"


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _resolved_dtype(cfg: GRPOConfig, device: str) -> str:
    if cfg.dtype != "auto":
        return cfg.dtype
    return "bfloat16" if device.startswith("cuda") else "float32"


def trl_args(cfg: GRPOConfig, output_dir: str | os.PathLike | None = None, *, world_size: int | None = None,
             overrides: dict[str, Any] | None = None) -> Any:
    """TRL's `GRPOConfig` for our `cfg`: every field we set, and TRL's defaults that would change the run.

    Args:
        cfg: our run (e.g. `GRPOConfig.tiny()`).
        output_dir: where TRL writes (checkpoints); None uses cfg.output_dir.
        world_size: processes (GPUs) sharing the B = N·G completions of a step; None reads WORLD_SIZE
            (set by accelerate launch / torchrun), 1 without it.
        overrides: TRL-only options on top (e.g. {"use_vllm": True, "vllm_mode": "colocate"}); they win.

    Returns:
        a `trl.GRPOConfig`.

    Raises:
        ImportError: TRL is not installed (the message says how to install it).
    """
    if not trl_available():
        raise ImportError(INSTALL_HINT)
    from trl import GRPOConfig as TRLConfig

    device = _resolve_device(cfg)
    dtype = _resolved_dtype(cfg, device)
    world = _world_size() if world_size is None else world_size
    B = cfg.global_B(world)                       # N·G, or prompts_per_device·world·G for a per-GPU preset
    if B % world:
        raise ValueError(f"B = N·G = {B} completions per step must divide by the {world} processes; "
                         f"change --N")
    per_rank = B // world
    b = min(cfg.micro_batch_size or per_rank, per_rank)
    if per_rank % b:
        raise ValueError(f"micro_batch_size = {b} must divide the {per_rank} completions per process and step "
                         f"(B = N·G = {B} over {world} process(es)) for TRL")
    if cfg.lr_schedule == "cosine":
        schedule, schedule_kwargs = "cosine_with_min_lr", {"min_lr_rate": 0.1}
    else:
        schedule, schedule_kwargs = ("constant_with_warmup" if cfg.warmup_steps else "constant"), None
    sync_ref = cfg.num_iterations > 1 and cfg.beta > 0
    return TRLConfig(**_merge(dict(
        output_dir=str(output_dir or cfg.output_dir),
        # --- the GRPO objective ---
        num_generations=cfg.G, epsilon=cfg.epsilon,
        epsilon_high=cfg.epsilon if cfg.epsilon_high is None else cfg.epsilon_high,
        beta=cfg.beta, use_bias_correction_kl=False, num_iterations=cfg.mu, loss_type=cfg.loss_type,
        scale_rewards=cfg.scale_rewards, temperature=cfg.temperature, top_k=0, top_p=1.0,
        repetition_penalty=1.0, mask_truncated_completions=False, importance_sampling_level="token",
        sync_ref_model=sync_ref, ref_model_sync_steps=cfg.steps if sync_ref else 512,
        ref_model_mixup_alpha=1.0 if sync_ref else 0.6,
        # --- the batch and the budget: TRL counts completions ---
        per_device_train_batch_size=b, gradient_accumulation_steps=per_rank // b,
        steps_per_generation=per_rank // b, max_steps=cfg.total_steps,
        max_completion_length=cfg.max_completion_length, shuffle_dataset=False,
        # --- the optimiser ---
        learning_rate=cfg.lr, weight_decay=cfg.weight_decay, adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2,
        max_grad_norm=cfg.max_grad_norm, lr_scheduler_type=schedule, lr_scheduler_kwargs=schedule_kwargs,
        warmup_steps=cfg.warmup_steps, optim="adamw_torch",
        # --- precision and memory: TRL's GPU defaults (bf16, gradient checkpointing) off unless asked ---
        bf16=dtype == "bfloat16", fp16=dtype == "float16", use_cpu=device == "cpu",
        activation_checkpointing=cfg.gradient_checkpointing,   # transformers 5's name for gradient_checkpointing
        # --- bookkeeping ---
        seed=cfg.seed, data_seed=cfg.seed, report_to=cfg.report_to, logging_steps=cfg.log_every,
        disable_tqdm=not cfg.progress, save_strategy="steps" if cfg.save_every else "no",
        save_steps=cfg.save_every or 500, ddp_timeout=int(cfg.dist_timeout_minutes * 60),
    ), overrides))


def _merge(mapped: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    from trl import GRPOConfig as TRLConfig

    fields = set(TRLConfig.__dataclass_fields__)
    unknown = sorted(set(overrides or {}) - fields)
    if unknown:
        import difflib

        hints = [f"{k} (did you mean {difflib.get_close_matches(k, fields, n=1)[0]}?)"
                 if difflib.get_close_matches(k, fields, n=1) else k for k in unknown]
        raise ValueError(f"--trl: TRL's GRPOConfig has no option {', '.join(hints)}")
    return {**mapped, **(overrides or {})}


def parse_trl_overrides(items: Sequence[str]) -> dict[str, Any]:
    """["use_vllm=true", "vllm_mode=colocate", "vllm_gpu_memory_utilization=0.3"] -> a dict of values
    (true/false, ints, floats, none, else the string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--trl expects KEY=VALUE (a field of TRL's GRPOConfig), got {item!r}")
        low = text.lower()
        if low in ("true", "false"):
            value: Any = low == "true"
        elif low in ("none", "null"):
            value = None
        else:
            try:
                value = int(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    value = text
        out[key.strip().replace("-", "_")] = value
    return out


def training_dataset(cfg: GRPOConfig, tokenizer: Any, problems: Sequence[dict], world_size: int = 1) -> Any:
    """A `datasets.Dataset` of cfg.total_steps · N rows {"prompt", "answer"}: step s holds the N prompts
    `grpo_lib.data.prompts_for_step(problems, s, N, seed)` gives our engine, in that order
    (N = cfg.global_N(world_size): a per-GPU preset's prompts over all processes)."""
    from datasets import Dataset

    from grpo_lib.data import build_prompt, prompts_for_step

    rows = []
    for step in range(cfg.total_steps):
        for p in prompts_for_step(problems, step, cfg.global_N(world_size), cfg.seed):
            rows.append({"prompt": build_prompt(tokenizer, p["question"], cfg.system_prompt), "answer": p["answer"]})
    return Dataset.from_list(rows)


def train_with_trl(cfg: GRPOConfig, output_dir: str | os.PathLike | None = None,
                   trl_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train cfg's run with TRL's GRPOTrainer; evaluate before and after with grpo_lib; write the outputs.

    Returns:
        the summary (also written to OUTPUT_DIR/summary.json), with the same fields as `grpo_lib.train`.
    """
    if not trl_available():
        raise ImportError(INSTALL_HINT)
    import trl
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from grpo_lib.data import load_problems
    from grpo_lib.evaluation import evaluate
    from grpo_lib.models import load_policy
    from grpo_lib.rewards import reward_functions
    from grpo_lib.runlog import EVALS_FILE, METRICS_FILE, MODEL_SUBDIR, completed_summary, write_summary

    t_start = time.perf_counter()
    out = Path(output_dir or cfg.output_dir)
    device = _resolve_device(cfg)
    args = trl_args(cfg, out, overrides=trl_overrides)         # bad settings fail before any loading
    if int(os.environ.get("RANK", "0")) == 0:                   # an earlier run there is refused unless --overwrite
        from grpo_lib.rundir import prepare_output_dir

        prepare_output_dir(out, overwrite=cfg.overwrite, continuing=cfg.resume is not None)
    threads_before = torch.get_num_threads()
    if cfg.num_threads is not None and device == "cpu":
        torch.set_num_threads(cfg.num_threads)
    if cfg.report_to == "wandb":
        os.environ.setdefault("WANDB_PROJECT", cfg.wandb_project)
    try:
        torch.manual_seed(cfg.seed)
        train_problems = load_problems(cfg.task, "train", data_dir=cfg.data_dir)
        eval_problems = load_problems(cfg.task, "test", data_dir=cfg.data_dir, n=cfg.eval_n)
        model, tokenizer = load_policy(cfg.model, device=device, dtype=cfg.dtype)
        dataset = training_dataset(cfg, tokenizer, train_problems, world_size=_world_size())
        reward_list = list(reward_functions(cfg.reward_funcs).values())   # TRL logs each under its __name__
        n_params = sum(p.numel() for p in model.parameters())
        evals: list[dict[str, Any]] = []
        out.mkdir(parents=True, exist_ok=True)

        def run_eval(step: int, desc: str):
            t0 = time.perf_counter()
            result = evaluate(model, tokenizer, eval_problems, system_prompt=cfg.system_prompt,
                              max_new_tokens=cfg.max_completion_length, batch_size=cfg.eval_batch_size,
                              progress=cfg.progress, desc=desc)
            evals.append({"step": step, "eval_seconds": time.perf_counter() - t0, **result.to_dict()})
            print(f"[eval @ step {step}] {result}", flush=True)
            return result

        class EvalEvery(TrainerCallback):
            def on_step_end(self, args_, state, control, **kwargs):
                if cfg.eval_every and state.global_step % cfg.eval_every == 0 and state.global_step < cfg.total_steps:
                    was_training = model.training
                    run_eval(state.global_step, f"eval @ {state.global_step}")
                    model.train(was_training)

        print(f"GRPO on TRL {trl.__version__} | preset {cfg.preset} | model {cfg.model} ({n_params:,} parameters) "
              f"on {device} | N = {cfg.global_N(_world_size())} x G = {cfg.G} = {cfg.global_B(_world_size())} "
              f"completions per step, {cfg.total_steps} steps",
              flush=True)
        eval_before = run_eval(0, "eval before")
        trainer = GRPOTrainer(model=model, reward_funcs=reward_list, args=args, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=[EvalEvery()])
        t_train = time.perf_counter()
        trainer.train(resume_from_checkpoint=cfg.resume)
        train_seconds = time.perf_counter() - t_train
        model.eval()
        eval_after = run_eval(cfg.total_steps, "eval after")
    finally:
        torch.set_num_threads(threads_before)

    # the fields of grpo_lib.train's summary.json (grpo_lib.runlog.completed_summary), plus TRL's own
    summary = completed_summary(cfg, model_name=cfg.model, world_size=trainer.accelerator.num_processes,
                                device=device, n_params=n_params, eval_before=eval_before, eval_after=eval_after,
                                train_seconds=train_seconds, wall_seconds=time.perf_counter() - t_start)
    summary["versions"]["trl"] = trl.__version__
    summary.update({"trainer": "trl", "trl_args": {k: _jsonable(v) for k, v in args.to_dict().items()}})
    if trainer.accelerator.is_main_process:
        with open(out / METRICS_FILE, "w") as f:
            f.writelines(json.dumps(rec) + "\n" for rec in trainer.state.log_history)
        with open(out / EVALS_FILE, "w") as f:
            f.writelines(json.dumps(rec) + "\n" for rec in evals)
        model.save_pretrained(out / MODEL_SUBDIR)
        tokenizer.save_pretrained(out / MODEL_SUBDIR)
        write_summary(out, summary)
        print(f"accuracy {eval_before.strict_accuracy:.1%} -> {eval_after.strict_accuracy:.1%} in "
              f"{summary['wall_seconds']:.0f} s (TRL); outputs in {out}", flush=True)
    return summary


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m grpo_lib.trl_recipe [--preset tiny] [any option of python -m grpo_lib.train]`.

    The output folder defaults to the preset's with "-trl" appended (runs/tiny-trl), so a run of our
    engine is never overwritten. Returns 2 (with how to install it) when TRL is missing.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not trl_available():
        print(f"error: python -m grpo_lib.trl_recipe trains with TRL's GRPOTrainer. {INSTALL_HINT}", file=sys.stderr)
        return 2
    from grpo_lib.cli import parse_config

    trl_items, rest, it = [], [], iter(argv)
    for a in it:                                # --trl KEY=VALUE (repeatable): TRL-only options
        if a == "--trl":
            trl_items.append(next(it, ""))
        elif a.startswith("--trl="):
            trl_items.append(a.split("=", 1)[1])
        else:
            rest.append(a)
    argv = rest
    try:
        overrides = parse_trl_overrides(trl_items)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg = parse_config(argv)
    given_out = any(a in ("--output-dir", "--output_dir") or a.startswith(("--output-dir=", "--output_dir="))
                    for a in argv)
    train_with_trl(cfg, cfg.output_dir if given_out else cfg.output_dir.rstrip("/") + "-trl", overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
