"""T2I-CompBench: prompt files, the official image layout, the parsing rule, aggregation, and a tiny
random Qwen2.5-VL judge run end to end (segros.eval.compbench)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from segros import paper
from segros.eval import compbench as cb


# ---- files the tests write in the official formats --------------------------------------------

def _prompts(category, n):
    return [f"a {category} thing number {i} and a cat" for i in range(n)]


def write_checkout(root, n=3, categories=cb.CATEGORIES, trailing_newline=True):
    """A T2I-CompBench checkout: examples/dataset/<category>_val.txt, one prompt a line."""
    folder = root / "examples" / "dataset"
    folder.mkdir(parents=True, exist_ok=True)
    for c in categories:
        text = "\n".join(_prompts(c, n)) + ("\n" if trailing_newline else "")
        (folder / f"{c}_val.txt").write_text(text)
    return root


def fake_generate(calls=None, size=16):
    """generate(prompts, seed): an image whose colour is a hash of (prompt, seed)."""
    def generate(prompts, seed):
        if calls is not None:
            calls.append((list(prompts), seed))
        out = []
        for p in prompts:
            v = (sum(map(ord, p)) * 7 + seed * 13) % 256
            out.append(np.full((size, size, 3), v, dtype=np.uint8))
        return out
    return generate


class ScriptedJudge:
    """A judge whose answers are given per (category word in the question, question id order)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = 0
        self.seen = []

    def describe(self):
        return {"model_path": "scripted", "decoding": "scripted"}

    def __call__(self, images, questions):
        self.calls += 1
        self.seen += list(zip(images, questions))
        out, self.answers = self.answers[:len(questions)], self.answers[len(questions):]
        return out


# ---- categories and prompts ---------------------------------------------------------------------

def test_categories_match_table10_rows():
    rows = set(paper.rows("table10")) - {"Overall"}
    assert {cb.TABLE10_ROWS[c] for c in cb.CATEGORIES} == rows
    assert [cb.TABLE10_ROWS[c] for c in cb.CATEGORIES] == [r for r in paper.rows("table10") if r != "Overall"]
    assert set(cb.CATEGORY_FOCUS) == set(cb.CATEGORIES)


def test_read_prompts_official_rules(tmp_path):
    root = write_checkout(tmp_path, n=300)
    assert cb.read_prompts(str(root), "color") == _prompts("color", 300)
    # the dataset folder itself works too; a tab ends the prompt (the official split("\t")[0])
    (root / "examples" / "dataset" / "shape_val.txt").write_text("a round plate\tjunk\na square box\n")
    assert cb.read_prompts(str(root / "examples" / "dataset"), "shape", expected=2) == ["a round plate", "a square box"]


def test_read_prompts_errors_name_the_problem(tmp_path):
    root = write_checkout(tmp_path, n=3, categories=("color",))
    with pytest.raises(ValueError, match=r"color_val.txt: 3 prompts, expected 300"):
        cb.read_prompts(str(root), "color")
    with pytest.raises(ValueError, match="no T2I-CompBench prompt file for 'texture'"):
        cb.read_prompts(str(root), "texture", expected=3)
    with pytest.raises(ValueError, match="unknown T2I-CompBench category 'colour'.*valid: color"):
        cb.read_prompts(str(root), "colour")
    (root / "examples" / "dataset" / "color_val.txt").write_text("a red/blue car\n")
    with pytest.raises(ValueError, match="cannot be a file name"):
        cb.read_prompts(str(root), "color", expected=1)


# ---- the parsing rule on hand-written answers -------------------------------------------------

@pytest.mark.parametrize("answer,score", [
    ("Score: 85", 85.0),
    ("score:85", 85.0),
    ("**Score:** 72.", 72.0),
    ("Score = 100/100", 100.0),
    ("Scores: 40", 40.0),
    ("SCORE: 0", 0.0),
    ("Score: 8.5", 8.5),
    ("90", 90.0),
    (" 90. ", 90.0),
    ("The image shows 2 dogs and 3 cats. Score: 40", 40.0),   # the number after 'score', not the first number
    ("Score: 70\nScore: 20", 70.0),                           # the first match counts
    ("Score: 150", None),                                     # out of [0, 100]
    ("Score: 1000", None),                                    # not cut to 100
    ("I would rate it highly.", None),
    ("It gets a score of 80", None),                          # only 'score' + separators + number
    ("The scoreboard shows 3", None),
    ("2 dogs", None),
    ("", None),
])
def test_parse_score(answer, score):
    assert cb.parse_score(answer) == score


