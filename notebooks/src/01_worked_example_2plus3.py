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
# - score a group of three answers and turn the scores into group-relative advantages $A = [0, -1, +1]$,
#   and see why the *sample* standard deviation makes them come out exactly so;
# - train a three-answer policy with the GRPO update (`group_advantages` + `grpo_loss` + autograd) and
#   watch "prefer 3, keep 1, avoid 2" happen, step after step;
# - check two facts that puzzle many first GRPO runs: a group whose answers all score the same gives
#   exactly zero gradient, and the loss is 0 at the start of every step while its gradient is not.
#
# **Needs:** nothing; this is the first notebook (`pip install -e ".[dev]"` from the README).
#
# **Runs in:** ~15 s on a laptop CPU.
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
from grpo_lib.course.exercises.ex01 import check_group_advantages
from grpo_lib.loss import grpo_loss              # notebook 04 takes it apart; here we only use it
from grpo_lib.course.notebook import markdown_table, show_source
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

# %%
legend_names = ['q', 'q_ids', 'G', 'o', 'o_ids', 'o_len', 'r', 'A', 'pi_theta', 'logp_old', 'logp_ref', 'logp', 'rho', 'epsilon', 'beta', 'mu', 'kl', 'mask']
for name in legend_names:                        # the table above uses the package legend's names
    assert f"``{name}``" in grpo_lib.__doc__, name

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

# %%
assert q == "What is 2 + 3?"
assert o == ["5", "6", "2 + 3 = 5"] and G == 3

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

# %%
assert r_list == [1.0, 0.0, 2.0]

# %% [markdown]
# Because it reads the last number, the rule also scores answers the tutorial did not list: spacing
# does not matter, a trailing period is fine, and a wrong result scores 0 even with the working shown.

# %%
more = ["2+3=5", "The answer is 5.", "2 + 3 = 6", "5 = 2 + 3", "five"]
markdown_table(["answer $o$", "reward $r$"], [[repr(t), score_answer(t)] for t in more], floatfmt="g")

# %%
assert [score_answer(t) for t in more] == [2.0, 1.0, 0.0, 0.0, 0.0]

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

# %%
assert r.shape == (1, 3), r.shape
assert r_mean.item() == 1.0

# %% [markdown]
# ## 1.4 Step 4: compare each score with the mean
#
# The tutorial: "5" → 0 (equal to the mean), "6" → −1 (below), "2 + 3 = 5" → +1 (above).
# That is the numerator $r_i - \operatorname{mean}(r)$:

# %%
A = r - r_mean                                   # (N, G)
A

# %%
assert torch.equal(A, torch.tensor([[0.0, -1.0, 1.0]]))

# %% [markdown]
# The tutorial stops here, but the formula also divides by the standard deviation. For this group that
# changes nothing, because the **sample** standard deviation (divide by $G - 1$, PyTorch's default) of
# $[1, 0, 2]$ is exactly 1:
#
# $$\operatorname{std}(r) = \sqrt{\frac{(1-1)^2 + (0-1)^2 + (2-1)^2}{G-1}} = \sqrt{\frac{2}{2}} = 1.$$

# %%
std = r.std(dim=-1, keepdim=True)                # (N, 1); correction=1 (sample std) is the default
std

# %%
assert std.item() == 1.0
assert torch.equal((r - r_mean) / std, A)        # dividing by 1 leaves A = [0, -1, +1]

# %% [markdown]
# The library's `group_advantages` computes the same thing. Its small safety floor on the std
# (`std_floor`, next section) is switched off here, so the match is exact. From now on we use the
# library.

# %%
A_lib = group_advantages(r, std_floor=0.0)       # (N, G)
A_lib

# %%
assert torch.equal(A_lib, A)

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

# %%
pop = 1 / math.sqrt(2 / 3)                       # 1.2247
assert torch.allclose(A_by["population std"], torch.tensor([0.0, -pop, pop]))
assert torch.allclose(A_by["sample std + 1e-4 (library default, TRL)"],
                      torch.tensor([0.0, -1 / 1.0001, 1 / 1.0001]))
assert torch.equal(A_by["sample std (tutorial)"], A_by["centre only (Dr. GRPO)"])
for a in A_by.values():
    assert abs(a.sum().item()) < 1e-6            # every variant sums to 0 within the group
    assert torch.equal(torch.sign(a), torch.tensor([0.0, -1.0, 1.0]))   # same signs, same order

