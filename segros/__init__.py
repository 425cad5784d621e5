"""SeGroS: Semantically-Grounded Supervision for unified multimodal models (arXiv 2603.19807).

The package is thin on purpose: one module per concept of the paper.

- :mod:`segros.grounding`   — §3.2–3.3, Eqs. 3–11: text filtering and the visual grounding map
- :mod:`segros.supervision` — §2 and §3.4, Eq. 12: visual hints and the grounded corrupted input
- :mod:`segros.attention`   — §8.2 / Fig. 6: the hint | text | corrupted-image attention mask
- :mod:`segros.objectives`  — §11, Eqs. 13–17: the backbone losses and the total
- :mod:`segros.backbones`   — one protocol, tiny and real Show-o / Harmon / OpenUni families
- :mod:`segros.data`        — the offline shapes world and image-text datasets
- :mod:`segros.eval`        — GenEval rules, benchmark layouts, the shapes-world detector
- :mod:`segros.train`, :mod:`segros.presets` — the accelerate loop; ``small`` and Table 7 presets
- :mod:`segros.runs`        — the run store: one folder per run, reuse and exact resume
- :mod:`segros.evaluate`    — generate GenEval-layout images and score them; QA accuracy
- :mod:`segros.tables`      — which runs make each paper table; the claims summary
- :mod:`segros.paper`       — every number the paper reports, as data
- :mod:`segros.viz`, :mod:`segros.notebooks` — figures/tables for the notebooks; notebook hygiene
"""

__version__ = "0.1.0"
