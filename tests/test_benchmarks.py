"""The benchmark scripts (benchmarks/) compute what they claim: correctness of the scripts, never speed.

Each script runs in its --quick configuration and its printed markdown table is parsed back. The checks
are properties that hold on any machine, however loaded: grpo_lib's log-probs need less peak memory
than the tutorial's full log_softmax and agree with it; the KV cache gives the same greedy tokens as no
cache; a step's phases add up to at most the step. Times are only checked to be positive.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))

from _common import cpu_peak_bytes, markdown_table  # noqa: E402

MIB = 2**20
GIB = 2**30


def run_script(name: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(BENCH / name), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every markdown table in text, as a list of {header: cell} rows."""
    out, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if block:
            header, sep, *rows = block
            assert all(set(c) <= set("- :") for c in sep), f"not a markdown separator row: {sep}"
            for row in rows:
                assert len(row) == len(header), f"row {row} has {len(row)} cells for header {header}"
            out.append([dict(zip(header, row)) for row in rows])
            block = []
    return out


def to_bytes(text: str) -> float:
    number, unit = text.split()
    return float(number) * {"MiB": MIB, "GiB": GIB}[unit]


def number(text: str) -> float:
    return float(re.match(r"[-+]?[\d.]+(e[-+]?\d+)?", text.replace(",", "")).group(0))


# --- helpers ---------------------------------------------------------------------------------------------
def test_tables_parser_reads_markdown_table_back():
    text = "intro\n" + markdown_table(["a", "b"], [[1, "x y"], [2.5, "z"]]) + "\ntrailer"
    assert tables(text) == [[{"a": "1", "b": "x y"}, {"a": "2.5", "b": "z"}]]
    with pytest.raises(ValueError, match="2 headers"):
        markdown_table(["a", "b"], [[1]])


