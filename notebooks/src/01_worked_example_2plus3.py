# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · A worked example: GRPO on "What is 2 + 3?"
#
# > One question, three answers, one group: every number in GRPO's update computed by hand, then by
# > the library, then by autograd.
#
# You will:
# - derive the policy gradient on a three-answer policy: the objective $J = \mathbb{E}[r]$, its exact gradient,
#   the REINFORCE estimate from samples, why a baseline (the group mean) cuts its variance without a critic,
#   and why reusing samples brings in the ratio $\pi_\theta/\pi_{old}$ and its clip;
# - score a group of three answers and turn the scores into group-relative advantages $A = [0, -1, +1]$,
#   and see why the *sample* standard deviation makes them come out exactly so;
# - train a three-answer policy with the GRPO update (`group_advantages` + `grpo_loss` + autograd) and
#   watch "prefer 3, keep 1, avoid 2" happen, step after step;
# - check two facts that puzzle many first GRPO runs: a group whose answers all score the same gives
#   exactly zero gradient, and the loss is 0 at the start of every step while its gradient is not.
#
# **Needs:** nothing; this is the first notebook (`pip install -e ".[dev]"` from the README).
#
# **Runs in:** ~20 s on a laptop CPU.
#
# The example is the worked example of the tutorial this course grew from ("一个例子理解GRPO",
# *understanding GRPO through one example*); the method is GRPO from Shao et al. (2024),
# *DeepSeekMath*, arXiv 2402.03300.

# %%
# %matplotlib inline
import math

import torch

import grpo_lib
from grpo_lib.advantages import group_advantages
from grpo_lib.course.exercises.checking import hint
from grpo_lib.course.exercises.ex01 import check_loo_advantages
from grpo_lib.loss import grpo_loss              # notebook 04 takes it apart; here we only use it
from grpo_lib.course.notebook import check, markdown_table, show_source
from grpo_lib.course.plots import toy_probabilities, toy_training_panels
from grpo_lib.toy import ANSWERS, QUESTION, ToyPolicy, grpo_step, score_answer, train_toy

torch.manual_seed(0)
torch.set_printoptions(precision=4, sci_mode=False)

# %% [markdown]
# ## The one equation
#
# For one question $q$ (`q`), GRPO samples a group of $G$ answers $o_1,\dots,o_G$ (`o`, `G`), scores each
# with a reward $r_i$ (`r`), and measures every answer against its own group:
#
# $$A_i = \frac{r_i - \operatorname{mean}(r_1,\dots,r_G)}{\operatorname{std}(r_1,\dots,r_G)}$$
#
# The advantage $A_i$ (`A`) is the whole learning signal. The update raises the log-probability
# $\log\pi_\theta(o_i\mid q)$ (`logp`) of answers with $A_i > 0$ and lowers it for $A_i < 0$; the policy
# $\pi_\theta$ (`pi_theta`) needs no value network, because the group itself is the baseline.

# %% [markdown]
# ## Paper → code
#
# The course uses one table of names everywhere: here, in `grpo_lib/__init__.py` and in the docs.
# Shape letters: `N` prompts per step, `G` group size, `B = N * G` completions, `P` prompt length,
# `T` completion length after padding, `V` vocabulary size.
#
# | paper | code name | shape / type | meaning |
# | --- | --- | --- | --- |
# | $q$ | `q`, `q_ids` | `str`; `(N, P)` | a prompt (question) |
# | $G$ | `G` | `int` | completions sampled per prompt |
# | $o_i$ | `o`, `o_ids` | `str`; `(B, T)` | the i-th completion; `B = N * G` rows |
# | $\lvert o_i\rvert$ | `o_len` | `(B,)` | completion length in tokens = `mask.sum(-1)` |
# | $r_i$ | `r` | `(N, G)` | scalar reward of completion i |
# | $A_i$ ($\hat A_{i,t}$) | `A` | `(N, G)`, flattened `(B,)` | group-relative advantage, same for every token of $o_i$ |
# | $\pi_\theta$ | `pi_theta` | `nn.Module` | the policy being trained |
# | $\pi_{\theta_{old}}$ | `logp_old` | `(B, T)` | log-probs of the policy that sampled the batch |
# | $\pi_{ref}$ | `logp_ref` | `(B, T)` | log-probs of the frozen reference policy |
# | $\log\pi_\theta(o_{i,t}\mid q,o_{i,<t})$ | `logp` | `(B, T)` | per-token log-probability under the current policy |
# | $\rho_{i,t}=\pi_\theta/\pi_{\theta_{old}}$ | `rho` | `(B, T)` | importance ratio |
# | $\epsilon$ | `epsilon` | `float` | clip range for `rho` |
# | $\beta$ | `beta` | `float` | KL coefficient |
# | $\mu$ | `mu` | `int` | policy updates per sampled batch |
# | $\mathbb{D}_{KL}$ (k3) | `kl` | `(B, T)` | per-token estimate $e^{d}-d-1$, $d=\log\pi_{ref}-\log\pi_\theta$ |
# | — | `mask` | `(B, T)` | 1 on completion tokens (EOS included), 0 on prompt and padding |
#
# In the 2+3 world of this notebook most of these are tiny:
#
# | paper | here | value |
# | --- | --- | --- |
# | $q$ | `QUESTION` | "What is 2 + 3?" |
# | $N$, $G$ | `N`, `G` | 1 question, 3 answers, so `B = 3` |
# | $o_i$ | `ANSWERS[k]` | "5", "6", "2 + 3 = 5" |
# | $r_i$ | `score_answer(o_i)` | 1, 0, 2 |
# | $\pi_\theta$ | `ToyPolicy` | a softmax over 3 logits $\theta$ |
# | $\lvert o_i\rvert$ | `T = 1` | each answer is one "token": `logp` is `(3, 1)`, `mask` is all ones |

# %% jupyter={"source_hidden": true}
legend_names = ['q', 'q_ids', 'G', 'o', 'o_ids', 'o_len', 'r', 'A', 'pi_theta', 'logp_old', 'logp_ref', 'logp', 'rho', 'epsilon', 'beta', 'mu', 'kl', 'mask']
check("Paper → code",
      ("every code name in the table is in the package's legend (grpo_lib/__init__.py)",
       all(f"``{name}``" in grpo_lib.__doc__ for name in legend_names)))

# %% [markdown]
# ## 1.1 Step 1: the question and a group of answers
#
# The tutorial's model answers "What is 2 + 3?" three times. Here an answer is a fixed string; from
# notebook 05 on, a real model samples it token by token.

# %%
q = QUESTION
o = list(ANSWERS)          # the group: G completions of the same question q
G = len(o)
q, o, G

