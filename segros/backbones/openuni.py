"""OpenUni (wusize/OpenUni) behind the SeGroS :class:`Backbone` protocol.

A frozen InternVL3 MLLM (``lmm``, transformers' ``InternVLModel``), 256 ``meta_queries``, a
``connector`` and a ``projector`` into a SANA transformer (``transformer``) over DC-AE latents
(``vae``), with the official parameter names. Build with :func:`build_openuni` (random weights;
``mllm_path`` reads InternVL3 in either layout, :func:`load_internvl`) or through the registry
(``openuni-1.6b`` / ``openuni-3.6b``, official checkpoints).

- ``embed_image``: InternVL's ``extract_feature`` (16×16 tokens in the LLM width).
- ``t2i_loss``: the official rectified-flow loss; the hints enter the prompt only
  (``hint_layout``: "reca" | "prepend"), ``supervision`` is ignored unless ``weight_flow_loss``.
- ``image_attention``: "native" (OpenUni's causal queries) | "fig6", with hints; without hints
  (generation, SFT) always the official attention. No I2T (λ = 0).

How SeGroS maps onto OpenUni, the official computations reproduced and the parity checks:
``docs/adapters/openuni.md``.
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

from segros.backbones.base import Backbone, VisualTokens
from segros.backbones.checkpoints import internvl_remote_to_hf, load_into
from segros.backbones.inputs import draw_choice, pad_rows, read_recon_prompts, resize_to_pixels, tokenize_caption_prompts
from segros.data.tokenizer import tiny_tokenizer
from segros.objectives import flow_matching_mse

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
        # image_attention acts on hinted training only; without hints (generation, SFT) the official attention
        allowed = openuni_attention_mask(seg, real, self.cfg.image_attention if hints is not None else "native")
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

    trains_i2t = False  # segros.backbones.registry.check_backbone refuses λ > 0 before training starts

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
        :func:`segros.backbones.inputs.tokenize_caption_prompts`).
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
            tokenizer = tiny_tokenizer([IMG_START, IMG_END, INSTRUCTION.format(input=UNCOND_PROMPT)])
        elif mllm_path is None:
            raise ValueError(f"mllm_path (InternVL3 folder or hub id) is needed for size {size!r}; or pass tokenizer=")
        else:
            from transformers import AutoTokenizer
            tokenizer = AutoTokenizer.from_pretrained(mllm_path, padding_side="right")
    if mllm_path is not None:
        lmm = load_internvl(mllm_path, tokenizer, attn_implementation=cfg.attn_implementation)
    return OpenUni(cfg, tokenizer, lmm)
