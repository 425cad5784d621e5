"""UMM families behind one protocol (:mod:`segros.backbones.base`), built by name
(:mod:`segros.backbones.registry`): the tiny families trained on a CPU and the real Show-o,
Harmon and OpenUni adapters on their official checkpoints (``docs/adapters/``)."""

from segros.backbones.base import Backbone, VisualTokens
from segros.backbones.registry import (REGISTRY, build_backbone, build_tiny_harmon, build_tiny_showo, check_backbone,
                                       from_config, load_backbone, real_builder, register)
from segros.backbones.tiny_harmon import TinyHarmon, TinyHarmonConfig
from segros.backbones.tiny_showo import TinyShowo, TinyShowoConfig

__all__ = ["Backbone", "VisualTokens", "TinyShowo", "TinyShowoConfig", "TinyHarmon", "TinyHarmonConfig",
           "REGISTRY", "register", "build_backbone", "build_tiny_showo", "build_tiny_harmon", "real_builder",
           "from_config", "check_backbone", "load_backbone"]
