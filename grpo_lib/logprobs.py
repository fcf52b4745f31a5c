"""Per-token log-probabilities log π_θ(o_{i,t} | q, o_{i,<t}) of the completion tokens under a causal LM.

GRPO needs, for each completion token, the log-probability that the policy (and the old and reference
policies) gives to it. A causal LM returns logits for every position; the log-probability of the token at
position t is log_softmax(logits at position t-1)[token]. Done naively this builds a (B, L, V) log-softmax
over the whole prompt + completion and the whole vocabulary (V = 151,936 for Qwen2.5), most of it thrown
away.

Choices made here (each shown in notebooks/04_the_loss.ipynb):
1. Only the completion positions get logits: the model is called with `logits_to_keep = T + 1`
   (transformers slices the hidden states *before* the LM head), the last logit (which predicts the token
   after the sequence) is dropped, and the remaining T predict the T completion tokens. Prompt-position
   logits are never computed. Same as TRL's `_get_per_token_logps_and_entropies`.
2. log p(token) = logit[token] - logsumexp(logits), computed one batch row at a time
   (`selective_log_softmax`), so no full (B, T, V) log-softmax is held at once. For bf16/fp16 logits,
   whose logsumexp is too imprecise, each row gets its own log_softmax then a gather (TRL does the same).
   The (B, T, V) logits themselves still exist; `chunk_size` caps them by running the forward on
   `chunk_size` rows at a time (a real saving under `torch.no_grad()`, for old/reference log-probs; with
   gradients every chunk's graph is kept until backward).
3. Logits are divided by the sampling temperature, so the log-probs are those of the distribution that
   actually sampled the tokens (TRL does this; the tutorial samples at T = 1 and does not).
4. position_ids = cumsum(attention_mask) - 1, clamped at 0, so a left-padded prompt gets the same
   positions as the unpadded one (what `generate()` does). The tutorial passes none; for RoPE models such
   as Qwen2 a constant shift of all positions leaves attention scores unchanged in exact arithmetic, so
   this matters for float agreement and for models with absolute position embeddings.
5. The completion mask keeps the first EOS (mask is 1 up to and including it): the EOS token is
   trained, so the model learns when to stop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def _check_index(logits: Tensor, index: Tensor) -> Tensor:
    if index.shape != logits.shape[:-1]:
        raise ValueError(
            f"index must have the shape of logits without the vocabulary axis: logits {tuple(logits.shape)} "
            f"needs index {tuple(logits.shape[:-1])}, got {tuple(index.shape)}"
        )
    if torch.is_floating_point(index) or index.dtype == torch.bool:
        raise ValueError(f"index must hold integer token ids, got dtype {index.dtype}")
    index = index.long()
    V = logits.shape[-1]
    if index.numel() and (index.min() < 0 or index.max() >= V):
        raise ValueError(
            f"token ids must lie in [0, V) with V = {V}; got ids from {int(index.min())} to {int(index.max())}"
        )
    return index


def selective_log_softmax(logits: Tensor, index: Tensor) -> Tensor:
    """log_softmax(logits)[index] = logits[index] - logsumexp(logits), without a full log-softmax.

    Row by row over the first (batch) axis: the temporary tensors are (T, V), never (B, T, V).
    fp32/fp64: gather minus logsumexp. bf16/fp16: per-row log_softmax then gather (logsumexp in half
    precision is too lossy). Gradients flow through both paths.

    Args:
        logits: (B, T, V) (any leading shape ..., V works; a 2-D (T, V) input is one row).
        index: token ids, (B, T) (the leading shape of logits), integer dtype.

    Returns:
        log-probabilities of the indexed tokens, shape of `index`, dtype of `logits`.

    Taught in: notebooks/04_the_loss.ipynb
    """
    index = _check_index(logits, index)
    V = logits.shape[-1]
    if logits.ndim < 3:                                   # (V,) or (T, V): treat as one batch row
        rows = logits.reshape(1, index.numel(), V)        # (1, T, V)
    else:                                                 # (B, T, V); extra leading axes folded into B
        rows = logits.reshape(math.prod(logits.shape[:-2]), logits.shape[-2], V)
    idx = index.reshape(rows.shape[:-1])                  # (B, T)
    if idx.numel() == 0:                                  # nothing to pick (B = 0 or T = 0)
        return logits.new_zeros(index.shape)

    if logits.dtype in (torch.float32, torch.float64):
        picked = rows.gather(-1, idx.unsqueeze(-1)).squeeze(-1)              # (B, T)
        lse = torch.stack([torch.logsumexp(row, dim=-1) for row in rows])   # (B, T); one (T, V) temp at a time
        out = picked - lse                                                   # (B, T)
    else:
        out = torch.stack([                                                  # (B, T)
            torch.log_softmax(row, dim=-1).gather(-1, i.unsqueeze(-1)).squeeze(-1)
            for row, i in zip(rows, idx)
        ])
    return out.reshape(index.shape)


def _check_model_inputs(input_ids: Tensor, attention_mask: Tensor | None, logits_to_keep: int,
                        temperature: float) -> Tensor:
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be (B, L) = prompt + completion ids, got shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}"
        )
    L = input_ids.shape[1]
    if not isinstance(logits_to_keep, int) or isinstance(logits_to_keep, bool):
        raise ValueError(f"logits_to_keep must be an int (the completion length T), got {logits_to_keep!r}")
    if not 0 <= logits_to_keep <= L - 1:
        raise ValueError(
            f"logits_to_keep = {logits_to_keep} must lie in [0, L-1] = [0, {L - 1}]: the first token of "
            "input_ids has no preceding position to predict it, so at least one prompt token is needed"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return attention_mask


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """position_ids = cumsum(attention_mask) - 1, clamped at 0: (B, L) -> (B, L).

    The first real token of every row gets position 0, whatever the amount of left padding.

    Used by: `token_logprobs`
    """
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)          # (B, L)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy H = logsumexp(z) - Σ softmax(z)·z of each position's distribution, (..., V) -> (...), no grad.

    A metric (TRL logs its token mean as `entropy`): computed from logits the forward pass already made,
    one batch row at a time in fp32, so the extra memory is one (T, V) fp32 temporary.

    Used by: grpo_lib.logprobs.token_logprobs and grouped_token_logprobs (return_entropy=True), for the
    `entropy` metric of grpo_lib.train
    """
    with torch.no_grad():
        rows = logits.detach().reshape(-1, logits.shape[-2], logits.shape[-1]) if logits.ndim >= 2 else logits[None, None]
        out = []
        for row in rows:                                                     # (T, V)
            z = row.float()
            logp = torch.log_softmax(z, dim=-1)
            out.append(-(logp.exp() * logp).sum(-1))                         # (T,)
        return torch.stack(out).reshape(logits.shape[:-1])


