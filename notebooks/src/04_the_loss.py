# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · The loss
#
# > From per-token log-probabilities to the one number that `loss.backward()` differentiates: the ratio,
# > clipping with ε, the k3 KL with β, and how the tokens are averaged.
#
# You will:
# - compute per-token log-probabilities from a Qwen2 model the way the training loop does, and see why the
#   tutorial's naive way needs tens of gigabytes at Qwen's vocabulary;
# - move **ε** and **β** with sliders and watch where the clipped surrogate and the KL term push a token, and
#   where they stop pushing;
# - prove with autograd why the loss reads 0 at the first step while its gradient is not 0, and make
#   clipping bind by updating more than once per batch (μ > 1);
# - compare the four `loss_type` normalisations on a group with a short right and a long wrong answer, then
#   run one real GRPO step on the course's tiny model.
#
# **Needs:** notebooks 01 and 02 (group-relative advantages). **Runs in:** about 30 s on a laptop CPU.

# %%
# %matplotlib inline
import copy
import math

import torch
from transformers import Qwen2ForCausalLM
from transformers.utils import logging as hf_logging

from grpo_lib.course import plots
from grpo_lib.advantages import group_advantages
from grpo_lib.course.exercises.checking import hint
from grpo_lib.course.exercises.ex04 import check_clipped_tokens, check_exact_kl
from grpo_lib.logprobs import completion_mask, naive_token_logprobs, selective_log_softmax, token_logprobs
from grpo_lib.loss import clipped_surrogate, grpo_loss, kl_k3
from grpo_lib.course.memory import qwen2_5_1_5b_instruct_config
from grpo_lib.models import count_parameters, load_tiny_model, tiny_qwen2_config
from grpo_lib.course.notebook import check, markdown_table, show_source
from grpo_lib.rewards import correctness_reward
from grpo_lib.tasks import PLAIN_PROMPT, addition_problems
from grpo_lib.tokenizer import build_char_tokenizer
from grpo_lib.course.widgets import beta_slider, epsilon_slider

hf_logging.disable_progress_bar()          # no "Loading weights" bars in the outputs
_ = torch.manual_seed(0)                    # assigned: no "<torch._C.Generator at 0x...>" output

# %% [markdown]
# ## The one equation
#
# This notebook is about one equation, the GRPO objective of DeepSeekMath (Shao et al. 2024, eq. 3), which
# the training loop *maximises* (so `grpo_loss` returns its negative):
#
# $$
# \mathcal{J}(\theta) = \frac{1}{G}\sum_{i=1}^{G}\frac{1}{|o_i|}\sum_{t=1}^{|o_i|}
# \Big\{\min\big(\rho_{i,t}\hat A_{i,t},\ \operatorname{clip}(\rho_{i,t}, 1-\epsilon, 1+\epsilon)\,\hat A_{i,t}\big)
# - \beta\,\mathbb{D}_{KL}\big[\pi_\theta \,\|\, \pi_{ref}\big]\Big\},
# \qquad
# \rho_{i,t} = \frac{\pi_\theta(o_{i,t}\mid q, o_{i,<t})}{\pi_{\theta_{old}}(o_{i,t}\mid q, o_{i,<t})}
# $$
#
# For one prompt $q$ you sample $G$ (`G`) completions $o_i$ (`o_ids`), each $|o_i|$ (`o_len = mask.sum(-1)`)
# tokens long. Every token $o_{i,t}$ has a log-probability under the policy being trained,
# $\log\pi_\theta$ (`logp`), under the policy that sampled it, $\log\pi_{\theta_{old}}$ (`logp_old`), and
# under the frozen reference, $\log\pi_{ref}$ (`logp_ref`). Their ratio $\rho_{i,t}$ is `rho`. The
# advantage $\hat A_{i,t}$ (`A`) is the same for every token of $o_i$: the group-relative score from
# notebook 02. The clip range $\epsilon$ is `epsilon`, the KL weight $\beta$ is `beta`, and the per-token KL
# estimate is `kl`. The sections below build each piece, in the order the training loop computes them.

# %% [markdown]
# ## 4.1 Per-token log-probabilities
#
# A causal language model returns a row of $V$ logits at every position, and the row at position $t$
# predicts the token at position $t+1$. So the log-probability of completion token $o_t$ is the
# log-softmax of the *previous* position's logits, read at $o_t$:
#
# $$\log\pi_\theta(o_t \mid q, o_{<t}) = \operatorname{log\_softmax}(\text{logits}_{t-1})[o_t]$$
#
# Take a small random `Qwen2ForCausalLM` (the same architecture as Qwen2.5, 2 layers instead of 28) with the
# course's character tokenizer, and two prompts with $G = 3$ hand-written completions each. The model is
# untrained, so its probabilities are meaningless, but the bookkeeping is exactly the real one.

# %%
tok = build_char_tokenizer()                  # one token per character; <pad> = 0, <eos> = 1, tags are single tokens
model = Qwen2ForCausalLM(tiny_qwen2_config(vocab_size=len(tok), num_hidden_layers=2)).eval()
V = model.config.vocab_size
print(f"V = {V} tokens, {count_parameters(model):,} parameters")

# %%
G = 3
questions = ["What is 2 + 3?", "What is 47 + 85?"]
completions = [
    "<reasoning>2+3=5</reasoning>\n<answer>5</answer>",   # right
    "<answer>6</answer>",                                  # wrong, short
    "<reasoning>2+3=5</reasoning>\n<answer>6</answer>",   # wrong answer after right reasoning
    "<reasoning>7+5=12,4+8+1=13</reasoning>\n<answer>132</answer>",   # right
    "<reasoning>7+5=12,4+8=12</reasoning>\n<answer>122</answer>",     # forgot the carry
    "<answer>132</answer>",                                # right, no reasoning
]
prompts = [PLAIN_PROMPT.format(question=qn) for qn in questions for _ in range(G)]   # each prompt G times
len(prompts), len(completions)

# %% [markdown]
# The training loop keeps prompt and completion in one row: the prompt padded on the left (so every prompt
# ends at the same column), the completion after it, ending in EOS and padded on the right. The completion
# mask marks the tokens that count: 1 up to and including the first EOS.

# %%
q = tok(prompts, return_tensors="pt", padding=True)                                  # prompts padded on the left
o = tok([c + tok.eos_token for c in completions], return_tensors="pt", padding=True,
        padding_side="right")                                                        # completions end in EOS, then pad
input_ids = torch.cat([q.input_ids, o.input_ids], dim=1)                             # (B, P+T)
attention_mask = torch.cat([q.attention_mask, o.attention_mask], dim=1)              # (B, P+T)
B, P = q.input_ids.shape
T = o.input_ids.shape[1]
mask = completion_mask(o.input_ids, eos_token_id=tok.eos_token_id)                   # (B, T): 1 up to and including EOS
o_len = mask.sum(-1)                                                                 # (B,) |o_i|
print(f"B = {B} completions, P = {P} prompt positions, T = {T} completion positions")
o_len

# %% [markdown]
# Each $|o_i|$ is the completion's number of tokens plus its EOS (this character-level tokenizer makes most
# characters one token, and each tag such as `<answer>` a single token), and every position the mask drops is
# padding.
#
# First the tutorial's way, written out: one forward pass over the whole prompt + completion, a log-softmax
# over the whole vocabulary at every position, then `gather` picks the row entry of the token that actually
# came next. Only the last $T$ positions are completion tokens.

# %%
position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)          # (B, P+T): left padding does not shift positions
with torch.no_grad():
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids).logits                 # (B, P+T, V)
logp_all = torch.log_softmax(logits[:, :-1], dim=-1)                 # (B, P+T-1, V): row t predicts token t+1
logp_mine = logp_all.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # (B, P+T-1)
logp_mine = logp_mine[:, -T:]                                        # (B, T): completion tokens only
logits.shape, logp_mine.shape

# %% [markdown]
# `grpo_lib` has that naive version (`naive_token_logprobs`, for comparison) and the one the training loop
# uses, `token_logprobs`. The second asks the model for the last $T+1$ positions only
# (`logits_to_keep=T + 1`: transformers slices the hidden states *before* the LM head, so prompt-position
# logits are never computed) and takes logit minus logsumexp one batch row at a time, so no full
# $(B, T, V)$ log-softmax ever exists. All three agree:

# %%
with torch.no_grad():
    logp_naive = naive_token_logprobs(model, input_ids, attention_mask, logits_to_keep=T)   # (B, T)
    logp = token_logprobs(model, input_ids, attention_mask, logits_to_keep=T)               # (B, T)
    kept = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                 logits_to_keep=T + 1).logits                                              # (B, T+1, V)
print("logits computed: naive", tuple(logits.shape), " token_logprobs", tuple(kept.shape))
(logp - logp_mine).abs().max()

