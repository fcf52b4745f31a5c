# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Group-relative advantages
#
# > One number per completion carries the whole learning signal of GRPO: how much better it scored than
# > its siblings. This notebook takes that number apart, and shows what it costs not to need a critic.
#
# You will:
# - compute $A_i$ by hand on small groups and on a batch of $N$ prompts, reshaping rewards
#   `(N*G,) -> (N, G) -> (N*G,)` as the training loop does, and match the library's `group_advantages`;
# - see what the sample std, the population std and the `+1e-4` floor change, why a group whose answers
#   all score alike teaches nothing, and how often that happens to a very weak or very strong model;
# - compare `scale="group" | "batch" | "none"` (Dr. GRPO's difficulty bias), count the memory GRPO saves
#   by dropping PPO's value model for Qwen2.5-1.5B, and contrast outcome with process supervision.
#
# **Needs:** notebook 01 (the 2+3 example). **Runs in:** about 20 s on a laptop CPU.

# %%
# %matplotlib inline
import math

import torch

from grpo_lib.course import plots
from grpo_lib.advantages import group_advantages, zero_std_fraction
from grpo_lib.course.exercises.checking import hint
from grpo_lib.course.exercises.ex02 import check_flat_fraction, check_population_settings
from grpo_lib.loss import grpo_loss              # notebook 04 takes it apart; here we only use it
from grpo_lib.course.memory import (count_parameters_from_config, parameter_breakdown,
                                    qwen2_5_1_5b_instruct_config, training_memory_table)
from grpo_lib.course.notebook import check, markdown_table

torch.manual_seed(0)
torch.set_printoptions(precision=4, sci_mode=False)


# %% [markdown]
# ## The one equation
#
# For each prompt $q$ (`q`) GRPO samples a group of $G$ completions (`G`) and scores them with rewards
# $r_1,\dots,r_G$ (`r`, one row of shape `(G,)`; a batch of $N$ prompts is `(N, G)`). The advantage of
# completion $i$ (`A`) is its reward measured against its own group:
#
# $$A_i = \frac{r_i - \operatorname{mean}(r_1,\dots,r_G)}{\operatorname{std}(r_1,\dots,r_G) + 10^{-4}}$$
#
# The std is the *sample* std (divide by $G-1$, `ddof=1`), as in the tutorial and TRL; the $10^{-4}$
# (`std_floor`) keeps $A$ finite. Under outcome supervision every token $t$ of $o_i$ gets the same
# advantage, $\hat A_{i,t} = A_i$. The group mean plays the role of PPO's learned value baseline, which
# is why GRPO needs no critic (section 2.6).

# %% [markdown]
# ## 2.1 The formula on groups you can check in your head
#
# Write it once, for a batch of groups `r` of shape `(N, G)`: one mean and one std per row.

# %%
def advantages_by_hand(r, ddof=1, std_floor=1e-4):       # r: (N, G) -> A: (N, G)
    mean = r.mean(dim=-1, keepdim=True)                  # (N, 1)
    std = r.std(dim=-1, keepdim=True, correction=ddof)   # (N, 1)
    return (r - mean) / (std + std_floor)                # (N, G)


# %% [markdown]
# Four groups: one right answer out of four (reward 1 = right, 0 = wrong), three right out of four, a group
# whose answers all score the same, and notebook 01's 2+3 group ("5" → 1, "6" → 0, "2 + 3 = 5" → 2).

# %%
groups = {
    "1 right of 4": [1.0, 0.0, 0.0, 0.0],
    "3 right of 4": [1.0, 1.0, 1.0, 0.0],
    "all equal": [1.0, 1.0, 1.0, 1.0],
    "2+3 group": [1.0, 0.0, 2.0],
}
rows = []
for name, rewards in groups.items():
    r = torch.tensor([rewards])                          # (N=1, G)
    A = advantages_by_hand(r)                            # (1, G)
    rows.append([name, rewards, r.mean().item(), r.std().item(), [round(a, 4) for a in A[0].tolist()]])
markdown_table(["group", "r", "mean", "sample std", "A"], rows)

# %% [markdown]
# Three things to notice. The advantages of a group always sum to zero: GRPO pushes some completions up
# exactly as much as it pushes the others down. "1 right of 4" and "3 right of 4" are mirror images: the
# *rare* outcome gets the big push (+1.5 for the lone right answer, −1.5 for the lone wrong one; 1.4997 with
# the floor), and the tutorial's 2+3 group gets its $0, -1, +1$ (±0.9999 with the floor). The all-equal
# group gets exactly zero, not a small number (section 2.4). The library's `group_advantages` gives the same
# numbers as this hand-written version; from here on we use the library.
#
# The rarer outcome gets the larger push for every group size. Here is $A$ of a right and of a wrong
# answer for a group of $G = 8$ with $k$ right answers, $k = 0 \dots 8$:

# %%
G = 8
k = torch.arange(G + 1)                                  # (G+1,) number of right answers
r_by_k = (torch.arange(G)[None, :] < k[:, None]).float() # (G+1, G): row k has k right answers first
A_by_k = group_advantages(r_by_k)                        # (G+1, G)
A_right = torch.where(k > 0, A_by_k[:, 0], torch.nan)    # completion 0 is right whenever k >= 1
A_wrong = torch.where(k < G, A_by_k[:, -1], torch.nan)   # the last completion is wrong whenever k < G
print(f"G = 8: the lone right answer gets A = {A_right[1]:.4f}, the lone wrong answer {A_wrong[G - 1]:.4f}")
plots.advantage_by_correct_count(k, A_right, A_wrong, G=G)

# %% [markdown]
# With one right answer out of 8 the mean is $1/8$ and the sample std $\sqrt{7/56}$, so the lone right answer
# gets $(1 - 1/8)/\sqrt{7/56} \approx 2.47$. The two curves are mirror images ($k$ right answers push a right
# answer exactly as hard as $k$ wrong answers push a wrong one), both fall steadily as their outcome becomes
# common, and the groups with $k = 0$ or $k = 8$ get exactly zero.

