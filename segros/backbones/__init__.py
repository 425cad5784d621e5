"""Backbone registry: ``build_backbone(name, **cfg)`` for every UMM family behind the protocol.

Tiny families (train from scratch on a CPU, see :mod:`segros.backbones.tiny_common`):

* ``"tiny-showo"``  :class:`TinyShowo`  (Phi LLM, k-means patch codes, MaskGIT)
* ``"tiny-harmon"`` :class:`TinyHarmon` (Qwen2 LLM, PCA patch latents, MAR + diffusion head)

A tiny family is built offline: the text tokenizer from ``ShapesWorld(seed).vocabulary()`` (or
the given ``tokenizer``), the image tokenizer fitted on ``fit_images`` (uint8 [H, W, 3] images or
pixels [B, 3, H, W]; default the first ``n_fit`` renders of the shapes world's pretrain split).
Other keyword arguments are fields of the family's frozen config dataclass.

Real families register themselves with :func:`register` (a builder taking ``**cfg``), e.g. from
their own modules; :func:`load_backbone` reopens any tiny checkpoint folder and any run folder.
"""

from __future__ import annotations

import json
import os
from typing import Callable

from segros.backbones.base import Backbone, VisualTokens
from segros.backbones.tiny_harmon import TinyHarmon, TinyHarmonConfig
from segros.backbones.tiny_showo import TinyShowo, TinyShowoConfig

REGISTRY: dict[str, Callable[..., Backbone]] = {}


def register(name: str, builder: Callable[..., Backbone]) -> None:
    """Make ``build_backbone(name, **cfg)`` call ``builder(**cfg)``."""
    REGISTRY[name] = builder


