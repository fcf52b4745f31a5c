"""Policy models: the tiny Qwen2 shipped with the course (CPU) and the real Qwen2.5 loader (GPU).

Both presets load through `load_policy`, so the training engine has one code path; only the folder
or hub name differs.

Choices made here (each shown in notebooks/05_full_run.ipynb):
1. The tiny model is a real `Qwen2ForCausalLM` (RMSNorm, RoPE, grouped-query attention, SwiGLU MLP), only
   small: hidden size 128, 4 layers, 4 query heads sharing 2 key/value heads, 263-token vocabulary,
   tied input/output embeddings: about 1.0M parameters, against 1.5B for Qwen2.5-1.5B-Instruct.
2. Its weights are *shipped* (`TINY_MODEL_DIR`, built by scripts/build_tiny_model.py), so notebooks and
   tests never retrain it. They are a deliberately partial warm-up: 52% held-out greedy accuracy
   (build_info.json), which GRPO raises to about 90% in 20-50 steps.
3. On CUDA the policy loads with FlashAttention-2 when it can run there (`flash_attn_problem`: flash-attn
   imports, an Ampere or newer GPU, bf16/fp16 compute, one test call succeeds), else with PyTorch's SDPA,
   and the run says why at start-up; on CPU it loads in fp32 with SDPA (bf16 matmuls are slow on most CPUs).
4. The pad token must differ from the EOS token. Padding positions are masked out of the loss; if pad
   were EOS, the real EOS would be masked too and the model would never learn to stop (tiny-grpo and the
   tutorial's Qwen run both hit this). Qwen2.5-Instruct already pads with `<|endoftext|>` and stops with
   `<|im_end|>`; a tokenizer with no distinct pad token gets one.
5. Padding is on the left, so that generation continues every prompt right after its last token.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from grpo_lib.config import TORCH_DTYPES
from grpo_lib.precision import auto_dtype

TINY_MODEL_NAME = "tiny-qwen2-addition"
TINY_MODEL_DIR = Path(__file__).resolve().parent / "assets" / TINY_MODEL_NAME
"""The shipped tiny model (config, safetensors, tokenizer), found next to this file from any cwd."""

BUILD_COMMAND = f"python scripts/build_tiny_model.py --output-dir grpo_lib/assets/{TINY_MODEL_NAME}"


def tiny_qwen2_config(vocab_size: int, **overrides) -> Qwen2Config:
    """Qwen2Config of the tiny policy: hidden 128, 4 layers, 4 heads / 2 KV heads, MLP 512, tied embeddings.

    Parameters = V·d + L·(3d² + 4d + 3·d·d_ff) + d, with d = 128, L = 4, d_ff = 512: attention has
    q and o of d×d and k, v of d×d/2 (2 KV heads), plus q/k/v biases (2d); the SwiGLU MLP has three d×d_ff
    matrices; two RMSNorms per layer (2d) and a final one (d). The embedding counts once (tied).
    For V = 263 that is 33,664 + 985,216 = 1,018,880.

    Args:
        vocab_size: V, the tokenizer's `len(tokenizer)` (263 for grpo_lib.tokenizer).
        **overrides: any Qwen2Config field, e.g. num_hidden_layers=2 for an even smaller test model.

    Returns:
        the config; `Qwen2ForCausalLM(config)` is a random-initialised model.

    Taught in: notebooks/03_reward_design.ipynb, notebooks/04_the_loss.ipynb
    """
    if not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int (len(tokenizer)), got {vocab_size!r}")
    fields = dict(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, as in Qwen2.5: 2 query heads share each KV head
        max_position_embeddings=128,  # prompt ≈ 17 tokens + completion ≈ 22 tokens fit easily
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=True,  # the output layer reuses the embedding matrix (as Qwen2.5-0.5B/1.5B do)
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    unknown = set(overrides) - set(Qwen2Config().to_dict()) - set(fields)
    if unknown:
        raise ValueError(f"unknown Qwen2Config field(s) in overrides: {sorted(unknown)}")
    fields.update(overrides)
    return Qwen2Config(**fields)


QWEN2_5_1_5B_INSTRUCT = dict(
    vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
    num_key_value_heads=2, hidden_act="silu", max_position_embeddings=32768, rms_norm_eps=1e-6,
    rope_theta=1_000_000.0, tie_word_embeddings=True, use_sliding_window=False, sliding_window=None,
    max_window_layers=21, attention_dropout=0.0, initializer_range=0.02, bos_token_id=151643, eos_token_id=151645,
)
"""The published config.json of Qwen/Qwen2.5-1.5B-Instruct (architecture fields), written out once here."""


def qwen2_5_1_5b_config(**overrides) -> Qwen2Config:
    """Qwen2.5-1.5B-Instruct's exact architecture as a Qwen2Config (nothing downloaded); overrides change sizes.

    `qwen2_5_1_5b_config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)`
    keeps every architecture option (GQA with 2 KV heads, q/k/v biases, RMSNorm eps, RoPE θ = 1e6, tied
    embeddings, the 151,936-token vocabulary) at a size a CPU test can train: the Qwen preset's code path
    on CPU (tests/test_qwen_preset.py) and `scripts/gpu_smoke.py --tiny`.

    Used by: grpo_lib.course.memory.qwen2_5_1_5b_instruct_config, tests/test_qwen_preset.py, scripts/gpu_smoke.py
    """
    unknown = set(overrides) - set(Qwen2Config().to_dict()) - set(QWEN2_5_1_5B_INSTRUCT)
    if unknown:
        raise ValueError(f"unknown Qwen2Config field(s) in overrides: {sorted(unknown)}")
    values = {**QWEN2_5_1_5B_INSTRUCT, **overrides}
    theta = values.pop("rope_theta")
    return Qwen2Config(**values, rope_parameters={"rope_type": "default", "rope_theta": theta})


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters; tied weights (embedding = output layer) count once.

    Args:
        model: any torch module.
        trainable_only: count only parameters with requires_grad.

    Taught in: notebooks/05_full_run.ipynb
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def frozen_copy(model: torch.nn.Module, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A copy of `model` in eval mode with no gradients: π_ref ← π_θ (DeepSeekMath Algorithm 1).

    Args:
        model: π_θ.
        dtype: store the copy in this dtype (mixed precision keeps π_ref in bf16: half an fp32 copy;
            grpo_lib.precision choice 3); None keeps the model's dtype.

    Used by: grpo_lib.run.lifecycle (π_ref ← π_θ) and grpo_lib.run.checkpoint (the engine that
    notebooks/05_full_run.ipynb runs)
    """
    ref = copy.deepcopy(model)
    if dtype is not None:
        ref = ref.to(dtype)
    return ref.eval().requires_grad_(False)


