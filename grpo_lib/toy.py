"""The 2+3 world: GRPO on one question, three answers and a three-way categorical policy.

The tutorial's worked example ("What is 2 + 3?"; answers "5", "6", "2 + 3 = 5"; scores 1, 0, 2; group
mean 1; advantages 0, -1, +1; "prefer 3, keep 1, avoid 2, then repeat") made runnable in milliseconds.
The policy π_θ is a softmax over the three answers with one trainable logit per answer, so every line
of the GRPO update can be checked by hand.

Choices made here (each shown in notebooks/01_worked_example_2plus3.ipynb):
1. A completion o_i is one of three fixed answers, so it is a single "token": log-probs have shape
   (G, 1), the mask is all ones and |o_i| = 1. Here N = 1 prompt, so B = G.
2. The reward r_i is a rule (`score_answer`), not a learned reward model: 0 wrong, 1 right,
   2 right with the working shown, the tutorial's scores.
3. The update goes through the course's single implementation: `group_advantages`
   (grpo_lib/advantages.py) and then `grpo_loss` (grpo_lib/loss.py). Nothing here re-implements them.
4. π_old is the policy at the start of each step (its log-probs detached). With μ = 1 (DeepSeekMath's
   setting) the ratio ρ is exactly 1 at the update, so clipping never binds.
5. `grpo_step` uses π_old as π_ref unless `ref_logits` is given; `train_toy` fixes π_ref to the initial
   policy, as the paper's Algorithm 1 does (reference := policy at the start of an iteration).
6. `train_toy` uses plain SGD, so a logit moves by exactly -lr × its gradient and the notebook can
   predict each step by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from grpo_lib.advantages import group_advantages
from grpo_lib.loss import grpo_loss

QUESTION = "What is 2 + 3?"
"""The prompt q of the worked example."""

ANSWERS = ("5", "6", "2 + 3 = 5")
"""The three completions the policy can produce; index k in a sample means ANSWERS[k]."""

WORKED_GROUP = (0, 1, 2)
"""The tutorial's group of G = 3 completions as indices into ANSWERS: "5", "6", "2 + 3 = 5"."""

CORRECT = 5.0
"""The right answer to QUESTION."""

_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")  # ASCII digits only; no nested quantifiers: linear time
_WORKING = re.compile(r"2\s*\+\s*3\s*=")        # "2 + 3 =" with any spacing: the working is shown


def score_answer(answer: str) -> float:
    """Rule-based reward r(q, o) for "What is 2 + 3?": 0 wrong, 1 right, 2 right with the working shown.

    The tutorial's scores: "5" → 1 (correct, but no reasoning), "6" → 0 (wrong),
    "2 + 3 = 5" → 2 (correct, and the reasoning is shown). As a rule:
    1. The final answer is the last number (ASCII digits) in the text. If there is none, or it is not
       5, r = 0.
    2. Otherwise r = 2 if the text also shows the working "2 + 3 =" (any spacing), else r = 1.

    Args:
        answer: a completion o_i as text. Any string gets a score; nothing is raised for odd text.

    Returns:
        r_i as a Python float: 0.0, 1.0 or 2.0.

    Raises:
        TypeError: answer is not a string.

    Taught in: notebooks/01_worked_example_2plus3.ipynb
    """
    if not isinstance(answer, str):
        raise TypeError(f"score_answer expects the answer as a string, got {type(answer).__name__}")
    numbers = _NUMBER.findall(answer)
    if not numbers or float(numbers[-1]) != CORRECT:
        return 0.0
    return 2.0 if _WORKING.search(answer) else 1.0


def _as_indices(o_idx: Any, K: int) -> Tensor:
    """Answer indices as a 1-D long tensor with values in [0, K), or a clear error."""
    o = torch.as_tensor(o_idx)
    if o.is_floating_point() or o.is_complex() or o.dtype == torch.bool:
        raise TypeError(f"answer indices must be integers (indices into ANSWERS), got dtype {o.dtype}")
    o = o.long()
    if o.numel() and (o.min() < 0 or o.max() >= K):
        raise ValueError(f"answer indices must lie in [0, {K}), got {o.tolist()}")
    return o


