"""The readings of docs/fidelity.md that live in the method: the grounding text without function words
(Fig. 3), classifier-free-guidance dropout on the hinted paths, the frozen text embeddings of §8.1,
and the config hashes these defaults change."""

import hashlib
import json
import os

import pytest
import torch

from fake_backbone import FakeBackbone, data as fake_data
from segros import paper, store
from segros.backbones.registry import build_backbone
from segros.pipeline import base_config
from segros.presets import METHOD_NEUTRAL, PAPER_KEYS, TrainConfig, get_preset
from segros.train import TrainData, make_t2i_batch, t2i_step, train
from segros.train.steps import (grounding_text, grounding_valid, hinted_loss, prepare_text_embeddings,
                                text_embedding_module)
from segros.vocab import STOPWORDS, is_stopword, stopword_mask


def fake_config(**kw):
    base = dict(backbone="fake", n_train=48, n_qa_train=48, batch_size=8, max_steps=6, log_every=2, ckpt_every=3,
                lr=3e-2, warmup_steps=0, eval_prompts=12, eval_seeds=(0,), eval_qa=8, mask_schedule="uniform",
                gamma_per="batch")
    base.update(kw)
    return TrainConfig(**base)


def fake_train_data(n=48):
    t2i, qa = fake_data(n, seed=1)
    return TrainData(t2i, [(q["image"], q["question"], q["answer"]) for q in qa])


# -----------------------------------------------------------------------------
# stopwords (Fig. 3: "Text scores exclude non-semantic functional stopwords")

class Pieces:
    """A byte-level-BPE-like decode: a piece that starts a word carries its leading space."""

    PIECES = {1: " a", 2: " red", 3: " cu", 4: "be", 5: " an", 6: "other", 7: " of", 8: " the", 9: " left", 10: ","}

    def decode(self, ids):
        return "".join(self.PIECES[int(i)] for i in ids)


def test_stopwords_are_words_not_pieces():
    # " an" + "other" is the word "another" (kept), though its first piece alone would be "an"
    ids = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0]])
    valid = torch.tensor([[False] + [True] * 10 + [False]])
    mask = stopword_mask(ids, valid, Pieces().decode)
    assert mask[0].tolist() == [False, True, False, False, False, False, False, True, True, False, False, False]
    # a piece-level rule ("is this piece a stopword") would drop " an" of "another"
    assert is_stopword(Pieces.PIECES[5]) and not mask[0, 5]
    # relation words, numbers and colours are content words; function words go
    assert {"a", "an", "the", "of", "on", "to", "and", "with"} <= STOPWORDS
    assert not {"left", "right", "above", "below", "two", "red", "photo", "square"} & STOPWORDS
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        stopword_mask(ids[0], valid[0], Pieces().decode)


def test_stopwords_with_the_tiny_tokenizer_and_the_grounding_mask():
    """Every tokenizer family goes through the same rule (the tiny word-level one here); the
    grounding mask drops the function words only when ``stopwords`` is on."""
    bb = build_backbone("tiny-showo", width=32, layers=1, heads=2, intermediate=64, num_codes=16, hint_width=16,
                        n_fit=16)
    batch = bb.tokenize_prompts(["a photo of a red square to the left of a blue star", "two green circles"])
    on = grounding_valid(bb, batch, TrainConfig(backbone="tiny-showo"))
    off = grounding_valid(bb, batch, TrainConfig(backbone="tiny-showo", stopwords=False))
    assert torch.equal(off, batch["text_valid"].bool())
    words = [bb.tokenizer.convert_ids_to_tokens(row[v].tolist()) for row, v in zip(batch["input_ids"], on)]
    assert words == [["photo", "red", "square", "left", "blue", "star"], ["two", "green", "circles"]]


def test_segros_step_grounds_without_stopwords():
    """The map the step builds equals the map of the content words, and differs from the map that
    keeps every valid token (the old behaviour)."""
    cfg = fake_config(method="segros", alpha=0.0)
    spy = Spy()
    batch = make_t2i_batch(spy, fake_train_data(16), cfg, 0)
    hints = {}
    for sw in (True, False):
        t2i_step(spy, batch, cfg.replace(stopwords=sw), torch.Generator().manual_seed(0))
        hints[sw] = spy.sup.hint_idx
    assert not torch.equal(hints[True], hints[False])


# -----------------------------------------------------------------------------
# classifier-free-guidance dropout on the hinted paths

class Spy(FakeBackbone):
    """Records every t2i_loss call (batch, supervision, hints) and can drop captions."""

    def __init__(self, p=0.0, **kw):
        super().__init__(**kw)
        self.cond_dropout_prob = p
        self.calls = []

    def t2i_loss(self, batch, supervision, hints):
        self.sup = supervision
        self.calls.append((batch, supervision, hints))
        return super().t2i_loss(batch, supervision, hints)


