"""One T2I micro-batch of each method (§3.2–3.4, Eq. 13; Table 9 rows), and the training objectives.

:func:`t2i_step` is the heart of the method: the grounding map from the model's own embeddings,
its perturbation, the hints and the grounded corrupted input, then the family's own loss. An
*objective* is what the training loop calls on each T2I micro-batch: ``objective(backbone,
batch, generator) -> (loss, t2i_loss_value)``. :func:`finetune_objective` is the method's step;
:func:`pretrain_objective` is the "w/o SFT" base's (SFT-style masking plus the family's alignment
loss). The loop never branches on which one it runs.

Where the paper is silent (``docs/conventions.md`` has the full list, ``docs/fidelity.md`` the
readings chosen): grounding reads a frozen snapshot of the text-embedding table taken when
fine-tuning starts (:func:`prepare_text_embeddings`) and ``embed_image`` detached, without the
function words of :data:`segros.vocab.STOPWORDS` (:func:`grounding_valid`); the hints are the same
``embed_image`` outputs with gradient; on a hinted path a row whose caption is dropped (classifier-free
guidance) loses its hints too (:func:`hinted_loss`); the Reca baselines condition on a caption-free
prompt (:func:`without_text`); one ``torch.Generator`` drives γ, the masks, ξ of Eq. 12 and the
dropped rows.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from segros import shard
from segros.grounding import ground
from segros.presets import GROUNDING_METHODS, TrainConfig
from segros.supervision import (Supervision, build_supervision, perturb, random_supervision, resample_map,
                                sample_gamma)
from segros.train.data import to_device
from segros.vocab import stopword_mask


# -----------------------------------------------------------------------------
# the text-embedding table grounding reads (§8.1)

def text_embedding_module(backbone) -> torch.nn.Embedding:
    """The ``nn.Embedding`` that ``backbone.embed_text`` looks its ids up in (found by running it once
    on one id with a forward hook on every embedding of the model). Raises ValueError when
    ``embed_text`` is not exactly one embedding lookup."""
    seen = []
    embeddings = [m for m in backbone.modules() if isinstance(m, torch.nn.Embedding)]
    hooks = [m.register_forward_hook(lambda m, args, out: seen.append(m)) for m in embeddings]
    device = next(backbone.parameters()).device
    ids = torch.zeros(1, 1, dtype=torch.long, device=device)
    try:
        with torch.no_grad():
            out = backbone.embed_text(ids)
    finally:
        for h in hooks:
            h.remove()
    found = list(dict.fromkeys(seen))
    if len(found) != 1:
        raise ValueError(f"{type(backbone).__name__}.embed_text uses {len(found)} nn.Embedding modules; the "
                         "text-embedding snapshot needs exactly one")
    with torch.no_grad():
        ref = F.embedding(ids.to(found[0].weight.device), found[0].weight)
        if not torch.equal(out.float().to(ref.device), ref.float()):
            raise ValueError(f"{type(backbone).__name__}.embed_text is not a plain lookup of its embedding table")
    return found[0]


def snapshot_text_embeddings(backbone) -> torch.Tensor:
    """Freeze a copy of the text-embedding table for grounding (``config.text_embeddings="snapshot"``):
    kept on the backbone as ``grounding_text_table`` (a plain attribute: not a parameter, not in the
    weights file), read by :func:`grounding_text`. Returns the copy."""
    table = text_embedding_module(backbone).weight.detach().clone()
    backbone.grounding_text_table = table
    return table


def prepare_text_embeddings(backbone, config: TrainConfig) -> None:
    """What ``config.text_embeddings`` asks of a fine-tune before its first step. The training loop
    calls it after loading the start weights and before restoring a checkpoint, so a resumed run
    snapshots the same table. ``"snapshot"`` takes the grounding snapshot (grounding methods only);
    ``"frozen"`` stops the table's gradient for every method (§8.1 read literally: Qwen's table is
    tied to its LM head and Show-o's holds its image codes, so those freeze with it); ``"live"``
    does nothing (grounding reads the training table)."""
    if config.text_embeddings == "frozen":
        text_embedding_module(backbone).weight.requires_grad_(False)
    elif config.text_embeddings == "snapshot" and config.method in GROUNDING_METHODS:
        snapshot_text_embeddings(backbone)


def grounding_text(backbone, input_ids, config: TrainConfig) -> torch.Tensor:
    """Z_T for grounding, without gradient: the snapshot's rows under ``"snapshot"`` (taken here, on
    first use, when the training loop did not take one), else ``backbone.embed_text``."""
    with torch.no_grad():
        if config.text_embeddings != "snapshot":
            return backbone.embed_text(input_ids)
        table = getattr(backbone, "grounding_text_table", None)
        if table is None:
            table = snapshot_text_embeddings(backbone)
        if table.device != input_ids.device:
            table = backbone.grounding_text_table = table.to(input_ids.device)
        return F.embedding(input_ids, table)


def grounding_valid(backbone, batch, config: TrainConfig) -> torch.Tensor:
    """The text tokens that ground: ``text_valid`` without the pieces of the function words of
    :data:`segros.vocab.STOPWORDS` (``config.stopwords``, Fig. 3's caption), found word by word with
    the backbone's own tokenizer (:func:`segros.vocab.stopword_mask`)."""
    valid = batch["text_valid"].bool()
    if not config.stopwords:
        return valid
    return valid & ~stopword_mask(batch["input_ids"], valid, backbone.tokenizer.decode).to(valid.device)


def without_text(backbone, batch, generator=None):
    """The same batch with its caption replaced by a caption-free prompt (Reca; Table 9 Text ×).

    A backbone with ``tokenize_recon_prompts`` and a non-empty ``recon_prompt_list`` (the real
    adapters with ``recon_prompts`` set through ``backbone_kwargs``) gives Reca's reconstruction
    instructions, drawn with ``generator``; any other backbone the empty prompt
    ``tokenize_prompts([""] * B)`` (the tiny families: ``generator`` untouched). Either way
    ``text_valid`` is all False, so grounding must use the original batch (:func:`t2i_step`).
    Where Reca does this in its code: ``docs/adapters/``.
    """
    B = batch["pixels"].shape[0]
    recon = getattr(backbone, "tokenize_recon_prompts", None)
    if recon is not None and getattr(backbone, "recon_prompt_list", None):
        # drawn (and padded) for the global batch, this process's rows (segros.shard)
        text = {k: shard.local_rows(v, B) for k, v in recon(shard.rows(B)[1], generator).items()}
    else:
        text = backbone.tokenize_prompts([""] * B)
    return {**batch, **to_device(text, batch["pixels"].device)}


def gather_hints(z_image, hint_idx):
    """[B, N, D], [B, H] -> [B, H, D] (the hints keep the raster order of ``hint_idx``)."""
    return torch.gather(z_image, 1, hint_idx[..., None].expand(-1, -1, z_image.shape[-1]))


def top_hint_idx(m_tilde, eta):
    """Ascending indices of the top-⌊ηN⌋ tokens of m̃ (Table 9 row 3's hint filter)."""
    return build_supervision(m_tilde, eta=eta, gamma=0.0).hint_idx


def grounded_map(backbone, batch, z_image, config, generator):
    """§3.2–3.3 + Eq. 12: m̃ = min-max(m) + ξ from the frozen text embeddings (:func:`grounding_text`)
    of the caption's content words (:func:`grounding_valid`) and detached z_image."""
    z_text = grounding_text(backbone, batch["input_ids"], config)
    g = ground(z_text.float(), z_image.detach().float(), grounding_valid(backbone, batch, config),
               rho=config.rho, tau=config.tau, text_filter=config.text_filter)
    return perturb(g.m_bar, config.alpha, generator=generator)


# -----------------------------------------------------------------------------
# classifier-free guidance on the hinted paths

def _rows(batch, keep):
    n = keep.shape[0]
    return {k: (v[keep.to(v.device)] if torch.is_tensor(v) and v.ndim >= 1 and v.shape[0] == n else v)
            for k, v in batch.items()}


def _sup_rows(sup, keep):
    keep = keep.to(sup.seen.device)
    return Supervision(sup.hint_idx[keep], sup.seen[keep], sup.masked[keep], sup.loss_weight[keep])


def hinted_loss(backbone, batch, sup, hints, config: TrainConfig, generator):
    """``backbone.t2i_loss`` on a hinted path, with classifier-free-guidance dropout.

    In training mode each row is dropped with the backbone's ``cond_dropout_prob`` (the family's own
    caption-dropout rate, 0.1 for every family; 0 for a backbone without one), drawn with
    ``generator``. A dropped row's text becomes the family's unconditional prompt
    (``tokenize_prompts([""])``) and, under ``config.cond_dropout="caption_and_hints"`` (default), it
    also loses its hints, so it trains the unconditional branch generation uses; under ``"caption"``
    it keeps them; ``"none"`` drops nothing on hinted paths. Dropped and kept rows go through
    ``t2i_loss`` as two sub-batches; the loss is their mean weighted by each one's total
    ``loss_weight`` (Σ w·ℓ / Σ w over the batch, as each family normalises). The SFT path has no
    hints and keeps the family's own dropout in ``t2i_loss``.

    With several processes (:mod:`segros.shard`) the dropped rows are drawn for the global batch, the
    weights are global, and every process runs every sub-batch that has a row anywhere (on a stand-in
    row of weight 0 where it holds none), so the step is the one-process step on the whole batch.
    """
    p = float(getattr(backbone, "cond_dropout_prob", 0.0))
    if not backbone.training or p <= 0 or config.cond_dropout == "none":
        return backbone.t2i_loss(batch, sup, hints)
    B = batch["pixels"].shape[0]
    offset, n = shard.rows(B)
    dropped_anywhere = (torch.rand(n, generator=generator, device=generator.device) < p).cpu()
    if not bool(dropped_anywhere.any()):
        return backbone.t2i_loss(batch, sup, hints)
    drop = dropped_anywhere[offset:offset + B]  # this process's rows (all of them with one process)
    total, weight = 0.0, 0.0
    for dropped, anywhere in ((True, dropped_anywhere), (False, ~dropped_anywhere)):
        if not bool(anywhere.any()):
            continue
        rows = drop if dropped else ~drop
        stand_in = not bool(rows.any())  # only with several processes: the sub-batch's rows are elsewhere
        if stand_in:
            rows = torch.arange(B) == 0
        b, s = _rows(batch, rows), _sup_rows(sup, rows)
        if stand_in:
            s = dataclasses.replace(s, loss_weight=torch.zeros_like(s.loss_weight))
        if dropped:
            b = {**b, **to_device(backbone.tokenize_prompts([""] * int(rows.sum())), batch["pixels"].device)}
            h = None if config.cond_dropout == "caption_and_hints" else hints[rows.to(hints.device)]
        else:
            h = hints[rows.to(hints.device)]
        w = float(shard.all_sum(s.loss_weight.sum()))
        if w > 0:
            with shard.stand_in(stand_in):
                total = total + w * backbone.t2i_loss(b, s, h)
            weight += w
    if weight == 0:
        return backbone.t2i_loss(batch, sup, hints)
    return total / weight


def on_device(sup, device):
    return Supervision(sup.hint_idx.to(device), sup.seen.to(device), sup.masked.to(device),
                       sup.loss_weight.to(device))


def t2i_step(backbone, batch, config: TrainConfig, generator):
    """One T2I micro-batch of ``config.method``; returns (loss, supervision, hints).

    segros           (§3.4, Eq. 13): text + top-η grounded hints; seen = bottom of m̃, masked = the rest
    sft              (Fig. 1(a)): text only, random mask
    reca             (Fig. 1(b), Table 9 row 2): no caption (:func:`without_text`), the whole image
                     prompt as hints (every grid token, plus ``VisualTokens.extra``), random mask
    reca_hint_filter (Table 9 row 3): no caption in the model's input, top-η hints by the SeGroS map
                     grounded with the caption, random mask
    """
    B = batch["pixels"].shape[0]
    N = backbone.target_grid_hw[0] * backbone.target_grid_hw[1]
    schedule = config.mask_schedule or backbone.mask_schedule
    per = config.gamma_per or backbone.gamma_per
    gamma = sample_gamma(schedule, B, per=per, generator=generator)

    if config.method == "sft":
        sup = random_supervision(B, N, gamma, eta=0.0, generator=generator)
        sup = on_device(sup, batch["pixels"].device)
        return backbone.t2i_loss(batch, sup, None), sup, None

    visual = backbone.embed_image(batch["pixels"])  # with gradient: the hint embeddings
    z_image = visual.z_image
    n_hint_grid = z_image.shape[1]

    if config.method == "reca":
        rand = random_supervision(B, N, gamma, eta=0.0, generator=generator)
        all_idx = torch.arange(n_hint_grid).expand(B, n_hint_grid).clone()
        sup = on_device(Supervision(all_idx, rand.seen, rand.masked, rand.loss_weight), z_image.device)
        hints = visual.image_prompt()
        loss = hinted_loss(backbone, without_text(backbone, batch, generator), sup, hints, config, generator)
        return loss, sup, hints

    m_tilde = grounded_map(backbone, batch, z_image, config, generator)  # the caption's batch, always

    if config.method == "reca_hint_filter":  # grounded with the caption, conditioned without it
        rand = random_supervision(B, N, gamma, eta=0.0, generator=generator)
        sup = Supervision(top_hint_idx(m_tilde, config.eta), rand.seen, rand.masked, rand.loss_weight)
        sup = on_device(sup, z_image.device)
        hints = gather_hints(z_image, sup.hint_idx)
        loss = hinted_loss(backbone, without_text(backbone, batch, generator), sup, hints, config, generator)
        return loss, sup, hints

    # segros: hints and corrupted input from the same m̃ (§3.4), resampled when the grids differ
    target_map = None
    if tuple(backbone.hint_grid_hw) != tuple(backbone.target_grid_hw):
        target_map = resample_map(m_tilde, tuple(backbone.hint_grid_hw), tuple(backbone.target_grid_hw))
    sup = build_supervision(m_tilde, eta=config.eta, gamma=gamma, hint_from=config.hint_from,
                            seen_from=config.seen_from, loss_on=config.loss_on, loss_top=config.loss_top,
                            target_map=target_map)
    sup = on_device(sup, z_image.device)
    hints = gather_hints(z_image, sup.hint_idx)
    return hinted_loss(backbone, batch, sup, hints, config, generator), sup, hints


# -----------------------------------------------------------------------------
# objectives: what the loop calls on each T2I micro-batch

def finetune_objective(config: TrainConfig):
    """The method's T2I step (:func:`t2i_step`); returns (loss, loss value for the log)."""

    def objective(backbone, batch, generator):
        loss, _, _ = t2i_step(backbone, batch, config, generator)
        return loss, loss.item()

    return objective


def pretrain_objective(config: TrainConfig):
    """The "w/o SFT" base's T2I objective: SFT-style random masking, no hints, plus
    ``config.align_weight`` × the family's ``alignment_loss`` where it defines one (the tiny
    families' alignment stage, :mod:`segros.backbones.tiny_common`). The log keeps the T2I part."""
    sft = dataclasses.replace(config, method="sft")

    def objective(backbone, batch, generator):
        loss, _, _ = t2i_step(backbone, batch, sft, generator)
        t2i = loss.item()
        if hasattr(backbone, "alignment_loss") and config.align_weight > 0:
            loss = loss + config.align_weight * backbone.alignment_loss(batch)
        return loss, t2i

    return objective
