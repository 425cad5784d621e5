"""Runs in the *official* Harmon environment (see conftest.py); not collected by pytest.

Usage: python harmon_driver.py inputs.pt outputs.pt
Builds the official modules (src.models.mar.{mar,vae}, src.models.harmon) at the tiny sizes given
in ``inputs["config"]``, loads ``inputs["state_dict"]`` into them, and writes the deterministic
pieces SeGroS relies on. Stubs: ``mmengine.registry`` (only the unused BUILDER needs it) and the
two torchvision registration modules that fail to import beside a CPU torch.
"""

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
    torch.save(res, out)
    print("ok", {k: tuple(v.shape) for k, v in res.items() if torch.is_tensor(v)})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
