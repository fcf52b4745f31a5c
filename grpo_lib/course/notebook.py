"""Small display helpers used only by the notebooks (nothing in the training path imports this).

- `show_source(obj)` prints a library function's code in the notebook, so a lesson can walk through
  code that is too long to retype. The notebook then shows the tested code itself,
  never a copy that could drift.
- `show_lines(obj, *patterns, after=0)` shows only the lines of a long function that carry one idea (the lines
  containing a pattern, and `after` lines after each), numbered as in its file: the few lines of `grpo_loss` that
  an option adds, read from the tested code.
- `markdown_table(header, rows)` turns a small sweep (a loop over cases) into a table that renders
  on GitHub, so the numbers in the prose come from code that runs in CI.

- `check(section, *facts)` is the one check cell of a lesson section: it verifies the section's
  claims, shows "✓ <section>: N facts checked" that expands to the list (collapsed by default), and raises
  naming every fact that fails, so CI fails on a broken lesson while the notebook reads like prose.

- `run_torchrun(args, nproc=2)` launches `torchrun --standalone` from a cell (notebook 06's DDP demos) and
  returns the finished process; a job that fails raises, with its exit status and stderr (never rerun). Within
  one test command an identical job that already finished there is restored instead (`grpo_lib.runcache`).

The display helpers degrade gracefully: without IPython (or pygments) they fall back to plain text.

Taught in: notebooks/01_worked_example_2plus3.ipynb (used by every notebook)
"""

from __future__ import annotations

import html
import inspect
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


def source_of(obj: Any) -> str:
    """The source code of a function, class, method or module, dedented; a clear error if there is none.

    Used by: `show_source`
    """
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (TypeError, OSError) as err:
        raise TypeError(
            f"cannot show the source of {obj!r}: only Python functions, classes, methods and modules "
            f"defined in a file have source ({err})"
        ) from None


def show_source(obj: Any) -> None:
    """Display the source of `obj` with syntax highlighting (IPython + pygments), else print it.

    Args:
        obj: a function, class, method or module, e.g. `grpo_lib.toy.score_answer`.

    Taught in: notebooks/01_worked_example_2plus3.ipynb
    """
    src = source_of(obj)
    try:
        # here, not at the top: IPython and pygments are optional (plain text without them)
        import pygments  # noqa: F401  (IPython's Code needs it for the highlighted HTML)
        from IPython import get_ipython
        from IPython.display import Code, display
    except ImportError:
        print(src)
        return
    if get_ipython() is None:          # plain Python (a script, a test): no rich display to show it
        print(src)
        return
    display(Code(src, language="python"))


def source_lines(obj: Any, *patterns: str, after: int = 0) -> str:
    """The lines of `obj`'s source that contain one of `patterns`, each with `after` lines after it, numbered as in
    the file; "..." marks the lines left out between two pieces.

    Raises:
        ValueError: no pattern, or a pattern that no line of the source contains (the code changed: the notebook
            must not show a stale excerpt).

    Used by: `show_lines`
    """
    if not patterns:
        raise ValueError("source_lines needs at least one pattern")
    lines, first = inspect.getsourcelines(obj)
    width = len(str(first + len(lines)))
    keep: set[int] = set()
    for pattern in patterns:
        found = [i for i, line in enumerate(lines) if pattern in line]
        if not found:
            raise ValueError(f"no line of {getattr(obj, '__qualname__', obj)!r} contains {pattern!r}")
        for i in found:
            keep.update(range(i, min(i + after + 1, len(lines))))
    indent = min(len(lines[i]) - len(lines[i].lstrip()) for i in keep if lines[i].strip())
    out, previous = [], None
    for i in sorted(keep):
        if previous is not None and i != previous + 1:
            out.append("...")
        out.append(f"{first + i:>{width}}  {lines[i][indent:].rstrip()}")
        previous = i
    return "\n".join(out)