# %% [markdown]
# `logits_to_keep` computed the same last $T+1$ rows of logits as the full pass, and never the prompt's. From
# here on we use the library version.
#
# The row-by-row log-softmax is `selective_log_softmax`. For fp32 logits it is the identity
# $\log\operatorname{softmax}(z)_k = z_k - \operatorname{logsumexp}(z)$, one $(T, V)$ row at a time:

# %%
show_source(selective_log_softmax)

# %% jupyter={"source_hidden": true}
check("4.1 · per-token log-probabilities",
      ("the batch is (B, P+T), the mask (B, T)", input_ids.shape == (B, P + T) and mask.shape == (B, T)),
      ("|o_i| counts tokens plus the EOS", o_len.tolist() == [len(tok(c).input_ids) + 1 for c in completions]),
      ("... fewer than the characters: each tag is one token", all(n < len(c) + 1 for n, c in zip(o_len.tolist(), completions))),
      ("what the mask drops is padding", bool((o.input_ids[mask == 0] == tok.pad_token_id).all())),
      ("naive_token_logprobs equals the written-out version", torch.allclose(logp_naive, logp_mine, atol=1e-5)),
      ("token_logprobs equals it too", torch.allclose(logp, logp_mine, atol=1e-5)),
      ("logits_to_keep computes (B, T+1, V) logits", kept.shape == (B, T + 1, V)),
      ("logits_to_keep's rows are the full pass's last T+1 rows",
       torch.allclose(kept, logits[:, -(T + 1):], atol=1e-4)),
      ("log-probabilities are ≤ 0", bool((logp <= 0).all())))

# %% [markdown]
# ## 4.2 What the naive way costs at Qwen's vocabulary
#
# With $V = 263$ none of this matters. Qwen2.5's vocabulary has 151,936 tokens, and the tutorial's batch is
# 7 prompts × 12 completions = 84 sequences of about 150 prompt + 400 completion tokens. Every number a
# logits tensor holds costs 4 bytes in fp32 and 2 in bf16. The vocabulary size below is read from Qwen2.5's
# configuration (`grpo_lib.course.memory`), not typed in.

# %%
V_qwen = qwen2_5_1_5b_instruct_config().vocab_size     # 151,936
B_tut = 7 * 12                                         # tutorial: N = 7 prompts x G = 12 completions
T_tut = 400                                            # max_completion_length
L_tut = 150 + T_tut                                    # ~150 prompt tokens + the completion: ~550 positions
sizes = {
    "naive: logits at every position (B, L, V)": B_tut * L_tut * V_qwen,
    "naive: logits + their full log_softmax": 2 * B_tut * L_tut * V_qwen,
    "logits_to_keep: completion positions only (B, T+1, V)": B_tut * (T_tut + 1) * V_qwen,
    "selective_log_softmax: one row's temporary (T+1, V)": (T_tut + 1) * V_qwen,
}
markdown_table(["tensor", "numbers", "GB in fp32", "GB in bf16"],
               [(name, f"{n:,}", n * 4 / 1e9, n * 2 / 1e9) for name, n in sizes.items()], floatfmt=".2f")

# %% [markdown]
# So the naive version needs about 14 GB for *one* bf16 copy of the logits (28 GB in fp32), and a second
# copy for the full log-softmax, before any gradient: over 50 GB in fp32. Keeping only the completion
# positions (401 of about 550) saves the prompt's quarter, and going row by row removes the second copy: its
# temporary is under a quarter of a GB. The $(B, T, V)$ logits themselves remain
# the largest tensor of a GRPO step, which is why out-of-memory errors in GRPO usually point at the loss
# (`trl#2709`, `trl#3678`), and why `token_logprobs` can also run the forward `chunk_size` rows at a time.

# %% jupyter={"source_hidden": true}
check("4.2 · what the naive way costs",
      ("Qwen2.5's vocabulary: 151,936 tokens", V_qwen == 151_936),
      ("one bf16 copy of the naive logits: about 14 GB", 13.9 < B_tut * L_tut * V_qwen * 2 / 1e9 < 14.1),
      ("fp32 logits + their log-softmax: over 50 GB", 2 * B_tut * L_tut * V_qwen * 4 / 1e9 > 50),
      ("the row-wise temporary: under a quarter GB", (T_tut + 1) * V_qwen * 4 / 1e9 < 0.25),
      ("logits_to_keep keeps 70-75% of the positions", 0.70 < (T_tut + 1) / L_tut < 0.75))

# %% [markdown]
# ## 4.3 The ratio and the clipped surrogate (ε)
#
# The ratio compares the policy being updated with the one that sampled the token,
# $\rho = \pi_\theta / \pi_{\theta_{old}} = \exp(\log\pi_\theta - \log\pi_{\theta_{old}})$, computed from
# log-probabilities (`rho = torch.exp(logp - logp_old)`). The surrogate multiplies it by the advantage and
# then takes the pessimistic of two versions, the plain one and one whose ratio is clipped to
# $[1-\epsilon, 1+\epsilon]$:
#
# $$\min\big(\rho A,\ \operatorname{clip}(\rho, 1-\epsilon, 1+\epsilon)\,A\big)$$
#
# Write it for a few ratios, for a token with $A = +1$ and one with $A = -1$:

# %%
epsilon = 0.2
rho = torch.tensor([0.5, 0.8, 1.0, 1.2, 1.5])         # (5,) a few ratios pi_theta / pi_old
A = torch.tensor([1.0, -1.0])                          # (2,) a better- and a worse-than-average token
surr_mine = torch.minimum(rho * A[:, None],            # (2, 5); A[:, None] is (2, 1)
                          rho.clamp(1 - epsilon, 1 + epsilon) * A[:, None])
surr_mine

# %% [markdown]
# Read the two rows. With $A > 0$ the surrogate grows with $\rho$ until $1+\epsilon$ and then stays at
# $(1+\epsilon)A$: making the good token even more likely than $1+\epsilon$ times $\pi_{\theta_{old}}$ earns
# nothing more. With $A < 0$ it rewards pushing $\rho$ down only until $1-\epsilon$. The `min` makes the
# clipping one-sided: a token that moved the *wrong* way (a good token that became less likely, $\rho < 1-\epsilon$
# with $A > 0$) is not clipped, and keeps its full gradient. The figure shows both cases over all
# $\rho \in (0, 2]$; the hatched region is where the surrogate is flat, so those tokens get **no gradient**.

# %%
plots.clipped_surrogate_vs_ratio(epsilon=0.2)

# %% [markdown]
# Now move ε. In a live notebook the slider redraws the same figure (it does not render on GitHub's static
# view, which is why the figure above is drawn by a plain call first).

# %%
epsilon_slider()

# %% [markdown]
# What to look for: push ε toward 0 and the grey band shrinks onto $\rho = 1$, so the flat part starts right
# at $\rho = 1$: no token gains anything by moving further from $\pi_{\theta_{old}}$ in the direction its
# advantage favours. Widen ε and the policy may move further per batch before the gradient switches off.
# Measure that claim with autograd at two values of ε, just beyond, inside and just below the clip range:

# %%
slopes = {}
for eps in (0.1, 0.3):
    rho_t = torch.tensor([1 + eps + 0.05, 1.0, 1 - eps - 0.05], requires_grad=True)   # beyond, inside, below
    grad_pos, = torch.autograd.grad(clipped_surrogate(rho_t, torch.tensor(1.0), eps).sum(), rho_t)
    grad_neg, = torch.autograd.grad(clipped_surrogate(rho_t, torch.tensor(-1.0), eps).sum(), rho_t)
    slopes[eps] = (grad_pos.tolist(), grad_neg.tolist())
    print(f"ε = {eps}: slope at ρ = 1+ε+0.05, 1, 1−ε−0.05:  A = +1 {grad_pos.tolist()}   A = −1 {grad_neg.tolist()}")

# %% [markdown]
# At both values of ε the slope is zero beyond $1+\epsilon$ for $A > 0$ and below $1-\epsilon$ for $A < 0$, and
# the full $\pm 1$ everywhere else.

# %% jupyter={"source_hidden": true}
check("4.3 · the ratio and the clipped surrogate",
      ("the written-out surrogate is the library's clipped_surrogate",
       torch.allclose(surr_mine, clipped_surrogate(rho.expand(2, 5), A, epsilon))),
      ("A = +1: ρ up to 1 + ε, then flat at 1.2",
       surr_mine[0].tolist() == [0.5, 0.800000011920929, 1.0, 1.2000000476837158, 1.2000000476837158]),
      ("A = −1: flat at −0.8 below 1 − ε, then −ρ",
       torch.allclose(surr_mine[1], torch.tensor([-0.8, -0.8, -1.0, -1.2, -1.5]))),
      ("A > 0: zero gradient beyond 1 + ε (ε = 0.1 and 0.3)", all(slopes[e][0] == [0.0, 1.0, 1.0] for e in slopes)),
      ("A < 0: zero gradient below 1 − ε (ε = 0.1 and 0.3)", all(slopes[e][1] == [-1.0, -1.0, 0.0] for e in slopes)))

