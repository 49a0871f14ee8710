"""tunixrt-dvc: reproducible Gemma SFT on reasoning traces with Tunix, driven by DVC."""

__version__ = "0.1.0"
