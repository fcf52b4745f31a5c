# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · GRPO after R1
#
# > The fixes that came after DeepSeek-R1, each one an option of the same engine: derived, shown in its few lines of
# > `grpo_lib`, checked against TRL's own code, and measured on the tiny model.
#
# You will:
# - meet each post-R1 variant as the problem it fixes, its equation, its lines in `grpo_lib` and its TRL flag:
#   GSPO's sequence ratio, CISPO's clipped weight, DAPO's dynamic sampling and soft overlong penalty, GDPO's
#   per-reward normalisation, the KL estimators k1, k2, k3 and ρ·k3 (and the overflow of k3's exponential), the
#   sampler-trainer mismatch and its importance-sampling correction, and LoRA;
# - check on one batch that `grpo_lib` and TRL 1.16 compute the same loss and gradients for each option TRL has;
# - predict, then look: each variant against its baseline on the tiny model, several seeds, with an interval on
#   the difference, read from committed runs (and "no difference here" where that is what was measured);
# - run the control every RL paper needs: a random reward, and why its curve cannot be read as learning;
# - see entropy collapse on the dashboard and derive, in one cell, why it happens: the entropy change of a softmax
#   policy is minus a covariance between log π and the advantage;
# - turn DeepSeekMath's outer loop (π_ref ← π_θ every iteration) into ProRL's periodic reference resets;
# - fill in two exercises: the KL estimate on tokens another policy sampled (7.1), and the entropy change of a plain
#   policy-gradient step (7.2).
#
# **Needs:** notebooks 04 (the loss) and 05 (the full run, its dashboard and gallery). **Runs in:** about 30 s on
# the course's 2-core CPU machine (the runs were made beforehand; only small checks run here, TRL's among them).

# %%
# %matplotlib inline
import contextlib
import copy
import io
import math
import warnings

import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display
from transformers.utils import logging as hf_logging

from grpo_lib.advantages import gdpo_advantages, group_advantages
from grpo_lib.config import GRPOConfig
from grpo_lib.course.exercises.checking import hint
from grpo_lib.course.exercises.ex07 import check_entropy_change_pg, check_offpolicy_kl
from grpo_lib.course.gallery import load_run
from grpo_lib.course.notebook import check, markdown_table, show_lines, show_source
from grpo_lib.course.post_r1 import EXPERIMENTS, compare, load_experiment, plot_experiment
from grpo_lib.course.quiz import Question, quiz
from grpo_lib.dynamic_sampling import informative_groups
from grpo_lib.loss import LOG_RATIO_LIMIT, grpo_loss, kl_estimate, sampling_importance_weights, sequence_log_ratio
from grpo_lib.rewards import soft_overlong_punishment
from grpo_lib.toy import ToyPolicy, grpo_step
from grpo_lib.trl.compare import INSTALL_HINT, trl_available

hf_logging.disable_progress_bar()             # no "Loading weights" bars in the outputs
_ = torch.manual_seed(0)                      # assigned: no "<torch._C.Generator at 0x...>" output


# %% [markdown]
# ## The one equation, and where each variant changes it
#
# Every variant of this notebook edits one term of the objective of notebook 04 (DeepSeekMath eq. 3, with DAPO's
# clip-higher $\epsilon_{high}$):
#
# $$\mathcal{J}(\theta) = \frac{1}{G}\sum_{i=1}^{G}\frac{1}{|o_i|}\sum_{t=1}^{|o_i|}
# \Big\{\min\big(\rho_{i,t}\hat A_{i},\ \mathrm{clip}(\rho_{i,t}, 1-\epsilon, 1+\epsilon_{high})\,\hat A_{i}\big)
# - \beta\,\mathbb{D}_{KL}\big[\pi_\theta\,\|\,\pi_{ref}\big]\Big\},\qquad
# \rho_{i,t} = \frac{\pi_\theta(o_{i,t}\mid q, o_{i,<t})}{\pi_{\theta_{old}}(o_{i,t}\mid q, o_{i,<t})}$$
#
# | variant | what it changes | `GRPOConfig` option | TRL 1.16 |
# | --- | --- | --- | --- |
# | GSPO | the ratio: one per completion, $s_i$ | `importance_sampling_level="sequence"` | same name |
# | CISPO | the clip: on the weight, gradient kept | `loss_type="cispo"`, `epsilon_high` = ε_max | same names |
# | DAPO dynamic sampling | which groups form the batch | `dynamic_sampling=True`, `dynamic_sampling_max_draws` | none |
# | DAPO soft overlong | the reward: a length penalty | `soft_overlong_punishment(L_max, L_cache)` | `get_soft_overlong_punishment` |
# | GDPO | $\hat A_i$: each reward normalised first | `multi_objective_aggregation="normalize_then_sum"` | same name |
# | KL estimator, ρ·k3 | the $\mathbb{D}_{KL}$ term | `kl_estimator`, `use_bias_correction_kl` | k3 only; `use_bias_correction_kl` |
# | sampler correction | a weight on the policy term | `vllm_importance_sampling_*`, `sampler_perturbation` | `vllm_importance_sampling_*` |
# | LoRA | which weights θ are trained | `lora_r`, `lora_alpha`, `lora_lr_multiplier` | `peft_config` |
#
# Each option is off by default, so every run of notebooks 05 and 06 is unchanged. `docs/trl.md` maps all of them.
#
# **How the measured runs were made.** Each comparison below is a set of short runs of the tiny model (notebook 05's
# preset with the changes shown), one per arm and seed, made beforehand by `python -m grpo_lib.course.post_r1`
# (`--only gspo` for one experiment, `--steps 2 --out /tmp/x` for a short check); their per-step metrics and
# summaries are committed in `grpo_lib/assets/post_r1/`, and `tests/` checks that a short regeneration matches them.
# `compare` gives each arm's mean over seeds with a 95% interval, and the difference of each arm to the first (the
# baseline), paired by seed. An interval that holds 0 means: no difference measured at this number of seeds.

# %%
def ask(name):
    """The experiment's predict-then-look question, with what was run."""
    e = EXPERIMENTS[name]
    arms = "; ".join(f"`{arm}`: " + (", ".join([f"{k}={v!r}" for k, v in over.items()]
                                              + ([f"reward {e.rewards[arm]!r}"] if arm in e.rewards else []))
                                    or "the baseline") for arm, over in e.arms.items())
    return Markdown(f"**Predict, then look ({e.title}).** {e.question}\n\n*{len(e.seeds)} seeds × {e.steps} steps. "
                    f"Arms: {arms}.*")


def look(name):
    """The experiment's curves (mean over seeds, min-max band), then each quantity it compares (its claim first):
    per arm the mean over seeds with a 95% interval, per other arm the difference to the first, paired by seed."""
    display(plot_experiment(name))
    e = EXPERIMENTS[name]
    res = {q: {r["arm"]: r for r in compare(name, quantity=q)} for q in (e.claim, *e.also)}
    display(markdown_table(["quantity", "arm", "seeds", "mean", "95% low", "95% high"],
                           [(q, arm, r["n_seeds"], r["mean"], r["lo"], r["hi"]) for q, rows in res.items()
                            for arm, r in rows.items()], floatfmt=".4g"))
    return res


def verdict(res):
    """One printed line per difference to the baseline: its mean and interval, and whether the interval holds 0."""
    for q, rows in res.items():
        for arm, r in rows.items():
            if " - " in arm and math.isnan(r["mean"]):
                print(f"{q}, {arm}: not defined (the baseline does not log it)")
            elif " - " in arm:
                said = "holds 0: no difference measured here" if r["lo"] <= 0 <= r["hi"] else "excludes 0"
                print(f"{q}, {arm}: {r['mean']:+.4g}, 95% interval [{r['lo']:+.4g}, {r['hi']:+.4g}] "
                      f"({r['n_seeds']} seeds): {said}")


def holds_zero(res, quantity, arm):
    """True when the paired interval of `arm` minus the baseline holds 0 for `quantity`."""
    r = next(r for a, r in res[quantity].items() if a.startswith(f"{arm} - "))
    return r["lo"] <= 0 <= r["hi"]


def complete(name):
    """The facts every measured section checks: each arm has a run per seed, each run its steps."""
    e, runs = EXPERIMENTS[name], load_experiment(name)
    return (f"{name}: every arm has {len(e.seeds)} seeds × {e.steps} steps",
            all(len(recs) == len(e.seeds) and all(len(r.rows) == e.steps for r in recs) for recs in runs.values()))


