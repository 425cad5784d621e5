"""Runs in the *official* OpenUni environment (see conftest.py); not collected by pytest.

Usage: python openuni_driver.py inputs.pt outputs.pt
Builds the official ``OpenUniInternVL3SANAHF`` (src/models/openuni/internvl3_sana_hf.py) through its
own constructor from a tiny remote-code ``InternVLChatModel`` (src/models/internvl3/), diffusers'
``SanaTransformer2DModel`` / ``AutoencoderDC`` from our configs, the schedulers as the official
configs build them from SANA's scheduler folder, the prompt template of
configs/datasets/internvl3_1b_512/processors.py and a tiny BPE tokenizer (openuni_tokenizer.py);
loads ``inputs["state_dict"]`` (official key names) and writes what the official methods compute.
With ``inputs["reca_openuni"]`` (Reca's ``OpenUni`` folder) also Reca's reconstruction prompt ids
(:func:`reca_recon_ids`).

Stubs (imported only for the registry, BaseModel, logging, checkpoint helpers and LoRA, none of
which these computations use): ``xtuner.registry`` (BUILDER returns a built object as it is),
``xtuner.model.utils``, ``xtuner.utils``, ``mmengine.model`` (BaseModel = nn.Module),
``mmengine.logging``, ``mmengine.config``, ``peft``; and the two torchvision registration modules that
fail to import beside a CPU torch. flash-attn is absent, so InternViT and Qwen2 run eager attention.
"""

import ast
import importlib.util
import os
import sys

import torch
from torch import nn


from driver_common import stub as _stub, stub_torchvision_registrations  # noqa: E402


class _Builder:
    @staticmethod
    def build(cfg):
        if isinstance(cfg, dict):
            cfg = dict(cfg)
            return cfg.pop("type")(**cfg)
        return cfg


class _BaseModel(nn.Module):
    def __init__(self, *a, **k):
        super().__init__()


_stub("xtuner")
_stub("xtuner.registry", BUILDER=_Builder())
_stub("xtuner.model")
_stub("xtuner.model.utils", guess_load_checkpoint=lambda path: torch.load(path, map_location="cpu"))
_stub("xtuner.utils", PROMPT_TEMPLATE={})
_stub("mmengine")
_stub("mmengine.model", BaseModel=_BaseModel)
_stub("mmengine.logging", print_log=lambda *a, **k: None)
_stub("mmengine.config", read_base=None)
stub_torchvision_registrations()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from diffusers import (AutoencoderDC, DPMSolverMultistepScheduler,  # noqa: E402
                       FlowMatchEulerDiscreteScheduler, SanaTransformer2DModel)

_stub("peft", LoraConfig=None)  # after diffusers, whose import-time package probe would trip on the stub
import openuni_tokenizer  # noqa: E402
import src.models.openuni.internvl3_sana_hf as official  # noqa: E402
from configs.datasets.internvl3_1b_512.processors import prompt_template  # noqa: E402
from src.models.internvl3.configuration_internvl_chat import InternVLChatConfig  # noqa: E402
from src.models.internvl3.modeling_internvl_chat import InternVLChatModel  # noqa: E402


def build(data):
    c = data["config"]
    tokenizer = openuni_tokenizer.build(data["tokenizer_spec"])
    lmm = InternVLChatModel(InternVLChatConfig(**c["internvl_chat"]), use_flash_attn=False)
    transformer = SanaTransformer2DModel.from_config(c["sana"])
    vae = AutoencoderDC.from_config(c["dcae"])
    # configs/models/openuni_*: both schedulers come from SANA's scheduler folder, whose config is
    # the DPM-Solver one written by diffusers' convert_sana_to_diffusers.py
    test_scheduler = DPMSolverMultistepScheduler(flow_shift=3.0, use_flow_sigmas=True,
                                                 prediction_type="flow_prediction")
    train_scheduler = FlowMatchEulerDiscreteScheduler.from_config(test_scheduler.config)
    model = official.OpenUniInternVL3SANAHF(
        lmm=lmm, transformer=transformer, train_scheduler=train_scheduler, test_scheduler=test_scheduler, vae=vae,
        tokenizer=tokenizer, prompt_template=prompt_template,
        connector=dict(c["connector"], _attn_implementation="eager"),
        num_queries=c["num_queries"], use_activation_checkpointing=False, freeze_lmm=True, freeze_transformer=False,
        vit_input_size=c["vit_input_size"], proj_type="enc_proj")
    info = model.load_state_dict(data["state_dict"], strict=False)
    return model.eval(), info


def _load_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _init_default(path, cls, arg):
    """The default of ``cls.__init__``'s ``arg`` in ``path``, read from the source."""
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            init = next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
            args = init.args.args[len(init.args.args) - len(init.args.defaults):]
            default = next(d for a, d in zip(args, init.args.defaults) if a.arg == arg)
            return eval(compile(ast.Expression(default), path, "eval"), {"dict": dict})
    raise RuntimeError(f"no {cls}.__init__({arg}=...) in {path}")


