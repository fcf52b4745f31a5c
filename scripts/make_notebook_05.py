"""Write notebooks/05_full_run.ipynb from the cells below, so the notebook is reviewable as code.

    python scripts/make_notebook_05.py             # write the notebook without outputs
    python scripts/make_notebook_05.py --execute   # write it, run it top to bottom, save it with outputs

Edit the cells here, not in the .ipynb, then regenerate with --execute: the notebook is committed with its
outputs (they are deterministic and cheap) so it reads well on GitHub. Executing here records no timing
metadata, so re-running gives the same file unless a number really changed.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "05_full_run.ipynb"

def md(text: str, **fields: str):
    """A markdown cell; each `{name}` in `fields` is filled in after dedenting (so inserted text may be flush left)."""
    source = textwrap.dedent(text).strip("\n")
    for name, value in fields.items():
        source = source.replace("{" + name + "}", value)
    return new_markdown_cell(source)


def code(text: str):
    return new_code_cell(textwrap.dedent(text).strip("\n"))


def cells() -> list:
    return [
        # ------------------------------------------------------------------ opening
        md("""
        # 05 · The full run

        > The tutorial's whole job, sample → score → update, run for real: first on a tiny Qwen2 that learns
        > addition on a CPU in about two minutes, then (same code, other preset) Qwen2.5-1.5B-Instruct on GSM8K.

        You will:
        - map DeepSeekMath's Algorithm 1 line by line onto `grpo_lib/train.py`;
        - watch one rollout token by token: the completion ids, the mask (EOS included), rewards and advantages;
        - take one policy update by hand and read its loss, KL and clip fraction;
        - run the tiny preset end to end, plot its learning curves from `metrics.jsonl`, and compare held-out
          completions before and after;
        - get the exact commands for the Qwen run, and see what the tutorial's 23% → 90% really measured.

        Needs: notebooks 01–04 (advantages, rewards, the loss). Runs in: ~2.5 min on CPU (the training run is
        ~2 min of it).

        ## The algorithm, and where each line lives

        The objective (DeepSeekMath eq. 3, per token $t$ of completion $o_i$, $\\rho_{i,t} = \\pi_\\theta / \\pi_{\\theta_{old}}$):

        $$\\mathcal{J}_{GRPO}(\\theta) = \\mathbb{E}\\Big[\\frac{1}{G}\\sum_{i=1}^{G}\\frac{1}{|o_i|}\\sum_{t=1}^{|o_i|}
        \\Big(\\min\\big(\\rho_{i,t}\\hat A_{i,t},\\ \\mathrm{clip}(\\rho_{i,t}, 1-\\epsilon, 1+\\epsilon)\\hat A_{i,t}\\big)
        - \\beta\\,\\mathbb{D}_{KL}[\\pi_\\theta\\|\\pi_{ref}]\\Big)\\Big]$$

        | Algorithm 1 (DeepSeekMath) | `grpo_lib` |
        | --- | --- |
        | for iteration = 1..I: reference model $\\pi_{ref} \\leftarrow \\pi_\\theta$ | `train()`: `ref_model = copy.deepcopy(model)` when `step % cfg.steps == 0` |
        | for step = 1..M: sample a batch of N questions | `grpo_lib.data.prompts_for_step`, `build_prompt` |
        | $\\pi_{\\theta_{old}} \\leftarrow \\pi_\\theta$; sample G outputs per question | `grpo_lib.rollout.generate_completions` (KV cache, left padding, stop at EOS) |
        | compute rewards $r_i$ | `score_rollout` → `score_completions` with `grpo_lib.rewards` |
        | compute $\\hat A_{i,t}$ by group-relative advantage estimation | `score_rollout` → `compute_advantages` (notebook 02) |
        | (log-probs of $\\pi_{\\theta_{old}}$ and $\\pi_{ref}$) | `score_rollout` → `completion_logprobs` |
        | for GRPO iteration = 1..μ: update $\\pi_\\theta$ by maximizing $\\mathcal{J}_{GRPO}$ | `grpo_lib.train.policy_update` → `grpo_loss` (notebook 04), grad clip, AdamW |
        | (update the reward model: not needed, rewards are rules) | — |
        """),
        code("""
        import copy
        import json
        import os
        import tempfile
        from pathlib import Path

        import matplotlib.pyplot as plt
        import torch

        from grpo_lib.config import GRPOConfig
        from grpo_lib.data import build_prompt, has_chat_template
        from grpo_lib.evaluation import wilson_interval
        from grpo_lib.models import count_parameters, load_tiny_model
        from grpo_lib.notebook import markdown_table
        from grpo_lib.rollout import generate_completions, score_rollout
        from grpo_lib.tasks import addition_problems
        from grpo_lib.train import make_optimizer, policy_update, reward_functions, train

        os.environ.setdefault("WANDB_MODE", "offline")
        torch.manual_seed(0)
        """),
        # ------------------------------------------------------------------ 1 config
        md("""
        ## 1 · The configuration

        Every setting of a run is one field of `GRPOConfig`, named by its paper symbol where it has one. The
        `tiny` preset is the CPU default; `report_to="none"` keeps W&B out of the notebook.
        """),
        code("""
        cfg = GRPOConfig.tiny(report_to="none", progress=False)
        cfg
        """),
        code("""
        # check: the tiny preset's key numbers, and the batch size B = N · G
        assert (cfg.G, cfg.N, cfg.steps, cfg.mu, cfg.beta, cfg.epsilon) == (8, 16, 100, 1, 0.04, 0.2)
        assert cfg.B == cfg.N * cfg.G == 128 and cfg.total_steps == cfg.num_iterations * cfg.steps == 100
        print("B =", cfg.B, "completions per step;", cfg.total_steps, "steps")
        """),
        # ------------------------------------------------------------------ 2 rollout
        md("""
        ## 2 · One rollout, token by token

        The tiny model is a real `Qwen2ForCausalLM` with a character-level tokenizer (the tags `<reasoning>`,
        `<answer>`, ... are single tokens). It was warmed up with supervised learning to about 50% held-out
        accuracy, leaving room for GRPO. We sample $G = 8$ completions for two training questions.
        """),
        code("""
        model, tok = load_tiny_model()
        problems = addition_problems("train", n=2)
        prompts = [build_prompt(tok, p["question"]) for p in problems]
        rollout = generate_completions(model, tok, prompts, cfg.G, max_new_tokens=cfg.max_completion_length,
                                       temperature=cfg.temperature, seed=0)
        print(f"{count_parameters(model):,} parameters; prompt q = {prompts[0]!r}")
        print("completion_ids:", tuple(rollout.completion_ids.shape), " (B = N·G rows, T tokens)")
        """),
        code("""
        i = 0                                                    # first completion of the first group
        o_ids, mask = rollout.completion_ids[i], rollout.completion_mask[i]
        tokens = [tok.decode([t]) for t in o_ids.tolist()]
        markdown_table(["t", "token id", "token", "mask"],
                       [(t, int(o_ids[t]), repr(tokens[t]), int(mask[t])) for t in range(len(tokens))])
        """),
        code("""
        # check: the mask covers the completion up to and including the first EOS, and nothing after it
        o_len = int(mask.sum())
        assert o_ids[o_len - 1].item() == tok.eos_token_id, "last masked token must be EOS"
        assert mask[:o_len].all() and not mask[o_len:].any()
        assert (o_ids[:o_len - 1] != tok.eos_token_id).all()
        print(f"|o_{i}| = {o_len} tokens, EOS included; text: {rollout.texts[i]!r}")
        """),
        md("""
        Now the rewards ($r$ = correctness + format, notebook 03) and the group advantages
        $A_i = (r_i - \\mathrm{mean}(r))/\\mathrm{std}(r)$ (notebook 02), one row per group.
        """),
        code("""
        reward_funcs = reward_functions(cfg.reward_funcs)
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)     # π_ref ← π_θ
        batch = score_rollout(rollout, [p["answer"] for p in problems], reward_funcs, policy=model,
                              ref_model=ref_model, scale_rewards=cfg.scale_rewards, temperature=cfg.temperature)
        r, A = batch.rewards.view(-1, cfg.G), batch.advantages.view(-1, cfg.G)   # (N, G)
        for n, p in enumerate(problems):
            print(f"{p['question']}  gold {p['answer']}")
            print("  r =", [round(x, 2) for x in r[n].tolist()])
            print("  A =", [round(x, 2) for x in A[n].tolist()])
        """),
        code("""
        # check: advantages are group-normalised rewards (sample std, 1e-4 floor); a zero-std group gets A = 0
        for n in range(len(problems)):
            std = r[n].std()
            expected = torch.zeros(cfg.G) if std < 1e-6 else (r[n] - r[n].mean()) / (std + 1e-4)
            assert torch.allclose(A[n], expected, atol=1e-4), n
            assert abs(A[n].sum()) < 1e-4
        print("advantages match (r - mean) / std per group")
        """),
        # ------------------------------------------------------------------ 3 update
        md("""
        ## 3 · One update

        `policy_update` computes $\\log\\pi_\\theta$ with gradients, `grpo_loss`, backward, clips the gradient norm
        and takes one AdamW step. With $\\mu = 1$, $\\pi_{\\theta_{old}} = \\pi_\\theta$, so $\\rho = 1$, nothing is
        clipped, and right after the reset $\\pi_\\theta = \\pi_{ref}$, so the KL is 0: the loss value is about 0
        while its gradient is not.
        """),
        code("""
        optimizer, scheduler = make_optimizer(model, cfg)
        before = [q.detach().clone() for q in model.parameters()]
        stats = policy_update(model, optimizer, batch, cfg)
        moved = sum((a - b).abs().sum().item() for a, b in zip(model.parameters(), before))
        print({k: round(v, 6) for k, v in stats.items()}, f" total |Δθ| = {moved:.3f}")
        """),
        code("""
        # check: μ = 1 and π_θ = π_ref at the first update: ρ = 1, no clipping, KL 0, loss ≈ 0, but θ moved
        assert stats["clip_fraction"] == 0.0 and abs(stats["ratio_mean"] - 1) < 1e-6
        assert abs(stats["kl"]) < 1e-6 and abs(stats["loss"]) < 1e-5
        assert stats["grad_norm"] > 0 and moved > 0
        print("one update: loss ≈ 0, gradient", round(stats["grad_norm"], 3))
        del model, ref_model, optimizer
        """),
        # ------------------------------------------------------------------ 4 full run
        md("""
        ## 4 · The full tiny run

        `train(cfg)` is what `python -m grpo_lib.train --preset tiny` runs: evaluate on the 300 held-out test
        problems, 100 steps of sample → score → update, evaluate again, save. It writes `metrics.jsonl`,
        `evals.jsonl`, `summary.json` and `model/` to a temporary folder. The seed is fixed and the preset uses
        one CPU thread, so the run is reproducible (measured: 51.7% → 93.7%).
        """),
        code("""
        import contextlib, io

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
        """),
        code("""
        # check: the course target (issue: +30 points, ending at >= 80%, within 5 minutes on CPU)
        s = result.summary
        assert len(metrics) == cfg.total_steps and len(result["loss"]) == cfg.total_steps
        assert s["accuracy_after"] >= 0.80, s["accuracy_after"]
        assert s["accuracy_after"] - s["accuracy_before"] >= 0.30
        assert s["wall_seconds"] <= 300, s["wall_seconds"]
        assert s["accuracy_after"] == summary["accuracy_after"]  # the file says what train() returned
        print("target met:", f"+{s['accuracy_after'] - s['accuracy_before']:.1%}")
        """),
        md("""
        ### Learning curves from `metrics.jsonl`

        One record per step. The batch reward and accuracy climb; the KL to $\\pi_{ref}$ grows slowly (β = 0.04
        keeps it small); the completion length grows a little (a correct carry adds `+1` to the reasoning); and the share of
        zero-std groups rises as the model gets most questions right: those groups teach nothing (notebook 02).
        """),
        code("""
        step = [m["step"] for m in metrics]
        panels = [("reward", "mean reward r"), ("accuracy", "batch accuracy (sampled)"), ("kl", "KL(π_θ‖π_ref)"),
                  ("completion_length", "|o_i| (tokens)"), ("frac_zero_std", "zero-std group fraction")]
        fig, axes = plt.subplots(1, 5, figsize=(17, 3.2))
        for ax, (key, label) in zip(axes, panels):
            ax.plot(step, [m[key] for m in metrics], lw=1.2)
            ax.set_title(label, fontsize=10)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        plt.show()
        """),
        code("""
        # check: the curves tell the story: later steps beat early ones on reward and accuracy, KL grows from 0
        first, last = metrics[:10], metrics[-10:]
        mean = lambda rows, k: sum(m[k] for m in rows) / len(rows)
        assert mean(last, "reward") > mean(first, "reward") and mean(last, "accuracy") > mean(first, "accuracy")
        assert mean(last, "frac_zero_std") > mean(first, "frac_zero_std")
        assert metrics[0]["kl"] < 1e-6 < mean(last, "kl")
        print({k: (round(mean(first, k), 3), round(mean(last, k), 3))
               for k in ("reward", "accuracy", "kl", "completion_length", "frac_zero_std")})
        """),
        md("""
        ### Held-out evaluation with 95% confidence intervals

        Greedy decoding on the 300 test problems. Strict: the answer is in `<answer>` tags and right; lenient:
        the last number is right; format: the tags are well formed. Each with a Wilson interval.
        """),
        code("""
        rows = []
        for name, ev in (("before", result.eval_before), ("after", result.eval_after)):
            for what, k, ci in (("strict", ev.n_strict, ev.strict_ci), ("lenient", ev.n_lenient, ev.lenient_ci),
                                ("format", ev.n_format, ev.format_ci)):
                rows.append((name, what, f"{k}/{ev.n}", k / ev.n, ci[0], ci[1]))
        markdown_table(["eval", "metric", "count", "rate", "95% low", "95% high"], rows, floatfmt=".3f")
        """),
        code("""
        # check: the intervals are Wilson's, and before/after strict intervals do not overlap
        eb, ea = result.eval_before, result.eval_after
        assert eb.n == ea.n == 300
        assert eb.strict_ci == wilson_interval(eb.n_strict, eb.n) and ea.strict_ci == wilson_interval(ea.n_strict, ea.n)
        assert eb.strict_ci[1] < ea.strict_ci[0]
        print("before", [round(x, 3) for x in eb.strict_ci], "after", [round(x, 3) for x in ea.strict_ci])
        """),
        # ------------------------------------------------------------------ 5 completions
        md("""
        ## 5 · Completions before and after

        The same held-out problems, greedy, before and after training.
        """),
        code("""
        for b, a in zip(result.eval_before.samples, result.eval_after.samples):
            print(f"{b['question']}   gold {b['answer']}")
            print(f"  before ({'right' if b['strict'] else 'wrong'}): {b['completion']!r}")
            print(f"  after  ({'right' if a['strict'] else 'wrong'}): {a['completion']!r}")
        """),
        code("""
        # check: the samples are the same problems, and after training at least as many are right
        sb, sa = result.eval_before.samples, result.eval_after.samples
        assert len(sb) == len(sa) >= 3 and [x["question"] for x in sb] == [x["question"] for x in sa]
        assert sum(x["strict"] for x in sa) >= sum(x["strict"] for x in sb)
        print(sum(x["strict"] for x in sb), "->", sum(x["strict"] for x in sa), "of", len(sa), "shown right")
        """),
        # ------------------------------------------------------------------ 6 qwen
        md("""
        ## 6 · The Qwen run

        Same engine, other preset: `Qwen/Qwen2.5-1.5B-Instruct` on GSM8K with the tutorial's hyperparameters
        (G = 12, N = 7, 400 new tokens, β = 0.04, lr 5e-6, ε = 0.1, μ = 1), bf16, flash-attention when it
        imports on CUDA. It needs a GPU and the weights, so this notebook only prints the commands; set
        `GRPO_FULL=1` to run the single-GPU one from here.
        """),
        code("""
        one_gpu = ("python -m grpo_lib.train --preset qwen2.5-1.5b-gsm8k --output-dir runs/qwen "
                   "--data-dir ../shared/data/gsm8k")
        eight_gpus = ("torchrun --standalone --nproc_per_node=8 -m grpo_lib.train --preset qwen2.5-1.5b-gsm8k "
                      "--N 8 --output-dir runs/qwen-8gpu --data-dir ../shared/data/gsm8k")
        print("1 GPU: ", one_gpu)
        print("8 GPUs:", eight_gpus)
        if os.environ.get("GRPO_FULL") == "1":
            import subprocess
            subprocess.run(one_gpu.split(), cwd="..", check=True)
        """),
        code("""
        qwen = GRPOConfig.from_preset("qwen2.5-1.5b-gsm8k")
        qwen
        """),
        code("""
        # check: the tutorial's hyperparameters; N = 8 splits evenly over 8 GPUs (N = 7 would not)
        assert (qwen.G, qwen.N, qwen.max_completion_length, qwen.beta, qwen.lr, qwen.epsilon, qwen.mu) == \\
            (12, 7, 400, 0.04, 5e-6, 0.1, 1)
        assert qwen.model == "Qwen/Qwen2.5-1.5B-Instruct" and qwen.task == "gsm8k" and qwen.dtype == "bfloat16"
        assert qwen.N % 8 != 0 and qwen.replace(N=8).N_per_rank(8) == 1
        print("qwen preset OK; B =", qwen.B)
        """),
        md("""
        ### Why Qwen stops after `</answer>`

        The tutorial built its prompt by gluing the system prompt and the question together as plain text, so
        the Instruct model saw no chat turn and had no reason to end one: it kept writing after `</answer>`.
        `build_prompt` uses the tokenizer's chat template (`apply_chat_template`) whenever it has one. Qwen's
        template is ChatML: the prompt ends with `<|im_start|>assistant\\n`, and the model was instruction-tuned
        to close its turn with `<|im_end|>`, which is its EOS token for generation. So it stops right after
        `</answer>`, and because the completion mask includes EOS, GRPO keeps rewarding that stop. Below, the
        same function on a tokenizer given a ChatML template (Qwen2.5's, shortened); the tiny tokenizer has
        none and gets the plain format.
        """),
        code("""
        from grpo_lib.rewards import SYSTEM_PROMPT

        CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\\\n' + m['content'] + '<|im_end|>\\\\n' }}"
                  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\\\n' }}{% endif %}")
        _, chat_tok = load_tiny_model()
        chat_tok.chat_template = CHATML
        chat_prompt = build_prompt(chat_tok, "What is 33 + 16?", SYSTEM_PROMPT)
        print(chat_prompt)
        print("--- without a template:", repr(build_prompt(tok, "What is 33 + 16?")))
        """),
        code("""
        # check: with a template the prompt is a ChatML turn ending in the assistant header; without, plain text
        assert has_chat_template(chat_tok) and not has_chat_template(tok)
        assert chat_prompt.startswith("<|im_start|>system\\n") and chat_prompt.endswith("<|im_start|>assistant\\n")
        assert "<|im_start|>user\\nWhat is 33 + 16?<|im_end|>" in chat_prompt
        assert build_prompt(tok, "What is 33 + 16?") == "What is 33 + 16?\\n"
        print("chat template applied")
        """),
        # ------------------------------------------------------------------ 7 tutorial numbers
        md("""
        ## 7 · What the tutorial's numbers really measured

        The tutorial reported 23% → 90% accuracy. Three things to know about those numbers:

        - They were measured on **30 questions from GSM8K's train split** (the same pool it trained on), not
          on the test split.
        - Before training, **21 of the 30** completions had no `<answer>` tags at all, and its evaluation only
          accepted tagged answers. So most of the gain is **format**: the model learning to put its answer in
          tags, not learning arithmetic it could not already do.
        - With n = 30 the uncertainty is large: a 95% interval around 23% spans roughly 12% to 41%.

        Our evaluation uses the **test** split, greedy decoding, and reports strict accuracy, lenient accuracy
        (last number right, tags or not) and format rate separately, each with a Wilson interval, so a format
        gain and a reasoning gain cannot be confused.
        """),
        code("""
        n_tut = 30
        k_before, k_after, untagged = 7, 27, 21                  # 23% and 90% of 30; 21 untagged before
        ci_b, ci_a = wilson_interval(k_before, n_tut), wilson_interval(k_after, n_tut)
        tagged_before = n_tut - untagged
        markdown_table(["", "count", "rate", "95% low", "95% high"], [
            ("tutorial before (train split)", f"{k_before}/30", k_before / n_tut, *ci_b),
            ("tutorial after (train split)", f"{k_after}/30", k_after / n_tut, *ci_a),
            ("ours before (test split)", f"{eb.n_strict}/{eb.n}", eb.strict_accuracy, *eb.strict_ci),
            ("ours after (test split)", f"{ea.n_strict}/{ea.n}", ea.strict_accuracy, *ea.strict_ci),
        ], floatfmt=".3f")
        """),
        code("""
        # check: 7/30 and 27/30 are the tutorial's 23% and 90%; with only 9 tagged completions before,
        # strict accuracy could not exceed 30%; an n = 30 interval is over twice as wide as ours at n = 300
        assert round(k_before / n_tut, 2) == 0.23 and k_after / n_tut == 0.90
        assert tagged_before / n_tut == 0.30 and k_before <= tagged_before
        assert 0.11 < ci_b[0] < 0.13 and 0.40 < ci_b[1] < 0.42
        assert (ci_b[1] - ci_b[0]) > 2 * (eb.strict_ci[1] - eb.strict_ci[0])
        # and ours separates the three rates: lenient >= strict, format reported on its own
        assert ea.n_lenient >= ea.n_strict and eb.n_lenient >= eb.n_strict
        print(f"tutorial 95% CI before: {ci_b[0]:.2f}-{ci_b[1]:.2f}; ours: {eb.strict_ci[0]:.2f}-{eb.strict_ci[1]:.2f}")
        """),
        # ------------------------------------------------------------------ closing
        md("""
        ## Summary

        One GRPO step is: sample N questions and G completions each (the mask includes EOS so the model learns
        to stop), score them, normalise the rewards within each group, and take μ clipped, KL-regularised
        policy-gradient steps; the reference model is reset every outer iteration. On the tiny Qwen2 this takes
        held-out accuracy from about 52% to about 94% in 100 steps and about two minutes on a CPU. The same
        `train()` runs Qwen2.5-1.5B on GSM8K with a different preset, where the chat template removes the
        tutorial's "keeps writing after `</answer>`" problem. And the tutorial's 23% → 90% was 30 train
        questions, mostly a format gain; ours is the test split with strict, lenient and format rates and CIs.

        ## What this notebook added to grpo_lib

        - `grpo_lib.train`: `train`, `policy_update`, `make_optimizer`, `reward_functions` and the CLI
          `python -m grpo_lib.train` (metrics.jsonl, evals.jsonl, summary.json, model/).
        - `grpo_lib.config.GRPOConfig` with the `tiny` and `qwen2.5-1.5b-gsm8k` presets.
        - `grpo_lib.rollout`: `generate_completions`, `score_rollout`, `compute_advantages`, `completion_logprobs`.
        - `grpo_lib.evaluation`: `evaluate`, `judge`, `wilson_interval`, `EvalResult`.
        - `grpo_lib.data.build_prompt` (chat template or plain), `grpo_lib.models.load_tiny_model`,
          `grpo_lib.tasks.addition_problems`.

        ## Exercises

        **5.1 · Fewer steps.** Run `train(cfg.replace(steps=20, output_dir=tempfile.mkdtemp()))`. How much of
        the gain is there already after 20 steps? Look at `frac_zero_std` in `metrics.jsonl`: why does
        learning slow down as accuracy rises?

        **5.2 · No KL.** Set `beta=0` (no reference model at all). Does accuracy change? Does the completion
        length or the format rate drift? Compare the KL curve with the run above.

        **5.3 · μ > 1.** Set `mu=2` and `epsilon=0.2`. The clip fraction is no longer 0: plot it. Which updates
        get clipped, and why is the first of the μ updates never clipped?

        **5.4 · Group size.** Try `G=4` and `G=16` with the same `B = N·G`. Which reaches 80% first, in steps and
        in seconds?

        ## Next

        The multi-GPU part comes in a later section: how `torchrun` splits the N prompts over the GPUs, what
        DDP synchronises, and the memory budget of the Qwen run.
        """),
    ]


def build() -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells())
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"                        # stable ids: regenerating gives the same file
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def execute(nb: nbformat.NotebookNode) -> None:
    """Run every cell in a fresh kernel, in the notebook's folder, without timing metadata."""
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=900, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--execute", action="store_true", help="run the notebook and save it with outputs")
    args = parser.parse_args()
    nb = build()
    if args.execute:
        execute(nb)
    nbformat.validate(nb)
    NOTEBOOK.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, NOTEBOOK)
    print(f"wrote {NOTEBOOK.relative_to(REPO)} ({len(nb.cells)} cells{', executed' if args.execute else ''})")


if __name__ == "__main__":
    main()