def test_parse_score_rejects_non_strings():
    with pytest.raises(ValueError, match="answer must be a str"):
        cb.parse_score(None)


def test_judge_question_has_prompt_and_focus():
    q = cb.judge_question("numeracy", "three apples")
    assert '"three apples"' in q and cb.CATEGORY_FOCUS["numeracy"] in q and "Score: <integer from 0 to 100>" in q
    assert cb.judge_question("color", "x") != cb.judge_question("shape", "x")


# ---- generation into the official layout ------------------------------------------------------

def test_generate_writes_official_names_and_seeds(tmp_path):
    prompts = _prompts("color", 3)
    calls = []
    written = cb.generate_category(fake_generate(calls), prompts, str(tmp_path), "color", seeds=(42, 43),
                                   batch_size=2, progress=False)
    names = sorted(os.listdir(tmp_path / "color" / "samples"))
    # question id = prompt index * n_images + k; image k uses seeds[k]
    expect = sorted(f"{prompts[p]}_{p * 2 + k:06d}.png" for p in range(3) for k in range(2))
    assert names == expect and len(written) == 6
    assert sorted(s for _, s in calls) == [42, 42, 43, 43] and all(len(ps) <= 2 for ps, _ in calls)
    im = np.asarray(Image.open(tmp_path / "color" / "samples" / f"{prompts[1]}_{3:06d}.png"))
    assert im[0, 0, 0] == (sum(map(ord, prompts[1])) * 7 + 43 * 13) % 256
    assert cb.question_id_of(f"{prompts[1]}_{3:06d}.png") == 3


def test_generate_subsets_compose_and_resume(tmp_path):
    prompts = _prompts("shape", 5)
    full, parts = tmp_path / "full", tmp_path / "parts"
    cb.generate_category(fake_generate(), prompts, str(full), "shape", batch_size=1, progress=False)
    for rank in range(2):  # two processes share the category
        cb.generate_category(fake_generate(), prompts, str(parts), "shape", indices=range(rank, 5, 2), batch_size=1,
                             progress=False)
    a, b = (sorted(os.listdir(d / "shape" / "samples")) for d in (full, parts))
    assert a == b
    for n in a:
        assert np.array_equal(np.asarray(Image.open(full / "shape" / "samples" / n)),
                              np.asarray(Image.open(parts / "shape" / "samples" / n)))
    calls = []
    assert cb.generate_category(fake_generate(calls), prompts, str(parts), "shape", progress=False) == []
    assert calls == []  # nothing left to make


def test_generate_checks_its_callable(tmp_path):
    with pytest.raises(ValueError, match="returned 1 images for 2 prompts"):
        cb.generate_category(lambda ps, s: [np.zeros((4, 4, 3), np.uint8)], ["a", "b"], str(tmp_path), "color",
                             progress=False)
    with pytest.raises(ValueError, match="uint8"):
        cb.generate_category(lambda ps, s: [np.zeros((4, 4, 3), np.float32)], ["a"], str(tmp_path), "color",
                             progress=False)
    with pytest.raises(ValueError, match=r"outside 0..1"):
        cb.generate_category(fake_generate(), ["a", "b"], str(tmp_path), "color", indices=[2], progress=False)


