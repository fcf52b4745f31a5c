"""Rollouts: sample G completions per prompt with the KV cache, then score them and attach log-probs.

One GRPO step starts here. For N prompts q_1..q_N the policy samples G completions each; the rewards,
group advantages A_i and the old / reference log-probs of every completion token are then fixed for the
μ updates that follow (`score_rollout`).

Layout: B = N·G rows, prompt-major. Group n (prompt n) is rows n·G .. n·G + G - 1, so
`rewards.view(N, G)` puts each group on a row, exactly what `group_advantages` expects.

Choices made here (each shown in notebooks/05_full_run.ipynb):
1. One `model.generate` call for all B rows, with the KV cache (`use_cache=True`): each new token costs one
   position of attention, not a re-run of the whole prefix (the tutorial generated without the cache).
2. Prompts are left-padded: every row's prompt ends at the same column P, so the first generated token of
   every row lands at column P and the completion is simply `sequences[:, P:]`.
3. Sampling is plain temperature sampling (`do_sample=True, temperature=τ, top_k=0, top_p=1.0,
   repetition_penalty=1.0`), passed explicitly so a checkpoint's generation_config (Qwen2.5-Instruct
   ships its own temperature, top_k, top_p and repetition penalty) cannot change the distribution: the
   log-probs in the loss are those of softmax(logits / τ), and they must describe the distribution that
   sampled.
4. Generation runs in eval mode, under no_grad, with gradient checkpointing switched off (and switched
   back on afterwards): checkpointing only saves memory for a backward pass, and transformers turns the
   KV cache off while it is on in training mode.
5. The completion mask is 1 up to and including the first EOS (`completion_mask`): the EOS is trained, so
   the model learns when to stop. Completions are decoded up to (not including) that EOS, with special
   tokens kept, so reward functions see exactly the text the model wrote.
6. A reward function that raises is re-run one completion at a time to find the completion it fails
   on; the error names the function and shows that completion.
7. With μ = 1 the old log-probs are not computed: log π_θold = log π_θ (detached) at the only update,
   so ρ = 1 exactly (TRL does the same). With μ > 1 they are computed once, before the first update.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from grpo_lib.advantages import compute_advantages, gdpo_advantages
from grpo_lib.logprobs import completion_mask, grouped_token_logprobs, token_logprobs
from grpo_lib.rewards import strict_correct
from grpo_lib.sampling import sample_tokens

RewardFunc = Callable[..., list]


@dataclass
class Rollout:
    """G sampled completions for each of N prompts, B = N·G rows in prompt-major order.

    Attributes:
        prompts: the N prompt strings q.
        prompt_ids: (B, P) left-padded prompt ids, each prompt repeated G times.
        prompt_mask: (B, P) 1 on real prompt tokens, 0 on left padding.
        completion_ids: (B, T) generated ids o; after the first EOS only padding.
        completion_mask: (B, T) 1 up to and including the first EOS, 0 after it.
        texts: B decoded completions (up to, not including, the EOS).
        G: group size; group n is rows n·G .. n·G + G - 1.
        eos_token_id: the id that ends a completion.
        generation_seconds: wall time of the generate() call.
        pad_token_id: the id after the EOS and in the left padding (None: not recorded).

    Used by: `generate_completions` (what it returns) and `score_rollout`
    """

    prompts: list[str]
    prompt_ids: Tensor
    prompt_mask: Tensor
    completion_ids: Tensor
    completion_mask: Tensor
    texts: list[str]
    G: int
    eos_token_id: int
    generation_seconds: float = 0.0
    pad_token_id: int | None = None

    @property
    def N(self) -> int:
        """number of prompts"""
        return len(self.prompts)

    @property
    def B(self) -> int:
        """number of completions, N · G"""
        return self.completion_ids.shape[0]

    @property
    def T(self) -> int:
        """completion length after padding (the longest completion)"""
        return self.completion_ids.shape[1]

    @property
    def input_ids(self) -> Tensor:
        """(B, P + T) prompt and completion ids, what the loss-side forward pass reads"""
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> Tensor:
        """(B, P + T) 1 on real prompt tokens and on completion tokens up to the first EOS"""
        return torch.cat([self.prompt_mask, self.completion_mask.to(self.prompt_mask.dtype)], dim=1)

    @property
    def completion_lengths(self) -> Tensor:
        """(B,) |o_i| = completion_mask.sum(-1), EOS included"""
        return self.completion_mask.sum(dim=-1)

    @property
    def truncated(self) -> Tensor:
        """(B,) bool: True for a completion that never emitted EOS (cut at max_new_tokens)"""
        has_eos = ((self.completion_ids == self.eos_token_id) & (self.completion_mask == 1)).any(dim=-1)  # (B,)
        return ~has_eos

    def group(self, n: int) -> list[str]:
        """the G completion texts of prompt n"""
        return self.texts[n * self.G:(n + 1) * self.G]


def gradient_checkpointing_on(model: nn.Module) -> bool:
    """True when the model recomputes activations in backward (transformers 5: "activation checkpointing")."""
    if hasattr(type(model), "is_activation_checkpointing"):        # transformers >= 5.x
        return bool(model.is_activation_checkpointing)
    return bool(getattr(model, "is_gradient_checkpointing", False))


def set_gradient_checkpointing(model: nn.Module, on: bool) -> None:
    """Switch gradient (activation) checkpointing on or off, with non-reentrant checkpoints.

    Used by: `grpo_lib.run.lifecycle.Run` (gradient_checkpointing) and `generation_mode`
    """
    new_api = hasattr(model, "activation_checkpointing_enable")   # transformers >= 5.x renamed it
    if on:
        kwargs = {"use_reentrant": False}
        if new_api:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    elif new_api:
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()


@contextlib.contextmanager
def generation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode, no gradients and no gradient checkpointing for the duration; restored afterwards.

    Used by: `generate_completions` and `score_rollout`
    """
    was_training = model.training
    checkpointing = gradient_checkpointing_on(model)
    if checkpointing:
        set_gradient_checkpointing(model, False)
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        if checkpointing:
            set_gradient_checkpointing(model, True)
        model.train(was_training)


