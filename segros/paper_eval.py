"""The paper's columns at paper scale: which benchmarks each table reports, the notebooks' shared
evaluation parameters, a preflight check, and scoring a run's model on the real benchmarks.

At small scale every column of a table is a shapes-world score (:mod:`segros.inference`). With a
``paper-*`` preset the notebooks score the columns the paper reports for the table
(:data:`TABLE_BENCHMARKS`): GenEval and DPG-Bench for Tables 1, 3–6, 8 and 9, T2I-CompBench for
Tables 1 and 10, and Table 2's lmms-eval tasks (``understanding.ipynb``, through
:mod:`segros.lmms_model`). The benchmark files, the evaluators and their weights are the user's
(nothing is copied into this repository or downloaded here); the notebooks name them with the
parameters of :class:`EvalSettings`, the same names in every notebook.

:func:`preflight` runs before any training or generation. It checks every file, folder, package
and weight that the chosen benchmarks and the table's runs need, and raises
:class:`MissingForEvaluation` listing each one that is missing, so a notebook never trains for a
day and then stops at an evaluator that is not there. A hub id (``owner/name``) counts as present
when it is in the local hub cache, or when downloads are allowed (``HF_HUB_OFFLINE`` unset): then
the evaluator fetches it and the plan says so.

:func:`score_model` generates each benchmark's layout from a model and scores it with
:mod:`segros.eval.distributed` (several processes share the work under ``accelerate launch``);
the layouts and results go under ``<run>/benchmarks/``, and ``<run>/benchmarks/scores.json``
keeps each benchmark's scores with the settings that made them, so a notebook run again reuses
them. :func:`score_runs` does this for every run of a table; :func:`beside_paper` puts the scores
beside the paper's. docs/evaluation.md ("The notebooks at paper scale") lists the parameters.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from segros import paper, pipeline, store
from segros.backbones.registry import REQUIRED_PARTS, from_config
from segros.eval import compbench, distributed, dpg
from segros.eval.dpg_vqa import MPLUG_MODEL, build_vqa
from segros.eval.geneval_detect import DEFAULT_CLIP, DEFAULT_DETECTOR, OFFICIAL_DETECTOR, open_clip_available
from segros.eval.geneval_layout import OFFICIAL_N_PROMPTS, official_metadata_path, read_official_metadata
from segros.eval.geneval_official import EVALUATE_SCRIPT
from segros.eval.geneval_scorers import SCORERS, build_scorer
from segros.eval.geneval_scoring import as_percentages
from segros.eval.lmms import TABLE2_TASKS
from segros.eval.parallel import Processes, current
from segros.inference import eval_autocast
from segros.presets import TrainConfig, get_preset
from segros.vocab import TAGS

BENCHMARKS = ("geneval", "dpg", "compbench", "lmms")
# the benchmarks behind each table's columns in the paper (segros.paper.columns)
TABLE_BENCHMARKS = {
    "table1": ("geneval", "dpg", "compbench"),
    "table2": ("lmms",),
    "table3": ("geneval", "dpg"), "table4": ("geneval", "dpg"), "table5": ("geneval", "dpg"),
    "table6": ("geneval", "dpg"), "table8": ("geneval", "dpg"), "table9": ("geneval", "dpg"),
    "table10": ("compbench",),
}
# the paper's name of each GenEval tag column (Table 1)
TAG_COLUMNS = {"single_object": "Single", "two_object": "Two", "counting": "Count", "colors": "Color",
               "position": "Position", "color_attr": "Attr.", "overall": "GenEval"}
DPG_VQA_CHOICES = ("mplug", "transformers")
SCORES_FILE = "scores.json"
IMAGES_PER_PROMPT = 4  # GenEval and DPG-Bench: four images per prompt


@dataclass(frozen=True)
class EvalSettings:
    """The notebooks' evaluation parameters (each field is a notebook parameter of the same name and
    default). Paths may be absolute or relative to the working directory; "" means not given."""

    geneval_metadata: str = ""   # a GenEval checkout (prompts/evaluation_metadata.jsonl) or that file
    geneval_scorer: str = "transformers"  # "transformers" (Mask2Former + CLIP, our rules) | "official" (subprocess)
    geneval_detector: str = ""   # transformers: Mask2Former folder / hub id; official: folder holding <model>.pth
    geneval_clip: str = ""       # transformers: CLIP folder / hub id ("" = open_clip ViT-L-14 openai if it imports)
    geneval_python: str = ""     # official: the python of GenEval's own environment
    dpg_csv: str = ""            # an ELLA checkout (dpg_bench/dpg_bench.csv) or that CSV
    dpg_vqa: str = "mplug"       # "mplug" (ELLA's judge, modelscope) | "transformers" (a BLIP VQA folder)
    dpg_vqa_model: str = ""      # mplug: modelscope id or folder ("" = ELLA's); transformers: BLIP VQA folder
    compbench_dir: str = ""      # a T2I-CompBench checkout (examples/dataset/<category>_val.txt)
    judge_model: str = ""        # the CompBench judge: a Qwen2.5-VL folder / hub id (paper: Qwen2.5-VL-32B)
    lmms_tasks: str = ",".join(TABLE2_TASKS)  # Table 2's lmms-eval tasks
    eval_device: str = ""        # "" = CUDA when available (each process its own under accelerate)
    benchmarks: tuple = ()       # () = the table's paper columns; or a subset of them

    def __post_init__(self):
        object.__setattr__(self, "benchmarks", tuple(self.benchmarks or ()))

    def fingerprint(self, benchmark: str) -> str:
        """A hash of the settings that shape ``benchmark``'s scores (a cached score is reused only when equal)."""
        keys = {"geneval": ("geneval_metadata", "geneval_scorer", "geneval_detector", "geneval_clip"),
                "dpg": ("dpg_csv", "dpg_vqa", "dpg_vqa_model"), "compbench": ("compbench_dir", "judge_model"),
                "lmms": ("lmms_tasks",)}[benchmark]
        blob = json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