# %% [markdown]
# ### From a sequence to its tokens: where the ratio and the clip act
#
# The paper writes the policy of a whole completion, $\pi_\theta(o \mid q)$; the model gives one distribution
# per position. The chain rule of probability joins them:
#
# $$\pi_\theta(o \mid q) = \prod_{t=1}^{|o|} \pi_\theta(o_t \mid q, o_{<t}), \qquad
#   \log\pi_\theta(o \mid q) = \sum_{t=1}^{|o|} \log\pi_\theta(o_t \mid q, o_{<t}),$$
#
# so the per-token log-probabilities of 4.1 sum to the log-probability of the completion. GRPO's objective
# (DeepSeekMath eq. 3) puts the ratio and the clip *inside* the token average: every token has its own
# $\rho_{i,t} = \pi_\theta(o_{i,t} \mid q, o_{i,<t}) / \pi_{\theta_{old}}(o_{i,t} \mid q, o_{i,<t})$, clipped on its
# own, with its completion's advantage $A_i$. A token that has moved far enough stops pushing; its neighbours
# keep theirs. The ratio of whole completions is the *product* of the token ratios, so it compounds with length:
# a drift of 1% per token is $1.01^{400} \approx 54$ over the tutorial's 400 tokens, far outside any clip range.
# GSPO (Zheng et al. 2025, used for Qwen3) chose a sequence-level ratio on purpose, but normalised by length: the
# geometric mean $s_i = \big(\pi_\theta(o_i \mid q)/\pi_{\theta_{old}}(o_i \mid q)\big)^{1/|o_i|}
# = \exp\big(\frac{1}{|o_i|}\sum_t (\log\pi_\theta - \log\pi_{\theta_{old}})\big)$, one number per completion,
# clipped with a much smaller range (ε = 3e-4 to 4e-4 in its paper), so all tokens of a completion share one
# weight. TRL offers it as `importance_sampling_level="sequence"`.
#
# All three on one completion, the longest of 4.1's batch. For $\pi_\theta$ take a copy of the model with every
# weight nudged by a little noise (an illustration of a policy a few updates after $\pi_{\theta_{old}}$, not a
# training run):

# %%
i_long = int(o_len.argmax())                                   # the longest completion of the batch
nudged = copy.deepcopy(model)
with torch.no_grad():
    noise = torch.Generator().manual_seed(0)
    for weight in nudged.parameters():
        weight.add_(torch.randn(weight.shape, generator=noise) * 0.005)
    logp_nudged = token_logprobs(nudged, input_ids, attention_mask, logits_to_keep=T)    # (B, T)
keep = mask[i_long].bool()
lp_old, lp_new = logp[i_long][keep], logp_nudged[i_long][keep]       # (|o|,) log π(o_t | q, o_<t)
rho_tok = (lp_new - lp_old).exp()                                    # GRPO: one ratio per token
rho_seq = (lp_new.sum() - lp_old.sum()).exp()                        # π_θ(o|q) / π_old(o|q): their product
rho_gspo = (lp_new - lp_old).mean().exp()                            # GSPO: their geometric mean
inside = ((rho_tok - 1).abs() <= 0.2)
print(f"|o| = {int(keep.sum())} tokens; log π_old(o|q) = Σ_t log π_old(o_t|q,o_<t) = {lp_old.sum():.3f}")
print(f"token ratios: from {rho_tok.min():.3f} to {rho_tok.max():.3f}, {int(inside.sum())} of {len(rho_tok)} inside "
      f"[0.8, 1.2]")
print(f"sequence ratio (their product) {rho_seq:.3f};  GSPO's geometric mean {rho_gspo:.4f}")


# %% [markdown]
# **The mistake two public courses made.** They computed the ratio from *summed* log-probabilities,
# `ratio = exp(logp.sum(-1) - logp_old.sum(-1))`, and clipped that one number with the token-level ε = 0.2. The
# cell below takes the gradient of both losses with respect to each token's $\log\pi_\theta$, for this completion
# with $A = +1$ and with $A = -1$:

# %%
def grad_per_token(A, summed):
    """d(loss)/d log π_θ(o_t) for one completion: GRPO's per-token clip, or the clip of the summed ratio."""
    lp = lp_new.clone().requires_grad_(True)
    if summed:
        loss = -clipped_surrogate((lp.sum() - lp_old.sum()).exp(), torch.tensor(A), 0.2)
    else:
        loss = -clipped_surrogate((lp - lp_old).exp(), torch.tensor(A), 0.2).mean()
    return torch.autograd.grad(loss, lp)[0]

seq_grads = {(A, summed): grad_per_token(A, summed) for A in (1.0, -1.0) for summed in (False, True)}
markdown_table(["A", "ratio", "tokens with zero gradient", "mean |gradient| per token"],
               [(f"{A:+.0f}", "summed (the mistake)" if summed else "per token (GRPO)",
                 f"{int((g == 0).sum())} of {len(g)}", f"{g.abs().mean().item():.4f}")
                for (A, summed), g in seq_grads.items()])

# %% [markdown]
# Read the table. Per token, the clip silences only the tokens that moved past 1 ± ε in the direction their
# advantage favours, and every other token gets $\rho_t A/|o|$, about a $1/|o|$ share of the completion's push.
# The nudged policy made this completion less likely as a whole: the summed ratio, the product of 24 token
# ratios, is below $1 - \epsilon$ although most tokens are inside the range. Clipped as one number, it silences
# every token at once when $A = -1$ (the completion teaches nothing), and when $A = +1$ it is not clipped at all
# (the `min` keeps the unclipped term below $1 - \epsilon$) and every token gets the whole ratio as its push,
# with no $1/|o|$ average: several times the per-token push. Both effects grow with the completion's length,
# which is why the paper's clip is per token, and why GSPO, which does want one number per completion, takes
# the $|o|$-th root first and clips it with a far smaller ε.

# %% jupyter={"source_hidden": true}
check("4.3 · from a sequence to its tokens",
      ("the completion has 24 tokens; 1.01^400 ≈ 54", len(lp_new) == 24 and round(1.01**400) == 54),
      ("chain rule: Σ_t log π(o_t|q,o_<t) is the log of the product of the token probabilities",
       torch.isclose(lp_old.double().sum().exp(), lp_old.double().exp().prod(), rtol=1e-9)),
      ("the sequence ratio is the product of the token ratios", torch.isclose(rho_seq, rho_tok.prod(), rtol=1e-4)),
      ("GSPO's ratio is their geometric mean, between the smallest and largest token ratio",
       torch.isclose(rho_gspo, rho_tok.prod() ** (1 / len(rho_tok)), rtol=1e-4)
       and bool(rho_tok.min() <= rho_gspo <= rho_tok.max())),
      ("most token ratios are inside [0.8, 1.2] ...", bool(inside.float().mean() > 0.5)),
      ("... while the sequence ratio is outside it", bool((rho_seq - 1).abs() > 0.2)),
      ("per token, some tokens keep a gradient for either sign of A",
       all(bool((seq_grads[(A, False)] != 0).any()) for A in (1.0, -1.0))),
      ("the nudged policy made the completion less likely: the summed ratio is below 1 − ε", bool(rho_seq < 0.8)),
      ("summed, A = −1: every token's gradient is exactly 0", bool((seq_grads[(-1.0, True)] == 0).all())),
      ("summed, A = +1: unclipped, every token's push is the summed ratio itself",
       torch.allclose(seq_grads[(1.0, True)].abs(), rho_seq.expand(len(lp_new)), rtol=1e-4)),
      ("... several (over 5) times the mean per-token push",
       bool(seq_grads[(1.0, True)].abs().mean() > 5 * seq_grads[(1.0, False)].abs().mean())))

# %% [markdown]
# ## 4.4 The KL term: the k3 estimator
#
# The exact $\mathrm{KL}(\pi_\theta\,\|\,\pi_{ref}) = \sum_o \pi_\theta(o)\log\frac{\pi_\theta(o)}{\pi_{ref}(o)}$
# is a sum over the whole vocabulary at every position. The training loop does compute the policy's full
# logits, but it *keeps* only the sampled tokens' log-probabilities (`selective_log_softmax`, row by row, 4.2):
# the exact KL would also need $\pi_{ref}$'s whole distribution at every completion position, another
# $(B, T+1, V)$ tensor:

# %%
exact_kl_extra_gb = B_tut * (T_tut + 1) * V_qwen * 2 / 1e9       # π_ref's logits at the tutorial's batch, bf16
print(f"π_ref's (B, T+1, V) = ({B_tut}, {T_tut + 1}, {V_qwen:,}) logits in bf16: {exact_kl_extra_gb:.1f} GB")

