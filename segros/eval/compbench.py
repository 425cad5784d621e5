"""T2I-CompBench with a VLM judge (paper §9.3, Table 10; Table 1's CompBench column).

The benchmark (Huang et al., NeurIPS 2023; Karine-Huang/T2I-CompBench) has eight categories of
compositional prompts. The paper generates one image per validation prompt ("images generated
with a single seed") and, following Reca's protocol, scores them with Qwen2.5-VL-32B as the judge;
it does not publish the judge's prompt. This module supplies everything around that judge: the
official prompt files and image layout, generation into that layout from any
``generate(prompts, seed) -> list[image]`` callable (any subset of prompts, so several processes
can share a category), a judge prompt and a parsing rule written here, the judge itself through
transformers, and the aggregation. See ``docs/evaluation.md`` ("T2I-CompBench").

Facts from the official repository (not copied, read):

* Categories and prompt files: ``examples/dataset/<category>_val.txt`` for ``color``, ``shape``,
  ``texture``, ``spatial`` (2D), ``3d_spatial``, ``non_spatial``, ``numeracy``, ``complex``; 300
  prompts each. The official generation script reads a file with ``f.read().splitlines()`` and keeps
  ``line.strip("\\n").split("\\t")[0]`` of each line (:func:`read_prompts` does the same).
* Image layout: one folder per category holding ``samples/``; an image is
  ``samples/<prompt>_<question_id:06d>.png`` where ``question_id`` counts the images of the
  category in order (``GORS_finetune/inference_eval.py``: 10 images per prompt, the generator
  re-seeded with 42 for the first image of every prompt and ``42 + n`` for the next ones). So
  ``question_id = prompt_index * n_images + k`` and image ``k`` of every prompt uses seed
  ``42 + k``; the paper's single seed is ``seeds=(42,)``.
* Per-image scores go to ``<category>/annotation_*/vqa_result.json`` as
  ``[{"question_id": id, "answer": "0.6900"}, ...]`` (a score in [0, 1] with four decimals), and a
  category's score is the mean over its images (``BLIPvqa_eval/BLIP_vqa.py``). The benchmark defines
  no overall score; here ``overall`` is the unweighted mean of the categories (Table 10's "Overall"
  row is that mean for four of its six columns, see ``segros.paper.TABLE10_OVERALL_DISAGREES``).

Written here (the paper leaves it open): the judge prompt (:data:`JUDGE_TEMPLATE` with one
:data:`CATEGORY_FOCUS` sentence per category), a 0–100 score read by :func:`parse_score`, and what
an unparsable answer counts (``unparsable="zero"``: 0, as the official GPT-4V script averages a
failed answer as 0; ``"skip"``: left out of the mean). Unparsable answers are always counted and
listed in the results file, never dropped silently. Scores are percentages (0–100), as Table 10
prints them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image

# official file stems, in Table 10's row order
CATEGORIES = ("color", "shape", "texture", "spatial", "non_spatial", "numeracy", "3d_spatial", "complex")
# the row names of segros.paper's Table 10
TABLE10_ROWS = {"color": "Color", "shape": "Shape", "texture": "Texture", "spatial": "Spatial",
                "non_spatial": "Non-spatial", "numeracy": "Numeracy", "3d_spatial": "3D Spatial",
                "complex": "Complex"}
PROMPTS_PER_CATEGORY = 300
DEFAULT_SEEDS = (42,)  # the official script's first seed; the paper uses one image per prompt
UNPARSABLE_CHOICES = ("zero", "skip")
RESULTS_FILE = "compbench_results.json"
JUDGE_ROWS_FILE = "judge.jsonl"
ANNOTATION_DIR = "annotation_judge"

# ---------------------------------------------------------------------------------------------
# the judge prompt and the parsing rule (ours: the paper does not publish its prompt)

JUDGE_TEMPLATE = (
    "You are judging an image made by a text-to-image model for the prompt: \"{prompt}\"\n"
    "{focus}\n"
    "Rate how well the image matches the prompt on a scale from 0 to 100: 100 means everything the "
    "prompt asks for is shown correctly, 50 means about half of it is right, 0 means the image does "
    "not show what the prompt asks for.\n"
    "Reply with one line only, in the form: Score: <integer from 0 to 100>"
)
CATEGORY_FOCUS = {
    "color": "Check that every object in the prompt is present and has the colour the prompt gives it.",
    "shape": "Check that every object in the prompt is present and has the shape the prompt gives it.",
    "texture": "Check that every object in the prompt is present and has the material or texture the prompt "
               "gives it.",
    "spatial": "Check that the objects in the prompt are present and placed in the 2D relation the prompt "
               "states (left of, right of, on the top of, on the bottom of, next to, near, on side of).",
    "non_spatial": "Check that the people, animals and objects in the prompt are present and do what the prompt "
                   "says (its actions and interactions).",
    "numeracy": "Check that every object in the prompt is present exactly as many times as the prompt states.",
    "3d_spatial": "Check that the objects in the prompt are present and placed in the 3D relation the prompt "
                  "states (in front of, behind, hidden by).",
    "complex": "Check every object in the prompt, its attributes (colour, shape, texture), the spatial "
               "relations and the actions the prompt describes.",
}
# "Score: 85", "**Score:** 85", "score = 85/100", "Scores: 85." -> 85 (the first such match counts)
SCORE_PATTERN = re.compile(r"\bscores?[\s*_:=]*?(\d{1,3}(?:\.\d+)?)(?![\d.]*\d)", re.IGNORECASE)
# an answer that is only a number ("85", "85.")
BARE_NUMBER_PATTERN = re.compile(r"\s*(\d{1,3}(?:\.\d+)?)\s*[.!]?\s*")
PARSING_RULE = (
    "The first match of SCORE_PATTERN ('score' or 'scores', case-insensitive, then only spaces, '*', '_', "
    "':' or '=' before a number) gives the score; if there is none, an answer that is only a number "
    "(BARE_NUMBER_PATTERN) gives it. A score outside [0, 100], or an answer with neither form, is "
    "unparsable: counted, listed by question_id, and scored 0 (unparsable='zero') or left out of the "
    "mean (unparsable='skip'). A category's score is the mean of its images' scores (0-100).")


def judge_question(category: str, prompt: str) -> str:
    """The judge's question for one image of ``category`` generated from ``prompt``."""
    _check_category(category)
    return JUDGE_TEMPLATE.format(prompt=prompt, focus=CATEGORY_FOCUS[category])


