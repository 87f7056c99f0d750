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

# apt_install PACKAGE WHAT [OTHERWISE]: a Debian package installed when run as root, else how to get it.
apt_updated=
apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing $1 ($2)"
    [ -n "$apt_updated" ] || { apt-get update -qq >/dev/null; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
  else
    say "$1 is missing ($2); install it (Debian/Ubuntu: sudo apt-get install $1)${3:+, $3}"
  fi
}
command -v bwrap >/dev/null 2>&1 ||
  apt_install bubblewrap "the sandbox for student notebooks" "or grade trusted notebooks with --no-sandbox"
ldconfig -p 2>/dev/null | grep 'libseccomp\.so\.2' >/dev/null ||
  apt_install libseccomp2 "the sandbox's seccomp filter, through pyseccomp" "or grade trusted notebooks with --no-sandbox"
[ -x /usr/bin/chromium ] ||
  apt_install chromium "the browser tests (labgrader review, the feedback and summary pages) drive it through Playwright"

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
