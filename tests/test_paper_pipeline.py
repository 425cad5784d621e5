"""The paper presets end to end, on a CPU, with the real adapters at tiny size.

What a researcher with a GPU runs first (README, "Real backbones")::

    python -m segros.train --preset paper-harmon-0.5b --method segros --out out/harmon05 --evaluate \\
        --set backbone_kwargs='{"checkpoint": ..., "vae_checkpoint": ..., "llm_path": ...}'

goes through the registry (``segros.backbones.registry.real_builder``: build the adapter, load the
official checkpoint files), ``segros.train.train`` (accelerate, the optimizer without the preset's frozen
modules, the Table 7 micro-batch schedule with I2T, logging, checkpoints, exact resume) and
``segros.inference`` (GenEval layout + scores on the shapes world). Here each family's tiny random
adapter (``build_harmon("tiny")`` ...) is written in the official file layout (checkpoints.py's
``save_*``, plus the folders the loaders read, as the official ones are: the Qwen2.5-Instruct folder
in bfloat16, the Phi tokenizer, a full ``CLIPModel`` folder, InternVL3 in its remote-code layout
in bfloat16 (and "-hf"), SANA and DC-AE diffusers folders), registered as ``<family>-tiny`` with the
same ``real_builder(family, size)`` builder the paper presets use, and the ``paper-<family>`` preset is run
with only its sizes shrunk (:data:`SHRUNK`): methods sft, reca, segros (reca_hint_filter on Show-o,
whose hint and code grids differ), exact resume, bf16 autocast, the README's command line. Nothing
is downloaded; about 15 s on 2 cores.
"""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from fake_backbone import Interrupt, stop_after, without_time
from segros import store
from segros.backbones import REGISTRY, build_backbone, real_builder
from segros.backbones import checkpoints as ckpt
from segros.eval.geneval import TAGS, read_layout
from segros.presets import get_preset
from segros.pipeline import ensure_run, open_run
from segros.train import train
from segros.train.__main__ import main

PRESET = {"harmon": "paper-harmon-0.5b", "showo": "paper-showo-256", "openuni": "paper-openuni-1.6b"}
# modules no method may change: the preset's "Frozen Modules" (Table 7) plus each family's fixed tokenizers
ALWAYS_FROZEN = {"harmon": ("vae.",), "showo": ("vq_model.", "clip."), "openuni": ("lmm.", "vae.")}
# the only TrainConfig fields this file changes in a paper preset (sizes; plus precision in the bf16 test)
SHRUNK = {"backbone", "backbone_kwargs", "method", "max_steps", "warmup_steps", "batch_size", "grad_accum",
          "i2t_micro", "n_train", "n_qa_train", "image_size", "eval_prompts", "eval_seeds", "log_every",
          "ckpt_every", "precision", "t2i_data", "i2t_data"}
N_PROMPTS, SEEDS = 6, (0,)
RECON = ["a red circle", "two blue squares", "the green cross", "a yellow star left of a circle"]


def never(step):
    raise AssertionError(f"trained step {step} although the run was finished")


def native_size(family):
    """The tiny adapter's image size (Harmon, OpenUni: ``image_size``; Show-o: ``resolution``)."""
    from segros.backbones import harmon, openuni, showo

    cfg = {"harmon": harmon, "showo": showo, "openuni": openuni}[family].SIZES["tiny"]
    return cfg.resolution if family == "showo" else cfg.image_size


# ---- the official files of each tiny adapter -------------------------------------------------------

def _reference(family):
    """The tiny adapter with weights no seed-0 build has (a skipped load would show)."""
    from segros.backbones.harmon import build_harmon
    from segros.backbones.openuni import build_openuni
    from segros.backbones.showo import build_showo

    torch.manual_seed(1234)
    model = {"harmon": build_harmon, "showo": build_showo, "openuni": build_openuni}[family]("tiny")
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # zero-initialised parts (diffusion head output, ...) become non-zero too
        for name, p in model.named_parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
            if family == "openuni" and name.startswith(("lmm.", "vae.")):  # their only copies: bf16 folders
                p.copy_(p.to(torch.bfloat16))
    return model.eval()


def bf16_copy(module):
    """The module in bfloat16, as the official Qwen2.5-Instruct, InternVL3 (and SANA) folders are saved."""
    import copy
    import warnings

    with warnings.catch_warnings():  # diffusers: "cast with to() ... set torch_dtype instead"
        warnings.simplefilter("ignore")
        return copy.deepcopy(module).to(torch.bfloat16)