# %% [markdown]
# The signs and the ordering never change; only the size of the push does. From here on the update
# uses the library default, so the advantages it sees are $[0, -0.9999, +0.9999]$. Notebook 02 shows
# when the choice matters (small $G$, a group with a single right answer).

# %% [markdown]
# ## 1.6 Step 5: a policy to update
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

# %%
assert torch.allclose(pi_theta.probs(), torch.full((3,), 1 / 3))

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
assert torch.allclose(grad_grpo, -A_flat / G)
assert grad_grpo[2] < 0 and grad_grpo[1] > 0 and grad_grpo[0].item() == 0.0

# %% [markdown]
# ## 1.7 Why the loss is 0 while the gradient is not (a preview of notebook 04)
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
# $\pi_{ref}$, the loss is $\beta$ times the KL estimate, still no measure of progress; section 1.9
# checks it.)

# %%
pi_pg = ToyPolicy()
loss_pg = -(A_flat * pi_pg.log_prob(o_idx)).mean()    # REINFORCE, baseline = group mean
loss_pg.backward()
pi_pg.logits.grad

# %%
assert loss.item() == 0.0
assert stats["ratio_mean"].item() == 1.0 and stats["kl"].item() == 0.0
assert stats["clip_fraction"].item() == 0.0      # ρ = 1 sits inside [1 - ε, 1 + ε]: nothing is clipped
assert grad_grpo.abs().sum() > 0
assert torch.allclose(pi_pg.logits.grad, grad_grpo)

# %% [markdown]
# ## 1.8 One step of SGD, then repeat
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

# %%
assert torch.allclose(pi_theta.logits.detach(), A_flat / 3)
assert pi_theta.logits[0].item() == 0.0                      # keep 1: no push on "5"
assert p_after[2] > p_before[2] and p_after[1] < p_before[1]  # prefer 3, avoid 2
assert p_after[0] < p_before[0]                              # ...and "5" still loses a little mass
assert torch.allclose(p_after, torch.tensor([0.3213, 0.2302, 0.4484]), atol=1e-4)

# %% [markdown]
# "This process is repeated." `train_toy` repeats the step with the tutorial's group, `("5", "6",
# "2 + 3 = 5")`, every time, and records the three probabilities after each update. $eta = 0$ here,
# so only the advantages act:

# %%
history_fixed = train_toy(steps=15, G=3, lr=1.0, group="fixed", beta=0.0)
toy_probabilities(history_fixed, title='the same group every step: "5", "6", "2 + 3 = 5"')

# %% [markdown]
# "2 + 3 = 5" rises at every step and "6" falls at every step. With the same group each time the
# advantages never change, so each step adds the same $A/3$ to the logits: they move on straight lines,
# and the logit of "5" stays at 0 while its probability drains away to "2 + 3 = 5".

# %%
p = history_fixed["probs"]                       # (steps + 1, K)
dp = p[1:] - p[:-1]                              # (steps, K) change per step
assert (dp[:, 2] > 0).all() and (dp[:, 1] < 0).all()         # prefer 3, avoid 2, every step
assert (dp[:, 0] < 0).all()                                  # "5" drains away...
assert torch.equal(history_fixed["logits"][:, 0], torch.zeros(16))   # keep 1: its logit never moves
steps_col = torch.arange(16.0)[:, None]
assert torch.allclose(history_fixed["logits"], steps_col * A_flat / 3, atol=1e-5)  # straight lines
assert p[-1, 2] > 0.99
assert torch.equal(history_fixed["loss"], torch.zeros(15))   # the loss was 0 at every step

# %% [markdown]
# ## 1.9 Sampled groups: what GRPO really does
#
# The fixed group is the tutorial's cartoon. Real GRPO samples each step's group from the current
# policy. At first the groups are mixed and the update looks like the one above. As the policy improves,
# more and more groups are all "2 + 3 = 5": every answer scores 2, every $A_i$ is 0 (section 1.10), and
# learning stops. Only the weak KL pull toward the uniform $\pi_{ref}$ ($\beta = 0.04$) is left, so the
# curve goes flat just short of 1. Here $G = 4$ answers are sampled per step, and the loss of every
# step is exactly $\beta$ times the mean KL estimate: the advantage part is 0 at $\rho = 1$, as in 1.7.

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