PARAMETERS = tuple(f.name for f in fields(EvalSettings))


def split_settings(params: dict) -> tuple[EvalSettings, dict]:
    """``(EvalSettings from the evaluation parameters, the other parameters)`` of a notebook's parameters."""
    mine = {k: params[k] for k in PARAMETERS if k in params}
    rest = {k: v for k, v in params.items() if k not in PARAMETERS}
    if isinstance(mine.get("benchmarks"), str):
        mine["benchmarks"] = (mine["benchmarks"],)
    return EvalSettings(**mine), rest


def is_paper_scale(preset: str) -> bool:
    return preset.startswith("paper-")


# -----------------------------------------------------------------------------
# preflight

class MissingForEvaluation(FileNotFoundError):
    """What a paper-scale notebook needs and does not have; the message lists every item."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("cannot score the paper's columns; missing before any training or generation:\n"
                         + "\n".join(f"  - {p}" for p in self.problems))


@dataclass
class Plan:
    """What :func:`preflight` found: the benchmarks to score, and notes (hub ids to fetch, ...)."""

    table: str
    benchmarks: tuple
    notes: list = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"paper scale, {self.table}: scoring {', '.join(self.benchmarks)}"]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


def _hub_id(value: str) -> bool:
    return value.count("/") == 1 and not value.startswith((".", "/", "~")) and not os.path.exists(value)


def _check_weights(value: str, what: str, problems: list, notes: list, need_file: str | None = "config.json") -> None:
    """A model folder (with ``need_file``), a file, or a hub id (cached, or fetchable when online)."""
    if os.path.isdir(value):
        if need_file and not os.path.isfile(os.path.join(value, need_file)):
            problems.append(f"{what}: folder {value!r} has no {need_file}")
        return
    if os.path.isfile(value):
        return
    if _hub_id(value):
        cached = None
        if need_file:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(value, need_file)
        if isinstance(cached, str):
            return
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
            problems.append(f"{what}: hub id {value!r} is not in the local hub cache and HF_HUB_OFFLINE is set")
        else:
            notes.append(f"{what}: hub id {value!r} is not in the local cache; it will be downloaded")
        return
    problems.append(f"{what}: {value!r} does not exist")


def _check_path(value: str, what: str, problems: list) -> None:
    """A local path or glob; hub ids are left to the loader that reads them."""
    if _hub_id(value):
        return
    if any(c in value for c in "*?["):
        if not glob.glob(value):
            problems.append(f"{what}: no file matches {value!r}")
    elif not os.path.exists(value):
        problems.append(f"{what}: {value!r} does not exist")


def check_config(config: TrainConfig, trains: bool, problems: list, notes: list) -> None:
    """The weights and data of a paper-preset run: the official checkpoint and its parts
    (``backbone_kwargs``), and, for a row that trains, the training data (``t2i_data`` ...)."""
    family = config.backbone.split("-")[0]
    kwargs = dict(config.backbone_kwargs)
    if family in REQUIRED_PARTS and not config.backbone.endswith("tiny"):
        for key in ("checkpoint", *REQUIRED_PARTS[family]):
            value = kwargs.get(key)
            if not value:
                what = REQUIRED_PARTS[family].get(key, "the official checkpoint")
                problems.append(f"weights: backbone_kwargs[{key!r}] ({what}) is not set for {config.backbone}; "
                                f"pass -p overrides '{{\"backbone_kwargs\": {{\"{key}\": ...}}}}'")
            elif isinstance(value, str):
                _check_weights(value, f"weights: backbone_kwargs[{key!r}]", problems, notes, need_file=None)
    if trains:
        if config.t2i_data in (None, "shapes"):
            dataset = paper.TABLE1_DATASET.get(paper.TABLE1_BACKBONE_OF.get(config.backbone, ""), "its paper dataset")
            problems.append(f"data: t2i_data is not set; the paper fine-tuned {config.backbone} on {dataset} "
                            f"(pass -p overrides '{{\"t2i_data\": ...}}')")
        for key in ("t2i_data", "i2t_data", "i2t_image_root"):
            value = getattr(config, key)
            if value not in (None, "shapes"):
                _check_path(value, f"data: {key}", problems)


def _check_geneval(s: EvalSettings, problems: list, notes: list) -> None:
    if not s.geneval_metadata:
        problems.append("GenEval: geneval_metadata is not set (a GenEval checkout or its "
                        "prompts/evaluation_metadata.jsonl)")
    else:
        try:
            rows = read_official_metadata(s.geneval_metadata, expected_n=None)
            if len(rows) != OFFICIAL_N_PROMPTS:
                notes.append(f"GenEval: {len(rows)} prompts in {official_metadata_path(s.geneval_metadata)} "
                             f"(the official file has {OFFICIAL_N_PROMPTS})")
        except (FileNotFoundError, ValueError) as e:
            problems.append(f"GenEval: {e}")
    if s.geneval_scorer not in SCORERS:
        problems.append(f"GenEval: geneval_scorer {s.geneval_scorer!r} is not one of {sorted(SCORERS)}")
    elif s.geneval_scorer == "transformers":
        _check_weights(s.geneval_detector or DEFAULT_DETECTOR, "GenEval detector (geneval_detector)", problems, notes)
        if s.geneval_clip or not open_clip_available():
            _check_weights(s.geneval_clip or DEFAULT_CLIP, "GenEval colour model (geneval_clip)", problems, notes)
    else:
        checkout = _geneval_checkout(s.geneval_metadata)
        if checkout is None or not os.path.isfile(os.path.join(checkout, EVALUATE_SCRIPT)):
            problems.append(f"GenEval official scorer: geneval_metadata must be a GenEval checkout holding "
                            f"{EVALUATE_SCRIPT}")
        if not s.geneval_python or not (os.path.isfile(s.geneval_python) or shutil.which(s.geneval_python)):
            problems.append(f"GenEval official scorer: geneval_python {s.geneval_python!r} is not an interpreter "
                            "(the python of GenEval's environment)")
        pth = os.path.join(s.geneval_detector, OFFICIAL_DETECTOR + ".pth") if s.geneval_detector else None
        if pth is None or not os.path.isfile(pth):
            problems.append(f"GenEval official scorer: geneval_detector must be the folder holding "
                            f"{OFFICIAL_DETECTOR}.pth (GenEval's download_models.sh)")


def _geneval_checkout(metadata: str) -> str | None:
    if not metadata:
        return None
    if os.path.isdir(metadata):
        return metadata
    # <checkout>/prompts/evaluation_metadata.jsonl
    return os.path.dirname(os.path.dirname(os.path.abspath(metadata)))


def _dpg_csv(value: str) -> str:
    return dpg.ella_paths(value)[0] if os.path.isdir(value) else value


def _check_dpg(s: EvalSettings, problems: list, notes: list) -> None:
    if not s.dpg_csv:
        problems.append("DPG-Bench: dpg_csv is not set (an ELLA checkout or its dpg_bench/dpg_bench.csv)")
    else:
        try:
            dpg.read_questions(_dpg_csv(s.dpg_csv))
        except (FileNotFoundError, ValueError) as e:
            problems.append(f"DPG-Bench: {e}")
    if s.dpg_vqa not in DPG_VQA_CHOICES:
        problems.append(f"DPG-Bench: dpg_vqa {s.dpg_vqa!r} is not one of {DPG_VQA_CHOICES}")
    elif s.dpg_vqa == "mplug":
        if importlib.util.find_spec("modelscope") is None:
            problems.append("DPG-Bench: dpg_vqa 'mplug' needs modelscope (pip install \"modelscope[multi-modal]\"), "
                            "or use dpg_vqa 'transformers' with a BLIP VQA folder")
        if s.dpg_vqa_model and not _hub_id(s.dpg_vqa_model) and not os.path.exists(s.dpg_vqa_model):
            problems.append(f"DPG-Bench: dpg_vqa_model {s.dpg_vqa_model!r} does not exist")
    elif not s.dpg_vqa_model:
        problems.append("DPG-Bench: dpg_vqa 'transformers' needs dpg_vqa_model (a BlipForQuestionAnswering folder)")
    else:
        _check_weights(s.dpg_vqa_model, "DPG-Bench VQA model (dpg_vqa_model)", problems, notes)


def _check_compbench(s: EvalSettings, problems: list, notes: list) -> None:
    if not s.compbench_dir:
        problems.append("T2I-CompBench: compbench_dir is not set (a T2I-CompBench checkout)")
    else:
        for c in compbench.CATEGORIES:
            try:
                compbench.read_prompts(s.compbench_dir, c)
            except ValueError as e:
                problems.append(f"T2I-CompBench: {e}")
    if not s.judge_model:
        problems.append("T2I-CompBench: judge_model is not set (a Qwen2.5-VL folder or hub id; the paper judged "
                        "with Qwen2.5-VL-32B-Instruct)")
    else:
        _check_weights(s.judge_model, "T2I-CompBench judge (judge_model)", problems, notes)


def _check_lmms(s: EvalSettings, problems: list, notes: list) -> None:
    if importlib.util.find_spec("lmms_eval") is None:
        problems.append("Table 2: lmms-eval is not installed (pip install \"lmms-eval>=0.7\" where the GPU runs)")
    if not [t for t in s.lmms_tasks.split(",") if t.strip()]:
        problems.append("Table 2: lmms_tasks is empty")


CHECKS = {"geneval": _check_geneval, "dpg": _check_dpg, "compbench": _check_compbench, "lmms": _check_lmms}


def preflight(table: str, preset: str, settings: EvalSettings, overrides: Mapping[str, Any] | None = None,
              methods: Sequence[str] = ("sft",)) -> Plan | None:
    """Check everything ``table`` needs at ``preset`` before any training or generation.

    Returns None at small scale (the shapes world needs nothing). At paper scale: the
    :class:`Plan`, or :class:`MissingForEvaluation` listing every missing file, folder, package,
    weight and data set (the benchmarks, the evaluators, the official checkpoint and its parts, the
    training data of rows whose ``methods`` train). ``overrides`` are the TrainConfig fields the
    notebook sets on every run.
    """
    if table not in TABLE_BENCHMARKS:
        raise ValueError(f"table: unknown {table!r}; choose from {sorted(TABLE_BENCHMARKS)}")
    config = get_preset(preset).replace(**dict(overrides or {}))
    if not is_paper_scale(preset):
        return None
    wanted = settings.benchmarks or TABLE_BENCHMARKS[table]
    unknown = [b for b in wanted if b not in TABLE_BENCHMARKS[table]]
    if unknown:
        raise ValueError(f"benchmarks {unknown}: {table} reports {list(TABLE_BENCHMARKS[table])}")
    problems: list[str] = []
    notes: list[str] = []
    check_config(config, trains=any(m != "none" for m in methods), problems=problems, notes=notes)
    for b in wanted:
        CHECKS[b](settings, problems, notes)
    if problems:
        raise MissingForEvaluation(problems)
    return Plan(table, tuple(wanted), notes)


# -----------------------------------------------------------------------------
# scoring a model

def build_evaluators(settings: EvalSettings, benchmarks: Sequence[str]) -> dict:
    """The evaluators of ``benchmarks``, built once (weights loaded) for every run of a table."""
    device = eval_device(settings)
    out = {}
    if "geneval" in benchmarks:
        if settings.geneval_scorer == "official":
            out["geneval"] = build_scorer("official", geneval_dir=_geneval_checkout(settings.geneval_metadata),
                                          python=settings.geneval_python, detector_dir=settings.geneval_detector)
        else:
            clip = settings.geneval_clip or DEFAULT_CLIP
            backend = "transformers" if settings.geneval_clip else "auto"
            out["geneval"] = build_scorer("transformers", detector=settings.geneval_detector or DEFAULT_DETECTOR,
                                          clip=clip, color_backend=backend, device=device)
    if "dpg" in benchmarks:
        out["dpg"] = (dpg.load_benchmark(csv_path=_dpg_csv(settings.dpg_csv)),
                      build_vqa(settings.dpg_vqa, model=settings.dpg_vqa_model or
                                (MPLUG_MODEL if settings.dpg_vqa == "mplug" else None), device=device))
    if "compbench" in benchmarks:
        out["compbench"] = compbench.QwenVLJudge.from_pretrained(settings.judge_model, device=device)
    return out


def _generator(backbone, config: TrainConfig):
    def generate(prompts, seed):
        with torch.no_grad(), eval_autocast(backbone, config):
            return backbone.generate(list(prompts), seed=int(seed))

    return generate


def _read_scores(path: str) -> dict:
    return store.read_json(path) if os.path.isfile(path) else {}


def score_model(backbone, config: TrainConfig, out_dir: str, settings: EvalSettings, benchmarks: Sequence[str],
                evaluators: Mapping | None = None, processes: Processes | None = None, progress: bool = True) -> dict:
    """Score ``backbone`` on ``benchmarks`` (GenEval, DPG-Bench, T2I-CompBench); layouts and results
    under ``out_dir``. Returns ``{benchmark: scores}`` (GenEval: its tags and ``overall`` in percent
    plus the scorer's labels; DPG-Bench: ``dpg`` and the categories; CompBench: Table 10's rows and
    ``Overall``). A benchmark already scored in ``out_dir/scores.json`` with the same settings is reused."""
    processes = processes or current()
    evaluators = dict(evaluators) if evaluators is not None else build_evaluators(settings, benchmarks)
    path = os.path.join(out_dir, SCORES_FILE)
    cached = processes.broadcast(_read_scores(path) if processes.is_main else None)
    generate = _generator(backbone, config)
    was_training = backbone.training
    backbone.eval()
    scores = {}
    try:
        for b in benchmarks:
            fp = settings.fingerprint(b)
            if cached.get(b, {}).get("settings") == fp:
                scores[b] = cached[b]
                continue
            folder = os.path.join(out_dir, b)
            if b == "geneval":
                r = distributed.geneval(generate, settings.geneval_metadata, folder, evaluators["geneval"], processes,
                                        images_per_prompt=IMAGES_PER_PROMPT, progress=progress)
                value = {**as_percentages(r), **{k: r[k] for k in ("scorer", "detector", "color_model", "label")
                                               if k in r}}
            elif b == "dpg":
                bench, vqa = evaluators["dpg"]
                r = distributed.dpg_bench(generate, bench, folder, vqa, processes, progress=progress)
                value = {k: r[k] for k in ("dpg", "l1", "l2", "n_items", "n_scored", "complete", "vqa_model")}
            elif b == "compbench":
                r = distributed.t2i_compbench(generate, settings.compbench_dir, folder, evaluators["compbench"],
                                              processes, progress=progress)
                value = {**r["table10"], "n_unparsable": r["n_unparsable"], "judge": r["judge"]["model_path"]}
            else:
                raise ValueError(f"score_model scores GenEval, DPG-Bench and T2I-CompBench; {b!r} runs through "
                                 "segros.lmms_model (understanding.ipynb)")
            scores[b] = {**value, "settings": fp}
            if processes.is_main:
                os.makedirs(out_dir, exist_ok=True)
                store.atomic_write_json(path, {**_read_scores(path), b: scores[b]})
    finally:
        backbone.train(was_training)
    return scores


def columns(table: str, scores: Mapping[str, dict]) -> dict[str, float]:
    """A run's scores under the table's column names (``segros.paper.columns``) and, for GenEval, the
    shapes-world tag keys too (``overall``, ``single_object`` ...) that the notebooks' checks read."""
    names = paper.columns(table)
    out = {}
    g = scores.get("geneval")
    if g:
        for tag in (*TAGS, "overall"):
            if tag in g:
                out[tag] = float(g[tag])
                if TAG_COLUMNS[tag] in names:
                    out[TAG_COLUMNS[tag]] = float(g[tag])
    d = scores.get("dpg")
    if d:
        out["DPG" if "DPG" in names else "DPGBench"] = float(d["dpg"])
    c = scores.get("compbench")
    if c:
        out["CompBench"] = float(c["Overall"])
    return out


