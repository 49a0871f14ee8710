"""A Hugging Face `config.json` checked against the model config, each problem on its line."""

from __future__ import annotations

import bisect
import json
from pathlib import Path
from typing import Any

from tunix.models.gemma3 import model as gemma3

from tunixrt_dvc.errors import Problem
from tunixrt_dvc.model.config import ATTENTION_PATTERN, ModelConfig


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """The line of every object key in a JSON document, by its path of keys.

    Arrays are not entered (config.json keeps no architecture in them). `text` must be valid JSON.
    """
    decoder = json.JSONDecoder()
    lines: dict[tuple[str, ...], int] = {}
    newlines = [i for i, c in enumerate(text) if c == "\n"]

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    def value(i: int, path: tuple[str, ...]) -> int:
        i = skip(i)
        if text[i] != "{":
            return decoder.raw_decode(text, i)[1]
        i = skip(i + 1)
        if text[i] == "}":
            return i + 1
        while True:
            i = skip(i)
            key, j = json.decoder.scanstring(text, i + 1)
            lines[path + (key,)] = bisect.bisect_left(newlines, i) + 1  # the last, as json.loads
            j = skip(value(skip(j) + 1, path + (key,)))  # the value after the ':'
            if text[j] == "}":
                return j + 1
            i = j + 1  # past the ','

    value(0, ())
    return lines


def _query_pre_attn_scalar(config: ModelConfig) -> tuple[int, str]:
    """transformers' `query_pre_attn_scalar` (queries are scaled by its inverse square root) for
    Tunix's `query_pre_attn_norm`, and where the value comes from."""
    norm = gemma3.QueryPreAttentionNormalisation
    if config.query_pre_attn_norm == norm.BY_ONE_OVER_SQRT_EMBED_DIM_DIV_NUM_HEADS:
        return config.embed_dim // config.num_heads, "embed_dim // num_heads"
    return config.head_dim, "head_dim"


_ROPE_TYPES = ("default", "linear")  # Tunix's Gemma3 RoPE: a base frequency and a linear scale


def config_json_problems(file: Path, config: ModelConfig) -> list[Problem]:
    """Architecture facts in config.json that tensor shapes cannot reveal (or reveal late).

    Both forms transformers writes are read. Up to version 4: `rope_theta` (global layers),
    `rope_local_base_freq` (sliding-window layers) and `rope_scaling` (global layers). From
    version 5, `rope_parameters`, one entry per layer type:
    `{"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
    "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}`.
    A key the file does not have is not checked.
    """
    try:
        text = file.read_text(encoding="utf-8")
        cfg = json.loads(text)
    except (OSError, json.JSONDecodeError) as e:
        return [Problem(str(file), getattr(e, "lineno", None), "<json>", str(e))]
    if not isinstance(cfg, dict):
        return [Problem(str(file), None, "<json>", "expected an object")]
    prefix: tuple[str, ...] = ()
    if isinstance(cfg.get("text_config"), dict):
        # Multimodal checkpoints nest the language model's config.
        cfg, prefix = cfg["text_config"], ("text_config",)
    lines = _key_lines(text)
    problems = []

    def report(path: tuple[str, ...], message: str, *, at: tuple[str, ...] | None = None) -> None:
        """A problem named by the key `path`, on the line of `at` (or of `path`); where the file
        lacks that key, on the line of the nearest enclosing key."""
        where = prefix + (at or path)
        while where and where not in lines:
            where = where[:-1]
        problems.append(Problem(str(file), lines.get(where), ".".join(prefix + path), message))

    def compare(
        path: tuple[str, ...],
        have: Any,
        want: Any,
        *,
        note: str = "",
        want_note: str = "",
        at: tuple[str, ...] | None = None,
    ) -> None:
        if have != want:
            report(path, f"checkpoint has {have}{note}, the config has {want}{want_note}", at=at)

    def scaling(path: tuple[str, ...], rope: dict, want: float, *, untyped: str) -> None:
        """The linear scale factor `rope` applies (transformers ignores `factor` unless the
        `rope_type` is linear); a `rope_type` that Tunix's Gemma3 lacks is reported by name."""
        field = "type" if "type" in rope and "rope_type" not in rope else "rope_type"
        kind = rope.get(field, untyped)
        if kind not in _ROPE_TYPES:
            supported = " and ".join(repr(k) for k in _ROPE_TYPES)
            report(path + (field,), f"checkpoint has {kind!r}: Tunix's Gemma3 has only {supported}")
            return
        factor = rope.get("factor", 1.0) if kind == "linear" else 1.0
        note = "" if kind == "linear" else f" ({field} {kind!r})"
        at = path + ("factor" if "factor" in rope else field,)
        compare(path + ("factor",), factor, want, note=note, at=at)

    # Only where global layers exist are their RoPE values and the window architecture: an
    # all-local tiny model's window is set never to bind.
    has_global = config.num_layers >= len(ATTENTION_PATTERN)
    q_scalar, q_source = _query_pre_attn_scalar(config)
    checks = [
        ("num_hidden_layers", config.num_layers, ""),
        ("hidden_size", config.embed_dim, ""),
        ("intermediate_size", config.hidden_dim, ""),
        ("num_attention_heads", config.num_heads, ""),
        ("num_key_value_heads", config.num_kv_heads, ""),
        ("head_dim", config.head_dim, ""),
        ("query_pre_attn_scalar", q_scalar, f" ({q_source}: {config.query_pre_attn_norm.name})"),
        ("rope_local_base_freq", config.local_base_frequency, ""),
    ]
    if has_global:
        checks += [
            ("sliding_window", config.sliding_window_size, ""),
            ("rope_theta", config.global_base_frequency, ""),
        ]
    for key, want, want_note in checks:
        if key in cfg:
            compare((key,), cfg[key], want, want_note=want_note)
    if "rope_scaling" in cfg and has_global:  # transformers 4: the global layers' scaling
        rope = cfg["rope_scaling"] if isinstance(cfg["rope_scaling"], dict) else {}
        scaling(("rope_scaling",), rope, config.global_scale_factor, untyped="linear")
    rope_parameters = cfg.get("rope_parameters")
    if isinstance(rope_parameters, dict):  # transformers 5: per layer type
        kinds = [("sliding_attention", config.local_base_frequency, config.local_scale_factor)]
        if has_global:
            kinds += [("full_attention", config.global_base_frequency, config.global_scale_factor)]
        for kind, base, scale in kinds:
            rope = rope_parameters.get(kind)
            if isinstance(rope, dict):
                if "rope_theta" in rope:
                    compare(("rope_parameters", kind, "rope_theta"), rope["rope_theta"], base)
                scaling(("rope_parameters", kind), rope, scale, untyped="default")
    return problems
