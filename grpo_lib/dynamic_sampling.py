"""DAPO's dynamic sampling: draw more prompts until the batch holds N groups that teach something.

A group whose G rewards are all equal gets A_i = 0 for every completion: it costs its generations and its
share of the update and moves nothing (only β·KL acts on it). As the policy improves, more groups are all
correct; on hard prompts, more are all wrong; so the batch's useful size shrinks. DAPO (Yu et al. 2025,
section 3.2, the constraint 0 < |{o_i : o_i correct}| < G) over-samples and filters those groups out:

    kept = []; draws = 0
    while len(kept) < N and draws < max_draws:
        draw N prompts, G completions each, score them; kept += the groups whose rewards are not all equal
        draws += 1
    if len(kept) < N: fill the batch with flat groups of the draws, in draw order

`sample_groups(draw, N, max_draws=...)` is that loop; the training loop passes it a `draw(d)` callable that
samples and scores draw d (d = 0: the step's own prompts).

Choices made here (1-6 tested in tests/test_dynamic_sampling.py):
1. A group is informative when its advantages can be non-zero: its G total rewards r_i (the sum of the reward
   functions, what the advantage is computed from) are not all equal (`informative_groups`), the rule that
   TRL's `frac_reward_zero_std` counts and verl's filter_groups applies with metric "seq_reward". With the
   correctness reward alone it is DAPO's 0 < #correct < G. With the format reward too, a group that is all
   wrong but differs in format is kept: it has non-zero advantages (it teaches the format). With GDPO
   (normalize_then_sum) a group is kept when any reward function varies within it.
2. Every draw is a batch of N prompts (N/K per rank), the step's own prompts first (`draw_problems`); an extra
   draw takes its prompts from a second prompt stream and its sampling seed from `draw_seed`, both fixed by
   (step, draw), so a run is reproducible and, with the option off, the step is exactly as before.
3. The cap, dynamic_sampling_max_draws (verl's max_num_gen_batches), counts the draws of a step, the first
   included: at most (max_draws - 1)·N·G extra generations. When it is reached with fewer than N informative
   groups, flat groups of the draws fill the batch, in draw order (verl raises instead): the batch keeps its
   N·G rows, so the loss normalisation is unchanged, and the metrics say how many groups are flat.
4. Under torchrun the ranks stay in lock-step: after each draw every rank adds its missing groups into one
   all-reduce, and all ranks draw again while the sum is > 0 (a rank already full skips the generation but
   joins the all-reduce), so every rank makes the same number of draws-decisions and collectives.
5. Each draw's rewards are computed once (`score_draw`) and passed on to `grpo_lib.rollout.score_rollout`
   (scores=...), so a reward function that is random (a random-reward control) is not re-run: the filter
   and the advantages see the same rewards.
6. The metrics (`METRICS`, summed over the ranks) count draws, all generated completions (kept or not), the
   extra ones beyond the batch's N·G, the informative groups found and the flat groups left in the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from grpo_lib import dist
from grpo_lib.advantages import _all_equal
from grpo_lib.data import prompts_for_step
from grpo_lib.rollout import RewardFunc, Rollout, score_completions

METRICS = {
    "dynamic_sampling/draws": "draws of N prompts made this step, the first included (the same on every rank)",
    "dynamic_sampling/generations": "completions generated this step over all ranks, kept or not (draws·N·G when "
                                    "every rank drew every time)",
    "dynamic_sampling/extra_generations": "completions generated beyond the batch's N·G (over all ranks)",
    "dynamic_sampling/informative_groups": "groups with reward std > 0 found in all draws over all ranks (before "
                                           "the batch took N of them)",
    "dynamic_sampling/flat_groups": "groups with all G rewards equal left in the batch because the cap was reached",
}
"""the metrics of a step with dynamic_sampling=True (choice 6)"""
EXTRA_PROMPT_SEED_OFFSET = 1
"""the extra draws' prompt stream is `prompts_for_step` with seed + this (choice 2)"""
EXTRA_DRAW_SEED_STRIDE = 2 ** 40
"""draw d samples with seed sampling_seed + d · this: far from every (step, rank) seed of the run (choice 2)"""


@dataclass
class Draw:
    """One draw: G completions for each of n prompts, with the gold answers and the rewards.

    Attributes:
        rollout: the sampled completions (B = n·G rows, prompt-major).
        answers: n gold answers.
        rewards: r, (B,) total reward.
        rewards_per_func: name -> (B,) reward of each function.
        scoring_seconds: wall time of the reward functions (summed over the draws of a merged Draw).
    """

    rollout: Rollout
    answers: list[str]
    rewards: Tensor
    rewards_per_func: dict[str, Tensor]
    scoring_seconds: float = 0.0

    @property
    def scores(self) -> tuple[Tensor, dict[str, Tensor]]:
        """(r, per-function rewards), what `score_rollout(scores=...)` takes"""
        return self.rewards, self.rewards_per_func


