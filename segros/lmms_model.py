"""The lmms-eval model class ``segros``: Table 2's benchmarks on a run folder or an official checkpoint.

lmms-eval (0.6 and later) finds models outside its tree through the Python entry-point group
``lmms_eval.models`` (``lmms_eval/models/registry_v2.py``, ``ModelRegistryV2.load_entrypoint_manifests``):
an entry point gives a ``ModelManifest`` (or a callable returning one) naming the class by its
import path. This package declares ``segros = "segros.lmms_model:manifest"`` in ``pyproject.toml``,
so once it is installed next to lmms-eval::

    lmms-eval --model segros --model_args run=runs/harmon15-segros \\
        --tasks mme,pope,gqa,mmmu_val,seedbench --batch_size 1 --output_path out/lmms
    lmms-eval --model segros \\
        --model_args 'backbone=harmon-1.5b,backbone_kwargs={"checkpoint": "/ckpt/harmon_1.5b.pth", "vae_checkpoint": "/ckpt/kl16.ckpt", "llm_path": "/ckpt/Qwen2.5-1.5B-Instruct"},dtype=bfloat16' \\
        --tasks mme,pope,gqa,mmmu_val,seedbench

``model_args`` (``key=value`` pairs; JSON values may hold commas): ``run`` (a run folder of this
package: the backbone it trained, with its weights), or ``backbone`` (a registry name such as
``harmon-1.5b``, ``showo-512``) / ``preset`` (a preset, e.g. ``paper-harmon-1.5b``, whose backbone is
used) with ``backbone_kwargs`` (JSON: the official checkpoint and its parts, as for training);
``device`` (default CUDA when available), ``dtype`` (``float32``, ``bfloat16``, ``float16``; default:
as built), ``batch_size``, ``max_new_tokens`` (when a task sets none), ``multi_image`` (``first`` |
``error``). The answers come from the backbone's ``answer()`` (Show-o, Harmon and the tiny families
have one; OpenUni has none); :mod:`segros.eval.lmms` turns the requests into those calls.

The class needs lmms-eval, which is not a dependency of this package: lmms-eval requires
torchvision, and the registry's torchvision does not import beside a CPU-only torch. Install it
where the GPU runs (``pip install "lmms-eval>=0.7"``). This module imports without it; the class
is built on first access (``segros.lmms_model.SegrosLMMS``).
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

from segros.eval.lmms import (DEFAULT_MAX_NEW_TOKENS, MULTI_IMAGE_CHOICES, TABLE2_TASKS, Stats, generate_until,
                              table2_row)

MODEL_ID = "segros"
MODEL_ARGS = ("run", "preset", "backbone", "backbone_kwargs", "device", "dtype", "batch_size", "max_new_tokens",
              "multi_image")
DTYPES = ("float32", "bfloat16", "float16")


def manifest():
    """The entry point's payload (``lmms_eval.models`` group): lmms-eval's ``ModelManifest`` for ``segros``."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.SegrosLMMS")


