"""The words the shapes world and the scorers share, and what each one looks like.

Both :mod:`segros.data` (the shapes world draws and captions scenes) and :mod:`segros.eval`
(GenEval's rules and the shapes-world detector score them) read these definitions, so they live
below both (``docs/architecture.md``, layer 3):

- GenEval's six tags (:data:`TAGS`), its ten colour names (:data:`COLORS`, here with the RGB the
  shapes world paints them in), its four relations (:data:`RELATIONS`) and its position rule
  (:func:`relative_position`, margin :data:`POSITION_THRESHOLD`);
- the shapes world's object classes (:data:`SHAPES`) and their geometry (:func:`shape_mask`, which
  the renderer fills and the detector compares against), and the number words of its captions;
- the function words that take no part in grounding (:data:`STOPWORDS`, Fig. 3's caption: "Text
  scores exclude non-semantic functional stopwords") and :func:`stopword_mask`, which finds them in
  token ids of any tokenizer family, word by word.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import torch

# GenEval's tags, colour names and relations (the official evaluation script's lists)
TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
RELATIONS = ("left of", "right of", "above", "below")
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
POSITION_THRESHOLD = 0.1

# GenEval's ten colour names, in its order, with the RGB the shapes world paints them in
COLORS = {
    "red": (220, 30, 30),
    "orange": (250, 140, 20),
    "yellow": (245, 225, 30),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "purple": (140, 50, 190),
    "pink": (250, 140, 200),
    "brown": (125, 75, 35),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
}

# the shapes world's object classes (single words, so GenEval's templates read naturally)
SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
NUMBERS = ("zero", "one", "two", "three", "four")


# Function words: articles and determiners, pronouns, auxiliary and copular verbs, conjunctions and
# the prepositions that carry no spatial relation of their own. Written for this package. The
# relation words of GenEval's prompts ("left", "right", "above", "below", "top"), number words,
# colours and nouns are content words and stay; "of", "to", "the", "on" in "left of", "to the left
# of", "on top of" are function words and go.
STOPWORDS = frozenset("""
a an the this that these those some any each every either neither no
i me my we us our you your he him his she her it its they them their there here
is are was were be been being am do does did has have had will would shall should can could may might must
and or but nor so yet if then than as because while
of to in on at by for from with without into onto upon about against among through
""".split())

_WORD_EDGE = re.compile(r"^\W+|\W+$")


def is_stopword(word: str) -> bool:
    """Whether ``word`` (any case, surrounding punctuation ignored) is in :data:`STOPWORDS`."""
    return _WORD_EDGE.sub("", word.strip().lower()) in STOPWORDS


@functools.lru_cache(maxsize=65536)
def _stopword_flags(decode, ids: tuple) -> tuple:
    """One flag per id of a caption span: True for every piece of a word in :data:`STOPWORDS`."""
    flags, words, text = [], [], ""
    for j in range(len(ids)):
        now = decode(list(ids[:j + 1]))
        piece = now[len(text):] if now.startswith(text) else decode([ids[j]])
        text = now
        if j == 0 or piece[:1].isspace() or not words:  # a piece that opens with a space starts a word
            words.append([j])
        else:
            words[-1].append(j)
    flags = [False] * len(ids)
    for word in words:
        stop = is_stopword(decode([ids[k] for k in word]))
        for k in word:
            flags[k] = stop
    return tuple(flags)


def stopword_mask(input_ids: torch.Tensor, text_valid: torch.Tensor, decode) -> torch.Tensor:
    """bool [B, L]: the valid tokens that belong to a word of :data:`STOPWORDS`.

    Applied to words, not sub-word pieces, for any tokenizer family: each run of consecutive valid
    tokens (a caption span) is decoded piece by piece with ``decode`` (ids -> str, a tokenizer's
    ``decode``); a piece whose text opens with whitespace starts a new word (byte-level BPE's "Ġ",
    SentencePiece's "▁", a word-level tokenizer's joining space), the others continue the word before.
    A word is a stopword when its decoded text is (:func:`is_stopword`), and then every one of its
    pieces is marked. Invalid tokens are never marked.
    """
    if input_ids.shape != text_valid.shape or input_ids.ndim != 2:
        raise ValueError(f"input_ids and text_valid must both be [B, L], got {tuple(input_ids.shape)} "
                         f"and {tuple(text_valid.shape)}")
    ids, valid = input_ids.tolist(), text_valid.bool().tolist()
    out = torch.zeros(input_ids.shape, dtype=torch.bool)
    for b, (row, ok) in enumerate(zip(ids, valid)):
        j = 0
        while j < len(row):
            if not ok[j]:
                j += 1
                continue
            k = j
            while k < len(row) and ok[k]:
                k += 1
            flags = _stopword_flags(decode, tuple(row[j:k]))
            out[b, j:k] = torch.tensor(flags, dtype=torch.bool)
            j = k
    return out.to(text_valid.device)


# -----------------------------------------------------------------------------
# GenEval's position rule

def relative_position(box_a, box_b, margin=POSITION_THRESHOLD):
    """Relations of box A with respect to box B, as a set of GenEval relation strings.

    offset = centre(A) - centre(B); each axis is shrunk towards 0 by ``margin * (dim_A + dim_B)``
    (never past 0). If both revised components are below 1e-3 there is no relation (overlapping
    or nearly coincident objects). Otherwise the revised offset is divided by the length of the
    *original* offset and a component below -0.5 / above 0.5 gives "left of" / "right of" on x
    and "above" / "below" on y (image y points down). A diagonal placement can give two relations.
    """
    a = np.asarray(box_a, dtype=np.float64)[:4]
    b = np.asarray(box_b, dtype=np.float64)[:4]
    centre_a = (a[:2] + a[2:]) / 2
    centre_b = (b[:2] + b[2:]) / 2
    dim_a = np.abs(a[2:] - a[:2])
    dim_b = np.abs(b[2:] - b[:2])
    offset = centre_a - centre_b
    revised = np.maximum(np.abs(offset) - margin * (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


# -----------------------------------------------------------------------------
# the shapes' geometry

def _polygon(shape):
    """Vertices of a polygonal shape in [-1, 1]^2, y down, filling the square exactly."""
    if shape == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    if shape == "diamond":
        return np.array([[0, -1], [1, 0], [0, 1], [-1, 0]], dtype=np.float64)
    if shape == "triangle":
        return np.array([[0, -1], [1, 1], [-1, 1]], dtype=np.float64)
    if shape == "cross":
        a = 0.34
        return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a]], dtype=np.float64)
    if shape == "star":
        angles = np.pi / 2 + np.arange(10) * np.pi / 5  # tip at the top
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([radii * np.cos(angles), -radii * np.sin(angles)], axis=1)
        lo, hi = pts.min(0), pts.max(0)
        return 2 * (pts - lo) / (hi - lo) - 1  # stretch to fill the box
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


def shape_mask(shape, h, w):
    """Bool [h, w] mask of ``shape`` filling an ``h × w`` box.

    Pixel centres are mapped so that the first / last row and column sit at -1 / +1; a pixel is
    inside if it is inside the shape or within half a pixel spacing of its outline, which makes
    the mask's tight bounding box equal to the full box for every shape.
    """
    if h < 2 or w < 2:
        raise ValueError(f"box size must be at least 2x2, got {h}x{w}")
    v, u = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    tol = 1.0 / (min(h, w) - 1) + 1e-9
    if shape == "circle":
        return u ** 2 + v ** 2 <= (1 + tol) ** 2
    poly = _polygon(shape)
    p = np.stack([u.ravel(), v.ravel()], axis=1)[:, None, :]  # [P, 1, 2]
    a, b = poly[None], np.roll(poly, -1, axis=0)[None]  # [1, E, 2]
    # even-odd crossing test
    ya, yb = a[..., 1], b[..., 1]
    crosses = (ya > p[..., 1]) != (yb > p[..., 1])
    x_at = a[..., 0] + (p[..., 1] - ya) * (b[..., 0] - a[..., 0]) / np.where(yb == ya, 1, yb - ya)
    inside = (crosses & (p[..., 0] < x_at)).sum(axis=1) % 2 == 1
    # distance to the outline
    ab = b - a
    t = np.clip(((p - a) * ab).sum(-1) / (ab * ab).sum(-1), 0, 1)
    dist = np.linalg.norm(p - (a + t[..., None] * ab), axis=-1).min(axis=1)
    return (inside | (dist <= tol)).reshape(h, w)
