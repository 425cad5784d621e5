"""Runs in the *official* Harmon environment (see conftest.py); not collected by pytest.

Usage: python harmon_driver.py inputs.pt outputs.pt
Builds the official modules (src.models.mar.{mar,vae}, src.models.harmon) at the tiny sizes given
in ``inputs["config"]``, loads ``inputs["state_dict"]`` into them, and writes the deterministic
pieces SeGroS relies on, and the official prompt ids (:func:`official_prompt_ids`: the training
dataset's ``_process_text`` and ``Harmon.prepare_text_conditions``, with the tiny BPE tokenizer of
``inputs["prompts"]``). With ``inputs["reca_harmon"]`` (Reca's ``Harmon`` folder) it also runs
Reca's reconstruction-prompt builder (:func:`reca_recon_ids`) and Reca's copy of the training
prompt. Stubs: ``mmengine.registry`` (only the unused BUILDER needs it), the two torchvision
registration modules that fail to import beside a CPU torch, and for the dataset modules
``xtuner.registry`` and ``src.datasets.utils``.
"""

import ast
import importlib.util
import os
import sys

import torch


from driver_common import stub as _stub, stub_torchvision_registrations  # noqa: E402


class _Registry:
    def __init__(self, *a, **k):
        pass

    def build(self, cfg):
        raise RuntimeError("not used by the driver")


_stub("mmengine")
_stub("mmengine.registry", Registry=_Registry)
stub_torchvision_registrations()

from torch import nn  # noqa: E402
from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from src.models.harmon import Harmon, build_mlp  # noqa: E402
from src.models.mar.mar import MAR  # noqa: E402
from src.models.mar.vae import AutoencoderKL  # noqa: E402