def show_lines(obj: Any, *patterns: str, after: int = 0) -> None:
    """Display the lines of `obj`'s source containing `patterns` (see `source_lines`), highlighted when IPython is here.

    Taught in: notebooks/07_grpo_after_r1.ipynb
    """
    text = source_lines(obj, *patterns, after=after)
    try:
        import pygments  # noqa: F401
        from IPython import get_ipython
        from IPython.display import Code, display
    except ImportError:
        print(text)
        return
    if get_ipython() is None:
        print(text)
        return
    display(Code(text, language="python"))


def _cell(value: Any, floatfmt: str) -> str:
    """One table cell as text: floats (and 0-dim tensors) formatted, '|' escaped for markdown."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    text = format(value, floatfmt) if isinstance(value, float) else str(value)
    return text.replace("|", r"\|")


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]], floatfmt: str = ".4f") -> Any:
    """A markdown table from a header and rows; an IPython `Markdown` object if IPython is present, else str.

    Args:
        header: column titles, length C.
        rows: each a sequence of C values; floats are formatted with `floatfmt`.
        floatfmt: format spec for floats, e.g. ".4f" or ".2e".

    Returns:
        `IPython.display.Markdown` (shows as a table when it is a cell's last expression) or the text.

    Taught in: notebooks/01_worked_example_2plus3.ipynb
    """
    header = list(header)
    lines = ["| " + " | ".join(_cell(h, floatfmt) for h in header) + " |",
             "|" + "---|" * len(header)]
    for i, row in enumerate(rows):
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f"row {i} has {len(row)} values for {len(header)} columns: {row!r}")
        lines.append("| " + " | ".join(_cell(v, floatfmt) for v in row) + " |")
    text = "\n".join(lines)
    try:
        from IPython.display import Markdown  # optional, as in show_source: plain text without it
    except ImportError:
        return text
    return Markdown(text)


def load_scaled(seconds: float) -> float:
    """`seconds` stretched on a busy machine: times the 1-minute load average per usable core, when above 1.

    A limit meant to catch a hang must not fire because other programs share the cores.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = os.getloadavg()[0] / cores if hasattr(os, "getloadavg") else 1.0
    return seconds * max(1.0, busy)


def run_torchrun(args: Sequence[str], nproc: int = 2, *, env: dict[str, str] | None = None,
                 timeout: float | None = None, force: bool = False) -> subprocess.CompletedProcess:
    """Run `torchrun --standalone --nproc_per_node=nproc ARGS` (as `python -m torch.distributed.run`) and wait.

    Each process gets OMP_NUM_THREADS=1 (k processes share the cores) unless `env` says otherwise. The job
    runs once: a job that exits non-zero raises, with torchrun's exit status and the end of its stderr
    (which holds the failing rank's traceback), so a failure is never hidden by starting it again.

    Within one test command (GRPO_RUN_CACHE set, by `scripts/dev.sh test` only), a job that already finished in
    that command with exactly the same arguments, environment and inputs (the files of the temporary folder its
    arguments point into) is not launched again: its folder and output are restored, and a line says so
    (`grpo_lib.runcache`, choice 4). Elsewhere every call launches the job.

    Args:
        args: what follows torchrun's own options: a script and its arguments, or "-m", module, arguments.
        nproc: processes to start (`--nproc_per_node`).
        env: extra environment variables for the job (added to this process's environment).
        timeout: seconds before the job is stopped (subprocess.TimeoutExpired); None: 600 s stretched by
            `load_scaled` (a loaded machine is slow, not hung).
        force: launch the job even when an identical one finished in this test command.

    Returns:
        the `subprocess.CompletedProcess` of the job (stdout and stderr captured as text). All ranks write
        to the same stdout: torchrun starts them with `python -u`, so `print(text)` is two writes (the text,
        then the newline) and another rank's output can land between them. A line written in one call
        (`sys.stdout.write(text + "\\n")`, at most 4096 bytes) stays whole; `grpo_lib.dist.print0` avoids
        the question by printing on rank 0 only.

    Raises:
        RuntimeError: the job exited non-zero; the message holds the command's exit status and the end of
            its stderr.

    Taught in: notebooks/06_multi_gpu_qwen.ipynb
    """
    from grpo_lib import runcache

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *map(str, args)]
    folder = runcache.job_folder(args) if runcache.cache_dir() is not None and not force else None
    key = runcache.job_key(args, nproc, env, folder) if folder is not None else None
    if key is not None and (done := runcache.load_job(key, folder, cmd)) is not None:
        return done
    job_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = _launch(cmd, job_env, load_scaled(600) if timeout is None else timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun exited with status {proc.returncode} ({nproc} processes: "
                           f"{' '.join(map(str, args))}); end of its stderr:\n{proc.stderr[-6000:]}")
    if key is not None:
        runcache.store_job(key, folder, proc)
    return proc


def _launch(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Start the job and wait for it (the one place a job is launched; tests count the calls here)."""
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


@dataclass(frozen=True)
class Checked:
    """What `check` verified; renders as a collapsed list in Jupyter, as lines in plain text."""

    section: str
    facts: tuple[str, ...]

    def __repr__(self) -> str:
        return "\n".join([f"✓ {self.section}: {self._count()}"] + [f"  ✓ {f}" for f in self.facts])

    def _count(self) -> str:
        return f"{len(self.facts)} fact{'s' if len(self.facts) != 1 else ''} checked"

    def _repr_html_(self) -> str:
        items = "".join(f"<li>{html.escape(f)}</li>" for f in self.facts)
        return (f"<details><summary>✓ {html.escape(self.section)}: {self._count()}</summary>"
                f"<ul>{items}</ul></details>")


def _truth(value: Any) -> tuple[bool, str | None]:
    """(holds, error) for a fact's value: bool, numpy/torch scalar, or a callable returning one."""
    try:
        if callable(value):
            value = value()
        if hasattr(value, "numel") and value.numel() != 1:
            return False, f"a tensor of {value.numel()} values is not one truth value (use .all())"
        return bool(value), None
    except Exception as err:  # noqa: BLE001 - a fact that cannot be evaluated is a failing fact
        return False, f"{type(err).__name__}: {err}"


def check(section: str, *facts: tuple[str, Any]) -> Checked:
    """Verify a section's claims; show them collapsed; raise AssertionError naming every fact that fails.

    The teaching goes in the prose above; the facts prove it. In the notebook source the cell that calls
    `check` is written `# %% jupyter={"source_hidden": true}`, so JupyterLab shows only its one-line result.

    Args:
        section: the section's name, as in its heading ("1.6 · the policy gradient").
        *facts: (text, value) pairs; value is a bool, a one-element tensor or array, or a callable returning one.

    Raises:
        ValueError: no facts, or a fact that is not a (text, value) pair.
        AssertionError: one or more facts do not hold; the message lists each, with the error if one was raised.

    Taught in: notebooks/01_worked_example_2plus3.ipynb (used by every notebook)
    """
    if not facts:
        raise ValueError(f"check({section!r}) needs at least one (text, value) fact")
    failing = []
    for i, fact in enumerate(facts):
        if not (isinstance(fact, tuple) and len(fact) == 2 and isinstance(fact[0], str)):
            raise ValueError(f"check({section!r}): fact {i + 1} must be a (text, value) pair, got {fact!r:.80}")
        ok, error = _truth(fact[1])
        if not ok:
            failing.append(f"✗ {fact[0]}" + (f" ({error})" if error else ""))
    if failing:
        raise AssertionError(f"{section}: {len(failing)} of {len(facts)} facts do not hold:\n  " + "\n  ".join(failing))
    return Checked(section, tuple(text for text, _ in facts))
