"""Evaluation: COCO box metrics."""