# %% jupyter={"source_hidden": true}
by_hand = {name: advantages_by_hand(torch.tensor([rewards])) for name, rewards in groups.items()}
check("2.1 · the formula on small groups",
      ("1 right of 4: A = [1.5, −0.5, −0.5, −0.5]",
       torch.allclose(by_hand["1 right of 4"], torch.tensor([[1.5, -0.5, -0.5, -0.5]]), atol=1e-3)),
      ("3 right of 4 is its mirror image: [0.5, 0.5, 0.5, −1.5]",
       torch.allclose(by_hand["3 right of 4"], torch.tensor([[0.5, 0.5, 0.5, -1.5]]), atol=1e-3)),
      ("the 2+3 group gets the tutorial's 0, −1, +1",
       torch.allclose(by_hand["2+3 group"], torch.tensor([[0.0, -1.0, 1.0]]), atol=1e-3)),
      ("the all-equal group gets exactly zero", torch.equal(by_hand["all equal"], torch.zeros(1, 4))),
      ("every group's advantages sum to 0", all(abs(A.sum()) < 1e-5 for A in by_hand.values())),
      ("group_advantages gives the hand-written numbers",
       all(torch.allclose(by_hand[name], group_advantages(torch.tensor([rw]))) for name, rw in groups.items())),
      ("G = 8, one right answer: A = (1 − 1/8)/√(7/56) ≈ 2.47",
       math.isclose(A_right[1].item(), (1 - 1 / 8) / math.sqrt(7 / 56), rel_tol=1e-3)),
      ("k right answers mirror k wrong ones", torch.allclose(A_right[1:], -A_wrong.flip(0)[1:], atol=1e-4)),
      ("both curves fall as their outcome becomes common",
       bool((A_right[1:].diff() < 0).all() and (A_wrong[:-1].diff() < 0).all())),
      ("k = 0 and k = 8 get exactly zero",
       torch.equal(A_by_k[0], torch.zeros(G)) and torch.equal(A_by_k[G], torch.zeros(G))))

# %% [markdown]
# ## 2.2 A batch of prompts: `(N*G,) -> (N, G) -> (N*G,)`
#
# The training loop samples $G$ completions for each of $N$ prompts and keeps them in one flat batch of
# $B = N \cdot G$ rows, prompt by prompt (`repeat_interleave` order). The reward function returns one
# float per row, shape `(B,)`. To normalise inside each group, view the flat rewards as `(N, G)`, one row
# per prompt, and flatten the advantages back so that row $b$ of the batch gets its own $A$.

# %%
N, G = 3, 4
B = N * G
prompt_of = torch.arange(N).repeat_interleave(G)         # (B,): which prompt each completion answers
rewards = torch.tensor([1.0, 0.0, 0.0, 0.0,              # prompt 0: one right of four
                        1.0, 1.0, 1.0, 0.0,              # prompt 1: three right of four
                        2.0, 2.0, 2.0, 2.0])             # prompt 2: all equal; (B,) as the reward fn returns it
r = rewards.view(N, G)                                   # (B,) -> (N, G): one row per prompt
A = group_advantages(r)                                  # (N, G)
A_flat = A.reshape(B)                                    # (N, G) -> (B,): one advantage per completion
prompt_of, A_flat

# %% [markdown]
# The tutorial writes the same thing without the reshape back: it repeats each group's mean and std $G$
# times (`repeat_interleave`) and works on the flat vector. Both give identical numbers:

# %%
mean_rewards = r.mean(dim=1).repeat_interleave(G)        # (B,)  the tutorial's lines
std_rewards = r.std(dim=1).repeat_interleave(G)          # (B,)
A_tutorial = (rewards - mean_rewards) / (std_rewards + 1e-4)
A_tutorial

# %% [markdown]
# The order matters. Viewing the same rewards as `(G, N)` compiles fine but mixes completions of
# different prompts in one "group": prompt 2, whose four answers all scored 2, suddenly gets non-zero
# advantages.

# %%
A_mixed = group_advantages(rewards.view(G, N)).reshape(B)   # wrong: rows of (G, N) are not groups
A_mixed[prompt_of == 2], A_flat[prompt_of == 2]

# %% [markdown]
# Because groups must stay whole, the number of *completions* in a batch has to be a multiple of $G$.
# TRL's error "the global batch size must be divisible by `num_generations`" (trl#2858) counts
# completions, not prompts: 10 completions cannot form groups of 4.

# %%
try:
    group_advantages(torch.arange(10.0).view(-1, 4))
except RuntimeError as err:
    print("RuntimeError:", err)
group_advantages(torch.arange(12.0).view(-1, 4)).shape   # 12 completions = 3 prompts x 4


# %% jupyter={"source_hidden": true}
def fits_in_groups(n_completions, G):
    try:
        torch.arange(float(n_completions)).view(-1, G)
        return True
    except RuntimeError:
        return False

check("2.2 · a batch of prompts",
      ("the shapes: rewards (N, G) = (3, 4), A (3, 4), flattened (B,) = (12,)",
       r.shape == (N, G) and A.shape == (N, G) and A_flat.shape == (B,)),
      ("the tutorial's repeat_interleave lines give the same advantages", torch.allclose(A_flat, A_tutorial, atol=1e-6)),
      ("completion b gets the advantage of its own group prompt_of[b]",
       all(torch.allclose(A_flat[prompt_of == n], group_advantages(rewards[prompt_of == n].view(1, G))[0])
           for n in range(N))),
      ("viewed as (G, N), the all-equal prompt 2 gets pushed around (|A| > 0.5)",
       bool(A_mixed[prompt_of == 2].abs().max() > 0.5)),
      ("viewed as (N, G), prompt 2 gets exactly zero", torch.equal(A_flat[prompt_of == 2], torch.zeros(G))),
      ("10 completions do not fit into groups of 4", not fits_in_groups(10, 4)),
      ("12 completions are 3 groups of 4", group_advantages(torch.arange(12.0).view(-1, 4)).shape == (3, 4)))

# %% [markdown]
# ## 2.3 Sample or population std, and the `1e-4` floor
#
# `torch.std` divides by $G-1$ by default (the sample std, `ddof=1`; the tutorial and TRL); numpy and
# nano-aha-moment divide by $G$ (the population std, `ddof=0`). For one right answer out of four:

# %%
r = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
std_sample = r.std(dim=-1, correction=1)                 # divide by G - 1
std_population = r.std(dim=-1, correction=0)             # divide by G
std_sample, std_population, group_advantages(r, ddof=1), group_advantages(r, ddof=0)

# %% [markdown]
# The lone right answer gets $+1.50$ with the sample std and $+1.73$ with the population std (a hair less
# with the floor). For every
# group of size $G$ the two differ by the same factor $\sqrt{G/(G-1)}$. With $\beta = 0$ and plain SGD that is
# only a rescaled learning rate. With $\beta > 0$ the factor reaches the advantage term of the loss but not the
# KL term, so it also changes how hard the policy is held to $\pi_{ref}$ (exercise 2.2 asks by how much). Adam
# divides every gradient by its own running size: with $\beta = 0$ the choice then changes nothing at all, with
# $\beta > 0$ only the balance between reward and KL. It matters most when you compare numbers across
# codebases, and for small groups:

# %%
rows = []
for G in (2, 3, 4, 8, 16, 64):
    r = torch.zeros(1, G)
    r[0, 0] = 1.0                                        # one right answer out of G
    a_sample = group_advantages(r, ddof=1, std_floor=0.0)[0, 0].item()
    a_pop = group_advantages(r, ddof=0, std_floor=0.0)[0, 0].item()
    rows.append([G, a_sample, a_pop, a_pop / a_sample, math.sqrt(G / (G - 1))])