def token_logprobs(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None, logits_to_keep: int,
                   temperature: float = 1.0, chunk_size: int | None = None, return_entropy: bool = False,
                   ) -> Tensor | tuple[Tensor, Tensor]:
    """log π(o_t | q, o_<t) for the last `logits_to_keep` tokens of input_ids, from temperature-scaled logits.

    Calls `model(..., logits_to_keep=logits_to_keep + 1)` so prompt positions never reach the LM head,
    drops the last logit, divides by `temperature`, then `selective_log_softmax`.

    Args:
        model: a causal LM whose forward accepts `logits_to_keep` (every transformers 5.x
            `*ForCausalLM`, e.g. Qwen2ForCausalLM), possibly DDP-wrapped.
        input_ids: prompt + completion ids, (B, L) with L = P + T; prompts left-padded.
        attention_mask: (B, L), 1 on real tokens, 0 on padding; None means all ones.
        logits_to_keep: T, the completion length (TRL's name). 0 <= T <= L - 1.
        temperature: the sampling temperature (> 0) that produced the completions.
        chunk_size: rows per forward pass; None runs the whole batch at once.
        return_entropy: also return the entropy of each position's (temperature-scaled) distribution,
            (B, T), detached, from the same logits (`entropy_from_logits`; TRL's `entropy` metric).

    Returns:
        logp, (B, T): log-probabilities of input_ids[:, -T:], in the logits' dtype. Carries gradients
        unless called under torch.no_grad(). Values at padded completion positions are finite but
        meaningless: multiply by `completion_mask`. With return_entropy: (logp, entropy).

    Taught in: notebooks/04_the_loss.ipynb
    """
    attention_mask = _check_model_inputs(input_ids, attention_mask, logits_to_keep, temperature)
    B = input_ids.shape[0]
    if chunk_size is None:
        chunk_size = max(B, 1)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int (rows per forward) or None, got {chunk_size!r}")
    T = logits_to_keep
    position_ids = position_ids_from_mask(attention_mask)                  # (B, L)

    logp_chunks, entropy_chunks = [], []
    for start in range(0, B, chunk_size):
        ids = input_ids[start:start + chunk_size]                           # (b, L)
        logits = model(
            input_ids=ids,
            attention_mask=attention_mask[start:start + chunk_size],
            position_ids=position_ids[start:start + chunk_size],
            logits_to_keep=T + 1,
            use_cache=False,
        ).logits                                                            # (b, T+1, V)
        logits = logits[:, :-1, :]                                          # (b, T, V) view; logit t predicts token t+1
        if temperature != 1.0:                                              # at τ = 1 skip the division: it would
            logits = logits / temperature                                   # copy all b·T·V logits (2× the peak)
        targets = ids[:, ids.shape[1] - T:]                                 # (b, T) the completion tokens
        logp_chunks.append(selective_log_softmax(logits, targets))          # (b, T)
        if return_entropy:
            entropy_chunks.append(entropy_from_logits(logits))              # (b, T) fp32, no grad
        del logits                                                          # free this chunk's logits before the next forward
    if not logp_chunks:                                                     # B == 0
        empty = input_ids.new_zeros((0, T), dtype=torch.get_default_dtype())
        return (empty, empty.clone()) if return_entropy else empty
    logp = torch.cat(logp_chunks, dim=0)                                    # (B, T)
    return (logp, torch.cat(entropy_chunks, dim=0)) if return_entropy else logp


