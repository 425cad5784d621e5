"""Evaluation: GenEval's scoring rules and layout, and a weight-free shapes-world detector."""

from segros.eval.geneval import (
    Detection, evaluate_image, read_layout, score_layout, summarize, write_layout, write_metadata_jsonl,
)

__all__ = ["Detection", "evaluate_image", "read_layout", "score_layout", "summarize", "write_layout", "write_metadata_jsonl"]
