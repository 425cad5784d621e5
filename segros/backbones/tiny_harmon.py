"""tiny-harmon: a from-scratch Harmon stand-in (continuous latents, MAR encoder/decoder, diffusion head).

Architecture (Harmon, §11 Eqs. 16–17 of the paper; wusize/Harmon, LTH14/mar):

* Image targets: :class:`PatchPCAAutoencoder` latents, an 8×8 grid of C=16 channels (64 px,
  8 px patches), standing in for KL-16's 32×32×16 latents.
* MAR encoder (bidirectional): ``z_proj`` (C→enc_dim) + ``n_buffer`` zero buffer tokens +
  learned positions + LayerNorm, then the masked tokens are *dropped* (so every sample of a batch
  must keep the same visible count: γ per batch, truncated normal), pre-norm transformer layers
  and a final LayerNorm.
* ``proj_in`` = Linear(enc_dim, D), SiLU, Linear(D, D) into the LLM (``transformers.Qwen2ForCausalLM``
  as Harmon's Qwen2.5); ``proj_out`` = Linear(D, D), SiLU, Linear(D, enc_dim) back.
* MAR decoder: ``decoder_embed``, a learned mask token at every masked position, learned
  positions, transformer layers, LayerNorm, buffer tokens dropped, plus ``diffusion_pos_embed``:
  the per-token condition z_i of the diffusion head.
* Diffusion head: MAR's SimpleMLPAdaLN (input projection, time + condition embedding, AdaLN
  residual MLP blocks with zero-initialised gates, AdaLN final layer), ε-prediction, trained with
  :func:`segros.objectives.diffusion_mse` (cosine schedule, 1000 steps, 4 samples per token).

* ``embed_image`` = proj_in(MAR encoder with nothing masked), buffer tokens dropped, so
  ``hint_grid_hw == target_grid_hw`` (8×8).
* T2I (Eqs. 16–17): ``[hints][text][proj_in(encoder(buffer + visible))]`` with the Fig. 6 mask;
  the LLM's last hidden states at the image positions → proj_out → MAR decoder → z; loss =
  Σ w·diffusion-MSE / Σ w on tokens with ``loss_weight > 0``.
* Generation: MAR iterative decoding — a random order per sample (from the seed); after step s of
  S the masked count is ``⌊N·cos(π/2·(s+1)/S)⌋`` (at least 1 until the last step, and at least one
  token is decoded per step); the tokens decoded at a step are sampled by DDIM (η = 0,
  ``diffusion_steps`` steps) with CFG ε = ε_u + g·(ε_c − ε_u) (constant guidance; MAR's linear CFG
  ramp and sampling temperature are not modelled).
* The alignment stage (base pretraining, :meth:`TinyBackbone.alignment_loss`): FILIP between
  the text input embeddings and ``proj_in`` of the encoder features taken without gradient
  (:meth:`image_encoder_features` / :meth:`project_image_features`); see tiny_common.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM

from segros.backbones.base import VisualTokens
from segros.backbones.tiny_common import TinyBackbone, TinyConfig, check_batch
from segros.data.image_tokenizer import LayoutColorLatents, PatchPCAAutoencoder
from segros.objectives import DiffusionSchedule, diffusion_mse


@dataclass(frozen=True)
class TinyHarmonConfig(TinyConfig):
    latent_channels: int = 16    # C (KL-16 has 16)
    enc_dim: int = 96            # MAR encoder/decoder width
    enc_layers: int = 1
    dec_layers: int = 1
    n_buffer: int = 4
    diff_width: int = 128
    diff_depth: int = 2
    diff_num_samples: int = 4
    diff_train_steps: int = 1000
    prediction: str = "epsilon"  # what the diffusion head predicts: "epsilon" (MAR/Harmon) | "x0" (docs/calibration.md)
    codec: str = "pca"           # "pca" (PatchPCAAutoencoder) | "layout_color" (LayoutColorLatents, world v3;
                                 # latent_channels must then be 4·4 + 3 = 19)


def transformer(dim: int, depth: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(dim, 4, 4 * dim, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


def keep_rows(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """x [B, S, D], keep [B, S] bool with the same count per row -> [B, count, D] (order kept)."""
    counts = keep.sum(1)
    if bool((counts != counts[0]).any()):
        i = int((counts != counts[0]).nonzero()[0])
        raise ValueError(f"every sample must keep the same number of visible tokens (gamma per batch); "
                         f"sample 0 keeps {int(counts[0])}, sample {i} keeps {int(counts[i])}")
    return x[keep].reshape(x.shape[0], int(counts[0]), x.shape[2])


class MAREncoder(nn.Module):
    def __init__(self, cfg: TinyHarmonConfig, n: int):
        super().__init__()
        self.n_buffer = cfg.n_buffer
        self.z_proj = nn.Linear(cfg.latent_channels, cfg.enc_dim)
        self.pos_embed = nn.Parameter(torch.randn(1, cfg.n_buffer + n, cfg.enc_dim) * 0.02)
        self.z_proj_ln = nn.LayerNorm(cfg.enc_dim)
        self.blocks = transformer(cfg.enc_dim, cfg.enc_layers)
        self.norm = nn.LayerNorm(cfg.enc_dim)

    def forward(self, latents: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """latents [B, N, C], seen [B, N] bool -> [B, n_buffer + n_seen, enc_dim]."""
        b = latents.shape[0]
        x = self.z_proj(latents)
        x = torch.cat([x.new_zeros(b, self.n_buffer, x.shape[2]), x], dim=1)
        x = self.z_proj_ln(x + self.pos_embed)
        keep = torch.cat([seen.new_ones(b, self.n_buffer), seen.bool()], dim=1)
        return self.norm(self.blocks(keep_rows(x, keep)))


class MARDecoder(nn.Module):
    def __init__(self, cfg: TinyHarmonConfig, n: int):
        super().__init__()
        self.n_buffer = cfg.n_buffer
        self.decoder_embed = nn.Linear(cfg.enc_dim, cfg.enc_dim)
        self.mask_token = nn.Parameter(torch.randn(1, 1, cfg.enc_dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, cfg.n_buffer + n, cfg.enc_dim) * 0.02)
        self.blocks = transformer(cfg.enc_dim, cfg.dec_layers)
        self.norm = nn.LayerNorm(cfg.enc_dim)
        self.diffusion_pos_embed = nn.Parameter(torch.randn(1, n, cfg.enc_dim) * 0.02)

    def forward(self, x: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """x [B, n_buffer + n_seen, enc_dim] -> z [B, N, enc_dim] (mask tokens at unseen positions)."""
        b = x.shape[0]
        x = self.decoder_embed(x)
        keep = torch.cat([seen.new_ones(b, self.n_buffer), seen.bool()], dim=1)
        full = self.mask_token.to(x.dtype).expand(b, keep.shape[1], x.shape[2]).clone()
        full[keep] = x.reshape(-1, x.shape[2])
        z = self.norm(self.blocks(full + self.pos_embed))
        return z[:, self.n_buffer:] + self.diffusion_pos_embed


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer steps t [M] -> [M, dim] (as in DiT/MAR)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class AdaLNBlock(nn.Module):
    def __init__(self, w: int):
        super().__init__()
        self.norm = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(w, 3 * w))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x, c):
        shift, scale, gate = self.ada(c).chunk(3, dim=-1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class DiffusionHead(nn.Module):
    """MAR's SimpleMLPAdaLN: ε̂(x_t [M, C], t [M], cond [M, Dc]) -> [M, C] (a NoisePredictor)."""

    def __init__(self, channels: int, cond_dim: int, width: int, depth: int):
        super().__init__()
        self.time_embed = nn.Sequential(nn.Linear(64, width), nn.SiLU(), nn.Linear(width, width))
        self.cond_embed = nn.Linear(cond_dim, width)
        self.input_proj = nn.Linear(channels, width)
        self.blocks = nn.ModuleList(AdaLNBlock(width) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.final = nn.Linear(width, channels)
        for lin in (self.final_ada[1], self.final):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x_t, t, cond):
        c = self.time_embed(timestep_embedding(t, 64)) + self.cond_embed(cond)
        x = self.input_proj(x_t)
        for block in self.blocks:
            x = block(x, c)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        return self.final(self.final_norm(x) * (1 + scale) + shift)


