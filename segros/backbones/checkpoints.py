"""Loading official checkpoints into the real backbones, from a local path or a hub id.

Nothing here renames keys except OpenUni's MLLM: the modules of :mod:`segros.backbones.harmon` (and
the other families) use the official parameter names, so an official state dict loads as it is;
OpenUni's InternVL is transformers' ``InternVLModel``, and remote-code ``lmm.*`` keys are converted
(:func:`internvl_remote_to_hf`). A mismatch raises
:class:`CheckpointMismatch` (a ``ValueError``) listing every missing key, every unexpected key
and every shape difference, so a wrong size ("0.5b" weights into a "1.5b" model) is obvious.

Sources (``source`` argument):

* a local file (``.pth``, ``.pt``, ``.ckpt``, ``.bin``: ``torch.load(weights_only=True)``;
  ``.safetensors``: ``safetensors.torch.load_file``);
* a local folder plus ``filename``;
* ``"<owner>/<name>"`` (not an existing path) plus ``filename``: fetched with
  ``huggingface_hub.hf_hub_download`` for users with access. Tests never do this.

Wrapped dicts are unwrapped: ``{"model": sd}`` (kl16.ckpt), ``{"state_dict": sd}``, ``{"module": sd}``.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping

import torch
from torch import nn


class CheckpointMismatch(ValueError):
    """The checkpoint's keys do not match the model's; the message lists them."""

    def __init__(self, what: str, missing: list[str], unexpected: list[str], shape: list[str]):
        self.missing, self.unexpected, self.shape = missing, unexpected, shape

        def block(title, keys):
            if not keys:
                return ""
            shown = "\n  ".join(keys[:50]) + (f"\n  ... and {len(keys) - 50} more" if len(keys) > 50 else "")
            return f"\n{title} ({len(keys)}):\n  {shown}"

        super().__init__(f"checkpoint {what} does not match the model:"
                         + block("missing keys", missing) + block("unexpected keys", unexpected)
                         + block("shape mismatches", shape))


def resolve(source: str, filename: str | None = None) -> str:
    """A local path for ``source`` (file, folder + filename, or hub id + filename)."""
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"source must be a path or a hub id, got {type(source).__name__}")
    source = os.fspath(source)
    if os.path.isfile(source):
        return source
    if os.path.isdir(source):
        if filename is None:
            raise ValueError(f"source {source!r} is a folder; pass filename=")
        path = os.path.join(source, filename)
        if not os.path.isfile(path):
            raise ValueError(f"source folder {source!r} has no file {filename!r}")
        return path
    if source.count("/") == 1 and not source.startswith((".", "/")) and filename is not None:
        from huggingface_hub import hf_hub_download  # only for users with access; never in tests
        return hf_hub_download(repo_id=source, filename=filename)
    raise ValueError(f"source {source!r} is neither an existing file or folder nor '<owner>/<name>' with filename=")


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read a state dict from a file and unwrap ``model`` / ``state_dict`` / ``module`` wrappers."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        sd = load_file(path)
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "module"):
        if isinstance(sd, Mapping) and key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path!r} does not hold a state dict of tensors")
    return dict(sd)


def compare_keys(model: nn.Module, sd: Mapping[str, torch.Tensor], prefix: str = "",
                 ignore_missing: Iterable[str] = ()) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, shape mismatches) of ``sd`` loaded at ``prefix`` of ``model``.

    ``ignore_missing``: key prefixes the checkpoint is allowed not to have (e.g. ``"vae."``).
    """
    own = {k[len(prefix):]: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    ignore = tuple(ignore_missing)
    missing = sorted(k for k in own if k not in sd and not (ignore and (prefix + k).startswith(ignore)))
    unexpected = sorted(k for k in sd if k not in own)
    shape = sorted(f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                   for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape))
    return missing, unexpected, shape


def load_into(model: nn.Module, sd: Mapping[str, torch.Tensor], prefix: str = "",
              ignore_missing: Iterable[str] = (), what: str = "") -> None:
    """Copy ``sd`` into ``model`` at ``prefix``; raise :class:`CheckpointMismatch` on any mismatch."""
    missing, unexpected, shape = compare_keys(model, sd, prefix, ignore_missing)
    if missing or unexpected or shape:
        raise CheckpointMismatch(what or "state dict", missing, unexpected, shape)
    own = model.state_dict()
    with torch.no_grad():
        for k, v in sd.items():
            own[prefix + k].copy_(v.to(own[prefix + k].dtype))


