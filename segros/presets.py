"""The training configuration and its presets (paper §4.1, §8.1 and Table 7).

``TrainConfig`` is a frozen dataclass holding every switch of the fine-tuning recipe: the method
(Table 9 rows), the SeGroS hyper-parameters (η, ρ, τ, α of §3.2–3.4), the ablation switches of
Tables 4–6, the optimisation settings of Table 7 and the small-config data/evaluation sizes.
``config.replace(eta="0.3")`` coerces strings to the field's type (the ``--set key=value`` path).

Presets
-------
``small``          the synthetic shapes world on a CPU, tiny-harmon (diffusion-MSE family);
``small-showo``    the same with tiny-showo (discrete-code NLL family);
``small-v3``, ``small-showo-v3``  the same on world v3 (one object per 16 px cell, alt-text
                   pretraining captions, layout/colour codecs; 553 prompts × 2 seeds). Being
                   calibrated (docs/calibration.md); the committed store is world v1.
(no small OpenUni: its random-weight tiny build exists for tests, but there is no tiny
flow-matching family trained on the shapes world yet)
``paper-*``        the six Table 7 columns. They need the real adapters (``showo-256`` ...,
                   registered in :mod:`segros.backbones` with a local checkpoint) and a GPU.

The conventions Table 7 leaves open (what "Gradient Accumulation" counts, how frozen modules are
named, OpenUni's η and λ) are in ``docs/conventions.md``, "Training". This module also defines
every choice constant once (:data:`METHODS`, :data:`TEXT_FILTERS`, :data:`SCHEDULES`, ...) and
resolves the precision (:func:`resolve_precision`, :func:`autocast`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import typing
from dataclasses import dataclass, field

import torch

from segros.paper import HYPERPARAMS

# Every choice a config field (or a function of the method core) accepts, defined once; the first
# entry is the default. "none" = no fine-tuning: the start checkpoint (init_from) evaluated as is,
# the tables' "w/o SFT" row (its one representation).
METHODS = ("sft", "reca", "segros", "reca_hint_filter", "none")
TEXT_FILTERS = ("both", "intra", "inter", "none")  # Table 4's rows: Ω of Eq. 7 from both affinities, one, or none
HINT_FROM = ("top", "bottom")                      # Table 5: which end of m̃ becomes the hints
SEEN_FROM = ("bottom", "top")                      # Table 5: which end of m̃ stays visible
LOSS_ON = ("masked", "top_masked")                 # Table 6: every masked token, or drop-loss
SCHEDULES = ("uniform", "truncnorm", "cosine")     # masking-ratio schedules (segros.supervision.sample_gamma)
GAMMA_PER = ("batch", "sample")                    # one γ per batch (MAR) or per sample
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# what a dropped caption (classifier-free guidance training) takes away on a hinted path: the caption
# and the hints (the row trains the unconditional branch generation uses), or the caption only; "none":
# no dropout on hinted paths (the package before this switch existed)
COND_DROPOUT = ("caption_and_hints", "caption", "none")
# which text-embedding table grounding reads (§8.1 "frozen internal text embedding layers"): a frozen
# snapshot taken when fine-tuning starts (the table itself trains), the table frozen for real, or the
# live, training table (the package before this switch existed)
TEXT_EMBEDDINGS = ("snapshot", "frozen", "live")
# the methods that ground with the caption (Eqs. 3-11), and those that feed hints to the model
GROUNDING_METHODS = ("segros", "reca_hint_filter")
HINTED_METHODS = ("segros", "reca", "reca_hint_filter")
WORLDS = ("v1", "v3")                              # segros.data.shapes.WORLDS


@dataclass(frozen=True)
class TrainConfig:
    """Every field of one run. Defaults are the ``small`` preset (CPU, shapes world)."""

    # method (Table 9) and backbone
    method: str = "segros"
    backbone: str = "tiny-harmon"
    backbone_kwargs: dict = field(default_factory=dict)
    # SeGroS (§3.2–3.4): hint ratio η, text preservation ρ, softmax τ, noise α of Eq. 12
    eta: float = 0.3
    rho: float = 0.4
    tau: float = 1.0
    alpha: float = 0.5
    text_filter: str = "both"        # Table 4: "both" | "intra" | "inter" | "none"
    stopwords: bool = True           # Fig. 3: function words (segros.vocab.STOPWORDS) take no part in grounding
    text_embeddings: str = "snapshot"  # §8.1: "snapshot" | "frozen" | "live" (TEXT_EMBEDDINGS)
    cond_dropout: str = "caption_and_hints"  # a dropped caption on a hinted path: COND_DROPOUT
    hint_from: str = "top"           # Table 5/6 switches
    seen_from: str = "bottom"
    loss_on: str = "masked"          # "masked" | "top_masked" (Table 6 drop-loss)
    loss_top: float = 0.3
    mask_schedule: typing.Optional[str] = None   # None = the backbone's default
    gamma_per: typing.Optional[str] = None       # None = the backbone's default ("batch" | "sample")
    lam: float = 1.0                 # λ of Eq. 13
    # optimisation (Table 7)
    lr: float = 1e-3
    betas: tuple = (0.9, 0.95)
    weight_decay: float = 0.01
    warmup_steps: int = 10
    max_steps: int = 100
    batch_size: int = 16
    grad_accum: int = 1              # reconstruction micro-batches per optimizer step
    i2t_micro: int = 1               # I2T micro-batches per optimizer step (0: no I2T)
    clip_grad: float = 1.0
    seed: int = 0
    precision: str = "auto"          # "auto": bf16 on a GPU, fp32 on a CPU
    frozen: tuple = ()               # parameter-name prefixes kept frozen (Table 7 "Frozen Modules")
    init_from: typing.Optional[str] = None       # a base run directory, or "auto" (segros.pipeline.ensure_base)
    # pretraining of the "w/o SFT" base (small configs only; segros.pipeline.base_config)
    align_weight: float = 1.0
    pretrain_steps: int = 1500
    pretrain_lr: float = 2e-3
    # data (shapes world)
    world: str = "v1"                # "v1": the committed store's world; "v3": segros.data.shapes.GridWorld
    world_seed: int = 0
    world_kwargs: dict = field(default_factory=dict)  # the world's own knobs (GridWorld: alt-caption noise, grid)
    image_size: int = 64
    n_train: int = 512
    n_qa_train: int = 512
    # evaluation
    eval_prompts: int = 60
    eval_seeds: tuple = (0, 1)
    eval_qa: int = 64
    # bookkeeping
    log_every: int = 10
    ckpt_every: int = 50
    # real training data (segros.data.sources, docs/data.md). None: the shapes world (tiny backbones);
    # "shapes": the shapes world asked for explicitly (any backbone). Not in the config hash at default.
    t2i_data: typing.Optional[str] = None        # hub id, save_to_disk folder, parquet folder/files, glob of tars
    t2i_caption: typing.Optional[str] = None     # caption column / webdataset key; None: the first of prompt, txt, caption, text
    i2t_data: typing.Optional[str] = None        # LLaVA-Instruct JSON (or JSONL)
    i2t_image_root: typing.Optional[str] = None  # folder its "image" paths are relative to
    max_skip_frac: float = 0.01                  # a run stops when more of a source's samples are unreadable

    def __post_init__(self):
        validate(self)

    def replace(self, **overrides) -> "TrainConfig":
        """A copy with ``overrides``; string values are coerced to the field's type."""
        names = field_names()
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid keys: {', '.join(names)}")
        types = typing.get_type_hints(TrainConfig)
        coerced = {k: coerce(k, v, types[k]) for k, v in overrides.items()}
        return dataclasses.replace(self, **coerced)

    def to_dict(self) -> dict:
        """Every field, except those of ``HASH_NEUTRAL`` at their default (so that adding them kept
        every stored config hash) and those of ``METHOD_NEUTRAL`` that the config's method does not
        read; a left-out key reads as its default (``d["t2i_data"]`` is None)."""
        d = _ConfigDict(dataclasses.asdict(self))
        d["betas"] = list(self.betas)
        d["frozen"] = list(self.frozen)
        d["eval_seeds"] = list(self.eval_seeds)
        for key, default in HASH_NEUTRAL.items():
            if d[key] == default:
                del d[key]
        for key, (methods, values) in METHOD_NEUTRAL.items():
            if self.method not in methods and d[key] in values:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = field_names()
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid keys: {', '.join(names)}")
        d = dict(d)
        for k in ("betas", "frozen", "eval_seeds"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


# Fields added after runs were stored: left out of to_dict() (hence out of the config hash and of
# config.json) while at these defaults, so every stored run keeps its hash and its name.
HASH_NEUTRAL = {"world": "v1", "world_kwargs": {}, "t2i_data": None, "t2i_caption": None, "i2t_data": None, "i2t_image_root": None,
                "max_skip_frac": 0.01}


# Fields added after runs were stored whose value a method that does not read them cannot change:
# key -> (the methods that read it, the values that change nothing elsewhere). Left out of
# to_dict() for the other methods, so the SFT and "w/o SFT" runs and every shared base keep their
# hashes, while every grounding or hinted run gets a new one (its results change with the field).
METHOD_NEUTRAL = {
    "stopwords": (GROUNDING_METHODS, (True, False)),
    "text_embeddings": (GROUNDING_METHODS, ("snapshot", "live")),  # "frozen" freezes the table for every method
    "cond_dropout": (HINTED_METHODS, COND_DROPOUT),
}


class _ConfigDict(dict):
    """A ``to_dict()`` result: a key that was left out (``HASH_NEUTRAL``, ``METHOD_NEUTRAL``) reads as
    its default."""

    def __missing__(self, key):
        if key in HASH_NEUTRAL:
            return HASH_NEUTRAL[key]
        if key in METHOD_NEUTRAL:
            return _FIELD_DEFAULTS[key]
        raise KeyError(key)


def field_names():
    return [f.name for f in dataclasses.fields(TrainConfig)]


_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name in METHOD_NEUTRAL}


