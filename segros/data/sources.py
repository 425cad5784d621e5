"""Training data from real datasets, behind one small interface (docs/data.md).

A *source* is an indexable collection of training samples, read through ``datasets`` (no shard
reader of our own) and decoded one sample at a time::

    len(source)        number of samples
    source.get(i)      T2I: (image, caption); I2T: (image, question, answer); raises BadSample
    source.kind        "t2i" | "i2t"
    source.name        what error messages and docs call it

Sources (:func:`build_sources` picks them from a ``TrainConfig``):

``t2i_data``  a hub id (``brivangl/midjourney-v6-llava``), a ``save_to_disk`` folder, a folder of
              parquet or webdataset tar files (split ``train`` as ``datasets`` infers it), parquet
              files, or a glob of webdataset tars (``'/data/BLIP3o-60k/*.tar'``: samples with
              ``jpg`` and ``txt``, read with ``datasets.load_dataset("webdataset", ...)`` as the
              official BLIP3o loaders do). The caption is the column / key ``t2i_caption``, by
              default the first of ``prompt`` (MidjourneyV6), ``txt`` (webdataset), ``caption``,
              ``text``; the image is the first of ``image``, ``jpg``, ``jpeg``, ``png``, ``webp``.
``i2t_data``  a LLaVA-Instruct JSON (or JSONL) list with images under ``i2t_image_root``; each
              human → gpt turn becomes one (image, question, answer) sample
              (:func:`conversation_pairs`).
``"shapes"``  (or None with a tiny backbone) the offline shapes world, exactly the pairs of
              ``segros.train.shapes_data``.

Decoding is lazy: a source keeps the memory-mapped ``datasets`` table and decodes the image of
sample ``i`` only when ``get(i)`` is called, in a DataLoader worker (:class:`DecodedDataset`, which
also applies the backbone's own ``preprocess_images``).

Order and sharding (:class:`StepBatchSampler`): the *global* batch of micro-step ``k`` is
:func:`batch_indices` ``(n, batch_size, k, seed)`` -- the same function as
``segros.train.batch_indices`` -- so it depends on (seed, k) only and a resumed run reads exactly
what the killed run would have read. ``batch_size`` is the global batch: process ``r`` of ``W``
reads positions ``[r * b, (r + 1) * b)`` of it with ``b = batch_size / W``; a batch size that ``W``
does not divide is refused (every process must hold the same number of samples, so that DDP's
gradient average is the global batch's mean).

Bad data (:class:`DataStats`, :func:`check_skips`): a sample whose image does not decode, whose
image file is missing or whose caption (I2T: answer) is empty is skipped and replaced by the next
readable sample in the source's own order (``i + 1``, ``i + 2``, ... modulo ``n``), so batches keep
their size and stay a pure function of (seed, k). Every skip is counted per source; the run stops
with :class:`BadDataError` once the skipped fraction passes ``max_skip_frac``. A missing path or an
unknown column stops at construction (:class:`SourceError`), before the first step.
"""

from __future__ import annotations

import glob
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

from segros.data.shapes import config_world
from segros.paper import TABLE1_BACKBONES, TABLE1_DATASET
from segros.presets import TrainConfig

IMAGE_COLUMNS = ("image", "jpg", "jpeg", "png", "webp")
CAPTION_COLUMNS = ("prompt", "txt", "caption", "text")
# why a sample was skipped (fixed order: DataStats travels between processes as one vector)
REASONS = ("undecodable image", "missing image", "empty caption", "empty answer")
I2T_SEED_OFFSET = 7919  # the I2T order's seed is seed + 7919, as segros.train.make_i2t_batch
MAX_EXAMPLES = 5  # bad samples named in an error message
IMAGE_TOKEN = "<image>"
TURNS = ("all", "first")

# The paper's datasets (Table 1's dataset column, segros.paper.TABLE1_DATASET; LLaVA-Instruct for
# the I2T term, §4.1) and the settings that read them; used by the no-silent-fallback error.
PAPER_DATASETS = {
    "MidjourneyV6": "--set t2i_data=brivangl/midjourney-v6-llava --set t2i_caption=prompt "
                    "(hub id, or the folder of its parquet files)",
    "BLIP3o-60k": "--set t2i_data='/data/BLIP3o-60k/*.tar' (its webdataset shards; captions under the key txt)",
    "LLaVA-Instruct": "--set i2t_data=/data/LLaVA-Instruct-150K/llava_v1_5_mix665k.json "
                      "--set i2t_image_root=/data/LLaVA-Instruct-150K/tuning_data",
}


