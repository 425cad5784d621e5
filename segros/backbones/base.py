"""The backbone protocol every unified multimodal model family implements.

SeGroS touches a backbone at exactly five points, so a family is anything with these members:

``embed_text(input_ids) -> z_text [B, L, D]``
    The LLM's *input* embeddings (the embedding table, before any transformer layer), used for
    grounding only (§3.2: "extracted by the tokenizer prior to processing by f_θ").
``embed_image(pixels) -> VisualTokens(z_image [B, N, D], grid_hw)``
    The native visual encoder's tokens projected into the LLM width, *before* the transformer,
    after the encoder has added its positional information. They are the hint embeddings too.
``t2i_loss(batch, supervision, hints) -> scalar``
    The family's own reconstruction objective on the corrupted input described by
    ``supervision`` (a :class:`segros.supervision.Supervision` on ``target_grid_hw``), conditioned
    on the text and on ``hints`` ([B, H, D] visual-hint embeddings, or ``None``), evaluated only
    where ``supervision.loss_weight > 0`` (Eq. 13; Eqs. 15–17 per family).
``i2t_loss(batch) -> scalar``
    The autoregressive captioning / instruction loss (Eq. 2).
``generate(prompts, seed, **sampling) -> list[PIL.Image]``
    Unchanged inference (SeGroS adds nothing at test time, Fig. 2 caption).

plus ``target_grid_hw`` (the reconstruction grid) and ``hint_grid_hw`` (the grid of
``embed_image``); when they differ the grounding map is resampled (:func:`segros.supervision.resample_map`).

How each real family maps onto it (Show-o, Harmon, OpenUni): ``docs/adapters/``; how to add a
family: ``docs/architecture.md``.

Batches
-------
A batch is a plain ``dict`` of tensors. T2I batches carry ``pixels`` [B, 3, H, W] in [0, 1],
``input_ids`` [B, L] and ``attention_mask`` [B, L] (1 = real token), ``text_valid`` [B, L]
(real *and* not special: the tokens grounding may use). I2T batches carry ``pixels``,
``input_ids``, ``attention_mask`` and ``labels`` [B, L] (−100 where no loss, i.e. the question).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn


@dataclass
class VisualTokens:
    """LLM-space visual tokens and the grid they lie on (raster order, row-major).

    ``extra`` [B, E, D] holds the tokens of the family's whole image prompt that are not on the
    grid (Harmon's MAR buffer tokens with ``hint_layout="reca"``; None for every other family).
    Grounding ranks ``z_image`` only; the Reca baseline conditions on :meth:`image_prompt`.
    """

    z_image: torch.Tensor  # [B, N, D]
    grid_hw: tuple[int, int]
    extra: torch.Tensor | None = None  # [B, E, D]

    def __post_init__(self) -> None:
        h, w = self.grid_hw
        if self.z_image.ndim != 3 or self.z_image.shape[1] != h * w:
            raise ValueError(
                f"z_image must be [B, N, D] with N = {h}*{w} = {h * w}, got {tuple(self.z_image.shape)}"
            )
        if self.extra is not None and (self.extra.ndim != 3 or self.extra.shape[0] != self.z_image.shape[0]
                                       or self.extra.shape[2] != self.z_image.shape[2]):
            raise ValueError(f"extra must be [B, E, D] with B, D of z_image {tuple(self.z_image.shape)}, "
                             f"got {tuple(self.extra.shape)}")

    def image_prompt(self) -> torch.Tensor:
        """[B, N + E, D]: the grid tokens followed by ``extra`` (the grid tokens alone when there is none)."""
        return self.z_image if self.extra is None else torch.cat([self.z_image, self.extra], dim=1)


class Backbone(nn.Module, abc.ABC):
    """Abstract base of every family (tiny and real). See the module docstring."""

    #: name of the family, e.g. "tiny-harmon", "harmon-1.5b"
    family: str = "abstract"
    #: reconstruction grid (h, w) of the corrupted input
    target_grid_hw: tuple[int, int]
    #: grid (h, w) of ``embed_image``; the map is resampled when it differs from the target grid
    hint_grid_hw: tuple[int, int]
    #: "batch" when the family needs one visible count per batch (Harmon/MAR), else "sample"
    gamma_per: str = "sample"
    #: default masking schedule name (see :mod:`segros.supervision`)
    mask_schedule: str = "uniform"

    @property
    def width(self) -> int:
        """D, the LLM width that text and visual tokens share."""
        raise NotImplementedError

    def no_weight_decay(self, name: str) -> bool:
        """Whether the optimizer leaves the trainable parameter ``name`` out of weight decay beyond the
        rule every family shares (1-D parameters and biases, :func:`segros.train.loop.make_optimizer`).
        Default: none; Harmon leaves out its diffusion head, as Reca does."""
        return False

    @abc.abstractmethod
    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def embed_image(self, pixels: torch.Tensor) -> VisualTokens: ...

    @abc.abstractmethod
    def t2i_loss(self, batch: Mapping[str, torch.Tensor], supervision: Any,
                 hints: torch.Tensor | None) -> torch.Tensor: ...

    @abc.abstractmethod
    def i2t_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor: ...

    @abc.abstractmethod
    def generate(self, prompts: Sequence[str], seed: int = 0, **sampling: Any) -> list: ...

    # ---- data preparation: each family owns its tokenizer and image preprocessing ----------
    @abc.abstractmethod
    def preprocess_images(self, images: Sequence[Any]) -> torch.Tensor:
        """PIL images or uint8 arrays [H, W, 3] -> ``pixels`` [B, 3, H, W] in [0, 1] at the family's size."""

    @abc.abstractmethod
    def tokenize_prompts(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Prompts in the family's T2I format -> ``input_ids``, ``attention_mask``, ``text_valid``."""

    @abc.abstractmethod
    def i2t_batch(self, images: Sequence[Any], questions: Sequence[str],
                  answers: Sequence[str]) -> dict[str, torch.Tensor]:
        """An understanding micro-batch: ``pixels``, ``input_ids``, ``attention_mask``, ``labels``."""

    def t2i_batch(self, images: Sequence[Any], texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """A generation micro-batch: ``pixels`` plus the tokenized prompts."""
        batch = dict(self.tokenize_prompts(texts))
        batch["pixels"] = self.preprocess_images(images)
        return batch

    # ---- understanding as text (for the shapes-world question-answer view) -----------------
    def answer(self, images: Sequence[Any], questions: Sequence[str], max_new_tokens: int = 4) -> list[str]:
        """Greedy answers to questions about images (used to score I2T, Table 2's question)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement answer()")
