"""Harmon's image side: the KL-16 VAE, the MAR encoder/decoder and the per-token diffusion head.

Written from a reading of wusize/Harmon ``src/models/mar/{vae,mar,diffloss}.py`` (which adapt
CompVis' LDM KL-VAE and LTH14/mar); no code is copied. Module and parameter *names* follow the
official ones so that ``state_dict()`` keys equal the official checkpoint keys:

* VAE (``kl16.ckpt``, loaded under ``vae.``): ``encoder.{conv_in, down.<i>.block.<j>.{norm1, conv1,
  norm2, conv2, nin_shortcut}, down.<i>.attn.<j>.{norm, q, k, v, proj_out}, down.<i>.downsample.conv,
  mid.{block_1, attn_1, block_2}, norm_out, conv_out}``, ``decoder.{...up.<i>.upsample.conv...}``,
  ``quant_conv``, ``post_quant_conv``.
* MAR (under ``mar.``): ``class_emb``, ``fake_latent``, ``z_proj``, ``z_proj_ln``,
  ``encoder_pos_embed_learned``, ``encoder_blocks.<i>.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1,
  mlp.fc2}`` (timm ``Block`` names), ``encoder_norm``, ``decoder_embed``, ``mask_token``,
  ``decoder_pos_embed_learned``, ``decoder_blocks.<i>...``, ``decoder_norm``,
  ``diffusion_pos_embed_learned``, ``diffloss.net.{time_embed.mlp.{0,2}, cond_embed, input_proj,
  res_blocks.<i>.{in_ln, mlp.{0,2}, adaLN_modulation.1}, final_layer.{linear, adaLN_modulation.1}}``.

Conventions (the official code's, written down):

* VAE latents: ``posterior.mode() * vae_scale`` (0.2325): ``Harmon.encode`` in ``src/models/harmon.py``
  takes the mode, and the official and Reca training steps (``HarmonDev.text2image_loss`` /
  ``recon_loss`` in ``src/models/harmon_dev.py``) call that ``encode``, so training and inference
  both use the mode (``posterior.sample()`` appears only in ``vae.py``'s ``__main__`` demo).
  :meth:`AutoencoderKL.encode_sample` draws from the posterior instead (Harmon's ``vae_latents``
  switch). Patch size 1, so a latent token is the 16 channels of one 16×16-pixel cell, raster order.
* MAR positional embeddings are learned for ``img_size // 16`` squared tokens (the official
  configs build MAR at ``img_size=256``, 16×16) plus 64 buffer tokens first; other grids (32×32 at
  512 px) bilinearly resize the image part (``F.interpolate``, ``align_corners=False``), buffer
  part unchanged.
* Buffer tokens are filled with a per-sample condition vector; Harmon always uses ``fake_latent``.
* The encoder *drops* masked tokens (``mask == 1``): every sample of a batch must have the same
  number of visible tokens.
* The diffusion head predicts ``2 * C`` channels (eps and the learned-range variance value). The
  training loss here is the eps-MSE of Eq. 17; the official head adds the variational-bound term
  for the learned variance, which this reproduction omits (it does not enter Eq. 17).
* Diffusion schedule: improved-DDPM cosine, 1000 training steps (``s = 0.008``, betas clipped at
  0.999); sampling respaces to 100 evenly spaced steps (``"100"``) and uses the learned-range
  variance; temperature multiplies the sampling noise.
* timm ``Block`` (0.9.12): pre-norm, ``LayerNorm(eps=1e-6)``, qkv with bias, GELU MLP ratio 4,
  no layer-scale; dropouts of the official config (0.1) are kept as modules but are no-ops in eval.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# ----------------------------------------------------------------------------------------------
# KL-16 VAE (LDM layout)
# ----------------------------------------------------------------------------------------------

def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1×1 convs (LDM)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        y = self.norm(x)
        q = self.q(y).flatten(2).transpose(1, 2)  # b, hw, c
        k = self.k(y).flatten(2).transpose(1, 2)
        v = self.v(y).flatten(2).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(1, 2) * c ** -0.5, dim=-1)
        out = (att @ v).transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad as in LDM


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class VAEEncoder(nn.Module):
    """LDM encoder; ``num_res_blocks`` an int (every level) or a per-level list (MAGVIT-v2)."""

    def __init__(self, ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,),
                 resolution=256, in_channels=3, z_channels=16, double_z=True):
        super().__init__()
        blocks = list(num_res_blocks) if isinstance(num_res_blocks, (list, tuple)) else [num_res_blocks] * len(ch_mult)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        res = resolution
        block_in = ch
        for i, mult in enumerate(ch_mult):
            level = nn.Module()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(blocks[i]):
                level.block.append(ResnetBlock(block_in, ch * mult))
                block_in = ch * mult
                if res in attn_resolutions:
                    level.attn.append(AttnBlock(block_in))
            if i != len(ch_mult) - 1:
                level.downsample = Downsample(block_in)
                res //= 2
            self.down.append(level)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, (2 if double_z else 1) * z_channels, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class VAEDecoder(nn.Module):
    """LDM decoder; an int ``num_res_blocks`` gives n + 1 blocks per level (LDM), a per-level list
    gives exactly those counts (MAGVIT-v2, indexed by level as ``up[i]``)."""

    def __init__(self, ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(),
                 resolution=256, out_ch=3, z_channels=16):
        super().__init__()
        blocks = list(num_res_blocks) if isinstance(num_res_blocks, (list, tuple)) else [num_res_blocks + 1] * len(ch_mult)
        block_in = ch * ch_mult[-1]
        res = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        levels = []
        for i in reversed(range(len(ch_mult))):
            level = nn.Module()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(blocks[i]):
                level.block.append(ResnetBlock(block_in, ch * ch_mult[i]))
                block_in = ch * ch_mult[i]
                if res in attn_resolutions:
                    level.attn.append(AttnBlock(block_in))
            if i != 0:
                level.upsample = Upsample(block_in)
                res *= 2
            levels.insert(0, level)  # up[0] is the finest level, as in LDM
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    def forward(self, z):
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for level in reversed(self.up):
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    """KL-regularised autoencoder. ``encode_mean`` is the posterior's mode (= mean, what Harmon uses);
    ``encode_sample`` draws ``mean + std·ε`` (``DiagonalGaussianDistribution.sample``)."""

    def __init__(self, embed_dim=16, ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
                 attn_resolutions=(16,), resolution=256):
        super().__init__()
        self.embed_dim = embed_dim
        self.encoder = VAEEncoder(ch, ch_mult, num_res_blocks, attn_resolutions, resolution,
                                  z_channels=embed_dim)
        self.decoder = VAEDecoder(ch, ch_mult, num_res_blocks, (), resolution, z_channels=embed_dim)
        self.quant_conv = nn.Conv2d(2 * embed_dim, 2 * embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, embed_dim, 1)
        self.downsample = 2 ** (len(ch_mult) - 1)

    def encode_mean(self, x):
        moments = self.quant_conv(self.encoder(x))
        return moments.chunk(2, dim=1)[0]

    def encode_sample(self, x, generator: torch.Generator | None = None):
        """A draw from the posterior: log-variance clamped to [-30, 20], ``mean + exp(logvar / 2)·ε``,
        ε ~ N(0, 1) from ``generator`` (torch's global generator when None, as the official ``sample``)."""
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))
        eps = torch.randn(mean.shape, generator=generator, device=generator.device if generator else "cpu",
                          dtype=mean.dtype).to(mean.device)
        return mean + std * eps

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))