def clip_model_folder(clip, folder):
    """A full ``CLIPModel`` folder (text tower too) holding ``clip``'s weights, as openai/clip-vit-large-patch14-336."""
    from transformers import CLIPConfig, CLIPModel

    text = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=16,
                bos_token_id=0, eos_token_id=1, pad_token_id=1)
    full = CLIPModel(CLIPConfig(text_config=text, vision_config=clip.config.to_dict(), projection_dim=8))
    full.vision_model.load_state_dict(getattr(clip, "vision_model", clip).state_dict())  # transformers 4 | 5
    full.save_pretrained(str(folder))


def remote_internvl_folder(model, folder):
    """InternVL3-1B's own layout (``internvl_chat`` config, InternViT fused qkv, an LM head), in bfloat16."""
    from safetensors.torch import save_file
    from test_real_backbones import _tiny_remote_config  # the official config.json at tiny sizes

    from segros.backbones.checkpoints import internvl_hf_to_remote

    remote = internvl_hf_to_remote(model.lmm.state_dict())
    remote["language_model.lm_head.weight"] = torch.zeros(len(model.tokenizer), model.cfg.llm_hidden)
    folder.mkdir()
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in remote.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({**_tiny_remote_config(model), "torch_dtype": "bfloat16"}))


def _write_official(family, model, d):
    """The files a researcher downloads, in the official layout; returns backbone_kwargs."""
    recon = d / "recon.txt"
    recon.write_text("\n".join(RECON) + "\n")
    if family == "harmon":
        ckpt.save_harmon(model, str(d / "harmon_tiny.pth"), str(d / "kl16.ckpt"))
        bf16_copy(model.llm).save_pretrained(str(d / "qwen"))  # Qwen2.5-Instruct folder: LLM + tokenizer
        model.tokenizer.save_pretrained(str(d / "qwen"))
        # the folder, as a download of wusize/harmon (harmon_0.5b.pth, harmon_1.5b.pth, kl16.ckpt)
        return {"checkpoint": str(d), "vae_checkpoint": str(d),
                "llm_path": str(d / "qwen"), "recon_prompts": str(recon)}
    if family == "showo":
        (d / "show-o").mkdir()
        (d / "magvitv2").mkdir()
        ckpt.save_showo(model, str(d / "show-o" / "pytorch_model.bin"), str(d / "magvitv2" / "pytorch_model.bin"))
        clip_model_folder(model.clip, d / "clip")
        model.tokenizer.save_pretrained(str(d / "phi"))
        return {"checkpoint": str(d / "show-o"), "vq_checkpoint": str(d / "magvitv2"), "clip_path": str(d / "clip"),
                "llm_path": str(d / "phi"), "recon_prompts": str(recon)}
    ckpt.save_openuni(model, str(d / "openuni.pth"))  # meta_queries, connector, projector, transformer
    remote_internvl_folder(model, d / "internvl")  # OpenGVLab/InternVL3-1B: remote-code layout, bf16
    bf16_copy(model.lmm).save_pretrained(str(d / "internvl-hf"))  # the "-hf" layout of the same MLLM
    for folder in ("internvl", "internvl-hf"):
        model.tokenizer.save_pretrained(str(d / folder))
    bf16_copy(model.transformer).save_pretrained(str(d / "sana" / "transformer"))  # the base SANA
    model.make_scheduler().save_pretrained(str(d / "sana" / "scheduler"))
    bf16_copy(model.vae).save_pretrained(str(d / "dcae"))
    return {"checkpoint": str(d / "openuni.pth"), "mllm_path": str(d / "internvl"), "sana_path": str(d / "sana"),
            "dcae_path": str(d / "dcae"), "recon_prompts": str(recon)}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """family -> (reference state dict, backbone_kwargs); ``<family>-tiny`` registered with ``real_builder``."""
    cache = {}
    added = [n for n in (f"{f}-tiny" for f in PRESET) if n not in REGISTRY]
    for name in added:
        REGISTRY[name] = real_builder(name.split("-")[0], "tiny")

    def get(family):
        if family not in cache:
            model = _reference(family)
            kwargs = _write_official(family, model, tmp_path_factory.mktemp(family))
            cache[family] = ({k: v.detach().clone() for k, v in model.state_dict().items()}, kwargs)
        return cache[family]

    yield get
    for name in added:
        REGISTRY.pop(name, None)