class SourceError(ValueError):
    """A data setting that names nothing readable (missing path, unknown column); raised at construction."""


class NoDataSourceError(ValueError):
    """A paper backbone without a data source (the CLI exits with code 2)."""


class BadDataError(RuntimeError):
    """More of a source's samples were unreadable than ``max_skip_frac`` allows."""


class BadSample(Exception):
    """Sample ``sample_id`` cannot be used; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, sample_id: str, reason: str, detail: str = ""):
        if reason not in REASONS:
            raise ValueError(f"reason must be one of {REASONS}, got {reason!r}")
        super().__init__(f"{sample_id}: {reason}" + (f" ({detail})" if detail else ""))
        self.sample_id, self.reason, self.detail = sample_id, reason, detail


# -----------------------------------------------------------------------------
# decoding

def decode_image(value: Any, sample_id: str, base_dir: Optional[str] = None):
    """A stored image -> an RGB ``PIL.Image``, fully decoded; :class:`BadSample` when it cannot be.

    ``value``: a PIL image, ``{"bytes": ..., "path": ...}`` (the ``datasets`` Image layout), raw
    bytes, a file path (relative paths under ``base_dir``) or a uint8 array [H, W, 3]. A truncated
    or otherwise undecodable file is "undecodable image"; a missing file or an empty value is
    "missing image".
    """
    import numpy as np
    from PIL import Image

    try:
        if value is None:
            raise BadSample(sample_id, "missing image", "no image stored")
        if isinstance(value, dict):
            if value.get("bytes"):
                value = value["bytes"]
            elif value.get("path"):
                value = value["path"]
            else:
                raise BadSample(sample_id, "missing image", "neither bytes nor path")
        if isinstance(value, str):
            path = value if base_dir is None or os.path.isabs(value) else os.path.join(base_dir, value)
            if not os.path.isfile(path):
                raise BadSample(sample_id, "missing image", f"no file {path}")
            image = Image.open(path)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            if not len(value):
                raise BadSample(sample_id, "missing image", "0 bytes")
            image = Image.open(io.BytesIO(bytes(value)))
        elif isinstance(value, np.ndarray):
            image = Image.fromarray(value)
        elif isinstance(value, Image.Image):
            image = value
        else:
            raise BadSample(sample_id, "undecodable image", f"unknown image value {type(value).__name__}")
        image.load()  # decode now: a truncated file fails here, not in the backbone
        return image.convert("RGB")
    except BadSample:
        raise
    except Exception as e:  # noqa: BLE001 -- anything the decoder raises on these bytes makes the sample unusable
        detail = re.sub(r" <_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", f"{type(e).__name__}: {e}")
        raise BadSample(sample_id, "undecodable image", detail) from None


def clean_text(value: Any) -> str:
    """A caption / answer as trained on: a string, stripped ("" when missing)."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return str(value).strip()


# -----------------------------------------------------------------------------
# sources

class Source:
    """The interface (module docstring). Subclasses set ``kind`` and ``name`` and define ``get``."""

    kind: str = "t2i"
    name: str = "source"

    def __len__(self) -> int:
        raise NotImplementedError

    def get(self, i: int) -> tuple:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"kind": self.kind, "name": self.name, "samples": len(self)}


class ListSource(Source):
    """Samples held in memory (the shapes world: small, generated)."""

    def __init__(self, items: Sequence[tuple], kind: str, name: str):
        self.items, self.kind, self.name = list(items), kind, name

    def __len__(self):
        return len(self.items)

    def get(self, i):
        item = self.items[i]
        text = item[1] if self.kind == "t2i" else item[2]
        if not clean_text(text):
            raise BadSample(f"{self.name}[{i}]", "empty caption" if self.kind == "t2i" else "empty answer")
        return item


