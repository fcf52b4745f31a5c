"""The same GRPO run on TRL's GRPOTrainer: for learners who outgrow grpo_lib's engine.

    python -m grpo_lib.trl.recipe --preset tiny                     # the tiny CPU run, trained by TRL
    python -m grpo_lib.trl.recipe --preset tiny --steps 40 --output-dir runs/tiny-trl
    accelerate launch --num_processes 8 -m grpo_lib.trl.recipe --preset qwen2.5-1.5b-gsm8k \
        --trl use_vllm=true --trl vllm_mode=colocate        # 8 GPUs x 7 prompts (docs/trl.md); not run here

Every option of `python -m grpo_lib` is accepted (same parser, same presets), plus
`--trl KEY=VALUE` (repeatable) for TRL-only options such as vLLM generation. `trl_args` maps
our GRPOConfig onto TRL's `GRPOConfig` field by field (`TRL_NAMES` is the table; docs/trl.md prints it);
the model, tokenizer, prompts (same order, step by step), reward functions and held-out evaluation are
grpo_lib's, so the two runs differ only in the trainer. The output folder gets the same summary.json
fields as `grpo_lib.train` (plus "trainer": "trl" and TRL's version), metrics.jsonl (TRL's log
history, TRL's metric names), evals.jsonl and model/.

Choices made here:
1. TRL's defaults are set for large GPU runs, and several are wrong for this run; each is overridden:
   bf16 off when our compute dtype is fp32 (TRL defaults to bf16=True), gradient checkpointing off (TRL defaults to on),
   `loss_type` (TRL: "dapo") and `beta` (TRL: 0.0) from our config, the KL term *not* multiplied by the
   ratio unless asked (our `use_bias_correction_kl`, default False, DeepSeekMath eq. 3; TRL 1.16 defaults to
   True), learning-rate
   schedule constant (TRL: linear decay), AdamW (`adamw_torch`, TRL: fused), no dataset shuffling
   (the dataset already holds our step-by-step prompt order).
2. TRL's batch sizes count *completions*, ours count prompts: per_device_train_batch_size = B = N·G
   (or micro_batch_size, with gradient_accumulation_steps = B / micro_batch_size), so one optimizer step
   sees the same N prompts x G completions as one step of ours.
3. μ (our `mu`) is TRL's `num_iterations`. TRL counts *optimizer* steps (μ per sampled batch), our steps
   count sampled batches, so every step count is multiplied by μ: max_steps = I·M·μ (TRL samples the
   same I·M batches), ref_model_sync_steps = M·μ (our outer loop, π_ref ← π_θ every M steps when I > 1,
   is TRL's `sync_ref_model` with `ref_model_mixup_alpha=1.0`), save_steps, logging_steps and the
   evaluation callback likewise; the lr schedule then spans the same I·M·μ optimizer steps as ours, and
   warmup_steps counts optimizer steps in both.
4. The held-out evaluation (greedy, strict accuracy with a Wilson interval) is grpo_lib's `evaluate`,
   before and after training, and every `eval_every` steps through a TrainerCallback.
5. Without TRL the command stops at once with how to install it (`pip install -e ".[trl]"`).
6. Mixed precision as in the engine: with --precision mixed and a bf16 compute dtype the policy is loaded
   in fp32 (master weights, fp32 AdamW state) and TRL runs with `bf16=True`, which is Trainer/accelerate's
   bf16 autocast (every forward of the prepared model, generation included, runs under it; under
   DeepSpeed, DeepSpeed's bf16 mode keeps the fp32 master copy instead). --precision pure loads the
   model in bf16 and sets bf16=False (pure-bf16 AdamW, as the engine's "pure"). The held-out evaluation
   runs under the same bf16 autocast context, so FlashAttention-2 gets bf16 inputs everywhere.
7. Weight sharding (DeepSpeed ZeRO-3, FSDP) is refused before anything loads: the recipe evaluates and
   saves the policy module directly, which needs the whole weights on each process. ZeRO-2 (optimizer
   state and gradients sharded) works.
8. `bnpo` under gradient accumulation differs from TRL on purpose: TRL divides each micro-batch's token
   sum by that micro-batch's token count and averages the micro-batches (so its update depends on
   micro_batch_size and on its shuffling of the batch); the engine divides by the whole batch's token
   count, the update of one pass over the batch. Without accumulation they agree
   (tests/test_golden_trl.py checks both).
9. The post-R1 options map (`trl_args`) to TRL's fields of the same names (importance_sampling_level,
   use_bias_correction_kl, multi_objective_aggregation; loss_type "cispo" with epsilon_high as ε_max);
   kl_estimator other than "k3" is refused (TRL has k3 only), and the vllm_importance_sampling_* fields
   are not passed: they act only with use_vllm=True, and this recipe generates without vLLM. The engine-only
   options are refused, naming the option: sampler_perturbation (TRL's mismatch comes from vLLM) and
   dynamic_sampling (TRL 1.16 has no group filter).
10. LoRA (lora_r > 0) goes to TRL as `GRPOTrainer(peft_config=...)` (`make_trainer`) with the engine's
   own LoraConfig (`grpo_lib.lora.lora_config`: r, α, dropout, target modules, bias "none"; the targets
   checked against the model's Linear layers first), so TRL adapts the same layers with the same
   r·(d_in + d_out) trainable parameters each; TRL's learning_rate is lr × lora_lr_multiplier, the
   engine's rule (TRL has no multiplier). π_ref: TRL 1.16, given a fresh adapter, keeps no reference model
   and computes the reference log-probs with the adapters disabled, the base model, as the engine does in
   its first outer iteration; TRL cannot sync π_ref under PEFT (sync_ref_model raises), so
   num_iterations > 1 with beta > 0 is refused before anything loads (the engine's later outer iterations
   use a frozen copy of π_θ). model/ holds the merged model (`merge_lora`: W ← W + (α / r)·B A), as the
   engine's: it loads with from_pretrained, no adapter files. Everything else as without LoRA.
"""