def build_backbone(name: str, **cfg) -> Backbone:
    if name not in REGISTRY:
        raise ValueError(f"unknown backbone name {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name](**cfg)


def _fit_inputs(tokenizer, fit_images, n_fit, world_seed, image_size):
    """The text tokenizer and the fitting pixels of a tiny family (shapes world by default)."""
    import torch

    from segros.data.image_tokenizer import images_to_pixels
    from segros.data.tokenizer import build_text_tokenizer

    if tokenizer is None or fit_images is None:
        from segros.data.shapes import ShapesWorld
        world = ShapesWorld(image_size=image_size, seed=world_seed)
    if tokenizer is None:
        tokenizer = build_text_tokenizer(world.vocabulary())
    if fit_images is None:
        fit_images = [s.image for s in world.split("pretrain", n_fit)]
    pixels = fit_images if torch.is_tensor(fit_images) else images_to_pixels(fit_images)
    if pixels.shape[-1] != image_size or pixels.shape[-2] != image_size:
        raise ValueError(f"fit_images must be {image_size}x{image_size}, got {tuple(pixels.shape[-2:])}")
    return tokenizer, pixels


def build_tiny_showo(tokenizer=None, fit_images=None, n_fit=256, world_seed=0, **cfg) -> TinyShowo:
    from segros.data.image_tokenizer import fit_kmeans_tokenizer

    config = TinyShowoConfig(**cfg)
    tokenizer, pixels = _fit_inputs(tokenizer, fit_images, n_fit, world_seed, config.image_size)
    codes = fit_kmeans_tokenizer(pixels, config.num_codes, config.patch, seed=config.seed)
    return TinyShowo(config, tokenizer, codes)


def build_tiny_harmon(tokenizer=None, fit_images=None, n_fit=256, world_seed=0, **cfg) -> TinyHarmon:
    from segros.data.image_tokenizer import fit_patch_autoencoder

    config = TinyHarmonConfig(**cfg)
    tokenizer, pixels = _fit_inputs(tokenizer, fit_images, n_fit, world_seed, config.image_size)
    ae = fit_patch_autoencoder(pixels, config.latent_channels, config.patch)
    return TinyHarmon(config, tokenizer, ae)


register("tiny-showo", build_tiny_showo)
register("tiny-harmon", build_tiny_harmon)



# what each paper backbone loads besides its own checkpoint (without them those parts stay random)
REQUIRED_PARTS = {
    "harmon": {"vae_checkpoint": "kl16.ckpt, the KL-16 VAE (defaults to the checkpoint when that is a folder or hub id)",
               "llm_path": "the Qwen2.5-Instruct folder: tokenizer and LLM config"},
    "showo": {"vq_checkpoint": "the MAGVIT-v2 tokenizer (magvitv2)", "clip_path": "CLIP ViT-L/14-336",
              "llm_path": "the Phi-1.5 folder: tokenizer and config"},
    "openuni": {"mllm_path": "InternVL3-1B/2B, remote-code or -hf layout", "sana_path": "the SANA diffusers folder",
                "dcae_path": "the DC-AE f32c32 diffusers folder"},
}


def _real(family: str, size: str):
    """A builder for a paper backbone: the adapter with its official checkpoint loaded.

    ``checkpoint`` (a local path or hub id) is required: a random-weight model at paper size is
    never what a user means (tests build tiny random versions with ``build_harmon("tiny")`` etc.).
    Harmon also takes ``vae_checkpoint`` and ``llm_path`` (a folder or hub id as ``checkpoint``, such
    as ``wusize/harmon``, gives its ``harmon_<size>.pth``, or ``checkpoint_file``); Show-o
    ``vq_checkpoint``, ``clip_path`` (the CLIP ViT-L/14-336 folder or hub id; without it CLIP keeps
    random weights) and ``llm_path``;
    OpenUni ``mllm_path`` (InternVL3, either layout), ``sana_path`` and ``dcae_path`` (diffusers
    folders). Everything else overrides the adapter's config.
    """

    def build(checkpoint: str | None = None, **cfg) -> Backbone:
        if not checkpoint:
            raise ValueError(
                f"the {family}-{size} backbone needs its official checkpoint: pass "
                f"--set backbone_kwargs='{{\"checkpoint\": \"/path/or/hub-id\"}}' (see README, real backbones)")
        if family == "harmon" and "vae_checkpoint" not in cfg and not os.path.isfile(checkpoint):
            cfg["vae_checkpoint"] = checkpoint  # a folder or hub id (wusize/harmon) holds kl16.ckpt too
        missing = [k for k in REQUIRED_PARTS[family] if not cfg.get(k)] if size != "tiny" else []
        if missing:  # the parts an official checkpoint does not hold would silently stay random
            raise ValueError(f"the {family}-{size} backbone also needs {', '.join(missing)} in backbone_kwargs "
                             f"({'; '.join(REQUIRED_PARTS[family][k] for k in missing)}); see README, real backbones")
        from . import checkpoints

        if family == "harmon":
            from .harmon import build_harmon

            vae = cfg.pop("vae_checkpoint", None)
            name = cfg.pop("checkpoint_file", f"harmon_{size}.pth")  # a folder / hub id holds both sizes
            model = build_harmon(size, **cfg)
            checkpoints.load_harmon(model, checkpoint, vae, checkpoint_file=name)
        elif family == "showo":
            from .showo import build_showo

            vq, clip = cfg.pop("vq_checkpoint", None), cfg.pop("clip_path", None)
            model = build_showo(size, **cfg)
            checkpoints.load_showo(model, checkpoint, vq, clip_path=clip)
        else:
            from .openuni import build_openuni

            sana, dcae = cfg.pop("sana_path", None), cfg.pop("dcae_path", None)
            model = build_openuni(size, **cfg)
            checkpoints.load_openuni(model, checkpoint, sana_path=sana, dcae_path=dcae)
        return model

    build.__name__ = f"build_{family}_{size.replace('.', '_')}"
    return build


for _family, _sizes in (("harmon", ("0.5b", "1.5b")), ("showo", ("256", "512")), ("openuni", ("1.6b", "3.6b"))):
    for _size in _sizes:
        register(f"{_family}-{_size}", _real(_family, _size))

TINY_CLASSES = {"tiny-showo": TinyShowo, "tiny-harmon": TinyHarmon}


def load_backbone(folder: str) -> Backbone:
    """Reopen a checkpoint folder: one written by ``save_pretrained`` (family read from config.json),
    or a run folder of :mod:`segros.runs` (any family, real ones included): the backbone its
    ``TrainConfig`` names, built as training built it, with the run's ``model.safetensors`` (a
    finished run) or else its latest ``checkpoint/``."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"folder {folder!r} holds no config.json")
    with open(path) as f:
        meta = json.load(f)
    if isinstance(meta.get("config"), dict) and "hash" in meta:  # a run folder (segros.runs.prepare)
        from segros import runs
        from segros.presets import TrainConfig
        from segros.train import make_backbone

        weights = [w for w in (os.path.join(folder, "model.safetensors"),
                               os.path.join(folder, runs.CHECKPOINT, "model.safetensors")) if os.path.isfile(w)]
        if not weights:
            none = meta["config"].get("method") == "none"  # "w/o SFT": never trained, its base's weights
            raise ValueError(f"run folder {folder!r} holds no model.safetensors and no checkpoint"
                             + (" (method 'none': reopen its init_from base run)" if none else " yet"))
        model = make_backbone(TrainConfig.from_dict(meta["config"]))
        runs.load_weights(model, weights[0])
        return model.eval()
    family = meta.get("family")
    if family not in TINY_CLASSES:
        raise ValueError(f"{folder!r} holds family {family!r}; loadable: {sorted(TINY_CLASSES)}")
    return TINY_CLASSES[family].from_pretrained(folder)


__all__ = ["Backbone", "VisualTokens", "TinyShowo", "TinyShowoConfig", "TinyHarmon", "TinyHarmonConfig",
           "REGISTRY", "register", "build_backbone", "load_backbone", "build_tiny_showo", "build_tiny_harmon"]
