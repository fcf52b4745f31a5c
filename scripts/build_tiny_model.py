"""Build the shipped tiny policy: a random Qwen2 warmed up on addition to a *partial* accuracy.

    python scripts/build_tiny_model.py --output-dir grpo_lib/assets/tiny-qwen2-addition

Takes about 1 minute on 2 idle CPU cores (4-6 minutes when other jobs share them); the result is
bit-identical for a given seed on one machine and library stack. Since the build reuses the library's
sampling, judging and cosine decay, its output was compared with the script it replaced: on this
2-core machine on 2026-11-30 both wrote byte-identical files (all six, sha256). Neither reproduces the
shipped model.safetensors byte for byte on this machine (step-50 loss 1.0599 here vs 1.0602 in
build_info.json): the float reductions differ from the machine that built it, not the recipe. Notebooks and tests never run it: they load the result with
`grpo_lib.models.load_tiny_model()`. Rerun it only to change the recipe.

The recipe ("biased data"):
1. Random-initialise `Qwen2ForCausalLM(tiny_qwen2_config(263))` (about 1.0M parameters) with a fixed seed.
2. Supervised warm-up on the train split (9,700 problems; the 300 test problems are never seen): the
   cross-entropy loss covers the completion tokens and the final `<eos>` (so the model learns to stop),
   not the prompt.
3. The bias, a careless teacher who is sloppy about the carry: each time a carry problem is drawn, with
   probability `--drop-carry` (0.6) it is taught the forgot-the-carry reasoning and the wrong answer
   that follows from it ("7+5=12,4+8=12" -> 122); each time a problem whose ones column makes exactly 9
   is drawn, with probability `--early-carry` (0.6) it is taught a carry that is not due
   ("7+2=9,2+3+1=6" -> 69). The two slips touch 45% + 8% of the problems, so greedy accuracy lands
   near 50% rather than at the 55% of problems they leave alone.
   The model learns both rules and prefers the wrong one: greedy decoding gets most of these
   problems wrong, while sampling at T = 1 uses the right rule part of the time. A group of G = 8 samples then
   often holds right and wrong answers, which is the signal GRPO needs; GRPO only has to make the
   model prefer a procedure it already knows.
   (A model that is merely under-trained on clean data fails in the reasoning itself, and an
   outcome-only reward teaches that slowly.)
4. Report held-out greedy accuracy, sampled accuracy at T = 1, pass@8 and the fraction of mixed groups
   of 8, and write them with the recipe to build_info.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import tokenizers  # noqa: E402
import transformers  # noqa: E402
from transformers import GenerationConfig, Qwen2ForCausalLM  # noqa: E402

from grpo_lib.data import build_prompt  # noqa: E402
from grpo_lib.evaluation import judge  # noqa: E402
from grpo_lib.models import count_parameters, load_tiny_model, tiny_qwen2_config  # noqa: E402
from grpo_lib.rollout import generate_completions  # noqa: E402
from grpo_lib.tasks import PLAIN_PROMPT, addition_problems, completion_for, has_carry, reasoning_for  # noqa: E402
from grpo_lib.tokenizer import build_char_tokenizer  # noqa: E402
from grpo_lib.train import cosine_decay  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output-dir", type=Path, required=True, help="folder to write (created if missing)")
    p.add_argument("--steps", type=int, default=300, help="supervised warm-up steps")
    p.add_argument("--drop-carry", type=float, default=0.6,
                   help="probability that a drawn carry problem is taught without the carry")
    p.add_argument("--early-carry", type=float, default=0.6,
                   help="probability that a drawn problem whose ones column makes exactly 9 is taught with a carry")
    p.add_argument("--seed", type=int, default=0, help="seed of the init, the batches and the bias")
    p.add_argument("--batch-size", type=int, default=64, help="problems per warm-up step")
    p.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate")
    p.add_argument("--warmup-steps", type=int, default=20, help="linear learning-rate warmup")
    p.add_argument("--eval-every", type=int, default=50, help="held-out greedy eval every k steps (0: off)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--group-size", type=int, default=8, help="G for the sampled statistics")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    for name in ("drop_carry", "early_carry"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            p.error(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    if not 1 <= args.batch_size <= 9700:
        p.error(f"--batch-size must be in 1..9700 (the train split), got {args.batch_size}")
    if args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.group_size < 2:
        p.error(f"--group-size must be >= 2, got {args.group_size}")
    return args


def set_determinism(seed: int, threads: int) -> bool:
    """Seed everything, fix the thread count; returns whether deterministic algorithms could be enforced."""
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    try:
        torch.use_deterministic_algorithms(True)
        return True
    except Exception:  # pragma: no cover - depends on the torch build
        return False


# --- data: prompt + completion + <eos>, loss on completion tokens only ---

def taught_carry_at(a: int, b: int, rng: random.Random, drop_carry: float, early_carry: float) -> int | None:
    """The carry rule the warm-up teaches for (a, b): the right one (10) or, with some probability, a slip."""
    if has_carry(a, b):
        return None if rng.random() < drop_carry else 10  # forgets the carry
    if reasoning_for(a, b, carry_at=9) != reasoning_for(a, b):
        return 9 if rng.random() < early_carry else 10  # carries although the column makes only 9
    return 10


def sft_batch(problems: list[dict], tokenizer, rng: random.Random, drop_carry: float, early_carry: float):
    """Right-padded input_ids (B, L), attention_mask (B, L) and labels (B, L) with -100 off the completion."""
    rows = []
    for p in problems:
        carry_at = taught_carry_at(p["a"], p["b"], rng, drop_carry, early_carry)  # the bias (recipe step 3)
        q_ids = tokenizer(PLAIN_PROMPT.format(question=p["question"]))["input_ids"]
        o_ids = tokenizer(completion_for(p["a"], p["b"], carry_at))["input_ids"] + [tokenizer.eos_token_id]
        rows.append((q_ids, o_ids))
    L = max(len(q) + len(o) for q, o in rows)
    input_ids = torch.full((len(rows), L), tokenizer.pad_token_id, dtype=torch.long)  # (B, L)
    attention_mask = torch.zeros((len(rows), L), dtype=torch.long)  # (B, L)
    labels = torch.full((len(rows), L), -100, dtype=torch.long)  # (B, L); -100 = ignored by the loss
    for i, (q, o) in enumerate(rows):
        n = len(q) + len(o)
        input_ids[i, :n] = torch.tensor(q + o)
        attention_mask[i, :n] = 1
        labels[i, len(q):n] = torch.tensor(o)  # completion tokens and the final <eos>
    return input_ids, attention_mask, labels


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warmup, then the engine's cosine decay (grpo_lib.train.cosine_decay) from `peak` to 10% of it.

    The warm-up stays this script's own: it reaches the peak at step `warmup` ((step + 1) / warmup), where the
    engine's schedule (`make_optimizer`) starts at 1 / (warmup + 1). Changing it would change the shipped
    weights, and with them every measured number of the course.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * cosine_decay((step - warmup) / max(1, total - warmup))


# --- evaluation: the engine's sampling (grpo_lib.rollout) and its strict checks (grpo_lib.evaluation.judge) ---

def generate(model, tokenizer, problems: list[dict], *, do_sample: bool, G: int = 1, batch_size: int = 300,
             seed: int | None = None) -> list[str]:
    """G completions per problem (consecutive), `batch_size` problems per generate() call; `seed` seeds once."""
    out = []
    for start in range(0, len(problems), batch_size):
        prompts = [build_prompt(tokenizer, p["question"]) for p in problems[start:start + batch_size]]
        out += generate_completions(model, tokenizer, prompts, G, max_new_tokens=40, do_sample=do_sample,
                                    seed=seed if start == 0 else None).texts
    return out


def greedy_report(model, tokenizer, problems: list[dict]) -> dict:
    completions = generate(model, tokenizer, problems, do_sample=False)
    checks = [judge(c, p["answer"]) for c, p in zip(completions, problems)]
    ok = [c["strict"] for c in checks]
    carry = [has_carry(p["a"], p["b"]) for p in problems]
    n_carry = sum(carry)
    return {
        "accuracy": sum(ok) / len(ok),
        "accuracy_carry": sum(o for o, c in zip(ok, carry) if c) / max(1, n_carry),
        "accuracy_no_carry": sum(o for o, c in zip(ok, carry) if not c) / max(1, len(ok) - n_carry),
        "format_rate": sum(c["format"] for c in checks) / len(checks),
        "examples": completions[:3],
    }


def sampled_report(model, tokenizer, problems: list[dict], G: int, seed: int) -> dict:
    """Sampling at T = 1: mean accuracy, pass@G, and the fraction of groups of G with mixed outcomes."""
    completions = generate(model, tokenizer, problems, do_sample=True, G=G, batch_size=max(1, 2400 // G), seed=seed)
    k = [sum(judge(completions[i * G + j], p["answer"])["strict"] for j in range(G)) for i, p in enumerate(problems)]
    return {
        "sampled_accuracy": sum(k) / (G * len(problems)),
        f"pass@{G}": sum(ki > 0 for ki in k) / len(k),
        "mixed_group_fraction": sum(0 < ki < G for ki in k) / len(k),
        "all_wrong_group_fraction": sum(ki == 0 for ki in k) / len(k),
        "all_right_group_fraction": sum(ki == G for ki in k) / len(k),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    t0 = time.time()
    deterministic = set_determinism(args.seed, args.threads)
    tokenizer = build_char_tokenizer()
    config = tiny_qwen2_config(len(tokenizer))
    model = Qwen2ForCausalLM(config)  # random init from the seed above
    n_params = count_parameters(model)
    train, test = addition_problems("train", seed=None), addition_problems("test", seed=None)
    print(f"tiny Qwen2: {n_params:,} parameters; {len(train)} train / {len(test)} held-out problems; "
          f"drop_carry={args.drop_carry}, steps={args.steps}, seed={args.seed}, "
          f"deterministic algorithms: {deterministic}")

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    rng = random.Random(args.seed)  # draws the batches and the bias
    curve = []
    t_train = 0.0
    for step in range(args.steps):
        ts = time.time()
        model.train()
        input_ids, attention_mask, labels = sft_batch(rng.sample(train, args.batch_size), tokenizer, rng,
                                                      args.drop_carry, args.early_carry)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup_steps)
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        t_train += time.time() - ts
        last = step + 1 == args.steps
        if args.eval_every and ((step + 1) % args.eval_every == 0) and not last:
            acc = greedy_report(model, tokenizer, test)["accuracy"]
            curve.append({"step": step + 1, "loss": round(loss.item(), 4), "heldout_greedy_accuracy": acc})
            print(f"step {step + 1:4d}  loss {loss.item():.4f}  held-out greedy acc {acc:.3f}  "
                  f"({t_train:.0f} s training)", flush=True)

    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(pad_token_id=tokenizer.pad_token_id,
                                               eos_token_id=tokenizer.eos_token_id, max_new_tokens=40)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)

    # Every number below is measured on the saved files, loaded the way notebooks and the engine load them.
    model, tokenizer = load_tiny_model(out)
    greedy = greedy_report(model, tokenizer, test)
    curve.append({"step": args.steps, "loss": round(loss.item(), 4), "heldout_greedy_accuracy": greedy["accuracy"]})
    sampled = sampled_report(model, tokenizer, test, args.group_size, args.seed)
    info = {
        "model": "Qwen2ForCausalLM (random init) + zero-merge byte-level character tokenizer",
        "parameters": n_params,
        "vocab_size": len(tokenizer),
        "recipe": {
            "task": "a + b, a and b in 0..99; 9,700 train / 300 held-out test problems (grpo_lib.tasks)",
            "loss": "cross-entropy on completion tokens and the final <eos> only",
            "bias": "each drawn carry problem is taught without the carry with probability drop_carry; "
                    "each drawn problem whose ones column makes exactly 9 is taught a carry that is not due "
                    "with probability early_carry",
            "drop_carry": args.drop_carry,
            "early_carry": args.early_carry,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "optimizer": {"name": "AdamW", "lr": args.lr, "betas": [0.9, 0.98], "weight_decay": 0.01,
                          "schedule": f"linear warmup {args.warmup_steps} steps, cosine to 10% of lr",
                          "grad_clip": 1.0},
            "threads": args.threads,
        },
        "seed": args.seed,
        "heldout_greedy_accuracy": greedy["accuracy"],
        "heldout_greedy_accuracy_carry": greedy["accuracy_carry"],
        "heldout_greedy_accuracy_no_carry": greedy["accuracy_no_carry"],
        "heldout_format_rate": greedy["format_rate"],
        "heldout_sampled_T1": {"G": args.group_size, **sampled},
        "curve": curve,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__},
    }
    (out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    wall = time.time() - t0
    print(json.dumps({k: v for k, v in info.items() if k not in ("recipe", "curve")}, indent=2))
    print("greedy examples:", *greedy["examples"], sep="\n  ")
    print(f"wrote {out} in {wall:.0f} s ({t_train:.0f} s of warm-up training)")
    return info


if __name__ == "__main__":
    main()
