"""GenEval, DPG-Bench and T2I-CompBench generated and scored by several processes.

Each function takes ``generate(prompts, seed) -> list of images`` and a
:class:`~segros.eval.parallel.Processes` and is called by every process (``accelerate launch``):

1. **Generation is dealt.** The units are what one process would generate in one go: a GenEval
   prompt's images (``seed_mode="prompt"``) or a block of ``batch_size`` consecutive prompts
   (``"image"``), a DPG item's grid, a block of ``batch_size`` CompBench prompts. Unit ``u`` goes to
   process ``u % num_processes``; each process writes its own files of the shared layout, so no
   image crosses between processes.
2. **The main process checks the layout** (every process waits first): GenEval's
   :func:`~segros.eval.geneval_layout.check_layout` (complete, in order, readable), DPG's grids,
   CompBench's :func:`~segros.eval.compbench.read_category_layout`. An incomplete layout stops
   every process with the main process's message.
3. **Scoring is dealt where the scorer allows it** (GenEval's transformers scorer, a DPG VQA model):
   each process scores its prompts' images / its items, the main process gathers the rows, puts
   them in layout order and writes the one results file. GenEval's official scorer (a subprocess)
   and the CompBench judge (which may span every GPU with ``device_map="auto"``) run on the main
   process only.

Every process returns the main process's results. With deterministic kernels the results equal
those of one process (tests/test_eval_parallel.py runs both with two CPU processes).
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

from segros.eval import compbench, dpg
from segros.eval.geneval_layout import IMAGES_PER_PROMPT, generate_layout, load_metadata
from segros.eval.parallel import Processes


class ProcessFailed(RuntimeError):
    """Another process failed; the message is that process's error."""


def _on_main(processes: Processes, fn: Callable):
    """``fn()`` on the main process; its value (or its error, raised everywhere) on every process."""
    box = None
    if processes.is_main:
        try:
            box = ("ok", fn())
        except Exception as e:  # handed to the other processes below, then raised here as it was
            if processes.distributed:
                processes.broadcast(("error", f"{type(e).__name__}: {e}"))
            raise
    box = processes.broadcast(box)
    if box[0] == "error":
        raise ProcessFailed(f"the main process failed: {box[1]}")
    return box[1]


def _on_each(processes: Processes, fn: Callable) -> list | None:
    """``fn()`` on every process; the list of their values on the main process (None elsewhere).
    An error of any process is raised on every process (the main process names which failed)."""
    try:
        box = ("ok", fn())
    except Exception as e:  # noqa: BLE001 - gathered, then raised on every process
        box = ("error", f"process {processes.index}: {type(e).__name__}: {e}")
    parts = processes.gather(box)
    errors = [p[1] for p in parts if p[0] == "error"] if parts is not None else None
    errors = processes.broadcast(errors)
    if errors:
        raise ProcessFailed("; ".join(errors))
    return None if parts is None else [p[1] for p in parts]


def _blocks(indices: Sequence[int], size: int) -> list[list[int]]:
    return [list(indices[i:i + size]) for i in range(0, len(indices), size)]


# -----------------------------------------------------------------------------
# GenEval

def geneval(generate, metadata, out_dir, scorer, processes: Processes | None = None, *,
            images_per_prompt: int = IMAGES_PER_PROMPT, seed: int = 0, seed_mode: str = "prompt",
            batch_size: int | None = None, outfile: str | None = None, progress: bool = True) -> dict:
    """Generate GenEval's layout under ``out_dir`` and score it with ``scorer`` (a
    :class:`~segros.eval.geneval_scoring.GenEvalScorer`); returns the scorer's results.

    The settings are :func:`~segros.eval.geneval_layout.generate_layout`'s. A layout that is not
    complete after generation is refused (no partial summary)."""
    processes = processes or Processes()
    metadata = load_metadata(metadata)
    n = len(metadata)
    if seed_mode == "image":
        units = _blocks(list(range(n)), int(batch_size or 16))
    else:
        units = [[i] for i in range(n)]
    mine = [i for unit in processes.deal(units) for i in unit]
    _on_each(processes, lambda: generate_layout(
        out_dir, metadata, generate, indices=mine, images_per_prompt=images_per_prompt, seed=seed,
        seed_mode=seed_mode, batch_size=batch_size, progress=progress and processes.is_main))
    processes.barrier()
    report = _on_main(processes, lambda: scorer.check(out_dir, metadata, images_per_prompt=images_per_prompt))
    outfile = os.fspath(outfile) if outfile else scorer.default_outfile(report.layout_dir)
    if not getattr(scorer, "shares_work", False) or not processes.distributed:
        return _on_main(processes, lambda: scorer.finish(
            report, scorer.score_entries(report.entries, progress=progress, outfile=outfile), outfile))
    prompts = sorted({e.index for e in report.entries})
    my_prompts = set(processes.deal(prompts))
    entries = [e for e in report.entries if e.index in my_prompts]
    parts = _on_each(processes, lambda: scorer.score_entries(entries, progress=progress and processes.is_main,
                                                             outfile=outfile))
    return _on_main(processes, lambda: scorer.finish(report, [r for part in parts for r in part], outfile))