from __future__ import annotations

if __name__ == "__main__":     # the command line: lock --output-dir now, before the imports below take seconds,
    from grpo_lib.run.rundir import lock_output_dir_at_start   # so the run started first wins (grpo_lib.run.rundir choice 4)

    lock_output_dir_at_start()

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from grpo_lib import lora
from grpo_lib.cli import parse_config, run_reporting_errors
from grpo_lib.config import GRPOConfig
from grpo_lib.data import build_prompt, load_problems, prompts_for_step
from grpo_lib.dist import resolve_device
from grpo_lib.evaluation import evaluate
from grpo_lib.models import load_policy
from grpo_lib.precision import resolve_precision
from grpo_lib.rewards import reward_functions
from grpo_lib.run.layout import EVALS_FILE, METRICS_FILE, MODEL_SUBDIR
from grpo_lib.run.rundir import lock_output_dir, prepare_output_dir
from grpo_lib.run.runlog import completed_summary, open_output, write_summary
from grpo_lib.trl.compare import INSTALL_HINT, trl_available

# our option -> TRL's option (or how TRL gets it). The docs table (docs/trl.md) is this dict;
# tests/test_trl_recipe.py checks that every GRPOConfig field is here.
TRL_NAMES: dict[str, str] = {
    "G": "num_generations",
    "epsilon": "epsilon",
    "epsilon_high": "epsilon_high (None -> epsilon)",
    "beta": "beta (+ use_bias_correction_kl from ours, default False: KL not multiplied by ρ)",
    "mu": "num_iterations (and every step count below x μ: TRL counts optimizer steps)",
    "num_iterations": "sync_ref_model=True, ref_model_sync_steps=steps·μ, ref_model_mixup_alpha=1.0 (when > 1)",
    "loss_type": "loss_type (bnpo with micro-batches: TRL averages the micro-batches' token means, ours is the batch's token mean)",
    "scale_rewards": "scale_rewards",
    "importance_sampling_level": "importance_sampling_level",
    "kl_estimator": "(TRL has k3 only: 'k1' / 'k2' are refused by this recipe)",
    "use_bias_correction_kl": "use_bias_correction_kl (TRL 1.16's default True, ours False)",
    "multi_objective_aggregation": "multi_objective_aggregation",
    "vllm_importance_sampling_correction": "vllm_importance_sampling_correction (acts only with use_vllm=True; the recipe generates without vLLM)",
    "vllm_importance_sampling_mode": "vllm_importance_sampling_mode (not passed: no vLLM here)",
    "vllm_importance_sampling_clip_min": "vllm_importance_sampling_clip_min (not passed: no vLLM here)",
    "vllm_importance_sampling_clip_max": "vllm_importance_sampling_clip_max (not passed: no vLLM here)",
    "sampler_perturbation": "(none: TRL's sampler-trainer mismatch comes from vLLM, use_vllm=True; refused by this recipe)",
    "dynamic_sampling": "(none: TRL 1.16 logs frac_reward_zero_std but has no group filter; refused by this recipe)",
    "dynamic_sampling_max_draws": "(none, see dynamic_sampling; verl: max_num_gen_batches)",
    "mask_truncated_completions": "mask_truncated_completions",
    "temperature": "temperature (top_k=0, top_p=1.0, repetition_penalty=1.0)",
    "reward_funcs": "reward_funcs= (the same Python functions; reward_weights all 1: summed)",
    "N": "per_device_train_batch_size = N·G completions (TRL counts completions)",
    "prompts_per_device": "per_device_train_batch_size = prompts_per_device·G completions (TRL counts completions)",
    "steps": "max_steps = num_iterations · steps · μ (optimizer steps)",
    "max_completion_length": "max_completion_length",
    "lr": "learning_rate",
    "weight_decay": "weight_decay",
    "adam_beta1": "adam_beta1",
    "adam_beta2": "adam_beta2",
    "max_grad_norm": "max_grad_norm",
    "lr_schedule": "lr_scheduler_type: constant -> 'constant' / 'constant_with_warmup', cosine -> 'cosine_with_min_lr' (min_lr_rate=0.1)",
    "warmup_steps": "warmup_steps (optimizer steps in both)",
    "model": "model= (loaded by grpo_lib.models.load_policy, passed as an object)",
    "dtype": "bf16=True when the compute dtype is bfloat16 and precision is 'mixed' (auto: bfloat16 on CUDA, float32 on the CPU)",
    "precision": "'mixed': the model loaded in fp32 + bf16=True (Trainer's bf16 autocast, fp32 AdamW state); 'pure': the model loaded in bf16, bf16=False",
    "save_dtype": "(none: TRL saves the model in the dtype it trains in)",
    "task": "train_dataset= (the same problems, in our step-by-step order; shuffle_dataset=False)",
    "data_dir": "train_dataset= (GSM8K jsonl files)",
    "system_prompt": "the prompt strings of train_dataset (same build_prompt)",
    "lora_r": "GRPOTrainer(peft_config=peft.LoraConfig(r=..., bias='none', task_type='CAUSAL_LM')); π_ref: "
              "the base model (adapters disabled) in both; num_iterations > 1 with beta > 0 refused (TRL cannot sync "
              "π_ref under PEFT); model/ saved merged, as ours",
    "lora_alpha": "LoraConfig(lora_alpha=...)",
    "lora_dropout": "LoraConfig(lora_dropout=...)",
    "lora_target_modules": "LoraConfig(target_modules=...)",
    "lora_lr_multiplier": "learning_rate = lr × lora_lr_multiplier (TRL has no multiplier: the recipe sets it)",
    "gradient_checkpointing": "gradient_checkpointing",
    "micro_batch_size": "per_device_train_batch_size (+ gradient_accumulation_steps = B / micro_batch_size)",
    "eval_n": "grpo_lib.evaluation.evaluate (TRL's own eval scores rewards, not held-out accuracy)",
    "eval_batch_size": "grpo_lib.evaluation.evaluate",
    "eval_every": "a TrainerCallback calling grpo_lib.evaluation.evaluate every eval_every·μ optimizer steps",
    "seed": "seed, data_seed",
    "device": "use_cpu (cpu) / accelerate's device placement (cuda)",
    "num_threads": "torch.set_num_threads (no TRL option)",
    "output_dir": "output_dir",
    "report_to": "report_to",
    "wandb_project": "WANDB_PROJECT environment variable",
    "log_every": "logging_steps = log_every·μ",
    "progress": "disable_tqdm = not progress",
    "preset": "(recorded in summary.json)",
    "save_every": "save_strategy='steps', save_steps = save_every·μ (0 -> save_strategy='no')",
    "save_total_limit": "save_total_limit",
    "save_on_stop": "(not used: a signal stops a TRL run as TRL does)",
    "resume": "(refused: this recipe does not resume; grpo_lib.train does)",
    "overwrite": "the same output-folder check before training (grpo_lib.run.rundir.prepare_output_dir; TRL has none)",
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


def _precision(cfg: GRPOConfig, device: str) -> Any:
    """The engine's `Precision` for this run (fp32 master weights + bf16 autocast, or pure): the same rules."""
    return resolve_precision(cfg.dtype, cfg.precision, device)


def check_no_weight_sharding(environ: dict[str, str] | None = None) -> None:
    """Refuse DeepSpeed ZeRO-3 and FSDP (set by `accelerate launch --config_file ...`) with a message (choice 7).

    Raises:
        ValueError: naming the accelerate configuration and what works instead.
    """
    env = os.environ if environ is None else environ
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" and env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3":
        what = "DeepSpeed ZeRO-3"
    elif env.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        what = "FSDP"
    else:
        return
    raise ValueError(f"python -m grpo_lib.trl.recipe does not support {what}: it shards the weights over the "
                     "processes, and the recipe's held-out evaluation and model save use the whole policy on each "
                     "process. Use TRL's zero2.yaml (AdamW state and gradients sharded; the 1.5B model's weights fit "
                     "every GPU) or plain DDP (accelerate launch --num_processes K)")


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

    if cfg.kl_estimator != "k3":
        raise ValueError(f"kl_estimator={cfg.kl_estimator!r}: TRL's KL term is k3 only (with use_bias_correction_kl for "
                         "ρ·k3); run it with grpo_lib.train, or use kl_estimator='k3' here")
    engine_only = {"sampler_perturbation": cfg.sampler_perturbation != "none", "dynamic_sampling": cfg.dynamic_sampling}
    for name, on in engine_only.items():
        if on:
            raise ValueError(f"{name}={getattr(cfg, name)!r}: this recipe has no TRL counterpart for it "
                             f"({TRL_NAMES[name]}); run it with python -m grpo_lib.train")
    if cfg.lora_r and cfg.num_iterations > 1 and cfg.beta > 0:          # choice 10
        raise ValueError(f"lora_r={cfg.lora_r} with num_iterations={cfg.num_iterations} and beta={cfg.beta:g}: TRL 1.16 "
                         "cannot reset π_ref under PEFT (its reference is the base model, the adapters disabled; "
                         "sync_ref_model raises NotImplementedError with a peft model). Use num_iterations=1, or "
                         "beta=0, or run it with python -m grpo_lib.train (a frozen copy of π_θ from the second "
                         "outer iteration on)")
    device = _resolve_device(cfg)
    precision = _precision(cfg, device)
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
    mu = cfg.mu                                   # TRL counts optimizer steps: μ per sampled batch (choice 3)
    return TRLConfig(**_merge(dict(
        output_dir=str(output_dir or cfg.output_dir),
        # --- the GRPO objective ---
        num_generations=cfg.G, epsilon=cfg.epsilon,
        epsilon_high=cfg.epsilon if cfg.epsilon_high is None else cfg.epsilon_high,
        beta=cfg.beta, use_bias_correction_kl=cfg.use_bias_correction_kl, num_iterations=cfg.mu,
        loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards, temperature=cfg.temperature, top_k=0, top_p=1.0,
        repetition_penalty=1.0, mask_truncated_completions=cfg.mask_truncated_completions,
        importance_sampling_level=cfg.importance_sampling_level,
        multi_objective_aggregation=cfg.multi_objective_aggregation,
        sync_ref_model=sync_ref, ref_model_sync_steps=cfg.steps * mu if sync_ref else 512,
        ref_model_mixup_alpha=1.0 if sync_ref else 0.6,
        # --- the batch and the budget: TRL counts completions ---
        per_device_train_batch_size=b, gradient_accumulation_steps=per_rank // b,
        steps_per_generation=per_rank // b, max_steps=cfg.total_updates,
        max_completion_length=cfg.max_completion_length, shuffle_dataset=False,
        # --- the optimiser ---
        learning_rate=cfg.optimizer_lr,           # lr, times lora_lr_multiplier with LoRA (choice 10)
        weight_decay=cfg.weight_decay, adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2,
        max_grad_norm=cfg.max_grad_norm, lr_scheduler_type=schedule, lr_scheduler_kwargs=schedule_kwargs,
        warmup_steps=cfg.warmup_steps, optim="adamw_torch",
        # --- precision and memory: TRL's GPU defaults (bf16, gradient checkpointing) off unless asked ---
        bf16=precision.autocast and precision.compute_dtype == torch.bfloat16, fp16=False, use_cpu=device == "cpu",
        activation_checkpointing=cfg.gradient_checkpointing,   # transformers 5's name for gradient_checkpointing
        # --- bookkeeping ---
        seed=cfg.seed, data_seed=cfg.seed, report_to=cfg.report_to, logging_steps=cfg.log_every * mu,
        disable_tqdm=not cfg.progress, save_strategy="steps" if cfg.save_every else "no",
        save_steps=cfg.save_every * mu if cfg.save_every else 500, save_total_limit=cfg.save_total_limit,
        ddp_timeout=int(cfg.dist_timeout_minutes * 60),
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
    _check_override_types(overrides or {})
    return {**mapped, **(overrides or {})}


def _check_override_types(overrides: dict[str, Any]) -> None:
    """Refuse a --trl value of the wrong type (learning_rate=abc) before anything loads: TRL itself finds
    it only when it builds the optimizer."""
    import enum
    import types
    import typing

    from trl import GRPOConfig as TRLConfig

    hints = typing.get_type_hints(TRLConfig)
    for key, value in overrides.items():
        hint = hints[key]
        members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        allowed = tuple(a for a in (typing.get_origin(m) or m for m in members) if isinstance(a, type))
        if any(issubclass(a, enum.Enum) for a in allowed):
            allowed += (str,)                                 # an enum option is given by its value
        if len(allowed) < len(members) or value is None and type(None) in allowed:
            continue                                          # Any, Literal ...: left to TRL
        ok = (isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
              or isinstance(value, int) and not isinstance(value, bool) and float in allowed)
        if not ok:
            names = " or ".join("none" if a is type(None) else a.__name__ for a in allowed)
            raise ValueError(f"--trl {key}={value!r}: TRL's GRPOConfig expects {names} there")


def _check_vllm_can_run(overrides: dict[str, Any]) -> None:
    """`--trl use_vllm=true` where vLLM cannot run (no CUDA, or not installed) is refused before anything
    loads (`trl_args` itself still builds such a config anywhere, e.g. for the 8-GPU command on a CPU)."""
    if overrides.get("use_vllm"):
        import importlib.util

        if not torch.cuda.is_available():
            raise ValueError("--trl use_vllm=true: vLLM generation needs CUDA GPUs, and there is none here; "
                             "leave use_vllm off on a CPU")
        if importlib.util.find_spec("vllm") is None:
            raise ImportError("--trl use_vllm=true: vLLM is not installed; pip install 'trl[vllm]' (GPU machines "
                              "only), or leave use_vllm off")


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

    t_start = time.perf_counter()
    out = Path(output_dir or cfg.output_dir)
    _check_resume(cfg)
    resolve_device(cfg.device)                                  # --device cuda without CUDA: named, here
    _check_vllm_can_run(trl_overrides or {})
    device = _resolve_device(cfg)
    check_no_weight_sharding()                                  # ZeRO-3 / FSDP: refused first (choice 7)
    args = trl_args(cfg, out, overrides=trl_overrides)         # bad settings fail before any loading
    if cfg.lora_r:
        lora.require_peft()                                     # no peft: the install command, before loading
    precision = _precision(cfg, device)
    lock = None
    if int(os.environ.get("RANK", "0")) == 0:                   # an earlier run there is refused unless --overwrite
        lock = lock_output_dir(out)                             # one run per folder, as grpo_lib.train
        try:
            prepare_output_dir(out, overwrite=cfg.overwrite, continuing=False)
        except BaseException:
            lock.release()
            raise
    threads_before = torch.get_num_threads()
    if cfg.num_threads is not None and device == "cpu":
        torch.set_num_threads(cfg.num_threads)
    if cfg.report_to == "wandb":
        os.environ.setdefault("WANDB_PROJECT", cfg.wandb_project)
    try:
        torch.manual_seed(cfg.seed)
        train_problems = load_problems(cfg.task, "train", data_dir=cfg.data_dir)
        eval_problems = load_problems(cfg.task, "test", data_dir=cfg.data_dir, n=cfg.eval_n)
        model, tokenizer = load_policy(cfg.model, device=device, dtype=precision.param_dtype,   # fp32 when mixed
                                       compute_dtype=precision.compute_dtype)
        dataset = training_dataset(cfg, tokenizer, train_problems, world_size=_world_size())
        # TRL logs each function under its __name__ (rewards/<name>/mean, /std): give it our names, as the engine
        reward_list = [_named(name, func) for name, func in reward_functions(cfg.reward_funcs).items()]
        n_params = sum(p.numel() for p in model.parameters())
        evals: list[dict[str, Any]] = []
        out.mkdir(parents=True, exist_ok=True)

        def run_eval(step: int, desc: str):
            t0 = time.perf_counter()
            with precision.context():                           # bf16 autocast when mixed, as TRL's forwards
                result = evaluate(model, tokenizer, eval_problems, system_prompt=cfg.system_prompt,
                                  max_new_tokens=cfg.max_completion_length, batch_size=cfg.eval_batch_size,
                                  progress=cfg.progress, desc=desc)
            evals.append({"step": step, "eval_seconds": time.perf_counter() - t0, **result.to_dict()})
            print(f"[eval @ step {step}] {result}", flush=True)
            return result

        class EvalEvery(TrainerCallback):
            def on_step_end(self, args_, state, control, **kwargs):
                every = cfg.eval_every * cfg.mu              # TRL's global_step counts optimizer steps (choice 3)
                if cfg.eval_every and state.global_step % every == 0 and state.global_step < cfg.total_updates:
                    was_training = model.training
                    step = state.global_step // cfg.mu           # our step: sampled batches
                    run_eval(step, f"eval @ {step}")
                    model.train(was_training)

        print(f"GRPO on TRL {trl.__version__} | preset {cfg.preset} | model {cfg.model} ({n_params:,} parameters) "
              f"on {device} | N = {cfg.global_N(_world_size())} x G = {cfg.G} = {cfg.global_B(_world_size())} "
              f"completions per step, {cfg.total_steps} steps x mu = {cfg.mu} = {cfg.total_updates} optimizer steps | "
              f"attention {model.config._attn_implementation}", flush=True)
        print(f"precision: {precision.describe()}" + (" (TRL: bf16=True)" if args.bf16 else ""), flush=True)
        eval_before = run_eval(0, "eval before")
        trainer = make_trainer(cfg, args, model, tokenizer, dataset, reward_list, callbacks=[EvalEvery()])
        n_params = sum(p.numel() for p in model.parameters())  # with LoRA, the adapters too (as the engine)
        t_train = time.perf_counter()
        trainer.train(resume_from_checkpoint=cfg.resume)
        train_seconds = time.perf_counter() - t_train
        model.eval()
        eval_after = run_eval(cfg.total_steps, "eval after")
        if cfg.lora_r:
            model = merge_lora(trainer)                         # W ← W + (α/r)·B A: a plain model (choice 10)
    finally:
        torch.set_num_threads(threads_before)
        if lock is not None:
            lock.release()

    # the fields of grpo_lib.train's summary.json (grpo_lib.run.runlog.completed_summary), plus TRL's own
    summary = completed_summary(cfg, model_name=cfg.model, world_size=trainer.accelerator.num_processes,
                                device=device, n_params=n_params, eval_before=eval_before, eval_after=eval_after,
                                train_seconds=train_seconds, wall_seconds=time.perf_counter() - t_start)
    summary["versions"]["trl"] = trl.__version__
    summary.update(precision.to_dict(), attn_implementation=model.config._attn_implementation)
    summary.update({"trainer": "trl", "trl_args": {k: _jsonable(v) for k, v in args.to_dict().items()}})
    if trainer.accelerator.is_main_process:
        with open_output(out / METRICS_FILE) as f:
            f.writelines(json.dumps(rec) + "\n" for rec in trainer.state.log_history)
        with open_output(out / EVALS_FILE) as f:
            f.writelines(json.dumps(rec) + "\n" for rec in evals)
        model.save_pretrained(out / MODEL_SUBDIR)      # with LoRA, the merged model (choice 10)
        tokenizer.save_pretrained(out / MODEL_SUBDIR)
        write_summary(out, summary)
        print(f"accuracy {eval_before.strict_accuracy:.1%} -> {eval_after.strict_accuracy:.1%} in "
              f"{summary['wall_seconds']:.0f} s (TRL); outputs in {out}", flush=True)
    return summary


def make_trainer(cfg: GRPOConfig, args: Any, model: Any, tokenizer: Any, dataset: Any, reward_funcs: Sequence[Any],
                 callbacks: Sequence[Any] = ()) -> Any:
    """TRL's GRPOTrainer for the run: `args` from `trl_args`, and with lora_r > 0 the engine's LoraConfig as
    `peft_config` (choice 10; TRL wraps `model` in a PeftModel, adapting its layers in place).

    Raises:
        ValueError: lora_target_modules names a layer the model has no Linear of (before TRL sees it).
    """
    from trl import GRPOTrainer

    peft_config = None
    if cfg.lora_r:
        lora.check_target_modules(model, cfg)
        peft_config = lora.lora_config(cfg)
    trainer = GRPOTrainer(model=model, reward_funcs=list(reward_funcs), args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=list(callbacks), peft_config=peft_config)
    if cfg.lora_r and trainer.accelerator.is_main_process:
        print(lora.describe(cfg, model, lr=args.learning_rate), flush=True)   # a --trl override shown as such
    return trainer


def merge_lora(trainer: Any) -> Any:
    """The trained policy with its adapters merged (peft's merge_and_unload: W ← W + (α / r)·B A in every
    adapted layer), as a plain transformers model: what model/ holds after a LoRA run (choice 10)."""
    return trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()


RESUME_REFUSED = ("python -m grpo_lib.trl.recipe does not resume: TRL's checkpoints (checkpoint-N) hold no record of "
                  "grpo_lib's settings, evaluations or prompt order, and grpo_lib.train's checkpoints are not TRL's. "
                  "Start the TRL run again without --resume, or train with python -m grpo_lib, whose --resume "
                  "continues a run step for step")


def _check_resume(cfg: GRPOConfig) -> None:
    if cfg.resume is not None:
        raise ValueError(f"--resume {cfg.resume}: {RESUME_REFUSED}")


def _named(name: str, func: Any) -> Any:
    """`func` under the name the engine logs it by ("correctness"), so TRL logs rewards/correctness/mean too."""
    import functools

    @functools.wraps(func)
    def reward(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    reward.__name__ = reward.__qualname__ = name
    return reward


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m grpo_lib.trl.recipe [--preset tiny] [any option of python -m grpo_lib]`.

    The output folder defaults to the preset's with "-trl" appended (runs/tiny-trl), so a run of our
    engine is never overwritten. Returns 2 (with how to install it) when TRL is missing. Errors follow
    `python -m grpo_lib`'s policy (grpo_lib.cli.run_reporting_errors): a known error is one
    "error: ..." paragraph and exit status 1 (`--debug` adds the traceback). `--resume` is refused before
    anything loads (`RESUME_REFUSED`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not trl_available():
        print(f"error: python -m grpo_lib.trl.recipe trains with TRL's GRPOTrainer. {INSTALL_HINT}", file=sys.stderr)
        return 2
    trl_items, rest, it = [], [], iter(argv)
    for a in it:                                # --trl KEY=VALUE (repeatable): TRL-only options
        if a == "--trl":
            trl_items.append(next(it, ""))
        elif a.startswith("--trl="):
            trl_items.append(a.split("=", 1)[1])
        else:
            rest.append(a)
    argv = rest

    def run() -> None:
        overrides = parse_trl_overrides(trl_items)
        if any(a in ("--resume",) or a.startswith("--resume=") for a in argv):   # before parse_config reads it
            raise ValueError(RESUME_REFUSED)
        cfg = parse_config(argv)
        given_out = any(a in ("--output-dir", "--output_dir") or a.startswith(("--output-dir=", "--output_dir="))
                        for a in argv)
        train_with_trl(cfg, cfg.output_dir if given_out else cfg.output_dir.rstrip("/") + "-trl", overrides)

    return run_reporting_errors(run, debug="--debug" in argv)


if __name__ == "__main__":
    sys.exit(main())