def test_layout_refuses_partial_or_foreign_images(tmp_path):
    prompts = _prompts("texture", 4)
    cb.generate_category(fake_generate(), prompts, str(tmp_path), "texture", progress=False)
    assert len(cb.read_category_layout(str(tmp_path), "texture", prompts)) == 4
    folder = tmp_path / "texture" / "samples"
    (folder / f"{prompts[2]}_000002.png").unlink()
    with pytest.raises(ValueError, match=r"1 of 4 images missing"):
        cb.read_category_layout(str(tmp_path), "texture", prompts)
    cb.generate_category(fake_generate(), prompts, str(tmp_path), "texture", progress=False)
    (folder / "something else_000009.png").write_bytes(b"")
    with pytest.raises(ValueError, match="not in the expected layout"):
        cb.read_category_layout(str(tmp_path), "texture", prompts)
    (folder / "something else_000009.png").unlink()
    (folder / f"{prompts[0]}_000000.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="unreadable image"):
        cb.read_category_layout(str(tmp_path), "texture", prompts)
    with pytest.raises(ValueError, match="no images for category 'color'"):
        cb.read_category_layout(str(tmp_path), "color", prompts)


# ---- scoring with scripted answers -------------------------------------------------------------

def _layout(tmp_path, categories=("color", "numeracy"), n=3):
    root = write_checkout(tmp_path / "checkout", n=n, categories=categories)
    cb.generate_compbench(fake_generate(), str(root), str(tmp_path / "images"), categories, expected_prompts=n,
                          progress=False)
    return str(root), str(tmp_path / "images")


def test_scoring_counts_unparsable_and_writes_results(tmp_path):
    root, images = _layout(tmp_path)
    answers = ["Score: 90", "no idea", "Score: 60",      # color
               "Score: 30", "Score: 120", "40"]          # numeracy
    judge = ScriptedJudge(answers)
    res = cb.score_compbench(judge, root, images, ("color", "numeracy"), expected_prompts=3, batch_size=2,
                             progress=False)
    # zero fallback: color (90 + 0 + 60) / 3 = 50, numeracy (30 + 0 + 40) / 3 = 23.33
    assert res["categories"]["color"]["score"] == pytest.approx(50.0)
    assert res["categories"]["numeracy"]["score"] == pytest.approx(70 / 3)
    assert res["categories"]["color"]["unparsable_question_ids"] == [1]
    assert res["categories"]["numeracy"]["unparsable_question_ids"] == [1]
    assert res["n_unparsable"] == 2 and res["overall"] == pytest.approx((50 + 70 / 3) / 2)
    assert res["table10"] == {"Color": pytest.approx(50.0), "Numeracy": pytest.approx(70 / 3),
                              "Overall": pytest.approx((50 + 70 / 3) / 2)}
    # the judge saw each image with its own category's question, in question-id order
    prompts = cb.read_prompts(root, "color", 3)
    assert [q for _, q in judge.seen[:3]] == [cb.judge_question("color", p) for p in prompts]
    on_disk = json.load(open(os.path.join(images, cb.RESULTS_FILE)))
    j = on_disk["judge"]
    assert j["model_path"] == "scripted" and j["prompt_template"] == cb.JUDGE_TEMPLATE
    assert j["parsing_rule"] == cb.PARSING_RULE and j["category_focus"]["numeracy"] == cb.CATEGORY_FOCUS["numeracy"]
    assert on_disk["categories"]["numeracy"]["n_unparsable"] == 1
    official = json.load(open(os.path.join(images, "color", cb.ANNOTATION_DIR, "vqa_result.json")))
    assert official == [{"question_id": 0, "answer": "0.9000"}, {"question_id": 1, "answer": "0.0000"},
                        {"question_id": 2, "answer": "0.6000"}]
    rows = [json.loads(l) for l in open(os.path.join(images, "numeracy", cb.JUDGE_ROWS_FILE))]
    assert [r["answer"] for r in rows] == answers[3:] and [r["score"] for r in rows] == [30.0, None, 40.0]


def test_skip_fallback_and_resume(tmp_path):
    root, images = _layout(tmp_path, categories=("color",))
    judge = ScriptedJudge(["Score: 90", "no idea", "Score: 60"])
    res = cb.score_compbench(judge, root, images, ("color",), unparsable="skip", expected_prompts=3, progress=False)
    assert res["categories"]["color"]["score"] == pytest.approx(75.0)
    assert res["categories"]["color"]["n_scored"] == 2 and res["categories"]["color"]["n_unparsable"] == 1
    official = json.load(open(os.path.join(images, "color", cb.ANNOTATION_DIR, "vqa_result.json")))
    assert [r["question_id"] for r in official] == [0, 2]
    # same judge settings: the rows on disk are reused, the judge is not asked again
    again = ScriptedJudge([])
    res2 = cb.score_compbench(again, root, images, ("color",), unparsable="skip", expected_prompts=3, progress=False)
    assert again.calls == 0 and res2["categories"] == res["categories"]
    with pytest.raises(ValueError, match="unparsable must be one of"):
        cb.score_compbench(again, root, images, ("color",), unparsable="drop", expected_prompts=3)


def test_scoring_refuses_an_incomplete_layout_before_judging(tmp_path):
    root, images = _layout(tmp_path)
    victim = os.path.join(images, "numeracy", "samples", sorted(os.listdir(os.path.join(images, "numeracy", "samples")))[0])
    os.remove(victim)
    judge = ScriptedJudge(["Score: 1"] * 6)
    with pytest.raises(ValueError, match="1 of 3 images missing"):
        cb.score_compbench(judge, root, images, ("color", "numeracy"), expected_prompts=3, progress=False)
    assert judge.calls == 0  # color was complete, but nothing was judged


# ---- a tiny random Qwen2.5-VL judge, end to end -----------------------------------------------

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
            "<|video_pad|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_judge_parts():
    """A word-level tokenizer with Qwen2.5-VL's special tokens and a chat template, the PIL Qwen2-VL
    image processor, and a Qwen2.5-VL with a 2-layer LLM and a 2-block vision tower (random weights)."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    words = set()
    for c in cb.CATEGORIES:
        words.update(cb.judge_question(c, "a cat").lower().replace('"', " ").split())
    words.update(["score", ":"] + [str(i) for i in range(0, 101, 10)])
    vocab = {w: i for i, w in enumerate(["[UNK]"] + sorted(words))}
    tk = Tokenizer(WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", additional_special_tokens=SPECIALS)
    tok.chat_template = CHAT_TEMPLATE
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"],
                         rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1], in_chans=3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    image_processor = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=28 * 28 * 4)
    return model, cb.image_only_processor(image_processor, tok)


@pytest.fixture(scope="module")
def tiny_judge():
    model, processor = tiny_judge_parts()
    return cb.QwenVLJudge(model, processor, model_path="tiny-random-qwen2.5-vl", max_new_tokens=5, batch_size=2)


def test_judge_inputs_carry_the_image(tiny_judge):
    ims = [Image.fromarray(np.random.RandomState(i).randint(0, 255, (40, 56, 3), dtype=np.uint8)) for i in range(2)]
    inputs = tiny_judge.prepare(ims, ["a", "a b c"])
    pad = tiny_judge.processor.image_token_id
    per_image = (inputs["image_grid_thw"].prod(-1) // 4).tolist()
    assert (inputs["input_ids"] == pad).sum(1).tolist() == per_image and per_image[0] > 0
    assert inputs["mm_token_type_ids"].sum().item() == sum(per_image)  # the 3D RoPE sees the image tokens
    assert (inputs["attention_mask"][:, 0] == 0).any()  # left padding: rows end at the generation prompt


def test_tiny_qwen_judge_end_to_end(tmp_path, tiny_judge):
    categories = ("spatial", "complex")
    root = write_checkout(tmp_path / "checkout", n=3, categories=categories)
    images = str(tmp_path / "images")
    cb.generate_compbench(fake_generate(size=40), str(root), images, categories, expected_prompts=3, progress=False)
    res = cb.score_compbench(tiny_judge, str(root), images, categories, expected_prompts=3, batch_size=2,
                             progress=False)
    on_disk = json.load(open(os.path.join(images, cb.RESULTS_FILE)))
    assert on_disk["judge"]["model_path"] == "tiny-random-qwen2.5-vl"
    assert on_disk["judge"]["model_class"] == "Qwen2_5_VLForConditionalGeneration"
    assert on_disk["judge"]["processor_kind"] == "given" and on_disk["judge"]["max_new_tokens"] == 5
    for c in categories:
        rows = [json.loads(l) for l in open(os.path.join(images, c, cb.JUDGE_ROWS_FILE))]
        assert len(rows) == 3 and all(isinstance(r["answer"], str) for r in rows)
        bad = [r["question_id"] for r in rows if cb.parse_score(r["answer"]) is None]
        assert res["categories"][c]["unparsable_question_ids"] == bad
        parsed = [cb.parse_score(r["answer"]) or 0.0 for r in rows]
        assert res["categories"][c]["score"] == pytest.approx(float(np.mean(parsed)))
    # the rows hold what the judge answers for those images, asked directly
    c = categories[0]
    rows = [json.loads(l) for l in open(os.path.join(images, c, cb.JUDGE_ROWS_FILE))]
    ims = [Image.open(os.path.join(images, c, "samples", r["file"])).convert("RGB") for r in rows]
    assert tiny_judge(ims, [r["question"] for r in rows]) == [r["answer"] for r in rows]


def test_two_images_per_prompt_are_scored_by_question_id(tmp_path):
    root = write_checkout(tmp_path / "checkout", n=2, categories=("shape",))
    images = str(tmp_path / "images")
    cb.generate_compbench(fake_generate(), str(root), images, ("shape",), seeds=(42, 43), expected_prompts=2,
                          progress=False)
    with pytest.raises(ValueError, match="1 of 2 images missing"):  # n_images must match the layout
        cb.score_compbench(ScriptedJudge([]), str(root), images, ("shape",), n_images=1, expected_prompts=2)
    res = cb.score_compbench(ScriptedJudge(["Score: 10", "Score: 20", "x", "Score: 40"]), str(root), images,
                             ("shape",), n_images=2, expected_prompts=2, progress=False)
    assert res["categories"]["shape"]["unparsable_question_ids"] == [2]
    assert res["categories"]["shape"]["score"] == pytest.approx(70 / 4)
    rows = [json.loads(l) for l in open(os.path.join(images, "shape", cb.JUDGE_ROWS_FILE))]
    prompts = cb.read_prompts(str(root), "shape", 2)
    assert [(r["question_id"], r["file"]) for r in rows] == [
        (q, f"{prompts[q // 2]}_{q:06d}.png") for q in range(4)]


def test_judge_records_its_settings(tiny_judge):
    d = tiny_judge.describe()
    assert d["image_pixels"] == {"min_pixels": 28 * 28, "max_pixels": 28 * 28 * 4}
    assert d["decoding"] == "greedy" and d["dtype"] == "float32" and d["model_type"] == "qwen2_5_vl"


def test_judge_loads_from_a_folder(tmp_path, tiny_judge):
    """from_pretrained on a folder in the hub layout (model, tokenizer, image processor, chat template)."""
    folder = tmp_path / "judge"
    tiny_judge.model.save_pretrained(folder)
    tiny_judge.processor.tokenizer.save_pretrained(folder)
    tiny_judge.processor.image_processor.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    loaded = cb.QwenVLJudge.from_pretrained(str(folder), device="cpu", dtype="float32", max_new_tokens=5)
    assert loaded.processor_kind in ("auto", "image-only") and loaded.model_path == str(folder)
    ims = [Image.fromarray(np.random.RandomState(i).randint(0, 255, (40, 56, 3), dtype=np.uint8)) for i in range(2)]
    qs = [cb.judge_question("color", "a red cat"), cb.judge_question("shape", "a round cat")]
    assert loaded(ims, qs) == tiny_judge(ims, qs)
    with pytest.raises(ValueError, match="cannot build the judge's processor"):
        cb.load_judge_processor(str(tmp_path / "nowhere"))


# ---- the judge-cost benchmark's arithmetic ------------------------------------------------------

def _bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_compbench_judge.py"
    spec = importlib.util.spec_from_file_location("bench_compbench_judge", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("size,published", [("3b", 3.75e9), ("7b", 8.29e9), ("32b", 33.45e9)])
def test_bench_shapes_have_the_released_parameter_counts(size, published):
    """The benchmark's configs, built on the meta device, have the released models' sizes, and its
    analytic count of the weights (the FLOP estimate's basis) agrees with the built model."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    bench = _bench()
    cfg, _ = bench.config(size)
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert n == pytest.approx(published, rel=0.01)
    s = bench.shape(size)
    vision = sum(p.numel() for p in model.model.visual.parameters())
    embeds = s["vocab"] * s["hidden"] * (1 if s["tie"] else 2)
    assert bench.llm_linear_params(s) + embeds + vision == pytest.approx(n, rel=0.002)


def test_bench_counted_flops_match_the_analytic_count():
    bench = _bench()
    out = bench.main(["--size", "tiny", "--image", "112", "--text-tokens", "20", "--decode", "2",
                      "--estimate-sizes", "tiny,32b"])
    m = out["measured"][0]
    assert m["counted TFLOP"] == pytest.approx(m["analytic w/o attention"], rel=1e-9)
    assert m["prompt tokens"] == 20 + 16 + 10 and m["per image s"] > m["prefill s"] > 0
    est = {(r["size"], r["gpu"]): r for r in out["estimate"]}
    r = est[("32b", "H100-SXM-80GB")]
    assert r["N=10 (24000 images) min"] == pytest.approx(10 * r["N=1 (2400 images) min"])
    assert 1.0 < r["prefill TFLOP"] < 100.0  # 2 x 33B weights x a few hundred tokens


def test_docs_state_the_judge_prompt_and_rule():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "evaluation.md").read_text()
    for line in cb.JUDGE_TEMPLATE.split("\n"):
        assert line in doc, line
    for category, focus in cb.CATEGORY_FOCUS.items():
        assert f"| {category} | {focus} |" in doc
