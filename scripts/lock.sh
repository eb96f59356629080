#!/usr/bin/env bash
# Regenerates the locks in requirements/ from the ranges in pyproject.toml, with hashes (uv pip compile).
#   bash scripts/lock.sh             keep every version already locked where the ranges still allow it
#   bash scripts/lock.sh --upgrade   move everything to the newest release the ranges allow (then run the tests!)
# torch is left out of the locks: the installer picks its build (requirements/torch.txt's release: the CPU build in
# CI, a CUDA build on a GPU box; see the README). The CPU wheel is only used here to resolve torch's dependencies.
#   requirements/dev.lock     — everything for development, the tests and CI (extras: worker, s3, dev)
#   requirements/worker.lock  — a worker (extras: worker, s3), at the same versions as dev.lock
#   requirements/bot.lock     — the bot alone (extra: s3; no ML stack), at the same versions as dev.lock
set -euo pipefail
cd "$(dirname "$0")/.."

uv_version="0.13.9"
uv=".venv/bin/uv"
[ -x "$uv" ] && "$uv" --version | grep -q "$uv_version" || {
  python3 -m venv .venv 2>/dev/null || true
  .venv/bin/pip install -q "uv==$uv_version"
}
# The torch pin lives in requirements/torch.txt (dev.sh, the Dockerfile and `atelier worker --check` read it).
torch_pin=requirements/torch.txt

common=(--python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes --no-emit-package torch
        --override "$torch_pin" --index-strategy unsafe-best-match --quiet "$@")
# The CPU wheel of torch lies in /opt/wheels on the project's build machines; elsewhere uv reads PyPI's metadata.
[ -d /opt/wheels ] && common+=(--find-links /opt/wheels)

"$uv" pip compile pyproject.toml --extra worker --extra s3 --extra dev "${common[@]}" -o requirements/dev.lock
"$uv" pip compile pyproject.toml --extra worker --extra s3 -c requirements/dev.lock "${common[@]}" \
  -o requirements/worker.lock
"$uv" pip compile pyproject.toml --extra s3 -c requirements/dev.lock "${common[@]}" -o requirements/bot.lock
for f in dev worker bot; do echo "requirements/$f.lock: $(grep -c '==' "requirements/$f.lock") packages"; done
