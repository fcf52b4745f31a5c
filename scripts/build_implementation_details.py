"""Write docs/implementation-details.md: every numbered "Choices made here" of grpo_lib, in one page.

    python scripts/build_implementation_details.py           # rewrite the page
    python scripts/build_implementation_details.py --check   # exit 1 when the committed page is stale

The choices are written once, in the docstring of the module that implements them (next to the code, where
a change is made); this page is generated from them, in the order one training step goes through the
modules, each choice linked to the line of its module where it is written, to the line of each function it
names (CleanRL links each detail to its line), and to the notebook that shows it (or the tests that check
it). tests/test_implementation_details.py fails when the page is stale.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "implementation-details.md"

ORDER = [
    ("config.py", "The run's settings"),
    ("data.py", "Prompts and data"),
    ("tasks.py", "The tiny addition task"),
    ("tokenizer.py", "The tiny model's tokenizer"),
    ("models.py", "The policy model"),
    ("rollout.py", "Sampling G completions per prompt"),
    ("sampling.py", "The decoding loop (generate()'s tokens, one prompt pass per group)"),
    ("rewards.py", "Rewards"),
    ("advantages.py", "Group-relative advantages"),
    ("logprobs.py", "Per-token log-probabilities"),
    ("loss.py", "The GRPO loss"),
    ("dynamic_sampling.py", "DAPO's dynamic sampling"),
    ("sampler.py", "A perturbed sampler: the sampler-trainer mismatch without vLLM"),
    ("lora.py", "LoRA through peft"),
    ("train.py", "The training loop (DeepSeekMath Algorithm 1)"),
    ("run/lifecycle.py", "The run around the steps (start, record, finish)"),
    ("precision.py", "Mixed precision"),
    ("dist.py", "Many processes (torchrun, DDP)"),
    ("threads.py", "CPU threads"),
    ("evaluation.py", "Evaluation"),
    ("run/checkpoint.py", "Checkpoints and resume"),
    ("run/rundir.py", "The output folder"),
    ("run/failures.py", "How a run fails"),
    ("runcache.py", "Reusing a finished run within one test session"),
    ("run/runlog.py", "Metrics, files and W&B"),
    ("toy.py", "The 2 + 3 toy of notebook 01"),
    ("course/memory.py", "Memory accounting (course wing)"),
    ("course/widgets.py", "Sliders (course wing)"),
    ("course/gallery.py", "The gallery of failing runs (course wing)"),
    ("course/post_r1.py", "Measured runs of the post-R1 variants (course wing)"),
    ("course/evaluation.py", "Sampled evaluation, pass@k and maj@k (course wing)"),
    ("trl/compare.py", "Golden comparison with TRL's GRPOTrainer"),
    ("trl/recipe.py", "The same run on TRL"),
]
CODE = {   # (module, item) -> the functions that implement it, where the item's text names none of them
    ("course/gallery.py", 1): ["GallerySpec", "SPECS", "config_diff"], ("course/gallery.py", 2): ["EXTRA_METRICS", "run_spec"],
    ("course/gallery.py", 4): ["SPECS"], ("course/gallery.py", 5): ["run_spec", "load_run"],
    ("course/post_r1.py", 1): ["Experiment", "EXPERIMENTS", "regenerate"],
    ("course/post_r1.py", 2): ["EXTRA_METRICS", "distinct_per_group"], ("course/post_r1.py", 3): ["run_arm_fresh"],
    ("course/post_r1.py", 5): ["accuracy_at_budget"], ("course/post_r1.py", 7): ["EXPERIMENTS"],
    ("course/post_r1.py", 8): ["MISMATCH_NOISE"], ("course/post_r1.py", 9): ["run_arm"],
    ("precision.py", 1): ["resolve_precision", "Precision"], ("precision.py", 2): ["Precision"],
    ("precision.py", 3): ["Precision"], ("precision.py", 4): ["resolve_precision"],
    ("config.py", 1): ["GRPOConfig"], ("config.py", 3): ["B", "total_steps", "N_per_rank", "replace"],
    ("config.py", 4): ["__post_init__", "N_per_rank"], ("config.py", 6): ["_tiny_preset", "from_preset"],
    ("data.py", 1): ["load_gsm8k"], ("data.py", 2): ["build_prompt"], ("data.py", 3): ["prompts_for_step"],
    ("tasks.py", 2): ["reasoning_for", "answer_for"],
    ("tokenizer.py", 1): ["build_char_tokenizer"], ("tokenizer.py", 2): ["bytes_to_unicode", "char_vocab"],
    ("tokenizer.py", 3): ["char_vocab"], ("tokenizer.py", 4): ["build_char_tokenizer"],
    ("tokenizer.py", 5): ["build_char_tokenizer"], ("tokenizer.py", 6): ["build_char_tokenizer"],
    ("models.py", 1): ["tiny_qwen2_config"], ("models.py", 3): ["load_policy", "pick_attn_implementation"],
    ("models.py", 4): ["ensure_pad_token"], ("models.py", 5): ["load_tiny_model", "load_policy"],
    ("rollout.py", 1): ["generate_completions"], ("rollout.py", 2): ["generate_completions"],
    ("rollout.py", 3): ["generate_completions"], ("rollout.py", 4): ["generation_mode"],
    ("rollout.py", 5): ["decode_completions"], ("rollout.py", 6): ["_raise_for_failing_completion"],
    ("rollout.py", 7): ["score_rollout"],
    ("rewards.py", 2): ["parse_number"], ("rewards.py", 3): ["numbers_equal"], ("rewards.py", 5): ["_texts"],
    ("rewards.py", 7): ["extract_answer_from_model_output", "parse_number"],
    ("advantages.py", 1): ["group_advantages"], ("advantages.py", 2): ["group_advantages"],
    ("advantages.py", 5): ["_as_rewards"],
    ("logprobs.py", 1): ["token_logprobs"], ("logprobs.py", 3): ["token_logprobs"],
    ("logprobs.py", 4): ["position_ids_from_mask"], ("logprobs.py", 5): ["completion_mask"],
    ("loss.py", 1): ["kl_k3"], ("loss.py", 2): ["clipped_surrogate"],
    ("loss.py", 4): ["normalise_token_losses", "grpo_loss"], ("loss.py", 5): ["grpo_loss"],
    ("loss.py", 6): ["grpo_loss"], ("loss.py", 7): ["grpo_loss"],
    ("train.py", 1): ["train", "policy_update"], ("train.py", 2): ["sampling_seed"], ("train.py", 3): ["train"],
    ("train.py", 4): ["train"], ("train.py", 5): ["train"], ("train.py", 6): ["train"], ("train.py", 7): ["train"],
    ("train.py", 8): ["train", "policy_update"],
    ("run/lifecycle.py", 1): ["Run"], ("run/lifecycle.py", 3): ["parse_faults", "inject_fault"],
    ("dist.py", 1): ["env_rank", "launched_by_torchrun"], ("dist.py", 2): ["init_distributed", "resolve_device"],
    ("dist.py", 6): ["all_reduce_metrics"],
    ("evaluation.py", 1): ["evaluate"], ("evaluation.py", 2): ["evaluate"], ("evaluation.py", 3): ["judge"],
    ("evaluation.py", 5): ["evaluate"],
    ("run/checkpoint.py", 1): ["save_checkpoint", "find_checkpoint"], ("run/checkpoint.py", 2): ["Checkpoint"],
    ("run/checkpoint.py", 3): ["save_checkpoint", "rng_state"], ("run/checkpoint.py", 4): ["save_checkpoint", "resume"],
    ("run/checkpoint.py", 6): ["file_sha256", "resolve_checkpoint"],
    ("run/rundir.py", 1): ["check_writable", "prepare_output_dir"], ("run/rundir.py", 2): ["prepare_output_dir", "clear_run"],
    ("run/rundir.py", 3): ["prepare_output_dir"],
    ("run/failures.py", 1): ["FailureRecorder", "RunFailed"], ("run/failures.py", 2): ["parameters_finite", "logits_finite"],
    ("run/failures.py", 3): ["RunFailed"], ("run/failures.py", 4): ["known_error"],
    ("run/runlog.py", 2): ["init_wandb", "wandb_logged_in"], ("run/runlog.py", 3): ["RunLog"],
    ("run/runlog.py", 4): ["write_summary"],
    ("toy.py", 1): ["ToyPolicy"], ("toy.py", 3): ["grpo_step"], ("toy.py", 4): ["grpo_step"],
    ("course/memory.py", 1): ["training_memory_table"], ("course/memory.py", 2): ["count_parameters_from_config"],
    ("course/memory.py", 3): ["training_memory_table"], ("course/memory.py", 5): ["GIB"],
    ("course/widgets.py", 1): ["_slider"], ("course/widgets.py", 2): ["epsilon_slider", "beta_slider"],
    ("course/widgets.py", 3): ["FigureSlider", "figure_output"], ("course/widgets.py", 4): ["FigureSlider"],
    ("course/widgets.py", 5): ["epsilon_slider"],
    ("threads.py", 1): ["usable_cores", "start_threads"], ("threads.py", 2): ["threads_for", "ThreadGovernor"],
    ("runcache.py", 1): ["reusable", "cache_dir"], ("runcache.py", 2): ["run_key", "reusable"],
    ("runcache.py", 3): ["load", "store"], ("runcache.py", 4): ["job_folder", "job_key", "load_job", "store_job"],
    ("sampling.py", 1): ["sample_tokens"], ("sampling.py", 2): ["sample_tokens"], ("sampling.py", 3): ["sample_tokens"],
    ("sampling.py", 4): ["sample_tokens"],
    ("trl/compare.py", 1): ["make_trainer", "trl_loss"], ("trl/compare.py", 2): ["trl_loss"],
    ("trl/compare.py", 3): ["make_batch"],
    ("trl/recipe.py", 1): ["trl_args"], ("trl/recipe.py", 2): ["trl_args"], ("trl/recipe.py", 3): ["trl_args"],
    ("trl/recipe.py", 4): ["train_with_trl"], ("trl/recipe.py", 5): ["main"],
    ("trl/recipe.py", 6): ["trl_args", "train_with_trl"], ("trl/recipe.py", 7): ["check_no_weight_sharding"],
    ("trl/recipe.py", 8): ["trl_args"],
    ("dynamic_sampling.py", 3): ["sample_groups"], ("dynamic_sampling.py", 4): ["sample_groups"],
    ("dynamic_sampling.py", 6): ["METRICS", "sample_groups"],
    ("sampler.py", 4): ["sampler_correction"], ("sampler.py", 5): ["_combine_over_ranks"],
    ("lora.py", 2): ["apply_lora"],
}
HEADER = """# Implementation details

