"""params.yaml for tests: the repository's own file with some values overridden.

params.yaml is the only place defaults live, so tests start from it rather than from code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tunixrt_dvc.params import FormatParams, ModelParams, Params, TrainParams

REPO = Path(__file__).resolve().parents[2]


def params_dict(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The repository's params.yaml as a dict, each section updated with `overrides`."""
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def params(overrides: dict[str, Any] | None = None) -> Params:
    return Params.model_validate(params_dict(overrides))


def write_params(path: Path, overrides: dict[str, Any] | None = None) -> Path:
    path.write_text(yaml.safe_dump(params_dict(overrides), sort_keys=False))
    return path


def model_params(**kw: Any) -> ModelParams:
    return ModelParams.model_validate({**params_dict()["model"], **kw})


def format_params(**kw: Any) -> FormatParams:
    return FormatParams.model_validate({**params_dict()["format"], **kw})


def train_params(**kw: Any) -> TrainParams:
    return TrainParams.model_validate({**params_dict()["train"], **kw})


# A model and run small enough for tests to train in seconds, and large enough to learn a little.
SMALL_TRAINING: dict[str, Any] = {
    "seed": 0,
    "format": {"max_len": 192, "vocab_size": 256, "val_fraction": 0.05},
    "model": {
        "num_layers": 1,
        "embed_dim": 32,
        "hidden_dim": 64,
        "num_heads": 2,
        "head_dim": 16,
        "num_kv_heads": 1,
    },
    "train": {
        "steps": 12,
        "batch_size": 4,
        "seq_len": 256,
        "learning_rate": 0.01,
        "warmup_steps": 2,
        "eval_every": 6,
        "checkpoint_every": 2,
        "compute_dtype": "bfloat16",  # as the default pipeline trains
    },
}


def write_small_params(path: Path, overrides: dict[str, Any] | None = None) -> Path:
    """The repository's params with `SMALL_TRAINING`, then `overrides`, applied per section."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in SMALL_TRAINING.items()}
    for key, value in (overrides or {}).items():
        known = merged.get(key)
        merged[key] = {**known, **value} if isinstance(value, dict) and known else value
    return write_params(path, merged)
