#!/usr/bin/env bash
# SAE Circuits: set up (once) and start the course, or run the tests.
#
#   bash course.sh              set up, then open Jupyter Lab on chapters/
#   bash course.sh --headless [CHAPTER ...]
#                               set up, then execute every chapter (or those named) offline and
#                               write HTML beside it
#   bash course.sh test [ARGS]  set up, then run the test suite: tests/ and the solution
#                               notebooks under nbval (SAE_TEST_WORKERS=N: in N processes);
#                               ARGS go to pytest (e.g. a test file), in one process
#
# Setup makes .venv/ with torch 2.13.0 and requirements.txt, and installs this repo in editable
# mode. It is skipped while the requirements files and pyproject.toml are unchanged. Without an
# NVIDIA GPU it installs torch's CPU build (see install_torch); TORCH_INDEX=URL picks the index.
set -euo pipefail
cd "$(dirname "$0")"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"   # offline by default: no 45 s hub retries

PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
VENV=.venv
STAMP="$VENV/.installed"
want="$(cat requirements.txt requirements-core.txt pyproject.toml | "$PY" -c 'import hashlib,sys;print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"

CPU_INDEX=https://download.pytorch.org/whl/cpu

# On Linux the public index's torch is the CUDA build, with gigabytes of nvidia-* packages a
# machine without a GPU never uses. There we take the CPU build from PyTorch's CPU index, but
# only when a dry run shows the plain pin would pull nvidia-* packages: where pip already
# finds a CPU build (macOS, Windows, a local wheel as on CI machines) nothing else is fetched.
# TORCH_INDEX=URL overrides the choice (e.g. a CUDA index, or https://pypi.org/simple).
install_torch() {
  local pin="$1" pip="$VENV/bin/python -m pip --disable-pip-version-check -q"
  if [ -n "${TORCH_INDEX:-}" ]; then
    echo "[setup] torch from TORCH_INDEX=$TORCH_INDEX"
    $pip install "$pin" --index-url "$TORCH_INDEX"
  elif has_gpu || ! pulls_cuda "$pin"; then
    $pip install "$pin"
  else
    echo "[setup] no NVIDIA GPU: installing torch's CPU build from $CPU_INDEX (TORCH_INDEX=URL to choose)"
    $pip install "$pin" --index-url "$CPU_INDEX"
  fi
}

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

pulls_cuda() {  # would `pip install $1` bring nvidia-* or cuda-* packages? (a dry run reads metadata only)
  "$VENV/bin/python" -m pip --disable-pip-version-check install --dry-run --quiet --report - "$1" 2>/dev/null |
    "$VENV/bin/python" -c 'import json, sys
report = json.load(sys.stdin)
sys.exit(0 if any(i["metadata"]["name"].startswith(("nvidia-", "cuda-")) for i in report["install"]) else 1)'
}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV with $("$PY" --version)"
    "$PY" -m venv "$VENV"
  fi
  if [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
    return
  fi
  echo "[setup] installing the course's packages (a few minutes, once)"
  local pip="$VENV/bin/python -m pip --disable-pip-version-check -q"
  $pip install --upgrade pip
  # torch first, pinned: an unpinned torch would pull gigabytes of CUDA packages.
  "$VENV/bin/python" -c "import torch" 2>/dev/null || install_torch "torch==2.13.0"
  $pip install -r requirements.txt
  $pip install --no-deps -e .
  echo "$want" > "$STAMP"
  echo "[setup] done"
}

setup
case "${1:-}" in
  test)
    shift
    parallel=()
    if [ $# -eq 0 ]; then
      # SAE_TEST_WORKERS=N runs the whole suite in N processes (pytest-xdist), file by file,
      # the longest first (conftest.py). One by default, as CI runs it: with two, a kernel the
      # grader started once died before it answered (README, "Running the tests faster").
      # Given ARGS, it runs in one process.
      workers="${SAE_TEST_WORKERS:-1}"
      if [ "$workers" -gt 1 ]; then
        parallel=(-n "$workers" --dist loadfile --no-loadscope-reorder)
        # one thread per process: several processes each spinning a thread per core are
        # slower together than one alone (measured: 2.8x the CPU time on two cores)
        export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
      fi
    fi
    exec "$VENV/bin/python" -m pytest --nbval --nbval-current-env \
      --nbval-sanitize-with tests/sanitize.cfg "${parallel[@]}" "$@"
    ;;
  --headless)
    shift
    exec "$VENV/bin/python" -m utils.course headless "$@"
    ;;
  "")
    # Jupyter refuses to run as root (Docker, cloud machines) unless told it is meant.
    if [ "$(id -u)" = 0 ]; then root=--allow-root; else root=""; fi
    exec "$VENV/bin/jupyter" lab $root chapters/
    ;;
  *)
    echo "usage: bash course.sh [--headless [CHAPTER ...] | test [pytest args]]" >&2
    exit 2
    ;;
esac
