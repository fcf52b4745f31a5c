"""GPU smoke test of the Qwen preset: Qwen2.5-1.5B-Instruct's exact architecture, random weights, no internet.

On one H100/H200 (target: under 8 minutes), it runs the preset `qwen2.5-1.5b-gsm8k` end to end with nothing
downloaded:

1. builds Qwen2.5-1.5B-Instruct's architecture (grpo_lib.models.QWEN2_5_1_5B_INSTRUCT, written out in code)
   with random weights, and saves it with Qwen's real tokenizer (scripts/fetch_qwen_tokenizer.py);
2. trains 3 steps of the preset at its real batch and lengths (7 prompts x G = 12 per GPU, 400 new tokens,
   micro-batch 12, gradient checkpointing, mixed precision) on the local GSM8K files, evaluating 16 test
   problems before and after, with a checkpoint after step 2;
3. resumes from that checkpoint (π_ref rebuilt from the starting model) and runs the last step again;
4. prints the step split (generation / reference + rewards / update), tokens per second, the attention
   implementation and dtypes in use, and the peak GPU memory beside the planner's prediction
   (grpo_lib.course.memory.plan_for_run), and writes them to OUTPUT_DIR/smoke_report.json.

    python scripts/fetch_qwen_tokenizer.py            # once, where npm and the registry are reachable
    python scripts/gpu_smoke.py --data-dir ../shared/data/gsm8k
    python scripts/gpu_smoke.py --tiny                # CPU, seconds: the same path at tiny sizes (a test runs it)

A random model earns no GSM8K reward, so its advantages are 0 and the update moves nothing but the KL term:
this measures speed, memory and the code path, not learning. Numbers are recorded in docs/performance.md
only once measured on a GPU, with the machine and the date.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from grpo_lib import checkpoint  # noqa: E402
from grpo_lib.config import GRPOConfig  # noqa: E402
from grpo_lib.data import build_prompt, load_problems  # noqa: E402
from grpo_lib.models import qwen2_5_1_5b_config  # noqa: E402
from grpo_lib.train import train  # noqa: E402

TINY_SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
"""--tiny: Qwen2.5-1.5B's architecture options at a size a CPU runs in seconds"""
GIB = 2**30


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


def step_table(history: list[dict]) -> list[dict]:
    keys = ("step", "generation_seconds", "scoring_seconds", "update_seconds", "step_seconds", "tokens_per_second",
            "completions/mean_length", "kl", "entropy")
    return [{k: rec[k] for k in keys} for rec in history]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = out / "random-qwen2.5-1.5b" if not args.tiny else out / "random-qwen2.5-tiny"
    n_params = build_model(args, model_dir)
    cfg = smoke_config(args, model_dir, out)
    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    plan = planned_peak_gib(cfg, model_dir)
    build_seconds = time.perf_counter() - t0
    print(f"built {n_params:,}-parameter random Qwen2.5 in {build_seconds:.0f} s; planner: peak "
          f"{plan['peak_gib']:.1f} GiB (P = {plan['prompt_len_P']})", flush=True)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t1 = time.perf_counter()
    first = train(cfg)
    first_seconds = time.perf_counter() - t1
    peak = torch.cuda.max_memory_allocated() / GIB if cuda else None
    reserved = torch.cuda.max_memory_reserved() / GIB if cuda else None

    ckpt = checkpoint.checkpoint_dir(cfg.output_dir, args.steps - 1)          # resume the last step from here
    t2 = time.perf_counter()
    resumed = train(cfg.replace(resume=str(ckpt), output_dir=str(out / "resumed")))
    resume_seconds = time.perf_counter() - t2
    same_last_step = {k: (first.history[-1][k], resumed.history[-1][k]) for k in ("reward", "kl", "loss")}

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
        "steps": step_table(first.history), "resumed_step": step_table(resumed.history[-1:]),
        "resumed_equals_first": same_last_step,
        "eval_n": s["eval_n"], "eval_seconds": [e["eval_seconds"] for e in first.evals],
        "peak_allocated_gib": peak, "peak_reserved_gib": reserved, "planned": plan,
        "seconds": {"build": build_seconds, "first_run": first_seconds, "resume": resume_seconds,
                    "total": time.perf_counter() - t0},
        "checkpoint": str(ckpt),
    }
    (out / "smoke_report.json").write_text(json.dumps(report, indent=1))

    print(f"\n=== GPU smoke: {report['machine']} | {report['date']} ===")
    print(f"attention {report['attn_implementation']} | {report['precision']}: parameters {report['param_dtype']}, "
          f"compute {report['compute_dtype']} | {report['prompts_per_device']} prompts x G = {cfg.G} per GPU, "
          f"{cfg.max_completion_length} new tokens, micro-batch {cfg.micro_batch_size}")
    print(f"{'step':>4} {'generation s':>13} {'ref+rewards s':>14} {'update s':>9} {'step s':>7} {'tok/s':>8}")
    for r in report["steps"] + [{**report["resumed_step"][0], "step": "res"}]:
        print(f"{r['step']:>4} {r['generation_seconds']:>13.2f} {r['scoring_seconds']:>14.2f} "
              f"{r['update_seconds']:>9.2f} {r['step_seconds']:>7.2f} {r['tokens_per_second']:>8.0f}")
    if peak is not None:
        print(f"peak GPU memory: {peak:.1f} GiB allocated ({reserved:.1f} reserved) | planner: {plan['peak_gib']:.1f} "
              f"GiB (update {plan['update_peak_gib']:.1f}, generation {plan['generation_peak_gib']:.1f})")
    else:
        print(f"peak GPU memory: not measured (no GPU) | planner: {plan['peak_gib']:.3f} GiB")
    print(f"resumed last step vs first run's: {same_last_step}")
    print(f"total {report['seconds']['total']:.0f} s (build {build_seconds:.0f}, 3-step run {first_seconds:.0f}, "
          f"resume {resume_seconds:.0f}); report in {out / 'smoke_report.json'}")
    if not args.tiny and report["seconds"]["total"] > 8 * 60:
        print("WARNING: over the 8-minute budget", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
