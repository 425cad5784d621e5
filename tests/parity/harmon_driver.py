"""Runs in the *official* Harmon environment (see conftest.py); not collected by pytest.

Usage: python harmon_driver.py inputs.pt outputs.pt
Builds the official modules (src.models.mar.{mar,vae}, src.models.harmon) at the tiny sizes given
in ``inputs["config"]``, loads ``inputs["state_dict"]`` into them, and writes the deterministic
pieces SeGroS relies on. With ``inputs["reca_harmon"]`` (Reca's ``Harmon`` folder) it also runs
Reca's reconstruction-prompt builder (:func:`reca_recon_ids`; stubs ``xtuner.registry`` and
``src.datasets.utils`` for its imports). Stubs: ``mmengine.registry`` (only the unused BUILDER needs it) and the
two torchvision registration modules that fail to import beside a CPU torch.
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


def reca_recon_ids(root, recon):
    """Reca's ``MidjourneyReconstructionDataset._process_text`` (the dataset of ``configs/examples/reca.py``,
    ``src/datasets/text2image/text2image.py``) for one instruction, at ``unconditional`` 0 and 1, with
    the prompt template of ``configs/models/qwen2_5_1_5b_kl16_mar_h.py`` and the ``max_length`` of
    ``configs/datasets/qwen2_5_1_5b/reconstruction_mid.py`` (both read from the files' source)."""
    import openuni_tokenizer

    _stub("xtuner")
    _stub("xtuner.registry", BUILDER=_Registry())
    if "src.datasets.utils" not in sys.modules:  # Reca imports crop2square from it (unused here)
        _stub("src.datasets.utils", crop2square=None)
    spec = importlib.util.spec_from_file_location(
        "reca_text2image", os.path.join(root, "src", "datasets", "text2image", "text2image.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    template = _assigned_call(os.path.join(root, "configs", "models", "qwen2_5_1_5b_kl16_mar_h.py"), "prompt_template")
    template = {k.arg: ast.literal_eval(k.value) for k in template.keywords}
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
    torch.save(res, out)
    print("ok", {k: tuple(v.shape) for k, v in res.items() if torch.is_tensor(v)})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