@pytest.mark.parametrize("method", ["segros", "reca", "reca_hint_filter"])
def test_a_dropped_caption_takes_the_hints_with_it(method):
    cfg = fake_config(method=method)
    spy = Spy(p=1.0).train()
    batch = make_t2i_batch(spy, fake_train_data(16), cfg, 0)
    t2i_step(spy, batch, cfg, torch.Generator().manual_seed(0))
    (b, sup, hints), = spy.calls
    assert hints is None                                  # the old code kept the hints of every row
    assert not b["text_valid"].any() and b["input_ids"].shape[1] == 2   # [BOS][EOS]: the empty prompt
    # the switch keeps the hints
    spy.calls.clear()
    t2i_step(spy, batch, cfg.replace(cond_dropout="caption"), torch.Generator().manual_seed(0))
    (b, sup, hints), = spy.calls
    assert hints is not None and hints.shape[0] == 8 and not b["text_valid"].any()


def test_dropout_rows_and_the_combined_loss():
    """p = 0.5: the rows drawn from the generator go without caption and hints, the others keep both;
    the loss is Σ w·ℓ / Σ w over the two sub-batches. Evaluation mode never drops."""
    cfg = fake_config(method="segros")
    spy = Spy(p=0.5).train()
    batch = make_t2i_batch(spy, fake_train_data(16), cfg, 0)
    z = spy.embed_image(batch["pixels"]).z_image
    sup = t2i_step(spy, batch, cfg.replace(), torch.Generator().manual_seed(3))[1]
    spy.calls.clear()
    gen = torch.Generator().manual_seed(7)
    drop = torch.rand(8, generator=torch.Generator().manual_seed(7)) < 0.5
    assert 0 < int(drop.sum()) < 8
    hints = z[:, :4]
    loss = hinted_loss(spy, batch, sup, hints, cfg, gen)
    (bd, sd, hd), (bk, sk, hk) = spy.calls
    assert hd is None and torch.equal(hk, hints[~drop])
    assert torch.equal(bk["input_ids"], batch["input_ids"][~drop]) and torch.equal(bd["pixels"], batch["pixels"][drop])
    wd, wk = float(sd.loss_weight.sum()), float(sk.loss_weight.sum())
    want = (wd * FakeBackbone.t2i_loss(spy, bd, sd, None) + wk * FakeBackbone.t2i_loss(spy, bk, sk, hk)) / (wd + wk)
    torch.testing.assert_close(loss, want)
    spy.eval()
    spy.calls.clear()
    hinted_loss(spy, batch, sup, hints, cfg, gen)
    assert len(spy.calls) == 1 and spy.calls[0][2] is hints


@pytest.mark.parametrize("family", ["tiny-harmon", "tiny-showo"])
def test_tiny_families_drop_prompts_only_without_hints(family):
    """The family's own dropout is the SFT path's; on a hinted path the method's step drops."""
    small = {"tiny-showo": dict(num_codes=16, hint_width=16), "tiny-harmon": dict(enc_dim=16, diff_width=32,
                                                                                   diff_depth=1)}[family]
    bb = build_backbone(family, width=32, layers=1, heads=2, intermediate=64, n_fit=16, cfg_drop_prob=1.0,
                        **small).train()
    assert bb.cond_dropout_prob == 1.0
    t = bb.tokenize_prompts(["a red square", "two blue stars"])
    ids, am = bb.drop_prompts(t["input_ids"], t["attention_mask"], hints=torch.zeros(2, 3, 32))
    assert torch.equal(ids, t["input_ids"])
    ids, am = bb.drop_prompts(t["input_ids"], t["attention_mask"])
    assert (am.sum(1) == 2).all()


# -----------------------------------------------------------------------------
# §8.1 "frozen internal text embedding layers"

def test_grounding_reads_the_snapshot_while_the_table_trains(tmp_path):
    cfg = fake_config(method="segros")
    bb = FakeBackbone()
    start = bb.tok.weight.detach().clone()
    train(cfg, str(tmp_path / "a"), backbone=bb, data=fake_train_data(), progress=False)
    assert not torch.equal(bb.tok.weight, start)                 # the table trains (the released code)
    assert torch.equal(bb.grounding_text_table, start)           # grounding reads the start's table
    ids = torch.tensor([[3, 4, 5]])
    assert torch.equal(grounding_text(bb, ids, cfg), start[ids])
    # "live" (the old behaviour) reads the trained table
    assert torch.equal(grounding_text(bb, ids, cfg.replace(text_embeddings="live")), bb.tok.weight[ids].detach())


def test_frozen_switch_freezes_the_table(tmp_path):
    cfg = fake_config(method="segros", text_embeddings="frozen")
    bb = FakeBackbone()
    start = bb.tok.weight.detach().clone()
    train(cfg, str(tmp_path / "a"), backbone=bb, data=fake_train_data(), progress=False)
    assert torch.equal(bb.tok.weight, start) and not bb.tok.weight.requires_grad
    assert text_embedding_module(bb) is bb.tok