def parse_score(answer: str) -> float | None:
    """The judge's 0–100 score in ``answer``, or None when unparsable (see :data:`PARSING_RULE`)."""
    if not isinstance(answer, str):
        raise ValueError(f"answer must be a str, got {type(answer).__name__}")
    m = SCORE_PATTERN.search(answer)
    if m is None:
        m = BARE_NUMBER_PATTERN.fullmatch(answer)
    if m is None:
        return None
    value = float(m.group(1))
    return value if 0.0 <= value <= 100.0 else None


def _check_category(category: str) -> None:
    if category not in CATEGORIES:
        raise ValueError(f"unknown T2I-CompBench category {category!r}; valid: {', '.join(CATEGORIES)}")


# ---------------------------------------------------------------------------------------------
# prompts (read from the user's checkout; nothing is copied into this repository)

def prompt_file(compbench_dir: str, category: str) -> str:
    """``<checkout>/examples/dataset/<category>_val.txt`` (or ``<dir>/<category>_val.txt`` when
    ``compbench_dir`` is the dataset folder itself)."""
    _check_category(category)
    tried = [os.path.join(compbench_dir, "examples", "dataset", f"{category}_val.txt"),
             os.path.join(compbench_dir, f"{category}_val.txt")]
    for path in tried:
        if os.path.isfile(path):
            return path
    raise ValueError(f"no T2I-CompBench prompt file for {category!r}: tried {', '.join(tried)} "
                     "(compbench_dir must be a Karine-Huang/T2I-CompBench checkout or its examples/dataset folder)")


def read_prompts(compbench_dir: str, category: str, expected: int | None = PROMPTS_PER_CATEGORY) -> list[str]:
    """The validation prompts of ``category``, read as the official generation script reads them
    (``splitlines()``, then the text before the first tab of each line). ``expected``: the count the
    file must hold (300; None to accept any)."""
    path = prompt_file(compbench_dir, category)
    with open(path, encoding="utf-8") as f:
        prompts = [line.strip("\n").split("\t")[0] for line in f.read().splitlines()]
    if expected is not None and len(prompts) != expected:
        raise ValueError(f"{path}: {len(prompts)} prompts, expected {expected}")
    for i, p in enumerate(prompts):
        _check_prompt(p, f"{path} line {i + 1}")
    return prompts


