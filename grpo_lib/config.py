"""GRPOConfig: every knob of a GRPO run in one frozen dataclass, named by its paper symbol where it has one.

Two presets share one code path (`grpo_lib.train`); only the numbers differ:

    GRPOConfig.from_preset("tiny")                  # default: 1M-param Qwen2 on addition, a few minutes on a CPU
    GRPOConfig.from_preset("qwen2.5-1.5b-gsm8k")    # the tutorial's run: Qwen2.5-1.5B-Instruct on GSM8K, GPUs

Choices made here (each shown in notebooks/05_full_run.ipynb and notebooks/06_multi_gpu_qwen.ipynb):
1. Field names are the paper's symbols (G, N, epsilon, beta, mu); the names TRL and the tutorial use for
   the same thing are in each field's docstring, because three of them clash:
   - mu (μ, updates per sampled batch) is TRL's `num_iterations` and the tutorial's `mu`;
   - num_iterations (DeepSeekMath Algorithm 1's outer loop, π_ref ← π_θ at the start of each) is the
     tutorial's `num_iterations`, and TRL has no such loop (its reference model never moves);
   - N counts *prompts* per step (the tutorial's `batch_size`); TRL's batch sizes count *completions*.
2. The small run is the default: `GRPOConfig()` equals the tiny preset, so nothing expensive starts by
   surprise. The big run is opt-in by name.
3. Derived values (B = N·G, total steps, per-rank counts) are properties or methods, never fields, so the
   frozen config stays the single source of truth. Overrides go through `dataclasses.replace` or
   `cfg.replace(...)`, which re-run the validation.
4. A bad value fails at construction with a message that names the option (`G must be >= 2 ...`);
   the checks that need the world size (N divisible by it) run at the start of `train()`
   (`cfg.N_per_rank(world_size)`).
5. Each field's help text (and paper symbol) is written once, in `option(...)`, and read from the
   dataclass fields: `--help` on the command line (grpo_lib.cli), `field_docs()`, `SYMBOLS` and the
   `_repr_markdown_` table.
6. The tiny preset is the dataclass defaults, written once; a preset function lists only what differs.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from dataclasses import dataclass
from typing import Any

import torch

from grpo_lib.advantages import MULTI_OBJECTIVE_AGGREGATIONS
from grpo_lib.advantages import SCALES as SCALE_REWARDS
from grpo_lib.loss import ALL_LOSS_TYPES, IMPORTANCE_SAMPLING_LEVELS, IS_MODES, KL_ESTIMATORS
from grpo_lib.rewards import REWARD_FUNCTIONS, SYSTEM_PROMPT

TASKS = ("addition", "gsm8k")
REWARD_NAMES = tuple(REWARD_FUNCTIONS)
"""names accepted in reward_funcs: the keys of grpo_lib.rewards.REWARD_FUNCTIONS"""
TORCH_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
"""weights dtype name (and its short alias) -> torch dtype: the one table (models, the memory planner, benchmarks)"""
DTYPES = ("auto", *(name for name, dtype in TORCH_DTYPES.items() if str(dtype) == f"torch.{name}"))
"""the values of the dtype option: 'auto' and the full names of TORCH_DTYPES"""
PRECISIONS = ("mixed", "pure")
"""the values of the precision option (grpo_lib.precision)"""
SAVE_DTYPES = ("float32", "bfloat16")
TEMPERATURE_RANGE = (1e-3, 1e3)
"""τ a run accepts: the logits are divided by τ in float32 (τ = 1e-45 is not a normal float32 and 1/τ
overflows); below 1e-3 sampling is greedy in all but name, above 1e3 every token is equally likely"""
LR_MAX = 1e10
"""the largest lr a run accepts: AdamW's first update moves a float32 weight by up to lr / (1 - β1); far
beyond this (lr 1e38) the update itself overflows float32 and the error names neither lr nor the weights"""
LR_SCHEDULES = ("constant", "cosine")
REPORT_TO = ("wandb", "none")


def option(default: Any, help: str, *, symbol: str | None = None) -> Any:
    """A GRPOConfig field with its help text (and paper symbol): the single source of --help and the table."""
    metadata = {"help": help} if symbol is None else {"help": help, "symbol": symbol}
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class GRPOConfig:
    """All settings of a GRPO run (DeepSeekMath Algorithm 1 with μ inner updates).

    Build one with `GRPOConfig.from_preset(name, **overrides)` (or `GRPOConfig.tiny()` /
    `GRPOConfig.full()`); `GRPOConfig()` is the tiny preset. Show it in a notebook as the last line
    of a cell to get a table of symbol, value and meaning.

    Taught in: notebooks/05_full_run.ipynb
    """

    # The defaults are the tiny preset (CPU, minutes). Measured in the course's tiny-model notes and re-tuned
    # with this engine: lr 5e-5 (higher rates wreck it: a fresh AdamW moves every weight by ~lr on its first
    # step), G = 8, β = 0.04, ε = 0.2, τ = 1, μ = 1, 40 new tokens cover the ~22-token completions.
    # One CPU thread: on a quiet 2-core machine 2 threads are faster (0.70 s vs 1.06 s per step), but
    # when anything else runs they fight it (3.2 s vs 1.2 s per step measured); one thread also makes
    # the run bit-for-bit reproducible from the seed, whatever the machine's core count.
    # Measured with the shipped model (2 CPU cores): held-out greedy accuracy 51.7% -> 93.7% in 100 steps,
    # 122 s wall for the whole command (seeds 1 and 2: 91.7% and 94.0%); already ~88-90% after 20 steps.

    # --- the GRPO objective (paper symbols) ---
    G: int = option(8,
        "group size G: completions sampled per prompt (TRL: num_generations; tutorial: num_generations; DeepSeekMath: "
        "64)", symbol="G")
    epsilon: float = option(0.2,
        "clip range ε of the ratio ρ = π_θ / π_θold, 0 < ε < 1 (TRL: epsilon; tutorial: epsilon)", symbol="ε")
    epsilon_high: float | None = option(None,
        "upper clip ε_high (DAPO's clip-higher: ρ is clipped to [1-ε, 1+ε_high]); None means ε_high = ε", symbol="ε_high")
    beta: float = option(0.04,
        "KL coefficient β toward π_ref (DeepSeekMath 0.04; TRL default 0.0). β = 0 skips the reference model entirely", symbol="β")
    mu: int = option(1,
        "μ: policy updates per sampled batch (TRL calls this num_iterations!). μ = 1 (DeepSeekMath) makes ρ = 1 at "
        "the update, so clipping never acts", symbol="μ")
    num_iterations: int = option(1,
        "I: outer iterations of DeepSeekMath Algorithm 1; π_ref ← π_θ at the start of each (tutorial: num_iterations; "
        "TRL has no such loop)", symbol="I")
    loss_type: str = option("grpo",
        "how token losses are averaged: 'grpo' = per-sequence mean then batch mean (paper eq. 3), 'bnpo', 'dr_grpo', "
        "'dapo' (token-level, TRL's default); or 'cispo' (MiniMax-M1: the weight min(ρ, epsilon_high) with its "
        "gradient stopped times A·log π_θ, normalised as 'dapo'; epsilon_high is the cap ε_max >= 1, ScaleRL 5.0)")
    scale_rewards: str = option("group",
        "A_i = (r_i - mean) / std with the 'group' std (paper), the 'batch' std (TRL scale_rewards='batch'), or "
        "'none' (Dr. GRPO: only centre)")
    importance_sampling_level: str = option("token",
        "'token': one ratio ρ_{i,t} per token (GRPO); 'sequence': GSPO's s_i = exp(mean_t log ρ_{i,t}), one per "
        "completion, clipped with epsilon / epsilon_high (GSPO: 3e-4 / 4e-4); needs loss_type 'grpo' (TRL: "
        "importance_sampling_level)")
    kl_estimator: str = option("k3",
        "estimator of KL(π_θ ‖ π_ref) in the β term, d = log π_ref - log π_θ: 'k3' = e^d - d - 1 (paper), 'k2' = "
        "d²/2, 'k1' = -d (TRL has k3 only)")
    use_bias_correction_kl: bool = option(False,
        "multiply the KL term by the ratio ρ (DeepSeek-V3.2's unbiased KL, ρ·k3); TRL's name, TRL 1.16's default "
        "is True, ours False (DeepSeekMath eq. 3)")
    multi_objective_aggregation: str = option("sum_then_normalize",
        "'sum_then_normalize': r_i = Σ_k r_k, then group advantages; 'normalize_then_sum' (GDPO): each reward "
        "function normalised within its group, summed, then normalised over the batch (TRL's name)")
    vllm_importance_sampling_correction: bool = option(False,
        "weight the policy term by sampler-trainer correction weights (TRL's name, default True with vLLM); needs a "
        "sampler other than the policy: sampler_perturbation 'bf16' or 'noise:σ' (without one there is no mismatch "
        "to correct and True is refused)")
    vllm_importance_sampling_mode: str = option("sequence_mask",
        "how the correction weights are formed: 'token_truncate', 'token_mask', 'sequence_truncate', "
        "'sequence_mask' (TRL's default); see grpo_lib.loss.sampling_importance_weights")
    vllm_importance_sampling_clip_min: float | None = option(None,
        "C_min of the correction weights (TRL's name); None = no lower bound")
    vllm_importance_sampling_clip_max: float | None = option(3.0,
        "C_max of the correction weights (TRL's name and default 3.0); None = no upper bound")
    sampler_perturbation: str = option("none",
        "sample the rollouts from a perturbed copy of the policy, re-synced from it every step, so that the sampler's "
        "log-probs differ from the trainer's as vLLM's do: 'none' (the policy samples), 'bf16' (a bfloat16 copy: "
        "weights rounded to bf16, its whole forward in bf16) or 'noise:σ' (every weight plus Gaussian noise of std "
        "σ, e.g. noise:1e-3). Logs TRL's sampling/* metrics; the correction is vllm_importance_sampling_correction")
    dynamic_sampling: bool = option(False,
        "DAPO's dynamic sampling: keep only the groups whose G total rewards are not all equal (reward std > 0, the "
        "groups with a non-zero advantage; with the correctness reward alone, 0 < #correct < G), drawing N more "
        "prompts at a time until N such groups are found or dynamic_sampling_max_draws draws were made; flat groups "
        "then fill the rest (verl: algorithm.filter_groups; TRL has none)")
    dynamic_sampling_max_draws: int = option(10,
        "with dynamic_sampling: draws of N prompts (G completions each) per step at most, the first included, so at "
        "most (this - 1)·N·G extra generations (verl's max_num_gen_batches; the DAPO recipe uses 10); >= 2")
    mask_truncated_completions: bool = option(False,
        "DAPO's overlong filtering: a completion cut at max_completion_length without an EOS keeps its reward and its "
        "place in its group's advantages, but none of its tokens enters the loss (nor the token count 'dapo' divides "
        "by); completions/clipped_ratio counts them (TRL: mask_truncated_completions)")
    temperature: float = option(1.0,
        "sampling temperature τ > 0 of the rollouts; log-probs use the same τ-scaled logits, so ρ compares like with "
        "like", symbol="τ")
    reward_funcs: tuple[str, ...] = option(("correctness", "format"),
        "reward functions summed into r_i: any of 'correctness' (2.0 / 1.5 / 0), 'format' (0.2 per tag), "
        "'strict_format' (0.8 if well-formed); CLI: comma-separated")

    # --- the batch and the budget ---
    N: int | None = option(16,
        "prompts per step, summed over all ranks (tutorial: batch_size); each gets G completions, so B = N·G "
        "completions per step. None = prompts_per_device × the number of processes", symbol="N")
    prompts_per_device: int | None = option(None,
        "prompts per GPU (process) per step, used when N is None (the Qwen preset): on k GPUs a step samples k × "
        "this many prompts, so the batch grows with the GPUs. Giving N replaces it")
    steps: int = option(100,
        "M: steps per outer iteration (tutorial: num_steps); each step samples a fresh batch. Total steps = I · M", symbol="M")
    max_completion_length: int = option(40,
        "|o|_max: new tokens generated per completion at most (TRL: max_completion_length; generate's "
        "max_new_tokens); also used at evaluation", symbol="|o|_max")

    # --- the optimiser ---
    lr: float = option(5e-5,
        "learning rate η of AdamW (DeepSeekMath 1e-6, tutorial 5e-6). A fresh AdamW's first step moves every weight "
        "by about η", symbol="η")
    weight_decay: float = option(0.0,
        "AdamW weight decay (torch's default is 0.01)")
    adam_beta1: float = option(0.9,
        "AdamW β1 (first-moment decay; not the KL β)")
    adam_beta2: float = option(0.99,
        "AdamW β2 (second-moment decay; torch's default is 0.999)")
    max_grad_norm: float = option(1.0,
        "clip the global gradient norm to this value before each update (tutorial: 0.1)")
    lr_schedule: str = option("constant",
        "'constant' (the tutorial) or 'cosine' decay to 10% over all steps, after warmup_steps of linear warm-up")
    warmup_steps: int = option(0,
        "steps of linear learning-rate warm-up from 0 (0 = none, as in the tutorial)")

    # --- model and data ---
    model: str = option("tiny",
        "'tiny' = the shipped 1M-param Qwen2 in grpo_lib/assets/tiny-qwen2-addition (CPU); otherwise a hub name or a "
        "local folder")
    dtype: str = option("auto",
        "compute dtype: 'auto' (bfloat16 on CUDA, float32 on CPU), 'float32' or 'bfloat16' ('float16' is refused: "
        "it needs a gradient scaler). How the weights are kept is `precision`")
    precision: str = option("mixed",
        "'mixed': fp32 master weights and fp32 AdamW state, forward and backward under torch.autocast(dtype) (plain "
        "fp32 when dtype is float32); 'pure': weights and AdamW state in dtype itself (pure bf16: an lr 5e-6 update "
        "rounds away on most weights; notebook 06 shows it)")
    save_dtype: str | None = option(None,
        "dtype of the saved final model: None = the weights' own dtype (fp32 with precision 'mixed'), or 'float32' / "
        "'bfloat16'")
    task: str = option("addition",
        "'addition' (synthetic two-digit sums, 300 held-out test problems) or 'gsm8k' (train split for training, test "
        "split for evaluation)")
    data_dir: str | None = option(None,
        "GSM8K only: a local folder holding train.jsonl and test.jsonl (e.g. ../shared/data/gsm8k); None loads "
        "'openai/gsm8k' from the hub")
    system_prompt: str | None = option(None,
        "system prompt put before each question (the tutorial's SYSTEM_PROMPT in the GSM8K preset); None = just the "
        "question. Uses the chat template when the tokenizer has one")
    lora_r: int = option(0,
        "LoRA rank r through peft (pip install -e '.[lora]'): train the low-rank adapters B·A (r × d_in and d_out × r, "
        "B starting at 0) of lora_target_modules and freeze every other weight; π_ref is then the base model (the "
        "adapters switched off), not a copy. 0 = full fine-tuning", symbol="r")
    lora_alpha: float = option(32.0,
        "LoRA α: each adapter adds (α / r)·B·A to its weight (peft's lora_alpha; 'LoRA Without Regret' uses α = 32)",
        symbol="α")
    lora_dropout: float = option(0.0,
        "dropout on the adapters' input (peft's lora_dropout); 0 keeps π_θ deterministic, so log π_θold = log π_θ "
        "at μ = 1")
    lora_target_modules: tuple[str, ...] = option(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        "the Linear layers that get adapters (peft's target_modules; the default: every attention and MLP projection "
        "of Qwen2, as 'LoRA Without Regret' recommends: attention-only LoRA underperforms); CLI: comma-separated")
    lora_lr_multiplier: float = option(10.0,
        "with lora_r > 0 AdamW runs at lr × this: LoRA's best learning rate is about 10 times full fine-tuning's "
        "(Schulman and Thinking Machines Lab 2025, 'LoRA Without Regret'). The start-up line prints the lr used; 1 "
        "= lr as given")
    gradient_checkpointing: bool = option(False,
        "recompute activations in the backward pass to save memory (the update only: generation always runs without "
        "it)")
    micro_batch_size: int | None = option(None,
        "completions per forward/backward pass (gradient accumulation over the B rows; TRL: "
        "per_device_train_batch_size); None = all B at once. Same update, less memory")

    # --- evaluation ---
    eval_n: int | None = option(None,
        "held-out problems evaluated with greedy decoding before and after training; None = the whole test split (300 "
        "addition, 1319 GSM8K)")
    eval_batch_size: int = option(300,
        "prompts per greedy generate() call during evaluation")
    eval_every: int = option(0,
        "also evaluate every this many steps (0 = only before and after training)")

    # --- bookkeeping ---
    seed: int = option(0,
        "random seed: model init and prompt order are the same on every rank; sampling uses a different stream per "
        "rank and step")
    device: str = option("auto",
        "'auto' (cuda:LOCAL_RANK when CUDA is available, else cpu), 'cpu', 'cuda' or 'cuda:K'")
    num_threads: int | None = option(None,
        "CPU threads per process for torch during train(), restored afterwards. None (default): the cores this "
        "process may use (divided among torchrun's processes), one fewer for each core other programs keep busy, "
        "checked between steps (grpo_lib.threads); N: exactly N, never adjusted")
    output_dir: str = option("runs/tiny",
        "where metrics.jsonl, summary.json and the final model (save_pretrained) are written")
    report_to: str = option("wandb",
        "'wandb' (offline unless you are logged in; WANDB_MODE wins) or 'none'")
    wandb_project: str = option("grpo-course",
        "W&B project name (only used with report_to='wandb')")
    log_every: int = option(10,
        "print one line of metrics every this many steps (metrics.jsonl always gets every step)")
    progress: bool = option(True,
        "show tqdm progress bars for training and evaluation")
    preset: str = option("tiny",
        "name of the preset these values started from (recorded in summary.json; set by from_preset)")

    # --- checkpoints, resume and failures ---
    save_every: int = option(0,
        "write a checkpoint every this many steps to OUTPUT_DIR/checkpoints/step-XXXXXX (the model as save_pretrained "
        "writes it, optimizer, schedule, RNG of every rank, history); 0 = never")
    save_on_stop: bool = option(False,
        "when a signal (SIGTERM, SIGINT, SIGHUP) stops the run, write a checkpoint of the last completed step first, "
        "so the resume repeats no step")
    save_total_limit: int | None = option(None,
        "keep only the newest K complete checkpoints (K >= 1; older ones are deleted once the new one is complete); "
        "None keeps all")
    resume: str | None = option(None,
        "continue from a checkpoint folder, or from an output dir (its latest complete checkpoint); the configuration "
        "must match the saved one except output and logging options. On the command line the run writes into that "
        "run folder")
    overwrite: bool = option(False,
        "start a fresh run in an output dir that already holds one (metrics, summary, model, checkpoints), deleting "
        "that run's files first; without it such a folder is refused")
    dist_timeout_minutes: float = option(30.0,
        "torchrun only: a collective that waits longer than this raises instead of hanging (process-group timeout); "
        "must exceed the slowest evaluation")

    # ------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        _coerce_and_check_types(self)
        problems = _non_finite_fields(self)          # inf / NaN first: every range check below assumes finite

        def need(ok: bool, message: str) -> None:
            if not ok and not any(m.startswith(message.split(" ", 1)[0] + " ") for m in problems):
                problems.append(message)

        need(self.G >= 2, f"G must be >= 2 (got {self.G}): with one completion per prompt every group-relative "
             "advantage A_i = r_i - mean(r) is 0, so nothing is learned")
        need(self.N is None or self.N >= 1, f"N (prompts per step) must be >= 1, got {self.N}")
        need(self.prompts_per_device is None or self.prompts_per_device >= 1,
             f"prompts_per_device must be >= 1, got {self.prompts_per_device}")
        need((self.N is None) != (self.prompts_per_device is None),
             "give exactly one of N (prompts per step over all processes) and prompts_per_device (prompts per "
             f"GPU; the step then has k times as many on k GPUs); got N={self.N}, "
             f"prompts_per_device={self.prompts_per_device}")
        need(0 < self.epsilon < 1, f"epsilon (ε, the clip range) must satisfy 0 < ε < 1, got {self.epsilon}")
        need(self.epsilon_high is None or self.epsilon_high >= self.epsilon,
             f"epsilon_high (ε_high) must be None or >= epsilon = {self.epsilon}, got {self.epsilon_high}")
        need(self.beta >= 0, f"beta (β, the KL coefficient) must be >= 0, got {self.beta}")
        need(self.mu >= 1, f"mu (μ, updates per sampled batch) must be >= 1, got {self.mu}")
        need(self.num_iterations >= 1, f"num_iterations (I, outer iterations) must be >= 1, got {self.num_iterations}")
        need(self.steps >= 1, f"steps (M, steps per outer iteration) must be >= 1, got {self.steps}")
        need(self.loss_type in ALL_LOSS_TYPES, f"loss_type must be one of {ALL_LOSS_TYPES}, got {self.loss_type!r}")
        need(self.importance_sampling_level in IMPORTANCE_SAMPLING_LEVELS,
             f"importance_sampling_level must be one of {IMPORTANCE_SAMPLING_LEVELS}, got "
             f"{self.importance_sampling_level!r}")
        need(self.importance_sampling_level != "sequence" or self.loss_type == "grpo",
             f"importance_sampling_level='sequence' (GSPO) needs loss_type='grpo', got loss_type={self.loss_type!r}: "
             "GSPO's objective is a mean over completions; the token-summing types weight each sequence ratio by its "
             "length (TRL warns), and 'cispo' caps token weights")
        need(self.loss_type != "cispo" or (self.epsilon_high is not None and self.epsilon_high >= 1),
             "loss_type='cispo' caps the importance weight at epsilon_high itself (ε_max, not 1 + ε_high; ScaleRL: "
             f"5.0), so epsilon_high must be given and >= 1, got epsilon_high={self.epsilon_high}")
        need(self.kl_estimator in KL_ESTIMATORS, f"kl_estimator must be one of {KL_ESTIMATORS}, got {self.kl_estimator!r}")
        need(self.multi_objective_aggregation in MULTI_OBJECTIVE_AGGREGATIONS,
             f"multi_objective_aggregation must be one of {MULTI_OBJECTIVE_AGGREGATIONS}, got "
             f"{self.multi_objective_aggregation!r}")
        need(self.multi_objective_aggregation != "normalize_then_sum" or self.scale_rewards == "group",
             "multi_objective_aggregation='normalize_then_sum' (GDPO) normalises each reward function by its group std "
             f"and the sum by the batch std, so scale_rewards={self.scale_rewards!r} would be ignored (as TRL "
             "ignores it); leave scale_rewards='group'")
        need(self.vllm_importance_sampling_mode in IS_MODES,
             f"vllm_importance_sampling_mode must be one of {IS_MODES}, got {self.vllm_importance_sampling_mode!r}")
        lo, hi = self.vllm_importance_sampling_clip_min, self.vllm_importance_sampling_clip_max
        need(lo is None or hi is None or lo < hi,
             f"vllm_importance_sampling_clip_min ({lo}) must be less than vllm_importance_sampling_clip_max ({hi})")
        need(not self.vllm_importance_sampling_mode.endswith("_truncate") or lo is not None or hi is not None,
             "vllm_importance_sampling_clip_min or _clip_max must be set for the truncate mode "
             f"{self.vllm_importance_sampling_mode!r}")
        perturbation = _perturbation_problem(self.sampler_perturbation)
        need(perturbation is None, f"sampler_perturbation {perturbation}")
        need(not self.vllm_importance_sampling_correction or self.sampler_perturbation != "none",
             "vllm_importance_sampling_correction=True needs a sampler other than the policy (vLLM in TRL); with "
             "sampler_perturbation='none' the policy samples, so every weight would be 1. Set sampler_perturbation "
             "to 'bf16' or 'noise:SIGMA' (a perturbed copy samples), or pass your own sampler's log-probs to "
             "grpo_lib.loss.sampling_importance_weights and grpo_loss(is_weights=...)")
        need(not (self.sampler_perturbation == "bf16" and self.precision == "pure" and self.dtype == "bfloat16"),
             "sampler_perturbation='bf16' with precision='pure' and dtype='bfloat16': the policy itself is then a "
             "bf16 model, so its bf16 copy samples exactly as it does and there is no mismatch; use "
             "sampler_perturbation='noise:SIGMA', or precision='mixed' (fp32 master weights)")
        need(self.dynamic_sampling_max_draws >= 1,
             f"dynamic_sampling_max_draws must be >= 1, got {self.dynamic_sampling_max_draws}")
        need(not self.dynamic_sampling or self.dynamic_sampling_max_draws >= 2,
             f"dynamic_sampling=True with dynamic_sampling_max_draws={self.dynamic_sampling_max_draws}: the first draw "
             "is the step's own N prompts, so no extra draw could ever replace a flat group; give "
             "dynamic_sampling_max_draws >= 2 (the DAPO recipe: 10), or leave dynamic_sampling off")
        need(self.dynamic_sampling or self.dynamic_sampling_max_draws == _DEFAULTS["dynamic_sampling_max_draws"],
             f"dynamic_sampling_max_draws={self.dynamic_sampling_max_draws} has no effect without dynamic_sampling=True "
             "(--dynamic-sampling)")
        need(self.lora_r >= 0, f"lora_r (LoRA rank r) must be >= 0 (0 = full fine-tuning), got {self.lora_r}")
        need(self.lora_alpha > 0, f"lora_alpha (LoRA α) must be > 0, got {self.lora_alpha}")
        need(0 <= self.lora_dropout < 1, f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        need(len(self.lora_target_modules) >= 1, "lora_target_modules must name at least one module, got none")
        need(self.lora_lr_multiplier > 0, f"lora_lr_multiplier must be > 0, got {self.lora_lr_multiplier}")
        if self.lora_r == 0:
            changed = [name for name in LORA_FIELDS if getattr(self, name) != _DEFAULTS[name]]
            need(not changed, f"{', '.join(changed)} {'has' if len(changed) == 1 else 'have'} no effect without "
                 "LoRA: set lora_r > 0 (--lora-r 16), or leave "
                 f"{'it' if len(changed) == 1 else 'them'} at the default")
        else:
            need(self.precision != "pure",
                 f"lora_r={self.lora_r} with precision='pure': peft keeps the adapters in fp32 (its "
                 "autocast_adapter_dtype) while 'pure' promises the trainable weights and AdamW state in dtype, and "
                 "pure-bf16 AdamW rounds small updates away; use precision='mixed' (fp32 adapters and AdamW state, "
                 "bf16 autocast)")
            need(self.lr * self.lora_lr_multiplier <= LR_MAX,
                 f"lr × lora_lr_multiplier = {self.lr:g} × {self.lora_lr_multiplier:g} must be <= {LR_MAX:g}")
        need(self.scale_rewards in SCALE_REWARDS,
             f"scale_rewards must be one of {SCALE_REWARDS}, got {self.scale_rewards!r}")
        need(TEMPERATURE_RANGE[0] <= self.temperature <= TEMPERATURE_RANGE[1],
             f"temperature (τ) must be in [{TEMPERATURE_RANGE[0]:g}, {TEMPERATURE_RANGE[1]:g}], a range float32 carries "
             "(the logits are divided by τ in float32: near 0 they overflow, 1e-45 is not even a normal float32; "
             f"use evaluation for greedy decoding), got {self.temperature}")
        need(len(self.reward_funcs) >= 1, "reward_funcs must name at least one reward function, got none")
        for name in self.reward_funcs:
            need(name in REWARD_NAMES, f"reward_funcs: unknown reward function {name!r}; choose from {REWARD_NAMES}")
        need(len(set(self.reward_funcs)) == len(self.reward_funcs), f"reward_funcs lists a function twice: {self.reward_funcs}")
        need(self.max_completion_length >= 1,
             f"max_completion_length must be >= 1 new token, got {self.max_completion_length}")
        need(0 < self.lr <= LR_MAX and math.isfinite(self.lr),
             f"lr (η) must be a finite number in (0, {LR_MAX:g}], a range float32 carries (AdamW's first update moves "
             "a weight by up to lr / (1 - adam_beta1), and the weights are float32, max 3.4e38), got "
             f"{self.lr}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(0 <= self.adam_beta1 < 1, f"adam_beta1 must be in [0, 1), got {self.adam_beta1}")
        need(0 <= self.adam_beta2 < 1, f"adam_beta2 must be in [0, 1), got {self.adam_beta2}")
        need(self.max_grad_norm > 0, f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        need(self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        need(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        need(bool(self.model.strip()), "model must be 'tiny', a hub name or a local folder; got an empty string")
        need(self.dtype in DTYPES, f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        need(self.dtype != "float16", "dtype='float16' is not supported for training: fp16 needs a gradient scaler "
             "(loss scaling) that grpo_lib does not implement; use --dtype bfloat16 (mixed precision) or float32")
        need(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        need(self.save_dtype is None or self.save_dtype in SAVE_DTYPES,
             f"save_dtype must be None or one of {SAVE_DTYPES}, got {self.save_dtype!r}")
        need(self.save_total_limit is None or self.save_total_limit >= 1,
             f"save_total_limit must be >= 1 (the newest K checkpoints are kept) or None, got {self.save_total_limit}")
        need(self.task in TASKS, f"task must be one of {TASKS}, got {self.task!r}")
        need(self.data_dir is None or self.task == "gsm8k",
             f"data_dir is only used with task='gsm8k' (got task={self.task!r}, data_dir={self.data_dir!r})")
        need(self.micro_batch_size is None or self.micro_batch_size >= 1,
             f"micro_batch_size must be None or >= 1, got {self.micro_batch_size}")
        need(self.eval_n is None or self.eval_n >= 1, f"eval_n must be None (whole test split) or >= 1, got {self.eval_n}")
        need(self.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        need(self.eval_every >= 0, f"eval_every must be >= 0 (0 = before and after only), got {self.eval_every}")
        need(re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device) is not None,
             f"device must be 'auto', 'cpu', 'cuda', 'cuda:K' or 'mps', got {self.device!r}")
        need(self.num_threads is None or self.num_threads >= 1, f"num_threads must be None or >= 1, got {self.num_threads}")
        need(bool(self.output_dir.strip()), "output_dir must be a folder path, got an empty string")
        need(self.report_to in REPORT_TO, f"report_to must be one of {REPORT_TO}, got {self.report_to!r}")
        need(self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}")
        need(self.save_every >= 0, f"save_every must be >= 0 (0 = no checkpoints), got {self.save_every}")
        need(self.resume is None or bool(self.resume.strip()),
             "resume must be None or a checkpoint / output folder, got an empty string")
        need(self.dist_timeout_minutes > 0, f"dist_timeout_minutes must be > 0, got {self.dist_timeout_minutes}")
        if problems:
            raise ValueError("invalid GRPOConfig:\n  - " + "\n  - ".join(problems))

    # --- presets ------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str = "tiny", **overrides: Any) -> GRPOConfig:
        """The named preset, with any field overridden: `GRPOConfig.from_preset("tiny", steps=20)`.

        Args:
            name: one of `PRESETS` ("tiny", "qwen2.5-1.5b-gsm8k").
            **overrides: field=value pairs applied on top of the preset (validated like any config).

        Raises:
            ValueError: unknown preset (the message lists the presets) or an invalid value.
            TypeError: an override that is not a field (the message suggests the closest field).

        Taught in: notebooks/06_multi_gpu_qwen.ipynb
        """
        if name not in PRESETS:
            close = difflib.get_close_matches(str(name), PRESETS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown preset {name!r}; available presets: {', '.join(PRESETS)}.{hint}")
        check_field_names(overrides)
        values = {**batch_override(PRESETS[name](), overrides), "preset": name}
        return cls(**values)

    @classmethod
    def tiny(cls, **overrides: Any) -> GRPOConfig:
        """The CPU preset: what CI, the tests and notebook 05 run (`from_preset("tiny")`)."""
        return cls.from_preset("tiny", **overrides)

    @classmethod
    def full(cls, **overrides: Any) -> GRPOConfig:
        """The tutorial's GPU run (`from_preset("qwen2.5-1.5b-gsm8k")`): opt-in, never a default."""
        return cls.from_preset("qwen2.5-1.5b-gsm8k", **overrides)

    def replace(self, **overrides: Any) -> GRPOConfig:
        """A copy with some fields changed, validated again (`dataclasses.replace` with a clear error)."""
        check_field_names(overrides)
        return dataclasses.replace(self, **batch_override(self.to_dict(), overrides))

    # --- derived values -----------------------------------------------------------------------
    @property
    def B(self) -> int:
        """completions per step over all ranks, B = N · G (needs N; a per-device preset: `global_B(world_size)`)"""
        if self.N is None:
            raise ValueError(f"B depends on the number of processes when N is None (prompts_per_device = "
                             f"{self.prompts_per_device}): use cfg.global_B(world_size)")
        return self.N * self.G

    def global_N(self, world_size: int) -> int:
        """prompts per step over all `world_size` processes: N, or prompts_per_device × world_size"""
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        return self.N if self.N is not None else self.prompts_per_device * world_size

    def global_B(self, world_size: int) -> int:
        """completions per step over all `world_size` processes: global_N · G"""
        return self.global_N(world_size) * self.G

    @property
    def total_steps(self) -> int:
        """sampling steps in the whole run, I · M (num_iterations · steps)"""
        return self.num_iterations * self.steps

    @property
    def total_updates(self) -> int:
        """optimizer steps in the whole run, I · M · μ"""
        return self.total_steps * self.mu

    @property
    def optimizer_lr(self) -> float:
        """the learning rate AdamW runs at: lr, times lora_lr_multiplier when LoRA is on (lora_r > 0)"""
        return self.lr * self.lora_lr_multiplier if self.lora_r else self.lr

    @property
    def is_tiny_model(self) -> bool:
        """True when the model is the shipped tiny Qwen2 (the CPU path)"""
        return self.model == "tiny"

    def N_per_rank(self, world_size: int) -> int:
        """Prompts each of `world_size` ranks samples per step, N / world_size (whole groups stay on one rank).

        Raises:
            ValueError: N is not divisible by world_size (names N and the world size).
        """
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        if self.N is None:
            return self.prompts_per_device
        if self.N % world_size:
            raise ValueError(
                f"N = {self.N} prompts per step must be divisible by the number of processes ({world_size}): "
                f"each rank samples whole groups for N / {world_size} prompts. Use --N "
                f"{max(world_size, self.N // world_size * world_size)} or --N {(self.N // world_size + 1) * world_size}, "
                f"or --prompts-per-device {max(1, self.N // world_size)} --N none to give each GPU a fixed share."
            )
        return self.N // world_size

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-ready; tuples become lists in JSON)."""
        return dataclasses.asdict(self)

    def _repr_markdown_(self) -> str:
        docs = field_docs()
        rows = ["| option | symbol | value | meaning |", "| --- | --- | --- | --- |"]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            shown = repr(value)
            if isinstance(value, str) and ("\n" in value or len(value) > 40):
                shown = repr(value[:37] + "...") if len(value) > 40 else repr(value)
            shown = shown.replace("|", "\\|").replace("\n", "\\n")
            meaning = docs.get(f.name, "").replace("|", "\\|")
            rows.append(f"| `{f.name}` | {SYMBOLS.get(f.name, '—')} | `{shown}` | {meaning} |")
        if self.N is not None:
            rows.append(f"| *(derived)* `B` | B = N·G | `{self.B}` | completions per step over all ranks |")
        else:
            rows.append(f"| *(derived)* `B` on k GPUs | B = k·{self.prompts_per_device}·G | `{self.G * self.prompts_per_device}·k` | "
                        "completions per step over all ranks |")
        rows.append(f"| *(derived)* `total_steps` | I·M | `{self.total_steps}` | sampling steps in the whole run |")
        return "\n".join(rows)


# --- presets ----------------------------------------------------------------------------------
def _tiny_preset() -> dict[str, Any]:
    """The CPU preset is the dataclass defaults (written once, on the fields): nothing to override."""
    return {}


def _qwen_gsm8k_preset() -> dict[str, Any]:
    # The tutorial's hyperparameters: 7 prompts x 12
    # completions, 400 new tokens, β = 0.04, lr 5e-6 (AdamW, no schedule), ε = 0.1, μ = 1, grad clip 0.1,
    # T = 1.0, 500 steps, one outer iteration, bf16. Evaluation is on GSM8K's *test* split (the tutorial
    # evaluated 30 train questions). Two changes from the tutorial: the 7 prompts are *per GPU*
    # (on k GPUs a step samples 7k prompts, 84k completions), and bf16 means mixed precision (fp32 master
    # weights and AdamW state, bf16 autocast): the tutorial's pure-bf16 AdamW rounds most lr-5e-6 updates
    # away. Checkpoints every 50 steps, the newest 2 kept.
    return dict(
        G=12, N=None, prompts_per_device=7, steps=500, max_completion_length=400, lr=5e-6, beta=0.04, epsilon=0.1, mu=1,
        num_iterations=1, temperature=1.0, loss_type="grpo", scale_rewards="group",
        adam_beta1=0.9, adam_beta2=0.999, weight_decay=0.01, max_grad_norm=0.1,
        model="Qwen/Qwen2.5-1.5B-Instruct", task="gsm8k", data_dir=None, system_prompt=SYSTEM_PROMPT,
        dtype="bfloat16", precision="mixed", gradient_checkpointing=True, micro_batch_size=12,
        save_every=50, save_total_limit=2,
        eval_n=None, eval_batch_size=64, output_dir="runs/qwen2.5-1.5b-gsm8k", log_every=1, num_threads=None,
    )


PRESETS = {"tiny": _tiny_preset, "qwen2.5-1.5b-gsm8k": _qwen_gsm8k_preset}
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
LORA_FIELDS = ("lora_alpha", "lora_dropout", "lora_target_modules", "lora_lr_multiplier")
"""the LoRA options that act only with lora_r > 0 (set without it, they are refused)"""


def _perturbation_problem(spec: str) -> str | None:
    """Why `spec` is not a sampler_perturbation ('none', 'bf16' or 'noise:σ' with 0 < σ finite), or None."""
    if spec in ("none", "bf16"):
        return None
    if spec.startswith("noise:"):
        try:
            sigma = float(spec.removeprefix("noise:"))
        except ValueError:
            sigma = None
        if sigma is not None and math.isfinite(sigma) and sigma > 0:
            return None
        return f"'noise:σ' needs a finite σ > 0 (the std of the noise added to every weight), got {spec!r}"
    return f"must be 'none', 'bf16' or 'noise:σ' (e.g. 'noise:1e-3'), got {spec!r}"
"""preset name -> function returning the field values that differ from the defaults (built fresh each time)"""

SYMBOLS = {f.name: f.metadata["symbol"] for f in dataclasses.fields(GRPOConfig) if "symbol" in f.metadata}
"""paper symbol of each field, shown in the markdown table and in --help (fields without one show "—")"""


# --- helpers: field docs, names, types ----------------------------------------------------------
def field_docs() -> dict[str, str]:
    """field name -> its help text (the `option(...)` of the field; the source of --help and the table).

    Used by: `grpo_lib.cli.build_arg_parser` (--help) and the config's markdown table
    """
    return {f.name: f.metadata["help"] for f in dataclasses.fields(GRPOConfig) if "help" in f.metadata}


def batch_override(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """values updated by overrides, where giving N (or prompts_per_device) clears the other one.

    The batch is stated either over all processes (N) or per GPU (prompts_per_device), never both: so
    `--preset qwen2.5-1.5b-gsm8k --N 8` means 8 prompts per step in total, whatever the GPU count.
    """
    out = {**values, **overrides}
    if overrides.get("N") is not None and "prompts_per_device" not in overrides:
        out["prompts_per_device"] = None
    if overrides.get("prompts_per_device") is not None and "N" not in overrides:
        out["N"] = None
    return out


def field_types() -> dict[str, Any]:
    """field name -> resolved type annotation (e.g. `int | None`)."""
    return typing.get_type_hints(GRPOConfig)


def check_field_names(values: dict[str, Any]) -> None:
    """Raise TypeError for any key that is not a GRPOConfig field, suggesting the closest field name."""
    names = [f.name for f in dataclasses.fields(GRPOConfig)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"GRPOConfig has no option {key!r}.{hint} Options: {', '.join(names)}")


def base_type(annotation: Any) -> tuple[Any, bool]:
    """`int | None` -> (int, True); `float` -> (float, False); `tuple[str, ...]` -> (tuple, False)."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    if optional:
        rest = [a for a in args if a is not type(None)]
        annotation = rest[0]
    origin = typing.get_origin(annotation)
    return (origin or annotation), optional