class TinyHarmon(TinyBackbone):
    family = "tiny-harmon"
    config_cls = TinyHarmonConfig
    gamma_per = "batch"
    mask_schedule = "truncnorm"

    def __init__(self, config: TinyHarmonConfig, tokenizer, autoencoder: PatchPCAAutoencoder | None = None):
        super().__init__(config, tokenizer)
        torch.manual_seed(config.seed)
        if config.prediction not in ("epsilon", "x0"):
            raise ValueError(f"prediction must be 'epsilon' or 'x0', got {config.prediction!r}")
        if config.codec not in ("pca", "layout_color"):
            raise ValueError(f"codec must be 'pca' or 'layout_color', got {config.codec!r}")
        if autoencoder is None:
            autoencoder = (PatchPCAAutoencoder(config.latent_channels, config.patch, config.image_size) if config.codec == "pca"
                           else LayoutColorLatents(patch=config.patch, image_size=config.image_size))
        self.autoencoder = autoencoder
        if self.autoencoder.channels != config.latent_channels:
            raise ValueError(f"autoencoder has {self.autoencoder.channels} channels, config.latent_channels={config.latent_channels}")
        g = config.image_size // config.patch
        self.target_grid_hw = self.hint_grid_hw = (g, g)
        n = g * g
        self.llm = Qwen2ForCausalLM(Qwen2Config(
            vocab_size=len(tokenizer), hidden_size=config.width, intermediate_size=config.intermediate,
            num_hidden_layers=config.layers, num_attention_heads=config.heads,
            num_key_value_heads=config.heads, max_position_embeddings=512, tie_word_embeddings=False,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id))
        self.mar_encoder = MAREncoder(config, n)
        self.proj_in = nn.Sequential(nn.Linear(config.enc_dim, config.width), nn.SiLU(),
                                     nn.Linear(config.width, config.width))
        self.proj_out = nn.Sequential(nn.Linear(config.width, config.width), nn.SiLU(),
                                      nn.Linear(config.width, config.enc_dim))
        self.mar_decoder = MARDecoder(config, n)
        self.diffusion_head = DiffusionHead(config.latent_channels, config.enc_dim, config.diff_width, config.diff_depth)
        self.schedule = DiffusionSchedule(config.diff_train_steps)

    @property
    def num_image_tokens(self) -> int:
        return self.target_grid_hw[0] * self.target_grid_hw[1]

    def image_encoder_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """MAR encoder output with nothing masked, buffer tokens dropped: [B, N, enc_dim]."""
        latents = self.autoencoder.encode(pixels)
        seen = torch.ones(latents.shape[:2], dtype=torch.bool)
        return self.mar_encoder(latents, seen)[:, self.config.n_buffer:]

    def project_image_features(self, features: torch.Tensor) -> torch.Tensor:
        """proj_in: per-token map of encoder features into the LLM width."""
        return self.proj_in(features)

    def embed_image(self, pixels: torch.Tensor) -> VisualTokens:
        """proj_in(MAR encoder, nothing masked), buffer tokens dropped (Harmon's hint features)."""
        return VisualTokens(self.project_image_features(self.image_encoder_features(pixels)), self.hint_grid_hw)

    def conditions(self, hints, input_ids, attention_mask, latents, seen) -> torch.Tensor:
        """z [B, N, enc_dim]: the diffusion head's per-token conditions given hints, text, visible latents."""
        n_hint = 0 if hints is None else hints.shape[1]
        img = self.proj_in(self.mar_encoder(latents, seen))
        txt = self.embed_text(input_ids)
        hidden = self.run_llm([hints, txt, img], n_hint, attention_mask, img.shape[1], logits=False)
        return self.mar_decoder(self.proj_out(hidden[:, -img.shape[1]:]), seen)

    def t2i_loss(self, batch: Mapping[str, torch.Tensor], supervision: Any, hints: torch.Tensor | None) -> torch.Tensor:
        """Eqs. 16–17: per-token diffusion MSE on latents with loss_weight > 0, Σ w ℓ / Σ w."""
        check_batch(batch, ("pixels", "input_ids", "attention_mask"))
        b, n = batch["input_ids"].shape[0], self.num_image_tokens
        for name in ("seen", "loss_weight"):
            if tuple(getattr(supervision, name).shape) != (b, n):
                raise ValueError(f"supervision.{name} must be [{b}, {n}], got {tuple(getattr(supervision, name).shape)}")
        if hints is not None and (hints.ndim != 3 or hints.shape[0] != b or hints.shape[2] != self.width):
            raise ValueError(f"hints must be [{b}, H, {self.width}], got {tuple(hints.shape)}")
        latents = self.autoencoder.encode(batch["pixels"])
        ids, am = self.drop_prompts(batch["input_ids"], batch["attention_mask"], hints)
        z = self.conditions(hints, ids, am, latents, supervision.seen.bool())
        return diffusion_mse(self.diffusion_head, latents, z, supervision.loss_weight.float(), self.schedule,
                             num_samples=self.config.diff_num_samples, prediction=self.config.prediction)

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seed: int = 0, guidance_scale: float = 3.0, num_iter: int = 8,
                 diffusion_steps: int = 25, return_latents: bool = False):
        """MAR iterative decoding with CFG (see the module docstring) -> list of PIL images (64 px)."""
        if num_iter < 1:
            raise ValueError(f"num_iter must be >= 1, got {num_iter}")
        was_training = self.training
        self.eval()
        g = torch.Generator().manual_seed(seed)
        b, n, c = len(prompts), self.num_image_tokens, self.config.latent_channels
        text = self.cfg_prompts(prompts)
        orders = torch.stack([torch.randperm(n, generator=g) for _ in range(b)])
        latents = torch.zeros(b, n, c)
        known = torch.zeros(b, n, dtype=torch.bool)
        n_unknown = n
        for s in range(num_iter):
            z = self.conditions(None, text["input_ids"], text["attention_mask"],
                                torch.cat([latents, latents]), torch.cat([known, known]))
            zc, zu = z.chunk(2)
            n_next = int(math.floor(n * math.cos(math.pi / 2 * (s + 1) / num_iter)))
            n_next = 0 if s == num_iter - 1 else max(1, min(n_next, n_unknown - 1))
            todo = torch.zeros(b, n, dtype=torch.bool)
            todo.scatter_(1, orders[:, n_next:n_unknown], True)
            cond = torch.cat([zc[todo], zu[todo]], dim=-1)

            def guided(x, t, cc):
                out = self.diffusion_head(torch.cat([x, x]), torch.cat([t, t]), torch.cat(cc.chunk(2, dim=-1)))
                o_c, o_u = out.chunk(2)
                guided_out = o_u + guidance_scale * (o_c - o_u)
                if self.config.prediction == "x0":  # guidance on x̂0, then the ε̂ it implies
                    return self.schedule.eps_from_x0(x, guided_out, t)
                return guided_out

            latents[todo] = self.schedule.sample(guided, cond, c, diffusion_steps, generator=g)
            known |= todo
            n_unknown = n_next
        self.train(was_training)
        if return_latents:
            return latents
        return self.to_pil(self.autoencoder.decode(latents))
