"""The command line of `python -m grpo_lib` (and `torchrun ... -m grpo_lib`): one option per config field.

The parser is built from the GRPOConfig dataclass itself (`dataclasses.fields` for the names and help texts,
`typing.get_type_hints` for the types), so a new field is a new option with no code here:

    --preset tiny | qwen2.5-1.5b-gsm8k    the starting values (default tiny)
    --G 8, --epsilon 0.2, --loss-type dapo, --reward-funcs correctness,format, --eval-n none, ...

Both spellings work for names with underscores (`--loss-type` and `--loss_type`); `none` gives None where a
field allows it; booleans are bare flags (`--gradient-checkpointing`, `--no-gradient-checkpointing`) and
also read true/false (1/0, yes/no, on/off); tuples are comma-separated. The help of each option is the
field's help text with its paper symbol in [brackets] and the values of both presets. `--config FILE.yaml`
loads a recipe (option: value pairs, optionally `preset:`) on top of the preset; the command line wins.

Exit status of `main`: 0 when training completed, 1 when it stopped on a NaN/inf metric, 2 for a --resume
checkpoint that cannot be continued (and argparse's 2 for a bad option); any other error propagates.

Taught in: notebooks/06_multi_gpu_qwen.ipynb (notebook 05 runs the same engine through `train`)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch.distributed.elastic.multiprocessing.errors import record

from grpo_lib import dist
from grpo_lib.config import PRESETS, SYMBOLS, GRPOConfig, base_type, batch_override, field_docs, field_types
from grpo_lib.run import checkpoint
from grpo_lib.run.failures import NonFiniteMetricError, RunStopped, StopNow, known_error
from grpo_lib.run.layout import CHECKPOINTS_SUBDIR, run_dir_of
from grpo_lib.train import train


def _parse_value(kind: Any, optional: bool, name: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if optional and text.lower() in ("none", "null"):
            return None
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"--{name} expects true or false, got {text!r}")
        if kind is tuple:
            return tuple(s.strip() for s in text.split(",") if s.strip())
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name} expects {kind.__name__}, got {text!r}") from None

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def build_arg_parser() -> argparse.ArgumentParser:
    """argparse parser with --preset and one --option per GRPOConfig field (help = the field's docstring).

    Used by: `parse_config` (and `python -m grpo_lib --help`)
    """
    parser = argparse.ArgumentParser(
        prog="python -m grpo_lib",
        description="GRPO (DeepSeekMath, arXiv 2402.03300) on the tiny CPU preset or Qwen2.5 on GSM8K. "
                    "Start from --preset, then override any option. Paper symbols in [brackets].",
        epilog="Example: python -m grpo_lib --preset tiny --steps 50 --output-dir runs/tiny50",
    )
    parser.add_argument("--preset", default=argparse.SUPPRESS, choices=list(PRESETS),
                        help="starting values: 'tiny' (CPU, minutes; the default) or 'qwen2.5-1.5b-gsm8k' "
                             "(the tutorial's GPU run). With --resume the starting values are the checkpoint's")
    parser.add_argument("--config", dest="config_file", metavar="FILE.yaml", default=argparse.SUPPRESS,
                        help="a recipe: a YAML mapping of option names to values (and optionally 'preset'), "
                             "applied on top of the preset; options on the command line win over it")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on an error, show the Python traceback too (by default: the message only)")
    docs, types_ = field_docs(), field_types()
    tiny, qwen = GRPOConfig.tiny(), GRPOConfig.full()
    for f in dataclasses.fields(GRPOConfig):
        if f.name == "preset":
            continue
        kind, optional = base_type(types_[f.name])
        symbol = f"[{SYMBOLS[f.name]}] " if f.name in SYMBOLS else ""
        flags = [f"--{f.name.replace('_', '-')}"] + ([f"--{f.name}"] if "_" in f.name else [])
        text = (f"{symbol}{docs.get(f.name, '')}" + (" ('none' for None)" if optional else "")
                + f" (tiny: {_show(getattr(tiny, f.name))}; {qwen.preset}: {_show(getattr(qwen, f.name))})")
        if kind is bool:                   # a bare flag turns it on, --no-X off; "--X false" still works
            parser.add_argument(*flags, dest=f.name, default=argparse.SUPPRESS, nargs="?", const=True,
                                type=_parse_value(kind, optional, f.name), metavar="BOOL",
                                help=text.replace("%", "%%"))
            parser.add_argument(f"--no-{f.name.replace('_', '-')}", dest=f.name, action="store_const", const=False,
                                default=argparse.SUPPRESS, help=f"same as --{f.name.replace('_', '-')} false")
            continue
        parser.add_argument(*flags, dest=f.name, default=argparse.SUPPRESS, type=_parse_value(kind, optional, f.name),
                            metavar=kind.__name__.upper() if kind is not tuple else "A,B",
                            help=text.replace("%", "%%"))
    return parser


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """The option values of a YAML recipe (`--config FILE.yaml`): a mapping of GRPOConfig fields (and 'preset').

    Keys may use dashes or underscores (`max-completion-length` or `max_completion_length`).

    Raises:
        ValueError: the file is missing, is not a YAML mapping, or names an unknown option (the message
            names the file and the key, and suggests the closest option).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"--config {path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: must be a mapping of option: value, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(GRPOConfig)}
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in names:
            import difflib

            close = difflib.get_close_matches(name, sorted(names), n=1)
            raise ValueError(f"--config {path}: unknown option {key!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
        out[name] = tuple(value) if isinstance(value, list) else value
    return out


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value)
    return "none" if value is None else str(value)


def parse_config(argv: Sequence[str] | None = None) -> GRPOConfig:
    """The GRPOConfig described by command-line arguments (preset values, then the overrides).

    With `--resume DIR` the starting values are the configuration saved in the checkpoint, so
    `--resume DIR` alone continues the same run; options given with it override the saved values, and
    `train` refuses those that would change the training (grpo_lib.run.checkpoint.RESUME_MAY_DIFFER lists
    the ones that may change). The resumed run writes into DIR (the run folder the checkpoint sits in),
    never into the output folder recorded in the checkpoint, so resuming a copy leaves the original
    alone; `--output-dir` given with it continues the run in another folder. A bad value, or a --resume
    folder without a complete checkpoint, exits with argparse's usage message naming the option.

    Taught in: notebooks/06_multi_gpu_qwen.ipynb
    """
    parser = build_arg_parser()
    ns = vars(parser.parse_args(argv))
    preset = ns.pop("preset", None)
    ns.pop("debug", None)
    try:
        recipe = load_recipe(ns.pop("config_file")) if "config_file" in ns else {}
        preset = preset or recipe.pop("preset", None)
        recipe.pop("preset", None)
        ns = batch_override(recipe, ns)             # command line over the recipe (N / prompts_per_device replace each other)
        if ns.get("resume"):
            names = {f.name for f in dataclasses.fields(GRPOConfig)}
            saved = {k: v for k, v in checkpoint.saved_config(ns["resume"]).items() if k in names}
            if "output_dir" not in ns:               # the run folder given, not the one recorded inside
                saved["output_dir"] = str(_resume_output_dir(ns["resume"]))
            return GRPOConfig(**{**batch_override(saved, ns), **({"preset": preset} if preset else {})})
        return GRPOConfig.from_preset(preset or "tiny", **ns)
    except (ValueError, TypeError) as e:
        parser.error(str(e))
        raise  # pragma: no cover  (parser.error exits)


def _resume_output_dir(resume: str) -> Path:
    """Where `--resume DIR` writes: DIR itself for a run folder, RUN for RUN/checkpoints/step-XXXXXX."""
    folder = Path(resume)
    if (folder / CHECKPOINTS_SUBDIR).is_dir() or not folder.name.startswith("step-"):
        return folder
    run = run_dir_of(folder)
    if run is None:
        raise ValueError(f"--resume {resume}: this checkpoint does not sit in a run folder (RUN/checkpoints/"
                         "step-XXXXXX), so there is no run to continue in; pass --output-dir for the resumed run")
    return run


@record        # under torchrun: the failing rank's traceback goes into torchrun's error report
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m grpo_lib` and of `torchrun ... -m grpo_lib`.

    Returns 0 when training completed and 1 for every failure. A known error (a bad option or file, a
    run that stopped: grpo_lib.run.failures.KNOWN_ERRORS) prints one "error: ..." paragraph on stderr, from
    each rank that has it (rank 0 alone when every rank failed the same way), without a traceback;
    `--debug` adds the traceback. Any other exception propagates with its traceback (exit status 1).
    A bad command-line value exits with argparse's usage message (status 2) before anything starts.
    A run stopped by SIGTERM, SIGINT or SIGHUP prints one "stopped: ..." paragraph (the last checkpoint
    and the command that resumes it) and returns 128 + the signal's number (143, 130, 129).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = parse_config(argv)
    return run_reporting_errors(lambda: train(cfg), debug="--debug" in argv)


def run_reporting_errors(run: Callable[[], Any], debug: bool = False) -> int:
    """Call `run()` under the command line's error policy (the entry point of grpo_lib.train and
    grpo_lib.trl.recipe): 0 when it returns; a known error -> one "error: ..." paragraph on stderr and 1;
    a signal -> one "stopped: ..." paragraph and 128 + the signal's number; anything else propagates."""
    completed = False
    try:
        run()
        completed = True
    except RunStopped as e:
        if dist.env_rank()[0] == 0:
            _print_error(e, debug, "stopped")
        return e.exit_status
    except StopNow as e:                              # a second signal: at once, no traceback either
        if dist.env_rank()[0] == 0:
            _print_error(e, debug, "stopped")
        return e.exit_status
    except Exception as e:
        if not known_error(e):
            raise
        same_everywhere = isinstance(e, NonFiniteMetricError)      # the metrics and weights agree on every rank
        rank, _, world = dist.env_rank()
        if rank == 0 or not same_everywhere:
            prefix = f"[rank {rank}] " if world > 1 and not same_everywhere else ""
            _print_error(e, debug, f"{prefix}error")
        return 1
    finally:
        dist.cleanup(barrier=completed)     # all ranks leave together after a good run; never wait on a dead one
    return 0


def _print_error(e: BaseException, debug: bool, label: str) -> None:
    if debug:
        import traceback

        traceback.print_exc()
    print(f"{label}: {_one_paragraph(e)}", file=sys.stderr, flush=True)


def _one_paragraph(e: BaseException) -> str:
    """The error's message as one paragraph (a list of differing options joined with '; ')."""
    lines = [line.strip() for line in str(e).splitlines()]
    lines = [line[2:] if line.startswith("- ") else line for line in lines if line]
    return "; ".join(lines).replace(":;", ":")


if __name__ == "__main__":
    sys.exit(main())
