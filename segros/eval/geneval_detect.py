"""GenEval's detector and colour classifier without mmdet: Mask2Former from transformers + zero-shot CLIP.

GenEval (``evaluation/evaluate_images.py``) detects objects with mmdet's Mask2Former Swin-S COCO
instance model (``mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco``) and names each object's
colour with open_clip ViT-L-14 (``pretrained="openai"``). This module rebuilds that pipeline on
transformers so that it installs beside this package; the rules stay in :mod:`segros.eval.geneval`.

Detector (:class:`Mask2FormerDetector`): any ``Mask2FormerForUniversalSegmentation`` checkpoint
whose first 80 labels are COCO's things in COCO order (checked; default
``facebook/mask2former-swin-small-coco-instance``, the same architecture trained by Meta's
Detectron2 code, NOT the mmdet weights GenEval uses; see ``docs/evaluation.md``). Pre- and
post-processing follow mmdet 2.x's test path for that config, not transformers' image processor:

- resize keeping the aspect ratio into (1333, 800) (mmcv ``rescale_size``: factor =
  min(1333 / long side, 800 / short side), sizes rounded half up), bilinear without antialiasing
  (cv2 ``INTER_LINEAR`` in mmcv; here torch, rounded back to uint8), pad right/bottom to a
  multiple of 32 with 128, normalise with mean (123.675, 116.28, 103.53) and std
  (58.395, 57.12, 57.375) in RGB order;
- mask logits upsampled (bilinear) to the padded input, cropped to the resized image, upsampled
  to the original image; top 100 (query, class) pairs by softmax class probability (no-object
  column dropped), labels >= 80 (stuff) dropped, binary mask = logit > 0, score = class
  probability x mean sigmoid inside the binary mask, box = the binary mask's extent
  ``(x_min, y_min, x_max + 1, y_max + 1)`` (mmdet ``instance_postprocess`` and ``mask2bbox``).
  transformers' ``post_process_instance_segmentation`` instead resizes every mask to 384 x 384
  whatever the input's shape and returns no boxes, so it is not used.

Pairs whose class probability is <= ``min_score`` (default 0.3, GenEval's lowest threshold) skip
the mask work: their score (class probability x a mean sigmoid < 1) cannot pass any GenEval
threshold, so the kept detections are exactly those of the full path (``min_score=None``).

Colour (:class:`ZeroShotColors`): for each object the rule engine looks at (the top ``count`` of
a clause with a colour), the image is composited over gray ``#999`` through the object's mask and
cropped to its box (PIL ``crop``, which rounds the box); CLIP scores it against the ten colours,
each colour's text embedding being the renormalised mean of the normalised embeddings of
"a photo of a {c} {object}", "a photo of a {c}-colored {object}" and "a photo of a {c} object"
(clip_benchmark's ``zero_shot_classifier``, as GenEval calls it, with fp16 autocast on a GPU as its
``amp=True`` default). Two backends: :class:`OpenClipColors` (open_clip, GenEval's library, used
when importable) and :class:`TransformersClipColors` (transformers' ``CLIPModel``; OpenAI's
ViT-L/14 weights are published in that format as ``openai/clip-vit-large-patch14``), whose image
preprocessing reproduces open_clip's OpenAI transform (:func:`openclip_preprocess`).
"""

from __future__ import annotations

import math
import re
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from segros.eval.geneval import COCO_ALIASES, COLORS, OBJECTS, THRESHOLD, Detection, filter_detections, result_row
from segros.eval.geneval_scoring import GenEvalScorer

