#!/usr/bin/env bash
# Set up labgrader on a fresh machine (python3 and pip are all it needs):
# bubblewrap and libseccomp2 for the sandbox, a virtualenv in .venv, torch, and the package with its test extra.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LABGRADER_VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_SPEC=${LABGRADER_TORCH:-torch==2.13.0}
say() { echo "bootstrap: $*" >&2; }

if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing bubblewrap (the sandbox for student notebooks)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
  else
    say "bubblewrap (bwrap) is missing; install it (Debian/Ubuntu: sudo apt-get install bubblewrap), or grade trusted notebooks with --no-sandbox"
  fi
fi

if ! ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing libseccomp2 (the sandbox's seccomp filter, through pyseccomp)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libseccomp2 >/dev/null
  else
    say "libseccomp2 is missing; install it (Debian/Ubuntu: sudo apt-get install libseccomp2), or grade trusted notebooks with --no-sandbox"
  fi
fi

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing chromium (the browser tests of labgrader review drive it through Playwright)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    say "chromium is missing; the browser tests need it (Debian/Ubuntu: sudo apt-get install chromium)"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV (it sees the system's packages, so an installed torch is reused)"
  "$PY" -m venv --system-site-packages "$VENV"
fi
pip_install() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@"; }

# torch first: a plain 'torch' requirement would pull the newest CUDA build on a CPU machine.
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  say "installing $TORCH_SPEC"
  pip_install "$TORCH_SPEC"
fi

stamp="$VENV/.labgrader-installed"
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing labgrader and its test extra into $VENV"
  pip_install -e ".[test]"
  echo "$want" > "$stamp"
fi
say "ready: $VENV/bin/labgrader ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")'))"
