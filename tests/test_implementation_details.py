"""docs/implementation-details.md is generated from the "Choices made here" lists of grpo_lib's modules
(scripts/build_implementation_details.py): it fails here while stale, and every choice links to code."""
import importlib.util
import re

from conftest import REPO

SPEC = importlib.util.spec_from_file_location("build_implementation_details",
                                              REPO / "scripts" / "build_implementation_details.py")
builder = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(builder)


def test_the_page_is_current():
    page = (REPO / "docs" / "implementation-details.md").read_text(encoding="utf-8")
    assert page == builder.build(), "stale: run python scripts/build_implementation_details.py"


def test_every_choice_of_every_listed_module_is_on_the_page_with_its_code_and_links():
    page = builder.build()
    for rel, _ in builder.ORDER:
        header, items = builder.choices(REPO / "grpo_lib" / rel)
        assert items, rel
        for item in items:
            assert item in page, (rel, item[:60])
    codes = re.findall(r"\*Code:\* (.*?)\. \*Shown in:\* (.*?)\.\n", page)
    assert len(codes) == sum(len(builder.choices(REPO / "grpo_lib" / rel)[1]) for rel, _ in builder.ORDER)
    assert all(": [`" in code for code, _ in codes)                      # each names at least one function
    for link in re.findall(r"\]\(\.\./([^)]+)\)", page):
        path, _, line = link.partition("#L")
        assert (REPO / path).exists(), link                              # links stay inside the repository
        assert not line or 1 <= int(line) <= len((REPO / path).read_text(encoding="utf-8").splitlines()), link


def test_each_choice_and_each_function_links_to_its_line():
    """Every *Code:* link goes to a line: the module's to the line where the choice is written, each
    function's to its `def` (or `class`, or assignment) line."""
    page = builder.build()
    links = re.findall(r"\[`(\w+)`\]\(\.\./(grpo_lib/[^)#]+)#L(\d+)\)", page)
    assert len(links) > 100
    for name, path, line in links:
        text = (REPO / path).read_text(encoding="utf-8").splitlines()[int(line) - 1]
        assert re.match(rf"\s*(async def|def|class) {name}\b|{name}\s*[:=]", text.strip()), (name, path, line, text)
    for k, path, line in re.findall(r"\n(\d+)\. .*?\*Code:\* \[(grpo_lib/[^#\]]+)#L(\d+)\]", page, re.S):
        text = (REPO / path).read_text(encoding="utf-8").splitlines()[int(line) - 1]
        assert text.startswith(f"{k}. "), (k, path, line, text)


def test_every_module_with_choices_is_listed():
    listed = {rel for rel, _ in builder.ORDER}
    with_choices = {str(p.relative_to(REPO / "grpo_lib")) for p in (REPO / "grpo_lib").rglob("*.py")
                    if "Choices made here" in p.read_text(encoding="utf-8")}
    assert with_choices == listed
