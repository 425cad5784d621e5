"""GenEval at paper scale: the official prompts, the official image layout, and a completeness check.

The paper scores generation with GenEval's 553 prompts (``prompts/evaluation_metadata.jsonl`` of
the GenEval repository), four images per prompt (Table 1 and every GenEval column after it).
The prompts are read from the user's GenEval checkout (:func:`read_official_metadata`); they are
not copied into this repository. :func:`generate_layout` writes the layout GenEval's evaluator
reads, for all prompts or any subset of them (so that several processes can each write their
share); :func:`check_layout` lists every missing or unreadable file of a layout, so that no
scorer ever summarises 544 prompt folders as if they were 553.

Layout (GenEval's ``generation/diffusers_generate.py``; see ``docs/evaluation.md``)::

    <out>/00000/metadata.jsonl      ONE JSON object: line 0 of evaluation_metadata.jsonl
    <out>/00000/samples/00000.png   image 0 of prompt 0 ... samples/00003.png
    <out>/00001/...

Seeds (``seed_mode``): ``"prompt"`` (default) is what GenEval's generation script and Harmon's and
Show-o's GenEval scripts do: the same seed before every prompt, and the prompt's four images
drawn in one batch, ``generate([prompt] * 4, seed)``. ``"image"`` batches prompts instead: image
``k`` of every prompt comes from ``generate(prompts, seed + k)`` (what :mod:`segros.inference`
does on shapes-world prompts).
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field

from PIL import Image
from tqdm.auto import tqdm

from segros.eval.geneval import SAMPLE_DIGITS, check_metadata, read_metadata_jsonl, sample_name, write_prompt_folder

OFFICIAL_N_PROMPTS = 553
IMAGES_PER_PROMPT = 4
METADATA_IN_CHECKOUT = os.path.join("prompts", "evaluation_metadata.jsonl")
SEED_MODES = ("prompt", "image")
_SAMPLE_RE = re.compile(r"\d+\.png")


# -----------------------------------------------------------------------------
# the official prompts

def official_metadata_path(geneval):
    """``<checkout>/prompts/evaluation_metadata.jsonl`` for a GenEval checkout, or ``geneval`` itself
    when it is a file. Raises FileNotFoundError naming the paths tried."""
    geneval = os.fspath(geneval)
    if os.path.isfile(geneval):
        return geneval
    path = os.path.join(geneval, METADATA_IN_CHECKOUT)
    if os.path.isfile(path):
        return path
    raise FileNotFoundError(f"no GenEval metadata at {geneval!r}: give a GenEval checkout (with {METADATA_IN_CHECKOUT}) "
                            f"or the evaluation_metadata.jsonl file itself; tried {path!r}")


def read_official_metadata(geneval, expected_n=OFFICIAL_N_PROMPTS):
    """The prompts of a GenEval checkout (or of an ``evaluation_metadata.jsonl`` file), in file order.

    Every line is checked (tag, include clauses, colours, relations; an error names the line).
    ``expected_n`` (553, the official file) guards against a truncated or different file; pass
    ``None`` for a prompt set of another size (GenEval's ``create_prompts.py`` can sample one).
    """
    path = official_metadata_path(geneval)
    rows = read_metadata_jsonl(path)
    for i, row in enumerate(rows):
        check_metadata(row, name=f"{path} line {i + 1}")
    if expected_n is not None and len(rows) != expected_n:
        raise ValueError(f"{path}: {len(rows)} prompts, expected {expected_n} (the official file); "
                         f"pass expected_n=None to use a prompt set of another size")
    return rows


def load_metadata(metadata):
    """A metadata list as given, or read from a checkout / file path (any number of prompts)."""
    if isinstance(metadata, (str, os.PathLike)):
        return read_official_metadata(metadata, expected_n=None)
    if not isinstance(metadata, (list, tuple)):
        raise ValueError(f"metadata must be a list of GenEval prompt dicts or a path, got {type(metadata).__name__}")
    for i, row in enumerate(metadata):
        check_metadata(row, name=f"metadata[{i}]")
    return list(metadata)


def _check_indices(indices, n):
    if indices is None:
        return list(range(n))
    out = [int(i) for i in indices]
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise ValueError(f"indices {bad[:10]} are outside the {n} prompts (valid: 0 .. {n - 1})")
    if len(set(out)) != len(out):
        raise ValueError("indices repeat a prompt")
    return sorted(out)


# -----------------------------------------------------------------------------
# generation into the layout

def generate_layout(out_dir, metadata, generate, *, indices=None, images_per_prompt=IMAGES_PER_PROMPT, seed=0,
                    seed_mode="prompt", batch_size=None, sample_digits=SAMPLE_DIGITS, overwrite=False, progress=True):
    """Generate GenEval's layout under ``out_dir`` with ``generate(prompts, seed) -> list of images``.

    ``metadata``: the prompt list (or a checkout / file path, see :func:`load_metadata`); prompt
    ``i`` goes to folder ``%05d`` of ``i`` whatever subset is asked for. ``indices``: the prompt
    indices to write (default all), so a caller can split the prompts across processes and each
    writes its own folders. ``seed_mode`` and ``seed``: see the module docstring; ``batch_size``
    caps the images per call (``"prompt"``: the prompt's images are drawn in calls of at most
    ``batch_size``, call ``j`` with ``seed + j``; default all ``images_per_prompt`` in one call)
    or the prompts per call (``"image"``, default 16). Images are PIL images or uint8 [H, W, 3].

    A folder that is already complete (same metadata, ``images_per_prompt`` readable images under
    the expected names) is kept unless ``overwrite``; a folder that is (re)written loses its
    stale ``<digits>.png`` files first. Returns ``{"written": [...], "skipped": [...]}``.
    """
    metadata = load_metadata(metadata)
    indices = _check_indices(indices, len(metadata))
    if seed_mode not in SEED_MODES:
        raise ValueError(f"seed_mode must be one of {SEED_MODES}, got {seed_mode!r}")
    if int(images_per_prompt) < 1:
        raise ValueError(f"images_per_prompt must be >= 1, got {images_per_prompt}")
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = int(images_per_prompt)
    todo = [i for i in indices
            if overwrite or not _folder_complete(out_dir, i, metadata[i], n, sample_digits)]
    skipped = sorted(set(indices) - set(todo))
    os.makedirs(out_dir, exist_ok=True)

    def call(prompts, call_seed):
        images = list(generate(list(prompts), int(call_seed)))
        if len(images) != len(prompts):
            raise ValueError(f"generate() returned {len(images)} images for {len(prompts)} prompts (seed {call_seed})")
        return images

    def write(i, images):
        _clear_samples(out_dir, i)
        write_prompt_folder(out_dir, i, metadata[i], images, sample_digits=sample_digits)

    bar = tqdm(total=len(todo), desc="geneval generate", disable=not progress, file=sys.stderr)
    if seed_mode == "prompt":
        per_call = int(batch_size or n)
        for i in todo:
            prompt = metadata[i]["prompt"]
            images = []
            for j, start in enumerate(range(0, n, per_call)):
                images += call([prompt] * min(per_call, n - start), seed + j)
            write(i, images)
            bar.update(1)
    else:
        per_call = int(batch_size or 16)
        for start in range(0, len(todo), per_call):
            chunk = todo[start:start + per_call]
            images = [[None] * n for _ in chunk]
            for k in range(n):
                for j, im in enumerate(call([metadata[i]["prompt"] for i in chunk], seed + k)):
                    images[j][k] = im
            for i, ims in zip(chunk, images):
                write(i, ims)
                bar.update(1)
    bar.close()
    return {"written": todo, "skipped": skipped}


def _clear_samples(out_dir, index):
    sample_dir = os.path.join(out_dir, f"{index:05d}", "samples")
    if os.path.isdir(sample_dir):
        for name in os.listdir(sample_dir):
            if _SAMPLE_RE.fullmatch(name):
                os.remove(os.path.join(sample_dir, name))


def _readable(path):
    """None if ``path`` decodes as an image, else the reason."""
    try:
        with Image.open(path) as im:
            im.load()
        return None
    except Exception as e:  # PIL raises several types for truncated / corrupt files
        return f"unreadable image ({type(e).__name__}: {e})"


def _read_folder_metadata(folder):
    """(metadata, None) or (None, reason)."""
    path = os.path.join(folder, "metadata.jsonl")
    if not os.path.isfile(path):
        return None, "metadata.jsonl is missing"
    try:
        with open(path) as f:
            return json.load(f), None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return None, f"metadata.jsonl is not one JSON object ({e})"


def _folder_complete(out_dir, index, meta, n, digits):
    folder = os.path.join(out_dir, f"{index:05d}")
    found, reason = _read_folder_metadata(folder)
    if reason or found != meta:
        return False
    names = [sample_name(k, digits) for k in range(n)]
    sample_dir = os.path.join(folder, "samples")
    if not os.path.isdir(sample_dir):
        return False
    present = sorted(x for x in os.listdir(sample_dir) if _SAMPLE_RE.fullmatch(x))
    return present == names and all(_readable(os.path.join(sample_dir, x)) is None for x in names)


# -----------------------------------------------------------------------------
# completeness

@dataclass
class LayoutEntry:
    """One image to score: prompt index, file path, the prompt's metadata."""

    index: int
    path: str
    metadata: dict


@dataclass
class LayoutReport:
    """What :func:`check_layout` found: the readable images and every problem, by path."""

    layout_dir: str
    n_prompts: int
    images_per_prompt: int | None
    entries: list = field(default_factory=list)
    problems: list = field(default_factory=list)  # (path, what) pairs

    @property
    def complete(self):
        return not self.problems

    @property
    def n_images_expected(self):
        return None if self.images_per_prompt is None else self.n_prompts * self.images_per_prompt

    @property
    def prompts_scored(self):
        return sorted({e.index for e in self.entries})

    def describe(self, max_lines=20):
        """A readable list of the problems (the first ``max_lines``, then a count)."""
        head = (f"{self.layout_dir}: {len(self.entries)} readable images in {len(self.prompts_scored)} of "
                f"{self.n_prompts} prompt folders")
        if self.n_images_expected is not None:
            head += f" (expected {self.n_images_expected} images)"
        if self.complete:
            return head + "; complete"
        lines = [f"  {path}: {what}" for path, what in self.problems[:max_lines]]
        if len(self.problems) > max_lines:
            lines.append(f"  ... and {len(self.problems) - max_lines} more problems")
        return head + f"; {len(self.problems)} problems:\n" + "\n".join(lines)


class IncompleteLayoutError(ValueError):
    """A layout with missing or unreadable files was about to be summarised as if complete."""

    def __init__(self, report):
        self.report = report
        super().__init__(report.describe() + "\nRefusing to summarise an incomplete GenEval layout; fix it (for example "
                         "generate_layout(...) again, which fills in what is missing) or pass allow_partial=True to "
                         "score the readable images, labelled partial.")


def check_layout(layout_dir, metadata, images_per_prompt=IMAGES_PER_PROMPT, *, indices=None, progress=False):
    """Check a GenEval layout against its prompts; returns a :class:`LayoutReport`.

    For each expected prompt ``i`` (all of ``metadata``, or ``indices``): the folder ``%05d`` must
    exist, its ``metadata.jsonl`` must be one JSON object equal to ``metadata[i]``, and
    ``samples/`` must hold exactly ``images_per_prompt`` ``<digits>.png`` files (``None``: any
    number >= 1), each of which decodes completely (a truncated PNG is caught). Digit folders
    that match no expected prompt are problems too. ``entries`` lists the readable images of
    folders whose metadata is right, in prompt then file-name order; files GenEval ignores
    (``grid.png``, other extensions, hidden temporary files) are ignored.
    """
    layout_dir = os.fspath(layout_dir)
    metadata = load_metadata(metadata)
    subset = indices is not None
    indices = _check_indices(indices, len(metadata))
    report = LayoutReport(layout_dir, len(indices), images_per_prompt)
    if not os.path.isdir(layout_dir):
        report.problems.append((layout_dir, "not a directory"))
        return report
    present = {d for d in os.listdir(layout_dir) if d.isdigit() and os.path.isdir(os.path.join(layout_dir, d))}
    expected = {f"{i:05d}" for i in indices}
    for d in sorted(present - expected):
        if not subset or int(d) >= len(metadata):  # a subset's check leaves the other prompts' folders alone
            report.problems.append((os.path.join(layout_dir, d), "prompt folder not in the metadata"))
    for i in tqdm(indices, desc="geneval check", disable=not progress, file=sys.stderr):
        folder = os.path.join(layout_dir, f"{i:05d}")
        if f"{i:05d}" not in present:
            report.problems.append((folder, "prompt folder missing"))
            continue
        found, reason = _read_folder_metadata(folder)
        if reason:
            report.problems.append((os.path.join(folder, "metadata.jsonl"), reason))
            continue
        if found != metadata[i]:
            report.problems.append((os.path.join(folder, "metadata.jsonl"),
                                    f"differs from prompt {i} of the metadata: {found.get('prompt')!r} vs {metadata[i]['prompt']!r}"))
            continue
        sample_dir = os.path.join(folder, "samples")
        names = sorted(x for x in os.listdir(sample_dir) if _SAMPLE_RE.fullmatch(x)) if os.path.isdir(sample_dir) else []
        if not names:
            report.problems.append((sample_dir, "no <digits>.png images"))
            continue
        if images_per_prompt is not None and len(names) != images_per_prompt:
            report.problems.append((sample_dir, f"{len(names)} images, expected {images_per_prompt}"))
        for name in names:
            path = os.path.join(sample_dir, name)
            reason = _readable(path)
            if reason:
                report.problems.append((path, reason))
            else:
                report.entries.append(LayoutEntry(i, path, metadata[i]))
    return report
