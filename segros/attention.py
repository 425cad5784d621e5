"""§8.2 and Fig. 6 of the paper: the attention mask of the SeGroS sequence.

The sequence that the unified transformer sees during SeGroS training is (§8.2, Fig. 6)::

    [ n_hint visual hints | text_len text slots (padded) | n_image corrupted-image tokens ]
      hint = slice(0, n_hint)   text = slice(n_hint, n_hint + text_len)   image = the rest

Rules (row = query, column = key; "allowed" means the query may attend to the key):

* hint  -> hint:   allowed, bidirectional ("attend exclusively within their own sequence in a
  bidirectional manner, while remaining independent of subsequent text or corrupted inputs").
* text  -> hint:   allowed ("fully attend to the preceding Visual Hints").
* text  -> text:   causal, key position <= query position ("a standard causal mask over the
  text sequence"); a text token sees itself.
* image -> all:    allowed ("full bidirectional attention over the entire sequence"): every real
  hint, every real text token and every image token, before or after.
* anything else (hint -> text, hint -> image, text -> image): blocked.

Padding (only inside the text block; a padding key is blocked, a padding query sees itself), the
slot-index causality and the default position ids are conventions of ours:
``docs/conventions.md``, "The attention mask".

How to feed the mask to a transformers 5.x model (read from ``transformers/masking_utils.py``,
``_preprocess_mask_arguments``): a 4-D ``attention_mask`` tensor (or a ``BlockMask``) is returned
as-is by ``create_causal_mask`` and reaches every attention layer unchanged; no causal mask is
added on top. The eager attention of Qwen2 / Phi *adds* the mask to the scores
(``attn_weights + attention_mask``), so eager needs the additive float mask (a bool mask would be
added as 0/1 and block nothing). SDPA accepts both a bool mask (True = allowed) and the additive
float mask, and since a mask is given it runs with ``is_causal=False``. The float mask is thus the
form that works for both; its dtype should match the model's compute dtype (``dtype=`` argument,
or let :func:`forward_with_mask` convert it). ``position_ids`` are optional: without them the model
uses ``arange(S)``. Call::

    mask = segros_attention_mask(n_hint, attention_mask_2d, n_image, dtype=model.dtype)
    out = forward_with_mask(model, inputs_embeds, mask)     # == model(inputs_embeds=..., attention_mask=mask, ...)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

HINT, TEXT, IMAGE = 0, 1, 2  # segment ids


@dataclass(frozen=True)
class SequenceLayout:
    """Where hints, text and corrupted-image tokens sit in the SeGroS sequence (Fig. 6)."""

    n_hint: int
    text_len: int
    n_image: int

    def __post_init__(self) -> None:
        for name in ("n_hint", "text_len", "n_image"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")

    @property
    def hint(self) -> slice:
        return slice(0, self.n_hint)

    @property
    def text(self) -> slice:
        return slice(self.n_hint, self.n_hint + self.text_len)

    @property
    def image(self) -> slice:
        return slice(self.n_hint + self.text_len, self.length)

    @property
    def length(self) -> int:
        return self.n_hint + self.text_len + self.n_image

    def segment_ids(self, device=None) -> torch.Tensor:
        """[S] long: 0 for hint slots, 1 for text slots, 2 for image slots."""
        return torch.cat([
            torch.full((self.n_hint,), HINT, dtype=torch.long, device=device),
            torch.full((self.text_len,), TEXT, dtype=torch.long, device=device),
            torch.full((self.n_image,), IMAGE, dtype=torch.long, device=device),
        ])


def _text_valid(text_lengths, text_len, padding_side, device) -> torch.Tensor:
    """[B, L] bool, True on real text slots, from per-sample lengths or a 2-D attention mask."""
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    t = torch.as_tensor(text_lengths, device=device)
    if t.ndim == 2:  # a [B, L] attention mask, 1 = real; any padding pattern
        if t.dtype != torch.bool and (t.dtype.is_floating_point or t.dtype.is_complex):
            raise ValueError(f"text_lengths as a 2-D mask must be bool or int, got {t.dtype}")
        if t.dtype != torch.bool and not bool(((t == 0) | (t == 1)).all()):
            raise ValueError("text_lengths as a 2-D mask must contain only 0 and 1")
        if text_len is not None and text_len != t.shape[1]:
            raise ValueError(f"text_len={text_len} disagrees with the 2-D text_lengths mask width {t.shape[1]}")
        return t.bool()
    if t.ndim != 1:
        raise ValueError(f"text_lengths must be 1-D lengths [B] or a 2-D mask [B, L], got shape {tuple(t.shape)}")
    if t.dtype == torch.bool or t.dtype.is_floating_point or t.dtype.is_complex:
        raise ValueError(f"text_lengths as lengths must be integers, got {t.dtype}")
    if t.numel() == 0:
        raise ValueError("text_lengths must hold at least one sample")
    bad = (t < 0).nonzero()
    if len(bad):
        raise ValueError(f"text_lengths[{int(bad[0])}] = {int(t[bad[0]])} is negative")
    longest = int(t.max())
    if text_len is None:
        text_len = longest
    if text_len < longest:
        i = int(t.argmax())
        raise ValueError(f"text_lengths[{i}] = {longest} exceeds text_len = {text_len}")
    slot = torch.arange(text_len, device=device)
    if padding_side == "right":
        return slot[None, :] < t[:, None]
    return slot[None, :] >= (text_len - t)[:, None]


def _layout_and_real(n_hint, text_lengths, n_image, text_len, padding_side, device):
    """The layout, segment ids [S] and the real-token flags [B, S] of a batch."""
    valid = _text_valid(text_lengths, text_len, padding_side, device)
    layout = SequenceLayout(n_hint, valid.shape[1], n_image)
    b = valid.shape[0]
    real = torch.cat([
        torch.ones(b, n_hint, dtype=torch.bool, device=valid.device),
        valid,
        torch.ones(b, n_image, dtype=torch.bool, device=valid.device),
    ], dim=1)
    return layout, layout.segment_ids(valid.device), real


def _make_mask_mod(seg: torch.Tensor, real: torch.Tensor):
    """mask_mod(b, h, q, k) -> allowed, the Fig. 6 rule on index tensors (broadcasting or vmapped)."""

    def mask_mod(b, h, q, k):
        sq, sk = seg[q], seg[k]
        rule = (
            ((sq == HINT) & (sk == HINT))
            | ((sq == TEXT) & (sk == HINT))
            | ((sq == TEXT) & (sk == TEXT) & (k <= q))
            | (sq == IMAGE)
        )
        real_q, real_k = real[b, q], real[b, k]
        return (real_q & real_k & rule) | (~real_q & (q == k))

    return mask_mod


def segros_attention_mask(n_hint: int, text_lengths, n_image: int, *, text_len: int | None = None,
                          padding_side: str = "right", dtype: torch.dtype = torch.float32, device=None,
                          as_bool: bool = False) -> torch.Tensor:
    """The Fig. 6 / §8.2 mask of a batch, [B, 1, S, S] with S = n_hint + text_len + n_image.

    ``text_lengths``: 1-D per-sample text lengths (padded on ``padding_side`` up to ``text_len``,
    default the longest length), or a 2-D [B, L] bool/int attention mask (1 = real) that overrides
    ``padding_side`` and ``text_len`` and allows any padding pattern.

    Returns an additive float mask (0 = allowed, ``torch.finfo(dtype).min`` = blocked) that
    transformers models take as a 4-D ``attention_mask``, or a bool mask (True = allowed) when
    ``as_bool``. Padding queries attend to themselves only (see the module docstring).
    """
    _, seg, real = _layout_and_real(n_hint, text_lengths, n_image, text_len, padding_side, device)
    s = seg.shape[0]
    idx = torch.arange(s, device=seg.device)
    b = torch.arange(real.shape[0], device=seg.device)
    allowed = _make_mask_mod(seg, real)(b[:, None, None, None], None, idx[None, None, :, None],
                                        idx[None, None, None, :])
    if as_bool:
        return allowed
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype for the additive mask, got {dtype}")
    return bool_to_additive(allowed, dtype)


def bool_to_additive(allowed: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """True -> 0, False -> torch.finfo(dtype).min (the additive form eager attention adds to scores)."""
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    blocked = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, blocked)


def segros_block_mask(n_hint: int, text_lengths, n_image: int, *, text_len: int | None = None,
                      padding_side: str = "right", device=None, block_size: int = 128):
    """The same mask as a FlexAttention ``BlockMask`` (built with ``create_block_mask``, no compile).

    Checked on CPU with torch 2.13: ``create_block_mask`` works without compiling, and
    ``flex_attention`` runs eagerly (unfused, it materialises the scores and warns); on a GPU wrap
    ``flex_attention`` in ``torch.compile`` for the fused kernel. ``BlockMask.to_dense()`` is only
    block-level; evaluate ``block_mask.mask_mod`` on index pairs for the token-level mask.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    _, seg, real = _layout_and_real(n_hint, text_lengths, n_image, text_len, padding_side, device)
    s = seg.shape[0]
    return create_block_mask(_make_mask_mod(seg, real), B=real.shape[0], H=None, Q_LEN=s, KV_LEN=s,
                             device=seg.device, BLOCK_SIZE=block_size)


