"""OpenUni (wusize/OpenUni) behind the SeGroS :class:`Backbone` protocol.

Architecture (``src/models/openuni/internvl3_sana_hf.py`` ``OpenUniInternVL3SANAHF``,
``src/models/connector/``, ``configs/models/openuni_*``; REFERENCES.md): a frozen InternVL3 MLLM
(``lmm``), 256 learnable ``meta_queries`` appended after the prompt, the LLM's last hidden states at
the queries go through ``connector`` (6 SigLIP-style encoder layers without a final norm, width 896,
14 heads, GELU-tanh, keys ``layers.<i>.{layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2,
mlp.fc1, mlp.fc2}``; ``modeling_connector.py`` ``ConnectorEncoder``) and ``projector`` (Linear 896 →
SANA caption channels; ``proj_type="enc_proj"``, ``llm2dit``) into a SANA transformer
(``transformer``, diffusers ``SanaTransformer2DModel``) over DC-AE f32c32 latents (``vae``, diffusers
``AutoencoderDC``; 512 px → 16×16×32).

The MLLM. It is transformers' ``InternVLModel`` (the "-hf" layout: ``vision_tower.*``,
``multi_modal_projector.*``, ``language_model.*`` = a ``Qwen2Model``). The official code builds the
remote-code ``InternVLChatModel`` (``src/models/internvl3/modeling_internvl_chat.py``:
``vision_model.*`` = InternViT, ``mlp1.*``, ``language_model.*`` = a ``Qwen2ForCausalLM``) from
OpenGVLab/InternVL3-1B / -2B. Both compute the same function (checked by the parity test):
:func:`internvl_remote_to_hf` renames the remote-code keys (InternViT's fused ``attn.qkv`` is split
into ``q_proj``/``k_proj``/``v_proj`` in that order, ``modeling_intern_vit.py``
``InternAttention._naive_attn``; ``mlp1.{0,1,3}`` = LayerNorm, Linear, Linear; the LM head is dropped,
OpenUni never calls it: ``self.llm.model(...)`` in ``text2image_loss``). :func:`build_openuni` with
``mllm_path`` reads either layout (a remote-code folder is detected by its ``config.json``,
``model_type == "internvl_chat"``), and :func:`segros.backbones.checkpoints.load_openuni` converts
``lmm.*`` keys of a full OpenUni state dict automatically. :func:`internvl_hf_to_remote` goes back.
SANA and DC-AE come from their diffusers folders (``load_openuni(sana_path=..., dcae_path=...)``
replaces the modules: the random-build DC-AE here is all-ResBlock, not dc-ae-f32c32-sana-1.1).

Official computations reproduced here (each checked against the official code by
``tests/parity/test_openuni_parity.py``; on CPU float32 every piece is bit-identical, the loss
differs by 2e-7):

* ``embed_image`` = ``get_semantic_features``: ImageNet-normalised, bilinear to ``vit_input_size``
  (448), InternVL ``extract_feature`` (last ViT layer, CLS dropped, pixel shuffle v2, ``mlp1``):
  16×16 = 256 tokens in the LLM width.
* the prompt (``prepare_text_conditions`` and ``CaptionDataset._process_text``): the chat template
  ``<|im_start|>user\\n{input}<|im_end|>\\n<|im_start|>assistant\\n`` around "Generate an image:
  {prompt.strip()}" (unconditional: "Generate an image."), then ``<img>``; one ``encode`` of the
  whole string (the InternVL3 tokenizer adds no special tokens), right padding.
* ``conditions``: ``prepare_forward_input`` (queries appended after the prompt, position ids
  ``cumsum(mask) - 1``), ``llm.model``, last hidden states at the queries, ``llm2dit``.
* ``t2i_loss`` = ``diff_loss``: ``FlowMatchEulerDiscreteScheduler`` built from SANA's scheduler
  config (``shift`` absent there, so 1): u ~ U(0, 1), σ = (1000 − ⌊1000 u⌋) / 1000, x_t = (1 − σ) x0
  + σ ε, SANA at timestep 1000 σ, target ε − x0, unweighted MSE (``num_train_timesteps``; 0 gives a
  continuous σ).
* ``generate`` = ``generate`` → diffusers ``SanaPipeline``: DPM-Solver++ (2nd order, midpoint) on
  flow sigmas with shift 3 (``DPMSolverMultistepScheduler(flow_shift=3.0, use_flow_sigmas=True,
  prediction_type="flow_prediction")``, the config diffusers' ``scripts/convert_sana_to_diffusers.py``
  writes for 512/1024 px; a SANA folder's own ``scheduler/scheduler_config.json`` replaces it when
  loaded through ``load_openuni(sana_path=...)``), 20 steps, cfg 4.5 as ``u + s (c − u)`` with the
  unconditional prompt "Generate an image.", latents ``randn`` [B, 32, H/32, W/32] from one generator,
  decoded with ``vae.decode(z / scaling_factor)``, saved as ``clamp(127.5 x + 128, 0, 255)`` cast to
  uint8 (``scripts/text2image.py``, ``scripts/evaluation/gen_eval.py``). ``sampler="euler"`` keeps a
  plain Euler flow sampler as an option. The seed: ours is a CPU ``torch.Generator(seed)`` per call
  (the official scripts seed a generator on the model's device once, default 42).

How SeGroS applies to OpenUni (the paper gives no equation for it; this is our reading):

* ``embed_image`` as above; ``embed_text`` = the LLM's input embeddings.
* Hint placement, ``hint_layout``: ``"reca"`` (default) puts the grounded top-η hints where Reca's
  OpenUni reconstruction path puts its 256 InternVL features (Reca ``OpenUni/src/datasets/
  image2image/edit_datasets.py`` ``ImageEditDataset._process_text`` and ``internvl3_sana_hf.py``
  ``image2image_loss``: ``<|im_start|>user\\n<img>`` + features in the ``<IMG_CONTEXT>`` slots +
  ``</img>\\n{text}<|im_end|>\\n<|im_start|>assistant\\n<img>`` + queries); here ``{text}`` is the
  generation prompt "Generate an image: {caption}" (Reca's batches are left-padded, which the
  ``cumsum`` position ids make equivalent). The MLLM is frozen, so the hints stay where InternVL has seen image
  features. ``"prepend"`` puts them before the chat template, the literal reading of §8.2 / Fig. 6
  (``[hints][chat prompt][queries]``), as the Harmon adapter does.
* Reca's text (its caption-free reconstruction: the Reca baselines, Table 9 "Text ×", Table 1's Reca
  rows). Reca ``OpenUni/configs/finetune/reca_1_0.6.py`` and ``reca_2_1.6.py`` train on
  ``configs/datasets/internvl3_1b_512/midjourney_reconstruct.py``, i.e. ``src/datasets/image2image/
  edit_datasets.py`` ``MidjourneyReconstructionDataset``: ``__getitem__`` draws ``prompt =
  random.choice(self.prompt_list)`` (``src/datasets/image2image/consts.py``
  ``get_recon_prompt_list()``) and ``ImageEditDataset._process_text`` builds
  ``INSTRUCTION.format(input=f"<img>{'<IMG_CONTEXT>' * 256}</img>\\n{prompt}") + "<img>"``
  (``IMG_START_TOKEN_FOR_GENERATION`` unset, so True), one ``tokenizer.encode`` (``tokenizer_kwargs``
  ``add_special_tokens=True``; InternVL3's tokenizer adds none). No "Generate an image:" prefix and
  no unconditional drop there (``ReconstructDataset``'s fixed "Keep the image as it is." is not in
  Reca's fine-tuning configs). With ``recon_prompts`` naming that ``consts.py`` (or a text file, one
  instruction per line), :meth:`OpenUni.tokenize_recon_prompts` gives the same ids without the
  image block and :func:`segros.train.without_text` uses them; with ``hint_layout="reca"`` the
  sequence is Reca's. Without ``recon_prompts`` the Reca baselines get the empty prompt
  ("Generate an image.").
* Attention, ``image_attention``: ``"native"`` (default) keeps OpenUni's causal mask for the
  queries and applies Fig. 6 to the hints (bidirectional among themselves, blind to everything
  else; text and queries see them). Without hints it is exactly the official attention, so the
  released checkpoint evaluates as released (the "w/o SFT" baseline) and the frozen MLLM sees its
  queries as it was trained to. ``"fig6"`` makes the queries the corrupted-input block of Fig. 6
  (they see every real token, later queries included); the MLLM is frozen (Table 7), so this
  shifts the conditions the connector was trained on, and it is an option, not the default. With
  ``hint_layout="prepend"`` and ``"fig6"`` the mask equals
  :func:`segros.attention.segros_attention_mask`. Generation uses the same rule as training.
* SANA is trained with rectified flow and no masking, so nothing plays the grounded corrupted input
  by default and ``supervision`` is ignored. The switch ``weight_flow_loss=True`` (off by default, an
  extension of ours) uses ``supervision.loss_weight`` on the latent grid (16×16 at 512 px, equal to
  the hint grid) as per-token weights of the flow-matching loss.
* Trained parts: λ = 0 (no I2T, ``i2t_loss`` raises). Table 7 freezes only the MLLM for OpenUni and
  Reca trains SANA (Reca ``OpenUni/configs/finetune/reca_1_0.6.py``, ``reca_2_1.6.py``:
  ``model.freeze_transformer = False``), so ``meta_queries``, ``connector``, ``projector`` and
  ``transformer`` train (``train_transformer=False`` freezes SANA as OpenUni's pre-training does).

Table 7 (OpenUni columns; presets ``paper-openuni-1.6b`` = InternVL3-1B + SANA-0.6B,
``paper-openuni-3.6b`` = InternVL3-2B + SANA-1.6B): AdamW, lr 1e-5, weight decay 0.01, betas
(0.9, 0.95); 5K steps, warm-up 50; batch 42 / 20, accumulation 16; η = 30 %, ρ = 40 %, λ = 0.0;
MLLM frozen.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segros.backbones.base import (Backbone, VisualTokens, draw_choice, pad_rows, read_recon_prompts, resize_to_pixels,
                                   tokenize_caption_prompts)

INSTRUCTION = "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n"
GEN_PREFIX = "Generate an image: "
UNCOND_PROMPT = "Generate an image."
IMG_START = "<img>"
IMG_END = "</img>"
IMG_CONTEXT = "<IMG_CONTEXT>"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HINT, TEXT, QUERY = 0, 1, 2  # segment ids of the LLM sequence


@dataclass(frozen=True)
class OpenUniConfig:
    """OpenUni-B (InternVL3-1B + SANA-0.6B, 512 px) by default; shapes of the random-weight build."""

    llm_hidden: int = 896
    llm_layers: int = 24
    llm_heads: int = 14
    llm_kv_heads: int = 2
    llm_intermediate: int = 4864
    vocab_size: int = 151674
    rope_theta: float = 1000000.0
    vit_hidden: int = 1024
    vit_layers: int = 24
    vit_heads: int = 16
    vit_intermediate: int = 4096
    vit_input_size: int = 448
    vit_qkv_bias: bool = True  # InternViT-300M (InternVL3-1B/2B): qkv bias, LayerNorm, no q/k norm
    vit_qk_norm: bool = False
    vit_norm_type: str = "layer_norm"
    num_queries: int = 256
    connector_hidden: int = 896
    connector_intermediate: int = 3072
    connector_layers: int = 6
    connector_heads: int = 14
    # SANA-0.6B
    sana_heads: int = 36
    sana_head_dim: int = 32
    sana_layers: int = 28
    sana_cross_heads: int = 16
    sana_cross_head_dim: int = 72
    sana_caption_channels: int = 2304
    # DC-AE f32c32 (random build uses these widths)
    dcae_channels: tuple = (128, 256, 512, 512, 1024, 1024)
    dcae_layers: tuple = (2, 2, 2, 3, 3, 3)
    dcae_dec_layers: tuple = (3, 3, 3, 3, 3, 3)
    latent_channels: int = 32
    scaling_factor: float = 0.41407
    image_size: int = 512
    weight_flow_loss: bool = False
    train_transformer: bool = True
    num_train_timesteps: int = 1000  # σ grid of the official training scheduler; 0 = continuous σ
    hint_layout: str = "reca"  # "reca" | "prepend"
    image_attention: str = "native"  # "native" | "fig6"
    sampler: str = "dpm"  # "dpm" (official DPM-Solver++) | "euler"
    recon_prompts: str | None = None  # Reca's consts.py or a text file: tokenize_recon_prompts (module docstring)
    flow_shift: float = 3.0
    cfg: float = 4.5
    num_steps: int = 20
    attn_implementation: str = "sdpa"


SIZES = {
    "1.6b": OpenUniConfig(),
    "3.6b": OpenUniConfig(llm_hidden=1536, llm_layers=28, llm_heads=12, llm_intermediate=8960, sana_heads=70,
                          sana_layers=20, sana_cross_heads=20, sana_cross_head_dim=112, sana_caption_channels=2304,
                          connector_hidden=1536, connector_intermediate=8960, connector_heads=24),
    "tiny": OpenUniConfig(llm_hidden=64, llm_layers=2, llm_heads=4, llm_kv_heads=2, llm_intermediate=128, vocab_size=0,
                          vit_hidden=32, vit_layers=1, vit_heads=2, vit_intermediate=64, vit_input_size=56,
                          num_queries=8, connector_hidden=64, connector_intermediate=128, connector_layers=2,
                          connector_heads=4, sana_heads=2, sana_head_dim=16, sana_layers=1, sana_cross_heads=2,
                          sana_cross_head_dim=16, sana_caption_channels=48, dcae_channels=(8, 8, 8, 8, 8, 8),
                          dcae_layers=(1,) * 6, dcae_dec_layers=(1,) * 6, latent_channels=8, image_size=64,
                          num_steps=3, attn_implementation="eager"),
}

# ---- InternVL: remote-code (InternVLChatModel) <-> transformers (InternVLModel) key names ----------
# Written from modeling_internvl_chat.py / modeling_intern_vit.py (OpenUni src/models/internvl3/) and
# transformers' models/internvl/modeling_internvl.py. Per ViT layer suffix: (remote, hf).
_VIT_LAYER = (("norm1.", "layernorm_before."), ("norm2.", "layernorm_after."), ("ls1", "lambda_1"),
              ("ls2", "lambda_2"), ("attn.proj.", "attention.projection_layer."),
              ("attn.q_norm.", "attention.q_norm."), ("attn.k_norm.", "attention.k_norm."),
              ("mlp.fc1.", "mlp.fc1."), ("mlp.fc2.", "mlp.fc2."))
_FIXED = (("vision_model.embeddings.class_embedding", "vision_tower.embeddings.cls_token"),
          ("vision_model.embeddings.position_embedding", "vision_tower.embeddings.position_embeddings"),
          ("vision_model.embeddings.patch_embedding.", "vision_tower.embeddings.patch_embeddings.projection."),
          ("mlp1.0.", "multi_modal_projector.layer_norm."), ("mlp1.1.", "multi_modal_projector.linear_1."),
          ("mlp1.3.", "multi_modal_projector.linear_2."))
_REMOTE_LM_HEAD = "language_model.lm_head.weight"


def is_remote_internvl(keys, prefix: str = "") -> bool:
    """True if ``keys`` (of a state dict) use the remote-code InternVLChatModel names under ``prefix``."""
    return any(k.startswith((prefix + "vision_model.", prefix + "mlp1.")) for k in keys)


def internvl_remote_to_hf(sd: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Rename remote-code InternVLChatModel keys (under ``prefix``) to transformers' InternVLModel.

    ``vision_model.encoder.layers.<i>.attn.qkv.{weight,bias}`` [3C, ...] is split in order into
    ``attention.{q,k,v}_proj``; ``language_model.model.*`` → ``language_model.*``; the LM head
    (``language_model.lm_head.weight``) is dropped. Keys outside ``prefix`` and keys the map does not
    know pass through unchanged (a loader then reports them as unexpected).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if not key.startswith(prefix):
            out[key] = value
            continue
        k = key[len(prefix):]
        new = None
        if k == _REMOTE_LM_HEAD:
            continue
        if k.startswith("language_model.model."):
            new = "language_model." + k[len("language_model.model."):]
        for old, hf in _FIXED:
            if k.startswith(old) and new is None:
                new = hf + k[len(old):]
        layer = "vision_model.encoder.layers."
        if new is None and k.startswith(layer):
            idx, rest = k[len(layer):].split(".", 1)
            base = f"vision_tower.encoder.layer.{idx}."
            if rest.startswith("attn.qkv."):
                kind = rest[len("attn.qkv."):]
                q, kk, v = value.chunk(3, dim=0)
                for name, part in (("q_proj", q), ("k_proj", kk), ("v_proj", v)):
                    out[f"{prefix}{base}attention.{name}.{kind}"] = part.clone()
                continue
            for old, hf in _VIT_LAYER:
                if rest.startswith(old):
                    new = base + hf + rest[len(old):]
                    break
        out[prefix + (new if new is not None else k)] = value
    return out


def internvl_hf_to_remote(sd: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """The inverse of :func:`internvl_remote_to_hf` (q/k/v fused back into ``attn.qkv``); no LM head."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    layer = "vision_tower.encoder.layer."
    for key, value in sd.items():
        if not key.startswith(prefix):
            out[key] = value
            continue
        k = key[len(prefix):]
        new = None
        if k.startswith("language_model."):
            new = "language_model.model." + k[len("language_model."):]
        for old, hf in _FIXED:
            if new is None and k.startswith(hf):
                new = old + k[len(hf):]
        if new is None and k.startswith(layer):
            idx, rest = k[len(layer):].split(".", 1)
            base = f"vision_model.encoder.layers.{idx}."
            for name in ("q_proj", "k_proj", "v_proj"):
                if rest.startswith(f"attention.{name}."):
                    kind = rest[len(f"attention.{name}."):]
                    fused.setdefault((base, kind), {})[name] = value
                    break
            else:
                for old, hf in _VIT_LAYER:
                    if rest.startswith(hf):
                        new = base + old + rest[len(hf):]
                        break
            if new is None and rest.startswith("attention.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                continue
        out[prefix + (new if new is not None else k)] = value
    for (base, kind), parts in fused.items():
        if set(parts) != {"q_proj", "k_proj", "v_proj"}:
            raise ValueError(f"{prefix}{base}: q/k/v {kind} incomplete ({sorted(parts)})")
        out[f"{prefix}{base}attn.qkv.{kind}"] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]], 0)
    return out