def _missing_tiny_model_error(path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"tiny model not found: {what} in {path}. Build it (about 2-3 minutes on 2 CPU cores) with:\n"
        f"    {BUILD_COMMAND}"
    )


def _check_tiny_folder(path: Path) -> None:
    if not path.is_dir():
        raise _missing_tiny_model_error(path, "no such folder")
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (path / name).is_file():
            raise _missing_tiny_model_error(path, f"no {name}")


def load_tiny_model(path: str | os.PathLike | None = None,
                    dtype: torch.dtype = torch.float32) -> tuple[Qwen2ForCausalLM, object]:
    """Load the shipped tiny policy π_θ and its character tokenizer (CPU, fp32, SDPA).

    Args:
        path: a folder written by scripts/build_tiny_model.py; None means TINY_MODEL_DIR.
        dtype: parameter dtype; fp32 is the sensible choice on CPU.

    Returns:
        (model, tokenizer): a `Qwen2ForCausalLM` in eval mode and the tokenizer as
        `AutoTokenizer.from_pretrained` loads it (a `Qwen2Tokenizer`, pad `<pad>`=0, eos `<eos>`=1,
        left padding).

    Raises:
        FileNotFoundError: naming the path and the command that builds the model.

    Taught in: notebooks/05_full_run.ipynb
    """
    path = Path(path) if path is not None else TINY_MODEL_DIR
    _check_tiny_folder(path)
    model = Qwen2ForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    model.eval()
    return model, tokenizer


