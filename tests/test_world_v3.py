"""World v3 (segros.data.shapes.GridWorld) and its layout/colour codecs (segros.data.image_tokenizer),
behind world="v3" and the small-v3 / small-showo-v3 presets; world v1 stays the default."""

import re

import numpy as np
import pytest
import torch

from segros import store
from segros.data.image_tokenizer import (LayoutColorCodec, LayoutColorLatents, fit_layout_color_codec,
                                         images_to_pixels, pixels_to_uint8)
from segros.data.shapes import ALT_WORDS, GridWorld, ShapesWorld, make_world, training_caption
from segros.eval.geneval import evaluate_image
from segros.eval.shapes_detector import detect
from segros.presets import PRESETS, TrainConfig, get_preset


@pytest.fixture(scope="module")
def world():
    return make_world("v3", image_size=64, seed=0)


@pytest.fixture(scope="module")
def codec(world):
    return fit_layout_color_codec(images_to_pixels([s.image for s in world.split("pretrain", 96)]), 8, 10, 16)


def test_make_world_versions():
    assert type(make_world("v1")) is ShapesWorld and type(make_world("v3")) is GridWorld
    with pytest.raises(ValueError, match="world must be one of"):
        make_world("v2")


def test_one_object_per_cell(world):
    cells = {world.cell_box(c) for c in range(16)}
    for s in world.split("finetune", 60) + world.split("eval", 60):
        boxes = [o.box for o in s.objects]
        assert all(b in cells for b in boxes) and len(set(boxes)) == len(boxes)
        if len(s.objects) == 2 and s.relation is not None and s.objects[0].shape != s.objects[1].shape:
            rel, i, j = s.relation
            assert rel in s.geneval_caption


def test_caption_styles_per_split(world):
    fine = world.split("finetune", 80)
    for s in fine:  # dense and exact: every object's colour and shape is named
        for o in s.objects:
            assert o.color in s.caption and o.shape in s.caption
    pre = world.split("pretrain", 200)
    partial = sum(any(o.color not in s.caption or o.shape not in s.caption for o in s.objects) for s in pre)
    assert partial > 30  # alt-text leaves objects or colours out
    pairs = [s for s in pre if s.relation is not None and len({o.color for o in s.objects}) == 2
             and len({o.shape for o in s.objects}) == 2]
    stated = sum(any(p in s.caption for p in ("left", "right", "above", "below", "on top", "under")) for s in pairs)
    assert 0 < stated < 0.4 * len(pairs)  # relations rarely stated
    wrong = 0
    for s in pairs:  # a colour bound to the other object: "a <colour of b> <shape of a>"
        a, b = s.objects
        wrong += f"{b.color} {a.shape}" in s.caption or f"{a.color} {b.shape}" in s.caption
    assert wrong > 0
    # the scene itself does not depend on the caption style
    assert np.array_equal(world.scene("pretrain", 3).image, ShapesWorld.scene(world, "pretrain", 3).image)


def test_held_out_stays_held_out(world):
    for split in ("pretrain", "finetune"):
        assert not any(world.is_held_out(s) for s in world.split(split, 150))
    assert any(world.is_held_out(s) for s in world.split("eval", 60))


def test_vocabulary_covers_captions(world):
    vocab = set(world.vocabulary())
    assert set(ALT_WORDS) <= vocab
    for s in world.split("pretrain", 100) + world.split("finetune", 50):
        assert set(s.caption.split()) <= vocab, s.caption
        assert re.fullmatch(r"[a-z0-9 ]+", s.caption)


def test_ground_truth_and_codec_round_trip_keep_geneval(world, codec):
    meta = world.geneval_metadata(48, seed=0)
    images = [world.render_from_metadata(m, seed=i).image for i, m in enumerate(meta)]
    px = images_to_pixels(images)
    latents = LayoutColorLatents(8, 10, 16, 64)
    latents.load_state_dict(codec.state_dict())
    for name, imgs in (("gt", images), ("codes", list(pixels_to_uint8(codec.decode(codec.encode(px))))),
                       ("latents", list(pixels_to_uint8(latents.decode(latents.encode(px)))))):
        acc = np.mean([evaluate_image(m, detect(im))[0] for m, im in zip(meta, imgs)])
        assert acc == 1.0, name


