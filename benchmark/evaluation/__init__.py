"""Scoring a model on every criterion: zsRE edits, multiple choice, perplexity."""