@contextlib.contextmanager
def quiet():
    """TRL's and transformers' start-up chatter (progress bars, deprecation warnings) out of the outputs."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


TRL = trl_available()
if TRL:
    with quiet():
        from grpo_lib.models import load_policy
        from grpo_lib.trl import compare as tc
        tc.require_trl()
        base, tok = load_policy("tiny", device="cpu", dtype="float32")
    TAU = 0.9
    trl_batch = tc.make_batch(base, tok, G=4, T=8, temperature=TAU)   # 3 prompts × 4, old log-probs perturbed


def trl_agree(**options):
    """TRL's GRPOTrainer._compute_loss and grpo_loss on one batch with the same options: values and gradients.

    Each side gets its own copy of the tiny model's weights (`tests/test_golden_trl_post_r1.py` does this for every
    option in CI). Returns None without TRL."""
    if not TRL:
        print(INSTALL_HINT)
        return None
    with quiet():
        trainer = tc.make_trainer(copy.deepcopy(base), tok, temperature=TAU, max_completion_length=10, **options)
    ours = copy.deepcopy(base)
    loss_trl, metrics = tc.trl_loss(trainer, trl_batch)
    loss_ours, stats = tc.our_loss(ours, trl_batch, temperature=TAU, max_completion_length=10, **options)
    loss_trl.backward()
    loss_ours.backward()
    g_trl = dict(trainer.model.named_parameters())
    scale = max(p.grad.abs().max().item() for p in ours.parameters())
    diff = max((p.grad - g_trl[n].grad).abs().max().item() for n, p in ours.named_parameters())
    row = {"TRL loss": loss_trl.item(), "grpo_lib loss": loss_ours.item(),
           "|Δ loss|": abs(loss_trl.item() - loss_ours.item()), "max |Δ grad| / max |grad|": diff / scale}
    print(", ".join(f"{k} = {v:.7f}" if "loss" in k and "Δ" not in k else f"{k} = {v:.1e}" for k, v in row.items()))
    return row


def agrees(row):
    """The bar of the golden tests: the losses within 1e-5, the gradients within 1e-4 of the largest entry."""
    return row is None or (row["|Δ loss|"] < 1e-5 and row["max |Δ grad| / max |grad|"] < 1e-4)


# %% [markdown]
# ## 1 · GSPO: one ratio per completion
#
# **The problem.** The token ratio $\rho_{i,t}$ is a ratio of two probabilities of *one* sampled token: a noisy
# estimate of how far the policy moved, and the clip acts on each token alone. The obvious sequence-level fix,
# the ratio of the completions' probabilities $\pi_\theta(o_i)/\pi_{\theta_{old}}(o_i) = \prod_t \rho_{i,t}$, is
# worse: a product of $|o_i|$ noisy factors, whose logarithm's spread grows with the length. GSPO (Zheng et al. 2025,
# Qwen3) takes the **geometric mean** instead, one ratio per completion, and clips that:
#
# $$s_i(\theta) = \Big(\frac{\pi_\theta(o_i\mid q)}{\pi_{\theta_{old}}(o_i\mid q)}\Big)^{1/|o_i|}
# = \exp\Big(\frac{1}{|o_i|}\sum_{t=1}^{|o_i|}\log\rho_{i,t}\Big),\qquad
# \mathcal{J}_{GSPO} = \frac1G\sum_i \min\big(s_i\hat A_i,\ \mathrm{clip}(s_i, 1-\epsilon, 1+\epsilon_{high})\hat A_i\big)$$
#
# GSPO's paper clips with ε = 3e-4 and ε_high = 4e-4: a mean of log-ratios moves far less than one token's. Like
# every ratio, $s_i = 1$ at μ = 1: GSPO changes nothing on-policy, and acts only when a batch is reused (μ > 1) or
# sampled by another engine. Three tokens with ratios 1.10, 0.90 and 1.50:

# %%
rho_3 = torch.tensor([1.10, 0.90, 1.50])
product = rho_3.prod()                                      # the ratio of the sequence probabilities
s = torch.exp(rho_3.log().mean())                           # GSPO's s_i: the geometric mean
print(f"token ratios {rho_3.tolist()}: product {product:.4f}, GSPO's s_i {s:.4f}; "
      f"tokens outside [0.8, 1.2]: {int(((rho_3 < 0.8) | (rho_3 > 1.2)).sum())} of 3")

# %% [markdown]
# How the spread grows with the length: give every token a log-ratio with standard deviation 0.05 (a small,
# typical move) and look at the two sequence ratios over many completions.

# %%
gen = torch.Generator().manual_seed(0)
spread = []
for L in (10, 100, 1000):
    log_rho = 0.05 * torch.randn(2000, L, generator=gen)                       # (completions, tokens)
    spread.append((L, log_rho.sum(-1).std().item(), log_rho.mean(-1).std().item()))
markdown_table(["|o_i|", "std of log Π_t ρ (the product)", "std of log s_i (GSPO)"], spread)

# %% [markdown]
# The product's log spreads like $0.05\sqrt{|o_i|}$, GSPO's like $0.05/\sqrt{|o_i|}$. In `grpo_lib` GSPO is three
# lines: `sequence_log_ratio`, and the branch of `grpo_loss` that uses it before the ratio is exponentiated and
# clipped (the clip and the aggregation are unchanged; the config allows GSPO only with `loss_type="grpo"`, the
# per-sequence objective above).

# %%
show_source(sequence_log_ratio)
show_lines(grpo_loss, 'if importance_sampling_level == "sequence":', "log_ratio = sequence_log_ratio(",
           "rho = torch.exp(log_ratio)")

# %%
logp_old_3 = torch.zeros(1, 3)
loss_gspo, st_gspo = grpo_loss(rho_3.log()[None], logp_old_3, None, torch.tensor([1.0]), torch.ones(1, 3),
                               beta=0.0, importance_sampling_level="sequence")
loss_tok, st_tok = grpo_loss(rho_3.log()[None], logp_old_3, None, torch.tensor([1.0]), torch.ones(1, 3), beta=0.0)
print(f"A = +1, ε = 0.2: GSPO loss {loss_gspo:.4f} (= -s_i, not clipped); token-level loss {loss_tok:.4f} "
      f"(= -mean(1.10, 0.90, 1.20): the third token clipped); token clip fraction {st_tok['clip_fraction']:.3f}")
_, st_mu1 = grpo_loss(rho_3.log()[None], None, None, torch.tensor([1.0]), torch.ones(1, 3), beta=0.0,
                      importance_sampling_level="sequence")                  # μ = 1: π_old is π_θ itself
print(f"the same completion at μ = 1 (logp_old = None): s_i = {st_mu1['ratio_mean']:.4f}")

# %% [markdown]
# **Same as TRL?** One batch of the tiny model (3 prompts × 4 completions, old log-probs perturbed so that the
# clip acts), GSPO's ε and ε_high, through TRL's `GRPOTrainer._compute_loss` and through `grpo_loss`:

# %%
trl_gspo = trl_agree(loss_type="grpo", beta=0.0, epsilon=3e-4, epsilon_high=4e-4, importance_sampling_level="sequence")

# %% jupyter={"source_hidden": true}
check("1 · GSPO",
      ("s_i is the geometric mean of the token ratios", math.isclose(s.item(), product.item() ** (1 / 3), rel_tol=1e-6)),
      ("at |o| = 1000 the product's log spreads over 100 times GSPO's", spread[-1][1] > 100 * spread[-1][2]),
      ("the product's spread grows with the length, GSPO's shrinks",
       spread[0][1] < spread[1][1] < spread[2][1] and spread[0][2] > spread[1][2] > spread[2][2]),
      ("grpo_loss at sequence level is -s_i·A when s_i is inside the clip range",
       math.isclose(loss_gspo.item(), -s.item(), rel_tol=1e-6)),
      ("at μ = 1, s_i = 1", st_mu1["ratio_mean"].item() == 1.0),
      ("the token-level loss clips the third token at 1.2",
       math.isclose(loss_tok.item(), -(1.10 + 0.90 + 1.20) / 3, rel_tol=1e-6)),
      ("TRL agrees (loss within 1e-5, gradients within 1e-4 of the largest)", agrees(trl_gspo)))

# %%
ask("gspo")

# %%
gspo = look("gspo")
verdict(gspo)

# %%
cf = gspo["clip_fraction_mean"]
print(f"clipped, mean over the steps: token level {cf['token']['mean']:.2%} of the tokens, GSPO {cf['gspo']['mean']:.2%} "
      f"of the completions")

# %% [markdown]
# Read the clip fractions first (the line above). GSPO's range is 3e-4 wide instead of 0.2, and one ratio decides
# for all the tokens of a completion, so from the second of the four updates on a large share of the completions are
# outside it: each of them gives no gradient at all. That is what the gradient-norm row shows, smaller under GSPO,
# its interval below 0. Then the claim: held-out accuracy after 12 steps differs by an interval that holds 0, so at
# this scale, 3 seeds and 12 steps, GSPO and token-level GRPO train to the same accuracy: no difference measured
# here. GSPO was made for long completions and mixture-of-experts models, where token ratios are noisier than on
# 20-token answers of a 1M-parameter model.

# %% jupyter={"source_hidden": true}
check("1 · GSPO, measured", complete("gspo"),
      ("GSPO clips a larger share (completions) than token-level GRPO (tokens): the paired interval is above 0",
       gspo["clip_fraction_mean"]["gspo - token"]["lo"] > 0),
      ("GSPO's gradient norm is smaller: the paired interval is below 0", gspo["grad_norm_mean"]["gspo - token"]["hi"] < 0),
      ("held-out accuracy: the paired interval holds 0", holds_zero(gspo, "eval_accuracy_end", "gspo")))

# %% [markdown]
# ## 2 · CISPO: clip the weight, keep every token's gradient
#
# **The problem.** PPO's clip does not shrink a gradient, it removes it: once $\rho_{i,t}$ has left
# $[1-\epsilon, 1+\epsilon_{high}]$ in the direction $\hat A_i$ favours, the clipped branch of the min is a constant
# and the token gets no gradient at all (notebook 04). MiniMax-M1 (2025) observed that the tokens silenced this way
# are often the rare ones that start a new line of reasoning ("However", "Wait"), whose ratios move most. CISPO
# keeps every token's policy-gradient term and clips only its **weight**, with the gradient of the weight stopped
# (sg):
#
# $$\mathcal{J}_{CISPO} = \frac{1}{\sum_i|o_i|}\sum_{i,t}\ \mathrm{sg}\big(\min(\rho_{i,t},\ \epsilon_{max})\big)\,
# \hat A_i\,\log\pi_\theta(o_{i,t}\mid q, o_{i,<t})$$
#
# In `grpo_lib` (as in TRL) $\epsilon_{max}$ is `epsilon_high` itself, a cap on the weight (ScaleRL uses 5.0), not
# $1+\epsilon_{high}$; the normalisation is `dapo`'s token mean. The gradient of each token's loss with respect to
# its log-probability, at five ratios, for A = +1 and A = −1 (ε = 0.2, ε_max = 1.28, one token each):

# %%
rhos = torch.tensor([0.5, 0.9, 1.1, 1.5, 6.0])
rows_cispo = []
for A_sign in (1.0, -1.0):
    for loss_type, kw in (("dapo", {"epsilon_high": 0.28}), ("cispo", {"epsilon_high": 1.28})):
        logp = rhos.log()[:, None].clone().requires_grad_(True)                    # (5, 1): π_old = 1 per token
        loss, _ = grpo_loss(logp, torch.zeros(5, 1), None, torch.full((5,), A_sign), torch.ones(5, 1), beta=0.0,
                            loss_type=loss_type, **kw)
        (g,) = torch.autograd.grad(loss, logp)
        rows_cispo.append((f"A = {A_sign:+.0f}", loss_type, *(-5 * g[:, 0] + 0.0).tolist()))  # ×5 tokens; + 0.0: no -0
markdown_table(["", "loss_type"] + [f"push at ρ = {r:g}" for r in rhos.tolist()], rows_cispo, floatfmt=".3f")

# %% [markdown]
# The push (minus the gradient of the loss with respect to the token's log-probability, times the 5 tokens of the
# token mean) is ρ·A inside the clip range for both. The clip sets it to exactly 0 where ρ left the range on the
# favoured side (ρ = 1.5 and 6.0 with A = +1, ρ = 0.5 with A = −1); CISPO keeps a push there, capped at ε_max·A.
# The lines:

# %%
show_lines(grpo_loss, 'if loss_type == "cispo":   # sg', after=1)

# %%
trl_cispo = trl_agree(loss_type="cispo", beta=0.0, epsilon_high=1.1)   # ε_max = 1.1: the cap binds on this batch

# %% jupyter={"source_hidden": true}
push = {(a, t): v for a, t, *v in rows_cispo}
check("2 · CISPO",
      ("inside the clip range both push by ρ·A", all(math.isclose(push[("A = +1", t)][k], rhos[k].item(), rel_tol=1e-5)
                                                     for t in ("dapo", "cispo") for k in (1, 2))),
      ("the clip gives exactly 0 to ρ = 1.5 and 6 when A > 0, and to ρ = 0.5 when A < 0",
       push[("A = +1", "dapo")][3] == 0 == push[("A = +1", "dapo")][4] and push[("A = -1", "dapo")][0] == 0),
      ("CISPO pushes those tokens, capped at ε_max·A",
       math.isclose(push[("A = +1", "cispo")][4], 1.28, rel_tol=1e-5)
       and math.isclose(push[("A = -1", "cispo")][0], -0.5, rel_tol=1e-5)),
      ("TRL agrees", agrees(trl_cispo)))

# %%
ask("cispo")

# %%
cispo = look("cispo")
verdict(cispo)

# %%
cf, gn = cispo["clip_fraction_mean"], cispo["grad_norm_mean"]
print(f"clipped (clip) or capped (CISPO), mean over the steps: {cf['clip']['mean']:.3%} vs {cf['cispo']['mean']:.3%} of "
      f"the tokens; gradient norm before clipping, mean over the steps: {gn['clip']['mean']:.3f} vs {gn['cispo']['mean']:.3f}")

# %% [markdown]
# At μ = 4 the clip silences a small share of the tokens, while CISPO's cap of 5 binds almost never: a ratio of 5
# is far beyond what four small updates reach. So CISPO keeps the gradient of every token, and its gradient norm is
# the larger (its interval above 0; the engine then clips the norm to 1 before the step, `max_grad_norm`). Held-out
# accuracy: the paired interval holds 0, no difference measured here. A larger gradient is not better learning by
# itself; CISPO's case in MiniMax-M1 is long reasoning chains, where the silenced tokens are the ones that matter.

# %% jupyter={"source_hidden": true}
check("2 · CISPO, measured", complete("cispo"),
      ("CISPO caps fewer tokens than the clip silences: the paired interval is below 0",
       cispo["clip_fraction_mean"]["cispo - clip"]["hi"] < 0),
      ("CISPO caps under 0.1% of the tokens", cispo["clip_fraction_mean"]["cispo"]["mean"] < 1e-3),
      ("CISPO's gradient norm is larger: the paired interval is above 0", cispo["grad_norm_mean"]["cispo - clip"]["lo"] > 0),
      ("held-out accuracy: the paired interval holds 0", holds_zero(cispo, "eval_accuracy_end", "cispo")))

# %% [markdown]
# ## 3 · DAPO's other two parts: dynamic sampling and the soft overlong penalty
#
# The course already has two of DAPO's four parts: clip-higher (`epsilon_high`) and the token-level loss
# (`loss_type="dapo"`, notebook 04). The other two change the batch and the reward.
#
# **Dynamic sampling.** A group whose $G$ rewards are all equal has $\hat A_i = 0$ for every completion (notebook 02):
# it costs its generations and teaches nothing. DAPO keeps drawing prompts until the batch holds $N$ groups with
# $0 < \#\text{correct} < G$ (here: rewards not all equal), at most `dynamic_sampling_max_draws` draws a step. The
# cost is the extra generations, so the fair comparison counts accuracy per *generated completion*, not per step.
# `informative_groups` is the rule, on four hand-made groups of $G = 4$:

# %%
r_groups = torch.tensor([[2.2, 2.2, 2.2, 2.2],           # all right, same format: flat
                         [0.0, 0.0, 0.0, 0.0],           # all wrong: flat
                         [2.2, 0.0, 2.2, 0.0],           # 0 < #correct < G
                         [0.4, 0.8, 0.8, 0.8]])          # all wrong, but the format differs: A ≠ 0
kept = informative_groups(r_groups.reshape(-1), G=4)
print("informative:", kept.tolist(), "  advantages of the flat groups:", group_advantages(r_groups)[:2].tolist())
show_lines(informative_groups, "return ~_flat(rewards, G)")

# %% [markdown]
# **The soft overlong penalty.** A completion cut at the length budget $L_{max}$ has no answer, and a reward of 0
# for it is noise: it says nothing about the tokens it did write. DAPO masks truncated completions out of the loss
# (`mask_truncated_completions=True`, the same name here and in TRL, off by default in both: the cut completion keeps
# its reward and its place in its group's advantages, and only its tokens leave the loss) and adds a length penalty
# that starts $L_{cache}$ tokens before the budget:
#
# $$R_{len}(|y|) = \begin{cases} 0 & |y| \le L_{max} - L_{cache}\\ \frac{(L_{max}-L_{cache}) - |y|}{L_{cache}} &
# L_{max} - L_{cache} < |y| \le L_{max}\\ -1 & |y| > L_{max}\end{cases}$$
#
# With the tiny preset's budget $L_{max} = 40$ and $L_{cache} = 10$, next to TRL's own
# `get_soft_overlong_punishment` on the same lengths:

# %%
L_max, L_cache = 40, 10
lengths = list(range(0, 46))
ours_len = soft_overlong_punishment(L_max, L_cache)(completion_ids=[[7] * n for n in lengths])
if TRL:
    from trl.rewards import get_soft_overlong_punishment
    theirs_len = get_soft_overlong_punishment(L_max, L_cache)(completion_ids=[[7] * n for n in lengths])
else:
    theirs_len = None
    print(INSTALL_HINT)
fig, ax = plt.subplots(figsize=(6, 2.6))
ax.plot(lengths, ours_len, lw=2, label="grpo_lib")
if theirs_len:
    ax.plot(lengths, theirs_len, "k:", lw=2, label="TRL")
ax.set(xlabel="|y| (tokens)", ylabel="R_len", title=f"soft overlong penalty, L_max = {L_max}, L_cache = {L_cache}")
ax.legend(), ax.grid(alpha=0.3)
plt.show()

# %% jupyter={"source_hidden": true}
check("3 · dynamic sampling and the overlong penalty",
      ("the two flat groups are not informative, the other two are", kept.tolist() == [False, False, True, True]),
      ("a flat group's advantages are exactly 0", bool((group_advantages(r_groups)[:2] == 0).all())),
      ("R_len is 0 up to L_max - L_cache, -1/2 halfway, -1 at L_max and beyond",
       ours_len[30] == 0.0 and ours_len[35] == -0.5 and ours_len[40] == -1.0 and ours_len[41] == -1.0),
      ("TRL's get_soft_overlong_punishment gives the same numbers", theirs_len is None or ours_len == theirs_len))

# %%
ask("dynamic")

# %%
dynamic = look("dynamic")
verdict(dynamic)

# %%
dyn_runs = load_experiment("dynamic")
flat = {arm: sum(r.series("frac_reward_zero_std")[0] for r in recs) / len(recs) for arm, recs in dyn_runs.items()}
gens = dynamic["generations_total"]
print(f"flat groups in the first step's batch: plain {flat['plain']:.0%}, dynamic {flat['dynamic']:.0%}; completions "
      f"generated in the whole run: plain {gens['plain']['mean']:,.0f}, dynamic {gens['dynamic']['mean']:,.0f} "
      f"({gens['dynamic']['mean'] / gens['plain']['mean']:.2f}×)")

# %% [markdown]
# The start is what the experiment chose: the correctness reward alone at τ = 0.5, so many groups are flat (the plain
# arm's first batch, above). Dynamic sampling removes them from the batch, and pays for it: its runs generated
# several times the plain runs' completions in the same 12 steps. Per generated completion, the claim, the paired
# interval holds 0, and so does it per step (the `eval_accuracy_end` row): at this scale the extra generations bought
# no accuracy that the plain run did not reach. (The dynamic arm's *batch* accuracy panel starts
# lower for a reason that is not learning: its batches hold only groups with some wrong answers.) DAPO's setting
# differs: long completions from a 32B model, where a flat group costs minutes of generation and the filtered batch
# keeps the gradient's size steady as accuracy rises.

# %% jupyter={"source_hidden": true}
check("3 · dynamic sampling, measured", complete("dynamic"),
      ("dynamic sampling's first batches hold fewer flat groups than plain's", flat["dynamic"] < flat["plain"]),
      ("it generates more completions: the paired interval is above 0",
       dynamic["generations_total"]["dynamic - plain"]["lo"] > 0),
      ("accuracy at the plain run's budget of generations: the paired interval holds 0",
       holds_zero(dynamic, "eval_accuracy_at_budget", "dynamic")),
      ("... and after the 12 steps", holds_zero(dynamic, "eval_accuracy_end", "dynamic")))

# %% [markdown]
# ## 4 · GDPO: normalise each reward before you add them
#
# **The problem.** The course's reward is a sum, correctness plus format. GRPO normalises the sum within the group,
# so two completions that earned the same total in different ways get the same advantage, and groups that differ
# in one reward or in both can end up with the same advantages. GDPO (2025) normalises each reward function within
# its group first, sums, then normalises over the batch:
#
# $$\tilde r_{k,i} = \frac{r_{k,i} - \mathrm{mean}_{group}(r_k)}{\mathrm{std}_{group}(r_k)},\qquad
# s_i = \sum_k w_k\,\tilde r_{k,i},\qquad \hat A_i = \frac{s_i - \mathrm{mean}_{batch}(s)}{\mathrm{std}_{batch}(s)}$$
#
# Two binary rewards, $G = 2$, three groups: both rewards separate the first group's pair, only correctness the
# second's, and in the third the two completions trade one reward for the other.

# %%
correct = torch.tensor([[1., 0.], [1., 0.], [1., 0.]])          # (N, G)
fmt = torch.tensor([[1., 0.], [0., 0.], [0., 1.]])              # (N, G)
A_sum = group_advantages(correct + fmt)                         # GRPO on the summed reward
A_gdpo = gdpo_advantages(torch.stack([correct, fmt]))           # GDPO
distinct = lambda A: len(set(A.flatten().round(decimals=3).tolist()))   # noqa: E731  (3 decimals: the std floor)
markdown_table(["group", "correctness", "format", "A (sum, then normalise)", "A (GDPO)"],
               [(n, correct[n].tolist(), fmt[n].tolist(), [round(a, 3) for a in A_sum[n].tolist()],
                 [round(a, 3) for a in A_gdpo[n].tolist()]) for n in range(3)])

# %% [markdown]
# Summing first, any pair that differs gets the same two advantages, whether it differs in one reward or in both:
# the sum loses which reward separated the pair and by how much. GDPO keeps the first group (both rewards) apart
# from the second (one reward). `gdpo_advantages`:

# %%
print(f"distinct advantages in the batch: sum-then-normalise {distinct(A_sum)}, GDPO {distinct(A_gdpo)}")
show_lines(gdpo_advantages, "s = sum(", "flat = torch.stack", "A = (s - total / n)", "return torch.where")

# %% [markdown]
# **Same as TRL?** TRL normalises in its scoring step, inside `_generate_and_score_completions`. With two reward
# functions that return these rewards and `multi_objective_aggregation="normalize_then_sum"`, its advantages for
# the batch above:

# %%
if TRL:
    with quiet():
        gdpo_trainer = tc.make_trainer(copy.deepcopy(base), tok, G=2, max_completion_length=4,
                                       rewards_per_func=[correct.flatten().tolist(), fmt.flatten().tolist()],
                                       multi_objective_aggregation="normalize_then_sum")
        A_trl_gdpo = tc.trl_advantages(gdpo_trainer)
    print("TRL:     ", [round(a, 4) for a in A_trl_gdpo.tolist()])
else:
    A_trl_gdpo = None
    print(INSTALL_HINT)
print("grpo_lib:", [round(a, 4) for a in A_gdpo.flatten().tolist()])

# %% jupyter={"source_hidden": true}
check("4 · GDPO",
      ("summing first: every non-flat pair gets the same ± advantage (and the flat pair 0)", distinct(A_sum) == 3),
      ("GDPO tells a pair separated by two rewards from one separated by one", distinct(A_gdpo) > distinct(A_sum)),
      ("a pair that trades one reward for the other is flat both ways",
       bool((A_sum[2] == 0).all()) and bool(A_gdpo[2].abs().max() < 1e-6)),
      ("TRL's normalize_then_sum gives the same advantages",
       A_trl_gdpo is None or torch.allclose(A_trl_gdpo, A_gdpo.flatten(), atol=1e-4)))

# %%
ask("gdpo")

# %%
gdpo = look("gdpo")
verdict(gdpo)

# %%
gd_runs = load_experiment("gdpo")
vectors = {arm: sum(sum(v for v in r.series("post_r1/distinct_reward_vectors") if v == v) /
                    sum(1 for v in r.series("post_r1/distinct_reward_vectors") if v == v) for r in recs) / len(recs)
           for arm, recs in gd_runs.items()}
da = gdpo["distinct_advantages"]
for arm in gd_runs:
    print(f"{arm}: {da[arm]['mean']:.2f} distinct advantages per non-flat group, of {vectors[arm]:.2f} distinct reward "
          f"vectors (correctness, format)")

# %% [markdown]
# Both arms give about 2 distinct advantages per group that is not flat, and that is also the number of distinct
# reward vectors (correctness, format) the groups hold: every distinct vector already got its own advantage when the
# rewards were summed first. The tiny model writes its tags in almost every completion (its warm-up taught them), so
# the format reward hardly varies within a group, and there is nothing for GDPO to tell apart. GDPO's argument needs
# rewards that vary independently within a group (section 4's hand-made batch); here the paired intervals hold 0,
# for the count and for the accuracy: no difference measured here, because the situation GDPO fixes did not occur.

# %% jupyter={"source_hidden": true}
same_count = all(abs(a - v) < 1e-9 for recs in gd_runs.values() for r in recs
                 for a, v in zip(r.series("post_r1/distinct_advantages"), r.series("post_r1/distinct_reward_vectors"))
                 if a == a)
check("4 · GDPO, measured", complete("gdpo"),
      ("in both arms, every step: distinct advantages = distinct reward vectors (no two vectors share an advantage)",
       same_count),
      ("fewer than 2.5 distinct reward vectors per non-flat group, on average, in both arms",
       all(v < 2.5 for v in vectors.values())),
      ("the paired intervals hold 0: distinct advantages and accuracy",
       holds_zero(gdpo, "distinct_advantages", "normalize_then_sum")
       and holds_zero(gdpo, "eval_accuracy_end", "normalize_then_sum")))

# %% [markdown]
# ## 5 · The KL term: k1, k2, k3 and ρ·k3
#
# **The problem.** The β term needs $\mathbb{D}_{KL}[\pi_\theta\|\pi_{ref}]$ from the sampled tokens alone. With
# $d = \log\pi_{ref}(o_t) - \log\pi_\theta(o_t)$ at a token drawn from $\pi_\theta$, three estimators (Schulman's
# k1, k2, k3):
#
# $$k_1 = -d,\qquad k_2 = \tfrac12 d^2,\qquad k_3 = e^{d} - d - 1$$
#
# k1 and k3 average to the KL (k3 is never negative); k2 does not. But the loss *differentiates* the estimator, and
# its expected gradient is what moves π_θ. Two corrections came after R1: the tokens were sampled by
# $\pi_{\theta_{old}}$, not π_θ, so the estimate should be weighted by $\rho = \pi_\theta/\pi_{\theta_{old}}$
# (DeepSeek-V3.2's $\rho\cdot k_3$, TRL's `use_bias_correction_kl`); and the exponential of k3 can overflow.
#
# Exactly, on a categorical π_θ over five tokens: the expected value of each estimator and its expected gradient
# with respect to the logits (the sampled tokens held fixed, as in the loss), next to the gradients of the two KLs.

# %%
z = torch.tensor([1.0, 0.5, 0.0, -0.5, -1.0], dtype=torch.float64, requires_grad=True)
logp_ref_5 = torch.log_softmax(torch.tensor([0.0, 0.8, -0.3, 0.2, -0.6], dtype=torch.float64), -1)
logp_5 = torch.log_softmax(z, -1)
p_5 = logp_5.exp()
kl_rev = (p_5 * (logp_5 - logp_ref_5)).sum()                          # KL(π_θ ‖ π_ref)
kl_fwd = (logp_ref_5.exp() * (logp_ref_5 - logp_5)).sum()             # KL(π_ref ‖ π_θ)
grad = lambda v: torch.autograd.grad(v, z, retain_graph=True)[0]      # noqa: E731
g_rev, g_fwd = grad(kl_rev), grad(kl_fwd)
est_rows = {}
for name in ("k1", "k2", "k3", "ρ·k3"):
    k = kl_estimate(logp_5, logp_ref_5, "k3" if name == "ρ·k3" else name)   # (5,) one value per token
    if name == "ρ·k3":
        k = k * torch.exp(logp_5 - logp_5.detach())                   # ρ = π_θ / π_old, π_old = π_θ detached
    expected = (p_5.detach() * k).sum()                               # E over tokens from π_old = π_θ
    est_rows[name] = (expected.item(), grad(expected))
markdown_table(["estimator", "E[k]", "KL(π_θ‖π_ref)", "|E[∇k] − ∇KL(π_θ‖π_ref)|", "|E[∇k] − ∇KL(π_ref‖π_θ)|"],
               [(n, v, kl_rev.item(), (g - g_rev).norm().item(), (g - g_fwd).norm().item())
                for n, (v, g) in est_rows.items()], floatfmt=".5f")

# %% [markdown]
# Read the columns. In value, k1, k3 and ρ·k3 are the KL and k2 is not. In gradient: k1's is 0 (the score-function
# identity $\mathbb{E}[\nabla\log\pi] = 0$: as a loss, k1 does nothing on average); **k3's is the gradient of the
# other KL**, $\mathrm{KL}(\pi_{ref}\|\pi_\theta)$, the forward one; k2's and ρ·k3's are the gradient of
# $\mathrm{KL}(\pi_\theta\|\pi_{ref})$, the one the objective writes. The weight ρ is 1 in value on-policy and
# still changes the gradient: that is DeepSeek-V3.2's "unbiased KL". Off-policy (μ > 1, or another sampler) ρ also
# fixes the value (exercise 7.1). In `grpo_lib`:

# %%
show_source(kl_estimate)
show_lines(grpo_loss, "kl = kl_estimate(", "if use_bias_correction_kl:", after=1)

# %%
trl_rhok3 = trl_agree(loss_type="grpo", beta=0.04, use_bias_correction_kl=True)

# %% [markdown]
# **The overflow.** k3 holds $e^{d}$, $d = \log\pi_{ref} - \log\pi_\theta$. When π_θ has pushed a token's
# probability far below π_ref's (a drifted run, or a tokenizer mismatch between the two models), $d$ is large, and
# in float32 $e^{d}$ is `inf` from $d \approx 88.7$ on. TRL 1.16 computes k3 exactly as written, read here from its
# installed source:

# %%
if TRL:
    import inspect

    from trl import GRPOTrainer
    trl_src = inspect.getsource(GRPOTrainer._compute_loss)
    print(trl_src[trl_src.index("per_token_kl = ("):].split("# Importance")[0].rstrip())
d_big = torch.tensor([10.0, 80.0, 89.0])                                        # d at three tokens, float32
k3_naive = torch.exp(d_big) - d_big - 1                                         # TRL's formula
print(f"d = {d_big.tolist()}: k3 = {k3_naive.tolist()}")
z_nan = torch.zeros(4, requires_grad=True)                                      # the logits of one position
logp_tok = torch.log_softmax(z_nan, -1)[2]                                      # log π_θ of the sampled token
d_tok = (logp_tok.detach() + 89.0) - logp_tok                                   # π_ref gives it e^89 times more
loss_nan = 0.04 * (torch.exp(d_tok) - d_tok - 1)                                # β·k3 at that token
loss_nan.backward()
print(f"β·k3 = {loss_nan.item()}; gradient of the logits: {z_nan.grad.tolist()}")

# %% [markdown]
# One token at $d = 89$ makes the loss `inf`, and backward gives `inf` and NaN gradients (at the sampled token the
# softmax's gradient subtracts $\pi\cdot\infty$ from $\infty$). Every weight that token's log-probability depends on gets a NaN
# gradient, and the next optimizer step writes NaN into the model (issue trackers report such runs writing "!!!!").
# Clamping $d$ before the exponential, as some frameworks do, keeps
# the number finite but sets the gradient to 0 beyond the clamp, silently. `grpo_lib` does neither: `grpo_loss`
# **checks** the log-ratios at the active tokens against `LOG_RATIO_LIMIT` and refuses one above it, naming the
# position, before any backward:

# %%
logp_bad = torch.full((1, 3), -1.0)
logp_ref_bad = logp_bad.clone()
logp_ref_bad[0, 2] = -1.0 + 89.0                                                # token 2: d = 89
try:
    grpo_loss(logp_bad, None, logp_ref_bad, torch.tensor([1.0]), torch.ones(1, 3), beta=0.04)
    refusal = None
except ValueError as err:
    refusal = str(err)
print(f"LOG_RATIO_LIMIT = {LOG_RATIO_LIMIT:g} (e^{LOG_RATIO_LIMIT:g} = {math.exp(LOG_RATIO_LIMIT):.2e}; float32 "
      f"overflows at {torch.finfo(torch.float32).max:.2e} = e^{math.log(torch.finfo(torch.float32).max):.1f})")
print("grpo_loss:", refusal)

# %% jupyter={"source_hidden": true}
kl_at = {n: v for n, (v, _) in est_rows.items()}
g_at = {n: g for n, (_, g) in est_rows.items()}
check("5 · KL estimators",
      ("k1, k3 and ρ·k3 average to KL(π_θ ‖ π_ref); k2 does not",
       all(math.isclose(kl_at[n], kl_rev.item(), rel_tol=1e-9) for n in ("k1", "k3", "ρ·k3"))
       and not math.isclose(kl_at["k2"], kl_rev.item(), rel_tol=1e-2)),
      ("E[∇k1] = 0", g_at["k1"].abs().max() < 1e-12),
      ("E[∇k3] = ∇KL(π_ref ‖ π_θ), the forward KL", (g_at["k3"] - g_fwd).abs().max() < 1e-12),
      ("E[∇k2] = E[∇(ρ·k3)] = ∇KL(π_θ ‖ π_ref), the reverse KL",
       (g_at["k2"] - g_rev).abs().max() < 1e-12 and (g_at["ρ·k3"] - g_rev).abs().max() < 1e-12),
      ("the two KL gradients differ here (so the test above tells them apart)", (g_rev - g_fwd).norm() > 1e-2),
      ("TRL's use_bias_correction_kl agrees", agrees(trl_rhok3)),
      ("k3 at d = 89 is inf in float32 (and finite at d = 80)",
       math.isinf(k3_naive[2].item()) and math.isfinite(k3_naive[1].item())),
      ("... and the logits' gradient is NaN", bool(torch.isnan(z_nan.grad).any())),
      ("grpo_loss refuses it, naming the limit and the position",
       refusal is not None and "80" in refusal and "2" in refusal))

# %%
ask("kl")

# %%
kl = look("kl")
verdict(kl)

# %%
kl_end = kl["kl_to_start_end"]
order = sorted((a for a in kl_end if " - " not in a), key=lambda a: kl_end[a]["mean"])
print("KL to the start after 12 steps, smallest first: " + ", ".join(f"{a} {kl_end[a]['mean']:.4f}" for a in order))

# %%
kl_runs = load_experiment("kl")
same = max(abs(x - y) for a, b in zip(kl_runs["rho_k3"], kl_runs["k2"])
           for x, y in zip(a.series("gallery/kl_to_start"), b.series("gallery/kl_to_start")))
print(f"ρ·k3 vs k2, every step of every seed: largest difference of the KL to the start {same:.1e}; rewards identical: "
      f"{all(a.series('reward') == b.series('reward') for a, b in zip(kl_runs['rho_k3'], kl_runs['k2']))}")

# %% [markdown]
# Two of the three arms are the same run. On-policy (μ = 1, ρ = 1 in value) the per-token gradients of ρ·k3 and k2
# are identical, not just equal on average: with $d = \log\pi_{ref} - \log\pi_\theta$,
# $\nabla(\rho k_3) = k_3\nabla\log\pi_\theta + \nabla k_3 = (e^d - d - 1)\nabla\log\pi_\theta -
# (e^d - 1)\nabla\log\pi_\theta = -d\,\nabla\log\pi_\theta = \nabla k_2$. So the two runs take the same steps (their
# KL to the start agrees to float rounding, their rewards exactly), and DeepSeek-V3.2's correction, on-policy, is
# k2's reverse-KL gradient. k3's gradient is the forward KL's, and it held the policy less: k3 ends farther from the
# start, both paired intervals below 0. Held-out accuracy: the intervals hold 0 (and are wide: at β = 0.2 and
# η = 2e-4 the runs wander, the seeds disagree).

# %% jupyter={"source_hidden": true}
check("5 · KL estimators, measured", complete("kl"),
      ("ρ·k3 and k2 are the same run: KL to the start within 1e-5 at every step, identical rewards",
       same < 1e-5 and all(a.series("reward") == b.series("reward") for a, b in zip(kl_runs["rho_k3"], kl_runs["k2"]))),
      ("k3 ends farther from the start than ρ·k3 and k2: both paired intervals below 0",
       kl["kl_to_start_end"]["rho_k3 - k3"]["hi"] < 0 and kl["kl_to_start_end"]["k2 - k3"]["hi"] < 0),
      ("held-out accuracy: the paired intervals hold 0",
       holds_zero(kl, "eval_accuracy_end", "rho_k3") and holds_zero(kl, "eval_accuracy_end", "k2")))

# %% [markdown]
# ## 6 · The sampler is not the trainer
#
# **The problem.** Fast RL recipes sample with an inference engine (vLLM) and train with another (the training
# framework): other kernels, bf16 weights, another attention. The engine's probability of a sampled token is not
# the trainer's, so the batch is slightly off-policy even at μ = 1, and the ratio of notebook 04 silently compares
# the wrong things. TRL reweights the policy term by the trainer/sampler ratio, truncated (TIS) or masked outside a
# range (MIS), per token or per sequence:
#
# $$w_{i,t} = \frac{\pi_{train}(o_{i,t})}{\pi_{sampler}(o_{i,t})}\ \text{(token)},\qquad
# w_i = \prod_t w_{i,t}\ \text{(sequence)},\qquad
# \text{truncate: } \min(w, C_{max}),\qquad \text{mask: } w\cdot\mathbb{1}[C_{min} \le w \le C_{max}]$$
#
# This course's engine samples with the policy itself, so the mismatch is made on purpose: `sampler_perturbation="bf16"`
# samples from a bfloat16 copy of π_θ (rounded weights, a bf16 forward), re-synced every step, while the fp32
# policy trains. On eight completions of the tiny model, the two log-probabilities of the same sampled tokens, and
# the weights of the four modes with TRL's default $C_{max} = 3$:

# %%
from grpo_lib.models import load_tiny_model
from grpo_lib.data import build_prompt
from grpo_lib.rollout import generate_completions, completion_logprobs
from grpo_lib.sampler import sync_sampler

with quiet():
    policy, tok_tiny = load_tiny_model()
sampler = sync_sampler(None, policy, "bf16", seed=0)                        # the bf16 copy of π_θ
roll = generate_completions(sampler, tok_tiny, [build_prompt(tok_tiny, "What is 47 + 85?")], 8, max_new_tokens=40,
                            temperature=1.0, seed=0)
with torch.no_grad():
    logp_train = completion_logprobs(policy, roll, 1.0)                     # (B, T) the fp32 trainer
    logp_sampler = completion_logprobs(sampler, roll, 1.0).float()          # (B, T) the bf16 sampler
mode_rows = {}
for mode in ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask"):
    w, m = sampling_importance_weights(logp_train, logp_sampler, roll.completion_mask, mode=mode, clip_max=3.0)
    mode_rows[mode] = m
markdown_table(["mode"] + list(m), [(mode, *m.values()) for mode, m in mode_rows.items()], floatfmt=".4f")

# %% [markdown]
# The first two columns are TRL's `sampling/sampling_logp_difference/*`, the size of the mismatch, the same in every
# mode; the others are the weights' `sampling/importance_sampling_ratio/*`. A sequence weight is a product over up to
# 40 tokens, so it strays much further from 1 than one token's. The lines that use the weights in `grpo_loss`
# (the policy term only, not the KL, as TRL does):

# %%
show_lines(grpo_loss, "if is_weights is not None:", after=2)
show_lines(sampling_importance_weights, "w = torch.exp(", 'if mode.endswith("_truncate"):', after=3)

# %% [markdown]
# TRL computes these weights inline in its generation step (and only under vLLM), so there is no function of it to
# call here; `tests/test_golden_trl_post_r1.py` runs those very lines, read from TRL's installed source, on the same
# tensors for the four modes, and TRL's loss with the weights against `grpo_loss(is_weights=...)`.

# %% jupyter={"source_hidden": true}
tm, sm = mode_rows["token_truncate"], mode_rows["sequence_mask"]
check("6 · the sampler-trainer mismatch",
      ("the bf16 sampler's log-probs differ from the fp32 trainer's", tm["sampling/sampling_logp_difference/mean"] > 0),
      ("the difference metrics are the same in every mode",
       len({m["sampling/sampling_logp_difference/max"] for m in mode_rows.values()}) == 1),
      ("truncated weights never exceed C_max = 3",
       all(mode_rows[k]["sampling/importance_sampling_ratio/max"] <= 3.0 for k in ("token_truncate", "sequence_truncate"))),
      ("sequence weights stray further from 1 than token weights",
       max(abs(sm["sampling/importance_sampling_ratio/max"] - 1), abs(sm["sampling/importance_sampling_ratio/min"] - 1))
       >= max(abs(tm["sampling/importance_sampling_ratio/max"] - 1), abs(tm["sampling/importance_sampling_ratio/min"] - 1))))

# %%
ask("mismatch")

# %%
mismatch = look("mismatch")
verdict(mismatch)

# %%
lp = mismatch["logp_diff_mean"]
print(f"sampling/sampling_logp_difference/mean, mean over the steps: perturbed {lp['perturbed']['mean']:.4f}, corrected "
      f"{lp['corrected']['mean']:.4f} (the exact arm samples with the policy: no sampler, nothing to log)")
mm_runs = load_experiment("mismatch")
acc_seed = {arm: [r.summary["accuracy_after"] for r in recs] for arm, recs in mm_runs.items()}
rew = {arm: [sum(r.series("reward")) / len(r.rows) for r in recs] for arm, recs in mm_runs.items()}
for arm in mm_runs:
    print(f"{arm:>9}: held-out accuracy after 12 steps per seed {acc_seed[arm]}; training reward, mean over the steps, "
          f"per seed {[round(x, 3) for x in rew[arm]]}")
width = {arm: mismatch["eval_accuracy_end"][f"{arm} - exact"]["hi"] - mismatch["eval_accuracy_end"][f"{arm} - exact"]["lo"]
         for arm in ("perturbed", "corrected")}

# %% [markdown]
# The mismatch is real and large: the noisy sampler's log-probabilities of its own tokens differ from the policy's by
# the amount printed first (TRL's metric; the bf16 copy of the cell above differs far less). The training reward of
# both perturbed arms is lower than the exact run's at every seed: it scores what the noisy copy wrote, not what the
# policy would write. What the policy learned is the held-out accuracy. Without the correction, the seeds disagree:
# the per-seed line shows one seed ending far below the others, and the paired interval is wide (it holds 0: with 3
# seeds, "no difference measured", not "no harm"). With TRL's correction (sequence-level weights, masked to 0 above
# 3), every seed ends within 0.05 of the exact run, and the paired interval is narrow around 0. The price is
# in the importance-sampling ratio panel: its mean is below 1, so part of every batch is masked out (weight 0).

# %% jupyter={"source_hidden": true}
check("6 · the mismatch, measured", complete("mismatch"),
      ("the perturbed sampler's log-prob difference is above 0.01 in both perturbed arms",
       lp["perturbed"]["lo"] > 0.01 and lp["corrected"]["lo"] > 0.01),
      ("... over 10 times the bf16 copy's of the cell above",
       lp["perturbed"]["mean"] > 10 * mode_rows["token_truncate"]["sampling/sampling_logp_difference/mean"]),
      ("the training reward of both perturbed arms is below the exact run's at every seed",
       all(p < e and c < e for p, c, e in zip(rew["perturbed"], rew["corrected"], rew["exact"]))),
      ("uncorrected, one seed ends over 0.1 below the exact run's accuracy",
       any(e - p > 0.1 for p, e in zip(acc_seed["perturbed"], acc_seed["exact"]))),
      ("corrected, every seed ends within 0.05 of the exact run", all(abs(c - e) <= 0.05 for c, e in
                                                                      zip(acc_seed["corrected"], acc_seed["exact"]))),
      ("the corrected interval holds 0 and is narrower than the uncorrected one",
       holds_zero(mismatch, "eval_accuracy_end", "corrected") and width["corrected"] < width["perturbed"]),
      ("the correction masks part of the batch: the mean weight is below 1", all(
          sum(r.series("sampling/importance_sampling_ratio/mean")) / len(r.rows) < 1 for r in mm_runs["corrected"])))

# %% [markdown]
# ## 7 · LoRA: train a low-rank update instead of every weight
#
# **The idea.** Freeze the model's weights $W$ and train, in chosen layers, a low-rank update:
#
# $$W' = W + \frac{\alpha}{r} B A,\qquad B \in \mathbb{R}^{d_{out}\times r},\ A \in \mathbb{R}^{r\times d_{in}},\
# B = 0 \text{ at the start}$$
#
# so π_θ starts as the base model, and π_ref is simply the base model with the adapters switched off (no copy). The
# optimizer holds moments for the adapters only. "LoRA Without Regret" (Schulman and Thinking Machines Lab, 2025)
# reports that for RL even rank 1 matches full fine-tuning, provided the adapters sit in every layer (MLP included)
# and the learning rate is about 10 times full fine-tuning's: `lora_lr_multiplier` (default 10) does that, and the
# start-up line prints the rate used. On the tiny model:

# %%
from grpo_lib.lora import apply_lora, peft_available
from grpo_lib.models import count_parameters

lora_rows = []
if peft_available():
    for r in (1, 8, 32):
        with quiet():
            m_lora, _ = load_tiny_model()
            apply_lora(m_lora, GRPOConfig.tiny(lora_r=r, report_to="none"))
        lora_rows.append((r, count_parameters(m_lora, trainable_only=True), count_parameters(m_lora)))
    display(markdown_table(["r", "trainable parameters", "all parameters"], lora_rows))
else:
    print('peft is not installed: pip install -e ".[lora]"')
cfg_lora = GRPOConfig.tiny(lora_r=1, report_to="none")
print(f"lr {cfg_lora.lr:g} × lora_lr_multiplier {cfg_lora.lora_lr_multiplier:g} = AdamW's lr {cfg_lora.optimizer_lr:g}")
show_lines(apply_lora, "peft_model = get_peft_model(")

# %% [markdown]
# TRL trains LoRA through `peft_config=LoraConfig(...)` on its trainer (`python -m grpo_lib.trl.recipe` passes it when
# `lora_r > 0`); the adapters and the frozen base are peft's in both, so there is no loss code of TRL's to compare here.

# %% jupyter={"source_hidden": true}
check("7 · LoRA",
      ("the adapters are a small share of the weights, growing with r",
       not lora_rows or (lora_rows[0][1] < lora_rows[1][1] < lora_rows[2][1] and lora_rows[-1][1] < lora_rows[-1][2] / 2)),
      ("AdamW's lr is lr × 10 with LoRA", math.isclose(cfg_lora.optimizer_lr, 10 * cfg_lora.lr)))

# %%
ask("lora")

# %%
lora = look("lora")
verdict(lora)

# %%
tp, st = lora["trainable_params"], lora["train_state_mb"]
print(f"trainable parameters: full {tp['full']['mean']:,.0f}, LoRA {tp['lora']['mean']:,.0f} "
      f"({tp['lora']['mean'] / tp['full']['mean']:.1%}); weights + gradients + AdamW's moments of what is trained: "
      f"{st['full']['mean']:.2f} MiB vs {st['lora']['mean']:.3f} MiB")
pk = lora["peak_rss_mb"]
print(f"peak resident memory of the whole process: full {pk['full']['mean']:.0f} MiB, LoRA {pk['lora']['mean']:.0f} MiB")
from grpo_lib.course.memory import qwen2_5_1_5b_instruct_config, qwen2_parameter_count



def lora_count(c, r=8):
    """Adapter parameters r·(d_in + d_out) summed over q, k, v, o, gate, up, down in every layer."""
    hd = c.hidden_size // c.num_attention_heads
    h, f, kv, q_dim = c.hidden_size, c.intermediate_size, c.num_key_value_heads * hd, c.num_attention_heads * hd
    return r * c.num_hidden_layers * ((h + q_dim) + 2 * (h + kv) + (q_dim + h) + 2 * (h + f) + (f + h))


qc = qwen2_5_1_5b_instruct_config()                       # the same count at Qwen2.5-1.5B, r = 8 on every projection
lora_qwen, full_qwen = lora_count(qc), qwen2_parameter_count(qc)
print(f"Qwen2.5-1.5B: trained state of full fine-tuning {16 * full_qwen / 2**30:.1f} GiB, of LoRA r = 8 "
      f"{16 * lora_qwen / 2**30:.2f} GiB ({lora_qwen:,} adapter parameters)")

# %% [markdown]
# LoRA (r = 8 on every projection) trains a small share of the weights, and its trained state (weights, gradients
# and AdamW's two moments of what is trained) shrinks in proportion. The whole process's peak memory does not: on a
# model of a million parameters the weights are a few megabytes, and the process is mostly PyTorch and Python; the
# LoRA runs peak *higher*, the paired interval above 0 (most likely what peft adds, its import and its extra layers,
# outweighs the few megabytes of optimizer state it saves at this size). The
# saving is real where the weights dominate: the last line counts the same for Qwen2.5-1.5B (16 bytes per trained
# parameter, as notebook 06's planner counts them). Held-out accuracy at lr × 10: the paired interval holds 0, as
# "LoRA Without Regret" predicts for RL.

# %% jupyter={"source_hidden": true}
r8 = dict((r, n) for r, n, _ in lora_rows).get(8)
check("7 · LoRA, measured", complete("lora"),
      ("LoRA trains under 10% of the parameters", tp["lora"]["mean"] < 0.1 * tp["full"]["mean"]),
      ("the runs' trainable count is the r = 8 count of the table in this section", r8 is None or r8 == tp["lora"]["mean"]),
      ("r·(d_in + d_out) over the seven projections of every layer gives the runs' count",
       lora_count(policy.config) == tp["lora"]["mean"]),
      ("its trained state is smaller: the paired interval is below 0", lora["train_state_mb"]["lora - full"]["hi"] < 0),
      ("the process's peak memory is larger with LoRA at this size: the paired interval is above 0",
       lora["peak_rss_mb"]["lora - full"]["lo"] > 0),
      ("held-out accuracy: the paired interval holds 0", holds_zero(lora, "eval_accuracy_end", "lora")))

# %% [markdown]
# ## 8 · A control: a random reward
#
# "Spurious Rewards" (Shao et al. 2025) trained Qwen2.5-Math-7B with GRPO on a reward that was a coin flip, and its
# MATH-500 accuracy rose by 21 points (the true reward gave 29). The mechanism they found is not learning from the
# reward: GRPO's clip makes the update lean toward what the model already prefers, and that model happened to
# prefer writing code, which helped. The effect does not carry over to Llama 3 or OLMo 2. So before reading a gain
# as learning, run the same recipe with a random reward: whatever it gains is what the recipe does without
# information. Here, with the tiny model:

# %%
ask("random_reward")

# %%
random_reward = look("random_reward")
verdict(random_reward)

# %%
rr_runs = load_experiment("random_reward")
coin = [v for r in rr_runs["random"] for v in r.series("reward")]
coin_mean = sum(coin) / len(coin)
ch = random_reward["eval_accuracy_change"]
print(f"the random arm's training reward, mean of its {len(coin)} steps (3 seeds × 12): {coin_mean:.3f} (a fair coin of 0 or 2: 1)")
print(f"held-out accuracy change: real reward {ch['real']['mean']:+.3f} [{ch['real']['lo']:+.3f}, {ch['real']['hi']:+.3f}], "
      f"random reward {ch['random']['mean']:+.3f} [{ch['random']['lo']:+.3f}, {ch['random']['hi']:+.3f}]")

# %%
for arm, recs in rr_runs.items():
    print(f"{arm:>6}: held-out accuracy before → after, per seed: "
          + ", ".join(f"{r.summary['accuracy_before']:.2f} → {r.summary['accuracy_after']:.2f}" for r in recs))

# %% [markdown]
# The coin's training reward is 1 on average, as a fair coin of 0 and 2 must be: a random-reward run's reward curve
# is flat by construction and says nothing. Held out, with the true reward: the real reward lifted every seed, and
# the random one did not. Its change holds 0 over the seeds, but the seeds tell more than the mean: two ended where
# they started and one fell far, a random walk of the weights with no signal to pull it back. The tiny model has no
# hidden skill that a push in a random direction could bring out, unlike Qwen2.5-Math, whose gain under a random
# reward Spurious Rewards traced to a behaviour the model already had (writing code) that the clipped update
# amplified. The control is cheap: one more arm with the same seeds. Run it before you credit a gain to a reward.
#
# Why its training curves cannot be read as learning: a random reward is independent of the completion, so each
# group's advantages are noise with mean 0 whatever the model writes, and the expected policy gradient is 0. What
# moves the policy is that noise (a random walk of the weights), the KL term, and any asymmetry of the update
# itself (the clip, at μ > 1). Only a held-out evaluation with the *true* reward says what the run did to the model.

# %% jupyter={"source_hidden": true}
check("8 · the random-reward control", complete("random_reward"),
      ("the coin's mean training reward is within 0.1 of 1", abs(coin_mean - 1) < 0.1),
      ("the real reward raised held-out accuracy: its interval is above 0", ch["real"]["lo"] > 0),
      ("the random reward's change holds 0", ch["random"]["lo"] <= 0 <= ch["random"]["hi"]),
      ("random − real is below 0", random_reward["eval_accuracy_change"]["random - real"]["hi"] < 0),
      ("the real reward lifted every seed by over 0.2",
       all(r.summary["accuracy_after"] - r.summary["accuracy_before"] > 0.2 for r in rr_runs["real"])),
      ("random: two seeds moved by at most 0.05, one fell by over 0.1", sorted(
          (r.summary["accuracy_after"] - r.summary["accuracy_before"] < -0.1,
           abs(r.summary["accuracy_after"] - r.summary["accuracy_before"]) <= 0.05) for r in rr_runs["random"])
       == [(False, True), (False, True), (True, False)]))

# %% [markdown]
# ## 9 · Entropy collapse
#
# The entropy of the policy (the mean over completion tokens of $-\sum_v \pi(v)\log\pi(v)$, the dashboard's
# `entropy` panel) measures how much it still explores. In GRPO it falls: the policy sharpens on what earned
# reward, and a policy that no longer samples alternatives has nothing left to compare within a group (Cui et al.
# 2025 fit accuracy as a function of the entropy spent). Notebook 05's gallery logged it: the healthy run and the run
# with μ = 4, over the same 40 steps.

# %%
ENTROPY_RUNS = {"healthy (μ = 1), gallery": load_run("healthy")["metrics"], "μ = 4, gallery": load_run("mu4")["metrics"]}
fig, ax = plt.subplots(figsize=(7, 3))
for label, rows in ENTROPY_RUNS.items():
    ax.plot([m["step"] for m in rows], [m["entropy"] for m in rows], lw=1.5, label=label)
ax.set(xlabel="step", ylabel="entropy (nats per token)", title="entropy of the policy during training")
ax.legend(fontsize=8), ax.grid(alpha=0.3)
plt.show()
mean10 = lambda rows: sum(m["entropy"] for m in rows) / len(rows)            # noqa: E731
ent = {label: (mean10(rows[:10]), mean10(rows[-10:])) for label, rows in ENTROPY_RUNS.items()}
for label, (first, last) in ent.items():
    print(f"{label}: entropy, mean of the first 10 steps {first:.4f}, of the last 10 {last:.4f} ({last / first - 1:+.0%})")


# %% [markdown]
# The tiny model starts with a low entropy: it was warmed up by supervised learning on the task, so its answers are
# already peaked. Over 40 steps the entropy still falls in both runs, and further at μ = 4, where four updates per
# batch sharpen the policy faster (the lines above). On an LLM the fall has the same shape over hundreds of steps, and
# a run whose entropy has collapsed samples the same answer G times: every group is flat, and learning stops.
#
# **Why it falls: the covariance.** Take a softmax policy $\pi = \mathrm{softmax}(z)$ over a few actions and move
# the logits by $\Delta z$. The entropy $H = -\sum_a \pi(a)\log\pi(a)$ has $\partial H/\partial z_b =
# -\pi(b)\big(\log\pi(b) + H\big)$, so to first order
#
# $$\Delta H \approx \sum_b \frac{\partial H}{\partial z_b}\Delta z_b = -\,\mathrm{Cov}_{a\sim\pi}\big(\log\pi(a),\
# \Delta z_a\big),$$
#
# and with the natural-gradient step $\Delta z_a = \eta\,A(a)$, $\Delta H \approx -\eta\,\mathrm{Cov}_{a\sim\pi}
# (\log\pi(a), A(a))$. An action that is both likely and better than average (high $\log\pi$, high $A$) makes the
# covariance positive and the entropy fall; a rare action with a high advantage makes it rise. GRPO rewards what
# the policy already samples well, so the first case dominates. One cell checks it against the real change:

# %%
def entropy(z):
    p = torch.softmax(z, -1)
    return -(p * torch.log(p)).sum()


z_c = torch.log(torch.tensor([0.6, 0.25, 0.1, 0.05], dtype=torch.float64))      # a confident policy
cov_rows = []
for what, A_c in (("the likely action is the good one", [1.0, 0.0, 0.0, 0.0]),
                  ("a rare action is the good one", [0.0, 0.0, 0.0, 1.0])):
    A_c = torch.tensor(A_c, dtype=torch.float64)
    p, logp = torch.softmax(z_c, -1), torch.log_softmax(z_c, -1)
    eta = 1e-3
    predicted = -eta * ((p * logp * A_c).sum() - (p * logp).sum() * (p * A_c).sum())   # -η Cov_π(log π, A)
    real = entropy(z_c + eta * A_c) - entropy(z_c)
    cov_rows.append((what, predicted.item(), real.item()))
markdown_table(["advantage", "−η Cov(log π, A)", "real ΔH"], cov_rows, floatfmt=".3e")

# %% [markdown]
# DAPO's clip-higher ($\epsilon_{high} > \epsilon$, `epsilon_high=0.28`) attacks exactly the second case's
# obstacle: when a batch is reused (μ > 1), a rare token with $A > 0$ hits the upper clip after a small absolute
# gain ($\rho \le 1 + \epsilon$ of a small probability), so its push is cut first; a higher upper clip lets rare good
# tokens grow, which keeps the entropy up. At μ = 1 no clip binds and `epsilon_high` changes nothing, so the
# measured run is at μ = 4.

# %%
ask("clip_higher")

# %%
clip_higher = look("clip_higher")
verdict(clip_higher)

# %%
ent_end, high = clip_higher["entropy_end"], clip_higher["clip_high_mean"]
print(f"entropy, mean of the last 5 steps: clip {ent_end['clip']['mean']:.4f}, clip-higher "
      f"{ent_end['clip_higher']['mean']:.4f} nats per token; tokens clipped from above, mean over the steps: "
      f"{high['clip']['mean']:.3%} vs {high['clip_higher']['mean']:.3%}")

# %% [markdown]
# Clip-higher did what its mechanism says: fewer tokens with $A > 0$ were silenced by the upper clip (the
# `clip_high_mean` interval excludes 0). The entropy did not follow, at this scale: its paired interval holds 0,
# and so does the accuracy's. On the tiny model the upper clip binds on a fraction of a percent of the tokens (the
# line above), too few to move the entropy in 12 steps; DAPO measured its effect on a 32B model over thousands of
# steps, where the clip binds far more often. Exercise 7.6 asks what a longer run would take to show it.

# %% jupyter={"source_hidden": true}
H, H4 = ent["healthy (μ = 1), gallery"], ent["μ = 4, gallery"]
check("9 · entropy collapse",
      ("the entropy falls in both gallery runs (last 10 steps below the first 10)", H[1] < H[0] and H4[1] < H4[0]),
      ("it falls further at μ = 4", H4[1] / H4[0] < H[1] / H[0]),
      ("the first-order prediction is within 1% of the real change, in both cases",
       all(abs(pr - re) < 0.01 * abs(re) for _, pr, re in cov_rows)),
      ("a likely good action lowers the entropy, a rare good action raises it", cov_rows[0][2] < 0 < cov_rows[1][2]),
      complete("clip_higher"),
      ("clip-higher silences fewer tokens from above: the paired interval is below 0",
       clip_higher["clip_high_mean"]["clip_higher - clip"]["hi"] < 0),
      ("the upper clip binds on under 1% of the tokens in both arms",
       all(high[arm]["mean"] < 0.01 for arm in ("clip", "clip_higher"))),
      ("entropy at the end and held-out accuracy: the paired intervals hold 0",
       holds_zero(clip_higher, "entropy_end", "clip_higher") and holds_zero(clip_higher, "eval_accuracy_end", "clip_higher")))

# %% [markdown]
# ## 10 · ProRL: the outer loop, used on purpose
#
# DeepSeekMath's Algorithm 1 has an outer loop that resets $\pi_{ref} \leftarrow \pi_\theta$ every iteration
# (notebook 05, `num_iterations`), and most recipes run a single iteration. ProRL (NVIDIA 2025) trained for over
# 2,000 steps with the KL term on, and reset the reference (and the optimizer's state) periodically: the KL then
# holds each stretch of training near where that stretch started, instead of pulling the policy back to the base
# model forever. In `grpo_lib` the reset is the outer loop of `Run.steps`:

# %%
from grpo_lib.run.lifecycle import Run

show_lines(Run.steps, "if step % cfg.steps == 0 and cfg.beta > 0:", after=4)


# %% [markdown]
# What a reset buys, on notebook 01's three-answer policy: the same group every step (the tutorial's "5", "6",
# "2 + 3 = 5", advantages 0, −1, +1), a strong KL term (β = 0.5), 24 steps of SGD, either as one iteration or as 6
# iterations of 4 steps. With π_ref fixed, the push of the advantages meets the pull of the KL and the policy stops
# moving; a reset removes the pull.

# %%
def prorl_toy(I, M, beta=0.5, lr=0.5):
    """I outer iterations of M steps on the worked example's fixed group; π_ref ← π_θ at each iteration's start."""
    policy = ToyPolicy()
    optimizer = torch.optim.SGD(policy.parameters(), lr=lr)       # no state: a reset of it would change nothing
    best = []
    for _ in range(I):
        ref_logits = policy.logits.detach().clone()              # π_ref ← π_θ
        for _ in range(M):
            grpo_step(policy, optimizer, (0, 1, 2), epsilon=0.2, beta=beta, ref_logits=ref_logits)
            best.append(policy.probs()[2].item())                # π("2 + 3 = 5"), the best answer
    return best


one, reset = prorl_toy(I=1, M=24), prorl_toy(I=6, M=4)
fig, ax = plt.subplots(figsize=(6, 2.8))
ax.plot(range(1, 25), one, lw=2, label="one iteration (π_ref fixed)")
ax.plot(range(1, 25), reset, lw=2, label="π_ref reset every 4 steps")
ax.set(xlabel="step", ylabel='π("2 + 3 = 5")', ylim=(0, 1)), ax.legend(), ax.grid(alpha=0.3)
plt.show()
print(f'π("2 + 3 = 5") after 24 steps: π_ref fixed {one[-1]:.3f} (step 12: {one[11]:.3f}); reset every 4 steps '
      f"{reset[-1]:.3f}")

# %% [markdown]
# With π_ref fixed the curve flattens: the policy settles where the KL's pull equals the advantages' push. With
# resets it keeps climbing, one stretch at a time, each held near its own start. That is the trade ProRL makes on
# purpose: the KL term still stops any single stretch from running away, and the resets let the run as a whole go
# further than the base model's neighbourhood. One difference remains: the engine's AdamW lives for the whole run
# (choice 3 of `grpo_lib/train.py`), so its moment estimates are not reset with π_ref; ProRL resets them too (the
# tutorial's script did, by re-creating the optimizer every iteration). This toy uses plain SGD, which has no state.

# %% jupyter={"source_hidden": true}
check("10 · ProRL's reference resets",
      ("with π_ref fixed, the last 12 steps move π(best) by less than the first 12",
       one[-1] - one[11] < one[11] - one[0]),
      ("with resets the policy ends further", reset[-1] > one[-1] + 0.05),
      ("both start from the same first step (the first iteration is the same)", math.isclose(one[0], reset[0])))


# %% [markdown]
# ## Exercises
#
# **7.1 · The KL estimate on tokens another policy sampled (fill in).** At μ > 1 (or with a separate sampler) the
# tokens of the batch come from $\pi_{old}$, not from π_θ. For a single position with $V$ possible tokens and their
# probabilities `p_theta`, `p_old`, `p_ref` (each of shape (V,)), write `my_offpolicy_kl(p_theta, p_old, p_ref)`
# returning the pair $\big(\mathbb{E}_{a\sim\pi_{old}}[k_3(a)],\ \mathbb{E}_{a\sim\pi_{old}}[\rho(a)\,k_3(a)]\big)$,
# exact expectations (sums over the V tokens), with $k_3 = r - \log r - 1$, $r = \pi_{ref}(a)/\pi_\theta(a)$ and
# $\rho = \pi_\theta(a)/\pi_{old}(a)$. Which of the two is $\mathrm{KL}(\pi_\theta\|\pi_{ref})$? Stuck? `hint("7.1")`.

# %% tags=["solution"]
def my_offpolicy_kl(p_theta, p_old, p_ref):   # three (V,) probability tensors -> (E_old[k3], E_old[ρ·k3])
    ### BEGIN SOLUTION
    r = p_ref / p_theta
    k3 = r - torch.log(r) - 1                                  # one value per token
    rho = p_theta / p_old                                      # the importance weight π_θ / π_old
    return (p_old * k3).sum(), (p_old * rho * k3).sum()        # tokens are drawn from π_old
    ### END SOLUTION


check_offpolicy_kl(my_offpolicy_kl);


# %% [markdown]
# **7.2 · The entropy change of a plain policy-gradient step (fill in).** Section 9 used the natural-gradient step
# $\Delta z = \eta A$. Plain gradient ascent on $J(z) = \sum_a \pi(a) A(a)$, $\pi = \mathrm{softmax}(z)$, moves the
# logits differently. Write `my_entropy_change_pg(logits, A, eta)`: for logits and advantages of shape (V,) and a
# step size η, the first-order change of the entropy after the step $z \leftarrow z + \eta\nabla_z J$. Where does
# the plain step put an extra factor, and does a rare good action still raise the entropy? Stuck? `hint("7.2")`.

# %% tags=["solution"]
def my_entropy_change_pg(logits, A, eta):   # logits, A: (V,); eta: a float -> a float
    ### BEGIN SOLUTION
    pi, log_pi = torch.softmax(logits, -1), torch.log_softmax(logits, -1)
    dz = eta * pi * (A - (pi * A).sum())                        # ∇_z Σ π A: the softmax's Jacobian at work
    return -((pi * log_pi * dz).sum() - (pi * log_pi).sum() * (pi * dz).sum())   # -Cov_π(log π, Δz)
    ### END SOLUTION


check_entropy_change_pg(my_entropy_change_pg);

# %% [markdown]
# Open exercises (worked answers for instructors in docs/teaching.md):
#
# **7.3 · GSPO at μ = 1.** Run `grpo_loss` at `importance_sampling_level="sequence"` with `logp_old=None` (μ = 1).
# What is $s_i$, what does the clip do, and how does the gradient compare with the token-level loss at μ = 1?
#
# **7.4 · The NaN.** Take section 5's three tokens, set β = 0.04 and compute TRL's k3 term at $d = 89$ inside a
# tiny loss; call `backward()` and look at the gradient. Then clamp $d$ at 20 before the exponential: what is the
# gradient at that token now, and why is that also a problem?
#
# **7.5 · Your own control.** Pick one measured comparison above whose interval excludes 0 and say what a
# random-reward run of the same recipe would need to show for the difference to be credited to the variant.
#
# **7.6 · Clip-higher and the entropy.** Section 9's 12-step runs found no difference in entropy. Train the tiny
# preset twice for 40 steps at μ = 4, once as it is and once with `--epsilon-high 0.28` (`python -m grpo_lib --preset
# tiny --mu 4 --steps 40 --report-to none --output-dir runs/ch`), and plot `entropy` and `clip_ratio/high_mean` from
# the two `metrics.jsonl`. Which tokens does the higher clip let through, and does the entropy fall less over 40
# steps? One seed is an anecdote: how many would you need?

# %% [markdown]
# ## Quiz: check yourself
#
# Choose an answer to each question *before* you open it. Every answer is a number this notebook printed.

# %%
quiz("Quiz · notebook 07",
     Question("At μ = 1, what does GSPO's sequence ratio s_i equal?",
              ("1: π_θ = π_old at the update, so GSPO changes nothing on-policy", "the product of the token ratios",
               "1 + ε"), 0,
              f"s_i = {st_mu1['ratio_mean']:.4f} at μ = 1: every token ratio is 1, so their geometric mean is 1 "
              "(section 1 and exercise 7.3).", st_mu1["ratio_mean"].item() == 1.0),
     Question("A token with ρ = 6 and A = +1: which loss still pushes it?",
              ("the clipped surrogate", "CISPO", "neither"), 1,
              f"The clip gives it {push[('A = +1', 'dapo')][4]:.3f}, CISPO {push[('A = +1', 'cispo')][4]:.3f} "
              "(ε_max·A, section 2).", push[("A = +1", "dapo")][4] == 0 < push[("A = +1", "cispo")][4]),
     Question("As a loss on tokens from π_θ, the gradient of which KL does k3 give?",
              ("KL(π_θ ‖ π_ref)", "KL(π_ref ‖ π_θ)", "none: it is 0 on average"), 1,
              "k3's expected gradient matched the forward KL's; k2's and ρ·k3's the reverse KL's (section 5).",
              (g_at["k3"] - g_fwd).abs().max() < 1e-12),
     Question("Summing two binary rewards before normalising, a pair separated by both rewards and a pair "
              "separated by one get ...", ("the same advantages", "different advantages"), 0,
              f"{distinct(A_sum)} distinct advantages summed first, {distinct(A_gdpo)} with GDPO (section 4).",
              distinct(A_sum) < distinct(A_gdpo)),
     Question("A confident policy's likeliest action has the highest advantage. One natural-gradient step ...",
              ("raises the entropy", "lowers the entropy", "leaves it unchanged"), 1,
              f"ΔH = {cov_rows[0][2]:.2e}: −η Cov(log π, A) < 0 (section 9).", cov_rows[0][2] < 0))

# %% [markdown]
# ## Summary
#
# Each post-R1 fix edits one term of the same objective. GSPO replaces the token ratio by one length-normalised
# ratio per completion; CISPO clips the importance weight instead of the update, so no token loses its gradient;
# dynamic sampling spends extra generations to fill the batch with groups that teach, and the soft overlong penalty
# turns truncation into a graded reward; GDPO normalises each reward before summing; ρ·k3 is the KL estimate whose
# value and gradient are right when the tokens come from another policy, and k3's exponential needs a guard; the
# sampler correction reweights a batch sampled by another engine; LoRA trains a low-rank update at ten times the
# learning rate. TRL computes the same numbers for every option it has. Whether an option helps is a measurement:
# at this scale, several of them made no difference within their intervals, which is a result too. Entropy falls
# because a softmax step moves the entropy by minus a covariance between log π and the advantage, and a random
# reward is the control that tells a recipe's drift from learning.
#
# ## What this notebook added to grpo_lib
#
# - `grpo_lib.course.exercises.ex07`: the checkers of exercises 7.1 and 7.2, tested in
#   `tests/test_course_exercises_ex07.py`;
# - `grpo_lib.course.notebook.show_lines`: the few lines of a long function that carry one idea.
#
# The engine options themselves (`grpo_lib.loss`, `advantages`, `dynamic_sampling`, `sampler`, `lora`, `rewards`)
# and the measured runs (`grpo_lib.course.post_r1`) are documented in docs/implementation-details.md and
# docs/trl.md.
#
# ## Next
#
# docs/teaching.md has discussion questions and the worked answers for this notebook; docs/trl.md maps every
# option to TRL's name, for when the runs outgrow a laptop.