def score_draw(rollout: Rollout, answers: Sequence[str], reward_funcs: Mapping[str, RewardFunc]) -> Draw:
    """Run the reward functions once on a draw (choice 5).

    Used by: the `draw` callable of `grpo_lib.train` (and the tests)
    """
    t0 = time.perf_counter()
    r, per_func = score_completions(rollout, answers, reward_funcs)
    device = rollout.completion_ids.device
    return Draw(rollout=rollout, answers=list(answers), rewards=r.to(device),
                rewards_per_func={k: v.to(device) for k, v in per_func.items()},
                scoring_seconds=time.perf_counter() - t0)


def _flat(r: Tensor, G: int) -> Tensor:
    """(N,) bool: the G values of each group all equal, the rule by which `grpo_lib.advantages` gives A = 0."""
    return _all_equal(r.reshape(-1, G)).squeeze(1)


def informative_groups(rewards: Tensor, G: int, rewards_per_func: Mapping[str, Tensor] | None = None,
                       aggregation: str = "sum_then_normalize") -> Tensor:
    """(N,) bool: the groups whose advantages can be non-zero (choice 1).

    "sum_then_normalize": the G total rewards are not all equal. "normalize_then_sum" (GDPO): some reward
    function's G values are not all equal (needs rewards_per_func).

    Args:
        rewards: r, (B,) = (N·G,), prompt-major.
        G: group size.
        rewards_per_func: name -> (B,), for GDPO.
        aggregation: the config's multi_objective_aggregation.

    Used by: `sample_groups` (notebooks/07_grpo_after_r1.ipynb shows it on four hand-made groups)
    """
    if rewards.numel() % G:
        raise ValueError(f"{rewards.numel()} rewards do not make whole groups of G = {G}")
    if aggregation == "normalize_then_sum":
        if not rewards_per_func:
            raise ValueError("GDPO (normalize_then_sum) decides per reward function: pass rewards_per_func")
        return ~torch.stack([_flat(v, G) for v in rewards_per_func.values()]).all(dim=0)
    if aggregation != "sum_then_normalize":
        raise ValueError(f"aggregation must be 'sum_then_normalize' or 'normalize_then_sum', got {aggregation!r}")
    return ~_flat(rewards, G)


def draw_problems(problems: Sequence[dict], step: int, draw: int, N: int, seed: int, rank: int, world_size: int,
                  max_draws: int) -> list[dict]:
    """This rank's prompts for draw `draw` of step `step` (choice 2).

    Draw 0 is `prompts_for_step(problems, step, ...)`, the step's prompts without dynamic sampling. Draw d >= 1
    is position step·(max_draws - 1) + d - 1 of a second stream (`prompts_for_step` with seed +
    EXTRA_PROMPT_SEED_OFFSET), so no two (step, draw) pairs share their place in it.

    Used by: grpo_lib.train
    """
    if not 0 <= draw < max_draws:
        raise ValueError(f"draw must be in [0, max_draws = {max_draws}), got {draw}")
    if draw == 0:
        return prompts_for_step(problems, step, N, seed, rank, world_size)
    return prompts_for_step(problems, step * (max_draws - 1) + draw - 1, N, seed + EXTRA_PROMPT_SEED_OFFSET, rank,
                            world_size)


def draw_seed(step_seed: int, draw: int) -> int:
    """The sampling seed of draw `draw`: the step's own seed for draw 0 (choice 2).

    Used by: grpo_lib.train
    """
    return step_seed + draw * EXTRA_DRAW_SEED_STRIDE


def _pad_to(x: Tensor, width: int, value: int, left: bool) -> Tensor:
    extra = width - x.shape[1]
    if extra == 0:
        return x
    pad = x.new_full((x.shape[0], extra), value)
    return torch.cat([pad, x] if left else [x, pad], dim=1)


