"""Group-relative advantages: the "G" in GRPO (Shao et al. 2024, DeepSeekMath, section 4.1.2).

GRPO drops PPO's value network. For each prompt q it samples a group of G completions, scores them, and
uses the group itself as the baseline: a completion is good if it scored above its siblings.

    A_i = (r_i - mean(r_1..r_G)) / (std(r_1..r_G) + std_floor)

Every token of completion o_i gets the same A_i (outcome supervision).

Choices made here (1-5 shown in notebooks/01_worked_example_2plus3.ipynb or notebooks/02_advantages.ipynb; 6-6 tested
in tests/test_advantages.py and tests/test_golden_trl_post_r1.py):
1. The std is the sample std (ddof=1, Bessel-corrected), as in the tutorial and TRL (`torch.std`'s
   default). ddof=0 gives the population std (nano-aha-moment). For the 2+3 example r = [1, 0, 2] the
   sample std is exactly 1, so A = [0, -1, 1]; the population std gives A = [0, -1.22, 1.22].
2. std_floor = 1e-4 is added to the std (TRL's constant), so A stays finite when the std is tiny.
3. A group whose rewards are all equal gets A = 0 exactly (never NaN, never 1e-4-sized noise from
   float rounding of the mean): it carries no learning signal, and `zero_std_fraction` counts such groups
   (TRL logs it as `frac_reward_zero_std`).
4. scale="batch" divides by the std of the whole batch instead of each group's (TRL's
   scale_rewards="batch"; under torchrun the std of all ranks' rewards, `batch_std`); scale="none" only centres (Dr. GRPO, Liu et al. 2025; nanochat), which
   removes the "difficulty bias" of dividing by a small group std.
5. G < 2 is refused: with one completion per prompt there is nothing to compare with, and the sample
   std is undefined.
6. GDPO (`gdpo_advantages`, TRL's multi_objective_aggregation="normalize_then_sum"): each reward
   function is normalised within its group, (r_k - mean_k) / (std_k + 1e-4), the results are summed
   with the weights, and the sum is normalised again over the whole batch, (s - mean(s)) / (std(s) +
   1e-4), as TRL 1.16 does (so `scale` does not apply; the config refuses a scale_rewards other than
   "group" with it). Summing first and then normalising maps different reward combinations with the same
   total to the same advantage; normalising each first keeps them apart. A function flat in a group gives
   exactly 0 there (choice 3), and a group flat in every function gets A = 0 exactly; TRL gives both
   rounding noise times 1e4.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor

from grpo_lib import dist

SCALES = ("group", "batch", "none")
MULTI_OBJECTIVE_AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")
"""TRL's multi_objective_aggregation values: sum the reward functions, then normalise (GRPO), or GDPO"""


def _as_rewards(rewards: Any) -> Tensor:
    """Convert rewards (tensor, numpy array or nested list) to a floating (N, G) tensor, or raise."""
    r = rewards if isinstance(rewards, Tensor) else torch.as_tensor(rewards)
    if r.is_complex():
        raise ValueError(f"rewards must be real numbers, got a complex tensor ({r.dtype}); a reward is one "
                         "real score per completion")
    if not torch.is_floating_point(r):
        r = r.to(torch.get_default_dtype())
    if r.ndim != 2:
        hint = " Reshape the flat rewards to (N, G), e.g. r.view(-1, G)." if r.ndim == 1 else ""
        raise ValueError(
            f"rewards must have shape (N, G): N prompts, G completions each; got shape {tuple(r.shape)}.{hint}"
        )
    N, G = r.shape
    if G < 2:
        raise ValueError(
            f"group size G must be >= 2, got rewards of shape {tuple(r.shape)}: with one completion per "
            "prompt there is nothing to compare it with, so a group-relative advantage is undefined."
        )
    if N == 0:
        raise ValueError("rewards is empty: shape (0, G) holds no prompts.")
    if not torch.isfinite(r).all():
        raise ValueError("rewards contain NaN or inf; every completion needs a finite reward.")
    return r


def _all_equal(r: Tensor) -> Tensor:
    """(N, G) -> (N, 1) bool: True for a group whose rewards are all identical (std exactly 0)."""
    return (r.amax(dim=-1, keepdim=True) == r.amin(dim=-1, keepdim=True))  # (N, 1)