def _eos_id(tokenizer: Any) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id: a completion could never end")
    return eos


def _check_pad(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        raise ValueError(
            "the tokenizer has no pad_token_id; batched generation needs one. Set a pad token that differs "
            "from EOS (grpo_lib.models.load_policy does), or the EOS of finished rows cannot be told apart "
            "from padding"
        )
    return pad


def decode_completions(tokenizer: Any, completion_ids: Tensor, completion_mask: Tensor, eos_token_id: int,
                       ) -> list[str]:
    """Decode each completion up to (not including) its first EOS, special tokens kept.

    Args:
        completion_ids: (B, T); completion_mask: (B, T) from `completion_mask`.

    Returns:
        B strings.
    """
    texts = []
    for ids, m in zip(completion_ids.tolist(), completion_mask.sum(dim=-1).tolist()):
        ids = ids[:m]                                              # up to and including the first EOS
        if ids and ids[-1] == eos_token_id:
            ids = ids[:-1]                                         # the EOS is not part of the text
        texts.append(tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False))
    return texts


def generate_completions(model: nn.Module, tokenizer: Any, prompts: Sequence[str], G: int, *,
                         max_new_tokens: int, temperature: float = 1.0, do_sample: bool = True,
                         seed: int | None = None) -> Rollout:
    """Sample G completions o_1..o_G ~ π_θ(· | q) for each prompt q, in one batched generate() call.

    Args:
        model: a causal LM (not DDP-wrapped: pass `ddp_model.module`).
        tokenizer: its tokenizer; needs pad_token_id and eos_token_id. Left padding is forced here.
        prompts: N prompt strings (already built by `data.build_prompt`).
        G: completions per prompt (>= 1; GRPO needs >= 2, evaluation uses 1).
        max_new_tokens: |o|_max.
        temperature: τ > 0 (ignored when do_sample=False).
        do_sample: False gives greedy decoding (evaluation).
        seed: if given, `torch.manual_seed(seed)` first, so the samples are reproducible (this reseeds
            the global RNG).

    Returns:
        Rollout with B = N·G rows; group n is rows n·G .. n·G + G - 1.

    Taught in: notebooks/05_full_run.ipynb
    """
    if isinstance(prompts, str) or not prompts:
        raise ValueError("prompts must be a non-empty list of prompt strings")
    if G < 1:
        raise ValueError(f"G must be >= 1, got {G}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature must be > 0 for sampling, got {temperature}")
    pad_id, eos_id = _check_pad(tokenizer), _eos_id(tokenizer)
    from transformers import PreTrainedModel

    device = next(model.parameters()).device
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, padding_side="left",
                    add_special_tokens=False)
    unique_ids, unique_mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)   # (N, P)
    prompt_ids = unique_ids.repeat_interleave(G, dim=0)                              # (N, P) -> (B, P)
    prompt_mask = unique_mask.repeat_interleave(G, dim=0)                            # (B, P)

    if seed is not None:
        torch.manual_seed(seed)
    t0 = time.perf_counter()
    with generation_mode(model):
        if isinstance(model, PreTrainedModel) and not model.config.is_encoder_decoder:
            # the loop of model.generate(do_sample, top_k=0, top_p=1) with each prompt prefilled once, not
            # G times: the same tokens for the same seed (grpo_lib.sampling; tests/test_sampling.py)
            completion_ids = sample_tokens(model, unique_ids, unique_mask, max_new_tokens=max_new_tokens,
                                           eos_token_id=eos_id, pad_token_id=pad_id, temperature=float(temperature),
                                           do_sample=do_sample, G=G)                 # (B, T)
        else:                   # any other module with a generate() method (e.g. a scripted test policy)
            sampling = dict(do_sample=True, temperature=float(temperature), top_k=0, top_p=1.0) if do_sample \
                else dict(do_sample=False, temperature=None, top_k=None, top_p=None)
            completion_ids = model.generate(
                input_ids=prompt_ids, attention_mask=prompt_mask, max_new_tokens=max_new_tokens,
                use_cache=True, pad_token_id=pad_id, eos_token_id=eos_id, repetition_penalty=1.0, **sampling,
            )[:, prompt_ids.shape[1]:]                                               # (B, T)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0

    mask = completion_mask(completion_ids, eos_id)                                   # (B, T), EOS included
    texts = decode_completions(tokenizer, completion_ids, mask, eos_id)
    return Rollout(prompts=list(prompts), prompt_ids=prompt_ids, prompt_mask=prompt_mask,
                   completion_ids=completion_ids, completion_mask=mask, texts=texts, G=G,
                   eos_token_id=eos_id, generation_seconds=seconds, pad_token_id=pad_id)


