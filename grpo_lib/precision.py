"""Mixed precision for the training engine: fp32 master weights, fp32 AdamW state, bf16 autocast.

At lr = 5e-6 an AdamW step moves a weight by about 5e-6. In bfloat16 (8 bits of mantissa) the spacing
of representable numbers near a weight w is about |w|·2^-7, so for every |w| above about 2e-3 the step is
below half that spacing and rounds away: pure-bf16 AdamW leaves most of the model where it was (the
tutorial's run, and this engine before mixed precision). Mixed precision keeps the parameters, their gradients
and AdamW's moments in fp32 and runs the matrix multiplications of the forward and backward passes in
bf16 under `torch.autocast`, which casts each weight to bf16 when a matmul uses it.

Choices made here (shown in notebooks/06_multi_gpu_qwen.ipynb, tested in tests/test_precision.py):
1. Two knobs: `dtype` is the compute dtype (bf16 on CUDA by default, fp32 on CPU), `precision` says how
   the weights are kept: "mixed" (fp32 master weights; autocast when dtype is bf16) or "pure" (weights and
   AdamW state in dtype itself; the explicit, documented way to see the rounding problem).
2. Generation, scoring and evaluation also run under autocast: their matmuls are in bf16, on the
   *current* fp32 weights (autocast casts them on use and caches the bf16 copies for the duration of one
   `with` block, so a `generate()` call casts each weight once). No separate bf16 model is kept, so
   sampling can never use stale weights; the price is a transient bf16 copy of the weights (2 bytes per
   parameter) during each generate() call and each update.
3. π_ref is frozen, so it is stored directly in the compute dtype (bf16: half the memory of an fp32 copy).
4. fp16 is refused: it needs loss scaling (a GradScaler) that this engine does not implement. bf16
   autocast on a device that cannot run it (a CUDA GPU without bf16, e.g. before Ampere) is refused
   before any model is loaded, naming --dtype and --precision.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from grpo_lib.config import DTYPES, TORCH_DTYPES


def auto_dtype(device: str | torch.device) -> str:
    """What dtype "auto" is on `device`: "bfloat16" on CUDA, "float32" elsewhere (the rule's one home: the
    engine, the model loader and the memory planner ask here)."""
    return "bfloat16" if torch.device(device).type == "cuda" else "float32"


@dataclass(frozen=True)
class Precision:
    """How one run keeps and computes its numbers.

    Attributes:
        mode: "mixed" or "pure" (GRPOConfig.precision).
        param_dtype: dtype of π_θ's parameters, gradients and AdamW state (fp32 when mixed).
        compute_dtype: dtype of the matmuls (bf16 under autocast, else param_dtype).
        reference_dtype: dtype π_ref is stored in (the compute dtype).
        device_type: "cuda", "cpu", "mps".
    """

    mode: str
    param_dtype: torch.dtype
    compute_dtype: torch.dtype
    device_type: str

    @property
    def autocast(self) -> bool:
        """True when the forward and backward passes run under torch.autocast(compute_dtype)."""
        return self.param_dtype != self.compute_dtype

    @property
    def reference_dtype(self) -> torch.dtype:
        return self.compute_dtype

    def context(self) -> contextlib.AbstractContextManager:
        """`torch.autocast(device_type, compute_dtype)` when mixed with a 16-bit compute dtype, else a no-op."""
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.compute_dtype)

    def describe(self) -> str:
        """One line for the start of a run: e.g. 'mixed: fp32 master weights + AdamW, bf16 autocast'."""
        p, c = dtype_name(self.param_dtype), dtype_name(self.compute_dtype)
        if self.autocast:
            return f"mixed precision: {p} master weights and AdamW state, forward/backward under {c} autocast"
        return f"{self.mode}: weights, AdamW state and compute in {p}"

    def to_dict(self) -> dict[str, str]:
        return {"precision": self.mode, "param_dtype": dtype_name(self.param_dtype),
                "compute_dtype": dtype_name(self.compute_dtype), "reference_dtype": dtype_name(self.reference_dtype)}


def dtype_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> 'bfloat16'."""
    return str(dtype).removeprefix("torch.")


def resolve_precision(dtype: str, precision: str, device: str | torch.device) -> Precision:
    """The Precision of a run from GRPOConfig.dtype, GRPOConfig.precision and the device.

    Raises:
        ValueError: naming the option, for a combination the device cannot run: fp16 (no gradient
            scaler), bf16 on a CUDA GPU without bf16 support, bf16 autocast on a device type where
            torch has no autocast.
    """
    device = torch.device(device)
    if dtype == "auto":
        dtype = auto_dtype(device)
    if dtype not in DTYPES[1:]:                          # the full names of config.TORCH_DTYPES
        raise ValueError(f"--dtype must be 'auto', 'float32' or 'bfloat16', got {dtype!r}")
    if precision not in ("mixed", "pure"):
        raise ValueError(f"--precision must be 'mixed' or 'pure', got {precision!r}")
    compute = TORCH_DTYPES[dtype]
    if compute == torch.float16:
        raise ValueError("--dtype float16 is not supported for training: fp16 needs a gradient scaler (loss "
                         "scaling) that grpo_lib does not implement; use --dtype bfloat16 or float32")
    if compute == torch.bfloat16:
        if device.type == "cuda" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            raise ValueError(f"--dtype bfloat16: the GPU {torch.cuda.get_device_name(device)} cannot run bf16 "
                             "(it needs compute capability 8.0, Ampere, or newer); use --dtype float32")
        if precision == "mixed" and not torch.amp.is_autocast_available(device.type):
            raise ValueError(f"--dtype bfloat16 --precision mixed needs torch.autocast on {device.type!r}, which "
                             "this torch does not offer; use --dtype float32, or --precision pure")
    param = torch.float32 if precision == "mixed" else compute
    return Precision(mode=precision, param_dtype=param, compute_dtype=compute, device_type=device.type)


def changed_fraction(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor],
                     grads: dict[str, torch.Tensor] | None = None) -> float:
    """Share of the weights whose value changed between two state dicts (optionally only where grad != 0).

    Counts how many weights an lr = 5e-6 AdamW step actually moves in pure bf16 and in mixed precision (also
    in tests/test_precision.py).

    Args:
        before, after: name -> tensor, same names and shapes.
        grads: name -> gradient; when given, only weights with a non-zero gradient are counted.

    Taught in: notebooks/06_multi_gpu_qwen.ipynb
    """
    changed = total = 0
    for name, b in before.items():
        a = after[name]
        moved = a.float() != b.float()
        if grads is not None:
            g = grads.get(name)
            if g is None:
                continue
            keep = g != 0
            moved, n = moved[keep], int(keep.sum())
        else:
            n = moved.numel()
        changed += int(moved.sum())
        total += n
    if total == 0:
        raise ValueError("no weights to compare (no gradients, or empty state dicts)")
    return changed / total
