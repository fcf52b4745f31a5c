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
from grpo_lib.course.exercises.ex02 import check_centered_advantages, check_zero_std_probability
from grpo_lib.loss import grpo_loss              # notebook 04 takes it apart; here we only use it
from grpo_lib.course.memory import (count_parameters_from_config, parameter_breakdown,
                                    qwen2_5_1_5b_instruct_config, training_memory_table)
from grpo_lib.course.notebook import markdown_table

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

# %%
A_one_right = advantages_by_hand(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
A_three_right = advantages_by_hand(torch.tensor([[1.0, 1.0, 1.0, 0.0]]))
assert torch.allclose(A_one_right, torch.tensor([[1.5, -0.5, -0.5, -0.5]]), atol=1e-3)
assert torch.allclose(A_three_right, torch.tensor([[0.5, 0.5, 0.5, -1.5]]), atol=1e-3)   # the mirror image
assert torch.allclose(advantages_by_hand(torch.tensor([[1.0, 0.0, 2.0]])), torch.tensor([[0.0, -1.0, 1.0]]),
                      atol=1e-3)                         # the tutorial's 0, -1, +1
assert torch.equal(advantages_by_hand(torch.tensor([[1.0, 1.0, 1.0, 1.0]])), torch.zeros(1, 4))
for rewards in groups.values():
    r = torch.tensor([rewards])
    assert abs(advantages_by_hand(r).sum()) < 1e-5       # every group's advantages sum to 0
    assert torch.allclose(advantages_by_hand(r), group_advantages(r))   # from here on we use the library

# %% [markdown]
# Three things to notice. The advantages of a group always sum to zero: GRPO pushes some completions up
# exactly as much as it pushes the others down. "1 right of 4" and "3 right of 4" are mirror images: the
# *rare* outcome gets the big push (+1.5 for the lone right answer, −1.5 for the lone wrong one; 1.4997 with
# the floor). And the
# all-equal group gets nothing at all (section 2.4).
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
plots.advantage_by_correct_count(k, A_right, A_wrong, G=G)

# %%
assert math.isclose(A_right[1].item(), (1 - 1 / 8) / math.sqrt(7 / 56), rel_tol=1e-3)   # 2.47
assert torch.allclose(A_right[1:], -A_wrong.flip(0)[1:], atol=1e-4)    # k right mirrors k wrong
assert (A_right[1:].diff() < 0).all() and (A_wrong[:-1].diff() < 0).all()
assert torch.equal(A_by_k[0], torch.zeros(G)) and torch.equal(A_by_k[G], torch.zeros(G))

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
assert r.shape == (N, G) and A.shape == (N, G) and A_flat.shape == (B,)
mean_rewards = r.mean(dim=1).repeat_interleave(G)        # (B,)  the tutorial's lines
std_rewards = r.std(dim=1).repeat_interleave(G)          # (B,)
A_tutorial = (rewards - mean_rewards) / (std_rewards + 1e-4)
assert torch.allclose(A_flat, A_tutorial, atol=1e-6)
for n in range(N):                                       # completion b belongs to group prompt_of[b]
    assert torch.allclose(A_flat[prompt_of == n], group_advantages(rewards[prompt_of == n].view(1, G))[0])

# %% [markdown]
# The order matters. Viewing the same rewards as `(G, N)` compiles fine but mixes completions of
# different prompts in one "group": prompt 2, whose four answers all scored 2, suddenly gets non-zero
# advantages.

# %%
A_mixed = group_advantages(rewards.view(G, N)).reshape(B)   # wrong: rows of (G, N) are not groups
A_mixed[prompt_of == 2], A_flat[prompt_of == 2]

# %%
assert A_mixed[prompt_of == 2].abs().max() > 0.5         # prompt 2 gets pushed around for nothing
assert torch.equal(A_flat[prompt_of == 2], torch.zeros(G))

# %% [markdown]
# Because groups must stay whole, the number of *completions* in a batch has to be a multiple of $G$.
# TRL's error "the global batch size must be divisible by `num_generations`" (trl#2858) counts
# completions, not prompts: 10 completions cannot form groups of 4.

# %%
try:
    group_advantages(torch.arange(10.0).view(-1, 4))
except RuntimeError as err:
    print("RuntimeError:", err)

# %%
try:
    torch.arange(10.0).view(-1, 4)
    raise AssertionError("10 completions should not fit into groups of 4")
except RuntimeError:
    pass
assert group_advantages(torch.arange(12.0).view(-1, 4)).shape == (3, 4)   # 12 = 3 prompts x 4

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
# group of size $G$ the two differ by the same factor $\sqrt{G/(G-1)}$, so on a fixed $G$ the choice only
# rescales the learning rate; it matters when you compare numbers across codebases, and most for small
# groups:

# %%
rows = []
for G in (2, 3, 4, 8, 16, 64):
    r = torch.zeros(1, G)
    r[0, 0] = 1.0                                        # one right answer out of G
    a_sample = group_advantages(r, ddof=1, std_floor=0.0)[0, 0].item()
    a_pop = group_advantages(r, ddof=0, std_floor=0.0)[0, 0].item()
    rows.append([G, a_sample, a_pop, a_pop / a_sample, math.sqrt(G / (G - 1))])
markdown_table(["G", "A (sample std)", "A (population std)", "ratio", "sqrt(G/(G-1))"], rows)

# %%
for G, a_sample, a_pop, ratio, predicted in rows:
    assert math.isclose(ratio, predicted, rel_tol=1e-5)
r = torch.tensor([[1.0, 0.0, 2.0, 1.0, 0.0, 2.0]])
A_s, A_p = group_advantages(r, ddof=1, std_floor=0.0), group_advantages(r, ddof=0, std_floor=0.0)
assert math.isclose((A_s**2).sum().item(), 6 - 1, rel_tol=1e-5)   # sum of A^2 is G - 1 with the sample std
assert math.isclose((A_p**2).sum().item(), 6, rel_tol=1e-5)       # and G with the population std

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

# %%
assert torch.allclose(group_advantages(r_23), torch.tensor([[0.0, -0.9999, 0.9999]]), atol=1e-4)
assert torch.allclose(group_advantages(r_23, std_floor=0.0), torch.tensor([[0.0, -1.0, 1.0]]))
assert 0 < r_noise.std().item() < 1e-15                      # the "same" rewards are not equal
assert advantages_by_hand(r_noise, std_floor=0.0).abs().max() > 1.0   # a full push from rounding noise
assert advantages_by_hand(r_noise).abs().max() < 1e-10       # the floor silences it

# %% [markdown]
# Without any floor, a group whose rewards are *exactly* equal divides zero by zero. The hand-written
# version returns NaN, and one NaN advantage poisons the whole gradient (NeMo-RL#1518, trl PR #5773). The
# library catches those groups before dividing and returns exact zeros, with or without the floor:

# %%
flat = torch.tensor([[2.0, 2.0, 2.0]])
advantages_by_hand(flat, std_floor=0.0), group_advantages(flat, std_floor=0.0)

# %%
assert torch.isnan(advantages_by_hand(flat, std_floor=0.0)).all()
assert torch.equal(group_advantages(flat, std_floor=0.0), torch.zeros(1, 3))

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

# %%
assert gradient_of_group(torch.tensor([[1.0, 0.0, 2.0, 1.0]])).abs().sum() > 0.1
assert torch.equal(gradient_of_group(torch.tensor([[2.0, 2.0, 2.0, 2.0]])), torch.zeros(3))   # exactly 0
assert torch.equal(gradient_of_group(torch.tensor([[0.0, 0.0, 0.0, 0.0]])), torch.zeros(3))

# %% [markdown]
# (With $\beta > 0$ and a policy that has drifted from $\pi_{ref}$, the KL term still pulls on such a group,
# as notebook 01 showed; the *reward* says nothing.)
#
# A common puzzle in logs (trl#3857): the batch's reward std is clearly non-zero while every group's std
# is zero. A batch holding one solved question and one hopeless one has exactly that, and learns nothing,
# even with `scale="batch"`, because the mean is still taken per group:

# %%
r = torch.tensor([[1.0, 1.0, 1.0, 1.0],                      # a question the model always gets right
                  [0.0, 0.0, 0.0, 0.0]])                     # one it always gets wrong
r.std().item(), zero_std_fraction(r), group_advantages(r, scale="batch")

# %%
assert r.std().item() > 0.5                                  # the batch std looks healthy ...
assert zero_std_fraction(r) == 1.0                           # ... but every group is flat
for scale in ("group", "batch", "none"):
    assert torch.equal(group_advantages(r, scale=scale), torch.zeros(2, 4))

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
plots.zero_std_curves(p_grid, closed_form, simulated=simulated)

# %%
for G, (p, measured) in simulated.items():
    assert torch.allclose(measured, (1 - p) ** G + p**G, atol=0.035), G   # 4,000 groups: sd <= 0.008
assert math.isclose(closed_form[2][50].item(), 0.5, abs_tol=1e-6)            # G = 2, p = 0.5: half the groups are flat
assert closed_form[4][5].item() > 0.8 and closed_form[64][5].item() < 0.04   # p = 0.05: G = 4 vs G = 64

# %% [markdown]
# Read the curves at the tutorial's setting: Qwen2.5-1.5B-Instruct starts around 20–25% strict accuracy on
# GSM8K, where with $G = 12$ only a few percent of groups are flat. A base model that never produces the
# answer format ($p \approx 0.02$) wastes over three quarters of its groups at $G = 12$ (Unsloth warns of
# "0 reward for the first 100 steps"), and a model that has solved a question stops learning from it. The
# remedies: a larger $G$, easier questions first, a partial-credit reward such as the format reward of
# notebook 03, or DAPO's *dynamic sampling*, which drops flat groups and samples more prompts in their place.

# %%
rows = [[p, *[(1 - p) ** G + p**G for G in (4, 12, 64)]] for p in (0.02, 0.05, 0.25, 0.5, 0.9, 0.98)]
markdown_table(["p (right)", "flat groups, G = 4", "G = 12 (tutorial)", "G = 64 (DeepSeekMath)"], rows,
               floatfmt=".3f")

# %%
assert rows[0][2] > 0.75 and rows[2][2] < 0.05      # p = 0.02 vs p = 0.25 at the tutorial's G = 12

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

# %%
assert math.isclose(A["group"][0, 0].item(), 2.4749, rel_tol=1e-3)   # lone right answer, hard question
assert math.isclose(A["none"][0, 0].item(), 0.875, rel_tol=1e-6)     # 1 - 1/8
for s in A:
    assert torch.equal(A[s][3], torch.zeros(G))                      # solved: nothing, whatever the scale
# "batch" is "none" divided by one number for the whole batch
assert torch.allclose(A["batch"], A["none"] / (r.std() + 1e-4))

# %% [markdown]
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
plots.question_weights(k, relative, G=G, ymax=1.5)

# %%
mixed = (k > 0) & (k < G)
assert torch.allclose(push["group"][mixed], torch.full((G - 1,), math.sqrt(G - 1)), rtol=1e-3)   # flat
assert torch.allclose(push["none"], torch.sqrt(k * (G - k) / G))          # grows with k (G - k)
assert torch.allclose(relative["batch"], relative["none"], atol=1e-5)     # one std for all: same shape
assert relative["group"][1] / relative["none"][1] > 2                     # k = 1: 2.1x the weight of "none"
assert push["group"][0] == 0 and push["group"][G] == 0

# %% [markdown]
# Which is better is an empirical question. Dr. GRPO drops the std (together with the length normalisation
# of notebook 04) and reports similar accuracy with better token efficiency; the paper and TRL's default keep
# it, which makes $A$ independent of the reward's units (section 2.3). That is why TRL exposes it as
# `scale_rewards` and `group_advantages` as `scale`. Notebook 04 shows the second bias Dr. GRPO names, the
# length bias of $1/|o_i|$, which lives in the loss, not in the advantages.

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
assert psi == V * d + L * per_layer + d                                # 1,543,714,304
assert round(psi / 1e9, 2) == 1.54 and round((psi - V * d) / 1e9, 2) == 1.31   # the model card's numbers

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
psi_value = count_parameters_from_config(cfg, head="value")
assert psi_value == psi + d                                            # backbone + Linear(d, 1)
assert grpo.bytes_of("policy") == 16 * psi and grpo.bytes_of("reference") == 2 * psi
assert ppo.total_bytes - grpo.total_bytes == 16 * psi_value            # the critic, and nothing else
assert 1.8 < ppo.total_gib / grpo.total_gib < 1.9                      # PPO needs ~1.9x GRPO's memory

# %% [markdown]
# DeepSeekMath itself scored its samples with a *learned* reward model, which is frozen during RL (weights
# only); PPO-RLHF needs one too. With rule-based rewards (this course, DeepSeek-R1) it disappears as well.
# The four setups side by side, against the 80 GB of one A100/H100 (74.5 GiB):

# %%
setups = {
    "GRPO, rule rewards\n(this course)": training_memory_table(cfg),
    "GRPO + learned RM\n(DeepSeekMath)": training_memory_table(cfg, with_reward_model=True),
    "PPO + learned RM\n(RLHF)": training_memory_table(cfg, with_reward_model=True, with_value_model=True),
}
stacks = {label: {m: t.gib_of(m) for m in ("policy", "reference", "reward", "value")}
          for label, t in setups.items()}
plots.memory_stacks(stacks, capacity_gib=80e9 / 2**30, capacity_label="one 80 GB GPU", ymax=90)

# %%
totals = [t.total_gib for t in setups.values()]
assert totals == sorted(totals)                                        # every extra model costs memory
assert math.isclose(totals[1] - totals[0], 2 * psi_value / 2**30)      # a frozen RM: weights only
assert 25 < totals[0] < 27 and totals[2] > 50

# %% [markdown]
# These are only the model *states*. Activations and the $B \times T \times V$ logits come on top and
# dominate at long completions (notebook 04 computes the logits; notebook 05 plans a multi-GPU run). What
# GRPO spends instead of memory is sampling: $G$ completions per prompt instead of one.

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
R = torch.tensor(step_rewards).reshape(-1)
r_tilde = (R - R.mean()) / (R.std() + 1e-4)                            # normalised step rewards, (9,)
assert math.isclose(A_process[0, 0].item(), r_tilde[0:3].sum().item(), rel_tol=1e-5)   # all 3 steps ahead
assert math.isclose(A_process[1, 13].item(), r_tilde[5].item(), rel_tol=1e-5)          # only its last step
assert A_process[1, 0] > A_process[2, 0]              # o2's correct start beats o3's wrong one ...
assert torch.equal(A_outcome[1, :13], A_outcome[2, :13])   # ... which outcome supervision cannot tell apart
assert A_process[1, 6] < A_process[1, 0]              # the slip in o2's step 2 takes the most blame
for i in range(3):                                    # outcome: one value on every real token
    assert torch.unique(A_outcome[i][mask[i] > 0]).numel() == 1


# %% [markdown]
# Under outcome supervision $o_2$ and $o_3$ are equally wrong, token for token. Process supervision
# separates them: $o_2$'s correct first step is blamed far less than $o_3$'s wrong one, and the tokens
# from $o_2$'s slip onward take most of the blame. DeepSeekMath found GRPO with process supervision ahead
# of outcome supervision in its comparison, at the price of a step-level reward model. This course, like
# DeepSeek-R1 and the tutorial, uses outcome rewards computed by rules (notebook 03).

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
# - `grpo_lib.course.exercises.ex02.check_centered_advantages`, `check_zero_std_probability`: the exercise checkers
#   below, tested in `tests/test_course_exercises_ex02.py`.
#
# `group_advantages` and `zero_std_fraction` come from notebook 01's foundation and are used, not changed.
#
# ## Exercises
#
# **2.1 · Advantages without the std (fill in).** Dr. GRPO drops the division by the std. Implement
# $A_i = r_i - \operatorname{mean}(r)$ for a batch of groups `r` of shape `(N, G)`. When you are done,
# compare with `group_advantages(r, scale="none")`.

# %% tags=["solution"]
def my_centered_advantages(r):      # r: (N, G) -> (N, G)
    ### BEGIN SOLUTION
    return r - r.mean(dim=-1, keepdim=True)      # (N, G) - (N, 1): one mean per group
    ### END SOLUTION

check_centered_advantages(my_centered_advantages);


# %% [markdown]
# **2.2 · How many groups are wasted? (fill in).** Write the probability that a group of $G$ independent
# right/wrong answers, each right with probability $p$, has std 0. Then use it: which $G$ does a model
# with $p = 0.05$ need so that fewer than 10% of its groups are flat?

# %% tags=["solution"]
def my_zero_std_probability(p, G):  # p: float in [0, 1], G: int -> float
    ### BEGIN SOLUTION
    return p**G + (1 - p) ** G      # all right, or all wrong
    ### END SOLUTION

check_zero_std_probability(my_zero_std_probability);

# %% [markdown]
# **2.3 · Two completions per prompt.** Set $G = 2$. What values can $A$ take with the sample std, and
# with the population std? Why does that make a question the model gets right half the time
# indistinguishable from one it gets right 99% of the time, in a single group?
#
# **2.4 · Predict, then run.** Before running `training_memory_table(cfg, dtype_bytes=4)` and
# `training_memory_table(cfg, master_weights=False)`, predict both totals in GiB from the bytes per
# parameter. Which of the two does the tutorial's notebook actually use?
#
# **2.5 · Process supervision by hand.** In 2.7, give $o_3$'s first step a reward of 1 as well (as if the
# step scorer missed the mistake). Which tokens change sign, and why does one wrong step reward change the
# advantages of *other* completions too?
#
# ## Next
#
# [03_reward_design.ipynb](03_reward_design.ipynb): where the rewards $r_i$ come from: the answer format,
# correctness and format rewards on GSM8K, reward hacking, and why the tutorial's 23% → 90% is mostly format.
