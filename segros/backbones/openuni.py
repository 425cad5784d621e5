"""OpenUni (wusize/OpenUni) behind the SeGroS :class:`Backbone` protocol — a documented partial.

Architecture (read from ``src/models/openuni/internvl3_sana_hf.py``, ``src/models/connector/``,
``configs/models/openuni_*``; REFERENCES.md): a frozen InternVL3 MLLM (``lmm``), 256 learnable
``meta_queries`` appended after the prompt, the LLM's last hidden states at the queries go
through ``connector`` (6 SigLIP-style encoder layers, width 896, 14 heads, GELU-tanh, keys
``layers.<i>.{layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1, mlp.fc2}``) and
``projector`` (Linear 896 → SANA caption channels; ``proj_type="enc_proj"``) into a SANA
transformer (``transformer``, diffusers ``SanaTransformer2DModel``) over DC-AE f32c32 latents
(``vae``, diffusers ``AutoencoderDC``; 512 px → 16×16×32). Loss: rectified flow, target
``noise − x0``, uniform t (:func:`segros.objectives.flow_matching_mse`).

What this partial implements and what it does not:

* The MLLM is transformers' ``InternVLModel`` (the "-hf" format: ``vision_tower.*``,
  ``multi_modal_projector.*``, ``language_model.*``), loaded with ``from_pretrained`` from an
  InternVL3-1B/2B-hf folder. The official OpenUni code uses the remote-code ``InternVLChatModel``
  (``vision_model.*``, ``mlp1.*``); its weights are not renamed here. Since the MLLM is frozen and
  comes from its own folder, :func:`segros.backbones.checkpoints.load_openuni` loads only the
  trained OpenUni parts (``meta_queries``, ``connector.*``, ``projector.*``, and
  ``transformer.*`` when present) and reports any other key.
* ``i2t_loss`` raises ``NotImplementedError``: OpenUni trains no I2T (λ = 0, Table 7).
* ``generate`` uses a plain Euler flow sampler with classifier-free guidance, not the official
  DPM-Solver++ (20 steps, cfg 4.5) scheduler; the sampler is a documented deviation.
* No parity test yet.

How SeGroS applies to OpenUni (the paper gives no equation for it; this is our reading):

* ``embed_image`` = InternVL's ``get_image_features`` (pixel-shuffled, projected): 16×16 = 256
  tokens in the LLM width at 448 px; ``embed_text`` = the LLM's input embeddings.
* Grounded top-η hints are *prepended* to the prompt: ``[hints][chat prompt][256 queries]`` under
  the Fig. 6 mask (the queries play the corrupted-input block: they see everything real).
* SANA is trained with rectified flow and no masking, so nothing plays the grounded corrupted
  input by default and ``supervision`` is ignored. The switch ``weight_flow_loss=True`` (off by
  default, an extension of ours) uses ``supervision.loss_weight`` on the latent grid (16×16 at
  512 px, equal to the hint grid) as per-token weights of the flow-matching loss.
* λ = 0: only the connector, projector and queries train (MLLM frozen; SANA frozen unless
  ``train_transformer=True``).

Table 7 (OpenUni columns; presets ``paper-openuni-1.6b`` = InternVL3-1B + SANA-0.6B,
``paper-openuni-3.6b`` = InternVL3-2B + SANA-1.6B): AdamW, lr 1e-5, weight decay 0.01, betas
(0.9, 0.95); 5K steps, warm-up 50; batch 42 / 20, accumulation 16; η = 30 %, ρ = 40 %, λ = 0.0;
MLLM frozen.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segros.attention import segros_attention_mask
from segros.backbones.base import Backbone, VisualTokens, resize_to_pixels

INSTRUCTION = "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n"
GEN_PREFIX = "Generate an image: "
UNCOND_PROMPT = "Generate an image."
IMG_START = "<img>"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class OpenUniConfig:
    """OpenUni-B (InternVL3-1B + SANA-0.6B, 512 px) by default; shapes of the random-weight build."""

    llm_hidden: int = 896
    llm_layers: int = 24
    llm_heads: int = 14
    llm_kv_heads: int = 2
    llm_intermediate: int = 4864
    vocab_size: int = 151674
    vit_hidden: int = 1024
    vit_layers: int = 24
    vit_heads: int = 16
    vit_intermediate: int = 4096
    vit_input_size: int = 448
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
    train_transformer: bool = False
    cfg: float = 4.5
    num_steps: int = 20
    attn_implementation: str = "sdpa"


SIZES = {
    "1.6b": OpenUniConfig(),
    "3.6b": OpenUniConfig(llm_hidden=1536, llm_layers=28, llm_heads=12, llm_intermediate=8960, sana_heads=70,
                          sana_layers=20, sana_cross_heads=20, sana_cross_head_dim=112, sana_caption_channels=2304,
                          connector_hidden=1536, connector_heads=12),
    "tiny": OpenUniConfig(llm_hidden=64, llm_layers=2, llm_heads=4, llm_kv_heads=2, llm_intermediate=128, vocab_size=0,
                          vit_hidden=32, vit_layers=1, vit_heads=2, vit_intermediate=64, vit_input_size=56,
                          num_queries=8, connector_hidden=64, connector_intermediate=128, connector_layers=2,
                          connector_heads=4, sana_heads=2, sana_head_dim=16, sana_layers=1, sana_cross_heads=2,
                          sana_cross_head_dim=16, sana_caption_channels=48, dcae_channels=(8, 8, 8, 8, 8, 8),
                          dcae_layers=(1,) * 6, dcae_dec_layers=(1,) * 6, latent_channels=8, image_size=64,
                          num_steps=3, attn_implementation="eager"),
}


class OpenUni(Backbone):
    """OpenUni (partial; see the module docstring). Build with :func:`build_openuni`."""

    gamma_per = "sample"
    mask_schedule = "uniform"

    def __init__(self, cfg: OpenUniConfig, tokenizer, lmm: nn.Module | None = None):
        super().__init__()
        from diffusers import AutoencoderDC, SanaTransformer2DModel
        from transformers import (InternVLConfig, InternVLModel, InternVLVisionConfig, Qwen2Config,
                                  SiglipVisionConfig)
        from transformers.models.siglip.modeling_siglip import SiglipEncoder

        self.cfg = cfg
        self.family = "openuni"
        self.tokenizer = tokenizer
        if lmm is None:
            vocab = cfg.vocab_size or len(tokenizer)
            vc = InternVLVisionConfig(hidden_size=cfg.vit_hidden, intermediate_size=cfg.vit_intermediate,
                                      num_hidden_layers=cfg.vit_layers, num_attention_heads=cfg.vit_heads,
                                      image_size=[cfg.vit_input_size] * 2, patch_size=[14, 14])
            tc = Qwen2Config(vocab_size=vocab, hidden_size=cfg.llm_hidden, intermediate_size=cfg.llm_intermediate,
                             num_hidden_layers=cfg.llm_layers, num_attention_heads=cfg.llm_heads,
                             num_key_value_heads=cfg.llm_kv_heads, tie_word_embeddings=False)
            lmm = InternVLModel(InternVLConfig(vision_config=vc, text_config=tc, image_token_id=vocab - 1,
                                               downsample_ratio=0.5, vision_feature_layer=-1))
            lmm.config._attn_implementation = cfg.attn_implementation
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
        """InternVL ``extract_feature``: ImageNet-normalised, bilinear to ``vit_input_size``."""
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be a [B, 3, H, W] tensor, got {getattr(pixels, 'shape', type(pixels))}")
        x = (pixels.float() - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        s = self.cfg.vit_input_size
        x = F.interpolate(x, size=(s, s), mode="bilinear").to(self.device, self.meta_queries.dtype)
        feats = self.lmm.get_image_features(pixel_values=x).pooler_output
        return VisualTokens(feats, self.hint_grid_hw)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, H, W] in [0, 1] -> scaled DC-AE latents [B, C, h, w]."""
        return self.vae.encode(2 * pixels.to(self.device) - 1).latent * self.cfg.scaling_factor

    def conditions(self, input_ids, attention_mask, hints=None):
        """[hints][prompt][queries] through the LLM -> connector -> projector: [B, Q, caption_channels]."""
        b = input_ids.shape[0]
        q = self.meta_queries[None].expand(b, -1, -1)
        text = self.embed_text(input_ids)
        n_hint = 0 if hints is None else hints.shape[1]
        parts = [text, q] if hints is None else [hints.to(text.dtype), text, q]
        embeds = torch.cat(parts, 1)
        mask = segros_attention_mask(n_hint, attention_mask.to(self.device).bool(), q.shape[1], device=self.device,
                                     dtype=embeds.dtype)
        real = torch.cat([torch.ones(b, n_hint, device=self.device), attention_mask.to(self.device).float(),
                          torch.ones(b, q.shape[1], device=self.device)], 1)
        pos = (real.cumsum(1) - 1).clamp(min=0).long()
        hidden = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).last_hidden_state
        return self.projector(self.connector(hidden[:, -q.shape[1]:]).last_hidden_state)

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
        return flow_matching_mse(per_token, tokens, cond, generator=generator, loss_weight=weight)

    def i2t_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError("OpenUni trains no I2T loss (λ = 0 in Table 7; the MLLM is frozen)")

    # ---- data ----------------------------------------------------------------------------
    def preprocess_images(self, images: Sequence[Any]) -> torch.Tensor:
        return resize_to_pixels(images, self.cfg.image_size)

    def tokenize_prompts(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """OpenUni's prompt: chat template around "Generate an image: {text}", then ``<img>``."""
        pre, post = INSTRUCTION.split("{input}")
        enc = lambda s: self.tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
        rows, valid = [], []
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"texts[{i}] must be a str, got {type(t).__name__}")
            head = enc(pre + (GEN_PREFIX if t else UNCOND_PROMPT))
            body = enc(t) if t else []
            tail = enc(post + IMG_START)
            rows.append(head + body + tail)
            valid.append([False] * len(head) + [True] * len(body) + [False] * len(tail))
        length = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(rows), length), pad, dtype=torch.long)
        att = torch.zeros_like(ids)
        tv = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, :len(r)], att[i, :len(r)] = torch.tensor(r), 1
            tv[i, :len(r)] = torch.tensor(valid[i])
        return {"input_ids": ids, "attention_mask": att, "text_valid": tv}

    def i2t_batch(self, images, questions, answers):
        raise NotImplementedError("OpenUni trains no I2T loss (λ = 0 in Table 7)")

    # ---- generation ----------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seed: int = 0, cfg: float | None = None, num_steps: int | None = None,
                 return_latents: bool = False, **unused: Any) -> list:
        """Euler flow sampling from t = 1 (noise) to 0 with guidance ``u + cfg (c − u)`` (see docstring)."""
        from PIL import Image

        scale = self.cfg.cfg if cfg is None else cfg
        steps = self.cfg.num_steps if num_steps is None else num_steps
        if steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {steps}")
        gen = torch.Generator(device="cpu").manual_seed(seed)
        b = len(prompts)
        tok = self.tokenize_prompts(list(prompts) + [""] * b)
        cond = self.conditions(tok["input_ids"], tok["attention_mask"])
        s = self.cfg.image_size // self.latent_downsample
        x = torch.randn(b, self.cfg.latent_channels, s, s, generator=gen).to(self.device, cond.dtype)
        ts = torch.linspace(1.0, 0.0, steps + 1)
        for i in range(steps):
            t = torch.full((2 * b,), float(ts[i]), device=self.device)
            v_c, v_u = self.velocity(torch.cat([x, x]), t, cond).chunk(2)
            x = x + (ts[i + 1] - ts[i]).item() * (v_u + scale * (v_c - v_u))
        if return_latents:
            return x
        img = self.vae.decode(x / self.cfg.scaling_factor).sample
        img = ((img.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(im) for im in img]


def build_openuni(size: str = "1.6b", tokenizer=None, mllm_path: str | None = None, **overrides: Any) -> OpenUni:
    """OpenUni with random weights (``size`` = "1.6b" | "3.6b" | "tiny"); ``mllm_path``: an
    InternVL3-hf folder or hub id (tokenizer + frozen MLLM via ``from_pretrained``)."""
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
            tokenizer = tiny_tokenizer([IMG_START])
        elif mllm_path is None:
            raise ValueError(f"mllm_path (InternVL3-hf folder or hub id) is needed for size {size!r}; or pass tokenizer=")
        else:
            from transformers import AutoTokenizer
            tokenizer = AutoTokenizer.from_pretrained(mllm_path, padding_side="right")
    if mllm_path is not None:
        from transformers import InternVLModel
        lmm = InternVLModel.from_pretrained(mllm_path)
    return OpenUni(cfg, tokenizer, lmm)
