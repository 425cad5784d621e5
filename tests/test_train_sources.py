"""Training on real data formats (segros.train.Feed over segros.data.sources) and on several processes.

The files are the ones tests/test_sources.py writes (16 samples per format: a webdataset shard pair
with a corrupt JPEG and an empty caption, a parquet folder image/prompt/llava, a save_to_disk folder,
a LLaVA JSON with an image root). Each trains the small preset a few steps from a random start and
resumes exactly after a kill; the real adapters (tiny size, random weights) train on them too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from fake_backbone import Interrupt, stop_after, without_time
from segros import store
from segros.backbones.registry import REGISTRY
from segros.data.sources import BadDataError, SourceError
from segros.presets import get_preset
from segros.train import train
from segros.train.__main__ import main
from test_sources import CORRUPT, EMPTY, files  # noqa: F401 -- the module's fixture and its bad samples

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_ROWS = ("world_size", "t2i_seen", "t2i_skipped", "t2i_skip_frac")


def small(files, fmt, **kw):
    """The small preset from a random start on format ``fmt`` (T2I) and the LLaVA JSON (I2T), shrunk."""
    args = dict(init_from=None, t2i_data=files[fmt], i2t_data=files["llava"], i2t_image_root=files["llava_root"],
                batch_size=4, max_steps=3, warmup_steps=1, log_every=1, ckpt_every=2, max_skip_frac=0.3)
    return get_preset("small").replace(**{**args, **kw})


def same_run(a, b):
    wa, wb = load_file(os.path.join(a, "model.safetensors")), load_file(os.path.join(b, "model.safetensors"))
    assert wa.keys() == wb.keys() and not [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert without_time(store.read_metrics(a)) == without_time(store.read_metrics(b))


def killed_and_resumed(cfg, tmp_path):
    """(uninterrupted run folder, run folder killed after step 2 and resumed)."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    train(cfg, a, progress=False)
    with pytest.raises(Interrupt):
        train(cfg, b, hook=stop_after(2), progress=False)
    assert store.has_checkpoint(b) and not os.path.exists(os.path.join(b, "model.safetensors"))
    torch.manual_seed(123)  # the resumed run's randomness comes from its checkpoint
    train(cfg, b, progress=False)
    return a, b


@pytest.mark.parametrize("fmt", ["wds", "parquet", "saved"])
def test_each_format_trains_and_resumes_exactly(files, fmt, tmp_path):  # noqa: F811
    a, b = killed_and_resumed(small(files, fmt), tmp_path)
    same_run(a, b)
    rows = store.read_metrics(a)
    assert [r["step"] for r in rows] == [1, 2, 3] and all(set(DATA_ROWS) <= set(r) for r in rows)
    assert rows[-1]["world_size"] == 1 and all(r["loss"] == r["loss"] for r in rows)
    # 12 samples used (3 steps of 4); what was skipped is counted, per reason, never silently
    last = rows[-1]
    assert last["t2i_seen"] == 12 + last["t2i_skipped"]
    if fmt != "wds":
        assert last["t2i_skipped"] == 0
    assert last["i2t_seen"] >= 12


def test_corrupt_jpeg_and_empty_caption_are_counted_and_training_goes_on(files, tmp_path):  # noqa: F811
    """One epoch of the 16-sample shards draws each sample once: the corrupt JPEG and the empty caption
    are each skipped once, replaced by the next sample, logged per reason; the run finishes. Decoded
    in 2 DataLoader workers (the counts travel back with the batches)."""
    cfg = small(files, "wds", max_steps=4)
    out = str(tmp_path / "run")
    train(cfg, out, progress=False, num_workers=2)
    last = store.read_metrics(out)[-1]
    assert (last["t2i_skipped"], last["t2i_seen"]) == (2, 18)
    assert last["t2i_skipped_undecodable_image"] == 1 and last["t2i_skipped_empty_caption"] == 1
    assert last["t2i_skip_frac"] == round(2 / 18, 6)
    assert os.path.exists(os.path.join(out, "model.safetensors"))


def test_above_the_threshold_the_run_stops_naming_the_samples(files, tmp_path, capsys):  # noqa: F811
    cfg = small(files, "wds", max_steps=6, max_skip_frac=0.05)
    with pytest.raises(BadDataError, match=r"2 of 18 samples tried were unusable .*max_skip_frac 5%.*undecodable image"):
        train(cfg, str(tmp_path / "run"), progress=False)
    assert not os.path.exists(tmp_path / "run" / "model.safetensors")
    argv = ["--preset", "small", "--method", "segros", "--out", str(tmp_path / "cli"), "--quiet",
            "--set", "init_from=none", "--set", f"t2i_data={files['wds']}", "--set", "batch_size=4",
            "--set", "max_skip_frac=0.05", "--max-steps", "6", "--set", "warmup_steps=1"]
    assert main(argv) == 1
    assert "max_skip_frac" in capsys.readouterr().err