markdown_table(["G", "A (sample std)", "A (population std)", "ratio", "sqrt(G/(G-1))"], rows)

# %% [markdown]
# Another way to see the two conventions: without the floor, the squares of a group's advantages add up to
# exactly $G - 1$ with the sample std and to $G$ with the population std, whatever the rewards (as long as
# they are not all equal). For a group of six:

# %%
r_six = torch.tensor([[1.0, 0.0, 2.0, 1.0, 0.0, 2.0]])
A_s, A_p = group_advantages(r_six, ddof=1, std_floor=0.0), group_advantages(r_six, ddof=0, std_floor=0.0)
print(f"sum of A^2: sample std {(A_s**2).sum():.4f}, population std {(A_p**2).sum():.4f}")

# %% [markdown]
# **The floor.** Adding $10^{-4}$ to the std turns the 2+3 group's exact $\pm 1$ into $\pm 0.9999$: a
# negligible change while rewards differ by whole points. It earns its place when rewards differ by
# almost nothing. Dividing by the std makes $A$ *scale-free*: a difference of $10^{-16}$ gets the same
# $\pm 1.5$ as the difference between right and wrong. Float rounding makes such differences: add the
# same three rewards in two orders and you get two numbers that are not equal.

# %%
r_23 = torch.tensor([[1.0, 0.0, 2.0]])
r_noise = torch.tensor([[(0.1 + 0.2) + 0.5, 0.1 + (0.2 + 0.5), 0.8, 0.8]], dtype=torch.float64)
r_noise.std().item(), advantages_by_hand(r_noise, std_floor=0.0), advantages_by_hand(r_noise)

# %% [markdown]
# The std of these "equal" rewards is about $6 \times 10^{-17}$: not zero. Without a floor the one reward that
# rounding moved gets $A = -1.73$, a full push, as if it were the one wrong answer of four; with the floor its
# advantage is of order $10^{-12}$, silent.
#
# Without any floor, a group whose rewards are *exactly* equal divides zero by zero. The hand-written
# version returns NaN, and one NaN advantage poisons the whole gradient (NeMo-RL#1518, trl PR #5773). The
# library catches those groups before dividing and returns exact zeros, with or without the floor:

# %%
flat = torch.tensor([[2.0, 2.0, 2.0]])
advantages_by_hand(flat, std_floor=0.0), group_advantages(flat, std_floor=0.0)

# %% jupyter={"source_hidden": true}
check("2.3 · sample or population std, and the floor",
      ("population / sample = √(G/(G−1)) for every G in the table",
       all(math.isclose(ratio, predicted, rel_tol=1e-5) for _, _, _, ratio, predicted in rows)),
      ("Σ A² = G − 1 with the sample std", math.isclose((A_s**2).sum().item(), 6 - 1, rel_tol=1e-5)),
      ("Σ A² = G with the population std", math.isclose((A_p**2).sum().item(), 6, rel_tol=1e-5)),
      ("the floor turns the 2+3 group's ±1 into ±0.9999",
       torch.allclose(group_advantages(r_23), torch.tensor([[0.0, -0.9999, 0.9999]]), atol=1e-4)),
      ("without the floor it is exactly ±1",
       torch.allclose(group_advantages(r_23, std_floor=0.0), torch.tensor([[0.0, -1.0, 1.0]]))),
      ("the \"same\" rewards added in two orders are not equal: 0 < std < 1e-15", 0 < r_noise.std().item() < 1e-15),
      ("without a floor the rounding noise gets a full push (|A| > 1)",
       bool(advantages_by_hand(r_noise, std_floor=0.0).abs().max() > 1.0)),
      ("the floor silences it (|A| < 1e-10)", bool(advantages_by_hand(r_noise).abs().max() < 1e-10)),
      ("exactly equal rewards without a floor: the hand-written version gives NaN",
       bool(torch.isnan(advantages_by_hand(flat, std_floor=0.0)).all())),
      ("exactly equal rewards without a floor: the library gives exact zeros",
       torch.equal(group_advantages(flat, std_floor=0.0), torch.zeros(1, 3))))

# %% [markdown]
# ## 2.4 Groups that teach nothing
#
# If all $G$ completions score the same, every $A_i = 0$, and the policy-gradient term
# $A_i \nabla\log\pi_\theta(o_i)$ vanishes for the whole group. Take a three-answer policy like notebook
# 01's, sample a group, and ask the real loss for its gradient (with $\beta = 0$ and $\mu = 1$, so
# $\pi_\theta = \pi_{\theta_{old}} = \pi_{ref}$):

# %%
theta = torch.tensor([0.5, -0.5, 1.0], requires_grad=True)   # logits of pi_theta over three answers
o = torch.tensor([0, 1, 2, 0])                               # G = 4 sampled answers (indices)

def gradient_of_group(r):                                    # r: (1, G) rewards of the group o
    logp = torch.log_softmax(theta, dim=-1)[o][:, None]      # (G, T=1): one "token" per answer
    A = group_advantages(r).reshape(-1)                      # (G,)
    loss, _ = grpo_loss(logp, logp.detach(), None, A, torch.ones_like(logp), beta=0.0)
    return torch.autograd.grad(loss, theta)[0]               # (3,)

gradient_of_group(torch.tensor([[1.0, 0.0, 2.0, 1.0]])), gradient_of_group(torch.tensor([[2.0, 2.0, 2.0, 2.0]]))

# %% [markdown]
# The mixed group moves every logit; the group that scored 2, 2, 2, 2 gives exactly zero, not a small number,
# and so does one that scored 0, 0, 0, 0. (With $\beta > 0$ and a policy that has drifted from $\pi_{ref}$, the KL
# term still pulls on such a group, as notebook 01 showed; the *reward* says nothing.)
#
# A common puzzle in logs (trl#3857): the batch's reward std is clearly non-zero while every group's std
# is zero. A batch holding one solved question and one hopeless one has exactly that, and learns nothing,
# even with `scale="batch"`, because the mean is still taken per group:

# %%
r_extremes = torch.tensor([[1.0, 1.0, 1.0, 1.0],             # a question the model always gets right
                           [0.0, 0.0, 0.0, 0.0]])            # one it always gets wrong
r_extremes.std().item(), zero_std_fraction(r_extremes), group_advantages(r_extremes, scale="batch")

# %% [markdown]
# The batch std, 0.53, looks healthy, but every group is flat, and the advantages are exactly zero under every
# `scale`.

# %% [markdown]
# **How often does it happen?** Say a completion is right with probability $p$, independently, so the
# number of right answers in a group is $k \sim \operatorname{Binomial}(G, p)$. The group is flat when
# $k = 0$ or $k = G$:
#
# $$P(\text{std} = 0) = (1-p)^G + p^G$$
#
# A very weak model ($p$ near 0) or a very strong one ($p$ near 1) wastes most of its groups. Simulate
# 4,000 groups of 0/1 rewards per $p$ with `torch.bernoulli`, count flat groups with `zero_std_fraction`
# (TRL logs it as `frac_reward_zero_std`), and compare with the formula:

