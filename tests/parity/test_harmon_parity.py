"""Harmon parity: our modules vs the official ones on the same tiny random weights.

Compared (all deterministic): VAE latents, ``embed_image`` (proj_in of the unmasked MAR encoder,
buffer dropped), the MAR encoder output under a fixed mask, Harmon's ``forward_mae_encoder`` (LLM
over [text][image] + proj_out residual; ours in the default configuration, whose paths without hints
hand the LLM the official 2-D padding mask), the MAR decoder output, the LLM hidden states of the prompt, and the
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
And Reca's reconstruction step itself (:func:`reca_recon_inputs`, the driver's ``reca_recon``): Reca's
``src/models/harmon_dev.py`` ``HarmonDev.recon_loss`` on a batch of two Reca prompts (instruction /
"Generate an image.", right-padded by Reca's ``collate_func_gen``) vs our ``t2i_loss`` with
the adapter settings ``method="reca"`` gets by default (``segros.backbones.methods``:
``hint_layout="reca"``, ``image_attention="native"``, ``hint_grad_scale=0.1``) and the hints
``embed_image(pixels).image_prompt()`` (the Reca baseline of ``segros.train.t2i_step``), on the same tiny
weights, MAR mask, and diffusion draws (t, ε): the LLM input embeddings (Reca's 1088-token image
prompt after ``<|im_start|>user\\n``), position ids, attention (ours vs the causal + padding mask of
Reca's 2-D mask), LLM hidden states, the MAR decoder output and the loss. Reca's loss is
``mse + vb`` (the learned-σ head's variational term); ours is the eps-MSE of Eq. 17 only, so it is
compared with Reca's masked ``mse`` term, and the vb term is printed.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest
import torch

from segros.backbones.inputs import pad_rows
from segros.backbones.harmon import MAX_LENGTH, SIZES, HarmonConfig, build_harmon
from segros.backbones.methods import method_defaults
from segros.supervision import Supervision

sys.path.insert(0, str(Path(__file__).resolve().parent))
import openuni_tokenizer  # noqa: E402
from driver_common import reca_repo  # noqa: E402

TOL = 2e-5
RECON_INSTRUCTION = "Describe the scene: shapes, colors and their positions."  # ours, not Reca's prose
CAPTIONS = ["a red circle", "  two blue squares ", "a dog on the left and a cat on the right.",
            " ".join(["a red circle left of a blue square"] * 20)]  # the last one is over max_length
GEN_PROMPTS = ["a dog on the left and a cat on the right.", "a photo of a cat", " a red circle "]
BIG_VAE = dict(vae_ch=128, vae_ch_mult=(1, 1, 2, 2, 4), vae_num_res_blocks=2, vae_resolution=256)




@pytest.mark.parity
def test_harmon_parity(tmp_path, report_diffs, official):
    run = official("harmon")
    torch.manual_seed(0)
    model = build_harmon("tiny", **BIG_VAE).eval()  # the default configuration
    assert model.cfg == replace_cfg(SIZES["tiny"], **BIG_VAE)
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
                    reca_recon=reca_recon_inputs(recon["tokenizer_spec"], pixels, mask) if reca_repo() else None,
                    reca_harmon=os.path.join(reca_repo(), "Harmon") if reca_repo() else None), inputs)
    run(inputs, tmp_path / "out.pt")
    ref = torch.load(tmp_path / "out.pt", weights_only=False)
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
    if reca_repo():  # Reca's reconstruction prompt: its ids minus the image slot
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
        report_diffs.update(compare_reca_recon(ref["reca_recon"], torch.load(inputs, weights_only=False)["reca_recon"]))
    else:
        print("[parity] SEGROS_PARITY_RECA_REPO unset: Reca's reconstruction prompt and step not checked")
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



def _reca_model(spec):
    """The tiny Harmon of the Reca-step parity, in Reca's layout, with the recon BPE tokenizer's vocabulary."""
    torch.manual_seed(1)
    model = build_harmon("tiny", tokenizer=openuni_tokenizer.build(spec), **method_defaults("reca", "harmon-0.5b"),
                         **BIG_VAE).eval()
    with torch.no_grad():
        for p in model.mar.diffloss.net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel() + 1)))
    return model


def reca_recon_inputs(spec, pixels, mask) -> dict:
    """The driver's ``reca_recon`` inputs: weights, rows, pixels, mask and the diffusion draws of our
    ``t2i_loss`` (generator seed 7: t then ε, as :func:`segros.objectives.diffusion_mse` draws them),
    laid out on Reca's rows (token j of copy s at s*B*N + j; unmasked rows get arbitrary draws)."""
    model = _reca_model(spec)
    b, n = mask.shape
    sel = mask.bool().flatten()
    m, s, c = int(sel.sum()), model.cfg.diffusion_batch_mul, model.cfg.vae_embed_dim
    g = torch.Generator().manual_seed(7)
    t = torch.randint(0, 1000, (m * s,), generator=g)
    noise = torch.randn((m * s, c), generator=g, dtype=torch.float32)
    other = torch.Generator().manual_seed(8)
    t_full = torch.randint(0, 1000, (s, b * n), generator=other)
    noise_full = torch.randn((s, b * n, c), generator=other)
    t_full[:, sel], noise_full[:, sel] = t.view(s, m), noise.view(s, m, c)
    qwen = model.llm.config
    return dict(state_dict=model.state_dict(), tokenizer_spec=spec, pixels=pixels, mask=mask,
                rows=[(RECON_INSTRUCTION, False), (RECON_INSTRUCTION, True)], pad_index=model.prompt_pad_id,
                grad_scale=model.cfg.hint_grad_scale, t=t_full.flatten(), noise=noise_full.flatten(0, 1),
                qwen=dict(vocab_size=qwen.vocab_size, hidden_size=qwen.hidden_size,
                          intermediate_size=qwen.intermediate_size, num_hidden_layers=qwen.num_hidden_layers,
                          num_attention_heads=qwen.num_attention_heads, num_key_value_heads=qwen.num_key_value_heads,
                          rope_theta=model.cfg.rope_theta, rms_norm_eps=1e-6,
                          tie_word_embeddings=model.cfg.tie_word_embeddings, max_position_embeddings=32768,
                          attn_implementation="eager"))