def load_harmon(model: nn.Module, checkpoint: str, vae_checkpoint: str | None = None,
                checkpoint_file: str = "harmon_0.5b.pth", vae_file: str = "kl16.ckpt") -> nn.Module:
    """Load ``harmon_<size>.pth`` (all keys but ``vae.*``) and ``kl16.ckpt`` (VAE) into a Harmon.

    ``checkpoint`` / ``vae_checkpoint``: files, folders or a hub id (``wusize/harmon`` holds both).
    Without ``vae_checkpoint`` the VAE keeps its current weights.
    """
    sd = read_state_dict(resolve(checkpoint, checkpoint_file))
    load_into(model, sd, ignore_missing=("vae.",), what=str(checkpoint))
    if vae_checkpoint is not None:
        vae_sd = read_state_dict(resolve(vae_checkpoint, vae_file))
        load_into(model, vae_sd, prefix="vae.", what=str(vae_checkpoint))
    return model


def save_harmon(model: nn.Module, path: str, vae_path: str | None = None) -> None:
    """Write the official layout: ``path`` without ``vae.*``; ``vae_path`` as ``{"model": vae}``."""
    sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith("vae.")}
    torch.save(sd, path)
    if vae_path is not None:
        vae = {k[4:]: v.detach().cpu().clone() for k, v in model.state_dict().items() if k.startswith("vae.")}
        torch.save({"model": vae}, vae_path)


SHOWO_FILES = ("model.safetensors", "diffusion_pytorch_model.safetensors", "pytorch_model.bin",
               "diffusion_pytorch_model.bin")


def _pick(source: str, filename: str | None, candidates: tuple[str, ...]) -> str:
    """``resolve`` with a default file name: the first of ``candidates`` present in a local folder."""
    if filename is None and os.path.isdir(source):
        for name in candidates:
            if os.path.isfile(os.path.join(source, name)):
                return os.path.join(source, name)
        raise ValueError(f"source folder {source!r} holds none of {list(candidates)}")
    return resolve(source, filename or candidates[0])


def load_showo(model: nn.Module, checkpoint: str | None = None, vq_checkpoint: str | None = None,
               clip_path: str | None = None, checkpoint_file: str | None = None,
               vq_file: str | None = None) -> nn.Module:
    """Load a Show-o CLIP-ViT checkpoint (``showo.*``, ``mm_projector.*``), the MAGVIT-v2 tokenizer
    (``encoder.*``, ``decoder.*``, ``quantize.*`` → ``vq_model.``) and CLIP (``from_pretrained``).

    Each part is optional; ``quantize.*`` buffers may be absent (they are fixed bit tables).
    """
    if checkpoint is not None:
        sd = read_state_dict(_pick(checkpoint, checkpoint_file, SHOWO_FILES))
        load_into(model, sd, prefix="", ignore_missing=("vq_model.", "clip."), what=str(checkpoint))
    if vq_checkpoint is not None:
        sd = read_state_dict(_pick(vq_checkpoint, vq_file, SHOWO_FILES))
        load_into(model, sd, prefix="vq_model.", ignore_missing=("vq_model.quantize.",), what=str(vq_checkpoint))
    if clip_path is not None:
        from transformers import CLIPVisionModel
        clip = CLIPVisionModel.from_pretrained(clip_path)
        load_into(model, clip.state_dict(), prefix="clip.", what=str(clip_path))
    return model


def save_showo(model: nn.Module, path: str, vq_path: str | None = None) -> None:
    """Write the official layout: ``path`` with ``showo.*`` + ``mm_projector.*``; ``vq_path`` the tokenizer."""
    sd = model.state_dict()
    torch.save({k: v.detach().cpu().clone() for k, v in sd.items() if k.startswith(("showo.", "mm_projector."))}, path)
    if vq_path is not None:
        torch.save({k[len("vq_model."):]: v.detach().cpu().clone() for k, v in sd.items()
                    if k.startswith("vq_model.")}, vq_path)