def paper_config(family, method, kwargs, **kw):
    """``paper-<family>`` with only its sizes shrunk to a CPU (and the tiny adapter named)."""
    preset = get_preset(PRESET[family])
    cfg = preset.replace(backbone=f"{family}-tiny", backbone_kwargs=kwargs, method=method, max_steps=2,
                         warmup_steps=1, batch_size=2, grad_accum=2, i2t_micro=2 if preset.i2t_micro else 0,
                         n_train=4, n_qa_train=4, image_size=32, eval_prompts=N_PROMPTS, eval_seeds=SEEDS,
                         log_every=1, ckpt_every=1, t2i_data="shapes", i2t_data="shapes", **kw)
    changed = {f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(preset, f.name)}
    assert changed <= SHRUNK, changed - SHRUNK  # the rest is Table 7's column as the preset has it
    return cfg


# ---- the registry rebuilds exactly what was saved ------------------------------------------------

@pytest.mark.parametrize("family", list(PRESET))
def test_registry_loads_every_official_file(official, family):
    ref, kwargs = official(family)
    torch.manual_seed(0)  # train() builds after seed_everything(seed): a part left random would differ
    model = build_backbone(f"{family}-tiny", **kwargs)
    own = model.state_dict()
    assert own.keys() == ref.keys()
    differ = [k for k in ref if own[k].dtype != ref[k].dtype or not torch.equal(own[k], ref[k])]
    assert not differ, f"not loaded from the official files: {differ[:8]}"
    assert model.recon_prompt_list == RECON
    if family == "openuni":  # the MLLM from the "-hf" layout of the same InternVL3 folder
        torch.manual_seed(0)
        hf = build_backbone("openuni-tiny", **{**kwargs, "mllm_path": kwargs["mllm_path"] + "-hf"})
        assert all(v.dtype == ref[k].dtype and torch.equal(v, ref[k]) for k, v in hf.state_dict().items())


# ---- train (accelerate) + evaluate (GenEval layout) + reopen, per family and method ----------------

RUNS = [(f, m) for f in PRESET for m in ("sft", "reca", "segros")] + [("showo", "reca_hint_filter")]


@pytest.mark.parametrize("family,method", RUNS)
def test_paper_preset_trains_evaluates_and_reopens(official, tmp_path, family, method):
    ref, kwargs = official(family)
    cfg = paper_config(family, method, kwargs)
    res = ensure_run(cfg, str(tmp_path), "paper", progress=False)
    run_dir = os.path.join(str(tmp_path), "paper", res["name"])
    assert len(res["name"]) <= store.MAX_NAME and res["hash"] == store.config_hash(cfg)

    # training: Table 7's micro-batch mix (no I2T for OpenUni, λ = 0), finite losses, every step logged
    rows = store.read_metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert torch.isfinite(torch.tensor(r["loss_t2i"]))
        assert (r["loss_i2t"] is None) == (cfg.lam == 0)
    assert rows[0]["lr"] == pytest.approx(cfg.lr)  # after the warm-up step: the preset's peak lr

    # the trained weights: frozen modules untouched, the rest moved
    final = load_file(os.path.join(run_dir, "model.safetensors"))
    assert final.keys() == ref.keys()
    frozen = tuple(p if p.endswith(".") else p + "." for p in cfg.frozen) + ALWAYS_FROZEN[family]
    changed = [k for k in ref if not torch.equal(final[k], ref[k])]
    assert changed and not [k for k in changed if k.startswith(frozen)], [k for k in changed if k.startswith(frozen)]
    assert any(k.startswith(frozen) for k in ref)

    # evaluation: GenEval's layout and its six tags, at the family's resolution
    stored = json.loads(open(os.path.join(run_dir, "results.json")).read())
    assert stored == res
    scores = res["geneval"]
    assert set(TAGS) | {"overall", "n_images"} == set(scores)
    assert all(0.0 <= scores[t] <= 100.0 for t in (*TAGS, "overall"))
    assert scores["n_images"] == N_PROMPTS * len(SEEDS) and "qa" not in res  # eval_qa = 0 in the paper presets
    layout = read_layout(os.path.join(run_dir, "geneval"), expected_n=N_PROMPTS, images_per_prompt=len(SEEDS))
    assert {m["tag"] for m, _ in layout} == set(TAGS)
    native = native_size(family)  # the world renders at 32 px; batches and samples are at the family's size
    assert native != cfg.image_size and all(im.shape == (native, native, 3) for _, images in layout for _, im in images)

    # reopening: the finished run is reused, and train() hands back the trained weights without a step
    assert ensure_run(cfg, str(tmp_path), "paper", progress=False) == res
    model = train(cfg, run_dir, hook=never, progress=False)
    assert all(torch.equal(v.cpu(), final[k]) for k, v in model.state_dict().items())
    # ... and so does open_run, from the run folder alone (its config.json names everything)
    reopened = open_run(run_dir)
    assert type(reopened) is type(model) and not reopened.training
    assert all(v.dtype == final[k].dtype and torch.equal(v, final[k]) for k, v in reopened.state_dict().items())


