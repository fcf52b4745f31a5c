# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · The full run
#
# > The tutorial's whole job, sample → score → update, run for real on a tiny Qwen2 that learns addition on a
# > CPU in about two minutes. The same code on Qwen2.5-1.5B-Instruct and several GPUs is notebook 06.
#
# You will:
# - map DeepSeekMath's Algorithm 1 line by line onto `grpo_lib/train.py`;
# - watch one rollout token by token: the completion ids, the mask (EOS included), rewards and advantages;
# - take one policy update by hand and read its loss, KL and clip fraction;
# - run the tiny preset end to end, plot its learning curves from `metrics.jsonl`, and compare held-out
#   completions before and after;
# - read a run from one dashboard (reward, accuracy, loss, KL, grad norm, clip fraction, entropy, length,
#   zero-std fraction) and learn why the loss is not a progress signal;
# - predict, then look: five measured failing runs (learning rate too high, β = 0 with a large learning rate,
#   flat groups, μ > 1, a length-biased loss), each recognised from the dashboard, not from the final accuracy;
# - measure pass@k against maj@k before and after GRPO: what RL changes, and what it does not;
# - see what the tutorial's 23% → 90% really measured, next to an evaluation with confidence intervals;
# - fill in two exercises: the completion mask of a rollout, stop token included (5.1), and maj@k when every
#   wrong answer is the same (5.2).
#
# Needs: notebooks 01–04 (advantages, rewards, the loss). Runs in: ~3 min on CPU (the tiny training run is
# ~2 min of it). Next: notebook 06 runs the same engine on several GPUs (DDP, torchrun, the memory planner,
# mixed precision, checkpoints, the Qwen commands and the same run on TRL).
#
# ## The algorithm, and where each line lives
#
# The objective (DeepSeekMath eq. 3, per token $t$ of completion $o_i$, $\rho_{i,t} = \pi_\theta / \pi_{\theta_{old}}$):
#
# $$\mathcal{J}_{GRPO}(\theta) = \mathbb{E}\Big[\frac{1}{G}\sum_{i=1}^{G}\frac{1}{|o_i|}\sum_{t=1}^{|o_i|}
# \Big(\min\big(\rho_{i,t}\hat A_{i,t},\ \mathrm{clip}(\rho_{i,t}, 1-\epsilon, 1+\epsilon)\hat A_{i,t}\big)
# - \beta\,\mathbb{D}_{KL}[\pi_\theta\|\pi_{ref}]\Big)\Big]$$
#
# | Algorithm 1 (DeepSeekMath) | `grpo_lib` |
# | --- | --- |
# | for iteration = 1..I: reference model $\pi_{ref} \leftarrow \pi_\theta$ | `train()`: `ref_model = copy.deepcopy(model)` when `step % cfg.steps == 0` |
# | for step = 1..M: sample a batch of N questions | `grpo_lib.data.prompts_for_step`, `build_prompt` |
# | $\pi_{\theta_{old}} \leftarrow \pi_\theta$; sample G outputs per question | `grpo_lib.rollout.generate_completions` (KV cache, left padding, stop at EOS) |
# | compute rewards $r_i$ | `score_rollout` → `score_completions` with `grpo_lib.rewards` |
# | compute $\hat A_{i,t}$ by group-relative advantage estimation | `score_rollout` → `compute_advantages` (notebook 02) |
# | (log-probs of $\pi_{\theta_{old}}$ and $\pi_{ref}$) | `score_rollout` → `completion_logprobs` |
# | for GRPO iteration = 1..μ: update $\pi_\theta$ by maximizing $\mathcal{J}_{GRPO}$ | `grpo_lib.train.policy_update` → `grpo_loss` (notebook 04), grad clip, AdamW |
# | (update the reward model: not needed, rewards are rules) | — |

# %%
import copy
import json
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from grpo_lib.config import GRPOConfig
from grpo_lib.course.exercises.checking import hint
from grpo_lib.course.exercises.ex05 import check_completion_mask
from grpo_lib.data import build_prompt
from grpo_lib.evaluation import wilson_interval
from grpo_lib.models import count_parameters, load_tiny_model
from grpo_lib.course.notebook import check, markdown_table
from grpo_lib.rewards import reward_functions
from grpo_lib.advantages import group_advantages
from grpo_lib.logprobs import completion_mask, token_logprobs
from grpo_lib.loss import grpo_loss
from grpo_lib.rollout import RewardFunctionError, generate_completions, score_completions, score_rollout
from grpo_lib.toy import ToyPolicy, grpo_step
from grpo_lib.tasks import addition_problems
from grpo_lib.train import make_optimizer, policy_update, train

os.environ.setdefault("WANDB_MODE", "offline")
_ = torch.manual_seed(0)                             # `_ =`: no <torch._C.Generator at 0x...> output

# %% [markdown]
# ## 1 · The configuration
#
# Every setting of a run is one field of `GRPOConfig`, named by its paper symbol where it has one. The
# `tiny` preset is the CPU default; `report_to="none"` keeps W&B out of the notebook. Its key numbers: $G = 8$
# completions per question, $N = 16$ questions per step, so $B = N \cdot G = 128$ completions per step; 100 steps
# of one outer iteration; $\mu = 1$, $\beta = 0.04$, $\epsilon = 0.2$.

# %%
cfg = GRPOConfig.tiny(report_to="none", progress=False)
cfg

# %% jupyter={"source_hidden": true}
check("1 · the configuration",
      ("G = 8, N = 16, 100 steps, μ = 1, β = 0.04, ε = 0.2",
       (cfg.G, cfg.N, cfg.steps, cfg.mu, cfg.beta, cfg.epsilon) == (8, 16, 100, 1, 0.04, 0.2)),
      ("B = N · G = 128 completions per step", cfg.B == cfg.N * cfg.G == 128),
      ("total steps = outer iterations × steps = 100", cfg.total_steps == cfg.num_iterations * cfg.steps == 100))


# %% [markdown]
# ### μ and the outer iterations are different loops
#
# Three loops hide behind two names. DeepSeekMath's Algorithm 1 has **outer iterations** (I; the tutorial's
# `num_iterations`) that reset $\pi_{ref} \leftarrow \pi_\theta$, **steps** (M) that each sample a new batch, and
# **μ** updates on every sampled batch. TRL's `num_iterations` is μ, not I; TRL resets π_ref only when asked
# (`sync_ref_model=True` with `ref_model_sync_steps = M` and `ref_model_mixup_alpha = 1.0` is the outer loop:
# notebook 06 maps every option).
# Run both loops on notebook 01's three-answer policy (G = 4 sampled answers per step, SGD) and watch two
# numbers: the clip fraction (only μ > 1 makes it non-zero) and the KL to π_ref (an outer reset sends it
# back to 0).

# %%
def toy_run(I, M, mu, beta=0.04, epsilon=0.2, lr=0.5, G=4, seed=0):
    """Algorithm 1 on the toy: I outer iterations (π_ref reset) × M steps (a new group) × μ updates per group."""
    gen = torch.Generator().manual_seed(seed)
    policy = ToyPolicy()
    optimizer = torch.optim.SGD(policy.parameters(), lr=lr)
    rows = []
    for iteration in range(I):
        ref_logits = policy.logits.detach().clone()                        # π_ref ← π_θ (Algorithm 1, line 3)
        for step in range(M):
            o = policy.sample(G, gen)                                      # π_old := π_θ; sample a group
            rec = grpo_step(policy, optimizer, o, epsilon=epsilon, beta=beta, ref_logits=ref_logits, mu=mu)
            rows.append((iteration + 1, step + 1, rec.stats["clip_fraction"].item(), rec.stats["kl"].item()))
    return rows

runs = {"μ = 1, I = 1 (DeepSeekMath, TRL default)": toy_run(I=1, M=6, mu=1),
        "μ = 4, I = 1 (TRL num_iterations=4)": toy_run(I=1, M=6, mu=4),
        "μ = 1, I = 3 (tutorial num_iterations=3)": toy_run(I=3, M=2, mu=1)}
markdown_table(["run", "(iteration, step): clip fraction of the last update / KL to π_ref"],
               [(name, "  ".join(f"({i},{s}): {c:.2f} / {k:.3f}" for i, s, c, k in rows)) for name, rows in runs.items()])

# %% jupyter={"source_hidden": true}
check("μ vs outer iterations",
      ("μ = 1: nothing is ever clipped", all(c == 0 for _, _, c, _ in runs["μ = 1, I = 1 (DeepSeekMath, TRL default)"])),
      ("μ = 4: the clip binds on reused groups", any(c > 0 for _, _, c, _ in runs["μ = 4, I = 1 (TRL num_iterations=4)"])),
      ("I = 3: the KL to π_ref is 0 again at the first step of every iteration",
       all(k == 0 for i, s, _, k in runs["μ = 1, I = 3 (tutorial num_iterations=3)"] if s == 1)),
      ("... and not 0 within an iteration", any(k > 0 for i, s, _, k in runs["μ = 1, I = 3 (tutorial num_iterations=3)"] if s > 1)))

# %% [markdown]
# ## 2 · One rollout, token by token
#
# The tiny model is a real `Qwen2ForCausalLM` with a character-level tokenizer (the tags `<reasoning>`,
# `<answer>`, ... are single tokens). It was warmed up with supervised learning to about 50% held-out
# accuracy, leaving room for GRPO. We sample $G = 8$ completions for two training questions.

# %%
model, tok = load_tiny_model()
problems = addition_problems("train", n=2)
prompts = [build_prompt(tok, p["question"]) for p in problems]
rollout = generate_completions(model, tok, prompts, cfg.G, max_new_tokens=cfg.max_completion_length,
                               temperature=cfg.temperature, seed=0)
print(f"{count_parameters(model):,} parameters; prompt q = {prompts[0]!r}")
print("completion_ids:", tuple(rollout.completion_ids.shape), " (B = N·G rows, T tokens)")

# %%
i = 0                                                    # first completion of the first group
o_ids, mask = rollout.completion_ids[i], rollout.completion_mask[i]
tokens = [tok.decode([t]) for t in o_ids.tolist()]
markdown_table(["t", "token id", "token", "mask"],
               [(t, int(o_ids[t]), repr(tokens[t]), int(mask[t])) for t in range(len(tokens))])