def eval_device(settings: EvalSettings) -> str:
    """``settings.eval_device``, or CUDA (this process's current GPU) when available, else the CPU."""
    return settings.eval_device or ("cuda" if torch.cuda.is_available() else "cpu")


def open_model(run_dir: str, device: str = "cpu"):
    """``(model, config)`` of a run for scoring, on ``device`` in eval mode: its trained weights, or for
    "w/o SFT" (method ``none``, nothing trained) the backbone as its config builds it (the official
    checkpoint at paper scale)."""
    config = TrainConfig.from_dict(store.read_json(os.path.join(run_dir, "config.json"))["config"])
    if config.method == "none" and config.init_from in (None, ""):
        model = from_config(config)
    else:
        model = pipeline.open_run(run_dir)
    return model.to(device).eval(), config


def score_runs(table: str, long: pd.DataFrame, settings: EvalSettings, plan: Plan,
               processes: Processes | None = None, progress: bool = True) -> pd.DataFrame:
    """Every run of ``long`` (a table's runs, :func:`segros.tables.reproduce`) scored on the plan's
    benchmarks; one line per run: ``row``, ``seed``, ``run`` and the columns of :func:`columns`."""
    evaluators = build_evaluators(settings, plan.benchmarks)
    records = []
    for rec in long[["row", "seed", "run"]].to_dict("records"):
        model, config = open_model(rec["run"], eval_device(settings))
        scores = score_model(model, config, os.path.join(rec["run"], "benchmarks"), settings, plan.benchmarks,
                             evaluators, processes, progress)
        records.append({**rec, **columns(table, scores)})
        del model
    out = pd.DataFrame(records)
    out.attrs.update(long.attrs)
    return out


