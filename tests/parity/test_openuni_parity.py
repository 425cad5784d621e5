"""OpenUni parity: our adapter vs the official ``OpenUniInternVL3SANAHF`` on the same tiny random weights.

The official model is built in its own environment by ``openuni_driver.py`` (remote-code
InternVLChatModel, connector, diffusers SANA / DC-AE / schedulers, the official prompt template).
Our weights go over through :func:`internvl_hf_to_remote` (official names), and our MLLM is built from
the same remote-code config through :func:`internvl_hf_config`, so both conversions are under test.

Compared: the prompt token ids (``prepare_text_conditions`` vs ``tokenize_prompts``, with a BPE
tokenizer that merges the space after "image:" into the caption), the InternVL features
(``get_semantic_features`` vs ``embed_image``), the query conditions (LLM at the meta-queries →
connector → projector, captured at ``diff_loss``), the SANA output for fixed (x_t, t, cond), the
flow-matching loss for the same noise and u, and a whole generation (DPM-Solver++, cfg, the
unconditional prompt): latents and decoded pixels. Ours runs in the default configuration (only the
attention implementation is set, to eager): without hints that is exactly the official causal attention
whatever ``image_attention`` says.

With a checkout of Reca in ``SEGROS_PARITY_RECA_REPO`` (or ``SEGROS_PARITY_SHOWO_RECA_REPO``, the same
checkout), the caption-free reconstruction prompt too: Reca's ``MidjourneyReconstructionDataset``
(``ImageEditDataset._process_text``) for a fixed instruction vs :meth:`OpenUni.tokenize_recon_prompts`
placed by ``hint_layout="reca"`` with ``<IMG_CONTEXT>`` embeddings as the 256 hints: the same LLM input.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from segros.backbones.checkpoints import internvl_hf_to_remote
from segros.backbones.openuni import OpenUni, OpenUniConfig, SIZES, internvl_hf_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
import openuni_tokenizer  # noqa: E402
from driver_common import reca_repo  # noqa: E402

TOL = 1e-5
PROMPTS = ["a red circle", "a dog on the left and a cat on the right."]
RECON_INSTRUCTION = "Describe the scene: shapes, colors and their positions."  # ours, not Reca's prose


def _remote_config(vocab: int, cfg: OpenUniConfig) -> dict:
    """A tiny InternVLChatConfig as OpenGVLab/InternVL3-1B's config.json spells it."""
    return dict(
        vision_config=dict(architectures=["InternVisionModel"], hidden_size=cfg.vit_hidden,
                           intermediate_size=cfg.vit_intermediate, num_hidden_layers=cfg.vit_layers,
                           num_attention_heads=cfg.vit_heads, image_size=cfg.vit_input_size, patch_size=14,
                           qkv_bias=True, qk_normalization=False, norm_type="layer_norm", layer_norm_eps=1e-6,
                           hidden_act="gelu", use_flash_attn=False, drop_path_rate=0.0),
        llm_config=dict(architectures=["Qwen2ForCausalLM"], vocab_size=vocab, hidden_size=cfg.llm_hidden,
                        intermediate_size=cfg.llm_intermediate, num_hidden_layers=cfg.llm_layers,
                        num_attention_heads=cfg.llm_heads, num_key_value_heads=cfg.llm_kv_heads,
                        rope_theta=cfg.rope_theta, rms_norm_eps=1e-6, tie_word_embeddings=False,
                        max_position_embeddings=32768),
        select_layer=-1, force_image_size=cfg.vit_input_size, downsample_ratio=0.5, template="internvl2_5",
        ps_version="v2")