class ToyPolicy(nn.Module):
    """π_θ(o | q) = softmax(θ)[o]: a categorical policy over the K = 3 answers, one logit per answer.

    Args:
        logits: initial logits θ, shape (K,). None gives zeros: the uniform policy, 1/3 each.
        K: number of answers when `logits` is None (default len(ANSWERS) = 3).

    Taught in: notebooks/01_worked_example_2plus3.ipynb
    """

    def __init__(self, logits: Any = None, K: int = len(ANSWERS)):
        super().__init__()
        theta = torch.zeros(K) if logits is None else torch.as_tensor(logits, dtype=torch.float32).clone()
        if theta.ndim != 1 or theta.numel() < 2:
            raise ValueError(f"logits must have shape (K,) with K >= 2 answers, got shape {tuple(theta.shape)}")
        if not torch.isfinite(theta).all():
            raise ValueError(f"logits must be finite, got {theta.tolist()}")
        self.logits = nn.Parameter(theta)                    # (K,) θ: the only trainable tensor

    @property
    def K(self) -> int:
        """Number of answers the policy chooses among."""
        return self.logits.numel()

    def probs(self) -> Tensor:
        """π_θ(o | q) for every answer, shape (K,); sums to 1. Carries grad."""
        return torch.softmax(self.logits, dim=-1)            # (K,)

    def log_prob(self, o_idx: Any) -> Tensor:
        """log π_θ(o_i | q) for each index in `o_idx`; output has the shape of `o_idx`. Carries grad."""
        o = _as_indices(o_idx, self.K)
        return torch.log_softmax(self.logits, dim=-1)[o]     # same shape as o_idx

    def sample(self, G: int, generator: torch.Generator | None = None) -> Tensor:
        """Sample a group of G answers o_1..o_G ~ π_θ(· | q) with replacement; long tensor (G,)."""
        if not isinstance(G, int) or G < 1:
            raise ValueError(f"G must be a positive int (completions per group), got {G!r}")
        with torch.no_grad():
            return torch.multinomial(self.probs(), G, replacement=True, generator=generator)  # (G,)


@dataclass(frozen=True)
class ToyStep:
    """What one `grpo_step` saw and did (tensors detached).

    Attributes:
        o_idx: the group's answer indices, (G,).
        r: rewards r_i, (G,).
        A: advantages A_i from `group_advantages`, (G,).
        loss: `grpo_loss` value of the last of the μ updates, 0-dim.
        grad: ∂loss/∂θ of the last update, (K,).
        stats: `grpo_loss` stats of the last update (kl, clip_fraction, ratio_mean).
    """

    o_idx: Tensor
    r: Tensor
    A: Tensor
    loss: Tensor
    grad: Tensor
    stats: dict[str, Tensor]


def grpo_step(
    policy: ToyPolicy,
    optimizer: torch.optim.Optimizer,
    sampled_indices: Any,
    *,
    epsilon: float,
    beta: float,
    ref_logits: Any = None,
    mu: int = 1,
) -> ToyStep:
    """One GRPO step on one group: score → A = group_advantages(r) → μ updates of grpo_loss.

    Args:
        policy: the ToyPolicy π_θ being trained.
        optimizer: a torch optimizer over `policy.parameters()`.
        sampled_indices: the group o_1..o_G as indices into ANSWERS, shape (G,), G >= 2.
        epsilon: clip range ε for ρ = π_θ / π_old.
        beta: KL coefficient β toward π_ref.
        ref_logits: logits of π_ref, shape (K,). None uses π_old (the policy at the start of this step),
            so the KL term and its gradient are 0 at the first update.
        mu: μ, policy updates on this group; π_old stays fixed across them.

    Returns:
        A ToyStep with the group's rewards, advantages, and the loss, gradient and stats of the last update.

    Taught in: notebooks/01_worked_example_2plus3.ipynb
    """
    o = _as_indices(sampled_indices, policy.K)                         # (G,)
    if o.ndim != 1 or o.numel() < 2:
        raise ValueError(f"sampled_indices must be a group of shape (G,) with G >= 2, got shape {tuple(o.shape)}")
    if not isinstance(mu, int) or mu < 1:
        raise ValueError(f"mu (updates per sampled group) must be an int >= 1, got {mu!r}")
    if policy.K != len(ANSWERS):
        raise ValueError(f"the 2+3 world has {len(ANSWERS)} answers; the policy has K = {policy.K}")
    G = o.numel()

    r = torch.tensor([score_answer(ANSWERS[k]) for k in o.tolist()]).view(1, G)  # (N=1, G)
    A = group_advantages(r).reshape(G)                                 # (1, G) -> (B,), B = G
    mask = torch.ones(G, 1)                                            # (B, T=1): one "token" per answer
    with torch.no_grad():                                              # π_old and π_ref are constants
        logp_old = policy.log_prob(o)[:, None]                        # (B, 1)
        if ref_logits is None:
            logp_ref = logp_old.clone()                                # (B, 1)
        else:
            ref = torch.as_tensor(ref_logits, dtype=logp_old.dtype)
            if ref.shape != (policy.K,):
                raise ValueError(f"ref_logits must have shape ({policy.K},), got {tuple(ref.shape)}")
            logp_ref = torch.log_softmax(ref, dim=-1)[o][:, None]      # (B, 1)

    for _ in range(mu):
        logp = policy.log_prob(o)[:, None]                             # (B, 1), carries grad
        loss, stats = grpo_loss(logp, logp_old, logp_ref, A, mask, epsilon=epsilon, beta=beta)
        optimizer.zero_grad()
        loss.backward()
        grad = policy.logits.grad.detach().clone()                     # (K,)
        optimizer.step()

    return ToyStep(o_idx=o, r=r.view(G), A=A.detach(), loss=loss.detach(), grad=grad,
                   stats={k: v.detach() for k, v in stats.items()})