# %% jupyter={"source_hidden": true}
check("1.1 · the question and the group",
      ("q is the tutorial's question", q == "What is 2 + 3?"),
      ("the group is \"5\", \"6\", \"2 + 3 = 5\", so G = 3", o == ["5", "6", "2 + 3 = 5"] and G == 3))

# %% [markdown]
# ## 1.2 Step 2: score each answer
#
# The tutorial's scores: "5" is right but shows no reasoning (1 point), "6" is wrong (0), and
# "2 + 3 = 5" is right *and* shows the working (2). GRPO needs nothing more from a reward than a number
# per answer. DeepSeekMath used a learned reward model; this course, like the tutorial, uses rules
# (notebook 03 builds the GSM8K ones). As a rule: the final answer is the last number in the text;
# wrong or missing gives 0, right gives 1, right with "2 + 3 =" written out gives 2.

# %%
show_source(score_answer)

# %%
r_list = [score_answer(o_i) for o_i in o]
r_list

# %% [markdown]
# Because it reads the last number, the rule also scores answers the tutorial did not list: spacing
# does not matter, a trailing period is fine, and a wrong result scores 0 even with the working shown.
# And "5 = 2 + 3" is right but scores 0: its last number is 3. A rule checks a position in the text,
# not its meaning. GRPO cannot tell such a false negative from a real mistake: next to "2 + 3 = 5" this
# right answer gets a negative advantage and becomes less likely, so the policy learns the *form* the
# scorer reads. Notebook 03 meets the same thing on GSM8K.

# %%
more = ["2+3=5", "The answer is 5.", "2 + 3 = 6", "5 = 2 + 3", "five"]
markdown_table(["answer $o$", "reward $r$"], [[repr(t), score_answer(t)] for t in more], floatfmt="g")

# %% jupyter={"source_hidden": true}
check("1.2 · scores",
      ("the tutorial's scores: 1, 0, 2", r_list == [1.0, 0.0, 2.0]),
      ("the rule on the other answers: 2, 1, 0, 0, 0", [score_answer(t) for t in more] == [2.0, 1.0, 0.0, 0.0, 0.0]),
      ("\"5 = 2 + 3\" scores 0 because its last number is 3", score_answer("5 = 2 + 3") == 0.0))

# %% [markdown]
# ## 1.3 Step 3: the group mean
#
# Mean score $= (1 + 0 + 2) / 3 = 1$. The rewards go into a tensor of shape `(N, G) = (1, 3)`: one
# question, three answers. Every library function takes this shape, so a batch of many questions is
# just more rows.

# %%
r = torch.tensor([r_list])                       # (N, G) = (1, 3)
r_mean = r.mean(dim=-1, keepdim=True)            # (N, 1)
r_mean

# %% jupyter={"source_hidden": true}
check("1.3 · the group mean",
      ("rewards have shape (N, G) = (1, 3)", r.shape == (1, 3)),
      ("the mean is 1", r_mean.item() == 1.0))

# %% [markdown]
# ## 1.4 Step 4: compare each score with the mean
#
# The tutorial: "5" → 0 (equal to the mean), "6" → −1 (below), "2 + 3 = 5" → +1 (above).
# That is the numerator $r_i - \operatorname{mean}(r)$:

# %%
A = r - r_mean                                   # (N, G)
A

# %% [markdown]
# The tutorial stops here, but the formula also divides by the standard deviation. For this group that
# changes nothing, because the **sample** standard deviation (divide by $G - 1$, PyTorch's default) of
# $[1, 0, 2]$ is exactly 1:
#
# $$\operatorname{std}(r) = \sqrt{\frac{(1-1)^2 + (0-1)^2 + (2-1)^2}{G-1}} = \sqrt{\frac{2}{2}} = 1.$$

# %%
std = r.std(dim=-1, keepdim=True)                # (N, 1); correction=1 (sample std) is the default
std

# %% [markdown]
# The library's `group_advantages` computes the same thing. Its small safety floor on the std
# (`std_floor`, next section) is switched off here, so the match is exact. From now on we use the
# library.

# %%
A_lib = group_advantages(r, std_floor=0.0)       # (N, G)
A_lib

# %% jupyter={"source_hidden": true}
check("1.4 · compare each score with the mean",
      ("r − mean = [0, −1, +1]", torch.equal(A, torch.tensor([[0.0, -1.0, 1.0]]))),
      ("the sample std of [1, 0, 2] is exactly 1", std.item() == 1.0),
      ("so dividing by it leaves A = [0, −1, +1]", torch.equal((r - r_mean) / std, A)),
      ("group_advantages (no floor) gives the same", torch.equal(A_lib, A)))

# %% [markdown]
# ## 1.5 Which std? Sample, population, and the 1e-4 floor
#
# Real implementations differ here, and for small groups the difference is visible:
#
# - **sample std** (`ddof=1`; the tutorial, TRL, `torch.std`): divide the squared deviations by
#   $G - 1 = 2$, so std $= 1$ and $A = [0, -1, +1]$.
# - **population std** (`ddof=0`; nano-aha-moment, `numpy.std`): divide by $G = 3$, so
#   std $= \sqrt{2/3} \approx 0.816$ and $A = \pm 1/0.816 = \pm 1.2247$.
# - **the floor** (TRL, and this library's default `std_floor=1e-4`): divide by std $+ 10^{-4}$, so a group
#   whose rewards are all equal never divides by 0; here $A = \pm 1/1.0001 = \pm 0.9999$.
# - **no std at all** (Dr. GRPO): only centre, $A = r - \operatorname{mean}(r) = [0, -1, +1]$.
#
# The sweep computes each one with the library:

# %%
variants = {
    "sample std (tutorial)": dict(ddof=1, std_floor=0.0),
    "population std": dict(ddof=0, std_floor=0.0),
    "sample std + 1e-4 (library default, TRL)": dict(),
    "centre only (Dr. GRPO)": dict(scale="none"),
}
A_by = {name: group_advantages(r, **kw)[0] for name, kw in variants.items()}     # each (G,)
markdown_table(["variant", *(f'A("{o_i}")' for o_i in o)], [[k, *a.tolist()] for k, a in A_by.items()])

# %% jupyter={"source_hidden": true}
pop = 1 / math.sqrt(2 / 3)                       # 1.2247
check("1.5 · which std",
      ("population std: ±1.2247", torch.allclose(A_by["population std"], torch.tensor([0.0, -pop, pop]))),
      ("the 1e-4 floor: ±0.9999", torch.allclose(A_by["sample std + 1e-4 (library default, TRL)"],
                                                torch.tensor([0.0, -1 / 1.0001, 1 / 1.0001]))),
      ("sample std = centre only here (the std is 1)", torch.equal(A_by["sample std (tutorial)"],
                                                                   A_by["centre only (Dr. GRPO)"])),
      ("every variant sums to 0", all(abs(a.sum().item()) < 1e-6 for a in A_by.values())),
      ("every variant has the same signs, in the same order",
       all(torch.equal(torch.sign(a), torch.tensor([0.0, -1.0, 1.0])) for a in A_by.values())))