class HFImageText(Source):
    """T2I pairs from a ``datasets.Dataset``: ``image_column`` and ``caption_column`` of each row."""

    kind = "t2i"

    def __init__(self, ds, image_column: str, caption_column: str, name: str, base_dir: Optional[str] = None):
        import datasets

        keep = [image_column, caption_column] + [c for c in ("__key__", "__url__") if c in ds.column_names]
        ds = ds.select_columns(keep)
        if isinstance(ds.features[image_column], datasets.Image):  # decode ourselves, lazily, counting failures
            ds = ds.cast_column(image_column, datasets.Image(decode=False))
        self.ds, self.image_column, self.caption_column = ds, image_column, caption_column
        self.name, self.base_dir = name, base_dir

    def __len__(self):
        return len(self.ds)

    def sample_id(self, i: int, row: dict) -> str:
        if row.get("__key__") is not None:
            return f"{os.path.basename(str(row.get('__url__') or ''))}:{row['__key__']}"
        return f"{self.name}[{i}]"

    def get(self, i):
        row = self.ds[int(i)]
        sid = self.sample_id(i, row)
        caption = clean_text(row[self.caption_column])
        if not caption:
            raise BadSample(sid, "empty caption", f"column {self.caption_column!r}")
        return decode_image(row[self.image_column], sid, self.base_dir), caption

    def describe(self):
        return {**super().describe(), "image": self.image_column, "caption": self.caption_column}


class LlavaPairs(Source):
    """I2T samples of a LLaVA-Instruct JSON: one row per (image, question, answer) turn, images under a root."""

    kind = "i2t"

    def __init__(self, ds, image_root: str, name: str):
        self.ds, self.image_root, self.name = ds, image_root, name

    def __len__(self):
        return len(self.ds)

    def get(self, i):
        row = self.ds[int(i)]
        sid = f"{self.name}[{row['id']}, turn {row['turn']}]"
        answer = clean_text(row["answer"])
        if not answer:
            raise BadSample(sid, "empty answer")
        return decode_image(row["image"], sid, self.image_root), clean_text(row["question"]), answer


# -----------------------------------------------------------------------------
# opening a source from a setting