DEFAULT_DETECTOR = "facebook/mask2former-swin-small-coco-instance"
DEFAULT_CLIP = "openai/clip-vit-large-patch14"
OFFICIAL_DETECTOR = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco"
OFFICIAL_CLIP = ("ViT-L-14", "openai")
# mmdet 2.x, configs/mask2former/mask2former_r50_lsj_8x2_50e_coco.py (instance), test pipeline
MMDET_SCALE = (1333, 800)
MMDET_SIZE_DIVISOR = 32
MMDET_PAD_VALUE = 128.0
MMDET_MEAN = (123.675, 116.28, 103.53)
MMDET_STD = (58.395, 57.12, 57.375)
MAX_PER_IMAGE = 100
# GenEval evaluate_images.py: color_classification() and ImageCrops
COLOR_TEMPLATES = ("a photo of a {c} {classname}", "a photo of a {c}-colored {classname}", "a photo of a {c} object")
BGCOLOR = "#999"
CROP_BATCH = 16
# open_clip's OPENAI_DATASET_MEAN / STD
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def default_device():
    return "cuda" if torch.cuda.is_available() else "cpu"


# -----------------------------------------------------------------------------
# detector: mmdet's test path around a transformers Mask2Former

def rescale_size(width, height, scale=MMDET_SCALE):
    """mmcv ``rescale_size``: the (width, height) that fits (long, short) = ``scale`` keeping the ratio."""
    factor = min(max(scale) / max(width, height), min(scale) / min(width, height))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def mmdet_preprocess(image, scale=MMDET_SCALE, size_divisor=MMDET_SIZE_DIVISOR, pad_value=MMDET_PAD_VALUE,
                     mean=MMDET_MEAN, std=MMDET_STD):
    """uint8 RGB [H, W, 3] -> (pixel_values [1, 3, Hp, Wp] float32, (h, w) resized size before padding)."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3] RGB, got {arr.dtype} {arr.shape}")
    h0, w0 = arr.shape[:2]
    w, h = rescale_size(w0, h0, scale)
    x = torch.from_numpy(np.array(arr)).permute(2, 0, 1)[None].float()
    if (h, w) != (h0, w0):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False).round().clamp(0, 255)
    hp = int(math.ceil(h / size_divisor)) * size_divisor
    wp = int(math.ceil(w / size_divisor)) * size_divisor
    x = F.pad(x, (0, wp - w, 0, hp - h), value=float(pad_value))
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x, (h, w)


def select_candidates(class_logits, num_things, max_per_image=MAX_PER_IMAGE, min_score=None):
    """mmdet's instance top-k: (query index, label, class probability) of the best (query, class) pairs.

    ``class_logits`` [Q, C + 1] (last column: no object). The top ``max_per_image`` pairs of the
    softmax over C + 1 (no-object dropped after the softmax) are kept, then labels >= ``num_things``,
    then (if given) pairs with probability <= ``min_score``.
    """
    num_queries, c1 = class_logits.shape
    num_classes = c1 - 1
    probs = class_logits.float().softmax(-1)[:, :-1]
    top, flat = probs.flatten().topk(min(max_per_image, probs.numel()), sorted=False)
    labels = flat % num_classes
    queries = torch.div(flat, num_classes, rounding_mode="floor")
    keep = labels < num_things
    if min_score is not None:
        keep &= top > min_score
    return queries[keep], labels[keep], top[keep]


def masks_to_boxes(masks):
    """mmdet ``mask2bbox``: bool [N, H, W] -> float [N, 4] ``(x0, y0, x1 + 1, y1 + 1)``; empty mask -> zeros."""
    n = masks.shape[0]
    boxes = torch.zeros((n, 4), dtype=torch.float32)
    x_any, y_any = masks.any(dim=1), masks.any(dim=2)
    for i in range(n):
        xs = torch.nonzero(x_any[i]).flatten()
        ys = torch.nonzero(y_any[i]).flatten()
        if len(xs) and len(ys):
            boxes[i] = torch.tensor([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=torch.float32)
    return boxes


def mask_results(mask_logits, padded_hw, resized_hw, original_hw):
    """Mask logits [N, h, w] -> (binary masks [N, H, W], mask scores [N], boxes [N, 4]) at the original size."""
    m = F.interpolate(mask_logits[None].float(), size=tuple(padded_hw), mode="bilinear", align_corners=False)
    m = m[:, :, :resized_hw[0], :resized_hw[1]]
    m = F.interpolate(m, size=tuple(original_hw), mode="bilinear", align_corners=False)[0]
    binary = m > 0
    scores = (m.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    return binary, scores, masks_to_boxes(binary)


def _norm_name(name):
    name = re.sub(r"[^a-z]", "", str(name).lower())
    return {re.sub(r"[^a-z]", "", k): re.sub(r"[^a-z]", "", v) for k, v in COCO_ALIASES.items()}.get(name, name)


def check_class_names(id2label, class_names):
    """Raise ValueError unless label ``i`` of ``id2label`` names ``class_names[i]`` for every i (COCO's
    "mouse", "remote", "keyboard" stand for GenEval's spellings; case, spaces and dashes ignored)."""
    labels = {int(k): v for k, v in dict(id2label).items()}
    if len(labels) < len(class_names):
        raise ValueError(f"the detector has {len(labels)} labels, fewer than the {len(class_names)} GenEval classes")
    bad = [(i, labels.get(i), name) for i, name in enumerate(class_names) if _norm_name(labels.get(i)) != _norm_name(name)]
    if bad:
        shown = ", ".join(f"{i}: {got!r} (want {want!r})" for i, got, want in bad[:8])
        raise ValueError(f"the detector's labels are not COCO's 80 classes in COCO order ({len(bad)} differ: {shown}); "
                         f"give a COCO instance checkpoint, or class_names= in its label order, or check_labels=False")


class Mask2FormerDetector:
    """``detector(image uint8 [H, W, 3]) -> {class name: [Detection (box, score, mask)], ...}``.

    ``model``: a transformers ``Mask2FormerForUniversalSegmentation``. ``class_names``: the names
    of labels 0 .. 79 (default GenEval's, :data:`segros.eval.geneval.OBJECTS`); labels beyond
    them are treated as stuff and dropped. Detections per class are sorted by score.
    """

    def __init__(self, model, class_names=OBJECTS, *, device=None, dtype=torch.float32, scale=MMDET_SCALE,
                 size_divisor=MMDET_SIZE_DIVISOR, pad_value=MMDET_PAD_VALUE, mean=MMDET_MEAN, std=MMDET_STD,
                 max_per_image=MAX_PER_IMAGE, min_score=THRESHOLD, check_labels=True, name=None):
        self.class_names = tuple(class_names)
        if check_labels:
            check_class_names(model.config.id2label, self.class_names)
        self.device = torch.device(device or default_device())
        self.dtype = dtype
        self.model = model.to(self.device, dtype).eval()
        self.scale, self.size_divisor, self.pad_value = tuple(scale), int(size_divisor), float(pad_value)
        self.mean, self.std = tuple(mean), tuple(std)
        self.max_per_image, self.min_score = int(max_per_image), min_score
        self.name = name or getattr(model.config, "_name_or_path", "") or "Mask2Former"

    @classmethod
    def from_pretrained(cls, path=DEFAULT_DETECTOR, **kwargs):
        """Load a checkpoint folder or hub id (``local_files_only`` etc. go to ``from_pretrained``)."""
        from transformers import Mask2FormerForUniversalSegmentation

        load = {k: kwargs.pop(k) for k in ("local_files_only", "cache_dir", "revision") if k in kwargs}
        model = Mask2FormerForUniversalSegmentation.from_pretrained(path, **load)
        kwargs.setdefault("name", str(path))
        return cls(model, **kwargs)

    @torch.inference_mode()
    def raw(self, image):
        """(class logits [Q, C + 1], mask logits [Q, h, w], padded (Hp, Wp), resized (h, w)) for one image."""
        x, resized = mmdet_preprocess(image, self.scale, self.size_divisor, self.pad_value, self.mean, self.std)
        out = self.model(pixel_values=x.to(self.device, self.dtype))
        return out.class_queries_logits[0].float(), out.masks_queries_logits[0].float(), tuple(x.shape[-2:]), resized

    @torch.inference_mode()
    def __call__(self, image):
        image = np.asarray(image)
        class_logits, mask_logits, padded, resized = self.raw(image)
        queries, labels, probs = select_candidates(class_logits, len(self.class_names), self.max_per_image, self.min_score)
        if len(queries) == 0:
            return {}
        binary, mask_scores, boxes = mask_results(mask_logits[queries], padded, resized, image.shape[:2])
        scores = (probs * mask_scores).cpu()
        binary = binary.cpu().numpy()
        out = {}
        for j in range(len(queries)):
            name = self.class_names[int(labels[j])]
            out.setdefault(name, []).append(Detection(tuple(float(v) for v in boxes[j]), float(scores[j]), mask=binary[j]))
        return {k: sorted(v, key=lambda d: -d.score) for k, v in out.items()}


# -----------------------------------------------------------------------------
# colour: zero-shot CLIP on the masked crop

def masked_crop(image, box, mask=None, bgcolor=BGCOLOR, crop=True):
    """GenEval's ``ImageCrops``: the image through ``mask`` over ``bgcolor`` (``"original"``: no gray),
    cropped to ``box`` (PIL rounds its coordinates)."""
    image = image.convert("RGB")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if tuple(image.size[::-1]) != tuple(mask.shape):
            raise ValueError(f"mask shape {mask.shape} differs from the image's {image.size[::-1]}")
        blank = image.copy() if bgcolor == "original" else Image.new("RGB", image.size, color=bgcolor)
        image = Image.composite(image, blank, Image.fromarray(mask))
    if crop:
        image = image.crop(tuple(float(v) for v in box[:4]))
    return image


def openclip_preprocess(image, size=224, mean=OPENAI_MEAN, std=OPENAI_STD):
    """open_clip's OpenAI image transform without torchvision: shortest side to ``size`` (bicubic,
    long side truncated as torchvision computes it), centre crop (offsets rounded as torchvision),
    RGB, [0, 1], normalise. Returns float32 [3, size, size]."""
    image = image.convert("RGB")
    w, h = image.size
    if min(w, h) < 1:
        raise ValueError(f"empty crop of size {image.size}")
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.BICUBIC)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def _features(out):
    """transformers < 5 returns a tensor from get_*_features, >= 5 an output with ``pooler_output``."""
    return out if torch.is_tensor(out) else out.pooler_output


