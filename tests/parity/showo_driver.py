"""Runs in the *official* Show-o environment (see conftest.py, setup_showo_env.sh); not collected by pytest.

Usage: python showo_driver.py inputs.pt outputs.pt
Builds the official modules at the tiny sizes given in ``inputs["config"]`` from local files only
(a Phi ``config.json`` and a CLIP folder written here; nothing is downloaded): ``models.Showo``
(``models/phi.py`` inside), ``VQGANEncoder`` / ``VQGANDecoder`` / ``LFQuantizer`` assembled into a
``MAGVITv2`` (whose constructor fixes the full size), ``CLIPVisionTower``; the prompts go through
``training.prompting_utils.UniversalPrompting`` with the tiny tokenizer saved by the test, and the
masks through the official builders. When ``inputs["reca_show_o"]`` names Reca's ``Show-o`` folder
(wishhyt/reconstruction-alignment), its ``training/prompting_utils.py`` (``t2i_clip_recon_prompt``,
``create_attention_mask_for_mmu_vit_recon``) and its ``models/modeling_showo.py`` (the ``type='recon'``
loss) are loaded from there. The glue between those calls follows ``training/train_recon_w_clip_vit.py``
(``prepare_inputs_and_labels_recon`` and the ``llava_tuning`` branch), which is a script and cannot be
imported (the text of its ``prepare_inputs_and_labels_recon`` call is evaluated from the script's
source: :func:`reca_recon_text`). Stubs: the two torchvision registration modules that fail beside a CPU torch, and ``cv2``
(imported by Reca's prompting_utils for a debug image only).
"""

import importlib.util
import json
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402


from driver_common import stub as _stub, stub_torchvision_registrations  # noqa: E402


stub_torchvision_registrations()

from omegaconf import OmegaConf  # noqa: E402
from torch import nn  # noqa: E402
from torchvision import transforms as T  # noqa: E402
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, PreTrainedTokenizerFast  # noqa: E402

from llava.llava import conversation as conversation_lib  # noqa: E402
from models import CLIPVisionTower, Showo  # noqa: E402
from models.modeling_magvitv2 import MAGVITv2, LFQuantizer, VQGANDecoder, VQGANEncoder  # noqa: E402
from models.sampling import cosine_schedule  # noqa: E402
from training.prompting_utils import (UniversalPrompting, create_attention_mask_for_mmu_vit,  # noqa: E402
                                      create_attention_mask_predict_next)

SPECIALS = ("<|soi|>", "<|eoi|>", "<|sov|>", "<|eov|>", "<|t2i|>", "<|mmu|>", "<|t2v|>", "<|v2v|>", "<|lvg|>")


def _load_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def reca_recon_text(root, instruction):
    """The row text of Reca's ``prepare_inputs_and_labels_recon(...)`` call in
    ``training/train_recon_w_clip_vit.py`` (a script: not importable), evaluated from the script's own
    source with ``random.choice`` returning ``instruction``."""
    import ast
    import types

    path = os.path.join(root, "training", "train_recon_w_clip_vit.py")
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "prepare_inputs_and_labels_recon":
            comp = node.args[2]
            assert isinstance(comp, ast.ListComp), ast.dump(comp)
            expr = ast.fix_missing_locations(ast.Expression(comp.elt))
            ns = {"random": types.SimpleNamespace(choice=lambda seq: seq[0]), "recon_prompt_list": [instruction]}
            return eval(compile(expr, path, "eval"), ns)
    raise RuntimeError(f"no prepare_inputs_and_labels_recon(...) call in {path}")


