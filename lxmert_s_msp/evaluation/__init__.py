"""Evaluation: the metrics, retrieval's rankings and the held-out scores of a pre-training run."""
