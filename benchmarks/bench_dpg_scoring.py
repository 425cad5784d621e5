"""Cost of scoring DPG-Bench: time per crop on this CPU and a FLOP-based GPU estimate.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_dpg_scoring.py --threads 1 --repeats 2

A DPG-Bench run asks every question of an item about each of the four crops of its grid:
1,065 items x 4 crops = 4,260 crops. One "crop" below = one image + all the questions of its item.

Rows:
- ``blip-vqa`` — measured. The transformers backend (:class:`segros.eval.dpg_vqa.TransformersVQA`)
  at the shape of ``Salesforce/blip-vqa-capfilt-large`` (BLIP's released VQA models are ViT-B:
  ViT-B/16 at 384 px, 12-layer BERT-base question encoder with cross-attention, 12-layer answer
  decoder; transformers' ``BlipConfig`` defaults with 12 text heads), random weights, no download.
  The tokenizer is a synthetic BERT-size vocabulary (30,524 ids, BLIP's special-token ids) holding
  the benchmark's question words, so questions have realistic token counts. Answers are cut at 2
  new tokens (a one-word answer and [SEP]).
- ``mplug-large vision`` — counted, not run: ELLA's judge encodes the image with CLIP ViT-L/14 at
  504 px (modelscope's ``MPlugConfig`` defaults: ``clip_name="ViT-L-14"``, ``image_res=504``) and
  ELLA calls the pipeline once per question, so the tower runs once per question. Counted on
  transformers' ``CLIPVisionModel`` of that shape on the meta device; mPLUG's text encoder,
  fusion layers and beam-search decoder are NOT counted, so this row is a lower bound. The released
  model's own configuration could not be read here (X-PLUG/mPLUG's vqa_mplug_large.yaml uses
  336 px). mPLUG itself cannot be built here: modelscope's model code imports timm, which imports
  torchvision.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (matrix products; 2 per
multiply-add). The GPU column divides them by a stated sustained throughput (``--gpu-tflops``)
and is an ESTIMATE: small-batch decoding is latency-bound, so real times are longer.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from segros.eval.dpg import IMAGES_PER_PROMPT, N_PROMPTS

N_CROPS = N_PROMPTS * IMAGES_PER_PROMPT

# questions in the style of DPG-Bench's (written for this benchmark), 14 per crop by default
QUESTIONS = [
    "Is there a cabbage?", "Are the cabbages green?", "Is the field expansive?", "Is there soil?",
    "Are the cabbages among rows of rich soil?", "Is there dew on the crinkled leaves?", "Is it morning?",
    "Is the mist lifting above the field?", "Are there eight cabbages?", "Is the light soft?",
    "Is the wooden fence behind the cabbages weathered and grey?", "Is this a photo?",
    "Is the sky pale blue with thin clouds near the horizon?", "Are the heads of the cabbages round and plump?",
]


def synthetic_bert_tokenizer(folder: str, words: list[str]):
    """A BertTokenizer with BLIP's vocabulary size and special-token ids: [PAD]=0, [UNK]=100,
    [CLS]=101, [SEP]=102, [MASK]=103, the given words, filler tokens, [DEC]=30522, [ENC]=30523."""
    from transformers import BertTokenizer

    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += sorted(set(words))
    vocab += [f"filler{i}" for i in range(30522 - len(vocab))]
    vocab += ["[DEC]", "[ENC]"]
    path = os.path.join(folder, "vocab.txt")
    with open(path, "w") as f:
        f.write("\n".join(vocab) + "\n")
    return BertTokenizer(path, bos_token="[DEC]")


def blip_vqa_backend(threads: int):
    from transformers import BlipConfig, BlipForQuestionAnswering, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    from segros.eval.dpg_vqa import TransformersVQA

    torch.manual_seed(0)
    config = BlipConfig(text_config={"num_attention_heads": 12})    # blip-vqa-capfilt-large's config
    model = BlipForQuestionAnswering(config).eval()
    words = [w for q in QUESTIONS for w in q.lower().replace("?", " ?").split()]
    tok = synthetic_bert_tokenizer(tempfile.mkdtemp(), words)
    processor = BlipProcessor(image_processor=BlipImageProcessorPil(), tokenizer=tok)   # 384 px, BLIP's mean/std
    n_params = sum(p.numel() for p in model.parameters())
    return TransformersVQA(model=model, processor=processor, max_new_tokens=2, name="blip-vqa (random)"), n_params


def questions_per_crop(csv_path: str | None, default: int) -> float:
    if csv_path is None:
        return float(default)
    from segros.eval.dpg import read_questions

    bench = read_questions(csv_path, skip_first_row=False)
    return float(np.mean([len(it.qid2question) for it in bench.items.values()]))


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def mplug_vision_flops(image_res: int = 504) -> tuple[int, int]:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    cfg = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           patch_size=14, image_size=image_res)
    with torch.device("meta"):
        tower = CLIPVisionModel(cfg)
        pixels = torch.empty(1, 3, image_res, image_res)
    n_params = sum(p.numel() for p in tower.parameters())
    with torch.no_grad():
        return count_flops(lambda: tower(pixel_values=pixels)), n_params


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--questions", type=int, default=14, help="questions per crop (an assumption; --csv counts the real mean)")
    p.add_argument("--csv", default=None, help="dpg_bench.csv: use its mean number of questions per item")
    p.add_argument("--gpu-tflops", type=float, default=200.0,
                   help="assumed sustained TFLOP/s on one GPU (default 200, about 20%% of an H100/H200's 989 dense BF16 peak)")
    p.add_argument("--tile", type=int, default=512, help="tile size of the generated images")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    n_q = questions_per_crop(args.csv, args.questions)
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(int(round(n_q)))]
    rng = np.random.default_rng(0)
    crop = Image.fromarray(rng.integers(0, 256, (args.tile, args.tile, 3), dtype=np.uint8))

    vqa, blip_params = blip_vqa_backend(args.threads)
    vqa.answer(crop, questions)                                     # warm-up
    blip_flops = count_flops(lambda: vqa.answer(crop, questions))
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        vqa.answer(crop, questions)
        times.append(time.perf_counter() - t0)
    blip_s = float(np.median(times))
    tower_flops, tower_params = mplug_vision_flops()
    mplug_flops = tower_flops * len(questions)

    gpu = args.gpu_tflops * 1e12
    print(f"DPG-Bench scoring cost: {len(questions)} questions per crop ({'from ' + args.csv if args.csv else 'assumed'}), "
          f"{N_CROPS} crops (1,065 x 4); CPU: {args.threads} thread(s), median of {args.repeats}; "
          f"GPU: FLOP-bound ESTIMATE (a lower bound) at an assumed {args.gpu_tflops:.0f} TFLOP/s sustained")
    print()
    print("| VQA model (random weights) | params | TFLOP / crop | CPU s / crop | CPU total (h) | GPU ms / crop (est.) | GPU total (min, est.) |")
    print("|---|---|---|---|---|---|---|")
    rows = [
        ("blip-vqa: ViT-B/16 384 px + BERT-base encoder/decoder, measured", f"{blip_params / 1e6:.0f}M", blip_flops, blip_s),
        (f"mplug-large: CLIP ViT-L/14 504 px tower x {len(questions)} calls only (lower bound), counted",
         f"{tower_params / 1e6:.0f}M (tower)", mplug_flops, None),
    ]
    for name, params, flops, cpu_s in rows:
        cpu = f"{cpu_s:.2f} | {cpu_s * N_CROPS / 3600:.1f}" if cpu_s is not None else "- | -"
        print(f"| {name} | {params} | {flops / 1e12:.3f} | {cpu} | {flops / gpu * 1e3:.2f} | {flops / gpu * N_CROPS / 60:.2f} |")

if __name__ == "__main__":
    main()
