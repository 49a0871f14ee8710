"""Gemma3 models: presets, building and initialising them, their size, checkpoints on disk."""
