"""Evaluation on two CPU processes (torch.distributed, gloo) gives the one-process results.

Each case runs the same function once in this process (one process) and once in two spawned
processes that form a gloo group, as ``accelerate launch --cpu --num_processes 2`` would: the
results of both processes equal the one-process results, the main process alone wrote the files,
and the layouts are complete and in order (same files, same bytes).
"""

from __future__ import annotations

import os
import pickle
import socket

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from fake_backbone import FakeBackbone
from geneval_tiny import draw, prompts, save_tiny_clip, tiny_mask2former
from segros import inference
from segros.data.shapes import ShapesWorld
from segros.eval import compbench, distributed
from segros.eval.dpg import load_benchmark
from segros.eval.geneval_detect import Mask2FormerDetector, TransformersClipColors, TransformersScorer
from segros.eval.geneval_layout import check_layout
from segros.eval.parallel import Processes, current, merge
from segros.eval.shapes_detector import detect
from test_compbench import write_checkout
from test_dpg import ScriptedVQA, solid_generate, write_ella

# ---- the cases: case(processes, root) -> picklable results; root holds the inputs and gets the outputs


def case_inference(processes, root):
    """Shapes-world GenEval layout + detector scores, and QA accuracy (segros.inference)."""
    world = ShapesWorld(image_size=32, seed=0)
    metadata = world.geneval_metadata(n_total=7, seed=0)
    backbone = FakeBackbone(seed=0).eval()
    scores = inference.geneval_scores(backbone, metadata, os.path.join(root, "geneval"), seeds=[0, 1], detector=detect,
                                      batch_size=3, progress=False, processes=processes)
    qa = world.qa(world.split("eval", 9))[:9]
    return {"geneval": scores, "qa": inference.qa_scores(backbone, qa, batch_size=2, progress=False,
                                                         processes=processes)}


PROMPTS = prompts()[:4]


def _scorer(root):
    # the real detector path at a small input scale (mmdet's is 1333x800): the test is about sharing, not scale
    detector = Mask2FormerDetector(tiny_mask2former(favour="apple"), device="cpu", scale=(96, 64))
    return TransformersScorer(detector, TransformersClipColors.from_pretrained(os.path.join(root, "clip"), device="cpu"))


def _draw_generate(prompts_, seed):
    return [draw(p, seed) for p in prompts_]


def case_geneval(processes, root, seed_mode="prompt"):
    """The official layout dealt by prompt, scored by the transformers scorer on two shares."""
    out = os.path.join(root, f"geneval_{seed_mode}")
    results = distributed.geneval(_draw_generate, PROMPTS, out, _scorer(root), processes, images_per_prompt=2,
                                  seed_mode=seed_mode, batch_size=2 if seed_mode == "image" else None, progress=False)
    with open(results["results_file"]) as f:
        rows = f.read().replace(root, "<root>")
    return {"summary": results["summary"], "label": results["label"], "partial": results["partial"], "rows": rows}


def case_geneval_image(processes, root):
    return case_geneval(processes, root, seed_mode="image")


def case_dpg(processes, root):
    bench = load_benchmark(os.path.join(root, "ELLA"), skip_first_row=False)
    results = distributed.dpg_bench(solid_generate, bench, os.path.join(root, "dpg"), ScriptedVQA(), processes,
                                    progress=False)
    items = [{**r, "image": os.path.relpath(r["image"], root)} for r in results["items"]]
    return {**{k: results[k] for k in ("dpg", "l1", "l2", "n_scored", "complete")}, "items": items}


def _judge(images, questions):
    return [f"Score: {int(np.asarray(im).mean()) % 101}" for im in images]


def _colour_generate(prompts_, seed):
    return [np.full((8, 8, 3), (sum(map(ord, p)) * 7 + seed * 13) % 256, np.uint8) for p in prompts_]


def case_compbench(processes, root):
    results = distributed.t2i_compbench(_colour_generate, os.path.join(root, "T2I-CompBench"),
                                        os.path.join(root, "compbench"), _judge, processes,
                                        categories=("color", "numeracy"), batch_size=2, expected_prompts=5,
                                        progress=False)
    return {"table10": results["table10"], "categories": results["categories"]}


