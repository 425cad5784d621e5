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


def _load(name, path, package=None, replace=None):
    """The module at ``path`` as ``name``; ``replace`` (old, new, count): a source edit before it runs."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    if package:
        mod.__package__ = package
    sys.modules[name] = mod
    if replace is None:
        spec.loader.exec_module(mod)
    else:
        with open(path) as f:
            source = f.read()
        old, new, count = replace
        assert source.count(old) == count, (path, old, source.count(old))
        exec(compile(source.replace(old, new), path, "exec"), mod.__dict__)
    return mod


def reca_recon(root, c, recon):
    """Reca's reconstruction step, ``src/models/harmon_dev.py`` ``HarmonDev.recon_loss`` (on Reca's own
    ``src/models/harmon.py``, whose ``forward_mae_encoder`` takes ``inputs_embeds``), on the tiny weights
    ``recon["state_dict"]``: the batch is Reca's ``MidjourneyReconstructionDataset._process_text`` ids of
    ``recon["rows"]`` (instruction / "Generate an image."), collated by Reca's ``collate_func_gen`` with
    ``pad_index``; the MAR mask is ``recon["mask"]`` (``random_masking`` patched), and the diffusion
    draws of ``DiffLoss.forward`` / ``training_losses`` are replaced by ``recon["t"]`` and
    ``recon["noise"]`` (Reca's rows: token j of copy s at s*B*N + j). Captured: the LLM's inputs and
    last hidden states, the decoder output z, and the loss terms (``loss`` = mse + vb, ``mse``)."""
    import openuni_tokenizer

    _stub("mmengine.model", BaseModel=nn.Module)
    _stub("mmengine.logging", print_log=print)
    _stub("xtuner")
    _stub("xtuner.model")
    _stub("xtuner.model.utils", guess_load_checkpoint=None)
    _stub("xtuner.utils", IMAGE_TOKEN_INDEX=-200, DEFAULT_PAD_TOKEN_INDEX=0, IGNORE_INDEX=-100)
    pkg = _stub("reca_models")
    pkg.__path__ = [os.path.join(root, "src", "models")]
    _load("reca_models.harmon", os.path.join(root, "src", "models", "harmon.py"), "reca_models")
    # Reca writes the image prompt's length as the literal 1088 (1024 + 64 at 512 px; 5 times: i2t ids, mask,
    # labels, recon ids, mask); the tiny model has (64/16)^2 + buffer_size tokens
    n_img = (recon["pixels"].shape[-1] // 16) ** 2 + c["buffer_size"]
    dev = _load("reca_models.harmon_dev", os.path.join(root, "src", "models", "harmon_dev.py"), "reca_models",
                replace=("1088", str(n_img), 5))
    collate = _load("reca_collate", os.path.join(root, "src", "datasets", "collate_functions.py"))
    ids, max_length = [], None
    for instruction, unconditional in recon["rows"]:
        rows, max_length = reca_recon_ids(root, dict(instruction=instruction, tokenizer_spec=recon["tokenizer_spec"]))
        ids.append(rows[int(unconditional)])
    r = build_official(dev.HarmonDev, c, recon["state_dict"])
    r.grad_scale = recon["grad_scale"]
    b, n = recon["mask"].shape
    batch = collate.collate_func_gen([dict(pixel_values=px, input_ids=i) for px, i in zip(recon["pixels"] * 2 - 1, ids)],
                                     pad_index=recon["pad_index"])["data"]
    res = {"ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    r.mar.random_masking = lambda x, orders: recon["mask"].to(x)
    diffusion = r.mar.diffloss.train_diffusion
    original = diffusion.training_losses

    def training_losses(model, x_start, t, model_kwargs=None, noise=None):
        assert noise is None and t.shape == recon["t"].shape and x_start.shape == recon["noise"].shape
        terms = original(model, x_start, recon["t"], model_kwargs, noise=recon["noise"])
        mask = r.mar_mask_rows
        for key in ("loss", "mse"):
            res[f"loss_{key}"] = (terms[key] * mask).sum() / mask.sum()
        return terms

    diffusion.training_losses = training_losses
    forward_loss = r.mar.forward_loss

    def capture_loss(z, target, mask):
        res["z"] = z
        r.mar_mask_rows = mask.reshape(-1).repeat(r.mar.diffusion_batch_mul)
        return forward_loss(z=z, target=target, mask=mask)

    r.mar.forward_loss = capture_loss

    def hook(module, args, kwargs, output):
        res["llm_inputs_embeds"] = kwargs["inputs_embeds"]
        res["llm_position_ids"] = kwargs["position_ids"]
        res["llm_attention_mask"] = kwargs["attention_mask"]
        res["llm_hidden"] = output.last_hidden_state

    handle = r.llm.model.register_forward_hook(hook, with_kwargs=True)
    with torch.no_grad():
        res["loss"] = r.recon_loss(batch)
    handle.remove()
    res["max_length"] = max_length
    return res


def build_official(cls, c, state_dict):
    """``cls`` (the official Harmon or Reca's HarmonDev) at the tiny sizes ``c`` with ``state_dict`` loaded."""
    torch.manual_seed(0)
    h = cls.__new__(cls)
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
    info = h.load_state_dict(state_dict, strict=False)
    assert not info.missing_keys and not info.unexpected_keys, info
    return h.eval()


def main(inp, out):
    data = torch.load(inp, weights_only=False)
    c = data["config"]
    h = build_official(Harmon, c, data["state_dict"])  # fails on any missing or unexpected key
    res = {}
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
    if data.get("reca_harmon") and data.get("reca_recon"):
        rc = data["reca_recon"]
        res["reca_recon"] = reca_recon(data["reca_harmon"], {**c, "qwen": rc["qwen"]}, rc)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(sys.modules[Harmon.__module__].__file__))))
    res["prompts"] = official_prompt_ids(h, root, data, data.get("reca_harmon"))
    torch.save(res, out)
    print("ok", {k: tuple(v.shape) for k, v in res.items() if torch.is_tensor(v)})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
