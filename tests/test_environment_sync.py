"""environment.yml (conda) and pyproject.toml (pip) must list the same requirements."""
import re
import tomllib

import yaml

from conftest import REPO


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = data["project"]
    return project["dependencies"], project["optional-dependencies"]


def _conda_pip_and_comments():
    text = (REPO / "environment.yml").read_text()
    env = yaml.safe_load(text)
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    commented = re.findall(r"^\s*#\s*-\s*(\S+)", text, flags=re.M)
    return pip, commented


def test_core_dev_and_trl_requirements_match_exactly():
    core, extras = _pyproject()
    pip, _ = _conda_pip_and_comments()
    assert sorted(pip) == sorted(core + extras["dev"] + extras["trl"]), "environment.yml pip list differs from pyproject"


def test_trl_is_pinned_and_installed_by_the_test_command():
    _, extras = _pyproject()
    assert extras["trl"] == ["trl==1.16.0"]
    dev_sh = (REPO / "scripts" / "dev.sh").read_text()
    assert 'pip install -q -e ".[dev,trl]"' in dev_sh
    ci = (REPO / ".ci" / "run").read_text()
    assert "export GRPO_REQUIRE_TRL=1" in ci, "CI must fail, not skip, when the TRL golden tests cannot run"


def test_gpu_extra_is_listed_but_not_installed_by_conda():
    _, extras = _pyproject()
    pip, commented = _conda_pip_and_comments()
    gpu = extras["gpu"]
    assert [_name(r) for r in gpu] == ["flash-attn"]
    assert not any(_name(r) == "flash-attn" for r in pip), "flash-attn must stay GPU-only"
    assert sorted(commented) == sorted(gpu)


def test_torch_is_a_tested_range_and_the_exact_cpu_pin_lives_in_dev_sh():
    import torch

    core, _ = _pyproject()
    pip, _ = _conda_pip_and_comments()
    assert "torch>=2.13,<2.14" in core and "torch>=2.13,<2.14" in pip
    assert torch.__version__.split("+")[0].startswith("2.13.")                 # the tested series is installed
    ci = (REPO / "scripts" / "dev.sh").read_text()
    assert 'pip install -q "torch==2.13.0"' in ci and "TORCH_INDEX_URL" in ci


def test_every_imported_third_party_package_is_declared():
    import ast
    import sys

    core, extras = _pyproject()
    declared = {_name(r) for r in core + extras["dev"] + extras["gpu"] + extras["trl"]}
    module_to_package = {"yaml": "pyyaml", "PIL": "pillow", "flash_attn": "flash-attn", "IPython": "ipykernel",
                         "jupyter_client": "ipykernel", "ipykernel": "ipykernel", "_pytest": "pytest"}
    own = {"grpo_lib", "conftest", "checker_helpers", "lab_harness", "test_train", "test_precision",
           "test_checkpoint", "gpu_smoke", "build_notebooks", "_common", "flash_standin"}
    found = set()
    for folder in ("grpo_lib", "scripts", "tests", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                         else [])
                found |= {n.split(".")[0] for n in names}
    third_party = {m for m in found if m not in sys.stdlib_module_names and m not in own and not m.startswith("test_")
                   and m not in {"bench_logprobs", "bench_step", "bench_kv_cache", "common"}}
    # imported only when present, never needed: ex03 recognises scipy's fisher_exact in a learner's answer
    optional = {"scipy"}
    undeclared = {m for m in third_party - optional
                  if module_to_package.get(m, m).lower().replace("_", "-") not in declared}
    assert not undeclared, f"imported but not declared in pyproject.toml: {sorted(undeclared)}"