def flash_attn_available() -> bool:
    """True when FlashAttention-2 can run on this machine's CUDA GPU in bf16 (`flash_attn_problem` finds nothing).

    Used by: scripts/gpu_smoke.py
    """
    return torch.cuda.is_available() and flash_attn_problem("cuda", torch.bfloat16) is None


@functools.lru_cache(maxsize=None)
def flash_attn_problem(device: torch.device | str, dtype: torch.dtype) -> str | None:
    """Why FlashAttention-2 cannot run here for compute dtype `dtype`, or None when it can (choice 3).

    Checked before a model loads, so that an install that cannot run (no CUDA, a GPU older than Ampere,
    fp32 compute, a build that does not match this torch or GPU) is named at start-up and the run uses
    PyTorch's sdpa instead, never a crash mid-run: the package must import, the GPU must have compute
    capability 8.0 or more, and one tiny causal `flash_attn_func` call in `dtype` must succeed.

    Used by: `pick_attn_implementation`, `load_policy`
    """
    device = torch.device(device)
    try:
        installed = importlib.util.find_spec("flash_attn") is not None
    except (ImportError, ValueError):
        installed = False
    if not installed:
        return "flash-attn is not installed"
    if device.type != "cuda" or not torch.cuda.is_available():
        return f"flash-attn is installed but runs only on a CUDA GPU, and this run is on {device}"
    if dtype not in (torch.bfloat16, torch.float16):
        return (f"FlashAttention-2 computes only in bf16 or fp16, and this run computes in {str(dtype).removeprefix('torch.')} "
                "(--dtype)")
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    if major < 8:
        return (f"FlashAttention-2 needs an Ampere or newer GPU (compute capability 8.0+); "
                f"{torch.cuda.get_device_name(index)} has {major}.{minor}")
    try:
        import flash_attn  # noqa: F401  (GPU-only extra: pip install grpo_lib[gpu])

        q = torch.zeros(1, 2, 1, 64, device=device, dtype=dtype)          # (batch, seq, heads, head_dim)
        flash_attn.flash_attn_func(q, q, q, causal=True)
    except Exception as e:    # ImportError of a build for another torch, "no kernel image is available", ...
        text = " ".join(str(e).split())[:300]
        return f"flash-attn is installed but failed a test call ({type(e).__name__}: {text})"
    return None


def pick_attn_implementation(device: torch.device | str, dtype: torch.dtype) -> str:
    """"flash_attention_2" when FlashAttention-2 can run here in the compute dtype `dtype`, else "sdpa".

    Used by: `load_policy`
    """
    return "flash_attention_2" if flash_attn_problem(torch.device(device), dtype) is None else "sdpa"


def _resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        dtype = auto_dtype(device)
    if dtype in TORCH_DTYPES:
        return TORCH_DTYPES[dtype]
    raise ValueError(f"dtype must be 'auto', a torch.dtype or one of {sorted(TORCH_DTYPES)}, got {dtype!r}")


def ensure_pad_token(tokenizer, model=None) -> str:
    """Make sure the tokenizer has a pad token distinct from its EOS token (choice 4); say what was done.

    Order of preference: keep an existing distinct pad token; else use `<|endoftext|>` if the vocabulary
    has it and it is not the EOS (Qwen's own choice); else add a new special token `<pad>` and, if the
    model's embedding matrix is too small for it, grow the matrix.

    Args:
        tokenizer: a Hugging Face tokenizer; modified in place.
        model: the matching model, needed only if a token must be added.

    Returns:
        a one-line explanation of the pad token in use.

    Used by: `load_policy`
    """
    eos = tokenizer.eos_token
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return f"pad token {tokenizer.pad_token!r} (id {tokenizer.pad_token_id}) is distinct from eos {eos!r}"
    vocab = tokenizer.get_vocab()
    if "<|endoftext|>" in vocab and "<|endoftext|>" != eos:
        tokenizer.pad_token = "<|endoftext|>"
        why = "set pad to '<|endoftext|>': pad must differ from eos, or masking padding would also mask the EOS"
    else:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
        why = "added a new '<pad>' token: the tokenizer had no pad distinct from eos"
        if model is not None and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
            why += " (embedding matrix grown by one row)"
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return why


