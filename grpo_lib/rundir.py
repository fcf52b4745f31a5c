"""A run's output folder: checked before any heavy work, and never silently written over.

Choices made here (tested in tests/test_failures.py):
1. The folder is checked first, before the data and the model load: it must be a folder or creatable
   (not a file, not under a file) and writable (a probe file is created and removed), so a typo in
   --output-dir costs seconds, not a model download.
2. A folder that holds a run (any of `RUN_OUTPUTS`: metrics, evaluations, summary, final model,
   checkpoints) is refused for a fresh run, so a finished run's results are never replaced by
   accident, and a later --resume can never pick up an older run's checkpoint. `--overwrite` deletes
   those outputs (checkpoints included) first; other files in the folder are left alone.
3. `--resume DIR` continues the run in DIR itself (`run_dir_of`): the folder the checkpoint sits in,
   not the output folder recorded inside it, so a copied or moved run never writes into the original.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

RUN_OUTPUTS = ("metrics.jsonl", "evals.jsonl", "summary.json", "model", "checkpoints")
"""what a run writes into its output folder (grpo_lib.train, grpo_lib.checkpoint)"""


class OutputDirError(ValueError):
    """The output folder cannot be used: not creatable, not writable, or it holds another run."""


def check_writable(out: str | os.PathLike) -> Path:
    """Create `out` if needed and prove it is writable (a probe file); return it as a Path.

    Raises:
        OutputDirError: `out` is a file, sits under a file, or cannot be created or written; the
            message names --output-dir and the path that is in the way.
    """
    out = Path(out)
    for parent in [out, *out.parents]:
        if parent.exists():
            if not parent.is_dir():
                where = "is a file" if parent == out else f"sits under {parent}, which is a file"
                raise OutputDirError(f"--output-dir {out}: {where}, not a folder; choose another --output-dir")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise OutputDirError(f"--output-dir {out}: cannot create or write there ({e.strerror or e}); "
                             "choose a folder you can write to") from None
    return out


def existing_run_outputs(out: str | os.PathLike) -> list[str]:
    """The names in `RUN_OUTPUTS` that hold work in `out`.

    Empty files and folders do not count, nor does a summary.json of a run that failed before writing
    anything else (a run stopped by a typo in --data-dir leaves nothing worth keeping).
    """
    out = Path(out)
    found = []
    for name in RUN_OUTPUTS:
        p = out / name
        if (p.is_dir() and any(p.iterdir())) or (p.is_file() and p.stat().st_size > 0):
            found.append(name)
    if found == ["summary.json"] and _failed_summary(out / "summary.json"):
        return []
    return found


def _failed_summary(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("status") == "failed"
    except (OSError, ValueError, AttributeError):
        return False


def clear_run(out: str | os.PathLike) -> list[str]:
    """Delete the run outputs (`RUN_OUTPUTS`) in `out`; return the names deleted."""
    out = Path(out)
    removed = [name for name in RUN_OUTPUTS if (out / name).exists() or (out / name).is_symlink()]
    for name in removed:
        p = out / name
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    return removed


def prepare_output_dir(out: str | os.PathLike, *, overwrite: bool = False, continuing: bool = False) -> list[str]:
    """Check `out` before a run starts; with `overwrite`, clear the run it holds.

    Args:
        out: the run's output folder (--output-dir).
        overwrite: delete an earlier run's outputs there instead of refusing (--overwrite).
        continuing: True when this run resumes the run that lives in `out` (its outputs are this run's).

    Returns:
        the names of the outputs deleted (with `overwrite`), else [].

    Raises:
        OutputDirError: `out` is not a usable folder, or holds a run and neither `continuing` nor `overwrite`.
    """
    out = check_writable(out)
    found = existing_run_outputs(out)
    if not found or continuing:
        return []
    if not overwrite:
        raise OutputDirError(
            f"--output-dir {out} already holds a run ({', '.join(found)}): a new run would replace its results. "
            f"Continue it with --resume {out}, choose another --output-dir, or pass --overwrite to delete "
            "that run's outputs (checkpoints included) and start again.")
    return clear_run(out)


def run_dir_of(checkpoint_folder: str | os.PathLike) -> Path | None:
    """The run folder a checkpoint sits in (RUN/checkpoints/step-XXXXXX -> RUN), or None if it sits alone."""
    folder = Path(checkpoint_folder)
    if folder.parent.name == "checkpoints":
        return folder.parent.parent
    return None
