"""Harmon (wusize/Harmon) behind the SeGroS :class:`Backbone` protocol.

A frozen KL-16 VAE (``vae``), a MAR encoder/decoder with buffer tokens and a per-token diffusion
head (``mar``, :mod:`segros.backbones._mar`), ``proj_in`` / ``proj_out`` and a Qwen2.5 LLM (``llm``),
with the official parameter names. Build with :func:`build_harmon` (random weights) or through the
registry (``harmon-0.5b`` / ``harmon-1.5b``, official checkpoints).

- ``embed_image``: ``proj_in`` of the MAR encoder with nothing masked, on the target grid; with
  ``hint_layout="reca"`` the buffer tokens of the same pass are ``VisualTokens.extra``.
- ``t2i_loss``: ``[hints][chat prompt][image block]`` through the LLM, added to the encoder output,
  MAR decoder, diffusion ε-MSE on the masked latents; γ per batch (the encoder drops masked tokens).
- Without hints (generation, the SFT step, the base) the LLM runs exactly as the official
  ``forward_mae_encoder``: causal, with a 2-D padding mask.
- Switches: ``hint_layout`` ("prepend" | "reca"), ``image_attention`` ("fig6" | "native", hinted paths),
  ``hint_grad_scale`` (Reca: 0.1), ``cond_dropout_prob`` (SFT path), ``recon_prompts`` and
  ``text_free_prob`` (Reca's caption-free prompts), ``vae_latents`` ("mode" | "sample"),
  ``diffloss_weight_decay`` (Reca: no decay on the diffusion head). The Reca rows get Reca's
  settings by default (:mod:`segros.backbones.methods`).

Where each piece comes from in the official code, the prompts, the hint layouts and the parity
checks: ``docs/adapters/harmon.md``.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from segros.attention import segros_attention_mask
from segros.backbones._mar import MAR, AutoencoderKL, sample_tokens
from segros.backbones.base import Backbone, VisualTokens
from segros.backbones.inputs import (CaptionDropout, draw_choice, draw_uniform, pad_rows, read_recon_prompts,
                                     resize_to_pixels, tokenize_caption_prompts)
from segros.data.tokenizer import tiny_tokenizer
from segros.objectives import DiffusionSchedule, diffusion_mse, i2t_nll

INSTRUCTION = "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n"
GEN_PREFIX = "Generate an image: "
UNCOND_PROMPT = "Generate an image."
IMAGE_TOKEN_INDEX = -200  # placeholder id of image slots in I2T input_ids (xtuner convention)
# max_length=128 of the training prompts' ids: official configs/datasets/qwen2_5_1_5b/text2image.py (and Reca's);
# Reca Harmon/configs/datasets/qwen2_5_1_5b/reconstruction_mid.py (there the image slot counts as one id)
MAX_LENGTH = 128


@dataclass(frozen=True)
class HarmonConfig:
    """Every size knob of Harmon. Defaults are Harmon-0.5B at 512 px."""

    # Qwen2.5 LLM
    llm_hidden: int = 896
    llm_layers: int = 24
    llm_heads: int = 14
    llm_kv_heads: int = 2
    llm_intermediate: int = 4864
    vocab_size: int = 151936
    tie_word_embeddings: bool = True
    rope_theta: float = 1000000.0
    # MAR
    mar_img_size: int = 256  # size the learned MAR position tables are built for (16×16)
    mar_dim: int = 768
    mar_depth: int = 12
    mar_heads: int = 12
    diffloss_d: int = 6
    diffloss_w: int = 1024
    buffer_size: int = 64
    class_num: int = 1000
    # VAE
    vae_ch: int = 128
    vae_ch_mult: tuple = (1, 1, 2, 2, 4)
    vae_num_res_blocks: int = 2
    vae_resolution: int = 256
    vae_embed_dim: int = 16
    vae_scale: float = 0.2325
    # data / training
    image_size: int = 512
    diffusion_batch_mul: int = 4
    # VAE latents: "mode" (official Harmon and Reca, training and inference: Harmon.encode takes
    # posterior.mode()) | "sample" (a posterior draw in training mode; evaluation keeps the mode)
    vae_latents: str = "mode"
    # the image block during hinted training only: "fig6" (Fig. 6) | "native" (causal); every path without
    # hints (generation, SFT, the base) runs the official causal LLM with a padding mask (_llm_image_outputs_official)
    image_attention: str = "fig6"
    hint_layout: str = "prepend"  # "prepend" | "reca" (module docstring)
    hint_grad_scale: float = 1.0  # Reca: 0.1
    # no-hint T2I training (the SFT baseline): a row's caption becomes "Generate an image." with this
    # probability (official Text2ImageDataset._process_text, unconditional=0.1 in configs/datasets/.../text2image.py)
    cond_dropout_prob: float = 0.1
    # Reca's recon prompts (tokenize_recon_prompts only): "Generate an image." with this probability (Reca: 0.1)
    text_free_prob: float = 0.1
    recon_prompts: str | None = None  # Reca's consts.py or a text file: tokenize_recon_prompts (module docstring)
    # weight decay on the diffusion head (mar.diffloss.*): False as Reca's MAROptimWrapperConstructor
    # (Harmon/src/optimisers/constructor.py: no decay on 'diffloss' parameters), True decays it like the rest
    diffloss_weight_decay: bool = False
    # generation
    cfg: float = 3.0
    num_iter: int = 64
    temperature: float = 1.0
    diffusion_steps: int = 100
    attn_implementation: str = "sdpa"


SIZES = {
    "0.5b": HarmonConfig(),
    "1.5b": HarmonConfig(llm_hidden=1536, llm_layers=28, llm_heads=12, llm_kv_heads=2, llm_intermediate=8960,
                         mar_dim=1280, mar_depth=20, mar_heads=16, diffloss_d=12, diffloss_w=1536),
    "tiny": HarmonConfig(llm_hidden=64, llm_layers=2, llm_heads=4, llm_kv_heads=2, llm_intermediate=128,
                         vocab_size=0, tie_word_embeddings=True, mar_img_size=64, mar_dim=32, mar_depth=1,
                         mar_heads=2, diffloss_d=1, diffloss_w=32, buffer_size=4, class_num=10, vae_ch=32,
                         vae_ch_mult=(1, 1, 1, 1, 1), vae_num_res_blocks=1, vae_resolution=64, image_size=64,
                         num_iter=4, diffusion_steps=4, attn_implementation="eager"),
}


class _ScaleGrad(torch.autograd.Function):
    """Identity forward, gradient × scale backward (Reca's ``_ScaleGradient``)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def build_mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    """Linear → SiLU → Linear (keys ``0.*`` and ``2.*``, as Harmon's ``build_mlp``)."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Linear(d_hidden, d_out))


