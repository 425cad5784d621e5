"""§2 and §3.4 of the paper: visual hints, the grounded corrupted input, masking schedules.

(Contract stub; the functions are being written.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Supervision:
    """Which visual tokens are hints, which stay visible, which are reconstructed (§3.4).

    hint_idx:    [B, H] long, H = ⌊ηN⌋, indices on the *hint* grid, ascending (raster order).
    seen:        [B, N] bool on the *target* grid, the visible context Z_I^seen.
    masked:      [B, N] bool on the target grid, the mask set M (= ~seen).
    loss_weight: [B, N] float, > 0 only inside ``masked`` (Table 6's drop-loss zeroes part of M).
    """

    hint_idx: torch.Tensor
    seen: torch.Tensor
    masked: torch.Tensor
    loss_weight: torch.Tensor
