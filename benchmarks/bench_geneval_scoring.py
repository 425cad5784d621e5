"""GenEval scoring cost with the transformers scorer at the real detector's and colour model's shapes.

Builds, with random weights and no download, Mask2Former Swin-S COCO-instance (transformers'
default ``Mask2FormerConfig``: Swin-S backbone depths 2-2-18-2, width 96, 100 queries, 10 decoder
layers, 80 COCO labels; the same architecture as GenEval's mmdet checkpoint) and CLIP ViT-L/14
(OpenAI's shape: vision 24 x 1024, patch 14, 224 px; text 12 x 768; projection 768), then times
on this CPU, through the code path of :class:`segros.eval.geneval_detect.TransformersScorer`:

- the detector on one image (mmdet's resize to 800 x 800, forward, mask post-processing over all
  100 top pairs: ``min_score=None``, the slowest case);
- one colour crop (masked crop, open_clip-style preprocessing, CLIP image tower, argmax);
- one colour classifier (10 colours x 3 templates through the text tower), built once per class.

The total for GenEval's 553 prompts x 4 images is extrapolated with 0.53 colour crops per image
(colors: 94 prompts x 1 object, color_attr: 100 x 2, over 553; an upper bound, since only found
objects are cropped) and one classifier per distinct coloured class (at most 80). The GPU lines are
ESTIMATES, not measurements: model FLOPs counted here (``torch.utils.flop_counter``; the deformable
attention's sampling is not counted) divided by a stated sustained throughput, a floor, and an
assumed images-per-second rate for batch-1 detection, which is latency-bound.

    python benchmarks/bench_geneval_scoring.py --threads 2 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segros.eval.geneval import OBJECTS, Detection  # noqa: E402
from segros.eval.geneval_detect import Mask2FormerDetector, TransformersClipColors  # noqa: E402

N_PROMPTS, IMAGES_PER_PROMPT = 553, 4
CROPS_PER_IMAGE = (94 * 1 + 100 * 2) / 553
MAX_CLASSIFIERS = 80


class IdTokenizer:
    """Stands in for CLIP's tokenizer (not shipped offline): ids from the characters, same lengths as
    CLIP's BPE gives these short templates (about a dozen tokens)."""

    def __call__(self, texts, padding=True, return_tensors="pt"):
        ids = [[49406] + [256 + sum(map(ord, word)) % 40000 for word in t.split()] + [49407] for t in texts]
        width = max(len(x) for x in ids)
        return {"input_ids": torch.tensor([x + [49407] * (width - len(x)) for x in ids]),
                "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])}


def build_detector():
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

    config = Mask2FormerConfig(id2label=dict(enumerate(OBJECTS)), label2id={n: i for i, n in enumerate(OBJECTS)})
    model = Mask2FormerForUniversalSegmentation(config).eval()
    return Mask2FormerDetector(model, device="cpu", min_score=None, name="random Swin-S COCO shape")


def build_clip():
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, max_position_embeddings=77, eos_token_id=49407),
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           patch_size=14, image_size=224),
        projection_dim=768)
    return TransformersClipColors(CLIPModel(config).eval(), IdTokenizer(), device="cpu", name="random ViT-L/14 shape")


def timed(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def flops(fn):
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after one warm-up (median)")
    parser.add_argument("--image-size", type=int, default=512, help="generated image side (Show-o-512, Harmon, OpenUni)")
    parser.add_argument("--gpu-name", default="A100-80GB", help="label of the GPU of the estimate")
    parser.add_argument("--gpu-tflops", type=float, default=100.0,
                        help="assumed SUSTAINED TFLOP/s for the estimate (default 100: about a third of an A100's "
                             "312 TF32/FP16 tensor-core peak)")
    parser.add_argument("--gpu-images-per-s", type=float, default=10.0,
                        help="ASSUMED images per second for the latency-bound estimate (batch-1 detection, PNG "
                             "decoding, mask upsampling, a Python loop); not measured")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8)
    pil = Image.fromarray(image)
    mask = np.zeros(image.shape[:2], bool)
    mask[100:300, 150:350] = True
    crop = [Detection((150.0, 100.0, 350.0, 300.0), 0.9, mask=mask)]

    t0 = time.perf_counter()
    detector = build_detector()
    colors = build_clip()
    build_s = time.perf_counter() - t0
    print(f"built random models in {build_s:.0f} s (threads={args.threads})", file=sys.stderr)

    def classifier():
        colors._weights.clear()
        colors.text_weights("cup")

    with torch.inference_mode():
        t_text = timed(classifier, args.repeats)
        f_text = flops(classifier)
        t_crop = timed(lambda: colors.logits(pil, crop, "cup"), args.repeats)
        f_crop = flops(lambda: colors.logits(pil, crop, "cup"))
        print(f"colour: classifier {t_text:.2f} s, crop {t_crop:.2f} s", file=sys.stderr)
        t_forward = timed(lambda: detector.raw(image), args.repeats)
        t_detect = timed(lambda: detector(image), args.repeats)
        f_detect = flops(lambda: detector.raw(image))
        print(f"detector: forward {t_forward:.2f} s, with post-processing {t_detect:.2f} s", file=sys.stderr)

    n_images = N_PROMPTS * IMAGES_PER_PROMPT
    per_image = t_detect + CROPS_PER_IMAGE * t_crop
    total = n_images * per_image + MAX_CLASSIFIERS * t_text
    f_image = f_detect + CROPS_PER_IMAGE * f_crop
    f_total = n_images * f_image + MAX_CLASSIFIERS * f_text
    gpu = args.gpu_tflops * 1e12

    print(f"\nGenEval scoring, transformers path, random weights at the real shapes; CPU, {args.threads} thread(s); "
          f"{args.image_size} px images\n")
    print("| step | CPU time | GFLOP | GPU estimate (" + args.gpu_name + f" at {args.gpu_tflops:.0f} TFLOP/s sustained) |")
    print("|---|---|---|---|")
    print(f"| detector forward (800 x 800 input) | {t_forward:.2f} s | {f_detect / 1e9:.0f} | {f_detect / gpu * 1e3:.1f} ms |")
    print(f"| detector incl. mask post-processing (100 pairs) | {t_detect:.2f} s | {f_detect / 1e9:.0f} | - |")
    print(f"| one colour crop (ViT-L/14 image tower) | {t_crop:.2f} s | {f_crop / 1e9:.0f} | {f_crop / gpu * 1e3:.2f} ms |")
    print(f"| one colour classifier (30 prompts, text tower) | {t_text:.2f} s | {f_text / 1e9:.0f} | {f_text / gpu * 1e3:.2f} ms |")
    print(f"| per image ({CROPS_PER_IMAGE:.2f} crops) | {per_image:.2f} s | {f_image / 1e9:.0f} | {f_image / gpu * 1e3:.1f} ms |")
    print(f"| **{N_PROMPTS} x {IMAGES_PER_PROMPT} = {n_images} images** (+ {MAX_CLASSIFIERS} classifiers) | "
          f"**{total / 3600:.1f} h** | {f_total / 1e12:.0f} TFLOP | **{f_total / gpu / 60:.1f} min (estimate, FLOP-bound)** |")
    print(f"\nGPU, latency-bound ESTIMATE at an assumed {args.gpu_images_per_s:g} images/s: "
          f"{n_images / args.gpu_images_per_s / 60:.1f} min for {n_images} images (the FLOP bound above is a floor; "
          f"batch-1 detection does not reach the sustained rate). Not measured: no GPU was available.")
    print(f"CPU: torch {torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f} at the end "
          f"on {os.cpu_count()} cores.")


if __name__ == "__main__":
    main()