def coerce(key, value, typ):
    """Coerce a ``--set`` string to the field's type; non-strings pass through."""
    if not isinstance(value, str):
        if typ is tuple and isinstance(value, list):
            return tuple(value)
        return value
    s = value.strip()
    optional = typing.get_origin(typ) is typing.Union and type(None) in typing.get_args(typ)
    if optional:
        if s.lower() in ("none", "null", ""):
            return None
        typ = [a for a in typing.get_args(typ) if a is not type(None)][0]
    try:
        if typ is bool:
            if s.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(s)
            return s.lower() in ("true", "1", "yes")
        if typ is int:
            return int(s)
        if typ is float:
            return float(s)
        if typ is dict:
            out = json.loads(s)
            if not isinstance(out, dict):
                raise ValueError(s)
            return out
        if typ is tuple:
            parts = [p.strip() for p in s.strip("()[]").split(",") if p.strip()]
            return tuple(_scalar(p) for p in parts)
    except ValueError:
        raise ValueError(f"config key {key!r}: cannot read {value!r} as {getattr(typ, '__name__', typ)}") from None
    return s


def _scalar(p):
    for cast in (int, float):
        try:
            return cast(p)
        except ValueError:
            pass
    return p.strip("'\"")


def _check_choice(key, value, choices):
    if value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def _check_range(key, value, lo, hi, lo_open=False, hi_open=False):
    ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        a, b = ("(" if lo_open else "["), (")" if hi_open else "]")
        raise ValueError(f"{key} must be in {a}{lo}, {hi}{b}; got {value!r}")


