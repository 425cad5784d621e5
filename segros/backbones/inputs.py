"""What the real adapters share to turn images and text into their batches.

Resizing images (:func:`resize_to_pixels`), right-padding token rows (:func:`pad_rows`), chat
prompts encoded in one piece (:func:`tokenize_caption_prompts`), caption dropout on the SFT path
(:class:`CaptionDropout`), and Reca's caption-free reconstruction instructions with the draws that
pick them (:func:`read_recon_prompts`, :func:`draw_choice`, :func:`draw_uniform`). How each family
uses them is in ``docs/adapters/``.
"""

from __future__ import annotations

import os
import random
import runpy
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from segros import shard


def resize_to_pixels(images: Sequence[Any], size: int) -> torch.Tensor:
    """PIL images or uint8 arrays [H, W, 3] -> pixels [B, 3, size, size] in [0, 1] (bicubic, RGB).

    The real families' ``preprocess_images``; normalisation (CLIP / ImageNet statistics) is left
    to the encoder that needs it.
    """
    out = []
    for i, im in enumerate(images):
        if isinstance(im, np.ndarray):
            if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                raise ValueError(f"images[{i}] must be uint8 [H, W, 3], got {im.dtype} {im.shape}")
            im = Image.fromarray(im)
        im = im.convert("RGB").resize((size, size), Image.BICUBIC)
        out.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


def read_recon_prompts(path: str) -> list[str]:
    """Reca's caption-free reconstruction instructions, read from ``path`` (the real adapters' ``recon_prompts``).

    A ``.py`` file is one of Reca's ``consts.py`` (wishhyt/reconstruction-alignment: Harmon
    ``Harmon/src/datasets/text2image/consts.py``, Show-o ``Show-o/training/consts.py``, OpenUni
    ``OpenUni/src/datasets/image2image/consts.py``; the three ``get_recon_prompt_list()`` return the
    same 364 strings): the file is run and its ``get_recon_prompt_list()`` called. Any other file
    holds one instruction per line (surrounding whitespace and blank lines dropped). The strings
    themselves are Reca's prose and are not copied into this repository.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        raise ValueError(f"recon_prompts must name a file (Reca's consts.py or one instruction per line), got {path!r}")
    if str(path).endswith(".py"):
        fn = runpy.run_path(str(path)).get("get_recon_prompt_list")
        if not callable(fn):
            raise ValueError(f"{path!r} defines no get_recon_prompt_list()")
        prompts = list(fn())
    else:
        with open(path, encoding="utf-8") as f:
            prompts = [line.strip() for line in f if line.strip()]
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ValueError(f"{path!r} gives no reconstruction instructions (or an empty one)")
    return prompts


def draw_choice(options: Sequence[Any], generator=None):
    """One uniform pick from ``options``: ``torch.randint`` on a ``torch.Generator``, else
    ``choice`` of a ``random.Random`` (or of Python's global ``random``, which Reca's
    ``random.choice(...)`` uses)."""
    if isinstance(generator, torch.Generator):
        return options[int(torch.randint(len(options), (1,), generator=generator, device=generator.device))]
    return (generator or random).choice(options)


def draw_uniform(generator=None) -> float:
    """One U[0, 1) draw from the same kinds of generator as :func:`draw_choice` (Reca: ``random.uniform(0, 1)``)."""
    if isinstance(generator, torch.Generator):
        return float(torch.rand((), generator=generator, device=generator.device))
    return (generator or random).uniform(0, 1)


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, valid: Sequence[Sequence[bool]] | None = None,
             labels: Sequence[Sequence[int]] | None = None) -> dict[str, torch.Tensor]:
    """Right-pad token rows: ``input_ids`` (``pad_id`` after each row), ``attention_mask`` (1 = real),
    plus ``text_valid`` (False on padding) and ``labels`` (−100 on padding) when given."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    att = torch.zeros(len(rows), length, dtype=torch.long)
    tv = torch.zeros(len(rows), length, dtype=torch.bool)
    lab = torch.full((len(rows), length), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)], att[i, :len(r)] = torch.tensor(r, dtype=torch.long), 1
        if valid is not None:
            tv[i, :len(r)] = torch.tensor(valid[i], dtype=torch.bool)
        if labels is not None:
            lab[i, :len(r)] = torch.tensor(labels[i], dtype=torch.long)
    out = {"input_ids": ids, "attention_mask": att}
    if valid is not None:
        out["text_valid"] = tv
    if labels is not None:
        out["labels"] = lab
    return out


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def tokenize_caption_prompts(encode, texts: Sequence[str], head: str, tail: str, unconditional: str, pad_id: int,
                             strip: bool = True, max_length: int | None = None) -> dict[str, torch.Tensor]:
    """Prompts ``head + caption + tail``, each encoded in ONE piece, right-padded (:func:`pad_rows`).

    The real adapters' chat prompts (Harmon, OpenUni): the official code formats the whole string and
    calls ``tokenizer.encode`` once, and a byte-level BPE merges the space at the end of ``head``
    ("...Generate an image: ") into the caption's first token, so encoding the pieces separately gives
    other ids. ``encode``: str -> ids. A caption (after ``strip()`` when ``strip``) that is empty
    gives the string ``unconditional`` instead, with no caption tokens. ``text_valid`` marks the
    caption's tokens: those after the longest common prefix with ``encode(head.rstrip())`` and
    before the longest common suffix with ``encode(tail)``. ``max_length`` keeps the first ids of a
    row (the official ``input_ids[:max_length]``).
    """
    head_ids, tail_ids = encode(head.rstrip()), encode(tail)
    rows, valid = [], []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"texts[{i}] must be a str, got {type(t).__name__}")
        t = t.strip() if strip else t
        ids = encode(head + t + tail if t else unconditional)
        flags = [False] * len(ids)
        if t:
            a = _common_prefix(ids, head_ids)
            z = _common_prefix(ids[a:][::-1], tail_ids[::-1])
            flags[a:len(ids) - z] = [True] * (len(ids) - z - a)
        rows.append(ids[:max_length])
        valid.append(flags[:max_length])
    return pad_rows(rows, pad_id, valid)


