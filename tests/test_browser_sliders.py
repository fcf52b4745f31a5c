"""Notebook 04's ε and β sliders in a real browser: JupyterLab + headless Chromium, driven by Playwright.

tests/test_course_widgets.py drives the sliders' Python side; this test checks what a student sees. It starts
JupyterLab through the README's own command (`bash scripts/dev.sh lab`, see tests/lab_harness.py) on
127.0.0.1 with a fresh root folder holding a copy of notebooks/04_the_loss.ipynb (outputs cleared), opens it
in headless Chromium, runs all cells from the Run menu, then

1. presses PageUp on the ε slider's handle (noUiSlider: one key press = 5 steps, a single redraw) and
   asserts that the ε readout reads `value + 5 * step` (0.20 -> 0.45), that ε's plot image changed and
   that β's plot did not;
2. does the same on the β slider (0.50 -> 0.75): β's readout and plot change, ε's plot does not;
3. presses PageDown on ε and asserts the plot is byte-for-byte the one drawn at the start: the image is
   a function of the slider value, not just "something new".

The sliders are found by their description labels ("epsilon", "beta"), not by position.

Screenshots (the test prints where, also without `-s`) go to test-artifacts/browser/ (gitignored):
01_before.png, 02_after_epsilon.png, 03_after_beta.png (whole window), 04_sliders.png (the two slider
cells, cropped and stacked: the README's picture) and lab.log. `GRPO_UPDATE_SCREENSHOT=1` also copies
04_sliders.png to docs/img/04_sliders.png (or run `bash scripts/update_screenshot.sh`).

Needs Debian's chromium (`apt-get install chromium`; never `playwright install`, which downloads a
browser) and the python playwright package (in the [dev] extra). Where either is missing the test skips
with the reason; with GRPO_REQUIRE_BROWSER=1 (CI sets it once chromium is installed) it fails instead.
Takes 30-45 s alone on 2 CPU cores (up to ~100 s on a busy machine), most of it running the notebook.

Run alone:  .venv/bin/python -m pytest tests/test_browser_sliders.py -s
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from lab_harness import REPO, JupyterLab, clear_outputs, jupyter_lab_executable

NOTEBOOK = REPO / "notebooks" / "04_the_loss.ipynb"
ARTIFACTS = Path(os.environ.get("GRPO_BROWSER_ARTIFACTS", REPO / "test-artifacts" / "browser"))
README_SHOT = REPO / "docs" / "img" / "04_sliders.png"
REQUIRE = os.environ.get("GRPO_REQUIRE_BROWSER") == "1"

# Chromium flags for a headless run in a container (no sandbox as root, no background traffic)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


# hides what only says "this cell has the focus" in the cropped README picture
CLEAN_CELL_CSS = """
.jp-cell-toolbar { display: none !important; }
.jp-Collapser, .jp-Collapser-child { visibility: hidden !important; }
.jp-mod-active .jp-InputPrompt, .jp-mod-active .jp-OutputPrompt { color: var(--jp-cell-prompt-not-active-font-color) !important; }
"""


def _unavailable(reason: str):
    """Skip with `reason`, or fail when CI demands the browser test (GRPO_REQUIRE_BROWSER=1)."""
    if REQUIRE:
        pytest.fail(f"GRPO_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def chromium_path() -> str:
    """Debian's chromium: $GRPO_CHROMIUM, else `chromium` on PATH, else /usr/bin/chromium."""
    candidate = os.environ.get("GRPO_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
        _unavailable(f"Chromium not found at {candidate}; install Debian's chromium: apt-get install chromium "
                     "(or set GRPO_CHROMIUM to a Chromium binary; never `playwright install`)")
    return candidate


def slider_defaults(factory) -> dict[str, float]:
    """value/min/max/step of a slider factory in grpo_lib.course.widgets, read from its signature (no figure drawn)."""
    params = inspect.signature(factory).parameters
    return {k: float(params[k].default) for k in ("value", "min", "max", "step")}


def moved(d: dict[str, float], start: float, steps: int) -> str:
    """The readout after `steps` key steps from `start`, clamped to the slider range, as the 2-decimal readout."""
    return f"{min(d['max'], max(d['min'], start + steps * d['step'])):.2f}"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of Chromium, once python playwright is known to be importable (else skip, or fail in CI)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("python playwright is not installed: pip install -e '.[dev]' "
                     "(never `playwright install`: the test uses Debian's chromium)")
    return chromium_path()


@pytest.fixture
def lab(chromium, tmp_path):
    """JupyterLab serving a fresh folder with an output-free copy of notebook 04; always shut down."""
    if not NOTEBOOK.exists():
        pytest.fail(f"{NOTEBOOK} is missing (build it with: python scripts/build_notebooks.py 04)")
    if not jupyter_lab_executable().exists():
        _unavailable(f"jupyter-lab not found at {jupyter_lab_executable()}: pip install -e '.[dev]'")
    root = tmp_path / "course"
    root.mkdir()
    clear_outputs(NOTEBOOK, root / NOTEBOOK.name)
    server = JupyterLab(tmp_path, root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        if server.log_path.exists():
            shutil.copy(server.log_path, ARTIFACTS / "lab.log")


# --- page helpers ------------------------------------------------------------------------------------------

STATUS_IDLE_JS = """() => {
  const bar = document.querySelector('#jp-main-statusbar');
  return !!bar && /\\(ipykernel\\)\\s*\\|\\s*Idle/.test(bar.innerText.replace(/\\n/g, ' | '));
}"""

PROMPTS_JS = """() => [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
                   .map(e => e.innerText.trim())"""

ERRORS_JS = """() => [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
                   .map(e => e.innerText.slice(0, 2000))"""


def run_all_cells(page, timeout: float = 300.0) -> int:
    """Run > Run All Cells, then wait until every code cell shows `[n]:`; return the number of code cells.

    Waits for the status bar to read "(ipykernel) | Idle" first: the execution indicator says idle too early,
    and a Run All issued then is silently dropped. Fails fast (with the cell's error) if Run All stops at a
    failing cell: no `[*]` left but some cells never ran.
    """
    page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell", timeout=120_000)
    page.wait_for_function(STATUS_IDLE_JS, timeout=120_000)
    page.locator(".jp-CodeCell .jp-InputPrompt").first.click()          # focus the notebook
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
    deadline, seen_queued = time.monotonic() + timeout, False
    while time.monotonic() < deadline:
        prompts = page.evaluate(PROMPTS_JS)
        done = [p for p in prompts if re.fullmatch(r"\[\d+\]:", p)]
        queued = [p for p in prompts if p.startswith("[*]")]
        seen_queued = seen_queued or bool(queued) or len(done) > 0
        if prompts and len(done) == len(prompts):
            return len(prompts)
        if seen_queued and not queued and page.evaluate(STATUS_IDLE_JS):
            time.sleep(1.0)                                               # let a late prompt update land
            prompts = page.evaluate(PROMPTS_JS)
            if all(re.fullmatch(r"\[\d+\]:", p) for p in prompts):
                return len(prompts)
            if not any(p.startswith("[*]") for p in prompts):
                errors = "\n---\n".join(page.evaluate(ERRORS_JS)[-3:])
                never = sum(not re.fullmatch(r"\[\d+\]:", p) for p in prompts)
                raise AssertionError(f"Run All stopped: {never} of {len(prompts)} code cells never ran. "
                                     f"Last stderr/error outputs:\n{errors}")
        time.sleep(0.5)
    raise AssertionError(f"Run All did not finish in {timeout:.0f} s; prompts: {page.evaluate(PROMPTS_JS)}")


def interact_box(page, label: str):
    """The `interactive` box (slider + output) whose slider's description label reads `label`."""
    label_re = re.compile(rf"^\s*{re.escape(label)}\s*$")
    box = page.locator(".widget-interact").filter(
        has=page.locator(".widget-hslider .widget-label").filter(has_text=label_re))
    box.first.wait_for(state="attached", timeout=60_000)
    assert box.count() == 1, f"expected one slider labelled {label!r}, found {box.count()}"
    return box.first


def image_src(box) -> str:
    img = box.locator(".widget-output img")
    img.last.wait_for(state="attached", timeout=60_000)
    return img.last.get_attribute("src")


def press_on_handle(page, box, key: str) -> None:
    """Focus the slider's noUiSlider handle and press `key` (PageUp/PageDown move 5 steps in one event)."""
    box.scroll_into_view_if_needed()
    handle = box.locator(".noUi-handle").first
    handle.wait_for(state="visible", timeout=30_000)
    handle.focus()
    page.keyboard.press(key)


def wait_new_image(page, box, old_src: str, what: str, timeout_ms: int = 60_000) -> str:
    """Wait until `box`'s plot image has a src other than `old_src`; return the new src."""
    handle = box.element_handle()
    try:
        page.wait_for_function(
            """([box, old]) => { const i = box.querySelectorAll('.widget-output img');
                                 return i.length > 0 && i[i.length - 1].getAttribute('src') !== old; }""",
            arg=[handle, old_src], timeout=timeout_ms)
    except Exception as e:
        raise AssertionError(f"the {what} plot image did not change within {timeout_ms / 1000:.0f} s") from e
    return image_src(box)


def stacked_screenshot(paths: list[Path], out: Path, gap: int = 16) -> None:
    """Stack element screenshots top to bottom on a white background (the README picture)."""
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in paths]
    width = max(im.width for im in images)
    height = sum(im.height for im in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    y = 0
    for im in images:
        canvas.paste(im, (0, y))
        y += im.height + gap
    canvas.save(out, optimize=True)


# --- the tests ---------------------------------------------------------------------------------------------

def test_lab_command_serves_the_notebooks_with_the_widgets_extension(tmp_path):
    """`bash scripts/dev.sh lab` (the README's command) serves notebooks/ with jupytext's pairing and loads the
    widgets extension.

    No browser needed: the server's contents API must list exactly the notebooks in notebooks/, and the
    page config of /lab must name @jupyter-widgets/jupyterlab-manager among the loaded extensions
    (without it the sliders would show as the text "interactive(children=(FloatSlider(...")."""
    if not jupyter_lab_executable().exists():
        _unavailable(f"jupyter-lab not found at {jupyter_lab_executable()}: pip install -e '.[dev]'")
    server = JupyterLab(tmp_path, root=None)
    try:
        server.start()
        listed = {item["name"] for item in json.loads(server.get("/api/contents"))["content"]
                  if item["type"] == "notebook"}
        sources = {item["name"]: item["type"] for item in json.loads(server.get("/api/contents/src"))["content"]}
        page = server.get("/lab")
    except Exception as e:
        raise AssertionError(f"{type(e).__name__}: {e}\n--- lab.log ---\n{server.log_tail()}") from e
    finally:
        server.stop()
    expected = {p.name for p in (REPO / "notebooks").glob("*.ipynb")}
    assert expected and listed == expected, f"served {sorted(listed)}, notebooks/ holds {sorted(expected)}"
    # jupytext's contents manager serves the sources as notebooks: the pairing of notebooks/jupytext.toml is
    # active, so saving a notebook writes its source (tests/test_notebook_sources.py tests the pairing itself)
    assert sources == {f"{Path(name).stem}.py": "notebook" for name in expected}, sources
    config = json.loads(re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                                  page, re.S).group(1))
    extensions = {ext["name"] for ext in config.get("federated_extensions", [])}
    assert "@jupyter-widgets/jupyterlab-manager" in extensions, f"lab extensions loaded: {sorted(extensions)}"
    disabled = config.get("disabledExtensions", [])
    assert not any(d.startswith("@jupyter-widgets/jupyterlab-manager") for d in disabled), disabled


@pytest.mark.browser
def test_sliders_redraw_in_a_real_browser(chromium, lab, capsys):
    from playwright.sync_api import expect, sync_playwright

    from grpo_lib.course.widgets import beta_slider, epsilon_slider

    eps_d, beta_d = slider_defaults(epsilon_slider), slider_defaults(beta_slider)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    shots = {name: ARTIFACTS / f"{name}.png"
             for name in ("01_before", "02_after_epsilon", "03_after_beta", "04_sliders")}
    console: list[str] = []
    t0 = time.monotonic()
    timings: dict[str, float] = {}

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1400})
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
                page.goto(f"{lab.url}/lab/tree/{NOTEBOOK.name}?token={lab.token}", timeout=120_000)
                n_code = run_all_cells(page)
                timings["run all"] = time.monotonic() - t0

                eps, beta = interact_box(page, "epsilon"), interact_box(page, "beta")
                eps_readout, beta_readout = eps.locator(".widget-readout"), beta.locator(".widget-readout")
                # the notebook calls the factories with their defaults, so the readouts start there
                expect(eps_readout).to_have_text(f"{eps_d['value']:.2f}")
                expect(beta_readout).to_have_text(f"{beta_d['value']:.2f}")
                eps_src0, beta_src0 = image_src(eps), image_src(beta)
                assert eps_src0.startswith("data:image/png;base64,"), eps_src0[:60]
                assert eps_src0 != beta_src0, "the ε and β sliders show the same image"
                eps.scroll_into_view_if_needed()
                page.screenshot(path=shots["01_before"])

                # 1. ε: PageUp = 5 steps
                press_on_handle(page, eps, "PageUp")
                eps_expected = moved(eps_d, eps_d["value"], 5)
                expect(eps_readout).to_have_text(eps_expected, timeout=15_000)
                eps_src1 = wait_new_image(page, eps, eps_src0, "ε")
                assert image_src(beta) == beta_src0, "moving ε redrew the β plot"
                page.screenshot(path=shots["02_after_epsilon"])
                timings["ε move"] = time.monotonic() - t0 - timings["run all"]

                # 2. β: PageUp = 5 steps
                press_on_handle(page, beta, "PageUp")
                beta_expected = moved(beta_d, beta_d["value"], 5)
                expect(beta_readout).to_have_text(beta_expected, timeout=15_000)
                wait_new_image(page, beta, beta_src0, "β")
                assert image_src(eps) == eps_src1, "moving β redrew the ε plot"
                expect(eps_readout).to_have_text(eps_expected)
                page.screenshot(path=shots["03_after_beta"])

                # the README picture: the two slider cells (code, slider, plot), cropped and stacked
                # (no focus ring, no active-cell bar or cell toolbar: they are not part of the lesson)
                page.evaluate("() => document.activeElement && document.activeElement.blur()")
                cells = []
                for name, box in (("eps", eps), ("beta", beta)):
                    cell = page.locator(".jp-CodeCell").filter(has=box)
                    cell.scroll_into_view_if_needed()
                    cells.append(ARTIFACTS / f"cell_{name}.png")
                    cell.screenshot(path=cells[-1], animations="disabled", style=CLEAN_CELL_CSS)
                stacked_screenshot(cells, shots["04_sliders"])
                for c in cells:
                    c.unlink()

                # 3. ε back to its start: the very same image as at the start
                press_on_handle(page, eps, "PageDown")
                expect(eps_readout).to_have_text(f"{eps_d['value']:.2f}", timeout=15_000)
                eps_src2 = wait_new_image(page, eps, eps_src1, "ε (moved back)")
                assert eps_src2 == eps_src0, "ε moved back to its start value but the plot differs from the first one"
            finally:
                browser.close()
    except Exception as e:
        raise AssertionError(
            f"{type(e).__name__}: {e}\n--- browser console errors ---\n" + "\n".join(console[-20:])
            + f"\n--- lab.log (last lines) ---\n{lab.log_tail()}\n--- screenshots so far: {ARTIFACTS}") from e

    timings["total"] = time.monotonic() - t0
    with capsys.disabled():                              # shown even without -s: where the screenshots are
        print(f"\n[browser] {n_code} code cells ran; ε {eps_d['value']:.2f} -> {eps_expected}, "
              f"β {beta_d['value']:.2f} -> {beta_expected}; "
              + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
        print(f"[browser] screenshots in {ARTIFACTS}: " + ", ".join(s.name for s in shots.values()))
        if os.environ.get("GRPO_UPDATE_SCREENSHOT") == "1":
            README_SHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(shots["04_sliders"], README_SHOT)
            print(f"[browser] updated {README_SHOT}")