def group_advantages(rewards: Any, scale: str = "group", std_floor: float = 1e-4, ddof: int = 1) -> Tensor:
    """Group-relative advantage A_i = (r_i - mean_group(r)) / (std(r) + std_floor), per row.

    Args:
        rewards: r, shape (N, G): N prompts, G completions each (TRL: `num_generations`). A torch tensor,
            numpy array or nested list. A flat (B,) vector is refused: reshape it with `r.view(-1, G)`.
        scale: which std divides the centred rewards.
            "group": the group's own std (paper, tutorial, TRL default).
            "batch": the std of all N*G rewards together (TRL scale_rewards="batch").
            "none":  no division, A_i = r_i - mean_group(r) (Dr. GRPO, nanochat).
        std_floor: added to the std so A stays finite when the std is tiny (TRL: 1e-4).
        ddof: 1 = sample std (TRL, tutorial), 0 = population std (nano-aha-moment). For G = 4 and
            r = [1, 0, 0, 0] this is the difference between A_1 = 1.50 and A_1 = 1.73.

    Returns:
        A, shape (N, G), floating, on the device of `rewards`. A row whose rewards are all equal gives
        exactly zeros. Each row sums to 0 (up to float rounding).

    Raises:
        ValueError: rewards not 2-D, G < 2, non-finite or complex rewards, unknown scale, bad ddof or
            std_floor. Finite rewards so large that the std overflows (float64 near 1e300) still give
            the right A: the formula is then evaluated in units of max|r|.

    Taught in: notebooks/01_worked_example_2plus3.ipynb, notebooks/02_advantages.ipynb
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if isinstance(std_floor, bool) or not isinstance(std_floor, numbers.Real) or not math.isfinite(std_floor) \
            or std_floor < 0:
        raise ValueError(f"std_floor must be a finite number >= 0, got {std_floor!r} (NaN would make every A NaN, "
                         "inf every A 0)")
    r = _as_rewards(rewards)                                        # (N, G)
    G = r.shape[1]
    if not (0 <= ddof < G):
        raise ValueError(f"ddof must satisfy 0 <= ddof < G = {G} (1 = sample std, 0 = population std), got {ddof}")

    flat = _all_equal(r)                                            # (N, 1) groups with std exactly 0
    unit = r.abs().amax()                                           # () max|r|
    if unit.item() <= math.sqrt(torch.finfo(r.dtype).max / r.numel()):
        A = _centred_scaled(r, scale, std_floor, ddof, unit=None)   # (N, G) the usual case
    else:
        # rewards so large (float64 near 1e300) that the sum of squares in the std would overflow (the std
        # becomes inf and every A 0): the same formula in units of max|r|. A does not depend on the unit,
        # except through std_floor, which is rescaled with the rewards.
        A = _centred_scaled(r / unit, scale, (std_floor / unit).item(), ddof, unit=unit)
    # A flat group teaches nothing: force exact zeros (no rounding noise from the mean, no 0/0 when
    # std_floor = 0).
    return torch.where(flat, torch.zeros_like(A), A)                # (N, G)


def _centred_scaled(r: Tensor, scale: str, std_floor: float, ddof: int, unit: Tensor | None) -> Tensor:
    """(r - mean_group) / (std + std_floor) for `scale`; `unit` only says r was divided by it ("none" undoes it)."""
    A = r - r.mean(dim=-1, keepdim=True)                            # (N, G)
    if scale == "group":
        A = A / (r.std(dim=-1, keepdim=True, correction=ddof) + std_floor)   # (N, G) / (N, 1)
    elif scale == "batch":
        A = A / (r.std(correction=ddof) + std_floor)                # one std for all N*G rewards
    elif unit is not None:
        A = A * unit                                                # "none": back to reward units (may be inf)
    return A


def zero_std_fraction(rewards: Any) -> float:
    """Fraction of groups whose rewards are all equal (std = 0), so their advantages are all 0.

    These groups teach nothing: every completion got the same score. TRL logs this as
    `frac_reward_zero_std`; when it approaches 1 the task is too easy or too hard for the policy.

    Args:
        rewards: r, shape (N, G) (tensor, numpy array or nested list).

    Returns:
        A Python float in [0, 1].

    Taught in: notebooks/02_advantages.ipynb
    """
    r = _as_rewards(rewards)                                        # (N, G)
    return _all_equal(r).float().mean().item()


def batch_std(r: Tensor) -> float:
    """Sample std (ddof = 1) of the rewards of all ranks together: one all-reduce of (count, Σr, Σr²) in float64.

    Under torchrun each rank holds B/K rewards; this is the std `scale="batch"` divides by, so that the
    advantages do not depend on how the batch is split over the ranks. In one process it is the std of `r`.

    Used by: `compute_advantages` (scale="batch" under torchrun)
    """
    stats = torch.stack([r.new_tensor(float(r.numel())), r.sum(), (r * r).sum()]).double()
    n, s, ss = dist.all_reduce_sum(stats).tolist()
    return math.sqrt(max(ss - s * s / n, 0.0) / max(n - 1, 1))


def compute_advantages(r: Tensor, G: int, scale: str = "group", std_floor: float = 1e-4) -> Tensor:
    """A_i = (r_i - mean_group(r)) / (std + std_floor), flattened back to one value per completion.

    Args:
        r: rewards, (B,) in prompt-major order, B = N·G.
        G: group size.
        scale: "group" (paper), "batch" or "none"; see `group_advantages`. Under torchrun, "batch" uses
            the std of the rewards of *all* ranks (`batch_std`), so the result does not depend on how
            the batch is split.

    Returns:
        A, (B,).

    Used by: `grpo_lib.rollout.score_rollout`
    """
    if r.ndim != 1 or r.shape[0] % G:
        raise ValueError(f"r must be (B,) with B a multiple of G = {G}, got shape {tuple(r.shape)}")
    N = r.shape[0] // G
    r_NG = r.view(N, G)                                                        # (B,) -> (N, G)
    if scale == "batch" and dist.get_world_size() > 1:
        A = group_advantages(r_NG, scale="none", std_floor=std_floor)          # (N, G) centred, flat groups 0
        A = A / (batch_std(r) + std_floor)                                     # (N, G)
    else:
        A = group_advantages(r_NG, scale=scale, std_floor=std_floor)           # (N, G)
    return A.reshape(-1)                                                       # (N, G) -> (B,)


def gdpo_advantages(rewards_per_func: Any, weights: Any = None, std_floor: float = 1e-4) -> Tensor:
    """GDPO: normalise each reward function within its group, sum with the weights, normalise over the batch.

        ŕ_k = (r_k - mean_group(r_k)) / (std_group(r_k) + std_floor)     for each reward function k
        s = Σ_k w_k ŕ_k,    A = (s - mean_batch(s)) / (std_batch(s) + std_floor)

    Under torchrun the batch mean and std are those of all ranks' s (`batch_std`), as TRL normalises the
    gathered rewards.

    Args:
        rewards_per_func: r_k, (K, N, G): K reward functions, N prompts, G completions each (or a list of K
            (N, G) arrays).
        weights: w_k, K numbers; None gives 1 each (TRL's reward_weights).
        std_floor: added to each std (TRL: 1e-4).

    Returns:
        A, (N, G); a group flat in every function gets exactly 0.

    Used by: `grpo_lib.rollout.score_rollout` (multi_objective_aggregation="normalize_then_sum");
    notebooks/07_grpo_after_r1.ipynb compares it with the summed reward
    """
    per = [_as_rewards(r) for r in (rewards_per_func if not isinstance(rewards_per_func, Tensor)
                                    or rewards_per_func.ndim != 3 else rewards_per_func.unbind(0))]
    if not per or len({tuple(r.shape) for r in per}) != 1:
        raise ValueError("rewards_per_func must hold K >= 1 reward arrays of the same shape (N, G), got shapes "
                         f"{[tuple(r.shape) for r in per]}")
    w = torch.ones(len(per)) if weights is None else torch.as_tensor(weights, dtype=per[0].dtype).flatten()
    if w.numel() != len(per) or not torch.isfinite(w).all():
        raise ValueError(f"weights must be {len(per)} finite numbers (one per reward function), got {weights!r}")
    s = sum(float(w_k) * group_advantages(r, scale="group", std_floor=std_floor) for w_k, r in zip(w, per))  # (N, G)
    flat = torch.stack([_all_equal(r) for r in per]).all(dim=0)     # (N, 1) flat in every function
    stats = torch.stack([s.new_tensor(float(s.numel())), s.sum()]).double()
    n, total = dist.all_reduce_sum(stats).tolist()
    std = batch_std(s.reshape(-1)) if dist.get_world_size() > 1 else s.std().item()
    A = (s - total / n) / (std + std_floor)                         # (N, G)
    return torch.where(flat, torch.zeros_like(A), A)