def test_missing_column_or_path_stops_before_step_one(files, tmp_path, capsys):  # noqa: F811
    for setting, message in ((["--set", f"t2i_data={files['parquet']}", "--set", "t2i_caption=caption_llava"],
                              "t2i_caption='caption_llava': no such column"),
                             (["--set", f"t2i_data={tmp_path / 'nowhere' / '*.tar'}"], "the glob matches no file"),
                             (["--set", f"i2t_data={tmp_path / 'none.json'}", "--set", "i2t_image_root=/tmp"],
                              "no such file")):
        out = tmp_path / "run"
        argv = ["--preset", "small", "--method", "segros", "--out", str(out), "--quiet", "--set", "init_from=none",
                *setting]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err, err
        assert not out.exists()  # nothing written, no model built
    with pytest.raises(SourceError, match="no such column"):
        train(small(files, "parquet", t2i_caption="nope"), str(tmp_path / "direct"), progress=False)


@pytest.mark.parametrize("preset, dataset", [("paper-harmon-0.5b", "MidjourneyV6"),
                                             ("paper-harmon-1.5b", "BLIP3o-60k"),
                                             ("paper-showo-256", "MidjourneyV6")])
def test_paper_preset_without_data_exits_2_naming_the_papers_dataset(preset, dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--preset", preset, "--method", "segros", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"on {dataset} (Table 1)" in err and "LLaVA-Instruct" in err, err
    assert not out.exists()


# ---- the real adapters (tiny size, random weights) on the same files -------------------------------

@pytest.fixture(scope="module")
def real_tiny():
    from segros.backbones.harmon import build_harmon, tiny_tokenizer
    from segros.backbones.showo import build_showo

    names = {"harmon-data-tiny": lambda **kw: build_harmon("tiny", tokenizer=tiny_tokenizer(), image_size=32),
             "showo-data-tiny": lambda **kw: build_showo("tiny")}
    REGISTRY.update(names)
    yield list(names)
    for name in names:
        REGISTRY.pop(name, None)


@pytest.mark.parametrize("fmt, family", [("parquet", "harmon"), ("wds", "showo")])
def test_real_adapters_train_on_the_files_and_resume_exactly(files, real_tiny, fmt, family, tmp_path):  # noqa: F811
    cfg = small(files, fmt, backbone=f"{family}-data-tiny", batch_size=2)
    a, b = killed_and_resumed(cfg, tmp_path)
    same_run(a, b)
    assert [r["step"] for r in store.read_metrics(a)] == [1, 2, 3]


# ---- several processes -----------------------------------------------------------------------------

def launch(nproc, out, *extra, wait=True):
    """``accelerate launch`` of the training command line with ``nproc`` CPU processes.

    accelerate's ``--cpu`` launcher starts one process whatever ``--num_processes`` says (it needs
    MPI for more), so the test starts them with its ``--multi_gpu`` launcher (torchrun); the loop
    finds no GPU and runs them on the CPU with gloo.
    """
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(nproc),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
           "-m", "segros.train", "--preset", "small", "--method", "segros", "--set", "init_from=none",
           "--max-steps", "10", "--set", "log_every=1", "--out", str(out), "--quiet",
           *extra]
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_give_the_losses_of_one_resume_and_write_one_run(tmp_path):
    one, two, killed = tmp_path / "one", tmp_path / "two", tmp_path / "killed"
    # the default config: the hinted path's caption-and-hints dropout splits each micro-batch into
    # dropped and kept sub-batches, drawn for the global batch (segros.train.steps.hinted_loss)
    assert main(["--preset", "small", "--method", "segros", "--set", "init_from=none", "--max-steps", "10",
                 "--set", "log_every=1", "--out", str(one), "--quiet"]) == 0
    launch(2, two)
    r1, r2 = store.read_metrics(one), store.read_metrics(two)
    assert [r["step"] for r in r2] == list(range(1, 11))  # one writer: every step once
    assert {r["world_size"] for r in r1} == {1} and {r["world_size"] for r in r2} == {2}
    for key in ("loss", "loss_t2i", "loss_i2t"):
        rel = max(abs(a[key] - b[key]) / abs(a[key]) for a, b in zip(r1, r2))
        print(f"2 processes vs 1, {key}: max relative difference over 10 steps {rel:.2e}")
        assert rel <= 1e-4, (key, rel)
    assert [r["t2i_seen"] for r in r1] == [r["t2i_seen"] for r in r2]  # counts summed over the processes
    assert sorted(os.listdir(two)) == ["config.json", "metrics.jsonl", "model.safetensors"]  # no checkpoint: ckpt_every 50
    assert json.loads((two / "config.json").read_text()) == json.loads((one / "config.json").read_text())
    # killed (SIGKILL, both processes) after its first checkpoint, then resumed on 2 processes: the same run
    proc = launch(2, killed, "--set", "ckpt_every=3", wait=False)
    deadline = time.time() + 600
    while not store.has_checkpoint(killed) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert store.has_checkpoint(killed) and not (killed / "model.safetensors").exists()
    launch(2, killed, "--set", "ckpt_every=3")
    rk = store.read_metrics(killed)
    assert [r["step"] for r in rk] == list(range(1, 11))
    assert without_time(rk) == without_time(r2)
    wk, w2 = load_file(str(killed / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert not [k for k in w2 if not torch.equal(wk[k], w2[k])]