# %% [markdown]
# So DeepSeekMath estimates the KL per sampled token with
#
# $$\mathbb{D}_{KL} \approx \frac{\pi_{ref}}{\pi_\theta} - \log\frac{\pi_{ref}}{\pi_\theta} - 1 = e^{d} - d - 1,
# \qquad d = \log\pi_{ref}(o_t) - \log\pi_\theta(o_t),$$
#
# Schulman's "k3" (`kl_k3`). The plain log-ratio $k_1 = \log\pi_\theta(o_t) - \log\pi_{ref}(o_t) = -d$ is
# also an unbiased estimate. Compare them on a 4-token vocabulary, small enough for the exact sum:

# %%
p_theta = torch.tensor([0.1, 0.2, 0.3, 0.4])              # pi_theta over a 4-token vocabulary
p_ref = torch.tensor([0.4, 0.4, 0.1, 0.1])                # pi_ref
exact_kl = (p_theta * (p_theta / p_ref).log()).sum()      # KL(pi_theta || pi_ref): the full sum
exact_kl

# %%
gen = torch.Generator().manual_seed(0)
o_s = torch.multinomial(p_theta, 20_000, replacement=True, generator=gen)   # (S,) tokens sampled from pi_theta
logp_s, logp_ref_s = p_theta.log()[o_s], p_ref.log()[o_s]                   # (S,) all the loop knows per token
d = logp_ref_s - logp_s                                                     # (S,)
k3_mine = d.exp() - d - 1                                                   # (S,)
k3 = kl_k3(logp_s, logp_ref_s)                                              # (S,) the library's version
k1 = logp_s - logp_ref_s                                                    # (S,) the plain log-ratio
markdown_table(["estimator", "mean over 20,000 tokens", "smallest value", "share of tokens < 0"],
               [("k1 = log(pi_theta/pi_ref)", k1.mean(), k1.min(), (k1 < 0).float().mean()),
                ("k3 = e^d - d - 1", k3.mean(), k3.min(), (k3 < 0).float().mean()),
                ("exact KL", exact_kl, "", "")])

# %% [markdown]
# Both estimators average to the exact KL: the figure shows each sampled token's value (left) and the
# running means (right). Weighted by $\pi_\theta$ over the four tokens, k3's mean *is* the exact KL (it is
# unbiased), and the mean over 20,000 samples lies within 3 standard errors of it. k1 is negative whenever the
# sampled token is *less* likely under $\pi_\theta$ than under $\pi_{ref}$ (here on 30% of the tokens), so a
# per-token or small-batch "KL" logged with k1 can read below zero ("why is my KL negative?"). k3 adds
# $e^d - 1$, whose mean under $\pi_\theta$ is $\sum_o \pi_{ref}(o) - 1 = 0$, and stays $\ge 0$ on every token.

# %%
plots.kl_estimators(k1[:5000], k3[:5000], exact_kl.item())

# %% [markdown]
# **"That's not the KL gradient."** The *value* of k3 is an unbiased estimate of
# $\mathrm{KL}(\pi_\theta\|\pi_{ref})$. What `loss.backward()` sees is different: the tokens were sampled
# from $\pi_\theta$, and that sampling is not differentiated. Take the expectation exactly (weights
# $\pi_\theta(o)$, detached, as sampling gives them) and let autograd compare: the k3 term in the loss has
# the gradient of the *other* KL, $\mathrm{KL}(\pi_{ref}\|\pi_\theta)$. Multiplying k3 by the ratio
# $\pi_\theta / \pi_{\theta_{old}}$ (DeepSeek-V3.2's correction, TRL's `use_bias_correction_kl`) gives the
# gradient of the KL the paper writes.

# %%
z = p_theta.log().clone().requires_grad_(True)             # logits of a 4-token policy pi_theta
logp_v = torch.log_softmax(z, dim=-1)                      # (4,)
w = logp_v.exp().detach()                                  # pi_theta(o): how often each token is sampled
objectives = {
    "KL(pi_theta ‖ pi_ref)": (logp_v.exp() * (logp_v - p_ref.log())).sum(),
    "KL(pi_ref ‖ pi_theta)": (p_ref * (p_ref.log() - logp_v)).sum(),
    "E[k3] as in the loss": (w * kl_k3(logp_v, p_ref.log())).sum(),
    "E[rho * k3] (V3.2 fix)": (w * (logp_v - logp_v.detach()).exp() * kl_k3(logp_v, p_ref.log())).sum(),
}
grads = {name: torch.autograd.grad(value, z, retain_graph=True)[0] for name, value in objectives.items()}
markdown_table(["objective", "value", "gradient wrt the 4 logits"],
               [(name, objectives[name].item(), [round(g, 4) for g in grads[name].tolist()]) for name in grads])

# %% [markdown]
# The value of E[k3] is KL($\pi_\theta\|\pi_{ref}$), 0.6068; its gradient is the other KL's, and clearly not the
# one the paper writes. With the ratio in front, value and gradient are both the paper's KL.

# %% jupyter={"source_hidden": true}
check("4.4 · the KL term",
      ("the exact KL would need 10.2 GB more, for π_ref's logits alone", 10.1 < exact_kl_extra_gb < 10.3),
      ("kl_k3 is e^d − d − 1", torch.allclose(k3, k3_mine, atol=1e-6)),
      ("k3 is never negative", bool((k3 >= 0).all())),
      ("k1 is, on over 25% of the sampled tokens", bool((k1 < 0).float().mean() > 0.25)),
      ("E[k3] under π_θ is the exact KL: unbiased",
       torch.allclose((p_theta * kl_k3(p_theta.log(), p_ref.log())).sum(), exact_kl)),
      ("the sample mean is within 3 standard errors", bool(abs(k3.mean() - exact_kl) < 3 * k3.std() / len(o_s) ** 0.5)),
      ("k3 − k1 = e^d − 1 has mean 0 under π_θ", bool(abs((p_theta * (p_ref / p_theta - 1)).sum()) < 1e-6)),
      ("the value of E[k3] is KL(π_θ ‖ π_ref)",
       torch.allclose(objectives["E[k3] as in the loss"], objectives["KL(pi_theta ‖ pi_ref)"])),
      ("its gradient is KL(π_ref ‖ π_θ)'s",
       torch.allclose(grads["E[k3] as in the loss"], grads["KL(pi_ref ‖ pi_theta)"], atol=1e-6)),
      ("the gradient of E[k3] is not KL(π_θ ‖ π_ref)'s",
       not torch.allclose(grads["E[k3] as in the loss"], grads["KL(pi_theta ‖ pi_ref)"], atol=1e-2)),
      ("E[ρ k3] has the gradient of KL(π_θ ‖ π_ref)",
       torch.allclose(grads["E[rho * k3] (V3.2 fix)"], grads["KL(pi_theta ‖ pi_ref)"], atol=1e-6)))

# %% [markdown]
# ## 4.5 The whole per-token objective (β)
#
# Per token, GRPO maximises the clipped surrogate minus β times the KL estimate:
#
# $$\min\big(\rho A,\ \operatorname{clip}(\rho, 1-\epsilon, 1+\epsilon)A\big) - \beta\,k_3$$
#
# To draw it against $\rho$, take a token where $\pi_{ref} = \pi_{\theta_{old}}$, which holds at the first
# step of training (both are the starting model). Then $d = -\log\rho$ and $k_3 = 1/\rho + \log\rho - 1$,
# which is 0 at $\rho = 1$ and grows on both sides. β is drawn at 0.5 here so that the KL term is visible;
# the paper's β = 0.04 bends the curves twelve times less.

# %%
plots.per_token_objective_vs_ratio(beta=0.5, epsilon=0.2)

# %%
beta_slider()


# %% [markdown]
# What to look for: at β = 0 the curves are the clipped surrogate of 4.3, flat outside the clip range. Raise
# β: outside the clip range the KL term is now the only one with a gradient, and it always points back to
# $\rho = 1$ ($\pi_\theta = \pi_{ref}$); inside, it bends the curve down on both sides of 1. The dot, the best
# $\rho$ for that token, stays at the clip edge over the whole slider range (it only moves inside once
# β > 3.2 for $A < 0$, β > 7.2 for $A > 0$): the KL term does not stop one step early, it keeps the policy
# from drifting away from $\pi_{ref}$ over many. Measure the slope with autograd at two values of β: at
# $\rho = 1.5$ with $A = +1$ (beyond $1+\epsilon$) it is exactly the KL term's $-\beta(\rho-1)/\rho^2$, zero when
# β = 0; at $\rho = 0.6$ with $A = -1$ (below $1-\epsilon$) it is positive for β > 0; and at β = 2 the slope still
# points towards the clip edge from both sides of it.

