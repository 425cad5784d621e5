"""One training step of each real backbone at the real shapes, random weights (README, "Real backbones").

Families (Table 7 micro-batch = the preset's ``batch_size``, samples per micro-batch; ``accum`` =
its gradient accumulation): Show-o-256 (4, ×5), Show-o-512 (2, ×20), Harmon-0.5B (96, ×2),
Harmon-1.5B (48, ×2), OpenUni-1.6B (42, ×16), OpenUni-3.6B (20, ×16). ``--tiny`` swaps in the
tiny random builds of the same three adapters (micro-batch 2).

What one step is: exactly what ``segros.train.train`` runs, with the training code's own pieces:
``TrainConfig`` from the ``paper-<family>`` preset (method, η, ρ, α, λ, frozen modules), the
adapter's ``freeze``, ``make_optimizer`` (AdamW, no decay on 1-D parameters) and
``segros.train.t2i_step`` for the method's T2I micro-batch. A *micro-step* is one T2I micro-batch
plus, where the preset trains I2T (Show-o, Harmon: λ = 1, one I2T micro-batch per reconstruction
micro-batch), one I2T micro-batch, each with its backward; an optimizer *step* is ``accum``
micro-steps plus one update (gradient clipping 1.0, AdamW). OpenUni: λ = 0 (no I2T), MLLM frozen;
Show-o: CLIP frozen. Batches use each family's own layout (``tokenize_prompts`` / ``i2t_batch``)
with a caption of ``--text-len`` words, a ``--question-len``-word question and an ``--answer-len``-word
answer through a word-level tokenizer (one token per word; the real BPE tokenizers are not needed
for shapes), and random pixels at the family's resolution.

Reca's text: without ``recon_prompts`` (Reca's ``consts.py``, not in this repository) the Reca
baselines get the family's empty prompt (:func:`segros.train.without_text`), a few tokens shorter
than Reca's reconstruction instruction; Show-o's hinted text block is 128 slots either way. The
Reca row runs the adapter settings the Reca rows of the paper presets get
(:func:`segros.backbones.methods.method_defaults`; Harmon: Reca's slot layout and its 1,088-token
image prompt), on a model built with them.

Two modes.

Timing (a GPU, or ``--device cpu --tiny``): per family, the micro-step time (mean of ``--steps``
after ``--warmup``), the update time, the optimizer step ``accum × micro + update``, peak memory
(CUDA only), tokens/s (LLM sequence tokens of a micro-step through forward + backward per second,
counted by a hook on the LLM decoder), model FLOPs per optimizer step (counted on the meta device,
below, or read from ``--flops-from``) and MFU against ``--peak-tflops`` (default 989 dense bf16
TFLOP/s on H100/H200). The micro-batch is halved on out-of-memory (and ``--batch`` sets it), with
``accum`` raised to keep the preset's samples per optimizer step (rounded up if it does not divide). ``--dtype autocast`` (default)
is train.py's precision: fp32 weights under bf16 autocast on a GPU (fp32 on a CPU); ``bfloat16`` =
pure bf16 weights (OpenUni's adapter needs autocast for its fp32 pixels). Activation checkpointing
is on by default (``--no-grad-ckpt``; train.py does not enable it): the LLM of Harmon and Show-o,
SANA for OpenUni. FLOPs are model FLOPs, without recomputation. It also times SeGroS, Reca and SFT
micro-steps on one family (default Harmon-1.5B) and prints the step-time ratios.

FLOPs only (``--flops-only``, no GPU, about 2 minutes for all six): per family and method, model
FLOPs of one micro-step (forward + backward, frozen encoders' forwards included) at the real shapes
and micro-batch, counted by ``torch.utils.flop_counter.FlopCounterMode`` while the step runs on
the ``meta`` device, plus the LLM's sequence lengths. Meta tensors carry no data, and the step has
data-dependent parts (boolean indexing in MAR's encoder/decoder and in the diffusion loss,
``nonzero``, ``.item()``/``.tolist()``/``.cpu()`` in checks and in Show-o's and OpenUni's prompt
handling), so :class:`MetaShadow` keeps real CPU values ("shadows") of the small tensors that
carry data (≤ 2^20 elements: ids, masks, γ, the supervision) and answers those ops from them.
They are exact wherever the value comes from the batch or from the step's generator; a small
tensor computed from (meta) weights gets random values where data is needed (the grounding map:
*which* tokens become hints and stay visible is random, *how many* is exact: ⌊ηN⌋ hints, ⌊γN⌋
masked). Activations are never computed. Counting conventions: attention on meta runs PyTorch's
math path, 4·B·H·S²·d forward and 8·B·H·S²·d backward, masked-out entries included (PyTorch
counts the fused GPU kernels' backward as 10·B·H·S²·d); grouped convolutions' backward is counted
correctly (:func:`flop_counter`; PyTorch's formula over-counts SANA's depthwise convolutions by
their channel count). The VAEs are the random builds' (OpenUni's DC-AE here is all-ResBlock, not
dc-ae-f32c32-sana-1.1). Counts are averaged over ``--flop-draws`` draws of the generator (γ
differs per draw, the methods share each draw's γ). For the tiny families the meta count equals
the count of the real CPU step (tested).

    python benchmarks/bench_real_step.py                             # GPU, real shapes, all families
    python benchmarks/bench_real_step.py --flops-only                # no GPU: FLOP table, real shapes
    python benchmarks/bench_real_step.py --device cpu --tiny         # seconds on a CPU (tested)
    python benchmarks/bench_real_step.py --flops-only --tiny         # seconds on a CPU (tested)
    python benchmarks/bench_real_step.py --families harmon-1.5b --ratio-family harmon-1.5b
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakIdKeyDictionary

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segros.backbones.methods import method_defaults  # noqa: E402
from segros.presets import get_preset  # noqa: E402
from segros.train import freeze, make_optimizer, micro_schedule, t2i_step, to_device  # noqa: E402

aten = torch.ops.aten
METHODS = ("segros", "reca", "sft")
SHADOW_LIMIT = 1 << 20  # MetaShadow: largest tracked tensor (elements)


class Family(NamedTuple):
    family: str   # "harmon" | "showo" | "openuni"
    size: str     # the adapter's size key
    preset: str   # segros.presets name (Table 7 column)
    batch: int = 0  # micro-batch; 0 = the preset's batch_size (Table 7)


FAMILIES = {
    "showo-256": Family("showo", "256", "paper-showo-256"),
    "showo-512": Family("showo", "512", "paper-showo-512"),
    "harmon-0.5b": Family("harmon", "0.5b", "paper-harmon-0.5b"),
    "harmon-1.5b": Family("harmon", "1.5b", "paper-harmon-1.5b"),
    "openuni-1.6b": Family("openuni", "1.6b", "paper-openuni-1.6b"),
    "openuni-3.6b": Family("openuni", "3.6b", "paper-openuni-3.6b"),
}
TINY = {
    "showo-tiny": Family("showo", "tiny", "paper-showo-256", 2),
    "harmon-tiny": Family("harmon", "tiny", "paper-harmon-0.5b", 2),
    "openuni-tiny": Family("openuni", "tiny", "paper-openuni-1.6b", 2),
}
CAPTION_WORDS = ("a", "red", "circle", "left", "of", "the", "blue", "square", "and", "two", "green", "triangles")


def _builder(family: str):
    if family == "harmon":
        from segros.backbones.harmon import build_harmon
        return build_harmon
    if family == "showo":
        from segros.backbones.showo import build_showo
        return build_showo
    if family == "openuni":
        from segros.backbones.openuni import build_openuni
        return build_openuni
    raise ValueError(f"unknown family {family!r}; known: harmon, showo, openuni")


def resolve(names: str, tiny: bool) -> dict[str, Family]:
    """``"a,b"`` -> {name: Family}; ValueError naming the valid choices for an unknown name."""
    table = TINY if tiny else FAMILIES
    chosen = [n.strip() for n in names.split(",") if n.strip()] or list(table)
    unknown = [n for n in chosen if n not in table]
    if unknown:
        other = FAMILIES if tiny else TINY
        hint = [n for n in unknown if n in other]
        extra = ""
        if hint:
            extra = f" ({', '.join(hint)}: {'real shapes, drop --tiny' if tiny else 'tiny, add --tiny'})"
        raise ValueError(f"unknown families {unknown}{extra}; choose from {', '.join(table)}")
    return {n: table[n] for n in chosen}


def config_for(fam: Family, method: str, batch: int = 0):
    """The paper preset of ``fam`` (Table 7) with ``method`` and the micro-batch."""
    config = get_preset(fam.preset)
    return config.replace(method=method, batch_size=batch or fam.batch or config.batch_size)


def accum_for(fam: Family, b: int) -> tuple[int, bool]:
    """(gradient accumulation at micro-batch ``b`` that keeps the preset's samples per optimizer step,
    whether that is exact): ``ceil(batch_size * grad_accum / b)``."""
    preset = config_for(fam, "segros")
    samples = preset.batch_size * preset.grad_accum
    return -(-samples // b), samples % b == 0


def step_config(fam: Family, method: str, b: int):
    """:func:`config_for` at micro-batch ``b`` with the accumulation of :func:`accum_for` (the I2T
    micro-batches follow, where the preset has them)."""
    preset = config_for(fam, method)
    accum, _ = accum_for(fam, b)
    return preset.replace(batch_size=b, grad_accum=accum, i2t_micro=accum if preset.i2t_micro else 0)


def build(fam: Family, device="cpu", dtype=torch.float32, method: str = "segros"):
    """A random-weight model of ``fam`` on ``device`` (e.g. "meta"), the preset's frozen modules frozen,
    with the adapter settings ``method`` gets in the paper presets (:func:`method_defaults`).

    The tokenizer is the family's tiny word-level one (ids only matter through their count).
    """
    make = _builder(fam.family)
    with torch.device("meta"):
        tok = make("tiny").tokenizer
    kwargs = {} if fam.size == "tiny" else {"attn_implementation": "sdpa"}
    kwargs.update(method_defaults(method, f"{fam.family}-{fam.size}"))
    if fam.family in ("harmon", "showo"):
        # the micro-step without caption dropout (nine rows in ten): a dropped row on a hinted path
        # goes through the LLM in a second, hint-free sub-batch (segros.train.steps.hinted_loss),
        # which would make the counted sequences depend on the draw
        kwargs["cond_dropout_prob"] = 0.0
    with torch.device(device):
        model = make(fam.size, tokenizer=tok, **kwargs)
    model = model.to(dtype)
    freeze(model, get_preset(fam.preset).frozen)
    return model.train()


def image_size(model) -> int:
    cfg = model.cfg
    return cfg.resolution if model.family == "showo" else cfg.image_size


def llm_decoder(model):
    """The LLM's decoder stack (called with ``inputs_embeds`` for every LLM sequence of a step)."""
    if model.family == "harmon":
        return model.llm.model
    if model.family == "showo":
        return model.showo.model
    return model.llm  # OpenUni: InternVL's language model