def test_harmon_reca_baseline_in_recas_layout_trains(official, tmp_path, monkeypatch):
    """The Reca baseline (Table 9 row 2) of the paper preset, with no adapter setting given: Reca's
    1088-token image prompt after ``<|im_start|>user\\n`` (buffer included), its causal mask, its recon
    prompts, and 0.1 on the image prompt's gradient (``segros.backbones.methods``)."""
    ref, kwargs = official("harmon")
    assert not {"hint_layout", "image_attention", "hint_grad_scale"} & set(kwargs)
    cfg = paper_config("harmon", "reca", kwargs)
    from segros.backbones.harmon import Harmon
    placed, original = [], Harmon._llm_image_outputs_reca
    monkeypatch.setattr(Harmon, "_llm_image_outputs_reca", lambda self, text, mask, z_enc, hints, slot: (
        placed.append((hints.shape[1], slot)) or original(self, text, mask, z_enc, hints, slot)))
    model = train(cfg, str(tmp_path), progress=False)
    n = model.target_grid_hw[0] * model.target_grid_hw[1] + model.cfg.buffer_size
    assert placed and set(placed) == {(n, len(model._encode("<|im_start|>user\\n")))}, placed
    assert model.cfg.hint_layout == "reca" and model.cfg.image_attention == "native"
    assert model.cfg.hint_grad_scale == 0.1
    rows = store.read_metrics(str(tmp_path))
    assert [r["step"] for r in rows] == [1, 2] and all(torch.isfinite(torch.tensor(r["loss_t2i"])) for r in rows)
    state = model.state_dict()
    assert not torch.equal(state["proj_in.0.weight"].cpu(), ref["proj_in.0.weight"])


# ---- exact resume ----------------------------------------------------------------------------------

