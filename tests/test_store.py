"""The run store (segros.store) and one run through it (segros.pipeline): resume, reuse, config identity,
results, damage reports; generate-and-score."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from fake_backbone import FakeBackbone, Interrupt, data as fake_data, stop_after, without_time
from segros import pipeline, store
from segros.eval.geneval import TAGS
from segros.presets import TrainConfig, get_preset
from segros.train import TrainData, train


def fake_config(**kw):
    base = dict(backbone="fake", n_train=48, n_qa_train=48, batch_size=8, max_steps=12, log_every=2,
                ckpt_every=5, lr=3e-3, warmup_steps=2, eval_prompts=12, eval_seeds=(0, 1), eval_qa=16)
    base.update(kw)
    return TrainConfig(**base)


def fake_train_data():
    t2i, qa = fake_data(48, seed=1)
    return TrainData(t2i, [(q["image"], q["question"], q["answer"]) for q in qa])


@pytest.mark.parametrize("method", ["segros", "sft"])
def test_kill_and_resume_matches_uninterrupted(tmp_path, method):
    cfg = fake_config(method=method)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    train(cfg, a, backbone=FakeBackbone(), data=fake_train_data(), progress=False)
    with pytest.raises(Interrupt):
        train(cfg, b, backbone=FakeBackbone(), data=fake_train_data(), hook=stop_after(8), progress=False)
    assert store.has_checkpoint(b) and not os.path.exists(os.path.join(b, "model.safetensors"))
    assert max(r["step"] for r in store.read_metrics(b)) == 8  # logged past the checkpoint at step 5
    # resume in a fresh model object (different init seed: everything must come from the checkpoint)
    train(cfg, b, backbone=FakeBackbone(seed=99), data=fake_train_data(), progress=False)
    wa, wb = load_file(os.path.join(a, "model.safetensors")), load_file(os.path.join(b, "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert without_time(store.read_metrics(a)) == without_time(store.read_metrics(b))
    assert [r["step"] for r in store.read_metrics(b)] == [2, 4, 6, 8, 10, 12]
    assert not [n for n in os.listdir(b) if ".tmp" in n]


def test_interrupted_run_differs_without_resume(tmp_path):
    """Control: a run that restarts from scratch after 8 steps ends elsewhere (the test can fail)."""
    cfg = fake_config(max_steps=8)
    a = str(tmp_path / "a")
    train(cfg, a, backbone=FakeBackbone(), data=fake_train_data(), progress=False)
    longer = fake_config(max_steps=12)
    b = str(tmp_path / "b")
    train(longer, b, backbone=FakeBackbone(), data=fake_train_data(), progress=False)
    wa, wb = load_file(os.path.join(a, "model.safetensors")), load_file(os.path.join(b, "model.safetensors"))
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)


class Boom(FakeBackbone):
    def t2i_loss(self, *args):
        raise AssertionError("trained although the run was finished")

    def generate(self, *args, **kw):
        raise AssertionError("evaluated although the run was finished")


def test_run_writes_results_and_is_reused(tmp_path):
    cfg = fake_config(max_steps=6)
    res = pipeline.ensure_run(cfg, str(tmp_path), "t9", backbone=FakeBackbone(), data=fake_train_data(), progress=False)
    folder = tmp_path / "t9" / store.run_name(cfg)
    stored = json.loads((folder / "results.json").read_text())
    assert set(TAGS) | {"overall"} <= set(stored["geneval"])
    assert all(0.0 <= stored["geneval"][t] <= 100.0 for t in TAGS)
    assert stored["geneval"]["n_images"] == 12 * 2
    assert {"color", "overall"} <= set(stored["qa"])
    assert len(os.listdir(folder / "geneval")) >= 12
    # second call: nothing is trained or generated
    again = pipeline.ensure_run(cfg, str(tmp_path), "t9", backbone=Boom(), data=fake_train_data(), progress=False)
    assert again == res == stored
    # a different config in the same folder is an error naming the difference
    with pytest.raises(ValueError, match="different config.*eta"):
        pipeline.ensure_run(cfg.replace(eta=0.5), str(tmp_path), "t9", name=store.run_name(cfg), backbone=FakeBackbone(),
                 data=fake_train_data(), progress=False)
    df = store.collect(str(tmp_path), "t9")
    assert len(df) == 1 and df.loc[0, "eta"] == 0.3 and df.loc[0, "geneval.overall"] == stored["geneval"]["overall"]
    assert store.collect(str(tmp_path), "missing").empty


def test_run_name_from_preset_diff():
    small = get_preset("small")
    cfg = small.replace(eta=0.5, seed=1)
    assert store.run_name(cfg) == "segros_eta=0.5_seed=1"
    assert store.run_name(small.replace(method="sft")) == "sft"
    assert store.run_name(small.replace(betas=(0.9, 0.99))) == "segros_betas=0.9,0.99"
    assert store.run_name(TrainConfig(), preset=small) == "segros_init_from=None"
    assert store.config_hash(cfg) != store.config_hash(small) == store.config_hash(get_preset("small"))


def test_atomic_json_and_metrics(tmp_path):
    store.atomic_write_json(str(tmp_path / "r.json"), {"a": 1})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["r.json"]
    for s in (1, 2, 3):
        store.append_metrics(str(tmp_path), {"step": s, "loss": 1.0 / s})
    store.truncate_metrics(str(tmp_path), 2)
    assert [r["step"] for r in store.read_metrics(str(tmp_path))] == [1, 2]


def test_base_config_is_shared_across_finetuning_settings():
    small = get_preset("small")
    base = pipeline.base_config(small)
    assert base.method == "sft" and base.max_steps == small.pretrain_steps and base.init_from is None
    other = small.replace(method="reca", eta=0.5, seed=3, max_steps=7, eval_prompts=6, lam=0.0, loss_on="top_masked")
    assert store.config_hash(pipeline.base_config(other)) == store.config_hash(base)
    assert store.config_hash(pipeline.base_config(small.replace(backbone="tiny-showo"))) != store.config_hash(base)
    assert store.config_hash(pipeline.base_config(small.replace(pretrain_steps=10))) != store.config_hash(base)


# -----------------------------------------------------------------------------
# a run is a pure function of its config

def _tiny_finetune():
    """The small preset at tiny sizes: a 2-step base, a 3-step SeGroS fine-tune from it."""
    tiny = dict(width=32, layers=1, heads=2, intermediate=64, enc_dim=16, diff_width=32, diff_depth=1, n_fit=16)
    return get_preset("small").replace(backbone_kwargs=tiny, pretrain_steps=2, max_steps=3, n_train=16, n_qa_train=16,
                                       batch_size=8, log_every=1, eval_prompts=0, eval_qa=0)


def test_finetune_is_the_same_whether_its_base_was_pretrained_in_this_process_or_read_from_disk(tmp_path):
    cfg = _tiny_finetune()
    first, later = tmp_path / "first", tmp_path / "later"
    pipeline.train_run(cfg, str(first / "run"), str(first / "runs"), progress=False)  # pretrains the base here
    base = store.base_folder(str(first / "runs"), pipeline.base_config(cfg))
    assert os.path.isfile(os.path.join(base, "model.safetensors"))
    # later, in a store that holds only that base (copied), the same fine-tune reads it from disk
    shutil.copytree(base, store.base_folder(str(later / "runs"), pipeline.base_config(cfg)))
    torch.manual_seed(1234)  # whatever the caller's random state
    pipeline.train_run(cfg, str(later / "run"), str(later / "runs"), progress=False)
    wa, wb = load_file(str(first / "run" / "model.safetensors")), load_file(str(later / "run" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert without_time(store.read_metrics(str(first / "run"))) == without_time(store.read_metrics(str(later / "run")))


def test_ensure_base_leaves_the_callers_random_state_alone(tmp_path):
    cfg = _tiny_finetune()
    torch.manual_seed(7)
    pipeline.ensure_base(cfg, str(tmp_path), progress=False)  # pretrains
    after = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(torch.rand(3), after)