def forward_with_mask(model, inputs_embeds: torch.Tensor, mask: torch.Tensor, position_ids=None, **kwargs):
    """Run a transformers model (e.g. Qwen2ForCausalLM, PhiForCausalLM) on the SeGroS sequence.

    ``mask``: [B, 1, S, S] from :func:`segros_attention_mask`, bool (True = allowed) or additive
    float; it is converted to the additive form in ``inputs_embeds.dtype`` (what eager attention
    needs; SDPA takes it too). transformers 5.x passes a 4-D mask through unchanged (no causal mask
    is added). ``position_ids`` default to ``arange(S)`` (the slot index). Returns the model output.
    """
    if inputs_embeds.ndim != 3:
        raise ValueError(f"inputs_embeds must be [B, S, D], got shape {tuple(inputs_embeds.shape)}")
    b, s, _ = inputs_embeds.shape
    if mask.ndim != 4 or mask.shape[0] != b or mask.shape[1] != 1 or mask.shape[2:] != (s, s):
        raise ValueError(f"mask must be [B, 1, S, S] = [{b}, 1, {s}, {s}], got shape {tuple(mask.shape)}")
    allowed = mask if mask.dtype == torch.bool else mask == 0
    additive = bool_to_additive(allowed.to(inputs_embeds.device), inputs_embeds.dtype)
    if position_ids is None:
        position_ids = torch.arange(s, device=inputs_embeds.device)[None].expand(b, s)
    return model(inputs_embeds=inputs_embeds, attention_mask=additive, position_ids=position_ids, **kwargs)
