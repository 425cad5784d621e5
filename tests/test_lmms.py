"""Table 2 through lmms-eval: the request core (segros.eval.lmms) on hand-made instances and tiny
random backbones, the model class's loading (segros.lmms_model), and, when lmms-eval is importable,
lmms-eval's own evaluator on a tiny local task written by the test (no hub datasets)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from segros import paper
from segros.backbones import REGISTRY, register
from segros.backbones.base import Backbone
from segros.backbones.harmon import build_harmon
from segros.backbones.showo import build_showo
from segros.eval import lmms as core
from segros import lmms_model

HAS_LMMS = importlib.util.find_spec("lmms_eval") is not None
needs_lmms = pytest.mark.skipif(not HAS_LMMS, reason="lmms-eval is not installed here (it needs torchvision, which "
                                                      "does not import beside this CPU torch); see docs/evaluation.md")


def _image(seed, shape=(40, 56)):
    return Image.fromarray(np.random.RandomState(seed).randint(0, 255, (*shape, 3), dtype=np.uint8))


def _instance(context, doc_id, task="tiny", split="test", **gen):
    return SimpleNamespace(args=(context, gen, lambda doc: [doc["image"]], doc_id, task, split))


class Scripted:
    """answer(images, questions, max_new_tokens) returning '<question> / <n> / <mean pixel>'."""

    def __init__(self):
        self.calls = []

    def __call__(self, images, questions, max_new_tokens):
        self.calls.append((len(questions), max_new_tokens))
        return [f"{q} / {max_new_tokens} / {int(np.asarray(im).mean())}" for im, q in zip(images, questions)]


def _docs(n=4):
    return {"tiny": {"test": [{"image": _image(i), "question": f"q{i}"} for i in range(n)]}}


# ---- the core, on hand-made instances -----------------------------------------------------------

def test_requests_become_answer_calls():
    docs = _docs()
    reqs = [_instance("<image>\nq0", 0, max_new_tokens=16), _instance("q1", 1, max_new_tokens=16),
            _instance("q2", 2, max_new_tokens=16), _instance("q3", 3)]
    fn = Scripted()
    out = core.generate_until(fn, [r.args for r in reqs], docs, batch_size=2, progress=False)
    means = [int(np.asarray(docs["tiny"]["test"][i]["image"]).mean()) for i in range(4)]
    assert out == [f"q0 / 16 / {means[0]}", f"q1 / 16 / {means[1]}", f"q2 / 16 / {means[2]}",
                   f"q3 / {core.DEFAULT_MAX_NEW_TOKENS} / {means[3]}"]
    # batches of at most 2, never mixing max_new_tokens
    assert fn.calls == [(2, 16), (1, 16), (1, core.DEFAULT_MAX_NEW_TOKENS)]


def test_until_cuts_answers_and_sampling_is_counted():
    docs = _docs(2)
    stats = core.Stats()
    reqs = [_instance("Yes. ASSISTANT: more", 0, until=["ASSISTANT:", "\n\n"], temperature=0.7, top_p=0.9),
            _instance("No\n\nmore", 1, until="\n\n", do_sample=True)]
    echo = lambda images, questions, n: list(questions)  # noqa: E731
    out = core.generate_until(echo, [r.args for r in reqs], docs, stats=stats, progress=False)
    assert out == ["Yes. ", "No"]
    assert stats.n_sampling_ignored == 2 and stats.ignored_gen_kwargs == {"top_p"} and stats.n_requests == 2
    assert core.apply_until("abcabc", ["c", "b"]) == "a" and core.apply_until("abc", ["", "z"]) == "abc"
    assert core.clean_context("<image>\n<image 1> Which?") == "<image 1> Which?"


def test_images_multi_image_and_paths(tmp_path):
    path = tmp_path / "im.png"
    _image(7).save(path)
    docs = {"t": {"s": [{"a": _image(1), "b": _image(2)}, {"p": str(path)}, {"x": 3}, {}]}}
    two = SimpleNamespace(args=("q", {}, lambda d: [d["a"], d["b"]], 0, "t", "s"))
    stats = core.Stats()
    fn = Scripted()
    core.generate_until(fn, [two.args], docs, stats=stats, progress=False)
    assert stats.n_multi_image == 1
    with pytest.raises(ValueError, match="2 images; the backbones answer about one"):
        core.generate_until(fn, [two.args], docs, multi_image="error", progress=False)
    from_path = SimpleNamespace(args=("q", {}, lambda d: [d["p"]], 1, "t", "s"))
    out = core.generate_until(Scripted(), [from_path.args], docs, progress=False)
    assert out == [f"q / {core.DEFAULT_MAX_NEW_TOKENS} / {int(np.asarray(_image(7)).mean())}"]
    bad = SimpleNamespace(args=("q", {}, lambda d: [d["x"]], 2, "t", "s"))
    with pytest.raises(ValueError, match="task 't' split 's' doc 2: visual 0 is a int"):
        core.generate_until(fn, [bad.args], docs, progress=False)
    none = SimpleNamespace(args=("q", {}, lambda d: [], 3, "t", "s"))
    with pytest.raises(ValueError, match="has no image"):
        core.generate_until(fn, [none.args], docs, progress=False)
    missing = SimpleNamespace(args=("q", {}, lambda d: [], 9, "t", "s"))
    with pytest.raises(ValueError, match="doc 9: no such document"):
        core.generate_until(fn, [missing.args], docs, progress=False)
    with pytest.raises(ValueError, match="multi_image must be one of"):
        core.generate_until(fn, [], docs, multi_image="grid")


def test_table2_row_maps_lmms_metrics_to_the_paper_columns():
    assert tuple(core.TABLE2_METRICS) == paper.TABLE2_COLUMNS
    results = {"results": {"mme": {"alias": "mme", "mme_perception_score,none": 1195.0,
                                   "mme_cognition_score,none": 300.0},
                           "pope": {"pope_accuracy,none": 0.838, "pope_f1_score,none": 0.839},
                           "gqa": {"exact_match,none": 0.588}, "mmmu_val": {"mmmu_acc,none": 0.347},
                           "seedbench": {"seed_image,none": 0.652, "seed_all,none": 0.6}}}
    row = core.table2_row(results)
    assert row == pytest.approx({"MME": 1195.0, "POPE (Acc)": 83.8, "POPE (F1)": 83.9, "GQA": 58.8, "MMMU": 34.7,
                                 "SEED": 65.2})
    assert np.isnan(core.table2_row({"results": {}})["GQA"])


# ---- the core on tiny random backbones (their greedy answer paths) ------------------------------

@pytest.mark.parametrize("family", ["showo", "harmon"])
def test_generate_until_on_tiny_real_backbones(family):
    torch.manual_seed(0)
    model = (build_showo if family == "showo" else build_harmon)("tiny").eval()
    docs = _docs(3)
    reqs = [_instance(f"what is in image {i}\nAnswer the question using a single word or phrase.", i,
                      max_new_tokens=3) for i in range(3)]
    out = core.generate_until(model.answer, [r.args for r in reqs], docs, batch_size=2, progress=False)
    direct = model.answer([docs["tiny"]["test"][i]["image"] for i in range(3)],
                          [core.clean_context(r.args[0]) for r in reqs], 3)
    assert out == direct and all(isinstance(a, str) and len(a.split()) <= 3 for a in out)


# ---- loading the model for the class ------------------------------------------------------------

def test_load_model_sources_and_errors(tmp_path):
    model = lmms_model.load_model(backbone="tiny-showo", backbone_kwargs='{"n_fit": 16}', device="cpu")
    assert type(model).__name__ == "TinyShowo" and not model.training
    folder = tmp_path / "tiny"
    model.save_pretrained(str(folder))
    again = lmms_model.load_model(run=str(folder), device="cpu", dtype="float32")
    img = _image(3, (32, 32))
    assert again.answer([img], ["what color is the circle"]) == model.answer([img], ["what color is the circle"])
    with pytest.raises(ValueError, match="either run=<run folder> or backbone/preset"):
        lmms_model.load_model(run=str(folder), backbone="tiny-showo")
    with pytest.raises(ValueError, match="need run=<run folder>, backbone=<registry name> or preset=<preset>"):
        lmms_model.load_model()
    with pytest.raises(ValueError, match="backbone_kwargs must be JSON"):
        lmms_model.load_model(backbone="tiny-showo", backbone_kwargs="{n_fit: 16}")
    with pytest.raises(ValueError, match="dtype must be one of"):
        lmms_model.load_model(backbone="tiny-showo", backbone_kwargs={"n_fit": 16}, dtype="half")
    with pytest.raises(ValueError, match="unknown preset 'paper-harmon'"):
        lmms_model.load_model(preset="paper-harmon")


def test_load_model_refuses_a_backbone_without_answer(monkeypatch):
    sys.path.insert(0, os.path.dirname(__file__))
    from fake_backbone import FakeBackbone

    class NoAnswer(FakeBackbone):
        family = "no-answer"
        answer = Backbone.answer

    monkeypatch.setitem(REGISTRY, "no-answer-test", lambda **kw: NoAnswer())
    with pytest.raises(ValueError, match="no-answer has no answer\\(\\)"):
        lmms_model.load_model(backbone="no-answer-test", device="cpu")
    assert "no-answer-test" in REGISTRY and register  # registry untouched after the test (monkeypatch)


def test_command_line_for_a_subprocess():
    cmd = lmms_model.lmms_eval_command({"backbone": "harmon-1.5b", "backbone_kwargs": {"checkpoint": "/c/h.pth",
                                                                                      "llm_path": "/c/q"},
                                        "dtype": "bfloat16"}, output_path="out/lmms", limit=4)
    assert cmd[:3] == ["lmms-eval", "--model", "segros"]
    assert cmd[4] == 'backbone=harmon-1.5b,backbone_kwargs={"checkpoint": "/c/h.pth", "llm_path": "/c/q"},dtype=bfloat16'
    assert cmd[6] == "mme,pope,gqa,mmmu_val,seedbench" and cmd[-4:] == ["--output_path", "out/lmms", "--limit", "4"]
    with pytest.raises(ValueError, match="unknown segros model_args \\['checkpoint'\\]"):
        lmms_model.lmms_eval_command({"checkpoint": "x"})


def test_the_module_imports_without_lmms_eval():
    """The core and the model module import without lmms-eval; only the class needs it."""
    code = ("import sys; sys.modules['lmms_eval'] = None; import segros.lmms_model as m, segros.eval.lmms; "
            "from segros.lmms_model import *\n"
            "try:\n    m.SegrosLMMS\nexcept ImportError:\n    print('needs lmms_eval')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "needs lmms_eval"


# ---- lmms-eval's own evaluator on a tiny local task (only where lmms-eval imports) ----------------

TASK_YAML = """\
dataset_path: {dataset}
dataset_kwargs:
  load_from_disk: true