# %% [markdown]
# The signs and the ordering never change; only the size of the push does. From here on the update
# uses the library default, so the advantages it sees are $[0, -0.9999, +0.9999]$. Notebook 02 shows
# when the choice matters (small $G$, a group with a single right answer).

# %% [markdown]
# ## 1.6 Before the update: the policy gradient, from scratch
#
# GRPO is a policy-gradient method. Before using its update, derive what it estimates, on the same
# three-answer policy $\pi_\theta = \operatorname{softmax}(\theta)$ over "5", "6", "2 + 3 = 5" (rewards 1, 0, 2).
#
# Two library pieces appear here before sections 1.7–1.9 take them apart. `ToyPolicy(theta)` is that policy:
# three logits $\theta$ (`.logits`), with `.probs()`, `.log_prob(o)` and `.sample(G, generator)`.
# `grpo_step(policy, optimizer, group, epsilon=ε, beta=β, mu=μ)` is one whole GRPO update on a group of answers:
# ε is the clip range of the ratio (below), β the weight of the KL penalty that keeps $\pi_\theta$ near a
# reference policy (β = 0 here: no penalty), and μ the number of gradient steps taken on the same group.
#
# **The objective** is the expected reward of one answer drawn from the policy,
# $J(\theta) = \mathbb{E}_{o\sim\pi_\theta}[r(o)] = \sum_o \pi_\theta(o)\,r(o)$. With three answers the sum has
# three terms, so $J$ and its exact gradient can be computed by enumeration, and autograd does the
# differentiating. For a softmax the gradient has a closed form, $\partial J/\partial\theta_k = \pi_k\,(r_k - J)$:
# an answer's logit rises when its reward beats the average. Take a policy that prefers the bare "5":

# %%
import itertools

from grpo_lib.course.plots import variance_vs_baseline

r_all = torch.tensor([score_answer(a) for a in ANSWERS])      # (K,) = [1, 0, 2]
pi = ToyPolicy([0.5, 0.0, -0.5])
J = (pi.probs() * r_all).sum()                                 # exact: three terms
(grad_exact,) = torch.autograd.grad(J, pi.logits)
p = pi.probs().detach()
print(f"π = {p.numpy().round(4)}   J = {J.item():.4f}   ∇J = {grad_exact.numpy().round(4)}")


# %% [markdown]
# **The score-function (REINFORCE) estimate.** A language model has far too many answers to enumerate, but it
# can *sample*. Because $\nabla\pi = \pi\,\nabla\log\pi$ (the log-derivative trick), the gradient is an
# expectation over samples:
#
# $$\nabla_\theta J = \sum_o r(o)\,\nabla\pi_\theta(o) = \mathbb{E}_{o\sim\pi_\theta}\big[r(o)\,\nabla\log\pi_\theta(o)\big].$$
#
# In code that is one line: sample $G$ answers and differentiate `(r[o] * pi.log_prob(o)).mean()`. The rewards
# are plain numbers; only $\log\pi_\theta$ is differentiated. One group gives a noisy estimate. With three
# answers there are only $3^G$ possible groups, so the estimate's *expectation* and variance can be computed
# exactly too: weight every group by its probability (`reinforce_batch` is the same estimate for many groups
# at once, using $\nabla_\theta\log\operatorname{softmax}(\theta)_k = e_k - \pi$).

# %%
def reinforce_estimate(policy, o, baseline=0.0):
    """(1/G) Σ_i (r_i - b) ∇log π(o_i) from one group o, by autograd: the line above."""
    surrogate = ((r_all[o] - baseline) * policy.log_prob(o)).mean()
    return torch.autograd.grad(surrogate, policy.logits)[0]               # (K,)


def reinforce_batch(policy, groups, baseline=0.0):
    """The same estimate for n groups at once: (n, G) -> (n, K)."""
    p = policy.probs().detach()
    score = torch.nn.functional.one_hot(groups, len(p)).float() - p       # (n, G, K) ∇log π(o_i)
    b = torch.as_tensor(baseline, dtype=torch.float32).reshape(-1, 1)     # a constant, or one b per group
    return ((r_all[groups] - b)[..., None] * score).mean(dim=1)           # (n, K)


def exact_moments(policy, G, baseline=lambda rewards: 0.0):
    """Exact mean and variance per logit of the estimate over all 3**G groups, each weighted by its probability."""
    groups = torch.tensor(list(itertools.product(range(len(ANSWERS)), repeat=G)))   # (3**G, G)
    weights = policy.probs().detach()[groups].prod(dim=-1)                          # (3**G,) P(group)
    values = reinforce_batch(policy, groups, baseline(r_all[groups]))               # (3**G, K)
    mean = (weights[:, None] * values).sum(0)
    return mean, (weights[:, None] * (values - mean) ** 2).sum(0)


gen = torch.Generator().manual_seed(0)
o_pg = pi.sample(4, gen)                                                     # one group, G = 4
mean_plain, var_plain = exact_moments(pi, G=4)
print("one group:", [ANSWERS[k] for k in o_pg.tolist()], "→ estimate", reinforce_estimate(pi, o_pg).numpy().round(4))
print("mean over all 81 groups:", mean_plain.numpy().round(4))


# %% [markdown]
# **A baseline.** Subtracting a constant $b$ from every reward leaves the estimate unbiased, because the score
# has mean zero: $\mathbb{E}[\nabla\log\pi_\theta(o)] = \sum_o \nabla\pi_\theta(o) = \nabla\sum_o\pi_\theta(o) = \nabla 1 = 0$.
# It does change the *variance*: with $b = 0$ every sampled answer with a positive reward is pushed up ("5" as
# well as "2 + 3 = 5") and "6", with $r = 0$, is not pushed at all, so only the size of the pushes tells good
# from bad. The figure sweeps a constant $b$ and shows the exact variance of the estimate from one group of
# $G = 4$ (summed over the three logits); every constant $b$ gives the same mean, $\nabla J$. The dots are
# variances measured over 2,000 sampled groups: at $b = 0$, at $b = J$ (the true mean reward, which a real model
# does not know), with the group's own mean reward as $b$, and with the mean of the *other* $G - 1$ rewards
# (leave-one-out). The last two are not constants, so they are plotted at $b = J$, the value they estimate.

