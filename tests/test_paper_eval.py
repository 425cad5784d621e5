"""Paper-scale scoring from the notebooks: the shared parameters, the preflight check, scoring a model."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

from fake_backbone import FakeBackbone
from geneval_tiny import prompts, save_tiny_clip, tiny_mask2former
from segros import notebooks, paper, paper_eval
from segros.eval.geneval_detect import Mask2FormerDetector, TransformersClipColors, TransformersScorer
from segros.eval.dpg import load_benchmark
from segros.eval.parallel import Processes
from segros.paper_eval import EvalSettings, MissingForEvaluation, preflight
from segros.presets import get_preset
from test_dpg import ScriptedVQA, write_ella

ROOT = Path(__file__).resolve().parents[1]
N_PROMPTS = 2  # GenEval prompts in the test's metadata file (the tiny Mask2Former runs at mmdet's 1333x800 scale)
NOTEBOOK_TABLE = {"ablation_eta": "table3", "ablation_text_filter": "table4", "ablation_hint_corrupt": "table5",
                  "ablation_drop_loss": "table6", "ablation_noise": "table8", "ablation_reca_hints": "table9",
                  "main_results": "table1", "understanding": "table2"}
NEEDS = {"geneval": ("geneval_metadata", "geneval_scorer", "geneval_detector", "geneval_clip", "geneval_python"),
         "dpg": ("dpg_csv", "dpg_vqa", "dpg_vqa_model"), "compbench": ("compbench_dir", "judge_model"),
         "lmms": ("lmms_tasks",)}


def parameters_cell(stem):
    nb = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {node.target.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.AnnAssign)}


@pytest.mark.parametrize("stem", sorted(NOTEBOOK_TABLE))
def test_notebooks_share_one_evaluation_vocabulary(stem):
    declared = parameters_cell(stem)
    defaults = EvalSettings()
    for name in paper_eval.PARAMETERS:
        if name in declared:  # same name, same default in every notebook
            assert declared[name] == getattr(defaults, name) or (name == "benchmarks" and declared[name] == [])
    table = NOTEBOOK_TABLE[stem]
    needed = {"preset", "overrides", "benchmarks", "eval_device"}
    for b in paper_eval.TABLE_BENCHMARKS[table]:
        needed |= set(NEEDS[b])
    assert needed <= set(declared), sorted(needed - set(declared))
    assert declared["overrides"] == {} and declared["preset"] == "small"


def test_every_table_column_has_a_benchmark():
    for table, benchmarks in paper_eval.TABLE_BENCHMARKS.items():
        cols = set(paper.columns(table))
        if "geneval" in benchmarks:
            assert "GenEval" in cols
        if "dpg" in benchmarks:
            assert cols & {"DPG", "DPGBench"}
    assert "CompBench" in paper.columns("table1") and "compbench" in paper_eval.TABLE_BENCHMARKS["table1"]


def test_small_scale_needs_nothing():
    assert preflight("table3", "small", EvalSettings()) is None
    assert preflight("table1", "small-showo", EvalSettings()) is None


def test_preflight_names_everything_missing():
    with pytest.raises(MissingForEvaluation) as info:
        preflight("table1", "paper-harmon-0.5b", EvalSettings())
    text = str(info.value)
    for needle in ("geneval_metadata is not set", "dpg_csv is not set", "compbench_dir is not set",
                   "judge_model is not set", "backbone_kwargs['checkpoint']", "backbone_kwargs['vae_checkpoint']",
                   "backbone_kwargs['llm_path']", "t2i_data is not set", "MidjourneyV6"):
        assert needle in text, needle
    with pytest.raises(MissingForEvaluation, match="BLIP3o-60k"):
        preflight("table8", "paper-harmon-1.5b", EvalSettings())
    with pytest.raises(ValueError, match="reports"):
        preflight("table3", "paper-harmon-0.5b", EvalSettings(benchmarks=("compbench",)))


@pytest.fixture()
def files(tmp_path):
    """Benchmark files, evaluator weights, a checkpoint and data, all local."""
    (tmp_path / "geneval" / "prompts").mkdir(parents=True)
    with open(tmp_path / "geneval" / "prompts" / "evaluation_metadata.jsonl", "w") as f:
        for row in prompts()[:N_PROMPTS]:
            f.write(json.dumps(row) + "\n")
    tiny_mask2former(favour="apple").save_pretrained(tmp_path / "mask2former")
    save_tiny_clip(str(tmp_path / "clip"))
    write_ella(tmp_path / "ELLA")
    (tmp_path / "blip").mkdir()
    (tmp_path / "blip" / "config.json").write_text("{}")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for name in ("harmon.pth", "kl16.ckpt"):
        (ckpt / name).write_bytes(b"0")
    (ckpt / "qwen").mkdir()
    (tmp_path / "data").mkdir()
    settings = EvalSettings(geneval_metadata=str(tmp_path / "geneval"), geneval_detector=str(tmp_path / "mask2former"),
                            geneval_clip=str(tmp_path / "clip"), dpg_csv=str(tmp_path / "ELLA"), dpg_vqa="transformers",
                            dpg_vqa_model=str(tmp_path / "blip"))
    overrides = {"backbone_kwargs": {"checkpoint": str(ckpt / "harmon.pth"), "vae_checkpoint": str(ckpt / "kl16.ckpt"),
                                     "llm_path": str(ckpt / "qwen")}, "t2i_data": str(tmp_path / "data")}
    return tmp_path, settings, overrides


def test_preflight_passes_when_everything_is_there(files):
    tmp, settings, overrides = files
    plan = preflight("table3", "paper-harmon-0.5b", settings, overrides)
    assert plan.benchmarks == ("geneval", "dpg")
    assert any(f"{N_PROMPTS} prompts" in n and "553" in n for n in plan.notes)
    # one missing piece at a time is named
    os.remove(tmp / "ELLA" / "dpg_bench" / "dpg_bench.csv")
    os.remove(tmp / "ckpt" / "kl16.ckpt")
    with pytest.raises(MissingForEvaluation) as info:
        preflight("table3", "paper-harmon-0.5b", settings, overrides)
    assert len(info.value.problems) == 2
    assert "dpg_bench.csv" in str(info.value) and "kl16.ckpt" in str(info.value)
    # a row that does not train needs no data
    plan = preflight("table3", "paper-harmon-0.5b", EvalSettings(benchmarks=("geneval",), **{
        k: getattr(settings, k) for k in ("geneval_metadata", "geneval_detector", "geneval_clip")}),
        {**overrides, "t2i_data": None, "backbone_kwargs": {**overrides["backbone_kwargs"],
                                                            "vae_checkpoint": str(tmp / "ckpt" / "harmon.pth")}},
        methods=["none"])
    assert plan.benchmarks == ("geneval",)


def test_official_scorer_preflight(files):
    tmp, settings, overrides = files
    official = EvalSettings(**{**settings.__dict__, "geneval_scorer": "official", "geneval_python": "/no/python",
                               "benchmarks": ("geneval",)})
    with pytest.raises(MissingForEvaluation) as info:
        preflight("table3", "paper-harmon-0.5b", official, overrides)
    text = str(info.value)
    assert "evaluation/evaluate_images.py" in text and "geneval_python" in text and ".pth" in text


def test_table_notebook_stops_before_training(files, tmp_path):
    tmp, settings, overrides = files
    namespace = {"__annotations__": {k: None for k in ("preset", "eta", "seeds", "runs_dir", "overrides",
                                                       *paper_eval.PARAMETERS)},
                 "preset": "paper-harmon-0.5b", "eta": [0.3], "seeds": [0], "runs_dir": str(tmp_path / "store"),
                 "overrides": {}, **settings.__dict__, "dpg_csv": str(tmp / "nowhere")}
    namespace["benchmarks"] = []
    with pytest.raises(MissingForEvaluation) as info:
        notebooks.TableNotebook.from_parameters("table3", namespace)
    assert "nowhere" in str(info.value) and "backbone_kwargs['checkpoint']" in str(info.value)
    assert not (tmp_path / "store").exists()


class CountingBackbone(FakeBackbone):
    calls = 0

    def generate(self, prompts_, seed=0, **sampling):
        CountingBackbone.calls += 1
        return super().generate(prompts_, seed=seed, **sampling)


def test_score_model_end_to_end_and_reuse(files):
    tmp, settings, overrides = files
    scorer = TransformersScorer(Mask2FormerDetector(tiny_mask2former(favour="apple"), device="cpu", scale=(96, 64)),
                                TransformersClipColors.from_pretrained(str(tmp / "clip"), device="cpu"))
    evaluators = {"geneval": scorer, "dpg": (load_benchmark(str(tmp / "ELLA")), ScriptedVQA())}
    backbone = CountingBackbone(seed=0)
    config = get_preset("small")
    out = tmp / "run" / "benchmarks"
    scores = paper_eval.score_model(backbone, config, str(out), settings, ("geneval", "dpg"), evaluators,
                                    Processes(), progress=False)
    assert CountingBackbone.calls == N_PROMPTS + 3  # one call per GenEval prompt (4 images), one per DPG item (3)
    assert scores["geneval"]["label"] == f"complete: {4 * N_PROMPTS} images of {N_PROMPTS} prompts"
    assert scores["geneval"]["n_images"] == 4 * N_PROMPTS and scores["dpg"]["complete"] and scores["dpg"]["vqa_model"] == "scripted"
    cols = paper_eval.columns("table3", scores)
    assert set(cols) >= {"GenEval", "DPGBench", "overall"} and all(0 <= v <= 100 for v in cols.values())
    assert "DPG" in paper_eval.columns("table9", scores)
    saved = json.loads((out / "scores.json").read_text())
    assert saved["geneval"]["overall"] == scores["geneval"]["overall"]
    # scored again with the same settings: reused, nothing generated
    again = paper_eval.score_model(backbone, config, str(out), settings, ("geneval", "dpg"), evaluators, Processes(),
                                   progress=False)
    assert again == scores and CountingBackbone.calls == N_PROMPTS + 3
    # another DPG judge: DPG is scored again, GenEval reused
    other = EvalSettings(**{**settings.__dict__, "dpg_vqa_model": str(tmp / "clip")})
    paper_eval.score_model(backbone, config, str(out), other, ("geneval", "dpg"), evaluators, Processes(),
                           progress=False)
    saved = json.loads((out / "scores.json").read_text())
    assert saved["dpg"]["settings"] == other.fingerprint("dpg") != settings.fingerprint("dpg")


def test_beside_paper():
    import pandas as pd

    long = pd.DataFrame({"row": ["30%", "30%", "0%"], "seed": [0, 1, 0], "run": ["a", "b", "c"],
                         "GenEval": [80.0, 82.0, 70.0], "DPGBench": [81.0, 83.0, 75.0]})
    out = paper_eval.beside_paper("table3", long)
    assert list(out.index) == ["0%", "30%"]
    assert out.loc["30%", "GenEval (ours)"] == 81.0 and out.loc["30%", "runs"] == 2
    assert out.loc["30%", "GenEval (paper)"] == paper.cell("table3", "30%", "GenEval")


@pytest.mark.slow  # about 5 min on 2 shared cores: the tiny Mask2Former at mmdet's 1333x800 input scale
def test_score_runs_opens_each_run_and_builds_the_evaluators(files, tmp_path):
    """A table's runs (run folders of the store) scored through the evaluators the settings name:
    the tiny Mask2Former and CLIP folders for GenEval, a tiny BLIP VQA folder for DPG-Bench."""
    import pandas as pd

    from segros import store
    from segros.backbones.registry import from_config
    from test_dpg import tiny_blip

    tmp, settings, overrides = files
    tiny_blip(str(tmp / "blip"), yes_bias=5.0)
    config = get_preset("small").replace(init_from=None)
    run = tmp_path / "store" / "table3" / "run"
    store.prepare(str(run), config)
    store.save_weights(from_config(config), str(run / "model.safetensors"))
    long = pd.DataFrame([{"row": "30%", "seed": 0, "run": str(run), "overall": 1.0}])
    long.attrs["damaged"] = []
    plan = paper_eval.Plan("table3", ("geneval", "dpg"))
    out = paper_eval.score_runs("table3", long, settings, plan, Processes(), progress=False)
    assert list(out.columns[:3]) == ["row", "seed", "run"] and out.attrs["damaged"] == []
    assert set(out.columns) >= {"GenEval", "DPGBench", "overall"} and "Single" not in out.columns
    saved = json.loads((run / "benchmarks" / "scores.json").read_text())
    assert saved["geneval"]["scorer"] == "transformers" and str(tmp / "mask2former") in saved["geneval"]["detector"]
    assert saved["dpg"]["vqa_model"].startswith("transformers BlipForQuestionAnswering")
    assert out.loc[0, "DPGBench"] == saved["dpg"]["dpg"] and out.loc[0, "GenEval"] == saved["geneval"]["overall"]
    assert len(os.listdir(run / "benchmarks" / "geneval")) >= N_PROMPTS