# %%
def objective_slope(rho_value: float, A_value: float, beta: float, epsilon: float = 0.2) -> float:
    rho_t = torch.tensor(rho_value, dtype=torch.float64, requires_grad=True)
    logp_t = rho_t.log()                                   # log pi_old = log pi_ref = 0, so log rho = log pi_theta
    J = clipped_surrogate(rho_t, torch.tensor(A_value, dtype=torch.float64), epsilon) \
        - beta * kl_k3(logp_t, torch.zeros((), dtype=torch.float64))
    return torch.autograd.grad(J, rho_t)[0].item()

for beta in (0.0, 0.5):
    print(f"β = {beta}: slope at ρ = 1.5, A = +1: {objective_slope(1.5, +1.0, beta):+.4f} "
          f"(−β(ρ−1)/ρ² = {0.0 - beta * 0.5 / 1.5**2:+.4f});  at ρ = 0.6, A = −1: {objective_slope(0.6, -1.0, beta):+.4f} "
          f"({-beta * (0.6 - 1) / 0.6**2:+.4f})")
print("β = 2, around the clip edges: A = +1 at ρ = 1.199, 1.201:",
      [round(objective_slope(x, +1.0, 2.0), 3) for x in (1.199, 1.201)],
      "  A = −1 at ρ = 0.799, 0.801:", [round(objective_slope(x, -1.0, 2.0), 3) for x in (0.799, 0.801)])

# %% jupyter={"source_hidden": true}
check("4.5 · the whole per-token objective",
      ("beyond 1 + ε (A = +1) the slope is exactly −β(ρ−1)/ρ², β = 0 and 0.5",
       all(math.isclose(objective_slope(1.5, +1.0, b), -b * 0.5 / 1.5**2, abs_tol=1e-12) for b in (0.0, 0.5))),
      ("below 1 − ε (A = −1) likewise", all(math.isclose(objective_slope(0.6, -1.0, b), -b * (0.6 - 1) / 0.6**2,
                                                         abs_tol=1e-12) for b in (0.0, 0.5))),
      ("β = 0: zero slope beyond the clip; β > 0: a pull back",
       objective_slope(1.5, +1.0, 0.0) == 0.0 and objective_slope(0.6, -1.0, 0.5) > 0),
      ("β = 2, A > 0: the best ρ is still the clip edge 1 + ε",
       objective_slope(1.199, +1.0, 2.0) > 0 > objective_slope(1.201, +1.0, 2.0)),
      ("β = 2, A < 0: the best ρ is still the clip edge 1 − ε",
       objective_slope(0.799, -1.0, 2.0) > 0 > objective_slope(0.801, -1.0, 2.0)))

# %% [markdown]
# ## 4.6 Why the loss reads 0 at the first step, while the gradient does not
#
# The most common GRPO question (`trl#2703`, `open-r1#239`, `unsloth#2291`, ...) is "my loss is 0 at the
# start and then creeps up: is it broken?". It is not. With μ = 1 (one update per sampled batch, the
# paper's and the tutorial's setting) the policy being updated *is* the one that sampled the batch, so
# `logp_old = logp.detach()`: $\rho = e^{0} = 1$ in value, with the gradient of $\log\pi_\theta$ still
# attached. At the first step $\pi_{ref}$ is the same model too, so $k_3 = 0$. The loss is then
# $-\frac{1}{G}\sum_i \frac{1}{|o_i|}\sum_t A_i = -\operatorname{mean}_i A_i = 0$, because group-relative
# advantages sum to 0 in each group. The gradient is $-\frac{1}{G}\sum_i \frac{A_i}{|o_i|}\sum_t
# \nabla\log\pi_\theta(o_{i,t})$, the REINFORCE gradient with the group mean as baseline, which is not 0.
#
# Score the six completions of 4.1 (1 for the right answer) and let autograd check both claims, with the
# paper's β = 0.04 and with β = 0. The
# REINFORCE loss $-\frac{1}{G}\sum_i \frac{A_i}{|o_i|}\sum_t \log\pi_\theta(o_{i,t})$ is written out for
# comparison: its *value* is not 0 (it holds $\log\pi_\theta$ where `grpo_loss` holds $\rho = 1$), yet
# the two gradients are the same. The value of a policy-gradient loss is not a progress signal; watch the
# reward instead (the TRL maintainers' advice in `trl#3452`).

# %%
r = torch.tensor([[1.0, 0.0, 0.0],                                   # (N=2, G=3): "5" is right for 2 + 3
                  [1.0, 0.0, 1.0]])                                  # "132" is right for 47 + 85
A = group_advantages(r).reshape(-1)                                  # (N, G) -> (B,)
logp = token_logprobs(model, input_ids, attention_mask, logits_to_keep=T)   # (B, T), carries grad
logp_old = logp.detach()                                             # mu = 1: pi_old is the policy itself
logp_ref = logp.detach()                                             # first step: pi_ref is the same model
loss, stats = grpo_loss(logp, logp_old, logp_ref, A, mask, epsilon=0.2, beta=0.04)   # the paper's beta
loss_beta0, _ = grpo_loss(logp, logp_old, None, A, mask, epsilon=0.2, beta=0.0)      # no KL term at all
print(f"A = {[round(a, 3) for a in A.tolist()]}")
stats

# %%
reinforce = -((A[:, None] * logp * mask).sum(-1) / o_len).mean()     # REINFORCE, group mean as baseline
params = list(model.parameters())
g_grpo = torch.autograd.grad(loss, params, retain_graph=True)
g_beta0 = torch.autograd.grad(loss_beta0, params, retain_graph=True)
g_reinforce = torch.autograd.grad(reinforce, params, retain_graph=True)
grad_norm = torch.sqrt(sum((g ** 2).sum() for g in g_grpo))
print(f"grpo_loss = {loss.item():.2e} (beta = 0: {loss_beta0.item():.2e})   REINFORCE loss = {reinforce.item():.2e}"
      f"   gradient norm = {grad_norm.item():.4f}")

# %% [markdown]
# Both claims hold: the loss is 0 (to float rounding) with β = 0.04 and with β = 0, and its gradient, far from
# 0, is REINFORCE's on every weight, with or without the KL term; the statistics read ρ = 1, nothing clipped,
# KL 0.
#
# Later in training $\pi_{ref}$ stays the starting model while $\pi_\theta$ moves, so $k_3 > 0$. With μ = 1
# the surrogate part still sums to 0, and the loss reads exactly β times the KL, averaged per completion
# then over completions. That is the tutorial's logged curve: 0.0000 at step 1, about 0.005 by step 500.
# Simulate the drift with a reference model whose weights differ slightly. One subtlety (`trl#2703`): the
# logged `stats["kl"]` is a mean over *all tokens*, so when completion lengths differ, β·`kl` is close to
# the loss but not equal to it.

# %%
torch.manual_seed(1)
ref_model = copy.deepcopy(model)
with torch.no_grad():
    for p in ref_model.parameters():
        p.add_(0.02 * torch.randn_like(p))                              # a pi_ref the policy has drifted away from
    logp_ref = token_logprobs(ref_model, input_ids, attention_mask, logits_to_keep=T)   # (B, T)
loss_drift, stats_drift = grpo_loss(logp, logp_old, logp_ref, A, mask, epsilon=0.2, beta=0.04)
kl_per_seq = ((kl_k3(logp, logp_ref) * mask).sum(-1) / o_len).mean()   # 1/G sum_i 1/|o_i| sum_t k3
print(f"loss = {loss_drift.item():.6f}   beta * per-sequence KL = {0.04 * kl_per_seq.item():.6f}"
      f"   beta * stats['kl'] (token mean) = {0.04 * stats_drift['kl'].item():.6f}")

# %% [markdown]
# The loss is β times the per-sequence KL, positive; β times the token-mean `kl` differs from it a little.

# %% jupyter={"source_hidden": true}
check("4.6 · loss 0, gradient not",
      ("first step: the loss is 0 with β = 0.04 and with β = 0",
       abs(loss.item()) < 1e-6 and abs(loss_beta0.item()) < 1e-6),
      ("first step: the gradient is not 0 (norm > 0.01)", bool(grad_norm > 1e-2)),
      ("first step: the gradient is REINFORCE's on every weight",
       all(torch.allclose(a, b, atol=1e-7) for a, b in zip(g_grpo, g_reinforce))),
      ("first step, β = 0: the gradient is REINFORCE's too",
       all(torch.allclose(a, b, atol=1e-7) for a, b in zip(g_beta0, g_reinforce))),
      ("ρ = 1, nothing clipped, KL 0",
       stats["ratio_mean"] == 1.0 and stats["clip_fraction"] == 0.0 and stats["kl"] == 0.0),
      ("after drift the loss is β × the per-sequence KL",
       math.isclose(loss_drift.item(), 0.04 * kl_per_seq.item(), rel_tol=1e-4)),
      ("after drift the loss is positive", loss_drift.item() > 0),
      ("β × the token-mean kl differs from it",
       not math.isclose(loss_drift.item(), 0.04 * stats_drift["kl"].item(), rel_tol=1e-3)))