# %% [markdown]
# The mask is 1 on the completion up to and including its first EOS, and 0 on the padding after it: the EOS
# token is part of the loss, so the model is trained to stop.

# %%
o_len = int(mask.sum())
print(f"|o_{i}| = {o_len} tokens, EOS included; text: {rollout.texts[i]!r}")

# %% jupyter={"source_hidden": true}
check("2 · one rollout, token by token",
      ("the last masked token is EOS", o_ids[o_len - 1].item() == tok.eos_token_id),
      ("the mask is 1 up to there and 0 after it", bool(mask[:o_len].all()) and not bool(mask[o_len:].any())),
      ("no EOS before the last masked token", bool((o_ids[:o_len - 1] != tok.eos_token_id).all())))

# %% [markdown]
# ### The model that never stops (pad = EOS, EOS masked out)
#
# Some training scripts set `tokenizer.pad_token = tokenizer.eos_token` and then mask every pad position out
# of the loss (`mask[ids == pad_id] = 0`, as in tiny-grpo). Since pad *is* EOS, that also masks the real EOS:
# the stop token never gets a gradient, so nothing ever teaches the model to stop. On the tiny model: take a
# group, mask it both ways, and ask the loss how hard it pushes on the EOS token's logit at the EOS position.

# %%
from grpo_lib.logprobs import completion_mask, token_logprobs
from grpo_lib.loss import grpo_loss

eos = tok.eos_token_id
ids = rollout.completion_ids                                                   # (B, T)
mask_right = completion_mask(ids, eos)                                         # 1 up to and including the first EOS
tok_pad_is_eos = copy.deepcopy(tok)
tok_pad_is_eos.pad_token = tok_pad_is_eos.eos_token                           # the common "fix" for a missing pad
mask_pad_is_eos = (ids != tok_pad_is_eos.pad_token_id).int() * mask_right     # "mask out the padding": EOS goes too
seq = torch.cat([rollout.prompt_ids, ids], dim=1)
attn = torch.cat([rollout.prompt_mask, mask_right], dim=1)
A_demo = torch.ones(ids.shape[0])                                              # pretend every completion was good

def eos_push(mask):
    logp = token_logprobs(model, seq, attn, logits_to_keep=ids.shape[1])      # (B, T)
    loss, _ = grpo_loss(logp, logp.detach(), None, A_demo, mask, beta=0.0)
    (g,) = torch.autograd.grad(loss, logp)
    return -(g * (ids == eos)).sum().item()                                    # total push on the EOS tokens

push_right, push_pad_is_eos = eos_push(mask_right), eos_push(mask_pad_is_eos) + 0.0   # + 0.0: no "-0.0"
print(f"push on the EOS tokens: mask keeps EOS {push_right:.4f}, pad = EOS masked out {push_pad_is_eos:.4f}")

# %% jupyter={"source_hidden": true}
check("pad = EOS masked out of the loss",
      ("the course's mask trains the EOS token", push_right > 0),
      ("with pad = EOS masked out, the EOS token gets exactly no gradient", push_pad_is_eos == 0.0),
      ("every completion here ends in EOS, so the difference is the whole stopping signal",
       bool((mask_right.sum(-1) > mask_pad_is_eos.sum(-1)).all())))


# %% [markdown]
# **5.1 · The completion mask (fill in).** Write `my_completion_mask(ids, eos_ids)`: for completion ids of shape
# $(B, T)$ and the list of ids that end a completion, return the $(B, T)$ mask that is 1 up to and including the
# first stop token of each row and 0 after it; a row with no stop token was cut at $T$ and counts whole.
# Qwen2.5-Instruct has two stop ids (`<|im_end|>` and `<|endoftext|>`), so any of `eos_ids` ends a completion.
# Compare with `grpo_lib.logprobs.completion_mask` when you are done. Stuck? `hint("5.1")`.

# %% tags=["solution"]
def my_completion_mask(ids, eos_ids):   # ids: (B, T) ints; eos_ids: a list of ints -> (B, T) of 0/1
    ### BEGIN SOLUTION
    stop = torch.isin(ids, torch.tensor(eos_ids))                      # (B, T): True at every stop token
    T = ids.shape[1]
    first = torch.where(stop.any(-1), stop.int().argmax(-1), T)        # (B,): the first stop, T if none
    return (torch.arange(T)[None, :] <= first[:, None]).int()
    ### END SOLUTION

check_completion_mask(my_completion_mask);

# %% [markdown]
# Now the rewards ($r$ = correctness + format, notebook 03) and the group advantages
# $A_i = (r_i - \mathrm{mean}(r))/\mathrm{std}(r)$ (notebook 02), one row per group.

# %%
reward_funcs = reward_functions(cfg.reward_funcs)
ref_model = copy.deepcopy(model).eval().requires_grad_(False)     # π_ref ← π_θ
batch = score_rollout(rollout, [p["answer"] for p in problems], reward_funcs, policy=model,
                      ref_model=ref_model, scale_rewards=cfg.scale_rewards, temperature=cfg.temperature)
r, A = batch.rewards.view(-1, cfg.G), batch.advantages.view(-1, cfg.G)   # (N, G)
for n, p in enumerate(problems):
    print(f"{p['question']}  gold {p['answer']}")
    print("  r =", [round(x, 2) for x in r[n].tolist()])
    print("  A =", [round(x, 2) for x in A[n].tolist()])


# %% [markdown]
# Each row of A is its group's rewards minus their mean, divided by their sample std plus the 1e-4 floor (a group
# whose rewards are all equal gets A = 0), so every group's advantages sum to 0.

# %% jupyter={"source_hidden": true}
def by_formula(rn):                     # notebook 02's formula, written out: (r - mean) / (std + 1e-4), 0 if flat
    return torch.zeros(cfg.G) if rn.std() < 1e-6 else (rn - rn.mean()) / (rn.std() + 1e-4)

check("2 · rewards and advantages",
      ("A = (r − mean) / (sample std + 1e-4) in every group",
       all(torch.allclose(A[n], by_formula(r[n]), atol=1e-4) for n in range(len(problems)))),
      ("every group's advantages sum to 0", all(abs(A[n].sum()) < 1e-4 for n in range(len(problems)))))

# %% [markdown]
# ### A reward function that returns None or NaN
#
# A reward function that cannot score a completion may return `None` (TRL allows it, for a function that does
# not apply to a sample) or NaN (a 0/0 inside it). One NaN reward makes its group's mean and std NaN, so every
# advantage of the group is NaN, the loss is NaN and the whole batch's gradient with it: one bad completion
# poisons the update. The library refuses both before any gradient is computed: `group_advantages` rejects
# NaN rewards, and `score_completions` names the reward function, the completion and the prompt.

# %%
from grpo_lib.advantages import group_advantages
from grpo_lib.rollout import RewardFunctionError, score_completions

r_nan = torch.tensor([[1.0, float("nan"), 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]])        # (N, G): one NaN in group 0
A_by_hand = (r_nan - r_nan.mean(-1, keepdim=True)) / (r_nan.std(-1, keepdim=True) + 1e-4)   # the formula, unguarded
print("advantages by hand:", A_by_hand)
try:
    group_advantages(r_nan)
    library_refuses = False
except ValueError as err:
    library_refuses = True
    print("group_advantages:", err)

def flaky_reward(prompts, completions, answer, **kw):
    return [None if i == 3 else 1.0 for i in range(len(completions))]              # cannot score completion 3

try:
    score_completions(rollout, [p["answer"] for p in problems], {"flaky": flaky_reward})
    refusal = None
except RewardFunctionError as err:
    refusal = str(err)
    print("RewardFunctionError:", refusal.splitlines()[0])

# %% jupyter={"source_hidden": true}
check("a reward of None or NaN",
      ("one NaN makes every advantage of its group NaN", bool(torch.isnan(A_by_hand[0]).all())),
      ("... and leaves the other groups alone", bool(torch.isfinite(A_by_hand[1]).all())),
      ("group_advantages refuses NaN rewards", library_refuses),
      ("score_completions refuses None, naming the function", refusal is not None and "'flaky'" in refusal))

# %% [markdown]
# ## 3 · One update
#
# `policy_update` computes $\log\pi_\theta$ with gradients, `grpo_loss`, backward, clips the gradient norm
# and takes one AdamW step. With $\mu = 1$, $\pi_{\theta_{old}} = \pi_\theta$, so $\rho = 1$, nothing is
# clipped, and right after the reset $\pi_\theta = \pi_{ref}$, so the KL is 0: the loss value is about 0
# while its gradient is not.

# %%
optimizer, scheduler = make_optimizer(model, cfg)
before = [q.detach().clone() for q in model.parameters()]
stats = policy_update(model, optimizer, batch, cfg)
moved = sum((a - b).abs().sum().item() for a, b in zip(model.parameters(), before))
print({k: round(v, 6) for k, v in stats.items()}, f" total |Δθ| = {moved:.3f}")

# %% jupyter={"source_hidden": true}
check("3 · one update",
      ("μ = 1: the ratio ρ is 1 and nothing is clipped",
       stats["clip_fraction"] == 0.0 and abs(stats["ratio_mean"] - 1) < 1e-6),
      ("π_θ = π_ref at the first update: KL 0", abs(stats["kl"]) < 1e-6),
      ("the loss is about 0 (|loss| < 1e-5)", abs(stats["loss"]) < 1e-5),
      ("... but the gradient is not, and the weights moved", stats["grad_norm"] > 0 and moved > 0))

# %% [markdown]
# ## 4 · The full tiny run
#
# `train(cfg)` is what `python -m grpo_lib --preset tiny` runs: evaluate on the 300 held-out test
# problems, 100 steps of sample → score → update, evaluate again, save. It writes `metrics.jsonl`,
# `evals.jsonl`, `summary.json` and `model/` to a temporary folder. The seed is fixed, so the run is
# reproducible: it uses the CPU cores other programs leave free, and the thread count changes its speed, not
# its numbers (`grpo_lib/threads.py`; tests/test_threads.py checks 1 and 2 threads give the same run).
# The course's target: held-out accuracy
# ends at 80% or more, at least 30 points above where it started. The wall time is printed, not checked: it
# measures this machine (`benchmarks/` measure speed), and a loaded machine would fail a timed check.