# --- scoring ---------------------------------------------------------------------------------------
def _is_reward_number(v: Any) -> bool:
    """A reward value: bool, int, float (numpy scalars included) or a 0-d tensor; a str is not one."""
    import numbers

    if isinstance(v, Tensor):
        return v.ndim == 0 and not v.is_complex()
    return isinstance(v, numbers.Real)


class RewardFunctionError(RuntimeError):
    """A reward function failed (raised, or returned the wrong number of values or a non-finite value)."""


def _call_reward(name: str, fn: RewardFunc, prompts: list[str], texts: list[str], answers: list[str]) -> list:
    completions = [[{"content": t}] for t in texts]
    return fn(prompts=prompts, completions=completions, answer=answers)


def score_completions(rollout: Rollout, answers: Sequence[str], reward_funcs: Mapping[str, RewardFunc],
                      ) -> tuple[Tensor, dict[str, Tensor]]:
    """r_i = Σ_k r_k(q, o_i): run every reward function on the B completions and add them up.

    Each function is called as the tutorial and TRL call them:
    `fn(prompts=[q]*B, completions=[[{"content": o_i}], ...], answer=[gold]*B)` (each prompt and gold
    repeated G times), and must return B numbers.

    Args:
        rollout: from `generate_completions`.
        answers: N gold answers, one per prompt.
        reward_funcs: name -> function, e.g. {"correctness": correctness_reward, "format": format_reward}.

    Returns:
        r (B,) float32 total reward, and name -> (B,) per-function rewards.

    Raises:
        RewardFunctionError: a function raised (the message names it and shows the completion it failed
            on), returned a wrong count, or returned NaN / inf / a non-number.

    Used by: `score_rollout`
    """
    if len(answers) != rollout.N:
        raise ValueError(f"got {len(answers)} gold answers for {rollout.N} prompts")
    if not reward_funcs:
        raise ValueError("reward_funcs is empty: at least one reward function is needed")
    G, B = rollout.G, rollout.B
    prompts = [p for p in rollout.prompts for _ in range(G)]                 # (B,) q repeated per group
    golds = [a for a in answers for _ in range(G)]                           # (B,)
    per_func = {}
    for name, fn in reward_funcs.items():
        try:
            values = _call_reward(name, fn, prompts, rollout.texts, golds)
        except Exception as batch_error:
            _raise_for_failing_completion(name, fn, prompts, rollout.texts, golds, batch_error)
        if not isinstance(values, (list, tuple, Tensor)) or len(values) != B:
            got = len(values) if hasattr(values, "__len__") else type(values).__name__
            raise RewardFunctionError(f"reward function {name!r} must return {B} numbers (one per completion), got {got}")
        not_number = next((i for i, v in enumerate(values) if not _is_reward_number(v)), None)
        if not_number is not None:                  # "1.0" would train as if it were a score
            v = values[not_number]
            raise RewardFunctionError(
                f"reward function {name!r} returned {v!r} ({type(v).__name__}) for completion {not_number} (prompt "
                f"{not_number // G}), which is not a number: rewards must be bool, int, float or a 0-d tensor (a "
                f"numeric string is refused too). "
                f"The completion:\n{rollout.texts[not_number]!r}")
        try:
            r_k = torch.as_tensor([float(v) for v in values], dtype=torch.float32)      # (B,)
        except (TypeError, ValueError, RuntimeError) as e:
            raise RewardFunctionError(f"reward function {name!r} returned a value that is not a number: {e}") from e
        bad = (~torch.isfinite(r_k)).nonzero().flatten()
        if len(bad):
            i = int(bad[0])
            raise RewardFunctionError(
                f"reward function {name!r} returned {values[i]} for completion {i} (prompt {i // G}); rewards "
                f"must be finite. The completion:\n{rollout.texts[i]!r}"
            )
        per_func[name] = r_k
    r = torch.stack(list(per_func.values())).sum(dim=0)                        # (B,)
    return r, per_func