class ZeroShotColors:
    """``colors(image PIL, objects [Detection], classname) -> [colour name per object]`` (GenEval's rule).

    Subclasses give ``encode_text(texts) -> [n, d]``, ``encode_images(pixels [n, 3, s, s]) -> [n, d]``,
    ``preprocess(PIL) -> [3, s, s]``, ``device`` and ``name``. ``amp="auto"`` runs both encoders in
    fp16 autocast on a GPU (clip_benchmark's default, so GenEval's) and in fp32 on a CPU.
    """

    name = "clip"

    def __init__(self, *, device=None, amp="auto", colors=tuple(COLORS), templates=COLOR_TEMPLATES, bgcolor=BGCOLOR,
                 crop=True, batch_size=CROP_BATCH):
        self.device = torch.device(device or default_device())
        if amp not in ("auto", True, False):
            raise ValueError(f"amp must be 'auto', True or False, got {amp!r}")
        self.amp = (self.device.type == "cuda") if amp == "auto" else bool(amp)
        self.colors, self.templates = tuple(colors), tuple(templates)
        self.bgcolor, self.crop, self.batch_size = bgcolor, bool(crop), int(batch_size)
        self._weights = {}

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp)

    @torch.inference_mode()
    def text_weights(self, classname):
        """[d, n_colours]: per colour, the renormalised mean of the normalised template embeddings."""
        if classname not in self._weights:
            columns = []
            with self._autocast():
                for colour in self.colors:
                    feats = self.encode_text([t.format(c=colour, classname=classname) for t in self.templates])
                    mean = F.normalize(feats.float(), dim=-1).mean(dim=0)
                    columns.append(mean / mean.norm())
            self._weights[classname] = torch.stack(columns, dim=1)
        return self._weights[classname]

    @torch.inference_mode()
    def logits(self, image, objects, classname):
        """100 x cosine similarity [n_objects, n_colours] of each object's masked crop with each colour."""
        weights = self.text_weights(classname)
        crops = [self.preprocess(masked_crop(image, d.box, d.mask, self.bgcolor, self.crop)) for d in objects]
        out = []
        for i in range(0, len(crops), self.batch_size):
            pixels = torch.stack(crops[i:i + self.batch_size]).to(self.device)
            with self._autocast():
                feats = F.normalize(self.encode_images(pixels).float(), dim=-1)
            out.append((100.0 * feats @ weights.to(feats.device)).float().cpu())
        return torch.cat(out) if out else torch.zeros((0, len(self.colors)))

    def __call__(self, image, objects, classname):
        if not objects:
            return []
        return [self.colors[int(i)] for i in self.logits(image, objects, classname).argmax(1)]