def _non_finite_fields(cfg: GRPOConfig) -> list[str]:
    """'NAME must be a finite number, got inf' for every float field holding NaN or ±inf."""
    problems = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{f.name} must be a finite number, got {value}")
    return problems


def _coerce_and_check_types(cfg: GRPOConfig) -> None:
    """Type-check every field; ints are accepted where floats are expected, lists where tuples are."""
    for name, annotation in field_types().items():
        value = getattr(cfg, name)
        kind, optional = base_type(annotation)
        if value is None:
            if not optional:
                raise ValueError(f"{name} must not be None")
            continue
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(cfg, name, float(value))
        elif kind is tuple and isinstance(value, str):
            raise ValueError(f"{name} must be a list of names, got the single string {value!r}; write [{value}] "
                             f"(in a YAML recipe: {name}: [{value}]; on the command line: "
                             f"--{name.replace('_', '-')} {value})")
        elif kind is tuple and isinstance(value, (list, tuple)):
            object.__setattr__(cfg, name, tuple(value))
            if not all(isinstance(v, str) for v in value):
                raise ValueError(f"{name} must be a tuple of strings, got {value!r}")
        elif kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
        elif kind in (str, bool, float) and not isinstance(value, kind):
            raise ValueError(f"{name} must be a {kind.__name__}, got {value!r} ({type(value).__name__})")
