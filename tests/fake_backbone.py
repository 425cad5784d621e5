"""A tiny, genuinely trainable Backbone for the training-loop tests (not a model of any family).

Images are 16×16 RGB cut into 4×4 patches (a 4×4 grid, N = 16). Text is word-level with ids from
a CRC hash, so no vocabulary file is needed. The model:

- ``embed_text``: an embedding table;
- ``embed_image``: patch linear projection + a learned positional embedding (hints therefore carry
  positional information, as the protocol in segros.backbones.base asks);
- ``t2i_loss``: a one-layer transformer over [hints][text][corrupted patches] that regresses the
  masked patches' pixels, weighted by ``supervision.loss_weight`` (Σ w ℓ / Σ w);
- ``i2t_loss``: next-token cross-entropy of the answer given the pooled image and the question;
- ``generate``: one-shot prediction of every patch from the text (all tokens masked);
- ``answer``: greedy decoding.

``data(n, seed)`` makes a matching toy data set (a coloured square on black, captioned with its
colour and side of the image) so that the loss has something learnable.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segros.backbones.base import Backbone, VisualTokens

PAD, BOS, EOS = 0, 1, 2
COLORS = {"red": (230, 30, 30), "green": (30, 200, 30), "blue": (40, 40, 230), "yellow": (230, 220, 30)}


class Words:
    """The fake tokenizer's ``decode`` (ids -> words joined by spaces; specials and unknown ids as "")."""

    def __init__(self, words):
        self.words = words

    def decode(self, ids):
        return " ".join(self.words.get(int(i), "") for i in ids)