def validate(c: TrainConfig):
    """Raise ValueError naming the first offending key."""
    if c.method not in METHODS:
        raise ValueError(f"unknown method {c.method!r}; valid methods: {', '.join(METHODS)}")
    _check_choice("text_filter", c.text_filter, TEXT_FILTERS)
    _check_choice("hint_from", c.hint_from, HINT_FROM)
    _check_choice("seen_from", c.seen_from, SEEN_FROM)
    _check_choice("loss_on", c.loss_on, LOSS_ON)
    _check_choice("precision", c.precision, PRECISIONS)
    _check_choice("text_embeddings", c.text_embeddings, TEXT_EMBEDDINGS)
    _check_choice("cond_dropout", c.cond_dropout, COND_DROPOUT)
    if not isinstance(c.stopwords, bool):
        raise ValueError(f"stopwords must be True or False; got {c.stopwords!r}")
    _check_choice("world", c.world, WORLDS)
    if c.mask_schedule is not None:
        _check_choice("mask_schedule", c.mask_schedule, SCHEDULES)
    if c.gamma_per is not None:
        _check_choice("gamma_per", c.gamma_per, GAMMA_PER)
    if not isinstance(c.backbone, str) or not c.backbone:
        raise ValueError(f"backbone must be a registry name; got {c.backbone!r}")
    if not isinstance(c.world_kwargs, dict):
        raise ValueError(f"world_kwargs must be a dict; got {type(c.world_kwargs).__name__}")
    if c.world_kwargs and c.world == "v1":
        raise ValueError(f"world v1 takes no world_kwargs; got {sorted(c.world_kwargs)} (they are world v3's knobs)")
    if not isinstance(c.backbone_kwargs, dict):
        raise ValueError(f"backbone_kwargs must be a dict; got {type(c.backbone_kwargs).__name__}")
    _check_range("eta", c.eta, 0.0, 1.0)
    _check_range("rho", c.rho, 0.0, 1.0)
    _check_range("loss_top", c.loss_top, 0.0, 1.0)
    _check_range("tau", c.tau, 0.0, float("inf"), lo_open=True)
    _check_range("alpha", c.alpha, 0.0, float("inf"))
    _check_range("lam", c.lam, 0.0, float("inf"))
    _check_range("lr", c.lr, 0.0, float("inf"), lo_open=True)
    _check_range("weight_decay", c.weight_decay, 0.0, float("inf"))
    _check_range("clip_grad", c.clip_grad, 0.0, float("inf"))
    _check_range("align_weight", c.align_weight, 0.0, float("inf"))
    if len(c.betas) != 2 or not all(0.0 <= b < 1.0 for b in c.betas):
        raise ValueError(f"betas must be two numbers in [0, 1); got {c.betas!r}")
    _check_range("pretrain_lr", c.pretrain_lr, 0.0, float("inf"), lo_open=True)
    for key in ("max_steps", "pretrain_steps", "batch_size", "grad_accum", "log_every", "ckpt_every", "image_size", "n_train"):
        v = getattr(c, key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{key} must be an integer >= 1; got {v!r}")
    for key in ("warmup_steps", "i2t_micro", "n_qa_train", "eval_prompts", "eval_qa", "seed", "world_seed"):
        v = getattr(c, key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{key} must be an integer >= 0; got {v!r}")
    if c.batch_size > c.n_train:
        raise ValueError(f"batch_size ({c.batch_size}) must not exceed n_train ({c.n_train})")
    if c.i2t_micro > 0 and c.lam > 0 and c.n_qa_train < c.batch_size:
        raise ValueError(f"n_qa_train ({c.n_qa_train}) must be >= batch_size ({c.batch_size}) when I2T is on")
    if not c.eval_seeds or not all(isinstance(s, int) for s in c.eval_seeds):
        raise ValueError(f"eval_seeds must be a non-empty tuple of ints; got {c.eval_seeds!r}")
    _validate_data(c)


def _validate_data(c: TrainConfig):
    """The data fields: strings or None, in combinations that name one source each (docs/data.md).

    Paths are checked when the sources are built (segros.data.sources), not here: a stored config
    must reopen on a machine without the data."""
    for key in ("t2i_data", "t2i_caption", "i2t_data", "i2t_image_root"):
        v = getattr(c, key)
        if v is not None and (not isinstance(v, str) or not v.strip()):
            raise ValueError(f"{key} must be a non-empty string or None; got {v!r}")
    if c.t2i_caption is not None and c.t2i_data in (None, "shapes"):
        raise ValueError(f"t2i_caption ({c.t2i_caption!r}) names a column of t2i_data, which is {c.t2i_data!r}; "
                         "set t2i_data too")
    if c.i2t_data not in (None, "shapes") and c.i2t_image_root is None:
        raise ValueError(f"i2t_data ({c.i2t_data!r}) needs i2t_image_root, the folder its image paths are relative to")
    if c.i2t_image_root is not None and c.i2t_data in (None, "shapes"):
        raise ValueError(f"i2t_image_root ({c.i2t_image_root!r}) is set but i2t_data is {c.i2t_data!r}; "
                         "set i2t_data to the LLaVA JSON")
    if isinstance(c.max_skip_frac, bool) or not isinstance(c.max_skip_frac, (int, float)):
        raise ValueError(f"max_skip_frac must be a number in [0, 1]; got {c.max_skip_frac!r}")
    _check_range("max_skip_frac", c.max_skip_frac, 0.0, 1.0)


# -----------------------------------------------------------------------------
# presets

# small runs fine-tune the shared "w/o SFT" base of their run store (segros.pipeline.ensure_base)
SMALL = TrainConfig(init_from="auto")

# Table 7, one column each, built from segros.paper.HYPERPARAMS (the one copy of the table).
# The learning-rate schedule (linear warm-up, cosine decay) and "no decay on 1-D parameters"
# follow Reca/Harmon (docs/conventions.md). Frozen-module names map onto parameter-name prefixes.
FROZEN_PREFIXES = {None: (), "CLIP": ("clip",), "MLLM": ("lmm",)}  # OpenUni names its MLLM "lmm"


def paper_overrides(key):
    """TrainConfig fields for the Table 7 column ``key`` ("showo-256", ..., "openuni-3.6b")."""
    h = HYPERPARAMS[key]
    return dict(backbone=key, lr=h.learning_rate, weight_decay=h.weight_decay, betas=tuple(h.betas),
                max_steps=h.train_steps, warmup_steps=h.warmup_steps, batch_size=h.batch_size,
                grad_accum=h.grad_accum, i2t_micro=h.grad_accum if h.lambda_i2t > 0 else 0,
                eta=h.eta, rho=h.rho, lam=h.lambda_i2t, frozen=FROZEN_PREFIXES[h.frozen_modules])


PAPER_KEYS = ("showo-256", "showo-512", "harmon-0.5b", "harmon-1.5b", "openuni-1.6b", "openuni-3.6b")
# paper runs: full GenEval (553 prompts, 4 seeds), logging and checkpoints at GPU scale
PAPER_COMMON = dict(precision="auto", init_from=None, eval_prompts=553, eval_seeds=(0, 1, 2, 3), eval_qa=0,
                    n_train=100_000, n_qa_train=100_000, log_every=10, ckpt_every=500)

PRESETS = {
    "small": SMALL,
    # Show-o keeps its CLIP encoder frozen (Table 7); the tiny hint encoder stands in for it, and
    # training it through I2T would let every patch carry the whole image (no grounding left)
    "small-showo": dataclasses.replace(SMALL, backbone="tiny-showo", frozen=("hint_encoder",)),
}
# world v3 (docs/calibration.md): one object per 16 px cell, alt-text pretraining captions, dense
# fine-tuning captions; the layout/colour codecs; GenEval's 553 prompts × 2 image seeds per run.
# Behind a switch: the committed store is world v1, and these presets are being calibrated.
V3_COMMON = dict(world="v3", eval_prompts=553, eval_seeds=(0, 1))
PRESETS["small-v3"] = dataclasses.replace(
    SMALL, backbone_kwargs={"patch": 16, "codec": "layout_color", "latent_channels": 19}, **V3_COMMON)
# tiny-showo's base meets the base targets at 4,500 pretraining steps (docs/calibration.md, attempt 6)
PRESETS["small-showo-v3"] = dataclasses.replace(
    PRESETS["small-showo"], backbone_kwargs={"patch": 16, "codec": "layout_color", "num_codes": 80},
    pretrain_steps=4500, **V3_COMMON)
for _key in PAPER_KEYS:
    PRESETS[f"paper-{_key}"] = dataclasses.replace(SMALL, **{**PAPER_COMMON, **paper_overrides(_key)})


def get_preset(name: str) -> TrainConfig:
    """The preset ``name`` (a frozen TrainConfig)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name]


# -----------------------------------------------------------------------------
# precision

def resolve_precision(precision: str) -> str:
    """``"auto"`` is bf16 on a GPU and fp32 on a CPU; any other choice of :data:`PRECISIONS` is itself."""
    _check_choice("precision", precision, PRECISIONS)
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() else "fp32"
    return precision


def autocast(precision: str, device_type: str):
    """The autocast context of ``precision`` on ``device_type`` (training and evaluation share it):
    ``torch.autocast`` in bf16 / fp16, a no-op in fp32 (the committed small results are fp32)."""
    precision = resolve_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