# ----------------------------------------------------------------------------------------------
# MAR encoder / decoder (timm Block names)
# ----------------------------------------------------------------------------------------------

class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        drop = self.attn_drop if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(b, n, c)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm ViT block with timm 0.9 parameter names (norm1, attn, norm2, mlp)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, attn_drop, proj_drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), proj_drop)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _resize_pos_embed(pe: torch.Tensor, buffer_size: int, seq_hw: tuple[int, int], hw: tuple[int, int]):
    """Bilinear resize of the image part of a learned [1, buffer + h*w, C] embedding (Harmon)."""
    if tuple(hw) == tuple(seq_hw):
        return pe
    buf, img = pe[:, :buffer_size], pe[:, buffer_size:]
    img = img.reshape(1, seq_hw[0], seq_hw[1], -1).permute(0, 3, 1, 2)
    img = F.interpolate(img, size=hw, mode="bilinear")
    return torch.cat([buf, img.flatten(2).transpose(1, 2)], dim=1)


class MAR(nn.Module):
    """The MAR encoder/decoder (with 64 buffer tokens) and its diffusion head ``diffloss``."""

    def __init__(self, img_size=256, vae_stride=16, vae_embed_dim=16, encoder_embed_dim=768,
                 encoder_depth=12, encoder_num_heads=12, decoder_embed_dim=768, decoder_depth=12,
                 decoder_num_heads=12, mlp_ratio=4.0, class_num=1000, buffer_size=64,
                 attn_dropout=0.1, proj_dropout=0.1, diffloss_d=6, diffloss_w=1024,
                 diffusion_batch_mul=4):
        super().__init__()
        self.seq_h = self.seq_w = img_size // vae_stride
        self.seq_len = self.seq_h * self.seq_w
        self.token_embed_dim = vae_embed_dim
        self.buffer_size = buffer_size
        self.encoder_embed_dim = encoder_embed_dim
        self.diffusion_batch_mul = diffusion_batch_mul

        self.class_emb = nn.Embedding(class_num, encoder_embed_dim)  # unused by Harmon, kept for keys
        self.fake_latent = nn.Parameter(torch.zeros(1, encoder_embed_dim))
        self.z_proj = nn.Linear(vae_embed_dim, encoder_embed_dim)
        self.z_proj_ln = nn.LayerNorm(encoder_embed_dim, eps=1e-6)
        self.encoder_pos_embed_learned = nn.Parameter(torch.zeros(1, self.seq_len + buffer_size, encoder_embed_dim))
        self.encoder_blocks = nn.ModuleList([
            Block(encoder_embed_dim, encoder_num_heads, mlp_ratio, attn_dropout, proj_dropout)
            for _ in range(encoder_depth)])
        self.encoder_norm = nn.LayerNorm(encoder_embed_dim, eps=1e-6)

        self.decoder_embed = nn.Linear(encoder_embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, self.seq_len + buffer_size, decoder_embed_dim))
        self.decoder_blocks = nn.ModuleList([
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, attn_dropout, proj_dropout)
            for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=1e-6)
        self.diffusion_pos_embed_learned = nn.Parameter(torch.zeros(1, self.seq_len, decoder_embed_dim))
        self._init_weights()
        self.diffloss = DiffLoss(vae_embed_dim, decoder_embed_dim, diffloss_d, diffloss_w)

    def _init_weights(self):
        for p in (self.class_emb.weight, self.fake_latent, self.mask_token, self.encoder_pos_embed_learned,
                  self.decoder_pos_embed_learned, self.diffusion_pos_embed_learned):
            nn.init.normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_mae_encoder(self, x, mask, buffer_embed, image_shape):
        """x [B, N, C] latents, mask [B, N] (1 = masked, dropped), buffer_embed [B, Cenc]
        -> [B, buffer + visible, Cenc] (buffer tokens first)."""
        b, n, _ = x.shape
        x = self.z_proj(x)
        buf = buffer_embed.to(x.dtype).view(b, 1, -1).expand(b, self.buffer_size, -1)
        x = torch.cat([buf, x], dim=1)
        pe = _resize_pos_embed(self.encoder_pos_embed_learned, self.buffer_size, (self.seq_h, self.seq_w), image_shape)
        x = self.z_proj_ln(x + pe)
        keep = torch.cat([mask.new_zeros(b, self.buffer_size), mask], dim=1) == 0
        x = x[keep].reshape(b, -1, x.shape[-1])  # one visible count per batch
        for block in self.encoder_blocks:
            x = block(x)
        return self.encoder_norm(x)

    def forward_mae_decoder(self, x, mask, image_shape):
        """x [B, buffer + visible, Cenc], mask [B, N] -> per-token conditions z [B, N, Cdec]."""
        b, n = mask.shape
        x = self.decoder_embed(x)
        keep = torch.cat([mask.new_zeros(b, self.buffer_size), mask], dim=1) == 0
        full = self.mask_token.to(x.dtype).expand(b, self.buffer_size + n, -1).clone()
        full[keep] = x.reshape(-1, x.shape[-1])
        pe = _resize_pos_embed(self.decoder_pos_embed_learned, self.buffer_size, (self.seq_h, self.seq_w), image_shape)
        x = full + pe
        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_norm(x)[:, self.buffer_size:]
        dpe = _resize_pos_embed(self.diffusion_pos_embed_learned, 0, (self.seq_h, self.seq_w), image_shape)
        return x + dpe


