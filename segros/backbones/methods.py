"""What a method sets in a real adapter by default: the Reca baselines run as Reca's own code.

§8.1: "all baseline training hyperparameters are kept identical to those of Reca". The Reca rows of
Table 9 (``reca``, and ``reca_hint_filter``, Reca's step with the SeGroS hint filter) therefore get
Reca's adapter settings on the real families without the user spelling them out:

- **Harmon** (Reca's ``Harmon/src/models/harmon_dev.py``, ``HarmonDev.recon_loss``): the image prompt
  in the image slot after ``<|im_start|>user\\n`` (``hint_layout="reca"``, which also makes the Reca
  baseline's image prompt all 1,088 encoder tokens, grid and buffer), the causal LLM with Reca's 2-D
  padding mask (``image_attention="native"``) and 0.1 on the gradient into the image features
  (``hint_grad_scale``, its ``_ScaleGradient``).
- **Show-o** and **OpenUni**: their adapters' defaults are already Reca's reconstruction layout
  (``docs/adapters/showo.md``, ``docs/adapters/openuni.md``); nothing to add.
- **Every family**: Reca's caption-free instruction list (``recon_prompts``: Reca's ``consts.py``
  or a text file, one instruction a line; with Harmon's 10% "Generate an image." split,
  ``text_free_prob``). It is not shipped here, so a Reca run on a real family without it stops
  (:class:`MissingReconPrompts`) instead of silently conditioning on the empty prompt; giving
  ``"recon_prompts": null`` explicitly chooses the empty prompt (beyond the paper).

Keys the config's ``backbone_kwargs`` gives win over these defaults. The tiny families have no
Reca code to follow and get nothing (:func:`method_backbone_kwargs`). Applied by
:func:`segros.backbones.registry.from_config`, so training and reopening a run build the same model.
"""

from __future__ import annotations

from typing import Any, Mapping

RECA_METHODS = ("reca", "reca_hint_filter")
REAL_FAMILIES = ("harmon", "showo", "openuni")

# Reca's adapter settings per real family (module docstring)
RECA_ADAPTER_DEFAULTS: dict[str, dict[str, Any]] = {
    "harmon": {"hint_layout": "reca", "image_attention": "native", "hint_grad_scale": 0.1},
    "showo": {},
    "openuni": {},
}

# where each family's instruction list lives in a checkout of Reca (wishhyt/reconstruction-alignment)
RECON_PROMPT_FILES = {
    "harmon": "Harmon/src/datasets/text2image/consts.py",
    "showo": "Show-o/training/consts.py",
    "openuni": "OpenUni/src/datasets/image2image/consts.py",
}


class MissingReconPrompts(RuntimeError):
    """A Reca run on a real family without Reca's caption-free instruction list (a RuntimeError, as every
    backbone that cannot be built: the command line prints it and exits with 1)."""


def family_of(backbone: str) -> str | None:
    """The real family a registry name belongs to (``"harmon-0.5b"`` -> ``"harmon"``); None for the tiny
    families (``"tiny-harmon"``) and unknown names."""
    head = backbone.split("-", 1)[0]
    return head if head in REAL_FAMILIES else None


def method_defaults(method: str, backbone: str) -> dict[str, Any]:
    """The adapter settings ``method`` implies on ``backbone`` (empty for SeGroS, SFT and the tiny families)."""
    family = family_of(backbone)
    if family is None or method not in RECA_METHODS:
        return {}
    return dict(RECA_ADAPTER_DEFAULTS[family])


def method_backbone_kwargs(method: str, backbone: str, backbone_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``backbone_kwargs`` over the defaults of ``method`` (the given keys win).

    Raises :class:`MissingReconPrompts` for a Reca method on a real family whose ``backbone_kwargs``
    has no ``recon_prompts`` key, naming the file of a Reca checkout to point it at.
    """
    family = family_of(backbone)
    if family is not None and method in RECA_METHODS and "recon_prompts" not in backbone_kwargs:
        raise MissingReconPrompts(
            f"method {method!r} on {backbone!r} conditions on Reca's caption-free reconstruction instructions, "
            f"which are not shipped: point backbone_kwargs at them, e.g. --set backbone_kwargs='{{..., "
            f"\"recon_prompts\": \"<reconstruction-alignment checkout>/{RECON_PROMPT_FILES[family]}\"}}' "
            f"(or a text file with one instruction per line; \"recon_prompts\": null uses the empty prompt instead)")
    return {**method_defaults(method, backbone), **backbone_kwargs}