def _words(n: int) -> str:
    return " ".join(CAPTION_WORDS[i % len(CAPTION_WORDS)] for i in range(n))


def make_batches(model, config, args, gen):
    """(T2I batch, I2T batch or None) of ``config.batch_size`` samples on CPU, in the family's own
    layout, random pixels."""
    import numpy as np

    b = config.batch_size
    size = image_size(model)
    t2i = model.tokenize_prompts([_words(args.text_len)] * b)
    t2i["pixels"] = torch.rand(b, 3, size, size, generator=gen)
    i2t = None
    if "i2t" in micro_schedule(config):
        tiny_images = [np.zeros((16, 16, 3), np.uint8)] * b
        i2t = model.i2t_batch(tiny_images, [_words(args.question_len)] * b, [_words(args.answer_len)] * b)
        i2t["pixels"] = torch.rand(b, 3, size, size, generator=gen)
    return t2i, i2t


class SeqLens:
    """Records (batch, length) of every LLM decoder call while active."""

    def __init__(self, model):
        self.module, self.calls, self.handle = llm_decoder(model), [], None

    def __enter__(self):
        def hook(_module, args, kwargs):
            x = kwargs.get("inputs_embeds")
            if x is None:
                x = kwargs.get("input_ids", args[0] if args else None)
            self.calls.append(tuple(x.shape[:2]))
        self.handle = self.module.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()

    @property
    def tokens(self) -> int:
        return sum(b * s for b, s in self.calls)


