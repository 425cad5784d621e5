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
