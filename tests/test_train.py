"""The training loop (segros.train), its config and presets (segros.presets), the CLI (segros.train.__main__)."""

import math
import os
import subprocess
import sys

import pytest
import torch

from fake_backbone import FakeBackbone, data as fake_data
from segros import store
from segros.backbones.base import VisualTokens
from segros.backbones.registry import from_config
from segros.grounding import ground
from segros.presets import METHODS, PRESETS, TrainConfig, get_preset
from segros.supervision import perturb, sample_gamma
from segros.train import TrainData, batch_indices, lr_at, make_t2i_batch, micro_schedule, t2i_step, train
from segros.train.steps import grounding_valid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_config(**kw):
    base = dict(backbone="fake", n_train=64, n_qa_train=64, batch_size=8, max_steps=24, log_every=4,
                ckpt_every=8, lr=3e-3, warmup_steps=2, eval_prompts=12, eval_seeds=(0,), eval_qa=8)
    base.update(kw)
    return TrainConfig(**base)


def fake_train_data(n=64, seed=0):
    t2i, qa = fake_data(n, seed)
    return TrainData(t2i, [(q["image"], q["question"], q["answer"]) for q in qa])


# -----------------------------------------------------------------------------
# the loss falls, for every method

@pytest.mark.parametrize("method", [m for m in METHODS if m != "none"])
def test_loss_falls_fake_backbone(tmp_path, method):
    cfg = fake_config(method=method, max_steps=16)
    train(cfg, str(tmp_path), backbone=FakeBackbone(), data=fake_train_data(), progress=False)
    rows = store.read_metrics(str(tmp_path))
    assert [r["step"] for r in rows] == [4, 8, 12, 16]
    assert rows[-1]["loss_t2i"] < 0.75 * rows[0]["loss_t2i"]
    assert rows[-1]["loss_i2t"] < 0.75 * rows[0]["loss_i2t"]
    assert os.path.isfile(tmp_path / "model.safetensors")


@pytest.mark.parametrize("family", ["tiny-harmon", "tiny-showo"])
def test_loss_falls_tiny_family(tmp_path, family):
    """SeGroS on a tiny family overfits one fixed batch: the T2I loss falls."""
    small = {"tiny-showo": dict(width=64, layers=1, heads=2, intermediate=128, num_codes=32, hint_width=32, n_fit=32),
             "tiny-harmon": dict(width=64, layers=1, heads=2, intermediate=128, enc_dim=32, diff_width=64,
                                 diff_depth=1, n_fit=32)}[family]
    cfg = TrainConfig(backbone=family, backbone_kwargs=small, n_train=8, n_qa_train=8, batch_size=8, max_steps=12,
                      log_every=1, ckpt_every=100, lr=3e-3, warmup_steps=0, lam=0.0, i2t_micro=0)
    train(cfg, str(tmp_path), progress=False)
    losses = [r["loss_t2i"] for r in store.read_metrics(str(tmp_path))]
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:3]) / 3


# -----------------------------------------------------------------------------
# the SeGroS step hands the backbone the right Supervision

class Spy(FakeBackbone):
    def t2i_loss(self, batch, supervision, hints):
        self.seen_batch, self.sup, self.hints = batch, supervision, hints
        return super().t2i_loss(batch, supervision, hints)


def step_with_replay(method, **kw):
    """Run one t2i_step and replay its randomness from a cloned generator."""
    coarse = kw.pop("coarse", False)
    cfg = fake_config(method=method, mask_schedule="uniform", gamma_per="batch", **kw)
    spy = Spy(**({"target_patch": 8} if coarse else {}))
    batch = make_t2i_batch(spy, fake_train_data(16), cfg, 0)
    gen = torch.Generator().manual_seed(123)
    replay = torch.Generator().manual_seed(123)
    t2i_step(spy, batch, cfg, gen)
    gamma = sample_gamma("uniform", 8, per="batch", generator=replay)
    return spy, batch, cfg, gamma, replay