def reca_recon_ids(root, tokenizer, instruction):
    """Reca's ``MidjourneyReconstructionDataset`` (``src/datasets/image2image/edit_datasets.py``; the data
    of ``configs/finetune/reca_1_0.6.py`` through ``configs/datasets/internvl3_1b_512/
    midjourney_reconstruct.py``): ``__getitem__`` hands ``random.choice(self.prompt_list)`` to
    ``ImageEditDataset._process_text``; here ``instruction``, with the ``prompt_template`` and
    ``image_length`` of Reca's ``configs/datasets/internvl3_1b_512/processors.py`` and
    ``CaptionDataset``'s default ``tokenizer_kwargs``. Stubbed imports: ``crop2square``, the
    ``CaptionDataset`` base (its ``__init__`` is not run) and ``consts`` (the list is not used)."""
    for name, attrs in (("src.datasets.utils", dict(crop2square=None)),
                        ("src.datasets.text2image.caption_datasets", dict(CaptionDataset=torch.utils.data.Dataset)),
                        ("src.datasets.image2image.consts", dict(get_recon_prompt_list=lambda: [instruction]))):
        if name not in sys.modules:
            _stub(name, **attrs)
    edit = _load_file("reca_edit_datasets", os.path.join(root, "src", "datasets", "image2image", "edit_datasets.py"))
    proc = _load_file("reca_processors", os.path.join(root, "configs", "datasets", "internvl3_1b_512", "processors.py"))
    ds = edit.MidjourneyReconstructionDataset.__new__(edit.MidjourneyReconstructionDataset)
    ds.prompt_template, ds.image_length, ds.tokenizer = proc.prompt_template, proc.image_length, tokenizer
    ds.tokenizer_kwargs = _init_default(os.path.join(root, "src", "datasets", "text2image", "caption_datasets.py"),
                                        "CaptionDataset", "tokenizer_kwargs")
    return ds._process_text(instruction)["input_ids"]


def main(inp, out):
    data = torch.load(inp, weights_only=False)
    torch.manual_seed(0)
    model, info = build(data)
    res = {"missing": list(info.missing_keys), "unexpected": list(info.unexpected_keys),
           "train_sigmas": model.train_scheduler.sigmas.clone()}
    with torch.no_grad():
        res["embed_image"] = model.get_semantic_features(data["pixels"] * 2 - 1)
        res["prompt_ids"] = [model.prepare_text_conditions(p)["input_ids"].cpu() for p in data["prompts"]]

        # text2image_loss with its two random draws fixed: noise (torch.randn_like) and u
        # (compute_density_for_timestep_sampling); the conditions are captured at diff_loss
        captured = {}
        diff_loss = model.diff_loss

        def capture(model_input, prompt_embeds, prompt_attention_mask):
            captured["conditions"] = prompt_embeds
            captured["latents"] = model_input
            return diff_loss(model_input, prompt_embeds, prompt_attention_mask)

        model.diff_loss = capture
        official.compute_density_for_timestep_sampling = lambda **kw: data["u"].clone()
        randn_like = torch.randn_like
        torch.randn_like = lambda x, *a, **k: data["noise"].to(x.dtype)
        try:
            res["loss"] = model.text2image_loss(dict(pixel_values=data["pixels"] * 2 - 1, input_ids=data["input_ids"],
                                                     attention_mask=data["attention_mask"]))
        finally:
            torch.randn_like = randn_like
        res.update(captured)

        res["sana"] = model.transformer(hidden_states=data["x_t"], encoder_hidden_states=data["cond"],
                                        timestep=data["timestep"], return_dict=False)[0]

        # generate(): conditional rows first, then the unconditional ones (scripts/text2image.py)
        latents = {}
        to_pixels = model.latents_to_pixels

        def keep(z):
            latents["z"] = z
            return to_pixels(z)

        model.latents_to_pixels = keep
        g = data["generate"]
        pixels = model.generate(input_ids=g["input_ids"], attention_mask=g["attention_mask"].bool(),
                                cfg_scale=g["cfg"], num_steps=g["num_steps"],
                                generator=torch.Generator().manual_seed(g["seed"]),
                                height=g["size"], width=g["size"], progress_bar=False)
        res["generate_latents"] = latents["z"]
        res["generate_pixels"] = pixels
    if data.get("reca_openuni"):
        res["recon_ids"] = reca_recon_ids(data["reca_openuni"], openuni_tokenizer.build(data["tokenizer_spec"]),
                                          data["recon_instruction"])
    torch.save(res, out)
    print("ok", {k: tuple(v.shape) for k, v in res.items() if torch.is_tensor(v)})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