def _raise_for_failing_completion(name: str, fn: RewardFunc, prompts: list[str], texts: list[str],
                                  golds: list[str], batch_error: Exception) -> None:
    """Re-run `fn` one completion at a time to find the one it fails on, then raise naming both."""
    for i in range(len(texts)):
        try:
            _call_reward(name, fn, prompts[i:i + 1], texts[i:i + 1], golds[i:i + 1])
        except Exception as e:
            raise RewardFunctionError(
                f"reward function {name!r} raised {type(e).__name__}: {e}\n"
                f"on completion {i} (gold answer {golds[i]!r}):\n{texts[i]!r}"
            ) from e
    raise RewardFunctionError(
        f"reward function {name!r} raised {type(batch_error).__name__}: {batch_error} on the batch of "
        f"{len(texts)} completions, but on none of them alone"
    ) from batch_error


def completion_logprobs(model: nn.Module, rollout: Rollout, temperature: float = 1.0,
                        chunk_size: int | None = None, rows: slice | None = None, return_entropy: bool = False,
                        ) -> Tensor | tuple[Tensor, Tensor]:
    """log π(o_{i,t} | q_i, o_{i,<t}) for every completion token, (B, T); grads flow unless under no_grad.

    Each distinct prompt goes through the model once and its KV cache serves its G completions
    (`grpo_lib.logprobs.grouped_token_logprobs`), when that is possible: G > 1, `rows` and `chunk_size`
    made of whole groups, a plain module (not DDP-wrapped) without gradient checkpointing. Otherwise
    the plain `token_logprobs` over prompt + completion. Both give the same numbers up to float rounding.

    Args:
        model: π_θ or π_ref.
        rollout: the sampled batch.
        temperature: τ of the sampling.
        chunk_size: rows per forward (None: all at once).
        rows: a slice of the B rows (a micro-batch); None = all.
        return_entropy: also return each position's entropy, (b, T), detached (the `entropy` metric).

    Used by: `score_rollout` (π_ref, π_old) and `grpo_lib.train.policy_update` (π_θ, with gradients)
    """
    start, stop, _ = (rows or slice(None)).indices(rollout.B)
    G, b = rollout.G, stop - start
    chunk = chunk_size or max(b, 1)
    grouped = (G > 1 and start % G == 0 and b % G == 0 and chunk % G == 0 and not hasattr(model, "no_sync")
               and not gradient_checkpointing_on(model))
    if not grouped:
        return token_logprobs(model, rollout.input_ids[start:stop], rollout.attention_mask[start:stop],
                              logits_to_keep=rollout.T, temperature=temperature, chunk_size=chunk_size,
                              return_entropy=return_entropy)                              # (b, T)
    parts = []
    for s in range(start, stop, chunk):
        e = min(s + chunk, stop)
        parts.append(grouped_token_logprobs(model, rollout.prompt_ids[s:e:G], rollout.prompt_mask[s:e:G],
                                            rollout.completion_ids[s:e], rollout.completion_mask[s:e], G,
                                            temperature=temperature, return_entropy=True))  # (e - s, T) x 2
    logp = torch.cat([lp for lp, _ in parts], dim=0)                                      # (b, T)
    return (logp, torch.cat([h for _, h in parts], dim=0)) if return_entropy else logp