# ----------------------------------------------------------------------------------------------
# Diffusion head (SimpleMLPAdaLN) and its cosine schedule
# ----------------------------------------------------------------------------------------------

def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding, [cos | sin] halves (GLIDE / DiT convention)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t):
        return self.mlp(timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype))


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.in_ln = nn.LayerNorm(channels, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.SiLU(), nn.Linear(channels, channels))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 3 * channels))

    def forward(self, x, y):
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        return x + gate * self.mlp(self.in_ln(x) * (1 + scale) + shift)


class FinalLayer(nn.Module):
    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(channels, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(channels, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 2 * channels))

    def forward(self, x, y):
        shift, scale = self.adaLN_modulation(y).chunk(2, dim=-1)
        return self.linear(self.norm_final(x) * (1 + scale) + shift)


class SimpleMLPAdaLN(nn.Module):
    """Per-token noise predictor: (x_t [M, C], t [M], c [M, Dc]) -> [M, 2C] (eps | variance value)."""

    def __init__(self, in_channels: int, model_channels: int, out_channels: int, z_channels: int, num_res_blocks: int):
        super().__init__()
        self.in_channels = in_channels
        self.time_embed = TimestepEmbedder(model_channels)
        self.cond_embed = nn.Linear(z_channels, model_channels)
        self.input_proj = nn.Linear(in_channels, model_channels)
        self.res_blocks = nn.ModuleList([ResBlock(model_channels) for _ in range(num_res_blocks)])
        self.final_layer = FinalLayer(model_channels, out_channels)
        self._init_weights()

    def _init_weights(self):
        # official: xavier everywhere, zero adaLN and output layers. A zero output layer makes a
        # fresh head's gradient vanish upstream; tests perturb the weights (reset_parameters).
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.time_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.time_embed.mlp[2].weight, std=0.02)
        for block in self.res_blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for lin in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x, t, c):
        x = self.input_proj(x.to(self.input_proj.weight.dtype))
        y = self.time_embed(t) + self.cond_embed(c.to(self.cond_embed.weight.dtype))
        for block in self.res_blocks:
            x = block(x, y)
        return self.final_layer(x, y)


