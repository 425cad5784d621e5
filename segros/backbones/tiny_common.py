"""What the two tiny families share: text batches, the understanding path, FILIP alignment, I/O.

The tiny families (``tiny-showo``, ``tiny-harmon``) are real transformers LLM classes (Phi,
Qwen2) with random initialisation from small configs, trained from scratch on the synthetic
shapes world on a CPU. They stand in for Show-o and Harmon in tests and small presets.

Conventions used by both (written down here):

* T2I prompts are ``[BOS] words [EOS]`` (right padding); ``text_valid`` = real and not special.
* Understanding (Eq. 2): the sequence is ``[visual tokens][BOS] question [SEP] answer [EOS]``
  with the Fig. 6 mask (visual tokens bidirectional among themselves, text causal and seeing every
  visual token) — the layout Show-o uses for its CLIP understanding path. Labels are the answer
  words and the closing [EOS]; the loss is the shifted next-token NLL averaged over labelled tokens.
* Classifier-free guidance: during training (``self.training``), on the path without hints (SFT
  and base pretraining), each T2I sample's prompt is replaced with the empty prompt ``[BOS][EOS]``
  with probability ``cfg_drop_prob`` (torch's global RNG, so the training loop's seed fixes it),
  as the real families' :class:`segros.backbones.inputs.CaptionDropout`. On the hinted paths the
  method's step drops rows, with the same probability (:attr:`cond_dropout_prob`), caption and hints
  together by default (``segros.train.steps.t2i_step``; ``docs/conventions.md``).
* :meth:`alignment_loss` is the *alignment stage* of base pretraining (``docs/conventions.md``,
  "The shared base"): a from-scratch model has no text–patch alignment at the input level, which real UMMs
  inherit from their pretrained encoders. It is FILIP (Yao et al. 2021) with three changes,
  each measured with ``benchmarks/bench_grounding_quality.py`` (plain FILIP drove the top-30%
  hints *below* chance, recall ≈ 0.2, because of the first two shortcuts below):

  1. Stop-gradient into the visual encoder: the loss trains the text input embeddings and the
     per-token projection (``mm_projector`` / ``proj_in``) only; the encoder output is computed
     under ``torch.no_grad()`` (:meth:`image_encoder_features`). With gradients into the
     transformer encoder every patch learns to carry the whole image (global mixing), so
     "max over patches" needs no localisation and the map lands on background patches.
     A per-token projection cannot mix patches, so a word can only match the patches that show it.
  2. Shared words are left out of the contrast: a word present in more than
     ``align_shared_frac`` of the batch's captions ("a", "of", ...) carries no contrast; it is
     excluded from both FILIP scores (it is neither a text→image term nor a candidate of a
     patch's best word).
  3. Shared words are pushed off the image: ``align_shared_weight`` · mean over (shared word,
     image, patch) of relu(cos)². Without it background patches keep their highest affinity for
     "a", which wins Eq. 6's inter-modal affinity and (being repeated in a caption) Eq. 4's
     intra-modal centrality, so the "both" filter of Eq. 7 selects "a" instead of the objects.

  The rest is FILIP: cosine similarities between every kept text-token *input* embedding and
  every LLM-space visual token; text→image score = mean over kept words of the best patch,
  image→text score = mean over patches of the best kept word; symmetric InfoNCE over the batch
  at temperature ``align_temperature``; samples without a kept word are left out of the
  contrast (the loss needs at least two samples with a valid word). The sentence-level form
  is kept: a word-level InfoNCE (each word vs images whose caption lacks it) and a
  text→image-only FILIP both pointed the map at the background in the same test.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_model, save_model

from segros import shard
from segros.attention import forward_with_mask, segros_attention_mask
from segros.backbones.base import Backbone
from segros.data.image_tokenizer import images_to_pixels, pixels_to_uint8
from segros.data.tokenizer import load_text_tokenizer, save_text_tokenizer


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    """Fields both tiny families share: the LLM's size, the text length, CFG dropout, the
    alignment stage and the init seed. Each family's config adds its image path."""

    image_size: int = 64         # pixels of the reconstruction path
    patch: int = 8               # -> 8×8 target grid
    width: int = 128             # D, the LLM width text and visual tokens share
    layers: int = 3
    heads: int = 4
    intermediate: int = 512
    max_text_len: int = 32
    cfg_drop_prob: float = 0.1   # prompts dropped in training, so CFG has an unconditional branch
    align_temperature: float = 0.1
    align_shared_frac: float = 0.5     # alignment stage: words in more captions carry no contrast
    align_shared_weight: float = 1.0
    seed: int = 0                # init seed


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def check_batch(batch: Mapping[str, torch.Tensor], keys: Sequence[str]) -> None:
    for key in keys:
        if key not in batch:
            raise ValueError(f"batch is missing {key!r} (has {sorted(batch)})")