class TransformersClipColors(ZeroShotColors):
    """The colour classifier on transformers' ``CLIPModel`` + its tokenizer (default OpenAI ViT-L/14)."""

    def __init__(self, model, tokenizer, *, name=None, **kwargs):
        super().__init__(**kwargs)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.image_size = int(model.config.vision_config.image_size)
        self.name = "transformers CLIP " + (name or getattr(model.config, "_name_or_path", "") or "?")

    @classmethod
    def from_pretrained(cls, path=DEFAULT_CLIP, **kwargs):
        from transformers import AutoTokenizer, CLIPModel

        load = {k: kwargs.pop(k) for k in ("local_files_only", "cache_dir", "revision") if k in kwargs}
        kwargs.setdefault("name", str(path))
        return cls(CLIPModel.from_pretrained(path, **load), AutoTokenizer.from_pretrained(path, **load), **kwargs)

    def encode_text(self, texts):
        tok = self.tokenizer(list(texts), padding=True, return_tensors="pt")
        return _features(self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                                      attention_mask=tok["attention_mask"].to(self.device)))

    def encode_images(self, pixels):
        return _features(self.model.get_image_features(pixel_values=pixels))

    def preprocess(self, image):
        return openclip_preprocess(image, self.image_size)


def open_clip_available():
    try:
        import open_clip  # noqa: F401
    except Exception:  # ImportError, or torchvision failing to load beside this torch
        return False
    return True


