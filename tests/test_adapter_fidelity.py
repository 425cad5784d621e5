"""The real adapters by default do what the official code (or Reca's, for the Reca rows) does.

- Every Harmon path without hints (generation, the SFT step, the "w/o SFT" base) runs the LLM as the
  official ``Harmon.prepare_forward_input`` + ``forward_mae_encoder`` do (wusize/Harmon
  ``src/models/harmon.py``): causal, a 2-D padding mask, position ids ``cumsum − 1``; whatever
  ``image_attention`` says, which acts on hinted training only (the Fig. 6 mask by default).
- Harmon's VAE latents are the posterior mode (``Harmon.encode``), a draw only with ``vae_latents="sample"``.
- Harmon's diffusion head has no weight decay (Reca's ``add_weight_decay``: ``'diffloss' in name``).
- ``method="reca"`` on a real family gets Reca's adapter settings (``segros.backbones.methods``) and
  stops without Reca's instruction list.

The official computation is written here from a reading of the official code, independently of the
module under test; the cross-code check against the official code itself is ``tests/parity/``.
"""

from __future__ import annotations

import pytest
import torch

from segros.backbones import registry
from segros.backbones.harmon import build_harmon
from segros.backbones.methods import (RECA_ADAPTER_DEFAULTS, MissingReconPrompts, family_of, method_backbone_kwargs,
                                      method_defaults)
from segros.data.tokenizer import tiny_tokenizer
from segros.presets import get_preset
from segros.train.loop import make_optimizer


@pytest.fixture(scope="module")
def harmon():
    torch.manual_seed(0)
    model = build_harmon("tiny", tokenizer=tiny_tokenizer())
    with torch.no_grad():  # the official init zeroes the diffusion head's output; perturb it
        for p in model.mar.diffloss.net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return model.eval()


def _variant(harmon, **overrides):
    m = build_harmon("tiny", tokenizer=harmon.tokenizer, **overrides)
    m.load_state_dict(harmon.state_dict())
    return m.eval()


def _inputs(model, seed=0):
    """Right-padded prompts of two lengths, pixels, and a mask with 11 of 16 tokens masked per row."""
    g = torch.Generator().manual_seed(seed)
    tok = model.tokenize_prompts(["a red circle", "two blue squares left of a green cross"])
    assert not tok["attention_mask"][0].all()  # row 0 is padded
    pixels = torch.rand(2, 3, 64, 64, generator=g)
    mask = torch.zeros(2, 16)
    for i in range(2):
        mask[i, torch.randperm(16, generator=g)[:11]] = 1
    return tok, pixels, mask


def official_forward_mae_encoder(model, latents, mask, hw, input_ids, attention_mask):
    """wusize/Harmon ``Harmon.forward_mae_encoder`` with ``prepare_forward_input`` (no cache), written out."""
    b = latents.shape[0]
    x_enc = model.mar.forward_mae_encoder(latents, mask, model.mar.fake_latent.expand(b, -1), hw)
    z_enc = model.proj_in(x_enc)
    nb = model.cfg.buffer_size
    z_enc = torch.cat([z_enc[:, nb:], z_enc[:, :nb]], dim=1)
    n_img = z_enc.shape[1]  # the MAR encoder drops masked tokens
    att = attention_mask.to(dtype=torch.bool)
    att = torch.cat([att, att.new_ones(b, n_img)], dim=1)
    pos = torch.cumsum(att, dim=1) - 1
    pos[pos < 0] = 0
    embeds = torch.cat([model.llm.get_input_embeddings()(input_ids), z_enc], dim=1)
    out = model.llm.model(inputs_embeds=embeds, attention_mask=att, position_ids=pos, return_dict=True)
    z_llm = out.last_hidden_state[:, -n_img:]
    z_llm = torch.cat([z_llm[:, -nb:], z_llm[:, :-nb]], dim=1)
    return x_enc + model.proj_out(z_llm)


# ---- item: Harmon's attention without hints is the official one, bit for bit ---------------------

@pytest.mark.parametrize("image_attention", ["default", "fig6", "native"])
def test_harmon_without_hints_is_the_official_attention(harmon, image_attention):
    model = harmon if image_attention == "default" else _variant(harmon, image_attention=image_attention)
    tok, pixels, mask = _inputs(model)
    with torch.no_grad():
        lat, hw = model.encode(pixels)
        ours = model.forward_mae_encoder(lat, mask, hw, model.embed_text(tok["input_ids"]), tok["attention_mask"])
        ref = official_forward_mae_encoder(model, lat, mask, hw, tok["input_ids"], tok["attention_mask"])
    assert torch.equal(ours, ref)


