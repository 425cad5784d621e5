"""Datasets: the offline shapes world (synthetic images + GenEval-style captions)."""

from segros.data.shapes import COLORS, SHAPES, Obj, Scene, ShapesWorld, render

__all__ = ["COLORS", "SHAPES", "Obj", "Scene", "ShapesWorld", "render"]
