"""grpo_lib.cli: one option per GRPOConfig field (built from the dataclass), presets, bad values that exit naming the
option, --help with paper symbols, `python -m grpo_lib` as a command, and the exit status of a failed run."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from grpo_lib.cli import build_arg_parser, main, parse_config
from grpo_lib.config import GRPOConfig, field_docs
from grpo_lib.models import TINY_MODEL_DIR

from conftest import REPO


def test_cli_overrides_any_field():
    cfg = parse_config(["--preset", "tiny", "--G", "4", "--max-completion-length", "20", "--eval_n", "none",
                        "--eval-n", "50", "--reward-funcs", "correctness,strict_format", "--gradient-checkpointing",
                        "true", "--lr", "1e-5", "--epsilon-high", "0.28", "--output-dir", "/tmp/x"])
    assert (cfg.G, cfg.max_completion_length, cfg.eval_n, cfg.lr, cfg.epsilon_high) == (4, 20, 50, 1e-5, 0.28)
    assert cfg.reward_funcs == ("correctness", "strict_format") and cfg.gradient_checkpointing is True
    assert cfg.output_dir == "/tmp/x" and cfg.steps == GRPOConfig.tiny().steps      # untouched fields keep the preset
    qwen = parse_config(["--preset", "qwen2.5-1.5b-gsm8k", "--data-dir", "../shared/data/gsm8k", "--system-prompt", "none"])
    assert qwen.G == 12 and qwen.data_dir == "../shared/data/gsm8k" and qwen.system_prompt is None


@pytest.mark.parametrize("argv, message", [
    (["--G", "1"], "G must be >= 2"),
    (["--G", "four"], "--G expects int"),
    (["--preset", "huge"], "invalid choice: 'huge'"),
    (["--gradient-checkpointing", "maybe"], "expects true or false"),
    (["--task", "addition", "--data-dir", "/tmp"], "data_dir is only used with task='gsm8k'"),
])
def test_cli_bad_values_exit_naming_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as err:
        parse_config(argv)
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def test_boolean_options_are_bare_flags_and_their_no_forms():
    assert parse_config(["--gradient-checkpointing", "--steps", "3"]).gradient_checkpointing is True
    assert parse_config(["--preset", "qwen2.5-1.5b-gsm8k", "--no-gradient-checkpointing"]).gradient_checkpointing is False
    assert parse_config(["--progress", "false"]).progress is False and parse_config(["--no-progress"]).progress is False


def test_a_yaml_recipe_is_loaded_and_the_command_line_wins(tmp_path, capsys):
    recipe = tmp_path / "run.yaml"
    recipe.write_text("preset: qwen2.5-1.5b-gsm8k\nprompts-per-device: 4\nlr: 1.0e-6\n"
                      "reward_funcs: [correctness]\ngradient_checkpointing: false\n")
    cfg = parse_config(["--config", str(recipe), "--lr", "2e-6"])
    assert cfg.preset == "qwen2.5-1.5b-gsm8k" and cfg.prompts_per_device == 4 and cfg.N is None
    assert cfg.lr == 2e-6 and cfg.reward_funcs == ("correctness",) and cfg.gradient_checkpointing is False
    assert parse_config(["--config", str(recipe), "--N", "8"]).N == 8        # N replaces the recipe's per-GPU count
    (tmp_path / "bad.yaml").write_text("learning_rate: 1e-6\n")
    with pytest.raises(SystemExit):
        parse_config(["--config", str(tmp_path / "bad.yaml")])
    assert "--config" in (err := capsys.readouterr().err) and "unknown option 'learning_rate'" in err
    with pytest.raises(SystemExit):
        parse_config(["--config", str(tmp_path / "missing.yaml")])
    assert "no such file" in capsys.readouterr().err


def test_help_shows_both_presets_values():
    text = " ".join(build_arg_parser().format_help().split())
    assert "(tiny: 16; qwen2.5-1.5b-gsm8k: none)" in text                       # --N
    assert "(tiny: none; qwen2.5-1.5b-gsm8k: 7)" in text                        # --prompts-per-device
    assert "(tiny: False; qwen2.5-1.5b-gsm8k: True)" in text                    # --gradient-checkpointing
    assert "--no-gradient-checkpointing" in text and "--config FILE.yaml" in text


def test_help_explains_options_with_paper_symbols():
    text = " ".join(build_arg_parser().format_help().split())   # undo line wrapping
    for expected in ("--G", "[G] group size G", "--epsilon", "[ε]", "[β]", "[μ]", "TRL calls this num_iterations",
                     "--num-iterations", "[I]", "π_ref ← π_θ", "--max-completion-length", "--report-to",
                     "qwen2.5-1.5b-gsm8k", "--data-dir"):
        assert expected in text, expected


# the documented command, and the older one (a second interpreter start-up: outside --quick)
@pytest.mark.parametrize("entry", ["grpo_lib", pytest.param("grpo_lib.train", marks=pytest.mark.slow)])
def test_module_help_runs_as_a_command(entry):
    out = subprocess.run([sys.executable, "-m", entry, "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: python -m grpo_lib [-h]")
    assert "--preset" in out.stdout and "[ε]" in out.stdout


def test_every_field_is_an_option_with_its_help_text():
    parser = build_arg_parser()
    options = {a.dest: a for a in parser._actions if not a.option_strings[0].startswith("--no-")}   # not the --no-X forms
    docs = field_docs()
    for f in dataclasses.fields(GRPOConfig):
        if f.name == "preset":
            continue
        assert f.name in options, f.name
        assert f"--{f.name.replace('_', '-')}" in options[f.name].option_strings
        assert docs[f.name].replace("%", "%%") in options[f.name].help, f.name
    assert set(docs) == {f.name for f in dataclasses.fields(GRPOConfig)}     # every field has a help text


@pytest.mark.filterwarnings("ignore:Unable to enable fault handler")   # torchrun's @record, under pytest's capture
def test_cli_exits_non_zero_on_a_nan_loss(tmp_path, monkeypatch, capsys):
    if not (TINY_MODEL_DIR / "model.safetensors").exists():
        pytest.skip(f"shipped tiny model not found at {TINY_MODEL_DIR}")
    monkeypatch.setenv("GRPO_LIB_FAULT", "nan@2")                        # test hook: NaN advantages at step 2
    rc = main(["--steps", "3", "--N", "2", "--G", "4", "--eval-n", "4", "--report-to", "none", "--progress", "false",
               "--save-every", "1", "--output-dir", str(tmp_path / "run")])
    assert rc == 1
    err = capsys.readouterr().err
    # grpo_loss refuses the NaN advantages before any NaN reaches the loss, the gradient or the weights
    message = ("training stopped at step 2 (the policy update): ValueError: advantages holds 8 non-finite value(s) "
               "at active positions (mask 1), the first nan at row 0; the loss would be NaN")
    assert f"\nerror: {message}" in err and "Traceback" not in err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["failed_step"] == 2 and summary["error"].startswith(message)
    assert summary["last_checkpoint"].endswith("step-000001")
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-000001"]


def test_the_readme_gpu_commands_give_the_batch_they_claim():
    """README: 1 GPU = 7 prompts = 84 completions per step; 8 GPUs = 56 prompts = 672 completions per step."""
    import re

    text = (REPO / "README.md").read_text()
    lines = [line for line in text.splitlines() if "-m grpo_lib --preset qwen2.5-1.5b-gsm8k" in line]
    assert len(lines) == 2, lines
    for line in lines:
        m = re.search(r"--nproc_per_node=(\d+)", line)
        world = int(m.group(1)) if m else 1
        cfg = parse_config(line.split("-m grpo_lib ", 1)[1].split())
        claimed = {1: "1 GPU: 7 prompts = 84 completions per step",
                   8: "8 GPUs: 8 x 7 = 56 prompts = 672 completions per step"}[world]
        assert claimed in text
        assert (cfg.N_per_rank(world), cfg.global_N(world), cfg.global_B(world)) == (7, 7 * world, 84 * world)