# ---- InternVL: remote-code (InternVLChatModel) <-> transformers (InternVLModel) key names ----------
# Written from modeling_internvl_chat.py / modeling_intern_vit.py (OpenUni src/models/internvl3/) and
# transformers' models/internvl/modeling_internvl.py. Per ViT layer suffix: (remote, hf).
_VIT_LAYER = (("norm1.", "layernorm_before."), ("norm2.", "layernorm_after."), ("ls1", "lambda_1"),
              ("ls2", "lambda_2"), ("attn.proj.", "attention.projection_layer."),
              ("attn.q_norm.", "attention.q_norm."), ("attn.k_norm.", "attention.k_norm."),
              ("mlp.fc1.", "mlp.fc1."), ("mlp.fc2.", "mlp.fc2."))
_FIXED = (("vision_model.embeddings.class_embedding", "vision_tower.embeddings.cls_token"),
          ("vision_model.embeddings.position_embedding", "vision_tower.embeddings.position_embeddings"),
          ("vision_model.embeddings.patch_embedding.", "vision_tower.embeddings.patch_embeddings.projection."),
          ("mlp1.0.", "multi_modal_projector.layer_norm."), ("mlp1.1.", "multi_modal_projector.linear_1."),
          ("mlp1.3.", "multi_modal_projector.linear_2."))
_REMOTE_LM_HEAD = "language_model.lm_head.weight"


def is_remote_internvl(keys, prefix: str = "") -> bool:
    """True if ``keys`` (of a state dict) use the remote-code InternVLChatModel names under ``prefix``."""
    return any(k.startswith((prefix + "vision_model.", prefix + "mlp1.")) for k in keys)