@dataclass
class ScoredRollout:
    """A rollout with everything the μ updates need, fixed for the whole step.

    Attributes:
        rollout: the sampled completions.
        answers: N gold answers.
        rewards: r, (B,) total reward.
        rewards_per_func: name -> (B,) reward of each function.
        advantages: A, (B,).
        logp_old: log π_θold, (B, T), or None when μ = 1 (then the loss uses log π_θ detached).
        logp_ref: log π_ref, (B, T), or None when β = 0.
        correct: (B,) bool, strict correctness of each completion (for the batch accuracy).
        scoring_seconds: wall time of rewards + advantages + old/ref log-probs.
        is_weights: sampler-trainer correction weights, (B, T) or (B, 1) (`grpo_lib.loss.sampling_importance_weights`),
            for a sampler other than the policy; None (the engine's own sampler) = no correction.
        metrics: extra per-step metrics of the options that built this batch, already combined over the ranks
            (`grpo_lib.dynamic_sampling`, `grpo_lib.sampler`); empty when those options are off.
        mask_truncated: DAPO's overlong filtering (GRPOConfig.mask_truncated_completions): `mask` leaves out every
            token of a completion cut without an EOS; its reward and advantage are unchanged.
    """

    rollout: Rollout
    answers: list[str]
    rewards: Tensor
    rewards_per_func: dict[str, Tensor]
    advantages: Tensor
    logp_old: Tensor | None = None
    logp_ref: Tensor | None = None
    correct: Tensor | None = None
    scoring_seconds: float = 0.0
    is_weights: Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    mask_truncated: bool = False

    @property
    def mask(self) -> Tensor:
        """(B, T) the tokens the loss reads: the completion mask, without the truncated completions' rows when
        mask_truncated (TRL's completion_mask * ~is_truncated)"""
        if self.mask_truncated:
            m = self.rollout.completion_mask                                           # (B, T)
            return m * (~self.rollout.truncated).unsqueeze(1).to(m.dtype)
        return self.rollout.completion_mask


