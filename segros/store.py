"""The run store: folders of runs on disk, written atomically, found by config hash.

Nothing here trains or evaluates; :mod:`segros.pipeline` does, through these functions. The
layout (``docs/architecture.md`` has the whole picture)::

    <runs_dir>/<table>/<name>/         one run: <table> groups runs (table1, table3, ...), <name> = run_name(config)
        config.json                    {"hash", "config"}; a different config in the same folder is an error
        metrics.jsonl                  one JSON object per logged step: step, loss, loss_t2i, loss_i2t, lr, time
        checkpoint/                    the latest resumable state: model.safetensors + trainer.pt (optimizer,
                                       scheduler, step, and every random state, segros.rng.rng_state)
        model.safetensors              the final weights (written when training ends)
        results.json                   the evaluation summary: {"name", "table", "hash", "geneval", "qa"}
    <runs_dir>/base/<backbone>_<hash>/ a pretrained "w/o SFT" base (config.json, metrics.jsonl, model.safetensors)

Every file is written atomically (a temporary file in the same folder, then ``os.replace``); a
checkpoint folder is written as ``checkpoint.tmp`` and renamed over ``checkpoint``. A run with
``results.json`` is finished and reused as is; a run with ``checkpoint/`` resumes from it.

:func:`scan` indexes the finished runs of a store by config hash (tables share runs) and names
every entry it cannot read, with the error, instead of skipping it.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import shutil
import sys

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from segros.presets import TrainConfig, get_preset
from segros.rng import rng_state, set_rng_state

CHECKPOINT = "checkpoint"
BASE_TABLE = "base"
MAX_NAME = 120  # file systems allow 255 bytes per name; a longer diff is cut and ends in the config hash


class StoreDamage(ValueError):
    """A store entry that cannot be read: ``path`` (the file) and ``error`` (what is wrong with it)."""

    def __init__(self, path, error):
        self.path, self.error = path, error
        super().__init__(f"{path}: {error}")


# -----------------------------------------------------------------------------
# atomic files

def atomic_write_bytes(path, data: bytes):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path):
    with open(path) as f:
        return json.load(f)


def save_weights(model, path):
    """model.state_dict() as safetensors, atomically (tensors cloned, so shared storage is fine)."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    tmp = f"{path}.tmp{os.getpid()}"
    save_file(tensors, tmp)
    os.replace(tmp, path)


