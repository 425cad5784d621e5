"""Tests of segros.attention: the Fig. 6 / §8.2 mask, its FlexAttention form, and its use in transformers."""

import pytest
import torch

from segros.attention import (
    SequenceLayout,
    forward_with_mask,
    segros_attention_mask,
    segros_block_mask,
)


def loop_mask(n_hint, valid_rows, n_image):
    """Reference mask written with explicit loops. valid_rows: list of lists of 0/1 (text slots)."""
    out = []
    for valid in valid_rows:
        L = len(valid)
        S = n_hint + L + n_image
        kind = ["hint"] * n_hint + ["text"] * L + ["image"] * n_image
        real = [True] * n_hint + [bool(v) for v in valid] + [True] * n_image
        rows = []
        for q in range(S):
            row = []
            for k in range(S):
                if not real[q]:
                    ok = q == k
                elif not real[k]:
                    ok = False
                elif kind[q] == "hint":
                    ok = kind[k] == "hint"
                elif kind[q] == "text":
                    ok = kind[k] == "hint" or (kind[k] == "text" and k <= q)
                else:
                    ok = True
                row.append(ok)
            rows.append(row)
        out.append([rows])
    return torch.tensor(out, dtype=torch.bool)


def rows_from_lengths(lengths, L, side):
    if side == "right":
        return [[1] * n + [0] * (L - n) for n in lengths]
    return [[0] * (L - n) + [1] * n for n in lengths]


CASES = [
    # n_hint, lengths, n_image, side, text_len
    (3, [4, 2, 0], 5, "right", None),
    (3, [4, 2, 1], 5, "left", None),
    (0, [3, 1], 4, "right", None),
    (2, [2, 2], 0, "right", 5),
    (1, [5], 3, "left", 6),
]


@pytest.mark.parametrize("n_hint,lengths,n_image,side,text_len", CASES)
def test_mask_matches_loop_reference(n_hint, lengths, n_image, side, text_len):
    L = text_len if text_len is not None else max(lengths)
    ref = loop_mask(n_hint, rows_from_lengths(lengths, L, side), n_image)
    got = segros_attention_mask(n_hint, lengths, n_image, text_len=text_len, padding_side=side, as_bool=True)
    assert got.dtype == torch.bool
    assert got.shape == ref.shape
    assert torch.equal(got, ref)


def test_two_d_mask_any_padding_pattern():
    valid = [[1, 0, 1, 1, 0], [0, 1, 1, 0, 1], [1, 1, 1, 1, 1]]
    ref = loop_mask(2, valid, 3)
    got = segros_attention_mask(2, torch.tensor(valid), 3, as_bool=True, padding_side="left")
    assert torch.equal(got, ref)
    got_bool = segros_attention_mask(2, torch.tensor(valid, dtype=torch.bool), 3, as_bool=True)
    assert torch.equal(got_bool, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_float_and_bool_agree(dtype):
    allowed = segros_attention_mask(2, [3, 1], 4, as_bool=True)
    additive = segros_attention_mask(2, [3, 1], 4, dtype=dtype)
    assert additive.dtype == dtype
    assert torch.equal(additive == 0, allowed)
    assert torch.all(additive[~allowed] == torch.finfo(dtype).min)


def test_every_row_has_an_allowed_key_and_softmax_is_finite():
    m = segros_attention_mask(2, [0, 3, 1], 2)
    scores = torch.randn(m.shape, generator=torch.Generator().manual_seed(0)) + m
    assert torch.isfinite(torch.softmax(scores, dim=-1)).all()


def test_layout_slices_and_segments():
    lay = SequenceLayout(3, 4, 5)
    assert lay.length == 12
    x = torch.arange(12)
    assert x[lay.hint].tolist() == [0, 1, 2]
    assert x[lay.text].tolist() == [3, 4, 5, 6]
    assert x[lay.image].tolist() == [7, 8, 9, 10, 11]
    assert lay.segment_ids().tolist() == [0] * 3 + [1] * 4 + [2] * 5
    with pytest.raises(ValueError, match="n_hint"):
        SequenceLayout(-1, 2, 2)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"text_lengths\[1\]"):
        segros_attention_mask(2, [3, 5], 2, text_len=4)
    with pytest.raises(ValueError, match=r"text_lengths\[0\]"):
        segros_attention_mask(2, [-1, 2], 2)
    with pytest.raises(ValueError, match="padding_side"):
        segros_attention_mask(2, [1], 2, padding_side="middle")
    with pytest.raises(ValueError, match="text_lengths"):
        segros_attention_mask(2, torch.zeros(2, 2, 2, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="text_lengths"):
        segros_attention_mask(2, torch.tensor([[0, 2]]), 2)
    with pytest.raises(ValueError, match="text_len"):
        segros_attention_mask(2, torch.tensor([[1, 1]]), 2, text_len=3)


@pytest.mark.parametrize("n_hint,lengths,n_image,side,text_len", CASES)
def test_block_mask_matches_dense(n_hint, lengths, n_image, side, text_len):
    dense = segros_attention_mask(n_hint, lengths, n_image, text_len=text_len, padding_side=side, as_bool=True)
    bm = segros_block_mask(n_hint, lengths, n_image, text_len=text_len, padding_side=side, block_size=4)
    B, _, S, _ = dense.shape
    assert bm.shape == (B, 1, S, S)
    got = torch.zeros_like(dense)
    for b in range(B):
        for q in range(S):
            for k in range(S):
                got[b, 0, q, k] = bool(bm.mask_mod(torch.tensor(b), torch.tensor(0), torch.tensor(q), torch.tensor(k)))
    assert torch.equal(got, dense)
    # block level: a block is present in the BlockMask iff some pair inside it is allowed
    blocks = bm.to_dense()  # [B, 1, ceil(S/4), ceil(S/4)]
    nb = -(-S // 4)
    for b in range(B):
        for i in range(nb):
            for j in range(nb):
                any_allowed = bool(dense[b, 0, 4 * i:4 * i + 4, 4 * j:4 * j + 4].any())
                assert bool(blocks[b, 0, i, j]) == any_allowed


@pytest.mark.filterwarnings("ignore:flex_attention called without")
def test_flex_attention_eager_matches_sdpa_with_dense_mask():
    from torch.nn.attention.flex_attention import flex_attention

    g = torch.Generator().manual_seed(0)
    lengths, n_hint, n_image = [4, 2], 3, 5
    dense = segros_attention_mask(n_hint, lengths, n_image, as_bool=True)
    bm = segros_block_mask(n_hint, lengths, n_image)
    S = dense.shape[-1]
    q, k, v = (torch.randn(2, 2, S, 8, generator=g) for _ in range(3))
    out_flex = flex_attention(q, k, v, block_mask=bm)
    out_sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=dense)
    assert torch.allclose(out_flex, out_sdpa, atol=1e-5)


# ---- inside a tiny transformers model -------------------------------------------------------

def tiny_model(family, attn):
    torch.manual_seed(0)
    if family == "qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        cfg = Qwen2Config(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
        cfg._attn_implementation = attn
        model = Qwen2ForCausalLM(cfg)
    else:
        from transformers import PhiConfig, PhiForCausalLM

        cfg = PhiConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=64)
        cfg._attn_implementation = attn
        model = PhiForCausalLM(cfg)
    return model.eval()


