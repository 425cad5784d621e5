"""Show-o parity: our modules vs the official ones on the same tiny random weights.

Run (environment: ``tests/parity/setup_showo_env.sh``)::

    SEGROS_PARITY_SHOWO_REPO=/tmp/showo-official SEGROS_PARITY_SHOWO_PYTHON=/tmp/showo-env/bin/python \
    SEGROS_PARITY_SHOWO_RECA_REPO=/tmp/reca-official python -m pytest tests/parity -k showo -s -q

``SEGROS_PARITY_SHOWO_RECA_REPO`` (a checkout of wishhyt/reconstruction-alignment) is optional; with
it the hinted layout is checked against Reca's ``Show-o/`` code too.

Compared, all deterministic:

* MAGVIT-v2: the encoder output and the codes of a fixed image, the decoded image of fixed codes;
* CLIP (``CLIPVisionTower``: hidden state -2, CLS dropped) and ``mm_projector``, on the CLIP-normalised
  336 input and on Reca's reconstruction input (``embed_image`` with ``hint_preprocess="reca"``);
* the native T2I sequence (``UniversalPrompting`` ``t2i_gen``), its mask
  (``create_attention_mask_predict_next``) and the Show-o logits, for a prompt batch plus the
  unconditional batch; the training prompt ``t2i`` and its labels;
* MaskGIT sampling (``Showo.t2i_generate`` vs :meth:`Showo.generate`, one CPU generator): equal codes;
* I2T: the ``phi1.5`` conversation ids, ``create_attention_mask_for_mmu_vit`` and the I2T loss;
* with Reca: the hinted sequence (``t2i_clip_recon_prompt``), its mask
  (``create_attention_mask_for_mmu_vit_recon``), the logits and Reca's ``type='recon'`` loss vs our
  ``t2i_loss``; Reca's caption-free reconstruction text (``train_recon_w_clip_vit.py``, evaluated from
  the script's source for a fixed instruction) vs :meth:`Showo.recon_texts`, and its
  ``t2i_clip_recon_prompt`` ids vs ours from :meth:`Showo.tokenize_recon_prompts`.

Sizes: ``mm_projector`` is fixed at 1024 -> 2048 in ``Showo.__init__``, Reca's masks fix 576 CLIP
tokens and ``t2i_clip_recon_prompt`` fixes 128 text slots, so the Phi here is 2048 wide (2 layers,
MLP 256), CLIP is 1024 wide (2 layers) at 336 px and ``max_text_len`` is 128; MAGVIT is tiny (32
channels, one block per level, 6-bit codes), images are 64 px (4x4 codes). The text tokenizer is a
word-level one built here that behaves like Phi's (no special tokens added when encoding, BOS = EOS
= ``<|endoftext|>``, no pad token), saved as ``tokenizer.json`` for both sides.
"""

from __future__ import annotations

import os

import pytest
import torch

from segros.backbones.inputs import read_recon_prompts
from driver_common import reca_repo
from segros.backbones.showo import CLIP_MEAN, CLIP_STD, SYSTEM_PROMPT, build_showo

TOL = 2e-5
RECON_INSTRUCTION = "what color is the circle left of two blue squares ?"  # ours, in the tokenizer's words
WORDS = ("a red circle two blue squares left of green cross USER : ASSISTANT what color is the ? "
         "A chat between curious user and an artificial intelligence assistant . The gives helpful , "
         "detailed polite answers to ' s questions")