def grouped_token_logprobs(model: nn.Module, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                           completion_mask: Tensor, G: int, temperature: float = 1.0, return_entropy: bool = False,
                           ) -> Tensor | tuple[Tensor, Tensor]:
    """`token_logprobs` for G completions of each prompt, running each distinct prompt through the model once.

    The prompt's hidden states do not depend on the completion (causal attention), so the G copies of a
    prompt in a GRPO batch compute the same numbers G times. Here the N distinct prompts go through the
    model once with a KV cache, the cache is repeated G times (`repeat_interleave`, differentiable: the
    gradients of the G completions add up in the prompt's activations), and the B = N·G completions run
    on top of it. The logit that predicts the first completion token is the prompt's last one.
    For the tiny task (P ≈ 17, T ≈ 24, G = 8) a pass does about 60% of the token work of `token_logprobs`;
    the result equals it up to float rounding (tests/test_logprobs.py).

    Args:
        model: a causal LM taking `cache=` (transformers 5.x); not DDP-wrapped and without gradient
            checkpointing (both need one forward call per backward; use `token_logprobs` there).
        prompt_ids, prompt_mask: (N, P) the distinct left-padded prompts.
        completion_ids: (B, T) completions, B = N·G; rows n·G .. n·G + G - 1 belong to prompt n.
        completion_mask: (B, T) 1 on real completion tokens (up to and including EOS).
        G: completions per prompt.
        temperature: τ > 0.
        return_entropy: also return each position's entropy, (B, T), detached (as `token_logprobs`).

    Returns:
        logp, (B, T): equal (up to float rounding) to `token_logprobs(model, cat(prompt_ids repeated G
        times, completion_ids), cat(masks), T, temperature)`. Carries gradients unless under no_grad.
        With return_entropy: (logp, entropy).

    Used by: grpo_lib.rollout.completion_logprobs (π_ref, π_old and the update's log-probs in training).
    """
    from transformers import DynamicCache

    N, P = prompt_ids.shape
    B, T = completion_ids.shape
    if B != N * G:
        raise ValueError(f"completion_ids has {B} rows, expected N·G = {N}·{G} = {N * G}")
    if T < 1:
        raise ValueError("completion_ids must hold at least one token")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    prompt_mask = prompt_mask.to(completion_mask.dtype) if prompt_mask.dtype != completion_mask.dtype else prompt_mask
    cache = DynamicCache(config=getattr(model, "config", None))
    first = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position_ids_from_mask(prompt_mask),
                  cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1:, :]      # (N, 1, V)
    first = first.repeat_interleave(G, dim=0)                                            # (B, 1, V)
    if T > 1:
        cache.batch_repeat_interleave(G)                                                 # (N, ...) -> (B, ...)
        mask = torch.cat([prompt_mask.repeat_interleave(G, dim=0), completion_mask], dim=1)   # (B, P + T)
        position_ids = position_ids_from_mask(mask)[:, P:P + T - 1]                      # (B, T-1)
        rest = model(input_ids=completion_ids[:, :-1], attention_mask=mask[:, :-1], position_ids=position_ids,
                     cache=cache, use_cache=True).logits                                 # (B, T-1, V)
        logits = torch.cat([first, rest], dim=1)                                         # (B, T, V)
    else:
        logits = first
    if temperature != 1.0:
        logits = logits / temperature
    logp = selective_log_softmax(logits, completion_ids)                                 # (B, T)
    return (logp, entropy_from_logits(logits)) if return_entropy else logp