class DiffLoss(nn.Module):
    """Holds ``net`` (the official key prefix is ``mar.diffloss.net.``)."""

    def __init__(self, target_channels: int, z_channels: int, depth: int, width: int):
        super().__init__()
        self.in_channels = target_channels
        self.net = SimpleMLPAdaLN(target_channels, width, 2 * target_channels, z_channels, depth)

    def predict_eps(self, x_t, t, cond):
        """The NoisePredictor protocol of :mod:`segros.objectives`: eps only (first C channels)."""
        return self.net(x_t, t, cond)[:, : self.in_channels]


def cosine_betas(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Improved-DDPM cosine schedule (float64)."""
    def abar(u):
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return torch.tensor([min(1 - abar((i + 1) / num_steps) / abar(i / num_steps), max_beta)
                         for i in range(num_steps)], dtype=torch.float64)


def respaced_steps(num_train: int = 1000, num_sample: int = 100) -> list[int]:
    """Evenly spaced kept timesteps (guided-diffusion ``space_timesteps(T, "K")``, one section)."""
    if num_sample == 1:
        return [0]
    stride = (num_train - 1) / (num_sample - 1)
    return sorted({round(i * stride) for i in range(num_sample)})


@torch.no_grad()
def sample_tokens(head: DiffLoss, cond: torch.Tensor, cfg: float = 1.0, temperature: float = 1.0,
                  num_steps: int = 100, generator: torch.Generator | None = None) -> torch.Tensor:
    """Ancestral DDPM sampling of one latent per row of ``cond`` with the learned-range variance.

    With ``cfg != 1`` the rows are [conditional; unconditional] halves sharing the same noise,
    and eps = eps_u + cfg (eps_c − eps_u) is used for both halves (Harmon ``forward_with_cfg``);
    the variance value stays per row, so only the conditional half is returned (Harmon keeps
    that half too). Returns [M, C] (cfg = 1) or [M/2, C] (cfg != 1) in ``cond``'s dtype.
    """
    m, c = cond.shape[0], head.in_channels
    if cfg != 1.0 and m % 2:
        raise ValueError(f"cond must have an even number of rows with cfg != 1, got {m}")
    betas_full = cosine_betas()
    abar_full = torch.cumprod(1 - betas_full, 0)
    keep = respaced_steps(len(betas_full), num_steps)
    abar = abar_full[keep]
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    betas = 1 - abar / abar_prev
    post_var = betas * (1 - abar_prev) / (1 - abar)
    post_logvar = torch.log(torch.cat([post_var[1:2], post_var[1:]])) if len(keep) > 1 else torch.log(betas)
    coef_x0 = betas * abar_prev.sqrt() / (1 - abar)
    coef_xt = (1 - abar_prev) * (1 - betas).sqrt() / (1 - abar)
    dev = cond.device
    half = m // 2 if cfg != 1.0 else m
    x = torch.randn(half, c, generator=generator, device=dev, dtype=torch.float32)
    if cfg != 1.0:
        x = torch.cat([x, x])
    for i in reversed(range(len(keep))):
        t = torch.full((m,), keep[i], device=dev, dtype=torch.long)
        out = head.net(x.to(cond.dtype), t, cond).float()
        eps, v = out[:, :c], out[:, c:]
        if cfg != 1.0:
            e_c, e_u = eps[:half], eps[half:]
            eps = torch.cat([e_u + cfg * (e_c - e_u)] * 2)
        x0 = (x - (1 - abar[i]).sqrt().float() * eps) / abar[i].sqrt().float()
        mean = coef_x0[i].float() * x0 + coef_xt[i].float() * x
        frac = (v + 1) / 2
        logvar = frac * torch.log(betas[i]).float() + (1 - frac) * post_logvar[i].float()
        if i > 0:
            noise = torch.randn(half, c, generator=generator, device=dev, dtype=torch.float32)
            if cfg != 1.0:
                noise = torch.cat([noise, noise])
            x = mean + torch.exp(0.5 * logvar) * noise * temperature
        else:
            x = mean
    return x[:half].to(cond.dtype)