def select_groups(draws: Sequence[Draw], picks: Sequence[tuple[int, int]]) -> Draw:
    """One Draw made of the groups `picks` = [(draw index, group index), ...], in that order.

    Prompts are left-padded to the widest prompt and completions right-padded to the longest, with mask 0
    (the masks are carried, never recomputed from the ids). The generation time is the sum over all draws,
    kept or not. Picking every group of a single draw in order returns that draw itself.

    Used by: `sample_groups`
    """
    if not picks:
        raise ValueError("picks is empty: a batch needs at least one group")
    G = draws[0].rollout.G
    if len(draws) == 1 and list(picks) == [(0, n) for n in range(draws[0].rollout.N)]:
        return draws[0]
    used = [draws[d] for d in dict.fromkeys(d for d, _ in picks)]
    P = max(d.rollout.prompt_ids.shape[1] for d in used)
    T = max(d.rollout.completion_ids.shape[1] for d in used)
    parts: dict[str, list] = {k: [] for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask",
                                              "texts", "prompts", "answers", "rewards")}
    per_func: dict[str, list[Tensor]] = {k: [] for k in draws[0].rewards_per_func}
    for d, n in picks:
        draw, rows = draws[d], slice(n * G, (n + 1) * G)
        ro = draw.rollout
        fill = ro.pad_token_id if ro.pad_token_id is not None else ro.eos_token_id
        parts["prompt_ids"].append(_pad_to(ro.prompt_ids[rows], P, fill, left=True))
        parts["prompt_mask"].append(_pad_to(ro.prompt_mask[rows], P, 0, left=True))
        parts["completion_ids"].append(_pad_to(ro.completion_ids[rows], T, fill, left=False))
        parts["completion_mask"].append(_pad_to(ro.completion_mask[rows], T, 0, left=False))
        parts["texts"].extend(ro.texts[rows])
        parts["prompts"].append(ro.prompts[n])
        parts["answers"].append(draw.answers[n])
        parts["rewards"].append(draw.rewards[rows])
        for k in per_func:
            per_func[k].append(draw.rewards_per_func[k][rows])
    first = draws[0].rollout
    rollout = Rollout(prompts=parts["prompts"], prompt_ids=torch.cat(parts["prompt_ids"]),
                      prompt_mask=torch.cat(parts["prompt_mask"]), completion_ids=torch.cat(parts["completion_ids"]),
                      completion_mask=torch.cat(parts["completion_mask"]), texts=parts["texts"], G=G,
                      eos_token_id=first.eos_token_id, pad_token_id=first.pad_token_id,
                      generation_seconds=sum(d.rollout.generation_seconds for d in draws))
    return Draw(rollout=rollout, answers=parts["answers"], rewards=torch.cat(parts["rewards"]),
                rewards_per_func={k: torch.cat(v) for k, v in per_func.items()},
                scoring_seconds=sum(d.scoring_seconds for d in draws))


def sample_groups(draw: Callable[[int], Draw], n_groups: int, *, max_draws: int,
                  aggregation: str = "sum_then_normalize", device: str | torch.device = "cpu",
                  ) -> tuple[Draw, dict[str, float]]:
    """Draw until `n_groups` informative groups are found or `max_draws` draws were made (choices 1-4).

    Args:
        draw: draw(d) samples and scores draw d (d = 0, 1, ...) of this rank: a Draw of whole groups
            (`score_draw`); every call must return at least one group.
        n_groups: groups this rank's batch holds (N / K).
        max_draws: draws at most, the first included (>= 1; 1 = no extra draw, the first draw as it is).
        aggregation: multi_objective_aggregation (what "informative" means, choice 1).
        device: where the all-reduce runs (the rank's GPU under nccl).

    Returns:
        the batch (n_groups groups: the informative ones in draw order, then flat ones if the cap was
        reached) and `METRICS` (summed over the ranks). With max_draws = 1 (dynamic sampling off) the batch
        is draw 0 unchanged and the metrics are empty.

    Used by: grpo_lib.train
    """
    if max_draws < 1:
        raise ValueError(f"max_draws must be >= 1, got {max_draws}")
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    draws: list[Draw] = []
    keep: list[tuple[int, int]] = []
    flat: list[tuple[int, int]] = []
    found = 0
    for d in range(max_draws):
        if d == 0 or len(keep) < n_groups:          # a rank already full only joins the all-reduce below
            new = draw(d)
            G = new.rollout.G
            if new.rollout.B == 0 or new.rewards.numel() != new.rollout.B:
                raise ValueError(f"draw {d} returned {new.rewards.numel()} rewards for {new.rollout.B} completions")
            ok = informative_groups(new.rewards, G, new.rewards_per_func, aggregation).tolist()
            found += sum(ok)
            index = len(draws)
            draws.append(new)
            keep.extend((index, n) for n, good in enumerate(ok) if good)
            flat.extend((index, n) for n, good in enumerate(ok) if not good)
            if max_draws == 1:                       # no dynamic sampling: the draw as it is, no metrics
                return new, {}
        missing = torch.tensor([float(max(0, n_groups - len(keep)))], dtype=torch.float64, device=device)
        if dist.all_reduce_sum(missing).item() == 0:
            break
    draws_made = d + 1
    picks = keep[:n_groups]
    picks += flat[:n_groups - len(picks)]
    if len(picks) < n_groups:
        raise ValueError(f"the draws hold {len(keep) + len(flat)} groups, fewer than the batch's {n_groups}: each "
                         f"draw must return {n_groups} prompts' groups")
    batch = select_groups(draws, picks)
    G = batch.rollout.G
    generated = sum(x.rollout.B for x in draws)
    counts = {"dynamic_sampling/generations": generated,
              "dynamic_sampling/extra_generations": generated - n_groups * G,
              "dynamic_sampling/informative_groups": found,
              "dynamic_sampling/flat_groups": len(picks) - min(len(keep), n_groups)}
    metrics = dist.all_reduce_metrics(counts, op="sum", device=device)
    metrics["dynamic_sampling/draws"] = float(draws_made)
    return batch, metrics