def micro_step(model, config, t2i, i2t, gen, autocast=None):
    """One micro-step of ``config.method``: T2I (``segros.train.t2i_step``) + λ·I2T, each backward."""
    ctx = autocast or contextlib.nullcontext
    with ctx():
        loss, _, _ = t2i_step(model, t2i, config, gen)
    loss.backward()
    if i2t is not None:
        with ctx():
            l_i2t = config.lam * model.i2t_loss(i2t)
        l_i2t.backward()


def update(model, opt, config):
    """The optimizer update of train.py: clip, AdamW step, zero_grad."""
    if config.clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
    opt.step()
    opt.zero_grad(set_to_none=True)


# -----------------------------------------------------------------------------
# FLOPs on the meta device

def _fill(t: torch.Tensor) -> torch.Tensor:
    """A stand-in CPU value for a small meta tensor computed from meta data (weights)."""
    if t.dtype.is_floating_point or t.dtype.is_complex:
        return torch.randn(t.shape, dtype=t.dtype)
    return torch.zeros(t.shape, dtype=t.dtype)


def _is_meta(x) -> bool:
    return isinstance(x, torch.Tensor) and x.device.type == "meta"


def _meta_device(x) -> bool:
    return isinstance(x, torch.device) and x.type == "meta"


class MetaShadow(TorchDispatchMode):
    """Run a model on ``meta`` while keeping real CPU values ("shadows") of small data tensors.

    Every op runs on meta (shapes only). A meta tensor is *tracked* when it has a shadow: tensors
    moved from CPU (ids, masks, γ), made by factories (``zeros``, ``arange``, ``rand`` with the
    step's generator) and everything computed from tracked tensors, as long as the outputs are
    small (≤ ``SHADOW_LIMIT`` elements in all; the op then also runs on the shadows, on CPU). Tensors
    computed only from meta weights stay untracked (no CPU work: activations are never computed).
    An untracked small tensor gets a random shadow (:func:`_fill`) only where it is needed: where
    it meets tracked data (e.g. the grounding map meets the noise ξ of Eq. 12, then the ranking
    that picks hints and masks runs on real values) or where an op needs data (``nonzero``,
    ``.item()``, a copy to CPU, boolean indices; these are answered from the shadows). Enter it
    *outside* a ``FlopCounterMode`` so that the counter sees each op once, on meta, and never the
    shadow work.
    """

    def __init__(self):
        super().__init__()
        self.shadows = WeakIdKeyDictionary()
        self._factories = None

    def __enter__(self):
        # torch.tensor / torch.as_tensor of Python data straight onto meta copy the data with
        # dispatch off (the mode would only see lift_fresh of a value-less tensor): build such
        # tensors on CPU and move them, so that the move records the shadow
        self._factories = (torch.tensor, torch.as_tensor)

        # (device by keyword: torch.tensor's is keyword-only, and no caller passes as_tensor's positionally)
        def wrap(fn):
            def factory(data, *args, **kwargs):
                device = kwargs.get("device")
                if (not isinstance(data, torch.Tensor) and device is not None and torch.device(device).type == "meta"
                        and not kwargs.get("requires_grad", False)):
                    kwargs["device"] = "cpu"
                    return fn(data, *args, **kwargs).to("meta")
                return fn(data, *args, **kwargs)
            return factory
        torch.tensor, torch.as_tensor = wrap(torch.tensor), wrap(torch.as_tensor)
        return super().__enter__()

    def __exit__(self, *exc):
        torch.tensor, torch.as_tensor = self._factories
        return super().__exit__(*exc)

    def shadow(self, t):
        """The shadow of ``t`` (``t`` itself off meta); a random one for a small untracked tensor."""
        if not _is_meta(t):
            return t
        s = self.shadows.get(t)
        if s is None and t.numel() <= SHADOW_LIMIT:
            s = _fill(t)
            self.shadows[t] = s
        return s

    def _shadow_args(self, args, kwargs):
        missing = []

        def sub(x):
            if _is_meta(x):
                s = self.shadow(x)
                if s is None:
                    missing.append(tuple(x.shape))
                return s
            if _meta_device(x):
                return torch.device("cpu")
            return x
        out = pytree.tree_map(sub, (args, kwargs))
        return (None, missing) if missing else (out, missing)

    def _meta_of(self, s):
        if not isinstance(s, torch.Tensor):
            return s
        m = torch.empty_strided(s.shape, s.stride(), dtype=s.dtype, device="meta")
        self.shadows[m] = s
        return m

    def _long_indices(self, indices):
        """Boolean index tensors -> the long index tensors of their ``nonzero`` (as PyTorch does)."""
        out = []
        for idx in indices:
            if _is_meta(idx) and idx.dtype in (torch.bool, torch.uint8):
                s = self.shadow(idx)
                if s is None:
                    raise RuntimeError(f"boolean index of shape {tuple(idx.shape)} has no value on meta")
                out.extend(self._meta_of(p) for p in s.bool().nonzero(as_tuple=True))
            else:
                out.append(idx)
        return out

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        leaves = pytree.tree_leaves((args, kwargs))
        if not any(_is_meta(x) or _meta_device(x) for x in leaves):
            return func(*args, **kwargs)  # a plain CPU op
        if func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default,
                    aten._index_put_impl_.default):
            args = (args[0], self._long_indices(args[1]), *args[2:])
        target = kwargs.get("device")
        if func is aten._to_copy.default and target is not None and not _meta_device(target):
            sargs, missing = self._shadow_args(args, kwargs)  # .cpu(), .tolist(): the shadow's value
            if sargs is None:
                raise RuntimeError(f"copy of a large meta tensor {missing} to {kwargs.get('device')}")
            return func(*sargs[0], **sargs[1])
        try:
            out = func(*args, **kwargs)
        except (NotImplementedError, RuntimeError) as err:  # data-dependent: answer from the shadows
            if func._schema.is_mutable:
                raise
            sargs, missing = self._shadow_args(args, kwargs)
            if sargs is None:
                raise RuntimeError(f"{func} needs values on meta, but inputs {missing} are too large "
                                   f"to shadow") from err
            return pytree.tree_map(self._meta_of, func(*sargs[0], **sargs[1]))
        self._propagate(func, args, kwargs, out)
        return out

    def _propagate(self, func, args, kwargs, out):
        outs = [o for o in pytree.tree_leaves(out) if _is_meta(o)]
        mutated = []
        if func._schema.is_mutable:
            for a, spec in zip(args, func._schema.arguments):
                if spec.alias_info is not None and spec.alias_info.is_write and _is_meta(a):
                    mutated.append(a)
        if not outs and not mutated:
            return
        inputs = [x for x in pytree.tree_leaves((args, kwargs)) if _is_meta(x)]
        tracked = not inputs or any(x in self.shadows for x in inputs)  # factories are tracked
        small = sum(o.numel() for o in outs) <= SHADOW_LIMIT and all(m.numel() <= SHADOW_LIMIT for m in mutated)
        sargs = self._shadow_args(args, kwargs)[0] if tracked and small else None
        if sargs is None:
            for m in mutated:  # its shadow (if any) is stale now
                self.shadows.pop(m, None)
            return
        sout = func(*sargs[0], **sargs[1])
        for o, s in zip(pytree.tree_leaves(out), pytree.tree_leaves(sout)):
            if _is_meta(o) and isinstance(s, torch.Tensor):
                self.shadows[o] = s


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    from torch.utils.flop_counter import sdpa_flop_count
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    from torch.utils.flop_counter import sdpa_flop_count
    return 2 * sdpa_flop_count(query_shape, key_shape, value_shape)  # the math path's count, as on meta


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                         _output_padding, _groups, output_mask, out_shape=None, **kwargs):
    """Each of grad_input and grad_weight costs one forward convolution (PyTorch's own formula counts
    grad_weight of a grouped convolution ``groups`` times too often: SANA's depthwise 3×3)."""
    from torch.utils.flop_counter import conv_flop_count
    return conv_flop_count(x_shape, w_shape, grad_out_shape, transposed) * (int(output_mask[0]) + int(output_mask[1]))


