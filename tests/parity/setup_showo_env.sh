#!/usr/bin/env bash
# Build the pinned environment the Show-o parity test runs the official code in.
#
#   bash tests/parity/setup_showo_env.sh [/tmp/showo-env]
#   git clone <showlab/Show-o> /tmp/showo-official
#   git clone <wishhyt/reconstruction-alignment> /tmp/reca-official     # optional: Reca's Show-o layout
#   SEGROS_PARITY_SHOWO_REPO=/tmp/showo-official \
#   SEGROS_PARITY_SHOWO_PYTHON=/tmp/showo-env/bin/python \
#   SEGROS_PARITY_SHOWO_RECA_REPO=/tmp/reca-official pytest tests/parity -k showo -s
#
# Pins: Show-o's requirements.txt where its model code (models/, training/prompting_utils.py,
# training/utils.py, llava/llava/conversation.py) needs them: transformers 4.41.1 (tokenizers 0.19.1,
# huggingface-hub 0.23.2), diffusers 0.30.1 (models/modeling_utils.py), einops 0.6.0, omegaconf
# 2.3.0, jaxtyping 0.2.28 and typeguard 2.13.3 (models/misc.py), safetensors 0.4.3, pillow 10.3.0;
# but this project's CPU torch 2.13.0 instead of Show-o's torch 2.2.1, and numpy 1.26.4 instead of
# 1.24.4. torchvision is installed without its dependencies (with them pip replaces the CPU torch
# by a CUDA build); its wheel is CUDA-linked anyway, and showo_driver.py stubs the two registration
# modules that fail to import beside a CPU torch. Nothing here downloads a model: the driver builds
# every module from local tiny configs.
set -euo pipefail
ENV=${1:-/tmp/showo-env}
PY=${PYTHON:-python3}
"$PY" -m venv "$ENV"
"$ENV/bin/pip" install -q --upgrade pip
"$ENV/bin/pip" install -q "torch==2.13.0" "numpy==1.26.4"
"$ENV/bin/pip" install -q "transformers==4.41.1" "tokenizers==0.19.1" "huggingface-hub==0.23.2" \
    "diffusers==0.30.1" "einops==0.6.0" "omegaconf==2.3.0" "jaxtyping==0.2.28" "typeguard==2.13.3" \
    "safetensors==0.4.3" "pillow==10.3.0"
"$ENV/bin/pip" install -q --no-deps "torchvision==0.29.1"
"$ENV/bin/python" - <<'PY'
import torch, transformers, diffusers
assert not torch.version.cuda, f"CUDA torch {torch.__version__} was pulled in; reinstall torch==2.13.0"
print("showo parity env:", torch.__version__, "transformers", transformers.__version__, "diffusers", diffusers.__version__)
PY
