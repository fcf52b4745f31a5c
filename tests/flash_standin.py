"""A CPU stand-in for FlashAttention-2's input contract, so that a forward pass that would crash flash-attn on a
GPU fails a test here.

flash-attn's kernels accept only fp16 and bf16 (and q, k, v of one dtype); anything else raises
`RuntimeError: FlashAttention only support fp16 and bf16 data type`. Before calling them, transformers'
flash-attention path (`transformers.integrations.flash_attention.flash_attention_forward`) casts fp32 inputs
to the autocast dtype when autocast is on, and otherwise to the dtype of the module's Linear weights. So with
fp32 master weights, a forward pass *outside* `torch.autocast` keeps fp32 and flash-attn refuses it: exactly
the crash of a Qwen run whose post-update logits check ran outside the precision context.

This attention function, registered through transformers' `AttentionInterface` under `STANDIN`, applies the
same cast (transformers' own `get_target_dtype`), refuses what flash-attn refuses, and then computes the
attention with PyTorch's SDPA (transformers' `sdpa_attention_forward`, with the SDPA mask), so results are
those of an sdpa model in the same dtype. Only the dtype contract is imitated, not the kernels.

Use: `use_flash_standin(monkeypatch)` makes `grpo_lib.models.load_policy` pick it wherever it would pick an
attention implementation; `model.set_attn_implementation(STANDIN)` switches a loaded model.
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.flash_attention import get_target_dtype
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

STANDIN = "fa2_contract_cpu_standin"   # no "flash" in the name: transformers would look for a flash kernel
FLASH_DTYPES = (torch.float16, torch.bfloat16)
MESSAGE = "FlashAttention only support fp16 and bf16 data type"
"""flash-attn 2's own message (csrc/flash_attn/flash_api.cpp)"""

calls = {"n": 0}
"""how many attention calls the stand-in accepted (a test checks that it really ran)"""


def flash_attention_standin(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, **kwargs):
    target = get_target_dtype(query, module)              # transformers' rule: autocast dtype, else the weights'
    if target is not None and query.dtype == torch.float32:
        query, key, value = query.to(target), key.to(target), value.to(target)
    if query.dtype not in FLASH_DTYPES:
        raise RuntimeError(f"{MESSAGE} (CPU stand-in for flash-attn: query is {query.dtype}; a forward pass of fp32 "
                           "weights outside torch.autocast)")
    if not (query.dtype == key.dtype == value.dtype):
        raise RuntimeError(f"query and key must have the same dtype (CPU stand-in for flash-attn: {query.dtype}, "
                           f"{key.dtype}, {value.dtype})")
    calls["n"] += 1
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(STANDIN, flash_attention_standin)
AttentionMaskInterface.register(STANDIN, sdpa_mask)


def use_flash_standin(monkeypatch) -> None:
    """Make `grpo_lib.models.load_policy` load every model with the stand-in (pytest's monkeypatch undoes it)."""
    from grpo_lib import models

    monkeypatch.setattr(models, "pick_attn_implementation", lambda device, dtype: STANDIN)
