#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv on first use, installs the locked package set
# (requirements/dev.lock; torch pinned to the 2.13.0 CPU build, which is what CI uses; on a GPU box install a
# CUDA torch into .venv first, see the README), then runs the requested job.
#   bash scripts/dev.sh demo   — the offline demo (tiny models, no Discord, no GPU)
#   bash scripts/dev.sh test   — the test suite (on every core)
#   bash scripts/dev.sh run    — the bot + worker + embedded Redis (needs ATELIER_DISCORD_TOKEN for the bot)
set -euo pipefail
cd "$(dirname "$0")/.."

venv=".venv"
lock="requirements/dev.lock"
stamp="$venv/.installed-$(cat pyproject.toml "$lock" requirements/torch.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  python3 -m venv "$venv"
  # A plain `torch` requirement would pull a multi-GB CUDA build; keep an existing torch, else pin the CPU one.
  "$venv/bin/python" -c "import torch" 2>/dev/null || "$venv/bin/pip" install -q -r requirements/torch.txt
  # Exactly the tested set (hash-checked), then Atelier itself without resolving anything again.
  "$venv/bin/pip" install -q --require-hashes --no-deps -r "$lock"
  "$venv/bin/pip" install -q --no-deps --no-build-isolation -e .
  "$venv/bin/pip" check
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"

cmd="${1:-demo}"; shift || true
case "$cmd" in
  demo) exec atelier demo "$@" ;;
  test) exec python -m pytest -q -n auto "$@" ;;  # one pytest-xdist worker per core; add -n 0 to debug
  run)  exec atelier run "$@" ;;
  *)    exec atelier "$cmd" "$@" ;;
esac
