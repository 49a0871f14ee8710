"""params.yaml is validated before any compute, and every problem names file, line and key."""

from pathlib import Path

import pytest

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
        ("seed: 0\ntrain:\n  steps: 0\n", ":3:", "train.steps"),
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
    path = tmp_path / "params.yaml"
    path.write_text("export:\n  since: 2025-01-01\n")
    assert load_params(path).export.since == "2025-01-01"


def test_real_weights_without_their_tokenizer_are_refused(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("model:\n  preset: gemma3-1b\n  checkpoint: /models/gemma\n")
    with pytest.raises(InvalidInput, match="format.tokenizer"):
        load_params(path)
