"""The tiny UMM families (tiny-showo, tiny-harmon): losses, training, generation, wiring, I/O."""

import copy

import numpy as np
import pytest
import torch

from segros.backbones import build_backbone, load_backbone
from segros.data.image_tokenizer import (fit_kmeans_tokenizer, fit_patch_autoencoder, images_to_pixels,
                                         patchify, unpatchify)
from segros.data.shapes import ShapesWorld
from segros.data.tokenizer import build_text_tokenizer, load_text_tokenizer, save_text_tokenizer
from segros.grounding import ground
from segros.supervision import build_supervision, perturb, random_supervision, sample_gamma

SMALL = {
    "tiny-showo": dict(width=64, layers=1, heads=2, intermediate=128, num_codes=32, hint_width=32),
    "tiny-harmon": dict(width=64, layers=1, heads=2, intermediate=128, enc_dim=32, diff_width=64, diff_depth=1),
}
FAMILIES = list(SMALL)


@pytest.fixture(scope="module")
def world():
    w = ShapesWorld(seed=0)
    return w, w.split("pretrain", 8)


@pytest.fixture(scope="module")
def models(world):
    w, scenes = world
    tok = build_text_tokenizer(w.vocabulary())
    imgs = [s.image for s in scenes]
    return {name: build_backbone(name, tokenizer=tok, fit_images=imgs, **cfg) for name, cfg in SMALL.items()}


def t2i_batch(model, scenes):
    return model.t2i_batch([s.image for s in scenes], [s.caption for s in scenes])


def supervisions(model, batch, seed=0):
    """SFT, Reca and SeGroS-style Supervision objects for ``batch`` on the model's grids."""
    g = torch.Generator().manual_seed(seed)
    b, n = batch["input_ids"].shape[0], model.num_image_tokens
    gamma = sample_gamma(model.mask_schedule, b, per=model.gamma_per, generator=g)
    with torch.no_grad():
        z_img = model.embed_image(batch["pixels"]).z_image
        m_bar = ground(model.embed_text(batch["input_ids"]), z_img, batch["text_valid"]).m_bar
    m_tilde = perturb(m_bar, 0.5, generator=g)
    target = m_tilde
    if model.hint_grid_hw != model.target_grid_hw:
        from segros.supervision import resample_map
        target = resample_map(m_tilde, model.hint_grid_hw, model.target_grid_hw)
    segros = build_supervision(m_tilde, eta=0.3, gamma=gamma, target_map=target)
    return {
        "sft": random_supervision(b, n, gamma, eta=0.0, generator=g),
        "reca": random_supervision(b, model.hint_grid_hw[0] * model.hint_grid_hw[1], gamma, eta=1.0, generator=g),
        "segros": segros,
    }


def gather_hints(model, pixels, hint_idx):
    if hint_idx.shape[1] == 0:
        return None
    z = model.embed_image(pixels).z_image
    return torch.gather(z, 1, hint_idx[..., None].expand(-1, -1, z.shape[2]))


@pytest.mark.parametrize("name", FAMILIES)
def test_built_from_config(models, name):
    m = models[name]
    counts = m.num_parameters()
    assert counts["total"] > 0 and counts["llm"] > 0
    with pytest.raises(Exception):
        m.config.width = 3  # frozen dataclass
    assert m.llm.config.hidden_size == 64 and m.width == 64
    assert m.gamma_per == ("sample" if name == "tiny-showo" else "batch")


@pytest.mark.parametrize("name", FAMILIES)
def test_every_loss_is_finite_with_gradients(models, world, name):
    w, scenes = world
    m = copy.deepcopy(models[name]).train()
    batch = t2i_batch(m, scenes[:4])
    for kind, sup in supervisions(m, batch).items():
        if kind == "reca" and m.hint_grid_hw != m.target_grid_hw:   # reca's random mask lives on the target grid
            sup = random_supervision(4, m.num_image_tokens, 0.8, eta=0.0)
            sup.hint_idx = torch.arange(36).expand(4, 36)
        m.zero_grad()
        loss = m.t2i_loss(batch, sup, gather_hints(m, batch["pixels"], sup.hint_idx))
        loss.backward()
        assert torch.isfinite(loss), kind
        grads = [p.grad for p in m.llm.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(gr).all() for gr in grads), kind
    qa = w.qa(scenes[:2])
    i2t = m.i2t_batch([q["image"] for q in qa], [q["question"] for q in qa], [q["answer"] for q in qa])
    assert (i2t["labels"] != -100).sum() >= len(qa)          # every answer is labelled
    for loss in (m.i2t_loss(i2t), m.alignment_loss(batch)):
        m.zero_grad()
        loss.backward()
        assert torch.isfinite(loss) and loss > 0


