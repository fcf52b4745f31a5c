"""Training memory from a model's configuration: why GRPO can drop PPO's critic.

Every number here is computed from a `transformers` config, never typed in. The model is built on the
`meta` device (shapes, no storage, no download), so counting the 1.5B parameters of Qwen2.5-1.5B-Instruct
takes about a second and no memory.

The accounting is "states per parameter", as in the ZeRO paper (Rajbhandari et al. 2019, section 3.1):
a model trained with AdamW in mixed precision holds, per parameter Ψ,

    weights (dtype_bytes) + gradients (dtype_bytes) + AdamW m and v (4 + 4) + fp32 master weights (4)

which is 2 + 2 + 12 = 16 bytes for bf16. A frozen model (the reference policy π_ref, a learned reward
model) holds only its weights.

Choices made here (each shown in notebooks/02_advantages.ipynb; the per-GPU planner at the end of
this module, `plan_gpu_memory`, is taught in notebooks/06_multi_gpu_qwen.ipynb and documented there):
1. Mixed precision is assumed whenever dtype_bytes < 4: the optimizer keeps fp32 m, v and an fp32 master
   copy of the weights, and gradients live in the training dtype. With dtype_bytes = 4 (plain fp32) there
   is no master copy. Pass `master_weights=False` for "pure bf16" training (torch AdamW straight on bf16
   parameters, as the tutorial does), where m and v also take the parameter dtype (`optimizer_state_bytes`).
2. Tied embeddings are counted once (`model.parameters()` deduplicates shared tensors); Qwen2.5-1.5B ties
   its input embedding and its LM head.
3. PPO's value model is the same backbone with a scalar head (TRL builds it with
   `AutoModelForSequenceClassification(num_labels=1)`), trained like the policy, so it carries weights,
   gradients and optimizer state. A learned reward model (DeepSeekMath, PPO-RLHF) has the same shape but
   is frozen during RL: weights only.
4. `training_memory_table` counts only states tied to parameters. Activations, logits (B·T·V) and the
   KV cache come on top: `plan_gpu_memory` adds them per GPU (a Korthikanti et al. 2022 style count of
   the tensors autograd saves, checked against torch in tests/test_course_memory.py).
5. Sizes are reported in GiB (2^30 bytes), the unit `torch.cuda.memory_allocated` and `nvidia-smi` use.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, Qwen2Config

from grpo_lib.config import TORCH_DTYPES
from grpo_lib.models import count_parameters, qwen2_5_1_5b_config
from grpo_lib.precision import auto_dtype

GIB = 2**30
OPTIMIZERS = ("adamw", "sgd")


def qwen2_5_1_5b_instruct_config():
    """The published configuration of Qwen/Qwen2.5-1.5B-Instruct (its config.json), built locally.

    hidden 1536, intermediate 8960, 28 layers, 12 query heads, 2 key/value heads (head_dim 128),
    vocabulary 151,936, tied input/output embeddings, RoPE θ = 1e6, 32,768 positions. Nothing is
    downloaded: the numbers are written here once and everything else is computed from them.

    Returns:
        a `transformers.Qwen2Config`.

    Taught in: notebooks/02_advantages.ipynb
    """
    return qwen2_5_1_5b_config()           # the numbers live in grpo_lib.models.QWEN2_5_1_5B_INSTRUCT


def _build_on_meta(config, head: str) -> torch.nn.Module:
    """Instantiate the model described by `config` on the meta device (no storage, no weights)."""
    if head == "lm":
        cls, cfg = AutoModelForCausalLM, config
    elif head == "value":
        cfg = copy.deepcopy(config)
        cfg.num_labels = 1                                   # scalar output: V(s) or r(q, o)
        cls = AutoModelForSequenceClassification
    elif head == "none":
        cls, cfg = AutoModel, config
    else:
        raise ValueError(f"head must be 'lm' (policy), 'value' (critic / reward model) or 'none', got {head!r}")
    with torch.device("meta"):
        return cls.from_config(cfg)


def count_parameters_from_config(config, *, head: str = "lm") -> int:
    """Exact parameter count Ψ of the model a config describes, by building it on the meta device.

    Args:
        config: a `transformers.PretrainedConfig` (e.g. `qwen2_5_1_5b_instruct_config()`).
        head: "lm" = causal LM, the policy π_θ (and π_ref); "value" = the same backbone with a scalar
            head, PPO's critic V_ψ or a learned reward model; "none" = the bare backbone.

    Returns:
        the number of distinct parameters (a tied embedding / LM head counts once), an int.

    Taught in: notebooks/02_advantages.ipynb
    """
    return count_parameters(_build_on_meta(config, head))


def parameter_breakdown(config, *, head: str = "lm") -> dict[str, int]:
    """Parameter count per kind of tensor: embedding, attention, mlp, norm, head (sums to Ψ).

    Args:
        config: a `transformers.PretrainedConfig`.
        head: as in `count_parameters_from_config`.

    Returns:
        dict with keys "embedding", "attention", "mlp", "norm", "head" (0 when tied to the embedding).

    Taught in: notebooks/02_advantages.ipynb
    """
    model = _build_on_meta(config, head)
    groups = {"embedding": 0, "attention": 0, "mlp": 0, "norm": 0, "head": 0}
    for name, p in model.named_parameters():                 # shared tensors appear once
        if "embed" in name:
            key = "embedding"
        elif "norm" in name:                                 # before "attention": post_attention_layernorm
            key = "norm"
        elif "attn" in name or "attention" in name:
            key = "attention"
        elif "mlp" in name:
            key = "mlp"
        else:                                                # lm_head, score
            key = "head"
        groups[key] += p.numel()
    return groups


@dataclass(frozen=True)
class MemoryRow:
    """One line of a memory table: `numel` numbers stored at `bytes_per_element` bytes each.

    Attributes:
        component: what is stored, e.g. "weights", "gradients", "AdamW m and v".
        model: which model it belongs to: "policy", "reference", "value", "reward" (or e.g. "activations").
        numel: how many numbers (parameters for parameter states; B·T·V for logits, ...).
        bytes_per_element: 2 for bf16/fp16, 4 for fp32, 8 for AdamW's m and v together in fp32.
        note: one short reason, shown in the table.
    """

    component: str
    model: str
    numel: int
    bytes_per_element: float
    note: str = ""

    @property
    def bytes(self) -> int:
        return int(round(self.numel * self.bytes_per_element))

    @property
    def gib(self) -> float:
        return self.bytes / GIB


@dataclass(frozen=True)
class MemoryTable:
    """An ordered set of `MemoryRow`s with totals; renders as a markdown table in a notebook.

    Attributes:
        rows: the lines of the table.
        title: a caption, e.g. "GRPO, Qwen2.5-1.5B, bf16 + AdamW".
    """

    rows: tuple[MemoryRow, ...]
    title: str = ""
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def total_bytes(self) -> int:
        return sum(r.bytes for r in self.rows)

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB

    def bytes_of(self, model: str) -> int:
        """Total bytes of the rows belonging to `model` ("policy", "reference", "value", ...)."""
        return sum(r.bytes for r in self.rows if r.model == model)

    def gib_of(self, model: str) -> float:
        return self.bytes_of(model) / GIB

    def with_rows(self, *rows: MemoryRow, title: str | None = None) -> MemoryTable:
        """A new table with extra rows appended (activations, logits, KV cache, ...)."""
        return MemoryTable(self.rows + tuple(rows), self.title if title is None else title, dict(self.meta))

    def to_markdown(self) -> str:
        lines = [f"**{self.title}**", ""] if self.title else []
        lines += ["| model | component | numbers | bytes each | GiB | note |", "|---|---|---:|---:|---:|---|"]
        for r in self.rows:
            lines.append(f"| {r.model} | {r.component} | {r.numel:,} | {r.bytes_per_element:g} | "
                         f"{r.gib:.2f} | {r.note} |")
        lines.append(f"| **total** | | | | **{self.total_gib:.2f}** | |")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def __str__(self) -> str:
        head = f"{self.title}\n" if self.title else ""
        body = "\n".join(f"{r.model:<10} {r.component:<22} {r.numel:>15,} x {r.bytes_per_element:>3g} B"
                         f" = {r.gib:7.2f} GiB" for r in self.rows)
        return f"{head}{body}\n{'total':<10} {'':<22} {'':>15}   {'':>3}     {self.total_gib:7.2f} GiB"


def _trained_rows(model: str, numel: int, dtype_bytes: float, optimizer: str, master_weights: bool,
                  optimizer_state_bytes: float) -> list[MemoryRow]:
    """Rows for a model that is trained: weights, gradients, optimizer state, master copy."""
    rows = [
        MemoryRow("weights", model, numel, dtype_bytes, "used for sampling and the forward pass"),
        MemoryRow("gradients", model, numel, dtype_bytes, "same dtype as the weights"),
    ]
    if optimizer == "adamw":
        rows.append(MemoryRow("AdamW m and v", model, numel, 2 * optimizer_state_bytes,
                              f"two moments, {optimizer_state_bytes:g} B each"))
    if master_weights:
        rows.append(MemoryRow("fp32 master weights", model, numel, 4,
                              "mixed precision: the optimizer updates an fp32 copy"))
    return rows


def training_memory_table(
    config,
    *,
    dtype_bytes: float = 2,
    optimizer: str = "adamw",
    with_value_model: bool = False,
    with_reference: bool = True,
    with_reward_model: bool = False,
    master_weights: bool | None = None,
    optimizer_state_bytes: float | None = None,
) -> MemoryTable:
    """Memory held by model states during RL fine-tuning, from a config: Σ_rows numel × bytes.

    Per trained parameter (mixed precision, the ZeRO paper's accounting):
        weights dtype_bytes + gradients dtype_bytes + AdamW m, v 4 + 4 + fp32 master 4  (16 B for bf16)
    Per frozen parameter (π_ref, a learned reward model): weights dtype_bytes.

    GRPO (this course): policy (trained) + reference (frozen). PPO adds a value model V_ψ, trained like
    the policy; a learned reward model (DeepSeekMath, PPO-RLHF) adds frozen weights.

    Args:
        config: a `transformers.PretrainedConfig` for the policy.
        dtype_bytes: bytes per weight in training: 2 (bf16, fp16) or 4 (fp32).
        optimizer: "adamw" (two moments per parameter) or "sgd" (no state, plain SGD).
        with_value_model: add PPO's critic, same backbone with a scalar head, trained.
        with_reference: keep a frozen π_ref for the KL term (False when β = 0, TRL's default).
        with_reward_model: add a frozen learned reward model (same shape as the value model).
        master_weights: keep an fp32 master copy; default True exactly when dtype_bytes < 4.
        optimizer_state_bytes: bytes per AdamW moment; default 4 (fp32) when master_weights, else
            dtype_bytes (torch AdamW on bf16 parameters keeps bf16 moments).

    Returns:
        a `MemoryTable`; `.total_gib`, `.gib_of("policy")`, markdown display in a notebook.

    Raises:
        ValueError: unknown optimizer, or a non-positive dtype_bytes.

    Taught in: notebooks/02_advantages.ipynb
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if not dtype_bytes > 0:
        raise ValueError(f"dtype_bytes must be > 0 (2 for bf16, 4 for fp32), got {dtype_bytes}")
    if master_weights is None:
        master_weights = dtype_bytes < 4
    if optimizer_state_bytes is None:
        optimizer_state_bytes = 4 if master_weights else dtype_bytes

    psi = count_parameters_from_config(config, head="lm")                 # policy / reference Ψ
    rows = _trained_rows("policy", psi, dtype_bytes, optimizer, master_weights, optimizer_state_bytes)
    if with_reference:
        rows.append(MemoryRow("weights", "reference", psi, dtype_bytes, "frozen π_ref for the KL term"))
    if with_value_model or with_reward_model:
        psi_v = count_parameters_from_config(config, head="value")         # backbone + scalar head
    if with_reward_model:
        rows.append(MemoryRow("weights", "reward", psi_v, dtype_bytes, "frozen learned reward model"))
    if with_value_model:
        rows += _trained_rows("value", psi_v, dtype_bytes, optimizer, master_weights, optimizer_state_bytes)

    algo = "PPO" if with_value_model else "GRPO"
    dtype = {2: "bf16", 4: "fp32"}.get(dtype_bytes, f"{dtype_bytes:g}-byte")
    title = f"{algo}: {getattr(config, 'model_type', 'model')} with {psi / 1e9:.2f}B parameters, {dtype} + {optimizer}"
    meta = {"params": psi, "dtype_bytes": dtype_bytes, "optimizer": optimizer, "master_weights": master_weights}
    return MemoryTable(tuple(rows), title, meta)


# --- the per-GPU planner (notebook 06) ----------------------------------------------------------------
#
# Activations are counted the way Korthikanti et al. (2022), "Reducing Activation Recomputation in Large
# Transformer Models" (arXiv 2205.05198, section 4.1) count them: every tensor that autograd saves for the
# backward pass, layer by layer. Their GPT layer (LayerNorm, GeLU MLP of 4h, dropout, attention scores
# kept) gives s·b·h·(34 + 5·n_heads·s/h) bytes in 16-bit. Applied to transformers' Qwen2 decoder layer instead (RMSNorm
# computed in fp32, no dropout, SwiGLU MLP of width f, SDPA / flash attention that keeps no s×s scores),
# the same count gives, per token and per layer, with a = bytes per activation (2 for bf16):
#
#     2 RMSNorms        2·((4 + a)·h + 4)     fp32 copy of the input, normalised input, 1/rms
#     their outputs     2·a·h                 saved by q/k/v_proj and by gate/up_proj
#     attention         a·h_q + 2·a·h_kv' + a·h_q + 4·n_heads
#                                             q, k, v (after RoPE), the output (also o_proj's input),
#                                             SDPA's log-sum-exp in fp32
#     SwiGLU MLP        4·a·f                 gate, up, silu(gate), silu(gate)·up (down_proj's input)
#
# with h_q = n_heads·head_dim and h_kv' = n_kv_heads·head_dim, except that with a padding mask (GRPO's
# left-padded batches) transformers repeats K and V to every query head before SDPA (h_kv' = h_q) and
# SDPA keeps the mask as a bias of s per token per layer (a bytes each). Around the layers: the final
# RMSNorm ((4 + a)·h + 4 per token), the LM-head input (a·h for the T + 1 kept positions), the token ids
# (8 bytes per token) and RoPE's cos and sin (2·a·head_dim per token). tests/test_course_memory.py measures all
# of this with torch.autograd.graph.saved_tensors_hooks on a small Qwen2 and finds the same bytes.
#
# Gradient checkpointing (transformers checkpoints each decoder layer) keeps only each layer's input,
# a·h per token per layer, and recomputes one layer at a time during the backward pass: so one layer's
# full activations are added back at the peak.
#
# Under bf16 autocast with fp32 weights (grpo_lib's mixed precision) not everything is bf16. The embedding
# output is fp32 and every residual add keeps fp32, so the residual stream is fp32: each RMSNorm saves its
# fp32 input and its fp32 normalised input, 2·(8·h + 4) per token per layer instead of 2·((4 + a)·h + 4);
# each Linear casts its input to bf16 on its own (autocast caches only the weights' casts), so q/k/v_proj
# save three bf16 copies of the normed input and gate/up_proj two: 5·a·h instead of 2·a·h; a checkpointed
# layer input is fp32 (4·h); the final norm saves 8·h + 4 and RoPE's cos and sin are fp32 (2·4·head_dim);
# and on CUDA autocast runs log_softmax in fp32, so the log-probs keep b·T·V·4 bytes, not b·T·V·a.
# tests/test_course_memory.py measures this too (CPU autocast, which keeps log_softmax in bf16).
#
# The optimizer step adds a temporary: torch's AdamW (the foreach implementation, the default on CUDA)
# computes sqrt(v) for all parameters at once, one more AdamW-state-sized tensor (Ψ·o bytes) on top of the
# weights, gradients and moments while the step runs.

DTYPE_BYTES = {name: dtype.itemsize for name, dtype in TORCH_DTYPES.items()}
"""dtype name -> bytes per element (4 for float32, 2 for bfloat16 / float16), from grpo_lib.config.TORCH_DTYPES"""
ATTENTION_IMPLEMENTATIONS = ("sdpa", "flash_attention_2")
LOGITS_MODES = ("grpo_lib", "full_fp32")
GPU_USABLE_FRACTION = 0.9
"""share of a GPU's memory the planner lets a run use: the rest is the CUDA context (~0.5 GiB), the
caching allocator's fragmentation and short-lived buffers not listed in the plan"""


def _cfg_int(config, name: str) -> int:
    value = getattr(config, name, None)
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"model config: {name} must be a positive int, got {value!r}")
    return value


def _qwen2_shape(config) -> dict[str, int | bool]:
    """The numbers of a Qwen2-style config the planner needs, validated (clear errors name the field)."""
    h, n_heads = _cfg_int(config, "hidden_size"), _cfg_int(config, "num_attention_heads")
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    head_dim = getattr(config, "head_dim", None) or h // n_heads
    if n_heads % n_kv:
        raise ValueError(f"model config: num_attention_heads ({n_heads}) must be a multiple of "
                         f"num_key_value_heads ({n_kv})")
    return {"h": h, "f": _cfg_int(config, "intermediate_size"), "L": _cfg_int(config, "num_hidden_layers"),
            "V": _cfg_int(config, "vocab_size"), "n_heads": n_heads, "n_kv": n_kv, "head_dim": head_dim,
            "tied": bool(getattr(config, "tie_word_embeddings", False))}


def qwen2_parameter_count(config) -> int:
    """Ψ of a Qwen2ForCausalLM from its config, in closed form (no model is built).

    Ψ = V·h + L·(attention + mlp + 2h) + h (+ V·h when the LM head is not tied), with
    attention = h·h_q + h_q (q_proj, bias) + 2·(h·h_kv + h_kv) (k_proj, v_proj, biases) + h_q·h (o_proj),
    mlp = 3·h·f (gate, up, down), h_q = n_heads·head_dim, h_kv = n_kv_heads·head_dim.

    Args:
        config: a `transformers.Qwen2Config` (any object with the same fields).

    Returns:
        the parameter count, an int (a tied embedding / LM head counted once, as torch does).

    Taught in: notebooks/06_multi_gpu_qwen.ipynb
    """
    s = _qwen2_shape(config)
    h, hq, hkv = s["h"], s["n_heads"] * s["head_dim"], s["n_kv"] * s["head_dim"]
    attention = h * hq + hq + 2 * (h * hkv + hkv) + hq * h
    mlp = 3 * h * s["f"]
    embedding = s["V"] * h
    return embedding + s["L"] * (attention + mlp + 2 * h) + h + (0 if s["tied"] else embedding)


def layer_activation_bytes(config, *, dtype_bytes: float = 2, seq_len: int, padded: bool = True,
                           attention: str = "sdpa", mixed: bool = False) -> float:
    """Bytes autograd keeps for one decoder layer, per token: the Korthikanti-style count above.

    per token = 2·((4 + a)·h + 4) + 2·a·h + 2·a·h_q + 2·a·h_kv' + 4·n_heads + 4·a·f  (+ a·s with a mask)
    mixed:      2·(8·h + 4)       + 5·a·h + (the same attention, MLP and mask terms)

    Args:
        config: a Qwen2 config.
        dtype_bytes: a, bytes per activation (2 bf16, 4 fp32); RMSNorm's upcast is fp32 regardless.
        seq_len: s = P + T, the padded prompt + completion length (the mask term grows with it).
        padded: True when the batch has a padding mask (GRPO's left-padded prompts): K and V are
            repeated to every query head and SDPA saves the mask. flash_attention_2 needs neither.
        attention: "sdpa" or "flash_attention_2" (both keep no s×s scores; eager attention would).
        mixed: fp32 weights under `dtype_bytes` autocast (grpo_lib's mixed precision): fp32 residual stream
            and norms, a separate cast of the normed input for each projection.

    Returns:
        bytes per token for one layer (a float; multiply by tokens and layers).

    Used by: `activation_breakdown` (the planner, `plan_gpu_memory`)
    """
    if attention not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS} (eager attention keeps the "
                         f"s×s scores and is not modelled), got {attention!r}")
    s, a = _qwen2_shape(config), dtype_bytes
    h, f, hq = s["h"], s["f"], s["n_heads"] * s["head_dim"]
    masked = padded and attention == "sdpa"
    hkv_saved = hq if masked else s["n_kv"] * s["head_dim"]
    norms = 2 * (8 * h + 4) if mixed else 2 * ((4 + a) * h + 4)
    norm_outputs = (5 if mixed else 2) * a * h
    attn = a * hq + 2 * a * hkv_saved + a * hq + 4 * s["n_heads"]
    mlp = 4 * a * f
    mask = a * seq_len if masked else 0
    return norms + norm_outputs + attn + mlp + mask