class OpenClipColors(ZeroShotColors):
    """The colour classifier on open_clip, as GenEval builds it (``ViT-L-14``, ``pretrained="openai"``).

    ``model`` / ``preprocess`` / ``tokenizer`` may be given (e.g. a small model in a test);
    otherwise ``open_clip.create_model_and_transforms(arch, pretrained=pretrained)`` loads them
    (``pretrained`` may be a local checkpoint file; ``cache_dir`` is open_clip's).
    """

    def __init__(self, model=None, preprocess=None, tokenizer=None, *, arch=OFFICIAL_CLIP[0], pretrained=OFFICIAL_CLIP[1],
                 cache_dir=None, **kwargs):
        super().__init__(**kwargs)
        try:
            import open_clip
        except Exception as e:
            raise ImportError(f"the open_clip colour backend needs open_clip_torch (and a torchvision that loads beside "
                              f"this torch): {type(e).__name__}: {e}; use TransformersClipColors instead") from e
        if model is None:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained, device=self.device,
                                                                         cache_dir=cache_dir)
        if preprocess is None:
            raise ValueError("OpenClipColors: give preprocess= together with model=")
        self.model = model.to(self.device).eval()
        self._preprocess = preprocess
        self.tokenizer = tokenizer or open_clip.get_tokenizer(arch)
        self.name = f"open_clip {arch} {pretrained if isinstance(pretrained, str) else 'custom'}"

    def encode_text(self, texts):
        return self.model.encode_text(self.tokenizer(list(texts)).to(self.device))

    def encode_images(self, pixels):
        return self.model.encode_image(pixels)

    def preprocess(self, image):
        return self._preprocess(image)