def compare_reca_recon(ref, inp) -> dict:
    """Our Reca-layout ``t2i_loss`` (the Reca baseline of ``t2i_step``) vs Reca's ``HarmonDev.recon_loss``."""
    model = _reca_model(inp["tokenizer_spec"])
    model.load_state_dict(inp["state_dict"])
    model.recon_prompt_list = [RECON_INSTRUCTION]
    rows = []
    for _, unconditional in inp["rows"]:  # our recon prompt per row (text_free_prob 0 / 1)
        model.cfg = replace_cfg(model.cfg, text_free_prob=float(unconditional))
        rows.append(model.tokenize_recon_prompts(1)["input_ids"][0].tolist())
    tok = pad_rows(rows, model.prompt_pad_id)
    reca_ids = ref["ids"]
    assert (reca_ids[:, 3] == -200).all()
    reca_text = torch.cat([reca_ids[:, :3], reca_ids[:, 4:]], 1)
    assert torch.equal(tok["input_ids"][tok["attention_mask"].bool()], reca_text[ref["attention_mask"][:, [0, 1, 2] +
                       list(range(4, reca_ids.shape[1]))].bool()]), (tok["input_ids"], reca_ids)
    captured = {}

    def hook(module, args, kwargs, output):
        captured.update(embeds=kwargs["inputs_embeds"], pos=kwargs["position_ids"], mask=kwargs["attention_mask"],
                        hidden=output.last_hidden_state)

    handle = model.llm.model.register_forward_hook(hook, with_kwargs=True)
    decoder = model.mar.forward_mae_decoder
    model.mar.forward_mae_decoder = lambda *a, **k: captured.setdefault("z", decoder(*a, **k))
    mask = inp["mask"]
    batch = dict(pixels=inp["pixels"], **tok)
    sup = Supervision(torch.zeros(mask.shape[0], 0, dtype=torch.long), 1 - mask, mask.bool(), mask)
    with torch.no_grad():
        hints = model.embed_image(inp["pixels"]).image_prompt()  # the grid tokens, then the buffer: 1088
        loss = model.t2i_loss(batch, sup, hints, generator=torch.Generator().manual_seed(7))
    handle.remove()
    real = ref["llm_attention_mask"].bool()  # Reca's 2-D mask: prompt (+ 1088 slots) + the image block
    s = real.shape[1]
    reca_allowed = torch.ones(s, s, dtype=torch.bool).tril()[None] & real[:, None, :]
    ours_allowed = captured["mask"][:, 0] == 0
    assert captured["embeds"].shape == ref["llm_inputs_embeds"].shape
    assert torch.equal(ours_allowed[real], reca_allowed[real]), "attention over the real queries"
    assert torch.equal(captured["pos"], ref["llm_position_ids"])
    print(f"[parity] Reca recon loss (mse + vb) {float(ref['loss']):.6f}: mse {float(ref['loss_mse']):.6f} "
          f"(ours {float(loss):.6f}), vb {float(ref['loss'] - ref['loss_mse']):.6f} (not in ours)")
    diff = lambda a, b: float((a - b).abs().max())  # noqa: E731
    return {"reca recon: LLM input embeddings": diff(captured["embeds"], ref["llm_inputs_embeds"]),
            "reca recon: LLM hidden (real tokens)": diff(captured["hidden"][real], ref["llm_hidden"][real]),
            "reca recon: MAR decoder output z": diff(captured["z"], ref["z"]),
            "reca recon: loss vs Reca's mse term": diff(loss, ref["loss_mse"])}


def replace_cfg(cfg, **kw):
    from dataclasses import replace
    return replace(cfg, **kw)