def case_failing_generation(processes, root):
    def generate(prompts_, seed):
        if processes.index == 1:
            raise RuntimeError("out of memory on process 1")
        return _draw_generate(prompts_, seed)

    try:
        distributed.geneval(generate, PROMPTS, os.path.join(root, "failing"), _scorer(root), processes,
                            images_per_prompt=1, progress=False)
    except distributed.ProcessFailed as e:
        return f"ProcessFailed: {e}"
    return "no error"


CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}


# ---- running the cases on two processes (one group for every case: the start-up is the slow part)

def _worker(rank, world_size, port, root):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        processes = current()
        assert (processes.index, processes.num_processes) == (rank, world_size)
        results = {case: fn(processes, root) for case, fn in CASES.items()}
        with open(os.path.join(root, f"result.{rank}.pkl"), "wb") as f:
            pickle.dump(results, f)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_inputs(root):
    root.mkdir(parents=True)
    save_tiny_clip(str(root / "clip"))
    write_ella(root / "ELLA")
    write_checkout(root / "T2I-CompBench", n=5, categories=("color", "numeracy"))
    return root


def files(folder, under):
    """{relative path: bytes} of every file under ``folder/under``; text files with ``folder`` replaced."""
    out = {}
    for dirpath, _, names in os.walk(os.path.join(folder, under)):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                blob = f.read()
            if not blob.startswith(b"\x89PNG"):
                blob = blob.replace(str(folder).encode(), b"<root>")
            out[os.path.relpath(path, folder)] = blob
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(one-process results, [results of process 0, of process 1], one-process root, two-process root)."""
    base = tmp_path_factory.mktemp("parallel")
    one, two = make_inputs(base / "one"), make_inputs(base / "two")
    expected = {case: fn(Processes(), str(one)) for case, fn in CASES.items()}
    mp.spawn(_worker, args=(2, _free_port(), str(two)), nprocs=2, join=True)
    got = []
    for rank in range(2):
        with open(two / f"result.{rank}.pkl", "rb") as f:
            got.append(pickle.load(f))
    return expected, got, one, two


OUTPUTS = {"inference": "geneval", "geneval": "geneval_prompt", "geneval_image": "geneval_image", "dpg": "dpg",
           "compbench": "compbench"}


@pytest.mark.parametrize("case", list(OUTPUTS))
def test_two_processes_equal_one(case, runs):
    expected, got, one, two = runs
    assert got[0][case] == expected[case] and got[1][case] == expected[case]
    # the same files with the same bytes: the layouts are complete and in order, written once
    assert files(two, OUTPUTS[case]) == files(one, OUTPUTS[case])
    if case == "geneval":
        report = check_layout(two / "geneval_prompt", PROMPTS, 2)
        assert report.complete and [e.index for e in report.entries] == [i for i in range(4) for _ in range(2)]
    if case == "compbench":
        for c in ("color", "numeracy"):
            names = sorted(os.listdir(two / "compbench" / c / "samples"))
            assert [compbench.question_id_of(n) for n in names] == list(range(5))


def test_an_error_on_one_process_stops_every_process(runs):
    expected, got, one, two = runs
    assert expected["failing_generation"] == "no error"  # one process: no process 1
    for g in got:
        assert g["failing_generation"].startswith("ProcessFailed: ")
        assert "process 1: RuntimeError: out of memory" in g["failing_generation"]
    assert not os.path.exists(two / "failing" / "results_transformers.jsonl")


def test_dealing_and_merging():
    units = list(range(7))
    shares = [Processes(r, 3).deal(units) for r in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(x for s in shares for x in s) == units
    assert Processes().deal(units) == units and Processes().gather("x") == ["x"] and Processes().broadcast(3) == 3
    assert merge([{1: "a"}, {2: "b"}]) == {1: "a", 2: "b"} and merge(None) is None
    with pytest.raises(ValueError, match="same keys"):
        merge([{1: "a"}, {1: "b"}])
    with pytest.raises(ValueError, match="index"):
        Processes(2, 2)