# -----------------------------------------------------------------------------
# DPG-Bench

def dpg_bench(generate, bench: dpg.DPGBench, out_dir: str, vqa, processes: Processes | None = None, *,
              items: Sequence[str] | None = None, seed: int = 0, pic_num: int = dpg.PIC_NUM,
              resolution: int | None = None, category_crops: str = "last", results_path: str | None = None,
              progress: bool = True) -> dict:
    """Write the DPG-Bench grids of ``items`` (default all) under ``out_dir`` and score them with
    ``vqa``; returns :func:`segros.eval.dpg.score_layout`'s results (written once, by the main process).
    A missing or unreadable grid stops every process."""
    processes = processes or Processes()
    ids = list(bench.items) if items is None else list(items)
    mine = processes.deal(ids)
    _on_each(processes, lambda: dpg.generate_layout(out_dir, bench, generate, items=mine, seed=seed,
                                                    progress=progress and processes.is_main))
    processes.barrier()

    def check():
        lacking = [k for k in ids if dpg.find_image(out_dir, k) is None]
        if lacking:
            raise FileNotFoundError(f"{out_dir}: {len(lacking)} of {len(ids)} grids missing after generation, "
                                    f"e.g. {lacking[:5]}")

    _on_main(processes, check)
    parts = _on_each(processes, lambda: dpg.score_items(out_dir, bench, vqa, items=mine, pic_num=pic_num,
                                                        resolution=resolution, progress=progress and processes.is_main))

    def finish():
        records = [r for rec, _ in parts for r in rec]
        missing = [m for _, miss in parts for m in miss]
        return dpg.write_results(records, missing, bench, out_dir, vqa.name, items=ids, pic_num=pic_num,
                                 resolution=resolution, category_crops=category_crops, results_path=results_path)

    return _on_main(processes, finish)


# -----------------------------------------------------------------------------
# T2I-CompBench

def t2i_compbench(generate, compbench_dir: str, out_dir: str, judge, processes: Processes | None = None, *,
                  categories: Sequence[str] = compbench.CATEGORIES, seeds: Sequence[int] = compbench.DEFAULT_SEEDS,
                  batch_size: int = 8, unparsable: str = "zero", expected_prompts: int | None = compbench.PROMPTS_PER_CATEGORY,
                  results_file: str | None = None, progress: bool = True) -> dict:
    """Generate the images of ``categories`` (blocks of ``batch_size`` prompts dealt among the
    processes) and judge them on the main process (:func:`segros.eval.compbench.score_compbench`)."""
    processes = processes or Processes()
    prompts = {c: compbench.read_prompts(compbench_dir, c, expected_prompts) for c in categories}

    def make():
        for c in categories:
            mine = [i for block in processes.deal(_blocks(list(range(len(prompts[c]))), batch_size)) for i in block]
            compbench.generate_category(generate, prompts[c], out_dir, c, seeds, indices=mine, batch_size=batch_size,
                                        progress=progress and processes.is_main)

    _on_each(processes, make)
    processes.barrier()
    return _on_main(processes, lambda: compbench.score_compbench(
        judge, compbench_dir, out_dir, categories, n_images=len(seeds), unparsable=unparsable,
        results_file=results_file, expected_prompts=expected_prompts, batch_size=batch_size, progress=progress))


__all__ = ["ProcessFailed", "dpg_bench", "geneval", "t2i_compbench"]