def beside_paper(table: str, long: pd.DataFrame, backbone: str | None = None) -> pd.DataFrame:
    """The paper's numbers beside ours (mean and sd over seeds), for each column of the table that
    ``long`` scored; rows in the table's order."""
    df = paper.table(table)
    if backbone is not None:
        prefix = f"{backbone} / "
        df = df[[i.startswith(prefix) for i in df.index]]
        df.index = [i[len(prefix):].replace("SFT*", "SFT") for i in df.index]
    order = [r for r in dict.fromkeys(df.index) if r in set(long["row"])] if not long.empty else []
    # rows the paper does not print (extra rows, swept values beyond its rows) follow, in the runs' order
    order += [r for r in dict.fromkeys(long["row"]) if r not in order] if not long.empty else []
    out = pd.DataFrame(index=pd.Index(order, name="row"))
    for col in paper.columns(table):
        if col not in long.columns:
            continue
        grouped = long.groupby("row")[col]
        out[f"{col} (paper)"] = df[col].reindex(order) if col in df.columns else np.nan
        out[f"{col} (ours)"] = grouped.mean().reindex(order)
        out[f"{col} (sd)"] = grouped.std(ddof=1).reindex(order)
    out["runs"] = long.groupby("row").size().reindex(order).fillna(0).astype(int) if order else []
    return out


__all__ = ["BENCHMARKS", "EvalSettings", "MissingForEvaluation", "PARAMETERS", "Plan", "TABLE_BENCHMARKS",
           "beside_paper", "build_evaluators", "check_config", "columns", "eval_device", "is_paper_scale", "open_model",
           "preflight", "score_model", "score_runs", "split_settings"]
