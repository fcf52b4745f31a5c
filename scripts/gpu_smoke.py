"""GPU check of the Qwen preset: Qwen2.5-1.5B-Instruct's exact architecture, random weights, no internet.

On one H100/H200 (at most 8 minutes, itself one of the checks), it runs the preset `qwen2.5-1.5b-gsm8k` end to
end with nothing downloaded, asserts what a working run must show, and ends with one PASS or FAIL line (exit
status 0 or 1):

1. builds Qwen2.5-1.5B-Instruct's architecture (grpo_lib.models.QWEN2_5_1_5B_INSTRUCT, written out in code)
   with random weights, and saves it with Qwen's real tokenizer (scripts/fetch_qwen_tokenizer.py);
2. trains 3 steps of the preset at its real batch and lengths (7 prompts x G = 12 per GPU, 400 new tokens,
   micro-batch 12, gradient checkpointing, mixed precision) on the local GSM8K files, evaluating 16 test
   problems before and after, with a checkpoint after step 2;
3. resumes from that checkpoint (π_ref rebuilt from the starting model) and runs the last step again;
4. prints the step split (generation / reference + rewards / update), generated tokens per second, the
   attention implementation and dtypes in use, and the peak GPU memory beside the planner's prediction
   (grpo_lib.course.memory.plan_for_run), and writes them to OUTPUT_DIR/smoke_report.json;
5. checks (`evaluate_checks`): loss and KL finite at every step; at least 99% of the weights with a gradient
   moved (fp32 master weights at lr 5e-6: pure bf16 would move a few percent); attention is
   flash_attention_2 when flash-attn imports on the GPU and sdpa otherwise; peak allocated memory within 15%
   of the planner's peak; the resumed last step reproduces the first run's last step exactly (rewards,
   lengths, loss, KL, entropy; grad norm to 1e-3, since flash-attn's backward sums in a non-fixed order);
   the whole check within 8 minutes. With --tiny (CPU) the memory and time checks do not apply and say so.

    python scripts/fetch_qwen_tokenizer.py            # once, where npm and the registry are reachable
    python scripts/gpu_smoke.py --data-dir ../shared/data/gsm8k
    python scripts/gpu_smoke.py --tiny                # CPU, seconds: the same path at tiny sizes (a test runs it)

A random model earns no GSM8K reward, so the run adds one arbitrary text score (`text_score`: the
characters' code points mod 7) that differs within a group: the advantages are then non-zero and the update
moves the weights. This checks speed, memory and the code path, not learning. Numbers are recorded in
docs/performance.md only once measured on a GPU, with the machine and the date.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from grpo_lib.config import GRPOConfig  # noqa: E402
from grpo_lib.data import build_prompt, load_problems  # noqa: E402
from grpo_lib.models import qwen2_5_1_5b_config  # noqa: E402
from grpo_lib.run import checkpoint  # noqa: E402
from grpo_lib.train import train  # noqa: E402

TINY_SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
"""--tiny: Qwen2.5-1.5B's architecture options at a size a CPU runs in seconds"""
GIB = 2**30
MIN_MOVED = 0.99          # share of the weights with a non-zero gradient that must change
MEMORY_TOLERANCE = 0.15   # |peak - planned| / planned
BUDGET_SECONDS = 8 * 60
EXACT_KEYS = ("reward", "completions/mean_length", "loss", "kl", "entropy")
"""what the resumed last step must reproduce bit for bit (its sampling and forward passes)"""


def text_score(completions, **kwargs) -> list[float]:
    """An arbitrary score that differs within a group (code points mod 7), so a random model gets gradients."""
    return [float(sum(map(ord, c[0]["content"])) % 7) for c in completions]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true",
                        help="CPU, tiny sizes and budget (the same code path in seconds; used by tests/test_gpu_smoke.py)")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "gsm8k"),
                        help="folder with GSM8K's train.jsonl and test.jsonl (default ../shared/data/gsm8k)")
    parser.add_argument("--tokenizer-dir", default=str(REPO / ".cache" / "qwen-tokenizer"),
                        help="Qwen tokenizer.json + tokenizer_config.json (scripts/fetch_qwen_tokenizer.py)")
    parser.add_argument("--output-dir", default=str(REPO / "runs" / "gpu-smoke"))
    parser.add_argument("--steps", type=int, default=3, help="training steps (a checkpoint after step steps-1)")
    parser.add_argument("--eval-n", type=int, default=16, help="GSM8K test problems evaluated before and after")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be >= 2 (a checkpoint after step steps-1, then a resumed last step)")
    for what, folder, files in (("--data-dir", args.data_dir, ("train.jsonl", "test.jsonl")),
                                ("--tokenizer-dir", args.tokenizer_dir, ("tokenizer.json", "tokenizer_config.json"))):
        missing = [f for f in files if not (Path(folder) / f).is_file()]
        if missing:
            hint = " (run: python scripts/fetch_qwen_tokenizer.py)" if what == "--tokenizer-dir" else ""
            parser.error(f"{what} {folder}: missing {', '.join(missing)}{hint}")
    return args


