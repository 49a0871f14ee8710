"""Evaluation: greedy generation with Tunix's Sampler, then parse and score each item."""