def test_segros_step_hints_and_mask_counts():
    spy, batch, cfg, gamma, replay = step_with_replay("segros", eta=0.3)
    N = 16
    assert spy.hints.shape == (8, math.floor(0.3 * N), spy.width)
    assert spy.sup.masked.sum(1).tolist() == [math.floor(gamma * N)] * 8
    # the hints are the top-⌊ηN⌋ tokens of m̃ (replayed), in raster order, gathered from embed_image
    # grounding reads the caption's content words only ("a", "on", "the" of "a red square on the left" go)
    valid = grounding_valid(spy, batch, cfg)
    words = [[spy.words[int(i)] for i in row[v]] for row, v in zip(batch["input_ids"], valid)]
    assert all(len(w) == 3 and w[1] == "square" for w in words), words
    with torch.no_grad():
        z_image = spy.embed_image(batch["pixels"]).z_image
        g = ground(spy.embed_text(batch["input_ids"]), z_image, valid, rho=cfg.rho, tau=cfg.tau)
    m_tilde = perturb(g.m_bar, cfg.alpha, generator=replay)
    top = torch.topk(m_tilde, 4, dim=1).indices.sort(dim=1).values
    assert torch.equal(spy.sup.hint_idx, top)
    torch.testing.assert_close(spy.hints, torch.stack([z_image[b, top[b]] for b in range(8)]))
    assert spy.hints.requires_grad  # hints carry gradient into embed_image
    # the visible tokens are the lowest of m̃: every seen score <= every masked score
    for b in range(8):
        assert m_tilde[b][spy.sup.seen[b]].max() <= m_tilde[b][spy.sup.masked[b]].min()
    # the text is the caption
    assert batch["text_valid"].any() and torch.equal(spy.seen_batch["input_ids"], batch["input_ids"])


def test_top_masked_zeroes_weights():
    spy, *_ = step_with_replay("segros", loss_on="top_masked", loss_top=0.3)
    w = spy.sup.loss_weight
    assert (w[~spy.sup.masked] == 0).all()
    assert (w > 0).sum(1).tolist() == [math.floor(0.3 * 16)] * 8


def test_resampled_target_grid():
    spy, *_ = step_with_replay("segros", coarse=True)
    assert spy.target_grid_hw == (2, 2) and spy.sup.seen.shape == (8, 4)
    assert spy.hints.shape[1] == math.floor(0.3 * 16)


def test_sft_step_no_hints_random_mask():
    spy, batch, cfg, gamma, _ = step_with_replay("sft")
    assert spy.hints is None
    assert spy.sup.masked.sum(1).tolist() == [math.floor(gamma * 16)] * 8
    assert torch.equal(spy.seen_batch["input_ids"], batch["input_ids"])


@pytest.mark.parametrize("method,n_hint", [("reca", 16), ("reca_hint_filter", 4)])
def test_reca_steps_drop_the_text(method, n_hint):
    spy, batch, cfg, gamma, _ = step_with_replay(method, eta=0.3)
    assert spy.hints.shape[1] == n_hint
    assert torch.equal(spy.sup.hint_idx, spy.sup.hint_idx.sort(1).values)
    assert not spy.seen_batch["text_valid"].any()      # empty prompt (Table 9: Text ×)
    assert batch["text_valid"].any()
    assert spy.sup.masked.sum(1).tolist() == [math.floor(gamma * 16)] * 8


class WithExtra(Spy):
    """A family whose image prompt has tokens off the hint grid (as Harmon's MAR buffer)."""

    def embed_image(self, pixels):
        v = super().embed_image(pixels)
        return VisualTokens(v.z_image, v.grid_hw, extra=v.z_image[:, :3] * 2)