class FakeBackbone(Backbone):
    family = "fake"
    gamma_per = "sample"
    mask_schedule = "uniform"

    def __init__(self, width=32, vocab=257, image_size=16, patch=4, target_patch=None, seed=0,
                 gamma_per="sample"):
        super().__init__()
        torch.manual_seed(seed)
        self.vocab, self.image_size, self.patch = vocab, image_size, patch
        g = image_size // patch
        self.hint_grid_hw = (g, g)
        tp = target_patch or patch
        self.target_patch = tp
        self.target_grid_hw = (image_size // tp, image_size // tp)
        self.gamma_per = gamma_per
        self.words = {}  # id -> word, filled by tokenisation
        self.tokenizer = Words(self.words)  # decode, for the stopword mask of grounding
        D = width
        self.tok = nn.Embedding(vocab, D)
        self.patch_in = nn.Linear(3 * patch * patch, D)
        self.pos = nn.Parameter(0.02 * torch.randn(g * g, D))
        self.target_in = nn.Linear(3 * tp * tp, D)
        self.target_pos = nn.Parameter(0.02 * torch.randn(self.target_grid_hw[0] * self.target_grid_hw[1], D))
        self.mask_token = nn.Parameter(torch.zeros(D))
        self.block = nn.TransformerEncoderLayer(D, 4, 2 * D, dropout=0.0, batch_first=True)
        self.pix_out = nn.Linear(D, 3 * tp * tp)
        self.img_to_txt = nn.Linear(D, D)
        self.lm_head = nn.Linear(D, vocab)

    @property
    def width(self):
        return self.tok.embedding_dim

    # ---- data preparation -------------------------------------------------------------------
    def word_id(self, w):
        i = 3 + zlib.crc32(w.encode()) % (self.vocab - 3)
        self.words[i] = w
        return i

    def preprocess_images(self, images):
        arr = np.stack([np.asarray(im, dtype=np.uint8) for im in images])
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="area")
        return x

    def tokenize_prompts(self, texts):
        rows = [[BOS] + [self.word_id(w) for w in t.lower().split()] + [EOS] for t in texts]
        L = max(len(r) for r in rows)
        ids = torch.full((len(rows), L), PAD, dtype=torch.long)
        for b, r in enumerate(rows):
            ids[b, :len(r)] = torch.tensor(r)
        attn = (ids != PAD).long()
        valid = (ids > EOS)
        return {"input_ids": ids, "attention_mask": attn, "text_valid": valid}

    def i2t_batch(self, images, questions, answers):
        rows, labs = [], []
        for q, a in zip(questions, answers):
            qi = [BOS] + [self.word_id(w) for w in q.lower().split()]
            ai = [self.word_id(w) for w in a.lower().split()] + [EOS]
            rows.append(qi + ai)
            labs.append([-100] * len(qi) + ai)
        L = max(len(r) for r in rows)
        ids = torch.full((len(rows), L), PAD, dtype=torch.long)
        labels = torch.full((len(rows), L), -100, dtype=torch.long)
        for b, (r, lab) in enumerate(zip(rows, labs)):
            ids[b, :len(r)] = torch.tensor(r)
            labels[b, :len(lab)] = torch.tensor(lab)
        return {"pixels": self.preprocess_images(images), "input_ids": ids,
                "attention_mask": (ids != PAD).long(), "labels": labels}

    # ---- protocol ----------------------------------------------------------------------------
    def patches(self, pixels, p):
        B = pixels.shape[0]
        x = pixels.unfold(2, p, p).unfold(3, p, p)  # B, 3, h, w, p, p
        return x.permute(0, 2, 3, 1, 4, 5).reshape(B, -1, 3 * p * p)

    def embed_text(self, input_ids):
        return self.tok(input_ids)

    def embed_image(self, pixels):
        z = self.patch_in(self.patches(pixels, self.patch)) + self.pos
        return VisualTokens(z, self.hint_grid_hw)

    def predict(self, batch, seen, hints):
        """Predict every target patch from [hints][text][corrupted image]."""
        target = self.patches(batch["pixels"], self.target_patch)
        x_img = self.target_in(target) * seen[..., None] + self.mask_token * (~seen)[..., None] + self.target_pos
        text = self.tok(batch["input_ids"])
        parts, pad = [text, x_img], [batch["attention_mask"] == 0, torch.zeros_like(seen)]
        if hints is not None:
            parts.insert(0, hints)
            pad.insert(0, torch.zeros(hints.shape[:2], dtype=torch.bool, device=hints.device))
        h = self.block(torch.cat(parts, 1), src_key_padding_mask=torch.cat(pad, 1))
        return self.pix_out(h[:, -x_img.shape[1]:]), target

    def t2i_loss(self, batch, supervision, hints):
        pred, target = self.predict(batch, supervision.seen, hints)
        per_token = ((pred - target) ** 2).mean(-1)
        w = supervision.loss_weight
        return (w * per_token).sum() / w.sum().clamp_min(1e-8)

    def i2t_logits(self, pixels, input_ids):
        img = self.embed_image(pixels).z_image.mean(1, keepdim=True)
        h = self.tok(input_ids) + self.img_to_txt(img)
        L = input_ids.shape[1]
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=h.device), 1)
        return self.lm_head(self.block(h, src_mask=causal))

    def i2t_loss(self, batch):
        logits = self.i2t_logits(batch["pixels"], batch["input_ids"])
        return F.cross_entropy(logits[:, :-1].reshape(-1, self.vocab), batch["labels"][:, 1:].reshape(-1),
                               ignore_index=-100)

    @torch.no_grad()
    def generate(self, prompts, seed=0, **sampling):
        g = torch.Generator().manual_seed(seed)
        B, n = len(prompts), self.target_grid_hw[0] * self.target_grid_hw[1]
        batch = self.tokenize_prompts(prompts)
        batch["pixels"] = 0.05 * torch.rand(B, 3, self.image_size, self.image_size, generator=g)
        pred, _ = self.predict(batch, torch.zeros(B, n, dtype=torch.bool), None)
        h, w = self.target_grid_hw
        p = self.target_patch
        img = pred.clamp(0, 1).reshape(B, h, w, 3, p, p).permute(0, 1, 4, 2, 5, 3).reshape(B, h * p, w * p, 3)
        return [(x.numpy() * 255).round().astype(np.uint8) for x in img]

    @torch.no_grad()
    def answer(self, images, questions, max_new_tokens=4):
        out = []
        for im, q in zip(images, questions):
            ids = [BOS] + [self.word_id(w) for w in q.lower().split()]
            pix = self.preprocess_images([im])
            words = []
            for _ in range(max_new_tokens):
                nxt = int(self.i2t_logits(pix, torch.tensor([ids]))[0, -1].argmax())
                if nxt == EOS:
                    break
                ids.append(nxt)
                words.append(self.words.get(nxt, "?"))
            out.append(" ".join(words))
        return out


def data(n, seed=0, image_size=16):
    """Toy T2I pairs and QA triples: one coloured square, left or right half."""
    rng = np.random.default_rng(seed)
    t2i, qa = [], []
    names = sorted(COLORS)
    for _ in range(n):
        color = names[rng.integers(len(names))]
        side = ["left", "right"][rng.integers(2)]
        img = np.zeros((image_size, image_size, 3), np.uint8)
        s = image_size // 2
        y = int(rng.integers(0, image_size - s + 1))
        x0 = 0 if side == "left" else image_size - s
        img[y:y + s, x0:x0 + s] = COLORS[color]
        t2i.append((img, f"a {color} square on the {side}"))
        qa.append({"image": img, "question": "what color is the square", "answer": color, "kind": "color"})
    return t2i, qa


# ---- interrupting and comparing runs (the resume tests) -------------------------------------

class Interrupt(Exception):
    """Raised by :func:`stop_after` to kill a run between two optimizer steps."""


def stop_after(k):
    """A ``train(hook=...)`` that kills the run right after optimizer step ``k``."""
    def hook(step):
        if step == k:
            raise Interrupt(step)
    return hook


def without_time(rows):
    """Metrics rows without their wall-clock field (the only one a resumed run may change)."""
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]