# %%
def leave_one_out(rewards):
    """Per answer, the mean of the other G - 1 rewards of its group: (..., G) -> (..., G)."""
    return (rewards.sum(-1, keepdim=True) - rewards) / (rewards.shape[-1] - 1)


def reinforce_batch_per_answer(policy, groups, baselines):
    """The estimate with one baseline per answer, b_i: (n, G) groups, (n, G) baselines -> (n, K)."""
    p = policy.probs().detach()
    score = torch.nn.functional.one_hot(groups, len(p)).float() - p       # (n, G, K)
    return ((r_all[groups] - baselines)[..., None] * score).mean(dim=1)


gen = torch.Generator().manual_seed(1)
groups = torch.stack([pi.sample(4, gen) for _ in range(2000)])            # (2000, G)
measured = {
    "b = 0": (0.0, reinforce_batch(pi, groups).var(0).sum().item()),
    "b = J": (J.item(), reinforce_batch(pi, groups, J.item()).var(0).sum().item()),
    "group mean (mean shrunk by 3/4)": (J.item(), reinforce_batch(pi, groups, r_all[groups].mean(-1)).var(0).sum().item()),
    "leave-one-out mean (unbiased)": (J.item(), reinforce_batch_per_answer(pi, groups, leave_one_out(r_all[groups]))
                                      .var(0).sum().item()),
}
b_grid = torch.linspace(-1, 3, 41)
exact_var = torch.stack([exact_moments(pi, 4, lambda rw, b=b: b)[1].sum() for b in b_grid])
print("variance over 2,000 groups:", {name: round(v, 4) for name, (b, v) in measured.items()})
variance_vs_baseline(b_grid, exact_var, measured, J=J.item())

# %% [markdown]
# **The group mean: a critic for free.** $b = J$ is what PPO's value network (the *critic*) learns to predict,
# one number per prompt, with a second network as large as the policy. GRPO samples $G$ answers to the same
# prompt anyway, so their mean reward estimates $J$ at no extra cost. Its dot sits *below* $b = J$'s, but that
# comparison is not like with like: the group mean contains $r_i$ itself, so answer $i$'s baseline is
# correlated with its own reward, and the expectation comes out as exactly $\frac{G-1}{G}\nabla J$, the same
# direction, shorter. A shorter estimate has a smaller variance ($(3/4)^2$ of it) for that reason alone. Compare
# estimates of the same mean: the leave-one-out baseline (the other $G - 1$ rewards; exercise 1.1) is unbiased,
# and its variance is *larger* than at $b = J$ (the exact numbers are printed below). The group baseline is the
# practical choice not because it beats a critic, but because it needs none.
#
# GRPO also divides by the group's std (notebook 02). That makes $A$ independent of the reward's units, but it
# is a different scale for every group, so within this one question the expectation is no longer parallel to
# $\nabla J$: the three logits' gradients are scaled by different factors. (Across questions the same division
# has a second effect, the *difficulty bias* that Dr. GRPO names: a nearly solved or nearly hopeless question
# pushes as hard as a 50/50 one. Notebook 02 §2.5 measures that one.)

# %%
mean_J, var_J = exact_moments(pi, 4, lambda rw: J.item())
mean_group, var_group = exact_moments(pi, 4, lambda rw: rw.mean(-1))
groups81 = torch.tensor(list(itertools.product(range(3), repeat=4)))     # (81, G): every group of 4
w81 = pi.probs().detach()[groups81].prod(-1)                              # (81,) P(group)
loo_values = reinforce_batch_per_answer(pi, groups81, leave_one_out(r_all[groups81]))   # (81, K)
mean_loo = (w81[:, None] * loo_values).sum(0)
var_loo = (w81[:, None] * (loo_values - mean_loo) ** 2).sum(0)
print(f"exact variances (sum over the logits): b = 0 {var_plain.sum():.4f}, b = J {var_J.sum():.4f}, "
      f"leave-one-out {var_loo.sum():.4f} (mean ∇J), group mean {var_group.sum():.4f} (mean 3/4 ∇J, "
      f"= (3/4)² × leave-one-out)")
p0 = ToyPolicy([0.5, 0.0, -0.5]).probs().detach()                        # fixed here, whatever `pi` is above
grad0 = p0 * (r_all - (p0 * r_all).sum())                                 # its exact gradient
all_groups = torch.tensor(list(itertools.product(range(3), repeat=4)))   # (81, G)
w0 = p0[all_groups].prod(-1)                                              # (81,)
score0 = torch.nn.functional.one_hot(all_groups, 3).float() - p0          # (81, G, K)
mean_grpo = (w0[:, None] * (group_advantages(r_all[all_groups])[..., None] * score0).mean(1)).sum(0)
print(f"group-mean baseline: E = {mean_group.numpy().round(4)} = 3/4 × ∇J = {(0.75 * grad_exact).numpy().round(4)}")
print(f"GRPO's advantage (÷ std): E / ∇J per logit = {(mean_grpo / grad0).numpy().round(3)}")

# %% jupyter={"source_hidden": true}
score_mean = sum(p[k] * torch.autograd.grad(pi.log_prob(torch.tensor(k)), pi.logits)[0] for k in range(3))
check("1.6 · the policy gradient and its baselines",
      ("autograd's ∇J is the closed form π_k (r_k − J)", torch.allclose(grad_exact, p * (r_all - J.detach()), atol=1e-6)),
      ("REINFORCE's exact mean over all 81 groups of 4 is ∇J", torch.allclose(mean_plain, grad_exact, atol=1e-6)),
      ("the batched closed form equals the autograd line", torch.allclose(reinforce_batch(pi, o_pg[None])[0],
                                                                          reinforce_estimate(pi, o_pg), atol=1e-6)),
      ("the score has mean 0: E[∇log π] = 0", torch.allclose(score_mean, torch.zeros(3), atol=1e-7)),
      ("b = J keeps the mean ...", torch.allclose(mean_J, grad_exact, atol=1e-6)),
      ("... and more than halves the exact variance", bool(var_J.sum() < 0.5 * var_plain.sum())),
      ("2,000 sampled groups agree with the exact variance at b = 0 (within 10%)",
       abs(measured["b = 0"][1] - var_plain.sum().item()) < 0.1 * var_plain.sum().item()),
      ("the group-mean baseline gives exactly (G−1)/G ∇J", torch.allclose(mean_group, 0.75 * grad_exact, atol=1e-6)),
      ("... with less variance than no baseline", bool(var_group.sum() < 0.5 * var_plain.sum())),
      ("the leave-one-out baseline is unbiased: its exact mean is ∇J", torch.allclose(mean_loo, grad_exact, atol=1e-6)),
      ("the group-mean estimate is exactly 3/4 of the leave-one-out one, so its variance is (3/4)² of it",
       torch.allclose(var_group.sum(), 0.75**2 * var_loo.sum(), rtol=1e-5)),
      ("like with like: the unbiased leave-one-out variance is above b = J's", bool(var_loo.sum() > var_J.sum())),
      ("... while the shrunk group mean's is below it", bool(var_group.sum() < var_J.sum())),
      ("dividing by the group std scales the logits differently (same signs)",
       bool((mean_grpo / grad0).max() - (mean_grpo / grad0).min() > 0.3 and (mean_grpo / grad0 > 0).all())))