class TinyBackbone(Backbone):
    """Shared code of the tiny families; subclasses set ``config_cls`` and build ``self.llm``."""

    config_cls: type = None  # a frozen dataclass

    def __init__(self, config, tokenizer):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)))

    @property
    def width(self) -> int:
        return self.config.width

    # ---- text ------------------------------------------------------------------------------
    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The LLM's input embedding table (§3.2: text features before f_θ)."""
        return self.llm.get_input_embeddings()(input_ids)

    def tokenize_prompts(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a list of str")
        enc = self.tokenizer(list(texts), padding=True, truncation=True,
                             max_length=self.config.max_text_len, return_tensors="pt")
        ids, am = enc["input_ids"], enc["attention_mask"]
        valid = am.bool() & ~torch.isin(ids, self.special_ids)
        return {"input_ids": ids, "attention_mask": am, "text_valid": valid}

    def preprocess_images(self, images) -> torch.Tensor:
        """uint8 arrays [H, W, 3] / PIL images (or pixels [B, 3, H, W]) -> [B, 3, S, S] in [0, 1]."""
        x = images if torch.is_tensor(images) else images_to_pixels(images)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images must give pixels [B, 3, H, W], got shape {tuple(x.shape)}")
        s = self.config.image_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x.float(), size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        return x.float()

    @property
    def cond_dropout_prob(self) -> float:
        """The probability that a training row loses its caption (classifier-free guidance)."""
        return self.config.cfg_drop_prob

    def drop_prompts(self, input_ids, attention_mask, hints=None):
        """CFG training on the path without hints: replace each prompt by ``[BOS][EOS]`` with
        probability cfg_drop_prob. With hints (the method's step drops those rows) it returns the
        prompts unchanged."""
        if hints is not None or not self.training or self.config.cfg_drop_prob <= 0:
            return input_ids, attention_mask
        drop = shard.draw(lambda s: torch.rand(s), input_ids.shape[0]) < self.config.cfg_drop_prob
        if not drop.any():
            return input_ids, attention_mask
        empty = torch.full_like(input_ids[0], self.tokenizer.pad_token_id)
        empty[0], empty[1] = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        empty_am = torch.zeros_like(attention_mask[0])
        empty_am[:2] = 1
        ids = torch.where(drop[:, None], empty[None], input_ids)
        am = torch.where(drop[:, None], empty_am[None], attention_mask)
        return ids, am

    def cfg_prompts(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Prompts then as many empty prompts, padded together: [2B, L] (cond first)."""
        return self.tokenize_prompts(list(prompts) + [""] * len(prompts))

    # ---- the LLM on a SeGroS sequence --------------------------------------------------------
    def run_llm(self, parts: Sequence[torch.Tensor], n_hint: int, text_mask: torch.Tensor,
                n_image: int, logits: bool):
        """LLM over cat(parts) = [hints][text][image] with the Fig. 6 mask; logits or last hidden."""
        x = torch.cat([p for p in parts if p is not None], dim=1)
        mask = segros_attention_mask(n_hint, text_mask, n_image, dtype=x.dtype)
        model = self.llm if logits else self.llm.model
        out = forward_with_mask(model, x, mask)
        return out.logits if logits else out.last_hidden_state

    # ---- understanding (Eq. 2) ---------------------------------------------------------------
    def understanding_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Visual prefix of the understanding path (both families: embed_image)."""
        return self.embed_image(pixels).z_image

    def i2t_batch(self, images, questions: Sequence[str], answers: Sequence[str]) -> dict[str, torch.Tensor]:
        if not (len(images) == len(questions) == len(answers)):
            raise ValueError(f"images, questions, answers differ in length: {len(images)}, {len(questions)}, {len(answers)}")
        tok = self.tokenizer
        rows, labels = [], []
        for q, a in zip(questions, answers):
            qi = tok(q, add_special_tokens=False)["input_ids"]
            ai = tok(a, add_special_tokens=False)["input_ids"]
            prefix = [tok.bos_token_id] + qi + [tok.sep_token_id]
            rows.append(prefix + ai + [tok.eos_token_id])
            labels.append([-100] * len(prefix) + ai + [tok.eos_token_id])
        n = max(len(r) for r in rows)
        ids = torch.full((len(rows), n), tok.pad_token_id, dtype=torch.long)
        lab = torch.full((len(rows), n), -100, dtype=torch.long)
        am = torch.zeros((len(rows), n), dtype=torch.long)
        for i, (r, l) in enumerate(zip(rows, labels)):
            ids[i, :len(r)], lab[i, :len(l)], am[i, :len(r)] = torch.tensor(r), torch.tensor(l), 1
        return {"pixels": self.preprocess_images(images), "input_ids": ids, "attention_mask": am, "labels": lab}

    def i2t_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Shifted next-token NLL on the labelled answer tokens (Eq. 2), mean over labelled tokens."""
        check_batch(batch, ("pixels", "input_ids", "attention_mask", "labels"))
        vis = self.understanding_tokens(batch["pixels"])
        txt = self.embed_text(batch["input_ids"])
        logits = self.run_llm([vis, txt], vis.shape[1], batch["attention_mask"], 0, logits=True)
        logits = logits[:, vis.shape[1]:, : len(self.tokenizer)]
        labels = batch["labels"][:, 1:]
        if not (labels != -100).any():
            raise ValueError("batch['labels'] has no labelled token after the first position")
        if shard.active():  # the mean over the labelled tokens of the global batch (segros.shard)
            nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                  ignore_index=-100, reduction="sum")
            return shard.weighted_mean(nll, (labels != -100).sum().float())
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                               ignore_index=-100)

    @torch.no_grad()
    def answer(self, images, questions: Sequence[str], max_new_tokens: int = 4) -> list[str]:
        """Greedy decoding after ``[BOS] question [SEP]``, one sample at a time, until [EOS]."""
        was_training = self.training
        self.eval()
        pixels = self.preprocess_images(images)
        tok = self.tokenizer
        answers = []
        for i, q in enumerate(questions):
            vis = self.understanding_tokens(pixels[i:i + 1])
            ids = [tok.bos_token_id] + tok(q, add_special_tokens=False)["input_ids"] + [tok.sep_token_id]
            new = []
            for _ in range(max_new_tokens):
                t = torch.tensor([ids + new])
                logits = self.run_llm([vis, self.embed_text(t)], vis.shape[1], torch.ones_like(t), 0, logits=True)
                nxt = int(logits[0, -1, : len(tok)].argmax())
                if nxt == tok.eos_token_id:
                    break
                new.append(nxt)
            answers.append(tok.decode(new, skip_special_tokens=True).strip())
        self.train(was_training)
        return answers

    # ---- alignment stage of base pretraining ---------------------------------------------------
    def shared_words(self, input_ids: torch.Tensor, text_valid: torch.Tensor) -> torch.Tensor:
        """[B, L] bool: valid tokens whose id occurs in more than ``align_shared_frac`` of the captions."""
        b = input_ids.shape[0]
        rows = torch.arange(b)[:, None].expand_as(input_ids)[text_valid]
        present = torch.zeros(b, int(input_ids.max()) + 1, dtype=torch.bool)
        present[rows, input_ids[text_valid]] = True
        frac = present.float().mean(dim=0)
        return (frac[input_ids] > self.config.align_shared_frac) & text_valid

    def alignment_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The alignment stage: FILIP with stop-gradient encoder and shared words (module docstring)."""
        check_batch(batch, ("pixels", "input_ids", "text_valid"))
        ids, valid = batch["input_ids"], batch["text_valid"].bool()
        if int(valid.any(dim=1).sum()) < 2:
            raise ValueError("alignment_loss needs at least 2 samples with a valid text token")
        shared = self.shared_words(ids, valid)
        with torch.no_grad():
            features = self.image_encoder_features(batch["pixels"])
        zi = F.normalize(self.project_image_features(features).float(), dim=-1)    # [B, N, D]
        zt = F.normalize(self.embed_text(ids).float(), dim=-1)                      # [B, L, D]
        loss = zi.new_zeros(())
        if shared.any():
            s = torch.einsum("ld,bnd->lbn", zt[shared], zi)
            loss = loss + self.config.align_shared_weight * s.clamp_min(0).pow(2).mean()
        use = valid & ~shared
        keep = use.any(dim=1)
        if int(keep.sum()) < 2:
            return loss
        zt, zi, use = zt[keep], zi[keep], use[keep]
        sim = torch.einsum("ald,bnd->abln", zt, zi)  # text a, image b, word l, patch n
        uf = use.float()[:, None, :]
        t2i = (sim.max(dim=3).values * uf).sum(-1) / uf.sum(-1)                      # [A, B]
        i2t = sim.masked_fill(~use[:, None, :, None], -2.0).max(dim=2).values.mean(-1)  # [A, B]
        target = torch.arange(zt.shape[0])
        tau = self.config.align_temperature
        return loss + 0.5 * (F.cross_entropy(t2i / tau, target) + F.cross_entropy(i2t.T / tau, target))

    # ---- images out --------------------------------------------------------------------------
    @staticmethod
    def to_pil(pixels: torch.Tensor) -> list:
        return [Image.fromarray(a) for a in pixels_to_uint8(pixels)]

    # ---- save / load -------------------------------------------------------------------------
    def num_parameters(self) -> dict[str, int]:
        return {name: count_parameters(m) for name, m in self.named_children()} | {"total": count_parameters(self)}

    def save_pretrained(self, folder: str) -> None:
        """``model.safetensors`` (weights + fitted image tokenizer), ``config.json``, ``tokenizer/``."""
        os.makedirs(folder, exist_ok=True)
        save_model(self, os.path.join(folder, "model.safetensors"))
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump({"family": self.family, "config": dataclasses.asdict(self.config)}, f, indent=2)
        save_text_tokenizer(self.tokenizer, os.path.join(folder, "tokenizer"))

    @classmethod
    def from_pretrained(cls, folder: str):
        path = os.path.join(folder, "config.json")
        if not os.path.isfile(path):
            raise ValueError(f"folder {folder!r} holds no config.json")
        with open(path) as f:
            saved = json.load(f)
        if saved.get("family") != cls.family:
            raise ValueError(f"{folder!r} holds a {saved.get('family')!r} checkpoint, not {cls.family!r}")
        model = cls(cls.config_cls(**saved["config"]), load_text_tokenizer(os.path.join(folder, "tokenizer")))
        load_model(model, os.path.join(folder, "model.safetensors"))
        return model.eval()