# -----------------------------------------------------------------------------
# the scorer

COLOR_BACKENDS = ("auto", "open_clip", "transformers")


class TransformersScorer(GenEvalScorer):
    """GenEval with a transformers Mask2Former and a CLIP colour classifier, scored by our rule engine.

    ``detector``: a :class:`Mask2FormerDetector` (or any ``image -> {class: [Detection with mask]}``
    callable with a ``name``); ``colors``: a :class:`ZeroShotColors` (or any callable with its
    signature and a ``name``). Results are labelled with both names.
    """

    name = "transformers"
    shares_work = True  # images are scored one by one: several processes may each score a share

    def __init__(self, detector, colors):
        self.detector, self.colors = detector, colors

    @classmethod
    def from_pretrained(cls, detector=DEFAULT_DETECTOR, clip=DEFAULT_CLIP, *, color_backend="auto",
                        open_clip_pretrained=OFFICIAL_CLIP[1], device=None, detector_kwargs=None, color_kwargs=None,
                        **load):
        """Build from a Mask2Former checkpoint and a colour backend: ``"open_clip"`` (GenEval's library,
        ``open_clip_pretrained`` a tag or a local file), ``"transformers"`` (``clip`` a CLIPModel
        folder or hub id) or ``"auto"`` (open_clip when it imports, else transformers).
        ``detector_kwargs`` / ``color_kwargs`` go to :class:`Mask2FormerDetector` / the colour class;
        ``load`` (``local_files_only``, ``cache_dir``, ``revision``) to transformers' ``from_pretrained``."""
        if color_backend not in COLOR_BACKENDS:
            raise ValueError(f"color_backend must be one of {COLOR_BACKENDS}, got {color_backend!r}")
        unknown = sorted(set(load) - {"local_files_only", "cache_dir", "revision"})
        if unknown:
            raise ValueError(f"unknown settings {unknown}; detector settings go in detector_kwargs=, colour settings "
                             f"in color_kwargs=, and only local_files_only / cache_dir / revision here")
        det = Mask2FormerDetector.from_pretrained(detector, device=device, **load, **(detector_kwargs or {}))
        if color_backend == "open_clip" or (color_backend == "auto" and open_clip_available()):
            colors = OpenClipColors(pretrained=open_clip_pretrained, device=device, **(color_kwargs or {}))
        else:
            colors = TransformersClipColors.from_pretrained(clip, device=device, **load, **(color_kwargs or {}))
        return cls(det, colors)

    def labels(self):
        return {"scorer": self.name, "detector": f"transformers Mask2Former {getattr(self.detector, 'name', '?')}",
                "color_model": getattr(self.colors, "name", "?"),
                "note": f"not GenEval's detector (mmdet {OFFICIAL_DETECTOR}); scores are comparable in protocol, not digit for digit"}

    def detect(self, image, metadata):
        """Detections (class -> sorted list) with ``color`` set on the objects GenEval would colour-check."""
        arr = np.asarray(image.convert("RGB"))
        detections = self.detector(arr)
        kept = filter_detections(detections, metadata["tag"])
        for req in metadata.get("include", []):
            found = kept.get(req["class"], [])[:int(req["count"])]
            if "color" in req and len(found) >= int(req["count"]):
                for det, colour in zip(found, self.colors(image, found, req["class"])):
                    det.color = colour
        return detections

    def score_entries(self, entries, *, progress=True, outfile=None):
        rows = []
        for entry in tqdm(entries, desc="geneval score", disable=not progress, file=sys.stderr):
            with Image.open(entry.path) as im:
                image = ImageOps.exif_transpose(im).convert("RGB")
            rows.append(result_row(entry.path, entry.metadata, self.detect(image, entry.metadata)))
        return rows
