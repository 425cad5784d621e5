"""The backbone registry: build a family by name or from a run's config, and check what it can do.

``build_backbone(name, **cfg)`` calls the builder registered under ``name``:

* ``"tiny-showo"`` / ``"tiny-harmon"``: the tiny families, built offline. The text tokenizer comes
  from ``ShapesWorld(world_seed).vocabulary()`` (or the given ``tokenizer``), the image tokenizer is
  fitted on ``fit_images`` (uint8 [H, W, 3] images or pixels [B, 3, H, W]; default the first
  ``n_fit`` renders of the shapes world's pretrain split). Other keyword arguments are fields of
  the family's frozen config dataclass.
* ``"harmon-0.5b"``, ``"harmon-1.5b"``, ``"showo-256"``, ``"showo-512"``, ``"openuni-1.6b"``,
  ``"openuni-3.6b"``: a real adapter with its official checkpoint loaded (:func:`real_builder`).

:func:`from_config` builds the backbone a :class:`segros.presets.TrainConfig` names (what training
and reopening a run do); :func:`check_backbone` refuses a config the backbone cannot serve before
any work starts; :func:`load_backbone` reopens a tiny family saved with ``save_pretrained``.
"""

from __future__ import annotations

import json
import os
from typing import Callable

import torch

from segros.backbones import checkpoints
from segros.backbones.base import Backbone
from segros.backbones.harmon import build_harmon
from segros.backbones.methods import method_backbone_kwargs
from segros.backbones.openuni import build_openuni
from segros.backbones.showo import build_showo
from segros.backbones.tiny_harmon import TinyHarmon, TinyHarmonConfig
from segros.backbones.tiny_showo import TinyShowo, TinyShowoConfig
from segros.data.image_tokenizer import fit_kmeans_tokenizer, fit_layout_color_codec, fit_patch_autoencoder, images_to_pixels
from segros.data.shapes import make_world
from segros.data.tokenizer import build_text_tokenizer
from segros.presets import TrainConfig

REGISTRY: dict[str, Callable[..., Backbone]] = {}


def register(name: str, builder: Callable[..., Backbone]) -> None:
    """Make ``build_backbone(name, **cfg)`` call ``builder(**cfg)``."""
    REGISTRY[name] = builder