class CaptionDropout:
    """Caption dropout of a family's own T2I training (the SFT baseline), shared by Show-o and Harmon.

    In ``t2i_loss`` (:meth:`sft_conditions`), only without hints and in training mode, each row's
    prompt becomes the family's unconditional prompt (``tokenize_prompts([""])``) with probability
    ``cfg.cond_dropout_prob``; on the hinted paths (SeGroS, the Reca baselines) the method's step
    drops rows with the same probability, caption and hints together by default
    (``segros.train.steps.t2i_step``), so this class never drops there. The family
    says how the rows are drawn, as its official code does (:meth:`draw_dropped`), and, if its rows
    are right-padded to the batch's longest, the id that pads a shorter unconditional row
    (``prompt_pad_id``; None for a family whose rows all have one fixed width).
    """

    prompt_pad_id: int | None = None

    @property
    def cond_dropout_prob(self) -> float:
        """The probability that a training row loses its caption (``cfg.cond_dropout_prob``); the
        method's step drops hinted rows with it (``segros.train.steps.t2i_step``)."""
        return self.cfg.cond_dropout_prob

    def draw_dropped(self, batch_size: int, generator=None) -> torch.Tensor:
        """bool [B]: the rows whose caption is dropped."""
        raise NotImplementedError

    def sft_conditions(self, text_ids: torch.Tensor, text_mask: torch.Tensor, hints: torch.Tensor | None,
                       generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, mask) for ``t2i_loss``: :meth:`drop_conditions` on the no-hint training path, else unchanged."""
        if hints is None and self.training and self.cfg.cond_dropout_prob > 0:
            return self.drop_conditions(text_ids, text_mask, generator)
        return text_ids, text_mask

    def drop_conditions(self, text_ids: torch.Tensor, text_mask: torch.Tensor,
                        generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows :meth:`draw_dropped` picks become ``tokenize_prompts([""])`` (right-padded to the
        batch's width with ``prompt_pad_id``). Rows must come from :meth:`tokenize_prompts`."""
        b = text_ids.shape[0]  # drawn for the global batch, this process's rows (segros.shard)
        drop = shard.local_rows(self.draw_dropped(shard.rows(b)[1], generator), b).to(text_ids.device)
        if not bool(drop.any()):
            return text_ids, text_mask
        empty = self.tokenize_prompts([""])
        e_ids, e_mask = empty["input_ids"].to(text_ids.device), empty["attention_mask"].to(text_mask)
        fill = text_ids.shape[1] - e_ids.shape[1]
        if fill < 0 or (fill and self.prompt_pad_id is None):
            raise ValueError(f"text rows must come from tokenize_prompts (the unconditional prompt has "
                             f"{e_ids.shape[1]} ids, the rows {text_ids.shape[1]})")
        e_ids = torch.nn.functional.pad(e_ids, (0, fill), value=self.prompt_pad_id).expand_as(text_ids)
        e_mask = torch.nn.functional.pad(e_mask, (0, fill)).expand_as(text_mask)
        return torch.where(drop[:, None], e_ids, text_ids), torch.where(drop[:, None], e_mask, text_mask)
