"""tiny-showo: a from-scratch Show-o stand-in (discrete codes, MaskGIT, one shared vocabulary).

Architecture (Show-o, §11 Eq. 15 of the paper; showlab/Show-o):

* LLM: ``transformers.PhiForCausalLM`` (Show-o is Phi-1.5) over ONE vocabulary:
  ``[text words][K image codes][MASK]``; code k has id ``len(tokenizer) + k``.
* Image targets: :class:`PatchKMeansTokenizer` codes on an 8×8 grid (64 px, 8 px patches),
  standing in for MAGVIT-v2's 16×16 codes.
* Hint / understanding encoder ("CLIP-like"): the image resized to 48 px, 8 px patch embedding
  + learned positions + ``hint_layers`` pre-norm transformer layers, then ``mm_projector``
  (Linear, GELU, Linear) to the LLM width. Its 6×6 grid differs from the 8×8 code grid, as
  Show-o's 24×24 CLIP grid differs from its code grid, so the grounding map is resampled.
* T2I (Eq. 15): ``[hints][text][codes, masked ones replaced by MASK]`` with the Fig. 6 mask;
  loss = Σ w·NLL / Σ w over the code logits (the K code columns only — a convention: the full
  vocabulary softmax of Show-o differs by the words' and MASK's mass, which training drives to ~0).
  Masking ratio from the cosine schedule, drawn per sample.
* Generation: MaskGIT (Chang et al. 2022) — all codes start as MASK; at step s of S every masked
  code is sampled from softmax(guided logits / temperature); the kept count follows
  ``N·(1 − cos(π/2·(s+1)/S))``; the least confident newly sampled codes (log-prob plus Gumbel
  noise scaled by ``choice_temperature·(1 − (s+1)/S)``) are re-masked. CFG as in Show-o:
  ``(1 + g)·cond − g·uncond`` with the empty prompt as the unconditional branch.
* The alignment stage (base pretraining, :meth:`TinyBackbone.alignment_loss`): FILIP between
  the text input embeddings and ``mm_projector`` of the encoder features taken without gradient
  (:meth:`image_encoder_features` / :meth:`project_image_features`); see tiny_common.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PhiConfig, PhiForCausalLM

from segros import shard
from segros.backbones.base import VisualTokens
from segros.backbones.tiny_common import TinyBackbone, TinyConfig, check_batch
from segros.data.image_tokenizer import LayoutColorCodec, PatchKMeansTokenizer


@dataclass(frozen=True)
class TinyShowoConfig(TinyConfig):
    num_codes: int = 256         # K, the k-means codebook on 8×8 patches
    hint_image_size: int = 48    # pixels of the CLIP-like path
    hint_patch: int = 8          # -> 6×6 hint grid
    hint_width: int = 96
    hint_layers: int = 1
    codec: str = "kmeans"        # "kmeans" (PatchKMeansTokenizer) | "layout_color" (LayoutColorCodec, world v3)
    n_layouts: int = 8           # layout_color: K = n_layouts · n_colors codes
    n_colors: int = 10


class HintEncoder(nn.Module):
    """Patch embedding + positions + pre-norm transformer layers (a tiny CLIP-ViT stand-in)."""

    def __init__(self, cfg: TinyShowoConfig):
        super().__init__()
        self.size, g = cfg.hint_image_size, cfg.hint_image_size // cfg.hint_patch
        self.patch_embed = nn.Conv2d(3, cfg.hint_width, cfg.hint_patch, cfg.hint_patch)
        self.pos_embed = nn.Parameter(torch.randn(1, g * g, cfg.hint_width) * 0.02)
        layer = nn.TransformerEncoderLayer(cfg.hint_width, 4, 4 * cfg.hint_width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.hint_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.hint_width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(pixels, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        x = self.patch_embed(x * 2 - 1).flatten(2).transpose(1, 2) + self.pos_embed
        return self.norm(self.blocks(x))


class TinyShowo(TinyBackbone):
    family = "tiny-showo"
    config_cls = TinyShowoConfig
    gamma_per = "sample"
    mask_schedule = "cosine"

    def __init__(self, config: TinyShowoConfig, tokenizer, image_tokenizer: PatchKMeansTokenizer | None = None):
        super().__init__(config, tokenizer)
        torch.manual_seed(config.seed)
        if config.codec not in ("kmeans", "layout_color"):
            raise ValueError(f"codec must be 'kmeans' or 'layout_color', got {config.codec!r}")
        if image_tokenizer is None:
            image_tokenizer = (PatchKMeansTokenizer(config.num_codes, config.patch, config.image_size) if config.codec == "kmeans"
                               else LayoutColorCodec(config.n_layouts, config.n_colors, config.patch, config.image_size))
        self.image_tokenizer = image_tokenizer
        if self.image_tokenizer.num_codes != config.num_codes:
            raise ValueError(f"image_tokenizer has {self.image_tokenizer.num_codes} codes, config.num_codes={config.num_codes}")
        self.code_offset = len(tokenizer)
        self.mask_id = self.code_offset + config.num_codes
        self.llm = PhiForCausalLM(PhiConfig(
            vocab_size=self.mask_id + 1, hidden_size=config.width, intermediate_size=config.intermediate,
            num_hidden_layers=config.layers, num_attention_heads=config.heads, max_position_embeddings=512,
            resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0, tie_word_embeddings=False,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id))
        self.hint_encoder = HintEncoder(config)
        self.mm_projector = nn.Sequential(nn.Linear(config.hint_width, config.width), nn.GELU(),
                                          nn.Linear(config.width, config.width))
        g = config.image_size // config.patch
        self.target_grid_hw = (g, g)
        h = config.hint_image_size // config.hint_patch
        self.hint_grid_hw = (h, h)

    @property
    def num_image_tokens(self) -> int:
        return self.target_grid_hw[0] * self.target_grid_hw[1]

    def image_encoder_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The hint encoder's output [B, 36, hint_width] (before mm_projector)."""
        return self.hint_encoder(pixels)

    def project_image_features(self, features: torch.Tensor) -> torch.Tensor:
        """mm_projector: per-token map of encoder features into the LLM width."""
        return self.mm_projector(features)

    def embed_image(self, pixels: torch.Tensor) -> VisualTokens:
        """mm_projector(hint encoder(pixels)) on the 6×6 hint grid (Show-o: mm_projector(CLIP))."""
        return VisualTokens(self.project_image_features(self.image_encoder_features(pixels)), self.hint_grid_hw)

    def code_logits(self, hints, input_ids, attention_mask, image_ids) -> torch.Tensor:
        """Logits [B, N, K] over the codes at the image positions of [hints][text][image_ids]."""
        n_hint = 0 if hints is None else hints.shape[1]
        txt = self.embed_text(input_ids)
        img = self.embed_text(image_ids)
        logits = self.run_llm([hints, txt, img], n_hint, attention_mask, img.shape[1], logits=True)
        return logits[:, -img.shape[1]:, self.code_offset:self.mask_id]

    def t2i_loss(self, batch: Mapping[str, torch.Tensor], supervision: Any, hints: torch.Tensor | None) -> torch.Tensor:
        """Eq. 15: Σ w·NLL(code | hints, text, corrupted codes) / Σ w over ``supervision.loss_weight``."""
        check_batch(batch, ("pixels", "input_ids", "attention_mask"))
        b, n = batch["input_ids"].shape[0], self.num_image_tokens
        for name in ("masked", "loss_weight"):
            if tuple(getattr(supervision, name).shape) != (b, n):
                raise ValueError(f"supervision.{name} must be [{b}, {n}], got {tuple(getattr(supervision, name).shape)}")
        if hints is not None and (hints.ndim != 3 or hints.shape[0] != b or hints.shape[2] != self.width):
            raise ValueError(f"hints must be [{b}, H, {self.width}], got {tuple(hints.shape)}")
        weight = supervision.loss_weight.float()
        if float(shard.all_sum(weight.sum())) <= 0:  # over the global batch (a stand-in row weighs 0)
            raise ValueError("supervision.loss_weight sums to 0: nothing to reconstruct")
        codes = self.image_tokenizer.encode(batch["pixels"])
        image_ids = torch.where(supervision.masked.bool(), torch.full_like(codes, self.mask_id), codes + self.code_offset)
        ids, am = self.drop_prompts(batch["input_ids"], batch["attention_mask"], hints)
        logits = self.code_logits(hints, ids, am, image_ids)
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), codes.reshape(-1), reduction="none")
        if shard.active():  # Σ w·NLL / Σ w over the global batch (segros.shard)
            return shard.weighted_mean((nll.reshape(b, n) * weight).sum(), weight.sum())
        return (nll.reshape(b, n) * weight).sum() / weight.sum()

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seed: int = 0, guidance_scale: float = 2.0, steps: int = 10,
                 temperature: float = 1.0, choice_temperature: float = 4.5, return_codes: bool = False):
        """MaskGIT decoding with CFG (see the module docstring) -> list of PIL images (64 px)."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        was_training = self.training
        self.eval()
        g = torch.Generator().manual_seed(seed)
        b, n = len(prompts), self.num_image_tokens
        text = self.cfg_prompts(prompts)
        codes = torch.zeros(b, n, dtype=torch.long)
        unknown = torch.ones(b, n, dtype=torch.bool)
        for s in range(steps):
            ids = torch.where(unknown, torch.full_like(codes, self.mask_id), codes + self.code_offset)
            logits = self.code_logits(None, text["input_ids"], text["attention_mask"], torch.cat([ids, ids]))
            cond, uncond = logits.float().chunk(2)
            guided = (1 + guidance_scale) * cond - guidance_scale * uncond
            probs = F.softmax(guided / max(temperature, 1e-6), dim=-1)
            sampled = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=g).reshape(b, n)
            sampled = torch.where(unknown, sampled, codes)
            ratio = (s + 1) / steps
            n_mask = int(math.floor(n * math.cos(math.pi / 2 * ratio)))
            n_unknown = int(unknown[0].sum())
            n_mask = 0 if s == steps - 1 else max(1, min(n_mask, n_unknown - 1))
            logp = torch.log(probs.gather(-1, sampled[..., None]).squeeze(-1).clamp_min(1e-20))
            u = torch.rand(b, n, generator=g).clamp(1e-20, 1 - 1e-7)
            conf = logp + choice_temperature * (1 - ratio) * -torch.log(-torch.log(u))
            conf = torch.where(unknown, conf, torch.full_like(conf, float("inf")))
            codes = sampled
            unknown = torch.zeros_like(unknown)
            if n_mask > 0:
                unknown.scatter_(1, conf.topk(n_mask, dim=1, largest=False).indices, True)
        self.train(was_training)
        if return_codes:
            return codes
        return self.to_pil(self.image_tokenizer.decode(codes))