# %%
import contextlib, io

for name in ("model", "ref_model", "optimizer"):   # section 3's copies (train() loads its own); gone already
    globals().pop(name, None)                      # when this cell runs again, so it can be re-run

cfg = cfg.replace(output_dir=tempfile.mkdtemp(prefix="grpo05-"))   # a scratch folder, not runs/tiny
out = Path(cfg.output_dir)
log = io.StringIO()                     # train() prints its log; we show it without the temp path
with contextlib.redirect_stdout(log), contextlib.redirect_stderr(io.StringIO()):
    result = train(cfg)
print(log.getvalue().replace(str(out), "<output_dir>"))
summary = json.loads((out / "summary.json").read_text())
metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
print(sorted(p.name for p in out.iterdir()))
print(f"accuracy {summary['accuracy_before']:.1%} -> {summary['accuracy_after']:.1%} "
      f"in {summary['wall_seconds']:.0f} s")

# %% jupyter={"source_hidden": true}
check("4 · the full tiny run",
      ("one metrics record and one loss per step",
       len(metrics) == cfg.total_steps and len(result["loss"]) == cfg.total_steps),
      ("held-out accuracy ends at 80% or more", result.summary["accuracy_after"] >= 0.80),
      ("... at least 30 points above where it started",
       result.summary["accuracy_after"] - result.summary["accuracy_before"] >= 0.30),
      ("summary.json says what train() returned", result.summary["accuracy_after"] == summary["accuracy_after"]))

# %% [markdown]
# ### Learning curves from `metrics.jsonl`
#
# One record per step. The batch reward and accuracy climb; the KL to $\pi_{ref}$ grows slowly (β = 0.04
# keeps it small); the completion length grows a little (a correct carry adds `+1` to the reasoning); and the share of
# zero-std groups rises as the model gets most questions right: those groups teach nothing (notebook 02).

# %%
step = [m["step"] for m in metrics]
panels = [("reward", "mean reward r"), ("accuracy", "batch accuracy (sampled)"), ("kl", "KL(π_θ‖π_ref)"),
          ("completions/mean_length", "|o_i| (tokens)"), ("frac_reward_zero_std", "zero-std group fraction")]