def test_reca_conditions_on_the_whole_image_prompt():
    """Reca's hints are VisualTokens.image_prompt(): the grid tokens, then the extra tokens; the SeGroS
    and hint-filter paths gather grid tokens only (the map ranks the grid)."""
    cfg = fake_config(method="reca", mask_schedule="uniform", gamma_per="batch")
    spy = WithExtra()
    batch = make_t2i_batch(spy, fake_train_data(16), cfg, 0)
    t2i_step(spy, batch, cfg, torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = spy.embed_image(batch["pixels"]).z_image
    torch.testing.assert_close(spy.hints, torch.cat([z, z[:, :3] * 2], 1), rtol=0, atol=0)
    assert spy.sup.hint_idx.shape[1] == z.shape[1]  # the supervision indexes the grid
    t2i_step(spy, batch, cfg.replace(method="segros"), torch.Generator().manual_seed(0))
    assert spy.hints.shape[1] == math.floor(0.3 * z.shape[1])
    with pytest.raises(ValueError, match="extra must be"):
        VisualTokens(z, spy.hint_grid_hw, extra=z[0])


def test_one_process_trains_in_several_precisions(tmp_path):
    """A notebook runs an fp32, a bf16 and an fp16 training in a row (accelerate keeps one precision
    per process; the loop owns autocast and the fp16 loss scaler); fp32 repeats bit for bit."""
    runs = {}
    for name, precision in (("a", "fp32"), ("b", "bf16"), ("c", "fp16"), ("d", "fp32")):
        cfg = fake_config(max_steps=3, log_every=1, precision=precision, method="sft")
        train(cfg, str(tmp_path / name), backbone=FakeBackbone(), data=fake_train_data(), progress=False)
        runs[name] = [r["loss"] for r in store.read_metrics(str(tmp_path / name))]
        assert len(runs[name]) == 3 and all(math.isfinite(x) for x in runs[name]), precision
    assert runs["a"] == runs["d"] and runs["a"] != runs["b"]


# -----------------------------------------------------------------------------
# config, presets, schedule, data order

def test_config_validation_messages():
    with pytest.raises(ValueError, match="valid methods: sft, reca, segros, reca_hint_filter"):
        TrainConfig(method="dpo")
    with pytest.raises(ValueError, match="valid keys: .*eta"):
        TrainConfig().replace(etaa=0.3)
    for key, bad in [("eta", 1.5), ("rho", -0.1), ("alpha", -1.0), ("lam", -1.0), ("lr", 0.0), ("tau", 0.0),
                     ("batch_size", 0), ("loss_top", 2.0), ("mask_schedule", "linear"), ("gamma_per", "token"),
                     ("text_filter", "all"), ("betas", (0.9, 1.5))]:
        with pytest.raises(ValueError, match=key):
            TrainConfig().replace(**{key: bad})


def test_replace_coerces_strings():
    c = TrainConfig().replace(eta="0.4", max_steps="7", betas="0.9,0.99", mask_schedule="none", frozen="clip",
                              backbone_kwargs='{"width": 64}', eval_seeds="0,1,2")
    assert (c.eta, c.max_steps, c.betas, c.mask_schedule, c.frozen) == (0.4, 7, (0.9, 0.99), None, ("clip",))
    assert c.backbone_kwargs == {"width": 64} and c.eval_seeds == (0, 1, 2)
    with pytest.raises(ValueError, match="max_steps"):
        TrainConfig().replace(max_steps="many")
    assert TrainConfig.from_dict(c.to_dict()) == c


TABLE7 = {  # the paper's Table 7, typed in from the PDF: lr, wd, betas, steps, warm-up, batch, accum, η, λ, frozen
    "paper-showo-256": (5e-7, 0.01, (0.9, 0.999), 5000, 1000, 4, 5, 0.3, 1.0, ("clip",)),
    "paper-showo-512": (5e-7, 0.01, (0.9, 0.999), 5000, 1000, 2, 20, 0.4, 1.0, ("clip",)),
    "paper-harmon-0.5b": (1e-5, 0.01, (0.9, 0.95), 3000, 500, 96, 2, 0.3, 1.0, ()),
    "paper-harmon-1.5b": (1e-5, 0.01, (0.9, 0.95), 5000, 500, 48, 2, 0.3, 1.0, ()),
    "paper-openuni-1.6b": (1e-5, 0.01, (0.9, 0.95), 5000, 50, 42, 16, 0.3, 0.0, ("lmm",)),
    "paper-openuni-3.6b": (1e-5, 0.01, (0.9, 0.95), 5000, 50, 20, 16, 0.3, 0.0, ("lmm",)),
}


@pytest.mark.parametrize("name", sorted(TABLE7))
def test_paper_presets_follow_table7(name):
    c = get_preset(name)
    got = (c.lr, c.weight_decay, c.betas, c.max_steps, c.warmup_steps, c.batch_size, c.grad_accum, c.eta, c.lam,
           c.frozen)
    assert got == TABLE7[name] and c.rho == 0.4


def test_presets_errors():
    with pytest.raises(ValueError, match="valid presets: small"):
        get_preset("tiny")
    with pytest.raises(RuntimeError, match="checkpoint"):
        from_config(get_preset("paper-showo-256"))
    assert {"small", "small-showo"} <= set(PRESETS)


def test_lr_schedule_and_micro_schedule():
    c = TrainConfig(warmup_steps=4, max_steps=14)
    lrs = [lr_at(s, c) for s in range(14)]
    assert lrs[:4] == [0.2, 0.4, 0.6, 0.8] and lrs[4] == 1.0
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:])) and abs(lr_at(14, c)) < 1e-12
    assert micro_schedule(TrainConfig(grad_accum=2, i2t_micro=2)) == ["t2i", "i2t", "t2i", "i2t"]
    assert micro_schedule(TrainConfig(grad_accum=3, i2t_micro=1)) == ["t2i", "i2t", "t2i", "t2i"]
    assert micro_schedule(TrainConfig(grad_accum=2, i2t_micro=2, lam=0.0)) == ["t2i", "t2i"]