task: segros_tiny
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 3
  until:
    - "ASSISTANT:"
process_results: !function utils.process_results
metric_list:
  - metric: tiny_exact
    aggregation: mean
    higher_is_better: true
metadata:
  - version: 0.0
"""

TASK_UTILS = '''\
def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"] + "\\nAnswer the question using a single word or phrase."


def process_results(doc, results):
    return {"tiny_exact": float(results[0].strip().lower() == doc["answer"])}
'''


def write_tiny_task(folder, n=3):
    """A local lmms-eval task: a DatasetDict saved to disk (an Image column, as MME's) and its YAML."""
    import datasets

    ds = datasets.Dataset.from_dict(
        {"image": [_image(i) for i in range(n)], "question": [f"is there a circle {i}" for i in range(n)],
         "answer": ["yes", "no", "yes"][:n]},
        features=datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                                    "answer": datasets.Value("string")}))
    datasets.DatasetDict({"test": ds}).save_to_disk(str(folder / "data"))
    (folder / "segros_tiny.yaml").write_text(TASK_YAML.format(dataset=folder / "data"))
    (folder / "utils.py").write_text(TASK_UTILS)
    return folder


@needs_lmms
def test_manifest_names_the_class():
    from lmms_eval.api.model import lmms

    m = lmms_model.manifest()
    assert m.model_id == "segros" and m.simple_class_path == "segros.lmms_model.SegrosLMMS"
    assert issubclass(lmms_model.SegrosLMMS, lmms) and lmms_model.SegrosLMMS.is_simple
    with pytest.raises(ValueError, match="unknown segros model_args \\['checkpoint'\\]"):
        lmms_model.SegrosLMMS(model=object(), checkpoint="x")
    with pytest.raises(NotImplementedError, match="generate_until, not loglikelihood"):
        lmms_model.SegrosLMMS(model=object()).loglikelihood([])