Every choice grpo_lib makes where GRPO implementations differ (the std in the advantage, how the loss is
averaged, what the mask keeps, how many processes agree on a batch, ...), numbered per module, in the order
one training step goes through the modules. Each links to the line where it is written, to the line of each
function that implements it, and to the notebook that shows it (or the tests that check it). The model is
CleanRL's implementation-details pages.

This page is generated from the "Choices made here" list in each module's docstring, which is where a choice
is changed: `python scripts/build_implementation_details.py` rewrites it, and
`tests/test_implementation_details.py` fails while it is stale.
"""


def choices(module: Path) -> tuple[str, list[str]]:
    """(the header's parenthesis, the numbered items) of a module's "Choices made here" section."""
    doc = ast.get_docstring(ast.parse(module.read_text(encoding="utf-8"))) or ""
    found = re.search(r"Choices made here(.*?):\n(.*)", doc, re.S)
    if not found:
        raise SystemExit(f"{module}: no 'Choices made here' section in the module docstring")
    header, body = " ".join(found.group(1).split()), found.group(2)
    items: list[list[str]] = []
    for line in body.split("\n"):
        if re.match(r"\d+\. ", line):
            items.append([line.split(". ", 1)[1].strip()])
        elif items and line.startswith("   ") and line.strip():
            text = line.strip()
            items[-1].append(("\n   " if text.startswith("- ") else " ") + text)
        elif items and not line.strip():
            break
    return header, ["".join(parts) for parts in items]


def defined_names(module: Path) -> dict[str, int]:
    """name -> the line it is defined on: the module's functions, classes and assignments, then nested ones."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    names: dict[str, int] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.setdefault(node.name, node.lineno)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    names.setdefault(target.id, node.lineno)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.setdefault(node.name, node.lineno)
    return names


def choice_lines(module: Path) -> dict[int, int]:
    """item number -> the line of the module where its text starts (in the "Choices made here" list)."""
    lines = module.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if "Choices made here" in line)
    found: dict[int, int] = {}
    for i in range(start + 1, len(lines)):
        m = re.match(r"(\d+)\. ", lines[i])
        if m:
            found.setdefault(int(m.group(1)), i + 1)
        elif found and not lines[i].strip():
            break
    return found