# %% [markdown]
# ## 4.7 μ > 1: now clipping binds
#
# "`clip_ratio` is always 0: is clipping doing anything?" (`trl#3120`, `trl#3757`). With μ = 1 it cannot:
# $\rho = 1$ at the only update. DeepSeekMath's Algorithm 1 allows μ updates on each sampled batch (TRL:
# `num_iterations`). Then `logp_old` stays fixed at the sampling policy while $\pi_\theta$ moves, so from the
# second update on $\rho \ne 1$ and tokens start to leave $[1-\epsilon, 1+\epsilon]$. Run μ = 8 updates on
# the same batch:

# %%
mu = 8
with torch.no_grad():
    logp_old = token_logprobs(model, input_ids, attention_mask, logits_to_keep=T)   # (B, T) frozen: the sampler
logp_ref = logp_old                                                    # first iteration: pi_ref = pi_old
policy = copy.deepcopy(model)                                          # pi_theta starts as pi_old
optimizer = torch.optim.AdamW(policy.parameters(), lr=5e-5)
rows = []
for update in range(1, mu + 1):
    logp = token_logprobs(policy, input_ids, attention_mask, logits_to_keep=T)      # (B, T)
    loss, stats = grpo_loss(logp, logp_old, logp_ref, A, mask, epsilon=0.2, beta=0.04)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    rows.append([update, loss.item(), stats["ratio_mean"].item(), stats["clip_fraction"].item(), stats["kl"].item()])
markdown_table(["update", "loss", "ratio_mean", "clip_fraction", "kl"], rows)

# %% [markdown]
# The first update is exactly the μ = 1 case. After it, the ratios spread, and each further update pushes
# more tokens past the clip edge in the direction their advantage favours; those tokens stop contributing
# gradient, which is what bounds how far one batch can move the policy. Note the loss: it is no longer 0,
# and it goes *down* as the surrogate improves, unlike the μ = 1 curve that reads β·KL.

# %% jupyter={"source_hidden": true}
clip_fraction = [row[3] for row in rows]
check("4.7 · μ > 1: now clipping binds",
      ("update 1: ρ = 1, nothing clipped", clip_fraction[0] == 0.0 and rows[0][2] == 1.0),
      ("by update μ = 8 over 10% of the tokens are clipped", clip_fraction[-1] > 0.1),
      ("the share grows with the updates", clip_fraction[-1] > clip_fraction[1]),
      ("the loss is no longer 0, and it goes down", rows[-1][1] < rows[1][1] < 0))

# %% [markdown]
# ## 4.8 `loss_type`: how the tokens are averaged, and the length bias
#
# The paper averages each completion's tokens, then the completions (`loss_type="grpo"`). Later work
# changed only that normalisation (TRL names, $m$ the mask, $B$ completions in the batch):
#
# | `loss_type` | loss | source |
# |---|---|---|
# | `grpo` | $\frac{1}{B}\sum_i \frac{1}{\lvert o_i\rvert}\sum_t \ell_{i,t}$ | DeepSeekMath eq. 3 |
# | `bnpo` | $\sum_{i,t} m\,\ell_{i,t} \big/ \sum_{i,t} m$ (this batch's tokens) | TRL |
# | `dr_grpo` | $\sum_{i,t} m\,\ell_{i,t} \big/ (B \cdot L_{max})$ | Dr. GRPO (Liu et al. 2025) |
# | `dapo` | $\sum_{i,t} m\,\ell_{i,t} \big/ \sum m$ over the *whole global batch* | DAPO (Yu et al. 2025), TRL's default |
#
# Take one group where the right answer is short and a wrong one is long: $A = [0, -1, +1]$, lengths
# $[40, 120, 60]$, a 400-token budget. At the first step ($\rho = 1$, β = 0) the push each token gets is
# $-\partial\,\text{loss}/\partial\log\pi_\theta(o_{i,t})$; autograd reads it off `grpo_loss` directly.

# %%
A_len = torch.tensor([0.0, -1.0, 1.0])                       # (G,) the anchors' example
lengths = [40, 120, 60]                                      # |o_i|: completion 2 is long and wrong, 3 short and right
L_max = 400                                                  # max_completion_length
mask_len = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).int()   # (G, T)
push, first_loss = {}, {}
for loss_type in ("grpo", "bnpo", "dr_grpo", "dapo"):
    logp_len = torch.zeros(3, max(lengths), requires_grad=True)   # (G, T); the values do not matter at rho = 1
    loss, _ = grpo_loss(logp_len, None, None, A_len, mask_len, beta=0.0, loss_type=loss_type,
                        max_completion_length=L_max)
    (grad,) = torch.autograd.grad(loss, logp_len)
    push[loss_type] = (-grad[:, 0]).tolist()                  # the same for every token of a completion
    first_loss[loss_type] = loss.item()
markdown_table(["loss_type", "first-step loss", "push per token o_1", "o_2 (long, wrong)", "o_3 (short, right)"],
               [(lt, first_loss[lt], *push[lt]) for lt in push], floatfmt=".5f")

# %% [markdown]
# By hand, with $a_i = A_i$: `grpo` pushes each token of $o_i$ by $a_i / (G\,|o_i|)$, shorter completions harder;
# `dapo` by $a_i / \sum_j |o_j|$ = $a_i/220$, every token alike; `dr_grpo` by $a_i / (G \cdot L_{max})$ =
# $a_i/1200$. In one batch on one process `bnpo` is `dapo`.

# %%
plots.loss_type_token_weights(push, lengths, A_len.tolist(), first_loss)

# %% [markdown]
# Under `grpo`, each token of the long wrong answer is pushed down only **half** as hard as each token of
# the short right answer is pushed up ($1/120$ vs $1/60$): the $1/|o_i|$ spreads one completion's fixed
# budget over its tokens. That is Dr. GRPO's *length bias*: a wrong answer is punished less per token the
# longer it gets, so wrong answers drift longer. And "doesn't $1/|o_i|$ *mitigate* length bias?" (the
# recurring question in `understand-r1-zero#11`): it equalises *whole completions* (middle panel, $\pm 1/3$
# each), which is exactly what makes the per-token push depend on length. Under `bnpo`, `dr_grpo` and `dapo`
# every token gets the same $|$push$|$; `dr_grpo` only rescales by a constant.
#
# The first-step value is a diagnostic too: `grpo` reads 0 ($-\operatorname{mean}(A)$), but `dapo` reads
# $+0.273 = -(120 \cdot (-1) + 60 \cdot 1)/220$ and `dr_grpo` $+0.05 = 60/(3 \cdot 400)$, because their
# length-weighted mean of $-A$ is positive when the below-average answers are longer. A positive `dapo`
# loss at μ = 1 says "the wrong answers are the long ones".
#
# `bnpo` and `dapo` differ only across processes or gradient-accumulation steps: `bnpo` divides by the
# tokens of the local micro-batch, `dapo` by the tokens of the whole global batch (`global_num_tokens`). Split
# the group into two micro-batches, as two GPUs would, and add up what they contribute:

# %%
halves = [[0, 1], [2]]                                      # rank 0 holds o_1, o_2; rank 1 holds o_3
n_tok = sum(lengths)                                        # 220 tokens in the global batch
total = {}
for loss_type in ("bnpo", "dapo"):
    parts = []
    for rows_of_rank in halves:
        loss, _ = grpo_loss(torch.zeros(len(rows_of_rank), max(lengths)), None, None, A_len[rows_of_rank],
                            mask_len[rows_of_rank], beta=0.0, loss_type=loss_type,
                            global_num_tokens=n_tok, world_size=2)
        parts.append(loss.item())
    total[loss_type] = sum(parts) / 2                       # DDP averages the two ranks' gradients
{name: round(value, 4) for name, value in total.items()}

# %% [markdown]
# `dapo` gives the one-batch value, +0.2727, however the batch is split; `bnpo`'s total changes with the split
# (−0.125 here), because each rank divides by its own tokens.

# %% [markdown]
# **Is this what TRL computes?** TRL's `GRPOTrainer` has the same four `loss_type`s. `grpo_lib.trl.compare.agreement`
# builds a real TRL 1.16 trainer around the tiny model and feeds one batch (3 prompts × 4 completions, old
# log-probs perturbed so the clip acts on both sides, β = 0.04, ε_high = 0.28) to TRL's own `_compute_loss` and
# to `grpo_loss`, each on its own copy of the weights: the loss values and the gradient of every weight. (TRL's
# default multiplies the KL term by ρ, `use_bias_correction_kl=True`, which this comparison turns off: see
# docs/trl.md.) `tests/test_golden_trl.py` checks every `loss_type` × β × ε_high and the advantages in CI. TRL is
# optional here: without it the cell says how to install it.

# %%
from grpo_lib.trl.compare import INSTALL_HINT, agreement, trl_available

if trl_available():
    trl_rows = agreement()                      # TRL's _compute_loss vs grpo_loss on one batch, per loss_type
