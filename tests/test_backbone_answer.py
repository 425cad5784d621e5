"""Greedy understanding answers of the real adapters (Show-o, Harmon) at tiny size, random weights.

Each answer path is tied to the family's training-time understanding layout (``i2t_batch`` /
``i2t_sequence``, themselves checked against the official code by the parity tests): the logits of
the first answer token must be those that layout gives after the prompt.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from segros.backbones.harmon import IMAGE_TOKEN_INDEX, build_harmon
from segros.backbones.showo import SYSTEM_PROMPT, build_showo, reca_attention_mask

QUESTIONS = ["what color is the circle", "is there a red square", "how many circles"]


def _images(shape=(50, 70)):
    return [np.random.RandomState(i).randint(0, 255, (*shape, 3), dtype=np.uint8) for i in range(len(QUESTIONS))]


@pytest.fixture(scope="module")
def showo():
    torch.manual_seed(0)
    return build_showo("tiny").eval()


@pytest.fixture(scope="module")
def harmon():
    torch.manual_seed(0)
    return build_harmon("tiny").eval()


class record_logits:
    """Keep the last-position logits of every forward call of ``lm_head``."""

    def __init__(self, lm_head):
        self.lm_head, self.logits = lm_head, []

    def __enter__(self):
        self.handle = self.lm_head.register_forward_hook(lambda m, i, out: self.logits.append(out[0, -1].detach()))
        return self

    def __exit__(self, *exc):
        self.handle.remove()


class force_token:
    """Add ``bonus`` to one vocabulary logit from the ``step``-th forward call of ``lm_head`` on."""

    def __init__(self, lm_head, token, step=0, bonus=1e4):
        self.lm_head, self.token, self.step, self.bonus, self.calls = lm_head, token, step, bonus, 0

    def __enter__(self):
        def hook(module, inputs, out):
            self.calls += 1
            if self.calls > self.step:
                out = out.clone()
                out[..., self.token] += self.bonus
            return out
        self.handle = self.lm_head.register_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# ---- Show-o ------------------------------------------------------------------------------------

def test_showo_clip_pixels_follow_llava_processor(showo):
    """Shortest edge to 42 (bicubic), centre crop 42 x 42, as CLIPImageProcessor does."""
    wide = _images((50, 70))[0]
    got = showo.understanding_pixels([wide])
    assert got.shape == (1, 3, 42, 42)
    ref = Image.fromarray(wide).resize((58, 42), Image.BICUBIC).crop((8, 0, 50, 42))  # int(42 * 70 / 50) = 58
    assert torch.equal(got[0], torch.from_numpy(np.asarray(ref).copy()).permute(2, 0, 1).float() / 255)
    tall = np.ascontiguousarray(wide.transpose(1, 0, 2))
    ref = Image.fromarray(tall).resize((42, 58), Image.BICUBIC).crop((0, 8, 42, 50))
    assert torch.equal(showo.understanding_pixels([Image.fromarray(tall)])[0],
                       torch.from_numpy(np.asarray(ref).copy()).permute(2, 0, 1).float() / 255)


def test_showo_prompt_is_the_understanding_layout(showo):
    head, tail = showo.understanding_prompt("is it red")
    words = showo.tokenizer.encode
    assert head == ([showo.special_id("<|mmu|>")] + words(SYSTEM_PROMPT, add_special_tokens=False)
                    + [showo.special_id("<|soi|>")])
    # the I2T training conversation is the same text: "USER: q ASSISTANT:" + " answer<eos>"
    batch = showo.i2t_batch([_images()[0]], ["is it red"], ["yes"])
    prompt = [t for t, l in zip(batch["input_ids"][0].tolist(), batch["labels"][0].tolist()) if l == -100]
    assert tail == [showo.special_id("<|eoi|>")] + prompt


def test_showo_first_logits_are_those_of_the_training_layout(showo):
    images = _images()
    with record_logits(showo.showo.lm_head) as rec:
        answers = showo.answer(images, QUESTIONS, max_new_tokens=1)
    pixels = showo.understanding_pixels(images)
    for i, q in enumerate(QUESTIONS):
        batch = showo.i2t_batch([images[i]], [q], ["x"])
        keep = batch["labels"][0] == -100  # the prompt only
        batch = {"pixels": pixels[i:i + 1], "input_ids": batch["input_ids"][:, keep],
                 "attention_mask": batch["attention_mask"][:, keep], "labels": batch["labels"][:, keep]}
        embeds, mask, _ = showo.i2t_sequence(batch)
        pos = torch.arange(embeds.shape[1])[None]
        with torch.no_grad():
            logits = showo.showo(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).logits
        torch.testing.assert_close(rec.logits[i], logits[0, -1], rtol=1e-5, atol=1e-5)
        first = int(logits[0, -1].argmax())
        expect = showo.tokenizer.decode([first], skip_special_tokens=True).strip() if first < len(showo.tokenizer) else ""
        assert answers[i] == expect


def test_showo_cache_gives_the_official_full_recompute(showo):
    images = _images()
    cached = showo.answer(images, QUESTIONS, max_new_tokens=6)
    full = showo.answer(images, QUESTIONS, max_new_tokens=6, use_cache=False)
    assert cached == full and all(1 <= len(a.split()) <= 6 for a in cached)


def test_showo_stops_at_eos_and_restores_mode(showo):
    eos, red = showo.tokenizer.eos_token_id, showo.tokenizer.convert_tokens_to_ids("red")
    with force_token(showo.showo.lm_head, red), force_token(showo.showo.lm_head, eos, step=2, bonus=1e5) as hook:
        out = showo.answer(_images()[:1], QUESTIONS[:1], max_new_tokens=8)
    assert hook.calls == 3 and out == ["red red"]  # two words, then eos (not decoded), then stop
    showo.train()
    showo.answer(_images()[:1], QUESTIONS[:1], max_new_tokens=1)
    assert showo.training and not showo.clip.training
    showo.eval()
    with pytest.raises(ValueError, match="2 images but 1 questions"):
        showo.answer(_images()[:2], QUESTIONS[:1])


def test_showo_mask_sees_clip_tokens_from_the_system_prompt(showo):
    """The understanding mask: causal, plus every token sees the CLIP block (create_attention_mask_for_mmu_vit)."""
    real = torch.ones(1, 8, dtype=torch.bool)
    allowed = reca_attention_mask(real, slice(3, 6), slice(0, 0), as_bool=True)[0, 0]
    assert allowed[0, 3:6].all() and not allowed[0, 1] and allowed[7].all() and not allowed[3, 6]


# ---- Harmon ------------------------------------------------------------------------------------

def test_harmon_pixels_expand_to_square_on_gray(harmon):
    wide = _images((50, 70))[0]
    got = harmon.understanding_pixels([wide])
    canvas = Image.new("RGB", (70, 70), (127, 127, 127))
    canvas.paste(Image.fromarray(wide), (0, 10))
    ref = canvas.resize((64, 64), Image.BICUBIC)
    assert got.shape == (1, 3, 64, 64)
    assert torch.equal(got[0], torch.from_numpy(np.asarray(ref).copy()).permute(2, 0, 1).float() / 255)
    square = _images((64, 64))[0]
    assert torch.equal(harmon.understanding_pixels([square]), harmon.preprocess_images([square]))


def test_harmon_ids_are_the_i2t_prompt(harmon):
    ids = harmon.understanding_ids("is it red")
    batch = harmon.i2t_batch([_images()[0]], ["is it red"], ["yes"])
    prompt = [t for t, l in zip(batch["input_ids"][0].tolist(), batch["labels"][0].tolist()) if l == -100]
    assert ids == prompt and ids.count(IMAGE_TOKEN_INDEX) == 4 * 4 + harmon.cfg.buffer_size


def test_harmon_first_logits_are_those_of_the_training_layout(harmon):
    images = _images()
    with record_logits(harmon.llm.lm_head) as rec:
        answers = harmon.answer(images, QUESTIONS, max_new_tokens=1)
    for i, q in enumerate(QUESTIONS):
        latents, hw = harmon.encode(harmon.understanding_pixels(images[i:i + 1]))
        _, z_enc = harmon.visual_features(latents, torch.zeros(latents.shape[:2]), hw)
        ids = torch.tensor([harmon.understanding_ids(q)])
        embeds = harmon.llm.get_input_embeddings()(ids.clamp(min=0))
        embeds = embeds.masked_scatter((ids == IMAGE_TOKEN_INDEX)[..., None], z_enc)
        with torch.no_grad():
            logits = harmon.llm(inputs_embeds=embeds).logits[0, -1]
        torch.testing.assert_close(rec.logits[i], logits, rtol=1e-5, atol=1e-5)
        assert answers[i] == harmon.tokenizer.decode([int(logits.argmax())], skip_special_tokens=True).strip()


def test_harmon_greedy_answers_are_bounded_and_stop_at_eos(harmon):
    images = _images()
    a = harmon.answer(images, QUESTIONS, max_new_tokens=5)
    assert a == harmon.answer(images, QUESTIONS, max_new_tokens=5)  # greedy: deterministic
    assert all(1 <= len(x.split()) <= 5 for x in a)
    red = harmon.tokenizer.convert_tokens_to_ids("red")
    with force_token(harmon.llm.lm_head, red), force_token(harmon.llm.lm_head, harmon.tokenizer.eos_token_id,
                                                           step=1, bonus=1e5):
        out = harmon.answer(images[:1], QUESTIONS[:1], max_new_tokens=8)
    assert out == ["red"]  # the new tokens only (not the prompt), up to eos
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        harmon.answer(images[:1], QUESTIONS[:1], max_new_tokens=0)