def _qwen_config(cfg: HarmonConfig, vocab_size: int):
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=vocab_size, hidden_size=cfg.llm_hidden, intermediate_size=cfg.llm_intermediate,
                       num_hidden_layers=cfg.llm_layers, num_attention_heads=cfg.llm_heads,
                       num_key_value_heads=cfg.llm_kv_heads, max_position_embeddings=32768,
                       rope_theta=cfg.rope_theta, rms_norm_eps=1e-6, tie_word_embeddings=cfg.tie_word_embeddings,
                       attn_implementation=cfg.attn_implementation)


class Harmon(CaptionDropout, Backbone):
    """Harmon-0.5B / 1.5B / tiny. Build with :func:`build_harmon`."""

    gamma_per = "batch"
    mask_schedule = "truncnorm"

    def __init__(self, cfg: HarmonConfig, tokenizer, llm: nn.Module | None = None):
        super().__init__()
        from transformers import Qwen2ForCausalLM

        for name, allowed in (("image_attention", ("fig6", "native")), ("hint_layout", ("prepend", "reca")),
                              ("vae_latents", ("mode", "sample"))):
            if getattr(cfg, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(cfg, name)!r}")
        for name in ("cond_dropout_prob", "text_free_prob"):
            if not 0.0 <= getattr(cfg, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(cfg, name)}")
        self.cfg = cfg
        self.family = "harmon"
        self.tokenizer = tokenizer
        self.recon_prompt_list = read_recon_prompts(cfg.recon_prompts) if cfg.recon_prompts else None
        self.vae = AutoencoderKL(cfg.vae_embed_dim, cfg.vae_ch, cfg.vae_ch_mult, cfg.vae_num_res_blocks,
                                 resolution=cfg.vae_resolution)
        self.vae.requires_grad_(False)
        vocab = cfg.vocab_size or len(tokenizer)
        self.llm = llm if llm is not None else Qwen2ForCausalLM(_qwen_config(cfg, vocab))
        self.mar = MAR(img_size=cfg.mar_img_size, vae_stride=16, vae_embed_dim=cfg.vae_embed_dim,
                       encoder_embed_dim=cfg.mar_dim, encoder_depth=cfg.mar_depth, encoder_num_heads=cfg.mar_heads,
                       decoder_embed_dim=cfg.mar_dim, decoder_depth=cfg.mar_depth, decoder_num_heads=cfg.mar_heads,
                       class_num=cfg.class_num, buffer_size=cfg.buffer_size, diffloss_d=cfg.diffloss_d,
                       diffloss_w=cfg.diffloss_w, diffusion_batch_mul=cfg.diffusion_batch_mul)
        self.proj_in = build_mlp(cfg.mar_dim, cfg.llm_hidden, cfg.llm_hidden)
        self.proj_out = build_mlp(cfg.llm_hidden, cfg.llm_hidden, cfg.mar_dim)
        g = cfg.image_size // 16
        self.target_grid_hw = (g, g)
        self.hint_grid_hw = (g, g)

    # ---- helpers -------------------------------------------------------------------------
    @property
    def width(self) -> int:
        return self.cfg.llm_hidden

    @property
    def device(self):
        return self.mar.fake_latent.device

    @property
    def dtype(self):
        return self.mar.fake_latent.dtype

    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.train(False)  # the VAE is frozen and always in eval mode
        return self

    def no_weight_decay(self, name: str) -> bool:
        """The diffusion head (``mar.diffloss.*``) has no weight decay unless ``diffloss_weight_decay``
        (Reca's ``add_weight_decay``: ``'diffloss' in name``)."""
        return not self.cfg.diffloss_weight_decay and name.startswith("mar.diffloss.")

    def state_dict_without_vae(self) -> dict[str, torch.Tensor]:
        """What ``harmon_<size>.pth`` holds: everything but ``vae.*``."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("vae.")}

    def _check_pixels(self, pixels: torch.Tensor, name: str = "pixels") -> None:
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"{name} must be a [B, 3, H, W] tensor, got {getattr(pixels, 'shape', type(pixels))}")
        if pixels.shape[2] % 16 or pixels.shape[3] % 16:
            raise ValueError(f"{name} height and width must be multiples of 16, got {tuple(pixels.shape[2:])}")

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """pixels [B, 3, H, W] in [0, 1] -> scaled VAE latents [B, N, 16] (raster) and the grid.

        A SeGroS or Reca step encodes the same pixels twice (``embed_image`` for the hints and the
        map, then ``t2i_loss``); the frozen VAE's answer for the last pixel tensor is kept and reused
        while that tensor, the VAE weights (their in-place versions), device and dtype are unchanged
        and no VAE parameter trains. At Harmon-0.5B this saves 5.7% of a SeGroS step's FLOPs
        (``benchmarks/bench_real_step.py --flops-only``).

        Latents are the posterior mode (official ``Harmon.encode``); with ``vae_latents="sample"`` and
        the model in training mode they are one posterior draw (torch's global generator, as the
        official ``DiagonalGaussianDistribution.sample``), shared by both encodes of a step through
        the cache.
        """
        self._check_pixels(pixels)
        vae_params = list(self.vae.parameters())
        cacheable = not any(p.requires_grad for p in vae_params)
        sample = self.cfg.vae_latents == "sample" and self.training
        key = (pixels._version, self.device, self.dtype, tuple(p._version for p in vae_params), sample)
        cached = getattr(self, "_latent_cache", None)
        if cacheable and cached is not None and cached[0]() is pixels and cached[1] == key:
            return cached[2]
        x = (2 * pixels - 1).to(self.device, self.dtype)
        z = (self.vae.encode_sample(x) if sample else self.vae.encode_mean(x)) * self.cfg.vae_scale  # [B, 16, h, w]
        out = (z.flatten(2).transpose(1, 2), (z.shape[2], z.shape[3]))
        self._latent_cache = (weakref.ref(pixels), key, out) if cacheable else None
        return out

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """[B, N, 16] latents -> images [B, 3, H, W] in [-1, 1]."""
        z = latents.transpose(1, 2).reshape(latents.shape[0], -1, *hw) / self.cfg.vae_scale
        return self.vae.decode(z)

    def _buffer_embed(self, b: int) -> torch.Tensor:
        return self.mar.fake_latent.expand(b, -1)

    def visual_features(self, latents, mask, hw):
        """MAR encoder + proj_in. Returns x_enc [B, buf+vis, Cm] and z_enc [B, vis+buf, D] (buffer last)."""
        x_enc = self.mar.forward_mae_encoder(latents, mask, self._buffer_embed(latents.shape[0]), hw)
        z = self.proj_in(x_enc)
        nb = self.cfg.buffer_size
        return x_enc, torch.cat([z[:, nb:], z[:, :nb]], dim=1)

    def _llm_image_outputs(self, text_embeds, text_mask, z_enc, hints, slot: int | None = None):
        """Run the LLM over the prompt, the hints and the image block; return the image block's last hidden states.

        ``hints`` None: the official sequence and attention (:meth:`_llm_image_outputs_official`). With
        hints, ``slot`` None: ``[hints][text][image]`` (``hint_layout="prepend"``) under the Fig. 6 mask
        (``image_attention="fig6"``) or with a causal image block (``"native"``); else
        ``hint_layout="reca"``: ``[text[:slot]][hints][text[slot:]][image]`` (module docstring)."""
        if hints is None:
            return self._llm_image_outputs_official(text_embeds, text_mask, z_enc)
        if slot is not None:
            return self._llm_image_outputs_reca(text_embeds, text_mask, z_enc, hints, slot)
        b, n_img = z_enc.shape[0], z_enc.shape[1]
        n_hint = hints.shape[1]
        embeds = torch.cat([hints.to(z_enc.dtype), text_embeds, z_enc], dim=1)
        allowed = segros_attention_mask(n_hint, text_mask.bool(), n_img, device=embeds.device, as_bool=True)
        if self.cfg.image_attention == "native":
            # Harmon's own rule: image tokens causal among themselves
            s0 = n_hint + text_mask.shape[1]
            causal = torch.ones(n_img, n_img, dtype=torch.bool, device=embeds.device).tril()
            allowed = allowed.clone()
            allowed[:, :, s0:, s0:] = causal
        real = torch.cat([torch.ones(b, n_hint, dtype=torch.bool, device=embeds.device), text_mask.bool(),
                          torch.ones(b, n_img, dtype=torch.bool, device=embeds.device)], dim=1)
        return self._run_llm(embeds, allowed, real, n_img)

    def _llm_image_outputs_official(self, text_embeds, text_mask, z_enc):
        """Every path without hints (generation, the SFT step, the base): official ``Harmon.prepare_forward_input``
        + ``forward_mae_encoder`` (``src/models/harmon.py``): ``[text][image]``, the 2-D padding mask
        (``[text_mask, ones]``, bool) handed to the causal LLM as is, position ids ``cumsum − 1`` clamped
        at 0. ``image_attention`` does not act here (``docs/adapters/harmon.md``)."""
        b, n_img = z_enc.shape[0], z_enc.shape[1]
        attention_mask = text_mask.to(device=z_enc.device, dtype=torch.bool)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(b, n_img)], dim=1)
        position_ids = torch.cumsum(attention_mask, dim=1) - 1
        position_ids[position_ids < 0] = 0
        embeds = torch.cat([text_embeds, z_enc], dim=1)
        out = self.llm.model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids)
        return out.last_hidden_state[:, -n_img:]

    def _llm_image_outputs_reca(self, text_embeds, text_mask, z_enc, hints, slot):
        """``hint_layout="reca"``: Reca ``harmon_dev.py`` ``HarmonDev.recon_loss`` + ``harmon.py``
        ``Harmon.prepare_forward_input``: the hints replace the image slot after the first ``slot`` prompt
        ids, the image block follows the (right-padded) prompt, and the LLM gets a 2-D padding mask, i.e.
        the causal mask with padded keys blocked over the whole sequence. ``image_attention="fig6"`` lets
        the image block see every real token (the rest stays Reca's)."""
        b, n_img, n_hint = z_enc.shape[0], z_enc.shape[1], hints.shape[1]
        dev = text_embeds.device
        embeds = torch.cat([text_embeds[:, :slot], hints.to(z_enc.dtype), text_embeds[:, slot:], z_enc], dim=1)
        mask = text_mask.bool()
        ones = lambda n: torch.ones(b, n, dtype=torch.bool, device=dev)  # noqa: E731
        real = torch.cat([mask[:, :slot], ones(n_hint), mask[:, slot:], ones(n_img)], dim=1)
        s = real.shape[1]
        allowed = torch.ones(s, s, dtype=torch.bool, device=dev).tril()[None, None] & real[:, None, None, :]
        if self.cfg.image_attention == "fig6":
            allowed = allowed.clone()
            allowed[:, :, s - n_img:, :] = real[:, None, None, :]
        return self._run_llm(embeds, allowed, real, n_img)

    def _run_llm(self, embeds, allowed, real, n_img):
        position_ids = (real.long().cumsum(1) - 1).clamp(min=0)
        zero = torch.zeros((), dtype=embeds.dtype, device=embeds.device)
        additive = torch.where(allowed, zero, torch.finfo(embeds.dtype).min)
        out = self.llm.model(inputs_embeds=embeds, attention_mask=additive, position_ids=position_ids)
        return out.last_hidden_state[:, -n_img:]

    def forward_mae_encoder(self, latents, mask, hw, text_embeds, text_mask, hints=None, slot: int | None = None):
        """Harmon's forward_mae_encoder with SeGroS hints: x_enc + proj_out(LLM(image block)).
        ``slot``: see :meth:`_llm_image_outputs`."""
        x_enc, z_enc = self.visual_features(latents, mask, hw)
        z_llm = self._llm_image_outputs(text_embeds, text_mask, z_enc, hints, slot)
        nb = self.cfg.buffer_size
        z_llm = torch.cat([z_llm[:, -nb:], z_llm[:, :-nb]], dim=1)  # buffer back to the front
        return x_enc + self.proj_out(z_llm)

    # ---- the protocol --------------------------------------------------------------------
    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.dtype != torch.long:
            raise ValueError(f"input_ids must be a long [B, L] tensor, got {getattr(input_ids, 'shape', input_ids)}")
        return self.llm.get_input_embeddings()(input_ids.to(self.device))

    def embed_image(self, pixels: torch.Tensor) -> VisualTokens:
        latents, hw = self.encode(pixels)
        mask = torch.zeros(latents.shape[:2], device=latents.device, dtype=latents.dtype)
        x_enc = self.mar.forward_mae_encoder(latents, mask, self._buffer_embed(latents.shape[0]), hw)
        nb = self.cfg.buffer_size
        if self.cfg.hint_layout != "reca":
            return VisualTokens(self.proj_in(x_enc[:, nb:]), hw)
        # Reca's image prompt (harmon.py extract_visual_feature): proj_in of all 1088 tokens; the grid
        # tokens are the hints, the 64 buffer tokens of the same pass are the extra tokens of the prompt
        z = self.proj_in(x_enc)
        return VisualTokens(z[:, nb:], hw, extra=z[:, :nb])

    def reca_slot(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> int:
        """Where ``hint_layout="reca"`` puts the hints: after the ids of ``<|im_start|>user\\n`` (Reca's first
        3 ids; the last of them may be Qwen's merged "\\n\\n" of a reconstruction prompt)."""
        pre = self._encode(INSTRUCTION.split("{input}")[0])
        p = len(pre)
        head = torch.tensor(pre[:-1], dtype=text_ids.dtype)
        if (text_ids.shape[1] < p or not bool(text_mask[:, :p].bool().all())
                or not bool((text_ids[:, :p - 1].cpu() == head).all())):
            raise ValueError("hint_layout='reca' needs every prompt to start with the chat template's "
                             "'<|im_start|>user\\n' ids (tokenize_prompts / tokenize_recon_prompts)")
        return p

    def _check_supervision(self, supervision, b: int, n: int) -> torch.Tensor:
        masked = supervision.masked
        if masked.shape != (b, n):
            raise ValueError(f"supervision.masked must be [B, N] = [{b}, {n}], got {tuple(masked.shape)}")
        if supervision.loss_weight.shape != (b, n):
            raise ValueError(f"supervision.loss_weight must be [{b}, {n}], got {tuple(supervision.loss_weight.shape)}")
        counts = masked.sum(1)
        bad = (counts != counts[0]).nonzero()
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"supervision.masked: Harmon's MAR encoder drops masked tokens, so every sample needs "
                             f"the same masked count; sample 0 has {int(counts[0])}, sample {i} has {int(counts[i])} "
                             f"(draw gamma per batch)")
        return masked

    def t2i_loss(self, batch: Mapping[str, torch.Tensor], supervision: Any, hints: torch.Tensor | None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Eqs. 16–17 on the grounded corrupted input; ``hints`` [B, H, D] or None."""
        for key in ("pixels", "input_ids", "attention_mask"):
            if key not in batch:
                raise ValueError(f"batch is missing {key!r}")
        latents, hw = self.encode(batch["pixels"])
        b, n, _ = latents.shape
        if hw != tuple(self.target_grid_hw):
            raise ValueError(f"batch['pixels'] gives a {hw} latent grid, expected target_grid_hw {self.target_grid_hw}")
        masked = self._check_supervision(supervision, b, n).to(self.device)
        if hints is not None:
            if hints.ndim != 3 or hints.shape[0] != b or hints.shape[2] != self.width:
                raise ValueError(f"hints must be [B, H, D] = [{b}, H, {self.width}], got {tuple(hints.shape)}")
            if self.cfg.hint_grad_scale != 1.0:
                hints = _ScaleGrad.apply(hints, self.cfg.hint_grad_scale)
        text_ids, text_mask = self.sft_conditions(batch["input_ids"], batch["attention_mask"], hints, generator)
        slot = self.reca_slot(text_ids, text_mask) if hints is not None and self.cfg.hint_layout == "reca" else None
        text_embeds = self.embed_text(text_ids)
        x_enc = self.forward_mae_encoder(latents, masked.to(latents.dtype), hw, text_embeds,
                                         text_mask.to(self.device), hints, slot)
        z = self.mar.forward_mae_decoder(x_enc, masked.to(latents.dtype), hw)
        schedule = DiffusionSchedule(1000)
        return diffusion_mse(self.mar.diffloss.predict_eps, latents, z, supervision.loss_weight.to(self.device),
                             schedule, num_samples=self.cfg.diffusion_batch_mul, generator=generator)

    def i2t_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Eq. 2 with Harmon's image prompt (1088 tokens, buffer last, at IMAGE_TOKEN_INDEX slots)."""
        ids, labels = batch["input_ids"].to(self.device), batch["labels"].to(self.device)
        latents, hw = self.encode(batch["pixels"])
        zero = torch.zeros(latents.shape[:2], device=latents.device, dtype=latents.dtype)
        _, z_enc = self.visual_features(latents, zero, hw)
        if self.cfg.hint_grad_scale != 1.0:  # Reca scales image-feature gradients in I2T too
            z_enc = _ScaleGrad.apply(z_enc, self.cfg.hint_grad_scale)
        slots = ids == IMAGE_TOKEN_INDEX
        per = slots.sum(1)
        bad = (per != z_enc.shape[1]).nonzero()
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"batch['input_ids'][{i}] has {int(per[i])} image slots, expected {z_enc.shape[1]}")
        embeds = self.llm.get_input_embeddings()(ids.clamp(min=0))
        embeds = embeds.masked_scatter(slots[..., None], z_enc.to(embeds.dtype))
        out = self.llm(inputs_embeds=embeds, attention_mask=batch["attention_mask"].to(self.device))
        return i2t_nll(out.logits, labels)

    # ---- data ----------------------------------------------------------------------------
    def preprocess_images(self, images: Sequence[Any]) -> torch.Tensor:
        return resize_to_pixels(images, self.cfg.image_size)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def tokenize_recon_prompts(self, batch_size: int, generator=None) -> dict[str, torch.Tensor]:
        """Reca's caption-free reconstruction prompts (``ReconstructionDataset._process_text``), one per row.

        Per row, in Reca's order: an instruction drawn from ``recon_prompt_list``, then a U[0, 1)
        draw; below ``text_free_prob`` the text is "Generate an image.", else "\\n{instruction}";
        the chat template around it is encoded in one piece (Qwen merges "user\\n" + "\\n" into
        "\\n\\n"), at most ``MAX_LENGTH - 1`` ids, right-padded. ``generator``: a
        ``torch.Generator``, a ``random.Random`` or None (Python's ``random``, as Reca). Reca's image
        slot after the first 3 ids is not in these ids (the hints are placed by :meth:`t2i_loss`).
        ``text_valid`` is all False: there is no caption to ground.
        """
        if not self.recon_prompt_list:
            raise ValueError("tokenize_recon_prompts needs the config field recon_prompts (Reca's consts.py "
                             "or a text file with one instruction per line)")
        rows = []
        for _ in range(batch_size):
            instruction = draw_choice(self.recon_prompt_list, generator)
            text = UNCOND_PROMPT if draw_uniform(generator) < self.cfg.text_free_prob else "\n" + instruction
            rows.append(self._encode(INSTRUCTION.format(input=text))[:MAX_LENGTH - 1])
        return pad_rows(rows, self.prompt_pad_id, [[False] * len(r) for r in rows])

    @property
    def prompt_pad_id(self) -> int:
        """The eos id (``prepare_text_conditions``' ``padding_value``; the training collate's ``pad_index``
        151645 is Qwen2.5-Instruct's eos ``<|im_end|>``), 0 for a tokenizer without one."""
        return self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0

    def _chat_prompts(self, texts: Sequence[str], strip: bool, max_length: int | None) -> dict[str, torch.Tensor]:
        pre, post = INSTRUCTION.split("{input}")
        return tokenize_caption_prompts(self._encode, texts, pre + GEN_PREFIX, post,
                                        INSTRUCTION.format(input=UNCOND_PROMPT), self.prompt_pad_id, strip=strip,
                                        max_length=max_length)

    def tokenize_prompts(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Training prompts, as official ``Text2ImageDataset._process_text``: the chat template around
        "Generate an image: {text.strip()}" ("" -> "Generate an image."), encoded in one piece, the
        first ``MAX_LENGTH`` ids, right-padded with :attr:`prompt_pad_id` (module docstring)."""
        return self._chat_prompts(texts, strip=True, max_length=MAX_LENGTH)

    def tokenize_generation_prompts(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Generation prompts, as the GenEval path (Reca ``scripts/geneval.py`` → ``prepare_text_conditions``):
        "Generate an image: {text}" (not stripped, no trailing ".") in the chat template, one piece, not
        truncated; "" -> the cfg prompt "Generate an image."."""
        return self._chat_prompts(texts, strip=False, max_length=None)

    def draw_dropped(self, batch_size: int, generator=None) -> torch.Tensor:
        """Official ``Text2ImageDataset._process_text``: per row ``random.uniform(0, 1) < unconditional``
        (:func:`segros.backbones.inputs.draw_uniform`: Python's ``random`` when ``generator`` is None)."""
        return torch.tensor([draw_uniform(generator) < self.cfg.cond_dropout_prob for _ in range(batch_size)])

    def i2t_batch(self, images, questions, answers) -> dict[str, torch.Tensor]:
        if not len(images) == len(questions) == len(answers):
            raise ValueError("images, questions and answers must have the same length")
        n_img = self.target_grid_hw[0] * self.target_grid_hw[1] + self.cfg.buffer_size
        rows, labels = [], []
        for q, a in zip(questions, answers):
            prompt = self._encode("<|im_start|>user\n") + [IMAGE_TOKEN_INDEX] * n_img + \
                self._encode("\n" + q + "<|im_end|>\n<|im_start|>assistant\n")
            answer = self._encode(a + "<|im_end|>")
            rows.append(prompt + answer)
            labels.append([-100] * len(prompt) + answer)
        out = pad_rows(rows, self.prompt_pad_id, labels=labels)
        out["pixels"] = self.preprocess_images(images)
        return out

    # ---- generation ----------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seed: int = 0, cfg: float | None = None,
                 num_iter: int | None = None, temperature: float | None = None, image_size: int | None = None,
                 return_latents: bool = False, **unused: Any) -> list:
        """Harmon's MAR sampler, one image per prompt; defaults from the config (cfg 3.0, 64 iterations)."""
        from PIL import Image

        cfg_scale = self.cfg.cfg if cfg is None else cfg
        num_iter = self.cfg.num_iter if num_iter is None else num_iter
        temperature = self.cfg.temperature if temperature is None else temperature
        size = image_size or self.cfg.image_size
        if size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {size}")
        if num_iter < 1:
            raise ValueError(f"num_iter must be >= 1, got {num_iter}")
        gen = torch.Generator(device="cpu").manual_seed(seed)
        m = n = size // 16
        seq = m * n
        texts = list(prompts) + ([""] * len(prompts) if cfg_scale != 1.0 else [])
        tok = self.tokenize_generation_prompts(texts)
        text_embeds = self.embed_text(tok["input_ids"])
        text_mask = tok["attention_mask"].to(self.device)
        bsz = len(prompts)
        rows = text_embeds.shape[0]
        tokens = torch.zeros(rows, seq, self.cfg.vae_embed_dim, device=self.device, dtype=self.dtype)
        orders = torch.stack([torch.randperm(seq, generator=gen) for _ in range(bsz)]).to(self.device)
        orders = torch.cat([orders] * (rows // bsz))
        mask = torch.ones(rows, seq, device=self.device, dtype=self.dtype)
        for step in range(num_iter):
            x_enc = self.forward_mae_encoder(tokens, mask, (m, n), text_embeds, text_mask)
            z = self.mar.forward_mae_decoder(x_enc, mask, (m, n))
            ratio = math.cos(math.pi / 2.0 * (step + 1) / num_iter)
            mask_len = int(max(1, min(int(mask[0].sum()) - 1, math.floor(seq * ratio))))
            mask_next = torch.zeros_like(mask)
            mask_next.scatter_(1, orders[:, :mask_len], 1.0)
            to_pred = mask.bool() if step >= num_iter - 1 else mask.bool() ^ mask_next.bool()
            mask = mask_next
            idx = to_pred[:bsz].nonzero(as_tuple=True)
            cond = z[:bsz][idx]
            if cfg_scale != 1.0:
                cond = torch.cat([cond, z[bsz:][idx]])
            new = sample_tokens(self.mar.diffloss, cond, cfg=cfg_scale, temperature=temperature,
                                num_steps=self.cfg.diffusion_steps, generator=gen)
            tokens[:bsz][idx] = new.to(tokens.dtype)
            if cfg_scale != 1.0:
                tokens[bsz:] = tokens[:bsz]
        latents = tokens[:bsz]
        if return_latents:
            return latents
        images = self.decode(latents, (m, n)).float()
        images = torch.clamp(127.5 * images + 128.0, 0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(im) for im in images]

    # ---- understanding: greedy answers (Harmon's scripts/image2text.py) -------------------------
    def understanding_pixels(self, images: Sequence[Any]) -> torch.Tensor:
        """Pixels [B, 3, S, S] in [0, 1] (S = ``image_size``) as ``scripts/image2text.py`` prepares an
        image: ``expand2square`` on gray (127, 127, 127) (the image pasted centred, offset
        ``(long - short) // 2``), then resized to S x S (PIL's default bicubic, :func:`resize_to_pixels`)."""
        import numpy as np
        from PIL import Image

        squares = []
        for i, im in enumerate(images):
            if isinstance(im, Image.Image):
                im = im.convert("RGB")
            else:
                arr = np.asarray(im)
                if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
                    raise ValueError(f"images[{i}] must be a PIL image or uint8 [H, W, 3], got {arr.dtype} {arr.shape}")
                im = Image.fromarray(arr)
            w, h = im.size
            if w != h:
                canvas = Image.new("RGB", (max(w, h), max(w, h)), (127, 127, 127))
                canvas.paste(im, (0, (w - h) // 2) if w > h else ((h - w) // 2, 0))
                im = canvas
            squares.append(im)
        return resize_to_pixels(squares, self.cfg.image_size)

    def understanding_ids(self, question: str) -> list[int]:
        """``prompt_template['INSTRUCTION']`` around ``"<image>\\n" + question``, the ``<image>`` slot
        expanded to the 1088 image tokens (:data:`IMAGE_TOKEN_INDEX` ids): the same ids as
        ``image2text.py``'s one ``tokenizer.encode`` of the whole string, where ``<image>`` is an added
        special token (so the text on each side is encoded on its own)."""
        n_img = self.target_grid_hw[0] * self.target_grid_hw[1] + self.cfg.buffer_size
        pre, post = INSTRUCTION.split("{input}")
        return self._encode(pre) + [IMAGE_TOKEN_INDEX] * n_img + self._encode("\n" + question + post)

    @torch.no_grad()
    def answer(self, images: Sequence[Any], questions: Sequence[str], max_new_tokens: int = 4) -> list[str]:
        """Greedy answers, one question per image, as wusize/Harmon ``scripts/image2text.py``.

        The image (:meth:`understanding_pixels`) goes through the VAE and the MAR encoder with nothing
        masked (``extract_visual_feature``: 1024 grid tokens + 64 buffer tokens last, ``proj_in``) into
        the image slots of :meth:`understanding_ids`; then ``llm.generate(inputs_embeds=...,
        use_cache=True, do_sample=False, eos_token_id=tokenizer.eos_token_id)`` with the LLM's own
        generation config otherwise (Qwen2.5-Instruct's ``repetition_penalty`` applies, as in the
        official script). The answer is the decoded new tokens, special tokens skipped, stripped.
        Questions run one at a time, as in the script.
        """
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        was_training = self.training
        self.eval()
        try:
            tok = self.tokenizer
            pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
            emb = self.llm.get_input_embeddings()
            answers = []
            for i, q in enumerate(questions):
                if not isinstance(q, str):
                    raise ValueError(f"questions[{i}] must be a str, got {type(q).__name__}")
                latents, hw = self.encode(self.understanding_pixels(images[i:i + 1]))
                zero = torch.zeros(latents.shape[:2], device=latents.device, dtype=latents.dtype)
                _, z_enc = self.visual_features(latents, zero, hw)
                ids = torch.tensor([self.understanding_ids(q)], device=self.device)
                slots = ids == IMAGE_TOKEN_INDEX
                embeds = emb(ids.clamp(min=0)).masked_scatter(slots[..., None], z_enc.to(emb.weight.dtype))
                out = self.llm.generate(inputs_embeds=embeds, attention_mask=torch.ones_like(ids), use_cache=True,
                                        do_sample=False, max_new_tokens=max_new_tokens,
                                        eos_token_id=tok.eos_token_id, pad_token_id=pad)
                answers.append(tok.decode(out[0].tolist(), skip_special_tokens=True).strip())
        finally:
            self.train(was_training)
        return answers


def build_harmon(size: str = "0.5b", tokenizer=None, llm_path: str | None = None, **overrides: Any) -> Harmon:
    """Harmon with random weights (``size`` = "0.5b" | "1.5b" | "tiny"), config fields overridable.

    ``tokenizer``: a transformers tokenizer; default: the tiny word-level one for "tiny", else
    ``AutoTokenizer.from_pretrained(llm_path)`` (Qwen2.5-Instruct folder or hub id). With
    ``llm_path`` the LLM weights are loaded from it too (``Qwen2ForCausalLM.from_pretrained``, cast to
    torch's default dtype like the rest of the adapter).
    Load Harmon's own weights with :func:`segros.backbones.checkpoints.load_harmon`.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    cfg = SIZES[size]
    bad = set(overrides) - set(HarmonConfig.__dataclass_fields__)
    if bad:
        raise ValueError(f"unknown Harmon config fields: {sorted(bad)}")
    cfg = replace(cfg, **overrides)
    llm = None
    if tokenizer is None:
        if size == "tiny" and llm_path is None:
            tokenizer = tiny_tokenizer()
        elif llm_path is None:
            raise ValueError("llm_path (the Qwen2.5-Instruct folder or hub id) is needed for the tokenizer of "
                             f"size {size!r}; or pass tokenizer=")
        else:
            from transformers import AutoTokenizer
            tokenizer = AutoTokenizer.from_pretrained(llm_path, padding_side="right")
    if llm_path is not None:
        from transformers import Qwen2ForCausalLM
        llm = Qwen2ForCausalLM.from_pretrained(llm_path, attn_implementation=cfg.attn_implementation)
        # transformers 5 loads a folder in its saved dtype (Qwen2.5-Instruct: bfloat16); the rest of the
        # adapter is built in the default dtype, and mixed precision is autocast's job (segros.train)
        llm = llm.to(torch.get_default_dtype())
    return Harmon(cfg, tokenizer, llm)