def build_showo(c, sd, folder):
    """models.Showo from a local Phi config.json (Showo.__init__ reads AutoConfig(llm_model_path))."""
    phi_dir = os.path.join(folder, "phi")
    os.makedirs(phi_dir, exist_ok=True)
    with open(os.path.join(phi_dir, "config.json"), "w") as f:
        json.dump(dict(c["phi"], model_type="phi", architectures=["PhiForCausalLM"], attn_implementation="eager"), f)
    model = Showo(w_clip_vit=True, vocab_size=c["vocab_size"], llm_vocab_size=c["llm_vocab_size"],
                  llm_model_path=phi_dir, codebook_size=c["codebook_size"], num_vq_tokens=c["num_vq_tokens"],
                  load_from_showo=True)
    part = {k: v for k, v in sd.items() if k.startswith(("showo.", "mm_projector."))}
    info = model.load_state_dict(part, strict=False)
    return model.eval(), info


def build_magvit(c, sd):
    """MAGVITv2's own get_code / decode_code around tiny VQGANEncoder / VQGANDecoder / LFQuantizer."""
    vq = MAGVITv2.__new__(MAGVITv2)
    nn.Module.__init__(vq)
    v = c["vq"]
    vq.encoder = VQGANEncoder(ch=v["ch"], ch_mult=list(v["enc_mult"]), num_res_blocks=list(v["enc_blocks"]),
                              z_channels=v["codebook_dim"])
    vq.decoder = VQGANDecoder(ch=v["ch"], ch_mult=list(v["dec_mult"]), num_res_blocks=list(v["dec_blocks"]),
                              z_channels=v["codebook_dim"])
    vq.quantize = LFQuantizer(codebook_dim=v["codebook_dim"])
    part = {k[len("vq_model."):]: t for k, t in sd.items() if k.startswith("vq_model.")}
    info = vq.load_state_dict(part, strict=True)
    return vq.eval(), info


def build_clip(c, sd, folder):
    """CLIPVisionTower(folder): a CLIPVisionModel + CLIPImageProcessor saved from the given weights."""
    clip_dir = os.path.join(folder, "clip")
    model = CLIPVisionModel(CLIPVisionConfig(**c["clip"]))
    part = {k[len("clip."):]: t for k, t in sd.items() if k.startswith("clip.")}
    if not any(k.startswith("vision_model.") for k in part):  # transformers 5 drops the prefix in state_dict()
        part = {"vision_model." + k: t for k, t in part.items()}
    info = model.load_state_dict(part, strict=False)
    model.save_pretrained(clip_dir)
    s = c["clip"]["image_size"]
    CLIPImageProcessor(size={"shortest_edge": s}, crop_size={"height": s, "width": s}).save_pretrained(clip_dir)
    return CLIPVisionTower(clip_dir).eval(), info


def load_tokenizer(path):
    """The test's Phi-like word-level tokenizer (tokenizer.json only; BOS = EOS = <|endoftext|>)."""
    return PreTrainedTokenizerFast(tokenizer_file=path, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="[UNK]", padding_side="left")


