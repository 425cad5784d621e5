"""Tiny random versions of the real families (docs/adapters/): losses, generation, key names, checkpoints.

Expected key names were read from the official code (wusize/Harmon ``src/models/harmon.py``,
``src/models/mar/{mar,vae,diffloss}.py``, timm 0.9 ``Block``, transformers ``Qwen2ForCausalLM``)
and are written here by hand, independently of the module under test.
"""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
import torch

from segros.backbones import checkpoints as ckpt
from segros.backbones._mar import cosine_betas, respaced_steps, sample_tokens
from segros.backbones.harmon import IMAGE_TOKEN_INDEX, build_harmon
from segros.data.tokenizer import tiny_tokenizer
from segros.supervision import Supervision

# ---- official key names (Harmon) ---------------------------------------------------------------

HARMON_EXPECTED_KEYS = [
    "proj_in.0.weight", "proj_in.0.bias", "proj_in.2.weight", "proj_in.2.bias",
    "proj_out.0.weight", "proj_out.0.bias", "proj_out.2.weight", "proj_out.2.bias",
    "mar.class_emb.weight", "mar.fake_latent", "mar.z_proj.weight", "mar.z_proj.bias",
    "mar.z_proj_ln.weight", "mar.z_proj_ln.bias", "mar.encoder_pos_embed_learned",
    "mar.encoder_blocks.0.norm1.weight", "mar.encoder_blocks.0.norm1.bias",
    "mar.encoder_blocks.0.attn.qkv.weight", "mar.encoder_blocks.0.attn.qkv.bias",
    "mar.encoder_blocks.0.attn.proj.weight", "mar.encoder_blocks.0.attn.proj.bias",
    "mar.encoder_blocks.0.norm2.weight", "mar.encoder_blocks.0.mlp.fc1.weight",
    "mar.encoder_blocks.0.mlp.fc1.bias", "mar.encoder_blocks.0.mlp.fc2.weight",
    "mar.encoder_norm.weight", "mar.encoder_norm.bias", "mar.decoder_embed.weight", "mar.mask_token",
    "mar.decoder_pos_embed_learned", "mar.decoder_blocks.0.attn.qkv.weight", "mar.decoder_norm.weight",
    "mar.diffusion_pos_embed_learned",
    "mar.diffloss.net.time_embed.mlp.0.weight", "mar.diffloss.net.time_embed.mlp.2.weight",
    "mar.diffloss.net.cond_embed.weight", "mar.diffloss.net.input_proj.weight",
    "mar.diffloss.net.res_blocks.0.in_ln.weight", "mar.diffloss.net.res_blocks.0.mlp.0.weight",
    "mar.diffloss.net.res_blocks.0.mlp.2.weight", "mar.diffloss.net.res_blocks.0.adaLN_modulation.1.weight",
    "mar.diffloss.net.final_layer.linear.weight", "mar.diffloss.net.final_layer.adaLN_modulation.1.weight",
    "vae.encoder.conv_in.weight", "vae.encoder.down.0.block.0.norm1.weight",
    "vae.encoder.down.0.block.0.conv1.weight", "vae.encoder.down.0.block.0.norm2.weight",
    "vae.encoder.down.0.block.0.conv2.weight", "vae.encoder.down.0.downsample.conv.weight",
    "vae.encoder.mid.block_1.conv1.weight", "vae.encoder.mid.attn_1.q.weight", "vae.encoder.mid.attn_1.k.weight",
    "vae.encoder.mid.attn_1.v.weight", "vae.encoder.mid.attn_1.proj_out.weight", "vae.encoder.mid.block_2.conv2.weight",
    "vae.encoder.norm_out.weight", "vae.encoder.conv_out.weight",
    "vae.decoder.conv_in.weight", "vae.decoder.mid.attn_1.q.weight", "vae.decoder.up.0.block.0.conv1.weight",
    "vae.decoder.up.1.upsample.conv.weight", "vae.decoder.norm_out.weight", "vae.decoder.conv_out.weight",
    "vae.quant_conv.weight", "vae.post_quant_conv.weight",
    "llm.model.embed_tokens.weight", "llm.model.layers.0.self_attn.q_proj.weight",
    "llm.model.layers.0.self_attn.q_proj.bias", "llm.model.layers.0.self_attn.k_proj.bias",
    "llm.model.layers.0.self_attn.v_proj.weight", "llm.model.layers.0.self_attn.o_proj.weight",
    "llm.model.layers.0.mlp.gate_proj.weight", "llm.model.layers.0.mlp.up_proj.weight",
    "llm.model.layers.0.mlp.down_proj.weight", "llm.model.layers.0.input_layernorm.weight",
    "llm.model.layers.0.post_attention_layernorm.weight", "llm.model.norm.weight", "llm.lm_head.weight",
]

# every key of the model must match one of these official patterns
HARMON_KEY_PATTERNS = [
    r"proj_(in|out)\.[02]\.(weight|bias)",
    r"mar\.(class_emb\.weight|fake_latent|mask_token|(encoder|decoder|diffusion)_pos_embed_learned)",
    r"mar\.(z_proj|z_proj_ln|encoder_norm|decoder_norm|decoder_embed)\.(weight|bias)",
    r"mar\.(encoder|decoder)_blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)",
    r"mar\.diffloss\.net\.(time_embed\.mlp\.[02]|cond_embed|input_proj|final_layer\.linear"
    r"|final_layer\.adaLN_modulation\.1|res_blocks\.\d+\.(in_ln|mlp\.[02]|adaLN_modulation\.1))\.(weight|bias)",
    r"vae\.(encoder|decoder)\.(conv_in|conv_out|norm_out)\.(weight|bias)",
    r"vae\.(encoder\.down|decoder\.up)\.\d+\.block\.\d+\.(norm1|conv1|norm2|conv2|nin_shortcut)\.(weight|bias)",
    r"vae\.(encoder\.down|decoder\.up)\.\d+\.attn\.\d+\.(norm|q|k|v|proj_out)\.(weight|bias)",
    r"vae\.encoder\.down\.\d+\.downsample\.conv\.(weight|bias)",
    r"vae\.decoder\.up\.\d+\.upsample\.conv\.(weight|bias)",
    r"vae\.(encoder|decoder)\.mid\.(block_[12]\.(norm1|conv1|norm2|conv2)|attn_1\.(norm|q|k|v|proj_out))\.(weight|bias)",
    r"vae\.(quant_conv|post_quant_conv)\.(weight|bias)",
    r"llm\.model\.embed_tokens\.weight", r"llm\.model\.norm\.weight", r"llm\.lm_head\.weight",
    r"llm\.model\.layers\.\d+\.self_attn\.(q|k|v)_proj\.(weight|bias)",
    r"llm\.model\.layers\.\d+\.self_attn\.o_proj\.weight",
    r"llm\.model\.layers\.\d+\.mlp\.(gate|up|down)_proj\.weight",
    r"llm\.model\.layers\.\d+\.(input_layernorm|post_attention_layernorm)\.weight",
]

# shapes at the real sizes, from the official configs (configs/models/qwen2_5_*_kl16_mar_*.py:
# MAR built at img_size 256 -> 16x16 + 64 buffer = 320 positions; diffloss_d/w 6/1024 and 12/1536)
HARMON_REAL_SHAPES = {
    "0.5b": {"mar.encoder_pos_embed_learned": (1, 320, 768), "proj_in.0.weight": (896, 768),
             "proj_out.2.weight": (768, 896), "llm.model.embed_tokens.weight": (151936, 896),
             "mar.diffloss.net.res_blocks.5.mlp.0.weight": (1024, 1024),
             "mar.diffloss.net.final_layer.linear.weight": (32, 1024),
             "mar.encoder_blocks.11.attn.qkv.weight": (2304, 768),
             "vae.encoder.conv_out.weight": (32, 512, 3, 3), "vae.quant_conv.weight": (32, 32, 1, 1)},
    "1.5b": {"mar.encoder_pos_embed_learned": (1, 320, 1280), "proj_in.0.weight": (1536, 1280),
             "llm.model.embed_tokens.weight": (151936, 1536),
             "mar.diffloss.net.res_blocks.11.mlp.0.weight": (1536, 1536),
             "mar.decoder_blocks.19.mlp.fc1.weight": (5120, 1280),
             "llm.model.layers.27.self_attn.k_proj.weight": (256, 1536)},
}


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def harmon(tok):
    torch.manual_seed(0)
    model = build_harmon("tiny", tokenizer=tok)
    # the official init zeroes the diffusion head's output (no gradient upstream); perturb it
    with torch.no_grad():
        for p in model.mar.diffloss.net.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    return model.eval()


def _batch(model, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = model.tokenize_prompts(["a red circle", "two blue squares left of a green cross"][:n])
    batch["pixels"] = torch.rand(n, 3, 64, 64, generator=g)
    return batch


def _supervision(masked: torch.Tensor, weight: torch.Tensor | None = None, h: int = 4):
    b = masked.shape[0]
    return Supervision(hint_idx=torch.arange(h).expand(b, h).clone(), seen=~masked, masked=masked,
                       loss_weight=masked.float() if weight is None else weight)


def _masked(b=2, n=16, k=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(b, n, dtype=torch.bool)
    for i in range(b):
        m[i, torch.randperm(n, generator=g)[:k]] = True
    return m


# ---- key names -----------------------------------------------------------------------------

def test_harmon_keys_match_official_names(harmon):
    keys = set(harmon.state_dict())
    missing = [k for k in HARMON_EXPECTED_KEYS if k not in keys]
    assert not missing, missing
    pats = [re.compile(p) for p in HARMON_KEY_PATTERNS]
    stray = [k for k in keys if not any(p.fullmatch(k) for p in pats)]
    assert not stray, stray


@pytest.mark.parametrize("size", ["0.5b", "1.5b"])
def test_harmon_real_shapes_on_meta(size, tok):
    with torch.device("meta"):
        model = build_harmon(size, tokenizer=tok)
    sd = model.state_dict()
    for key, shape in HARMON_REAL_SHAPES[size].items():
        assert tuple(sd[key].shape) == shape, key
    pats = [re.compile(p) for p in HARMON_KEY_PATTERNS]
    assert all(any(p.fullmatch(k) for p in pats) for k in sd)
    assert model.target_grid_hw == model.hint_grid_hw == (32, 32)


# ---- embeddings ------------------------------------------------------------------------------

def test_harmon_encode_reuses_latents_of_the_same_pixels_only(harmon):
    calls = []
    first = next(harmon.vae.parameters())
    saved = first.detach().clone()
    orig = harmon.vae.encode_mean
    harmon.vae.encode_mean = lambda x: (calls.append(1), orig(x))[1]
    try:
        pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        a, _ = harmon.encode(pixels)
        b, _ = harmon.encode(pixels)  # embed_image then t2i_loss in one step: one VAE pass
        assert len(calls) == 1 and torch.equal(a, b)
        harmon.encode(pixels.clone())  # other pixels, same values: recomputed
        assert len(calls) == 2
        pixels.mul_(0.5)  # changed in place: recomputed, and the latents follow
        c, _ = harmon.encode(pixels)
        assert len(calls) == 3 and not torch.equal(a, c)
        with torch.no_grad():  # new VAE weights (load_state_dict copies in place): recomputed
            first.add_(0.1)
        harmon.encode(pixels)
        assert len(calls) == 4
        harmon.vae.requires_grad_(True)  # a trainable VAE is never cached
        harmon.encode(pixels)
        harmon.encode(pixels)
        assert len(calls) == 6
    finally:
        harmon.vae.requires_grad_(False)
        del harmon.vae.encode_mean
        with torch.no_grad():
            first.copy_(saved)
        harmon._latent_cache = None


def test_harmon_embed_image_drops_buffer_and_is_per_sample(harmon):
    pixels = _batch(harmon)["pixels"]
    with torch.no_grad():
        vt = harmon.embed_image(pixels)
        single = harmon.embed_image(pixels[1:])
    assert vt.grid_hw == (4, 4) and vt.z_image.shape == (2, 16, harmon.width)
    torch.testing.assert_close(vt.z_image[1:], single.z_image, atol=1e-5, rtol=1e-5)
    # position information: the same latent everywhere still gives different tokens per position
    flat = torch.full((1, 3, 64, 64), 0.5)
    with torch.no_grad():
        z = harmon.embed_image(flat).z_image[0]
    assert (z[0] - z[5]).abs().max() > 1e-4


def test_harmon_embed_image_other_grid_resizes_positions(harmon):
    with torch.no_grad():
        vt = harmon.embed_image(torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1)))
    assert vt.grid_hw == (8, 8) and vt.z_image.shape == (1, 64, harmon.width)