def load_weights(model, path):
    missing, unexpected = model.load_state_dict(load_file(path), strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")


# -----------------------------------------------------------------------------
# config identity and names

def config_hash(config: TrainConfig) -> str:
    blob = json.dumps(config.to_dict(), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare(run_dir, config: TrainConfig):
    """Create ``run_dir`` with config.json, or check that the one there is the same config."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "config.json")
    h = config_hash(config)
    if os.path.exists(path):
        stored = read_json(path)
        if stored.get("hash") != h:
            old = stored.get("config", {})
            diff = sorted(k for k in set(old) | set(config.to_dict()) if old.get(k) != config.to_dict().get(k))
            raise ValueError(f"{run_dir} holds a run with a different config (differs in {diff}); "
                             "choose another name or delete the folder")
        return
    atomic_write_json(path, {"hash": h, "config": config.to_dict()})


def run_name(config: TrainConfig, preset="small") -> str:
    """Name from the diff against a preset, method first: ``segros_eta=0.5_seed=1``.

    A name longer than ``MAX_NAME`` characters keeps its first ``MAX_NAME - 17`` and ends in
    ``_<config_hash>`` (unique per config, and a valid folder name)."""
    base = get_preset(preset) if isinstance(preset, str) else preset
    cur, ref = config.to_dict(), base.to_dict()
    parts = [config.method]
    for k in cur:
        if k != "method" and cur[k] != ref[k]:
            v = cur[k]
            if isinstance(v, (list, tuple)):
                v = ",".join(str(x) for x in v)
            elif isinstance(v, dict):
                v = ",".join(f"{a}:{b}" for a, b in sorted(v.items()))
            parts.append(f"{k}={v}")
    name = "_".join(parts).replace("/", "-").replace(" ", "")
    if len(name) > MAX_NAME:  # a paper config (checkpoint paths, Table 7 fields) outgrows a file name
        name = f"{name[:MAX_NAME - 17]}_{config_hash(config)}"
    return name


def base_folder(runs_dir, base: TrainConfig) -> str:
    """Where the store keeps the pretrained base ``base``: ``<runs_dir>/base/<backbone>_<hash>``."""
    return os.path.join(runs_dir, BASE_TABLE, f"{base.backbone}_{config_hash(base)}")


# -----------------------------------------------------------------------------
# checkpoints

def save_checkpoint(run_dir, step, model, optimizer, scheduler, generators, scaler=None, extra=None):
    """Write ``checkpoint.tmp/`` then rename it over ``checkpoint/`` (the latest state only).
    ``extra``: state of the run that is not weights: the grounding snapshot of the text embeddings
    (tensors) and the data feed's skip counts; :func:`load_checkpoint` fills a dict with it."""
    tmp = os.path.join(run_dir, CHECKPOINT + ".tmp")
    final = os.path.join(run_dir, CHECKPOINT)
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_weights(model, os.path.join(tmp, "model.safetensors"))
    state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": rng_state(generators)}
    if scaler is not None and scaler.is_enabled():
        state["scaler"] = scaler.state_dict()
    if extra:
        state["extra"] = {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in extra.items()}
    torch.save(state, os.path.join(tmp, "trainer.pt"))
    old = final + ".old"
    if os.path.exists(final):
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def has_checkpoint(run_dir) -> bool:
    return os.path.isfile(os.path.join(run_dir, CHECKPOINT, "trainer.pt"))


def load_checkpoint(run_dir, model, optimizer, scheduler, generators, scaler=None, extra=None) -> int:
    """Restore everything :func:`save_checkpoint` wrote; return the step it was taken after. The
    ``extra`` tensors it saved go into the dict ``extra`` when one is given."""
    folder = os.path.join(run_dir, CHECKPOINT)
    load_weights(model, os.path.join(folder, "model.safetensors"))
    state = torch.load(os.path.join(folder, "trainer.pt"), weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"], generators)
    if extra is not None:
        extra.update(state.get("extra", {}))
    return int(state["step"])


# -----------------------------------------------------------------------------
# metrics

def append_metrics(run_dir, row: dict):
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")


def read_metrics(run_dir) -> list[dict]:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def truncate_metrics(run_dir, step):
    """Keep only rows with ``step <= step`` (a resumed run re-logs what came after its checkpoint)."""
    rows = [r for r in read_metrics(run_dir) if r["step"] <= step]
    atomic_write_bytes(os.path.join(run_dir, "metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in rows).encode())


def clear_metrics(run_dir):
    """Forget the metrics of a run that starts over (no checkpoint to resume from)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(path):
        os.remove(path)


# -----------------------------------------------------------------------------
# results and the index of finished runs

def is_finished(run_dir) -> bool:
    return os.path.isfile(os.path.join(run_dir, "results.json"))


def read_entry(run_dir) -> tuple[dict, dict]:
    """(config.json, results.json) of a finished run; :class:`StoreDamage` naming the file that is
    missing, unreadable, or whose hash disagrees with the other."""
    cfg_path, res_path = os.path.join(run_dir, "config.json"), os.path.join(run_dir, "results.json")
    parts = []
    for path in (cfg_path, res_path):
        try:
            obj = read_json(path)
        except FileNotFoundError as e:
            raise StoreDamage(path, "missing") from e
        except (OSError, ValueError) as e:
            raise StoreDamage(path, f"{type(e).__name__}: {e}") from e
        if not isinstance(obj, dict) or "hash" not in obj:
            raise StoreDamage(path, "no 'hash' key")
        parts.append(obj)
    config, results = parts
    if config["hash"] != results["hash"]:
        raise StoreDamage(res_path, f"hash {results['hash']} differs from config.json's {config['hash']}")
    return config, results


def write_results(run_dir, results: dict):
    atomic_write_json(os.path.join(run_dir, "results.json"), results)


@dataclasses.dataclass
class Damage:
    """An entry of the store that could not be read: its path and the error."""

    path: str
    error: str

    def __str__(self):
        return f"{self.path}: {self.error}"


@dataclasses.dataclass
class StoreIndex:
    """Config hash -> folder of every finished run of a store (bases excluded), and its damage."""

    finished: dict[str, str]
    damaged: list[Damage]

    def find(self, config: TrainConfig) -> str | None:
        """The folder of a finished run with exactly ``config``, in any table, or None."""
        return self.finished.get(config_hash(config))


def _entries(runs_dir, table="*"):
    """Run folders ``<runs_dir>/<table>/<name>/`` (bases excluded), sorted."""
    folders = sorted(p for p in glob.glob(os.path.join(runs_dir, table, "*")) if os.path.isdir(p))
    return [p for p in folders if os.path.basename(os.path.dirname(p)) != BASE_TABLE]


def scan(runs_dir, table="*", quiet=False) -> StoreIndex:
    """Index the finished runs of ``runs_dir`` (of one ``table``, or all); every run folder holding a
    ``results.json`` that cannot be read back with its ``config.json`` is listed in ``damaged``
    (and printed to stderr unless ``quiet``), never skipped in silence. A folder without
    ``results.json`` is a run in progress (or an interrupted one), not damage."""
    finished, damaged = {}, []
    for run_dir in _entries(runs_dir, table):
        if not is_finished(run_dir):
            continue
        try:
            config, _ = read_entry(run_dir)
        except StoreDamage as e:
            damaged.append(Damage(e.path, e.error))
            continue
        finished.setdefault(config["hash"], run_dir)
    if damaged and not quiet:
        print(f"{len(damaged)} damaged entr{'y' if len(damaged) == 1 else 'ies'} in {runs_dir}:", file=sys.stderr)
        for d in damaged:
            print(f"  {d}", file=sys.stderr)
    return StoreIndex(finished, damaged)


def flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def collect(runs_dir, table) -> pd.DataFrame:
    """One row per finished run of ``table``: config fields + flattened results. The damaged
    entries of the table are in ``.attrs["damaged"]`` (and printed, see :func:`scan`)."""
    index = scan(runs_dir, table)
    rows = []
    for run_dir in sorted(index.finished.values()):
        config, results = read_entry(run_dir)
        row = {"run": os.path.basename(run_dir),
               **{k: (tuple(v) if isinstance(v, list) else v) for k, v in config["config"].items()}}
        row.update(flatten({k: v for k, v in results.items() if k not in ("name", "table", "hash")}))
        rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs["damaged"] = index.damaged
    return df