def test_harmon_generate_and_sft_step_use_the_official_attention(harmon):
    """The LLM call of ``generate`` and of a no-hint ``t2i_loss`` (SFT, the base) gets the official 2-D
    padding mask, never a 4-D one; so generation with either ``image_attention`` is the same image."""
    seen = []
    handle = harmon.llm.model.register_forward_hook(
        lambda mod, args, kwargs, out: seen.append(kwargs["attention_mask"]), with_kwargs=True)
    try:
        with torch.no_grad():
            lat = harmon.generate(["a red circle", "two blue squares"], seed=3, return_latents=True)
            tok, pixels, mask = _inputs(harmon)
            sup = _supervision(mask.bool())
            harmon.t2i_loss({**tok, "pixels": pixels}, sup, None, generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert seen and all(m.ndim == 2 and m.dtype == torch.bool for m in seen)
    native = _variant(harmon, image_attention="native")
    with torch.no_grad():
        assert torch.equal(native.generate(["a red circle", "two blue squares"], seed=3, return_latents=True), lat)


def _supervision(masked):
    from segros.supervision import Supervision
    b = masked.shape[0]
    return Supervision(hint_idx=torch.arange(4).expand(b, 4).clone(), seen=~masked, masked=masked,
                       loss_weight=masked.float())


def test_harmon_hinted_training_uses_fig6_by_default(harmon):
    """With hints the LLM's image block sees every real token (Fig. 6): changing the last image token
    changes the first one's output; ``image_attention="native"`` keeps the block causal."""
    tok, _, _ = _inputs(harmon)
    g = torch.Generator().manual_seed(2)
    z_enc = torch.randn(2, 16 + harmon.cfg.buffer_size, harmon.width, generator=g)
    later = z_enc.clone()
    later[:, -1] += 1.0
    hints = torch.randn(2, 3, harmon.width, generator=g)
    assert harmon.cfg.image_attention == "fig6"
    first = {}
    with torch.no_grad():
        text = harmon.embed_text(tok["input_ids"])
        for name, model in (("default", harmon), ("native", _variant(harmon, image_attention="native"))):
            a = model._llm_image_outputs(text, tok["attention_mask"], z_enc, hints)
            b = model._llm_image_outputs(text, tok["attention_mask"], later, hints)
            first[name] = float((a - b)[:, :-1].abs().amax(-1).min())  # every earlier image token, both rows
            c = model._llm_image_outputs(text, tok["attention_mask"], z_enc, None)
            d = model._llm_image_outputs(text, tok["attention_mask"], later, None)
            assert torch.equal(c[:, :-1], d[:, :-1]), name  # without hints: causal in both
    assert first["default"] > 0 and first["native"] == 0


# ---- item: VAE latents -------------------------------------------------------------------------

def test_harmon_vae_latents_are_the_posterior_mode_by_default(harmon):
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    x = 2 * pixels - 1
    with torch.no_grad():
        mode = harmon.vae.encode_mean(x) * harmon.cfg.vae_scale
    assert harmon.cfg.vae_latents == "mode"
    harmon.train()
    try:
        lat, _ = harmon.encode(pixels.clone())  # training mode too: the official training steps take the mode
    finally:
        harmon.eval()
    assert torch.equal(lat, mode.flatten(2).transpose(1, 2))


def test_harmon_vae_latents_sample_switch(harmon):
    model = _variant(harmon, vae_latents="sample")
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    x = 2 * pixels - 1
    with torch.no_grad():
        moments = model.vae.quant_conv(model.vae.encoder(x))
        mean, logvar = moments.chunk(2, dim=1)
        mode, _ = model.encode(pixels)  # eval mode: the mode
        model.train()
        torch.manual_seed(5)
        a, _ = model.encode(pixels)
        again, _ = model.encode(pixels)  # the step's second encode reuses the draw
        b, _ = model.encode(pixels.clone())  # another batch: another draw
    model.eval()
    torch.manual_seed(5)
    eps = torch.randn(mean.shape)
    expect = (mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * eps) * model.cfg.vae_scale
    assert torch.equal(mode, (mean * model.cfg.vae_scale).flatten(2).transpose(1, 2))
    torch.testing.assert_close(a, expect.flatten(2).transpose(1, 2), rtol=0, atol=0)
    assert torch.equal(a, again) and not torch.equal(a, b)
    with pytest.raises(ValueError, match="vae_latents"):
        build_harmon("tiny", tokenizer=harmon.tokenizer, vae_latents="mean")


# ---- item: no weight decay on Harmon's diffusion head (Reca) -------------------------------------

def _decay_of(optimizer, model):
    by_id = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    return {n: by_id[id(p)] for n, p in model.named_parameters() if id(p) in by_id}


def test_harmon_diffusion_head_has_no_weight_decay(harmon):
    cfg = get_preset("paper-harmon-0.5b")
    assert cfg.weight_decay > 0
    decay = _decay_of(make_optimizer(harmon, cfg), harmon)
    head = {n: d for n, d in decay.items() if n.startswith("mar.diffloss.")}
    assert head and all(d == 0.0 for d in head.values())
    assert any(p.ndim >= 2 for n, p in harmon.named_parameters() if n in head)  # matrices excluded by name
    # the rest: decayed unless 1-D or a bias; the frozen VAE is not in the optimizer
    assert decay["mar.decoder_blocks.0.attn.qkv.weight"] == cfg.weight_decay
    assert decay["llm.model.layers.0.self_attn.q_proj.bias"] == 0.0
    assert not any(n.startswith("vae.") for n in decay)
    # the switch decays the head like the rest
    model = _variant(harmon, diffloss_weight_decay=True)
    decay = _decay_of(make_optimizer(model, cfg), model)
    assert decay["mar.diffloss.net.input_proj.weight"] == cfg.weight_decay


def test_tiny_families_keep_their_weight_decay():
    """The small presets' optimizer is unchanged (stored runs stay valid): no family-specific exclusion."""
    tiny = registry.build_backbone("tiny-harmon", n_fit=16)
    assert not any(tiny.no_weight_decay(n) for n, _ in tiny.named_parameters())


# ---- item: the Reca rows of the paper presets are Reca -----------------------------------------

def test_method_defaults_table():
    assert family_of("harmon-0.5b") == "harmon" and family_of("tiny-harmon") is None
    assert method_defaults("reca", "harmon-1.5b") == {"hint_layout": "reca", "image_attention": "native",
                                                      "hint_grad_scale": 0.1}
    assert method_defaults("reca_hint_filter", "harmon-0.5b") == RECA_ADAPTER_DEFAULTS["harmon"]
    for method in ("segros", "sft", "none"):
        assert method_defaults(method, "harmon-0.5b") == {}
    assert method_defaults("reca", "tiny-harmon") == {}


@pytest.fixture
def captured(monkeypatch):
    """Register ``<family>-spy`` builders that record their kwargs (no checkpoint needed)."""
    seen = {}
    for family in ("harmon", "showo", "openuni"):
        monkeypatch.setitem(registry.REGISTRY, f"{family}-spy",
                            lambda _f=family, **kw: seen.update({_f: kw}) or torch.nn.Linear(1, 1))
    return seen


@pytest.mark.parametrize("family", ["harmon", "showo", "openuni"])
def test_paper_preset_reca_run_without_instructions_stops(family, captured):
    preset = {"harmon": "paper-harmon-0.5b", "showo": "paper-showo-256", "openuni": "paper-openuni-1.6b"}[family]
    cfg = get_preset(preset).replace(backbone=f"{family}-spy", method="reca", backbone_kwargs={"checkpoint": "x"})
    with pytest.raises(MissingReconPrompts, match="recon_prompts") as e:
        registry.from_config(cfg)
    assert "consts.py" in str(e.value) and family not in captured
    for method in ("segros", "sft"):  # the other methods need no instruction list
        registry.from_config(cfg.replace(method=method))
        assert "recon_prompts" not in captured[family]


def test_command_line_reca_run_without_instructions_stops(tmp_path, capsys):
    from segros.train.__main__ import main

    rc = main(["--preset", "paper-harmon-0.5b", "--method", "reca", "--out", str(tmp_path / "run"), "--quiet",
               "--set", 'backbone_kwargs={"checkpoint": "/nowhere/harmon_0.5b.pth"}',
               "--set", "t2i_data=shapes", "--set", "i2t_data=shapes"])  # data is checked before the model
    err = capsys.readouterr().err
    assert rc == 1 and "recon_prompts" in err and "Harmon/src/datasets/text2image/consts.py" in err


def test_paper_preset_reca_run_gets_recas_harmon_settings(captured):
    cfg = get_preset("paper-harmon-0.5b").replace(backbone="harmon-spy", method="reca",
                                                  backbone_kwargs={"checkpoint": "x", "recon_prompts": "c.py"})
    registry.from_config(cfg)
    assert captured["harmon"] == {"checkpoint": "x", "recon_prompts": "c.py", "hint_layout": "reca",
                                  "image_attention": "native", "hint_grad_scale": 0.1}
    # the config's own keys win; "recon_prompts": None chooses the empty prompt explicitly
    registry.from_config(cfg.replace(backbone_kwargs={"checkpoint": "x", "recon_prompts": None,
                                                      "hint_layout": "prepend"}))
    assert captured["harmon"]["hint_layout"] == "prepend" and captured["harmon"]["recon_prompts"] is None
    # SeGroS keeps the adapter's own defaults (Fig. 6, hints before the prompt)
    registry.from_config(cfg.replace(method="segros"))
    assert captured["harmon"] == {"checkpoint": "x", "recon_prompts": "c.py"}


def test_small_preset_reca_is_unchanged():
    cfg = get_preset("small").replace(method="reca")
    assert method_backbone_kwargs(cfg.method, cfg.backbone, cfg.backbone_kwargs) == {}