def flop_counter():
    """PyTorch's ``FlopCounterMode`` with two fixes: the backward of grouped convolutions, and CPU's
    fused attention (absent from PyTorch's table), counted with the math path's convention
    (forward 4·B·H·S²·d, backward twice that) that runs on meta."""
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {aten.convolution_backward: _conv_backward_flops}
    fwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd is not None and bwd is not None:
        mapping.update({fwd: _sdpa_cpu_flops, bwd: _sdpa_cpu_backward_flops})
    return FlopCounterMode(display=False, custom_mapping=mapping)


def count_micro(model, config, t2i, i2t, seed):
    """(FLOPs, LLM (batch, length) calls) of one micro-step of ``config.method`` on ``model``.

    ``model`` on meta: the step runs under :class:`MetaShadow` (batches moved to meta inside it).
    ``model`` on a real device: counted as it runs.
    """
    gen = torch.Generator().manual_seed(seed)
    meta = next(model.parameters()).device.type == "meta"
    shadow = MetaShadow() if meta else contextlib.nullcontext()
    with shadow, flop_counter() as fc, SeqLens(model) as seq:
        if meta:
            t2i, i2t = to_device(t2i, "meta"), None if i2t is None else to_device(i2t, "meta")
        micro_step(model, config, t2i, i2t, gen)
    model.zero_grad(set_to_none=True)
    return float(fc.get_total_flops()), seq.calls


