"""params.yaml: one section per stage plus shared settings, validated before any compute."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tunixrt_dvc.errors import InvalidInput, Problem

PARAMS_FILE = "params.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CorpusParams(_Section):
    """The built-in generator of show-your-work arithmetic traces."""

    n_traces: Annotated[int, Field(ge=1, le=10_000_000)] = 20_000
    store: str = "data/traces.sqlite"


class ExportParams(_Section):
    source: str = "sqlite:data/traces.sqlite"
    limit: Annotated[int, Field(ge=1)] | None = None
    since: str | None = None  # ISO-8601; an unquoted YAML date or time is taken as written

    @field_validator("since", mode="before")
    @classmethod
    def _yaml_dates_as_text(cls, v: object) -> object:
        return v.isoformat() if isinstance(v, date | datetime) else v

    on_invalid: Literal["fail", "skip"] = "fail"
    evalsets_dir: str = "evalsets"


class FormatParams(_Section):
    recipe: Literal["reasoning_tags", "tunix_rt", "answer_only"] = "reasoning_tags"
    instruction: str = ""
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.05
    max_len: Annotated[int, Field(ge=8, le=131_072)] = 128
    vocab_size: Annotated[int, Field(ge=64, le=262_144)] = 512
    tokenizer: str | None = None  # a real Gemma tokenizer.model; None trains one
    on_invalid: Literal["fail", "skip"] = "fail"


# The keys of model.PRESETS (a test keeps them in sync; params.py must not import JAX).
ModelPreset = Literal["tiny", "gemma3-270m", "gemma3-1b", "gemma3-4b", "gemma3-12b", "gemma3-27b"]


class ModelParams(_Section):
    preset: ModelPreset = "tiny"
    checkpoint: str | None = None  # local dir: safetensors or orbax; required for real sizes
    # Dimensions of the `tiny` preset (ignored by real sizes, whose architecture is Tunix's).
    num_layers: Annotated[int, Field(ge=1)] = 2
    embed_dim: Annotated[int, Field(ge=8)] = 128
    hidden_dim: Annotated[int, Field(ge=8)] = 512
    num_heads: Annotated[int, Field(ge=1)] = 4
    head_dim: Annotated[int, Field(ge=4)] = 32
    num_kv_heads: Annotated[int, Field(ge=1)] = 1
    dtype: Literal["float32", "bfloat16"] = "float32"

    @model_validator(mode="after")
    def _real_sizes_need_weights(self) -> ModelParams:
        if self.preset != "tiny" and not self.checkpoint:
            raise ValueError(f"preset {self.preset!r} needs model.checkpoint (a local directory)")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        return self


class TrainParams(_Section):
    steps: Annotated[int, Field(ge=1)] = 600
    batch_size: Annotated[int, Field(ge=1)] = 16  # packed rows per step
    seq_len: Annotated[int, Field(ge=8)] = 256  # tokens per packed row (>= format.max_len)
    learning_rate: Annotated[float, Field(gt=0.0)] = 3e-3
    warmup_steps: Annotated[int, Field(ge=0)] = 30
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    grad_clip: Annotated[float, Field(gt=0.0)] = 1.0
    # Mixed precision: the dtype of the forward/backward pass; null computes in model.dtype.
    compute_dtype: Literal["float32", "bfloat16"] | None = None
    eval_every: Annotated[int, Field(ge=1)] = 100
    checkpoint_every: Annotated[int, Field(ge=1)] = 100


class EvalParams(_Section):
    evalset: str = "evalsets/eval_v1.jsonl"
    max_new_tokens: Annotated[int, Field(ge=1)] = 96
    batch_size: Annotated[int, Field(ge=1)] = 256
    limit: Annotated[int, Field(ge=1)] | None = None


class ReportParams(_Section):
    n_examples: Annotated[int, Field(ge=0)] = 5


class Params(_Section):
    seed: int = 0
    corpus: CorpusParams = CorpusParams()
    export: ExportParams = ExportParams()
    format: FormatParams = FormatParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    eval: EvalParams = EvalParams()
    report: ReportParams = ReportParams()

    @model_validator(mode="after")
    def _real_weights_need_their_tokenizer(self) -> Params:
        if self.model.checkpoint and not self.format.tokenizer:
            raise ValueError(
                "model.checkpoint is set but format.tokenizer is not: real weights need the "
                "tokenizer.model they were trained with (a trained one would not match them)"
            )
        return self


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """Line (1-based) of the deepest key of `loc` found in the YAML node tree."""
    line = None
    for key in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        for k, v in node.value:
            if k.value == str(key):
                line, node = k.start_mark.line + 1, v
                break
        else:
            break
    return line


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml; every problem names the file, line and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text)
        data = yaml.safe_load(text) or {}
    except FileNotFoundError:
        raise InvalidInput([Problem(str(path), None, "<file>", "not found")]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise InvalidInput([Problem(str(path), line, "<yaml>", str(e))]) from None
    if not isinstance(data, dict):
        raise InvalidInput([Problem(str(path), 1, "<root>", "must be a mapping")])
    try:
        return Params.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = err["loc"]
            field = ".".join(str(p) for p in loc) or "<root>"
            problems.append(Problem(str(path), _line_of(node, loc), field, err["msg"]))
        raise InvalidInput(problems) from None
