"""The run fingerprint: what decides whether a checkpoint may be resumed."""

from __future__ import annotations

from pathlib import Path

import yaml

from tunixrt_dvc import manifest

ROOT = Path(__file__).resolve().parents[1]


def test_train_code_is_the_train_stage_code_deps():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]
    deps = {d.removesuffix(".py").replace("/", ".") for d in stage["deps"] if d.endswith(".py")}
    assert deps == set(manifest.TRAIN_CODE)


def test_code_hash_changes_with_the_source(tmp_path, monkeypatch):
    (tmp_path / "fp_probe.py").write_text("STEP = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = manifest.code_sha256(("fp_probe",))
    assert manifest.code_sha256(("fp_probe",)) == before
    (tmp_path / "fp_probe.py").write_text("STEP = 2\n")
    assert manifest.code_sha256(("fp_probe",)) != before


def test_fingerprint_holds_the_training_code_hash(tmp_path):
    from tunixrt_dvc.params import Params

    (tmp_path / "train.jsonl").write_text("{}\n")
    (tmp_path / "tok.model").write_bytes(b"x")
    fp = manifest.fingerprint(
        Params(), data_files=[tmp_path / "train.jsonl"], tokenizer=tmp_path / "tok.model"
    )
    assert fp["code_sha256"] == manifest.code_sha256()
    assert str(tmp_path) not in repr(fp)


def test_a_checkpoint_made_by_other_code_is_not_resumed(tmp_path):
    from tunixrt_dvc import training

    work = tmp_path / ".resume"
    ours = {"seed": 0, "code_sha256": manifest.code_sha256()}
    training._guard_resume(work, {**ours, "code_sha256": "0" * 64})
    (work / "checkpoints").mkdir()
    training._guard_resume(work, ours)
    assert not (work / "checkpoints").exists()
    (work / "checkpoints").mkdir()
    training._guard_resume(work, ours)
    assert (work / "checkpoints").exists()