N_HINT, LENGTHS, N_IMAGE = 3, [5, 3], 4
TEXT_LEN = max(LENGTHS)


def run(model, x):
    mask = segros_attention_mask(N_HINT, LENGTHS, N_IMAGE)
    with torch.no_grad():
        return forward_with_mask(model, x, mask).logits


def make_inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(len(LENGTHS), N_HINT + TEXT_LEN + N_IMAGE, 32, generator=g)


def perturb(x, b, pos):
    y = x.clone()
    y[b, pos] += torch.randn(32, generator=torch.Generator().manual_seed(100 + pos))
    return y


def changed(a, b):
    return (a - b).abs().max().item() > 1e-4


def same(a, b):
    return torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("family,attn", [("qwen2", "eager"), ("qwen2", "sdpa"), ("phi", "eager"), ("phi", "sdpa")])
def test_mask_semantics_in_transformers_model(family, attn):
    model = tiny_model(family, attn)
    lay = SequenceLayout(N_HINT, TEXT_LEN, N_IMAGE)
    x = make_inputs()
    base = run(model, x)
    assert torch.isfinite(base).all()
    for b, n_real in enumerate(LENGTHS):
        text_pos = [lay.text.start + j for j in range(n_real)]
        pad_pos = [lay.text.start + j for j in range(n_real, TEXT_LEN)]
        image_pos = list(range(lay.image.start, lay.length))
        real_pos = list(range(N_HINT)) + text_pos + image_pos
        # text and image changes never reach the hints
        for p in text_pos + image_pos:
            out = run(model, perturb(x, b, p))
            assert same(out[b, lay.hint], base[b, lay.hint]), (b, p)
        # later text does not change earlier text; it does change itself
        for j, p in enumerate(text_pos):
            out = run(model, perturb(x, b, p))
            assert same(out[b, text_pos[0]:p], base[b, text_pos[0]:p]), (b, p)
            assert changed(out[b, p], base[b, p]), (b, p)
        # image tokens see every real token
        for p in real_pos:
            out = run(model, perturb(x, b, p))
            assert changed(out[b, lay.image], base[b, lay.image]), (b, p)
        # padding content never changes a real output
        for p in pad_pos:
            out = run(model, perturb(x, b, p))
            assert same(out[b, real_pos], base[b, real_pos]), (b, p)
        # the other sample is untouched
        out = run(model, perturb(x, b, real_pos[0]))
        assert same(out[1 - b], base[1 - b])


def test_eager_and_sdpa_agree_under_the_mask():
    x = make_inputs()
    a = run(tiny_model("qwen2", "eager"), x)
    b = run(tiny_model("qwen2", "sdpa"), x)
    assert torch.allclose(a, b, atol=1e-5)


def test_custom_mask_differs_from_default_causal():
    # the 4-D mask must really be used: hints see each other both ways, unlike the default causal mask
    model = tiny_model("qwen2", "sdpa")
    x = make_inputs()
    with torch.no_grad():
        default = model(inputs_embeds=x).logits
    assert changed(run(model, x)[:, 0], default[:, 0])


def test_forward_with_mask_accepts_bool_mask_and_checks_shape():
    model = tiny_model("qwen2", "eager")
    x = make_inputs()
    allowed = segros_attention_mask(N_HINT, LENGTHS, N_IMAGE, as_bool=True)
    with torch.no_grad():
        out = forward_with_mask(model, x, allowed).logits
    assert same(out, run(model, x))
    with pytest.raises(ValueError, match="mask"):
        forward_with_mask(model, x, allowed[:, :, :-1])
