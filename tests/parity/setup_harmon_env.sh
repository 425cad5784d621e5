#!/usr/bin/env bash
# Build the pinned environment the Harmon parity test runs the official code in (docs/adapters/harmon.md).
#
#   bash tests/parity/setup_harmon_env.sh [/tmp/harmon-env]
#   git clone <wusize/Harmon> /tmp/harmon-official   # checked at commit 4eb6087
#   SEGROS_PARITY_HARMON_REPO=/tmp/harmon-official \
#   SEGROS_PARITY_HARMON_PYTHON=/tmp/harmon-env/bin/python pytest tests/parity -k harmon -s
#
# Pins: Harmon's own (transformers 4.45.2, timm 0.9.12) on the CPU torch this project uses.
# timm and torchvision are installed without their dependencies: with them pip replaces the CPU torch by a
# CUDA build. Its wheel is CUDA-linked anyway; harmon_driver.py stubs the two registration modules
# that fail to import beside a CPU torch.
set -euo pipefail
ENV=${1:-/tmp/harmon-env}
PY=${PYTHON:-python3}
"$PY" -m venv "$ENV"
"$ENV/bin/pip" install -q --upgrade pip
"$ENV/bin/pip" install -q "torch==2.13.0" "numpy<3"
"$ENV/bin/pip" install -q "transformers==4.45.2" "einops" "safetensors" "pyyaml" "scipy" "pillow"
"$ENV/bin/pip" install -q --no-deps "timm==0.9.12" "torchvision==0.29.1"
"$ENV/bin/python" - <<'PY'
from importlib.metadata import version
import torch, transformers  # timm is not imported: it needs the driver's torchvision stubs
assert not torch.version.cuda, f"CUDA torch {torch.__version__} was pulled in; reinstall torch==2.13.0"
print("harmon parity env:", torch.__version__, "transformers", transformers.__version__, "timm", version("timm"))
PY
