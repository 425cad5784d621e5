"""Real-data sources (segros.data.sources): each format on small files the tests write, the (seed, k)
order and the per-process shards, bad data counted and skipped, clear stops, no silent fallback."""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from segros.data import sources as S
from segros.presets import TrainConfig, get_preset

COLORS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle", "cross")
N = 16
CORRUPT, EMPTY = 3, 9  # the bad samples of the webdataset shard


def caption(i):
    return f"a {COLORS[i % 4]} {SHAPES[(i // 4) % 4]}"


def image_array(i, w=40, h=30):
    """A non-square test image, different per i (JPEG-compressible: smooth + a block)."""
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([(x * 6 + i * 13) % 256, (y * 8 + i * 29) % 256, np.full_like(x, (i * 37) % 256)], -1)
    a[h // 4:h // 2, w // 4:w // 2] = (255 - 10 * i) % 256
    return a.astype(np.uint8)


def jpeg(i):
    buf = io.BytesIO()
    Image.fromarray(image_array(i)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_tar(path, members):
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def hf_rows(n=N):
    return {"image": [{"bytes": jpeg(i), "path": None} for i in range(n)], "prompt": [caption(i) for i in range(n)],
            "llava": [f"A long description of {caption(i)} on a plain background." for i in range(n)]}


def hf_features():
    import datasets

    return datasets.Features({"image": datasets.Image(), "prompt": datasets.Value("string"),
                              "llava": datasets.Value("string")})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One small file set per real format (16 samples each)."""
    import datasets

    root = tmp_path_factory.mktemp("data")
    out = {"cache": str(root / "hf-cache")}
    # webdataset: two shards of 8, a corrupt JPEG and an empty caption in the first
    os.makedirs(root / "wds")
    for shard in range(2):
        members = []
        for i in range(shard * 8, shard * 8 + 8):
            members.append((f"{i:05d}.jpg", b"\xff\xd8\xff\xe0 not a jpeg" if i == CORRUPT else jpeg(i)))
            members.append((f"{i:05d}.txt", b"  " if i == EMPTY else caption(i).encode()))
        write_tar(root / "wds" / f"shard-{shard:05d}.tar", members)
    out["wds"] = str(root / "wds" / "*.tar")
    # parquet folder as the hub stores MidjourneyV6: image / prompt / llava
    os.makedirs(root / "parquet" / "data")
    ds = datasets.Dataset.from_dict(hf_rows(), features=hf_features())
    ds.to_parquet(str(root / "parquet" / "data" / "train-00000-of-00001.parquet"))
    out["parquet"] = str(root / "parquet")
    # save_to_disk folder
    ds.save_to_disk(str(root / "saved"))
    out["saved"] = str(root / "saved")
    # LLaVA-Instruct: 16 records with images under a root; multi-turn, a leading gpt turn, a text-only
    # record, an empty answer, an id that is an int
    os.makedirs(root / "llava" / "images" / "coco")
    records = []
    for i in range(N):
        rel = f"coco/{i:012d}.jpg"
        Image.fromarray(image_array(i, 36, 36)).save(root / "llava" / "images" / rel, quality=95)
        conv = [{"from": "human", "value": f"<image>\nwhat color is the {SHAPES[i % 4]}"},
                {"from": "gpt", "value": COLORS[i % 4]}]
        if i % 3 == 0:
            conv += [{"from": "human", "value": "how many are there"}, {"from": "gpt", "value": "1"}]
        rec = {"id": i if i == 5 else f"{i:06d}", "image": rel, "conversations": conv}
        if i == 7:
            rec["conversations"] = [{"from": "gpt", "value": "hello"}] + conv
        if i == 11:
            rec["conversations"][1]["value"] = "   "
        if i == 13:
            rec = {"id": "text-only", "conversations": conv}
        records.append(rec)
    (root / "llava" / "llava.json").write_text(json.dumps(records))
    out["llava"], out["llava_root"] = str(root / "llava" / "llava.json"), str(root / "llava" / "images")
    out["records"] = records
    return out


@pytest.fixture(scope="module")
def tiny_harmon():
    from segros.backbones import build_backbone

    torch.manual_seed(0)
    return build_backbone("tiny-harmon", n_fit=32)


@pytest.fixture(scope="module")
def tiny_showo():
    from segros.backbones import build_backbone

    torch.manual_seed(0)
    return build_backbone("tiny-showo", n_fit=32)


@pytest.fixture(scope="module")
def real_harmon():
    from segros.backbones.harmon import build_harmon, tiny_tokenizer

    torch.manual_seed(0)
    return build_harmon("tiny", tokenizer=tiny_tokenizer(), image_size=32).eval()


@pytest.fixture(scope="module")
def real_showo():
    from segros.backbones.showo import build_showo

    torch.manual_seed(0)
    return build_showo("tiny").eval()


def raw_batches(loader, n):
    out = []
    for raw in loader:
        out.append(raw)
        if len(out) == n:
            break
    return out


def same_batch(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if torch.is_tensor(a[k]):
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


# ---- order and shards ---------------------------------------------------------------------------

def test_batch_indices_is_the_training_loops():
    from segros.train import batch_indices

    for n, b, seed in [(16, 4, 0), (17, 5, 3), (512, 16, 1), (10, 10, 7)]:
        for k in (0, 1, 2, 3, 7, 20, 101):
            assert S.batch_indices(n, b, k, seed) == batch_indices(n, b, k, seed)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_shards_are_disjoint_and_make_the_global_batch(world):
    n, b, seed = 37, 8, 5
    per_rank = [list(S.StepBatchSampler(n, b, seed, start=3, stop=9, rank=r, world_size=world)) for r in range(world)]
    for j, k in enumerate(range(3, 9)):
        parts = [per_rank[r][j] for r in range(world)]
        assert all(len(p) == b // world for p in parts)
        assert sum(parts, []) == S.batch_indices(n, b, k, seed)  # rank order = global order
        assert len(set(sum(parts, []))) == b  # disjoint
    # a resumed sampler (start = k) reads what the first one read at k
    assert list(S.StepBatchSampler(n, b, seed, start=5, stop=9)) == list(S.StepBatchSampler(n, b, seed, start=3, stop=9))[2:]


def test_batch_not_divisible_by_the_processes_is_refused():
    with pytest.raises(ValueError, match=r"batch_size 10 .*not divisible by the 4 processes.*multiple of 4"):
        S.StepBatchSampler(40, 10, 0, rank=0, world_size=4)
    with pytest.raises(ValueError, match="rank 2"):
        S.shard_bounds(8, 2, 2)
    with pytest.raises(ValueError, match="larger than the source"):
        S.StepBatchSampler(4, 8, 0)


# ---- the formats -------------------------------------------------------------------------------

FORMATS = {"wds": "webdataset", "parquet": "folder", "saved": "save_to_disk"}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_loads_and_preprocesses(files, fmt, tiny_harmon, real_harmon):
    src = S.open_t2i(files[fmt], cache_dir=files["cache"])
    assert len(src) == N and src.describe()["caption"] == ("txt" if fmt == "wds" else "prompt")
    assert FORMATS[fmt] in src.name
    image, text = src.get(0)
    assert text == caption(0) and image.mode == "RGB" and image.size == (40, 30)
    assert np.abs(np.asarray(image).astype(int) - image_array(0)).mean() < 4  # the JPEG it wrote
    for bb, size in ((tiny_harmon, 64), (real_harmon, 32)):  # the backbone's own size, not a config field
        loader = S.make_loader(src, bb.preprocess_images, batch_size=4, seed=1, stop=2)
        for k, raw in enumerate(loader):
            assert raw["pixels"].shape == (4, 3, size, size) and raw["pixels"].dtype == torch.float32
            assert 0 <= raw["pixels"].min() and raw["pixels"].max() <= 1
            expect = [i for i in S.batch_indices(N, 4, k, 1)]
            good = [i if fmt != "wds" or i not in (CORRUPT, EMPTY) else i + 1 for i in expect]
            assert raw["indices"] == good
            ref = bb.preprocess_images([src.get(i)[0] for i in raw["indices"]])
            assert torch.equal(raw["pixels"], ref)
            assert raw["texts"] == [caption(i) for i in raw["indices"]]
    # two processes: disjoint halves of the same global batches, in rank order
    one = [raw["indices"] for raw in S.make_loader(src, tiny_harmon.preprocess_images, batch_size=4, seed=2, stop=6)]
    halves = [[raw["indices"] for raw in S.make_loader(src, tiny_harmon.preprocess_images, batch_size=4, seed=2,
                                                       stop=6, rank=r, world_size=2)] for r in range(2)]
    assert [a + b for a, b in zip(*halves)] == one and all(len(a) == 2 for a in halves[0])


def test_other_caption_column_and_explicit_files(files):
    src = S.open_t2i(files["parquet"], caption="llava", cache_dir=files["cache"])
    assert src.get(2)[1].startswith("A long description of a blue circle")
    one = sorted(glob.glob(files["wds"]))[1]
    src = S.open_t2i(one, cache_dir=files["cache"])  # a single tar file
    assert len(src) == 8 and src.get(0)[1] == caption(8)


def test_model_batches_equal_the_backbones_own(files, tiny_harmon, tiny_showo, real_harmon, real_showo):
    t2i = S.open_t2i(files["saved"], cache_dir=files["cache"])
    i2t = S.open_llava(files["llava"], files["llava_root"], cache_dir=files["cache"])
    for bb in (tiny_harmon, tiny_showo, real_harmon, real_showo):
        raw = next(iter(S.make_loader(t2i, bb.preprocess_images, batch_size=4, seed=0, stop=1)))
        images = [t2i.get(i)[0] for i in raw["indices"]]
        same_batch(S.t2i_model_batch(bb, raw), bb.t2i_batch(images, raw["texts"]))
        raw = next(iter(S.make_loader(i2t, bb.preprocess_images, batch_size=4, seed=7, stop=1)))
        rows = [i2t.get(i) for i in raw["indices"]]
        same_batch(S.i2t_model_batch(bb, raw), bb.i2t_batch([r[0] for r in rows], [r[1] for r in rows],
                                                           [r[2] for r in rows]))
        assert "preprocess_images" not in vars(bb)  # the backbone's own method is back
        with pytest.raises(ValueError, match="same length|differ in length"):
            S.i2t_model_batch(bb, {**raw, "answers": raw["answers"][:-1]})
        assert "preprocess_images" not in vars(bb)


def test_workers_give_the_same_batches(files, tiny_harmon):
    src = S.open_t2i(files["wds"], cache_dir=files["cache"])
    args = dict(batch_size=4, seed=3, start=2, stop=8)
    here = list(S.make_loader(src, tiny_harmon.preprocess_images, **args))
    state = torch.get_rng_state()
    there = list(S.make_loader(src, tiny_harmon.preprocess_images, num_workers=2, **args))
    assert torch.equal(state, torch.get_rng_state())  # the loader leaves the run's RNG alone
    assert len(here) == len(there) == 6
    for a, b in zip(here, there):
        same_batch(a, b)


# ---- the shapes world as a source: exactly today's training data ----------------------------------

def test_shapes_source_reproduces_the_training_loops_batches(tiny_harmon):
    from segros.train import make_i2t_batch, make_t2i_batch, shapes_data

    cfg = get_preset("small").replace(n_train=24, n_qa_train=24, batch_size=4, world_seed=0)
    data = shapes_data(cfg)
    t2i, i2t = S.shapes_sources(cfg)
    assert [(a.tobytes(), c) for a, c in t2i.items] == [(a.tobytes(), c) for a, c in data.t2i]
    assert [(a.tobytes(), q, x) for a, q, x in i2t.items] == [(a.tobytes(), q, x) for a, q, x in data.i2t]
    for start in (0, 5):  # from the start, and resumed at micro-step 5
        for world in (1, 2):
            loaders = [S.make_loader(t2i, tiny_harmon.preprocess_images, batch_size=4, seed=cfg.seed, start=start,
                                     stop=start + 3, rank=r, world_size=world) for r in range(world)]
            qa = [S.make_loader(i2t, tiny_harmon.preprocess_images, batch_size=4, seed=cfg.seed + S.I2T_SEED_OFFSET,
                                start=start, stop=start + 3, rank=r, world_size=world) for r in range(world)]
            for j, parts in enumerate(zip(*loaders)):
                got = {"pixels": torch.cat([p["pixels"] for p in parts]), "texts": sum([p["texts"] for p in parts], [])}
                same_batch(S.t2i_model_batch(tiny_harmon, got), make_t2i_batch(tiny_harmon, data, cfg, start + j))
            for j, parts in enumerate(zip(*qa)):
                got = {"pixels": torch.cat([p["pixels"] for p in parts]),
                       "questions": sum([p["questions"] for p in parts], []),
                       "answers": sum([p["answers"] for p in parts], [])}
                same_batch(S.i2t_model_batch(tiny_harmon, got), make_i2t_batch(tiny_harmon, data, cfg, start + j))


# ---- bad data ----------------------------------------------------------------------------------

def epoch_stats(src, world=1, batch=4, seed=0, steps=N // 4 * 3):
    stats = []
    for r in range(world):
        st = S.DataStats(len(src))
        for raw in S.make_loader(src, lambda ims: torch.zeros(len(ims), 3, 2, 2), batch_size=batch, seed=seed,
                                 stop=steps, rank=r, world_size=world):
            assert CORRUPT not in raw["indices"] and EMPTY not in raw["indices"]
            st.update(raw)
        stats.append(st)
    return stats


def test_bad_samples_are_counted_and_replaced_by_the_next(files):
    src = S.open_t2i(files["wds"], cache_dir=files["cache"])
    with pytest.raises(S.BadSample, match="undecodable image"):
        src.get(CORRUPT)
    with pytest.raises(S.BadSample, match="empty caption"):
        src.get(EMPTY)
    (st,) = epoch_stats(src)
    asked = [i for k in range(12) for i in S.batch_indices(N, 4, k, 0)]
    assert st.skipped["undecodable image"] == asked.count(CORRUPT) > 0
    assert st.skipped["empty caption"] == asked.count(EMPTY) > 0
    assert st.seen == len(asked) + st.n_skipped
    assert any("shard-00000.tar:00003: undecodable image" in e for e in st.examples)
    row = S.stats_row(st, None, world_size=1)
    assert row["world_size"] == 1 and row["t2i_skipped"] == st.n_skipped and row["t2i_seen"] == st.seen
    assert row["t2i_skipped_empty_caption"] == asked.count(EMPTY)
    # two processes: each counts its shard; the sums are the one-process counts
    total = sum(s.to_tensor() for s in epoch_stats(src, world=2))
    assert torch.equal(total, st.to_tensor())
    again = S.DataStats.from_tensor(total, N)
    again.load_state_dict(st.state_dict())
    assert again == st


def test_skipped_fraction_above_the_threshold_stops(files):
    src = S.open_t2i(files["wds"], cache_dir=files["cache"])
    (st,) = epoch_stats(src)
    S.check_skips(st, 0.5, "wds")  # 12.5% unusable: goes on under 50%
    with pytest.raises(S.BadDataError, match=r"wds: \d+ of \d+ samples tried were unusable .*max_skip_frac 1%.*"
                                             r"undecodable image.*shard-00000.tar:0000[39]"):
        S.check_skips(st, 0.01, "wds")
    # judged only after min(n, 10 / max_skip_frac) tries; max_skip_frac = 0: the first skip stops
    assert S.judged_from(10 ** 6, 0.01) == 1000 and S.judged_from(16, 0.01) == 16 and S.judged_from(16, 0.0) == 1
    early = S.DataStats(10 ** 6, seen=999, skipped={**{r: 0 for r in S.REASONS}, "empty caption": 500})
    S.check_skips(early, 0.01, "big")
    early.seen = 1000
    with pytest.raises(S.BadDataError):
        S.check_skips(early, 0.01, "big")
    one = S.DataStats(16, seen=1, skipped={**{r: 0 for r in S.REASONS}, "missing image": 1})
    with pytest.raises(S.BadDataError, match="0%"):
        S.check_skips(one, 0.0, "strict")


def test_a_source_with_no_usable_sample_stops(tmp_path):
    write_tar(tmp_path / "bad.tar", sum([[(f"{i:05d}.jpg", b"nope"), (f"{i:05d}.txt", b"a red circle")]
                                         for i in range(4)], []))
    src = S.open_t2i(str(tmp_path / "bad.tar"), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(S.BadDataError, match="no sample of .* is usable .*undecodable image"):
        S.DecodedDataset(src, lambda ims: torch.zeros(len(ims), 3, 2, 2))[0]


def test_truncated_jpeg_is_undecodable(tmp_path):
    data = jpeg(0)
    with pytest.raises(S.BadSample, match="undecodable image"):
        S.decode_image(data[: len(data) // 2], "cut")
    with pytest.raises(S.BadSample, match="missing image"):
        S.decode_image("nowhere.jpg", "gone", str(tmp_path))
    assert S.decode_image({"bytes": data, "path": None}, "ok").size == (40, 30)


# ---- clear stops at construction ---------------------------------------------------------------

def test_unknown_column_and_missing_paths_stop_at_construction(files, tmp_path):
    with pytest.raises(S.SourceError, match=r"t2i_caption='caption_en': no such column .*columns: image, prompt, llava"):
        S.open_t2i(files["parquet"], caption="caption_en", cache_dir=files["cache"])
    with pytest.raises(S.SourceError, match=r"t2i_data='/no/such/folder': no such file or folder"):
        S.open_t2i("/no/such/folder")
    with pytest.raises(S.SourceError, match="the glob matches no file"):
        S.open_t2i(str(tmp_path / "*.tar"))
    with pytest.raises(S.SourceError, match=r"i2t_data=.*missing.json.*no such file"):
        S.open_llava(str(tmp_path / "missing.json"), files["llava_root"])
    with pytest.raises(S.SourceError, match=r"i2t_image_root=.*none of the first 16 images"):
        S.open_llava(files["llava"], str(tmp_path), cache_dir=files["cache"])
    with pytest.raises(S.SourceError, match="i2t_image_root=.*no such folder"):
        S.open_llava(files["llava"], str(tmp_path / "nope"))
    import datasets

    datasets.Dataset.from_dict({"prompt": ["a red circle"]}).save_to_disk(str(tmp_path / "noimage"))
    with pytest.raises(S.SourceError, match=r"none of the columns image, jpg.*its columns: prompt"):
        S.open_t2i(str(tmp_path / "noimage"))


def test_build_sources_checks_before_any_step(files):
    cfg = get_preset("small").replace(t2i_data=files["parquet"], t2i_caption="nope")
    with pytest.raises(S.SourceError, match="nope"):
        S.build_sources(cfg, cache_dir=files["cache"])
    cfg = get_preset("small").replace(t2i_data=files["wds"], i2t_data=files["llava"], i2t_image_root=files["llava_root"])
    srcs = S.build_sources(cfg, cache_dir=files["cache"])
    assert srcs.t2i.kind == "t2i" and srcs.i2t.kind == "i2t" and len(srcs.t2i) == N
    assert S.build_sources(cfg.replace(lam=0.0), cache_dir=files["cache"]).i2t is None
    shapes = S.build_sources(get_preset("small").replace(n_train=8, n_qa_train=8, batch_size=4))
    assert len(shapes.t2i) == 8 and len(shapes.i2t) == 8 and "shapes" in shapes.t2i.name


def test_hub_ids_go_to_datasets(monkeypatch):
    import datasets

    calls = []

    def fake(path, **kw):
        calls.append((path, kw.get("split")))
        return datasets.Dataset.from_dict(hf_rows(2), features=hf_features())

    monkeypatch.setattr(datasets, "load_dataset", fake)
    src = S.open_t2i("brivangl/midjourney-v6-llava")
    assert calls == [("brivangl/midjourney-v6-llava", "train")] and src.describe()["caption"] == "prompt"

    def offline(path, **kw):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(S.SourceError, match="not a local path, and loading it as a hub dataset failed: offline"):
        S.open_t2i("someone/missing")


# ---- LLaVA-Instruct -----------------------------------------------------------------------------

def test_conversation_pairs_follow_the_official_reading():
    conv = [{"from": "gpt", "value": "hi"}, {"from": "human", "value": "<image>\nWhat is it?"},
            {"from": "gpt", "value": "A cat."}, {"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "Grey."},
            {"from": "human", "value": "dangling"}]
    assert S.conversation_pairs(conv) == [("What is it?", "A cat."), ("Colour?", "Grey.")]
    assert S.conversation_pairs(conv, "first") == [("What is it?", "A cat.")]
    assert S.conversation_pairs([{"from": "human", "value": "q <image>"}, {"from": "human", "value": "x"}]) == []
    with pytest.raises(ValueError, match="turns"):
        S.conversation_pairs(conv, "last")


def test_llava_source_pairs_and_empty_answers(files):
    src = S.open_llava(files["llava"], files["llava_root"], cache_dir=files["cache"])
    expect = [(r, t, q, a) for r in files["records"] if "image" in r
              for t, (q, a) in enumerate(S.conversation_pairs(r["conversations"]))]
    assert len(src) == len(expect) == 15 + 6  # record 13 is text-only; records 0, 3, ..., 15 have two turns
    for i, (rec, t, q, a) in enumerate(expect):
        if not a.strip():
            with pytest.raises(S.BadSample, match=r"llava.json\[000011, turn 0\]: empty answer"):
                src.get(i)
            continue
        image, question, answer = src.get(i)
        assert (question, answer) == (q, a) and "<image>" not in question and image.size == (36, 36)
    assert S.open_llava(files["llava"], files["llava_root"], turns="first", cache_dir=files["cache"]).ds.num_rows == 15
    st = S.DataStats(len(src))
    for raw in S.make_loader(src, lambda ims: torch.zeros(len(ims), 3, 2, 2), batch_size=4, seed=0, stop=10):
        st.update(raw)
    assert st.skipped["empty answer"] > 0 and st.n_skipped == st.skipped["empty answer"]


# ---- no silent fallback ------------------------------------------------------------------------

@pytest.mark.parametrize("preset,dataset,llava", [
    ("paper-harmon-0.5b", "MidjourneyV6", True), ("paper-harmon-1.5b", "BLIP3o-60k", True),
    ("paper-showo-256", "MidjourneyV6", True), ("paper-openuni-1.6b", "MidjourneyV6", False)])
def test_paper_presets_without_data_name_the_papers_dataset(preset, dataset, llava):
    cfg = get_preset(preset)
    with pytest.raises(S.NoDataSourceError) as err:
        S.require_data_source(cfg)
    msg = str(err.value)
    assert f"on {dataset} (Table 1)" in msg and cfg.backbone in msg and ("LLaVA-Instruct" in msg) == llava
    ok = cfg.replace(t2i_data="/data/x/*.tar", **({"i2t_data": "/d/l.json", "i2t_image_root": "/d"} if llava else {}))
    S.require_data_source(ok)
    S.require_data_source(cfg.replace(t2i_data="shapes", i2t_data="shapes"))  # asked for explicitly
    S.require_data_source(get_preset("small"))  # the tiny families fall back to the shapes world
    S.require_data_source(cfg.replace(method="none"))  # "w/o SFT" evaluates the checkpoint, trains nothing


# ---- the config fields -------------------------------------------------------------------------

def test_data_fields_validate_and_coerce():
    c = TrainConfig().replace(t2i_data="/d/*.tar", t2i_caption="txt", max_skip_frac="0.05")
    assert (c.t2i_data, c.t2i_caption, c.max_skip_frac) == ("/d/*.tar", "txt", 0.05)
    assert TrainConfig.from_dict(c.to_dict()) == c
    assert TrainConfig().replace(t2i_data="none").t2i_data is None
    for bad, match in [(dict(t2i_caption="txt"), "t2i_caption .*set t2i_data"),
                       (dict(i2t_data="/d/l.json"), "needs i2t_image_root"),
                       (dict(i2t_image_root="/d"), "i2t_image_root .*set i2t_data"),
                       (dict(max_skip_frac=1.5), "max_skip_frac"), (dict(t2i_data=" "), "t2i_data")]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad)


def test_new_fields_keep_every_stored_hash():
    from segros import store

    root = os.path.join(os.path.dirname(__file__), "..", "runs")
    stored = sorted(glob.glob(os.path.join(root, "*", "*", "config.json")))
    assert len(stored) > 10
    from segros.presets import METHOD_NEUTRAL

    for path in stored:
        meta = json.loads(open(path).read())
        config = TrainConfig.from_dict(meta["config"])
        # a hinted run stored before the fields its results depend on (stopwords, text_embeddings,
        # cond_dropout; docs/fidelity.md) must not be reused: its hash changed. Every other run keeps it.
        stale = any(k not in meta["config"] for k, (methods, _) in METHOD_NEUTRAL.items() if config.method in methods)
        assert (store.config_hash(config) == meta["hash"]) != stale, path
    small = get_preset("small")
    assert "t2i_data" not in small.to_dict() and small.to_dict()["t2i_data"] is None
    moved = small.replace(t2i_data="/d/*.tar")
    assert store.config_hash(moved) != store.config_hash(small) and moved.to_dict()["t2i_data"] == "/d/*.tar"
    assert store.run_name(moved) == "segros_t2i_data=-d-*.tar"
    assert store.run_name(small.replace(max_skip_frac=0.05)) == "segros_max_skip_frac=0.05"
