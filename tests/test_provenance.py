"""The run fingerprint: what decides whether a checkpoint may be resumed."""

from __future__ import annotations

from support.params import params

from tunixrt_dvc import provenance
from tunixrt_dvc.codegraph import stage_entries
from tunixrt_dvc.loop.resume import guard_resume

TRAIN = stage_entries("train")


def test_code_hash_covers_the_train_stage_closure(tmp_path):
    root = tmp_path / "repo"
    for name, text in {
        "stages/__init__.py": "",
        "stages/train.py": "from tunixrt_dvc import helper\n",
        "tunixrt_dvc/__init__.py": "",
        "tunixrt_dvc/cli.py": "",
        "tunixrt_dvc/helper.py": "STEP = 1\n",
        "tunixrt_dvc/unrelated.py": "X = 1\n",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    before = provenance.code_sha256(TRAIN, root=root)
    assert provenance.code_sha256(TRAIN, root=root) == before
    (root / "tunixrt_dvc/unrelated.py").write_text("X = 2\n")
    assert provenance.code_sha256(TRAIN, root=root) == before
    (root / "tunixrt_dvc/helper.py").write_text("STEP = 2\n")
    assert provenance.code_sha256(TRAIN, root=root) != before


def test_fingerprint_holds_the_training_code_hash(tmp_path):
    (tmp_path / "train.jsonl").write_text("{}\n")
    (tmp_path / "tok.model").write_bytes(b"x")
    fp = provenance.fingerprint(
        params(),
        sections=("seed", "model", "train"),
        data_files=[tmp_path / "train.jsonl"],
        tokenizer=tmp_path / "tok.model",
        code=TRAIN,
    )
    assert fp["code_sha256"] == provenance.code_sha256(TRAIN)
    assert str(tmp_path) not in repr(fp)
    # Only the sections the run reads: an eval edit must not spoil a training resume.
    assert list(fp["params"]) == ["seed", "model", "train"]


def test_a_checkpoint_made_by_other_code_is_not_resumed(tmp_path):
    work = tmp_path / ".resume"
    ours = {"seed": 0, "code_sha256": provenance.code_sha256(TRAIN)}
    guard_resume(work, {**ours, "code_sha256": "0" * 64}, name="test")
    (work / "checkpoints").mkdir()
    guard_resume(work, ours, name="test")
    assert not (work / "checkpoints").exists()
    (work / "checkpoints").mkdir()
    guard_resume(work, ours, name="test")
    assert (work / "checkpoints").exists()


def test_a_cap_on_the_instruction_set_is_part_of_the_device(monkeypatch):
    # The cap picks other kernels (other low bits), so a capped run is another kind of machine.
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    plain = provenance.device_kind()
    assert "xla_cpu_max_isa" not in plain and provenance.max_isa() is None
    monkeypatch.setenv(
        "XLA_FLAGS", "--xla_force_host_platform_device_count=1 --xla_cpu_max_isa=AVX2"
    )
    assert provenance.max_isa() == "AVX2"
    assert provenance.device_kind() == f"{plain} xla_cpu_max_isa=AVX2"