else:
    trl_rows = None
    print(INSTALL_HINT)

# %% [markdown]
# For every `loss_type` the two losses agree to within $10^{-5}$ and the gradients to within $10^{-4}$ of the
# largest gradient entry.

# %% jupyter={"source_hidden": true}
G_len = 3
trl_facts = [("TRL agrees: |Δ loss| < 1e-5 and max |Δ grad| / max |grad| < 1e-4 for every loss_type",
              all(r["|Δ loss|"] < 1e-5 and r["max |Δ grad| / max |grad|"] < 1e-4 for r in trl_rows))] if trl_rows else []
check("4.8 · loss_type and the length bias",
      ("grpo: each token pushed by A_i / (G |o_i|)",
       all(math.isclose(push["grpo"][i], a / (G_len * n), abs_tol=1e-7)
           for i, (a, n) in enumerate(zip(A_len.tolist(), lengths)))),
      ("dapo: by A_i / Σ|o|, every token alike",
       all(math.isclose(push["dapo"][i], a / n_tok, abs_tol=1e-7) for i, a in enumerate(A_len.tolist()))),
      ("dr_grpo: by A_i / (G L_max)",
       all(math.isclose(push["dr_grpo"][i], a / (G_len * L_max), abs_tol=1e-7) for i, a in enumerate(A_len.tolist()))),
      ("one batch, one process: bnpo is dapo", push["bnpo"] == push["dapo"]),
      ("grpo: the long wrong answer is pushed half as hard per token",
       math.isclose(push["grpo"][1], -push["grpo"][2] / 2, rel_tol=1e-5)),
      ("grpo: ±1/3 per completion",
       all(math.isclose(abs(push["grpo"][i]) * lengths[i], 1 / 3, rel_tol=1e-5) for i in (1, 2))),
      ("first-step loss: grpo 0", abs(first_loss["grpo"]) < 1e-7),
      ("first-step loss: dapo +0.273 = 60/220", math.isclose(first_loss["dapo"], 60 / 220, rel_tol=1e-6)),
      ("first-step loss: dr_grpo +0.05 = 60/1200", math.isclose(first_loss["dr_grpo"], 60 / (3 * 400), rel_tol=1e-6)),
      ("split over two ranks, dapo is the one-batch value", math.isclose(total["dapo"], first_loss["dapo"], rel_tol=1e-6)),
      ("split over two ranks, bnpo is not the one-batch value",
       not math.isclose(total["bnpo"], first_loss["bnpo"], rel_tol=1e-2)),
      *trl_facts)

# %% [markdown]
# ## 4.9 One GRPO step on the tiny model, end to end
#
# Everything together, on the course's tiny model: a real `Qwen2ForCausalLM` of about 1M parameters, warmed
# up on two-digit addition so that it is right only part of the time (`grpo_lib.models.load_tiny_model`;
# notebook 05 trains it further). Sample $G = 8$ completions of one question at temperature 1, score them,
# compute the advantages, and take one step. This is the training loop of notebook 05, unrolled once.

# %%
tiny, tiny_tok = load_tiny_model()
G_e2e = 8

def sample_group(problem: dict, seed: int):
    '''G_e2e completions of one problem at temperature 1, with their texts and correctness rewards.'''
    q_e2e = tiny_tok([PLAIN_PROMPT.format(question=problem["question"])] * G_e2e, return_tensors="pt")
    torch.manual_seed(seed)
    with torch.no_grad():
        seq = tiny.generate(**q_e2e, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=40,
                            eos_token_id=tiny_tok.eos_token_id, pad_token_id=tiny_tok.pad_token_id)  # (G, P+T)
    o_e2e = seq[:, q_e2e.input_ids.shape[1]:]                                      # (G, T) the completions
    texts = tiny_tok.batch_decode(o_e2e, skip_special_tokens=True)
    r_e2e = correctness_reward(None, [[{"content": t}] for t in texts], [problem["answer"]] * G_e2e)
    return q_e2e, seq, o_e2e, texts, torch.tensor(r_e2e)


# %% [markdown]
# A group whose completions all score the same has $A = 0$ everywhere and teaches nothing (notebook 02),
# so take the first training problem whose group is mixed:

# %%
for problem in addition_problems("train", n=50, seed=0):
    q_e2e, seq, o_e2e, texts, r_e2e = sample_group(problem, seed=0)
    if 0 < (r_e2e > 0).sum() < G_e2e:                                               # some right, some wrong
        break
mask_e2e = completion_mask(o_e2e, eos_token_id=tiny_tok.eos_token_id)               # (G, T)
A_e2e = group_advantages(r_e2e.view(1, G_e2e)).reshape(-1)                           # (1, G) -> (G,)
print(problem["question"], " gold:", problem["answer"])
markdown_table(["i", "completion", "reward", "A"],
               [(i, t.replace("\n", " "), r_e2e[i].item(), A_e2e[i].item()) for i, t in enumerate(texts)],
               floatfmt=".3f")

# %% [markdown]
# One step. The old and the reference log-probabilities both come from the model before the step (μ = 1,
# first iteration); `grpo_loss` gives the loss, `clip_grad_norm_` the gradient norm (and caps it at 1, as
# the training loop does), and a plain SGD step moves the weights. Then score the same completions again.

# %%
attn_e2e = torch.cat([q_e2e.attention_mask, mask_e2e], dim=1)                    # (G, P+T); padding is not attended
T_e2e = o_e2e.shape[1]
with torch.no_grad():
    logp_before = token_logprobs(tiny, seq, attn_e2e, logits_to_keep=T_e2e)      # (G, T) = logp_old = logp_ref
logp = token_logprobs(tiny, seq, attn_e2e, logits_to_keep=T_e2e)                 # (G, T), carries grad
loss, stats = grpo_loss(logp, logp_before, logp_before, A_e2e, mask_e2e, epsilon=0.2, beta=0.04)
loss.backward()
grad_norm = torch.nn.utils.clip_grad_norm_(tiny.parameters(), max_norm=1.0)      # the norm before capping
torch.optim.SGD(tiny.parameters(), lr=3e-3).step()
print(f"loss = {loss.item():.2e}   gradient norm = {grad_norm.item():.3f}")

# %%
with torch.no_grad():
    logp_after = token_logprobs(tiny, seq, attn_e2e, logits_to_keep=T_e2e)       # (G, T)
loss_after, _ = grpo_loss(logp_after, logp_before, logp_before, A_e2e, mask_e2e, epsilon=0.2, beta=0.04)
seq_before = (logp_before * mask_e2e).sum(-1)                                    # (G,) log pi(o_i | q)
seq_after = (logp_after * mask_e2e).sum(-1)                                      # (G,)
delta = seq_after - seq_before                                                   # (G,)
print(f"loss on the same batch after the step: {loss_after.item():.2e}")
markdown_table(["i", "A", "pi(o_i) before", "pi(o_i) after", "change in log pi(o_i)"],
               [(i, A_e2e[i].item(), seq_before[i].exp().item(), seq_after[i].exp().item(), delta[i].item())
                for i in range(G_e2e)], floatfmt=".4g")

# %% [markdown]
# The loss printed 0 before the step, yet the step did what the advantages asked: every completion that
# beat its group's mean became more likely, and the loss on the same batch is now negative (the objective
# went up). Here both below-average completions lost probability too. That is not guaranteed: GRPO gives every
# token of a completion the same advantage, so the tokens a wrong completion shares with right ones (the same
# reasoning with one wrong digit) are pushed up by the right answers, and when the shared part outweighs the
# differing digits the net change of a wrong completion can be positive. It does not happen in this batch.
# Notebook 05 repeats this step for many batches.

# %% jupyter={"source_hidden": true}
check("4.9 · one GRPO step on the tiny model",
      ("the group is mixed", bool(0 < (r_e2e > 0).sum() < G_e2e)),
      ("its advantages sum to 0, positive exactly for the above-average rewards",
       abs(A_e2e.sum().item()) < 1e-5 and bool(((A_e2e > 0) == (r_e2e > r_e2e.mean())).all())),
      ("4.6 again: the loss is 0, the gradient is not", abs(loss.item()) < 1e-6 and bool(grad_norm > 0)),
      ("after the step the loss on the same batch is negative", loss_after.item() < 0),
      ("every above-average completion became more likely", bool((delta[A_e2e > 0] > 0).all())),
      ("here both below-average ones became less likely", bool((delta[A_e2e < 0] < 0).all())))