def smoke_config(args: argparse.Namespace, model_dir: Path, out: Path) -> GRPOConfig:
    """The preset, at its real batch and lengths (or tiny ones with --tiny), with a checkpoint before the last step."""
    tiny = dict(prompts_per_device=2, G=2, max_completion_length=8, micro_batch_size=2, eval_batch_size=2,
                device="cpu", num_threads=1) if args.tiny else {}
    return GRPOConfig.full(model=str(model_dir), data_dir=args.data_dir, steps=args.steps, eval_n=args.eval_n,
                           save_every=args.steps - 1, save_total_limit=2, save_dtype="bfloat16", report_to="none",
                           progress=False, log_every=1, output_dir=str(out / "run"), **tiny)


def build_model(args: argparse.Namespace, model_dir: Path) -> int:
    """Random Qwen2.5-1.5B (or tiny) saved with Qwen's tokenizer into model_dir; returns the parameter count."""
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    config = qwen2_5_1_5b_config(**(TINY_SIZES if args.tiny else {}))
    torch.manual_seed(0)
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    model.to(torch.bfloat16).save_pretrained(model_dir)           # bf16 on disk; training loads fp32 master weights
    AutoTokenizer.from_pretrained(args.tokenizer_dir).save_pretrained(model_dir)
    n = sum(p.numel() for p in model.parameters())
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return n


def planned_peak_gib(cfg: GRPOConfig, model_dir: Path) -> dict[str, float]:
    """The planner's per-GPU peaks for this run, with P = the longest training prompt the run can draw."""
    from transformers import AutoTokenizer

    from grpo_lib.course.memory import plan_for_run

    tok = AutoTokenizer.from_pretrained(model_dir)
    problems = load_problems("gsm8k", "train", data_dir=cfg.data_dir)[:2000]
    P = max(len(tok(build_prompt(tok, p["question"], cfg.system_prompt))["input_ids"]) for p in problems)
    config = qwen2_5_1_5b_config(**(TINY_SIZES if cfg.device == "cpu" else {}))
    plan = plan_for_run(cfg, config, prompt_len=P, world_size=1,
                        attention="flash_attention_2" if _flash_attn() else "sdpa")
    return {"prompt_len_P": P, "peak_gib": plan.peak_gib, "update_peak_gib": plan.update_peak_bytes / GIB,
            "generation_peak_gib": plan.generation_peak_bytes / GIB}


def _flash_attn() -> bool:
    from grpo_lib.models import flash_attn_available

    return flash_attn_available()