def _is_run_folder(folder: str) -> bool:
    """A run folder of the store: its config.json holds a config and its hash."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return False
    with open(path) as f:
        meta = json.load(f)
    return isinstance(meta.get("config"), dict) and "hash" in meta


def load_model(run: str | None = None, preset: str | None = None, backbone: str | None = None,
               backbone_kwargs: dict | str | None = None, device: str | None = None, dtype: str | None = None):
    """The backbone to evaluate, in eval mode, on ``device`` and in ``dtype`` (see the module docstring).

    ``run``: a run folder of the store (:func:`segros.pipeline.open_run`) or a saved tiny checkpoint
    (:func:`segros.backbones.load_backbone`).
    Otherwise ``backbone`` (or ``preset``'s backbone) built by :func:`segros.backbones.build_backbone`
    with ``backbone_kwargs`` (a dict or its JSON; the preset's own ``backbone_kwargs`` first).
    """
    import torch

    from segros.backbones import build_backbone, load_backbone
    from segros.backbones.base import Backbone

    if isinstance(backbone_kwargs, str):
        try:
            backbone_kwargs = json.loads(backbone_kwargs)
        except json.JSONDecodeError as e:
            raise ValueError(f"backbone_kwargs must be JSON, got {backbone_kwargs!r} ({e})") from e
    if backbone_kwargs is not None and not isinstance(backbone_kwargs, dict):
        raise ValueError(f"backbone_kwargs must be a JSON object, got {type(backbone_kwargs).__name__}")
    if run is not None:
        if preset is not None or backbone is not None or backbone_kwargs:
            raise ValueError("give either run=<run folder> or backbone/preset (+ backbone_kwargs), not both")
        if not os.path.isdir(run):
            raise ValueError(f"run={run!r} is not a folder")
        from segros.pipeline import open_run

        model = open_run(run) if _is_run_folder(run) else load_backbone(run)
    else:
        kwargs = {}
        if preset is not None:
            from segros.presets import get_preset

            config = get_preset(preset)
            backbone = backbone or config.backbone
            kwargs = dict(config.backbone_kwargs)
        if backbone is None:
            raise ValueError(f"model_args need run=<run folder>, backbone=<registry name> or preset=<preset>; "
                             f"valid keys: {', '.join(MODEL_ARGS)}")
        model = build_backbone(backbone, **{**kwargs, **(backbone_kwargs or {})})
    if getattr(type(model), "answer", Backbone.answer) is Backbone.answer:
        raise ValueError(f"{getattr(model, 'family', type(model).__name__)} has no answer(): it cannot run the "
                         "understanding benchmarks (Show-o, Harmon and the tiny families can)")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is not None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        model = model.to(getattr(torch, dtype))
    return model.to(device).eval()


def _int_arg(name: str, value: Any, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if out < 1:
        raise ValueError(f"{name} must be >= 1, got {out}")
    return out


def _make_class():
    from lmms_eval.api.model import lmms

    class SegrosLMMS(lmms):
        """lmms-eval's ``segros`` model: ``generate_until`` through the backbone's ``answer()``.

        Give the model arguments of the module docstring, or an already built backbone as ``model=``
        (in-process use: ``lmms_eval.evaluator.simple_evaluate(model=SegrosLMMS(model=backbone), ...)``).
        One process (rank 0 of 1); ``stats`` counts multi-image requests and ignored sampling settings.
        """

        is_simple = True

        def __init__(self, run=None, preset=None, backbone=None, backbone_kwargs=None, device=None, dtype=None,
                     batch_size=1, max_new_tokens=DEFAULT_MAX_NEW_TOKENS, multi_image="first", model=None,
                     max_batch_size=None, **unknown):
            super().__init__()
            if unknown:
                raise ValueError(f"unknown segros model_args {sorted(unknown)}; valid: {', '.join(MODEL_ARGS)}")
            if multi_image not in MULTI_IMAGE_CHOICES:
                raise ValueError(f"multi_image must be one of {MULTI_IMAGE_CHOICES}, got {multi_image!r}")
            if model is None:
                model = load_model(run, preset, backbone, backbone_kwargs, device, dtype)
            self.model = model
            self.batch_size_per_gpu = _int_arg("batch_size", batch_size, 1)
            self.max_new_tokens = _int_arg("max_new_tokens", max_new_tokens, DEFAULT_MAX_NEW_TOKENS)
            self.multi_image = multi_image
            self.stats = Stats()

        @property
        def batch_size(self):
            return self.batch_size_per_gpu

        def generate_until(self, requests) -> list[str]:
            return generate_until(self.model.answer, [r.args for r in requests], self.task_dict,
                                  batch_size=self.batch_size_per_gpu, default_max_new_tokens=self.max_new_tokens,
                                  multi_image=self.multi_image, stats=self.stats, progress=self.rank == 0)

        def loglikelihood(self, requests):
            raise NotImplementedError("segros answers by greedy generation only; Table 2's tasks "
                                      f"({', '.join(TABLE2_TASKS)}) need generate_until, not loglikelihood")

        def generate_until_multi_round(self, requests):
            raise NotImplementedError("segros answers single-turn questions only")

    SegrosLMMS.__module__ = __name__
    return SegrosLMMS


def __getattr__(name: str):
    if name == "SegrosLMMS":  # built on first access: lmms-eval is imported only then
        cls = _make_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_lmms_eval(model, tasks: Sequence[str] = TABLE2_TASKS, *, output_path: str | None = None,
                  include_path: str | None = None, include_defaults: bool = True, limit: int | float | None = None,
                  batch_size: int = 1, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, multi_image: str = "first",
                  log_samples: bool = False) -> dict:
    """Run lmms-eval in this process on ``model`` (a backbone with ``answer()``, or a dict of the
    model arguments of the module docstring) and return ``{"results", "table2", "stats"}``.

    ``tasks``: lmms-eval task names (Table 2's by default); ``include_path``: a folder of extra task
    YAMLs (``include_defaults=False`` indexes only those); ``limit``: documents per task (testing
    only). ``output_path``: a JSON file written with the same dictionary. Needs lmms-eval installed.
    """
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    cls = __getattr__("SegrosLMMS")
    kwargs = dict(batch_size=batch_size, max_new_tokens=max_new_tokens, multi_image=multi_image)
    lm = cls(**model, **kwargs) if isinstance(model, dict) else cls(model=model, **kwargs)
    manager = TaskManager("WARNING", include_path=include_path, include_defaults=include_defaults,
                          model_name=MODEL_ID)
    out = simple_evaluate(model=lm, tasks=list(tasks), limit=limit, batch_size=batch_size, task_manager=manager,
                          log_samples=log_samples, verbosity="WARNING")
    result = {"results": out["results"], "table2": table2_row(out), "stats": lm.stats.as_dict()}
    if log_samples:
        result["samples"] = out.get("samples")
    if output_path:
        os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
        with open(output_path, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return result


def lmms_eval_command(model_args: dict, tasks: Sequence[str] = TABLE2_TASKS, output_path: str | None = None,
                      include_path: str | None = None, limit: int | None = None, batch_size: int = 1,
                      executable: str = "lmms-eval") -> list[str]:
    """The ``lmms-eval`` command line for ``model_args`` (for a subprocess in lmms-eval's own environment)."""
    bad = set(model_args) - set(MODEL_ARGS)
    if bad:
        raise ValueError(f"unknown segros model_args {sorted(bad)}; valid: {', '.join(MODEL_ARGS)}")
    parts = []
    for k, v in model_args.items():
        parts.append(f"{k}={json.dumps(v) if isinstance(v, (dict, list)) else v}")
    cmd = [executable, "--model", MODEL_ID, "--model_args", ",".join(parts), "--tasks", ",".join(tasks),
           "--batch_size", str(batch_size)]
    if output_path:
        cmd += ["--output_path", output_path]
    if include_path:
        cmd += ["--include_path", include_path]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    return cmd


# SegrosLMMS is left out: a star import must not need lmms-eval
__all__ = ["DTYPES", "MODEL_ARGS", "MODEL_ID", "load_model", "lmms_eval_command", "manifest", "run_lmms_eval"]