def flops_table(fam: Family, args, methods=METHODS, batch: int = 0):
    """Per method: FLOPs of one micro-step and its LLM (batch, length) calls, each the mean over
    ``args.flop_draws`` draws (seeds ``seed``, ``seed + 1``, ...; each draw's γ is shared by the methods)."""
    shared = build(fam, "meta", torch.float32)  # FLOPs do not depend on the dtype
    out = {}
    for method in methods:
        own = method_defaults(method, f"{fam.family}-{fam.size}")
        model = build(fam, "meta", torch.float32, method) if own else shared
        config = step_config(fam, method, batch or config_for(fam, method).batch_size)
        flops, calls = [], []
        for d in range(args.flop_draws):
            gen = torch.Generator().manual_seed(args.seed + d)
            t2i, i2t = make_batches(model, config, args, gen)
            f, c = count_micro(model, config, t2i, i2t, args.seed + d)
            flops.append(f)
            calls.append(c)
        mean_calls = [(c[0], sum(draw[i][1] for draw in calls) / len(calls)) for i, c in enumerate(calls[0])]
        out[method] = dict(flops=sum(flops) / len(flops), flops_per_draw=flops, calls=mean_calls,
                           batch=config.batch_size, accum=config.grad_accum,
                           accum_ceil=not accum_for(fam, config.batch_size)[1])
    return out


