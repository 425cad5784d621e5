"""Show-o (showlab/Show-o), CLIP-ViT variant, behind the SeGroS :class:`Backbone` protocol.

Architecture (read from ``models/modeling_showo.py``, ``models/modeling_magvitv2.py``,
``models/clip_encoder.py``; REFERENCES.md): Phi-1.5 with q/k LayerNorm (``showo``, a transformers
``PhiForCausalLM``, 2048 wide, 24 layers, vocabulary resized to 58498 = 50295 text + 10 special +
8192 image codes + 1 mask), the MAGVIT-v2 lookup-free tokenizer (``vq_model``: 13-bit codes =
8192, 16× down), CLIP ViT-L/14-336 (``clip``, a transformers ``CLIPVisionModel``, penultimate
layer, CLS dropped: 24×24 × 1024) and ``mm_projector`` (Linear 1024→2048, GELU, Linear 2048→2048).
Image code ``c`` has id ``llm_vocab + 10 + c``; the mask token is the last id.

The SeGroS hooks (§3, §11.0.1, Eq. 15):

* ``embed_text`` = Phi's ``embed_tokens`` (shared by text and image codes).
* ``embed_image`` = ``mm_projector(CLIP)``: [B, 576, 2048], ``hint_grid_hw = (24, 24)``; the
  reconstruction grid is the code grid (16×16 at 256 px, 32×32 at 512 px), so the training loop
  resamples the map (``segros.supervision.resample_map``) for the corrupted input.
* ``t2i_loss``: sequence ``[soi][hints][eoi] | [t2i][bos text eos, padded to 128] | [soi][codes
  with masked ones replaced by the mask id][eoi]`` under the Fig. 6 mask
  (:func:`segros.attention.segros_attention_mask`); loss = NLL of the true codes over masked
  positions (:func:`segros.objectives.masked_token_nll`, weights from ``loss_weight``). Logits are
  taken over the whole vocabulary, as in Show-o's own cross-entropy.
* ``i2t_loss``: ``[mmu][soi][576 CLIP tokens][eoi][question answer]``, causal, shifted NLL.
* ``generate``: Show-o's MaskGIT loop (cosine schedule, confidence = log p + annealed Gumbel
  noise, guidance ``(1 + g)·cond − g·uncond`` with the empty prompt as unconditional); defaults
  guidance 1.75 / 16 steps at 256 px and 5 / 50 steps at 512 px.

Conventions this module fixes:

* Hint block ``[soi] hints [eoi]`` stands where Reca places the CLIP image prompt; without hints
  the block is empty (native Show-o T2I layout ``[t2i][text][soi][codes][eoi]``).
* Position ids are the slot indices (``arange``), as Show-o's own training (text padded to a fixed
  128 slots, so the image block starts at the same position in every sample).
* ``text_valid`` marks the prompt's own tokens (no [t2i]/[bos]/[eos]/padding).
* CLIP input: pixels resized to 336 (bicubic) and normalised with CLIP's mean/std; MAGVIT input:
  pixels in [0, 1] at the family's resolution (Show-o's ``image_transform`` gives [0, 1] too).
* ``vq_model`` and ``clip`` are frozen (Table 7 freezes CLIP; MAGVIT is never trained).

Checkpoints (:mod:`segros.backbones.checkpoints`): ``show-o-w-clip-vit[-512x512]`` holds
``showo.*`` and ``mm_projector.*`` (``load_showo``); ``magvitv2`` holds the tokenizer's
``encoder.*``, ``decoder.*``, ``quantize.*`` (loaded under ``vq_model.``); CLIP comes from
``CLIPVisionModel.from_pretrained`` (``clip_path``).

Table 7 (Show-o columns; presets ``paper-showo-256`` / ``paper-showo-512``): AdamW, lr 5e-7,
weight decay 0.01, betas (0.9, 0.999); 5K steps, warm-up 1000; batch 4 / 2, accumulation 5 / 20;
η = 30 % / 40 %, ρ = 40 %, λ = 1.0; CLIP frozen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segros.attention import segros_attention_mask
from segros.backbones._mar import VAEDecoder, VAEEncoder
from segros.backbones.base import Backbone, VisualTokens, resize_to_pixels

SPECIAL_TOKENS = ["<|soi|>", "<|eoi|>", "<|sov|>", "<|eov|>", "<|t2i|>", "<|mmu|>", "<|t2v|>", "<|v2v|>",
                  "<|lvg|>", "<|pad|>"]
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ShowoConfig:
    """Show-o CLIP-ViT at 256 px by default."""

    # Phi-1.5
    llm_hidden: int = 2048
    llm_layers: int = 24
    llm_heads: int = 32
    llm_intermediate: int = 8192
    partial_rotary_factor: float = 0.5
    llm_vocab_size: int = 50295  # text ids [0, llm_vocab_size)
    num_special: int = 10
    # MAGVIT-v2
    codebook_dim: int = 13  # 2**13 = 8192 codes
    vq_ch: int = 128
    vq_enc_mult: tuple = (1, 2, 2, 4, 4)
    vq_enc_blocks: tuple = (4, 3, 4, 3, 4)
    vq_dec_mult: tuple = (1, 1, 2, 2, 4)
    vq_dec_blocks: tuple = (4, 4, 3, 4, 3)
    # CLIP ViT-L/14-336
    clip_hidden: int = 1024
    clip_layers: int = 24
    clip_heads: int = 16
    clip_intermediate: int = 4096
    clip_image_size: int = 336
    clip_patch: int = 14
    # sequence / sampling
    resolution: int = 256
    max_text_len: int = 128
    guidance_scale: float = 1.75
    num_steps: int = 16
    temperature: float = 1.0
    attn_implementation: str = "sdpa"

    @property
    def vocab_size(self) -> int:
        return self.llm_vocab_size + self.num_special + 2 ** self.codebook_dim + 1


SIZES = {
    "256": ShowoConfig(),
    "512": ShowoConfig(resolution=512, guidance_scale=5.0, num_steps=50),
    "tiny": ShowoConfig(llm_hidden=64, llm_layers=2, llm_heads=4, llm_intermediate=128, llm_vocab_size=0,
                        codebook_dim=6, vq_ch=32, vq_enc_mult=(1, 1, 1, 1, 1), vq_enc_blocks=(1, 1, 1, 1, 1),
                        vq_dec_mult=(1, 1, 1, 1, 1), vq_dec_blocks=(1, 1, 1, 1, 1), clip_hidden=32, clip_layers=2,
                        clip_heads=2, clip_intermediate=64, clip_image_size=42, resolution=64, max_text_len=16,
                        num_steps=4, attn_implementation="eager"),
}


# ---- MAGVIT-v2 (lookup-free quantiser) ----------------------------------------------------------

class MagvitEncoder(VAEEncoder):
    """VQGANEncoder: the LDM encoder with per-level block counts and ``quant_conv`` inside."""

    def __init__(self, ch, ch_mult, blocks, z_channels):
        super().__init__(ch, ch_mult, list(blocks), attn_resolutions=(5,), resolution=256,
                         z_channels=z_channels, double_z=False)
        self.quant_conv = nn.Conv2d(z_channels, z_channels, 1)

    def forward(self, x):
        return self.quant_conv(super().forward(x))


class MagvitDecoder(VAEDecoder):
    """VQGANDecoder: ``post_quant_conv`` inside, exact per-level block counts."""

    def __init__(self, ch, ch_mult, blocks, z_channels):
        super().__init__(ch, ch_mult, list(blocks), attn_resolutions=(5,), resolution=256, z_channels=z_channels)
        self.post_quant_conv = nn.Conv2d(z_channels, z_channels, 1)

    def forward(self, z):
        return super().forward(self.post_quant_conv(z))


class LFQuantizer(nn.Module):
    """Lookup-free quantisation: sign of each of ``codebook_dim`` channels; code = bits, MSB first."""

    def __init__(self, codebook_dim: int):
        super().__init__()
        bits = (torch.arange(2 ** codebook_dim)[:, None] >> torch.arange(codebook_dim - 1, -1, -1)) & 1
        self.register_buffer("embedding", bits.float() * 2 - 1)  # [K, d] in {-1, +1}
        self.register_buffer("power_vals", 2 ** torch.arange(codebook_dim - 1, -1, -1))

    def codes(self, z):
        """z [B, d, h, w] -> codes [B, h*w] (raster)."""
        return ((z > 0).long() * self.power_vals.view(1, -1, 1, 1)).sum(1).flatten(1)

    def lookup(self, codes, hw):
        b = codes.shape[0]
        return self.embedding[codes.reshape(-1)].view(b, hw[0], hw[1], -1).permute(0, 3, 1, 2)


class MAGVITv2(nn.Module):
    def __init__(self, cfg: ShowoConfig):
        super().__init__()
        self.encoder = MagvitEncoder(cfg.vq_ch, cfg.vq_enc_mult, cfg.vq_enc_blocks, cfg.codebook_dim)
        self.decoder = MagvitDecoder(cfg.vq_ch, cfg.vq_dec_mult, cfg.vq_dec_blocks, cfg.codebook_dim)
        self.quantize = LFQuantizer(cfg.codebook_dim)

    def get_code(self, pixels):
        return self.quantize.codes(self.encoder(pixels))

    def decode_code(self, codes, hw):
        return self.decoder(self.quantize.lookup(codes, hw))


# ---- the backbone --------------------------------------------------------------------------------

class Showo(Backbone):
    """Show-o 256 / 512 / tiny (CLIP-ViT variant). Build with :func:`build_showo`."""

    gamma_per = "sample"
    mask_schedule = "cosine"

    def __init__(self, cfg: ShowoConfig, tokenizer):
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel, PhiConfig, PhiForCausalLM

        self.cfg = cfg
        self.family = "showo"
        self.tokenizer = tokenizer
        self.text_vocab = cfg.llm_vocab_size or len(tokenizer)
        if cfg.llm_vocab_size == 0:
            cfg = replace(cfg, llm_vocab_size=self.text_vocab)
            self.cfg = cfg
        phi = PhiConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.llm_hidden, intermediate_size=cfg.llm_intermediate,
                        num_hidden_layers=cfg.llm_layers, num_attention_heads=cfg.llm_heads,
                        partial_rotary_factor=cfg.partial_rotary_factor, qk_layernorm=True,
                        max_position_embeddings=4096, tie_word_embeddings=False,
                        attn_implementation=cfg.attn_implementation)
        self.showo = PhiForCausalLM(phi)
        self.mm_projector = nn.Sequential(nn.Linear(cfg.clip_hidden, cfg.llm_hidden), nn.GELU(),
                                          nn.Linear(cfg.llm_hidden, cfg.llm_hidden))
        self.vq_model = MAGVITv2(cfg)
        self.clip = CLIPVisionModel(CLIPVisionConfig(
            hidden_size=cfg.clip_hidden, intermediate_size=cfg.clip_intermediate, num_hidden_layers=cfg.clip_layers,
            num_attention_heads=cfg.clip_heads, image_size=cfg.clip_image_size, patch_size=cfg.clip_patch,
            hidden_act="quick_gelu", attn_implementation="eager" if cfg.attn_implementation == "eager" else "sdpa"))
        self.vq_model.requires_grad_(False)
        self.clip.requires_grad_(False)
        g = cfg.clip_image_size // cfg.clip_patch
        self.hint_grid_hw = (g, g)
        t = cfg.resolution // 16
        self.target_grid_hw = (t, t)

    # ---- ids -----------------------------------------------------------------------------
    def special_id(self, name: str) -> int:
        return self.cfg.llm_vocab_size + SPECIAL_TOKENS.index(name)

    @property
    def code_offset(self) -> int:
        return self.cfg.llm_vocab_size + self.cfg.num_special

    @property
    def mask_id(self) -> int:
        return self.cfg.vocab_size - 1

    @property
    def width(self) -> int:
        return self.cfg.llm_hidden

    @property
    def device(self):
        return self.mm_projector[0].weight.device

    def train(self, mode: bool = True):
        super().train(mode)
        self.vq_model.train(False)
        self.clip.train(False)
        return self

    # ---- encoders --------------------------------------------------------------------------
    def _check_pixels(self, pixels):
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be a [B, 3, H, W] tensor, got {getattr(pixels, 'shape', type(pixels))}")

    @torch.no_grad()
    def image_codes(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, H, W] in [0, 1] at ``resolution`` -> MAGVIT-v2 codes [B, N] (raster)."""
        self._check_pixels(pixels)
        r = self.cfg.resolution
        if tuple(pixels.shape[2:]) != (r, r):
            raise ValueError(f"pixels must be {r}x{r} for the image codes, got {tuple(pixels.shape[2:])}")
        return self.vq_model.get_code(pixels.to(self.device, self.mm_projector[0].weight.dtype))

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, N] -> images [B, 3, H, W] clamped to [0, 1]."""
        return self.vq_model.decode_code(codes, self.target_grid_hw).clamp(0, 1)

    def clip_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Penultimate CLIP layer without CLS: [B, g*g, clip_hidden]."""
        self._check_pixels(pixels)
        s = self.cfg.clip_image_size
        x = F.interpolate(pixels.float(), size=(s, s), mode="bicubic", align_corners=False).clamp(0, 1)
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        x = ((x - mean) / std).to(self.device, self.mm_projector[0].weight.dtype)
        with torch.no_grad():
            out = self.clip(pixel_values=x, output_hidden_states=True)
        return out.hidden_states[-2][:, 1:]

    # ---- protocol --------------------------------------------------------------------------
    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.dtype != torch.long:
            raise ValueError(f"input_ids must be a long [B, L] tensor, got {getattr(input_ids, 'shape', input_ids)}")
        return self.showo.get_input_embeddings()(input_ids.to(self.device))

    def embed_image(self, pixels: torch.Tensor) -> VisualTokens:
        return VisualTokens(self.mm_projector(self.clip_features(pixels)), self.hint_grid_hw)

    def _ids(self, b: int, name: str) -> torch.Tensor:
        return torch.full((b, 1), self.special_id(name), dtype=torch.long, device=self.device)

    def logits_for(self, text_ids, text_mask, image_ids, hints=None):
        """Logits [B, N, V] at the image code positions of ``[soi hints eoi][text][soi codes eoi]``."""
        b, n = image_ids.shape
        emb = self.showo.get_input_embeddings()
        parts, n_hint = [], 0
        if hints is not None:
            parts = [emb(self._ids(b, "<|soi|>")), hints.to(emb.weight.dtype), emb(self._ids(b, "<|eoi|>"))]
            n_hint = hints.shape[1] + 2
        parts += [emb(text_ids.to(self.device)),
                  emb(torch.cat([self._ids(b, "<|soi|>"), image_ids, self._ids(b, "<|eoi|>")], 1))]
        embeds = torch.cat(parts, 1)
        mask = segros_attention_mask(n_hint, text_mask.to(self.device).bool(), n + 2, device=self.device,
                                     dtype=embeds.dtype)
        pos = torch.arange(embeds.shape[1], device=self.device)[None].expand(b, -1)
        logits = self.showo(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).logits
        return logits[:, -(n + 1):-1]

    def t2i_loss(self, batch: Mapping[str, torch.Tensor], supervision: Any, hints: torch.Tensor | None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Eq. 15: NLL of the true codes at the masked positions of the grounded corrupted input."""
        from segros.objectives import masked_token_nll

        for key in ("pixels", "input_ids", "attention_mask"):
            if key not in batch:
                raise ValueError(f"batch is missing {key!r}")
        codes = self.image_codes(batch["pixels"])
        b, n = codes.shape
        masked = supervision.masked.to(self.device)
        if masked.shape != (b, n):
            raise ValueError(f"supervision.masked must be [B, N] = [{b}, {n}] on target_grid_hw, got {tuple(masked.shape)}")
        if hints is not None and (hints.ndim != 3 or hints.shape[0] != b or hints.shape[2] != self.width):
            raise ValueError(f"hints must be [B, H, D] = [{b}, H, {self.width}], got {tuple(hints.shape)}")
        targets = codes + self.code_offset
        image_ids = torch.where(masked, torch.full_like(targets, self.mask_id), targets)
        logits = self.logits_for(batch["input_ids"], batch["attention_mask"], image_ids, hints)
        return masked_token_nll(logits, targets, supervision.loss_weight.to(self.device))

    def i2t_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        from segros.objectives import i2t_nll

        feats = self.mm_projector(self.clip_features(batch["pixels"]))
        b, g = feats.shape[:2]
        emb = self.showo.get_input_embeddings()
        ids = batch["input_ids"].to(self.device)
        prefix = torch.cat([emb(self._ids(b, "<|mmu|>")), emb(self._ids(b, "<|soi|>")), feats,
                            emb(self._ids(b, "<|eoi|>"))], 1)
        embeds = torch.cat([prefix, emb(ids)], 1)
        att = torch.cat([torch.ones(b, g + 3, dtype=torch.long, device=self.device),
                         batch["attention_mask"].to(self.device)], 1)
        labels = torch.cat([torch.full((b, g + 3), -100, dtype=torch.long, device=self.device),
                            batch["labels"].to(self.device)], 1)
        logits = self.showo(inputs_embeds=embeds, attention_mask=att).logits
        return i2t_nll(logits, labels)

    # ---- data ----------------------------------------------------------------------------
    def preprocess_images(self, images: Sequence[Any]) -> torch.Tensor:
        return resize_to_pixels(images, self.cfg.resolution)

    def _words(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def tokenize_prompts(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``[t2i][bos] text [eos]`` right-padded to 1 + max_text_len slots; "" is the unconditional prompt."""
        tok = self.tokenizer
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        length = 1 + self.cfg.max_text_len
        ids = torch.full((len(texts), length), pad, dtype=torch.long)
        att = torch.zeros(len(texts), length, dtype=torch.long)
        valid = torch.zeros(len(texts), length, dtype=torch.bool)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"texts[{i}] must be a str, got {type(t).__name__}")
            words = self._words(t)[: self.cfg.max_text_len - 2]
            row = [self.special_id("<|t2i|>"), bos] + words + [tok.eos_token_id]
            ids[i, :len(row)] = torch.tensor(row)
            att[i, :len(row)] = 1
            valid[i, 2:2 + len(words)] = True
        return {"input_ids": ids, "attention_mask": att, "text_valid": valid}

    def i2t_batch(self, images, questions, answers) -> dict[str, torch.Tensor]:
        if not len(images) == len(questions) == len(answers):
            raise ValueError("images, questions and answers must have the same length")
        tok = self.tokenizer
        rows, labels = [], []
        for q, a in zip(questions, answers):
            prompt = self._words("USER: " + q + " ASSISTANT:")
            ans = self._words(a) + [tok.eos_token_id]
            rows.append(prompt + ans)
            labels.append([-100] * len(prompt) + ans)
        length = max(len(r) for r in rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids = torch.full((len(rows), length), pad, dtype=torch.long)
        att = torch.zeros_like(ids)
        lab = torch.full_like(ids, -100)
        for i, (r, l) in enumerate(zip(rows, labels)):
            ids[i, :len(r)], att[i, :len(r)], lab[i, :len(r)] = torch.tensor(r), 1, torch.tensor(l)
        return {"input_ids": ids, "attention_mask": att, "labels": lab, "pixels": self.preprocess_images(images)}

    # ---- generation ----------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seed: int = 0, guidance_scale: float | None = None,
                 num_steps: int | None = None, temperature: float | None = None, return_codes: bool = False,
                 **unused: Any) -> list:
        """Show-o's MaskGIT sampler (``t2i_generate``), one image per prompt."""
        from PIL import Image

        g_scale = self.cfg.guidance_scale if guidance_scale is None else guidance_scale
        steps = self.cfg.num_steps if num_steps is None else num_steps
        temp = self.cfg.temperature if temperature is None else temperature
        if steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {steps}")
        gen = torch.Generator(device="cpu").manual_seed(seed)
        b = len(prompts)
        n = self.target_grid_hw[0] * self.target_grid_hw[1]
        cond = self.tokenize_prompts(list(prompts))
        uncond = self.tokenize_prompts([""] * b)
        image_ids = torch.full((b, n), self.mask_id, dtype=torch.long, device=self.device)
        k = 2 ** self.cfg.codebook_dim
        for step in range(steps):
            if g_scale > 0:
                logits = self.logits_for(torch.cat([cond["input_ids"], uncond["input_ids"]]),
                                         torch.cat([cond["attention_mask"], uncond["attention_mask"]]),
                                         torch.cat([image_ids, image_ids]))
                c, u = logits.chunk(2)
                logits = (1 + g_scale) * c - g_scale * u
            else:
                logits = self.logits_for(cond["input_ids"], cond["attention_mask"], image_ids)
            logits = logits[..., self.code_offset:self.code_offset + k].float()
            probs = logits.softmax(-1)
            sampled = torch.multinomial(probs.reshape(-1, k).cpu(), 1, generator=gen).view(b, n).to(self.device)
            unknown = image_ids == self.mask_id
            sampled = torch.where(unknown, sampled, image_ids - self.code_offset)
            ratio = (step + 1) / steps
            mask_ratio = math.cos(ratio * math.pi / 2)
            chosen = torch.gather(probs, -1, sampled[..., None])[..., 0]
            chosen = torch.where(unknown, chosen, torch.finfo(chosen.dtype).max)
            mask_len = torch.full((b, 1), math.floor(n * mask_ratio), device=self.device)
            mask_len = torch.minimum(unknown.sum(-1, keepdim=True) - 1, mask_len).clamp(min=1)
            u01 = torch.rand(chosen.shape, generator=gen).to(self.device).clamp(min=1e-20)
            conf = torch.log(chosen.clamp(min=1e-20)) + temp * (1 - ratio) * -torch.log(-torch.log(u01).clamp(min=1e-20))
            cut = torch.gather(conf.sort(-1).values, 1, mask_len.long())
            remask = conf < cut
            image_ids = torch.where(remask, torch.full_like(image_ids, self.mask_id), sampled + self.code_offset)
        codes = sampled  # Show-o returns the last step's samples for every position
        if return_codes:
            return codes
        images = (self.decode_codes(codes).float() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(im) for im in images]


def build_showo(size: str = "256", tokenizer=None, llm_path: str | None = None, **overrides: Any) -> Showo:
    """Show-o with random weights (``size`` = "256" | "512" | "tiny"); config fields overridable.

    ``tokenizer``: default the tiny word-level one for "tiny", else ``AutoTokenizer.from_pretrained
    (llm_path)`` (Phi-1.5 / Show-o folder) with the 10 Show-o special tokens added.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    bad = set(overrides) - set(ShowoConfig.__dataclass_fields__)
    if bad:
        raise ValueError(f"unknown Show-o config fields: {sorted(bad)}")
    cfg = replace(SIZES[size], **overrides)
    if tokenizer is None:
        if size == "tiny" and llm_path is None:
            from segros.backbones.harmon import tiny_tokenizer
            tokenizer = tiny_tokenizer(["user assistant USER: ASSISTANT:"])
        elif llm_path is None:
            raise ValueError(f"llm_path (Phi-1.5 / Show-o tokenizer folder or hub id) is needed for size {size!r}; "
                             "or pass tokenizer=")
        else:
            from transformers import AutoTokenizer
            tokenizer = AutoTokenizer.from_pretrained(llm_path, padding_side="left")
    return Showo(cfg, tokenizer)
