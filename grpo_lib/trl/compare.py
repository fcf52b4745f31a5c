"""The same batch through TRL's GRPOTrainer and through grpo_lib: loss, gradients, metrics, advantages.

TRL (`pip install -e ".[trl]"`, TRL 1.16.0) is what most learners use after the course. This module runs
TRL's *own* code on a batch we build, so the golden tests (tests/test_golden_trl.py) and notebook 04 can
show that grpo_lib computes the same numbers:

- `trl_loss` calls `GRPOTrainer._compute_loss` of a real trainer (the tiny Qwen2, on the CPU). The model
  forward is TRL's too: TRL patches the model with its fused LM head (`add_fused_lm_head`), which
  returns temperature-scaled per-token log-probs; nothing of TRL is replaced or mocked.
- `our_loss` runs the engine's log-probs (`grpo_lib.rollout.completion_logprobs`: each distinct prompt
  once, its KV cache shared by its G completions) and `grpo_lib.loss.grpo_loss` on a second copy of the
  same weights.
- `trl_advantages` calls `GRPOTrainer._generate_and_score_completions` (which really generates with the
  tiny model) with a reward function that returns given rewards, and reads TRL's advantages.

Choices made here:
1. TRL's loss divides by `current_gradient_accumulation_steps` (set by its training loop); we set it to
   the trainer's `gradient_accumulation_steps` (1), as the loop would.
2. "dapo" normalises by `num_items_in_batch`, the active tokens of the whole generation batch (TRL
   gathers it over processes); we pass the batch's token count, as TRL's own scoring step does.
3. The batch has left-padded prompts of different lengths and completions of different lengths, so
   padding on both sides is exercised; old log-probs are the current ones plus noise, so that ρ leaves
   [1-ε, 1+ε_high] on both sides and clipping acts.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from grpo_lib.logprobs import completion_mask, token_logprobs
from grpo_lib.loss import grpo_loss
from grpo_lib.models import load_policy
from grpo_lib.rollout import Rollout, completion_logprobs

TRL_VERSION = "1.16.0"
"""the TRL release the golden tests and the recipe are written against (pinned by the [trl] extra)"""
INSTALL_HINT = ('TRL is not installed. Install the pinned version with  pip install -e ".[trl]"  '
                f'(or  pip install trl=={TRL_VERSION})')


def trl_available() -> bool:
    """True when `import trl` works (any version)."""
    try:
        import trl  # noqa: F401
    except ImportError:
        return False
    return True


def require_trl() -> Any:
    """Import and return the `trl` module, or raise ImportError saying how to install it.

    A TRL other than TRL_VERSION still imports, with a warning: its private loss code may differ.
    """
    try:
        import trl
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    version = importlib.metadata.version("trl")
    if version != TRL_VERSION:
        import warnings

        warnings.warn(f"TRL {version} is installed; grpo_lib is checked against TRL {TRL_VERSION} "
                      f"(pip install trl=={TRL_VERSION})", stacklevel=2)
    return trl


def make_trainer(model: nn.Module, tokenizer: Any, *, G: int = 4, loss_type: str = "grpo", beta: float = 0.0,
                 epsilon: float = 0.2, epsilon_high: float | None = None, temperature: float = 1.0,
                 max_completion_length: int = 8, scale_rewards: str = "group", rewards: Sequence[float] | None = None,
                 use_bias_correction_kl: bool = False, output_dir: str | None = None,
                 rewards_per_func: Sequence[Sequence[float]] | None = None, **trl_kwargs: Any) -> Any:
    """A real `trl.GRPOTrainer` on the CPU around `model`, for calling its loss and scoring code directly.

    Args:
        model: a causal LM (TRL patches its forward with the fused LM head; keep a separate copy for grpo_lib).
        tokenizer: its tokenizer (left padding, pad != eos).
        G: num_generations.
        loss_type, beta, epsilon, epsilon_high, temperature, max_completion_length, scale_rewards: TRL's
            GRPOConfig fields of the same names (epsilon_high None means epsilon, as in grpo_lib).
        rewards: the reward of each completion, in prompt-major order (B = len(rewards) = N·G); the
            trainer's one reward function returns them, so `trl_advantages` can feed known rewards.
            None gives B = 2·G rewards of 0 (enough for the loss, which takes the advantages directly).
        use_bias_correction_kl: TRL 1.16 defaults to True (DeepSeek-V3.2: the k3 KL term is multiplied by
            the ratio ρ). False is DeepSeekMath's eq. 3, which grpo_lib implements.
        output_dir: TRL's output_dir (nothing is written there); None uses a temporary folder.
        rewards_per_func: instead of `rewards`, K lists of N·G rewards: the trainer gets K reward functions,
            function k returning list k (for multi_objective_aggregation).
        trl_kwargs: any other TRL GRPOConfig field (importance_sampling_level, multi_objective_aggregation...).

    Returns:
        the trainer, with `current_gradient_accumulation_steps` set as TRL's training loop sets it.
    """
    require_trl()
    from datasets import Dataset
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    columns = [[float(r) for r in rs] for rs in rewards_per_func] if rewards_per_func is not None else [
        [0.0] * (2 * G) if rewards is None else [float(r) for r in rewards]]
    rewards = columns[0]
    if len(rewards) % G or any(len(c) != len(rewards) for c in columns):
        raise ValueError(f"rewards must hold N·G values (G = {G}) for every function, got {[len(c) for c in columns]}")
    dataset = Dataset.from_list([{"prompt": "1+1=", **{f"target_reward_{k}": c[i] for k, c in enumerate(columns)}}
                                 for i in range(len(rewards))])

    def _given(k: int) -> Any:
        def given_reward(prompts, completions, **kwargs):                 # noqa: ARG001 (TRL's signature)
            return list(kwargs[f"target_reward_{k}"])
        given_reward.__name__ = f"given_reward_{k}"
        return given_reward

    args = TRLConfig(
        output_dir=output_dir or tempfile.mkdtemp(prefix="trl-compare-"),
        use_cpu=True, bf16=False, fp16=False, report_to="none", logging_strategy="no", save_strategy="no",
        per_device_train_batch_size=len(rewards), num_generations=G, max_completion_length=max_completion_length,
        loss_type=loss_type, beta=beta, epsilon=epsilon,
        epsilon_high=epsilon if epsilon_high is None else epsilon_high,
        temperature=temperature, scale_rewards=scale_rewards, top_k=0, top_p=1.0, seed=0,
        use_bias_correction_kl=use_bias_correction_kl,
        activation_checkpointing=True,   # TRL's default (its gradient_checkpointing=True), under transformers 5's name
        **trl_kwargs,
    )
    funcs = [_given(k) for k in range(len(columns))]
    trainer = GRPOTrainer(model=model, reward_funcs=funcs[0] if len(funcs) == 1 else funcs, args=args, train_dataset=dataset,
                          processing_class=tokenizer)
    trainer.current_gradient_accumulation_steps = args.gradient_accumulation_steps
    return trainer


@dataclass
class LossBatch:
    """One batch in TRL's layout: left-padded prompts, right-padded completions, and what the loss needs.

    prompt_ids, prompt_mask: (B, P); completion_ids, completion_mask: (B, T); advantages: (B,);
    logp_old: (B, T) or None (on-policy); logp_ref: (B, T) or None.
    """

    prompt_ids: Tensor
    prompt_mask: Tensor
    completion_ids: Tensor
    completion_mask: Tensor
    advantages: Tensor
    logp_old: Tensor | None
    logp_ref: Tensor | None

    @property
    def input_ids(self) -> Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)      # (B, P+T)

    @property
    def attention_mask(self) -> Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)    # (B, P+T)


EXAMPLE_PROMPTS = ("12+7=", "3+45+6=", "1+2=")
"""three prompts of different token lengths (so left padding is exercised)"""


def make_batch(model: nn.Module, tokenizer: Any, prompts: Sequence[str] = EXAMPLE_PROMPTS, *, G: int = 4, T: int = 8,
               temperature: float = 1.0, noise: float = 0.3, off_policy: bool = True, seed: int = 1) -> LossBatch:
    """A reproducible batch: random completions (EOS at varying places), random advantages, and log π_old /
    log π_ref equal to the model's current log-probs plus N(0, noise²) (so ρ is clipped on both sides).

    Args:
        model: the policy (an unpatched copy: grpo_lib's log-probs give the base for log π_old / log π_ref).
        prompts: N prompt strings of different lengths (left padding is exercised).
        G, T: completions per prompt, completion length.
        off_policy: False gives logp_old = None (μ = 1: both sides use the current log-probs, detached).
    """
    g = torch.Generator().manual_seed(seed)
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    prompt_ids = enc["input_ids"].repeat_interleave(G, dim=0)                # (B, P)
    prompt_mask = enc["attention_mask"].repeat_interleave(G, dim=0)          # (B, P)
    B = prompt_ids.shape[0]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    specials = {eos, pad}
    ordinary = torch.tensor([i for i in range(len(tokenizer)) if i not in specials])
    completion_ids = ordinary[torch.randint(len(ordinary), (B, T), generator=g)]   # (B, T)
    ends = torch.randint(1, T + 1, (B,), generator=g)                         # EOS position + 1 (T: no EOS)
    for i, e in enumerate(ends.tolist()):
        if e < T:
            completion_ids[i, e - 1] = eos
            completion_ids[i, e:] = pad
    mask = completion_mask(completion_ids, eos).long()                         # (B, T) 1 up to and incl. EOS
    A = torch.randn(B, generator=g)
    A[::5] = 0.0                                                               # some zero advantages
    with torch.no_grad():
        logp = token_logprobs(model, torch.cat([prompt_ids, completion_ids], 1),
                              torch.cat([prompt_mask, mask], 1), logits_to_keep=T, temperature=temperature)
    logp_old = logp + noise * torch.randn(B, T, generator=g) if off_policy else None
    logp_ref = logp + noise * torch.randn(B, T, generator=g)
    return LossBatch(prompt_ids, prompt_mask, completion_ids, mask, A, logp_old, logp_ref)


def trl_loss(trainer: Any, batch: LossBatch, extra_inputs: dict[str, Any] | None = None,
             ) -> tuple[Tensor, dict[str, float]]:
    """TRL's `GRPOTrainer._compute_loss` on `batch` (its model, its fused log-probs, its loss code).

    Returns:
        loss (0-dim, with grad into trainer.model) and the metrics TRL logged for this call
        ("kl" when β > 0, "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean").
    """
    inputs = {"prompt_ids": batch.prompt_ids, "prompt_mask": batch.prompt_mask,
              "completion_ids": batch.completion_ids, "completion_mask": batch.completion_mask,
              "advantages": batch.advantages, "num_items_in_batch": batch.completion_mask.sum()}
    if batch.logp_old is not None:
        inputs["old_per_token_logps"] = batch.logp_old
    if trainer.beta != 0.0:
        inputs["ref_per_token_logps"] = batch.logp_ref
    inputs.update(extra_inputs or {})                    # e.g. importance_sampling_ratio (TRL's vLLM correction)
    trainer._metrics["train"].clear()
    trainer.model.train()
    loss = trainer._compute_loss(trainer.model, inputs)
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items() if v}
    return loss, metrics


def our_loss(model: nn.Module, batch: LossBatch, *, loss_type: str, beta: float, epsilon: float = 0.2,
             epsilon_high: float | None = None, temperature: float = 1.0,
             max_completion_length: int | None = None, **loss_kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
    """grpo_lib's log-probs and `grpo_loss` on `batch` (as `grpo_lib.train.policy_update` calls them);
    loss_kwargs go to `grpo_loss` (importance_sampling_level, kl_estimator, is_weights...)."""
    B, T = batch.completion_ids.shape
    G = _group_size(batch)
    rollout = Rollout(prompts=[""] * (B // G), prompt_ids=batch.prompt_ids, prompt_mask=batch.prompt_mask,
                      completion_ids=batch.completion_ids, completion_mask=batch.completion_mask, texts=[""] * B,
                      G=G, eos_token_id=-1)
    model.train()
    logp = completion_logprobs(model, rollout, temperature)          # the engine's path (each prompt once)
    return grpo_loss(logp, batch.logp_old, batch.logp_ref if beta > 0 else None, batch.advantages,
                     batch.completion_mask, epsilon=epsilon, epsilon_high=epsilon_high, beta=beta,
                     loss_type=loss_type, max_completion_length=max_completion_length or T, **loss_kwargs)


def _group_size(batch: LossBatch) -> int:
    """G: rows n·G .. n·G + G - 1 share a prompt (the largest such G that divides B, 1 if none)."""
    ids, B = batch.prompt_ids, batch.prompt_ids.shape[0]
    for G in range(B, 1, -1):
        if B % G == 0 and all(torch.equal(ids[s:s + G], ids[s:s + 1].expand(G, -1)) for s in range(0, B, G)):
            return G
    return 1


def trl_advantages(trainer: Any) -> Tensor:
    """TRL's advantages for the rewards given to `make_trainer(rewards=...)`, (B,) in the same order.

    Runs `GRPOTrainer._generate_and_score_completions` on the trainer's dataset rows (TRL generates with
    the model, scores with the reward function that returns the given rewards, and normalises).
    """
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    trainer.model.train()
    with torch.no_grad():
        out = trainer._generate_and_score_completions(rows)
    return out["advantages"]


def agreement(loss_types: Sequence[str] = ("grpo", "bnpo", "dr_grpo", "dapo"), *, beta: float = 0.04,
              epsilon_high: float | None = 0.28, temperature: float = 0.9, show: bool = True) -> list[dict[str, Any]]:
    """TRL's loss and grpo_lib's on one small batch of the tiny model, for each loss_type: values and gradients.

    The batch is `make_batch` (3 prompts x 4 completions, log π_old and log π_ref perturbed so that
    clipping and the KL term act). Each row: loss_type, the two loss values, |difference|, and the largest
    gradient difference relative to the largest gradient entry.

    Taught in: notebooks/04_the_loss.ipynb
    """
    import contextlib
    import copy
    import io
    import warnings

    @contextlib.contextmanager
    def quiet():     # TRL's and transformers' start-up chatter (W&B mode, progress bars, deprecations)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield

    with quiet():
        require_trl()
        base, tok = load_policy("tiny", device="cpu", dtype="float32")
    batch = make_batch(base, tok, G=4, T=8, temperature=temperature)
    rows = []
    for loss_type in loss_types:
        ours = copy.deepcopy(base)
        with quiet():
            trainer = make_trainer(copy.deepcopy(base), tok, loss_type=loss_type, beta=beta,
                                   epsilon_high=epsilon_high, temperature=temperature, max_completion_length=10)
        loss_trl, _ = trl_loss(trainer, batch)
        loss_ours, _ = our_loss(ours, batch, loss_type=loss_type, beta=beta, epsilon_high=epsilon_high,
                                temperature=temperature, max_completion_length=10)
        loss_trl.backward()
        loss_ours.backward()
        g_trl = dict(trainer.model.named_parameters())
        scale = max(p.grad.abs().max().item() for p in ours.parameters())
        diff = max((p.grad - g_trl[n].grad).abs().max().item() for n, p in ours.named_parameters())
        rows.append({"loss_type": loss_type, "TRL loss": loss_trl.item(), "grpo_lib loss": loss_ours.item(),
                     "|Δ loss|": abs(loss_trl.item() - loss_ours.item()), "max |Δ grad| / max |grad|": diff / scale})
    if show:
        print(f"beta = {beta}, epsilon_high = {epsilon_high}, temperature = {temperature}; TRL {importlib.metadata.version('trl')}")
        print(f"{'loss_type':<9} {'TRL loss':>12} {'grpo_lib loss':>14} {'|Δ loss|':>10} {'max|Δgrad|/max|grad|':>22}")
        for r in rows:
            print(f"{r['loss_type']:<9} {r['TRL loss']:>12.7f} {r['grpo_lib loss']:>14.7f} {r['|Δ loss|']:>10.1e} "
                  f"{r['max |Δ grad| / max |grad|']:>22.1e}")
    return rows