def build_backbone(name: str, **cfg) -> Backbone:
    if name not in REGISTRY:
        raise ValueError(f"unknown backbone name {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name](**cfg)


# -----------------------------------------------------------------------------
# the tiny families

def _fit_inputs(tokenizer, fit_images, n_fit, world_seed, image_size, world="v1", world_kwargs=None):
    """The text tokenizer and the fitting pixels of a tiny family (shapes world ``world`` by default)."""
    if tokenizer is None or fit_images is None:
        world = make_world(world, image_size=image_size, seed=world_seed, **(world_kwargs or {}))
    if tokenizer is None:
        tokenizer = build_text_tokenizer(world.vocabulary())
    if fit_images is None:
        fit_images = [s.image for s in world.split("pretrain", n_fit)]
    pixels = fit_images if torch.is_tensor(fit_images) else images_to_pixels(fit_images)
    if pixels.shape[-1] != image_size or pixels.shape[-2] != image_size:
        raise ValueError(f"fit_images must be {image_size}x{image_size}, got {tuple(pixels.shape[-2:])}")
    return tokenizer, pixels


def build_tiny_showo(tokenizer=None, fit_images=None, n_fit=256, world_seed=0, world="v1", world_kwargs=None,
                     **cfg) -> TinyShowo:
    config = TinyShowoConfig(**cfg)
    tokenizer, pixels = _fit_inputs(tokenizer, fit_images, n_fit, world_seed, config.image_size, world,
                                    world_kwargs)
    if config.codec == "layout_color":
        if config.num_codes != config.n_layouts * config.n_colors:
            raise ValueError(f"codec layout_color needs num_codes = n_layouts · n_colors = "
                             f"{config.n_layouts * config.n_colors}, got {config.num_codes}")
        codes = fit_layout_color_codec(pixels, config.n_layouts, config.n_colors, config.patch)
    else:
        codes = fit_kmeans_tokenizer(pixels, config.num_codes, config.patch, seed=config.seed)
    return TinyShowo(config, tokenizer, codes)


def build_tiny_harmon(tokenizer=None, fit_images=None, n_fit=256, world_seed=0, world="v1", world_kwargs=None,
                     **cfg) -> TinyHarmon:
    config = TinyHarmonConfig(**cfg)
    tokenizer, pixels = _fit_inputs(tokenizer, fit_images, n_fit, world_seed, config.image_size, world,
                                    world_kwargs)
    if config.codec == "layout_color":
        ae = fit_layout_color_codec(pixels, patch=config.patch, continuous=True)
        if ae.channels != config.latent_channels:
            raise ValueError(f"codec layout_color gives {ae.channels} latent channels, config.latent_channels={config.latent_channels}")
    else:
        ae = fit_patch_autoencoder(pixels, config.latent_channels, config.patch)
    return TinyHarmon(config, tokenizer, ae)


register("tiny-showo", build_tiny_showo)
register("tiny-harmon", build_tiny_harmon)
TINY_CLASSES = {"tiny-showo": TinyShowo, "tiny-harmon": TinyHarmon}


# -----------------------------------------------------------------------------
# the real families, on their official checkpoints

# what each paper backbone loads besides its own checkpoint (without them those parts stay random)
REQUIRED_PARTS = {
    "harmon": {"vae_checkpoint": "kl16.ckpt, the KL-16 VAE (defaults to the checkpoint when that is a folder or hub id)",
               "llm_path": "the Qwen2.5-Instruct folder: tokenizer and LLM config"},
    "showo": {"vq_checkpoint": "the MAGVIT-v2 tokenizer (magvitv2)", "clip_path": "CLIP ViT-L/14-336",
              "llm_path": "the Phi-1.5 folder: tokenizer and config"},
    "openuni": {"mllm_path": "InternVL3-1B/2B, remote-code or -hf layout", "sana_path": "the SANA diffusers folder",
                "dcae_path": "the DC-AE f32c32 diffusers folder"},
}


def _load_harmon(size, checkpoint, cfg):
    vae = cfg.pop("vae_checkpoint", None)
    name = cfg.pop("checkpoint_file", f"harmon_{size}.pth")  # a folder / hub id holds both sizes
    model = build_harmon(size, **cfg)
    return checkpoints.load_harmon(model, checkpoint, vae, checkpoint_file=name)


def _load_showo(size, checkpoint, cfg):
    vq, clip = cfg.pop("vq_checkpoint", None), cfg.pop("clip_path", None)
    model = build_showo(size, **cfg)
    return checkpoints.load_showo(model, checkpoint, vq, clip_path=clip)


def _load_openuni(size, checkpoint, cfg):
    sana, dcae = cfg.pop("sana_path", None), cfg.pop("dcae_path", None)
    model = build_openuni(size, **cfg)
    return checkpoints.load_openuni(model, checkpoint, sana_path=sana, dcae_path=dcae)


LOADERS = {"harmon": _load_harmon, "showo": _load_showo, "openuni": _load_openuni}


def real_builder(family: str, size: str):
    """A builder for a paper backbone: the adapter with its official checkpoint loaded.

    ``checkpoint`` (a local path or hub id) is required: a random-weight model at paper size is
    never what a user means (tests build tiny random versions with ``build_harmon("tiny")`` etc.).
    Harmon also takes ``vae_checkpoint`` and ``llm_path`` (a folder or hub id as ``checkpoint``, such
    as ``wusize/harmon``, gives its ``harmon_<size>.pth``, or ``checkpoint_file``); Show-o
    ``vq_checkpoint``, ``clip_path`` (the CLIP ViT-L/14-336 folder or hub id) and ``llm_path``;
    OpenUni ``mllm_path`` (InternVL3, either layout), ``sana_path`` and ``dcae_path`` (diffusers
    folders). Everything else overrides the adapter's config. ``size="tiny"`` skips the check of
    the parts (the tests' tiny random builds in the official file layouts).
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
        return LOADERS[family](size, checkpoint, cfg)

    build.__name__ = f"build_{family}_{size.replace('.', '_')}"
    return build


for _family, _sizes in (("harmon", ("0.5b", "1.5b")), ("showo", ("256", "512")), ("openuni", ("1.6b", "3.6b"))):
    for _size in _sizes:
        register(f"{_family}-{_size}", real_builder(_family, _size))


# -----------------------------------------------------------------------------
# from a run's config, and what a backbone can do

def from_config(config: TrainConfig) -> Backbone:
    """The backbone ``config`` names, built as training builds it; a clear RuntimeError when it cannot be
    built (a paper backbone without its checkpoint, a GPU-only part on a CPU, ...).

    A real family gets the adapter settings of ``config.method`` under ``backbone_kwargs``
    (:mod:`segros.backbones.methods`: Reca's layout for the Reca rows); a Reca run without Reca's
    instruction list stops with :class:`segros.backbones.methods.MissingReconPrompts`."""
    kwargs = method_backbone_kwargs(config.method, config.backbone, config.backbone_kwargs)
    if config.backbone.startswith("tiny-"):  # tiny families fit their offline tokenizers on this world
        kwargs = {"world_seed": config.world_seed, "image_size": config.image_size, **kwargs}
        if config.world != "v1":
            kwargs = {"world": config.world, **kwargs}
        if config.world_kwargs:
            kwargs = {"world_kwargs": dict(config.world_kwargs), **kwargs}
    try:
        return build_backbone(config.backbone, **kwargs)
    except (KeyError, ValueError, TypeError, OSError, NotImplementedError, ImportError) as e:
        hint = ""
        if not config.backbone.startswith("tiny"):
            hint = (" Paper presets run the real adapters on their official checkpoints, on a GPU"
                    + ("" if torch.cuda.is_available() else " (none found here)") + ".")
        raise RuntimeError(f"cannot build backbone {config.backbone!r}: {e}.{hint}") from e


def check_backbone(backbone, config: TrainConfig, training: bool = True) -> None:
    """Fail before any work when ``config`` asks for what ``backbone`` cannot do (not hours into a run).

    λ > 0 needs an I2T loss (OpenUni trains none: ``trains_i2t = False``); ``eval_qa > 0`` needs
    an ``answer()`` of its own (the real adapters have none: Table 2's understanding benchmarks
    need hub models). ``training=False`` checks only what evaluation needs.
    """
    name = getattr(backbone, "family", type(backbone).__name__)
    if training and config.lam > 0 and config.i2t_micro > 0 and not getattr(backbone, "trains_i2t", True):
        raise ValueError(f"{name} trains no I2T loss (Table 7: λ = 0); set lam=0 (got lam={config.lam})")
    if config.eval_qa > 0 and getattr(type(backbone), "answer", Backbone.answer) is Backbone.answer:
        raise ValueError(f"{name} has no answer() for the QA evaluation; set eval_qa=0 (got {config.eval_qa})")


def load_backbone(folder: str) -> Backbone:
    """Reopen a tiny family saved with ``save_pretrained`` (family read from its config.json). A run
    folder of the store is reopened by :func:`segros.pipeline.open_run`."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"folder {folder!r} holds no config.json")
    with open(path) as f:
        meta = json.load(f)
    if isinstance(meta.get("config"), dict) and "hash" in meta:
        raise ValueError(f"{folder!r} is a run folder of the store; reopen it with segros.pipeline.open_run")
    family = meta.get("family")
    if family not in TINY_CLASSES:
        raise ValueError(f"{folder!r} holds family {family!r}; loadable: {sorted(TINY_CLASSES)}")
    return TINY_CLASSES[family].from_pretrained(folder)