# %% [markdown]
# **Reusing samples: the ratio $\pi_\theta/\pi_{old}$.** At LLM scale sampling is the expensive part of a step
# (notebook 06 measures it; on notebook 05's tiny model it is not), so one may take $\mu > 1$ gradient steps on
# the same group. After the first step the samples come from
# $\pi_{old}$, the policy *before* the step, not from $\pi_\theta$, and the plain estimate is biased.
# Importance sampling repairs it: $J(\theta) = \mathbb{E}_{o\sim\pi_{old}}\big[\tfrac{\pi_\theta(o)}{\pi_{old}(o)}\,r(o)\big]$
# for any $\theta$. At $\theta = \theta_{old}$ the ratio $\rho$ is 1 and its gradient is $\nabla\log\pi_\theta$:
# the surrogate $\rho A$ is REINFORCE again, which is why GRPO's loss at $\mu = 1$ is REINFORCE with the group
# baseline (section 1.8).

# %%
pi_old = ToyPolicy([0.5, 0.0, -0.5])
pi_new = ToyPolicy([0.2, -0.4, 0.6])                                      # a policy a few steps later
rho_all = pi_new.probs() / pi_old.probs()                                 # (K,) ratio for every answer
J_reweighted = (pi_old.probs() * rho_all * r_all).sum()                   # E_{o ~ π_old}[ρ r], by enumeration
J_new = (pi_new.probs() * r_all).sum()
J_reweighted.item(), J_new.item()


# %% [markdown]
# **Why clip.** The reweighted objective is exact in expectation, but estimated from $G$ samples it is only
# trustworthy while $\pi_\theta$ stays near $\pi_{old}$: maximise $\rho_i A_i$ on one group and the answer with
# $A > 0$ keeps gaining, far beyond what 3 samples justify. PPO's clip,
# $\min(\rho A, \operatorname{clip}(\rho, 1-\epsilon, 1+\epsilon)A)$, is flat once $\rho$ has left
# $[1-\epsilon, 1+\epsilon]$ in the direction $A$ favours, so the gradient there is zero and a reused group stops
# pushing. Take 20 updates ($\mu = 20$, SGD, learning rate 1) on the worked group with the library's
# `grpo_step`, with the clip ($\epsilon = 0.2$) and almost without it ($\epsilon = 0.99$):

# %%
def reuse(epsilon, mu=20):
    policy = ToyPolicy()
    p_start = policy.probs().detach()
    step = grpo_step(policy, torch.optim.SGD(policy.parameters(), lr=1.0), [0, 1, 2], epsilon=epsilon, beta=0.0, mu=mu)
    return policy.probs().detach() / p_start, step                         # ratio π_θ / π_old per answer

rho_clip, step_clip = reuse(0.2)
rho_free, step_free = reuse(0.99)
print(f"π_θ/π_old after 20 updates on one group:  ε = 0.2: {rho_clip.numpy().round(3)}   ε = 0.99: {rho_free.numpy().round(3)}")

# %% [markdown]
# With the clip, the very first update (a big one: learning rate 1) already moves "2 + 3 = 5" to 1.35 times and
# "6" to 0.69 times their old probabilities, past the edges 1.2 and 0.8, and the other 19 updates have exactly
# zero gradient. Almost without the clip, the same group keeps pushing: "2 + 3 = 5" reaches 2.48 times its old
# probability and "6" falls to 0.08 of it, all on the evidence of one group of three answers.

# %% jupyter={"source_hidden": true}
check("1.6 · reusing samples",
      ("E_{π_old}[ρ r] is the new policy's J exactly", torch.isclose(J_reweighted, J_new, atol=1e-6)),
      ("with ε = 0.2 the last of 20 updates has exactly zero gradient", torch.equal(step_clip.grad, torch.zeros(3))),
      ("... so 20 clipped updates moved π exactly as far as one", torch.allclose(rho_clip, reuse(0.2, mu=1)[0])),
      ("with ε = 0.2 the favoured answer stops below 1.5 π_old", bool(rho_clip[2] < 1.5)),
      ("with ε = 0.99 it moves much further", bool(rho_free[2] > 2.0 and rho_free[1] < 0.2)))

# %% [markdown]
# ## 1.7 Step 5: a policy to update
#
# "Reinforce the model to prefer higher scores" needs a model with parameters. The smallest one that
# can produce our three answers is a categorical policy with one logit per answer:
# $\pi_\theta(o \mid q) = \operatorname{softmax}(\theta)_o$, $\theta \in \mathbb{R}^3$. It starts
# uniform: each answer has probability 1/3.

# %%
show_source(ToyPolicy.log_prob)

# %%
pi_theta = ToyPolicy()                           # θ = [0, 0, 0]
pi_theta.probs().detach()                        # π_θ(o | q) for "5", "6", "2 + 3 = 5"

# %% [markdown]
# Now one GRPO update, written out. Each answer is a single "token", so the per-token tensors have shape
# `(B, T) = (3, 1)` and the mask is all ones. With one update per sampled group ($\mu = 1$, as in
# DeepSeekMath) the policy that sampled the group, $\pi_{\theta_{old}}$, *is* the current policy, so
# `logp_old` is `logp` detached; the reference policy $\pi_{ref}$ has not drifted away yet either.
# `grpo_loss` is the library's loss; notebook 04 explains every line of it.

# %%
o_idx = torch.tensor([0, 1, 2])                  # the group as indices into ANSWERS
A_flat = group_advantages(r).reshape(G)          # (N, G) -> (B,)
logp = pi_theta.log_prob(o_idx)[:, None]         # (B, T) = (3, 1), carries grad
logp_old = logp.detach()                         # π_old: a constant in the ratio ρ
mask = torch.ones(G, 1)                          # (B, T): every answer is one real token
loss, stats = grpo_loss(logp, logp_old, logp_old, A_flat, mask, epsilon=0.2, beta=0.04)
loss.backward()
loss, pi_theta.logits.grad