def activation_breakdown(config, *, micro_batch_size: int, prompt_len: int, completion_len: int,
                         dtype_bytes: float = 2, gradient_checkpointing: bool = False, padded: bool = True,
                         attention: str = "sdpa", logits: str = "grpo_lib", mixed: bool = False,
                         fp32_log_softmax: bool | None = None) -> dict[str, int]:
    """Activation memory of one forward + backward on b completions of P + T tokens, by part, in bytes.

    n = b·(P + T) tokens go through the model (prompt and completion), logits are kept for the T
    completion positions only (grpo_lib.logprobs, `logits_to_keep`):

        layers          L · n · layer_activation_bytes          (no checkpointing)
        checkpointed    L · n · a·h  +  n · layer_activation_bytes (one layer recomputed at a time)
        outside layers  n·((4 + a)·h + 4 + 8 + 2·a·head_dim) + b·(T + 1)·a·h
                        (final norm, token ids, RoPE cos/sin (not with checkpointing), LM-head input)
        logits          b·T·V·a   (grpo_lib: log-softmax rows of the completion positions, model dtype;
                                   b·T·V·4 under CUDA autocast, whose log_softmax is fp32)
                        b·(P+T)·V·4 (full_fp32: the tutorial's fp32 log-softmax over every position)

    mixed (fp32 weights under autocast): the per-layer count of `layer_activation_bytes(mixed=True)`, fp32
    checkpointed layer inputs (4·h), an fp32 final norm (8·h + 4) and fp32 RoPE tables (2·4·head_dim).

    Args:
        config: a Qwen2 config.
        micro_batch_size: b, completions per forward/backward pass.
        prompt_len: P, padded prompt tokens; completion_len: T, completion tokens.
        dtype_bytes, padded, attention: as in `layer_activation_bytes`.
        gradient_checkpointing: keep only each layer's input and recompute in backward.
        logits: "grpo_lib" or "full_fp32".
        mixed: grpo_lib's mixed precision (see above).
        fp32_log_softmax: the kept log-probs are fp32 (autocast on CUDA); None = `mixed`.

    Returns:
        dict of bytes: "layers" (saved inside the decoder layers), "recompute" (the one layer rebuilt
        during backward; 0 without checkpointing), "outside_layers", "logits".

    Used by: `plan_gpu_memory`
    """
    if logits not in LOGITS_MODES:
        raise ValueError(f"logits must be one of {LOGITS_MODES}, got {logits!r}")
    for name, value in (("micro_batch_size", micro_batch_size), ("prompt_len", prompt_len),
                        ("completion_len", completion_len)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    s, a = _qwen2_shape(config), dtype_bytes
    b, P, T = micro_batch_size, prompt_len, completion_len
    n = b * (P + T)                                                            # tokens through the model
    per_layer = layer_activation_bytes(config, dtype_bytes=a, seq_len=P + T, padded=padded, attention=attention,
                                       mixed=mixed)
    residual = 4 if mixed else a                                           # bytes of the residual stream
    if gradient_checkpointing:
        layers, recompute = s["L"] * n * residual * s["h"], n * per_layer
    else:
        layers, recompute = s["L"] * n * per_layer, 0
    rope = 0 if gradient_checkpointing else 2 * residual * s["head_dim"]   # cos, sin: saved inside the layers
    final_norm = 8 * s["h"] + 4 if mixed else (4 + a) * s["h"] + 4
    outside = n * (final_norm + 8 + rope) + b * (T + 1) * a * s["h"]
    lsm = 4 if (mixed if fp32_log_softmax is None else fp32_log_softmax) else a
    logit_bytes = b * T * s["V"] * lsm if logits == "grpo_lib" else b * (P + T) * s["V"] * 4
    return {"layers": int(round(layers)), "recompute": int(round(recompute)),
            "outside_layers": int(round(outside)), "logits": int(round(logit_bytes))}


def kv_cache_bytes(config, *, batch: int, seq_len: int, dtype_bytes: float = 2) -> int:
    """KV cache of generate(): batch · (P + T) · L · 2 · n_kv_heads · head_dim · a bytes.

    Only the KV heads are cached (grouped-query attention: Qwen2.5-1.5B caches 2 heads, not 12).

    Used by: `plan_gpu_memory`
    """
    s = _qwen2_shape(config)
    return int(batch * seq_len * s["L"] * 2 * s["n_kv"] * s["head_dim"] * dtype_bytes)


@dataclass(frozen=True, repr=False)
class GPUMemoryPlan:
    """What one GPU holds during a GRPO run, by phase, and whether it fits.

    Rows whose `model` is "policy" or "reference" are model states; "update" rows exist during the
    policy update (one micro-batch at a time), "generation" rows while sampling. grpo_lib's update starts
    with `optimizer.zero_grad(set_to_none=True)`, so the gradients are freed while the first micro-batch's
    forward pass builds its activations and come back as its backward pass frees them; every later
    micro-batch of the same update (gradient accumulation) runs with the gradients allocated, and they stay
    allocated between updates, through generation. Hence, with states = weights + reference + AdamW state +
    master copy:

        first micro-batch = states + max(update rows, gradients)      (what scripts/measure_gpu_memory.py measures)
        update peak      = states + gradients + update rows           (with 2 or more micro-batches per update;
                                                                       = first micro-batch with one)
        step peak        = states + gradients + AdamW's update temporary (the optimizer step)
        generation peak  = states + gradients + max(KV cache at P tokens + prefill buffer,
                                                     full KV cache + sampling logits)
        peak             = max(update peak, step peak, generation peak)

    Attributes:
        table: the rows (a `MemoryTable`).
        settings: the arguments the plan was made with.
    """

    table: MemoryTable
    settings: dict = field(default_factory=dict, compare=False)

    @property
    def rows(self) -> tuple[MemoryRow, ...]:
        return self.table.rows

    def row(self, model: str, component: str) -> MemoryRow:
        """The row with this model and component (KeyError naming what exists otherwise)."""
        for r in self.rows:
            if r.model == model and r.component == component:
                return r
        raise KeyError(f"no row ({model!r}, {component!r}); rows: {[(r.model, r.component) for r in self.rows]}")

    def _bytes(self, model: str, component: str) -> int:
        return sum(r.bytes for r in self.rows if r.model == model and r.component == component)

    @property
    def gradient_bytes(self) -> int:
        return self._bytes("policy", "gradients")

    @property
    def states_bytes(self) -> int:
        """Weights, reference weights, optimizer state, master copy: allocated for the whole run."""
        return self.table.bytes_of("policy") + self.table.bytes_of("reference") - self.gradient_bytes

    @property
    def persistent_bytes(self) -> int:
        """States plus gradients: what the GPU holds between updates."""
        return self.states_bytes + self.gradient_bytes

    @property
    def update_bytes(self) -> int:
        """Activations and logits of one micro-batch (the "update" rows)."""
        return self.table.bytes_of("update")

    @property
    def generation_bytes(self) -> int:
        """max(KV cache at P tokens + prefill buffer, full KV cache + sampling logits)."""
        kv = self._bytes("generation", "KV cache")
        prompt_share = self.settings.get("prompt_len", 1) / (self.settings.get("prompt_len", 1)
                                                               + self.settings.get("completion_len", 0))
        copies = self._bytes("generation", "autocast weight copies")       # mixed precision only
        prefill = int(round(kv * prompt_share)) + self._bytes("generation", "prefill MLP buffer") + copies
        decode = kv + self._bytes("generation", "sampling logits") + copies
        return max(prefill, decode)

    @property
    def micro_batches(self) -> int:
        """Micro-batches per update on one GPU: ceil(completions per GPU / micro-batch size)."""
        rows, b = self.settings.get("completions_per_gpu", 1), self.settings.get("micro_batch_size", 1)
        return -(-rows // b)

    @property
    def first_micro_batch_peak_bytes(self) -> int:
        """States + max(update rows, gradients): one micro-batch with the gradients freed (set_to_none)."""
        return self.states_bytes + max(self.update_bytes, self.gradient_bytes)

    @property
    def update_peak_bytes(self) -> int:
        if self.micro_batches > 1:             # micro-batches 2, 3, ... run with the gradients allocated
            return self.states_bytes + self.gradient_bytes + self.update_bytes
        return self.first_micro_batch_peak_bytes

    @property
    def step_peak_bytes(self) -> int:
        """States + gradients + AdamW's temporary: the optimizer step."""
        return self.persistent_bytes + self.table.bytes_of("optimizer step")

    @property
    def generation_peak_bytes(self) -> int:
        return self.persistent_bytes + self.generation_bytes

    @property
    def peak_bytes(self) -> int:
        return max(self.update_peak_bytes, self.step_peak_bytes, self.generation_peak_bytes)

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB

    def fits(self, gpu_gib: float, usable_fraction: float = GPU_USABLE_FRACTION) -> bool:
        """True when the peak stays within usable_fraction of a GPU of `gpu_gib` GiB."""
        if not gpu_gib > 0 or not 0 < usable_fraction <= 1:
            raise ValueError(f"gpu_gib must be > 0 and usable_fraction in (0, 1], got {gpu_gib}, {usable_fraction}")
        return self.peak_gib <= usable_fraction * gpu_gib

    def verdict(self, gpu_gib: float) -> str:
        """'fits' or 'does not fit', with the numbers: e.g. 'fits on 80 GiB: 18.3 of 72.0 usable GiB'."""
        word = "fits" if self.fits(gpu_gib) else "does not fit"
        return f"{word} on {gpu_gib:g} GiB: {self.peak_gib:.1f} of {GPU_USABLE_FRACTION * gpu_gib:.1f} usable GiB"

    def to_markdown(self) -> str:
        lines = [f"**{self.table.title}**", ""] if self.table.title else []
        lines += ["| phase | component | numbers | bytes each | GiB | note |", "|---|---|---:|---:|---:|---|"]
        for r in self.rows:
            lines.append(f"| {r.model} | {r.component} | {r.numel:,} | {r.bytes_per_element:.4g} | {r.gib:.2f} | {r.note} |")
        if self.micro_batches > 1:
            lines.append(f"| update peak | states + gradients + update ({self.micro_batches} micro-batches) | | | "
                         f"{self.update_peak_bytes / GIB:.2f} | {self.states_bytes / GIB:.2f} + "
                         f"{self.gradient_bytes / GIB:.2f} + {self.update_bytes / GIB:.2f} |")
        else:
            lines.append(f"| update peak | states + max(update, gradients) | | | {self.update_peak_bytes / GIB:.2f} | "
                         f"{self.states_bytes / GIB:.2f} + max({self.update_bytes / GIB:.2f}, "
                         f"{self.gradient_bytes / GIB:.2f}) |")
        lines.append(f"| step peak | states + gradients + AdamW temporary | | | {self.step_peak_bytes / GIB:.2f} | "
                     f"{self.persistent_bytes / GIB:.2f} + {self.table.bytes_of('optimizer step') / GIB:.2f} |")
        lines.append(f"| generation peak | states + gradients + generation | | | "
                     f"{self.generation_peak_bytes / GIB:.2f} | {self.persistent_bytes / GIB:.2f} + "
                     f"{self.generation_bytes / GIB:.2f} |")
        lines.append(f"| **peak** | | | | **{self.peak_gib:.2f}** | |")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def __str__(self) -> str:
        return self.to_markdown()

    def __repr__(self) -> str:
        return f"GPUMemoryPlan({self.table.title}: peak {self.peak_gib:.2f} GiB)"


def plan_gpu_memory(
    config,
    *,
    G: int,
    N: int,
    prompt_len: int,
    completion_len: int,
    world_size: int = 1,
    dtype: str = "bfloat16",
    optimizer: str = "adamw",
    master_weights: bool | None = None,
    optimizer_state_bytes: float | None = None,
    gradient_checkpointing: bool = False,
    micro_batch_size: int | None = None,
    beta: float = 0.04,
    zero_stage: int = 0,
    attention: str = "sdpa",
    padded: bool = True,
    logits: str = "grpo_lib",
    precision: str = "pure",
) -> GPUMemoryPlan:
    """Per-GPU memory of a GRPO run, from the model config: model states, activations, logits, KV cache.

    Each of the K = world_size GPUs holds N·G/K completions (whole groups stay on one rank).

        policy      weights Ψ·a, gradients Ψ·a, AdamW m and v Ψ·2·o, fp32 master Ψ·4 (if used)
        reference   weights Ψ·a (only when β > 0)
        update      activations of one micro-batch of b completions (`activation_breakdown`), and the
                    logits b·T·V·a kept for backward (b·T·V·4 in mixed precision: fp32 log-softmax)
                    plus 2·b·T·V·a alive for a moment (the raw logits and their temperature-scaled copy
                    in the forward; their gradient in the backward)
        optimizer step  AdamW's temporary sqrt(v), Ψ·o (sharded like the AdamW state)
        generation  KV cache (N·G/K)·(P+T)·L·2·n_kv·head_dim·a, the sampling logits (N·G/K)·V·4, and the
                    prefill's widest no-grad buffer (N·G/K)·P·3·f·a (gate, up and their product)

    and the peak is combined as `GPUMemoryPlan` explains (gradients are freed during the update's forward
    pass for the first micro-batch only; AdamW's step adds its temporary). Measured on an H100
    (scripts/measure_gpu_memory.py, pure bf16, Qwen2.5-1.5B shapes, G = 12, N = 7, P + T = 256 + 400, the
    update of one micro-batch of 12): peak 17.3 GiB with checkpointing (first micro-batch planned 17.1),
    37.1 GiB without (planned 38.2), 16.4 GiB while generating (planned 16.0). The mixed-precision layout
    and a whole accumulated update have not been measured on a GPU.

    a = bytes of `dtype`; o = `optimizer_state_bytes`. With ZeRO (DeepSpeed, FSDP; grpo_lib itself runs
    plain DDP, stage 0) stage 1 shards the AdamW state and master weights over the K GPUs, stage 2 also
    the gradients, stage 3 also the weights.

    Args:
        config: the model's `transformers.Qwen2Config` (e.g. `qwen2_5_1_5b_instruct_config()`).
        G: completions per prompt. N: prompts per step over all GPUs (must divide by world_size).
        prompt_len: P, padded prompt tokens. completion_len: T, max_completion_length.
        world_size: K, number of GPUs (DDP ranks).
        dtype: weights and activations: "bfloat16" / "float16" (2 bytes) or "float32" (4).
        optimizer: "adamw" or "sgd" (no state).
        master_weights: keep an fp32 copy of the weights (mixed precision). Default: True exactly when
            dtype has fewer than 4 bytes. grpo_lib (like the tutorial) runs torch AdamW straight on bf16
            parameters: pass master_weights=False.
        optimizer_state_bytes: bytes per AdamW moment; default 4 (fp32) with master weights, else the
            dtype's bytes (torch AdamW keeps moments in the parameter dtype).
        gradient_checkpointing: recompute each layer in the backward pass.
        micro_batch_size: b, completions per forward/backward (gradient accumulation); None = all N·G/K.
        beta: KL coefficient β; β = 0 means no reference model.
        zero_stage: 0 (DDP: everything replicated), 1, 2 or 3.
        attention, padded, logits: as in `activation_breakdown`.
        precision: "pure" (weights, gradients and AdamW state in `dtype`, plus an fp32 master copy when
            master_weights) or "mixed", grpo_lib's mixed precision (GRPOConfig.precision = "mixed"): the
            parameters themselves are the fp32 master weights, with fp32 gradients and fp32 AdamW
            moments (16 bytes per parameter), π_ref is kept in `dtype`, activations and logits are in
            `dtype` (autocast), and autocast holds a `dtype` copy of the weights during the update and
            during generation (Ψ·a in each phase). master_weights and optimizer_state_bytes do not apply.

    Returns:
        a `GPUMemoryPlan`: `.peak_gib`, `.fits(80)`, `.verdict(24)`, `.row("policy", "weights")`, and a
        markdown table in a notebook.

    Raises:
        ValueError: naming the argument (N not divisible by world_size, unknown dtype, ...).

    Taught in: notebooks/06_multi_gpu_qwen.ipynb
    """
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_BYTES)}, got {dtype!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    for name, value in (("G", G), ("N", N), ("world_size", world_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if N % world_size:
        raise ValueError(f"N = {N} prompts must divide by world_size = {world_size} (whole groups per GPU): "
                         f"use N = {world_size * max(1, round(N / world_size))}")
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0 (plain DDP), 1, 2 or 3, got {zero_stage!r}")
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta!r}")
    if precision not in ("pure", "mixed"):
        raise ValueError(f"precision must be 'pure' or 'mixed', got {precision!r}")
    a = DTYPE_BYTES[dtype]
    mixed = precision == "mixed" and a < 4
    if mixed:
        master_weights, optimizer_state_bytes = False, 4               # the fp32 parameters are the master copy
    if master_weights is None:
        master_weights = a < 4
    if optimizer_state_bytes is None:
        optimizer_state_bytes = 4 if master_weights else a
    w_bytes = 4 if mixed else a                                         # parameters and gradients
    per_gpu = N * G // world_size                                           # completions on this GPU
    b = per_gpu if micro_batch_size is None else micro_batch_size
    if not isinstance(b, int) or not 1 <= b <= per_gpu:
        raise ValueError(f"micro_batch_size must be an int in [1, N·G/world_size = {per_gpu}], got {micro_batch_size!r}")
    P, T = prompt_len, completion_len
    s = _qwen2_shape(config)
    psi = qwen2_parameter_count(config)
    K = world_size

    def shard(stage: int) -> tuple[int, str]:
        on = zero_stage >= stage and K > 1
        return (-(-psi // K), f", sharded over {K} GPUs (ZeRO-{zero_stage})") if on else (psi, "")

    (w, w_note), (g, g_note), (o, o_note) = shard(3), shard(2), shard(1)
    rows = [MemoryRow("weights", "policy", w, w_bytes,
                      f"π_θ in fp32: the master weights themselves{w_note}" if mixed else f"π_θ in {dtype}{w_note}"),
            MemoryRow("gradients", "policy", g, w_bytes, f"one per weight{', fp32' if mixed else ''}{g_note}")]
    if optimizer == "adamw":
        rows.append(MemoryRow("AdamW m and v", "policy", o, 2 * optimizer_state_bytes,
                              f"two moments, {optimizer_state_bytes:g} B each{o_note}"))
    if master_weights:
        rows.append(MemoryRow("fp32 master weights", "policy", o, 4, f"mixed precision{o_note}"))
    if beta > 0:
        rows.append(MemoryRow("weights", "reference", psi, a, "frozen π_ref for the β·KL term"))

    if mixed:
        rows.append(MemoryRow("autocast weight copies", "update", psi, a,
                              f"{dtype} casts of the weights, saved for the backward pass"))
    act = activation_breakdown(config, micro_batch_size=b, prompt_len=P, completion_len=T, dtype_bytes=a,
                               gradient_checkpointing=gradient_checkpointing, padded=padded,
                               attention=attention, logits=logits, mixed=mixed)
    n = b * (P + T)
    if gradient_checkpointing:
        rows.append(MemoryRow("activations: layer inputs", "update", n, act["layers"] / n,
                              f"checkpointing keeps {'4·h (fp32 residual stream)' if mixed else 'a·h'} per token "
                              f"per layer ({s['L']} layers)"))
        rows.append(MemoryRow("activations: one layer recomputed", "update", n, act["recompute"] / n,
                              "rebuilt in backward, one layer at a time"))
    else:
        rows.append(MemoryRow("activations: decoder layers", "update", n, act["layers"] / n,
                              f"{s['L']} layers × per-token bytes (Korthikanti-style count)"))
    rows.append(MemoryRow("activations: final norm, LM-head input", "update", n, act["outside_layers"] / n,
                          "around the layers"))
    if logits == "grpo_lib":
        rows.append(MemoryRow("logits kept for backward", "update", b * T * s["V"], 4 if mixed else a,
                              "b·T·V, completion positions only, " + (
                                  "fp32 (autocast runs log_softmax in fp32)" if mixed else dtype)))
        rows.append(MemoryRow("logits in flight", "update", 2 * b * T * s["V"], a,
                              "raw + temperature-scaled logits (forward), their gradient (backward)"))
    else:
        rows.append(MemoryRow("logits kept for backward", "update", b * (P + T) * s["V"], 4,
                              "b·(P+T)·V fp32 log-softmax over every position (the tutorial's way)"))
        rows.append(MemoryRow("logits in flight", "update", b * (P + T) * s["V"], 4,
                              "the fp32 logits before their log-softmax"))
    if optimizer == "adamw":
        rows.append(MemoryRow("AdamW update temporary", "optimizer step", o, optimizer_state_bytes,
                              f"sqrt(v) for every parameter at once (torch's foreach AdamW){o_note}"))
    kv = kv_cache_bytes(config, batch=per_gpu, seq_len=P + T, dtype_bytes=a)
    rows.append(MemoryRow("KV cache", "generation", kv // a, a,
                          f"{per_gpu} rows × (P+T) × L × 2 × {s['n_kv']} KV heads × {s['head_dim']}"))
    rows.append(MemoryRow("sampling logits", "generation", per_gpu * s["V"], 4, "last position, fp32 softmax"))
    rows.append(MemoryRow("prefill MLP buffer", "generation", per_gpu * P * 3 * s["f"], a,
                          "widest no-grad tensor of the prompt pass: gate, up, product"))
    if mixed:
        rows.append(MemoryRow("autocast weight copies", "generation", psi, a,
                              f"{dtype} casts of the weights, cached for one generate() call"))

    mp = ("fp32 master weights + AdamW, " + dtype + " autocast" if mixed
          else "fp32 master" if master_weights else f"pure {dtype}")
    title = (f"{psi / 1e9:.2f}B params, {K} GPU(s), {per_gpu} completions/GPU (G = {G}), P + T = {P} + {T}, "
             f"micro-batch {b}, {'checkpointing' if gradient_checkpointing else 'no checkpointing'}, {mp}"
             f"{', β = 0' if beta == 0 else ''}{f', ZeRO-{zero_stage}' if zero_stage else ''}")
    settings = dict(G=G, N=N, prompt_len=P, completion_len=T, world_size=K, dtype=dtype, optimizer=optimizer,
                    master_weights=master_weights, optimizer_state_bytes=optimizer_state_bytes,
                    gradient_checkpointing=gradient_checkpointing, micro_batch_size=b, beta=beta,
                    zero_stage=zero_stage, attention=attention, padded=padded, logits=logits, params=psi,
                    completions_per_gpu=per_gpu, precision="mixed" if mixed else "pure")
    return GPUMemoryPlan(MemoryTable(tuple(rows), title, {"params": psi}), settings)


def plan_for_run(cfg, config, *, prompt_len: int, world_size: int = 1, **overrides) -> GPUMemoryPlan:
    """`plan_gpu_memory` with G, N, T, β, checkpointing, micro-batch, dtype and precision from a `GRPOConfig`.

    N is the global prompt count on `world_size` GPUs (`cfg.global_N(world_size)`: the Qwen preset's 7
    prompts per GPU give 56 on 8 GPUs). cfg.precision = "mixed" with a bf16 dtype plans grpo_lib's mixed
    precision (fp32 weights, gradients and AdamW state, bf16 π_ref, activations and autocast copies);
    "pure" plans weights and AdamW state in cfg.dtype with no master copy. Any `plan_gpu_memory`
    argument can be overridden.

    Taught in: notebooks/06_multi_gpu_qwen.ipynb
    """
    dtype = auto_dtype("cuda") if cfg.dtype == "auto" else cfg.dtype   # the plan is for a GPU
    kwargs = dict(G=cfg.G, N=cfg.global_N(world_size), prompt_len=prompt_len, completion_len=cfg.max_completion_length,
                  world_size=world_size, dtype=dtype, master_weights=False, beta=cfg.beta,
                  precision=getattr(cfg, "precision", "pure"),
                  gradient_checkpointing=cfg.gradient_checkpointing, micro_batch_size=cfg.micro_batch_size)
    kwargs.update(overrides)
    return plan_gpu_memory(config, **kwargs)