def build_pair(seed: int = 0):
    """(our tiny OpenUni with perturbed weights, the inputs the driver needs)."""
    from transformers import InternVLModel

    spec = openuni_tokenizer.train_spec()
    tok = openuni_tokenizer.build(spec)
    cfg = replace(SIZES["tiny"], attn_implementation="eager")  # the default configuration
    remote = _remote_config(len(tok), cfg)
    torch.manual_seed(seed)
    hf = internvl_hf_config(remote, tok.convert_tokens_to_ids("<IMG_CONTEXT>"))
    hf._attn_implementation = "eager"
    model = OpenUni(cfg, tok, InternVLModel(hf)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # zero-initialised parts (cls token, position embeddings, SANA heads) become informative
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    sd = internvl_hf_to_remote(model.state_dict(), "lmm.")
    sd["lmm.language_model.lm_head.weight"] = torch.randn(len(tok), cfg.llm_hidden, generator=g)
    conn = dict(hidden_size=cfg.connector_hidden, intermediate_size=cfg.connector_intermediate,
                num_hidden_layers=cfg.connector_layers, num_attention_heads=cfg.connector_heads)
    config = dict(internvl_chat=remote, sana=dict(model.transformer.config), dcae=dict(model.vae.config),
                  connector=conn, num_queries=cfg.num_queries, vit_input_size=cfg.vit_input_size)
    return model, dict(config=config, state_dict=sd, tokenizer_spec=spec)


@pytest.mark.parity
def test_openuni_parity(tmp_path, report_diffs, official):
    run = official("openuni")
    model, inputs = build_pair()
    cfg = model.cfg
    g = torch.Generator().manual_seed(7)
    b = len(PROMPTS)
    pixels = torch.rand(b, 3, cfg.image_size, cfg.image_size, generator=g)
    tok = model.tokenize_prompts(PROMPTS)
    gen = model.tokenize_prompts(PROMPTS + [""] * b)
    with torch.no_grad():
        x0 = model.encode(pixels)
    bb, c, h, w = x0.shape
    # our t2i_loss draws u then the noise (tokens [B, N, C]) from this generator: replay the draws
    seed = 11
    replay = torch.Generator().manual_seed(seed)
    u = torch.rand(b, generator=replay)
    noise = torch.randn(b, h * w, c, generator=replay).transpose(1, 2).reshape(b, c, h, w)
    x_t = torch.randn(3, c, h, w, generator=g)
    timestep = torch.tensor([1.0, 500.0, 999.0])
    cond = torch.randn(3, cfg.num_queries, cfg.sana_caption_channels, generator=g)
    steps, scale, gseed = 4, 4.5, 3
    inputs.update(pixels=pixels, prompts=PROMPTS, input_ids=tok["input_ids"], attention_mask=tok["attention_mask"],
                  u=u, noise=noise, x_t=x_t, timestep=timestep, cond=cond,
                  generate=dict(input_ids=gen["input_ids"], attention_mask=gen["attention_mask"], cfg=scale,
                                num_steps=steps, seed=gseed, size=cfg.image_size))
    reca = reca_repo()
    inputs.update(recon_instruction=RECON_INSTRUCTION, reca_openuni=os.path.join(reca, "OpenUni") if reca else None)
    torch.save(inputs, tmp_path / "in.pt")
    run(tmp_path / "in.pt", tmp_path / "out.pt")
    ref = torch.load(tmp_path / "out.pt", weights_only=False)
    assert ref["missing"] == [] and ref["unexpected"] == [], (ref["missing"], ref["unexpected"])

    # token ids: the official pair (prompt, "Generate an image.") vs ours, unpadded
    uncond = gen["input_ids"][b][gen["attention_mask"][b].bool()]
    for i, ids in enumerate(ref["prompt_ids"]):
        ours = tok["input_ids"][i][tok["attention_mask"][i].bool()]
        assert ids[0][: len(ours)].tolist() == ours.tolist() and len(ids[0]) >= len(ours), (i, ids[0], ours)
        assert ids[1][: len(uncond)].tolist() == uncond.tolist(), (i, ids[1], uncond)
    report_diffs["prompt_ids"] = 0.0
    # the training timesteps: our σ grid is the official FlowMatchEulerDiscreteScheduler's
    grid = (1000 - torch.arange(1000)).float() / 1000
    report_diffs["train_sigmas"] = float((ref["train_sigmas"][:1000] - grid).abs().max())

    with torch.no_grad():
        ours = {
            "embed_image": model.embed_image(pixels).z_image,
            "latents": x0,
            "conditions": model.conditions(tok["input_ids"], tok["attention_mask"]),
            "sana": model.transformer(hidden_states=x_t, encoder_hidden_states=cond, timestep=timestep,
                                      return_dict=False)[0],
            "loss": model.t2i_loss(dict(pixels=pixels, **tok), None, None,
                                   generator=torch.Generator().manual_seed(seed)),
        }
        ours["generate_latents"] = model.generate(PROMPTS, seed=gseed, cfg=scale, num_steps=steps, return_latents=True)
        ours["generate_pixels"] = model.decode(ours["generate_latents"])
    for key, value in ours.items():
        r = ref[key]
        assert value.shape == r.shape, (key, value.shape, r.shape)
        report_diffs[key] = float((value.float() - r.float()).abs().max())
    if reca:  # Reca's reconstruction prompt, as the LLM sees it
        recon_file = tmp_path / "recon.txt"
        recon_file.write_text(RECON_INSTRUCTION + "\n")
        ours_recon = OpenUni(replace(cfg, recon_prompts=str(recon_file)), model.tokenizer, model.lmm).eval()
        rec = ours_recon.tokenize_recon_prompts(1)
        reca_ids = ref["recon_ids"]
        ctx = model.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
        n_ctx = int((reca_ids == ctx).sum())
        assert n_ctx == 256 and model.tokenizer.decode(reca_ids).count(RECON_INSTRUCTION) == 1
        with torch.no_grad():
            hints = model.embed_text(torch.tensor([[ctx]])).expand(1, n_ctx, -1)
            embeds, _, real = ours_recon._sequence(rec["input_ids"], rec["attention_mask"], hints)
            reca_embeds = model.embed_text(reca_ids[None])
        assert embeds[0][real[0]].shape == reca_embeds[0].shape
        report_diffs["recon prompt (LLM input)"] = float((embeds[0][real[0]] - reca_embeds[0]).abs().max())
    else:
        print("[parity] SEGROS_PARITY_RECA_REPO unset: Reca's reconstruction prompt not checked")
    bad = {k: v for k, v in report_diffs.items() if v > TOL}
    assert not bad, bad
