"""A tiny byte-level BPE tokenizer shaped like InternVL3's (Qwen2) one, for the OpenUni and Harmon tests.

Imported by ``test_openuni_parity.py``, ``openuni_driver.py``, ``test_harmon_parity.py``,
``harmon_driver.py`` (official environments) and ``tests/test_real_backbones.py``; only ``tokenizers`` and ``transformers`` are needed. ``train_spec``
learns a small vocabulary offline (nothing is downloaded); ``build(spec)`` rebuilds the same
tokenizer from plain data in any ``tokenizers`` version, so both environments tokenize identically.

Qwen2's pre-tokenizer: the regex split below, then byte-level mapping without a prefix space; the
chat and image markers are special tokens; no BOS/EOS is added (as the InternVL3 tokenizer).
"""

from __future__ import annotations

QWEN2_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
               r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"]
CORPUS = [
    "Generate an image: a red circle", "Generate an image: two blue squares", "Generate an image.",
    "a red circle left of a blue square", "an apple and a dog", "a photo of a cat", "user", "assistant",
    "three green triangles above a yellow star", "Generate an image: a dog on the left and a cat on the right.",
]


def _pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def train_spec(vocab_size: int = 400, extra: tuple = ()) -> dict:
    """{"vocab": {token: id}, "merges": [[a, b], ...], "specials": [...]} learned from ``CORPUS`` + ``extra``."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _pre_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((CORPUS + list(extra)) * 4, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [m.split(" ") if isinstance(m, str) else list(m) for m in model["merges"]]
    return {"vocab": dict(model["vocab"]), "merges": merges, "specials": list(SPECIALS)}


def build(spec: dict, eos_token: str | None = None):
    """``PreTrainedTokenizerFast`` from ``train_spec()``'s data (pad = ``<|endoftext|>``, right padding;
    ``eos_token`` e.g. ``"<|im_end|>"``, Qwen2.5-Instruct's, or none as InternVL3's)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(vocab=dict(spec["vocab"]), merges=[tuple(m) for m in spec["merges"]]))
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in spec["specials"]])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token=eos_token,
                                   padding_side="right")
