"""Offline-learned image tokenizers of the tiny families (stand-ins for MAGVIT-v2 and KL-16).

* :class:`PatchKMeansTokenizer` (tiny-showo, discrete): every non-overlapping ``patch``×``patch``
  RGB patch is replaced by the nearest of K centroids (k-means, Lloyd iterations, fitted on
  shapes-world renders). 64 px images with 8 px patches give an 8×8 code grid, as MAGVIT-v2 gives
  Show-o 16×16 codes at 256 px (16× down). Decoding pastes the centroids back.
* :class:`PatchPCAAutoencoder` (tiny-harmon, continuous): every patch is mapped linearly to C
  channels (C=16, like KL-16's 16 latent channels) by principal component analysis, which is the
  optimal *linear* autoencoder under squared error; fitted in closed form, so it is deterministic.
  Latents are divided by one global scale so that they have unit variance, as Harmon multiplies
  KL-16 latents by a scaling factor before MAR sees them.

Both are ``nn.Module`` s whose fitted state is held in buffers, so a backbone that owns one saves
it in its safetensors file. Pixels are [B, 3, H, W] floats in [0, 1]; patches are in raster order
(row-major), each flattened channel-first (3·p·p values).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def patchify(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, 3, H, W] -> [B, (H/p)·(W/p), 3·p·p], raster order."""
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ValueError(f"pixels must be [B, 3, H, W], got shape {tuple(pixels.shape)}")
    b, c, h, w = pixels.shape
    if h % patch or w % patch:
        raise ValueError(f"pixels size {h}x{w} is not a multiple of patch={patch}")
    x = pixels.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), c * patch * patch)


def unpatchify(patches: torch.Tensor, patch: int, grid_hw: tuple[int, int]) -> torch.Tensor:
    """[B, h·w, 3·p·p] -> [B, 3, h·p, w·p] (inverse of :func:`patchify`)."""
    b, n, _ = patches.shape
    h, w = grid_hw
    if n != h * w:
        raise ValueError(f"patches has {n} tokens, grid {h}x{w} needs {h * w}")
    x = patches.reshape(b, h, w, 3, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, 3, h * patch, w * patch)


def images_to_pixels(images) -> torch.Tensor:
    """A list of uint8 arrays [H, W, 3] / PIL images, or a uint8 array [B, H, W, 3] -> [B, 3, H, W] in [0, 1]."""
    arrays = [np.asarray(im) for im in images]
    for i, a in enumerate(arrays):
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"images[{i}] must be [H, W, 3], got shape {a.shape}")
    x = torch.from_numpy(np.stack(arrays)).float() / 255.0
    return x.permute(0, 3, 1, 2).contiguous()


