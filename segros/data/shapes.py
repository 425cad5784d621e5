"""The shapes world: a synthetic, offline stand-in for the paper's image-text data (§4.1, §8.1) and
for GenEval's object-centric prompts (§8.3, Table 1 columns Single / Two / Count / Color / Position / Attr.).

Small images of coloured geometric shapes on a low-contrast textured gray background, with
GenEval-style captions. It exists so that every part of SeGroS (grounding map, visual hints,
grounded corruption, GenEval-rule scoring) can be trained and measured on a CPU in minutes,
with a weight-free detector (:mod:`segros.eval.shapes_detector`) standing in for Mask2Former.

Conventions (none of them come from the paper; they are choices of this reproduction):
- Colours are GenEval's ten colour names; shapes are single-word classes (:data:`SHAPES`).
- Objects are axis-aligned, fill a square box of side 14–22 px (at 64 px; scaled with
  ``image_size``), never overlap and keep a gap of at least 3 px, so counting is exact.
- ``Obj.box = (x1, y1, x2, y2)`` with exclusive ends; the rasteriser guarantees that the tight
  bounding box of ``Obj.mask`` equals the requested box.
- A two-object scene always has exactly one GenEval relation between its objects (checked with
  :func:`segros.vocab.relative_position`): ``Scene.relation = (rel, i, j)`` reads
  "object i is ``rel`` object j". Counting scenes (2–4 objects of the same shape and colour)
  are captioned with a number ("three red circles"), never with a relation; scenes with 3–4
  objects have ``relation = None``.
- Captions have no punctuation and are lower case; words are separated by single spaces.
- Held-out compositions: colour–shape pairs and (shape, relation, shape) triples (a triple
  also holds out its converse, e.g. "circle left of square" = "square right of circle").
  They never occur in the "pretrain" / "finetune" splits; about half of the "eval" scenes
  contain one.
- Every scene is a pure function of (world seed, split name, index) via
  ``np.random.SeedSequence([seed, split_code, index])``.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field

import numpy as np

from segros.vocab import COLORS, INVERSE, NUMBERS, RELATIONS, SHAPES, TAGS, relative_position, shape_mask  # noqa: F401

GENEVAL_PROPORTIONS = {"single_object": 80, "two_object": 99, "counting": 80, "colors": 94, "position": 100, "color_attr": 100}
SPLITS = {"pretrain": 1, "finetune": 2, "eval": 3}

# words with no visual counterpart, for the richer training captions
PREFIXES = ("a photo of", "an image of", "a picture of", "a drawing of", "we can see", "this image shows")
SUFFIXES = ("", "on a textured background", "in the picture", "on a gray background", "in this image", "with a striped background")
RELATION_PHRASES = {
    "left of": ("left of", "to the left of"),
    "right of": ("right of", "to the right of"),
    "above": ("above", "on top of"),
    "below": ("below", "under"),
}
QUESTION_WORDS = "what color is the how many are there where relative to is there".split()
ANSWER_WORDS = ["yes", "no", "left", "right", "above", "below", "0", "1", "2", "3", "4"]

DEFAULT_HOLDOUT = {
    "color_shape": [("red", "star"), ("blue", "triangle"), ("green", "cross"), ("yellow", "diamond"), ("purple", "circle"), ("orange", "square")],
    "relation": [("circle", "left of", "square"), ("triangle", "above", "star"), ("diamond", "below", "cross")],
}


# -----------------------------------------------------------------------------
# scene containers

@dataclass
class Obj:
    shape: str
    color: str
    box: tuple  # (x1, y1, x2, y2), pixels, exclusive end
    mask: np.ndarray  # bool [H, W]


@dataclass
class Scene:
    objects: list
    image: np.ndarray  # uint8 [H, W, 3]
    caption: str
    geneval_caption: str
    relation: tuple | None = None  # (rel, i, j): object i is rel object j
    meta: dict = field(default_factory=dict)

    def token_object_map(self, grid_hw, obj=None):
        """Fraction of each of the ``h × w`` patches covered by any object (or by object ``obj``).

        The image side must be divisible by the grid side; > 0.5 marks an "object token".
        """
        h, w = int(grid_hw[0]), int(grid_hw[1])
        H, W = self.image.shape[:2]
        if h <= 0 or w <= 0 or H % h or W % w:
            raise ValueError(f"grid_hw={grid_hw} must divide the image size {(H, W)}")
        if obj is None:
            mask = np.zeros((H, W), dtype=bool)
            for o in self.objects:
                mask |= o.mask
        else:
            if not 0 <= obj < len(self.objects):
                raise ValueError(f"obj={obj} out of range for a scene with {len(self.objects)} objects")
            mask = self.objects[obj].mask
        return mask.reshape(h, H // h, w, W // w).mean(axis=(1, 3))

    def to_json(self):
        """Objects (shape, colour, box) and relation as a JSON string (no pixels)."""
        objs = [{"shape": o.shape, "color": o.color, "box": [int(v) for v in o.box]} for o in self.objects]
        return json.dumps({"objects": objs, "relation": list(self.relation) if self.relation else None, **self.meta})


# -----------------------------------------------------------------------------
# rendering (the shapes' geometry is segros.vocab.shape_mask)

def background(image_size, rng):
    """Low-contrast gray texture: base gray, faint oriented stripes and pixel noise (near-neutral)."""
    s = image_size
    y, x = np.mgrid[0:s, 0:s].astype(np.float64)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(5, 12)
    base = rng.uniform(118, 138)
    stripes = 5 * np.sin(2 * np.pi * (x * np.cos(theta) + y * np.sin(theta)) / period)
    gray = base + stripes + rng.normal(0, 3, (s, s))
    img = gray[..., None] + rng.normal(0, 1.5, (s, s, 3))
    return np.clip(img, 0, 255)


def render(objects_spec, image_size=64, seed=None, rng=None):
    """Draw the given objects and return a :class:`Scene`.

    ``objects_spec``: list of dicts ``{"shape", "color", "box": (x1, y1, x2, y2)}`` (exclusive
    ends, inside the image). Object colours get a small per-object shade and per-pixel noise.
    The caption wording (prefix, suffix, relation phrase) is drawn from ``rng`` (or
    ``np.random.default_rng(seed)``).
    """
    if rng is None:
        rng = np.random.default_rng(seed)
    img = background(image_size, rng)
    objects = []
    for i, spec in enumerate(objects_spec):
        shape, color, box = spec.get("shape"), spec.get("color"), spec.get("box")
        if shape not in SHAPES:
            raise ValueError(f"objects_spec[{i}]['shape'] must be one of {SHAPES}, got {shape!r}")
        if color not in COLORS:
            raise ValueError(f"objects_spec[{i}]['color'] must be one of {tuple(COLORS)}, got {color!r}")
        x1, y1, x2, y2 = (int(v) for v in box)
        if not (0 <= x1 < x2 <= image_size and 0 <= y1 < y2 <= image_size):
            raise ValueError(f"objects_spec[{i}]['box']={box} is not inside a {image_size}px image")
        mask = np.zeros((image_size, image_size), dtype=bool)
        mask[y1:y2, x1:x2] = shape_mask(shape, y2 - y1, x2 - x1)
        rgb = np.array(COLORS[color], dtype=np.float64) + rng.uniform(-6, 6, 3)
        img[mask] = rgb + rng.normal(0, 2.5, (mask.sum(), 3))
        objects.append(Obj(shape, color, (x1, y1, x2, y2), mask))
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)
    relation = scene_relation(objects)
    caption = training_caption(objects, relation, rng)
    return Scene(objects, image, caption, geneval_caption(objects, relation), relation)


# -----------------------------------------------------------------------------
# captions

def with_article(word):
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def plural(word):
    return f"{word}es" if word.endswith("s") else f"{word}s"


def scene_relation(objects):
    """``(rel, 0, 1)`` if a two-object scene has exactly one GenEval relation, else None."""
    if len(objects) != 2:
        return None
    rels = relative_position(objects[0].box, objects[1].box)
    return (next(iter(rels)), 0, 1) if len(rels) == 1 else None


def _identical(objects):
    """True for a counting scene: two or more objects of the same colour and shape."""
    return len(objects) >= 2 and len({(o.color, o.shape) for o in objects}) == 1


def _noun_phrases(objects):
    """'a red circle' for each object, or one 'three red circles' if all objects are identical."""
    if _identical(objects):
        c, s = objects[0].color, objects[0].shape
        return [f"{NUMBERS[len(objects)]} {c} {plural(s)}"]
    return [with_article(f"{o.color} {o.shape}") for o in objects]


def geneval_caption(objects, relation):
    """GenEval template wording: 'a photo of a red circle left of a blue square', 'a photo of three red circles'."""
    if relation is not None and not _identical(objects):
        rel, i, j = relation
        return f"a photo of {with_article(objects[i].color + ' ' + objects[i].shape)} {rel} {with_article(objects[j].color + ' ' + objects[j].shape)}"
    return "a photo of " + " and ".join(_noun_phrases(objects))


def training_caption(objects, relation, rng):
    """A richer caption: a filler prefix, every object (colour + shape), the relation, a filler suffix."""
    prefix = PREFIXES[rng.integers(len(PREFIXES))]
    suffix = SUFFIXES[rng.integers(len(SUFFIXES))]
    if relation is not None and not _identical(objects):
        rel, i, j = relation
        phrase = RELATION_PHRASES[rel][rng.integers(len(RELATION_PHRASES[rel]))]
        body = f"{with_article(objects[i].color + ' ' + objects[i].shape)} {phrase} {with_article(objects[j].color + ' ' + objects[j].shape)}"
    else:
        body = " and ".join(_noun_phrases(objects))
    return " ".join(w for w in (prefix, body, suffix) if w)


# -----------------------------------------------------------------------------
# layouts

def _size_range(image_size, n):
    lo, hi = (14, 22) if n <= 3 else (14, 18)
    k = image_size / 64
    return max(3, round(lo * k)), max(4, round(hi * k))


def _separated(boxes, gap):
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            A, B = boxes[a], boxes[b]
            if A[0] < B[2] + gap and B[0] < A[2] + gap and A[1] < B[3] + gap and B[1] < A[3] + gap:
                return False
    return True


def place(n, rng, image_size=64, relations=(), max_tries=2000):
    """``n`` non-overlapping square boxes; ``relations`` = [(rel, i, j)] that must hold exactly.

    Rejection sampling: each constraint requires ``relative_position(box_i, box_j) == {rel}``.
    """
    lo, hi = _size_range(image_size, n)
    gap = max(1, round(3 * image_size / 64))
    for _ in range(max_tries):
        boxes = []
        for _ in range(n):
            s = int(rng.integers(lo, hi + 1))
            x1 = int(rng.integers(1, image_size - s))
            y1 = int(rng.integers(1, image_size - s))
            boxes.append((x1, y1, x1 + s, y1 + s))
        if not _separated(boxes, gap):
            continue
        if n == 2 and not relations and len(relative_position(boxes[0], boxes[1])) != 1:
            continue
        if all(relative_position(boxes[i], boxes[j]) == {rel} for rel, i, j in relations):
            return boxes
    raise RuntimeError(f"could not place {n} objects with relations {relations} in {max_tries} tries")


# -----------------------------------------------------------------------------
# the world

def _largest_remainder(weights, total):
    keys = list(weights)
    raw = np.array([weights[k] for k in keys], dtype=np.float64) * total / sum(weights.values())
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return dict(zip(keys, counts.tolist()))


class ShapesWorld:
    """Deterministic generator of scenes, captions, QA pairs and GenEval prompts.

    ``holdout``: ``{"color_shape": [(color, shape)], "relation": [(shape, rel, shape)]}``;
    ``None`` uses :data:`DEFAULT_HOLDOUT`.
    """

    def __init__(self, image_size=64, seed=0, holdout=None):
        if image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {image_size}")
        self.image_size = int(image_size)
        self.seed = int(seed)
        holdout = DEFAULT_HOLDOUT if holdout is None else holdout
        self.holdout_color_shape = {tuple(p) for p in holdout.get("color_shape", [])}
        self.holdout_relation = set()
        for a, rel, b in holdout.get("relation", []):
            if rel not in INVERSE:
                raise ValueError(f"holdout['relation'] relation must be one of {RELATIONS}, got {rel!r}")
            self.holdout_relation |= {(a, rel, b), (b, INVERSE[rel], a)}
        for c, s in self.holdout_color_shape:
            if c not in COLORS or s not in SHAPES:
                raise ValueError(f"holdout['color_shape'] has an unknown pair {(c, s)}")

    # -- compositions
    def compositions(self, scene):
        """The colour–shape pairs and relation triples a scene contains."""
        pairs = {(o.color, o.shape) for o in scene.objects}
        triples = set()
        if scene.relation is not None:
            rel, i, j = scene.relation
            triples.add((scene.objects[i].shape, rel, scene.objects[j].shape))
        return pairs, triples

    def is_held_out(self, scene):
        pairs, triples = self.compositions(scene)
        return bool(pairs & self.holdout_color_shape) or bool(triples & self.holdout_relation)

    # -- sampling
    def _random_spec(self, rng):
        kind = rng.choice(["single", "pair", "count"], p=[0.3, 0.45, 0.25])
        if kind == "single":
            n = 1
        elif kind == "pair":
            n = 2
        else:
            n = int(rng.integers(2, 5))
        boxes = self._boxes(n, rng)
        if kind == "count":
            c, s = rng.choice(list(COLORS)), rng.choice(SHAPES)
            return [{"shape": str(s), "color": str(c), "box": b} for b in boxes]
        return [{"shape": str(rng.choice(SHAPES)), "color": str(rng.choice(list(COLORS))), "box": b} for b in boxes]

    def _held_out_spec(self, rng):
        items = sorted(self.holdout_color_shape) + sorted(self.holdout_relation)
        item = items[rng.integers(len(items))]
        if len(item) == 2:
            c, s = item
            n = int(rng.integers(1, 3))
            boxes = self._boxes(n, rng)
            spec = [{"shape": s, "color": c, "box": boxes[0]}]
            if n == 2:
                spec.append({"shape": str(rng.choice(SHAPES)), "color": str(rng.choice(list(COLORS))), "box": boxes[1]})
            return spec
        a, rel, b = item
        boxes = self._boxes(2, rng, relations=[(rel, 0, 1)])
        return [{"shape": a, "color": str(rng.choice(list(COLORS))), "box": boxes[0]},
                {"shape": b, "color": str(rng.choice(list(COLORS))), "box": boxes[1]}]

    def scene(self, split, index, seed=None):
        """Scene ``index`` of ``split``: a pure function of (seed, split, index)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
        seed = self.seed if seed is None else int(seed)
        rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], int(index)]))
        has_holdout = bool(self.holdout_color_shape or self.holdout_relation)
        if split == "eval" and has_holdout and rng.random() < 0.5:
            return render(self._held_out_spec(rng), self.image_size, rng=rng)
        for _ in range(1000):
            scene = render(self._random_spec(rng), self.image_size, rng=rng)
            if split == "eval" or not self.is_held_out(scene):
                return scene
        raise RuntimeError("could not sample a scene outside the held-out compositions")

    def split(self, name, n, seed=None):
        """``n`` scenes of split ``name`` ("pretrain" | "finetune" | "eval")."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return [self.scene(name, i, seed) for i in range(n)]

    # -- text
    def vocabulary(self):
        """Every word of every caption, question, answer and GenEval prompt of this world, sorted."""
        words = set()
        phrases = list(PREFIXES) + list(SUFFIXES) + [p for ps in RELATION_PHRASES.values() for p in ps]
        phrases += list(RELATIONS) + list(NUMBERS) + QUESTION_WORDS + ANSWER_WORDS + ["a an and the"]
        phrases += list(COLORS) + list(SHAPES) + [plural(s) for s in SHAPES]
        for p in phrases:
            words.update(p.split())
        return sorted(words)

    def qa(self, scenes, seed=0):
        """Question–answer pairs about ``scenes``: kinds color, count, position, exists.

        Per scene: a colour question about an object whose shape is unique in the scene; a count
        question about a random shape (answer a digit, possibly "0"); a position question when
        the scene has a relation (answer "left" | "right" | "above" | "below"); an exists
        question whose answer is "yes" or "no" with equal probability. No punctuation.
        """
        rng = np.random.default_rng(seed)
        out = []
        for scene in scenes:
            shapes = [o.shape for o in scene.objects]
            unique = [o for o in scene.objects if shapes.count(o.shape) == 1]
            if unique:
                o = unique[rng.integers(len(unique))]
                out.append({"image": scene.image, "question": f"what color is the {o.shape}", "answer": o.color, "kind": "color"})
            s = SHAPES[rng.integers(len(SHAPES))]
            out.append({"image": scene.image, "question": f"how many {plural(s)} are there", "answer": str(shapes.count(s)), "kind": "count"})
            if scene.relation is not None:
                rel, i, j = scene.relation
                a, b = scene.objects[i], scene.objects[j]
                out.append({"image": scene.image, "question": f"where is the {a.color} {a.shape} relative to the {b.color} {b.shape}",
                            "answer": rel.split()[0], "kind": "position"})
            present = {(o.color, o.shape) for o in scene.objects}
            if rng.random() < 0.5:
                c, s = sorted(present)[rng.integers(len(present))]
            else:
                absent = sorted({(c, s) for c in COLORS for s in SHAPES} - present)
                c, s = absent[rng.integers(len(absent))]
            out.append({"image": scene.image, "question": f"is there {with_article(c + ' ' + s)}",
                        "answer": "yes" if (c, s) in present else "no", "kind": "exists"})
        return out

    def as_dataset(self, split, n, seed=None):
        """A ``datasets.Dataset`` with columns image (datasets.Image), text, geneval_caption, metadata (JSON)."""
        import datasets
        from PIL import Image

        scenes = self.split(split, n, seed)
        features = datasets.Features({
            "image": datasets.Image(),
            "text": datasets.Value("string"),
            "geneval_caption": datasets.Value("string"),
            "metadata": datasets.Value("string"),
        })
        return datasets.Dataset.from_dict({
            "image": [Image.fromarray(s.image) for s in scenes],
            "text": [s.caption for s in scenes],
            "geneval_caption": [s.geneval_caption for s in scenes],
            "metadata": [s.to_json() for s in scenes],
        }, features=features)

    # -- GenEval
    def geneval_metadata(self, n_total=553, seed=0):
        """GenEval-format prompt records for this world's classes and colours.

        Tag sizes follow GenEval's 80/99/80/94/100/100 (of 553), scaled to ``n_total`` with
        largest-remainder rounding. With only six classes the pools of distinct prompts are small
        (e.g. 6 single-object prompts), so each pool is shuffled once and cycled: prompts repeat,
        evenly. Record layout as GenEval's evaluation_metadata.jsonl (position clauses point
        at include[0], the reference object, as GenEval's generator does).
        """
        if n_total < 1:
            raise ValueError(f"n_total must be >= 1, got {n_total}")
        rng = np.random.default_rng(seed)
        counts = _largest_remainder(GENEVAL_PROPORTIONS, n_total)
        colors = list(COLORS)
        pools = {
            "single_object": [(s,) for s in SHAPES],
            "two_object": [(a, b) for a in SHAPES for b in SHAPES if a != b],
            "counting": [(s, k) for s in SHAPES for k in (2, 3, 4)],
            "colors": [(c, s) for c in colors for s in SHAPES],
            "position": [(a, rel, b) for a in SHAPES for b in SHAPES if a != b for rel in RELATIONS],
            "color_attr": [(ca, a, cb, b) for a in SHAPES for b in SHAPES if a != b for ca in colors for cb in colors if ca != cb],
        }
        rows = []
        for tag in TAGS:
            pool = pools[tag]
            order = rng.permutation(len(pool))
            for k in range(counts[tag]):
                rows.append(_geneval_record(tag, pool[order[k % len(pool)]]))
        return rows

    def _boxes(self, n, rng, relations=()):
        """Boxes of ``n`` objects satisfying ``relations`` (free placement; :class:`GridWorld` uses cells)."""
        return place(n, rng, self.image_size, relations=relations)

    def render_from_metadata(self, metadata, seed=0):
        """A ground-truth scene satisfying a GenEval prompt record (colours random where unspecified)."""
        rng = np.random.default_rng(seed)
        shapes, colors, groups = [], [], []
        for i, req in enumerate(metadata["include"]):
            if req["class"] not in SHAPES:
                raise ValueError(f"metadata['include'][{i}]['class'] must be one of {SHAPES}, got {req['class']!r}")
            groups.append(list(range(len(shapes), len(shapes) + int(req["count"]))))
            for _ in range(int(req["count"])):
                shapes.append(req["class"])
                colors.append(req.get("color", str(rng.choice(list(COLORS)))))
        relations = []
        for i, req in enumerate(metadata["include"]):
            if "position" in req:
                rel, target = req["position"]
                relations += [(rel, a, b) for a in groups[i] for b in groups[int(target)]]
        boxes = self._boxes(len(shapes), rng, relations)
        scene = render([{"shape": s, "color": c, "box": b} for s, c, b in zip(shapes, colors, boxes)], self.image_size, rng=rng)
        scene.meta = {"geneval": metadata}
        return scene


def _geneval_record(tag, item):
    if tag == "single_object":
        (s,) = item
        return {"tag": tag, "include": [{"class": s, "count": 1}], "prompt": f"a photo of {with_article(s)}"}
    if tag == "two_object":
        a, b = item
        return {"tag": tag, "include": [{"class": a, "count": 1}, {"class": b, "count": 1}],
                "prompt": f"a photo of {with_article(a)} and {with_article(b)}"}
    if tag == "counting":
        s, k = item
        return {"tag": tag, "include": [{"class": s, "count": k}], "exclude": [{"class": s, "count": k + 1}],
                "prompt": f"a photo of {NUMBERS[k]} {plural(s)}"}
    if tag == "colors":
        c, s = item
        return {"tag": tag, "include": [{"class": s, "count": 1, "color": c}], "prompt": f"a photo of {with_article(c)} {s}"}
    if tag == "position":
        a, rel, b = item
        return {"tag": tag, "include": [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [rel, 0]}],
                "prompt": f"a photo of {with_article(a)} {rel} {with_article(b)}"}
    ca, a, cb, b = item
    return {"tag": tag, "include": [{"class": a, "count": 1, "color": ca}, {"class": b, "count": 1, "color": cb}],
            "prompt": f"a photo of {with_article(ca)} {a} and {with_article(cb)} {b}"}


# -----------------------------------------------------------------------------
# world v3: one object per cell of a grid, alt-text pretraining captions

# pretraining captions (web alt-text stand-in): words the dense captions never use
ALT_WORDS = ("some", "shapes", "objects", "colorful", "things", "next", "to", "with")


class GridWorld(ShapesWorld):
    """World ``"v3"``: the scenes of :class:`ShapesWorld` placed on a ``grid × grid`` lattice of
    cells (4 × 4 cells of 16 px at 64 px), one object per cell, each filling a centred square box of
    ``cell − 2·margin`` px, so a 16 px image token holds at most one whole object.

    Captions depend on the split (``docs/calibration.md``): the *pretrain* split reads like web
    alt-text (:meth:`alt_caption`: objects left out, colours left out, colours sometimes bound to
    the wrong object, relations rarely stated); the *finetune* split keeps :func:`training_caption`,
    dense and exact (every object, colour, count and relation), as curated fine-tuning sets are.
    Held-out compositions never occur in either training split (checked on the scene's true
    content, whatever its caption says).
    """

    version = "v3"

    def __init__(self, image_size=64, seed=0, holdout=None, grid=4, margin=1,
                 alt_drop=0.3, alt_no_color=0.25, alt_swap=0.3, alt_relation=0.15):
        super().__init__(image_size, seed, holdout)
        if image_size % grid:
            raise ValueError(f"image_size={image_size} must be a multiple of grid={grid}")
        self.grid, self.cell, self.margin = int(grid), image_size // grid, int(margin)
        if self.cell - 2 * self.margin < 8:
            raise ValueError(f"cells of {self.cell} px with margin {margin} leave objects under 8 px")
        self.alt = dict(drop=alt_drop, no_color=alt_no_color, swap=alt_swap, relation=alt_relation)

    def cell_box(self, cell):
        r, c = divmod(int(cell), self.grid)
        m, s = self.margin, self.cell
        return (c * s + m, r * s + m, (c + 1) * s - m, (r + 1) * s - m)

    def place_cells(self, n, rng, relations=(), max_tries=2000):
        """``n`` boxes in distinct random cells; ``relations`` as in :func:`place`; a two-object
        scene without constraints still has exactly one GenEval relation."""
        for _ in range(max_tries):
            cells = rng.choice(self.grid * self.grid, size=n, replace=False)
            boxes = [self.cell_box(c) for c in cells]
            if n == 2 and not relations and len(relative_position(boxes[0], boxes[1])) != 1:
                continue
            if all(relative_position(boxes[i], boxes[j]) == {rel} for rel, i, j in relations):
                return boxes
        raise RuntimeError(f"could not place {n} objects with relations {relations} in {max_tries} tries")

    def _boxes(self, n, rng, relations=()):
        return self.place_cells(n, rng, relations)

    def scene(self, split, index, seed=None):
        scene = super().scene(split, index, seed)
        if split == "pretrain":
            seed = self.seed if seed is None else int(seed)
            rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], int(index), 7]))
            scene.caption = self.alt_caption(scene.objects, scene.relation, rng)
        return scene

    def alt_caption(self, objects, relation, rng):
        """Web alt-text: a filler prefix, then a *partial*, sometimes *wrongly bound* description.

        Each object's colour is left out with probability ``alt_no_color``; in a scene of several
        objects each object after the first is left out with probability ``alt_drop``; two named
        colours are swapped between their objects with probability ``alt_swap``; a two-object
        relation is stated with probability ``alt_relation`` (else the objects are joined by
        "and"); a counting scene is "some red circles" with probability ``alt_drop``."""
        p = self.alt
        prefix = PREFIXES[rng.integers(len(PREFIXES))]
        if _identical(objects):
            c, s = objects[0].color, objects[0].shape
            count = "some" if rng.random() < p["drop"] else NUMBERS[len(objects)]
            color = "" if rng.random() < p["no_color"] else c
            return " ".join(w for w in (prefix, count, color, plural(s)) if w)
        colors = [o.color if rng.random() >= p["no_color"] else "" for o in objects]
        named = [i for i, c in enumerate(colors) if c]
        if len(named) >= 2 and rng.random() < p["swap"]:
            i, j = rng.choice(named, size=2, replace=False)
            if colors[i] != colors[j]:
                colors[i], colors[j] = colors[j], colors[i]
        phrases = [with_article(" ".join(w for w in (colors[k], o.shape) if w)) for k, o in enumerate(objects)]
        if relation is not None and rng.random() < p["relation"]:
            rel, i, j = relation
            body = f"{phrases[i]} {RELATION_PHRASES[rel][rng.integers(len(RELATION_PHRASES[rel]))]} {phrases[j]}"
        else:
            keep = [0] + [k for k in range(1, len(objects)) if rng.random() >= p["drop"]]
            body = " and ".join(phrases[k] for k in keep)
        return f"{prefix} {body}"

    def vocabulary(self):
        return sorted(set(super().vocabulary()) | set(ALT_WORDS))


WORLDS = {"v1": ShapesWorld, "v3": GridWorld}


def make_world(version="v1", image_size=64, seed=0, **kwargs):
    """The shapes world of ``version`` (``"v1"``: free placement, one caption style, the committed
    store's world; ``"v3"``: :class:`GridWorld`)."""
    if version not in WORLDS:
        raise ValueError(f"world must be one of {tuple(WORLDS)}, got {version!r}")
    known = set(inspect.signature(WORLDS[version]).parameters) - {"image_size", "seed"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(f"world {version!r} has no knob(s) {unknown}; its knobs: {sorted(known)}")
    return WORLDS[version](image_size=image_size, seed=seed, **kwargs)


def config_world(config):
    """The shapes world a run config (``segros.presets.TrainConfig``) names: its ``world``,
    ``image_size``, ``world_seed`` and ``world_kwargs``."""
    return make_world(config.world, image_size=config.image_size, seed=config.world_seed,
                      **config.world_kwargs)
