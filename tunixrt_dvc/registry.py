"""The names params.yaml is validated against: plain data, below every package that uses them.

Model presets: `tiny` is built from the `model` section's dimensions and trains from random init;
the others are Tunix's Gemma3 architectures (the named `ModelConfig` factory) and load their
weights from `model.checkpoint`. The -it and -pt variants of a size share one architecture.
Imports nothing, so params.yaml is validated without JAX.
"""

from __future__ import annotations

TINY = "tiny"

# preset name -> the `tunix.models.gemma3.model.ModelConfig` factory method; None: from params.
PRESETS: dict[str, str | None] = {
    TINY: None,
    "gemma3-270m": "gemma3_270m",
    "gemma3-1b": "gemma3_1b_pt",
    "gemma3-4b": "gemma3_4b_pt",
    "gemma3-12b": "gemma3_12b_pt",
    "gemma3-27b": "gemma3_27b_pt",
}

DTYPES = ("float32", "bfloat16")

# Gemma3's weight-holding modules that LoRA can adapt (`train.lora.targets`): the attention
# projections (einsums) and the MLP's linears.
LORA_TARGETS = ("q_einsum", "kv_einsum", "attn_vec_einsum", "gate_proj", "up_proj", "down_proj")
QUANTIZATIONS = ("nf4", "int8")  # QLoRA: how the frozen base weights are stored

# The formatting recipes (`format.recipe`): `tunixrt_dvc.text.recipes.RECIPES` implements each.
RECIPE_NAMES = ("reasoning_tags", "tunix_rt", "answer_only")