# %% [markdown]
# Gradient descent moves $\theta$ *against* the gradient, so the gradient reads as the tutorial's
# step 5:
#
# - "2 + 3 = 5" has gradient $-1/3$: its logit goes up (**prefer 3**);
# - "6" has gradient $+1/3$: its logit goes down (**avoid 2**);
# - "5" has gradient exactly 0: its logit stays (**keep 1**).
#
# By hand: with $\rho = 1$ and no KL yet, the gradient is REINFORCE's,
# $-\frac{1}{G}\sum_i A_i \nabla_\theta \log\pi_\theta(o_i)$, and for a softmax
# $\nabla_\theta \log\pi_\theta(o_i) = e_{o_i} - \pi_\theta$. The $\pi_\theta$ part is multiplied by
# $\sum_i A_i = 0$ and drops out, which leaves $-A/G$.

# %%
grad_grpo = pi_theta.logits.grad.clone()         # (K,) = (3,)
grad_grpo

# %% jupyter={"source_hidden": true}
check("1.7 · one GRPO update, written out",
      ("π_θ starts uniform", torch.allclose(pi_theta.probs(), torch.full((3,), 1 / 3))),
      ("the gradient is −A/G", torch.allclose(grad_grpo, -A_flat / G)),
      ("descent raises \"2 + 3 = 5\", lowers \"6\", leaves \"5\"",
       bool(grad_grpo[2] < 0 and grad_grpo[1] > 0 and grad_grpo[0].item() == 0.0)))

# %% [markdown]
# ## 1.8 Why the loss is 0 while the gradient is not (a preview of notebook 04)
#
# The printed loss is exactly 0, and it stays 0 at every step of the fixed-group training below.
# Nothing is broken:
#
# - the ratio $\rho_i = \pi_\theta(o_i)/\pi_{\theta_{old}}(o_i) = \exp(\log\pi_\theta(o_i) - \log\pi_{\theta_{old}}(o_i))$ is
#   exactly 1 in value, because $\pi_{\theta_{old}}$ is the current policy;
# - the KL term is 0, because $\pi_{ref}$ equals $\pi_\theta$ too;
# - so the loss is $-\frac{1}{G}\sum_i A_i \cdot 1 = -\operatorname{mean}(A) = 0$: the advantages of a
#   group sum to zero.
#
# But $\rho$ still *depends* on $\theta$ through `logp`, and at $\rho = 1$ its gradient is
# $\nabla \log\pi_\theta$. So the gradient is REINFORCE's with the group mean as baseline, which the
# next cell confirms with a plain REINFORCE loss. A zero loss curve in a GRPO log is expected at
# $\mu = 1$ (trl#2703, trl#3452): watch the reward instead. (Once the policy has drifted from
# $\pi_{ref}$, the loss is $\beta$ times the KL estimate, still no measure of progress; section 1.10
# checks it.)

# %%
pi_pg = ToyPolicy()
loss_pg = -(A_flat * pi_pg.log_prob(o_idx)).mean()    # REINFORCE, baseline = group mean
loss_pg.backward()
pi_pg.logits.grad

# %% jupyter={"source_hidden": true}
check("1.8 · loss 0, gradient not",
      ("the loss is exactly 0", loss.item() == 0.0),
      ("ρ = 1 and the KL is 0", stats["ratio_mean"].item() == 1.0 and stats["kl"].item() == 0.0),
      ("nothing is clipped: ρ = 1 is inside [1 − ε, 1 + ε]", stats["clip_fraction"].item() == 0.0),
      ("the gradient is not 0", bool(grad_grpo.abs().sum() > 0)),
      ("it is REINFORCE's with the group mean as baseline", torch.allclose(pi_pg.logits.grad, grad_grpo)))

# %% [markdown]
# ## 1.9 One step of SGD, then repeat
#
# `grpo_step` packages the cells above: score the group, `group_advantages`, then `grpo_loss`,
# backward, and an optimizer step. Here is all of it; nothing else touches the policy.

# %%
show_source(grpo_step)

# %% [markdown]
# One step with plain SGD and learning rate 1: $\theta \leftarrow \theta - 1 \cdot \nabla = A/3$
# (starting from $\theta = 0$).

# %%
pi_theta = ToyPolicy()
optimizer = torch.optim.SGD(pi_theta.parameters(), lr=1.0)
p_before = pi_theta.probs().detach()
step = grpo_step(pi_theta, optimizer, o_idx, epsilon=0.2, beta=0.04)
p_after = pi_theta.probs().detach()
pi_theta.logits.detach(), p_before, p_after

# %% [markdown]
# "6" falls from 0.333 to 0.230 and "2 + 3 = 5" rises to 0.448. The logit of "5" did not move, yet its
# probability fell a little (to 0.321): a softmax is relative, so when "2 + 3 = 5" gains, everything
# else shares the loss. "Keep" means no push of its own.

# %% [markdown]
# "This process is repeated." `train_toy` repeats the step with the tutorial's group, `("5", "6",
# "2 + 3 = 5")`, every time, and records the three probabilities after each update. $\beta = 0$ here,
# so only the advantages act:

# %%
history_fixed = train_toy(steps=15, G=3, lr=1.0, group="fixed", beta=0.0)
toy_probabilities(history_fixed, title='the same group every step: "5", "6", "2 + 3 = 5"')

# %% [markdown]
# "2 + 3 = 5" rises at every step and "6" falls at every step. With the same group each time the
# advantages never change, so each step adds the same $A/3$ to the logits: they move on straight lines,
# and the logit of "5" stays at 0 while its probability drains away to "2 + 3 = 5".

# %% jupyter={"source_hidden": true}
p = history_fixed["probs"]                       # (steps + 1, K)
dp = p[1:] - p[:-1]                              # (steps, K) change per step
check("1.9 · one step of SGD, then repeat",
      ("one step moves the logits by A/3", torch.allclose(pi_theta.logits.detach(), A_flat / 3)),
      ("...so the logit of \"5\" does not move", pi_theta.logits[0].item() == 0.0),
      ("\"2 + 3 = 5\" gains, \"6\" loses, \"5\" loses a little", bool(p_after[2] > p_before[2] and p_after[1] < p_before[1]
                                                                   and p_after[0] < p_before[0])),
      ("after one step π = [0.3213, 0.2302, 0.4484]", torch.allclose(p_after, torch.tensor([0.3213, 0.2302, 0.4484]), atol=1e-4)),
      ("repeated: \"2 + 3 = 5\" rises and \"6\" falls at every step", bool((dp[:, 2] > 0).all() and (dp[:, 1] < 0).all())),
      ("\"5\" drains away although its logit never moves", bool((dp[:, 0] < 0).all())
       and torch.equal(history_fixed["logits"][:, 0], torch.zeros(16))),
      ("the logits move on straight lines", torch.allclose(history_fixed["logits"],
                                                           torch.arange(16.0)[:, None] * A_flat / 3, atol=1e-5)),
      ("\"2 + 3 = 5\" ends above 0.99", bool(p[-1, 2] > 0.99)),
      ("the loss was 0 at every step", torch.equal(history_fixed["loss"], torch.zeros(15))))

