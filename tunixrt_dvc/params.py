"""params.yaml: one section per stage plus shared settings, validated before any compute.

params.yaml is the only place defaults live: every key is required here, so a default can never
differ between the file and the code. The preset and recipe names come from `tunixrt_dvc.registry`.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.registry import (
    DTYPES,
    LORA_TARGETS,
    PRESETS,
    QUANTIZATIONS,
    RECIPE_NAMES,
    TINY,
)

PARAMS_FILE = "params.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CorpusParams(_Section):
    """The built-in generator of show-your-work arithmetic traces."""

    n_traces: Annotated[int, Field(ge=1, le=10_000_000)]
    store: str


class ExportParams(_Section):
    source: str
    limit: Annotated[int, Field(ge=1)] | None
    since: str | None  # ISO-8601; an unquoted YAML date or time is taken as written

    @field_validator("since", mode="before")
    @classmethod
    def _yaml_dates_as_text(cls, v: object) -> object:
        return v.isoformat() if isinstance(v, date | datetime) else v

    on_invalid: Literal["fail", "skip"]
    # A trace whose canonical serialization is longer is invalid (tunix-rt stores longer ones).
    max_trace_bytes: Annotated[int, Field(ge=1)]


class FormatParams(_Section):
    recipe: Literal[RECIPE_NAMES]
    instruction: str
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)]
    max_len: Annotated[int, Field(ge=8, le=131_072)]
    vocab_size: Annotated[int, Field(ge=64, le=262_144)]
    tokenizer: str | None  # a real Gemma tokenizer.model; None trains one
    on_invalid: Literal["fail", "skip"]


class ModelParams(_Section):
    preset: Literal[tuple(PRESETS)]
    checkpoint: str | None  # local dir: safetensors or orbax; required for real sizes
    # Dimensions of the `tiny` preset (ignored by real sizes, whose architecture is Tunix's).
    num_layers: Annotated[int, Field(ge=1)]
    embed_dim: Annotated[int, Field(ge=8)]
    hidden_dim: Annotated[int, Field(ge=8)]
    num_heads: Annotated[int, Field(ge=1)]
    head_dim: Annotated[int, Field(ge=4)]
    num_kv_heads: Annotated[int, Field(ge=1)]
    dtype: Literal[DTYPES]

    @model_validator(mode="after")
    def _real_sizes_need_weights(self) -> ModelParams:
        if self.preset != TINY and not self.checkpoint:
            raise ValueError(f"preset {self.preset!r} needs model.checkpoint (a local directory)")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        return self


class LoraParams(_Section):
    """LoRA adapters (qwix) on the `targets` modules; the base stays frozen. Rank 0 is the
    switch: off (every parameter trains), so each field can be set with one `-S`."""

    rank: Annotated[int, Field(ge=0)]
    alpha: Annotated[float, Field(gt=0.0)]
    targets: Annotated[list[Literal[LORA_TARGETS]], Field(min_length=1)]
    quantize: Literal[QUANTIZATIONS] | None  # QLoRA: the frozen base stored as nf4 or int8


def _on(lora: LoraParams | None) -> LoraParams | None:
    return lora if lora is not None and lora.rank > 0 else None


class MeshParams(_Section):
    """A device mesh: `fsdp` shards the batch and the weights, `tp` the heads and features;
    1 x 1 is one device."""

    fsdp: Annotated[int, Field(ge=1)]
    tp: Annotated[int, Field(ge=1)]


class TrainParams(_Section):
    steps: Annotated[int, Field(ge=0)]  # 0: no training, the base model is evaluated as it is
    batch_size: Annotated[int, Field(ge=1)]  # packed rows per step
    seq_len: Annotated[int, Field(ge=8)]  # tokens per packed row (>= format.max_len)
    learning_rate: Annotated[float, Field(gt=0.0)]
    warmup_steps: Annotated[int, Field(ge=0)]
    weight_decay: Annotated[float, Field(ge=0.0)]
    grad_clip: Annotated[float, Field(gt=0.0)]
    # Mixed precision: the dtype of the forward/backward pass; null computes in model.dtype.
    compute_dtype: Literal[DTYPES] | None
    # Where logits are computed: every position, or only where the loss scores (the completion
    # tokens; sft.loss.scored_nll), which saves most of a large vocabulary's work and memory.
    logits: Literal["all", "scored"]
    eval_every: Annotated[int, Field(ge=1)]
    checkpoint_every: Annotated[int, Field(ge=1)]
    lora: LoraParams | None  # rank 0 (or null): full fine-tuning

    @property
    def adapter(self) -> LoraParams | None:
        """The LoRA adapters to train, or None for full fine-tuning."""
        return _on(self.lora)


class RewardWeights(_Section):
    """Weights of the reward's components (tunixrt_dvc.task.reward), each in [0, 1]."""

    correct: Annotated[float, Field(ge=0.0)]  # the answer equals the expected one
    well_formed: Annotated[float, Field(ge=0.0)]  # the recipe's exact form, ended by the stop token
    steps: Annotated[float, Field(ge=0.0)]  # share of the equation steps that are true