def main(inp, out):
    data = torch.load(inp, weights_only=False)
    c, sd = data["config"], data["state_dict"]
    torch.manual_seed(0)
    res = {}
    folder = tempfile.mkdtemp()
    model, info = build_showo(c, sd, folder)
    res["showo_missing"], res["showo_unexpected"] = list(info.missing_keys), list(info.unexpected_keys)
    vq, info = build_magvit(c, sd)
    res["vq_missing"], res["vq_unexpected"] = list(info.missing_keys), list(info.unexpected_keys)
    tower, info = build_clip(c, sd, folder)
    res["clip_missing"], res["clip_unexpected"] = list(info.missing_keys), list(info.unexpected_keys)

    tok = load_tokenizer(data["tokenizer_file"])
    up = UniversalPrompting(tok, max_text_len=c["max_text_len"], special_tokens=SPECIALS, ignore_id=-100,
                            cond_dropout_prob=0.0)
    sp = {k: int(v) for k, v in up.sptids_dict.items()}
    res["special_ids"] = sp
    res["len_tokenizer"] = len(up.text_tokenizer)
    mask_kw = dict(pad_id=sp["<|pad|>"], soi_id=sp["<|soi|>"], eoi_id=sp["<|eoi|>"])
    n = c["num_vq_tokens"]

    with torch.no_grad():
        # ---- MAGVIT-v2: codes of a fixed image, decoded image of fixed codes
        x = T.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])(data["pixels"].clone())
        res["vq_latent"] = vq.encoder(x)
        res["codes"] = vq.get_code(x)
        dec = vq.decode_code(data["codes"], shape=tuple(c["code_hw"]))
        res["decoded_raw"] = dec
        res["decoded"] = torch.clamp((dec + 1.0) / 2.0, min=0.0, max=1.0)

        # ---- CLIP + mm_projector: CLIP-normalised 336 input, and Reca's recon input
        feats = tower(data["clip_pixels"])
        res["clip_features"] = feats
        res["mm_projector"] = model.mm_projector(feats)
        recon_336 = torch.nn.functional.interpolate(x, size=(336, 336), mode="bilinear", align_corners=False)
        res["hints_reca"] = model.mm_projector(tower(recon_336))

        # ---- native T2I: t2i_gen_prompt + create_attention_mask_predict_next (cond + uncond batch)
        prompts = list(data["prompts"])
        ids, _ = up((prompts, data["image_ids"].clone()), "t2i_gen")
        uncond, _ = up(([""] * len(prompts), data["image_ids"].clone()), "t2i_gen")
        seq = torch.cat([ids, uncond])
        mask = create_attention_mask_predict_next(seq, rm_pad_in_image=True, **mask_kw)
        res["native_ids"] = seq
        res["native_mask"] = mask[:, 0] == 0
        res["native_logits"] = model(seq, attention_mask=mask.to(torch.float32))
        # training prompt (t2i_prompt, no condition dropout) and its labels
        ids_t, _, labels_t = up((prompts, data["image_ids"].clone(), data["labels"].clone()), "t2i")
        res["t2i_ids"], res["t2i_labels"] = ids_t, labels_t

        # ---- I2T (llava_tuning branch): [mmu][system][soi][CLIP][eoi] conversation, mask_for_mmu_vit
        conv = conversation_lib.conv_templates["phi1.5"].copy()
        conv.append_message(conv.roles[0], data["question"])
        conv.append_message(conv.roles[1], data["answer"])
        res["conv_prompt"] = conv.get_prompt().strip()
        res["conv_ids"] = torch.tensor(tok(res["conv_prompt"])["input_ids"])
        sys_ids = data["system_ids"]
        b = data["i2t_ids"].shape[0]
        ids_mmu = torch.cat([torch.full((b, 1), sp["<|mmu|>"]), sys_ids, torch.full((b, 1), sp["<|soi|>"]),
                             torch.full((b, 1), sp["<|eoi|>"]), data["i2t_ids"]], 1)
        emb = model.showo.model.embed_tokens(ids_mmu)
        k = 2 + sys_ids.shape[1]
        feats_mmu = model.mm_projector(tower(data["i2t_clip_pixels"]))
        emb = torch.cat([emb[:, :k], feats_mmu, emb[:, k:]], 1)
        labels = torch.cat([torch.full((b, k), -100), torch.full(feats_mmu.shape[:2], -100), torch.full((b, 1), -100),
                            data["i2t_labels"]], 1)
        mmu_mask = create_attention_mask_for_mmu_vit(emb, system_prompt_len=sys_ids.shape[1])
        res["i2t_mask"] = mmu_mask[:, 0] == 0
        out_mmu = model(None, input_embeddings=emb, attention_mask=mmu_mask.to(torch.float32), labels=labels,
                        batch_size_t2i=0, batch_size_lm=0, batch_size_mmu=b)
        res["i2t_loss"] = out_mmu[3]

        # ---- MaskGIT sampling (t2i_generate) with a CPU generator
        cfg = OmegaConf.create({"model": {"showo": {"num_vq_tokens": n, "num_new_special_tokens": 10,
                                                    "llm_vocab_size": c["llm_vocab_size"]}},
                                "dataset": {"preprocessing": {"max_seq_length": c["max_text_len"]}}})
        start = torch.full((len(prompts), n), model.config.mask_token_id, dtype=torch.long)
        g_ids, _ = up((prompts, start.clone()), "t2i_gen")
        g_unc, _ = up(([""] * len(prompts), start.clone()), "t2i_gen")
        g = data["generate"]
        gmask = create_attention_mask_predict_next(torch.cat([g_ids, g_unc]), rm_pad_in_image=True, **mask_kw)
        res["generated"] = model.t2i_generate(g_ids, uncond_input_ids=g_unc, attention_mask=gmask.to(torch.float32),
                                              temperature=1.0, timesteps=g["steps"], guidance_scale=g["guidance"],
                                              noise_schedule=cosine_schedule,
                                              generator=torch.Generator().manual_seed(g["seed"]), config=cfg)

        # ---- Reca's hinted layout: t2i_clip_recon_prompt + create_attention_mask_for_mmu_vit_recon
        if data.get("reca_show_o"):
            root = data["reca_show_o"]
            try:
                import cv2  # noqa: F401
            except ImportError:  # after transformers is imported: its find_spec("cv2") rejects a stub
                _stub("cv2", imwrite=lambda *a, **k: True)
            rp = _load_file("reca_prompting_utils", os.path.join(root, "training", "prompting_utils.py"))
            reca_model_mod = _load_file("models.reca_modeling_showo", os.path.join(root, "models", "modeling_showo.py"))
            tok_r = load_tokenizer(data["tokenizer_file"])
            upr = rp.UniversalPrompting(tok_r, max_text_len=c["max_text_len"], special_tokens=SPECIALS,
                                        ignore_id=-100, cond_dropout_prob=0.0)
            hints = data["hints"]
            ids_r, _, labels_r = upr((prompts, data["image_ids"].clone(), data["labels"].clone()), "t2i_clip_recon")
            e = model.showo.model.embed_tokens(ids_r)
            embeds = torch.cat([e[:, :2], hints, e[:, 2:]], 1)
            ids_full = torch.cat([ids_r[:, :2], torch.full(hints.shape[:2], upr.ignore_id), ids_r[:, 2:]], 1)
            labels_full = torch.cat([labels_r[:, :2], torch.full(hints.shape[:2], upr.ignore_id), labels_r[:, 2:]], 1)
            rmask = rp.create_attention_mask_for_mmu_vit_recon(embeds, ids_full, return_inverse_mask=True,
                                                                pad_id=sp["<|pad|>"], resolution=n)
            res["hinted_ids"], res["hinted_labels"] = ids_full, labels_full
            if data.get("recon_instruction"):  # Reca's caption-free text through t2i_clip_recon_prompt
                text = reca_recon_text(root, data["recon_instruction"])
                res["recon_text"] = text
                res["recon_ids"], _, _ = upr(([text] * len(prompts), data["image_ids"].clone(),
                                              data["labels"].clone()), "t2i_clip_recon")
            res["hinted_mask"] = rmask[:, 0] == 0
            res["hinted_logits"] = model(ids_full, input_embeddings=embeds, attention_mask=rmask.to(torch.float32))
            reca = reca_model_mod.Showo(w_clip_vit=True, vocab_size=c["vocab_size"], llm_vocab_size=c["llm_vocab_size"],
                                        llm_model_path=os.path.join(folder, "phi"), codebook_size=c["codebook_size"],
                                        num_vq_tokens=n, load_from_showo=True)
            reca.load_state_dict(model.state_dict())
            res["hinted_loss"] = reca.eval()(input_ids=ids_full, input_embeddings=embeds,
                                             attention_mask=rmask.to(torch.float32), labels=labels_full,
                                             batch_size_recon=len(prompts), type="recon", resolution=n)
    torch.save(res, out)
    print("ok", {k: tuple(v.shape) for k, v in res.items() if torch.is_tensor(v)})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