# %% [markdown]
# ## 1.10 Sampled groups: what GRPO really does
#
# The fixed group is the tutorial's cartoon. Real GRPO samples each step's group from the current
# policy. At first the groups are mixed and the update looks like the one above. As the policy improves,
# more and more groups are all "2 + 3 = 5": every answer scores 2, every $A_i$ is 0 (section 1.11), and
# learning stops. Only the weak KL pull toward the uniform $\pi_{ref}$ ($\beta = 0.04$) is left, so the
# curve goes flat just short of 1. Here $G = 4$ answers are sampled per step, and the loss of every
# step is exactly $\beta$ times the mean KL estimate: the advantage part is 0 at $\rho = 1$, as in 1.8.

# %%
history_sampled = train_toy(steps=40, G=4, lr=1.0, seed=0, group="sampled", beta=0.04)
toy_training_panels({"fixed group (tutorial)": history_fixed,
                     "sampled groups, G = 4, β = 0.04": history_sampled})

# %%
groups = history_sampled["groups"]                           # (steps, G) answer indices
all_equal = (groups == groups[:, :1]).all(dim=-1).float()    # (steps,) 1 where A ≡ 0
print(f"all-equal groups: first 10 steps {all_equal[:10].mean():.0%}, last 10 steps {all_equal[-10:].mean():.0%}")
print(f"mean reward:      first 10 steps {history_sampled['reward_mean'][:10].mean():.2f}, "
      f"last 10 steps {history_sampled['reward_mean'][-10:].mean():.2f}")

# %% jupyter={"source_hidden": true}
p_s = history_sampled["probs"]
check("1.10 · sampled groups",
      ("converged to \"2 + 3 = 5\", just short of 1", bool(p_s[-1].argmax().item() == 2 and 0.9 < p_s[-1, 2] < 0.99)),
      ("mixed groups at first", bool((groups[:10] != groups[:10, :1]).any())),
      ("at the end every group is all \"2 + 3 = 5\"", bool((groups[-10:] == 2).all())),
      ("the loss of every step is β times the KL", torch.allclose(history_sampled["loss"],
                                                                  0.04 * history_sampled["kl"], atol=1e-6)),
      ("the reward went up", bool(history_sampled["reward_mean"][-10:].mean() > history_sampled["reward_mean"][:10].mean())),
      ("flat at the end: no signal left", bool((p_s[-10:, 2] - p_s[-1, 2]).abs().max() < 1e-3)))

# %% [markdown]
# ## 1.11 The all-equal group: (2, 2, 2) gives exactly zero gradient
#
# Suppose all three answers are "2 + 3 = 5". Each scores 2, the mean is 2, every $r_i - \operatorname{mean}$
# is 0 and so is the std. The library returns $A = 0$ exactly (never $0/0$ = NaN): no answer beat its
# siblings, so there is nothing to learn. With $\mu = 1$ the ratio and KL terms contribute nothing
# either, so the gradient is exactly zero and the policy does not move, whatever it was.

# %%
pi_theta = ToyPolicy([0.5, -0.5, 1.0])           # any policy
before = pi_theta.logits.detach().clone()
optimizer = torch.optim.SGD(pi_theta.parameters(), lr=1.0)
step = grpo_step(pi_theta, optimizer, torch.tensor([2, 2, 2]), epsilon=0.2, beta=0.04)
step.r, step.A, step.grad


# %% [markdown]
# The same holds for any group whose answers all score alike, e.g. three "6"s (all wrong) or three "5"s.
# TRL logs the share of such groups as `frac_reward_zero_std`; notebook 02 shows why a task that is too
# easy or too hard for the model starves GRPO this way.
#
# > **Aside:** "exactly zero" needs $\pi_{ref} = \pi_\theta$. Once the policy has drifted from the
# > reference, the KL term alone still pulls it back a little, even though $A = 0$ (the pull in the flat
# > end of the sampled run above; discussed in trl PR #7068).

# %%
def grad_for_group(o_group, ref_logits=None):
    pi = ToyPolicy([0.5, -0.5, 1.0])
    return grpo_step(pi, torch.optim.SGD(pi.parameters(), lr=1.0), torch.tensor(o_group),
                     epsilon=0.2, beta=0.04, ref_logits=ref_logits).grad

grad_for_group([1, 1, 1]), grad_for_group([0, 0, 0]), grad_for_group([2, 2, 2], ref_logits=torch.zeros(3))

# %% jupyter={"source_hidden": true}
check("1.11 · the all-equal group",
      ("(2, 2, 2): rewards 2, 2, 2 and A = 0", torch.equal(step.r, torch.tensor([2.0, 2.0, 2.0]))
       and torch.equal(step.A, torch.zeros(3))),
      ("the gradient is exactly zero, not just small", torch.equal(step.grad, torch.zeros(3))),
      ("the policy did not move", torch.equal(pi_theta.logits.detach(), before)),
      ("three \"6\"s or three \"5\"s: exactly zero too", torch.equal(grad_for_group([1, 1, 1]), torch.zeros(3))
       and torch.equal(grad_for_group([0, 0, 0]), torch.zeros(3))),
      ("with a drifted reference the KL term alone still pulls",
       bool(grad_for_group([2, 2, 2], ref_logits=torch.zeros(3)).abs().sum() > 0)))