class GrpoParams(_Section):
    """GRPO after SFT (Tunix's GRPOLearner) on the training split's prompts; steps 0: off."""

    steps: Annotated[int, Field(ge=0)]
    prompts_per_step: Annotated[int, Field(ge=1)]
    num_generations: Annotated[int, Field(ge=2)]  # samples per prompt (GRPO's group)
    learning_rate: Annotated[float, Field(gt=0.0)]
    grad_clip: Annotated[float, Field(gt=0.0)]
    beta: Annotated[float, Field(ge=0.0)]  # KL penalty to the SFT model
    epsilon: Annotated[float, Field(gt=0.0)]  # PPO-style clipping of the probability ratio
    temperature: Annotated[float, Field(gt=0.0)]
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None
    top_k: Annotated[int, Field(ge=1)] | None
    max_new_tokens: Annotated[int, Field(ge=1)]
    rewards: RewardWeights
    checkpoint_every: Annotated[int, Field(ge=1)]
    lora: LoraParams | None  # rank 0 (or null): every parameter trains

    @property
    def adapter(self) -> LoraParams | None:
        """The LoRA adapters RL trains, or None when every parameter trains."""
        return _on(self.lora)

    @model_validator(mode="after")
    def _sampled(self) -> GrpoParams:
        if self.top_p is None and self.top_k is None:
            # Tunix's Sampler then decodes greedily whatever the temperature: every sample of a
            # group would be the same and GRPO would learn nothing.
            raise ValueError("top_p and top_k are both null: set top_p: 1.0 to sample")
        return self


class EvalParams(_Section):
    evalset: str
    max_new_tokens: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=1)]
    limit: Annotated[int, Field(ge=1)] | None


class ReportParams(_Section):
    n_examples: Annotated[int, Field(ge=0)]
    seed_sweep: str | None  # `tunixrt sweep summary --json` output to show in index.html


class Params(_Section):
    seed: int
    mesh: MeshParams | None  # 1 x 1 (or null): one device; shared by the stages that run models
    evalsets_dir: str  # the eval sets: the corpus and the export keep their problems out
    corpus: CorpusParams
    export: ExportParams
    format: FormatParams
    model: ModelParams
    train: TrainParams
    grpo: GrpoParams
    eval: EvalParams
    report: ReportParams

    def cross_section_problems(self) -> list[tuple[tuple[str, ...], str]]:
        """(key path, message) for every rule that spans sections."""
        problems = []
        if self.model.checkpoint and not self.format.tokenizer:
            msg = (
                "model.checkpoint is set but format.tokenizer is not: real weights need the "
                "tokenizer.model they were trained with (a trained one would not match them)"
            )
            problems.append((("format", "tokenizer"), msg))
        if self.mesh is not None and self.train.batch_size % self.mesh.fsdp:
            msg = f"must be a multiple of mesh.fsdp ({self.mesh.fsdp}): rows are split over it"
            problems.append((("train", "batch_size"), msg))
        rollouts = self.grpo.prompts_per_step * self.grpo.num_generations
        if self.mesh is not None and rollouts % self.mesh.fsdp:
            msg = (
                f"prompts_per_step x num_generations ({rollouts}) must be a multiple of "
                f"mesh.fsdp ({self.mesh.fsdp})"
            )
            problems.append((("grpo", "prompts_per_step"), msg))
        if self.train.seq_len < self.format.max_len:
            msg = (
                f"must be >= format.max_len ({self.format.max_len}): every example must fit one "
                "packed row"
            )
            problems.append((("train", "seq_len"), msg))
        return problems


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


def param_problem(path: str | Path, key: str, msg: str) -> Problem:
    """A problem with the param `key` (dotted) of the params file `path`, at its line."""
    try:
        node = yaml.compose(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        node = None
    return Problem(str(path), _line_of(node, tuple(key.split("."))), key, msg)


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
        params = Params.model_validate(data)
        errors = params.cross_section_problems()
    except ValidationError as e:
        errors = [(tuple(err["loc"]), err["msg"]) for err in e.errors()]
    if errors:
        raise InvalidInput(
            [
                Problem(str(path), _line_of(node, loc), ".".join(map(str, loc)) or "<root>", msg)
                for loc, msg in errors
            ]
        )
    return params