def test_cpu_peak_sees_torch_allocations_and_not_earlier_ones():
    torch = pytest.importorskip("torch")
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc")
    held = torch.ones(64 * MIB // 4)                       # 64 MiB allocated *before*: not part of the peak

    def make_256_mib():
        x = torch.ones(256 * MIB // 4)                     # 256 MiB written, so resident
        return float(x[0])

    peak, how, seconds = cpu_peak_bytes(make_256_mib)
    assert held.numel() and seconds > 0
    if how != "VmHWM-VmRSS (reset)":
        pytest.skip(f"peak RSS cannot be reset here ({how})")
    assert 250 * MIB <= peak <= 300 * MIB, f"measured {peak / MIB:.0f} MiB for a 256 MiB tensor"
    peak_small, _, _ = cpu_peak_bytes(lambda: float(torch.ones(1000).sum()))
    assert peak_small < 16 * MIB


@pytest.mark.parametrize("script", ["bench_logprobs.py", "bench_kv_cache.py", "bench_step.py", "bench_vs_trl.py",
                                    "bench_threads.py"])
def test_help_documents_quick(script):
    proc = run_script(script, "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout and "usage:" in proc.stdout


def test_bad_options_name_the_option():
    proc = run_script("bench_logprobs.py", "--batch", "0")
    assert proc.returncode != 0 and "--batch must be >= 1" in proc.stderr
    proc = run_script("bench_kv_cache.py", "--lengths", "8,x")
    assert proc.returncode != 0 and "--lengths" in proc.stderr
    proc = run_script("bench_step.py", "--configs", "2by1")
    assert proc.returncode != 0 and "PROCESSESxTHREADS" in proc.stderr


# --- (a) log-probs ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def logprobs_output() -> str:
    proc = run_script("bench_logprobs.py", "--quick")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_logprobs_grpo_lib_needs_less_memory_and_agrees(logprobs_output):
    measured, full = tables(logprobs_output)
    rows = {(r["variant"].split()[0], r["mode"]): r for r in measured}
    assert set(rows) == {(v, m) for v in ("tutorial", "grpo_lib", "grpo_lib_chunked") for m in ("no_grad", "grad")}
    # quick shape: B = 4, P = 8, T = 24, V = 151,936, fp32, chunk 2 -> one logits tensor of each variant
    V = 151_936
    assert to_bytes(rows["tutorial", "no_grad"]["one logits tensor"]) == pytest.approx(4 * 32 * V * 4, rel=1e-3)
    assert to_bytes(rows["grpo_lib", "no_grad"]["one logits tensor"]) == pytest.approx(4 * 25 * V * 4, rel=1e-3)
    assert to_bytes(rows["grpo_lib_chunked", "no_grad"]["one logits tensor"]) == pytest.approx(2 * 25 * V * 4, rel=1e-3)
    for mode in ("no_grad", "grad"):
        tut, lib, chunked = (to_bytes(rows[v, mode]["peak memory"])
                             for v in ("tutorial", "grpo_lib", "grpo_lib_chunked"))
        assert lib < tut, f"{mode}: grpo_lib peak {lib} not below the tutorial's {tut}"
        assert chunked < tut
        for v in ("tutorial", "grpo_lib", "grpo_lib_chunked"):
            assert number(rows[v, mode]["max abs diff vs tutorial"]) < 1e-4       # same log-probs
            assert number(rows[v, mode]["median ms"]) > 0
    peak = {v: to_bytes(rows[v, "no_grad"]["peak memory"]) for v in ("grpo_lib", "grpo_lib_chunked")}
    assert peak["grpo_lib_chunked"] < peak["grpo_lib"]                # chunks cut the no-grad peak
    # the measurement sees torch's tensors: under no_grad the peak holds at least one logits tensor
    for v in ("tutorial", "grpo_lib", "grpo_lib_chunked"):
        assert 1.0 <= number(rows[v, "no_grad"]["peak / logits"]) < 4.0
    # the full-shape arithmetic: 84 rows x (100 + 400) positions x 151,936 x 4 bytes = 23.77 GiB
    tutorial_full = full[0]
    assert tutorial_full["elements"] == "84 × 500 × 151,936"
    assert number(tutorial_full["fp32"]) == pytest.approx(84 * 500 * V * 4 / GIB, abs=0.01)
    assert number(tutorial_full["bf16"]) == pytest.approx(84 * 500 * V * 2 / GIB, abs=0.01)


# --- (c) KV cache ----------------------------------------------------------------------------------------
def test_kv_cache_gives_identical_greedy_tokens():
    proc = run_script("bench_kv_cache.py", "--quick")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rows,) = tables(proc.stdout)
    assert len(rows) == 3                                            # tiny policy + 2 lengths (8, 32)
    tiny, *random_rows = rows
    assert tiny["model"].startswith("tiny policy") and random_rows[0]["model"].startswith("random")
    for r in rows:
        assert r["identical greedy tokens"] == "yes", r
        assert number(r["no cache tok/s"]) > 0 and number(r["KV cache tok/s"]) > 0
    assert 0 < int(tiny["tokens"]) <= 8 * 40                          # stops at EOS, at most 40 new tokens per row
    for r, n in zip(random_rows, (8, 32)):
        assert int(r["new tokens n"]) == n and int(r["tokens"]) == 4 * n   # no EOS: every row runs n tokens
        speedup = number(r["speed-up"])
        assert speedup == pytest.approx(number(r["KV cache tok/s"]) / number(r["no cache tok/s"]), rel=0.05)


# --- (b) one GRPO step -----------------------------------------------------------------------------------
def check_step_table(output: str, config: str) -> None:
    seconds, per_phase, floor = tables(output)
    (row,) = seconds
    assert row["processes × threads"] == config
    phases = {k: number(v) for k, v in row.items() if k.endswith(" ms") and k != "step ms"}
    assert len(phases) == 4 and all(v >= 0 for v in phases.values())
    assert phases["generation ms"] > 0 and phases["update (fwd+bwd+AdamW) ms"] > 0
    step = number(row["step ms"]) / 1000
    assert sum(phases.values()) / 1000 <= step * 1.01 + 0.002         # the phases are parts of the step
    tokens = number(row["tokens"])
    assert 0 < tokens <= 4 * 4 * 40                                   # quick: N = 4 prompts x G = 4, <= 40 tokens
    assert number(row["tokens/s"]) == pytest.approx(tokens / step, rel=0.02, abs=1)
    assert len(per_phase) == 1
    assert number(per_phase[0]["generation"]) == pytest.approx(tokens / (phases["generation ms"] / 1000), rel=0.02)
    # the compute floor: 2 FLOP per Linear weight per position and forward pass, a backward = 2 forwards
    weights = float(re.search(r"([\d.]+) M Linear weights", output).group(1)) * 1e6
    positions = float(re.search(r"(\d+) positions per pass", output).group(1))
    assert positions >= tokens                                        # every completion token, plus the prompts
    passes = {"generation": 1, "scoring (rewards, A)": 0, "ref/old log-probs": 1,   # tiny: beta > 0, mu = 1
              "update (fwd+bwd+AdamW)": 3, "**step**": 5}
    assert [r["phase"] for r in floor] == list(passes) and {r["processes × threads"] for r in floor} == {config}
    for r in floor:
        assert int(r["forward passes"]) == passes[r["phase"]]
        gflop = 2 * weights * positions * passes[r["phase"]] / 1e9
        assert number(r["GFLOP"]) == pytest.approx(gflop, rel=0.02, abs=0.06)
        ms = number(r["ms"])
        assert ms == pytest.approx(phases.get(f"{r['phase']} ms", step * 1000), abs=0.11)   # the same times
        if passes[r["phase"]]:
            assert number(r["GFLOP/s"]) == pytest.approx(number(r["GFLOP"]) / (ms / 1000), rel=0.1, abs=0.2)
            assert number(r["share of the matmul ceiling"]) > 0


def test_step_one_process():
    proc = run_script("bench_step.py", "--quick")
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_step_table(proc.stdout, "1 × 1")


@pytest.mark.slow
def test_step_two_processes_under_torchrun():
    proc = run_script("bench_step.py", "--quick", "--configs", "2x1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_step_table(proc.stdout, "2 × 1")


# --- (d) grpo_lib's step vs TRL's ---------------------------------------------------------------------------
def test_vs_trl_quick_reports_ratio_spread_and_accuracy():
    from grpo_lib.trl.compare import INSTALL_HINT, trl_available

    if not trl_available():
        if os.environ.get("GRPO_REQUIRE_TRL") == "1":
            pytest.fail(f"GRPO_REQUIRE_TRL=1 but {INSTALL_HINT}", pytrace=False)
        pytest.skip(INSTALL_HINT)
    proc = run_script("bench_vs_trl.py", "--quick", "--defaults")       # each trainer at its own default threads
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "grpo_lib at its default" in proc.stdout and "TRL at torch's default" in proc.stdout
    (steps_table,), (ratio_table,) = [t for t in tables(proc.stdout) if len(t) == 2], \
        [t for t in tables(proc.stdout) if len(t) == 1]
    rows = {r["trainer"]: r for r in steps_table}
    assert set(rows) == {"grpo_lib", "TRL"}
    for r in rows.values():
        assert 0 < number(r["min s"]) <= number(r["median s/step"]) <= number(r["max s"])
        assert 0 <= number(r["held-out acc before"]) <= 100 and 0 <= number(r["after 4 steps"]) <= 100
    # both start from the same shipped model, evaluated on the same problems
    assert rows["grpo_lib"]["held-out acc before"] == rows["TRL"]["held-out acc before"]
    ratio = ratio_table[0]
    assert int(ratio["pairs"]) == 3                                      # 4 steps, the first is a warm-up
    lo, hi = (float(x) for x in ratio["min-max"].split("-"))
    assert 0 < lo <= float(ratio["median ratio"]) <= hi
    medians = number(rows["TRL"]["median s/step"]) / number(rows["grpo_lib"]["median s/step"])
    assert float(ratio["ratio of medians"]) == pytest.approx(medians, abs=0.02)
    assert "load average at start" in proc.stdout and "load average at end" in proc.stdout


def test_vs_trl_defaults_and_threads_exclude_each_other():
    proc = run_script("bench_vs_trl.py", "--quick", "--defaults", "--threads", "2")
    assert proc.returncode != 0 and "leave out --threads" in proc.stderr


# --- (e) thread layouts -----------------------------------------------------------------------------------------
def test_threads_quick_runs_the_default_layout_and_reports_threads_used():
    proc = run_script("bench_threads.py", "--quick")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (table,) = tables(proc.stdout)
    (row,) = table
    assert row["layout (P x T)"] == "auto" and row["machine"] == "idle"
    lo, hi = (number(x) for x in row["min-max ms"].split("-"))
    assert 0 < lo <= number(row["step ms"]) <= hi
    used = re.findall(r"(\d+) steps at (\d+)", row["threads used (auto)"])
    assert sum(int(n) for n, _ in used) == 2                           # --quick: 2 steps, each at some count
    assert "load average at start" in proc.stdout and "load average at end" in proc.stdout


def test_threads_bad_layout_is_named():
    proc = run_script("bench_threads.py", "--layouts", "1x3")
    assert proc.returncode != 0 and "1x3" in proc.stderr