# %%
p_s = history_sampled["probs"]
assert p_s[-1].argmax().item() == 2 and p_s[-1, 2] > 0.9       # converged to "2 + 3 = 5"
assert (groups[:10] != groups[:10, :1]).any()                  # mixed groups at first
assert (groups[-10:] == 2).all()                               # ...at the end every group is all "2 + 3 = 5"
assert 0.9 < p_s[-1, 2] < 0.99                                 # flat just short of 1
assert torch.allclose(history_sampled["loss"], 0.04 * history_sampled["kl"], atol=1e-6)   # loss = β·KL
assert history_sampled["reward_mean"][-10:].mean() > history_sampled["reward_mean"][:10].mean()
assert (p_s[-10:, 2] - p_s[-1, 2]).abs().max() < 1e-3          # flat at the end: no signal left

# %% [markdown]
# ## 1.10 The all-equal group: (2, 2, 2) gives exactly zero gradient
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

# %%
assert torch.equal(step.r, torch.tensor([2.0, 2.0, 2.0]))
assert torch.equal(step.A, torch.zeros(3))
assert torch.equal(step.grad, torch.zeros(3))                  # exactly zero, not just small
assert torch.equal(pi_theta.logits.detach(), before)           # the policy did not move


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

# %%
assert torch.equal(grad_for_group([1, 1, 1]), torch.zeros(3))                 # all wrong: no signal
assert torch.equal(grad_for_group([0, 0, 0]), torch.zeros(3))                 # all "5": no signal
assert grad_for_group([2, 2, 2], ref_logits=torch.zeros(3)).abs().sum() > 0   # the KL pull alone


# %% [markdown]
# ## Summary
#
# GRPO scores a group of answers to one question and uses the group as its own baseline: for "5", "6",
# "2 + 3 = 5" the scores 1, 0, 2 have mean 1 and sample std exactly 1, so the advantages are
# $[0, -1, +1]$ (±1.22 with the population std, ±0.9999 with the 1e-4 floor). One update with those
# advantages pushes "2 + 3 = 5" up, "6" down and leaves the logit of "5" alone, and repeating it drives
# the policy to the answer that shows its working. At $\mu = 1$ the loss value is 0 while its gradient is
# REINFORCE's, and a group whose answers all score the same contributes exactly nothing.
#
# ## What this notebook added to grpo_lib
#
# - `grpo_lib.toy.score_answer`: the 0 / 1 / 2 rule of section 1.2, tested in `tests/test_toy.py`.
# - `grpo_lib.toy.ToyPolicy`: a softmax over the three answers (1.6), with `probs`, `log_prob`, `sample`.
# - `grpo_lib.toy.grpo_step`: one GRPO step on one group through `group_advantages` and `grpo_loss` (1.8).
# - `grpo_lib.toy.train_toy`: repeat `grpo_step` with a fixed or sampled group, recording π_θ (1.8, 1.9).
# - `grpo_lib.course.plots.toy_probabilities`, `toy_training_panels`: the figures of 1.8 and 1.9, tested in
#   `tests/test_course_plots.py`.
# - `grpo_lib.course.notebook.show_source`, `markdown_table`: the display helpers used above.
# - `grpo_lib.course.exercises.ex01.check_group_advantages`: the checker of exercise 1.1, tested in
#   `tests/test_course_exercises_ex01.py`.
#
# Used here, taught later: `grpo_lib.advantages.group_advantages` (notebook 02) and
# `grpo_lib.loss.grpo_loss` (notebook 04).
#
# ## Exercises
#
# **1.1 · The advantages by hand (fill in).** Write `my_group_advantages(r)` for one group of rewards `r`
# of shape `(G,)`: $A_i = (r_i - \operatorname{mean}(r)) / (\operatorname{std}(r) + 10^{-4})$ with the
# *sample* std of section 1.5. The checker tries the 2+3 group first, then other groups, one of them with
# all rewards equal, and tells you which group failed. Compare with `group_advantages` when done.

# %% tags=["solution"]
def my_group_advantages(r):          # r: (G,) rewards of one group -> A: (G,)
    ### BEGIN SOLUTION
    mean = r.mean()
    std = r.std()                    # sample std: divide by G - 1 (torch's default, correction=1)
    return (r - mean) / (std + 1e-4)
    ### END SOLUTION

check_group_advantages(my_group_advantages);

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
# ## Next
#
# [02_advantages.ipynb](02_advantages.ipynb): group-relative advantages for many questions at once, the
# group size $G$, sample vs population std, and the groups that teach nothing.