def _check_prompt(prompt: str, where: str) -> None:
    if not prompt.strip():
        raise ValueError(f"{where}: empty prompt")
    if "/" in prompt or "\0" in prompt:
        raise ValueError(f"{where}: prompt {prompt!r} cannot be a file name (it holds '/' or NUL)")
    if len((prompt + "_000000.png").encode("utf-8")) > 255:
        raise ValueError(f"{where}: prompt {prompt[:40]!r}... is too long for a file name")


# ---------------------------------------------------------------------------------------------
# the image layout: <out>/<category>/samples/<prompt>_<question_id:06d>.png

def image_name(prompt: str, question_id: int) -> str:
    """The official file name of an image."""
    return f"{prompt}_{question_id:06d}.png"


def question_id_of(file_name: str) -> int:
    """The question id of an official file name: the digits after its last ``_`` (the official
    scripts read ``int(name.split("_")[-1].split(".")[0])``)."""
    m = re.fullmatch(r"(.+)_(\d+)\.png", file_name)
    if m is None:
        raise ValueError(f"{file_name!r} is not <prompt>_<digits>.png")
    return int(m.group(2))


def samples_dir(out_dir: str, category: str) -> str:
    _check_category(category)
    return os.path.join(out_dir, category, "samples")


@dataclass(frozen=True)
class Item:
    """One expected image of a category."""

    question_id: int
    prompt_index: int
    k: int           # image number of this prompt (seed index)
    prompt: str
    path: str


def expected_items(out_dir: str, category: str, prompts: Sequence[str], n_images: int = 1,
                   indices: Iterable[int] | None = None) -> list[Item]:
    """The images of ``prompts`` (only the prompt ``indices``, default all), ``n_images`` each,
    ordered by question id."""
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    folder = samples_dir(out_dir, category)
    idx = _indices(indices, len(prompts))
    items = []
    for p in idx:
        for k in range(n_images):
            qid = p * n_images + k
            items.append(Item(qid, p, k, prompts[p], os.path.join(folder, image_name(prompts[p], qid))))
    return items


def _indices(indices, n):
    if indices is None:
        return list(range(n))
    idx = sorted(set(int(i) for i in indices))
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise ValueError(f"prompt indices {bad[:5]} are outside 0..{n - 1}")
    return idx


def _to_pil(image: Any, where: str) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{where}: generate() must return PIL images or uint8 [H, W, 3] arrays, "
                         f"got {arr.dtype} {arr.shape}")
    return Image.fromarray(arr)


def _save_atomic(image: Image.Image, path: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}.png"
    image.save(tmp)
    os.replace(tmp, path)


def generate_category(generate: Callable[[list[str], int], list], prompts: Sequence[str], out_dir: str,
                      category: str, seeds: Sequence[int] = DEFAULT_SEEDS, indices: Iterable[int] | None = None,
                      batch_size: int = 8, overwrite: bool = False, progress: bool = True) -> list[str]:
    """Generate the images of ``category`` into the official layout; return the paths written.

    ``generate(prompts, seed) -> list[image]`` (PIL images or uint8 [H, W, 3] arrays, one per prompt)
    is called on chunks of at most ``batch_size`` prompts, once per seed; image ``k`` of a prompt uses
    ``seeds[k]`` (so ``len(seeds)`` images per prompt). ``indices``: the prompt indices this call
    makes (any subset, e.g. ``range(rank, 300, world_size)``; question ids stay those of the full
    list, so subsets written by several processes make one complete layout). Existing images are
    kept unless ``overwrite``. An image depends on its prompt, its seed and, through the sampler, on
    the other prompts of its chunk; ``batch_size=1`` makes it independent of the split.
    """
    from tqdm.auto import tqdm

    for i, p in enumerate(prompts):
        _check_prompt(p, f"prompts[{i}]")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    seeds = [int(s) for s in seeds]
    items = expected_items(out_dir, category, prompts, len(seeds), indices)
    todo = [it for it in items if overwrite or not os.path.isfile(it.path)]
    os.makedirs(samples_dir(out_dir, category), exist_ok=True)
    chunks = []
    for k, seed in enumerate(seeds):
        of_seed = [it for it in todo if it.k == k]
        chunks += [(seed, of_seed[i:i + batch_size]) for i in range(0, len(of_seed), batch_size)]
    written = []
    for seed, chunk in tqdm(chunks, desc=f"generate {category}", disable=not progress, file=sys.stderr):
        images = generate([it.prompt for it in chunk], seed)
        if len(images) != len(chunk):
            raise ValueError(f"generate() returned {len(images)} images for {len(chunk)} prompts")
        for it, im in zip(chunk, images):
            _save_atomic(_to_pil(im, f"{category} question {it.question_id}"), it.path)
            written.append(it.path)
    return written