# -----------------------------------------------------------------------------
# timing

def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_micro(model, config, t2i, i2t, steps, warmup, device, seed, autocast):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(warmup):
        micro_step(model, config, t2i, i2t, gen, autocast)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        micro_step(model, config, t2i, i2t, gen, autocast)
    sync(device)
    return (time.perf_counter() - t0) / steps


def time_update(model, opt, config, device):
    sync(device)
    t0 = time.perf_counter()
    update(model, opt, config)
    sync(device)
    return time.perf_counter() - t0


def known_flops(args, name, batch):
    """SeGroS micro-step FLOPs of ``name`` at ``batch`` from ``--flops-from`` (a ``--flops-only --json`` file)."""
    if not args.flops_from:
        return None
    for row in json.loads(Path(args.flops_from).read_text())["flops"]:
        if row["family"] == name and row["batch"] == batch:
            return row["methods"]["segros"]["flops"]
    return None


def peak_tflops(device, given):
    if given:
        return given
    if torch.device(device).type == "cuda":
        name = torch.cuda.get_device_name()
        if "H100" in name or "H200" in name:
            return 989.0
    return None


def precision(args):
    """(parameter dtype, autocast context factory or None) for ``--dtype``."""
    if args.dtype == "autocast":
        dev = torch.device(args.device).type
        if dev == "cuda":
            return torch.float32, lambda: torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.float32, None  # train.py runs fp32 on a CPU
    return getattr(torch, args.dtype), None


