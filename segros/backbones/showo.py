"""Show-o (showlab/Show-o), CLIP-ViT variant, behind the SeGroS :class:`Backbone` protocol.

Phi-1.5 with q/k LayerNorm over text and MAGVIT-v2 codes in one vocabulary (``showo``), the
MAGVIT-v2 tokenizer (``vq_model``, frozen), CLIP ViT-L/14-336 (``clip``, frozen) and ``mm_projector``,
with the official parameter names. Build with :func:`build_showo` (random weights) or through the
registry (``showo-256`` / ``showo-512``, official checkpoints).

- ``embed_image``: ``mm_projector(CLIP)`` on the 24×24 grid (resampled onto the code grid).
- ``t2i_loss``: native layout without hints (SFT, generation), Reca's reconstruction layout with
  hints (:func:`reca_attention_mask`); NLL of the masked codes; γ per sample, cosine schedule.
- Switches: ``hint_preprocess`` ("reca" | "clip"), ``cond_dropout_prob`` (SFT path),
  ``recon_prompts`` (Reca's caption-free prompts).

Vocabulary layout, pixel ranges, the two sequences, the sampler and the parity checks:
``docs/adapters/showo.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segros.attention import bool_to_additive, segros_attention_mask
from segros.backbones._mar import VAEDecoder, VAEEncoder
from segros.backbones.base import Backbone, VisualTokens
from segros.backbones.inputs import CaptionDropout, draw_choice, pad_rows, read_recon_prompts, resize_to_pixels
from segros.data.tokenizer import tiny_tokenizer
from segros.objectives import i2t_nll, masked_token_nll

# UniversalPrompting's order: '[PAD]' (named <|pad|> in sptids_dict) first, then the nine task tokens
SPECIAL_TOKENS = ["<|pad|>", "<|soi|>", "<|eoi|>", "<|sov|>", "<|eov|>", "<|t2i|>", "<|mmu|>", "<|t2v|>",
                  "<|v2v|>", "<|lvg|>"]
# llava/llava_instruct_data.py (Reca's llava_tuning I2T data): the system prompt after <|mmu|>
SYSTEM_PROMPT = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
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
    # CLIP input of embed_image (hints, grounding): "reca" = [-1, 1] pixels, bilinear to 336, no CLIP
    # normalisation (Reca's reconstruction path); "clip" = bicubic + CLIP mean/std (LLaVA processor)
    hint_preprocess: str = "reca"
    # native (no-hint) T2I training: each row's prompt becomes the unconditional [t2i][bos][eos] with
    # this probability (UniversalPrompting.t2i_prompt, cond_dropout_prob 0.1 in every official config)
    cond_dropout_prob: float = 0.1
    # Reca's consts.py or a text file: caption-free reconstruction prompts (tokenize_recon_prompts)
    recon_prompts: str | None = None

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


# ---- Reca's hinted mask ---------------------------------------------------------------------

def reca_attention_mask(real: torch.Tensor, hint: slice, codes: slice, dtype: torch.dtype = torch.float32,
                        as_bool: bool = False) -> torch.Tensor:
    """Reca's ``create_attention_mask_for_mmu_vit(_recon)`` with the hint block at ``hint``.

    ``real`` [B, S] bool (False = padding). Allowed: causal (key <= query); every query sees the
    ``hint`` columns; the ``codes`` block sees itself both ways; no query sees a padding key.
    Returns [B, 1, S, S]: additive (0 / ``finfo(dtype).min``) or bool (True = allowed). With
    ``codes = slice(0, 0)`` it is the understanding mask (``create_attention_mask_for_mmu_vit``).
    """
    if real.ndim != 2 or real.dtype != torch.bool:
        raise ValueError(f"real must be a bool [B, S] tensor, got {real.dtype} {tuple(real.shape)}")
    s = real.shape[1]
    idx = torch.arange(s, device=real.device)
    allowed = idx[None, :] <= idx[:, None]
    allowed[:, hint] = True
    allowed[codes, codes] = True
    allowed = allowed[None, None] & real[:, None, None, :]
    if as_bool:
        return allowed
    return bool_to_additive(allowed, dtype)


# ---- the backbone --------------------------------------------------------------------------------

class Showo(CaptionDropout, Backbone):
    """Show-o 256 / 512 / tiny (CLIP-ViT variant). Build with :func:`build_showo`."""

    gamma_per = "sample"
    mask_schedule = "cosine"

    def __init__(self, cfg: ShowoConfig, tokenizer):
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel, PhiConfig, PhiForCausalLM

        if cfg.hint_preprocess not in ("reca", "clip"):
            raise ValueError(f"hint_preprocess must be 'reca' or 'clip', got {cfg.hint_preprocess!r}")
        if not 0.0 <= cfg.cond_dropout_prob <= 1.0:
            raise ValueError(f"cond_dropout_prob must be in [0, 1], got {cfg.cond_dropout_prob}")
        self.cfg = cfg
        self.family = "showo"
        self.tokenizer = tokenizer
        self.recon_prompt_list = read_recon_prompts(cfg.recon_prompts) if cfg.recon_prompts else None
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
        """pixels [B, 3, H, W] in [0, 1] at ``resolution`` -> MAGVIT-v2 codes [B, N] (raster).

        MAGVIT-v2 is fed ``2 * pixels - 1`` (Show-o normalises with mean = std = 0.5).
        """
        self._check_pixels(pixels)
        r = self.cfg.resolution
        if tuple(pixels.shape[2:]) != (r, r):
            raise ValueError(f"pixels must be {r}x{r} for the image codes, got {tuple(pixels.shape[2:])}")
        x = pixels.to(self.device, self.mm_projector[0].weight.dtype) * 2 - 1
        return self.vq_model.get_code(x)

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, N] -> images [B, 3, H, W] in [0, 1]: ``clamp((decode_code + 1) / 2, 0, 1)``."""
        return ((self.vq_model.decode_code(codes, self.target_grid_hw) + 1) / 2).clamp(0, 1)

    def clip_features(self, pixels: torch.Tensor, preprocess: str = "clip") -> torch.Tensor:
        """Penultimate CLIP layer without CLS: [B, g*g, clip_hidden].

        ``preprocess="clip"``: bicubic resize to ``clip_image_size`` and CLIP mean/std (the LLaVA
        processor of the understanding path); ``"reca"``: ``2 * pixels - 1`` resized bilinearly,
        no CLIP normalisation (Reca's ``pixel_values_recon_336``).
        """
        self._check_pixels(pixels)
        s = self.cfg.clip_image_size
        if preprocess == "clip":
            x = F.interpolate(pixels.float(), size=(s, s), mode="bicubic", align_corners=False).clamp(0, 1)
            mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        elif preprocess == "reca":
            x = F.interpolate(pixels.float() * 2 - 1, size=(s, s), mode="bilinear", align_corners=False)
        else:
            raise ValueError(f"preprocess must be 'clip' or 'reca', got {preprocess!r}")
        x = x.to(self.device, self.mm_projector[0].weight.dtype)
        with torch.no_grad():
            out = self.clip(pixel_values=x, output_hidden_states=True)
        return out.hidden_states[-2][:, 1:]

    # ---- protocol --------------------------------------------------------------------------
    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.dtype != torch.long:
            raise ValueError(f"input_ids must be a long [B, L] tensor, got {getattr(input_ids, 'shape', input_ids)}")
        return self.showo.get_input_embeddings()(input_ids.to(self.device))

    def embed_image(self, pixels: torch.Tensor) -> VisualTokens:
        return VisualTokens(self.mm_projector(self.clip_features(pixels, self.cfg.hint_preprocess)),
                            self.hint_grid_hw)

    def _ids(self, b: int, name: str) -> torch.Tensor:
        return torch.full((b, 1), self.special_id(name), dtype=torch.long, device=self.device)

    def prompt_words(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> list[list[int]]:
        """The word ids of each ``tokenize_prompts`` row (its real tokens minus [t2i], [bos], [eos])."""
        words = []
        for ids, att in zip(text_ids.tolist(), text_mask.tolist()):
            real = [t for t, a in zip(ids, att) if a]
            if len(real) < 3 or real[0] != self.special_id("<|t2i|>"):
                raise ValueError("text rows must come from tokenize_prompts: [pad ...][t2i][bos] words [eos]")
            words.append(real[2:-1])
        return words

    def hinted_text_block(self, words: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Reca's ``t2i_clip_recon_prompt`` ids around the hints: ``[mmu][soi] | [eoi][bos] words [eos][pad ...]``.

        Returns ids [B, max_text_len] (the hints go between slots 1 and 2) and their real flags;
        at most ``max_text_len - 5`` words are kept (Reca asserts instead).
        """
        tok = self.tokenizer
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        length = self.cfg.max_text_len
        pad = self.special_id("<|pad|>")
        ids = torch.full((len(words), length), pad, dtype=torch.long)
        for i, w in enumerate(words):
            row = [self.special_id("<|mmu|>"), self.special_id("<|soi|>"), self.special_id("<|eoi|>"), bos,
                   *list(w)[: length - 5], tok.eos_token_id]
            ids[i, :len(row)] = torch.tensor(row)
        return ids.to(self.device), (ids != pad).to(self.device)

    def sequence(self, text_ids, text_mask, image_ids, hints=None):
        """(inputs_embeds [B, S, D], additive mask [B, 1, S, S]) of the native or hinted T2I layout.

        ``text_ids``/``text_mask`` from :meth:`tokenize_prompts`; ``image_ids`` [B, N] vocabulary ids
        (codes offset, masked ones = ``mask_id``); the codes are always the slots ``S-1-N .. S-2``.
        """
        b, n = image_ids.shape
        emb = self.showo.get_input_embeddings()
        image_block = torch.cat([self._ids(b, "<|soi|>"), image_ids.to(self.device), self._ids(b, "<|eoi|>")], 1)
        if hints is None:  # t2i_gen_prompt + create_attention_mask_predict_next(rm_pad_in_image=True)
            embeds = emb(torch.cat([text_ids.to(self.device), image_block], 1))
            mask = segros_attention_mask(0, text_mask.to(self.device).bool(), n + 2, device=self.device,
                                         dtype=embeds.dtype)
            return embeds, mask
        ids, real = self.hinted_text_block(self.prompt_words(text_ids, text_mask))
        h = hints.shape[1]
        embeds = torch.cat([emb(ids[:, :2]), hints.to(emb.weight.dtype), emb(ids[:, 2:]), emb(image_block)], 1)
        ones = torch.ones(b, h, dtype=torch.bool, device=self.device)
        image_real = torch.ones(b, n + 2, dtype=torch.bool, device=self.device)
        real = torch.cat([real[:, :2], ones, real[:, 2:], image_real], 1)
        s = real.shape[1]
        mask = reca_attention_mask(real, slice(2, 2 + h), slice(s - 1 - n, s - 1), dtype=embeds.dtype)
        return embeds, mask

    def logits_for(self, text_ids, text_mask, image_ids, hints=None):
        """Logits [B, N, V] at the image code positions of the native (``hints=None``) or hinted layout."""
        n = image_ids.shape[1]
        embeds, mask = self.sequence(text_ids, text_mask, image_ids, hints)
        pos = torch.arange(embeds.shape[1], device=self.device)[None].expand(embeds.shape[0], -1)
        logits = self.showo(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).logits
        return logits[:, -(n + 1):-1]

    def t2i_loss(self, batch: Mapping[str, torch.Tensor], supervision: Any, hints: torch.Tensor | None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Eq. 15: NLL of the true codes at the masked positions of the grounded corrupted input."""
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
        text_ids, text_mask = batch["input_ids"], batch["attention_mask"]
        text_ids, text_mask = self.sft_conditions(text_ids, text_mask, hints, generator)
        logits = self.logits_for(text_ids, text_mask, image_ids, hints)
        return masked_token_nll(logits, targets, supervision.loss_weight.to(self.device))

    def i2t_sequence(self, batch: Mapping[str, torch.Tensor]):
        """(inputs_embeds, additive mask, labels) of ``[mmu][system][soi] CLIP [eoi] conversation``.

        Reca's ``llava_tuning`` branch: CLIP features (CLIP-normalised) after LLaVA's system prompt;
        ``create_attention_mask_for_mmu_vit``: causal, and every token sees every CLIP token.
        """
        feats = self.mm_projector(self.clip_features(batch["pixels"], "clip"))
        b, g = feats.shape[:2]
        emb = self.showo.get_input_embeddings()
        ids = batch["input_ids"].to(self.device)
        system = torch.tensor(self._words(SYSTEM_PROMPT), dtype=torch.long, device=self.device)[None].expand(b, -1)
        head = torch.cat([self._ids(b, "<|mmu|>"), system, self._ids(b, "<|soi|>")], 1)
        embeds = torch.cat([emb(head), feats, emb(self._ids(b, "<|eoi|>")), emb(ids)], 1)
        n_pre = head.shape[1] + g + 1
        real = torch.cat([torch.ones(b, n_pre, dtype=torch.bool, device=self.device),
                          batch["attention_mask"].to(self.device).bool()], 1)
        mask = reca_attention_mask(real, slice(head.shape[1], head.shape[1] + g), slice(0, 0), dtype=embeds.dtype)
        labels = torch.cat([torch.full((b, n_pre), -100, dtype=torch.long, device=self.device),
                            batch["labels"].to(self.device)], 1)
        return embeds, mask, labels

    def i2t_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Shifted NLL of the answer tokens of :meth:`i2t_sequence` (``Showo.forward``'s ``loss_mmu``)."""
        embeds, mask, labels = self.i2t_sequence(batch)
        b, s = labels.shape
        pos = torch.arange(s, device=self.device)[None].expand(b, -1)
        logits = self.showo(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).logits
        return i2t_nll(logits, labels)

    # ---- data ----------------------------------------------------------------------------
    def preprocess_images(self, images: Sequence[Any]) -> torch.Tensor:
        return resize_to_pixels(images, self.cfg.resolution)

    def _words(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def draw_dropped(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``UniversalPrompting.t2i_prompt``'s condition dropout: ``probs = torch.rand(B)``, a row with
        ``probs[i] < cond_dropout_prob`` becomes the unconditional ``[pad ...][t2i][bos][eos]``
        (:meth:`drop_conditions`). ``generator`` (CPU) or, as the official code, torch's global generator."""
        return torch.rand(batch_size, generator=generator) < self.cfg.cond_dropout_prob

    def recon_texts(self, batch_size: int, generator=None) -> list[str]:
        """Reca's caption-free reconstruction texts, one per row (Reca ``Show-o/training/
        train_recon_w_clip_vit.py``, the ``prepare_inputs_and_labels_recon`` call:
        ``f"USER: \\n { random.choice(recon_prompt_list) } ASSISTANT:"``, i.e. ``"USER: \\n " +
        instruction + " ASSISTANT:"``). ``generator``: a ``torch.Generator``, a ``random.Random`` or
        None (Python's ``random``, as Reca)."""
        if not self.recon_prompt_list:
            raise ValueError("tokenize_recon_prompts needs the config field recon_prompts (Reca's consts.py "
                             "or a text file with one instruction per line)")
        return [f"USER: \n {draw_choice(self.recon_prompt_list, generator)} ASSISTANT:" for _ in range(batch_size)]

    def tokenize_recon_prompts(self, batch_size: int, generator=None) -> dict[str, torch.Tensor]:
        """:meth:`recon_texts` as :meth:`tokenize_prompts` rows, ``text_valid`` all False.

        In the hinted layout (:meth:`sequence`) their words give exactly Reca's
        ``t2i_clip_recon_prompt`` ids (``text_tokenizer(texts)['input_ids']``, Phi adds no special tokens).
        """
        out = self.tokenize_prompts(self.recon_texts(batch_size, generator))
        out["text_valid"] = torch.zeros_like(out["text_valid"])
        return out

    def tokenize_prompts(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``t2i_gen_prompt``'s text block: ``[pad ...][t2i][bos] text [eos]`` LEFT-padded to 1 + max_text_len.

        "" is the unconditional prompt ``[t2i][bos][eos]``; a longer text keeps max_text_len - 2 words.
        """
        tok = self.tokenizer
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        length = 1 + self.cfg.max_text_len
        ids = torch.full((len(texts), length), self.special_id("<|pad|>"), dtype=torch.long)
        att = torch.zeros(len(texts), length, dtype=torch.long)
        valid = torch.zeros(len(texts), length, dtype=torch.bool)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"texts[{i}] must be a str, got {type(t).__name__}")
            words = self._words(t)[: self.cfg.max_text_len - 2]
            row = [self.special_id("<|t2i|>"), bos] + words + [tok.eos_token_id]
            ids[i, length - len(row):] = torch.tensor(row)
            att[i, length - len(row):] = 1
            valid[i, length - 1 - len(words):length - 1] = True
        return {"input_ids": ids, "attention_mask": att, "text_valid": valid}

    def i2t_batch(self, images, questions, answers) -> dict[str, torch.Tensor]:
        """Reca's ``llava_tuning`` conversation ``USER: q ASSISTANT: a<|endoftext|>`` (phi1.5), right-padded."""
        if not len(images) == len(questions) == len(answers):
            raise ValueError("images, questions and answers must have the same length")
        tok = self.tokenizer
        rows, labels = [], []
        for q, a in zip(questions, answers):
            prompt = self._words("USER: " + q + " ASSISTANT:")
            ans = self._words(" " + a) + [tok.eos_token_id]
            rows.append(prompt + ans)
            labels.append([-100] * len(prompt) + ans)
        return {**pad_rows(rows, self.special_id("<|pad|>"), labels=labels), "pixels": self.preprocess_images(images)}

    # ---- generation ----------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seed: int = 0, guidance_scale: float | None = None,
                 num_steps: int | None = None, temperature: float | None = None, return_codes: bool = False,
                 generator: torch.Generator | None = None, **unused: Any) -> list:
        """Show-o's MaskGIT sampler (``Showo.t2i_generate``), one image per prompt.

        Randomness: a CPU generator (``generator``, else seeded with ``seed``), drawn in
        ``t2i_generate``'s order, so the official sampler with the same CPU generator draws the
        same codes.
        """
        from PIL import Image

        g_scale = self.cfg.guidance_scale if guidance_scale is None else guidance_scale
        steps = self.cfg.num_steps if num_steps is None else num_steps
        temp = self.cfg.temperature if temperature is None else temperature
        if steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {steps}")
        gen = generator if generator is not None else torch.Generator(device="cpu").manual_seed(seed)
        b = len(prompts)
        n = self.target_grid_hw[0] * self.target_grid_hw[1]
        k = 2 ** self.cfg.codebook_dim
        cond = self.tokenize_prompts(list(prompts))
        uncond = self.tokenize_prompts([""] * b)
        image_ids = torch.full((b, n), self.mask_id, dtype=torch.long, device=self.device)
        known = image_ids.clone()  # t2i_generate's input_ids_minus_lm_vocab_size: a code, or mask_id
        for step in range(steps):
            if g_scale > 0:
                logits = self.logits_for(torch.cat([cond["input_ids"], uncond["input_ids"]]),
                                         torch.cat([cond["attention_mask"], uncond["attention_mask"]]),
                                         torch.cat([image_ids, image_ids]))
                c, u = logits.chunk(2)
                logits = (1 + g_scale) * c - g_scale * u
            else:
                logits = self.logits_for(cond["input_ids"], cond["attention_mask"], image_ids)
            probs = logits[..., self.code_offset:self.code_offset + k].softmax(-1)
            sampled = torch.multinomial(probs.reshape(-1, k).cpu(), 1, generator=gen)[:, 0].view(b, n).to(self.device)
            unknown = known == self.mask_id
            sampled = torch.where(unknown, sampled, known)
            ratio = (step + 1) / steps
            mask_ratio = torch.cos(torch.tensor(ratio) * math.pi * 0.5)  # float32, as cosine_schedule
            chosen = torch.gather(probs, -1, sampled[..., None])[..., 0]
            chosen = torch.where(unknown, chosen, torch.finfo(chosen.dtype).max)
            mask_len = (n * mask_ratio).floor().unsqueeze(0).to(self.device)
            mask_len = torch.maximum(torch.ones(1, device=self.device),
                                     torch.minimum(unknown.sum(-1, keepdim=True) - 1, mask_len))
            temp = temp * (1.0 - ratio)  # compounds over the steps, as in t2i_generate
            noise = torch.zeros(chosen.shape, dtype=chosen.dtype).uniform_(0, 1, generator=gen).to(self.device)
            gumbel = -torch.log((-torch.log(noise.clamp(min=1e-20))).clamp(min=1e-20))
            conf = torch.log(chosen.clamp(min=1e-20)) + temp * gumbel
            cut = torch.gather(conf.sort(-1).values, 1, mask_len.long())
            remask = conf < cut
            image_ids = torch.where(remask, torch.full_like(image_ids, self.mask_id), sampled + self.code_offset)
            known = torch.where(remask, torch.full_like(known, self.mask_id), sampled)
        codes = sampled.clamp(0, k - 1)  # t2i_generate returns the last step's samples for every position
        if return_codes:
            return codes
        images = (self.decode_codes(codes).float() * 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(im) for im in images]

    # ---- understanding: greedy answers (Show-o's MMU path with CLIP features) ------------------
    def understanding_pixels(self, images: Sequence[Any]) -> torch.Tensor:
        """The CLIP input of Show-o's understanding path: pixels [B, 3, s, s] in [0, 1], s = ``clip_image_size``.

        ``inference_mmu.py`` (CLIP-ViT branch) runs LLaVA's ``CLIPImageProcessor`` on the original
        image: the shortest edge resized to s (bicubic, aspect kept, the long edge ``int(s * long /
        short)``), then a centre crop of s x s (offsets ``(size - s) // 2``). :meth:`clip_features`
        with ``"clip"`` then applies the CLIP mean/std (its resize is the identity at this size).
        """
        from PIL import Image

        s = self.cfg.clip_image_size
        out = []
        for i, im in enumerate(images):
            im = _understanding_image(im, f"images[{i}]")
            w, h = im.size
            short, long = min(w, h), max(w, h)
            new_long = int(s * long / short)
            new_w, new_h = (s, new_long) if w <= h else (new_long, s)
            im = im.resize((new_w, new_h), Image.BICUBIC)
            left, top = (new_w - s) // 2, (new_h - s) // 2
            im = im.crop((left, top, left + s, top + s))
            out.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255)
        return torch.stack(out)

    def understanding_prompt(self, question: str) -> tuple[list[int], list[int]]:
        """(ids before the CLIP tokens, ids after them) of ``inference_mmu.py``'s CLIP-ViT branch:
        ``[mmu] system [soi]`` | ``[eoi]`` + the phi1.5 conversation ``"USER: {question} ASSISTANT:"``
        (llava ``conv_phi_v0``: empty system, roles USER / ASSISTANT, sep " ", then ``.strip()``),
        tokenized without special tokens (Phi adds none)."""
        head = [self.special_id("<|mmu|>")] + self._words(SYSTEM_PROMPT) + [self.special_id("<|soi|>")]
        tail = [self.special_id("<|eoi|>")] + self._words(f"USER: {question} ASSISTANT:".strip())
        return head, tail

    @torch.no_grad()
    def answer(self, images: Sequence[Any], questions: Sequence[str], max_new_tokens: int = 4,
               use_cache: bool = True) -> list[str]:
        """Greedy answers, one question per image, as Show-o's ``Showo.mmu_generate`` (CLIP-ViT branch).

        Sequence ``[mmu] system [soi] mm_projector(CLIP) [eoi] USER: q ASSISTANT:`` with the
        understanding mask (causal, every token sees the CLIP tokens: ``create_attention_mask_for_mmu_vit``,
        :func:`reca_attention_mask`), position ids ``arange``; each step appends the argmax over the whole
        vocabulary (the official ``top_k=1``) as a causal token and stops after ``<|endoftext|>`` (the
        tokenizer's eos) or ``max_new_tokens``. The official loop re-runs the whole sequence each step;
        ``use_cache`` (default) keeps the keys and values instead (same tokens; tested). The answer is the
        decoded new tokens with special tokens and ids outside the text vocabulary (image codes, mask)
        skipped, stripped. Questions run one at a time, as in ``inference_mmu.py``.
        """
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        was_training = self.training
        self.eval()
        try:
            pixels = self.understanding_pixels(images)
            answers = []
            for i, q in enumerate(questions):
                if not isinstance(q, str):
                    raise ValueError(f"questions[{i}] must be a str, got {type(q).__name__}")
                new = self._greedy_understanding(pixels[i:i + 1], q, max_new_tokens, use_cache)
                keep = [t for t in new if t < len(self.tokenizer)]
                answers.append(self.tokenizer.decode(keep, skip_special_tokens=True).strip())
        finally:
            self.train(was_training)
        return answers

    def _greedy_understanding(self, pixels: torch.Tensor, question: str, max_new_tokens: int,
                              use_cache: bool) -> list[int]:
        import inspect

        emb = self.showo.get_input_embeddings()
        head, tail = self.understanding_prompt(question)
        feats = self.mm_projector(self.clip_features(pixels, "clip"))
        g = feats.shape[1]
        ids = lambda xs: torch.tensor([xs], dtype=torch.long, device=self.device)  # noqa: E731
        embeds = torch.cat([emb(ids(head)), feats.to(emb.weight.dtype), emb(ids(tail))], 1)
        eos = self.tokenizer.eos_token_id
        # transformers 5 names the key/value cache ``cache`` (``past_key_values`` before)
        cache_kw = "cache" if "cache" in inspect.signature(self.showo.forward).parameters else "past_key_values"
        new, past = [], None
        for _ in range(max_new_tokens):
            s = embeds.shape[1]
            if past is None:  # the whole sequence (every step without the cache)
                real = torch.ones(1, s, dtype=torch.bool, device=self.device)
                mask = reca_attention_mask(real, slice(len(head), len(head) + g), slice(0, 0), dtype=embeds.dtype)
                pos = torch.arange(s, device=self.device)[None]
                out = self.showo(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=use_cache)
            else:  # the last token, seeing every earlier one
                mask = torch.zeros(1, 1, 1, s, dtype=embeds.dtype, device=self.device)
                pos = torch.tensor([[s - 1]], device=self.device)
                out = self.showo(inputs_embeds=embeds[:, -1:], attention_mask=mask, position_ids=pos,
                                 use_cache=True, **{cache_kw: past})
            past = getattr(out, cache_kw) if use_cache else None
            nxt = int(out.logits[0, -1].argmax())
            new.append(nxt)
            if nxt == eos:
                break
            embeds = torch.cat([embeds, emb(ids([nxt]))], 1)
        return new


def _understanding_image(image: Any, where: str):
    """A PIL image or a uint8 [H, W, 3] array -> an RGB PIL image."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{where} must be a PIL image or uint8 [H, W, 3], got {arr.dtype} {arr.shape}")
    return Image.fromarray(arr)


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
            tokenizer = tiny_tokenizer(["user assistant USER: ASSISTANT:"])
        elif llm_path is None:
            raise ValueError(f"llm_path (Phi-1.5 / Show-o tokenizer folder or hub id) is needed for size {size!r}; "
                             "or pass tokenizer=")
        else:
            from transformers import AutoTokenizer
            tokenizer = AutoTokenizer.from_pretrained(llm_path, padding_side="left")
    return Showo(cfg, tokenizer)