@pytest.mark.parametrize("family", list(PRESET))
def test_paper_preset_resumes_exactly(official, tmp_path, family):
    """Killed after step 1 (its checkpoint written) and resumed: the same weights and log as one run."""
    _, kwargs = official(family)
    cfg = paper_config(family, "segros", kwargs)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    train(cfg, a, progress=False)
    with pytest.raises(Interrupt):
        train(cfg, b, hook=stop_after(1), progress=False)
    assert store.has_checkpoint(b) and not os.path.exists(os.path.join(b, "model.safetensors"))
    mid = load_file(os.path.join(b, store.CHECKPOINT, "model.safetensors"))  # an unfinished run reopens too
    assert all(torch.equal(v, mid[k]) for k, v in open_run(b).state_dict().items())
    torch.manual_seed(99)  # the resumed process's randomness must come from the checkpoint
    train(cfg, b, progress=False)
    wa, wb = load_file(os.path.join(a, "model.safetensors")), load_file(os.path.join(b, "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert not [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert without_time(store.read_metrics(a)) == without_time(store.read_metrics(b))


# ---- bf16 autocast (what "auto" gives on a GPU) ---------------------------------------------------

@pytest.mark.parametrize("family", list(PRESET))
def test_paper_preset_under_bf16_autocast(official, tmp_path, family):
    _, kwargs = official(family)
    cfg = paper_config(family, "segros", kwargs, precision="bf16")
    res = ensure_run(cfg, str(tmp_path), "paper", progress=False)
    rows = store.read_metrics(os.path.join(str(tmp_path), "paper", res["name"]))
    assert [r["step"] for r in rows] == [1, 2] and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert res["geneval"]["n_images"] == N_PROMPTS * len(SEEDS)


@pytest.mark.parametrize("precision,expect", [("bf16", torch.bfloat16), ("fp32", None)])
def test_evaluation_generates_in_the_training_precision(official, tmp_path, monkeypatch, precision, expect):
    # the official scripts generate in bf16; a bf16 run evaluates under bf16 autocast, fp32 stays fp32
    from segros import inference

    _, kwargs = official("harmon")
    cfg = paper_config("harmon", "segros", kwargs, precision=precision)
    model = build_backbone("harmon-tiny", **kwargs)
    seen = []
    real = type(model).generate

    def spy(self, prompts, seed=0, **kw):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return real(self, prompts, seed=seed, **kw)
    monkeypatch.setattr(type(model), "generate", spy)
    res = inference.evaluate(model, cfg, str(tmp_path), progress=False)
    assert seen and set(seen) == {expect}
    assert res["geneval"]["n_images"] == N_PROMPTS * len(SEEDS)


# ---- the command line of the README ----------------------------------------------------------------

def test_paper_command_line(official, tmp_path, capsys):
    _, kwargs = official("harmon")
    out = str(tmp_path / "harmon05")
    argv = ["--preset", "paper-harmon-0.5b", "--method", "segros", "--out", out, "--evaluate", "--quiet",
            "--max-steps", "2", "--set", "backbone=harmon-tiny", "--set", f"backbone_kwargs={json.dumps(kwargs)}",
            "--set", "warmup_steps=1", "--set", "batch_size=2", "--set", "grad_accum=2", "--set", "i2t_micro=2",
            "--set", "n_train=4", "--set", "n_qa_train=4", "--set", "image_size=32",
            "--set", f"eval_prompts={N_PROMPTS}", "--set", "eval_seeds=0", "--set", "log_every=1",
            "--set", "ckpt_every=1", "--set", "t2i_data=shapes", "--set", "i2t_data=shapes"]
    assert main(argv) == 0, capsys.readouterr().err[-3000:]
    expected = paper_config("harmon", "segros", kwargs)
    assert json.loads((tmp_path / "harmon05" / "config.json").read_text())["hash"] == store.config_hash(expected)
    res = json.loads((tmp_path / "harmon05" / "results.json").read_text())
    assert set(TAGS) | {"overall", "n_images"} == set(res["geneval"])
    assert [r["step"] for r in store.read_metrics(out)] == [1, 2]
    # the same command again reopens the finished run: no training, the same weights, the same scores
    weights = (tmp_path / "harmon05" / "model.safetensors").read_bytes()
    assert main(argv) == 0, capsys.readouterr().err[-3000:]
    assert (tmp_path / "harmon05" / "model.safetensors").read_bytes() == weights
    assert json.loads((tmp_path / "harmon05" / "results.json").read_text()) == res


@pytest.mark.parametrize("family,size,given,missing", [
    ("harmon", "0.5b", {"llm_path": "/q"}, []),  # a folder or hub id as checkpoint also gives kl16.ckpt
    ("harmon", "1.5b", {"vae_checkpoint": "/v"}, ["llm_path"]),
    ("showo", "512", {"vq_checkpoint": "/m", "llm_path": "/p"}, ["clip_path"]),
    ("openuni", "3.6b", {"mllm_path": "/i"}, ["sana_path", "dcae_path"]),
])
def test_paper_backbone_names_the_parts_that_would_stay_random(family, size, given, missing, monkeypatch):
    if not missing:  # everything named: the build goes on to load (here: stopped at the loader)
        from segros.backbones import registry

        def stop(*a, **k):
            raise RuntimeError("loader reached")
        monkeypatch.setattr(registry, "build_harmon", stop)
        with pytest.raises(RuntimeError, match="loader reached"):
            real_builder(family, size)(checkpoint="wusize/harmon", **given)
        return
    with pytest.raises(ValueError) as err:
        real_builder(family, size)(checkpoint="/ckpt/official.pth", **given)
    msg = str(err.value)
    for part in missing:
        assert part in msg
    for part in given:
        assert part not in msg.split("needs", 1)[1]


@pytest.mark.parametrize("family,override,message", [
    ("openuni", dict(lam=1.0, i2t_micro=2), "trains no I2T"),  # Table 7: λ = 0 for OpenUni
    ("openuni", dict(eval_qa=4), "no answer"),  # OpenUni has no answer(); Show-o and Harmon do
])
def test_unsupported_requests_fail_before_training(official, tmp_path, family, override, message):
    _, kwargs = official(family)
    cfg = dataclasses.replace(paper_config(family, "segros", kwargs), **override)
    with pytest.raises(ValueError, match=message):
        train(cfg, str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run" / "checkpoint").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()