def pixels_to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] in [0, 1] -> uint8 [B, H, W, 3]."""
    x = (pixels.detach().clamp(0, 1) * 255.0).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


class PatchKMeansTokenizer(nn.Module):
    """Discrete patch codes: nearest k-means centroid per patch (see the module docstring)."""

    def __init__(self, num_codes: int = 256, patch: int = 8, image_size: int = 64):
        super().__init__()
        self.num_codes, self.patch, self.image_size = num_codes, patch, image_size
        self.register_buffer("codebook", torch.zeros(num_codes, 3 * patch * patch))

    @property
    def grid_hw(self) -> tuple[int, int]:
        g = self.image_size // self.patch
        return (g, g)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> codes [B, N] long."""
        x = patchify(pixels.float(), self.patch)
        d = torch.cdist(x.reshape(-1, x.shape[-1]), self.codebook)
        return d.argmin(dim=1).reshape(x.shape[0], x.shape[1])

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, N] long -> pixels [B, 3, H, W]."""
        if codes.min() < 0 or codes.max() >= self.num_codes:
            raise ValueError(f"codes must lie in [0, {self.num_codes}), got [{int(codes.min())}, {int(codes.max())}]")
        return unpatchify(self.codebook[codes], self.patch, self.grid_hw)


def fit_kmeans_tokenizer(pixels: torch.Tensor, num_codes: int = 256, patch: int = 8,
                         iters: int = 25, seed: int = 0) -> PatchKMeansTokenizer:
    """Lloyd k-means over all patches of ``pixels`` [B, 3, H, W]; init = distinct random patches.

    Empty clusters are re-seeded with the patch farthest from its centroid. Deterministic in ``seed``.
    """
    x = patchify(pixels.float(), patch).reshape(-1, 3 * patch * patch)
    uniq = torch.unique(x, dim=0)
    g = torch.Generator().manual_seed(seed)
    if len(uniq) <= num_codes:
        centroids = torch.cat([uniq, uniq[torch.randint(len(uniq), (num_codes - len(uniq),), generator=g)]])
    else:
        centroids = uniq[torch.randperm(len(uniq), generator=g)[:num_codes]].clone()
    for _ in range(iters):
        d = torch.cdist(x, centroids)
        assign = d.argmin(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=num_codes).float()
        full = counts > 0
        centroids[full] = sums[full] / counts[full, None]
        empty = (~full).nonzero().flatten()
        if len(empty):
            far = d.gather(1, assign[:, None]).squeeze(1).topk(len(empty)).indices
            centroids[empty] = x[far]
    tok = PatchKMeansTokenizer(num_codes, patch, pixels.shape[-1])
    tok.codebook.copy_(centroids)
    return tok


class PatchPCAAutoencoder(nn.Module):
    """Continuous patch latents: PCA to ``channels`` per patch, divided by one scale (see above)."""

    def __init__(self, channels: int = 16, patch: int = 8, image_size: int = 64):
        super().__init__()
        self.channels, self.patch, self.image_size = channels, patch, image_size
        p = 3 * patch * patch
        self.register_buffer("mean", torch.zeros(p))
        self.register_buffer("components", torch.zeros(channels, p))  # orthonormal rows
        self.register_buffer("scale", torch.ones(()))

    @property
    def grid_hw(self) -> tuple[int, int]:
        g = self.image_size // self.patch
        return (g, g)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> latents [B, N, C]."""
        x = patchify(pixels.float(), self.patch)
        return (x - self.mean) @ self.components.T / self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, N, C] -> pixels [B, 3, H, W] (not clamped)."""
        if latents.ndim != 3 or latents.shape[-1] != self.channels:
            raise ValueError(f"latents must be [B, N, {self.channels}], got shape {tuple(latents.shape)}")
        x = latents * self.scale @ self.components + self.mean
        return unpatchify(x, self.patch, self.grid_hw)


def fit_patch_autoencoder(pixels: torch.Tensor, channels: int = 16, patch: int = 8) -> PatchPCAAutoencoder:
    """Closed-form PCA of all patches of ``pixels`` [B, 3, H, W]; sign fixed so each component's largest entry is positive."""
    x = patchify(pixels.float(), patch).reshape(-1, 3 * patch * patch).double()
    mean = x.mean(0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    comp = vh[:channels]
    sign = torch.sign(comp.gather(1, comp.abs().argmax(1, keepdim=True)))
    comp = comp * sign
    z = (x - mean) @ comp.T
    ae = PatchPCAAutoencoder(channels, patch, pixels.shape[-1])
    ae.mean.copy_(mean.float())
    ae.components.copy_(comp.float())
    ae.scale.copy_(z.std().float().clamp_min(1e-6))
    return ae


# -----------------------------------------------------------------------------
# world v3 codecs: the cell's layout (foreground mask) and its colour, coded apart

def background_mask(pixels: torch.Tensor, max_chroma: float = 0.1, gray: tuple = (0.37, 0.65)) -> torch.Tensor:
    """[B, 3, H, W] -> bool [B, 1, H, W]: near-neutral pixels of mid lightness (the shapes world's
    textured gray background; every palette colour is either saturated, or black / white)."""
    mx, mn = pixels.max(1, keepdim=True).values, pixels.min(1, keepdim=True).values
    mean = pixels.mean(1, keepdim=True)
    return ((mx - mn) < max_chroma) & (mean > gray[0]) & (mean < gray[1])


def flatten_background(pixels: torch.Tensor, level: float = 0.5) -> torch.Tensor:
    """Background pixels (:func:`background_mask`) set to one flat gray ``level``."""
    return torch.where(background_mask(pixels), torch.full_like(pixels, level), pixels)


def farthest_point_kmeans(x: torch.Tensor, k: int, iters: int = 20) -> torch.Tensor:
    """Lloyd k-means with a deterministic farthest-point start (first centroid: the mean's nearest
    point); for data made of well-separated clusters it finds every cluster when k ≥ their number."""
    x = x.double()
    first = (x - x.mean(0)).norm(dim=1).argmin()
    cent = [x[first]]
    d = (x - cent[0]).norm(dim=1)
    for _ in range(1, min(k, len(x))):
        i = d.argmax()
        cent.append(x[i])
        d = torch.minimum(d, (x - x[i]).norm(dim=1))
    c = torch.stack(cent)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(1)
        for j in range(len(c)):
            sel = assign == j
            if sel.any():
                c[j] = x[sel].mean(0)
    if len(c) < k:  # fewer points than codes: repeat the last centroid (never chosen first)
        c = torch.cat([c, c[-1:].expand(k - len(c), -1)])
    return c.float()


class LayoutColorCodec(nn.Module):
    """A codec of patch-aligned objects (world v3: one object per 16 px cell, tiny-showo's codes and
    tiny-harmon's latents alike).

    Per ``patch``×``patch`` cell: the *layout* is the foreground mask (pixels that are not
    background, :func:`background_mask`), coded as the nearest of ``n_layouts`` mask centroids;
    the *colour* is the median foreground colour, coded as the nearest of ``n_colors`` colour
    centroids (0 for a cell without foreground). Both codebooks are k-means fits
    (:func:`farthest_point_kmeans`) on the pretraining renders, so a colour–shape pair never seen
    together (the held-out compositions) is still coded exactly. Code = layout · n_colors + colour;
    decoding fills the layout's mask (thresholded at 0.5) with the colour on a flat gray.

    ``encode_continuous`` / ``decode_continuous`` give the continuous view tiny-harmon uses: the
    layout centroid's mask, average-pooled to ``pool``×``pool`` (PCA-free: the layout is already
    low-dimensional), concatenated with the colour (RGB, centred), every channel scaled to unit
    variance over the fit set. Decoding a latent picks the nearest layout (from the pooled mask) and
    the nearest colour centroid, so a generated latent becomes a clean render of one layout and one
    colour."""

    def __init__(self, n_layouts: int = 8, n_colors: int = 12, patch: int = 16, image_size: int = 64, pool: int = 4):
        super().__init__()
        self.n_layouts, self.n_colors, self.patch, self.image_size, self.pool = n_layouts, n_colors, patch, image_size, pool
        self.register_buffer("layouts", torch.zeros(n_layouts, patch * patch))
        self.register_buffer("colors", torch.zeros(n_colors, 3))
        self.register_buffer("latent_scale", torch.ones(pool * pool + 3))

    @property
    def num_codes(self) -> int:
        return self.n_layouts * self.n_colors

    @property
    def channels(self) -> int:
        return self.pool * self.pool + 3

    @property
    def grid_hw(self) -> tuple[int, int]:
        g = self.image_size // self.patch
        return (g, g)

    def _parts(self, pixels):
        """Per cell: foreground mask [B, N, p·p] and median foreground colour [B, N, 3] (0.5 when empty)."""
        p = self.patch
        fg = ~background_mask(pixels.float())
        masks = patchify(fg.float().expand(-1, 3, -1, -1), p)[..., : p * p]
        cells = patchify(pixels.float(), p).reshape(*masks.shape[:2], 3, p * p)
        weights = masks[:, :, None, :]
        big = torch.where(weights > 0, cells, torch.full_like(cells, float("nan")))
        color = big.nanmedian(dim=-1).values
        color = torch.where(torch.isnan(color), torch.full_like(color, 0.5), color)
        return masks, color

    @torch.no_grad()
    def encode_parts(self, pixels):
        masks, color = self._parts(pixels)
        lay = torch.cdist(masks, self.layouts[None].expand(masks.shape[0], -1, -1)).argmin(-1)
        col = torch.cdist(color, self.colors[None].expand(color.shape[0], -1, -1)).argmin(-1)
        empty = masks.sum(-1) == 0
        return lay, torch.where(empty, torch.zeros_like(col), col)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> codes [B, N] long (layout · n_colors + colour)."""
        lay, col = self.encode_parts(pixels)
        return lay * self.n_colors + col

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, N] long -> pixels [B, 3, H, W]: the layout's mask in the colour, on flat gray."""
        if codes.min() < 0 or codes.max() >= self.num_codes:
            raise ValueError(f"codes must lie in [0, {self.num_codes}), got [{int(codes.min())}, {int(codes.max())}]")
        return self._render(codes // self.n_colors, codes % self.n_colors)

    def _render(self, lay, col):
        p = self.patch
        mask = (self.layouts[lay] > 0.5).float()[:, :, None, :]           # [B, N, 1, p·p]
        rgb = self.colors[col][:, :, :, None]                                # [B, N, 3, 1]
        cells = mask * rgb + (1 - mask) * 0.5
        return unpatchify(cells.reshape(*lay.shape, 3 * p * p), p, self.grid_hw)

    def _pooled(self, layouts):
        p, q = self.patch, self.pool
        return layouts.reshape(*layouts.shape[:-1], q, p // q, q, p // q).mean((-3, -1)).flatten(-2)

    @torch.no_grad()
    def encode_continuous(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> latents [B, N, pool² + 3] (see the class docstring)."""
        lay, col = self.encode_parts(pixels)
        z = torch.cat([self._pooled(self.layouts)[lay], self.colors[col] - 0.5], dim=-1)
        return z / self.latent_scale

    @torch.no_grad()
    def decode_continuous(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, N, pool² + 3] -> pixels [B, 3, H, W] (nearest layout and colour)."""
        if latents.ndim != 3 or latents.shape[-1] != self.channels:
            raise ValueError(f"latents must be [B, N, {self.channels}], got shape {tuple(latents.shape)}")
        z = latents * self.latent_scale
        q2 = self.pool * self.pool
        b = z.shape[0]
        lay = torch.cdist(z[..., :q2], self._pooled(self.layouts)[None].expand(b, -1, -1)).argmin(-1)
        col = torch.cdist(z[..., q2:] + 0.5, self.colors[None].expand(b, -1, -1)).argmin(-1)
        return self._render(lay, col)


class LayoutColorLatents(LayoutColorCodec):
    """The continuous view of :class:`LayoutColorCodec` as an autoencoder (``encode`` -> latents
    [B, N, pool² + 3], ``decode`` -> pixels), tiny-harmon's latents in world v3."""

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.encode_continuous(pixels)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decode_continuous(latents)


def fit_layout_color_codec(pixels: torch.Tensor, n_layouts: int = 8, n_colors: int = 12, patch: int = 16,
                           pool: int = 4, continuous: bool = False) -> LayoutColorCodec:
    """Fit both codebooks on ``pixels`` [B, 3, H, W] (deterministic); layout 0 is the empty cell.
    ``continuous``: a :class:`LayoutColorLatents` (the same fit)."""
    codec = (LayoutColorLatents if continuous else LayoutColorCodec)(n_layouts, n_colors, patch, pixels.shape[-1], pool)
    masks, color = codec._parts(pixels)
    masks, color = masks.reshape(-1, patch * patch), color.reshape(-1, 3)
    filled = masks.sum(-1) > 0
    lay = farthest_point_kmeans(masks[filled], n_layouts - 1)
    codec.layouts.copy_(torch.cat([torch.zeros(1, patch * patch), lay]))
    codec.colors.copy_(farthest_point_kmeans(color[filled], n_colors))
    z = torch.cat([codec._pooled(codec.layouts)[torch.cdist(masks, codec.layouts).argmin(-1)],
                   codec.colors[torch.cdist(color, codec.colors).argmin(-1)] - 0.5], dim=-1)
    codec.latent_scale.copy_(z.std(0).clamp_min(1e-3))
    return codec