def _assigned_call(path, name):
    """The ``ast.Call`` assigned to ``name`` at the top of a config file (read, not executed)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return node.value
    raise RuntimeError(f"{path} assigns no {name}")


def _text2image_module(root, name):
    """``src/datasets/text2image/text2image.py`` of the checkout ``root``, loaded as module ``name``."""
    _stub("xtuner")
    _stub("xtuner.registry", BUILDER=_Registry())
    if "src.datasets.utils" not in sys.modules:  # the file imports crop2square from it (unused here)
        _stub("src.datasets.utils", crop2square=None)
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, "src", "datasets", "text2image",
                                                                      "text2image.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _template(root):
    """``prompt_template`` of ``configs/models/qwen2_5_1_5b_kl16_mar_h.py`` (read from the source)."""
    call = _assigned_call(os.path.join(root, "configs", "models", "qwen2_5_1_5b_kl16_mar_h.py"), "prompt_template")
    return {k.arg: ast.literal_eval(k.value) for k in call.keywords}


def train_prompt_ids(root, tokenizer, captions, name):
    """``Text2ImageDataset._process_text`` of ``root`` for each caption, at ``unconditional`` 0 and 1, with
    ``max_length`` and the ``unconditional`` of ``configs/datasets/qwen2_5_1_5b/text2image.py``."""
    mod = _text2image_module(root, name)
    config = os.path.join(root, "configs", "datasets", "qwen2_5_1_5b", "text2image.py")
    unconditional = next(ast.literal_eval(k.value) for k in _assigned_call(config, "dataset").keywords
                         if k.arg == "unconditional")
    ds = mod.Text2ImageDataset.__new__(mod.Text2ImageDataset)
    ds.tokenizer, ds.prompt_template = tokenizer, _template(root)
    ds.max_length = ast.literal_eval(_assigned_call(config, "max_length"))
    out = {}
    for prob in (0.0, 1.0):
        ds.unconditional = prob
        out[prob] = [ds._process_text(c)["input_ids"] for c in captions]
    return dict(ids=out, max_length=ds.max_length, unconditional=unconditional)


def official_prompt_ids(h, root, data, reca_root=None):
    """The official prompt ids for ``data["prompts"]``: training (:func:`train_prompt_ids`, also of Reca's
    copy when given) and generation: wusize ``scripts/text2image.py`` / Reca ``scripts/geneval.py``
    build ``f"Generate an image: {prompt}"`` (checked in the script's source) and call
    ``Harmon.prepare_text_conditions(prompt, "Generate an image.")``."""
    import openuni_tokenizer

    p = data["prompts"]
    tok = openuni_tokenizer.build(p["tokenizer_spec"], eos_token=p["eos_token"])
    res = {"train": train_prompt_ids(root, tok, p["captions"], "official_text2image")}
    if reca_root:
        res["reca_train"] = train_prompt_ids(reca_root, tok, p["captions"], "reca_text2image")
    for script in ([os.path.join(root, "scripts", "text2image.py")]
                   + ([os.path.join(reca_root, "scripts", "geneval.py")] if reca_root else [])):
        with open(script) as f:
            source = f.read()
        assert 'f"Generate an image: {args.prompt}"' in source or 'f"Generate an image: {prompt}"' in source, script
        assert "prepare_text_conditions(" in source and "'Generate an image.'" in source, script
    h.tokenizer, h.prompt_template = tok, _template(root)
    res["generate"] = [h.prepare_text_conditions(f"Generate an image: {q}", "Generate an image.")
                       for q in p["generate"]]
    return res


def reca_recon_ids(root, recon):
    """Reca's ``MidjourneyReconstructionDataset._process_text`` (the dataset of ``configs/examples/reca.py``,
    ``src/datasets/text2image/text2image.py``) for one instruction, at ``unconditional`` 0 and 1, with
    the prompt template of ``configs/models/qwen2_5_1_5b_kl16_mar_h.py`` and the ``max_length`` of
    ``configs/datasets/qwen2_5_1_5b/reconstruction_mid.py`` (both read from the files' source)."""
    import openuni_tokenizer

    mod = _text2image_module(root, "reca_text2image")
    template = _template(root)
    dataset = _assigned_call(os.path.join(root, "configs", "datasets", "qwen2_5_1_5b", "reconstruction_mid.py"),
                             "dataset")
    max_length = next(ast.literal_eval(k.value) for k in dataset.keywords if k.arg == "max_length")
    ds = mod.MidjourneyReconstructionDataset.__new__(mod.MidjourneyReconstructionDataset)
    ds.tokenizer = openuni_tokenizer.build(recon["tokenizer_spec"])
    ds.prompt_template, ds.max_length, ds.recon_prompts = template, max_length, [recon["instruction"]]
    out = []
    for unconditional in (0.0, 1.0):
        ds.unconditional = unconditional
        out.append(ds._process_text("")["input_ids"])
    return out, max_length


def main(inp, out):
    data = torch.load(inp, weights_only=False)
    c = data["config"]
    torch.manual_seed(0)
    h = Harmon.__new__(Harmon)
    nn.Module.__init__(h)
    h.vae = AutoencoderKL(embed_dim=c["vae_embed_dim"], ch_mult=tuple(c["vae_ch_mult"]))
    h.vae_scale = c["vae_scale"]
    h.llm = Qwen2ForCausalLM(Qwen2Config(**c["qwen"]))
    h.mar = MAR(img_size=c["mar_img_size"], vae_stride=16, patch_size=1, encoder_embed_dim=c["mar_dim"],
                encoder_depth=c["mar_depth"], encoder_num_heads=c["mar_heads"], decoder_embed_dim=c["mar_dim"],
                decoder_depth=c["mar_depth"], decoder_num_heads=c["mar_heads"], mlp_ratio=4.0,
                norm_layer=lambda d: nn.LayerNorm(d, eps=1e-6), vae_embed_dim=c["vae_embed_dim"],
                class_num=c["class_num"], buffer_size=c["buffer_size"], diffloss_d=c["diffloss_d"],
                diffloss_w=c["diffloss_w"], num_sampling_steps="100", diffusion_batch_mul=4)
    h.proj_in = build_mlp(c["mar_dim"], c["llm_hidden"], c["llm_hidden"])
    h.proj_out = build_mlp(c["llm_hidden"], c["llm_hidden"], c["mar_dim"])
    info = h.load_state_dict(data["state_dict"], strict=False)
    h.eval()
    res = {"missing": list(info.missing_keys), "unexpected": list(info.unexpected_keys)}
    with torch.no_grad():
        x = data["pixels"] * 2 - 1
        lat = h.encode(x)  # b m n c
        res["latents"] = lat.flatten(1, 2)
        b, m, n, _ = lat.shape
        zero = torch.zeros(b, m * n)
        x_enc, z_enc = h.extract_visual_feature(lat, mask=zero)
        res["embed_image"] = z_enc[:, : m * n]
        mask = data["mask"]
        res["mar_encoder"] = h.mar.forward_mae_encoder(lat.flatten(1, 2), mask, h.mar.fake_latent.expand(b, -1),
                                                       image_shape=(m, n))
        res["forward_mae_encoder"] = h.forward_mae_encoder(lat, mask, input_ids=data["input_ids"],
                                                           attention_mask=data["attention_mask"])
        res["decoder"] = h.mar.forward_mae_decoder(res["forward_mae_encoder"], mask, image_shape=(m, n))
        res["llm_hidden"] = h.llm.model(input_ids=data["input_ids"], attention_mask=data["attention_mask"]).last_hidden_state
        res["diffloss_net"] = h.mar.diffloss.net(data["x_t"], data["t"], data["cond"])
    if data.get("reca_harmon"):
        res["recon_ids"], res["recon_max_length"] = reca_recon_ids(data["reca_harmon"], data["recon"])
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(sys.modules[Harmon.__module__].__file__))))
    res["prompts"] = official_prompt_ids(h, root, data, data.get("reca_harmon"))
    torch.save(res, out)
    print("ok", {k: tuple(v.shape) for k, v in res.items() if torch.is_tensor(v)})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