fig, axes = plt.subplots(1, 5, figsize=(17, 3.2))
for ax, (key, label) in zip(axes, panels):
    ax.plot(step, [m[key] for m in metrics], lw=1.2)
    ax.set_title(label, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %%
first, last = metrics[:10], metrics[-10:]
mean = lambda rows, k: sum(m[k] for m in rows) / len(rows)
markdown_table(["metric", "mean of the first 10 steps", "mean of the last 10 steps"],
               [(k, mean(first, k), mean(last, k))
                for k in ("reward", "accuracy", "kl", "completions/mean_length", "frac_reward_zero_std")],
               floatfmt=".3f")

# %% jupyter={"source_hidden": true}
check("4 · learning curves",
      ("the last 10 steps beat the first 10 on reward and on accuracy",
       mean(last, "reward") > mean(first, "reward") and mean(last, "accuracy") > mean(first, "accuracy")),
      ("the share of zero-std groups rises", mean(last, "frac_reward_zero_std") > mean(first, "frac_reward_zero_std")),
      ("the KL starts at 0 and grows", metrics[0]["kl"] < 1e-6 < mean(last, "kl")))

# %% [markdown]
# ### Held-out evaluation with 95% confidence intervals
#
# Greedy decoding on the 300 test problems. Strict: the answer is in `<answer>` tags and right; lenient:
# the last number is right; format: the tags are well formed. Each with a Wilson interval. Before and after,
# the strict intervals do not overlap.

# %%
eb, ea = result.eval_before, result.eval_after
rows = []
for name, ev in (("before", eb), ("after", ea)):
    for what, k, ci in (("strict", ev.n_strict, ev.strict_ci), ("lenient", ev.n_lenient, ev.lenient_ci),
                        ("format", ev.n_format, ev.format_ci)):
        rows.append((name, what, f"{k}/{ev.n}", k / ev.n, ci[0], ci[1]))
markdown_table(["eval", "metric", "count", "rate", "95% low", "95% high"], rows, floatfmt=".3f")

# %% jupyter={"source_hidden": true}
check("4 · held-out evaluation",
      ("300 held-out problems, before and after", eb.n == ea.n == 300),
      ("the intervals are Wilson's",
       eb.strict_ci == wilson_interval(eb.n_strict, eb.n) and ea.strict_ci == wilson_interval(ea.n_strict, ea.n)),
      ("the strict intervals before and after do not overlap", eb.strict_ci[1] < ea.strict_ci[0]))

# %% [markdown]
# ## 5 · Reading a run: the dashboard
#
# Once a run starts, the question is "is it working?", and the loss does not answer it. With μ = 1 the ratio
# ρ is exactly 1 at the update, so the surrogate term of the loss is −mean(A), which is 0 because each group's
# advantages sum to 0 (notebook 04): what the loss prints is **β·KL**. It grows as π_θ moves away from π_ref,
# whether the move helps or hurts. A run that learns and a run that wanders off both show a rising loss. (That is
# the preset's `loss_type="grpo"`, which averages each completion's tokens first. The length-weighted types weigh
# each A_i by its completion's length, so their surrogate term is not even 0: §6.5's `dr_grpo` run logs a loss
# between −0.05 and +0.01, mean −0.024.)
#
# `run_dashboard` draws everything `metrics.jsonl` holds about the learning, one panel per question. Each curve
# is the **trailing mean over 5 steps** (`smooth`: the mean of the last 5 steps' values, fewer at the start),
# drawn over the raw per-step values (thin, faint), because one step's batch of 16 questions is noisy. Under
# each panel: what it tells, and what it does not.

# %%
from grpo_lib.course.plots import DASHBOARD_PANELS, Panel, run_dashboard, smooth

markdown_table(["panel", "tells", "does not tell"], [(p.title, p.tells, p.misses) for p in DASHBOARD_PANELS])

# %%
run_dashboard(metrics)          # the records of this run's metrics.jsonl; run_dashboard(out) reads the file itself

# %% [markdown]
# How to read it for the run above, top left to bottom right:
#
# - **reward** climbs, and its per-function parts say where from: `rewards/correctness/mean` carries the gain,
#   `rewards/format/mean` was already near its 0.8 ceiling (the warm-up taught the tags);
# - **accuracy** on the sampled batch climbs with it (sampled at τ = 1, so below the greedy held-out accuracy);
# - **loss** rises from 0, and it is β·KL: the check below compares the two at every step;
# - **KL** grows slowly from 0 (β = 0.04 holds it back);
# - **grad norm**: the size of the signal, bounded as long as nothing blows up;
# - **clip fraction** is 0 at every step: μ = 1, so ρ = 1 and the clip never acts;
# - **entropy** falls: the policy sharpens on the answers that earned reward;
# - **completion length** stays near 21 tokens (a correct carry adds `+1`);
# - **zero-std fraction** rises as more groups are all right: those teach nothing (notebook 02).

# %% jupyter={"source_hidden": true}
first10, last10 = metrics[:10], metrics[-10:]
avg = lambda rows, k: sum(m[k] for m in rows) / len(rows)
check("5 · the dashboard",
      ("at μ = 1 the loss is β·KL: summed over the run, within 5% (the loss averages per sequence, kl per token)",
       abs(sum(m["loss"] for m in metrics) / sum(cfg.beta * m["kl"] for m in metrics) - 1) < 0.05),
      ("... and within 25% at every step", all(abs(m["loss"] - cfg.beta * m["kl"]) <= 0.25 * cfg.beta * m["kl"] + 1e-6
                                               for m in metrics)),
      ("the clip fraction is 0 at every step (μ = 1)", all(m["clip_ratio/region_mean"] == 0 for m in metrics)),
      ("rewards/correctness/mean carries the gain: it rises more than rewards/format/mean",
       avg(last10, "rewards/correctness/mean") - avg(first10, "rewards/correctness/mean")
       > avg(last10, "rewards/format/mean") - avg(first10, "rewards/format/mean")),
      ("the entropy falls", avg(last10, "entropy") < avg(first10, "entropy")),
      ("the smoothed curve is the trailing mean of 5 steps",
       abs(smooth([m["reward"] for m in metrics])[9] - avg(metrics[5:10], "reward")) < 1e-12))

# %% [markdown]
# ## 6 · A gallery of failing runs
#
# What does a broken run look like? Below are six real runs of the tiny model besides a healthy reference run,
# each the tiny preset for 40 steps with **one** change: five that go wrong in their own way and, for the last of
# them, its reference with another loss type. The healthy run is the same 40 steps with no change (the first 40
# steps of section 4's run). Their `train()` wall times are in the table below, far too long to rerun in every
# notebook execution (they were made on the course's shared, loaded machine), so their `metrics.jsonl` and
# `summary.json` are committed in `grpo_lib/assets/gallery/` and loaded here. `python -m grpo_lib.course.gallery` regenerates them, and
# `tests/test_course_gallery.py` checks that the committed files are what that command makes (the configuration
# exactly; the first two steps, rerun, to float rounding).
#
# The gallery adds three metrics to the engine's, measured by a `train(callback=...)` on each step's batch:
# the KL of the policy that sampled the batch to the **starting** model, which is the engine's `kl` when π_ref
# is the starting model and μ = 1, but exists also when β = 0 (the engine then keeps no π_ref and logs `kl` = 0; the
# callback measures the drift without changing the run); and the mean length of the batch's **wrong** and
# **right** completions. They get two extra panels.
#
# For each run: what changed, a question to answer **before** you look, the dashboard of the failing run (in
# colour) over the healthy one (grey; the panels as above, without their notes), and which panel gives it away. The tell is never the final accuracy: by
# then the compute is spent. A dashboard tells you in the first minutes.

# %%
from grpo_lib.course.gallery import EXTRA_METRICS, SPECS, config_diff, load_run

gallery = {name: load_run(name) for name in SPECS}
G_PANELS = DASHBOARD_PANELS + (
    Panel("KL to the starting model (gallery)", ("gallery/kl_to_start",),
          "how far π_θ has drifted from where it started, also when β = 0", "whether the drift is good"),
    Panel("|o| of wrong (—) and right (--) completions", ("gallery/length_wrong", "gallery/length_right"),
          "which completions grow or shrink", "why"),
)

def gallery_dashboard(name):
    """The config diff as a table, then the dashboard: this run in colour over its reference in grey."""
    ref = SPECS[name].reference
    display(markdown_table(["option", ref, name], [(k, repr(a), repr(b)) for k, (a, b) in config_diff(name).items()]))
    return run_dashboard({ref: gallery[ref]["metrics"], name: gallery[name]["metrics"]}, reference=ref,
                         panels=G_PANELS, ncols=4, notes=False, title=f"{SPECS[name].title}  (grey: {ref})")

markdown_table(["run", "what changes", "train() wall time (s)", "held-out accuracy before → after"],
               [(name, SPECS[name].title, f"{run['summary']['gallery']['train_call_seconds']:.0f}",
                 f"{run['summary']['accuracy_before']:.2f} → {run['summary']['accuracy_after']:.2f}")
                for name, run in gallery.items()])

# %% jupyter={"source_hidden": true}
healthy = gallery["healthy"]["metrics"]
check("6 · the gallery",
      ("every run has 40 steps and the three gallery metrics",
       all(len(r["metrics"]) == 40 and set(EXTRA_METRICS) <= set(r["metrics"][0]) for r in gallery.values())),
      ("the healthy run is the first 40 steps of section 4's run (batch reward within 2 completions' worth)",
       all(abs(h["reward"] - m["reward"]) <= 2 * 2.8 / cfg.B for h, m in zip(healthy, metrics[:40]))),
      ("with loss_type 'dr_grpo' the loss is not β·KL: the long_dr_grpo run's mean loss is negative",
       avg(gallery["long_dr_grpo"]["metrics"], "loss") < 0),
      ("six runs besides the healthy one; the last is the reference of long_grpo",
       len(gallery) == 7 and list(gallery)[0] == "healthy" and SPECS["long_grpo"].reference == "long_dr_grpo"),
      ("the β = 0 run's η is 2e-4, four times the preset's 5e-5",
       SPECS["beta0"].overrides["lr"] == 2e-4 == 4 * GRPOConfig.tiny().lr),
      ("the length runs sample at τ = 1.8 with room for 80 tokens",
       all(SPECS[n].overrides["temperature"] == 1.8 and SPECS[n].overrides["max_completion_length"] == 80
           for n in ("long_grpo", "long_dr_grpo"))),
      ("each gallery run took over a minute of train() time on the machine that made it",
       all(r["summary"]["gallery"]["train_call_seconds"] > 60 for r in gallery.values())))

# %% [markdown]
# ### 6.1 · Learning rate too high
#
# The learning rate goes from 5e-5 to 2e-3. **Predict, then look:** AdamW's first steps move every weight by
# about η. Which panels move first, and in which direction: reward, entropy, completion length, grad norm?

# %%
gallery_dashboard("lr_high")

# %%
hi = gallery["lr_high"]["metrics"]
cut_from = next((m["step"] for m in hi if m["completions/clipped_ratio"] > 0.5), None)
markdown_table(["run", "accuracy step 1 → 2", "KL step 2 (and step 40)", "entropy step 2 / step 1",
                "entropy last 10 / step 1", "reward, last 10 (format reward)", "first step > half cut at 40 tokens",
                "largest grad norm (step)"],
               [(name, f"{rows[0]['accuracy']:.2f} → {rows[1]['accuracy']:.2f}",
                 f"{rows[1]['kl']:.3f} ({rows[-1]['kl']:.3f})", f"{rows[1]['entropy'] / rows[0]['entropy']:.1f}×",
                 f"{avg(rows[-10:], 'entropy') / rows[0]['entropy']:.0f}×",
                 f"{avg(rows[-10:], 'reward'):.2f} ({avg(rows[-10:], 'rewards/format/mean'):.2f})",
                 next((m["step"] for m in rows if m["completions/clipped_ratio"] > 0.5), "never"),
                 "{:.1f} ({})".format(*max((m["grad_norm"], m["step"]) for m in rows)))
                for name, rows in (("healthy", healthy), ("lr_high (η = 2e-3)", hi))])

# %% [markdown]
# Broken after one update. Step 1 is the healthy run's step 1 (same samples); its update, about η = 2e-3 on every
# weight (a fresh AdamW moves each weight by about η), knocks the policy off what it knew: at step 2 the batch
# accuracy is 0, the KL to π_ref is already far beyond what the healthy run reaches in 40 steps, and the entropy
# has jumped. The reward left is the format reward alone: the tags are still there, the numbers are wrong. From
# then on almost every group is flat (all wrong, all 0.8: the zero-std panel sits near 1), so there is no signal
# to climb back with, and the policy wanders: the entropy keeps rising and the completions come to run to the
# 40-token limit without stopping. The tells, in the order they appear: the KL jumps, the accuracy drops, the
# entropy climbs, the length hits the limit. The grad norm spikes but is the weakest tell: the update is clipped
# to norm 1 anyway.

# %% jupyter={"source_hidden": true}
check("6.1 · learning rate too high",
      ("step 1 is the healthy run's step 1 (same samples)", hi[0]["reward"] == healthy[0]["reward"]),
      ("after one update the batch accuracy is 0", hi[1]["accuracy"] == 0.0 < healthy[1]["accuracy"]),
      ("... and the KL to π_ref is over 50 times the healthy run's after 40 steps", hi[1]["kl"] > 50 * healthy[-1]["kl"]),
      ("the reward left is the format reward alone (last 10 steps, within 0.02)",
       abs(avg(hi[-10:], "reward") - avg(hi[-10:], "rewards/format/mean")) < 0.02),
      ("the entropy ends over 10 times the healthy run's (last 10 steps)",
       avg(hi[-10:], "entropy") > 10 * avg(healthy[-10:], "entropy")),
      ("the completions end at the length limit (over 90% cut at 40 tokens, last 10 steps)",
       avg(hi[-10:], "completions/clipped_ratio") > 0.9),
      ("the entropy jumps at step 2 (over twice step 1's)", hi[1]["entropy"] > 2 * hi[0]["entropy"]),
      ("the order of the tells: KL and accuracy at step 2, the length limit later",
       cut_from is not None and cut_from > 2 and hi[1]["kl"] > 50 * healthy[-1]["kl"]))

# %% [markdown]
# ### 6.2 · β = 0 with a large learning rate
#
# No KL term (β = 0: no π_ref is kept at all) and η = 2e-4, four times the preset's 5e-5. **Predict, then look:** what
# does the engine's `kl` panel show for this run, and what does the KL to the starting model show?

# %%
gallery_dashboard("beta0")

# %%
b0 = gallery["beta0"]["metrics"]
markdown_table(["run", "engine kl, max", "KL to start at step 4", "KL to start: max (40 steps)",
                "KL to start: mean of the last 10", "grad norm, mean", "lowest batch accuracy (step)",
                "held-out accuracy before → after"],
               [(name, f"{max(m['kl'] for m in rows):.3f}", f"{rows[3]['gallery/kl_to_start']:.3f}",
                 f"{max(m['gallery/kl_to_start'] for m in rows):.3f}", f"{avg(rows[-10:], 'gallery/kl_to_start'):.3f}",
                 f"{avg(rows, 'grad_norm'):.2f}",
                 "{:.2f} ({})".format(*min((m["accuracy"], m["step"]) for m in rows)),
                 f"{gallery[key]['summary']['accuracy_before']:.2f} → {gallery[key]['summary']['accuracy_after']:.2f}")
                for name, key, rows in (("healthy", "healthy", healthy), ("beta0 (β = 0, η = 2e-4)", "beta0", b0))])

# %% [markdown]
# Two KL panels, two answers. The engine's `kl` reads 0 at every step: with β = 0 no π_ref is kept, so nothing
# is measured. A flat KL panel in a β = 0 run means "not measured", not "not moved". The gallery's KL to the
# starting model shows where π_θ went: by step 4 it is past the largest value the healthy run reaches in 40 steps,
# and it stays up there. Four times the learning rate and nothing pulling back: the grad norm sits higher (the
# update is clipped to norm 1), and the batch accuracy dips before it recovers. In 40 steps the run still learns
# (the last column): drift is not yet failure. That is the lesson: only a KL to the start shows how far the
# policy has gone, and nothing in this loss would stop it going further in a longer run.

# %% jupyter={"source_hidden": true}
check("6.2 · β = 0",
      ("the engine's kl is 0 at every step (no π_ref)", all(m["kl"] == 0.0 for m in b0)),
      ("by step 4 the KL to the start exceeds the healthy run's largest in 40 steps",
       b0[3]["gallery/kl_to_start"] > max(m["gallery/kl_to_start"] for m in healthy)),
      ("over the last 10 steps it is over 3 times the healthy run's",
       avg(b0[-10:], "gallery/kl_to_start") > 3 * avg(healthy[-10:], "gallery/kl_to_start")),
      ("the grad norm is larger: over 1.5 times the healthy run's on average",
       avg(b0, "grad_norm") > 1.5 * avg(healthy, "grad_norm")),
      ("the batch accuracy dips below the healthy run's lowest, then recovers (last 10 steps above the dip)",
       min(m["accuracy"] for m in b0) < min(m["accuracy"] for m in healthy)
       and avg(b0[-10:], "accuracy") > min(m["accuracy"] for m in b0)),
      ("the run still learns: held-out accuracy rises",
       gallery["beta0"]["summary"]["accuracy_after"] > gallery["beta0"]["summary"]["accuracy_before"] + 0.2))

# %% [markdown]
# ### 6.3 · A strict reward on tags the start never writes
#
# The reward is DeepSeek-R1's: 2.0 for `<think>…</think><answer>…</answer>` with the right answer, 0 otherwise
# (`r1_strict_reward`, the only reward function). The tiny model was warmed up on `<reasoning>` tags and never
# writes `<think>` (it is not even one token of its vocabulary). It is what happens when a recipe's reward is
# copied from a paper that used other tags. **Predict, then look:** what is the zero-std fraction? What is the
# gradient made of, and how large is it?

# %%
gallery_dashboard("r1_tags")

# %% [markdown]
# The zero-std panel is the tell: 1.0 at every step. Every completion scores 0, so every group is flat and every
# advantage is 0; the reward panel is flat at 0. Nothing is learned, and the final accuracy would say so only
# after the whole run (held-out accuracy 0.48 → 0.47 on 100 problems). The grad-norm panel shows what is left:
# the KL term, whose gradient is exactly 0 while π_θ = π_ref. Then a surprise worth knowing, in the steps around
# the first non-zero gradient:

# %%
first_kick = next(m["step"] for m in gallery["r1_tags"]["metrics"] if m["grad_norm"] > 0)
markdown_table(["step", "grad norm", "KL to the start"],
               [(m["step"], f"{m['grad_norm']:.1e}", f"{m['gallery/kl_to_start']:.1e}")
                for m in gallery["r1_tags"]["metrics"][first_kick - 3:first_kick + 5]])

# %% [markdown]
# Read it top down: the grad norm is exactly 0 until the two forward passes (π_θ's, with gradients, and π_ref's)
# first differ by float rounding, a gradient of about 1e-9. AdamW divides each gradient by its own running size
# (plus its ε = 1e-8), so once the per-weight gradients approach 1e-8 it takes steps of about η whatever their
# size, and the KL to the start jumps by orders of magnitude one step behind the grad norm. From then on the KL
# term's own gradient keeps the weights moving (the largest grad norm stays far below the healthy run's
# smallest). A run with flat groups does not stand still: it drifts, with no reward to steer it.

# %% jupyter={"source_hidden": true}
r1 = gallery["r1_tags"]["metrics"]
check("6.3 · flat groups",
      ("the zero-std fraction is 1.0 at every step", all(m["frac_reward_zero_std"] == 1.0 for m in r1)),
      ("the reward is 0 at every step", all(m["reward"] == 0.0 for m in r1)),
      ("the gradient is exactly 0 until a rounding difference appears", first_kick > 5),
      ("... about 1e-9 at the first non-zero step", 1e-10 < r1[first_kick - 1]["grad_norm"] < 1e-8),
      ("the grad norm grows by orders of magnitude within two steps", r1[first_kick + 1]["grad_norm"]
       > 1e4 * r1[first_kick - 1]["grad_norm"]),
      ("the KL to the start moves one step behind the grad norm",
       r1[first_kick - 1]["gallery/kl_to_start"] == 0.0 < r1[first_kick]["gallery/kl_to_start"]),
      ("after it, the largest grad norm is below a tenth of the healthy run's smallest",
       max(m["grad_norm"] for m in r1) < 0.1 * min(m["grad_norm"] for m in healthy)),
      ("and yet π_θ drifts from the start: KL to the start > 1e-4 three steps after the kick",
       r1[first_kick + 2]["gallery/kl_to_start"] > 1e-4))

# %% [markdown]
# ### 6.4 · μ = 4 updates per batch
#
# Each sampled batch is used for four AdamW steps instead of one (TRL's `num_iterations=4`). **Predict, then
# look:** at μ = 1 the clip fraction is 0 at every step. What is it now, and does it stay put during the run?

# %%
gallery_dashboard("mu4")

# %%
mu = gallery["mu4"]["metrics"]
pct = lambda rows, k: f"{avg(rows, k):.2%}"                      # noqa: E731
markdown_table(["run", "clip fraction: min – max per step", "mean", "from below", "from above",
                "first 10 steps", "last 10 steps", "KL, last 10 steps"],
               [(name, f"{min(m['clip_ratio/region_mean'] for m in rows):.2%} – "
                       f"{max(m['clip_ratio/region_mean'] for m in rows):.2%}",
                 pct(rows, "clip_ratio/region_mean"), pct(rows, "clip_ratio/low_mean"), pct(rows, "clip_ratio/high_mean"),
                 pct(rows[:10], "clip_ratio/region_mean"), pct(rows[-10:], "clip_ratio/region_mean"),
                 f"{avg(rows[-10:], 'kl'):.3f}")
                for name, rows in (("healthy (μ = 1)", healthy), ("mu4 (μ = 4)", mu))])

# %% [markdown]
# The clip panel gives it away, and the table reads it. At μ = 1 the clip fraction is 0 at every step (ρ = 1 at
# the only update); at μ = 4 it is non-zero at every step, mostly from below: tokens of worse-than-average
# completions whose probability has already fallen below (1 − ε)·π_old, where the objective stops pushing. The
# first of the four updates is never clipped (there π_θ = π_old, every ρ = 1), so this is an average over updates
# 2–4. It does not climb during the run (first vs last 10 steps): every step samples a fresh batch and ρ starts
# again at 1. The last column is the other side: four updates per batch move π_θ faster. μ > 1 is not a bug (PPO
# reuses its batches, TRL calls it `num_iterations`); the clip fraction is how you see that it is on, and how
# often the trust region binds.

# %% jupyter={"source_hidden": true}
check("6.4 · μ = 4",
      ("the healthy run (μ = 1) never clips", all(m["clip_ratio/region_mean"] == 0 for m in healthy)),
      ("μ = 4 clips some tokens at every step", all(m["clip_ratio/region_mean"] > 0 for m in mu)),
      ("mostly from below (A < 0, ρ < 1 - ε)", avg(mu, "clip_ratio/low_mean") > avg(mu, "clip_ratio/high_mean")),
      ("the clip fraction does not climb during the run (last 10 steps below twice the first 10)",
       avg(mu[-10:], "clip_ratio/region_mean") < 2 * avg(mu[:10], "clip_ratio/region_mean")),
      ("π_θ moves faster: KL over twice the healthy run's (last 10 steps)",
       avg(mu[-10:], "kl") > 2 * avg(healthy[-10:], "kl")))

# %% [markdown]
# ### 6.5 · A length-biased loss type when wrong answers are long
#
# Two runs that differ only in `loss_type`, at a sampling temperature τ = 1.8 with room for 80 tokens: hot enough
# that the tiny model often garbles its answer, and then writes more (its wrong completions are about 5 tokens
# longer than its right ones). `"grpo"` divides each completion's token losses by its own length |o_i|;
# `"dr_grpo"` by the constant |o|_max (notebook 04). Here the reference (grey) is the `dr_grpo` run.
# **Predict, then look:** the reward is correctness plus 0.2 per tag. When almost no answer is right, what sign
# does a wrong completion's advantage have? Under which loss type is a long completion pushed less per token, and
# what does that do to the length of the wrong completions over the run?

# %%
lg, ld = gallery["long_grpo"]["metrics"], gallery["long_dr_grpo"]["metrics"]
acc_long, fmt_long = avg(lg + ld, "accuracy"), avg(lg + ld, "rewards/format/mean")
print(f"both runs, all 80 steps: batch accuracy {acc_long:.3f}, mean format reward {fmt_long:.3f} of 0.8 "
      f"({fmt_long / 0.8:.0%} of the tags written)")
gallery_dashboard("long_grpo")

# %% [markdown]
# First the signs. Right answers are rare here (the batch accuracy printed above is under 3%), so most groups
# hold no right answer and their rewards differ only by the tags: a wrong completion with all four tags (0.8)
# gets A > 0 whenever a groupmate lost a tag, A < 0 only when a groupmate is right or has more tags, and 0 in a
# flat group. Most wrong completions in this run are therefore pushed *up*, not down: "wrong means A < 0" holds
# only when the correctness reward separates the group.
#
# Then the lengths: the panel of the wrong and right lengths gives it away (the extra panel, bottom right). The
# wrong completions start at the same length in both runs, then under `grpo` they grow, from 25.0 to 26.1 tokens
# (mean of the first vs the last 10 steps), while under `dr_grpo` they stay at 25.0 → 24.9; the overall length
# panel shows the same split. Under `grpo` every completion's push, up or down, is A/|o_i| per token, so a long
# completion is pushed less per token in both directions; under `dr_grpo` every token weighs A/|o|_max, so a
# long completion is pushed in proportion to its length. Which way that tips depends on which completions get
# which sign; what this run measures is the outcome: with `grpo` the wrong completions grow, with `dr_grpo` they
# do not. The reward and accuracy panels look alike for the two runs: the bias is in how the completions change,
# not in the score. One token in 40 steps is small; it is the length bias that Dr. GRPO (Liu et al. 2025) names,
# which over long runs lets wrong answers grow long (notebook 04, the loss normalisations).

# %% jupyter={"source_hidden": true}
grow = lambda rows: avg(rows[-10:], "gallery/length_wrong") - avg(rows[:10], "gallery/length_wrong")
check("6.5 · the length bias",
      ("at the start the wrong completions are over 3 tokens longer than the right ones, in both runs",
       all(avg(r[:10], "gallery/length_wrong") - avg(r[:10], "gallery/length_right") > 3 for r in (lg, ld))),
      ("under grpo the wrong completions grow by more than half a token (first vs last 10 steps)", grow(lg) > 0.5),
      ("under dr_grpo they change by less than half a token", abs(grow(ld)) < 0.5),
      ("right answers are rare: batch accuracy under 3% over both runs", acc_long < 0.03),
      ("most tags are written: mean format reward over 0.7 of 0.8", fmt_long > 0.7),
      ("wrong lengths: grpo 25.0 → 26.1, dr_grpo 25.0 → 24.9 (first vs last 10 steps)",
       [round(avg(r[:10], "gallery/length_wrong"), 1) for r in (lg, ld)] == [25.0, 25.0]
       and [round(avg(r[-10:], "gallery/length_wrong"), 1) for r in (lg, ld)] == [26.1, 24.9]),
      ("the two runs' batch accuracy stays within 0.02 of each other (last 10 steps)",
       abs(avg(lg[-10:], "accuracy") - avg(ld[-10:], "accuracy")) < 0.02))

# %% [markdown]
# ### 6.6 · "My reward is always 0": a triage
#
# After "my loss is 0", the question learners ask most. Four usual causes, each run here on the tiny model (8
# training questions × G = 8, one sampled batch each, scored but not trained), beside the healthy preset:
#
# 1. the completions are **truncated** before the answer tag (`max_completion_length` too small);
# 2. the reward's **regex is stricter** than the format the model writes (here DeepSeek-R1's, which wants the
#    answer alone on its own line inside `<answer>` tags);
# 3. the prompt is **not in the format the model learned**. On Qwen-Instruct that is a prompt built without the
#    chat template; the tiny tokenizer has none, so here the prompt is the question behind `"Question: "`
#    instead of the plain format the model was warmed up on;
# 4. the **wrong reward function or arguments**: a correctness reward that reads its gold from a dataset column
#    the engine does not pass (`solution`), so every gold is empty.
#
# **Predict, then look:** which dashboard panel tells each cause apart? The table shows one step's metrics
# under their `metrics.jsonl` names (the reward functions' own means in one column).

# %%
import re

from grpo_lib.advantages import zero_std_fraction
from grpo_lib.rewards import correctness_reward, format_reward

triage_problems = addition_problems("train", n=8, seed=1)
triage_golds = [p["answer"] for p in triage_problems]
triage_model, triage_tok = load_tiny_model()

def strict_newline_reward(prompts, completions, answer, **kwargs):
    """DeepSeek-R1's format: the answer alone on its own line inside the tags, else 0."""
    pattern = re.compile(r"<answer>\n(\d+)\n</answer>")
    return [2.0 if (m := pattern.search(c[0]["content"])) and m.group(1) == a else 0.0
            for c, a in zip(completions, answer)]

def correctness_from_solution(prompts, completions, **kwargs):
    """The gold read from a column the engine does not pass: `solution` instead of `answer`."""
    return correctness_reward(prompts, completions, kwargs.get("solution", [""] * len(completions)))

preset_funcs = reward_functions(cfg.reward_funcs)
causes = {                                               # name: (max_new_tokens, prompt format, reward functions)
    "healthy (the preset)": (cfg.max_completion_length, None, preset_funcs),
    "1 · truncated: 8 new tokens": (8, None, preset_funcs),
    "2 · a regex stricter than the model's format": (cfg.max_completion_length, None,
                                                     {"strict_newline": strict_newline_reward}),
    "3 · a prompt format the model did not learn": (cfg.max_completion_length, "Question: {}", preset_funcs),
    "4 · the gold passed under another name": (cfg.max_completion_length, None,
                                               {"correctness": correctness_from_solution, "format": format_reward}),
}
triage = {}
for name, (max_new, prompt_format, funcs) in causes.items():
    prompts_t = [build_prompt(triage_tok, p["question"]) if prompt_format is None else prompt_format.format(p["question"])
                 for p in triage_problems]
    ro = generate_completions(triage_model, triage_tok, prompts_t, cfg.G, max_new_tokens=max_new,
                              temperature=cfg.temperature, seed=0)
    scored = score_rollout(ro, triage_golds, funcs, scale_rewards=cfg.scale_rewards, temperature=cfg.temperature)
    triage[name] = {"reward": scored.rewards.mean().item(),
                    "per_func": {k: v.mean().item() for k, v in scored.rewards_per_func.items()},
                    "accuracy": scored.correct.float().mean().item(),
                    "frac_reward_zero_std": zero_std_fraction(scored.rewards.view(-1, cfg.G)),
                    "completions/mean_length": ro.completion_lengths.float().mean().item(),
                    "completions/clipped_ratio": ro.truncated.float().mean().item(),
                    "text": ro.texts[0]}
markdown_table(["cause", "reward", "rewards/<name>/mean", "accuracy", "frac_reward_zero_std", "completions/mean_length",
                "completions/clipped_ratio", "first completion"],
               [(name, t["reward"], ", ".join(f"{k} {v:.2f}" for k, v in t["per_func"].items()), t["accuracy"],
                 t["frac_reward_zero_std"], t["completions/mean_length"], t["completions/clipped_ratio"],
                 repr(t["text"])) for name, t in triage.items()], floatfmt=".2f")

# %% [markdown]
# Each cause has its own tell, and every one is visible from the first step:
#
# | cause | the tell on the dashboard | the fix |
# | --- | --- | --- |
# | 1 · truncated | `completions/clipped_ratio` 1.0 and `completions/mean_length` at the limit; the format reward pays for the tags written before the cut | raise `max_completion_length` (read one completion: it ends mid-reasoning) |
# | 2 · stricter regex | the reward function's own mean is 0 and every group is flat, while the engine's `accuracy` (its own strict check) is high and the completions read right | test the reward function on the model's real completions before training |
# | 3 · prompt format | `accuracy` 0 as well, the completions are garbled or shorter | build the prompt as the model learned it (`build_prompt`: Qwen's chat template) |
# | 4 · wrong arguments | `rewards/correctness/mean` 0 while `accuracy` is not, and the format reward is normal | check which keyword arguments the engine passes (`prompts`, `completions`, `answer`) |
#
# The pair to remember: `accuracy` is computed by the engine, independently of your reward functions. When the
# reward says 0 and `accuracy` does not, the bug is in the reward (causes 2 and 4); when both are 0, look at the
# completions and the prompt (causes 1 and 3). On Qwen, cause 3 is expected to look different: without the chat
# template the model is expected to run on after `</answer>`, so `completions/clipped_ratio` would climb (not
# measured here).

# %% jupyter={"source_hidden": true}
t = triage
check("6.6 · my reward is always 0",
      ("healthy: reward over 1, accuracy over 0.5", t["healthy (the preset)"]["reward"] > 1
       and t["healthy (the preset)"]["accuracy"] > 0.5),
      ("1: every completion cut at the limit, correctness 0",
       t["1 · truncated: 8 new tokens"]["completions/clipped_ratio"] == 1.0
       and t["1 · truncated: 8 new tokens"]["completions/mean_length"] == 8
       and t["1 · truncated: 8 new tokens"]["per_func"]["correctness"] == 0.0
       and t["1 · truncated: 8 new tokens"]["per_func"]["format"] > 0),
      ("2: reward 0 and every group flat, while accuracy is over 0.5 and no completion is cut",
       t["2 · a regex stricter than the model's format"]["reward"] == 0.0
       and t["2 · a regex stricter than the model's format"]["frac_reward_zero_std"] == 1.0
       and t["2 · a regex stricter than the model's format"]["accuracy"] > 0.5
       and t["2 · a regex stricter than the model's format"]["completions/clipped_ratio"] == 0.0),
      ("3: correctness and accuracy both 0, completions shorter than the healthy ones",
       t["3 · a prompt format the model did not learn"]["per_func"]["correctness"] == 0.0
       and t["3 · a prompt format the model did not learn"]["accuracy"] == 0.0
       and t["3 · a prompt format the model did not learn"]["completions/mean_length"]
       < t["healthy (the preset)"]["completions/mean_length"]),
      ("4: correctness 0 while accuracy is over 0.5 and the format reward is the healthy one",
       t["4 · the gold passed under another name"]["per_func"]["correctness"] == 0.0
       and t["4 · the gold passed under another name"]["accuracy"] > 0.5
       and t["4 · the gold passed under another name"]["per_func"]["format"]
       == t["healthy (the preset)"]["per_func"]["format"]))

# %% [markdown]
# ## 7 · Completions before and after
#
# The same held-out problems, greedy, before and after training.

# %%
for b, a in zip(result.eval_before.samples, result.eval_after.samples):
    print(f"{b['question']}   gold {b['answer']}")
    print(f"  before ({'right' if b['strict'] else 'wrong'}): {b['completion']!r}")
    print(f"  after  ({'right' if a['strict'] else 'wrong'}): {a['completion']!r}")
sb, sa = result.eval_before.samples, result.eval_after.samples
print(sum(x["strict"] for x in sb), "->", sum(x["strict"] for x in sa), "of", len(sa), "shown right")

# %% jupyter={"source_hidden": true}
check("7 · completions before and after",
      ("at least 3 problems are shown, the same ones before and after",
       len(sb) == len(sa) >= 3 and [x["question"] for x in sb] == [x["question"] for x in sa]),
      ("after training at least as many of them are right", sum(x["strict"] for x in sa) >= sum(x["strict"] for x in sb)))

# %% [markdown]
# ## 8 · pass@k and maj@k: what RL changes
#
# GRPO took greedy accuracy from about 52% to about 94%. Did it teach the model to add, or did it make the model
# say more reliably answers it could already find? DeepSeekMath asks this in §5.2.2 (Figure 7): it samples K
# answers per problem from the instruct model and from the RL model and compares two curves. **pass@K** counts a
# problem solved when *any* of the K answers is right: what the policy can reach at all. **maj@K** counts it
# solved when the *most frequent* of the K answers is right: whether the right answer is the policy's most likely
# one. RL raised maj@K but not pass@K, and the paper reads this as RL making the output distribution more robust,
# boosting "the correct response from TopK" rather than adding abilities the model lacked.
#
# **The estimators.** Sample $n = 16$ completions per held-out problem at the training temperature (τ = 1) and
# judge each strictly (`judge`, notebook 03). For a problem with $c$ right samples, pass@k is the probability
# that a random $k$-subset of the $n$ samples holds at least one right one (Chen et al. 2021, the Codex paper;
# unbiased, unlike $1-(1-c/n)^k$, which draws with replacement):
#
# $$\text{pass@}k = 1 - \frac{\binom{n-c}{k}}{\binom{n}{k}} = 1 - \prod_{i=n-c+1}^{n}\Big(1 - \frac{k}{i}\Big)$$
#
# (`pass_at_k` computes the product: no huge binomials). maj@k is the expected score of a majority vote over a
# random $k$-subset $S$ of the same samples,
#
# $$\text{maj@}k = \mathbb{E}_{S \subset \{o_1, \dots, o_n\},\ |S| = k}\big[\,\text{score of the vote of } S\,\big],$$
#
# where every right sample votes for the gold answer, a wrong one for its number, a sample with no answer
# abstains, the answer with most votes wins, and a tie is broken by a fair draw (the right answer tied with $j$
# others scores $1/(j+1)$). `maj_at_k` computes this exactly, summing over how many right samples a subset holds;
# no Monte Carlo. Both are averaged over problems, and each curve gets a 95% bootstrap interval over problems
# (`bootstrap_ci`): problems are the independent unit, and a per-problem pass@k is a fraction, not a 0/1
# outcome, so Wilson's interval does not apply.
#
# Three facts hold on any data: maj@1 = pass@1 = c/n (one vote is its own majority); maj@k ≤ pass@k (a vote can
# only be won by a right answer that is there); and pass@k never falls as k grows, while maj@k can (a wrong
# answer that is the policy's favourite wins more votes as k grows). maj@k can exceed pass@1, though: a right
# answer that is the policy's most likely one wins most votes even if it comes up only 40% of the time.
#
# **Predict, then look.** Before running the next cell, write down: (1) pass@1 before and after GRPO (greedy
# decoding gave 52% and 94%: will one sample at τ = 1 do as well?); (2) pass@16 before and after: is the gain at
# k = 16 larger or smaller than at k = 1? (3) maj@16 before and after: does GRPO raise it more than pass@16?

# %%
import time
from collections import Counter

from grpo_lib.course.plots import pass_maj_curves_plot
from grpo_lib.course.evaluation import bootstrap_ci, maj_at_k, pass_at_k, pass_maj_curves, sample_answers

N_PASSK = 150                       # of the 300 held-out problems: 2 × 150 × 16 completions (300 doubles the cost)
held_out = addition_problems("test", n=N_PASSK, seed=None)        # the first 150, in the evaluation's order
ks = list(range(1, 17))
base_model, _ = load_tiny_model()                                  # the shipped model: before GRPO
t0 = time.perf_counter()
samples = {name: sample_answers(policy, result.tokenizer, held_out, n=16, temperature=cfg.temperature,
                                max_new_tokens=cfg.max_completion_length, seed=0, num_threads=cfg.num_threads)
           for name, policy in (("before GRPO", base_model), ("after GRPO", result.model))}
sampling_seconds = time.perf_counter() - t0
curves = {name: pass_maj_curves(s, ks) for name, s in samples.items()}
print(f"{2 * N_PASSK * 16:,} completions sampled in {sampling_seconds:.0f} s")
rows = []
for k in (1, 2, 4, 8, 16):
    row = [k]
    for name in curves:
        for metric in ("pass", "maj"):
            low, high = (v[k - 1].item() for v in curves[name][f"{metric}_ci"])
            row.append(f"{curves[name][metric][k - 1]:.3f} [{low:.3f}, {high:.3f}]")
    rows.append(row)
markdown_table(["k", "pass@k before", "maj@k before", "pass@k after", "maj@k after"], rows)

# %%
pass_maj_curves_plot(curves, title=f"tiny model, {N_PASSK} held-out problems, n = 16 samples each (τ = 1)")


# %% [markdown]
# The plot answers by eye; paired gains answer with intervals. The same problems were sampled before and after,
# so each problem's gain, after minus before, is one paired number, and the bootstrap interval of the mean gain
# is narrower than the overlap of two curves' intervals suggests. The last column is the question of the
# section: did GRPO raise maj@k more than pass@k?

# %%
def gain(metric, k):
    """Per-problem (after - before) of pass@k or maj@k: (P,)"""
    after, before = (curves[name][f"{metric}_per_problem"][:, k - 1] for name in ("after GRPO", "before GRPO"))
    return after - before

gains = {}
for k in (1, 4, 16):
    d_pass, d_maj = gain("pass", k), gain("maj", k)
    gains[k] = {name: (d.mean().item(), *(v.item() for v in bootstrap_ci(d)))
                for name, d in (("pass", d_pass), ("maj", d_maj), ("maj - pass", d_maj - d_pass))}
show = lambda g: f"{g[0]:+.3f} [{g[1]:+.3f}, {g[2]:+.3f}]"          # noqa: E731
markdown_table(["k", "gain in pass@k", "gain in maj@k", "maj gain − pass gain"],
               [(k, show(g["pass"]), show(g["maj"]), show(g["maj - pass"])) for k, g in gains.items()])

# %% [markdown]
# Where did the gain come from? Count the problems by how many of their 16 samples were right, and look at the
# problems at the ends: those no sample solved, and those GRPO made worse.

# %%
right = {name: [sum(s["correct"]) for s in ss] for name, ss in samples.items()}      # c per problem
bins = [(0, 0), (1, 4), (5, 8), (9, 12), (13, 16)]
markdown_table(["right samples (of 16)"] + [f"{lo}–{hi}" if lo < hi else str(lo) for lo, hi in bins],
               [[name] + [sum(lo <= c <= hi for c in cs) for lo, hi in bins] for name, cs in right.items()])

# %%
before_c, after_c = right["before GRPO"], right["after GRPO"]
never = [i for i, c in enumerate(before_c) if c == 0]
newly_solved = [i for i in never if after_c[i] > 0]
worse = [i for i in range(N_PASSK) if after_c[i] < before_c[i] - 3]
print(f"no right sample in 16 before GRPO: {len(never)} problems; with a right sample after it: {len(newly_solved)} "
      f"of them; no right sample after GRPO: {sum(c == 0 for c in after_c)} problems")
for i in never + worse:
    s = samples["after GRPO"][i]
    wrong = Counter(a for a, ok in zip(s["answers"], s["correct"]) if not ok)
    print(f"  {s['question']:<16} gold {s['answer']:>4}: right {before_c[i]:2d}/16 -> {after_c[i]:2d}/16;"
          f" after GRPO's favourite wrong answer {wrong.most_common(1)[0][0] if wrong else '-'}")

# %% [markdown]
# **What it means.** Measured here (the tables above): GRPO raised pass@1 by 23 points (0.57 → 0.80, paired
# interval [+19, +27]) and maj@16 by 35 points (0.58 → 0.93, [+27, +43]), but pass@16 not at all (0.96 → 0.95:
# −0.7 points, [−3.3, +1.3]). That is DeepSeekMath's pattern: on this task and at this k, RL made the right
# answer the policy's most likely one, problem after problem, without growing the set of problems that some
# sample solves. The right-sample counts show how: before GRPO they spread over the whole range (44 of the 150
# problems had 5–8 of 16 right); after it, 106 problems have 13–16 right. The base model already *could* add
# almost every pair within 16 tries; GRPO made it *do* so on the first.
#
# That follows from the algorithm. A problem whose G samples are all wrong is a flat group: its advantages are 0
# and it contributes no gradient (notebook 02). GRPO can only reweight answers the policy already samples, so it
# sharpens the distribution around answers that score, and a problem the policy never solves is reached only
# through what it learns on other problems: of the 6 problems no sample solved before, 1 ("2 + 9") has a right
# sample after. Sharpening cuts both ways: where the policy's favourite answer was wrong, GRPO can make it more
# so ("67 + 2" went from 9 right samples of 16 to 1, "0 + 49" from 7 to 1).
#
# How far does this carry? Three limits. (1) A ceiling: pass@16 was 0.96 before training, 4 points from 1; a
# harder task leaves room for another answer. (2) Sample size: 150 problems give pass@k intervals of ±2–5 points
# and maj@k intervals of ±4–8 points; with n = 16 samples, a problem with no right sample only says that its
# per-sample accuracy is probably below 17% ((1 − p)^16 = 0.05 at p ≈ 0.17), not that the model cannot solve
# it. (3) k stops at 16. Later work (Yue et al. 2025, "Does reinforcement learning really incentivize
# reasoning capacity in LLMs beyond the base model?", arXiv 2504.13837) sampled up to k = 256 and found base
# models catching up with, and overtaking, their RL-trained versions at large k. "RL teaches no new skills" is
# a measurement at a k, not a theorem: here, within 16 samples, GRPO taught reliability.

# %% jupyter={"source_hidden": true}
pass_b, maj_b = curves["before GRPO"]["pass_per_problem"], curves["before GRPO"]["maj_per_problem"]
pass_a, maj_a = curves["after GRPO"]["pass_per_problem"], curves["after GRPO"]["maj_per_problem"]
check("8 · pass@k and maj@k",
      ("pass@2 of 4 samples with 1 right is 1/2 (3 of the 6 pairs hold it)", pass_at_k(4, 1, 2) == 0.5),
      ("maj@1 = pass@1 = c/n on every problem, before and after",
       all(torch.allclose(m[:, 0], p[:, 0]) for m, p in ((maj_b, pass_b), (maj_a, pass_a)))),
      ("maj@k <= pass@k for every problem and k",
       bool((maj_b <= pass_b + 1e-12).all() and (maj_a <= pass_a + 1e-12).all())),
      ("pass@k never falls as k grows", all(bool((c["pass"].diff() >= -1e-12).all()) for c in curves.values())),
      ("GRPO raised pass@1 (the paired interval is above 0)", gains[1]["pass"][1] > 0),
      ("GRPO raised maj@16 more than pass@16 (the paired interval of the difference is above 0)",
       gains[16]["maj - pass"][1] > 0),
      ("pass@16 moved by less than 5 points", abs(gains[16]["pass"][0]) < 0.05),
      ("more problems have 13-16 right samples after GRPO than before",
       sum(c >= 13 for c in right["after GRPO"]) > sum(c >= 13 for c in right["before GRPO"])))

# %% [markdown]
# **5.2 · maj@k with one wrong answer (fill in).** A problem has $n$ samples: $c$ give the right answer and the
# other $n - c$ all give the *same* wrong answer. Write `my_maj_two_answers(n, c, k)`: the expected accuracy of a
# majority vote over a random $k$-subset of the $n$ samples, a tie won half the time. Then compare
# `my_maj_two_answers(16, 6, k)` for k = 1 … 16 with `pass_at_k(16, 6, k)`: which one rises with k, and why does
# the other fall? Stuck? `hint("5.2")`.

# %% tags=["solution"]
from grpo_lib.course.exercises.ex05 import check_maj_two_answers


def my_maj_two_answers(n, c, k):   # -> a probability
    ### BEGIN SOLUTION
    from math import comb
    score = lambda t: 1.0 if 2 * t > k else 0.5 if 2 * t == k else 0.0          # a tie is a coin flip
    return sum(comb(c, t) * comb(n - c, k - t) * score(t) for t in range(k + 1)) / comb(n, k)   # hypergeometric
    ### END SOLUTION


check_maj_two_answers(my_maj_two_answers);

# %% [markdown]
# ## 9 · What the tutorial's numbers really measured
#
# The tutorial reported 23% → 90% accuracy. Three things to know about those numbers:
#
# - They were measured on **30 questions from GSM8K's train split**, held out of its training: the same
#   split as the training data, not the same examples, and not the test split.
# - Before training, **21 of the 30** completions had no `<answer>` tags at all, and its evaluation only
#   accepted tagged answers. So most of the gain is **format**: the model learning to put its answer in
#   tags, not learning arithmetic it could not already do.
# - With n = 30 the uncertainty is large: a 95% interval around 23% spans roughly 12% to 41%.
#
# The last two rows of the table are **this course's tiny model on two-digit addition** (300 test problems),
# not a model on GSM8K: no Qwen2.5 result is reported here, because the Qwen preset has not been run to the end
# for this course. The rows show what an evaluation with intervals looks like, next to the tutorial's.
#
# Our evaluation uses the **test** split, greedy decoding, and reports strict accuracy, lenient accuracy
# (last number right, tags or not) and format rate separately, each with a Wilson interval, so a format
# gain and a reasoning gain cannot be confused.

# %%
n_tut = 30
k_before, k_after, untagged = 7, 27, 21                  # 23% and 90% of 30; 21 untagged before
ci_b, ci_a = wilson_interval(k_before, n_tut), wilson_interval(k_after, n_tut)
tagged_before = n_tut - untagged
markdown_table(["", "count", "rate", "95% low", "95% high"], [
    ("tutorial before (train split)", f"{k_before}/30", k_before / n_tut, *ci_b),
    ("tutorial after (train split)", f"{k_after}/30", k_after / n_tut, *ci_a),
    ("this course, tiny model on addition, before (test split)", f"{eb.n_strict}/{eb.n}", eb.strict_accuracy,
     *eb.strict_ci),
    ("this course, tiny model on addition, after (test split)", f"{ea.n_strict}/{ea.n}", ea.strict_accuracy,
     *ea.strict_ci),
], floatfmt=".3f")

# %% jupyter={"source_hidden": true}
check("9 · what the tutorial's numbers measured",
      ("7/30 and 27/30 are the tutorial's 23% and 90%", round(k_before / n_tut, 2) == 0.23 and k_after / n_tut == 0.90),
      ("with 9 tagged completions of 30 before, strict accuracy could not exceed 30%",
       tagged_before / n_tut == 0.30 and k_before <= tagged_before),
      ("the n = 30 interval around 23% spans about 12% to 41%", 0.11 < ci_b[0] < 0.13 and 0.40 < ci_b[1] < 0.42),
      ("it is over twice as wide as ours at n = 300", (ci_b[1] - ci_b[0]) > 2 * (eb.strict_ci[1] - eb.strict_ci[0])),
      ("ours reports lenient ≥ strict, before and after", ea.n_lenient >= ea.n_strict and eb.n_lenient >= eb.n_strict))

# %% [markdown]
# ## Summary
#
# One GRPO step is: sample N questions and G completions each (the mask includes EOS so the model learns
# to stop), score them, normalise the rewards within each group, and take μ clipped, KL-regularised
# policy-gradient steps; the reference model is reset every outer iteration. On the tiny Qwen2 this takes
# held-out accuracy from about 52% to about 94% in 100 steps and about two minutes on a CPU. The tutorial's
# 23% → 90% was 30 train questions, mostly a format gain; ours is the test split with strict, lenient and
# format rates and confidence intervals. A run is read from its dashboard, not its loss (at μ = 1 the loss is
# β·KL): a collapse shows in accuracy, KL and entropy after one update, drift in the KL to the start, flat groups
# in the zero-std fraction, μ > 1 in the clip fraction, the length bias in the wrong answers' length. GRPO raised
# maj@16 far more than pass@16 here: it made right answers the policy's most likely ones on problems it could
# already solve within 16 tries, as DeepSeekMath found.
#
# ## What this notebook added to grpo_lib
#
# - `grpo_lib.train`: `train`, `policy_update`, `make_optimizer` and the CLI (`grpo_lib.cli`)
#   `python -m grpo_lib` (metrics.jsonl, evals.jsonl, summary.json, model/); `grpo_lib.run`: the run around the
#   steps (`Run`: the output folder, the metrics and files in `runlog`, evaluations, checkpoints, failures).
# - `grpo_lib.config.GRPOConfig` with the `tiny` preset (notebook 06 adds the `qwen2.5-1.5b-gsm8k` one).
# - `grpo_lib.rollout`: `generate_completions`, `score_rollout`, `completion_logprobs`;
#   `grpo_lib.advantages.compute_advantages`.
# - `grpo_lib.evaluation`: `evaluate`, `judge`, `wilson_interval`, `EvalResult`.
# - `grpo_lib.data.build_prompt`, `grpo_lib.models.load_tiny_model`, `grpo_lib.tasks.addition_problems`.
# - `grpo_lib.course.evaluation`: `pass_at_k`, `maj_at_k`, `bootstrap_ci`, `sample_answers`, `pass_maj_curves`.
# - `grpo_lib.course.plots`: `run_dashboard` (and `smooth`), `pass_maj_curves_plot`; `grpo_lib.course.gallery`:
#   the failing runs' specs, their committed results in `grpo_lib/assets/gallery/`, and
#   `python -m grpo_lib.course.gallery`, which regenerates them.
# - `grpo_lib.course.exercises.ex05`: the checkers of exercises 5.1 and 5.2, tested in
#   `tests/test_course_exercises_ex05.py` and `tests/test_course_exercises_hints.py`.
#
# ## Exercises
#
# Exercises 5.1 and 5.2 (fill in, checked) are in sections 2 and 8. Open ones (worked answers for instructors in docs/teaching.md):
#
# **5.3 · Fewer steps.** Run `train(cfg.replace(steps=20, output_dir=tempfile.mkdtemp()))`. How much of
# the gain is there already after 20 steps? Look at `frac_reward_zero_std` in `metrics.jsonl`: why does
# learning slow down as accuracy rises?
#
# **5.4 · No KL.** Set `beta=0` (no reference model at all). Does accuracy change? Does the completion
# length or the format rate drift? Compare the KL curve with the run above.
#
# **5.5 · μ > 1.** Set `mu=2` and `epsilon=0.2`. The clip fraction is no longer 0: plot it. Which updates
# get clipped, and why is the first of the μ updates never clipped?
#
# **5.6 · Group size.** Try `G=4` and `G=16` with the same `B = N·G`. Which reaches 80% first, in steps and
# in seconds?

# %% [markdown]
# ## Quiz: check yourself
#
# Choose an answer to each question *before* you open it. Every answer is a number this notebook printed.

# %%
from grpo_lib.course.quiz import Question, quiz

quiz("Quiz · notebook 05",
     Question("At the first update (μ = 1) the loss is about 0. What does that say about the update?",
              ("nothing moved", "nothing: the gradient is REINFORCE's and the weights moved", "the learning rate is 0"),
              1, f"|loss| = {abs(stats['loss']):.1e}, grad norm {stats['grad_norm']:.3f} (section 3).",
              abs(stats["loss"]) < 1e-5 and stats["grad_norm"] > 0),
     Question("The gallery's R1-tags run: what is its zero-std fraction?",
              ("about 0.25, like the healthy run", "1.0 at every step: every group is flat", "0 at every step"), 1,
              "Every completion scores 0, so every advantage is 0 (6.3).",
              all(m["frac_reward_zero_std"] == 1.0 for m in r1)),
     Question("A β = 0 run's engine `kl` panel reads 0 at every step. The policy ...",
              ("has not moved", "may have moved: with no π_ref nothing is measured", "moved back to the start"), 1,
              f"The gallery's KL to the start is {b0[3]['gallery/kl_to_start']:.3f} by step 4 (6.2).",
              all(m["kl"] == 0.0 for m in b0) and b0[3]["gallery/kl_to_start"] > 0.01),
     Question("μ = 4 updates per batch: the clip fraction is non-zero, mostly from ...",
              ("above (A > 0, ρ > 1 + ε)", "below (A < 0, ρ < 1 − ε)", "both equally"), 1,
              f"Mean {avg(mu, 'clip_ratio/low_mean'):.2%} low against {avg(mu, 'clip_ratio/high_mean'):.2%} high (6.4).",
              avg(mu, "clip_ratio/low_mean") > avg(mu, "clip_ratio/high_mean")),
     Question("As k grows, which of pass@k and maj@k can fall?",
              ("pass@k", "maj@k", "neither"), 1,
              "pass@k needs one right sample in k; a majority vote can be won by a common wrong answer (8).",
              all(bool((c["pass"].diff() >= -1e-12).all()) for c in curves.values())))

# %% [markdown]
# ## GRPO on one page
#
# The whole method on one page, `docs/cheatsheet.md`: background, the key equations with each paper symbol and
# its `grpo_lib` name, Algorithm 1's three loops as pseudocode, and the metrics to watch. Shown here from the file:

# %%
from IPython.display import Markdown

import grpo_lib

Markdown((Path(grpo_lib.__file__).resolve().parents[1] / "docs" / "cheatsheet.md").read_text())

# %% [markdown]
# ## Next
#
# Notebook 06 runs this engine on several GPUs: why the tutorial's `nn.DataParallel` and `device_map="auto"`
# did not, DistributedDataParallel with `torchrun` (on 2 CPU processes there), mixed precision, checkpoints,
# the memory plan of the Qwen2.5-1.5B run, its commands for 1 and 8 GPUs, and the same run on TRL.
# docs/teaching.md lists discussion questions for this notebook.