def _is_glob(spec: str) -> bool:
    return any(ch in spec for ch in "*?[")


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _looks_local(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or spec.endswith((".parquet", ".tar", ".json", ".jsonl", ".arrow"))


def _pick_column(ds_columns, wanted, candidates, setting, spec):
    if wanted is not None:
        if wanted not in ds_columns:
            raise SourceError(f"{setting}={wanted!r}: no such column in {spec!r}; its columns: {', '.join(ds_columns)}")
        return wanted
    for c in candidates:
        if c in ds_columns:
            return c
    raise SourceError(f"{spec!r} has none of the columns {', '.join(candidates)} ({setting}); "
                      f"its columns: {', '.join(ds_columns)}" + (f"; set {setting}" if setting == "t2i_caption" else ""))


def _only_train(obj, spec):
    import datasets

    if isinstance(obj, datasets.DatasetDict):
        if "train" not in obj:
            raise SourceError(f"{spec!r} has no split 'train'; its splits: {', '.join(obj)}")
        return obj["train"]
    return obj


def load_table(spec: str, cache_dir: Optional[str] = None, setting: str = "t2i_data"):
    """``spec`` -> (``datasets.Dataset`` of split train, format name, folder relative paths resolve in).

    Order of the checks: a glob (its matches must all be ``.parquet`` or all ``.tar``); an existing
    folder (``save_to_disk`` layout if it holds ``dataset_info.json``/``state.json``/
    ``dataset_dict.json``, else whatever ``datasets`` reads from a folder: parquet, webdataset
    tars, ...); an existing ``.parquet`` / ``.tar`` file; a hub id. Anything else is a missing path.
    """
    import datasets

    spec = os.path.expanduser(spec)
    if _is_glob(spec):
        files = sorted(glob.glob(spec, recursive=True))
        if not files:
            raise SourceError(f"{setting}={spec!r}: the glob matches no file")
        exts = {os.path.splitext(f)[1].lower() for f in files}
        builder = {".parquet": "parquet", ".tar": "webdataset"}.get(exts.pop()) if len(exts) == 1 else None
        if builder is None:
            raise SourceError(f"{setting}={spec!r}: the glob must match only .parquet or only .tar files, "
                              f"got {sorted({os.path.splitext(f)[1] for f in files})}")
        ds = datasets.load_dataset(builder, data_files=files, split="train", cache_dir=cache_dir)
        return ds, builder, os.path.dirname(files[0])
    if os.path.isdir(spec):
        if any(os.path.isfile(os.path.join(spec, f)) for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return _only_train(datasets.load_from_disk(spec), spec), "save_to_disk", spec
        try:
            ds = datasets.load_dataset(spec, split="train", cache_dir=cache_dir)
        except Exception as e:  # noqa: BLE001 -- named and re-raised
            raise SourceError(f"{setting}={spec!r}: a folder that datasets cannot read as a dataset "
                              f"(parquet or webdataset .tar files, or a save_to_disk folder): {e}") from e
        return ds, "folder", spec
    if os.path.isfile(spec):
        builder = {".parquet": "parquet", ".tar": "webdataset"}.get(os.path.splitext(spec)[1].lower())
        if builder is None:
            raise SourceError(f"{setting}={spec!r}: a file that is neither .parquet nor .tar")
        return datasets.load_dataset(builder, data_files=[spec], split="train", cache_dir=cache_dir), builder, \
            os.path.dirname(spec)
    if _looks_local(spec) or not _HUB_ID.match(spec):
        raise SourceError(f"{setting}={spec!r}: no such file or folder")
    try:
        return datasets.load_dataset(spec, split="train", cache_dir=cache_dir), "hub", None
    except Exception as e:  # noqa: BLE001 -- named and re-raised
        raise SourceError(f"{setting}={spec!r}: not a local path, and loading it as a hub dataset failed: {e}") from e


def open_t2i(spec: str, caption: Optional[str] = None, cache_dir: Optional[str] = None) -> HFImageText:
    """The T2I source of ``t2i_data=spec`` with caption column ``caption`` (module docstring)."""
    ds, fmt, base = load_table(spec, cache_dir, "t2i_data")
    if len(ds) == 0:
        raise SourceError(f"t2i_data={spec!r} holds no samples")
    image = _pick_column(ds.column_names, None, IMAGE_COLUMNS, "image column", spec)
    cap = _pick_column(ds.column_names, caption, CAPTION_COLUMNS, "t2i_caption", spec)
    return HFImageText(ds, image, cap, name=f"{spec} ({fmt})", base_dir=base)


def conversation_pairs(conversations: Sequence[dict], turns: str = "all") -> list[tuple[str, str]]:
    """LLaVA ``conversations`` -> [(question, answer)], one per human -> gpt turn.

    As the official I2T loaders read a conversation (Show-o ``llava/llava_instruct_data.py``
    ``preprocess_multimodal`` / ``preprocess_v0``; Harmon through xtuner's ``llava_map_fn``):
    a leading message that is not from the human is dropped, roles must alternate human, gpt (the
    conversation stops at the first that does not), and the ``<image>`` placeholder is removed
    from the text (the backbone places its visual tokens itself, before the question). The
    official code trains on every answer of a conversation in one sequence; the backbone
    protocol's ``i2t_batch`` takes one (question, answer) per row, so ``turns="all"`` makes every
    turn its own sample (every answer the official code trains on, each after the image and its own
    question, without the earlier turns); ``turns="first"`` keeps only the first turn.
    """
    if turns not in TURNS:
        raise ValueError(f"turns must be one of {TURNS}, got {turns!r}")
    msgs = [m for m in conversations if isinstance(m, dict)]
    if msgs and msgs[0].get("from") != "human":
        msgs = msgs[1:]
    pairs = []
    for j in range(0, len(msgs) - 1, 2):
        h, g = msgs[j], msgs[j + 1]
        if h.get("from") != "human" or g.get("from") != "gpt":
            break
        pairs.append((str(h.get("value", "")).replace(IMAGE_TOKEN, "").strip(), str(g.get("value", ""))))
    return pairs[:1] if turns == "first" else pairs


def _llava_rows(path: str, turns: str, stamp: str):
    """Rows of the flattened LLaVA table (``stamp`` = size and mtime: a changed file is re-read)."""
    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()] if path.endswith(".jsonl") else json.load(f)
    if not isinstance(records, list):
        raise SourceError(f"i2t_data={path!r} must hold a JSON list of LLaVA records")
    for r, rec in enumerate(records):
        if not isinstance(rec, dict) or not rec.get("image"):  # text-only records: no image to train I2T on
            continue
        for t, (q, a) in enumerate(conversation_pairs(rec.get("conversations") or [], turns)):
            yield {"id": str(rec.get("id", r)), "image": str(rec["image"]), "turn": t, "question": q, "answer": a}


def open_llava(json_path: str, image_root: str, turns: str = "all", cache_dir: Optional[str] = None,
               check_first: int = 16) -> LlavaPairs:
    """The I2T source of a LLaVA-Instruct JSON (or JSONL) with images under ``image_root``.

    The JSON is flattened once into a memory-mapped ``datasets`` table (columns id, image, turn,
    question, answer; :func:`conversation_pairs`), cached by ``datasets`` and rebuilt when the file
    changes. Records without an image are left out. At construction the first ``check_first``
    image paths are looked up: if none exists, the image root is wrong (:class:`SourceError`).
    """
    import datasets

    if turns not in TURNS:
        raise ValueError(f"turns must be one of {TURNS}, got {turns!r}")
    json_path, image_root = os.path.expanduser(json_path), os.path.expanduser(image_root)
    if not os.path.isfile(json_path):
        raise SourceError(f"i2t_data={json_path!r}: no such file (a LLaVA-Instruct JSON)")
    if not os.path.isdir(image_root):
        raise SourceError(f"i2t_image_root={image_root!r}: no such folder")
    st = os.stat(json_path)
    features = datasets.Features({"id": datasets.Value("string"), "image": datasets.Value("string"),
                                  "turn": datasets.Value("int32"), "question": datasets.Value("string"),
                                  "answer": datasets.Value("string")})
    try:
        ds = datasets.Dataset.from_generator(
            _llava_rows, features=features, cache_dir=cache_dir,
            gen_kwargs={"path": os.path.abspath(json_path), "turns": turns, "stamp": f"{st.st_size}-{st.st_mtime_ns}"})
    except json.JSONDecodeError as e:
        raise SourceError(f"i2t_data={json_path!r} is not valid JSON: {e}") from e
    except datasets.exceptions.DatasetGenerationError as e:
        cause = e.__cause__ or e.__context__
        if isinstance(cause, (SourceError, json.JSONDecodeError)):
            raise SourceError(f"i2t_data={json_path!r}: {cause}") from e
        raise
    if len(ds) == 0:
        raise SourceError(f"i2t_data={json_path!r} holds no record with an image and a human -> gpt turn")
    first = ds.select(range(min(check_first, len(ds))))["image"]
    if not any(os.path.isfile(os.path.join(image_root, p)) for p in first):
        raise SourceError(f"i2t_image_root={image_root!r}: none of the first {len(first)} images of {json_path!r} "
                          f"is there (e.g. {os.path.join(image_root, first[0])!r})")
    return LlavaPairs(ds, image_root, name=os.path.basename(json_path))


def shapes_sources(config: TrainConfig, split: str = "finetune") -> tuple[ListSource, ListSource]:
    """The shapes world's T2I captions and I2T question-answer view: exactly ``segros.train.shapes_data``."""
    world = config_world(config)
    scenes = world.split(split, config.n_train)
    t2i = [(s.image, s.caption) for s in scenes]
    i2t = []
    if config.n_qa_train > 0:
        qa_scenes = scenes if config.n_qa_train <= len(scenes) else world.split(split, config.n_qa_train)
        i2t = [(q["image"], q["question"], q["answer"]) for q in world.qa(qa_scenes)][:config.n_qa_train]
    return ListSource(t2i, "t2i", f"shapes world {split}"), ListSource(i2t, "i2t", f"shapes world {split} QA")


# -----------------------------------------------------------------------------
# which sources a config trains on, and the no-silent-fallback rule

def trains_i2t(config: TrainConfig) -> bool:
    return config.lam > 0 and config.i2t_micro > 0


def table1_row(backbone: str) -> Optional[str]:
    """The Table 1 backbone name of a registry name ("harmon-0.5b" -> "Harmon-0.5B"), or None."""
    for name in TABLE1_BACKBONES:
        if name.lower().replace("show-o", "showo") == backbone.lower():
            return name
    return None


def require_data_source(config: TrainConfig) -> None:
    """Raise :class:`NoDataSourceError` when a real (paper) backbone has no data source.

    Only the tiny families fall back to the shapes world; a real backbone that trains (any method
    but "none") needs ``t2i_data`` (and ``i2t_data`` when it trains I2T), or ``"shapes"`` asked for
    explicitly. The message names the
    dataset the paper used for that row (Table 1's dataset column, ``segros.paper.TABLE1_DATASET``).
    """
    if config.backbone.startswith("tiny-") or config.method == "none":  # "w/o SFT" trains nothing
        return
    missing = []
    row = table1_row(config.backbone)
    if config.t2i_data is None:
        if row is not None:
            name = TABLE1_DATASET[row]
            missing.append(f"t2i_data: the paper fine-tunes {row} on {name} (Table 1): {PAPER_DATASETS[name]}")
        else:
            missing.append("t2i_data (a hub id, save_to_disk folder, parquet files or a glob of webdataset tars)")
    if trains_i2t(config) and config.i2t_data is None:
        missing.append(f"i2t_data and i2t_image_root: the I2T term (λ = {config.lam}) trains on LLaVA-Instruct "
                       f"(§4.1): {PAPER_DATASETS['LLaVA-Instruct']}")
    if missing:
        raise NoDataSourceError(
            f"backbone {config.backbone!r} has no training data; the shapes world is only a fallback for the tiny "
            "families (--set t2i_data=shapes --set i2t_data=shapes asks for it explicitly). Missing: "
            + "; ".join(missing) + ". See docs/data.md.")


@dataclass
class TrainSources:
    """What one run reads: the T2I source and the I2T source (None when I2T is off)."""

    t2i: Source
    i2t: Optional[Source]


def build_sources(config: TrainConfig, split: str = "finetune", cache_dir: Optional[str] = None,
                  llava_turns: str = "all") -> TrainSources:
    """The sources of ``config`` (module docstring), every path and column checked now, before a step.

    ``split`` is the shapes world's split ("pretrain" for the base's pretraining).
    """
    require_data_source(config)
    shapes = None
    if config.t2i_data in (None, "shapes") or (trains_i2t(config) and config.i2t_data in (None, "shapes")):
        shapes = shapes_sources(config, split)
    t2i = shapes[0] if config.t2i_data in (None, "shapes") else open_t2i(config.t2i_data, config.t2i_caption, cache_dir)
    i2t = None
    if trains_i2t(config):
        i2t = shapes[1] if config.i2t_data in (None, "shapes") else \
            open_llava(config.i2t_data, config.i2t_image_root, llava_turns, cache_dir)
    return TrainSources(t2i, i2t)


# -----------------------------------------------------------------------------
# order and sharding

def batch_indices(n: int, batch_size: int, k: int, seed: int) -> list[int]:
    """Indices of global micro-batch ``k``: an endless stream of per-epoch permutations, tail dropped.

    The same function as ``segros.train.batch_indices`` (tested): epoch ``e`` is
    ``randperm(n)`` of a generator seeded ``seed * 1_000_003 + e``.
    """
    if batch_size > n:
        raise ValueError(f"the global batch ({batch_size}) is larger than the source ({n} samples)")
    per_epoch = n // batch_size
    epoch, i = divmod(k, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    return perm[i * batch_size:(i + 1) * batch_size].tolist()


def shard_bounds(batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """Positions [lo, hi) of the global batch that process ``rank`` of ``world_size`` reads."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not a process of a world of size {world_size}")
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} (the global batch) is not divisible by the {world_size} processes: "
                         "every process must read the same number of samples (DDP averages their gradients); "
                         f"use a multiple of {world_size}, e.g. {batch_size - batch_size % world_size or world_size}")
    b = batch_size // world_size
    return rank * b, (rank + 1) * b


class StepBatchSampler(torch.utils.data.Sampler):
    """This process's indices of global micro-batches ``start``, ``start + 1``, ... (``stop`` excluded, None: endless)."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int = 0, stop: Optional[int] = None,
                 rank: int = 0, world_size: int = 1):
        if batch_size > n:
            raise ValueError(f"the global batch ({batch_size}) is larger than the source ({n} samples)")
        if start < 0 or (stop is not None and stop < start):
            raise ValueError(f"need 0 <= start <= stop, got start={start}, stop={stop}")
        self.n, self.batch_size, self.seed, self.start, self.stop = n, batch_size, seed, start, stop
        self.lo, self.hi = shard_bounds(batch_size, rank, world_size)

    def __iter__(self):
        k = self.start
        while self.stop is None or k < self.stop:
            yield batch_indices(self.n, self.batch_size, k, self.seed)[self.lo:self.hi]
            k += 1

    def __len__(self):
        if self.stop is None:
            raise TypeError("an endless StepBatchSampler has no length")
        return self.stop - self.start


# -----------------------------------------------------------------------------
# decoding in workers

class DecodedDataset(torch.utils.data.Dataset):
    """Sample ``i`` of ``source`` decoded and preprocessed (``preprocess``: the backbone's own
    ``preprocess_images``, list of images -> pixels [B, 3, H, W]).

    An unusable sample is replaced by the next usable one in source order (module docstring); the
    item lists what was skipped. Only :class:`BadSample` is skipped: any other error is a bug and
    propagates.
    """

    def __init__(self, source: Source, preprocess: Callable):
        self.source, self.preprocess = source, preprocess

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        n, skipped = len(self.source), []
        for t in range(n):
            j = (int(i) + t) % n
            try:
                sample = self.source.get(j)
            except BadSample as e:
                skipped.append((e.sample_id, e.reason, e.detail))
                continue
            item = {"index": j, "skipped": skipped, "pixels": self.preprocess([sample[0]])[0]}
            if self.source.kind == "t2i":
                item["text"] = sample[1]
            else:
                item["question"], item["answer"] = sample[1], sample[2]
            return item
        raise BadDataError(f"no sample of {self.source.name} is usable ({n} tried; e.g. {skipped[0][0]}: "
                           f"{skipped[0][1]} {skipped[0][2]})")


def collate_samples(items: list[dict]) -> dict:
    """Items of :class:`DecodedDataset` -> a raw batch: stacked ``pixels``, the texts, ``indices`` and ``skipped``."""
    out = {"pixels": torch.stack([it["pixels"] for it in items]), "indices": [it["index"] for it in items],
           "skipped": [s for it in items for s in it["skipped"]]}
    if "text" in items[0]:
        out["texts"] = [it["text"] for it in items]
    else:
        out["questions"], out["answers"] = [it["question"] for it in items], [it["answer"] for it in items]
    return out


def seed_worker(worker_id: int) -> None:
    """Seed Python's and NumPy's generators in a DataLoader worker from torch's per-worker seed
    (which the loader draws from its own ``generator``, so the run's global RNG is untouched)."""
    import random

    import numpy as np

    s = torch.initial_seed() % 2 ** 32
    random.seed(s)
    np.random.seed(s)


def make_loader(source: Source, preprocess: Callable, *, batch_size: int, seed: int, start: int = 0,
                stop: Optional[int] = None, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                prefetch_factor: int = 2, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader of this process's share of global micro-batches ``start``, ``start + 1``, ...

    ``seed`` orders the source (T2I: ``config.seed``; I2T: ``config.seed + I2T_SEED_OFFSET``).
    ``batch_size`` is the global micro-batch. Decoding and ``preprocess`` run in ``num_workers``
    worker processes (0: in this process). The loader draws its worker seeds from its own
    generator, so creating it leaves the global RNG untouched. ``pin_memory``: page-locked batches for
    a faster copy to a GPU.
    """
    sampler = StepBatchSampler(len(source), batch_size, seed, start, stop, rank, world_size)
    kw = {}
    if num_workers > 0:
        kw = dict(prefetch_factor=prefetch_factor, persistent_workers=True, worker_init_fn=seed_worker)
    return torch.utils.data.DataLoader(DecodedDataset(source, preprocess), batch_sampler=sampler,
                                       num_workers=num_workers, collate_fn=collate_samples, pin_memory=pin_memory,
                                       generator=torch.Generator().manual_seed(seed), **kw)


# -----------------------------------------------------------------------------
# raw batches -> model batches (in the training process: the tokenizers stay there)

def t2i_model_batch(backbone, raw: dict) -> dict:
    """A T2I micro-batch of ``backbone``: its ``tokenize_prompts`` of the captions + the workers' pixels
    (what ``backbone.t2i_batch(images, captions)`` gives)."""
    return {**backbone.tokenize_prompts(raw["texts"]), "pixels": raw["pixels"]}


def i2t_model_batch(backbone, raw: dict) -> dict:
    """An I2T micro-batch of ``backbone``: its ``i2t_batch`` of the questions and answers, with the
    workers' pixels.

    The protocol's ``i2t_batch(images, questions, answers)`` tokenizes *and* preprocesses; the images
    are already preprocessed (in the workers), and doing it again costs about 16 ms per 512 px image
    in the training process. So for this one call the backbone's ``preprocess_images`` hands back the
    workers' pixels (an instance attribute shadowing the method, removed afterwards) and the images
    passed are placeholders; a backbone whose ``i2t_batch`` reads the images otherwise would fail loudly.
    """
    pixels = raw["pixels"]

    def given(images):
        if len(images) != pixels.shape[0]:
            raise ValueError(f"i2t_batch asked for {len(images)} images, the batch has {pixels.shape[0]}")
        return pixels

    object.__setattr__(backbone, "preprocess_images", given)
    try:
        out = dict(backbone.i2t_batch([None] * pixels.shape[0], raw["questions"], raw["answers"]))
    finally:
        object.__delattr__(backbone, "preprocess_images")
    out["pixels"] = pixels
    return out


# -----------------------------------------------------------------------------
# bad-data accounting

@dataclass
class DataStats:
    """Per source and process: samples tried (``seen``: used + skipped) and skips per reason.

    ``update`` takes each raw batch; across processes, ``to_tensor`` / ``from_tensor`` are summed
    (all-reduce). ``examples`` keeps the first few skipped samples for the error message.
    """

    n_source: int
    seen: int = 0
    skipped: dict = field(default_factory=lambda: {r: 0 for r in REASONS})
    examples: list = field(default_factory=list)

    def update(self, raw: dict) -> None:
        self.seen += len(raw["indices"]) + len(raw["skipped"])
        for sid, reason, detail in raw["skipped"]:
            self.skipped[reason] += 1
            text = f"{sid}: {reason}" + (f" ({detail})" if detail else "")
            if len(self.examples) < MAX_EXAMPLES and text not in self.examples:
                self.examples.append(text)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    @property
    def fraction(self) -> float:
        return self.n_skipped / self.seen if self.seen else 0.0

    def to_tensor(self) -> torch.Tensor:
        return torch.tensor([self.seen] + [self.skipped[r] for r in REASONS], dtype=torch.long)

    @classmethod
    def from_tensor(cls, t: torch.Tensor, n_source: int, examples=()) -> "DataStats":
        v = [int(x) for x in t.tolist()]
        return cls(n_source, v[0], dict(zip(REASONS, v[1:])), list(examples))

    def state_dict(self) -> dict:
        return {"seen": self.seen, "skipped": dict(self.skipped), "examples": list(self.examples)}

    def load_state_dict(self, state: dict) -> None:
        self.seen, self.examples = int(state["seen"]), list(state["examples"])
        self.skipped = {r: int(state["skipped"].get(r, 0)) for r in REASONS}

    def row(self, prefix: str) -> dict:
        """Metrics columns: ``<prefix>_seen``, ``<prefix>_skipped``, ``<prefix>_skip_frac`` and one per reason seen."""
        out = {f"{prefix}_seen": self.seen, f"{prefix}_skipped": self.n_skipped,
               f"{prefix}_skip_frac": round(self.fraction, 6)}
        out.update({f"{prefix}_skipped_{r.replace(' ', '_')}": c for r, c in self.skipped.items() if c})
        return out


def judged_from(n_source: int, max_skip_frac: float) -> int:
    """Samples tried before the skipped fraction is judged: ``min(n_source, ceil(10 / max_skip_frac))``
    (1000 at 1%: 10 skips are expected there at exactly the threshold, so a few bad samples early in a
    clean source do not stop a run); every skip stops at ``max_skip_frac = 0``."""
    if max_skip_frac <= 0:
        return 1
    return max(1, min(n_source, math.ceil(10 / max_skip_frac)))


def check_skips(stats: DataStats, max_skip_frac: float, name: str) -> None:
    """Raise :class:`BadDataError` when ``stats`` (summed over processes) passes ``max_skip_frac``."""
    if not stats.n_skipped or stats.seen < judged_from(stats.n_source, max_skip_frac):
        return
    if stats.fraction > max_skip_frac or max_skip_frac <= 0:
        kinds = ", ".join(f"{c} {r}" for r, c in stats.skipped.items() if c)
        raise BadDataError(
            f"{name}: {stats.n_skipped} of {stats.seen} samples tried were unusable ({100 * stats.fraction:.2f}% > "
            f"max_skip_frac {100 * max_skip_frac:g}%): {kinds}. First: {'; '.join(stats.examples) or '(other processes)'}. "
            "Fix the data, or raise max_skip_frac (--set max_skip_frac=...).")


def stats_row(t2i: DataStats, i2t: Optional[DataStats], world_size: int) -> dict:
    """The data columns of one ``metrics.jsonl`` row (counts summed over the ``world_size`` processes)."""
    row = {"world_size": world_size, **t2i.row("t2i")}
    if i2t is not None:
        row.update(i2t.row("i2t"))
    return row


__all__ = ["Source", "ListSource", "HFImageText", "LlavaPairs", "BadSample", "SourceError", "NoDataSourceError",
           "BadDataError", "TrainSources", "build_sources", "open_t2i", "open_llava", "shapes_sources",
           "require_data_source", "conversation_pairs", "decode_image", "batch_indices", "shard_bounds",
           "StepBatchSampler", "DecodedDataset", "collate_samples", "make_loader", "t2i_model_batch",
           "i2t_model_batch", "DataStats", "check_skips", "judged_from", "stats_row", "I2T_SEED_OFFSET",
           "PAPER_DATASETS", "REASONS"]