GROUP_MODES = ("fixed", "sampled")


def train_toy(
    steps: int = 20,
    G: int = 3,
    lr: float = 1.0,
    seed: int = 0,
    group: str = "fixed",
    *,
    epsilon: float = 0.2,
    beta: float = 0.0,
    mu: int = 1,
) -> dict[str, Any]:
    """Train a uniform ToyPolicy with `grpo_step` and plain SGD; record π_θ after every step.

    Args:
        steps: number of GRPO steps (one group each).
        G: group size. group="fixed" needs G = 3 (the worked example's group).
        lr: SGD learning rate; a logit moves by -lr × ∂loss/∂θ per update.
        seed: seed of the sampling generator (group="sampled"); the initial policy is always uniform.
        group: "fixed" reuses the worked example's group ("5", "6", "2 + 3 = 5") every step, the
            tutorial's "this process is repeated"; "sampled" draws G answers from π_θ each step, as GRPO does.
        epsilon: clip range ε.
        beta: KL coefficient β; π_ref is the initial (uniform) policy.
        mu: updates per group μ.

    Returns:
        history dict:
            "answers": ANSWERS,
            "rewards": each answer's score, (1.0, 0.0, 2.0),
            "probs": π_θ per step, (steps + 1, K), row 0 = before training,
            "logits": θ per step, (steps + 1, K),
            "groups": the answer indices of each step's group, (steps, G),
            "reward_mean": mean reward of each step's group, (steps,),
            "loss", "kl": grpo_loss value and mean KL of each step's last update, (steps,).

    Taught in: notebooks/01_worked_example_2plus3.ipynb
    """
    if group not in GROUP_MODES:
        raise ValueError(f"group must be one of {GROUP_MODES}, got {group!r}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if not isinstance(G, int) or G < 2:
        raise ValueError(f"G must be an int >= 2 (a group needs something to compare with), got {G!r}")
    if group == "fixed" and G != len(WORKED_GROUP):
        raise ValueError(f"group='fixed' reuses the worked example's {len(WORKED_GROUP)} answers, so G must be "
                         f"{len(WORKED_GROUP)}; got G = {G}. Use group='sampled' for other group sizes.")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")

    generator = torch.Generator().manual_seed(seed)
    policy = ToyPolicy()
    ref_logits = policy.logits.detach().clone()                        # (K,) π_ref := initial policy
    optimizer = torch.optim.SGD(policy.parameters(), lr=lr)

    probs, logits = [policy.probs().detach()], [policy.logits.detach().clone()]
    groups, reward_mean, losses, kls = [], [], [], []
    for _ in range(steps):
        o = torch.tensor(WORKED_GROUP) if group == "fixed" else policy.sample(G, generator)  # (G,)
        rec = grpo_step(policy, optimizer, o, epsilon=epsilon, beta=beta, ref_logits=ref_logits, mu=mu)
        probs.append(policy.probs().detach())
        logits.append(policy.logits.detach().clone())
        groups.append(rec.o_idx)
        reward_mean.append(rec.r.mean())
        losses.append(rec.loss)
        kls.append(rec.stats["kl"])

    empty = torch.zeros(0)
    return {
        "answers": ANSWERS,
        "rewards": tuple(score_answer(a) for a in ANSWERS),
        "probs": torch.stack(probs),                                   # (steps + 1, K)
        "logits": torch.stack(logits),                                 # (steps + 1, K)
        "groups": torch.stack(groups) if groups else torch.zeros(0, G, dtype=torch.long),  # (steps, G)
        "reward_mean": torch.stack(reward_mean) if reward_mean else empty,  # (steps,)
        "loss": torch.stack(losses) if losses else empty,              # (steps,)
        "kl": torch.stack(kls) if kls else empty,                      # (steps,)
    }