def test_harmon_embed_text_is_the_input_table(harmon):
    ids = torch.tensor([[3, 4, 5]])
    torch.testing.assert_close(harmon.embed_text(ids)[0], harmon.llm.model.embed_tokens.weight[[3, 4, 5]])
    with pytest.raises(ValueError, match="input_ids"):
        harmon.embed_text(torch.tensor([1.0, 2.0]))


def test_harmon_text_valid_marks_the_caption_only(harmon, tok):
    out = harmon.tokenize_prompts(["a red circle", ""])
    words = tok.decode(out["input_ids"][0][out["text_valid"][0]].tolist())
    assert words.split() == ["a", "red", "circle"]
    assert not out["text_valid"][1].any()
    uncond = tok.decode(out["input_ids"][1][out["attention_mask"][1].bool()].tolist())
    assert "generate an image ." in uncond and ":" not in uncond


# ---- T2I loss ---------------------------------------------------------------------------------

def test_harmon_t2i_loss_backward_reaches_trainable_parts(harmon):
    harmon.zero_grad()
    batch = _batch(harmon)
    hints = harmon.embed_image(batch["pixels"]).z_image[:, :4]
    loss = harmon.t2i_loss(batch, _supervision(_masked()), hints, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for name in ("proj_in.0.weight", "proj_out.2.weight", "mar.encoder_blocks.0.attn.qkv.weight",
                 "mar.decoder_blocks.0.mlp.fc1.weight", "mar.diffloss.net.input_proj.weight",
                 "llm.model.layers.1.self_attn.q_proj.weight"):
        g = dict(harmon.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name
    assert all(p.grad is None for p in harmon.vae.parameters())
    harmon.zero_grad()


def test_harmon_t2i_loss_depends_on_hints_and_mode(harmon, tok):
    batch = _batch(harmon)
    sup = _supervision(_masked())
    with torch.no_grad():
        hints = harmon.embed_image(batch["pixels"]).z_image[:, :4]
        base = harmon.t2i_loss(batch, sup, None, generator=torch.Generator().manual_seed(0))
        again = harmon.t2i_loss(batch, sup, None, generator=torch.Generator().manual_seed(0))
        with_h = harmon.t2i_loss(batch, sup, hints, generator=torch.Generator().manual_seed(0))
    assert base == again
    assert abs(float(base) - float(with_h)) > 1e-7
    native = build_harmon("tiny", tokenizer=tok, image_attention="native")
    native.load_state_dict(harmon.state_dict())
    native.eval()
    with torch.no_grad():  # image_attention acts with hints only; without, both are the official attention
        nat = native.t2i_loss(batch, sup, None, generator=torch.Generator().manual_seed(0))
        nat_h = native.t2i_loss(batch, sup, hints, generator=torch.Generator().manual_seed(0))
    assert float(nat) == float(base)
    assert abs(float(nat_h) - float(with_h)) > 1e-7


def test_harmon_t2i_loss_zero_weight_is_zero(harmon):
    batch = _batch(harmon)
    masked = _masked()
    loss = harmon.t2i_loss(batch, _supervision(masked, torch.zeros(2, 16)), None)
    assert float(loss.detach()) == 0.0


def test_harmon_t2i_loss_rejects_unequal_mask_counts(harmon):
    masked = _masked()
    masked[1, (~masked[1]).nonzero()[0]] = True  # sample 1 gets one more masked token
    with pytest.raises(ValueError, match="sample 1"):
        harmon.t2i_loss(_batch(harmon), _supervision(masked), None)
    with pytest.raises(ValueError, match="masked"):
        harmon.t2i_loss(_batch(harmon), _supervision(_masked(n=9, k=3)), None)
    with pytest.raises(ValueError, match="hints"):
        harmon.t2i_loss(_batch(harmon), _supervision(_masked()), torch.zeros(2, 4, 7))


def test_harmon_hint_grad_scale_scales_hint_gradient(harmon, tok):
    batch = _batch(harmon)
    sup = _supervision(_masked())
    grads = {}
    for scale in (1.0, 0.1):
        m = build_harmon("tiny", tokenizer=tok, hint_grad_scale=scale)
        m.load_state_dict(harmon.state_dict())
        m.eval()
        hints = torch.randn(2, 4, m.width, generator=torch.Generator().manual_seed(3), requires_grad=True)
        m.t2i_loss(batch, sup, hints, generator=torch.Generator().manual_seed(0)).backward()
        grads[scale] = hints.grad.clone()
    assert grads[1.0].abs().sum() > 0
    torch.testing.assert_close(grads[0.1], 0.1 * grads[1.0])


def _llm_inputs(model, batch, sup, hints):
    """The kwargs and output of the LLM call of one ``t2i_loss``."""
    seen = {}

    def hook(module, args, kwargs, output):
        seen.update(kwargs, hidden=output.last_hidden_state)

    handle = model.llm.model.register_forward_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            loss = model.t2i_loss(batch, sup, hints, generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    return seen, loss


def test_harmon_hint_layouts_sequence_and_mask(harmon, tok):
    from segros.attention import segros_attention_mask
    batch = _batch(harmon)  # row 0 is right-padded
    masked = _masked()
    sup = _supervision(masked)
    text_mask = batch["attention_mask"].bool()
    with torch.no_grad():
        text = harmon.embed_text(batch["input_ids"])
        lat, hw = harmon.encode(batch["pixels"])
        _, z_enc = harmon.visual_features(lat, masked.float(), hw)
        hints = harmon.embed_image(batch["pixels"]).z_image[:, [1, 5, 6]]
    b, n_img, ones = 2, z_enc.shape[1], lambda k: torch.ones(2, k, dtype=torch.bool)  # noqa: E731
    # "prepend" (the default, unchanged): [hints][text][image] under Fig. 6
    seen, _ = _llm_inputs(harmon, batch, sup, hints)
    torch.testing.assert_close(seen["inputs_embeds"], torch.cat([hints, text, z_enc], 1), rtol=0, atol=0)
    fig6 = segros_attention_mask(3, text_mask, n_img, as_bool=True)
    assert torch.equal(seen["attention_mask"] == 0, fig6)
    real = torch.cat([ones(3), text_mask, ones(n_img)], 1)
    assert torch.equal(seen["position_ids"], (real.long().cumsum(1) - 1).clamp(min=0))
    # "reca": Reca's slot after <|im_start|>user\n (Reca harmon_dev.py HarmonDev.recon_loss), causal + padding
    slot = len(harmon._encode("<|im_start|>user\n"))
    for attention in ("native", "fig6"):
        reca = build_harmon("tiny", tokenizer=tok, hint_layout="reca", image_attention=attention)
        reca.load_state_dict(harmon.state_dict())
        reca.eval()
        visual = reca.embed_image(batch["pixels"])
        full, buffer = visual.image_prompt(), visual.extra
        torch.testing.assert_close(visual.z_image, harmon.embed_image(batch["pixels"]).z_image)
        assert harmon.embed_image(batch["pixels"]).extra is None  # "prepend": the grid tokens only
        for h, expect in ((hints, hints), (full, full)):  # a subset; Reca's full prompt (grid, then buffer)
            seen, loss = _llm_inputs(reca, batch, sup, h)
            nh = expect.shape[1]
            torch.testing.assert_close(seen["inputs_embeds"], torch.cat([text[:, :slot], expect, text[:, slot:], z_enc],
                                                                        1), rtol=0, atol=0)
            real = torch.cat([text_mask[:, :slot], ones(nh), text_mask[:, slot:], ones(n_img)], 1)
            s = real.shape[1]
            allowed = torch.ones(s, s, dtype=torch.bool).tril()[None] & real[:, None, :]
            if attention == "fig6":
                allowed[:, s - n_img:] = real[:, None, :]
            assert torch.equal(seen["attention_mask"][:, 0] == 0, allowed), (attention, nh)
            assert torch.equal(seen["position_ids"], (real.long().cumsum(1) - 1).clamp(min=0))
            assert torch.isfinite(loss)
    assert buffer.shape == (b, reca.cfg.buffer_size, reca.width)
    # without hints the layouts agree (both run the official attention); a prompt without the chat
    # template is refused
    with torch.no_grad():
        torch.testing.assert_close(reca.t2i_loss(batch, sup, None, generator=torch.Generator().manual_seed(0)),
                                   harmon.t2i_loss(batch, sup, None, generator=torch.Generator().manual_seed(0)),
                                   rtol=0, atol=0)
    bad = dict(batch, input_ids=batch["input_ids"][:, 1:], attention_mask=batch["attention_mask"][:, 1:])
    with pytest.raises(ValueError, match="hint_layout='reca'"):
        reca.t2i_loss(bad, sup, hints)


def test_harmon_reca_layout_trains_the_buffer_tokens(harmon, tok):
    reca = build_harmon("tiny", tokenizer=tok, hint_layout="reca", hint_grad_scale=0.1)
    reca.load_state_dict(harmon.state_dict())
    reca.eval()
    batch = _batch(reca)
    visual = reca.embed_image(batch["pixels"])
    visual.z_image.retain_grad()
    visual.extra.retain_grad()
    reca.t2i_loss(batch, _supervision(_masked()), visual.image_prompt(),
                  generator=torch.Generator().manual_seed(0)).backward()
    assert visual.z_image.grad.abs().sum() > 0 and visual.extra.grad.abs().sum() > 0
    reca.zero_grad()


def test_harmon_prompt_defaults_are_the_official_values(tok):
    from segros.backbones.harmon import MAX_LENGTH, SIZES as HARMON_SIZES
    # official configs/datasets/qwen2_5_1_5b/text2image.py: unconditional=0.1, max_length=128;
    # Reca's reconstruction_mid.py: unconditional=0.1
    for size in ("0.5b", "1.5b"):
        assert HARMON_SIZES[size].cond_dropout_prob == 0.1 and HARMON_SIZES[size].text_free_prob == 0.1
    assert MAX_LENGTH == 128
    for bad in (dict(cond_dropout_prob=1.5), dict(text_free_prob=-0.1)):
        with pytest.raises(ValueError, match="in \\[0, 1\\]"):
            build_harmon("tiny", tokenizer=tok, **bad)


def test_harmon_prompts_are_encoded_in_one_piece():
    # official Text2ImageDataset._process_text (training) and prepare_text_conditions (GenEval):
    # the whole chat string encoded once, so the space after "image:" merges into the caption
    tok = _qwen_like_tokenizer(eos_token="<|im_end|>")  # Qwen2.5-Instruct's eos: the official padding value
    model = build_harmon("tiny", tokenizer=tok)
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    template = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
    texts = ["a red circle", "  two blue squares ", ""]
    train, gen = model.tokenize_prompts(texts), model.tokenize_generation_prompts(texts)
    expected = {"train": ["Generate an image: a red circle", "Generate an image: two blue squares",
                          "Generate an image."],  # text.strip()
                "gen": ["Generate an image: a red circle", "Generate an image:   two blue squares ",
                        "Generate an image."]}  # f"Generate an image: {prompt}", not stripped
    for name, out in (("train", train), ("gen", gen)):
        for i, prompt in enumerate(expected[name]):
            n = int(out["attention_mask"][i].sum())
            assert out["input_ids"][i, :n].tolist() == enc(template.format(prompt)), (name, i)
            assert (out["input_ids"][i, n:] == tok.eos_token_id).all() and not out["attention_mask"][i, n:].any()
            caption = tok.decode(out["input_ids"][i][out["text_valid"][i]])
            assert caption == (prompt.split(":", 1)[1] if texts[i] else ""), (name, i, caption)
    pieces = enc(template.split("{}")[0] + "Generate an image: ") + enc("a red circle") + enc(template.split("{}")[1])
    assert pieces != train["input_ids"][0, :int(train["attention_mask"][0].sum())].tolist()
    # training keeps the first 128 ids (max_length), generation keeps them all
    long = " ".join(["a red circle"] * 60)
    truncated = enc(template.format("Generate an image: " + long))[:128]
    assert model.tokenize_prompts([long])["input_ids"].tolist() == [truncated]
    assert model.tokenize_generation_prompts([long])["input_ids"].shape[1] > 128


def test_harmon_generate_uses_the_geneval_prompts(harmon, monkeypatch):
    seen = []
    real = harmon.tokenize_generation_prompts
    monkeypatch.setattr(harmon, "tokenize_generation_prompts", lambda texts: seen.append(list(texts)) or real(texts))
    harmon.generate([" a red circle"], seed=0, num_iter=1, return_latents=True)
    assert seen == [[" a red circle", ""]]  # the prompt as given, then the cfg prompt "Generate an image."


def test_harmon_caption_dropout_on_the_native_training_path_only(harmon, tok):
    always, never = (build_harmon("tiny", tokenizer=tok, cond_dropout_prob=p) for p in (1.0, 0.0))
    always.load_state_dict(harmon.state_dict())
    never.load_state_dict(harmon.state_dict())
    batch = _batch(harmon)
    sup = _supervision(_masked())
    hints = harmon.embed_image(batch["pixels"]).z_image[:, :4].detach()
    uncond = {**batch, **harmon.tokenize_prompts(["", ""])}
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731

    def loss(model, b, h, gen, train):  # the MAR's dropout draws from torch's global generator in training
        torch.manual_seed(5)
        return model.train(train).t2i_loss(b, sup, h, gen)

    with torch.no_grad():
        plain, dropped = loss(never, batch, None, g(), True), loss(never, uncond, None, g(), True)
        assert (plain - dropped).abs() > 1e-6
        # every row becomes "Generate an image." (right-padded to the batch's width); one draw per row
        gd = g()
        [float(torch.rand((), generator=gd)) for _ in range(2)]
        torch.testing.assert_close(loss(always, batch, None, g(), True), loss(never, uncond, None, gd, True))
        # the hinted paths never drop, nor does evaluation
        torch.testing.assert_close(loss(always, batch, hints, g(), True), loss(never, batch, hints, g(), True))
        torch.testing.assert_close(loss(always, batch, None, g(), False), loss(never, batch, None, g(), False))
    # which rows: per sample, random.uniform(0, 1) < unconditional (Text2ImageDataset._process_text)
    half = build_harmon("tiny", tokenizer=tok, cond_dropout_prob=0.5)
    text = half.tokenize_prompts(["a red circle", "two blue squares left of a green cross"] * 8)
    ids, att = half.drop_conditions(text["input_ids"], text["attention_mask"], random.Random(2))
    replay = random.Random(2)
    drop = [replay.uniform(0, 1) < 0.5 for _ in range(16)]
    empty = half.tokenize_prompts([""])
    n = empty["input_ids"].shape[1]
    assert 0 < sum(drop) < 16
    for i in range(16):
        if drop[i]:
            assert ids[i, :n].tolist() == empty["input_ids"][0].tolist() and att[i].sum() == n
            assert (ids[i, n:] == half.prompt_pad_id).all() and not att[i, n:].any()
        else:
            assert torch.equal(ids[i], text["input_ids"][i]) and torch.equal(att[i], text["attention_mask"][i])


# ---- I2T loss ---------------------------------------------------------------------------------

def test_harmon_i2t_loss(harmon):
    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    batch = harmon.i2t_batch([img, img], ["what color is the circle", "how many"], ["red", "two circles"])
    assert (batch["input_ids"] == IMAGE_TOKEN_INDEX).sum(1).tolist() == [16 + 4, 16 + 4]
    sup = batch["labels"] != -100
    assert sup.sum(1).tolist() == [len(harmon._encode("red<|im_end|>")), len(harmon._encode("two circles<|im_end|>"))]
    harmon.zero_grad()
    loss = harmon.i2t_loss(batch)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert harmon.proj_in[0].weight.grad.abs().sum() > 0
    harmon.zero_grad()
    bad = dict(batch)
    bad["input_ids"] = batch["input_ids"].clone()
    bad["input_ids"][1, (batch["input_ids"][1] == IMAGE_TOKEN_INDEX).nonzero()[0]] = 5
    with pytest.raises(ValueError, match=r"input_ids'\]\[1\]"):
        harmon.i2t_loss(bad)


# ---- generation -------------------------------------------------------------------------------

def test_harmon_generate_deterministic(harmon):
    a = harmon.generate(["a red circle"], seed=0, num_iter=2)
    b = harmon.generate(["a red circle"], seed=0, num_iter=2)
    c = harmon.generate(["a red circle"], seed=1, num_iter=2)
    assert a[0].size == (64, 64)
    assert np.array_equal(np.asarray(a[0]), np.asarray(b[0]))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(c[0]))
    lat = harmon.generate(["a red circle", "a blue square"], seed=0, num_iter=3, cfg=1.0, return_latents=True)
    assert lat.shape == (2, 16, 16) and torch.isfinite(lat).all()


def test_cosine_schedule_agrees_with_objectives():
    from segros.objectives import cosine_alphas_cumprod

    torch.testing.assert_close(torch.cumprod(1 - cosine_betas(), 0), cosine_alphas_cumprod(1000))
    steps = respaced_steps(1000, 100)
    assert len(steps) == 100 and steps[0] == 0 and steps[-1] == 999
    assert respaced_steps(1000, 4) == [0, 333, 666, 999]


def test_sample_tokens_cfg_halves_equal_and_temperature(harmon):
    head = harmon.mar.diffloss
    cond = torch.randn(6, head.net.cond_embed.in_features, generator=torch.Generator().manual_seed(0))
    guided = sample_tokens(head, cond, cfg=3.0, num_steps=5, generator=torch.Generator().manual_seed(0))
    plain = sample_tokens(head, cond[:3], cfg=1.0, num_steps=5, generator=torch.Generator().manual_seed(0))
    assert guided.shape == (3, head.in_channels)
    assert not torch.allclose(guided, plain)
    # identical conditional and unconditional rows: guidance changes nothing
    same = sample_tokens(head, torch.cat([cond[:3], cond[:3]]), cfg=3.0, num_steps=5,
                         generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(same, plain, atol=1e-5, rtol=1e-4)
    cold = sample_tokens(head, cond, cfg=1.0, temperature=0.0, num_steps=5, generator=torch.Generator().manual_seed(0))
    cold2 = sample_tokens(head, cond, cfg=1.0, temperature=0.0, num_steps=5, generator=torch.Generator().manual_seed(9))
    # temperature 0 leaves only the initial noise as randomness -> different seeds still differ,
    # but a rerun with the same seed is identical
    again = sample_tokens(head, cond, cfg=1.0, temperature=0.0, num_steps=5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(cold, again)
    assert not torch.allclose(cold, cold2)
    with pytest.raises(ValueError, match="even"):
        sample_tokens(head, cond[:5], cfg=2.0, num_steps=2)


# ---- checkpoints ------------------------------------------------------------------------------

def test_harmon_save_load_round_trip(harmon, tok, tmp_path):
    main, vae = tmp_path / "harmon_tiny.pth", tmp_path / "kl16.ckpt"
    ckpt.save_harmon(harmon, str(main), str(vae))
    raw = torch.load(main, weights_only=True)
    assert not any(k.startswith("vae.") for k in raw) and "proj_in.0.weight" in raw
    assert "encoder.conv_in.weight" in torch.load(vae, weights_only=True)["model"]
    torch.manual_seed(123)
    other = build_harmon("tiny", tokenizer=tok).eval()
    assert not torch.equal(other.proj_in[0].weight, harmon.proj_in[0].weight)
    ckpt.load_harmon(other, str(tmp_path), str(tmp_path), checkpoint_file="harmon_tiny.pth")
    for k, v in harmon.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k
    pix = _batch(harmon)["pixels"]
    with torch.no_grad():
        torch.testing.assert_close(other.embed_image(pix).z_image, harmon.embed_image(pix).z_image)


def test_checkpoint_mismatch_lists_keys(harmon, tok, tmp_path):
    sd = harmon.state_dict_without_vae()
    sd.pop("proj_out.0.bias")
    sd["mar.not_a_key"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(ckpt.CheckpointMismatch) as err:
        ckpt.load_harmon(build_harmon("tiny", tokenizer=tok), str(path))
    msg = str(err.value)
    assert "missing keys (1)" in msg and "proj_out.0.bias" in msg
    assert "unexpected keys (1)" in msg and "mar.not_a_key" in msg
    wider = build_harmon("tiny", tokenizer=tok, mar_dim=48)
    torch.save(harmon.state_dict_without_vae(), path)
    with pytest.raises(ckpt.CheckpointMismatch, match="shape mismatches"):
        ckpt.load_harmon(wider, str(path))
    with pytest.raises(ValueError, match="source"):
        ckpt.resolve(str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="filename"):
        ckpt.resolve(str(tmp_path))


def test_build_harmon_rejects_bad_config(tok):
    with pytest.raises(ValueError, match="size"):
        build_harmon("7b", tokenizer=tok)
    with pytest.raises(ValueError, match="unknown Harmon config"):
        build_harmon("tiny", tokenizer=tok, not_a_field=1)
    with pytest.raises(ValueError, match="image_attention"):
        build_harmon("tiny", tokenizer=tok, image_attention="sideways")
    with pytest.raises(ValueError, match="hint_layout"):
        build_harmon("tiny", tokenizer=tok, hint_layout="after")
    with pytest.raises(ValueError, match="llm_path"):
        build_harmon("0.5b")


# ---- benchmark script -------------------------------------------------------------------------

def _load_bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_real_step.py"
    spec = importlib.util.spec_from_file_location("bench_real_step", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.slow
def test_bench_real_step_tiny_cpu(tmp_path):
    import json
    import math
    from types import SimpleNamespace

    bench = _load_bench()
    out = tmp_path / "bench.json"
    rows, ratios = bench.main(["--device", "cpu", "--tiny", "--steps", "1", "--warmup", "0", "--dtype", "float32",
                               "--text-len", "8", "--question-len", "4", "--answer-len", "4", "--flop-draws", "1",
                               "--peak-tflops", "1", "--json", str(out)])
    assert [r["family"] for r in rows] == ["showo-tiny", "harmon-tiny", "openuni-tiny"]
    for r in rows:
        for key in ("micro_s", "update_s", "step_s", "tokens_per_s", "tflop_per_micro", "tflop_per_step", "mfu"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["family"], key, r[key])
        assert r["batch"] == 2 and not r["accum_ceil"]
        assert r["tokens_per_s"] * r["micro_s"] == pytest.approx(2 * sum(r["llm_seq"]))
    assert [r["accum"] for r in rows] == [5, 2, 16]  # Table 7: Show-o-256, Harmon-0.5B, OpenUni-1.6B
    seq = {r["family"]: r["llm_seq"] for r in rows}
    # LLM sequences of a SeGroS micro-step, from each family's layout. Show-o (hinted, Reca's):
    # 16 text slots + floor(0.3 * 3*3) = 2 CLIP-grid hints + [soi] 16 codes [eoi]; then I2T
    args = SimpleNamespace(text_len=8, question_len=4, answer_len=4)
    showo = bench.build(bench.TINY["showo-tiny"])
    _, i2t = bench.make_batches(showo, bench.config_for(bench.TINY["showo-tiny"], "segros"), args,
                                torch.Generator().manual_seed(0))
    assert seq["showo-tiny"] == [16 + 2 + 18, showo.i2t_sequence(i2t)[0].shape[1]]
    harmon = bench.build(bench.TINY["harmon-tiny"])
    _, i2t = bench.make_batches(harmon, bench.config_for(bench.TINY["harmon-tiny"], "segros"), args,
                                torch.Generator().manual_seed(0))
    assert len(seq["harmon-tiny"]) == 2 and seq["harmon-tiny"][1] == i2t["input_ids"].shape[1]
    assert len(seq["openuni-tiny"]) == 1  # λ = 0: no I2T micro-batch
    assert set(ratios) == {"segros", "reca", "sft"} and all(t > 0 for t in ratios.values())
    assert json.loads(out.read_text())["rows"][0]["batch"] == 2
    with pytest.raises(SystemExit):
        bench.main(["--tiny", "--families", "harmon-1.5b"])  # a real family needs no --tiny: a clear error
    with pytest.raises(SystemExit):  # a ratio family that is not timed: a clear error, not silently no ratios
        bench.main(["--device", "cpu", "--tiny", "--families", "showo-tiny", "--ratio-family", "harmon-tiny"])


@pytest.mark.slow
def test_bench_real_step_smaller_batch_keeps_samples_per_step():
    """--batch 1 (as after an out-of-memory halving) doubles accum: an optimizer step keeps its samples."""
    bench = _load_bench()
    common = ["--device", "cpu", "--tiny", "--families", "harmon-tiny", "--steps", "1", "--warmup", "0",
              "--dtype", "float32", "--text-len", "4", "--question-len", "4", "--answer-len", "4", "--no-flops"]
    (two,), _ = bench.main(common)
    (one,), _ = bench.main(common + ["--batch", "1"])
    assert (two["batch"], one["batch"]) == (2, 1)
    assert one["accum"] == 2 * two["accum"] and one["batch"] * one["accum"] == two["batch"] * two["accum"]
    assert not one["accum_ceil"]
    config = bench.step_config(bench.TINY["harmon-tiny"], "segros", 1)
    assert config.grad_accum == config.i2t_micro == one["accum"]
    assert bench.accum_for(bench.TINY["showo-tiny"], 3) == (4, False)  # 2 * 5 = 10 samples: ceil(10 / 3)


@pytest.mark.slow
def test_bench_real_step_flops_only_tiny():
    import math

    bench = _load_bench()
    rows = bench.main(["--flops-only", "--tiny", "--text-len", "4", "--question-len", "4", "--answer-len", "4",
                       "--flop-draws", "1"])
    by = {r["family"]: r["methods"] for r in rows}
    assert list(by) == ["showo-tiny", "harmon-tiny", "openuni-tiny"]
    for fam, methods in by.items():
        for m in ("sft", "reca", "segros"):
            assert math.isfinite(methods[m]["flops"]) and methods[m]["flops"] > 0, (fam, m)
    h = {m: by["harmon-tiny"][m]["flops"] for m in ("sft", "reca", "segros")}
    # same gamma: Reca conditions on all 4*4 = 16 hint tokens, SeGroS on floor(0.3 * 16) = 4, SFT on none
    assert h["reca"] > h["segros"] > h["sft"]
    # Show-o T2I: native [pad..][t2i][bos] text [eos] (17 slots) for SFT; Reca's hinted layout (16 slots)
    # with all 9 CLIP-grid hints (Reca) or floor(0.3 * 9) = 2 (SeGroS); then [soi] 16 codes [eoi]
    t2i_len = {m: by["showo-tiny"][m]["calls"][0][1] for m in ("sft", "reca", "segros")}
    assert t2i_len == {"sft": 17 + 18, "reca": 16 + 9 + 18, "segros": 16 + 2 + 18}
    with pytest.raises(SystemExit):
        bench.main(["--flops-only", "--families", "harmon-2b"])
    # the Reca row runs the settings the paper presets' Reca rows get (Reca's slot layout on Harmon)
    fam = bench.TINY["harmon-tiny"]
    assert bench.build(fam, "meta", method="reca").cfg.hint_layout == "reca"
    assert bench.build(fam, "meta").cfg.hint_layout == "prepend"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["showo-tiny", "harmon-tiny", "openuni-tiny"])
def test_bench_meta_flops_match_a_real_cpu_step(name):
    """The meta-device count (data-dependent ops answered from CPU shadows) equals a real step's count."""
    from types import SimpleNamespace

    bench = _load_bench()
    fam = bench.TINY[name]
    args = SimpleNamespace(text_len=8, question_len=4, answer_len=4)
    for method in bench.METHODS:
        cpu, meta = bench.build(fam, "cpu", method=method), bench.build(fam, "meta", method=method)
        assert next(meta.parameters()).device.type == "meta"
        config = bench.config_for(fam, method)
        t2i, i2t = bench.make_batches(cpu, config, args, torch.Generator().manual_seed(0))
        flops_cpu, calls_cpu = bench.count_micro(cpu, config, t2i, i2t, seed=3)
        flops_meta, calls_meta = bench.count_micro(meta, config, t2i, i2t, seed=3)
        assert flops_meta == flops_cpu > 0, method
        assert calls_meta == calls_cpu, method


# ==== Show-o ==================================================================================

from segros.backbones.showo import build_showo  # noqa: E402

# read from showlab/Show-o models/{modeling_showo,phi,modeling_magvitv2}.py
SHOWO_EXPECTED_KEYS = [
    "showo.model.embed_tokens.weight", "showo.model.layers.0.self_attn.q_proj.weight",
    "showo.model.layers.0.self_attn.k_proj.bias", "showo.model.layers.0.self_attn.v_proj.weight",
    "showo.model.layers.0.self_attn.dense.weight", "showo.model.layers.0.self_attn.dense.bias",
    "showo.model.layers.0.self_attn.q_layernorm.weight", "showo.model.layers.0.self_attn.k_layernorm.bias",
    "showo.model.layers.0.mlp.fc1.weight", "showo.model.layers.0.mlp.fc2.bias",
    "showo.model.layers.0.input_layernorm.weight", "showo.model.final_layernorm.weight",
    "showo.lm_head.weight", "showo.lm_head.bias",
    "mm_projector.0.weight", "mm_projector.0.bias", "mm_projector.2.weight", "mm_projector.2.bias",
    "vq_model.encoder.conv_in.weight", "vq_model.encoder.down.0.block.0.norm1.weight",
    "vq_model.encoder.down.0.block.0.conv1.weight", "vq_model.encoder.down.0.downsample.conv.weight",
    "vq_model.encoder.mid.block_1.conv1.weight", "vq_model.encoder.mid.attn_1.q.weight",
    "vq_model.encoder.norm_out.weight", "vq_model.encoder.conv_out.weight", "vq_model.encoder.quant_conv.weight",
    "vq_model.decoder.post_quant_conv.weight", "vq_model.decoder.conv_in.weight",
    "vq_model.decoder.up.0.block.0.conv1.weight", "vq_model.decoder.up.1.upsample.conv.weight",
    "vq_model.decoder.mid.attn_1.proj_out.weight", "vq_model.decoder.conv_out.weight",
    "vq_model.quantize.embedding", "vq_model.quantize.power_vals",
]
SHOWO_REAL_SHAPES = {  # configs/showo_demo_w_clip_vit*.yaml + microsoft/phi-1_5 + MAGVIT-v2 defaults
    "showo.model.embed_tokens.weight": (58498, 2048), "showo.lm_head.weight": (58498, 2048),
    "showo.model.layers.23.self_attn.q_layernorm.weight": (64,), "showo.model.layers.0.mlp.fc1.weight": (8192, 2048),
    "mm_projector.0.weight": (2048, 1024), "mm_projector.2.weight": (2048, 2048),
    "vq_model.encoder.conv_out.weight": (13, 512, 3, 3), "vq_model.encoder.quant_conv.weight": (13, 13, 1, 1),
    "vq_model.quantize.embedding": (8192, 13), "vq_model.decoder.conv_in.weight": (512, 13, 3, 3),
}


@pytest.fixture(scope="module")
def showo():
    torch.manual_seed(0)
    return build_showo("tiny").eval()


def _showo_batch(model, seed=0):
    batch = model.tokenize_prompts(["a red circle", "two blue squares left of a green cross"])
    batch["pixels"] = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    return batch


def test_showo_keys_match_official_names(showo):
    keys = set(showo.state_dict())
    assert not [k for k in SHOWO_EXPECTED_KEYS if k not in keys]
    prefixes = ("showo.", "mm_projector.", "vq_model.encoder.", "vq_model.decoder.", "vq_model.quantize.", "clip.")
    assert all(k.startswith(prefixes) for k in keys)
    # encoder level i has vq_enc_blocks[i] blocks, decoder level i vq_dec_blocks[i] (no LDM +1)
    assert len(showo.vq_model.decoder.up[0].block) == showo.cfg.vq_dec_blocks[0]


def test_showo_real_shapes_on_meta():
    with torch.device("meta"):
        model = build_showo("512", tokenizer=tiny_tokenizer())
    sd = model.state_dict()
    for k, shape in SHOWO_REAL_SHAPES.items():
        assert tuple(sd[k].shape) == shape, k
    assert model.cfg.vocab_size == 58498 and model.mask_id == 58497
    # UniversalPrompting: [PAD] = 50295 first, then <|soi|> = 50296 ... <|lvg|> = 50304
    assert model.code_offset == 50305 and model.special_id("<|pad|>") == 50295
    assert model.special_id("<|soi|>") == 50296 and model.special_id("<|mmu|>") == 50301
    assert model.hint_grid_hw == (24, 24) and model.target_grid_hw == (32, 32)
    assert (model.cfg.guidance_scale, model.cfg.num_steps) == (5.0, 50)
    with torch.device("meta"):
        small = build_showo("256", tokenizer=tiny_tokenizer())
    assert small.target_grid_hw == (16, 16) and (small.cfg.guidance_scale, small.cfg.num_steps) == (1.75, 16)


def test_lfq_codes_round_trip(showo):
    q = showo.vq_model.quantize
    z = torch.randn(2, 6, 3, 3, generator=torch.Generator().manual_seed(0))
    codes = q.codes(z)
    assert codes.shape == (2, 9) and codes.max() < 64
    torch.testing.assert_close(q.lookup(codes, (3, 3)), torch.sign(z))
    # MSB first: channel 0 carries weight 32
    z1 = -torch.ones(1, 6, 1, 1)
    z1[0, 0] = 1
    assert q.codes(z1).item() == 32


def test_showo_embed_image_on_clip_grid(showo):
    vt = showo.embed_image(_showo_batch(showo)["pixels"])
    assert vt.grid_hw == (3, 3) and vt.z_image.shape == (2, 9, 64)


def test_showo_t2i_loss_backward_and_masking(showo):
    from segros.objectives import masked_token_nll

    batch = _showo_batch(showo)
    masked = _masked(n=16, k=10)
    hints = showo.embed_image(batch["pixels"]).z_image[:, :4]
    showo.zero_grad()
    loss = showo.t2i_loss(batch, _supervision(masked), hints)
    loss.backward()
    assert showo.mm_projector[0].weight.grad.abs().sum() > 0
    assert showo.showo.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in showo.vq_model.parameters())
    showo.zero_grad()
    # independent recomputation from the pieces: masked positions carry the mask id
    with torch.no_grad():
        codes = showo.image_codes(batch["pixels"]) + showo.code_offset
        ids = torch.where(masked, torch.full_like(codes, showo.mask_id), codes)
        logits = showo.logits_for(batch["input_ids"], batch["attention_mask"], ids, hints)
        ref = masked_token_nll(logits, codes, masked.float())
    torch.testing.assert_close(loss.detach(), ref)
    with pytest.raises(ValueError, match="supervision.masked"):
        showo.t2i_loss(batch, _supervision(_masked(n=9, k=3)), None)


def test_showo_hints_are_invisible_to_text_but_seen_by_image(showo):
    batch = _showo_batch(showo)
    ids = torch.full((2, 16), showo.mask_id)
    h1 = torch.randn(2, 3, 64, generator=torch.Generator().manual_seed(1))
    h2 = torch.randn(2, 3, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = showo.logits_for(batch["input_ids"], batch["attention_mask"], ids, h1)
        b = showo.logits_for(batch["input_ids"], batch["attention_mask"], ids, h2)
    assert (a - b).abs().max() > 1e-4  # image tokens attend to the hints (Fig. 6)


def test_showo_i2t_and_generate(showo):
    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    batch = showo.i2t_batch([img], ["what color is the circle"], ["red"])
    loss = showo.i2t_loss(batch)
    assert torch.isfinite(loss) and loss > 0
    a = showo.generate(["a red circle"], seed=0, num_steps=2, return_codes=True)
    b = showo.generate(["a red circle"], seed=0, num_steps=2, return_codes=True)
    c = showo.generate(["a red circle"], seed=3, num_steps=2, return_codes=True)
    assert a.shape == (1, 16) and torch.equal(a, b) and not torch.equal(a, c)
    assert int(a.min()) >= 0 and int(a.max()) < 64
    assert showo.generate(["a blue square"], seed=0, num_steps=2)[0].size == (64, 64)


def test_showo_tokenize_prompts_layout(showo):
    # UniversalPrompting.t2i_gen_prompt: [pad ...][t2i][bos] words [eos], LEFT-padded to 1 + max_text_len
    out = showo.tokenize_prompts(["a red circle", ""])
    ids, att = out["input_ids"], out["attention_mask"]
    length = 1 + showo.cfg.max_text_len
    assert ids.shape == (2, length)
    tok = showo.tokenizer
    words = tok.encode("a red circle", add_special_tokens=False)
    row = [showo.special_id("<|t2i|>"), tok.bos_token_id, *words, tok.eos_token_id]
    assert ids[0, -len(row):].tolist() == row and att[0].tolist() == [0] * (length - len(row)) + [1] * len(row)
    assert (ids[0, :length - len(row)] == showo.special_id("<|pad|>")).all()
    assert ids[0][out["text_valid"][0]].tolist() == words
    assert ids[1, -3:].tolist() == [showo.special_id("<|t2i|>"), tok.bos_token_id, tok.eos_token_id]
    assert att[1].sum() == 3 and not out["text_valid"][1].any()
    assert showo.prompt_words(ids, att) == [words, []]


def test_showo_hinted_layout_is_recas_and_fig6(showo):
    from segros.attention import segros_attention_mask
    from segros.backbones.showo import reca_attention_mask

    tok = showo.tokenizer
    words = tok.encode("a red circle", add_special_tokens=False)
    # t2i_clip_recon_prompt: [mmu][soi] | hints | [eoi][bos] words [eos][pad ...] (ids right-padded to max_text_len)
    ids, real = showo.hinted_text_block([words, []])
    sid = showo.special_id
    row = [sid("<|mmu|>"), sid("<|soi|>"), sid("<|eoi|>"), tok.bos_token_id, *words, tok.eos_token_id]
    assert ids.shape == (2, showo.cfg.max_text_len) and ids[0, :len(row)].tolist() == row
    assert (ids[0, len(row):] == sid("<|pad|>")).all() and real[0].sum() == len(row) and real[1].sum() == 5
    # the mask: Reca's create_attention_mask_for_mmu_vit_recon with H hints
    h, n = 3, 16
    batch = showo.tokenize_prompts(["a red circle", ""])
    hints = torch.zeros(2, h, showo.width)
    _, mask = showo.sequence(batch["input_ids"], batch["attention_mask"], torch.full((2, n), showo.mask_id), hints)
    allowed = mask[:, 0] == 0
    s = allowed.shape[-1]
    assert s == showo.cfg.max_text_len + h + n + 2
    codes = slice(s - 1 - n, s - 1)
    a0 = allowed[0]
    assert not a0[0, 1]  # [mmu] sees the hints, not [soi] (causal + hint columns)
    assert a0[:, 2:2 + h].all()  # every token sees every hint
    assert a0[codes, codes].all() and not a0[codes, s - 1].any()  # codes both ways, not the final [eoi]
    assert not a0[s - 2 - n, codes].any()  # the [soi] before the codes is causal
    pad_cols = ~torch.cat([real[0, :2], torch.ones(h, dtype=torch.bool), real[0, 2:], torch.ones(n + 2, dtype=torch.bool)])
    assert not allowed[0][:, pad_cols].any()
    # restricted to hints, words and codes it is Fig. 6 (segros_attention_mask)
    pos_words = [2 + h + 2 + i for i in range(len(words))]
    keep = list(range(2, 2 + h)) + pos_words + list(range(codes.start, codes.stop))
    fig6 = segros_attention_mask(h, torch.tensor([len(words)]), n, as_bool=True)[0, 0]
    assert torch.equal(a0[keep][:, keep], fig6)
    # the understanding form (no code block): causal + hint columns
    u = reca_attention_mask(torch.ones(1, 6, dtype=torch.bool), slice(1, 3), slice(0, 0), as_bool=True)[0, 0]
    assert u[0, 1:3].all() and not u[0, 3] and not u[3, 4] and u[4, 3]


def test_showo_magvit_takes_minus_one_to_one(showo):
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        codes = showo.image_codes(pixels)
        assert torch.equal(codes, showo.vq_model.get_code(pixels * 2 - 1))  # Show-o normalises with 0.5 / 0.5
        raw = showo.vq_model.decode_code(codes, showo.target_grid_hw)
        torch.testing.assert_close(showo.decode_codes(codes), ((raw + 1) / 2).clamp(0, 1))


def test_showo_hint_preprocess(showo):
    pixels = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reca = showo.embed_image(pixels).z_image
        torch.testing.assert_close(reca, showo.mm_projector(showo.clip_features(pixels, "reca")))
        assert (reca - showo.mm_projector(showo.clip_features(pixels, "clip"))).abs().max() > 1e-4
    with pytest.raises(ValueError, match="hint_preprocess"):
        build_showo("tiny", tokenizer=showo.tokenizer, hint_preprocess="imagenet")


def test_showo_generate_remasks_each_step(showo):
    # with the Gumbel confidence finite, a 4-step run re-masks and re-samples after the first step
    one = showo.generate(["a red circle"], seed=0, num_steps=1, return_codes=True)
    four = showo.generate(["a red circle"], seed=0, num_steps=4, return_codes=True)
    assert not torch.equal(one, four)
    again = showo.generate(["a red circle"], num_steps=4, return_codes=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(four, again)
    img = showo.generate(["a red circle"], seed=0, num_steps=2)[0]
    assert np.asarray(img).dtype == np.uint8


def test_showo_i2t_layout(showo, monkeypatch):
    from segros.backbones.showo import SYSTEM_PROMPT

    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    tok = showo.tokenizer
    seen = []
    monkeypatch.setattr(showo, "_words", lambda text: seen.append(text) or tok.encode(text, add_special_tokens=False))
    batch = showo.i2t_batch([img], ["what color"], ["red"])
    # "USER: q ASSISTANT: a<|endoftext|>" (phi1.5 template): the answer keeps its leading space
    assert seen == ["USER: what color ASSISTANT:", " red"]
    q = tok.encode("USER: what color ASSISTANT:", add_special_tokens=False)
    a = tok.encode(" red", add_special_tokens=False) + [tok.eos_token_id]
    assert batch["input_ids"][0].tolist() == q + a
    assert batch["labels"][0].tolist() == [-100] * len(q) + a
    # [mmu][system][soi] CLIP [eoi] conversation; causal, and every token sees every CLIP token
    embeds, mask, labels = showo.i2t_sequence(batch)
    n_sys, g = len(tok.encode(SYSTEM_PROMPT, add_special_tokens=False)), showo.hint_grid_hw[0] * showo.hint_grid_hw[1]
    clip = slice(2 + n_sys, 2 + n_sys + g)
    assert embeds.shape[1] == 2 + n_sys + g + 1 + len(q + a) == labels.shape[1]
    allowed = mask[0, 0] == 0
    assert allowed[:, clip].all() and not allowed[0, 1] and not allowed[clip.stop, clip.stop + 1]
    assert (labels[0, -len(a):] == torch.tensor(a)).all() and (labels[0, :-len(a)] == -100).all()


def test_showo_save_load_round_trip(showo, tmp_path):
    ckpt.save_showo(showo, str(tmp_path / "showo.bin"), str(tmp_path / "magvit.bin"))
    torch.manual_seed(7)
    other = build_showo("tiny").eval()
    other.clip.load_state_dict(showo.clip.state_dict())  # CLIP comes from from_pretrained in real use
    ckpt.load_showo(other, str(tmp_path / "showo.bin"), str(tmp_path / "magvit.bin"))
    for k, v in showo.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k
    sd = torch.load(tmp_path / "showo.bin", weights_only=True)
    sd.pop("mm_projector.2.bias")
    torch.save(sd, tmp_path / "bad.bin")
    with pytest.raises(ckpt.CheckpointMismatch, match="mm_projector.2.bias"):
        ckpt.load_showo(other, str(tmp_path / "bad.bin"))


# ==== OpenUni ==================================================================================

from segros.backbones.openuni import build_openuni  # noqa: E402

# read from wusize/OpenUni src/models/openuni/internvl3_sana_hf.py and src/models/connector/
OPENUNI_EXPECTED_KEYS = [
    "meta_queries", "projector.weight", "projector.bias",
    "connector.layers.0.layer_norm1.weight", "connector.layers.0.self_attn.q_proj.weight",
    "connector.layers.0.self_attn.k_proj.bias", "connector.layers.0.self_attn.v_proj.weight",
    "connector.layers.0.self_attn.out_proj.weight", "connector.layers.0.layer_norm2.bias",
    "connector.layers.0.mlp.fc1.weight", "connector.layers.0.mlp.fc2.bias",
]


@pytest.fixture(scope="module")
def openuni():
    torch.manual_seed(0)
    return build_openuni("tiny").eval()


def test_openuni_keys_and_real_shapes(openuni):
    keys = set(openuni.state_dict())
    assert not [k for k in OPENUNI_EXPECTED_KEYS if k not in keys]
    trained = {k for k, p in openuni.named_parameters() if p.requires_grad}
    # Table 7 freezes the MLLM only; Reca trains SANA (OpenUni/configs/finetune/reca_1_0.6.py)
    assert trained and all(k.startswith(("meta_queries", "connector.", "projector.", "transformer.")) for k in trained)
    assert any(k.startswith("transformer.") for k in trained)
    frozen = build_openuni("tiny", tokenizer=openuni.tokenizer, train_transformer=False)
    assert not any(k.startswith("transformer.") for k, p in frozen.named_parameters() if p.requires_grad)
    from segros.presets import get_preset
    from segros.train import freeze
    freeze(frozen, get_preset("paper-openuni-1.6b").frozen)  # Table 7 "MLLM" names a real module
    with torch.device("meta"):
        real = build_openuni("1.6b", tokenizer=tiny_tokenizer())
        large = build_openuni("3.6b", tokenizer=tiny_tokenizer())
    sd = real.state_dict()
    assert tuple(sd["meta_queries"].shape) == (256, 896)
    assert tuple(sd["projector.weight"].shape) == (2304, 896)
    assert len(real.connector.layers) == 6 and real.hint_grid_hw == (16, 16)
    # InternViT-300M: fused-qkv bias split into q/k/v biases, no q/k norm
    assert tuple(sd["lmm.vision_tower.encoder.layer.0.attention.q_proj.bias"].shape) == (1024,)
    assert "lmm.vision_tower.encoder.layer.0.attention.q_norm.weight" not in sd
    # configs/models/openuni_l_internvl3_2b_sana_1_6b_512_hf.py: connector 1536 wide, 8960, 24 heads
    lsd = large.state_dict()
    assert tuple(lsd["connector.layers.0.mlp.fc1.weight"].shape) == (8960, 1536)
    assert large.connector.layers[0].self_attn.num_heads == 24
    assert tuple(lsd["projector.weight"].shape) == (2304, 1536)


def test_openuni_t2i_loss_hints_and_switch(openuni, tok):
    batch = openuni.tokenize_prompts(["a red circle", "two blue squares"])
    batch["pixels"] = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    vt = openuni.embed_image(batch["pixels"])
    assert vt.grid_hw == (2, 2) and vt.z_image.shape == (2, 4, 64)
    openuni.zero_grad()
    loss = openuni.t2i_loss(batch, None, vt.z_image[:, :2], generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert openuni.meta_queries.grad.abs().sum() > 0 and openuni.projector.weight.grad.abs().sum() > 0
    openuni.zero_grad()
    with torch.no_grad():
        plain = openuni.t2i_loss(batch, None, None, generator=torch.Generator().manual_seed(0))
    assert abs(float(plain) - float(loss.detach())) > 1e-7
    weighted = build_openuni("tiny", tokenizer=openuni.tokenizer, weight_flow_loss=True)
    weighted.load_state_dict(openuni.state_dict())
    weighted.eval()
    sup = _supervision(torch.tensor([[True, False, False, False], [False, True, True, False]]), h=2)
    with torch.no_grad():
        a = weighted.t2i_loss(batch, sup, None, generator=torch.Generator().manual_seed(0))
        # all-ones weights equal the unweighted loss (same draws)
        ones = _supervision(torch.ones(2, 4, dtype=torch.bool), h=2)
        b = weighted.t2i_loss(batch, ones, None, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(b, plain)
    assert abs(float(a) - float(b)) > 1e-7
    with pytest.raises(NotImplementedError, match="I2T"):
        openuni.i2t_loss(batch)


def test_openuni_generate_and_checkpoint(openuni, tmp_path):
    a = openuni.generate(["a red circle"], seed=0, num_steps=2, return_latents=True)
    b = openuni.generate(["a red circle"], seed=0, num_steps=2, return_latents=True)
    assert a.shape == (1, 8, 2, 2) and torch.equal(a, b)
    assert openuni.generate(["a red circle"], seed=1, num_steps=1)[0].size == (64, 64)
    path = tmp_path / "openuni.pth"
    ckpt.save_openuni(openuni, str(path))
    torch.manual_seed(5)
    other = build_openuni("tiny", tokenizer=openuni.tokenizer)
    ckpt.load_openuni(other, str(path))
    assert torch.equal(other.meta_queries, openuni.meta_queries)
    assert torch.equal(other.connector.layers[0].mlp.fc1.weight, openuni.connector.layers[0].mlp.fc1.weight)
    sd = torch.load(path, weights_only=True)
    sd["connector.extra"] = torch.zeros(1)
    torch.save(sd, path)
    with pytest.raises(ckpt.CheckpointMismatch, match="connector.extra"):
        ckpt.load_openuni(other, str(path))


# ---- OpenUni: InternVL key conversion, loading, sampler, prompt, attention ----------------------

from dataclasses import replace as replace_cfg  # noqa: E402

from segros.backbones.openuni import SIZES as OPENUNI_SIZES  # noqa: E402
from segros.backbones.checkpoints import internvl_hf_to_remote, internvl_remote_to_hf, is_remote_internvl  # noqa: E402
from segros.backbones.openuni import HINT, QUERY, TEXT, OpenUni, load_internvl, openuni_attention_mask  # noqa: E402

OPENUNI_PROMPTS = ["a red circle", "two blue squares"]


@pytest.fixture(scope="module")
def openuni_rand():
    """A tiny OpenUni whose zero-initialised parts (cls token, position embeddings, ...) are perturbed."""
    torch.manual_seed(1)
    model = build_openuni("tiny").eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def _internvit_features(sd, pixels, heads, prefix="lmm."):
    """InternVL3's ``extract_feature`` on remote-code weights, written by hand from the official code
    (modeling_intern_vit.py: LayerNorm, fused qkv reshaped (B, N, 3, H, D), layer scale; modeling_internvl_chat.py:
    CLS dropped, pixel shuffle v2 at 0.5, mlp1 = LayerNorm, Linear, GELU, Linear), after get_semantic_features'
    ImageNet normalisation and bilinear resize. Independent of the adapter and of transformers' InternVL."""
    import torch.nn.functional as F
    p = prefix + "vision_model."
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    size = int((sd[p + "embeddings.position_embedding"].shape[1] - 1) ** 0.5) * 14
    x = F.interpolate((pixels - mean) / std, size=(size, size), mode="bilinear")
    e = F.conv2d(x, sd[p + "embeddings.patch_embedding.weight"], sd[p + "embeddings.patch_embedding.bias"], stride=14)
    e = e.flatten(2).transpose(1, 2)
    b, c = e.shape[0], e.shape[2]
    h = torch.cat([sd[p + "embeddings.class_embedding"].expand(b, 1, c), e], 1)
    h = h + sd[p + "embeddings.position_embedding"]
    n = h.shape[1]
    i = 0
    while f"{p}encoder.layers.{i}.ls1" in sd:
        q = f"{p}encoder.layers.{i}."
        y = F.layer_norm(h, (c,), sd[q + "norm1.weight"], sd[q + "norm1.bias"], 1e-6)
        qkv = F.linear(y, sd[q + "attn.qkv.weight"], sd[q + "attn.qkv.bias"])
        qkv = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        att = ((qkv[0] * (c // heads) ** -0.5) @ qkv[1].transpose(-2, -1)).softmax(-1)
        a = (att @ qkv[2]).transpose(1, 2).reshape(b, n, c)
        h = h + F.linear(a, sd[q + "attn.proj.weight"], sd[q + "attn.proj.bias"]) * sd[q + "ls1"]
        y = F.layer_norm(h, (c,), sd[q + "norm2.weight"], sd[q + "norm2.bias"], 1e-6)
        y = F.linear(F.gelu(F.linear(y, sd[q + "mlp.fc1.weight"], sd[q + "mlp.fc1.bias"])),
                     sd[q + "mlp.fc2.weight"], sd[q + "mlp.fc2.bias"])
        h = h + y * sd[q + "ls2"]
        i += 1
    g = int((n - 1) ** 0.5)
    v = h[:, 1:].reshape(b, g, g, c)  # (n, w, h, c) in pixel_shuffle's names
    v = v.reshape(b, g, g // 2, 2 * c).permute(0, 2, 1, 3).reshape(b, g // 2, g // 2, 4 * c).permute(0, 2, 1, 3)
    v = v.reshape(b, -1, 4 * c)
    v = F.layer_norm(v, (4 * c,), sd[prefix + "mlp1.0.weight"], sd[prefix + "mlp1.0.bias"])
    v = F.linear(F.gelu(F.linear(v, sd[prefix + "mlp1.1.weight"], sd[prefix + "mlp1.1.bias"])),
                 sd[prefix + "mlp1.3.weight"], sd[prefix + "mlp1.3.bias"])
    return v


def _tiny_remote_config(model) -> dict:
    """OpenGVLab/InternVL3-1B's config.json layout at the tiny sizes (configuration_internvl_chat.py)."""
    c = model.cfg
    return {"model_type": "internvl_chat", "architectures": ["InternVLChatModel"], "select_layer": -1,
            "force_image_size": c.vit_input_size, "downsample_ratio": 0.5, "ps_version": "v2",
            "template": "internvl2_5",
            "vision_config": {"architectures": ["InternVisionModel"], "hidden_size": c.vit_hidden,
                              "intermediate_size": c.vit_intermediate, "num_hidden_layers": c.vit_layers,
                              "num_attention_heads": c.vit_heads, "image_size": c.vit_input_size, "patch_size": 14,
                              "qkv_bias": True, "qk_normalization": False, "norm_type": "layer_norm",
                              "layer_norm_eps": 1e-6, "hidden_act": "gelu"},
            "llm_config": {"architectures": ["Qwen2ForCausalLM"], "vocab_size": len(model.tokenizer),
                           "hidden_size": c.llm_hidden, "intermediate_size": c.llm_intermediate,
                           "num_hidden_layers": c.llm_layers, "num_attention_heads": c.llm_heads,
                           "num_key_value_heads": c.llm_kv_heads, "rope_theta": c.rope_theta, "rms_norm_eps": 1e-6,
                           "tie_word_embeddings": False, "max_position_embeddings": 32768}}


def test_openuni_internvl_key_conversion(openuni_rand):
    model = openuni_rand
    hf = {k: v for k, v in model.state_dict().items() if k.startswith("lmm.")}
    remote = internvl_hf_to_remote(hf, "lmm.")
    # the names of the official InternVLChatModel (modeling_intern_vit.py, modeling_internvl_chat.py)
    for key in ["lmm.vision_model.embeddings.class_embedding", "lmm.vision_model.embeddings.position_embedding",
                "lmm.vision_model.embeddings.patch_embedding.weight",
                "lmm.vision_model.encoder.layers.0.attn.qkv.weight",
                "lmm.vision_model.encoder.layers.0.attn.qkv.bias", "lmm.vision_model.encoder.layers.0.attn.proj.weight",
                "lmm.vision_model.encoder.layers.0.norm1.weight", "lmm.vision_model.encoder.layers.0.norm2.bias",
                "lmm.vision_model.encoder.layers.0.ls1", "lmm.vision_model.encoder.layers.0.ls2",
                "lmm.vision_model.encoder.layers.0.mlp.fc1.weight", "lmm.mlp1.0.weight", "lmm.mlp1.1.weight",
                "lmm.mlp1.3.bias", "lmm.language_model.model.embed_tokens.weight",
                "lmm.language_model.model.layers.0.self_attn.q_proj.weight", "lmm.language_model.model.norm.weight"]:
        assert key in remote, key
    assert not [k for k in remote if k.startswith(("lmm.vision_tower", "lmm.multi_modal_projector"))]
    assert tuple(remote["lmm.vision_model.encoder.layers.0.attn.qkv.weight"].shape) == (3 * 32, 32)
    assert is_remote_internvl(remote, "lmm.") and not is_remote_internvl(hf, "lmm.")
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ours = model.embed_image(pixels).z_image
    torch.testing.assert_close(ours, _internvit_features(remote, pixels, model.cfg.vit_heads), atol=1e-5, rtol=1e-5)
    # remote -> hf: the official LM head is dropped, everything else comes back exactly
    back = internvl_remote_to_hf({**remote, "lmm.language_model.lm_head.weight": torch.zeros(3)}, "lmm.")
    assert set(back) == set(hf) and all(torch.equal(back[k], hf[k]) for k in hf)
    torch.manual_seed(3)
    other = build_openuni("tiny", tokenizer=model.tokenizer).eval()
    ckpt.load_into(other.lmm, {k[len("lmm."):]: v for k, v in back.items()})  # raises on any missing / unexpected key
    assert torch.equal(other.embed_image(pixels).z_image, ours)


def test_openuni_loads_a_remote_code_internvl_folder(openuni_rand, tmp_path):
    import json

    from safetensors.torch import save_file
    model = openuni_rand
    remote = internvl_hf_to_remote(model.lmm.state_dict())
    remote["language_model.lm_head.weight"] = torch.randn(len(model.tokenizer), model.cfg.llm_hidden)
    save_file({k: v.contiguous() for k, v in remote.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(_tiny_remote_config(model)))
    lmm = load_internvl(str(tmp_path), model.tokenizer, attn_implementation="eager")
    loaded = OpenUni(model.cfg, model.tokenizer, lmm).eval()
    ckpt.load_into(loaded, {k: v for k, v in model.state_dict().items() if not k.startswith("lmm.")},
                   ignore_missing=("lmm.",))
    pixels = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded.embed_image(pixels).z_image, model.embed_image(pixels).z_image)
    tok = model.tokenize_prompts(OPENUNI_PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(loaded.conditions(tok["input_ids"], tok["attention_mask"]),
                                   model.conditions(tok["input_ids"], tok["attention_mask"]))
    remote.pop("vision_model.encoder.layers.0.attn.qkv.bias")
    save_file({k: v.contiguous() for k, v in remote.items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ckpt.CheckpointMismatch, match="vision_tower.encoder.layer.0.attention.v_proj.bias"):
        load_internvl(str(tmp_path), model.tokenizer)


def test_openuni_full_checkpoint_converts_and_lists_keys(openuni_rand, tmp_path):
    model = openuni_rand
    sd = internvl_hf_to_remote(model.state_dict(), "lmm.")  # a full official state dict: lmm.* in remote names
    sd["lmm.language_model.lm_head.weight"] = torch.zeros(len(model.tokenizer), model.cfg.llm_hidden)
    torch.save(sd, tmp_path / "full.pth")
    torch.manual_seed(9)
    other = build_openuni("tiny", tokenizer=model.tokenizer).eval()
    ckpt.load_openuni(other, str(tmp_path / "full.pth"))
    own = other.state_dict()
    assert all(torch.equal(own[k], v) for k, v in model.state_dict().items())
    bad = dict(sd)
    bad.pop("lmm.vision_model.encoder.layers.0.attn.qkv.bias")
    bad.pop("transformer.proj_out.weight")
    bad["lmm.vision_model.extra"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ckpt.CheckpointMismatch) as err:
        ckpt.load_openuni(other, str(tmp_path / "bad.pth"))
    msg = str(err.value)
    for key in ("lmm.vision_tower.encoder.layer.0.attention.q_proj.bias", "transformer.proj_out.weight",
                "lmm.vision_model.extra"):
        assert key in msg, key


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers' scheduler under numpy 2
def test_openuni_dpm_sampler_is_sanas(openuni_rand):
    from diffusers import SanaPipeline
    model = openuni_rand
    a = model.generate(OPENUNI_PROMPTS, seed=3, num_steps=4, return_latents=True)
    b = model.generate(OPENUNI_PROMPTS, seed=3, num_steps=4, return_latents=True)
    assert a.shape == (2, 8, 2, 2) and torch.equal(a, b)
    euler = model.generate(OPENUNI_PROMPTS, seed=3, num_steps=4, return_latents=True, sampler="euler")
    assert (euler - a).abs().max() > 1e-3
    s = model.make_scheduler().config  # SANA's scheduler (diffusers scripts/convert_sana_to_diffusers.py)
    assert (s.algorithm_type, s.solver_order, s.solver_type, s.prediction_type) == (
        "dpmsolver++", 2, "midpoint", "flow_prediction")
    assert s.use_flow_sigmas and s.flow_shift == 3.0 and s.final_sigmas_type == "zero"
    # scripts/text2image.py defaults: cfg 4.5, 20 steps
    assert (OPENUNI_SIZES["1.6b"].cfg, OPENUNI_SIZES["1.6b"].num_steps) == (4.5, 20)
    # OpenUni's generate() hands the conditions to diffusers' SanaPipeline: same latents
    tok = model.tokenize_prompts(OPENUNI_PROMPTS + [""] * 2)
    with torch.no_grad():
        cond = model.conditions(tok["input_ids"], tok["attention_mask"])
        ones = torch.ones(2, cond.shape[1], dtype=torch.bool)
        pipe = SanaPipeline(tokenizer=None, text_encoder=None, vae=model.vae, transformer=model.transformer,
                            scheduler=model.make_scheduler())
        pipe.set_progress_bar_config(disable=True)
        ref = pipe(negative_prompt=None, prompt_embeds=cond[:2], prompt_attention_mask=ones,
                   negative_prompt_embeds=cond[2:], negative_prompt_attention_mask=ones, num_inference_steps=4,
                   guidance_scale=4.5, generator=torch.Generator().manual_seed(3), height=64, width=64,
                   output_type="latent", use_resolution_binning=False, complex_human_instruction=None).images
    torch.testing.assert_close(a, ref)
    images = model.generate(OPENUNI_PROMPTS, seed=3, num_steps=4)  # saved as in scripts/text2image.py
    expected = torch.clamp(127.5 * model.decode(a) + 128.0, 0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert all(np.array_equal(np.asarray(im), e) for im, e in zip(images, expected))


def test_openuni_prompt_is_encoded_in_one_piece():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent / "parity"))
    import openuni_tokenizer
    tok = openuni_tokenizer.build(openuni_tokenizer.train_spec())
    model = build_openuni("tiny", tokenizer=tok)
    out = model.tokenize_prompts(["a red circle", "  two blue squares ", ""])
    template = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n<img>"
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    for i, (text, prompt) in enumerate([("a red circle", "Generate an image: a red circle"),
                                        ("two blue squares", "Generate an image: two blue squares"),
                                        ("", "Generate an image.")]):
        full = enc(template.format(prompt))
        n = int(out["attention_mask"][i].sum())
        assert out["input_ids"][i, :n].tolist() == full
        assert tok.decode(out["input_ids"][i][out["text_valid"][i]]) == (" " + text if text else "")
    # encoding the pieces separately would split ": a" into ":", " " and "a"
    pieces = enc(template.split("{}")[0] + "Generate an image: ") + enc("a red circle") + enc(template.split("{}")[1])
    assert pieces != enc(template.format("Generate an image: a red circle"))


def test_openuni_default_attention_is_the_official_one_without_hints():
    # frozen MLLM (Table 7): by default the queries keep OpenUni's causal rule, so a released
    # checkpoint run without hints attends exactly as the official model does
    assert build_openuni("tiny").cfg.image_attention == "native"
    seg = torch.tensor([TEXT] * 3 + [QUERY] * 3)
    real = torch.ones(1, 6, dtype=torch.bool)
    assert torch.equal(openuni_attention_mask(seg, real)[0, 0], torch.ones(6, 6, dtype=torch.bool).tril())


def test_openuni_image_attention_acts_with_hints_only(openuni_rand):
    """``image_attention="fig6"`` changes the hinted conditions only; without hints (generation, SFT) the
    queries keep the official causal attention, as Harmon's paths without hints do."""
    model = openuni_rand
    fig6 = OpenUni(replace_cfg(model.cfg, image_attention="fig6"), model.tokenizer, model.lmm)
    fig6.load_state_dict(model.state_dict())
    fig6.eval()
    tok = model.tokenize_prompts(OPENUNI_PROMPTS)
    hints = torch.randn(2, 3, model.width, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(fig6.conditions(tok["input_ids"], tok["attention_mask"]),
                           model.conditions(tok["input_ids"], tok["attention_mask"]))
        with_hints = (fig6.conditions(tok["input_ids"], tok["attention_mask"], hints)
                      - model.conditions(tok["input_ids"], tok["attention_mask"], hints))
    assert with_hints.abs().max() > 1e-6


def test_openuni_attention_and_hint_layouts(openuni_rand):
    from segros.attention import segros_attention_mask
    att = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]).bool()
    seg = torch.tensor([HINT] * 2 + [TEXT] * 4 + [QUERY] * 3)
    real = torch.cat([torch.ones(2, 2, dtype=torch.bool), att, torch.ones(2, 3, dtype=torch.bool)], 1)
    assert torch.equal(openuni_attention_mask(seg, real, "fig6"), segros_attention_mask(2, att, 3, as_bool=True))
    native = openuni_attention_mask(seg[2:], real[:, 2:], "native")[:, 0]
    causal = torch.ones(7, 7, dtype=torch.bool).tril()
    rows = real[:, 2:]
    for i in range(2):  # real rows: the official causal mask over real keys
        assert torch.equal(native[i][rows[i]], (causal & rows[i][None])[rows[i]])
    # "reca": <|im_start|>user\n <img> [hints] </img>\n Generate an image: ...
    model = openuni_rand
    tok = model.tokenize_prompts(OPENUNI_PROMPTS)
    hints = torch.randn(2, 3, model.width)
    embeds, seg, real = model._sequence(tok["input_ids"], tok["attention_mask"], hints)
    pre = model._encode("<|im_start|>user\n")
    opening, closing = model._encode("<img>"), model._encode("</img>\n")
    text = model.embed_text(tok["input_ids"])
    p, o = len(pre), len(opening)
    assert embeds.shape[1] == tok["input_ids"].shape[1] + o + 3 + len(closing)
    assert torch.equal(embeds[:, p + o:p + o + 3], hints) and torch.equal(embeds[:, :p], text[:, :p])
    assert torch.equal(embeds[:, p + o + 3 + len(closing):], text[:, p:])
    assert (seg == HINT).nonzero().flatten().tolist() == [p + o, p + o + 1, p + o + 2]
    with torch.no_grad():
        reca = model.conditions(tok["input_ids"], tok["attention_mask"], hints)
        model_prepend = OpenUni(replace_cfg(model.cfg, hint_layout="prepend"), model.tokenizer, model.lmm)
        model_prepend.load_state_dict(model.state_dict())
        prepend = model_prepend.eval().conditions(tok["input_ids"], tok["attention_mask"], hints)
    assert (reca - prepend).abs().max() > 1e-4


def test_flow_matching_on_the_official_sigma_grid():
    from segros.objectives import flow_matching_mse
    seen = []
    flow_matching_mse(lambda x, t, c: (seen.append(t), x)[1], torch.zeros(4, 3, 2), None,
                      generator=torch.Generator().manual_seed(5), num_train_timesteps=1000)
    u = torch.rand(4, generator=torch.Generator().manual_seed(5))
    # FlowMatchEulerDiscreteScheduler (shift 1): sigmas[i] = (1000 - i) / 1000, i = floor(1000 u)
    assert torch.equal(seen[0], (1000 - (u * 1000).long()).float() / 1000)


def test_openuni_loads_sana_and_dcae_folders_before_the_checkpoint(openuni_rand, tmp_path):
    model = openuni_rand
    torch.manual_seed(4)
    base = build_openuni("tiny", tokenizer=model.tokenizer).eval()  # "base SANA / DC-AE" folders
    base.transformer.save_pretrained(str(tmp_path / "sana" / "transformer"))
    sched = base.make_scheduler()
    sched.register_to_config(flow_shift=2.0)
    sched.save_pretrained(str(tmp_path / "sana" / "scheduler"))
    base.vae.save_pretrained(str(tmp_path / "dcae"))
    ckpt.save_openuni(model, str(tmp_path / "trained.pth"))  # meta_queries, connector, projector, transformer
    torch.manual_seed(6)
    other = build_openuni("tiny", tokenizer=model.tokenizer).eval()
    ckpt.load_openuni(other, str(tmp_path / "trained.pth"), sana_path=str(tmp_path / "sana"),
                      dcae_path=str(tmp_path / "dcae"))
    own = other.state_dict()
    # the checkpoint's fine-tuned SANA wins over the folder's; the DC-AE comes from its folder
    assert all(torch.equal(own[k], v) for k, v in model.state_dict().items() if not k.startswith(("lmm.", "vae.")))
    assert all(torch.equal(own[k], v) for k, v in base.state_dict().items() if k.startswith("vae."))
    assert other.make_scheduler().config.flow_shift == 2.0
    assert all(p.requires_grad for p in other.transformer.parameters())


# ---- Reca's caption-free reconstruction prompts (Table 9 "Text ×"; segros.train.without_text) -------
# Our own stand-in instructions (Reca's list is its prose and is not copied here): the adapters read
# any get_recon_prompt_list() consts.py or a text file with one instruction per line.

RECON = ["a red circle", "two blue squares", "the green cross", "a yellow star left of a circle"]


def _recon_files(tmp_path):
    consts = tmp_path / "consts.py"
    consts.write_text("def get_recon_prompt_list():\n    return " + repr(RECON) + "\n")
    txt = tmp_path / "recon.txt"
    txt.write_text("\n".join(RECON) + "\n\n")
    return str(consts), str(txt)


def _qwen_like_tokenizer(extra=(), eos_token=None):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent / "parity"))
    import openuni_tokenizer
    return openuni_tokenizer.build(openuni_tokenizer.train_spec(extra=tuple(extra)), eos_token=eos_token)


def test_read_recon_prompts_from_recas_consts_or_a_text_file(tmp_path):
    from segros.backbones.inputs import read_recon_prompts
    consts, txt = _recon_files(tmp_path)
    assert read_recon_prompts(consts) == RECON and read_recon_prompts(txt) == RECON
    (tmp_path / "other.py").write_text("X = 1\n")
    for bad in (str(tmp_path / "missing.txt"), str(tmp_path / "other.py")):
        with pytest.raises(ValueError):
            read_recon_prompts(bad)


def test_harmon_recon_prompt_ids_are_recas(tmp_path):
    # Reca ReconstructionDataset._process_text: choice, then uniform; "\n{instruction}" in the chat
    # template, encoded in one piece: Qwen's pre-tokenizer keeps "user\n" + "\n" as one "\n\n" token
    consts, _ = _recon_files(tmp_path)
    tok = _qwen_like_tokenizer(["user\n\n" + t for t in RECON])
    sid, enc = tok.convert_tokens_to_ids, (lambda s: tok.encode(s, add_special_tokens=False))
    tail = [sid("<|im_end|>"), sid("Ċ"), sid("<|im_start|>"), sid("assistant"), sid("Ċ")]
    for prob, newline, text in ((0.0, "ĊĊ", None), (1.0, "Ċ", "Generate an image.")):
        m = build_harmon("tiny", tokenizer=tok, recon_prompts=consts, text_free_prob=prob)
        out = m.tokenize_recon_prompts(6, torch.Generator().manual_seed(3))
        replay = torch.Generator().manual_seed(3)
        for i in range(6):
            k = int(torch.randint(len(RECON), (1,), generator=replay))
            torch.rand((), generator=replay)
            expected = [sid("<|im_start|>"), sid("user"), sid(newline), *enc(text or RECON[k]), *tail]
            n = int(out["attention_mask"][i].sum())
            assert out["input_ids"][i, :n].tolist() == expected, (prob, i)
        assert not out["text_valid"].any()


def test_showo_recon_prompt_ids_are_recas(tmp_path, showo):
    # Reca train_recon_w_clip_vit.py: f"USER: \n { random.choice(recon_prompt_list) } ASSISTANT:"
    # through t2i_clip_recon_prompt: [mmu][soi] | hints | [eoi][bos] words [eos][pad ...]
    consts, _ = _recon_files(tmp_path)
    m = build_showo("tiny", tokenizer=showo.tokenizer, recon_prompts=consts)
    tok, sid = m.tokenizer, m.special_id
    assert m.recon_texts(1, random.Random(7)) == ["USER: \n " + random.Random(7).choice(RECON) + " ASSISTANT:"]
    out = m.tokenize_recon_prompts(5, random.Random(7))
    replay = random.Random(7)
    words = m.prompt_words(out["input_ids"], out["attention_mask"])
    ids, _ = m.hinted_text_block(words)
    for i in range(5):
        w = ["user", ":", *replay.choice(RECON).split(), "assistant", ":"]
        expected = [tok.convert_tokens_to_ids(x) for x in w]
        assert words[i] == expected
        row = [sid("<|mmu|>"), sid("<|soi|>"), sid("<|eoi|>"), tok.bos_token_id, *expected, tok.eos_token_id]
        assert ids[i, :len(row)].tolist() == row and (ids[i, len(row):] == sid("<|pad|>")).all()
    assert not out["text_valid"].any()


def test_openuni_recon_prompt_ids_are_recas(tmp_path):
    # Reca MidjourneyReconstructionDataset + ImageEditDataset._process_text: no "Generate an image:";
    # with hint_layout="reca" the LLM input is Reca's string encoded in one piece
    consts, _ = _recon_files(tmp_path)
    tok = _qwen_like_tokenizer()
    sid, enc = tok.convert_tokens_to_ids, (lambda s: tok.encode(s, add_special_tokens=False))
    m = build_openuni("tiny", tokenizer=tok, recon_prompts=consts).eval()
    out = m.tokenize_recon_prompts(3, torch.Generator().manual_seed(1))
    replay = torch.Generator().manual_seed(1)
    h = 3
    ctx = m.embed_text(torch.tensor([[sid("<IMG_CONTEXT>")]])).expand(3, h, -1)
    embeds, _, real = m._sequence(out["input_ids"], out["attention_mask"], ctx)
    for i in range(3):
        instruction = RECON[int(torch.randint(len(RECON), (1,), generator=replay))]
        expected = [sid("<|im_start|>"), sid("user"), sid("Ċ"), *enc(instruction), sid("<|im_end|>"), sid("Ċ"),
                    sid("<|im_start|>"), sid("assistant"), sid("Ċ"), sid("<img>")]
        n = int(out["attention_mask"][i].sum())
        assert out["input_ids"][i, :n].tolist() == expected
        reca = enc("<|im_start|>user\n<img>" + "<IMG_CONTEXT>" * h + "</img>\n" + instruction
                   + "<|im_end|>\n<|im_start|>assistant\n<img>")
        assert torch.equal(embeds[i][real[i]], m.embed_text(torch.tensor([reca]))[0])
    assert not out["text_valid"].any()


def test_recon_prompt_choice_is_seeded(tmp_path, tok, showo):
    consts, txt = _recon_files(tmp_path)
    for m in (build_harmon("tiny", tokenizer=tok, recon_prompts=txt, text_free_prob=0.3),
              build_showo("tiny", tokenizer=showo.tokenizer, recon_prompts=consts)):
        for make in (lambda s: torch.Generator().manual_seed(s), random.Random):
            a, b, c = (m.tokenize_recon_prompts(8, make(s))["input_ids"] for s in (0, 0, 1))
            assert torch.equal(a, b) and not torch.equal(a, c)


def test_without_text_uses_recon_prompts_only_when_configured(tmp_path, harmon, tok):
    from segros.train import without_text
    consts, _ = _recon_files(tmp_path)
    batch = _batch(harmon)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    # no recon_prompts: the empty prompt, as before, and the generator is not touched
    out = without_text(harmon, batch, g)
    empty = harmon.tokenize_prompts(["", ""])
    assert all(torch.equal(out[k], empty[k]) for k in empty) and out["pixels"] is batch["pixels"]
    assert torch.equal(g.get_state(), state)
    with pytest.raises(ValueError, match="recon_prompts"):
        harmon.tokenize_recon_prompts(2, g)
    # configured: Reca's instruction, drawn from the given generator
    m = build_harmon("tiny", tokenizer=tok, recon_prompts=consts)
    out = without_text(m, batch, g)
    ref = m.tokenize_recon_prompts(2, torch.Generator().set_state(state))
    assert all(torch.equal(out[k], ref[k]) for k in ref) and not torch.equal(g.get_state(), state)
    assert not out["text_valid"].any()


@pytest.mark.parametrize("method", ["reca", "reca_hint_filter"])
def test_reca_baselines_condition_on_the_instruction_and_ground_with_the_caption(tmp_path, tok, monkeypatch,
                                                                                  method):
    from segros.train import steps as T
    from segros.presets import TrainConfig
    path = tmp_path / "one.txt"
    path.write_text("a red circle left of a blue square\n")
    torch.manual_seed(0)
    m = build_harmon("tiny", tokenizer=tok, recon_prompts=str(path), text_free_prob=0.0).eval()
    batch = _batch(m)
    seen = {}
    ground = T.ground

    def spy_ground(z_text, z_image, text_valid, **kw):
        seen["z_text"], seen["text_valid"] = z_text, text_valid
        return ground(z_text, z_image, text_valid, **kw)

    loss = m.t2i_loss

    def spy_loss(b, sup, hints, **kw):
        seen["batch"] = b
        return loss(b, sup, hints, **kw)

    monkeypatch.setattr(T, "ground", spy_ground)
    monkeypatch.setattr(m, "t2i_loss", spy_loss)
    T.t2i_step(m, batch, TrainConfig(method=method), torch.Generator().manual_seed(1))
    conditioned = seen["batch"]
    assert torch.equal(conditioned["input_ids"], m.tokenize_recon_prompts(2)["input_ids"])
    assert not conditioned["text_valid"].any() and conditioned["pixels"] is batch["pixels"]
    if method == "reca":
        assert "text_valid" not in seen  # Reca's hints are every token: nothing is grounded
        return
    # the grounding map of the hint filter comes from the caption, not from the instruction
    # (its content words: the function words of segros.vocab.STOPWORDS are left out, word by word)
    caption_words = T.grounding_valid(m, batch, TrainConfig(method=method))
    assert seen["text_valid"].any() and torch.equal(seen["text_valid"], caption_words)
    assert not (seen["text_valid"] & ~batch["text_valid"].bool()).any()
    with torch.no_grad():
        assert torch.equal(seen["z_text"], m.embed_text(batch["input_ids"]).float())


def test_showo_cond_dropout_on_the_native_training_path_only(showo):
    from segros.backbones.showo import SIZES as SHOWO_SIZES
    # official Show-o configs (and Reca's): training.cond_dropout_prob 0.1
    assert SHOWO_SIZES["256"].cond_dropout_prob == SHOWO_SIZES["512"].cond_dropout_prob == 0.1
    always = build_showo("tiny", tokenizer=showo.tokenizer, cond_dropout_prob=1.0)
    always.load_state_dict(showo.state_dict())
    batch = _showo_batch(showo)
    sup = _supervision(_masked(n=16, k=10))
    hints = showo.embed_image(batch["pixels"]).z_image[:, :4]
    uncond = {**batch, **showo.tokenize_prompts(["", ""])}
    with torch.no_grad():
        plain, dropped = showo.t2i_loss(batch, sup, None), showo.t2i_loss(uncond, sup, None)
        hinted = showo.t2i_loss(batch, sup, hints)
        assert (plain - dropped).abs() > 1e-6
        torch.testing.assert_close(always.train().t2i_loss(batch, sup, None), dropped)  # t2i_prompt's [t2i][bos][eos]
        torch.testing.assert_close(always.t2i_loss(batch, sup, hints), hinted)  # hinted paths never drop
        torch.testing.assert_close(always.eval().t2i_loss(batch, sup, None), plain)  # not at evaluation
    # which rows: torch.rand(B) < cond_dropout_prob, as UniversalPrompting.t2i_prompt
    half = build_showo("tiny", tokenizer=showo.tokenizer, cond_dropout_prob=0.5)
    text = half.tokenize_prompts(["a red circle"] * 16)
    ids, att = half.drop_conditions(text["input_ids"], text["attention_mask"], torch.Generator().manual_seed(2))
    drop = torch.rand(16, generator=torch.Generator().manual_seed(2)) < 0.5
    empty = half.tokenize_prompts([""])
    assert 0 < int(drop.sum()) < 16
    for i in range(16):
        src = empty if drop[i] else {k: v[i:i + 1] for k, v in text.items()}
        assert torch.equal(ids[i], src["input_ids"][0]) and torch.equal(att[i], src["attention_mask"][0])
