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


@pytest.fixture(scope="session")
def gsm8k_dir() -> Path:
    """The GSM8K jsonl files that sit beside the project (never copied into it)."""
    if not (GSM8K_DIR / "train.jsonl").exists():
        pytest.skip(f"GSM8K jsonl not found at {GSM8K_DIR} (the course expects ../shared/data/gsm8k)")
    return GSM8K_DIR