# %% [markdown]
# ## Summary
#
# GRPO is REINFORCE, $\nabla J = \mathbb{E}[r\,\nabla\log\pi_\theta]$, with the mean reward of a group of
# answers to the same question as its baseline (no critic), a ratio to reuse samples, and a clip to keep the
# reused steps small. It scores a group of answers to one question and uses the group as its own baseline: for "5", "6",
# "2 + 3 = 5" the scores 1, 0, 2 have mean 1 and sample std exactly 1, so the advantages are
# $[0, -1, +1]$ (±1.22 with the population std, ±0.9999 with the 1e-4 floor). One update with those
# advantages pushes "2 + 3 = 5" up, "6" down and leaves the logit of "5" alone, and repeating it drives
# the policy to the answer that shows its working. At $\mu = 1$ the loss value is 0 while its gradient is
# REINFORCE's, and a group whose answers all score the same contributes exactly nothing.
#
# ## What this notebook added to grpo_lib
#
# - `grpo_lib.toy.score_answer`: the 0 / 1 / 2 rule of section 1.2, tested in `tests/test_toy.py`.
# - `grpo_lib.toy.ToyPolicy`: a softmax over the three answers (1.7), with `probs`, `log_prob`, `sample`.
# - `grpo_lib.toy.grpo_step`: one GRPO step on one group through `group_advantages` and `grpo_loss` (1.9).
# - `grpo_lib.toy.train_toy`: repeat `grpo_step` with a fixed or sampled group, recording π_θ (1.9, 1.10).
# - `grpo_lib.course.plots.toy_probabilities`, `toy_training_panels`: the figures of 1.9 and 1.10, tested in
#   `tests/test_course_plots.py`.
# - `grpo_lib.course.notebook.show_source`, `markdown_table`: the display helpers used above.
# - `grpo_lib.course.exercises.ex01.check_loo_advantages`: the checker of exercise 1.1, tested in
#   `tests/test_course_exercises_hints.py`.
#
# Used here, taught later: `grpo_lib.advantages.group_advantages` (notebook 02) and
# `grpo_lib.loss.grpo_loss` (notebook 04).
#
# ## Exercises
#
# **1.1 · A baseline without your own reward (fill in).** Section 1.6 found that the group-mean baseline
# gives only $\frac{G-1}{G}\nabla J$ in expectation, because $r_i$ sits inside its own baseline. Write
# `my_loo_advantages(r)` for one group of rewards `r` of shape `(G,)`: advantages whose baseline does not
# contain the answer's own reward, so that the estimate is unbiased. The checker tries the 2+3 group first,
# then other groups, and finally averages your estimate exactly over all 81 groups of 4 of section 1.6's
# policy. Stuck? `hint("1.1")`.

# %% tags=["solution"]
def my_loo_advantages(r):            # r: (G,) rewards of one group -> A: (G,)
    ### BEGIN SOLUTION
    G = r.numel()
    return r - (r.sum() - r) / (G - 1)   # compare r_i with the mean of the *other* G - 1 rewards
    ### END SOLUTION

check_loo_advantages(my_loo_advantages);

# %% [markdown]
# **1.2 · Relative, not absolute.** Before running anything, predict the advantages of the group
# ("5", "5", "6"). Which answer gets pushed *up*, although a better answer exists? Check with
# `group_advantages` and `grpo_step`. What does the group never tell the model?
#
# **1.3 · Two answers.** With $G = 2$ and the sample std, show that *any* group of two different rewards
# gets $A = \pm 0.7071$ (without the floor), whether the rewards are 1 and 2 or 0 and 2. Why can that be a
# problem, and which variant of section 1.5 avoids it?
#
# **1.4 · More than one update per group.** Run `grpo_step` on the tutorial's group with `mu=2`, `beta=0`
# and an SGD learning rate of 3. Look at `step.stats["clip_fraction"]` and `step.grad` (the gradient of the
# second update). Why is that gradient exactly zero? What is left of it with `beta=0.04`? (Notebook 04
# returns to clipping.)
#
# **1.5 · Reward design.** Suppose the scorer gave "5" the same 2 points as "2 + 3 = 5". Compute the
# advantages of the group with `group_advantages` (rewards 2, 0, 2). Which answers are pushed up now, and
# what happened to the incentive to show the working? What does that say about designing rewards?
#
# **1.6 · The best constant baseline.** The exact variance is a parabola in $b$, and its minimum $b^*$ is not
# exactly $J$. Find $b^*$ (from three exact variances with `exact_moments`, or from a formula for the vertex)
# and print the exact variances at $b^*$ and at $J$ at section 1.6's policy: the figure cannot show a difference
# that small. Then do the same for `ToyPolicy([-1.0, 2.0, -1.0])`, a policy that mostly answers "6". Where is
# $b^*$ now, how large is the gap, and why is $b^*$ so far from $J$? Is a critic that learns $J$ the best
# baseline there?

# %% [markdown]
# ## Quiz: check yourself
#
# Choose an answer to each question *before* you open it. Every answer is a number this notebook printed.

# %%
from grpo_lib.course.quiz import Question, quiz

quiz("Quiz · notebook 01",
     Question("Rewards 1, 0, 2 for \"5\", \"6\", \"2 + 3 = 5\": which logit does one GRPO step leave where it is?",
              ("\"5\"", "\"6\"", "\"2 + 3 = 5\"", "none: every logit moves"), 0,
              f"\"5\" has reward 1, exactly the group mean, so A = 0 and its gradient is {grad_grpo[0].item():.1f} (1.7).",
              grad_grpo[0].item() == 0.0),
     Question("At that first step the printed loss is 0. What is the gradient?",
              ("0 as well: nothing is learned", "REINFORCE's, −A/G: the loss value says nothing about it",
               "undefined until the second step"), 1,
              f"The gradient is −A/G = {(-A_flat / G).numpy().round(4).tolist()} although the loss is 0 (1.7, 1.8).",
              torch.allclose(grad_grpo, -A_flat / G)),
     Question("The group-mean baseline's estimate has a smaller variance than b = J. Is it the better baseline?",
              ("yes: lower variance is better", "no: its mean is shrunk by (G−1)/G; unbiased (leave-one-out) its "
               "variance is above b = J's", "no: it is biased upwards"), 1,
              f"Exact variances: group mean {var_group.sum():.4f} (mean ¾ ∇J), b = J {var_J.sum():.4f}, "
              f"leave-one-out {var_loo.sum():.4f} (1.6).",
              bool(var_group.sum() < var_J.sum() < var_loo.sum())),
     Question("With ε = 0.2, 20 updates on one group (learning rate 1): how far does \"2 + 3 = 5\" move?",
              (f"{rho_clip[2]:.2f} × its old probability, no further after the first update",
               f"{rho_free[2]:.2f} × its old probability", "1.20 × exactly, the clip edge"), 0,
              f"The first update overshoots the edge 1.2 and the other 19 have zero gradient; almost without the clip "
              f"(ε = 0.99) it reaches {rho_free[2]:.2f} (1.6).",
              bool(1.2 < rho_clip[2] < 1.5 and rho_free[2] > 2.0)),
     Question("Subtracting a constant baseline b from every reward changes ...",
              ("the expected gradient", "only the variance of the estimate", "nothing at all"), 1,
              "E[∇log π] = 0, so any constant b keeps the mean ∇J; the variance is a parabola in b (1.6).",
              torch.allclose(mean_J, grad_exact, atol=1e-6) and bool(var_J.sum() < var_plain.sum())))

# %% [markdown]
# ## Next
#
# [02_advantages.ipynb](02_advantages.ipynb): group-relative advantages for many questions at once, the
# group size $G$, sample vs population std, and the groups that teach nothing.