def internvl_remote_to_hf(sd: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Rename remote-code InternVLChatModel keys (under ``prefix``) to transformers' InternVLModel.

    ``vision_model.encoder.layers.<i>.attn.qkv.{weight,bias}`` [3C, ...] is split in order into
    ``attention.{q,k,v}_proj``; ``language_model.model.*`` → ``language_model.*``; the LM head
    (``language_model.lm_head.weight``) is dropped. Keys outside ``prefix`` and keys the map does not
    know pass through unchanged (a loader then reports them as unexpected).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if not key.startswith(prefix):
            out[key] = value
            continue
        k = key[len(prefix):]
        new = None
        if k == _REMOTE_LM_HEAD:
            continue
        if k.startswith("language_model.model."):
            new = "language_model." + k[len("language_model.model."):]
        for old, hf in _FIXED:
            if k.startswith(old) and new is None:
                new = hf + k[len(old):]
        layer = "vision_model.encoder.layers."
        if new is None and k.startswith(layer):
            idx, rest = k[len(layer):].split(".", 1)
            base = f"vision_tower.encoder.layer.{idx}."
            if rest.startswith("attn.qkv."):
                kind = rest[len("attn.qkv."):]
                q, kk, v = value.chunk(3, dim=0)
                for name, part in (("q_proj", q), ("k_proj", kk), ("v_proj", v)):
                    out[f"{prefix}{base}attention.{name}.{kind}"] = part.clone()
                continue
            for old, hf in _VIT_LAYER:
                if rest.startswith(old):
                    new = base + hf + rest[len(old):]
                    break
        out[prefix + (new if new is not None else k)] = value
    return out


def internvl_hf_to_remote(sd: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """The inverse of :func:`internvl_remote_to_hf` (q/k/v fused back into ``attn.qkv``); no LM head."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    layer = "vision_tower.encoder.layer."
    for key, value in sd.items():
        if not key.startswith(prefix):
            out[key] = value
            continue
        k = key[len(prefix):]
        new = None
        if k.startswith("language_model."):
            new = "language_model.model." + k[len("language_model."):]
        for old, hf in _FIXED:
            if new is None and k.startswith(hf):
                new = old + k[len(hf):]
        if new is None and k.startswith(layer):
            idx, rest = k[len(layer):].split(".", 1)
            base = f"vision_model.encoder.layers.{idx}."
            for name in ("q_proj", "k_proj", "v_proj"):
                if rest.startswith(f"attention.{name}."):
                    kind = rest[len(f"attention.{name}."):]
                    fused.setdefault((base, kind), {})[name] = value
                    break
            else:
                for old, hf in _VIT_LAYER:
                    if rest.startswith(hf):
                        new = base + old + rest[len(hf):]
                        break
            if new is None and rest.startswith("attention.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                continue
        out[prefix + (new if new is not None else k)] = value
    for (base, kind), parts in fused.items():
        if set(parts) != {"q_proj", "k_proj", "v_proj"}:
            raise ValueError(f"{prefix}{base}: q/k/v {kind} incomplete ({sorted(parts)})")
        out[f"{prefix}{base}attn.qkv.{kind}"] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]], 0)
    return out


OPENUNI_TRAINED = ("meta_queries", "connector.", "projector.", "transformer.")


def load_openuni(model: nn.Module, checkpoint: str | None = None, checkpoint_file: str | None = None,
                 sana_path: str | None = None, dcae_path: str | None = None) -> nn.Module:
    """Load an OpenUni: SANA and DC-AE from their diffusers folders, then an official checkpoint.

    ``sana_path`` / ``dcae_path`` (folders or hub ids): ``model.transformer`` is replaced by
    ``SanaTransformer2DModel.from_pretrained(sana_path, subfolder="transformer")`` (and
    ``model.scheduler_config`` set from its ``scheduler/`` when present), ``model.vae`` by
    ``AutoencoderDC.from_pretrained(dcae_path)``, so their configs come from the folders (the
    random-build DC-AE is not the real one's architecture). The MLLM comes from ``build_openuni(mllm_path=...)``.

    ``checkpoint`` (loaded last, so a fine-tuned ``transformer.*`` overrides the base SANA, as the
    official ``load_state_dict`` after building from the folders): the official ``.pth``
    (``scripts/deepspeed2torch.py``: xtuner's ``guess_load_checkpoint`` of a DeepSpeed checkpoint
    saved with ``exclude_frozen_parameters=True``, ``scripts/train.py``) holds the trained parameters
    only: ``meta_queries``, ``connector.*``, ``projector.*``, plus ``transformer.*`` when SANA was
    trained (OpenUni's fine-tuning configs, Reca). A full state dict may also hold ``lmm.*`` (the
    remote-code InternVLChatModel names are converted by ``internvl_remote_to_hf``; its LM head is
    dropped) and ``vae.*``. ``lmm.``, ``vae.`` and ``transformer.`` may each be absent as a whole;
    anything else missing, unexpected or of another shape raises :class:`CheckpointMismatch`.
    """
    if sana_path is not None:
        from diffusers import DPMSolverMultistepScheduler, SanaTransformer2DModel
        t = SanaTransformer2DModel.from_pretrained(sana_path, subfolder="transformer").to(model.device)
        t.requires_grad_(any(p.requires_grad for p in model.transformer.parameters()))
        model.transformer = t
        try:
            model.scheduler_config = dict(DPMSolverMultistepScheduler.load_config(sana_path, subfolder="scheduler"))
        except (OSError, ValueError):  # a folder without scheduler/: keep the default config
            pass
    if dcae_path is not None:
        from diffusers import AutoencoderDC
        model.vae = AutoencoderDC.from_pretrained(dcae_path).to(model.device).requires_grad_(False).eval()
    if checkpoint is not None:
        sd = read_state_dict(_pick(checkpoint, checkpoint_file, SHOWO_FILES + ("model.pth",)))
        if is_remote_internvl(sd, "lmm."):
            sd = internvl_remote_to_hf(sd, "lmm.")
        ignore = tuple(g for g in ("lmm.", "vae.", "transformer.") if not any(k.startswith(g) for k in sd))
        load_into(model, sd, ignore_missing=ignore, what=str(checkpoint))
    return model


def save_openuni(model: nn.Module, path: str, with_transformer: bool | None = None) -> None:
    """Write the trained parts in the official key layout (``transformer.*`` by default when SANA trains)."""
    if with_transformer is None:
        with_transformer = any(p.requires_grad for p in model.transformer.parameters())
    keep = OPENUNI_TRAINED if with_transformer else OPENUNI_TRAINED[:3]
    torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k.startswith(keep)}, path)