def naive_token_logprobs(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None, logits_to_keep: int,
                         temperature: float = 1.0, use_position_ids: bool = True) -> Tensor:
    """The tutorial's way: full (B, L, V) logits and log_softmax, then gather, then keep the last T.

    Same result as `token_logprobs`, kept for comparison (memory, speed) in notebook 04 and the tests.
    Peak memory holds two (B, L-1, V) tensors (logits and their log-softmax).

    Args:
        model, input_ids (B, L), attention_mask (B, L), logits_to_keep (T), temperature: as in
            `token_logprobs`.
        use_position_ids: pass position_ids = cumsum(attention_mask) - 1 (True, like `token_logprobs`);
            False reproduces the tutorial exactly (the model then numbers positions 0..L-1 including
            padding).

    Returns:
        logp, (B, T).

    Taught in: notebooks/04_the_loss.ipynb
    """
    attention_mask = _check_model_inputs(input_ids, attention_mask, logits_to_keep, temperature)
    kwargs = {"position_ids": position_ids_from_mask(attention_mask)} if use_position_ids else {}
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                   **kwargs).logits                                         # (B, L, V)
    logits = logits[:, :-1, :] / temperature                                # (B, L-1, V); drop the last prediction
    logp_all = torch.log_softmax(logits, dim=-1)                            # (B, L-1, V) full vocabulary
    targets = input_ids[:, 1:]                                              # (B, L-1) token t+1 for logit t
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)           # (B, L-1)
    T = logits_to_keep
    return logp[:, logp.shape[1] - T:]                                      # (B, T)


def completion_mask(completion_ids: Tensor, eos_token_id: int | Sequence[int] | Tensor) -> Tensor:
    """m_{i,t} = 1 for t <= (index of the first EOS in row i), else 0; a row without EOS is all 1.

    The EOS itself is kept (trained), the padding after it is not. A row with no EOS was truncated at
    max_completion_length and is all ones.

    Args:
        completion_ids: o_ids, (B, T) generated ids (no prompt).
        eos_token_id: one id or a list of ids that end a completion (Qwen2.5-Instruct has two:
            `<|im_end|>` and `<|endoftext|>`).

    Returns:
        mask, (B, T), dtype torch.int32 (like TRL); `mask.sum(-1)` is |o_i|.

    Taught in: notebooks/04_the_loss.ipynb
    """
    if completion_ids.ndim != 2:
        raise ValueError(f"completion_ids must be (B, T), got shape {tuple(completion_ids.shape)}")
    if eos_token_id is None:
        raise ValueError("eos_token_id is None: pass the tokenizer's eos id (or a list of ids) explicitly")
    eos = torch.as_tensor(eos_token_id, device=completion_ids.device).reshape(-1)  # (n_eos,)
    if eos.numel() == 0 or torch.is_floating_point(eos):
        raise ValueError(f"eos_token_id must be an int or a non-empty list of ints, got {eos_token_id!r}")
    B, T = completion_ids.shape
    is_eos = torch.isin(completion_ids, eos.to(completion_ids.dtype))       # (B, T)
    first_eos = torch.full((B,), T, dtype=torch.long, device=completion_ids.device)  # (B,); T = no EOS
    if T > 0:
        has_eos = is_eos.any(dim=1)                                         # (B,)
        first_eos = torch.where(has_eos, is_eos.int().argmax(dim=1), first_eos)  # (B,)
    t = torch.arange(T, device=completion_ids.device)                       # (T,)
    return (t[None, :] <= first_eos[:, None]).int()                         # (B, T)