# %%
p_grid = torch.linspace(0, 1, 101)
G_values = (2, 4, 8, 16, 64)
closed_form = {G: (1 - p_grid) ** G + p_grid**G for G in G_values}

gen = torch.Generator().manual_seed(0)
p_sim = torch.tensor([0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98])
simulated = {}
for G in (4, 16):
    fractions = [zero_std_fraction(torch.bernoulli(torch.full((4000, G), p.item()), generator=gen))
                 for p in p_sim]                            # each draw: rewards (N=4000, G) of 0/1
    simulated[G] = (p_sim, torch.tensor(fractions))
gap = max((f - ((1 - p) ** G + p**G)).abs().max().item() for G, (p, f) in simulated.items())
print(f"largest gap between simulation and formula: {gap:.3f}")
print(f"flat groups at p = 0.5, G = 2: {closed_form[2][50]:.3f}; "
      f"at p = 0.05: G = 4 {closed_form[4][5]:.3f}, G = 64 {closed_form[64][5]:.3f}")
plots.zero_std_curves(p_grid, closed_form, simulated=simulated)

# %% [markdown]
# With 4,000 groups per point a simulated share has a standard deviation of at most 0.008, and the dots sit on
# the curves. At $G = 2$ and $p = 0.5$ half of all groups are flat. At $p = 0.05$, 81% of groups of 4 are flat
# but only 4% of groups of 64: a larger group is the first remedy.
#
# Read the curves at the tutorial's setting: Qwen2.5-1.5B-Instruct starts around 20–25% strict accuracy on
# GSM8K, where with $G = 12$ the formula predicts only a few percent of flat groups (the table below). That is a
# prediction with one $p$ for every question; below, on the tiny model, the measured share of flat groups is
# many times the formula's at the mean accuracy, because real questions differ in difficulty. Expect the
# same on Qwen (not measured here): more flat groups than "a few percent". A base model that never produces the
# answer format ($p \approx 0.02$) wastes over three quarters of its groups at $G = 12$ (Unsloth warns of
# "0 reward for the first 100 steps"), and a model that has solved a question stops learning from it. The
# remedies: a larger $G$, easier questions first, a partial-credit reward such as the format reward of
# notebook 03, or DAPO's *dynamic sampling*, which drops flat groups and samples more prompts in their place.

# %%
rows = [[p, *[(1 - p) ** G + p**G for G in (4, 12, 64)]] for p in (0.02, 0.05, 0.25, 0.5, 0.9, 0.98)]
markdown_table(["p (right)", "flat groups, G = 4", "G = 12 (tutorial)", "G = 64 (DeepSeekMath)"], rows,
               floatfmt=".3f")

# %% [markdown]
# **Real questions are not equally hard.** The formula treats every question alike: one $p$ for all. A training
# run says otherwise. The cell below reads the first 10 steps of the healthy run of notebook 05's gallery (the
# tiny preset with $G = 8$, committed in `grpo_lib/assets/gallery/healthy/`) and puts the share of flat groups
# it logged next to what the formula predicts at its batch accuracy.

# %%
from grpo_lib.course.gallery import load_run

healthy = load_run("healthy")
first10, G_run = healthy["metrics"][:10], healthy["summary"]["config"]["G"]
acc_run = sum(m["accuracy"] for m in first10) / len(first10)
flat_logged = sum(m["frac_reward_zero_std"] for m in first10) / len(first10)
flat_formula = acc_run**G_run + (1 - acc_run) ** G_run
print(f"first 10 steps, G = {G_run}: batch accuracy {acc_run:.3f}; flat groups: formula at that accuracy "
      f"{flat_formula:.1%}, logged {flat_logged:.1%} ({flat_logged / flat_formula:.0f}x the formula)")

# %% jupyter={"source_hidden": true}
check("2.4 · the formula against a real run",
      ("the run's groups are of G = 8", G_run == 8),
      ("the run logs over 5x the flat groups the formula predicts at its accuracy", flat_logged > 5 * flat_formula))

# %% [markdown]
# Measure why on the same tiny model, before training: sample 32 completions for each of 32 training questions,
# estimate each question's own accuracy, and cut each question's 32 answers into 4 groups of $G = 8$.

# %%
from math import comb

from grpo_lib.data import build_prompt
from grpo_lib.models import load_tiny_model
from grpo_lib.rewards import correctness_reward
from grpo_lib.rollout import generate_completions
from grpo_lib.tasks import addition_problems
from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()          # no "Loading weights" bar in the output
tiny, tiny_tok = load_tiny_model()
Q, n, G = 32, 32, 8
questions = addition_problems("train", n=Q, seed=0)
rollout = generate_completions(tiny, tiny_tok, [build_prompt(tiny_tok, q["question"]) for q in questions], n,
                               max_new_tokens=40, temperature=1.0, seed=0)
