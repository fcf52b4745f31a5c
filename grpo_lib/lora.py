"""LoRA through peft: train a low-rank update of each projection instead of every weight.

Each target Linear layer W (d_out × d_in) gets two trainable matrices, A (r × d_in) and B (d_out × r), and
computes

    h = W x + (α / r) · B A x            A random, B = 0 at the start, so π_θ starts as the base model

while W itself is frozen. Trainable parameters: r·(d_in + d_out) per target module, against d_in·d_out.

    model = apply_lora(model, cfg)       # peft's get_peft_model; returns the (adapted) transformers model
    ref = reference_model(model, dtype, first_iteration=True)   # the base model: adapters off, no copy
    model = merge_adapters(model)        # W ← W + (α / r)·B A, then a plain model that saves like any other

Choices made here (1-5 tested in tests/test_lora.py, 6 in tests/test_lora_resume.py):
1. The engine keeps the transformers model that peft adapts in place (`apply_lora` returns
   `PeftModel.get_base_model()`), not the PeftModel wrapper: generation, the log-prob passes and the save
   see the same module class as without LoRA; the PeftModel is kept beside it to switch the adapters off
   and to merge them. Defaults: every attention and MLP projection of Qwen2 (q, k, v, o, gate, up, down),
   α = 32, dropout 0, as in "LoRA Without Regret" (Schulman and Thinking Machines Lab 2025), whose finding
   that attention-only LoRA underperforms is why the MLP is included.
2. The learning rate is the config's lr times lora_lr_multiplier (default 10, the ratio of the best LoRA to
   the best full fine-tuning lr in "LoRA Without Regret"), written in the config (`GRPOConfig.optimizer_lr`)
   and printed at start-up, never applied silently; 1 gives the lr as written.
3. π_ref in the first outer iteration is the base model itself: the policy with its adapters switched off
   (peft's `disable_adapter()`) for the no-grad reference pass (`AdaptersOff`), so LoRA needs no second copy
   of the weights (the memory win). From the second outer iteration on, π_ref ← π_θ is a frozen copy as
   without LoRA (`reference_model`). The reference pass then runs on the fp32 master weights, not on a bf16
   copy as the full-fine-tuning reference does in mixed precision.
4. The final model/ is the merged model (`merge_adapters`: W ← W + (α / r)·B A in the weights' dtype, then
   peft's merge_and_unload), so it loads with `AutoModelForCausalLM.from_pretrained` like any other run's;
   no adapter files are written. TrainResult.model is that merged model.
5. peft is an optional dependency (the [lora] extra): a LoRA run without it stops before the model loads,
   with the install command (`require_peft`). Precision 'pure' is refused with LoRA by the config, before
   anything loads (peft keeps the adapters in fp32).
6. Checkpoints of a LoRA run (grpo_lib.run.checkpoint choice 9) hold the adapters apart (`adapter_state`) and,
   in model/, the merged model (`merged_state_dict`: what `merge_adapters` would give, computed without
   touching the training model), so a checkpoint's model/ loads with from_pretrained like any other. The base
   weights are not saved: LoRA never changes them, so a resumed run rebuilds them from the starting model
   (checked by its fingerprint) and loads the adapters (`load_adapter_state`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from grpo_lib import dist
from grpo_lib.models import count_parameters, frozen_copy
from grpo_lib.rollout import generation_mode

INSTALL_HINT = 'LoRA needs peft: pip install -e ".[lora]" (peft==0.21.2)'
PEFT_ATTR = "_grpo_lib_peft_model"
"""the attribute of the adapted transformers model that holds its PeftModel (set in __dict__: no submodule)"""


def peft_available() -> bool:
    """True when peft imports."""
    try:
        import peft  # noqa: F401
    except ImportError:
        return False
    return True


def require_peft() -> None:
    """Raise ImportError with the install command when peft is missing (before any model loads).

    Used by: grpo_lib.train
    """
    if not peft_available():
        raise ImportError(INSTALL_HINT)


def lora_config(cfg: Any) -> Any:
    """peft's LoraConfig for the run: r, α, dropout, target modules (choice 1).

    Used by: `apply_lora`, grpo_lib.trl.recipe (TRL's `GRPOTrainer(peft_config=...)`)
    """
    require_peft()
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_target_modules), bias="none", task_type="CAUSAL_LM")


def linear_names(model: nn.Module) -> list[str]:
    """The distinct last names of the model's nn.Linear layers (what lora_target_modules may name)."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})


def apply_lora(model: nn.Module, cfg: Any) -> nn.Module:
    """Add LoRA adapters to `model` in place (peft's get_peft_model) and freeze everything else (choice 1).

    Args:
        model: the loaded policy (a transformers causal LM).
        cfg: the GRPOConfig (lora_r > 0, lora_alpha, lora_dropout, lora_target_modules, lora_lr_multiplier).

    Returns:
        the same transformers model, its target layers now LoRA layers; only the adapters require grad.

    Raises:
        ImportError: peft is not installed (says how to install it).
        ValueError: a target module that the model has no Linear layer of (names the option and the choices).

    Used by: grpo_lib.train (`_prepare`)
    """
    require_peft()
    from peft import get_peft_model

    check_target_modules(model, cfg)
    peft_model = get_peft_model(model, lora_config(cfg))
    inner = peft_model.get_base_model()
    inner.__dict__[PEFT_ATTR] = peft_model          # not a submodule: state_dict and parameters() unchanged
    dist.print0(describe(cfg, inner))
    return inner


def check_target_modules(model: nn.Module, cfg: Any) -> None:
    """Raise ValueError when lora_target_modules names a layer `model` has no nn.Linear of (names the choices).

    Used by: `apply_lora`, grpo_lib.trl.recipe
    """
    names = linear_names(model)
    missing = [t for t in cfg.lora_target_modules if t not in names]
    if missing:
        raise ValueError(f"lora_target_modules names {missing}, which this model has no Linear layer of; its Linear "
                         f"layers are {names}")


def describe(cfg: Any, model: nn.Module, lr: float | None = None) -> str:
    """The start-up line of a LoRA run: r, α, the targets, trainable of all parameters of `model`, the lr used.

    Args:
        lr: the learning rate the optimizer really gets, when something other than the config set it (the TRL
            recipe's `--trl learning_rate=...` override); None: the config's lr × lora_lr_multiplier.

    Used by: `apply_lora`, grpo_lib.trl.recipe
    """
    total, trainable = count_parameters(model), count_parameters(model, trainable_only=True)
    rule = f"{cfg.lr:g} × lora_lr_multiplier {cfg.lora_lr_multiplier:g} = {cfg.optimizer_lr:g}"
    used = rule if lr is None or lr == cfg.optimizer_lr else f"{lr:g} (set by --trl learning_rate, not {rule})"
    return (f"LoRA: r = {cfg.lora_r}, α = {cfg.lora_alpha:g} (scale α/r = {cfg.lora_alpha / cfg.lora_r:g}) on "
            f"{', '.join(cfg.lora_target_modules)}: {trainable:,} trainable of {total:,} parameters; AdamW lr = "
            f"{used}")


def peft_model_of(model: nn.Module) -> Any:
    """The PeftModel that adapted `model` (None when `model` has no LoRA adapters)."""
    return model.__dict__.get(PEFT_ATTR)


def is_lora(model: nn.Module) -> bool:
    """True when `model` came out of `apply_lora` and was not merged yet."""
    return peft_model_of(model) is not None


@contextlib.contextmanager
def adapters_off(model: nn.Module):
    """The adapters of `model` switched off for the duration (peft's disable_adapter()): the base model."""
    with peft_model_of(model).disable_adapter():
        yield model


class AdaptersOff(nn.Module):
    """π_ref = the base model: calls the LoRA policy with its adapters switched off (choice 3).

    Holds no parameters of its own (the policy is not registered as a submodule), so it costs no memory and
    an optimizer never sees it. Each call runs the policy as a frozen reference runs: eval mode, no
    gradients, no gradient checkpointing (`grpo_lib.rollout.generation_mode`). A deep copy of it (frozen_copy
    in a later outer iteration) copies the policy along.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.__dict__["policy"] = model             # not registered: parameters() stays empty

    @property
    def config(self) -> Any:
        return self.policy.config

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with adapters_off(self.policy), generation_mode(self.policy):
            return self.policy(*args, **kwargs)


def reference_model(model: nn.Module, dtype: torch.dtype | None, first_iteration: bool) -> nn.Module:
    """π_ref for an outer iteration: the base model (adapters off) in the first one with LoRA, else a frozen
    copy of π_θ in `dtype` (choice 3).

    Used by: grpo_lib.train
    """
    if is_lora(model) and first_iteration:
        return AdaptersOff(model)
    return frozen_copy(model, dtype)


def is_adapter(name: str) -> bool:
    """True for the name of an adapter parameter or state-dict entry (a lora_A / lora_B of any layer)."""
    return ".lora_" in name


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters of `model` by parameter name, detached and contiguous (what a checkpoint saves, choice 6).

    Used by: grpo_lib.run.checkpoint.save_checkpoint
    """
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if is_adapter(n)}


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy saved adapters into the adapted `model` in place (choice 6).

    Raises:
        ValueError: the names or shapes are not exactly those of the model's adapters (another r, other
            target modules), naming the first differences.

    Used by: grpo_lib.run.checkpoint.Checkpoint.load_model
    """
    params = dict(model.named_parameters())
    want = {n for n in params if is_adapter(n)}
    missing, unexpected = sorted(want - set(state)), sorted(set(state) - want)
    if missing or unexpected:
        raise ValueError(f"the saved adapters do not fit this model's (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]})")
    wrong = [f"{n}: saved {tuple(t.shape)}, model {tuple(params[n].shape)}" for n, t in state.items()
             if t.shape != params[n].shape]
    if wrong:
        raise ValueError(f"the saved adapters do not fit this model's shapes ({'; '.join(wrong[:3])})")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the merged model, W + (α/r)·B A in every adapted layer, under the plain model's names;
    `model` is not changed (choice 6). Equal to the state dict of `merge_adapters(model)`.

    Used by: grpo_lib.run.checkpoint.save_checkpoint (a LoRA checkpoint's model/)
    """
    from peft.tuners.lora import LoraLayer

    with torch.no_grad():
        deltas = {f"{name}.weight": sum(module.get_delta_weight(a) for a in module.active_adapters)
                  for name, module in model.named_modules() if isinstance(module, LoraLayer)}
        merged = {}
        for key, value in model.state_dict().items():
            if is_adapter(key):
                continue
            key = key.replace(".base_layer.", ".")
            merged[key] = value + deltas[key].to(value.dtype) if key in deltas else value
    return merged


def merge_adapters(model: nn.Module) -> nn.Module:
    """W ← W + (α / r)·B A in every adapted layer, then the plain transformers model (choice 4); a model
    without adapters is returned as it is.

    Used by: grpo_lib.train (before the final save)
    """
    peft_model = peft_model_of(model)
    if peft_model is None:
        return model
    merged = peft_model.merge_and_unload()
    merged.__dict__.pop(PEFT_ATTR, None)
    model.__dict__.pop(PEFT_ATTR, None)
    return merged