# %% [markdown]
# ## Summary
#
# Per-token log-probabilities are a log-softmax of the previous position's logits, read at the sampled
# token; computing them only at completion positions and one row at a time is what keeps a GRPO step from
# holding two 14 GB copies of the logits at Qwen's vocabulary. The clipped surrogate is flat, with zero
# gradient, once a token's ratio has left $[1-\epsilon, 1+\epsilon]$ in the direction its advantage favours;
# the ratio and the clip are per token (a completion's log-probability is the sum of its tokens', and its ratio
# the product of theirs: clipping that product silences or inflates the whole completion at once; GSPO takes its
# geometric mean instead);
# the k3 KL term is unbiased and never negative, and outside the clip range it is the only force, pulling
# back towards $\pi_{ref}$. With μ = 1 the loss reads β·KL (0 at the first step) while its gradient is
# REINFORCE's, and clipping binds only when μ > 1. How the tokens are averaged (`loss_type`) decides how
# hard each token is pushed: the paper's $1/|o_i|$ pushes long wrong answers less per token.
#
# ## What this notebook added to grpo_lib
#
# - `grpo_lib.logprobs.token_logprobs`, `selective_log_softmax`, `naive_token_logprobs`, `completion_mask`:
#   per-token log-probabilities of the completion (4.1), tested in `tests/test_logprobs.py`.
# - `grpo_lib.loss.clipped_surrogate`, `kl_k3`, `grpo_loss`: the objective of 4.3-4.8, tested in
#   `tests/test_loss.py`.
# - `grpo_lib.course.plots.clipped_surrogate_vs_ratio`, `per_token_objective_vs_ratio`, `kl_estimators`,
#   `loss_type_token_weights`: the figures, tested in `tests/test_course_plots.py`.
# - `grpo_lib.course.widgets.epsilon_slider`, `beta_slider`: the sliders, driven in `tests/test_course_widgets.py`.
# - `grpo_lib.course.exercises.ex04.check_clipped_tokens`, `check_exact_kl`: the checkers of exercises 4.1 and
#   4.2, tested in `tests/test_course_exercises_hints.py`.
#
# ## Exercises
#
# **4.1 · Which tokens does the clip silence? (fill in).** Write `my_clipped(rho, A, epsilon)`: for ratios
# `rho` of shape `(B, T)` and advantages `A` of shape `(B,)`, return a boolean `(B, T)` that is True exactly where
# the clipped surrogate of 4.3 gives the token no gradient because of the clip (the tokens TRL's clip ratio
# counts). The checker compares with autograd. Stuck? `hint("4.1")`.

# %% tags=["solution"]
def my_clipped(rho, A, epsilon):    # (B, T), (B,), float -> bool (B, T)
    ### BEGIN SOLUTION
    A = A[:, None]                  # one advantage per completion, for all its tokens
    return ((A > 0) & (rho > 1 + epsilon)) | ((A < 0) & (rho < 1 - epsilon))   # one-sided
    ### END SOLUTION

check_clipped_tokens(my_clipped);


# %% [markdown]
# **4.2 · The KL term the loop does not compute (fill in).** The loss's KL term averages k3 of the sampled
# tokens. Write `my_exact_kl(logits, logits_ref, mask)` for the same term with the *exact* KL instead: from the
# full logits of $\pi_\theta$ and $\pi_{ref}$, both `(B, T, V)`, and the completion mask `(B, T)`, return
# $\frac{1}{B}\sum_i \frac{1}{|o_i|}\sum_t m_{i,t}\,\mathrm{KL}(\pi_\theta\|\pi_{ref})_{i,t}$ (loss_type
# `"grpo"`), one number. Section 4.4 worked on probabilities of a 4-token vocabulary; here the inputs are logits,
# the batch has padding, and completions differ in length. Stuck? `hint("4.2")`.

# %% tags=["solution"]
def my_exact_kl(logits, logits_ref, mask):   # (B, T, V), (B, T, V), (B, T) -> one number
    ### BEGIN SOLUTION
    logp, logq = logits.log_softmax(-1), logits_ref.log_softmax(-1)
    kl = (logp.exp() * (logp - logq)).sum(-1)                    # (B, T): weighted by π_θ, summed over the vocabulary
    return ((kl * mask).sum(-1) / mask.sum(-1)).mean()           # per completion over its tokens, then over completions
    ### END SOLUTION

check_exact_kl(my_exact_kl);

# %% [markdown]
# **4.3 · Clip-higher.** DAPO clips asymmetrically, $[1-\epsilon, 1+\epsilon_{high}]$ with $\epsilon = 0.2$
# and $\epsilon_{high} = 0.28$ (`epsilon_high` in `clipped_surrogate` and `grpo_loss`). A token with
# $\pi_{\theta_{old}} = 0.01$ and $A > 0$: how likely can it become in one batch before its gradient stops,
# with and without clip-higher? The cell below computes it. Extend it to $\pi_{\theta_{old}} = 0.9$ and
# explain why DAPO says the upper clip, not the lower one, decides whether rare tokens (exploration,
# entropy) can grow.
#
# **4.4 · Predict, then run.** In 4.7, change `beta=0.04` to `beta=0.5`, then `lr=5e-5` to `lr=5e-4`.
# Before running, predict how `clip_fraction` and `kl` change after 8 updates. Which knob limits how far one
# batch moves the policy, and which one limits how far many batches move it?
#
# **4.5 · A baseline that is off.** In 4.6, replace `A` by `A + 1`. What does the loss read at the first
# step now? Compare the gradient with the one for `A`: it changed, although adding a constant to every
# advantage leaves the *expected* policy gradient unchanged ($\mathbb{E}[\nabla\log\pi_\theta] = 0$). Why does
# the shift still matter for a group of $G = 3$ samples?
#
# **4.6 · When can `dr_grpo`'s loss exceed `dapo`'s?** At the first step (ρ = 1, β = 0) write both losses of 4.8
# for any group, and prove when `dr_grpo`'s can and cannot be larger than `dapo`'s. (Hint: every $|o_i|$ is at
# most `max_completion_length`.) Check your answer with `grpo_loss` on 4.8's group and on the same group with
# the advantages of the long and the short answer swapped. Then explain why, under `dr_grpo`, the push on one
# token does not depend on how long its completion is.

# %%
# Exercise 4.3, first part: the largest pi_theta a rewarded token can reach before its gradient stops
p_old = 0.01                                   # pi_old of a rare token with A > 0
for eps_high in (0.2, 0.28):
    print(f"epsilon_high = {eps_high}: pi_theta can grow from {p_old} to {p_old * (1 + eps_high):.4f}")

# %% [markdown]
# ## Quiz: check yourself
#
# Choose an answer to each question *before* you open it. Every answer is a number this notebook printed.

# %%
from grpo_lib.course.quiz import Question, quiz

quiz("Quiz · notebook 04",
     Question("A token with A > 0 whose ratio fell to ρ = 0.5 (below 1 − ε). What gradient does the clipped "
              "surrogate give it?",
              ("zero: it is outside the clip range", "the full gradient: the clip is one-sided", "a negative one"), 1,
              f"The min keeps the unclipped term there: slope {slopes[0.1][0][2]:.0f} below 1 − ε for A = +1 (4.3).",
              slopes[0.1][0][2] == 1.0 and slopes[0.1][0][0] == 0.0),
     Question("log π(o | q) of a whole completion is ...",
              ("the mean of its token log-probabilities", "the sum of its token log-probabilities",
               "the last token's log-probability"), 1,
              "The chain rule: π(o|q) = Π_t π(o_t | q, o_<t) (4.3, from a sequence to its tokens).",
              torch.isclose(lp_old.double().sum().exp(), lp_old.double().exp().prod(), rtol=1e-9)),
     Question("Clip the ratio of *summed* log-probabilities with ε = 0.2, for the nudged completion and A = −1. "
              "How many of its tokens keep a gradient?",
              (f"{int((seq_grads[(-1.0, False)] != 0).sum())} of {len(lp_new)}, as per token", f"0 of {len(lp_new)}",
               f"all {len(lp_new)}"), 1,
              f"The summed ratio {rho_seq:.3f} is one number below 1 − ε, so the clip silences the whole completion.",
              bool((seq_grads[(-1.0, True)] == 0).all())),
     Question("Can the k3 estimate of the KL be negative for one token?",
              ("yes, like k1", "no: r − 1 − log r ≥ 0 for every r > 0", "only when β = 0"), 1,
              "k3 is never negative and averages to the exact KL (4.4).",
              bool((kl_k3(torch.linspace(-3, 3, 61), torch.zeros(61)) >= 0).all())),
     Question("At μ = 1, how many tokens does the clip silence?",
              ("none: ρ = 1 at the only update", "about ε of them", "every token with A < 0"), 0,
              "π_old is the current policy, so every ratio is exactly 1; clipping binds only when μ > 1 (4.6, 4.7).",
              slopes[0.1][0][1] == 1.0 and slopes[0.1][1][1] == -1.0))

# %% [markdown]
# ## Next
#
# [05_full_run.ipynb](05_full_run.ipynb): the training loop around this loss, on the tiny model on a CPU;
# [06_multi_gpu_qwen.ipynb](06_multi_gpu_qwen.ipynb): the same engine on Qwen2.5-1.5B on GPUs (memory planner,
# DDP, the TRL recipe).