def load_policy(model_name_or_path: str | os.PathLike, *, device: torch.device | str,
                dtype: str | torch.dtype = "auto", compute_dtype: str | torch.dtype | None = None,
                ) -> tuple[torch.nn.Module, object]:
    """Load a causal LM policy π_θ and its tokenizer, ready for left-padded batched generation.

    The same function loads `Qwen/Qwen2.5-1.5B-Instruct` (hub name or local folder) and the shipped tiny
    model ("tiny", "tiny-qwen2-addition" or its folder), so both presets share one code path.

    Args:
        model_name_or_path: hub name, local folder, or "tiny" / "tiny-qwen2-addition" for TINY_MODEL_DIR.
        device: where the model goes ("cpu", "cuda", "cuda:1", a torch.device).
        dtype: parameter dtype: "auto" (`grpo_lib.precision.auto_dtype`: bf16 on CUDA, fp32 on CPU); or a
            torch.dtype, or "bfloat16"/"float32"/"float16".
        compute_dtype: the dtype the matmuls run in (bf16 under autocast with fp32 parameters); picks the
            attention implementation. None = dtype.

    Returns:
        (model, tokenizer): the model on `device` in eval mode, with
        `config._attn_implementation` "flash_attention_2" (CUDA + flash_attn + bf16/fp16) or "sdpa";
        the tokenizer with padding_side "left" and a pad token distinct from eos.

    Raises:
        FileNotFoundError: a local path that does not exist, or a hub name that cannot be loaded
            (no network and not in the cache).

    Used by: `grpo_lib.run.lifecycle.Run`
    """
    device = torch.device(device)
    torch_dtype = _resolve_dtype(dtype, device)
    name = os.fspath(model_name_or_path)
    if name in ("tiny", TINY_MODEL_NAME):
        name = os.fspath(TINY_MODEL_DIR)
    if Path(name).resolve() == TINY_MODEL_DIR:
        _check_tiny_folder(TINY_MODEL_DIR)
    looks_local = os.path.isabs(name) or name.startswith((".", "~")) or os.path.exists(name)
    if looks_local:
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder not found: {name}")
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"not a model folder: {name} has no config.json")
    compute = torch_dtype if compute_dtype is None else _resolve_dtype(compute_dtype, device)
    attn = pick_attn_implementation(device, compute)
    if attn == "sdpa" and (device.type == "cuda" or flash_attn_problem(device, compute) != "flash-attn is not installed"):
        print(f"attention: PyTorch's sdpa, not FlashAttention-2: {flash_attn_problem(device, compute)}. "
              "(FlashAttention-2 needs a CUDA GPU of compute capability 8.0+, --dtype bfloat16, and "
              "pip install flash-attn --no-build-isolation)", flush=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(os.path.expanduser(name), dtype=torch_dtype,
                                                     attn_implementation=attn)
        tokenizer = AutoTokenizer.from_pretrained(os.path.expanduser(name))
    except OSError as err:
        raise FileNotFoundError(
            f"could not load model {name!r}: {err}\nWith HF_HUB_OFFLINE=1 (or no network) the model must already "
            "be in the Hugging Face cache, or pass a local folder."
        ) from err
    tokenizer.padding_side = "left"  # choice 5
    ensure_pad_token(tokenizer, model)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(device)
    model.eval()
    return model, tokenizer