def test_batch_indices_cover_each_epoch():
    seen = [i for k in range(5) for i in batch_indices(20, 4, k, seed=3)]
    assert sorted(seen) == list(range(20))
    assert batch_indices(20, 4, 5, 3) != batch_indices(20, 4, 0, 3) or batch_indices(20, 4, 6, 3) != batch_indices(20, 4, 1, 3)
    assert batch_indices(20, 4, 7, 3) == batch_indices(20, 4, 7, 3)


def test_frozen_modules_do_not_move(tmp_path):
    cfg = fake_config(frozen=("tok",), max_steps=3)
    net = FakeBackbone()
    before = net.tok.weight.detach().clone()
    train(cfg, str(tmp_path), backbone=net, data=fake_train_data(), progress=False)
    assert torch.equal(net.tok.weight, before) and not net.tok.weight.requires_grad
    with pytest.raises(ValueError, match="frozen"):
        train(fake_config(frozen=("nope",)), str(tmp_path / "x"), backbone=FakeBackbone(), data=fake_train_data(),
              progress=False)


# -----------------------------------------------------------------------------
# command line

@pytest.mark.parametrize("args,needle", [
    (["--method", "dpo"], "valid methods"),
    (["--set", "etaa=0.3"], "valid keys"),
    (["--set", "eta=1.5"], "eta"),
    (["--set", "lr=0"], "lr"),
    (["--preset", "huge"], "valid presets"),
])
def test_cli_errors_exit_2(tmp_path, args, needle):
    proc = subprocess.run([sys.executable, "-m", "segros.train", "--out", str(tmp_path / "r"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr


def test_cli_paper_preset_without_backbone_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "segros.train", "--preset", "paper-showo-256", "--quiet",
                           "--out", str(tmp_path / "r"), "--max-steps", "1", "--set", "t2i_data=shapes",
                           "--set", "i2t_data=shapes"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "cannot build backbone 'showo-256'" in proc.stderr and "checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_method_none_returns_the_start_checkpoint_untrained(tmp_path):
    """The tables' "w/o SFT" row: no optimizer step, no metrics, weights as loaded."""
    torch.manual_seed(0)
    bb = FakeBackbone()
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    cfg = TrainConfig(method="none", backbone="fake", max_steps=5, batch_size=4, n_train=8, n_qa_train=8)
    out = train(cfg, str(tmp_path / "run"), backbone=bb, progress=False)
    assert all(torch.equal(before[k], v) for k, v in out.state_dict().items())
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_train_refuses_an_unresolved_init_from(tmp_path):
    """init_from is the pipeline's to resolve; train() alone would silently start from random weights."""
    cfg = TrainConfig(backbone="tiny-harmon", init_from="auto", max_steps=1, batch_size=4, n_train=8, n_qa_train=8)
    with pytest.raises(ValueError, match="segros.pipeline.train_run"):
        train(cfg, str(tmp_path / "run"), progress=False)
