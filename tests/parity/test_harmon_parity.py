"""Harmon parity: our modules vs the official ones on the same tiny random weights.

Compared (all deterministic): VAE latents, ``embed_image`` (proj_in of the unmasked MAR encoder,
buffer dropped), the MAR encoder output under a fixed mask, Harmon's ``forward_mae_encoder`` (LLM
over [text][image] + proj_out residual; ours in ``image_attention="native"`` without hints, which is
Harmon's own causal mask), the MAR decoder output, the LLM hidden states of the prompt, and the
diffusion head output for fixed (x_t, t, c). The official VAE has fixed channel widths (128,
2 blocks), so the VAE here is full width; everything else is tiny.

The prompt ids, with a Qwen2-like BPE tokenizer (``openuni_tokenizer.py``, eos ``<|im_end|>`` as
Qwen2.5-Instruct) that merges the space after "image:" into the caption, both sides building it
from the same data: training, the official ``Text2ImageDataset._process_text`` (``text.strip()``,
``max_length`` 128, and its ``unconditional`` drop at probability 1) vs :meth:`Harmon.tokenize_prompts`
(and :meth:`Harmon.drop_conditions` for the drop); generation, ``Harmon.prepare_text_conditions(
f"Generate an image: {prompt}", "Generate an image.")`` (the GenEval path) vs
:meth:`Harmon.tokenize_generation_prompts` ``([prompt, ""])``, padding and attention mask included.

With a checkout of Reca (wishhyt/reconstruction-alignment) in ``SEGROS_PARITY_RECA_REPO`` (or
``SEGROS_PARITY_SHOWO_RECA_REPO``, the same checkout), the caption-free reconstruction prompt too:
Reca's ``MidjourneyReconstructionDataset._process_text`` for a fixed instruction (with and without
its "Generate an image." drop) vs :meth:`Harmon.tokenize_recon_prompts` (``text_free_prob`` 0 / 1),
both with a Qwen2-like BPE tokenizer (``openuni_tokenizer.py``) that merges "\\n\\n" as Qwen does.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest
import torch

from segros.backbones.harmon import MAX_LENGTH, HarmonConfig, build_harmon

sys.path.insert(0, str(Path(__file__).resolve().parent))
import openuni_tokenizer  # noqa: E402

TOL = 2e-5
RECON_INSTRUCTION = "Describe the scene: shapes, colors and their positions."  # ours, not Reca's prose
CAPTIONS = ["a red circle", "  two blue squares ", "a dog on the left and a cat on the right.",
            " ".join(["a red circle left of a blue square"] * 20)]  # the last one is over max_length
GEN_PROMPTS = ["a dog on the left and a cat on the right.", "a photo of a cat", " a red circle "]


def reca_repo():
    return os.environ.get("SEGROS_PARITY_RECA_REPO") or os.environ.get("SEGROS_PARITY_SHOWO_RECA_REPO")


@pytest.mark.parity
def test_harmon_parity(tmp_path, report_diffs, official):
    run = official("harmon")
    torch.manual_seed(0)
    model = build_harmon("tiny", vae_ch=128, vae_ch_mult=(1, 1, 2, 2, 4), vae_num_res_blocks=2, vae_resolution=256,
                         image_attention="native").eval()
    with torch.no_grad():  # non-zero head so its output is informative
        for p in model.mar.diffloss.net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    g = torch.Generator().manual_seed(0)
    b, n = 2, 16
    pixels = torch.rand(b, 3, 64, 64, generator=g)
    tok = model.tokenize_prompts(["a red circle", "two blue squares"])
    mask = torch.zeros(b, n)
    for i in range(b):
        mask[i, torch.randperm(n, generator=g)[:11]] = 1
    cond = torch.randn(5, model.cfg.mar_dim, generator=g)
    x_t = torch.randn(5, model.cfg.vae_embed_dim, generator=g)
    t = torch.tensor([0, 10, 500, 900, 999])
    cfg = model.cfg
    qwen = model.llm.config
    config = dict(vae_embed_dim=cfg.vae_embed_dim, vae_ch_mult=list(cfg.vae_ch_mult), vae_scale=cfg.vae_scale,
                  mar_img_size=cfg.mar_img_size, mar_dim=cfg.mar_dim, mar_depth=cfg.mar_depth, mar_heads=cfg.mar_heads,
                  class_num=cfg.class_num, buffer_size=cfg.buffer_size, diffloss_d=cfg.diffloss_d,
                  diffloss_w=cfg.diffloss_w, llm_hidden=cfg.llm_hidden,
                  qwen=dict(vocab_size=qwen.vocab_size, hidden_size=qwen.hidden_size,
                            intermediate_size=qwen.intermediate_size, num_hidden_layers=qwen.num_hidden_layers,
                            num_attention_heads=qwen.num_attention_heads, num_key_value_heads=qwen.num_key_value_heads,
                            rope_theta=cfg.rope_theta, rms_norm_eps=1e-6, tie_word_embeddings=cfg.tie_word_embeddings,
                            max_position_embeddings=32768, attn_implementation="eager"))
    inputs = tmp_path / "in.pt"
    recon = dict(instruction=RECON_INSTRUCTION,
                 tokenizer_spec=openuni_tokenizer.train_spec(extra=("user\n\n" + RECON_INSTRUCTION,)))
    prompts = dict(tokenizer_spec=openuni_tokenizer.train_spec(), eos_token="<|im_end|>", captions=CAPTIONS,
                   generate=GEN_PROMPTS)
    torch.save(dict(config=config, state_dict=model.state_dict(), pixels=pixels, mask=mask,
                    input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], x_t=x_t, t=t, cond=cond,
                    recon=recon, prompts=prompts,
                    reca_harmon=os.path.join(reca_repo(), "Harmon") if reca_repo() else None), inputs)
    run(inputs, tmp_path / "out.pt")
    ref = torch.load(tmp_path / "out.pt", weights_only=False)
    assert ref["missing"] == [] and ref["unexpected"] == []
    with torch.no_grad():
        lat, hw = model.encode(pixels)
        text = model.embed_text(tok["input_ids"])
        ours = {
            "latents": lat,
            "embed_image": model.embed_image(pixels).z_image,
            "mar_encoder": model.mar.forward_mae_encoder(lat, mask, model.mar.fake_latent.expand(b, -1), hw),
            "forward_mae_encoder": model.forward_mae_encoder(lat, mask, hw, text, tok["attention_mask"]),
            "llm_hidden": model.llm.model(input_ids=tok["input_ids"],
                                          attention_mask=tok["attention_mask"]).last_hidden_state,
            "diffloss_net": model.mar.diffloss.net(x_t, t, cond),
        }
        ours["decoder"] = model.mar.forward_mae_decoder(ours["forward_mae_encoder"], mask, hw)
    real = tok["attention_mask"].bool()
    for key, value in ours.items():
        a, r = value, ref[key]
        if key == "llm_hidden":  # padding rows are meaningless
            a, r = a[real], r[real]
        assert a.shape == r.shape, key
        report_diffs[key] = float((a - r).abs().max())
    if ref.get("recon_ids") is not None:  # Reca's reconstruction prompt: its ids minus the image slot
        recon_file = tmp_path / "recon.txt"
        recon_file.write_text(RECON_INSTRUCTION + "\n")
        bpe = openuni_tokenizer.build(recon["tokenizer_spec"])
        mismatches = 0
        for prob, reca_ids in zip((0.0, 1.0), ref["recon_ids"]):
            ours = build_harmon("tiny", tokenizer=bpe, recon_prompts=str(recon_file), text_free_prob=prob)
            ids = ours.tokenize_recon_prompts(1)["input_ids"][0]
            assert int(reca_ids[3]) == -200 and len(reca_ids) <= ref["recon_max_length"]  # slot after 3 ids
            reca_text = torch.cat([reca_ids[:3], reca_ids[4:]])
            assert ids.tolist() == reca_text.tolist(), (prob, bpe.convert_ids_to_tokens(ids.tolist()),
                                                        bpe.convert_ids_to_tokens(reca_text.tolist()))
            assert bpe.convert_ids_to_tokens(ids[:3].tolist())[2] == ("Ċ" if prob else "ĊĊ")
            mismatches += int(ids.shape != reca_text.shape or (ids != reca_text).any())
        report_diffs["recon prompt ids (mismatches)"] = float(mismatches)
    else:
        print("[parity] SEGROS_PARITY_RECA_REPO unset: Reca's reconstruction prompt not checked")
    report_diffs.update(compare_prompt_ids(ref["prompts"], prompts))
    bad = {k: v for k, v in report_diffs.items() if v > TOL}
    assert not bad, bad


def compare_prompt_ids(ref, prompts) -> dict:
    """Our training / generation prompt ids vs the official ones (the driver's ``official_prompt_ids``)."""
    bpe = openuni_tokenizer.build(prompts["tokenizer_spec"], eos_token=prompts["eos_token"])
    ours = build_harmon("tiny", tokenizer=bpe, cond_dropout_prob=1.0)
    official = ref["train"]
    assert official["unconditional"] == HarmonConfig().cond_dropout_prob and official["max_length"] == MAX_LENGTH
    train = ours.tokenize_prompts(prompts["captions"])
    dropped = ours.drop_conditions(train["input_ids"], train["attention_mask"], random.Random(0))
    rows = lambda ids, att: [r[a.bool()].tolist() for r, a in zip(ids, att)]  # noqa: E731
    assert len(official["ids"][0.0][-1]) == MAX_LENGTH  # the long caption is truncated
    out = {}
    for name, key in (("train", "train"), ("reca train", "reca_train")):
        if key not in ref:
            continue
        mine = {0.0: rows(train["input_ids"], train["attention_mask"]), 1.0: rows(*dropped)}
        bad = [(p, i) for p in (0.0, 1.0) for i, ids in enumerate(ref[key]["ids"][p]) if ids.tolist() != mine[p][i]]
        assert not bad, (name, [(p, bpe.convert_ids_to_tokens(ref[key]["ids"][p][i].tolist()),
                                 bpe.convert_ids_to_tokens(mine[p][i])) for p, i in bad])
        out[f"{name} prompt ids, caption and dropped (mismatches)"] = float(len(bad))
    bad = 0
    for q, official_gen in zip(prompts["generate"], ref["generate"]):
        gen = ours.tokenize_generation_prompts([q, ""])
        same = (torch.equal(gen["input_ids"], official_gen["input_ids"].cpu())
                and torch.equal(gen["attention_mask"].bool(), official_gen["attention_mask"].cpu()))
        assert same, (q, gen, official_gen)
        bad += int(not same)
    out["generation prompt ids + cfg prompt, padded, and mask (mismatches)"] = float(bad)
    return out
