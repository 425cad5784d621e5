"""How well a backbone's grounding map finds the objects (the alignment stage is measured with it).

For each shapes-world scene the map m̄ of §3.3 (Eqs. 3–11, :func:`segros.grounding.ground`) is
computed from the backbone's own input embeddings of the caption and of the image (on the
*hint* grid), and its top-⌊ηN⌋ tokens — the visual hints of §3.4 — are compared with the
ground-truth object tokens.

Definitions and conventions (written down here):

* Object token: a hint-grid cell whose object coverage (``Scene.token_object_map``, or the exact
  area fraction when the grid does not divide the image, see :func:`object_coverage`) is > 0.5.
* Hints: the top-H entries of the *unperturbed* m̄ (Eq. 12's perturbation is a training-time
  augmentation, left out here), H = ⌊ηN⌋, ties broken towards the lower index, exactly as
  :func:`segros.supervision.select_hint_idx` does for training.
* recall = |hints ∩ objects| / |objects|; a random map scores H/N ≈ η in expectation.
* precision = |hints ∩ objects| / H; its ceiling = min(1, |objects| / H) (what a perfect map
  reaches); the random baseline of precision is |objects| / N.
* Per-scene values are averaged with equal weight; scenes without an object token (or with H = 0)
  are left out (``n_scenes`` counts the ones kept).
* The text tokens that ground are ``text_valid`` without the function words of
  :data:`segros.vocab.STOPWORDS` (``stopwords=True``, as training grounds by default; Fig. 3's
  caption), or every valid token (``stopwords=False``).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from segros.grounding import floor_count, ground
from segros.presets import TEXT_FILTERS
from segros.supervision import select_hint_idx
from segros.vocab import stopword_mask


def object_coverage(scene, grid_hw: tuple[int, int]) -> np.ndarray:
    """[h, w] fraction of each grid cell covered by any object of ``scene``.

    ``Scene.token_object_map`` when the grid divides the image; otherwise (tiny-showo's 6×6 hint
    grid on a 64 px image) the exact area fraction: the union mask is repeated k times per axis,
    k = lcm(H, h)/H, so that cells fall on whole (sub)pixels, then averaged per cell.
    """
    h, w = int(grid_hw[0]), int(grid_hw[1])
    H, W = scene.image.shape[:2]
    if H % h == 0 and W % w == 0:
        return np.asarray(scene.token_object_map((h, w)), dtype=np.float64)
    mask = np.zeros((H, W), dtype=np.float64)
    for o in scene.objects:
        mask = np.maximum(mask, o.mask)
    ky, kx = math.lcm(H, h) // H, math.lcm(W, w) // W
    fine = np.kron(mask, np.ones((ky, kx)))
    return fine.reshape(h, fine.shape[0] // h, w, fine.shape[1] // w).mean(axis=(1, 3))


def object_token_mask(scenes: Sequence, grid_hw: tuple[int, int], threshold: float = 0.5) -> torch.Tensor:
    """[B, h·w] bool: grid cells of each scene covered by objects more than ``threshold``."""
    maps = [object_coverage(s, grid_hw).reshape(-1) > threshold for s in scenes]
    return torch.from_numpy(np.stack(maps))


def hint_quality(m_bar: torch.Tensor, object_mask: torch.Tensor, eta: float = 0.3) -> dict[str, torch.Tensor]:
    """Per-sample recall, precision, ceiling and random baselines of the top-⌊ηN⌋ tokens of m_bar.

    m_bar [B, N] float, object_mask [B, N] bool. Returns [B] tensors (NaN where undefined: no object
    token, or H = 0) under the keys recall, precision, ceiling, recall_random, precision_random.
    """
    if m_bar.ndim != 2:
        raise ValueError(f"m_bar must be [B, N], got shape {tuple(m_bar.shape)}")
    if object_mask.shape != m_bar.shape or object_mask.dtype != torch.bool:
        raise ValueError(f"object_mask must be bool {tuple(m_bar.shape)}, got {object_mask.dtype} {tuple(object_mask.shape)}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    b, n = m_bar.shape
    h = floor_count(eta, n)
    hints = torch.zeros(b, n, dtype=torch.bool)
    if h > 0:
        hints.scatter_(1, select_hint_idx(m_bar.float(), h, largest=True), True)
    n_obj = object_mask.sum(1).double()
    hit = (hints & object_mask).sum(1).double()
    nan = torch.full_like(n_obj, float("nan"))
    ok = (n_obj > 0) & (h > 0)
    return {
        "recall": torch.where(ok, hit / n_obj.clamp_min(1), nan),
        "precision": torch.where(ok, hit / max(h, 1), nan),
        "ceiling": torch.where(ok, (n_obj / max(h, 1)).clamp(max=1.0), nan),
        "recall_random": torch.where(ok, torch.full_like(n_obj, h / n), nan),
        "precision_random": torch.where(ok, n_obj / n, nan),
    }


@torch.no_grad()
def grounding_maps(backbone, scenes: Sequence, text_filter: str = "both", rho: float = 0.4, tau: float = 1.0,
                   batch_size: int = 64, caption: str = "caption", stopwords: bool = True) -> torch.Tensor:
    """m̄ [B, N_hint] of every scene from its caption and image (the backbone's input embeddings).

    ``caption``: the Scene attribute used as text, "caption" (training caption, may name the
    background) or "geneval_caption" (objects only). ``stopwords``: leave the function words out of
    the grounding text (:func:`segros.vocab.stopword_mask` with the backbone's tokenizer).
    """
    if caption not in ("caption", "geneval_caption"):
        raise ValueError(f"caption must be 'caption' or 'geneval_caption', got {caption!r}")
    maps = []
    for i in range(0, len(scenes), batch_size):
        chunk = scenes[i:i + batch_size]
        text = backbone.tokenize_prompts([getattr(s, caption) for s in chunk])
        pixels = backbone.preprocess_images([s.image for s in chunk])
        z_text = backbone.embed_text(text["input_ids"])
        z_image = backbone.embed_image(pixels).z_image
        valid = text["text_valid"].bool()
        if stopwords:
            valid = valid & ~stopword_mask(text["input_ids"], valid, backbone.tokenizer.decode)
        maps.append(ground(z_text, z_image, valid, rho=rho, tau=tau, text_filter=text_filter).m_bar)
    return torch.cat(maps)


def grounding_quality(backbone, scenes: Sequence, eta: float = 0.3, text_filter: str = "both", rho: float = 0.4,
                      tau: float = 1.0, caption: str = "caption", stopwords: bool = True) -> dict[str, float]:
    """Mean recall / precision / ceiling (and random baselines) of ``backbone`` over ``scenes``."""
    if len(scenes) == 0:
        raise ValueError("scenes must not be empty")
    was_training = backbone.training
    backbone.eval()
    m_bar = grounding_maps(backbone, scenes, text_filter, rho, tau, caption=caption, stopwords=stopwords)
    backbone.train(was_training)
    objects = object_token_mask(scenes, backbone.hint_grid_hw)
    per = hint_quality(m_bar, objects, eta)
    kept = ~torch.isnan(per["recall"])
    out = {k: float(v[kept].mean()) if kept.any() else float("nan") for k, v in per.items()}
    out.update(n_scenes=int(kept.sum()), n_hint=floor_count(eta, m_bar.shape[1]), eta=eta, text_filter=text_filter,
               stopwords=stopwords)
    return out


def grounding_quality_table(backbone, scenes: Sequence, eta: float = 0.3, text_filters: Sequence[str] = TEXT_FILTERS,
                            rho: float = 0.4, tau: float = 1.0, caption: str = "caption", stopwords: bool = True):
    """A pandas DataFrame, one row per text_filter (Table 4's rows), columns as grounding_quality."""
    import pandas as pd

    rows = [grounding_quality(backbone, scenes, eta, f, rho, tau, caption, stopwords) for f in text_filters]
    cols = ["text_filter", "recall", "recall_random", "precision", "ceiling", "precision_random", "n_scenes", "n_hint"]
    return pd.DataFrame(rows)[cols]
