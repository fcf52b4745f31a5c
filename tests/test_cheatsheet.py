"""docs/cheatsheet.md names only what exists, and its equations are the library's.

Every `grpo_lib` function and `GRPOConfig` field the page names exists, every metric of its table is one the
engine logs (`grpo_lib.run.runlog.METRICS`), notebook 05 shows the page, and the loss written as the page writes it
(advantage, ratio, clip, k3, the four normalisations) equals `grpo_loss` on a small batch.
"""
import dataclasses
import re
from pathlib import Path

import pytest
import torch

import grpo_lib.advantages
from grpo_lib.config import GRPOConfig
import grpo_lib.logprobs
import grpo_lib.loss
import grpo_lib.rollout
from grpo_lib.run.runlog import METRICS
import grpo_lib.train

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "cheatsheet.md").read_text()
MODULES = (grpo_lib.advantages, grpo_lib.logprobs, grpo_lib.loss, grpo_lib.rollout, grpo_lib.train)


def test_every_named_function_and_config_field_exists():
    calls = set(re.findall(r"`([a-z_][a-z0-9_]*)\(", PAGE)) | set(re.findall(r"# ([a-z_]+)(?:\n| →)", PAGE))
    assert {"group_advantages", "grpo_loss", "kl_k3", "clipped_surrogate", "token_logprobs", "completion_mask",
            "generate_completions", "normalise_token_losses"} <= calls
    for name in calls - {"torch"}:
        assert any(hasattr(m, name) for m in MODULES), f"docs/cheatsheet.md names {name}, which grpo_lib lacks"
    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    named = set(re.findall(r"GRPOConfig\.([a-z_]+)", PAGE))
    assert named and named <= fields, named - fields
    for loss_type in grpo_lib.loss.LOSS_TYPES:
        assert f'`loss_type="{loss_type}"`' in PAGE or f'`"{loss_type}"`' in PAGE, loss_type


def test_every_metric_in_the_table_is_logged():
    rows = [line for line in PAGE.split("## Metrics to watch")[1].splitlines() if line.startswith("| `")]
    named = {m for row in rows for m in re.findall(r"`([a-z_/<>]+)`", row.split("|")[1])}
    expanded = set()
    for m in named:
        expanded |= {m} if not m.startswith("/") else {"clip_ratio" + m}
    assert expanded and expanded <= set(METRICS), expanded - set(METRICS)


def test_notebook_05_ends_with_the_page():
    source = (ROOT / "notebooks" / "src" / "05_full_run.py").read_text()
    assert "docs/cheatsheet.md" in source and source.index("docs/cheatsheet.md") > source.index("## Summary")


@pytest.mark.parametrize("loss_type", grpo_lib.loss.LOSS_TYPES)
def test_the_page_s_equations_are_grpo_loss(loss_type):
    g = torch.Generator().manual_seed(3)
    G, T, eps, beta, L_max = 4, 5, 0.2, 0.04, 6
    r = torch.tensor([[1.0, 0.0, 2.0, 0.0]])
    A = ((r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + 1e-4)).reshape(-1)      # the page's advantage
    assert torch.allclose(A, grpo_lib.advantages.group_advantages(r).reshape(-1))
    logp_old = -torch.rand(G, T, generator=g) * 2
    logp = (logp_old + torch.randn(G, T, generator=g) * 0.3).requires_grad_(True)
    logp_ref = logp_old - torch.rand(G, T, generator=g) * 0.1
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float32)
    rho = torch.exp(logp - logp_old)
    surrogate = torch.minimum(rho * A[:, None], rho.clamp(1 - eps, 1 + eps) * A[:, None])
    d = logp_ref - logp
    kl = d.exp() - d - 1                                               # π_ref/π_θ − log(π_ref/π_θ) − 1
    ell = -(surrogate - beta * kl)
    o_len = mask.sum(-1)
    by_page = {"grpo": ((ell * mask).sum(-1) / o_len).mean(), "bnpo": (ell * mask).sum() / o_len.sum(),
               "dr_grpo": (ell * mask).sum() / (G * L_max), "dapo": (ell * mask).sum() / o_len.sum()}[loss_type]
    loss, _ = grpo_lib.loss.grpo_loss(logp, logp_old, logp_ref, A, mask, epsilon=eps, beta=beta, loss_type=loss_type,
                                      max_completion_length=L_max)
    assert torch.allclose(loss, by_page, atol=1e-6)