golds = [q["answer"] for q in questions for _ in range(n)]
right = torch.tensor(correctness_reward(None, [[{"content": t}] for t in rollout.texts], golds)).gt(0).float().view(Q, n)
k = right.sum(-1).long()                                                  # (Q,) right answers per question
p_q, p_mean = right.mean(-1), right.mean().item()                          # each question's accuracy, and the mean
measured = zero_std_fraction(right.view(Q * n // G, G))                   # flat groups of 8, as training sees them
at_mean = p_mean**G + (1 - p_mean) ** G                                   # the formula with one p for all
per_question = sum((comb(int(x), G) + comb(n - int(x), G)) / comb(n, G) for x in k) / Q   # the formula per question
print(f"mean accuracy {p_mean:.3f}; flat groups of {G}: measured {measured:.1%}, "
      f"formula at the mean {at_mean:.1%}, formula per question {per_question:.1%}")
plots.accuracy_spread(p_q, p_mean)

# %% [markdown]
# The questions range from almost never right to almost always right, and each extreme question is flat most
# of the time. Averaging $p^G + (1-p)^G$ over the questions matches the measurement; evaluating it at the mean
# accuracy misses it by an order of magnitude. The reason is convexity: $p \mapsto p^G + (1-p)^G$ curves
# upward, so the average over unequal questions lies above its value at the average question (Jensen's
# inequality). (Per question, $\binom{k}{G}/\binom{n}{G}$ is the unbiased estimate of $p^G$ from $k$ right
# answers out of $n$; plugging in $\hat p^G$ would overstate it.) The practical reading: expect many more flat
# groups than the formula says, and filter or resample them (DAPO's dynamic sampling) rather than raise $G$
# blindly. Exercise 2.1 asks for the general formula.

# %% jupyter={"source_hidden": true}
check("2.4 · groups that teach nothing",
      ("a mixed group gets a gradient (Σ|∇| > 0.1)",
       bool(gradient_of_group(torch.tensor([[1.0, 0.0, 2.0, 1.0]])).abs().sum() > 0.1)),
      ("an all-2 group gets exactly zero gradient",
       torch.equal(gradient_of_group(torch.tensor([[2.0, 2.0, 2.0, 2.0]])), torch.zeros(3))),
      ("an all-0 group gets exactly zero gradient too",
       torch.equal(gradient_of_group(torch.tensor([[0.0, 0.0, 0.0, 0.0]])), torch.zeros(3))),
      ("solved + hopeless: the batch std looks healthy (> 0.5)", r_extremes.std().item() > 0.5),
      ("solved + hopeless: every group is flat", zero_std_fraction(r_extremes) == 1.0),
      ("solved + hopeless: A is exactly zero for scale = group, batch and none",
       all(torch.equal(group_advantages(r_extremes, scale=s), torch.zeros(2, 4)) for s in ("group", "batch", "none"))),
      ("4,000 simulated groups match (1 − p)^G + p^G within 0.035, G = 4 and 16",
       all(torch.allclose(f, (1 - p) ** G + p**G, atol=0.035) for G, (p, f) in simulated.items())),
      ("G = 2, p = 0.5: half the groups are flat", math.isclose(closed_form[2][50].item(), 0.5, abs_tol=1e-6)),
      ("p = 0.05: over 80% flat at G = 4, under 4% at G = 64",
       closed_form[4][5].item() > 0.8 and closed_form[64][5].item() < 0.04),
      ("G = 12: over 3/4 flat at p = 0.02, under 5% at p = 0.25", rows[0][2] > 0.75 and rows[2][2] < 0.05),
      ("the questions' accuracies spread widely (some below 0.2, some above 0.8)",
       bool(p_q.min() < 0.2 and p_q.max() > 0.8)),
      ("measured flat groups are over 5 times the formula at the mean accuracy", measured > 5 * at_mean),
      ("the formula averaged per question is within 0.08 of the measurement", abs(per_question - measured) < 0.08),
      ("Jensen: the per-question average is above the value at the mean", per_question > at_mean))

# %% [markdown]
# ## 2.5 `scale="group" | "batch" | "none"`: who gets the largest push?
#
# The three options differ only in what divides the centred rewards $r_i - \operatorname{mean}_{group}(r)$:
#
# | `scale` | divide by | used by |
# | --- | --- | --- |
# | `"group"` | the group's own std | the paper, the tutorial, TRL's default |
# | `"batch"` | one std over all $N \cdot G$ rewards | TRL `scale_rewards="batch"` |
# | `"none"` | nothing | Dr. GRPO (Liu et al. 2025), nanochat |
#
# Take a batch of four questions with $G = 8$: a hard one (1 right), a 50/50 one (4 right), an easy one
# (7 right) and a solved one (8 right).

# %%
G = 8
k_right = torch.tensor([1, 4, 7, 8])                          # hard, 50/50, easy, solved
r = (torch.arange(G)[None, :] < k_right[:, None]).float()     # (N=4, G): the first k answers are right
A = {scale: group_advantages(r, scale=scale) for scale in ("group", "batch", "none")}
rows = []
for n, k in enumerate(k_right.tolist()):                      # first column right, last wrong (if any)
    cells = [[A[s][n, 0].item() if k > 0 else "—", A[s][n, -1].item() if k < G else "—"] for s in A]
    rows.append([f"{k}/{G} right"] + [c for pair in cells for c in pair])
markdown_table(["question", "group: right", "group: wrong", "batch: right", "batch: wrong",
                "none: right", "none: wrong"], rows, floatfmt=".3f")

# %% [markdown]
# The lone right answer of the hard question gets 2.474 with the group std and $1 - 1/8 = 0.875$ with no
# scaling; the solved question gets exactly nothing, whatever the scale; and `"batch"` is `"none"` divided by
# one number for the whole batch (the std of all 32 rewards plus the floor).
#
# Per completion, the rare outcome gets the largest push under every scale. The difference is in how
# much each *question* pushes in total. Measure a question's push by the size of its advantage vector,
# $\lVert A \rVert_2 = \sqrt{\sum_i A_i^2}$ (the gradient is a sum of $A_i \nabla\log\pi_\theta(o_i)$).
# Dividing by the group std makes that size $\sqrt{G-1}$ for *every* question whose answers differ, so a
# question the policy gets right 15 times out of 16 pushes as hard as a 50/50 one. Without the division it
# grows with $k(G-k)$: the questions the policy is most unsure about push most. Dr. GRPO calls the
# first behaviour a **difficulty bias**: dividing by a small std up-weights the nearly solved and the
# nearly hopeless questions. Below, one question for each $k = 0 \dots 16$ in one batch, each curve
# divided by its value at the 50/50 question:

# %%
G = 16
k = torch.arange(G + 1)
r = (torch.arange(G)[None, :] < k[:, None]).float()           # (N=17, G): question n has n right answers
push = {s: group_advantages(r, scale=s).norm(dim=-1) for s in ("group", "batch", "none")}   # (N,) each
relative = {s: w / w[G // 2] for s, w in push.items()}        # 1.0 at the 50/50 question
print(f"‖A‖ with the group std: {push['group'][1]:.3f} at k = 1, {push['group'][G // 2]:.3f} at k = 8 "
      f"(√15 = {math.sqrt(15):.3f}); with no scaling: {push['none'][1]:.3f} and {push['none'][G // 2]:.3f}")
print(f"k = 1 relative to the 50/50 question: {relative['group'][1]:.2f} with the group std, "
      f"{relative['none'][1]:.2f} with no scaling ({relative['group'][1] / relative['none'][1]:.2f}x)")
plots.question_weights(k, relative, G=G, ymax=1.5)

# %% [markdown]
# With the group std every mixed question pushes with $\sqrt{15} \approx 3.87$ (a hair less with the floor);
# without it the push is $\sqrt{k(G-k)/G}$, and the nearly hopeless question ($k = 1$) weighs 2.1 times more,
# relative to the 50/50 one, under the group std than without. `"batch"` divides every question by the same
# number, so its curve is `"none"`'s. Flat questions ($k = 0$ or $16$) push with nothing under all three.
#
# Which is better is an empirical question. Dr. GRPO drops the std (together with the length normalisation
# of notebook 04) and reports similar accuracy with better token efficiency; the paper and TRL's default keep
# it, which makes $A$ independent of the reward's units (section 2.3). That is why TRL exposes it as
# `scale_rewards` and `group_advantages` as `scale`. Notebook 04 shows the second bias Dr. GRPO names, the
# length bias of $1/|o_i|$, which lives in the loss, not in the advantages.

# %% jupyter={"source_hidden": true}
r_four = (torch.arange(8)[None, :] < k_right[:, None]).float()    # the batch of four questions above, (4, 8)
mixed = (k > 0) & (k < G)
check("2.5 · scale = group, batch or none",
      ("hard question, lone right answer: A = 2.474 with the group std (the table's value, as the prose says)",
       f"{A['group'][0, 0].item():.3f}" == "2.474"),
      ("hard question, lone right answer: A = 1 − 1/8 = 0.875 with no scaling",
       math.isclose(A["none"][0, 0].item(), 0.875, rel_tol=1e-6)),
      ("the solved question gets exactly zero under every scale", all(torch.equal(A[s][3], torch.zeros(8)) for s in A)),
      ("\"batch\" is \"none\" divided by one std for the whole batch",
       torch.allclose(A["batch"], A["none"] / (r_four.std() + 1e-4))),
      ("group std: every mixed question pushes with ‖A‖ = √(G−1)",
       torch.allclose(push["group"][mixed], torch.full((G - 1,), math.sqrt(G - 1)), rtol=1e-3)),
      ("no scaling: ‖A‖ = √(k(G−k)/G)", torch.allclose(push["none"], torch.sqrt(k * (G - k) / G))),
      ("\"batch\" has \"none\"'s shape", torch.allclose(relative["batch"], relative["none"], atol=1e-5)),
      ("k = 1 weighs over 2x more (relative) under the group std than under none",
       bool(relative["group"][1] / relative["none"][1] > 2)),
      ("flat questions push with nothing", push["group"][0] == 0 and push["group"][G] == 0))

# %% [markdown]
# ## 2.6 Why GRPO needs no critic: the memory it saves
#
# PPO estimates each token's advantage with a learned value model $V_\psi$ (a critic), usually as large as
# the policy and trained alongside it. GRPO replaces $V_\psi$ by the group mean. What does that save for
# the tutorial's model? Build Qwen2.5-1.5B-Instruct's configuration from its published values (no
# download), instantiate the model on PyTorch's `meta` device (shapes only, no memory), and count:

# %%
cfg = qwen2_5_1_5b_instruct_config()
psi = count_parameters_from_config(cfg)                       # Ψ, the policy's parameter count
(cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.num_attention_heads,
 cfg.num_key_value_heads, cfg.vocab_size, cfg.tie_word_embeddings), psi, parameter_breakdown(cfg)

# %% [markdown]
# Check the count against a closed form of the Qwen2 architecture written from the same config fields: a
# tied embedding $V \cdot d$; per layer, query/key/value projections with biases (grouped-query attention:
# 2 key/value heads of 128 dimensions), an output projection, a three-matrix MLP and two RMSNorms; and a
# final norm.

# %%
d, L, V, d_ff = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, cfg.intermediate_size
kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)          # 2 heads x 128 = 256
per_layer = (d * d + d) + 2 * (d * kv + kv) + d * d + 3 * d * d_ff + 2 * d
closed_form_count = V * d + L * per_layer + d
print(f"closed form {closed_form_count:,}; meta-device count {psi:,}")
print(f"{psi / 1e9:.2f}B parameters, {(psi - V * d) / 1e9:.2f}B without the embedding")

# %% [markdown]
# The two counts agree to the parameter, and rounded they are the model card's "1.54B, 1.31B non-embedding".

# %% [markdown]
# Training memory for the model states, with bf16 weights and AdamW in mixed precision (the ZeRO paper's
# accounting): per trained parameter 2 bytes of weights, 2 of gradients, 4 + 4 for AdamW's two moments and
# 4 for an fp32 master copy of the weights, 16 bytes in all; the frozen reference policy $\pi_{ref}$ only
# needs its 2-byte weights. (The tutorial runs torch's AdamW straight on bf16 weights, with no master copy
# and bf16 moments: `master_weights=False` gives that, 8 bytes per parameter.) GRPO first:

# %%
grpo = training_memory_table(cfg, dtype_bytes=2)
grpo

# %% [markdown]
# PPO adds the critic: the same backbone with a one-number head instead of the LM head, trained like the
# policy, so 16 more bytes per parameter. (For the tutorial's 1.5B model the tied LM head costs nothing
# extra, so the critic has only 1,536 more parameters than the policy: the scalar head.)

# %%
ppo = training_memory_table(cfg, dtype_bytes=2, with_value_model=True)
ppo

# %%
psi_value = count_parameters_from_config(cfg, head="value")           # backbone + Linear(d, 1)
print(f"critic: {psi_value:,} parameters ({psi_value - psi:,} more than the policy); "
      f"PPO needs {ppo.total_gib / grpo.total_gib:.2f}x GRPO's memory")

# %% [markdown]
# DeepSeekMath itself scored its samples with a *learned* reward model. Within an iteration of its
# Algorithm 1 that model is frozen while the policy trains (weights only in memory); between iterations it
# is trained further on the policy's new samples, with 10% replay of old data (notebook 03). PPO-RLHF needs
# one too. With rule-based rewards (this course, DeepSeek-R1) it disappears as well. The four setups side
# by side, against the 80 GB of one A100/H100 (74.5 GiB):

# %%
setups = {
    "GRPO, rule rewards\n(this course)": training_memory_table(cfg),
    "GRPO + learned RM\n(DeepSeekMath)": training_memory_table(cfg, with_reward_model=True),
    "PPO, rule rewards": training_memory_table(cfg, with_value_model=True),
    "PPO + learned RM\n(RLHF)": training_memory_table(cfg, with_reward_model=True, with_value_model=True),
}
stacks = {label: {m: t.gib_of(m) for m in ("policy", "reference", "reward", "value")}
          for label, t in setups.items()}
totals = [t.total_gib for t in setups.values()]
print("GiB:", ", ".join(f"{label.splitlines()[0]} {gib:.1f}" for label, gib in zip(setups, totals)))
plots.memory_stacks(stacks, capacity_gib=80e9 / 2**30, capacity_label="one 80 GB GPU", ymax=90)

# %% [markdown]
# Every extra model costs memory, in its own way. A frozen reward model costs its 2-byte weights only; the
# critic is trained, so 16 bytes per parameter; and a reward model costs the same beside PPO as beside GRPO.
# This course's setup needs about 26 GiB, PPO with a learned reward model over 50.
#
# These are only the model *states*. Activations and the $B \times T \times V$ logits come on top and
# dominate at long completions (notebook 04 computes the logits; notebook 06 plans a multi-GPU run). What
# GRPO spends instead of memory is sampling: $G$ completions per prompt instead of one.

# %% jupyter={"source_hidden": true}
check("2.6 · the memory GRPO saves",
      ("the meta-device count equals the closed form: 1,543,714,304", psi == closed_form_count == 1_543_714_304),
      ("the model card's numbers: 1.54B, 1.31B without the embedding",
       round(psi / 1e9, 2) == 1.54 and round((psi - V * d) / 1e9, 2) == 1.31),
      ("the critic is the backbone plus Linear(d, 1)", psi_value == psi + d),
      ("policy: 16 bytes per parameter; reference: 2",
       grpo.bytes_of("policy") == 16 * psi and grpo.bytes_of("reference") == 2 * psi),
      ("PPO adds the critic and nothing else", ppo.total_bytes - grpo.total_bytes == 16 * psi_value),
      ("PPO needs between 1.8x and 1.9x GRPO's memory", 1.8 < ppo.total_gib / grpo.total_gib < 1.9),
      ("every extra model costs memory", totals == sorted(totals)),
      ("a frozen reward model: weights only", math.isclose(totals[1] - totals[0], 2 * psi_value / 2**30)),
      ("the critic: trained, 16 bytes each", math.isclose(totals[2] - totals[0], 16 * psi_value / 2**30)),
      ("the reward model costs the same beside PPO", math.isclose(totals[3] - totals[2], totals[1] - totals[0])),
      ("this course: 25-27 GiB; PPO + learned RM: over 50", 25 < totals[0] < 27 and totals[3] > 50))

# %% [markdown]
# ## 2.7 Outcome vs process supervision
#
# Everything above is **outcome supervision**: one reward per completion, and every token of $o_i$ gets
# the same $\hat A_{i,t} = A_i$. DeepSeekMath also tried **process supervision**: a process reward model
# scores each reasoning *step*. If completion $i$ has steps ending at tokens
# $\text{index}(1) < \dots < \text{index}(K_i)$ with step rewards $r_i^{\text{index}(j)}$, the rewards of all
# steps of all completions in the group, $\mathbf R$, are normalised together, and each token gets the
# sum of the normalised rewards of the steps that end at or after it:
#
# $$\tilde r_i^{\text{index}(j)} = \frac{r_i^{\text{index}(j)} - \operatorname{mean}(\mathbf R)}{\operatorname{std}(\mathbf R)},
# \qquad \hat A_{i,t} = \sum_{\text{index}(j) \ge t} \tilde r_i^{\text{index}(j)}$$
#
# A worked example on GSM8K's first test question (16 eggs, 3 eaten, 4 baked, the rest sold at \$2: the
# answer is 18). Three completions of three steps each, and a hypothetical step scorer that gives 1 to a
# correct step and 0 to a wrong one:
#
# | | step 1 | step 2 | step 3 | outcome |
# | --- | --- | --- | --- | --- |
# | $o_1$ | 16 − 3 − 4 = 9 ✓ | 9 × 2 = 18 ✓ | answer 18 ✓ | right |
# | $o_2$ | 16 − 3 − 4 = 9 ✓ | 9 × 3 = 27 ✗ | answer 27 ✗ | wrong |
# | $o_3$ | 16 − 3 = 13 ✗ | 13 × 2 = 26 ✗ | answer 26 ✗ | wrong |

# %%
step_rewards = [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]   # per completion, per step
step_lengths = [[6, 5, 3], [6, 5, 3], [4, 6, 3]]                     # tokens in each step
T = max(sum(lengths) for lengths in step_lengths)

def process_advantages(step_rewards, step_lengths, T, std_floor=1e-4):   # -> A (G, T), mask (G, T)
    R = torch.tensor([x for rs in step_rewards for x in rs])           # every step of every completion
    A, mask = torch.zeros(len(step_rewards), T), torch.zeros(len(step_rewards), T)
    for i, (rs, lengths) in enumerate(zip(step_rewards, step_lengths)):
        ends = torch.tensor(lengths).cumsum(0) - 1                     # index(j): last token of step j
        r_tilde = (torch.tensor(rs) - R.mean()) / (R.std() + std_floor)
        for t in range(int(ends[-1]) + 1):
            A[i, t] = r_tilde[ends >= t].sum()                         # steps ending at or after t
        mask[i, : int(ends[-1]) + 1] = 1
    return A, mask

A_process, mask = process_advantages(step_rewards, step_lengths, T)
outcome_r = torch.tensor([[1.0, 0.0, 0.0]])                            # right, wrong, wrong
A_outcome = group_advantages(outcome_r).reshape(-1, 1) * mask          # (G, T): the same A_i on every token
step_ends = [(torch.tensor(lengths).cumsum(0) - 1).tolist() for lengths in step_lengths]
plots.token_advantage_maps(A_outcome, A_process, mask, step_ends=step_ends, vmax=3.5)

# %%
print("first token of each completion:  process", [round(a, 3) for a in A_process[:, 0].tolist()],
      "  outcome", [round(a, 3) for a in A_outcome[:, 0].tolist()])
print(f"o2: first token {A_process[1, 0]:.3f}, first token of its wrong step 2 {A_process[1, 6]:.3f}")

# %% [markdown]
# Under outcome supervision every real token of a completion carries the same value, so $o_2$ and $o_3$ are
# equally wrong, token for token. Process supervision separates them. A token's advantage is the sum of the
# normalised rewards of the steps still ahead of it: $o_1$'s first token carries all three of its steps, the
# last step's tokens of $o_2$ only that step's. So $o_2$'s correct first step is blamed far less than $o_3$'s
# wrong one, and the tokens from $o_2$'s slip onward take most of the blame. DeepSeekMath found GRPO with
# process supervision ahead of outcome supervision in its comparison, at the price of a step-level reward
# model. This course, like DeepSeek-R1 and the tutorial, uses outcome rewards computed by rules (notebook 03).

# %% jupyter={"source_hidden": true}
R = torch.tensor(step_rewards).reshape(-1)
r_tilde = (R - R.mean()) / (R.std() + 1e-4)                            # normalised step rewards, (9,)
check("2.7 · outcome vs process supervision",
      ("o1's first token carries the sum of its 3 normalised step rewards",
       math.isclose(A_process[0, 0].item(), r_tilde[0:3].sum().item(), rel_tol=1e-5)),
      ("o2's last step's tokens carry only that step's",
       math.isclose(A_process[1, 13].item(), r_tilde[5].item(), rel_tol=1e-5)),
      ("process: o2's correct start beats o3's wrong one", bool(A_process[1, 0] > A_process[2, 0])),
      ("outcome: o2 and o3 are the same, token for token", torch.equal(A_outcome[1, :13], A_outcome[2, :13])),
      ("o2's slip takes more blame than its correct start", bool(A_process[1, 6] < A_process[1, 0])),
      ("outcome: one value on every real token of a completion",
       all(torch.unique(A_outcome[i][mask[i] > 0]).numel() == 1 for i in range(3))))


# %% [markdown]
# ## Summary
#
# GRPO's advantage is a reward standardised inside its group: flat rewards `(N*G,)` are viewed as `(N, G)`,
# centred and divided by each row's sample std plus `1e-4`, and flattened back. Each group's advantages sum
# to zero, the rare outcome gets the largest push, and a group whose answers all score alike gives exactly
# zero gradient, which happens to most groups when $p^G + (1-p)^G$ is large, i.e. for a model that is
# almost always wrong or almost always right. Dividing by the group std (rather than a batch std or
# nothing) gives every informative question the same total push, Dr. GRPO's difficulty bias. And the group
# baseline is what lets GRPO drop PPO's critic: for Qwen2.5-1.5B that is 16 bytes × 1.54B parameters,
# about 23 GiB of model states.
#
# ## What this notebook added to grpo_lib
#
# - `grpo_lib.course.memory.qwen2_5_1_5b_instruct_config`: Qwen2.5-1.5B-Instruct's published configuration,
#   built locally (2.6).
# - `grpo_lib.course.memory.count_parameters_from_config`, `parameter_breakdown`: exact counts from a config via
#   the meta device, for the policy (`head="lm"`) or a critic / reward model (`head="value"`) (2.6).
# - `grpo_lib.course.memory.training_memory_table`: weights, gradients, AdamW state, fp32 master weights, the
#   reference, and optionally PPO's value model or a learned reward model; tested in `tests/test_course_memory.py`.
# - `grpo_lib.course.plots.advantage_by_correct_count`, `zero_std_curves`, `question_weights`, `memory_stacks`,
#   `token_advantage_maps`: this notebook's figures, tested in `tests/test_course_plots.py`.
# - `grpo_lib.course.exercises.ex02.check_flat_fraction`, `check_population_settings`: the exercise checkers
#   below, tested in `tests/test_course_exercises_hints.py`.
# - `grpo_lib.course.plots.accuracy_spread`: the per-question accuracies of 2.4.
#
# `group_advantages` and `zero_std_fraction` come from notebook 01's foundation and are used, not changed.
#
# ## Exercises
#
# **2.1 · Flat groups when questions differ (fill in).** Section 2.4's formula assumes one accuracy $p$ for
# every question and two reward values. Write `my_flat_fraction(probs, G)`: `probs` has one row per question,
# its probability of each possible reward value (K columns, e.g. 0, 0.8 and 2.8 with the format reward of
# notebook 03); return the expected share of flat groups of size `G` over the questions. Stuck? `hint("2.1")`.

# %% tags=["solution"]
def my_flat_fraction(probs, G):     # probs: (Q, K), rows sum to 1; G: int -> float
    ### BEGIN SOLUTION
    return float((probs ** G).sum(dim=-1).mean())   # per question: all G on one value; then average the questions
    ### END SOLUTION

check_flat_fraction(my_flat_fraction);


# %% [markdown]
# **2.2 · Same run, other std (fill in).** A paper trains with the *population* std, learning rate `lr` and KL
# coefficient `beta`, plain SGD, groups of `G`. Your code divides by the *sample* std. Write
# `my_population_settings(lr, beta, G)` returning the `(lr_new, beta_new)` for your code that reproduce the
# paper's run step for step; the checker runs both on a small policy and compares. Then say what would change
# with Adam. Stuck? `hint("2.2")`.

# %% tags=["solution"]
def my_population_settings(lr, beta, G):   # floats, int -> (lr_new, beta_new)
    ### BEGIN SOLUTION
    c = math.sqrt(G / (G - 1))              # population-std advantages are c times the sample-std ones
    return c * lr, beta / c                 # scale the advantage term up, and keep the KL term where it was
    ### END SOLUTION

check_population_settings(my_population_settings);

# %% [markdown]
# **2.3 · When does dividing by the std cost nothing?** Section 2.5 showed that with $G = 16$ the group std
# makes a nearly hopeless question push as hard as a 50/50 one (the difficulty bias). With a right/wrong reward,
# for which group sizes $G$ is `scale="group"` exactly `scale="none"` times one constant, for every mixed group?
# Predict first (how many different groups with $k$ right answers are there at $G = 2$, $3$, $4$?), then check
# with `group_advantages` and the ratio of $\lVert A \rVert$ under the two scales. What does that say about
# comparing the two scales in a run with small groups?
#
# **2.4 · Predict, then run.** Before running `training_memory_table(cfg, dtype_bytes=4)` and
# `training_memory_table(cfg, master_weights=False)`, predict both totals in GiB from the bytes per
# parameter. Which of the two does the tutorial's notebook actually use?
#
# **2.5 · Process supervision by hand.** In 2.7, give $o_3$'s first step a reward of 1 as well (as if the
# step scorer missed the mistake). Which tokens change sign, and why does one wrong step reward change the
# advantages of *other* completions too?

# %% [markdown]
# ## Quiz: check yourself
#
# Choose an answer to each question *before* you open it. Every answer is a number this notebook printed.

# %%
from grpo_lib.course.quiz import Question, quiz

A_lone = group_advantages((torch.arange(8) < 1).float()[None])[0, 0].item()    # 1 right of 8, group std
quiz("Quiz · notebook 02",
     Question("One accuracy p = 0.05 for every question: what share of groups is flat at G = 4, and at G = 64?",
              (f"{closed_form[4][5]:.2f} and {closed_form[64][5]:.2f}", "0.05 and 0.05", "0.00 and 0.00"), 0,
              "P(flat) = p^G + (1 − p)^G: a larger group is the first remedy (2.4).",
              bool(closed_form[4][5] > 0.8 and closed_form[64][5] < 0.05)),
     Question("On the tiny model the measured share of flat groups of 8 is many times the formula at the mean "
              "accuracy. Why?",
              ("the sampler repeats itself", "questions differ in difficulty, and p^G + (1 − p)^G is convex",
               "G is too small for the formula"), 1,
              f"Measured {measured:.1%}, {at_mean:.1%} at the mean accuracy, {per_question:.1%} averaged per "
              f"question (Jensen's inequality, 2.4).",
              bool(measured > 5 * at_mean and abs(per_question - measured) < 0.08)),
     Question("The hard question: 1 right answer of 8. What advantage does it get with the group std?",
              (f"{A_lone:.3f}", "0.875", "1.000"), 0,
              f"(1 − 1/8) divided by the group's sample std gives {A_lone:.3f}; with no scaling it is 0.875 (2.5).",
              A_lone > 2.4),
     Question("Which `scale` makes a nearly hopeless question push as hard as a 50/50 one (the difficulty bias)?",
              ("\"group\"", "\"batch\"", "\"none\""), 0,
              "Dividing by each group's own std makes ‖A‖ = √(G−1) for every mixed question (2.5).",
              bool(relative["group"][1] / relative["none"][1] > 2)),
     Question("Beside the policy, what does GRPO's group mean save compared with PPO's critic?",
              ("nothing: the critic is small", "a second trained model as large as the policy, with its gradients "
               "and AdamW moments", "only the reward model"), 1,
              "The critic is trained, so it costs what the policy costs in model states (2.6).", True))

# %% [markdown]
# ## Next
#
# [03_reward_design.ipynb](03_reward_design.ipynb): where the rewards $r_i$ come from: the answer format,
# correctness and format rewards on GSM8K, reward hacking, and why the tutorial's 23% → 90% is mostly format.