def generate_compbench(generate: Callable[[list[str], int], list], compbench_dir: str, out_dir: str,
                       categories: Sequence[str] = CATEGORIES, seeds: Sequence[int] = DEFAULT_SEEDS,
                       indices: Iterable[int] | None = None, batch_size: int = 8, overwrite: bool = False,
                       expected_prompts: int | None = PROMPTS_PER_CATEGORY, progress: bool = True) -> dict:
    """:func:`generate_category` for each of ``categories`` with prompts from the user's checkout
    ``compbench_dir``; every prompt file is read (and checked) before any image is made.
    Returns ``{category: number of images written}``."""
    prompts = {c: read_prompts(compbench_dir, c, expected_prompts) for c in categories}
    indices = None if indices is None else list(indices)
    return {c: len(generate_category(generate, prompts[c], out_dir, c, seeds, indices, batch_size, overwrite,
                                     progress)) for c in categories}


def read_category_layout(out_dir: str, category: str, prompts: Sequence[str], n_images: int = 1,
                         indices: Iterable[int] | None = None) -> list[Item]:
    """The expected images of a category, checked: every one present and decodable, and no other
    ``.png`` in ``samples/`` (an image of another prompt list or another ``n_images``). Raises
    ValueError naming what is wrong; a partial layout is never scored as if complete."""
    folder = samples_dir(out_dir, category)
    if not os.path.isdir(folder):
        raise ValueError(f"{folder} is missing: no images for category {category!r}")
    items = expected_items(out_dir, category, prompts, n_images, indices)
    missing = [it for it in items if not os.path.isfile(it.path)]
    if missing:
        names = ", ".join(os.path.basename(it.path) for it in missing[:5])
        raise ValueError(f"{folder}: {len(missing)} of {len(items)} images missing ({names}"
                         f"{' ...' if len(missing) > 5 else ''})")
    if indices is None:
        known = {os.path.basename(it.path) for it in items}
        extra = sorted(n for n in os.listdir(folder) if n.endswith(".png") and n not in known)
        if extra:
            raise ValueError(f"{folder}: {len(extra)} images that are not in the expected layout "
                             f"(other prompts or n_images?): {extra[:5]}")
    for it in items:
        try:
            with Image.open(it.path) as im:
                im.verify()
        except Exception as e:  # PIL raises several types for broken files
            raise ValueError(f"{it.path}: unreadable image ({e})") from e
    return items


# ---------------------------------------------------------------------------------------------
# the judge

