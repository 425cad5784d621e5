"""§3.2–3.3 of the paper, Eqs. 3–11: discriminative text tokens and the visual grounding map.

(Contract stub; the functions are being written.)
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Grounding(NamedTuple):
    w: torch.Tensor        # [B, L] bool, Eq. 9
    m_bar: torch.Tensor    # [B, N] float in [0, 1], Eq. 11 + min–max
    s_intra: torch.Tensor  # [B, L] float, Eq. 4 (0 on invalid tokens)
    s_inter: torch.Tensor  # [B, L] float, Eq. 6 (0 on invalid tokens)
