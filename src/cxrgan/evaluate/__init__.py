"""Evaluation: feature spaces and distribution metrics."""