class QwenVLJudge:
    """A Qwen2.5-VL-class judge through transformers: greedy answers to (image, question) pairs.

    Build it from a local folder or hub id with :meth:`from_pretrained` (the paper's judge is
    Qwen2.5-VL-32B-Instruct), or from a model and processor already built (tests build tiny random
    ones). Each question is one user turn ``[image, text]`` in the processor's chat template with
    the generation prompt; decoding is greedy (``do_sample=False``) for at most ``max_new_tokens``
    tokens; the answer is the decoded new tokens (special tokens skipped), stripped.
    """

    def __init__(self, model, processor, *, model_path: str = "(objects given)", max_new_tokens: int = 32,
                 batch_size: int = 4, processor_kind: str = "given"):
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}")
        self.model = model.eval()
        self.processor = processor
        self.model_path = str(model_path)
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = int(batch_size)
        self.processor_kind = processor_kind
        tok = processor.tokenizer
        tok.padding_side = "left"  # batched generation continues every row from its last token
        self.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    @classmethod
    def from_pretrained(cls, model_path: str, *, device: str | None = None, dtype: str = "auto",
                        attn_implementation: str | None = None, min_pixels: int | None = None,
                        max_pixels: int | None = None, device_map: str | dict | None = None,
                        **kwargs) -> "QwenVLJudge":
        """Load ``Qwen2_5_VLForConditionalGeneration`` and its processor from ``model_path``.

        ``dtype``: "auto" (the checkpoint's, bf16 for Qwen2.5-VL) or a torch dtype name; ``device``:
        default CUDA when available; ``device_map`` (e.g. "auto": the 32B judge over several GPUs,
        through accelerate) replaces ``device``. The processor is ``AutoProcessor``'s; where it cannot be built
        (it needs torchvision for its video processor), an image-only processor with the same
        tokenizer, chat template and the PIL image processor is used, and the results say so.
        """
        import torch
        from transformers import Qwen2_5_VLForConditionalGeneration

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
        extra = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
        if device_map is not None:
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_path, dtype=torch_dtype,
                                                                       device_map=device_map, **extra)
        else:
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_path, dtype=torch_dtype, **extra).to(device)
        processor, kind = load_judge_processor(model_path, min_pixels=min_pixels, max_pixels=max_pixels)
        return cls(model, processor, model_path=model_path, processor_kind=kind, **kwargs)

    def describe(self) -> dict:
        """What the results file records about the judge."""
        cfg = getattr(self.model, "config", None)
        ip = getattr(self.processor, "image_processor", None)
        return {"model_path": self.model_path, "model_class": type(self.model).__name__,
                "model_type": getattr(cfg, "model_type", None),
                "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
                "processor": type(self.processor).__name__, "processor_kind": self.processor_kind,
                "image_processor": type(ip).__name__ if ip is not None else None,
                "image_pixels": _pixel_bounds(ip),
                "decoding": "greedy", "max_new_tokens": self.max_new_tokens}

    def prepare(self, images: Sequence[Image.Image], questions: Sequence[str]):
        """The model inputs of one batch (chat template, image placeholders expanded, left-padded)."""
        texts = [self.processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
            tokenize=False, add_generation_prompt=True) for q in questions]
        inputs = self.processor(text=texts, images=[im.convert("RGB") for im in images], padding=True,
                                return_tensors="pt")
        return inputs.to(self.model.device)

    def __call__(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        import torch

        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        answers = []
        for i in range(0, len(questions), self.batch_size):
            inputs = self.prepare(images[i:i + self.batch_size], questions[i:i + self.batch_size])
            with torch.no_grad():
                out = self.model.generate(**inputs, do_sample=False, max_new_tokens=self.max_new_tokens,
                                          pad_token_id=self.pad_token_id)
            new = out[:, inputs["input_ids"].shape[1]:]
            answers += [a.strip() for a in self.processor.batch_decode(new, skip_special_tokens=True)]
        return answers


def _pixel_bounds(image_processor) -> dict | None:
    """The image processor's pixel-count bounds (transformers 5 keeps them as ``size``'s
    ``shortest_edge`` / ``longest_edge``: min and max pixels, not edge lengths)."""
    size = getattr(image_processor, "size", None)
    if size is None:
        return None
    get = size.get if isinstance(size, dict) else (lambda k: getattr(size, k, None))
    return {"min_pixels": get("shortest_edge"), "max_pixels": get("longest_edge")}


def image_only_processor(image_processor, tokenizer, chat_template: str | None = None):
    """A ``Qwen2_5_VLProcessor`` without its video processor: same text and image handling
    (placeholder expansion, ``mm_token_type_ids`` for the 3D RoPE). transformers 5 checks the video
    processor's class when a processor is built, and that class needs torchvision; images alone do
    not. Use with the PIL image processor (``Qwen2VLImageProcessorPil``) where torchvision is absent."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class Qwen2_5_VLImageOnlyProcessor(Qwen2_5_VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return Qwen2_5_VLImageOnlyProcessor(image_processor, tokenizer,
                                        chat_template=chat_template or getattr(tokenizer, "chat_template", None))


def load_judge_processor(model_path: str, min_pixels: int | None = None, max_pixels: int | None = None):
    """(processor, kind) for the judge at ``model_path``: ``AutoProcessor`` ("auto"), else the
    image-only processor over ``AutoTokenizer``, the PIL image processor and the folder's chat
    template ("image-only"). ``min_pixels``/``max_pixels`` override the image processor's."""
    from transformers import AutoProcessor, AutoTokenizer

    pix = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
    try:
        return AutoProcessor.from_pretrained(model_path, **pix), "auto"
    except Exception as auto_error:  # noqa: BLE001 - the fallback says why below
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        try:
            tokenizer = AutoTokenizer.from_pretrained(model_path)
            image_processor = Qwen2VLImageProcessorPil.from_pretrained(model_path, **pix)
        except Exception as e:
            raise ValueError(f"cannot build the judge's processor from {model_path!r}: {auto_error}; "
                             f"image-only fallback: {e}") from e
        template = _folder_chat_template(model_path) or getattr(tokenizer, "chat_template", None)
        if not template:
            raise ValueError(f"{model_path!r} has no chat template (chat_template.json / .jinja or in the tokenizer)")
        return image_only_processor(image_processor, tokenizer, template), "image-only"


def _folder_chat_template(model_path: str) -> str | None:
    if not os.path.isdir(model_path):
        return None
    jinja = os.path.join(model_path, "chat_template.jinja")
    if os.path.isfile(jinja):
        with open(jinja, encoding="utf-8") as f:
            return f.read()
    js = os.path.join(model_path, "chat_template.json")
    if os.path.isfile(js):
        with open(js, encoding="utf-8") as f:
            return json.load(f).get("chat_template")
    return None


# ---------------------------------------------------------------------------------------------
# scoring

def judge_settings(judge) -> dict:
    """The judge's description (``judge.describe()`` when it has one) plus the prompt and the rule."""
    desc = judge.describe() if hasattr(judge, "describe") else {"judge": getattr(judge, "__name__", repr(judge))}
    return {**desc, "prompt_template": JUDGE_TEMPLATE, "category_focus": dict(CATEGORY_FOCUS),
            "parsing_rule": PARSING_RULE, "score_pattern": SCORE_PATTERN.pattern,
            "bare_number_pattern": BARE_NUMBER_PATTERN.pattern, "score_range": [0, 100]}


def _judge_id(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _read_rows(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by an interrupted run: judged again
                    continue
    return rows


def judge_category(judge: Callable[[list, list], list[str]], out_dir: str, category: str, prompts: Sequence[str],
                   n_images: int = 1, unparsable: str = "zero", indices: Iterable[int] | None = None,
                   batch_size: int = 8, progress: bool = True) -> dict:
    """Judge every image of a category (the layout is checked first) and aggregate.

    ``judge(images: list[PIL.Image], questions: list[str]) -> list[str]`` answers; a
    :class:`QwenVLJudge` or any callable (tests script the answers). One row per image goes to
    ``<out>/<category>/judge.jsonl`` (question id, prompt, file, question, raw answer, score or null);
    rows of an earlier run with the same judge settings are reused, so an interrupted run resumes.
    The official per-image file ``annotation_judge/vqa_result.json`` gets ``score / 100`` with four
    decimals (an unparsable answer: 0 when ``unparsable="zero"``, left out when ``"skip"``).
    Returns ``{"score", "n_images", "n_scored", "n_unparsable", "unparsable_question_ids"}``.
    """
    from tqdm.auto import tqdm

    if unparsable not in UNPARSABLE_CHOICES:
        raise ValueError(f"unparsable must be one of {UNPARSABLE_CHOICES}, got {unparsable!r}")
    items = read_category_layout(out_dir, category, prompts, n_images, indices)
    settings = judge_settings(judge)
    jid = _judge_id(settings)
    rows_path = os.path.join(out_dir, category, JUDGE_ROWS_FILE)
    by_qid = {it.question_id: it for it in items}
    done = {}
    for r in _read_rows(rows_path):  # an earlier run's rows count when judge, question and file agree
        it = by_qid.get(r.get("question_id"))
        if it is not None and r.get("judge_id") == jid and r.get("file") == os.path.basename(it.path):
            done[it.question_id] = r
    todo = [it for it in items if it.question_id not in done]
    with open(rows_path, "a", encoding="utf-8") as f:
        for i in tqdm(range(0, len(todo), batch_size), desc=f"judge {category}", disable=not progress,
                      file=sys.stderr):
            chunk = todo[i:i + batch_size]
            questions = [judge_question(category, it.prompt) for it in chunk]
            images = []
            for it in chunk:
                with Image.open(it.path) as im:
                    images.append(im.convert("RGB"))
            answers = judge(images, questions)
            if len(answers) != len(chunk):
                raise ValueError(f"the judge returned {len(answers)} answers for {len(chunk)} questions")
            for it, q, a in zip(chunk, questions, answers):
                row = {"question_id": it.question_id, "prompt": it.prompt, "file": os.path.basename(it.path),
                       "question": q, "answer": a, "score": parse_score(a), "judge_id": jid}
                f.write(json.dumps(row) + "\n")
                f.flush()
                done[it.question_id] = row
    rows = [done[it.question_id] for it in items]
    bad = [r["question_id"] for r in rows if r["score"] is None]
    kept = [(r["question_id"], 0.0 if r["score"] is None else r["score"]) for r in rows
            if r["score"] is not None or unparsable == "zero"]
    scores = [s for _, s in kept]
    official = [{"question_id": q, "answer": f"{s / 100:.4f}"} for q, s in kept]
    os.makedirs(os.path.join(out_dir, category, ANNOTATION_DIR), exist_ok=True)
    with open(os.path.join(out_dir, category, ANNOTATION_DIR, "vqa_result.json"), "w") as f:
        json.dump(official, f)
    return {"score": float(np.mean(scores)) if scores else float("nan"), "n_images": len(rows),
            "n_scored": len(scores), "n_unparsable": len(bad), "unparsable_question_ids": bad}


def score_compbench(judge, compbench_dir: str, out_dir: str, categories: Sequence[str] = CATEGORIES,
                    n_images: int = 1, unparsable: str = "zero", results_file: str | None = None,
                    expected_prompts: int | None = PROMPTS_PER_CATEGORY, batch_size: int = 8,
                    progress: bool = True) -> dict:
    """Judge the layout of every category in ``categories`` and write the results file.

    Every prompt file and every category's layout is checked before the judge sees any image.
    The results (``results_file``, default ``<out>/compbench_results.json``) hold the judge's
    settings (model path, prompt template and the focus of each category, parsing rule, decoding),
    per category its score (0–100), image count and unparsable answers, ``overall`` (the unweighted
    mean over the categories scored) and ``table10``, the same numbers under Table 10's row names.
    """
    if unparsable not in UNPARSABLE_CHOICES:
        raise ValueError(f"unparsable must be one of {UNPARSABLE_CHOICES}, got {unparsable!r}")
    categories = list(categories)
    for c in categories:
        _check_category(c)
    prompts = {c: read_prompts(compbench_dir, c, expected_prompts) for c in categories}
    for c in categories:
        read_category_layout(out_dir, c, prompts[c], n_images)
    per = {c: judge_category(judge, out_dir, c, prompts[c], n_images, unparsable, batch_size=batch_size,
                             progress=progress) for c in categories}
    overall = float(np.mean([per[c]["score"] for c in categories])) if categories else float("nan")
    results = {
        "benchmark": "T2I-CompBench (validation prompts)",
        "compbench_dir": os.path.abspath(compbench_dir),
        "image_dir": os.path.abspath(out_dir),
        "n_images_per_prompt": n_images,
        "unparsable": unparsable,
        "judge": judge_settings(judge),
        "categories": per,
        "overall": overall,
        "overall_over": categories,
        "table10": {**{TABLE10_ROWS[c]: per[c]["score"] for c in categories}, "Overall": overall},
        "n_unparsable": sum(per[c]["n_unparsable"] for c in categories),
    }
    path = results_file or os.path.join(out_dir, RESULTS_FILE)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
    os.replace(tmp, path)
    return results


__all__ = ["CATEGORIES", "TABLE10_ROWS", "PROMPTS_PER_CATEGORY", "DEFAULT_SEEDS", "JUDGE_TEMPLATE", "CATEGORY_FOCUS",
           "SCORE_PATTERN", "BARE_NUMBER_PATTERN", "PARSING_RULE", "Item", "QwenVLJudge", "expected_items",
           "generate_category", "generate_compbench", "image_name", "image_only_processor", "judge_category",
           "judge_question", "judge_settings", "load_judge_processor", "parse_score", "prompt_file",
           "question_id_of", "read_category_layout", "read_prompts", "score_compbench"]