@pytest.mark.parametrize("name", FAMILIES)
def test_t2i_loss_falls_when_overfitting_one_batch(models, world, name):
    _, scenes = world
    torch.manual_seed(0)
    m = copy.deepcopy(models[name]).train()
    batch = t2i_batch(m, scenes[:4])
    sup = random_supervision(4, m.num_image_tokens, 0.75, eta=0.0, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = m.t2i_loss(batch, sup, None)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


@pytest.mark.parametrize("name", FAMILIES)
def test_generation_is_deterministic_under_a_seed(models, name):
    m = models[name]
    kw = dict(steps=3) if name == "tiny-showo" else dict(num_iter=3, diffusion_steps=4)
    a = m.generate(["a red circle", "two blue squares"], seed=3, **kw)
    b = m.generate(["a red circle", "two blue squares"], seed=3, **kw)
    c = m.generate(["a red circle", "two blue squares"], seed=4, **kw)
    assert len(a) == 2 and a[0].size == (64, 64)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    assert not all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, c))


@pytest.mark.parametrize("name", FAMILIES)
def test_answer_returns_strings(models, world, name):
    _, scenes = world
    out = models[name].answer([s.image for s in scenes[:2]], ["what color is the circle", "is there a cube"],
                              max_new_tokens=3)
    assert len(out) == 2 and all(isinstance(a, str) for a in out)


@pytest.mark.parametrize("name", FAMILIES)
def test_attention_mask_wiring(models, name):
    """Fig. 6: hints ignore the text, see each other both ways; text ignores the image tokens."""
    m = models[name].eval()
    torch.manual_seed(0)
    hints = torch.randn(1, 5, m.width)
    img = torch.randn(1, 7, m.width)

    def hidden(text, hints, img):
        t = m.tokenize_prompts([text])
        return m.run_llm([hints, m.embed_text(t["input_ids"]), img], hints.shape[1], t["attention_mask"],
                         img.shape[1], logits=False), t["input_ids"].shape[1]

    with torch.no_grad():
        a, la = hidden("a red circle", hints, img)
        b, lb = hidden("two blue squares above a green triangle", hints, img)
        assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6)            # hints: independent of text
        assert not torch.allclose(a[:, -7:], b[:, -7:], atol=1e-4)      # image tokens see the text
        hints2 = hints.clone()
        hints2[:, -1] += torch.randn(m.width)  # not a constant: LayerNorm would erase it
        c, _ = hidden("a red circle", hints2, img)
        assert not torch.allclose(a[:, 0], c[:, 0], atol=1e-4)          # hint 0 sees the last hint
        img2 = img + torch.randn_like(img)
        d, _ = hidden("a red circle", hints, img2)
        assert torch.allclose(a[:, :5 + la], d[:, :5 + la], atol=1e-6)  # text never sees the image


@pytest.mark.parametrize("name", FAMILIES)
def test_save_load_round_trip(models, world, name, tmp_path):
    _, scenes = world
    m = models[name].eval()
    m.save_pretrained(tmp_path)
    r = load_backbone(str(tmp_path))
    assert type(r) is type(m) and r.config == m.config
    batch = t2i_batch(m, scenes[:3])
    sup = random_supervision(3, m.num_image_tokens, 0.8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(m.embed_image(batch["pixels"]).z_image, r.embed_image(batch["pixels"]).z_image)
        torch.manual_seed(1)
        l1 = m.t2i_loss(batch, sup, None)
        torch.manual_seed(1)
        l2 = r.t2i_loss(batch, sup, None)
    assert torch.equal(l1, l2)
    kw = dict(steps=2) if name == "tiny-showo" else dict(num_iter=2, diffusion_steps=3)
    assert np.array_equal(np.asarray(m.generate(["a red circle"], seed=0, **kw)[0]),
                          np.asarray(r.generate(["a red circle"], seed=0, **kw)[0]))
    size = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    assert size < 20e6


def test_from_pretrained_rejects_the_other_family(models, tmp_path):
    models["tiny-showo"].save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="tiny-showo"):
        type(models["tiny-harmon"]).from_pretrained(str(tmp_path))


def test_bad_supervision_shapes_and_unequal_visible_counts(models, world):
    _, scenes = world
    batch = t2i_batch(models["tiny-showo"], scenes[:2])
    sup = random_supervision(2, 10, 0.8)
    for m in models.values():
        with pytest.raises(ValueError, match="supervision"):
            m.t2i_loss(batch, sup, None)
    h = models["tiny-harmon"]
    sup = random_supervision(2, 64, torch.tensor([0.7, 0.9]))
    with pytest.raises(ValueError, match="sample 1"):
        h.t2i_loss(batch, sup, None)


def test_text_tokenizer_round_trip(world, tmp_path):
    w, scenes = world
    tok = build_text_tokenizer(w.vocabulary())
    assert [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id, tok.sep_token_id] == [0, 1, 2, 3, 4]
    for s in scenes:
        ids = tok(s.caption)["input_ids"]
        assert ids[0] == 1 and ids[-1] == 2 and tok.unk_token_id not in ids
        assert tok.decode(ids, skip_special_tokens=True) == " ".join(s.caption.lower().replace(".", " .").split())
    save_text_tokenizer(tok, tmp_path / "tok")
    again = load_text_tokenizer(str(tmp_path / "tok"))
    assert again.get_vocab() == tok.get_vocab()
    assert again("A red circle")["input_ids"] == tok("a red circle")["input_ids"]
    assert tok("a zebra")["input_ids"][2] == tok.unk_token_id