def phi_like_tokenizer(path):
    """A WordLevel tokenizer like Phi's: <|endoftext|> is BOS and EOS, nothing added on encode, no pad."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "[UNK]": 1}
    for w in WORDS.split():
        vocab.setdefault(w, len(vocab))
    raw = Tokenizer(WordLevel(vocab=vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.save(str(path))
    return PreTrainedTokenizerFast(tokenizer_file=str(path), bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="[UNK]", padding_side="left")


def _perturb(module, scale, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


@pytest.mark.parity
def test_showo_parity(tmp_path, report_diffs, official):
    run = official("showo")
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    tok = phi_like_tokenizer(tok_dir / "tokenizer.json")
    torch.manual_seed(0)
    model = build_showo("tiny", tokenizer=tok, llm_hidden=2048, llm_heads=32, llm_intermediate=256, clip_hidden=1024,
                        clip_heads=16, clip_intermediate=256, clip_image_size=336, max_text_len=128).eval()
    # non-trivial norms and biases, so that a wrong placement shows
    _perturb(model.showo, 0.02, 1)
    _perturb(model.mm_projector, 0.02, 2)
    _perturb(model.clip, 0.02, 3)
    _perturb(model.vq_model, 0.05, 4)
    cfg, phi = model.cfg, model.showo.config
    n, k = 16, 2 ** cfg.codebook_dim
    g = torch.Generator().manual_seed(0)
    b = 2
    pixels = torch.rand(b, 3, 64, 64, generator=g)
    clip_pixels = torch.rand(b, 3, 336, 336, generator=g)
    with torch.no_grad():
        codes = model.image_codes(pixels)  # the targets of t2i_loss; official codes compared below
    masked = torch.zeros(b, n, dtype=torch.bool)
    for i, m in enumerate((5, 12)):
        masked[i, torch.randperm(n, generator=g)[:m]] = True
    targets = codes + model.code_offset
    image_ids = torch.where(masked, torch.full_like(targets, model.mask_id), targets)
    labels = torch.where(masked, targets, torch.full_like(targets, -100))
    prompts = ["a red circle", "two blue squares left of a green cross"]
    with torch.no_grad():
        hints = model.embed_image(pixels).z_image
    i2t = model.i2t_batch([(torch.rand(64, 64, 3, generator=g) * 255).to(torch.uint8).numpy()],
                          ["what color is the circle ?"], ["red"])
    config = dict(
        vocab_size=cfg.vocab_size, llm_vocab_size=cfg.llm_vocab_size, codebook_size=k, num_vq_tokens=n,
        max_text_len=cfg.max_text_len, code_hw=list(model.target_grid_hw),
        phi=dict(vocab_size=phi.vocab_size, hidden_size=phi.hidden_size, intermediate_size=phi.intermediate_size,
                 num_hidden_layers=phi.num_hidden_layers, num_attention_heads=phi.num_attention_heads,
                 partial_rotary_factor=cfg.partial_rotary_factor, layer_norm_eps=phi.layer_norm_eps,
                 rope_theta=10000.0, max_position_embeddings=phi.max_position_embeddings, hidden_act=phi.hidden_act,
                 tie_word_embeddings=False, qk_layernorm=True),
        vq=dict(ch=cfg.vq_ch, enc_mult=list(cfg.vq_enc_mult), enc_blocks=list(cfg.vq_enc_blocks),
                dec_mult=list(cfg.vq_dec_mult), dec_blocks=list(cfg.vq_dec_blocks), codebook_dim=cfg.codebook_dim),
        clip=dict(hidden_size=cfg.clip_hidden, intermediate_size=cfg.clip_intermediate,
                  num_hidden_layers=cfg.clip_layers, num_attention_heads=cfg.clip_heads,
                  image_size=cfg.clip_image_size, patch_size=cfg.clip_patch, hidden_act="quick_gelu"))
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    gen = dict(seed=3, steps=4, guidance=1.75)
    system_ids = torch.tensor(model._words(SYSTEM_PROMPT))[None]
    inputs = tmp_path / "in.pt"
    torch.save(dict(config=config, state_dict=model.state_dict(), tokenizer_file=str(tok_dir / "tokenizer.json"),
                    pixels=pixels, clip_pixels=(clip_pixels - mean) / std, codes=codes, prompts=prompts,
                    image_ids=image_ids, labels=labels, hints=hints, generate=gen,
                    question="what color is the circle ?", answer="red",
                    system_ids=system_ids, i2t_ids=i2t["input_ids"], i2t_labels=i2t["labels"],
                    i2t_clip_pixels=((torch.nn.functional.interpolate(i2t["pixels"], size=(336, 336), mode="bicubic",
                                                                       align_corners=False).clamp(0, 1) - mean) / std),
                    recon_instruction=RECON_INSTRUCTION,
                    reca_show_o=os.path.join(reca_repo(), "Show-o") if reca_repo() else None), inputs)
    run(inputs, tmp_path / "out.pt")
    ref = torch.load(tmp_path / "out.pt", weights_only=False)
    for part in ("showo", "vq", "clip"):
        assert ref[f"{part}_missing"] == [] and ref[f"{part}_unexpected"] == [], part

    # vocabulary: UniversalPrompting's ids are ours
    assert ref["len_tokenizer"] == model.code_offset
    for name in ("<|pad|>", "<|soi|>", "<|eoi|>", "<|t2i|>", "<|mmu|>", "<|lvg|>"):
        assert ref["special_ids"][name] == model.special_id(name), name

    with torch.no_grad():
        # MAGVIT-v2
        report_diffs["vq_encoder"] = float((model.vq_model.encoder(pixels * 2 - 1) - ref["vq_latent"]).abs().max())
        ours_codes = model.image_codes(pixels)
        report_diffs["codes (mismatches)"] = float((ours_codes != ref["codes"]).sum())
        report_diffs["decoded_raw"] = float((model.vq_model.decode_code(codes, model.target_grid_hw)
                                             - ref["decoded_raw"]).abs().max())
        report_diffs["decoded"] = float((model.decode_codes(codes) - ref["decoded"]).abs().max())
        # CLIP + mm_projector
        feats = model.clip_features(clip_pixels, "clip")
        report_diffs["clip_features"] = float((feats - ref["clip_features"]).abs().max())
        report_diffs["mm_projector"] = float((model.mm_projector(feats) - ref["mm_projector"]).abs().max())
        report_diffs["embed_image (reca input)"] = float((hints - ref["hints_reca"]).abs().max())

        # native T2I: ids, mask, logits (cond + uncond)
        cond, unc = model.tokenize_prompts(prompts), model.tokenize_prompts([""] * b)
        text_ids = torch.cat([cond["input_ids"], unc["input_ids"]])
        text_att = torch.cat([cond["attention_mask"], unc["attention_mask"]])
        img = torch.cat([image_ids, image_ids])
        soi = torch.full((2 * b, 1), model.special_id("<|soi|>"))
        eoi = torch.full((2 * b, 1), model.special_id("<|eoi|>"))
        seq = torch.cat([text_ids, soi, img, eoi], 1)
        assert torch.equal(seq, ref["native_ids"])
        embeds, mask = model.sequence(text_ids, text_att, img)
        real = torch.cat([text_att.bool(), torch.ones(2 * b, n + 2, dtype=torch.bool)], 1)
        allowed = mask[:, 0] == 0
        assert torch.equal(allowed[real], ref["native_mask"][real])  # every non-pad query row
        logits = model.showo(inputs_embeds=embeds, attention_mask=mask).logits
        report_diffs["native_logits (non-pad)"] = float((logits[real] - ref["native_logits"][real]).abs().max())
        report_diffs["native_logits (codes)"] = float((model.logits_for(text_ids, text_att, img)
                                                       - ref["native_logits"][:, -(n + 1):-1]).abs().max())
        assert torch.equal(torch.cat([cond["input_ids"], soi[:b], image_ids, eoi[:b]], 1), ref["t2i_ids"])
        assert torch.equal(ref["t2i_labels"][:, -(n + 1):-1], labels)

        # MaskGIT sampling: the same draws from the same CPU generator
        ours_gen = model.generate(prompts, guidance_scale=gen["guidance"], num_steps=gen["steps"], return_codes=True,
                                  generator=torch.Generator().manual_seed(gen["seed"]))
        report_diffs["generate (code mismatches)"] = float((ours_gen != ref["generated"]).sum())

        # I2T
        assert ref["conv_prompt"] == "USER: what color is the circle ? ASSISTANT: red<|endoftext|>"
        assert ref["conv_ids"].tolist() == i2t["input_ids"][0].tolist()
        report_diffs["i2t_loss"] = float((model.i2t_loss(i2t) - ref["i2t_loss"]).abs())

        # Reca's hinted layout
        if reca_repo():
            emb_h, mask_h = model.sequence(cond["input_ids"], cond["attention_mask"], image_ids, hints)
            allowed_h = mask_h[:, 0] == 0
            assert allowed_h.shape == ref["hinted_mask"].shape
            real_h = ref["hinted_ids"] != model.special_id("<|pad|>")
            assert torch.equal(allowed_h[real_h], ref["hinted_mask"][real_h])
            ids_h, _ = model.hinted_text_block(model.prompt_words(cond["input_ids"], cond["attention_mask"]))
            assert torch.equal(ids_h[:, :2], ref["hinted_ids"][:, :2])
            assert torch.equal(torch.cat([ids_h[:, 2:], soi[:b], image_ids, eoi[:b]], 1),
                               ref["hinted_ids"][:, 2 + hints.shape[1]:])
            lh = model.showo(inputs_embeds=emb_h, attention_mask=mask_h).logits
            report_diffs["hinted_logits (non-pad)"] = float((lh[real_h] - ref["hinted_logits"][real_h]).abs().max())
            from segros.supervision import Supervision
            sup = Supervision(torch.zeros(b, 0, dtype=torch.long), ~masked, masked, masked.float())
            batch = dict(cond, pixels=pixels)
            report_diffs["t2i_loss vs Reca recon loss"] = float((model.t2i_loss(batch, sup, hints)
                                                                 - ref["hinted_loss"]).abs())
            # Reca's caption-free reconstruction text and ids (the Reca baselines' without_text)
            recon_file = tmp_path / "recon.txt"
            recon_file.write_text(RECON_INSTRUCTION + "\n")
            model.recon_prompt_list = read_recon_prompts(str(recon_file))  # as recon_prompts= at build time
            assert model.recon_texts(1) == [ref["recon_text"]], (model.recon_texts(1), ref["recon_text"])
            rec = model.tokenize_recon_prompts(b)
            ids_rc, _ = model.hinted_text_block(model.prompt_words(rec["input_ids"], rec["attention_mask"]))
            assert torch.equal(torch.cat([ids_rc, soi[:b], image_ids, eoi[:b]], 1), ref["recon_ids"])
            assert int((ids_rc[0] != model.special_id("<|pad|>")).sum()) == 4 + 2 + len(RECON_INSTRUCTION.split()) + 2 + 1
            report_diffs["recon prompt ids (mismatches)"] = float((torch.cat([ids_rc, soi[:b], image_ids, eoi[:b]], 1)
                                                                   != ref["recon_ids"]).sum())
        else:
            print("[parity] SEGROS_PARITY_SHOWO_RECA_REPO unset: Reca's hinted layout not checked")
    # the compared quantities are informative: varied codes, finite non-zero losses, varied images
    assert ref["codes"].unique().numel() > 2 and ref["generated"].unique().numel() > 2
    assert ref["decoded_raw"].std() > 1e-2 and ref["native_logits"].std() > 1e-2
    assert torch.isfinite(ref["i2t_loss"]) and ref["i2t_loss"] > 0
    print(f"[parity] codes {ref['codes'][0].tolist()} generated {ref['generated'][0].tolist()} "
          f"i2t loss {float(ref['i2t_loss']):.4f} recon loss {float(ref.get('hinted_loss', float('nan'))):.4f}")
    bad = {key: v for key, v in report_diffs.items() if v > TOL}
    assert not bad, bad
