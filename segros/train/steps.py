"""One T2I micro-batch of each method (§3.2–3.4, Eq. 13; Table 9 rows), and the training objectives.

:func:`t2i_step` is the heart of the method: the grounding map from the model's own embeddings,
its perturbation, the hints and the grounded corrupted input, then the family's own loss. An
*objective* is what the training loop calls on each T2I micro-batch: ``objective(backbone,
batch, generator) -> (loss, t2i_loss_value)``. :func:`finetune_objective` is the method's step;
:func:`pretrain_objective` is the "w/o SFT" base's (SFT-style masking plus the family's alignment
loss). The loop never branches on which one it runs.

Where the paper is silent (``docs/conventions.md`` has the full list): grounding uses the frozen
text-embedding table and ``embed_image`` detached, the hints are the same ``embed_image`` outputs
with gradient; the Reca baselines condition on a caption-free prompt (:func:`without_text`); one
``torch.Generator`` drives γ, the masks and ξ of Eq. 12.
"""

from __future__ import annotations

import dataclasses

import torch

from segros import shard
from segros.grounding import ground
from segros.presets import TrainConfig
from segros.supervision import (Supervision, build_supervision, perturb, random_supervision, resample_map,
                                sample_gamma)
from segros.train.data import to_device


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
    """§3.2–3.3 + Eq. 12: m̃ = min-max(m) + ξ from the frozen text embeddings and detached z_image."""
    with torch.no_grad():
        z_text = backbone.embed_text(batch["input_ids"])
    g = ground(z_text.float(), z_image.detach().float(), batch["text_valid"].bool(),
               rho=config.rho, tau=config.tau, text_filter=config.text_filter)
    return perturb(g.m_bar, config.alpha, generator=generator)


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
        return backbone.t2i_loss(without_text(backbone, batch, generator), sup, hints), sup, hints

    m_tilde = grounded_map(backbone, batch, z_image, config, generator)  # the caption's batch, always

    if config.method == "reca_hint_filter":  # grounded with the caption, conditioned without it
        rand = random_supervision(B, N, gamma, eta=0.0, generator=generator)
        sup = Supervision(top_hint_idx(m_tilde, config.eta), rand.seen, rand.masked, rand.loss_weight)
        sup = on_device(sup, z_image.device)
        hints = gather_hints(z_image, sup.hint_idx)
        return backbone.t2i_loss(without_text(backbone, batch, generator), sup, hints), sup, hints

    # segros: hints and corrupted input from the same m̃ (§3.4), resampled when the grids differ
    target_map = None
    if tuple(backbone.hint_grid_hw) != tuple(backbone.target_grid_hw):
        target_map = resample_map(m_tilde, tuple(backbone.hint_grid_hw), tuple(backbone.target_grid_hw))
    sup = build_supervision(m_tilde, eta=config.eta, gamma=gamma, hint_from=config.hint_from,
                            seen_from=config.seen_from, loss_on=config.loss_on, loss_top=config.loss_top,
                            target_map=target_map)
    sup = on_device(sup, z_image.device)
    hints = gather_hints(z_image, sup.hint_idx)
    return backbone.t2i_loss(batch, sup, hints), sup, hints


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
