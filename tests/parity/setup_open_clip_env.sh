#!/usr/bin/env bash
# Build an environment where open_clip imports, to run the GenEval scorer's open_clip colour tests
# (tests/test_geneval_detect.py, skipped where open_clip does not import):
#
#   bash tests/parity/setup_open_clip_env.sh [/tmp/open-clip-env]
#   PYTHONPATH=$PWD /tmp/open-clip-env/bin/python -m pytest tests/test_geneval_detect.py -k "open_clip or same_weights"
#
# open_clip needs torchvision, and the registry's torchvision only loads beside the registry's (CUDA-built)
# torch, not beside the CPU torch of the project's venv; the CUDA build runs on a CPU. About 4 GB with the
# CUDA libraries. The package itself is taken from PYTHONPATH; only what these tests import is installed.
set -euo pipefail
ENV=${1:-/tmp/open-clip-env}
PY=${PYTHON:-python3}
"$PY" -m venv "$ENV"
"$ENV/bin/pip" install -q --upgrade pip
"$ENV/bin/pip" install -q "torch==2.14.1" "torchvision==0.29.1" "open_clip_torch" "transformers>=4.45" \
  "numpy" "pillow" "tqdm" "pandas" "pytest"
"$ENV/bin/python" - <<'PY'
import open_clip, torch, torchvision, transformers
from torchvision.ops import nms  # the operator that fails beside a CPU-only torch
print("open_clip env:", torch.__version__, "torchvision", torchvision.__version__, "open_clip", open_clip.__version__,
      "transformers", transformers.__version__)
PY