@needs_lmms
@pytest.mark.parametrize("family", ["showo", "harmon"])
def test_model_class_answers_lmms_instances(family):
    """The class on lmms-eval's own Instance objects (hand-made), a tiny random backbone."""
    from lmms_eval.api.instance import Instance

    torch.manual_seed(0)
    model = (build_showo if family == "showo" else build_harmon)("tiny").eval()
    lm = lmms_model.SegrosLMMS(model=model, batch_size=2, max_new_tokens=3)
    lm.task_dict = _docs(3)
    reqs = [Instance("generate_until", (f"<image>\nquestion {i}", {"until": ["zzz"]}, lambda d: [d["image"]], i,
                                        "tiny", "test"), idx=0, metadata={"task": "tiny", "doc_id": i, "repeats": 1})
            for i in range(3)]
    out = lm.generate_until(reqs)
    assert out == model.answer([lm.task_dict["tiny"]["test"][i]["image"] for i in range(3)],
                               [f"question {i}" for i in range(3)], 3)
    assert lm.stats.n_requests == 3 and lm.batch_size == 2


@needs_lmms
def test_lmms_eval_evaluator_runs_a_tiny_local_task(tmp_path):
    torch.manual_seed(0)
    model = build_showo("tiny").eval()
    tasks = write_tiny_task(tmp_path / "tasks")
    res = lmms_model.run_lmms_eval(model, ["segros_tiny"], include_path=str(tasks), include_defaults=False,
                                   output_path=str(tmp_path / "out.json"), log_samples=True)
    samples = res["samples"]["segros_tiny"]
    assert len(samples) == 3
    expect = [core.apply_until(a, ["ASSISTANT:"]) for a in model.answer(
        [_image(i) for i in range(3)],
        [f"is there a circle {i}\nAnswer the question using a single word or phrase." for i in range(3)], 3)]
    assert [s["resps"][0][0] if isinstance(s["resps"][0], list) else s["resps"][0] for s in samples] == expect
    score = float(np.mean([a.strip().lower() == t for a, t in zip(expect, ["yes", "no", "yes"])]))
    assert res["results"]["segros_tiny"]["tiny_exact,none"] == pytest.approx(score)
    assert res["stats"]["n_requests"] == 3 and json.load(open(tmp_path / "out.json"))["stats"]["n_requests"] == 3