def enable_checkpointing(model):
    """Activation checkpointing of the trained transformer stack: the LLM of Harmon and Show-o
    (non-reentrant), SANA for OpenUni (its frozen MLLM runs in eval mode, where transformers skips
    checkpointing)."""
    if model.family == "openuni":
        model.transformer.enable_gradient_checkpointing()
        return
    decoder = llm_decoder(model)
    enable = getattr(decoder, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:  # transformers 4.x
        decoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def bench_family(name, fam: Family, args):
    """Time one family; halve the micro-batch on OOM, raising the accumulation so that an optimizer
    step keeps the preset's samples (:func:`accum_for`). Returns (row, model, batches, autocast)."""
    device = args.device
    dtype, autocast = precision(args)
    model = build(fam, device, dtype)
    if args.grad_ckpt:
        enable_checkpointing(model)
    b = args.batch or config_for(fam, "segros").batch_size
    config = step_config(fam, "segros", b)
    opt = make_optimizer(model, config)
    while True:
        try:
            config = step_config(fam, "segros", b)
            gen = torch.Generator().manual_seed(args.seed)
            t2i, i2t = make_batches(model, config, args, gen)
            t2i, i2t = to_device(t2i, device), None if i2t is None else to_device(i2t, device)
            with SeqLens(model) as seq:
                micro_step(model, config, t2i, i2t, torch.Generator().manual_seed(args.seed), autocast)
            update(model, opt, config)  # allocates the optimizer state
            if torch.device(device).type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            micro = time_micro(model, config, t2i, i2t, args.steps, args.warmup, device, args.seed, autocast)
            upd = time_update(model, opt, config, device)
            mem = torch.cuda.max_memory_allocated() / 2 ** 30 if torch.device(device).type == "cuda" else float("nan")
            break
        except torch.OutOfMemoryError:
            opt.zero_grad(set_to_none=True)
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            if b == 1:
                raise RuntimeError(f"{name}: even micro-batch 1 does not fit") from None
            b //= 2
    accum, exact = accum_for(fam, b)
    flops = float("nan")
    if args.flops:
        flops = known_flops(args, name, b)
        if flops is None:
            flops = flops_table(fam, args, ("segros",), b)["segros"]["flops"]
    step = accum * micro + upd
    peak = peak_tflops(device, args.peak_tflops)
    mfu = accum * flops / step / (peak * 1e12) if peak and math.isfinite(flops) else float("nan")
    row = dict(family=name, batch=b, accum=accum, accum_ceil=not exact, micro_s=micro, update_s=upd, step_s=step,
               peak_gib=mem, tokens_per_s=seq.tokens / micro, llm_seq=[s for _, s in seq.calls],
               tflop_per_micro=flops / 1e12, tflop_per_step=accum * flops / 1e12, mfu=mfu)
    return row, model, (t2i, i2t), autocast


# -----------------------------------------------------------------------------
# command line

FLOPS_HEADER = (f"{'family':<14}{'batch':>6}{'accum':>6}  {'LLM seq T2I sft/reca/segros':<29}{'I2T':>6}"
                f"{'TFLOP sft':>11}{'reca':>9}{'segros':>9}{'reca/sft':>10}{'segros/sft':>11}{'segros/reca':>12}"
                f"{'TFLOP/step':>12}")


def flops_line(r):
    m = r["methods"]
    seq = "/".join(f"{m[k]['calls'][0][1]:.0f}" for k in ("sft", "reca", "segros"))
    i2t = f"{m['sft']['calls'][1][1]:.0f}" if len(m["sft"]["calls"]) > 1 else "-"
    tf = {k: m[k]["flops"] / 1e12 for k in METHODS}
    return (f"{r['family']:<14}{r['batch']:>6}{r['accum']:>6}  {seq:<29}{i2t:>6}{tf['sft']:>11.3f}{tf['reca']:>9.3f}"
            f"{tf['segros']:>9.3f}{tf['reca'] / tf['sft']:>10.3f}{tf['segros'] / tf['sft']:>11.3f}"
            f"{tf['segros'] / tf['reca']:>12.3f}{tf['segros'] * r['accum']:>12.2f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny configs (CPU smoke test)")
    p.add_argument("--flops-only", action="store_true", help="no timing: FLOP table on the meta device")
    p.add_argument("--families", default="", help="comma list; default all of the mode")
    p.add_argument("--ratio-family", default="", help="family for the SeGroS/Reca/SFT step-time ratio")
    p.add_argument("--batch", type=int, default=0, help="override the Table 7 micro-batch")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--text-len", type=int, default=64, help="caption words of a T2I prompt")
    p.add_argument("--question-len", type=int, default=16)
    p.add_argument("--answer-len", type=int, default=32)
    p.add_argument("--dtype", default="autocast", choices=["autocast", "bfloat16", "float32"])
    p.add_argument("--no-grad-ckpt", dest="grad_ckpt", action="store_false")
    p.add_argument("--no-flops", dest="flops", action="store_false")
    p.add_argument("--flops-from", default="", help="reuse the FLOPs of a --flops-only --json file (same batch)")
    p.add_argument("--flop-draws", type=int, default=2, help="generator draws (γ) averaged per FLOP count")
    p.add_argument("--peak-tflops", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="also write the rows here")
    args = p.parse_args(argv)
    try:
        families = resolve(args.families, args.tiny)
    except ValueError as e:
        p.error(str(e))
    torch.manual_seed(args.seed)

    if args.flops_only:
        print(f"model FLOPs of one micro-step (T2I micro-batch + I2T micro-batch where λ > 0; forward + backward), "
              f"meta device, random weights, mean of {args.flop_draws} draw(s)")
        print(FLOPS_HEADER, flush=True)
        rows = []
        for name, fam in families.items():
            t0 = time.perf_counter()
            methods = flops_table(fam, args, METHODS, args.batch)
            rows.append(dict(family=name, batch=methods["sft"]["batch"], accum=methods["sft"]["accum"],
                             methods=methods, seconds=time.perf_counter() - t0))
            print(flops_line(rows[-1]), flush=True)
        print("LLM seq: tokens per sample of the LLM's T2I / I2T sequence (mean over draws); "
              "TFLOP/step = SeGroS micro-step × accum (one optimizer step; the update adds no matmul FLOPs)")
        if args.json:
            Path(args.json).write_text(json.dumps({"flops": rows}, indent=1))
        return rows

    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device here: time on a GPU, or use --flops-only (real shapes) or --device cpu --tiny")
    ratio_family = args.ratio_family or ("harmon-tiny" if args.tiny else "harmon-1.5b")
    try:
        resolve(ratio_family, args.tiny)
    except ValueError as e:
        p.error(f"--ratio-family: {e}")
    if ratio_family not in families:
        if args.ratio_family:
            p.error(f"--ratio-family {ratio_family} is not among the timed families ({', '.join(families)}); "
                    f"add it to --families")
        print(f"no step-time ratios: the default ratio family {ratio_family} is not timed (--ratio-family)")
        ratio_family = None
    rows, ratios = [], {}
    for name, fam in families.items():
        row, model, (t2i, i2t), autocast = bench_family(name, fam, args)
        rows.append(row)
        if name == ratio_family:
            for method in METHODS:
                config = step_config(fam, method, row["batch"])
                own = method_defaults(method, f"{fam.family}-{fam.size}")
                timed = build(fam, args.device, precision(args)[0], method) if own else model
                ratios[method] = time_micro(timed, config, t2i, i2t, args.steps, args.warmup, args.device,
                                            args.seed, autocast)
                if timed is not model:
                    del timed
            model.zero_grad(set_to_none=True)
        del model
        if torch.device(args.device).type == "cuda":
            torch.cuda.empty_cache()
    dev = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else "cpu"
    print(f"device: {dev}  dtype: {args.dtype}  micro-steps: {args.steps} (+{args.warmup} warm-up)")
    print(f"{'family':<14}{'batch':>6}{'accum':>6}{'micro s':>9}{'step s':>9}{'peak GiB':>10}{'tokens/s':>11}"
          f"{'TFLOP/step':>12}{'MFU':>7}")
    for r in rows:
        print(f"{r['family']:<14}{r['batch']:>6}{r['accum']:>6}{r['micro_s']:>9.3f}{r['step_s']:>9.3f}"
              f"{r['peak_gib']:>10.2f}{r['tokens_per_s']:>11.0f}{r['tflop_per_step']:>12.3f}{r['mfu']:>7.3f}"
              + ("  (accum rounded up: batch does not divide the preset's samples per step)"
                 if r["accum_ceil"] else ""))
    if ratios:
        base = ratios["sft"]
        print(f"micro-step time on {ratio_family}: "
              + ", ".join(f"{m} {t:.3f}s ({t / base:.2f}x SFT)" for m, t in ratios.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "ratios": ratios, "device": dev}, indent=1))
    return rows, ratios


if __name__ == "__main__":
    main()
