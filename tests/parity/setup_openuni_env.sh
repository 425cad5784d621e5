#!/usr/bin/env bash
# Build the pinned environment the OpenUni parity test runs the official code in.
#
#   bash tests/parity/setup_openuni_env.sh [/tmp/openuni-env]
#   git clone <wusize/OpenUni> /tmp/openuni-official
#   SEGROS_PARITY_OPENUNI_REPO=/tmp/openuni-official \
#   SEGROS_PARITY_OPENUNI_PYTHON=/tmp/openuni-env/bin/python pytest tests/parity -k openuni -s
#
# Pins: OpenUni names no versions (README: mmengine, xtuner, transformers, torch, flash_attn); Reca's
# OpenUni/requirement.txt pins transformers 4.45.2 and timm 0.9.12 (torch 2.3.0, xtuner 0.1.23,
# flash-attn 2.6.3, deepspeed 0.16.7 for training). The model code needs: transformers (remote-code
# InternVLChatModel, connector), diffusers >= 0.32 (SanaTransformer2DModel, AutoencoderDC, SanaPipeline,
# DPMSolverMultistepScheduler with flow sigmas; 0.33.1 is the release of OpenUni's time), timm
# (timm.layers.DropPath in modeling_intern_vit.py) and einops. mmengine, xtuner and peft are only
# imported for the registry, BaseModel, print_log, guess_load_checkpoint and LoraConfig;
# openuni_driver.py stubs them. flash-attn is absent, so InternViT and the LLM fall back to eager
# attention (modeling_internvl_chat.py: use_flash_attn and has_flash_attn) and the driver builds the
# connector with _attn_implementation="eager". The CPU torch this project uses stands in for torch
# 2.3.0 (no build for this Python). timm and torchvision are installed without their dependencies
# (with them pip replaces the CPU torch by a CUDA build); the torchvision wheel is CUDA-linked anyway,
# and the driver stubs the two registration modules that fail to import beside a CPU torch.
# Nothing here downloads a model: the driver builds every module from local tiny configs.
set -euo pipefail
ENV=${1:-/tmp/openuni-env}
PY=${PYTHON:-python3}
"$PY" -m venv "$ENV"
"$ENV/bin/pip" install -q --upgrade pip
"$ENV/bin/pip" install -q "torch==2.13.0" "numpy<2"
"$ENV/bin/pip" install -q "transformers==4.45.2" "tokenizers==0.20.3" "huggingface-hub==0.27.1" \
    "diffusers==0.33.1" "einops==0.8.0" "safetensors==0.4.5" "sentencepiece" "pyyaml" "pillow" "packaging"
"$ENV/bin/pip" install -q --no-deps "timm==0.9.12" "torchvision==0.29.1"
"$ENV/bin/python" - <<'PY'
import sys, types
for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
    sys.modules[name] = types.ModuleType(name)  # as openuni_driver.py does
import torch, transformers, diffusers, timm
assert not torch.version.cuda, f"CUDA torch {torch.__version__} was pulled in; reinstall torch==2.13.0"
print("openuni parity env:", torch.__version__, "transformers", transformers.__version__,
      "diffusers", diffusers.__version__, "timm", timm.__version__)
PY
