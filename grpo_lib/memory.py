"""Training memory from a model's configuration: why GRPO can drop PPO's critic.

Every number here is computed from a `transformers` config, never typed in. The model is built on the
`meta` device (shapes, no storage, no download), so counting the 1.5B parameters of Qwen2.5-1.5B-Instruct
takes about a second and no memory.

The accounting is "states per parameter", as in the ZeRO paper (Rajbhandari et al. 2019, section 3.1):
a model trained with AdamW in mixed precision holds, per parameter Ψ,

    weights (dtype_bytes) + gradients (dtype_bytes) + AdamW m and v (4 + 4) + fp32 master weights (4)

which is 2 + 2 + 12 = 16 bytes for bf16. A frozen model (the reference policy π_ref, a learned reward
model) holds only its weights.

Choices made here (each shown in notebooks/02_advantages.ipynb):
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
4. Only states tied to parameters are counted. Activations, logits (B·T·V), the KV cache and framework
   overhead come on top; `MemoryTable.with_rows` is the hook for adding them.
5. Sizes are reported in GiB (2^30 bytes), the unit `torch.cuda.memory_allocated` and `nvidia-smi` use.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

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
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=151936,
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        hidden_act="silu",
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        use_sliding_window=False,
        max_window_layers=21,
        bos_token_id=151643,
        eos_token_id=151645,
    )


def _build_on_meta(config, head: str) -> torch.nn.Module:
    """Instantiate the model described by `config` on the meta device (no storage, no weights)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

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
    model = _build_on_meta(config, head)
    return sum(p.numel() for p in model.parameters())


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
