"""SeGroS: Semantically-Grounded Supervision for unified multimodal models (arXiv 2603.19807).

The layers, bottom to top (each imports only the ones below it; ``docs/architecture.md``):

1. :mod:`segros.paper` (every number the paper reports), :mod:`segros.presets` (``TrainConfig``, the
   presets, every choice constant, precision), :mod:`segros.rng` (seeding and random scopes)
2. the method: :mod:`segros.grounding` (§3.2–3.3, Eqs. 3–11), :mod:`segros.supervision` (§2, §3.4,
   Eq. 12), :mod:`segros.attention` (§8.2, Fig. 6), :mod:`segros.objectives` (§11, Eqs. 2, 13–17)
3. :mod:`segros.vocab`: the words the shapes world and the scorers share
4. :mod:`segros.data` (shapes world, tokenizers) and :mod:`segros.eval` (GenEval rules, detector)
5. :mod:`segros.backbones`: one protocol, a registry, tiny and real Show-o / Harmon / OpenUni
6. :mod:`segros.store`: run folders on disk
7. :mod:`segros.train` (the loop) and :mod:`segros.inference` (generate, answer, score)
8. :mod:`segros.pipeline`: a run end to end, the shared base, reopening
9. :mod:`segros.stats`, :mod:`segros.tables`: tables from the store, the claims
10. :mod:`segros.viz`, :mod:`segros.notebooks` and the command lines
"""

__version__ = "0.1.0"
