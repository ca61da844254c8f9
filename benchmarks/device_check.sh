#!/usr/bin/env bash
# The GPU checks in one call, for a machine with an NVIDIA GPU and PyTorch but not our .venv
# (the workplace's device tool; README "Benchmarks" says how to prepare and send it):
#   1. benchmarks.speed on the GPU: full evaluation against its matrix-product floor, MRdIB's
#      objective alone, every backbone's base and MRdIB epochs side by side on real Baby;
#   2. the model tests on the GPU: every backbone x variant trains and scores, alpha = 0 gives the
#      base model's losses exactly, same seed same metrics, a killed run resumes to the same metrics,
#      sparse products bitwise repeatable;
#   3. MRdIB's objective eager against torch.compile (inductor's GPU backend).
# Usage: bash benchmarks/device_check.sh [BABY_FOLDER]   (logs under $OUT, else /tmp/device-check)
# Python packages that machine lacks travel as wheels in .gpu/whl (pydantic and its needs).
set -uo pipefail
data=${1:-.gpu/baby}
out=${OUT:-/tmp/device-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if compgen -G ".gpu/whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
nvidia-smi -L
python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name())"
status=0  # every part runs; the script fails if any part failed (pipefail: the command's, not tee's)
python3 -m benchmarks.speed --device cuda --data-dir "$data" --rounds 3 2>&1 | tee "$out/speed.log" || status=1
MRDIB_TEST_DEVICE=cuda python3 -m pytest -q -p no:cacheprovider tests/integration/test_backbones.py \
  tests/integration/test_trainer.py tests/unit/test_sparse_graph.py 2>&1 | tee "$out/tests.log" || status=1
python3 -m benchmarks.speed --device cuda --compile-objective 2>&1 | tee "$out/compile.log" || status=1
exit $status