def step_table(history: list[dict], completions_per_step: int) -> list[dict]:
    keys = ("step", "generation_seconds", "scoring_seconds", "update_seconds", "step_seconds", "tokens_per_second",
            "completions/mean_length", "reward", "loss", "kl", "entropy", "grad_norm")
    rows = [{k: rec[k] for k in keys} for rec in history]
    for row in rows:   # tokens generated per second of generate() (tokens_per_second divides by the whole step)
        row["generated_tokens_per_second"] = (row["completions/mean_length"] * completions_per_step
                                              / max(row["generation_seconds"], 1e-9))
    return rows


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights on the CPU (so the copy takes no GPU memory during the measured run)."""
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters()}


def moved_share(before: dict[str, torch.Tensor], model: torch.nn.Module) -> float:
    """Share of the weights with a non-zero gradient (the last update's) whose value changed since `before`."""
    changed = total = 0
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        keep = p.grad != 0
        moved = p.detach() != before[name].to(p.device, p.dtype)
        changed += int((moved & keep).sum())
        total += int(keep.sum())
    return changed / total if total else 0.0


def flash_attn_imports() -> bool:
    """True when the `flash_attn` package imports on a CUDA machine (then the run must use flash_attention_2)."""
    if not torch.cuda.is_available():
        return False
    try:
        import flash_attn  # noqa: F401
    except Exception:
        return False
    return True


def evaluate_checks(report: dict, *, on_gpu: bool, flash_imports: bool) -> list[dict]:
    """The checks of one smoke run, from its report: [{"check", "ok" (True / False / None = not applicable), "detail"}].

    Used by `main`; tests/test_gpu_smoke.py feeds it reports with one fact wrong at a time.
    """
    steps, resumed = report["steps"], report["resumed_step"][0]
    last = steps[-1]
    finite = all(math.isfinite(r["loss"]) and math.isfinite(r["kl"]) for r in steps + [resumed])
    expected_attn = "flash_attention_2" if flash_imports else "sdpa"
    checks = [
        {"check": "loss and KL finite at every step", "ok": finite,
         "detail": ", ".join(f"step {r['step']}: loss {r['loss']:.4g}, kl {r['kl']:.4g}" for r in steps)},
        {"check": f"at least {MIN_MOVED:.0%} of the weights with a gradient moved", "ok": report["moved_share"] >= MIN_MOVED,
         "detail": f"{report['moved_share']:.2%}"},
        {"check": f"attention is {expected_attn} (flash-attn {'imports' if flash_imports else 'does not import'})",
         "ok": report["attn_implementation"] == expected_attn, "detail": report["attn_implementation"]},
    ]
    peak, planned = report["peak_allocated_gib"], report["planned"]["peak_gib"]
    if on_gpu and peak is not None:
        off = abs(peak - planned) / planned
        checks.append({"check": f"peak memory within {MEMORY_TOLERANCE:.0%} of the planner", "ok": off <= MEMORY_TOLERANCE,
                       "detail": f"measured {peak:.2f} GiB, planned {planned:.2f} GiB ({off:+.1%} off)"})
    else:
        checks.append({"check": f"peak memory within {MEMORY_TOLERANCE:.0%} of the planner", "ok": None,
                       "detail": "not measured (no GPU)"})
    same = [k for k in EXACT_KEYS if resumed[k] == last[k]]
    grad_close = math.isclose(resumed["grad_norm"], last["grad_norm"], rel_tol=1e-3)
    checks.append({"check": "the resumed run reproduces the last step", "ok": len(same) == len(EXACT_KEYS) and grad_close,
                   "detail": "; ".join(f"{k} {last[k]!r} vs {resumed[k]!r}" for k in (*EXACT_KEYS, "grad_norm"))})
    total = report["seconds"]["total"]
    checks.append({"check": f"within {BUDGET_SECONDS // 60} minutes", "ok": total <= BUDGET_SECONDS if on_gpu else None,
                   "detail": f"{total:.0f} s" + ("" if on_gpu else " (CPU dry run: the budget is for the GPU)")})
    return checks


def verdict(checks: list[dict]) -> str:
    """The last line: PASS, or FAIL naming the failed checks; checks that do not apply are named too."""
    failed = [c["check"] for c in checks if c["ok"] is False]
    skipped = [c["check"] for c in checks if c["ok"] is None]
    if failed:
        return f"FAIL: {'; '.join(failed)}"
    return "PASS" + (f" (not checked here: {'; '.join(skipped)})" if skipped else "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = out / "random-qwen2.5-1.5b" if not args.tiny else out / "random-qwen2.5-tiny"
    n_params = build_model(args, model_dir)
    cfg = smoke_config(args, model_dir, out)
    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    flash_imports = cuda and flash_attn_imports()
    from grpo_lib.rewards import reward_functions

    funcs = {**reward_functions(cfg.reward_funcs), "text_score": text_score}
    plan = planned_peak_gib(cfg, model_dir)
    build_seconds = time.perf_counter() - t0
    print(f"built {n_params:,}-parameter random Qwen2.5 in {build_seconds:.0f} s; planner: peak "
          f"{plan['peak_gib']:.1f} GiB (P = {plan['prompt_len_P']})", flush=True)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    from transformers import AutoModelForCausalLM

    before = snapshot(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32))  # as training loads it
    t1 = time.perf_counter()
    first = train(cfg, reward_funcs=funcs)
    first_seconds = time.perf_counter() - t1
    peak = torch.cuda.max_memory_allocated() / GIB if cuda else None
    reserved = torch.cuda.max_memory_reserved() / GIB if cuda else None
    moved = moved_share(before, first.model)
    del before
    first.model = None                                   # free the first run's GPU memory before the resumed run
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()

    ckpt = checkpoint.checkpoint_dir(cfg.output_dir, args.steps - 1)          # resume the last step from here
    t2 = time.perf_counter()
    resumed = train(cfg.replace(resume=str(ckpt), output_dir=str(out / "resumed")), reward_funcs=funcs)
    resume_seconds = time.perf_counter() - t2
    same_last_step = {k: (first.history[-1][k], resumed.history[-1][k]) for k in (*EXACT_KEYS, "grad_norm")}

    s = first.summary
    report = {
        "machine": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python scripts/gpu_smoke.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "versions": s["versions"], "parameters": n_params,
        "attn_implementation": s["attn_implementation"], "precision": s["precision"],
        "param_dtype": s["param_dtype"], "compute_dtype": s["compute_dtype"],
        "prompts_per_device": s["prompts_per_device"], "global_batch": s["global_batch"],
        "max_completion_length": cfg.max_completion_length, "micro_batch_size": cfg.micro_batch_size,
        "steps": step_table(first.history, s["global_batch"]),
        "resumed_step": step_table(resumed.history[-1:], s["global_batch"]),
        "resumed_equals_first": same_last_step, "moved_share": moved,
        "eval_n": s["eval_n"], "eval_seconds": [e["eval_seconds"] for e in first.evals],
        "peak_allocated_gib": peak, "peak_reserved_gib": reserved, "planned": plan,
        "seconds": {"build": build_seconds, "first_run": first_seconds, "resume": resume_seconds,
                    "total": time.perf_counter() - t0},
        "checkpoint": str(ckpt),
    }
    report["checks"] = evaluate_checks(report, on_gpu=cuda, flash_imports=flash_imports)
    report["verdict"] = verdict(report["checks"])
    (out / "smoke_report.json").write_text(json.dumps(report, indent=1))

    print(f"\n=== GPU smoke: {report['machine']} | {report['date']} ===")
    print(f"attention {report['attn_implementation']} | {report['precision']}: parameters {report['param_dtype']}, "
          f"compute {report['compute_dtype']} | {report['prompts_per_device']} prompts x G = {cfg.G} per GPU, "
          f"{cfg.max_completion_length} new tokens, micro-batch {cfg.micro_batch_size}")
    print(f"{'step':>4} {'generation s':>13} {'ref+rewards s':>14} {'update s':>9} {'step s':>7} "
          f"{'generated tok/s':>16}")
    for r in report["steps"] + [{**report["resumed_step"][0], "step": "res"}]:
        print(f"{r['step']:>4} {r['generation_seconds']:>13.2f} {r['scoring_seconds']:>14.2f} "
              f"{r['update_seconds']:>9.2f} {r['step_seconds']:>7.2f} {r['generated_tokens_per_second']:>16.0f}")
    if peak is not None:
        print(f"peak GPU memory: {peak:.1f} GiB allocated ({reserved:.1f} reserved) | planner: {plan['peak_gib']:.1f} "
              f"GiB (update {plan['update_peak_gib']:.1f}, generation {plan['generation_peak_gib']:.1f})")
    else:
        print(f"peak GPU memory: not measured (no GPU) | planner: {plan['peak_gib']:.3f} GiB")
    print(f"total {report['seconds']['total']:.0f} s (build {build_seconds:.0f}, {args.steps}-step run "
          f"{first_seconds:.0f}, resume {resume_seconds:.0f}); report in {out / 'smoke_report.json'}")
    for c in report["checks"]:
        mark = {True: "ok  ", False: "FAIL", None: "n/a "}[c["ok"]]
        print(f"[{mark}] {c['check']}: {c['detail']}")
    print(report["verdict"], flush=True)
    return 0 if report["verdict"].startswith("PASS") else 1


if __name__ == "__main__":
    sys.exit(main())