def internvl_hf_config(remote: Mapping[str, Any], image_token_id: int):
    """transformers ``InternVLConfig`` equivalent to a remote-code ``InternVLChatConfig`` dict.

    Defaults for absent fields are those of ``configuration_intern_vit.py`` / ``configuration_internvl_chat.py``.
    Only what ``extract_feature`` and the LLM use is translated; ``ps_version`` must be "v2" (the
    pixel shuffle of transformers' InternVL) and the LLM a Qwen2 (InternVL3-1B/2B).
    """
    from transformers import InternVLConfig, InternVLVisionConfig, Qwen2Config

    if remote.get("ps_version", "v1") != "v2":
        raise ValueError(f"ps_version {remote.get('ps_version', 'v1')!r} is not supported (InternVL3 uses 'v2')")
    llm = dict(remote["llm_config"])
    arch = (llm.get("architectures") or ["Qwen2ForCausalLM"])[0]
    if arch != "Qwen2ForCausalLM":
        raise ValueError(f"only Qwen2 language models are supported, got {arch}")
    v = remote["vision_config"]
    size = remote.get("force_image_size") or v.get("image_size", 224)
    patch = v.get("patch_size", 14)
    vc = InternVLVisionConfig(
        hidden_size=v.get("hidden_size", 3200), intermediate_size=v.get("intermediate_size", 12800),
        num_hidden_layers=v.get("num_hidden_layers", 48), num_attention_heads=v.get("num_attention_heads", 25),
        image_size=[size, size], patch_size=[patch, patch], attention_bias=v.get("qkv_bias", False),
        use_qk_norm=v.get("qk_normalization", True), norm_type=v.get("norm_type", "rms_norm"),
        layer_norm_eps=v.get("layer_norm_eps", 1e-6), hidden_act=v.get("hidden_act", "gelu"), use_mean_pooling=True)
    drop = ("architectures", "auto_map", "_name_or_path", "model_type", "transformers_version", "torch_dtype",
            "attn_implementation")
    keep = {k: val for k, val in llm.items() if k not in drop}
    tc = Qwen2Config(**keep)
    return InternVLConfig(vision_config=vc, text_config=tc, image_token_id=image_token_id,
                          downsample_ratio=remote.get("downsample_ratio", 0.5),
                          vision_feature_layer=remote.get("select_layer", -1), projector_hidden_act="gelu")


