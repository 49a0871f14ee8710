"""params.yaml is validated before any compute, and every problem names file, line and key."""

import re
import shutil
from pathlib import Path

import pytest
from support.params import write_params

from tunixrt_dvc.errors import InvalidInput
from tunixrt_dvc.params import Params, load_params

ROOT = Path(__file__).parent.parent


def test_the_committed_params_are_valid_and_cover_every_section():
    params = load_params(ROOT / "params.yaml")
    assert set(Params.model_fields) <= set(params.model_dump())
    assert params.model.preset == "tiny" and params.format.tokenizer is None


@pytest.mark.parametrize(
    ("text", "where", "key"),
    [
        ("seed: 0\ntrain:\n  steps: -1\n", ":3:", "train.steps"),
        ("seed: 0\nformat:\n  recipe: chat\n", ":3:", "format.recipe"),
        ("seed: 0\neval:\n  max_new_tokens: many\n", ":3:", "eval.max_new_tokens"),
        ("seed: 0\ntrain:\n  stepz: 5\n", ":3:", "train.stepz"),
        ("seed: 0\ntrain:\n  compute_dtype: float16\n", ":3:", "train.compute_dtype"),
        ("seed: 0\nmodel:\n  preset: gemma3-1b\n", ":2:", "model"),
    ],
)
def test_an_invalid_value_names_file_line_and_key(tmp_path, text, where, key):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(InvalidInput) as err:
        load_params(path)
    message = str(err.value.message)
    assert f"{path}{where} {key}" in message, message


def test_malformed_yaml_and_missing_file_are_reported(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(InvalidInput, match="params.yaml:"):
        load_params(path)
    with pytest.raises(InvalidInput, match="not found"):
        load_params(tmp_path / "missing.yaml")


def test_an_unquoted_yaml_date_is_read_as_written(tmp_path):
    path = write_params(tmp_path / "params.yaml")
    path.write_text(path.read_text().replace("since: null", "since: 2025-01-01"))
    assert load_params(path).export.since == "2025-01-01"


def test_real_weights_without_their_tokenizer_are_refused(tmp_path):
    path = write_params(
        tmp_path / "params.yaml", {"model": {"preset": "gemma3-1b", "checkpoint": "/models/gemma"}}
    )
    with pytest.raises(InvalidInput, match="format.tokenizer"):
        load_params(path)


def test_every_key_is_required_so_params_yaml_holds_every_default(tmp_path):
    path = write_params(tmp_path / "params.yaml")
    text = path.read_text()
    path.write_text(re.sub(r"(?m)^  warmup_steps: .*\n", "", text, count=1))
    with pytest.raises(InvalidInput) as err:
        load_params(path)
    assert f"{path}:" in err.value.message and "train.warmup_steps: Field required" in str(
        err.value
    )


def test_rows_shorter_than_the_longest_example_are_refused_before_any_compute(tmp_path):
    path = write_params(tmp_path / "params.yaml", {"train": {"seq_len": 64}})
    with pytest.raises(InvalidInput) as err:
        load_params(path)
    assert "train.seq_len: must be >= format.max_len" in err.value.message


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Knobs the docs describe in words, beside the `-S` commands they spell out.
KNOBS = [
    "train.lora.rank=8",
    "train.lora.quantize=nf4",
    "grpo.lora.rank=8",
    "grpo.steps=60",
    "mesh.fsdp=2",
    "train.steps=0",
    "eval.limit=20",
    "model.checkpoint=ckpt,format.tokenizer=ckpt/tokenizer.model",  # a pair: weights, tokenizer
    "grpo.top_k=50",
]


def _documented_overrides() -> list[str]:
    found = set()
    for doc in DOCS:
        for text in re.findall(r"-S '?([a-z_.]+=[^'\s`]+)'?", doc.read_text()):
            # A sweep (`seed=range(0,5)`) is its first value here; a placeholder (`=N`), 1.
            text = re.sub(r"range\((\d+),\s*\d+\)", r"\1", text)
            found.add(re.sub(r"=N$", "=1", text))
    return sorted(found)


@pytest.mark.parametrize("override", sorted({*_documented_overrides(), *KNOBS}))
def test_every_documented_override_applies_to_the_default_params_with_one_s(tmp_path, override):
    from dvc.utils.hydra import apply_overrides  # what `dvc exp run -S` runs

    params_file = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params_file)
    apply_overrides(params_file, override.split(","))
    load_params(params_file)


def test_the_docs_spell_out_overrides():
    assert "train.lora.rank=8" in _documented_overrides()