def score_rollout(rollout: Rollout, answers: Sequence[str], reward_funcs: Mapping[str, RewardFunc], *,
                  policy: nn.Module | None = None, ref_model: nn.Module | None = None,
                  scale_rewards: str = "group", temperature: float = 1.0, need_old: bool = False,
                  chunk_size: int | None = None,
                  multi_objective_aggregation: str = "sum_then_normalize",
                  scores: tuple[Tensor, Mapping[str, Tensor]] | None = None) -> ScoredRollout:
    """Rewards r, advantages A and the no-grad log-probs of π_θold and π_ref for one rollout.

    Args:
        rollout: from `generate_completions`.
        answers: N gold strings.
        reward_funcs: name -> reward function.
        policy: π_θ (unwrapped); used only when need_old (μ > 1) to record log π_θold.
        ref_model: π_ref, or None when β = 0.
        scale_rewards: "group", "batch" or "none" (see `grpo_lib.advantages.compute_advantages`).
        temperature: τ used for sampling; the log-probs use the same τ.
        need_old: compute log π_θold now (needed when μ > 1, since π_θ moves between updates).
        chunk_size: rows per forward for the log-probs.
        multi_objective_aggregation: "sum_then_normalize" (A from the summed reward) or "normalize_then_sum"
            (GDPO, `grpo_lib.advantages.gdpo_advantages` on the per-function rewards; scale_rewards unused).
        scores: (r (B,), name -> (B,)) already computed by `score_completions` for this rollout (dynamic
            sampling scores each draw to filter it); None calls the reward functions here.

    Returns:
        ScoredRollout.

    Taught in: notebooks/05_full_run.ipynb
    """
    t0 = time.perf_counter()
    device = rollout.completion_ids.device
    r, per_func = score_completions(rollout, answers, reward_funcs) if scores is None else scores  # (B,), {name: (B,)}
    r = r.to(device)                                                            # (B,) on the model's device
    if multi_objective_aggregation == "normalize_then_sum":                     # GDPO
        per = torch.stack([v.to(device) for v in per_func.values()]).view(len(per_func), -1, rollout.G)  # (K, N, G)
        A = gdpo_advantages(per).reshape(-1)                                    # (B,)
    elif multi_objective_aggregation == "sum_then_normalize":
        A = compute_advantages(r, rollout.G, scale=scale_rewards)               # (B,)
    else:
        raise ValueError(f"multi_objective_aggregation must be 'sum_then_normalize' or 'normalize_then_sum', "
                         f"got {multi_objective_aggregation!r}")
    golds = [a for a in answers for _ in range(rollout.G)]
    correct = torch.tensor([strict_correct(t, g) for t, g in zip(rollout.texts, golds)])  # (B,) bool
    logp_old = logp_ref = None
    if need_old:
        if policy is None:
            raise ValueError("need_old=True (μ > 1) needs the policy to record log π_θold")
        with generation_mode(policy):   # eval mode + no_grad: same numbers the first update will see
            logp_old = completion_logprobs(policy, rollout, temperature, chunk_size)   # (B, T)
    if ref_model is not None:
        with torch.no_grad():
            logp_ref = completion_logprobs(ref_model, rollout, temperature, chunk_size)  # (B, T)
    return ScoredRollout(rollout=rollout, answers=list(answers), rewards=r,
                         rewards_per_func={k: v.to(device) for k, v in per_func.items()},
                         advantages=A.to(device), logp_old=logp_old, logp_ref=logp_ref, correct=correct,
                         scoring_seconds=time.perf_counter() - t0)