def _read_folder_state_dict(folder: str) -> dict[str, torch.Tensor]:
    """Every ``*.safetensors`` (or ``pytorch_model*.bin``) shard of a model folder, merged."""
    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    sd: dict[str, torch.Tensor] = {}
    if files:
        from safetensors.torch import load_file
        for f in files:
            sd.update(load_file(os.path.join(folder, f)))
        return sd
    files = sorted(f for f in os.listdir(folder) if f.startswith("pytorch_model") and f.endswith(".bin"))
    if not files:
        raise ValueError(f"{folder!r} holds no *.safetensors or pytorch_model*.bin")
    for f in files:
        sd.update(torch.load(os.path.join(folder, f), map_location="cpu", weights_only=True))
    return sd


def load_internvl(path: str, tokenizer=None, attn_implementation: str = "sdpa") -> nn.Module:
    """transformers ``InternVLModel`` from an InternVL3 folder of either layout.

    A remote-code folder (OpenGVLab/InternVL3-1B: ``config.json`` with ``model_type="internvl_chat"``)
    is built from :func:`internvl_hf_config` and its weights converted by :func:`internvl_remote_to_hf`
    (no ``trust_remote_code``); a missing or unexpected key raises
    :class:`segros.backbones.checkpoints.CheckpointMismatch`. An "-hf" folder loads with
    ``from_pretrained``. Either way the weights end in torch's default dtype (the folders hold
    bfloat16). A hub id is fetched with ``snapshot_download`` first (never in tests).
    """
    from transformers import InternVLModel

    from segros.backbones.checkpoints import load_into

    if not os.path.isdir(path):
        from huggingface_hub import snapshot_download
        path = snapshot_download(path, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.py"])
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    if config.get("model_type") != "internvl_chat":
        # saved dtype under transformers 5 (InternVL3: bfloat16) -> the default dtype, like the rest of OpenUni
        model = InternVLModel.from_pretrained(path, attn_implementation=attn_implementation)
        return model.to(torch.get_default_dtype()).eval()
    if tokenizer is None:
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(path)
    hf_config = internvl_hf_config(config, tokenizer.convert_tokens_to_ids(IMG_CONTEXT))
    hf_config._attn_implementation = attn_implementation
    try:  # skip the random init that the weights overwrite (not a meta build: rotary buffers are not saved)
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        model = InternVLModel(hf_config)
    sd = internvl_remote_to_hf(_read_folder_state_dict(path))
    load_into(model, sd, what=str(path))
    return model.eval()


# ---- the attention mask of the LLM sequence -------------------------------------------------------

def openuni_attention_mask(segments: torch.Tensor, real: torch.Tensor, image_attention: str = "native") -> torch.Tensor:
    """[B, 1, S, S] bool (True = allowed) for per-slot ``segments`` [S] or [B, S] (HINT / TEXT / QUERY)
    and ``real`` [B, S] (False on padding); the rules are in the module docstring.

    Padding query rows see only themselves (finite outputs, never read); padding keys are blocked.
    """
    if image_attention not in ("fig6", "native"):
        raise ValueError(f"image_attention must be 'fig6' or 'native', got {image_attention!r}")
    s = real.shape[1]
    seg = segments if segments.ndim == 2 else segments[None].expand(real.shape[0], s)
    idx = torch.arange(s, device=real.device)
    causal = idx[None, :] <= idx[:, None]  # [q, k]
    sq, sk = seg[:, :, None], seg[:, None, :]
    query_rule = causal[None] if image_attention == "native" else torch.ones_like(causal)[None]
    rule = (((sq == HINT) & (sk == HINT)) | ((sq == TEXT) & (sk != QUERY) & causal[None])
            | ((sq == QUERY) & query_rule))
    rq, rk = real[:, :, None], real[:, None, :]
    eye = torch.eye(s, dtype=torch.bool, device=real.device)[None]
    return ((rq & rk & rule) | (~rq & eye))[:, None]


class OpenUni(Backbone):
    """OpenUni (see the module docstring). Build with :func:`build_openuni`."""

    gamma_per = "sample"
    mask_schedule = "uniform"

    def __init__(self, cfg: OpenUniConfig, tokenizer, lmm: nn.Module | None = None):
        super().__init__()
        from diffusers import AutoencoderDC, SanaTransformer2DModel
        from transformers import (InternVLConfig, InternVLModel, InternVLVisionConfig, Qwen2Config,
                                  SiglipVisionConfig)
        from transformers.models.siglip.modeling_siglip import SiglipEncoder

        for name, allowed in (("hint_layout", ("reca", "prepend")), ("image_attention", ("fig6", "native")),
                              ("sampler", ("dpm", "euler"))):
            if getattr(cfg, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(cfg, name)!r}")
        self.cfg = cfg
        self.family = "openuni"
        self.tokenizer = tokenizer
        self.recon_prompt_list = read_recon_prompts(cfg.recon_prompts) if cfg.recon_prompts else None
        self.scheduler_config: dict | None = None  # set from a SANA folder by load_openuni(sana_path=...)
        if lmm is None:
            vocab = cfg.vocab_size or len(tokenizer)
            vc = InternVLVisionConfig(hidden_size=cfg.vit_hidden, intermediate_size=cfg.vit_intermediate,
                                      num_hidden_layers=cfg.vit_layers, num_attention_heads=cfg.vit_heads,
                                      image_size=[cfg.vit_input_size] * 2, patch_size=[14, 14],
                                      attention_bias=cfg.vit_qkv_bias, use_qk_norm=cfg.vit_qk_norm,
                                      norm_type=cfg.vit_norm_type, layer_norm_eps=1e-6, use_mean_pooling=True)
            tc = Qwen2Config(vocab_size=vocab, hidden_size=cfg.llm_hidden, intermediate_size=cfg.llm_intermediate,
                             num_hidden_layers=cfg.llm_layers, num_attention_heads=cfg.llm_heads,
                             num_key_value_heads=cfg.llm_kv_heads, rope_theta=cfg.rope_theta, rms_norm_eps=1e-6,
                             tie_word_embeddings=False)
            config = InternVLConfig(vision_config=vc, text_config=tc, image_token_id=vocab - 1,
                                    downsample_ratio=0.5, vision_feature_layer=-1, projector_hidden_act="gelu")
            config._attn_implementation = cfg.attn_implementation
            lmm = InternVLModel(config)
        self.lmm = lmm
        self.lmm.requires_grad_(False)
        self.meta_queries = nn.Parameter(torch.randn(cfg.num_queries, cfg.llm_hidden) / cfg.llm_hidden ** 0.5)
        self.connector = SiglipEncoder(SiglipVisionConfig(
            hidden_size=cfg.connector_hidden, intermediate_size=cfg.connector_intermediate,
            num_hidden_layers=cfg.connector_layers, num_attention_heads=cfg.connector_heads,
            hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, attn_implementation=cfg.attn_implementation))
        self.projector = nn.Linear(cfg.connector_hidden, cfg.sana_caption_channels)
        lat = cfg.image_size // 32
        self.transformer = SanaTransformer2DModel(
            in_channels=cfg.latent_channels, out_channels=cfg.latent_channels, num_attention_heads=cfg.sana_heads,
            attention_head_dim=cfg.sana_head_dim, num_layers=cfg.sana_layers,
            num_cross_attention_heads=cfg.sana_cross_heads, cross_attention_head_dim=cfg.sana_cross_head_dim,
            cross_attention_dim=cfg.sana_cross_heads * cfg.sana_cross_head_dim,
            caption_channels=cfg.sana_caption_channels, sample_size=lat)
        self.transformer.requires_grad_(cfg.train_transformer)
        n = len(cfg.dcae_channels)
        self.vae = AutoencoderDC(latent_channels=cfg.latent_channels, encoder_block_out_channels=cfg.dcae_channels,
                                 decoder_block_out_channels=cfg.dcae_channels, encoder_layers_per_block=cfg.dcae_layers,
                                 decoder_layers_per_block=cfg.dcae_dec_layers,
                                 encoder_block_types="ResBlock", decoder_block_types="ResBlock",
                                 encoder_qkv_multiscales=((),) * n, decoder_qkv_multiscales=((),) * n,
                                 scaling_factor=cfg.scaling_factor)
        self.vae.requires_grad_(False)
        self.latent_downsample = 2 ** (n - 1)
        g = cfg.vit_input_size // 14 // 2
        self.hint_grid_hw = (g, g)
        self.target_grid_hw = (g, g)

    @property
    def width(self) -> int:
        return self.cfg.llm_hidden

    @property
    def device(self):
        return self.meta_queries.device

    @property
    def llm(self):
        return self.lmm.language_model

    def train(self, mode: bool = True):
        super().train(mode)
        self.lmm.train(False)
        self.vae.train(False)
        return self

    # ---- protocol --------------------------------------------------------------------------
    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.dtype != torch.long:
            raise ValueError(f"input_ids must be a long [B, L] tensor, got {getattr(input_ids, 'shape', input_ids)}")
        return self.llm.get_input_embeddings()(input_ids.to(self.device))

    @torch.no_grad()
    def embed_image(self, pixels: torch.Tensor) -> VisualTokens:
        """``get_semantic_features``: ImageNet-normalised, bilinear to ``vit_input_size``, ``extract_feature``."""
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be a [B, 3, H, W] tensor, got {getattr(pixels, 'shape', type(pixels))}")
        x = pixels.to(self.device, self.meta_queries.dtype)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        s = self.cfg.vit_input_size
        x = F.interpolate((x - mean) / std, size=(s, s), mode="bilinear")
        feats = self.lmm.get_image_features(pixel_values=x).pooler_output
        return VisualTokens(feats, self.hint_grid_hw)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, H, W] in [0, 1] -> scaled DC-AE latents [B, C, h, w] (``pixels_to_latents``)."""
        return self.vae.encode(2 * pixels.to(self.device) - 1).latent * self.cfg.scaling_factor

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _sequence(self, input_ids, attention_mask, hints):
        """(embeds [B, S, D], segments [S], real [B, S]) of the LLM input without the queries."""
        text = self.embed_text(input_ids)
        b, dev = input_ids.shape[0], self.device
        mask = attention_mask.to(dev).bool()
        if hints is None:
            return text, torch.full((text.shape[1],), TEXT, device=dev), mask
        hints = hints.to(dev, text.dtype)
        h = hints.shape[1]
        if self.cfg.hint_layout == "prepend":
            seg = torch.cat([torch.full((h,), HINT, device=dev), torch.full((text.shape[1],), TEXT, device=dev)])
            return (torch.cat([hints, text], 1), seg,
                    torch.cat([torch.ones(b, h, dtype=torch.bool, device=dev), mask], 1))
        # "reca": <|im_start|>user\n <img> [hints] </img>\n  Generate an image: ...
        pre = self._encode(INSTRUCTION.split("{input}")[0])
        if input_ids.shape[1] < len(pre) or not bool((input_ids[:, :len(pre)].cpu() == torch.tensor(pre)).all()):
            raise ValueError("hint_layout='reca' needs every prompt to start with the chat template's "
                             "'<|im_start|>user\\n' tokens (use tokenize_prompts)")
        open_ids = torch.tensor(self._encode(IMG_START), device=dev)
        close_ids = torch.tensor(self._encode(IMG_END + "\n"), device=dev)
        emb = self.llm.get_input_embeddings()
        p = len(pre)
        parts = [text[:, :p], emb(open_ids)[None].expand(b, -1, -1), hints,
                 emb(close_ids)[None].expand(b, -1, -1), text[:, p:]]
        n_open, n_close = len(open_ids), len(close_ids)
        seg = torch.cat([torch.full((p + n_open,), TEXT, device=dev), torch.full((h,), HINT, device=dev),
                         torch.full((n_close + text.shape[1] - p,), TEXT, device=dev)])
        ones = torch.ones(b, n_open + h + n_close, dtype=torch.bool, device=dev)
        real = torch.cat([mask[:, :p], ones, mask[:, p:]], 1)
        return torch.cat(parts, 1), seg, real

    def conditions(self, input_ids, attention_mask, hints=None):
        """Prompt (+ hints) and the queries through the LLM -> connector -> projector: [B, Q, caption_channels]."""
        b = input_ids.shape[0]
        q = self.meta_queries[None].expand(b, -1, -1)
        embeds, seg, real = self._sequence(input_ids, attention_mask, hints)
        nq = q.shape[1]
        seg = torch.cat([seg, torch.full((nq,), QUERY, device=self.device)])
        real = torch.cat([real, torch.ones(b, nq, dtype=torch.bool, device=self.device)], 1)
        embeds = torch.cat([embeds, q.to(embeds.dtype)], 1)
        allowed = openuni_attention_mask(seg, real, self.cfg.image_attention)
        zero = torch.zeros((), dtype=embeds.dtype, device=self.device)
        additive = torch.where(allowed, zero, torch.finfo(embeds.dtype).min)
        pos = (real.long().cumsum(1) - 1).clamp(min=0)
        hidden = self.llm(inputs_embeds=embeds, attention_mask=additive, position_ids=pos).last_hidden_state
        return self.projector(self.connector(hidden[:, -nq:]).last_hidden_state)

    def velocity(self, x_t, t, cond):
        """SANA's prediction; ``t`` in [0, 1] is scaled to the 0..1000 timestep SANA expects."""
        return self.transformer(hidden_states=x_t, encoder_hidden_states=cond, timestep=t * 1000,
                                return_dict=False)[0]

    def t2i_loss(self, batch: Mapping[str, torch.Tensor], supervision: Any, hints: torch.Tensor | None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        from segros.objectives import flow_matching_mse

        for key in ("pixels", "input_ids", "attention_mask"):
            if key not in batch:
                raise ValueError(f"batch is missing {key!r}")
        x0 = self.encode(batch["pixels"])
        b, c, h, w = x0.shape
        if hints is not None and (hints.ndim != 3 or hints.shape[0] != b or hints.shape[2] != self.width):
            raise ValueError(f"hints must be [B, H, D] = [{b}, H, {self.width}], got {tuple(hints.shape)}")
        cond = self.conditions(batch["input_ids"], batch["attention_mask"], hints)
        if not self.cfg.weight_flow_loss:
            weight = torch.ones(b, h * w, device=self.device)  # plain rectified flow: every latent token
        else:
            weight = supervision.loss_weight.to(self.device)
        if weight.shape != (b, h * w):
            raise ValueError(f"supervision.loss_weight must be [B, h*w] = [{b}, {h * w}] on the latent grid, "
                             f"got {tuple(weight.shape)}")
        tokens = x0.flatten(2).transpose(1, 2)  # [B, N, C]

        def per_token(x_t, t, cond_):
            img = x_t.transpose(1, 2).reshape(b, c, h, w)
            return self.velocity(img, t, cond_).flatten(2).transpose(1, 2)
        return flow_matching_mse(per_token, tokens, cond, generator=generator, loss_weight=weight,
                                 num_train_timesteps=self.cfg.num_train_timesteps or None)

    trains_i2t = False  # segros.train.check_backbone refuses λ > 0 before training starts

    def i2t_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError("OpenUni trains no I2T loss (λ = 0 in Table 7; the MLLM is frozen)")

    # ---- data ----------------------------------------------------------------------------
    def preprocess_images(self, images: Sequence[Any]) -> torch.Tensor:
        return resize_to_pixels(images, self.cfg.image_size)

    def tokenize_prompts(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """OpenUni's prompt, encoded in one piece: chat template around "Generate an image: {text}" + ``<img>``.

        ``text_valid`` marks the caption's tokens: those between the tokens of the template head
        ("...Generate an image:") and of the tail ("<|im_end|>...<img>"), found as the common prefix
        and suffix (BPE merges the space after the colon into the caption's first token;
        :func:`segros.backbones.base.tokenize_caption_prompts`).
        """
        pre, post = INSTRUCTION.split("{input}")
        return tokenize_caption_prompts(self._encode, texts, pre + GEN_PREFIX, post + IMG_START,
                                        pre + UNCOND_PROMPT + post + IMG_START, self._pad_id)

    @property
    def _pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0

    def tokenize_recon_prompts(self, batch_size: int, generator=None) -> dict[str, torch.Tensor]:
        """Reca's caption-free reconstruction prompts, one per row (module docstring), encoded in one piece.

        Per row: ``<|im_start|>user\\n{instruction}<|im_end|>\\n<|im_start|>assistant\\n<img>`` with an
        instruction drawn from ``recon_prompt_list`` (no "Generate an image:" prefix, no
        unconditional drop); ``hint_layout="reca"`` then inserts ``<img>`` hints ``</img>\\n`` after
        ``<|im_start|>user\\n``, which gives Reca's ``ImageEditDataset._process_text`` sequence.
        ``generator``: a ``torch.Generator``, a ``random.Random`` or None (Python's ``random``, as
        Reca). ``text_valid`` is all False.
        """
        if not self.recon_prompt_list:
            raise ValueError("tokenize_recon_prompts needs the config field recon_prompts (Reca's consts.py "
                             "or a text file with one instruction per line)")
        pre, post = INSTRUCTION.split("{input}")
        rows = [self._encode(pre + draw_choice(self.recon_prompt_list, generator) + post + IMG_START)
                for _ in range(batch_size)]
        return pad_rows(rows, self._pad_id, [[False] * len(r) for r in rows])

    def i2t_batch(self, images, questions, answers):
        raise NotImplementedError("OpenUni trains no I2T loss (λ = 0 in Table 7)")

    # ---- generation ----------------------------------------------------------------------
    def make_scheduler(self):
        """The test scheduler: SANA's DPM-Solver++ on flow sigmas (see the module docstring)."""
        from diffusers import DPMSolverMultistepScheduler

        with warnings.catch_warnings():  # diffusers' beta-schedule setup warns under numpy 2; unused with flow sigmas
            warnings.simplefilter("ignore", DeprecationWarning)
            if self.scheduler_config is not None:
                return DPMSolverMultistepScheduler.from_config(self.scheduler_config)
            return DPMSolverMultistepScheduler(num_train_timesteps=1000, flow_shift=self.cfg.flow_shift,
                                               use_flow_sigmas=True, prediction_type="flow_prediction")

    @torch.no_grad()
    def sample_latents(self, cond: torch.Tensor, uncond: torch.Tensor, generator: torch.Generator,
                       cfg: float | None = None, num_steps: int | None = None, sampler: str | None = None):
        """Latents [B, C, h, w] from noise, guided by ``cond`` / ``uncond`` ([B, Q, caption_channels])."""
        scale = self.cfg.cfg if cfg is None else cfg
        steps = self.cfg.num_steps if num_steps is None else num_steps
        sampler = sampler or self.cfg.sampler
        if steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {steps}")
        if sampler not in ("dpm", "euler"):
            raise ValueError(f"sampler must be 'dpm' or 'euler', got {sampler!r}")
        b = cond.shape[0]
        s = self.cfg.image_size // self.latent_downsample
        x = torch.randn(b, self.cfg.latent_channels, s, s, generator=generator, dtype=torch.float32).to(self.device)
        guided = scale > 1.0  # SanaPipeline.do_classifier_free_guidance
        emb = torch.cat([uncond, cond]) if guided else cond
        emb_mask = torch.ones(emb.shape[:2], dtype=torch.bool, device=self.device)
        tdtype = self.transformer.dtype

        def predict(x_in, timestep):
            inp = torch.cat([x_in, x_in]) if guided else x_in
            v = self.transformer(inp.to(tdtype), encoder_hidden_states=emb.to(tdtype), encoder_attention_mask=emb_mask,
                                 timestep=timestep.expand(inp.shape[0]), return_dict=False)[0].float()
            if guided:
                v_u, v_c = v.chunk(2)
                v = v_u + scale * (v_c - v_u)
            return v

        if sampler == "euler":
            ts = torch.linspace(1.0, 0.0, steps + 1)
            for i in range(steps):
                v = predict(x, torch.full((1,), float(ts[i]) * 1000, device=self.device))
                x = x + (ts[i + 1] - ts[i]).item() * v
            return x
        sched = self.make_scheduler()
        with warnings.catch_warnings():  # see make_scheduler
            warnings.simplefilter("ignore", DeprecationWarning)
            sched.set_timesteps(steps, device=self.device)
        scale_t = getattr(self.transformer.config, "timestep_scale", 1.0)
        for t in sched.timesteps:
            v = predict(x, t.reshape(1) * scale_t)
            x = sched.step(v, t, x, generator=generator, return_dict=False)[0]
        return x

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``latents_to_pixels``: DC-AE decode of ``latents / scaling_factor``, in [-1, 1] (unclamped)."""
        return self.vae.decode(latents.to(self.vae.dtype) / self.cfg.scaling_factor).sample

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seed: int = 0, cfg: float | None = None, num_steps: int | None = None,
                 return_latents: bool = False, sampler: str | None = None, **unused: Any) -> list:
        """OpenUni's sampler (module docstring): cfg 4.5, 20 DPM-Solver++ steps, "Generate an image." as u."""
        from PIL import Image

        gen = torch.Generator(device="cpu").manual_seed(seed)
        b = len(prompts)
        tok = self.tokenize_prompts(list(prompts) + [""] * b)
        cond = self.conditions(tok["input_ids"], tok["attention_mask"])
        x = self.sample_latents(cond[:b], cond[b:], gen, cfg=cfg, num_steps=num_steps, sampler=sampler)
        if return_latents:
            return x
        img = torch.clamp(127.5 * self.decode(x).float() + 128.0, 0, 255).to(torch.uint8)
        return [Image.fromarray(im) for im in img.permute(0, 2, 3, 1).cpu().numpy()]


def build_openuni(size: str = "1.6b", tokenizer=None, mllm_path: str | None = None, **overrides: Any) -> OpenUni:
    """OpenUni with random weights (``size`` = "1.6b" | "3.6b" | "tiny"); ``mllm_path``: an InternVL3
    folder or hub id in either layout (remote-code OpenGVLab/InternVL3-1B or "-hf"): tokenizer and
    frozen MLLM, see :func:`load_internvl`."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    bad = set(overrides) - set(OpenUniConfig.__dataclass_fields__)
    if bad:
        raise ValueError(f"unknown OpenUni config fields: {sorted(bad)}")
    cfg = replace(SIZES[size], **overrides)
    lmm = None
    if tokenizer is None:
        if size == "tiny" and mllm_path is None:
            from segros.backbones.harmon import tiny_tokenizer
            tokenizer = tiny_tokenizer([IMG_START, IMG_END, INSTRUCTION.format(input=UNCOND_PROMPT)])
        elif mllm_path is None:
            raise ValueError(f"mllm_path (InternVL3 folder or hub id) is needed for size {size!r}; or pass tokenizer=")
        else:
            from transformers import AutoTokenizer
            tokenizer = AutoTokenizer.from_pretrained(mllm_path, padding_side="right")
    if mllm_path is not None:
        lmm = load_internvl(mllm_path, tokenizer, attn_implementation=cfg.attn_implementation)
    return OpenUni(cfg, tokenizer, lmm)
