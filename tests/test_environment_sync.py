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


def test_torch_is_pinned_everywhere():
    core, _ = _pyproject()
    pip, _ = _conda_pip_and_comments()
    assert "torch==2.13.0" in core and "torch==2.13.0" in pip
    ci = (REPO / "scripts" / "dev.sh").read_text()
    assert 'pip install -q "torch==2.13.0"' in ci
