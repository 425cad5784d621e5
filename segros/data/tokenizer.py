"""The word-level text tokenizer of the tiny families, built offline from a word list.

A real ``tokenizers`` WordLevel model wrapped in ``transformers.PreTrainedTokenizerFast``, so it
saves, loads and pads like any hub tokenizer. Nothing is downloaded: the vocabulary is whatever
texts you pass (normally ``ShapesWorld().vocabulary()``).

Conventions (written down here):

* Text is lower-cased, then split on whitespace and punctuation (``Whitespace`` pre-tokenizer:
  ``\\w+|[^\\w\\s]+``); every piece of every given text becomes one vocabulary entry.
* Special tokens have fixed ids: [PAD]=0, [BOS]=1, [EOS]=2, [UNK]=3, [SEP]=4 (the separator
  between a question and its answer in understanding batches). Words follow in sorted order, so
  the same texts always give the same ids.
* ``tokenizer(text)`` returns ``[BOS] words [EOS]``; padding is on the right with [PAD].
* ``decode`` joins words with single spaces (WordLevel has no subword merging).

:func:`tiny_tokenizer` is the one vocabulary every tiny random-weight build shares (the tiny real
adapters of the tests and the tiny families): the shapes world's words plus the words of the real
adapters' chat prompts (:data:`ADAPTER_TEXTS`).
"""

from __future__ import annotations

import os
from typing import Iterable

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from segros.data.shapes import ShapesWorld

SPECIALS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]", "[SEP]"]
# the real adapters' prompt words: Qwen's chat template around the unconditional "Generate an image."
# (one string, because prompts are encoded in one piece: "image." + "<|im_end|>" gives the piece ".<|"),
# Harmon's / OpenUni's "Generate an image: " prefix, and the roles of the chat template
ADAPTER_TEXTS = ("<|im_start|>user\nGenerate an image.<|im_end|>\n<|im_start|>assistant\n", "Generate an image: ",
                 "user assistant")


def _pieces(texts: Iterable[str]) -> list[str]:
    """Sorted unique lower-cased word/punctuation pieces of ``texts``."""
    norm = normalizers.Lowercase()
    pre = pre_tokenizers.Whitespace()
    words = set()
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts[{i}] must be a str, got {type(text).__name__}")
        words.update(piece for piece, _ in pre.pre_tokenize_str(norm.normalize_str(text)))
    return sorted(words - set(SPECIALS))


def build_text_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer whose vocabulary is the specials plus every piece of ``texts``."""
    words = _pieces(texts)
    if not words:
        raise ValueError("texts must contain at least one word")
    vocab = {tok: i for i, tok in enumerate(SPECIALS + words)}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins word pieces with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]",
        unk_token="[UNK]", sep_token="[SEP]", padding_side="right")


def save_text_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: str) -> None:
    """Write ``tokenizer.json`` and the transformers side files into ``folder``."""
    os.makedirs(folder, exist_ok=True)
    tokenizer.save_pretrained(folder)


def load_text_tokenizer(folder: str) -> PreTrainedTokenizerFast:
    """Load a tokenizer written by :func:`save_text_tokenizer` (offline, from the folder only)."""
    if not os.path.isfile(os.path.join(folder, "tokenizer.json")):
        raise ValueError(f"folder {folder!r} holds no tokenizer.json")
    return PreTrainedTokenizerFast.from_pretrained(folder)


def tiny_tokenizer(extra_texts: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """The word-level tokenizer of the tiny random-weight builds: ``ShapesWorld().vocabulary()``,
    :data:`ADAPTER_TEXTS` and ``extra_texts`` (a family's own prompt words)."""
    return build_text_tokenizer([*ShapesWorld().vocabulary(), *ADAPTER_TEXTS, *extra_texts])