def test_the_snapshot_survives_a_resume(tmp_path):
    """A resumed run grounds with the snapshot of the run's start (saved in the checkpoint), even in
    a model object built with other weights."""
    cfg = fake_config(method="segros")

    class Stop(Exception):
        pass

    def stop(step):
        if step == 4:
            raise Stop

    a, b = FakeBackbone(), FakeBackbone()
    train(cfg, str(tmp_path / "a"), backbone=a, data=fake_train_data(), progress=False)
    with pytest.raises(Stop):
        train(cfg, str(tmp_path / "b"), backbone=b, data=fake_train_data(), hook=stop, progress=False)
    c = FakeBackbone(seed=99)
    train(cfg, str(tmp_path / "b"), backbone=c, data=fake_train_data(), progress=False)
    assert torch.equal(c.grounding_text_table, a.grounding_text_table)
    for k, v in a.state_dict().items():
        assert torch.equal(v, c.state_dict()[k]), k


def test_paper_note_and_presets_agree_on_the_text_embeddings():
    assert "snapshot" in paper.PaperHyperparams.__doc__ and '"frozen"' in paper.PaperHyperparams.__doc__
    for key in PAPER_KEYS:
        assert get_preset(f"paper-{key}").text_embeddings == "snapshot"
    bb = FakeBackbone()
    prepare_text_embeddings(bb, fake_config(method="sft"))
    assert not hasattr(bb, "grounding_text_table")              # nothing to ground


# -----------------------------------------------------------------------------
# the config hash follows the defaults that change results

def _old_hash(config):
    """The hash the package gave before these fields existed (their keys absent)."""
    d = {k: v for k, v in config.to_dict().items() if k not in METHOD_NEUTRAL}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def test_hashes_change_for_hinted_runs_only():
    small = get_preset("small")
    for method in ("segros", "reca", "reca_hint_filter"):
        c = small.replace(method=method)
        assert store.config_hash(c) != _old_hash(c), method
    for method in ("sft", "none"):
        c = small.replace(method=method)
        assert store.config_hash(c) == _old_hash(c), method
    assert store.config_hash(base_config(small)) == _old_hash(base_config(small))  # the shared base stays
    # "frozen" changes SFT too (the table stops training for every method)
    c = small.replace(method="sft", text_embeddings="frozen")
    assert store.config_hash(c) != _old_hash(c)
    # the committed SFT run keeps its hash
    stored = store.read_json(os.path.join(os.path.dirname(__file__), "..", "runs", "table1", "sft", "config.json"))
    assert stored["hash"] == store.config_hash(small.replace(method="sft"))


# -----------------------------------------------------------------------------
# the real adapters at tiny size: dropout, snapshot and stopwords on their own tokenizers

def _real(family):
    from segros.backbones.harmon import build_harmon
    from segros.backbones.openuni import build_openuni
    from segros.backbones.showo import build_showo
    from segros.data.tokenizer import tiny_tokenizer

    torch.manual_seed(0)
    if family == "harmon":
        return build_harmon("tiny", tokenizer=tiny_tokenizer(), cond_dropout_prob=0.5)
    if family == "showo":
        return build_showo("tiny", cond_dropout_prob=0.5)
    return build_openuni("tiny")


@pytest.mark.parametrize("family", ["harmon", "showo", "openuni"])
def test_real_adapters_hinted_step(family, monkeypatch):
    """A SeGroS step in training mode on each real adapter: rows drawn for dropout reach ``t2i_loss``
    with the unconditional prompt and without hints (OpenUni's adapter has no dropout rate and
    drops nothing); grounding reads the snapshot and the caption's content words."""
    m = _real(family).train()
    batch = m.tokenize_prompts(["a red circle", "two blue squares left of a green cross", "a star", "a cross"])
    batch["pixels"] = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    calls, loss = [], m.t2i_loss

    def spy(b, sup, hints, **kw):
        calls.append((b, hints))
        return loss(b, sup, hints, **kw)

    monkeypatch.setattr(m, "t2i_loss", spy)
    cfg = TrainConfig(method="segros", backbone=family)
    for seed in range(8):  # p = 0.5 over 4 rows: some seed drops some rows and keeps others
        calls.clear()
        out, _, _ = t2i_step(m, batch, cfg, torch.Generator().manual_seed(seed))
        assert torch.isfinite(out)
        if len(calls) == 2:
            break
    if family == "openuni":
        assert len(calls) == 1 and calls[0][1] is not None
    else:
        (bd, hd), (bk, hk) = calls
        assert hd is None and hk is not None and 0 < bd["input_ids"].shape[0] < 4
        assert bd["input_ids"].shape[0] + hk.shape[0] == 4
        empty = m.tokenize_prompts([""] * bd["input_ids"].shape[0])
        assert torch.equal(bd["input_ids"].cpu(), empty["input_ids"])
    assert torch.equal(m.grounding_text_table, text_embedding_module(m).weight)
    words = grounding_valid(m, batch, cfg)
    assert (batch["text_valid"].bool() & ~words).any() and words.any()