def _entry_point_installed():
    eps = importlib.metadata.entry_points()
    group = eps.select(group="lmms_eval.models") if hasattr(eps, "select") else eps.get("lmms_eval.models", [])
    return any(ep.name == "segros" and ep.value == "segros.lmms_model:manifest" for ep in group)


@needs_lmms
@pytest.mark.skipif(not _entry_point_installed(), reason="segros is installed without its lmms_eval.models entry "
                                                         "point here (reinstall the package: pip install -e .)")
def test_lmms_eval_command_line_finds_segros(tmp_path):
    """``lmms-eval --model segros`` through the entry point, on a run folder of a tiny family."""
    exe = shutil.which("lmms-eval") or os.path.join(os.path.dirname(sys.executable), "lmms-eval")
    model = lmms_model.load_model(backbone="tiny-showo", backbone_kwargs={"n_fit": 16}, device="cpu")
    model.save_pretrained(str(tmp_path / "tiny"))
    tasks = write_tiny_task(tmp_path / "tasks")
    cmd = lmms_model.lmms_eval_command({"run": str(tmp_path / "tiny"), "device": "cpu"}, ["segros_tiny"],
                                       output_path=str(tmp_path / "out"), include_path=str(tasks), executable=exe)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr[-3000:]
    written = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "out") for f in fs if f.endswith("results.json")]
    assert written, out.stdout[-2000:]
    results = json.load(open(written[0]))["results"]["segros_tiny"]
    assert 0.0 <= results["tiny_exact,none"] <= 1.0
