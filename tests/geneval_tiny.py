"""Tiny random models and small files for the paper-scale GenEval tests (no hub, no network).

- :func:`tiny_mask2former`: a transformers Mask2Former with a tiny Swin backbone and COCO's 80
  class names (COCO's own spellings) in ``id2label``;
- :func:`save_tiny_clip`: a tiny random ``CLIPModel`` and a byte-level CLIP tokenizer saved to a
  folder, loadable with ``from_pretrained`` as the OpenAI ViT-L/14 folder would be;
- :func:`prompts`: GenEval prompt records of every tag over COCO classes;
- :func:`draw`: a deterministic test image for a prompt (coloured squares on gray).
"""

from __future__ import annotations

import json
import os
import zlib

import numpy as np
import torch

from segros.eval.geneval import COCO_ALIASES, OBJECTS

COCO_NAMES = [{v: k for k, v in COCO_ALIASES.items()}.get(n, n) for n in OBJECTS]  # "mouse", "remote", "keyboard"


def tiny_mask2former(seed=0, favour=None, favour_logit=8.0):
    """Random tiny Mask2Former; ``favour`` = a class name whose logit bias is raised so that every
    query predicts it (random weights otherwise detect nothing above GenEval's thresholds)."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    torch.manual_seed(seed)
    swin = SwinConfig(image_size=224, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                      window_size=7, out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=swin, feature_size=32, mask_feature_size=32, hidden_dim=32,
                               encoder_feedforward_dim=32, encoder_layers=1, decoder_layers=2, num_attention_heads=2,
                               dim_feedforward=32, num_queries=12, id2label=dict(enumerate(COCO_NAMES)),
                               label2id={n: i for i, n in enumerate(COCO_NAMES)})
    model = Mask2FormerForUniversalSegmentation(config).eval()
    if favour is not None:
        with torch.no_grad():
            model.class_predictor.bias[OBJECTS.index(favour)] += favour_logit
    return model


def _bytes_to_unicode():
    """CLIP's (GPT-2's) reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def save_tiny_clip(folder, seed=0, image_size=32):
    """Save a tiny random CLIPModel + CLIPTokenizer (single characters, no merges) to ``folder``."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    os.makedirs(folder, exist_ok=True)
    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=512, eos_token_id=513,
                         pad_token_id=513),
        vision_config=dict(image_size=image_size, patch_size=8, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=2),
        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def prompts():
    """Seven GenEval records: every tag, colour and position clauses, a counting exclude."""
    return [
        {"tag": "single_object", "include": [{"class": "apple", "count": 1}], "prompt": "a photo of an apple"},
        {"tag": "two_object", "include": [{"class": "apple", "count": 1}, {"class": "cup", "count": 1}],
         "prompt": "a photo of an apple and a cup"},
        {"tag": "counting", "include": [{"class": "apple", "count": 2}], "exclude": [{"class": "apple", "count": 3}],
         "prompt": "a photo of two apples"},
        {"tag": "colors", "include": [{"class": "apple", "count": 1, "color": "red"}], "prompt": "a photo of a red apple"},
        {"tag": "position", "include": [{"class": "cup", "count": 1}, {"class": "apple", "count": 1, "position": ["left of", 0]}],
         "prompt": "a photo of an apple left of a cup"},
        {"tag": "color_attr", "include": [{"class": "apple", "count": 1, "color": "green"},
                                          {"class": "tv remote", "count": 1, "color": "black"}],
         "prompt": "a photo of a green apple and a black tv remote"},
        {"tag": "colors", "include": [{"class": "computer mouse", "count": 1, "color": "white"}],
         "prompt": "a photo of a white computer mouse"},
    ]


def draw(prompt, seed, size=48):
    """A gray image with one or two coloured squares whose place depends on the prompt and seed."""
    rng = np.random.default_rng([zlib.crc32(prompt.encode()), int(seed)])
    image = np.full((size, size, 3), 140, np.uint8)
    for colour in ((200, 30, 30), (30, 160, 40))[: 1 + int(rng.integers(0, 2))]:
        x, y = rng.integers(0, size - 16, size=2)
        image[y:y + 14, x:x + 14] = colour
    return image