def test_image_tokenizers_round_trip():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 16, 16, generator=g)
    assert torch.equal(unpatchify(patchify(x, 8), 8, (2, 2)), x)
    # k-means with as many codes as distinct patches reproduces them exactly
    kt = fit_kmeans_tokenizer(x, num_codes=12, patch=8, seed=0)
    assert torch.allclose(kt.decode(kt.encode(x)), x, atol=1e-6)
    # PCA with enough channels for data of rank 4 reproduces it exactly
    basis = torch.rand(4, 192, generator=g)
    patches = torch.rand(40, 4, generator=g) @ basis
    img = unpatchify(patches.reshape(10, 4, 192), 8, (2, 2))
    ae = fit_patch_autoencoder(img, channels=4, patch=8)
    assert torch.allclose(ae.decode(ae.encode(img)), img, atol=1e-4)
    assert not torch.allclose(fit_patch_autoencoder(img, 2, 8).decode(fit_patch_autoencoder(img, 2, 8).encode(img)), img, atol=1e-3)
    with pytest.raises(ValueError, match="images\\[1\\]"):
        images_to_pixels([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8)])


# ---- the alignment stage (tiny_common module docstring; docs/conventions.md) -------------------

def reference_alignment_loss(zt, zi, valid, shared, tau, weight):
    """Loop version of the alignment stage on given embeddings, float64."""
    zt = torch.nn.functional.normalize(zt.double(), dim=-1)
    zi = torch.nn.functional.normalize(zi.double(), dim=-1)
    b = zt.shape[0]
    floor_terms = [max(float(zt[a, l] @ zi[c, n]), 0.0) ** 2
                   for a in range(b) for l in range(zt.shape[1]) if shared[a, l]
                   for c in range(b) for n in range(zi.shape[1])]
    loss = weight * sum(floor_terms) / len(floor_terms) if floor_terms else 0.0
    words = [[l for l in range(zt.shape[1]) if valid[a, l] and not shared[a, l]] for a in range(b)]
    kept = [a for a in range(b) if words[a]]
    t2i = torch.zeros(len(kept), len(kept), dtype=torch.float64)
    i2t = torch.zeros(len(kept), len(kept), dtype=torch.float64)
    for i, a in enumerate(kept):
        for j, c in enumerate(kept):
            sims = [[float(zt[a, l] @ zi[c, n]) for n in range(zi.shape[1])] for l in words[a]]
            t2i[i, j] = sum(max(row) for row in sims) / len(words[a])
            i2t[i, j] = sum(max(col) for col in zip(*sims)) / zi.shape[1]
    target = torch.arange(len(kept))
    ce = torch.nn.functional.cross_entropy
    return loss + 0.5 * (float(ce(t2i / tau, target)) + float(ce(i2t.T / tau, target)))


def test_shared_words_by_hand(models):
    m = models["tiny-showo"]
    ids = torch.tensor([[5, 6, 7, 0], [5, 8, 9, 9], [5, 6, 10, 0]])
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    # id 5 in 3/3 captions, id 6 in 2/3 (> 0.5), the rest in 1/3; padding is never shared
    expected = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    assert torch.equal(m.shared_words(ids, valid), expected)


@pytest.mark.parametrize("name", FAMILIES)
def test_alignment_loss_matches_loop_reference(models, world, name):
    _, scenes = world
    m = models[name].eval()
    batch = t2i_batch(m, scenes[:4])
    with torch.no_grad():
        got = float(m.alignment_loss(batch))
        zt = m.embed_text(batch["input_ids"])
        zi = m.embed_image(batch["pixels"]).z_image
    shared = m.shared_words(batch["input_ids"], batch["text_valid"])
    assert shared.any() and (batch["text_valid"] & ~shared).any()
    want = reference_alignment_loss(zt, zi, batch["text_valid"], shared, m.config.align_temperature,
                                    m.config.align_shared_weight)
    assert got == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("name", FAMILIES)
def test_alignment_loss_does_not_train_the_encoder(models, world, name):
    """Stop-gradient into the visual encoder; the projection and text embeddings get gradients."""
    _, scenes = world
    m = copy.deepcopy(models[name]).train()
    m.alignment_loss(t2i_batch(m, scenes[:4])).backward()
    encoder = m.hint_encoder if name == "tiny-showo" else m.mar_encoder
    projector = m.mm_projector if name == "tiny-showo" else m.proj_in
    assert all(p.grad is None for p in encoder.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in projector.parameters())
    assert m.llm.get_input_embeddings().weight.grad.abs().sum() > 0


def test_alignment_loss_needs_two_captions(models, world):
    _, scenes = world
    m = models["tiny-harmon"]
    batch = t2i_batch(m, scenes[:2])
    batch["text_valid"] = batch["text_valid"].clone()
    batch["text_valid"][1] = False
    with pytest.raises(ValueError, match="at least 2 samples"):
        m.alignment_loss(batch)