def test_codec_codes_a_held_out_pair(world, codec):
    """Layout and colour are coded apart, so a pair never seen in the fit set round-trips."""
    s = world.render_from_metadata({"tag": "colors", "include": [{"class": "star", "count": 1, "color": "red"}],
                                    "prompt": "a photo of a red star"}, seed=0)
    codes = codec.encode(images_to_pixels([s.image]))
    assert codes.shape == (1, 16) and int((codes > 0).sum()) == 1
    assert evaluate_image(s.meta["geneval"], detect(pixels_to_uint8(codec.decode(codes))[0]))[0]
    with pytest.raises(ValueError, match="codes must lie"):
        codec.decode(torch.full((1, 16), codec.num_codes))


def test_codec_is_not_the_identity(codec, world):
    """A decode is a clean render (flat gray), not the input: the codec keeps layout and colour only."""
    img = world.scene("eval", 0).image
    rec = pixels_to_uint8(codec.decode(codec.encode(images_to_pixels([img]))))[0]
    assert not np.array_equal(rec, img)
    assert (rec == 128).mean() > 0.5


def test_world_switch_keeps_hashes():
    small = get_preset("small")
    assert "world" not in small.to_dict() and small.to_dict()["world"] == "v1"
    assert store.config_hash(small) == store.config_hash(TrainConfig(init_from="auto"))
    assert store.config_hash(small.replace(world="v3")) != store.config_hash(small)
    with pytest.raises(ValueError, match="world"):
        small.replace(world="v9")


@pytest.mark.parametrize("preset", ["small-v3", "small-showo-v3"])
def test_v3_presets_build(preset):
    from segros.backbones.registry import from_config

    config = PRESETS[preset]
    assert config.world == "v3" and config.eval_prompts * len(config.eval_seeds) >= 1000
    model = from_config(config)
    assert model.target_grid_hw == (4, 4)
    if model.family == "tiny-showo":
        assert isinstance(model.image_tokenizer, LayoutColorCodec) and model.hint_grid_hw == (6, 6)
    else:
        assert isinstance(model.autoencoder, LayoutColorLatents)


def test_world_kwargs_reach_the_world_and_keep_hashes():
    """``TrainConfig.world_kwargs``: world v3's knobs (alt-caption noise, grid), left out of the hash at
    ``{}``, refused on world v1 and for a knob the world lacks; with every alt-text noise at 0 and
    relations always stated, a pretraining caption names every object, colour and the relation."""
    from segros.data.shapes import config_world
    from segros.pipeline import base_config
    from segros.train.data import shapes_data

    v3 = get_preset("small-showo-v3")
    assert "world_kwargs" not in v3.to_dict() and store.config_hash(v3) == store.config_hash(v3.replace(world_kwargs={}))
    exact = v3.replace(world_kwargs='{"alt_drop": 0, "alt_no_color": 0, "alt_swap": 0, "alt_relation": 1}')
    assert exact.world_kwargs["alt_relation"] == 1 and store.config_hash(exact) != store.config_hash(v3)
    assert base_config(exact).world_kwargs == exact.world_kwargs  # the base is pretrained on that world
    w = config_world(exact)
    assert w.alt == dict(drop=0, no_color=0, swap=0, relation=1)
    for scene in w.split("pretrain", 40):
        words = scene.caption.split()
        assert all(o.color in words and (o.shape in words or o.shape + "s" in words or o.shape + "es" in words)
                   for o in scene.objects), scene.caption
        if scene.relation is not None and len({(o.color, o.shape) for o in scene.objects}) > 1:
            assert " and " not in scene.caption, scene.caption
        assert "some" not in words
    noisy = [s.caption for s in config_world(v3).split("pretrain", 40)]
    assert noisy != [s.caption for s in w.split("pretrain", 40)]
    # the finetune split (the SFT data) does not depend on the alt-text knobs
    assert [c for _, c in shapes_data(exact).t2i[:20]] == [c for _, c in shapes_data(v3).t2i[:20]]
    with pytest.raises(ValueError, match="world v1 takes no world_kwargs"):
        get_preset("small").replace(world_kwargs={"alt_drop": 0})
    with pytest.raises(ValueError, match="no knob"):
        config_world(v3.replace(world_kwargs={"alt_dropp": 0}))
