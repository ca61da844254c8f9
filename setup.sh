#!/usr/bin/env bash
# Creates .venv at the repository root and installs the pinned stack into it.
# Idempotent: does nothing when requirements.txt has not changed since the last install.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
stamp=.venv/.requirements.sha256
wanted=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch first, pinned: any other spec would pull a multi-GB CUDA build.
.venv/bin/pip install --quiet --disable-pip-version-check torch==2.13.0 2> >(grep -v "is ignored" >&2)
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt 2> >(grep -v "is ignored" >&2)
echo "$wanted" > "$stamp"
echo "installed the pinned stack into .venv"
