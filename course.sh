#!/usr/bin/env bash
# SAE Circuits: set up (once) and start the course, or run the tests.
#
#   bash course.sh              set up, then open Jupyter Lab on chapters/
#   bash course.sh --headless   set up, then execute every chapter offline and write HTML beside it
#   bash course.sh test [ARGS]  set up, then run the test suite: tests/ and the solution
#                               notebooks under nbval (ARGS go to pytest, e.g. a test file)
#
# Setup makes .venv/ with torch 2.13.0 (CPU build) and requirements.txt, and installs this
# repo in editable mode. It is skipped while the requirements files and pyproject.toml are unchanged.
set -euo pipefail
cd "$(dirname "$0")"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"   # offline by default: no 45 s hub retries

PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
VENV=.venv
STAMP="$VENV/.installed"
want="$(cat requirements.txt requirements-core.txt pyproject.toml | "$PY" -c 'import hashlib,sys;print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"

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
  "$VENV/bin/python" -c "import torch" 2>/dev/null || $pip install "torch==2.13.0"
  $pip install -r requirements.txt
  $pip install --no-deps -e .
  echo "$want" > "$STAMP"
  echo "[setup] done"
}

setup
case "${1:-}" in
  test)
    shift
    exec "$VENV/bin/python" -m pytest --nbval --nbval-current-env \
      --nbval-sanitize-with tests/sanitize.cfg "$@"
    ;;
  --headless)
    exec "$VENV/bin/python" -m utils.course
    ;;
  "")
    exec "$VENV/bin/jupyter" lab chapters/
    ;;
  *)
    echo "usage: bash course.sh [--headless | test [pytest args]]" >&2
    exit 2
    ;;
esac