def where_shown(header: str, number: int) -> list[str]:
    """The notebooks (or tests) the header says show item `number`, as markdown links from docs/."""
    ranges = re.findall(r"(\d+)-(\d+) (?:shown|tested) in ([^;]+)", header)
    text = header
    for low, high, part in ranges:
        if int(low) <= number <= int(high):
            text = part
            break
    paths = re.findall(r"((?:notebooks|tests)/[\w./]+?\.(?:ipynb|py))", text)
    return [f"[{p}](../{p})" for p in dict.fromkeys(paths)]


def build() -> str:
    out = [HEADER]
    for rel, title in ORDER:
        module = REPO / "grpo_lib" / rel
        header, items = choices(module)
        names, lines = defined_names(module), choice_lines(module)
        link = f"../grpo_lib/{rel}"
        out.append(f"## {title}: [grpo_lib/{rel}]({link})\n")
        for k, item in enumerate(items, 1):
            named = [n for n in dict.fromkeys(re.findall(r"`(\w+)(?:\(|`)", item)) if n in names]
            named = named or CODE.get((rel, k), [])
            missing = [n for n in named if n not in names]
            if missing:
                raise SystemExit(f"grpo_lib/{rel}: choice {k} names {missing}, which the module does not define")
            code = f"[grpo_lib/{rel}#L{lines[k]}]({link}#L{lines[k]})" + (
                ": " + ", ".join(f"[`{n}`]({link}#L{names[n]})" for n in named) if named else "")
            shown = ", ".join(where_shown(header, k)) or "—"
            out.append(f"{k}. {item}\n\n   *Code:* {code}. *Shown in:* {shown}.\n")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/implementation-details.md is stale")
    args = parser.parse_args(argv)
    text = build()
    if args.check:
        if not PAGE.exists() or PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE.relative_to(REPO)} is stale: run python scripts/build_implementation_details.py")
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
