"""VQA backends for DPG-Bench (:mod:`segros.eval.dpg`): one small interface, two implementations.

``backend.name`` is written into the results; ``backend.answer(image, questions)`` returns one
answer string per question about one PIL image (ELLA compares each answer with ``"yes"`` exactly).

- :class:`MPLUGVQA` — ELLA's judge: mPLUG-large fine-tuned on COCO VQA
  (``damo/mplug_visual-question-answering_coco_large_en``) through modelscope's
  ``pipeline(Tasks.visual_question_answering, model=..., device=...)``, called once per question
  with ``{"image": image, "question": question}`` and read from ``result["text"]``, exactly as
  ELLA's ``compute_dpg_bench.py`` does. Needs ``pip install "modelscope[multi-modal]"`` (which pulls
  torchvision, timm, fairseq, decord, ...) and the model, downloaded by modelscope or given as a
  local folder.
- :class:`TransformersVQA` — a BLIP VQA model from transformers (``BlipForQuestionAnswering``,
  e.g. a local copy of ``Salesforce/blip-vqa-capfilt-large``), loaded from a folder or hub id.
  Scores from it are not ELLA's numbers (another judge); the results say which model answered.
  The image is encoded once per crop; questions of equal token length are answered as one batch
  without padding, so each answer equals what ``model.generate`` gives for that question alone.
"""

from __future__ import annotations

from PIL import Image

MPLUG_MODEL = "damo/mplug_visual-question-answering_coco_large_en"


class MPLUGVQA:
    """mPLUG-large VQA through modelscope, as ELLA calls it (``device`` as ELLA passes accelerate's, e.g. ``"cuda:0"``)."""

    def __init__(self, model: str = MPLUG_MODEL, device: str = "cuda"):
        try:
            from modelscope.pipelines import pipeline
            from modelscope.utils.constant import Tasks
        except ImportError as e:
            raise ImportError(f"the mPLUG backend needs modelscope ({e}); install it with "
                              "`pip install \"modelscope[multi-modal]\"` in an environment whose torchvision matches torch, "
                              "or use the transformers backend (build_vqa('transformers', model=<BLIP VQA folder>))") from e
        self.model = model
        self.pipeline = pipeline(Tasks.visual_question_answering, model=model, device=device)
        self.name = f"mplug (modelscope): {model}"

    def answer(self, image: Image.Image, questions: list[str]) -> list[str]:
        return [self.pipeline({"image": image, "question": q})["text"] for q in questions]


class TransformersVQA:
    """A BLIP VQA model (``BlipForQuestionAnswering``) from a folder / hub id, or given as ``model`` + ``processor``.

    ``max_new_tokens`` bounds the answer (mPLUG's own limit is 10 tokens); ``num_beams`` and other
    ``generate_kwargs`` go to the text decoder's ``generate``. ``dtype`` (e.g. ``torch.float16``)
    applies when loading from ``model_path``.
    """

    def __init__(self, model_path: str | None = None, *, model=None, processor=None, device: str = "cpu",
                 dtype=None, max_new_tokens: int = 10, name: str | None = None, **generate_kwargs):
        import torch
        from transformers import AutoProcessor, BlipForQuestionAnswering

        if model is None:
            if model_path is None:
                raise ValueError("give model_path (a BLIP VQA folder or hub id) or model= and processor=")
            if isinstance(dtype, str):
                dtype = getattr(torch, dtype)
            model = BlipForQuestionAnswering.from_pretrained(model_path, dtype=dtype)
        if processor is None:
            if model_path is None:
                raise ValueError("give processor= with model=")
            processor = AutoProcessor.from_pretrained(model_path)
        if not isinstance(model, BlipForQuestionAnswering):
            raise TypeError(f"TransformersVQA runs BlipForQuestionAnswering models, got {type(model).__name__}")
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.generate_kwargs = {"max_new_tokens": max_new_tokens, **generate_kwargs}
        self.name = name or f"transformers {type(model).__name__}: {model_path or model.config.name_or_path or 'in-memory'}"

    def answer(self, image: Image.Image, questions: list[str]) -> list[str]:
        import torch

        if not questions:
            return []
        model, tok = self.model, self.processor.tokenizer
        dtype = next(model.parameters()).dtype
        answers: list[str | None] = [None] * len(questions)
        with torch.no_grad():
            pixel_values = self.processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
            image_embeds = model.vision_model(pixel_values=pixel_values.to(self.device, dtype))[0]   # once per crop
            ids = [tok(q)["input_ids"] for q in questions]
            # questions of equal token length form one batch without padding, so each answer is what
            # model.generate gives for that question alone (no padding mask to get right or wrong)
            by_length: dict[int, list[int]] = {}
            for i, seq in enumerate(ids):
                by_length.setdefault(len(seq), []).append(i)
            for idx in by_length.values():
                input_ids = torch.tensor([ids[i] for i in idx], dtype=torch.long, device=self.device)
                embeds = image_embeds.expand(len(idx), -1, -1)
                question_embeds = model.text_encoder(
                    input_ids=input_ids, attention_mask=torch.ones_like(input_ids), encoder_hidden_states=embeds,
                    encoder_attention_mask=torch.ones(embeds.shape[:-1], dtype=torch.long, device=self.device),
                    return_dict=False)[0]
                cfg = model.config.text_config
                bos = torch.full((len(idx), 1), model.decoder_start_token_id, dtype=torch.long, device=self.device)
                out = model.text_decoder.generate(
                    input_ids=bos, eos_token_id=cfg.sep_token_id, pad_token_id=cfg.pad_token_id,
                    encoder_hidden_states=question_embeds,
                    encoder_attention_mask=torch.ones(question_embeds.shape[:-1], dtype=torch.long, device=self.device),
                    **self.generate_kwargs)
                # out = [bos, answer tokens...]: decode the answer only, whether or not bos is a special token
                for i, text in zip(idx, tok.batch_decode(out[:, 1:], skip_special_tokens=True)):
                    answers[i] = text.strip()
        return answers


def build_vqa(kind: str, model: str | None = None, device: str = "cuda", dtype=None):
    """``"mplug"`` (ELLA's judge; ``model`` defaults to its modelscope id) or ``"transformers"`` (``model`` = BLIP VQA folder)."""
    if kind == "mplug":
        return MPLUGVQA(model or MPLUG_MODEL, device=device)
    if kind == "transformers":
        if model is None:
            raise ValueError("the transformers backend needs model= (a BlipForQuestionAnswering folder or hub id)")
        return TransformersVQA(model, device=device, dtype=dtype)
    raise ValueError(f"unknown VQA backend {kind!r}; choose 'mplug' or 'transformers'")
