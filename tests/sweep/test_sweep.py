"""Results across seeds: runs from `dvc exp show --json`, configs, statistics, the commands."""

from __future__ import annotations

import json
import math
import os
import subprocess

import pytest
from click.testing import CliRunner

from tunixrt_dvc.cli import main as cli
from tunixrt_dvc.sweep.configs import group_by_config, parse_selector, select
from tunixrt_dvc.sweep.runs import runs_from_exp_show
from tunixrt_dvc.sweep.stats import compare, summarize


def _data(seed: int, recipe: str, acc: float | None) -> dict:
    metrics = {} if acc is None else {"metrics/eval.json": {"data": {"after": {"accuracy": acc}}}}
    metrics |= {} if acc is None else {"train/metrics.json": {"data": {"eval": {"loss": 1 - acc}}}}
    return {
        "params": {"params.yaml": {"data": {"seed": seed, "format": {"recipe": recipe}}}},
        "metrics": metrics,
    }


def _exp(name: str, seed: int, recipe: str, acc: float | None, state: str = "success") -> dict:
    rev = {"rev": f"{name:0<40}", "name": name, "data": _data(seed, recipe, acc), "error": None}
    return {"revs": [rev], "executor": {"state": state}, "name": name}


# As `dvc exp show --json` writes it: the workspace, then the commit and its experiments.
EXP_SHOW = [
    {"rev": "workspace", "name": None, "data": _data(0, "tags", 0.7), "error": None},
    {
        "rev": "c" * 40,
        "name": "main",
        "data": _data(0, "tags", 0.7),
        "error": None,
        "experiments": [
            _exp("tags-s0", 0, "tags", 0.7),  # the commit's params again: one run
            _exp("tags-s1", 1, "tags", 0.72),
            _exp("tags-s2", 2, "tags", 0.69),
            _exp("only-s0", 0, "answer_only", 0.01),
            _exp("only-s1", 1, "answer_only", 0.02),
            _exp("only-s2", 2, "answer_only", 0.015),
            _exp("queued", 3, "tags", None, state="queued"),
            _exp("failed", 4, "tags", None, state="failed"),
        ],
    },
]


def test_finished_runs_are_read_once_each():
    runs = runs_from_exp_show(EXP_SHOW)
    assert [r.name for r in runs] == [
        "tags-s0",
        "tags-s1",
        "tags-s2",
        "only-s0",
        "only-s1",
        "only-s2",
    ]
    assert runs[1].params == {"seed": 1, "format.recipe": "tags"}
    assert runs[1].metric("after.accuracy") == 0.72
    assert runs[1].metric("train/metrics.json:eval.loss") == pytest.approx(0.28)


def test_configs_are_the_params_but_the_seed():
    configs = group_by_config(runs_from_exp_show(EXP_SHOW))
    assert [c.label for c in configs] == ["format.recipe=tags", "format.recipe=answer_only"]
    assert [r.params["seed"] for r in configs[0].runs] == [0, 1, 2]
    assert (
        select(runs_from_exp_show(EXP_SHOW), parse_selector("format.recipe=answer_only,seed=1"))[
            0
        ].name
        == "only-s1"
    )


# A later commit, its params the same as EXP_SHOW's `tags` runs, and two experiments of it.
NEWER = {
    "rev": "d" * 40,
    "name": "recipe",
    "data": _data(0, "tags", 0.97),
    "error": None,
    "experiments": [_exp("new-s1", 1, "tags", 0.95), _exp("new-s2", 2, "tags", 0.96)],
}


def test_the_same_params_on_two_commits_are_two_configs_and_a_commit_selects_one():
    runs = runs_from_exp_show([*EXP_SHOW, NEWER], fingerprints=lambda rev: None)
    configs = group_by_config(runs)
    assert [c.label for c in configs] == [
        "commit=ccccccc, format.recipe=tags",
        "commit=ccccccc, format.recipe=answer_only",
        "commit=ddddddd, format.recipe=tags",
    ]
    assert [r.metric("after.accuracy") for r in configs[2].runs] == [0.97, 0.95, 0.96]
    newest = select(runs, parse_selector("commit=ddd,format.recipe=tags"))
    assert [r.name for r in newest] == ["new-s1", "new-s2", "recipe"]
    # A commit is text, never a YAML number.
    assert parse_selector("commit=0123456") == {"commit": "0123456"}


def test_summary_statistics():
    s = summarize([0.5, 0.6, 0.7, 0.8, 0.9])
    assert (s.n, s.mean, s.min, s.max) == (5, pytest.approx(0.7), 0.5, 0.9)
    assert s.sd == pytest.approx(math.sqrt(0.025))
    # Student's t with 4 degrees of freedom: 2.776 * sd / sqrt(5).
    assert s.ci_high - s.mean == pytest.approx(2.7764 * s.sd / math.sqrt(5), rel=1e-4)
    assert math.isnan(summarize([0.3]).sd)


def test_a_difference_beyond_seed_noise_and_one_within_it():
    far = compare([0.40, 0.45, 0.50, 0.42, 0.48], [0.80, 0.82, 0.79, 0.85, 0.81])
    assert far.significant and far.verdict() == "B is better than A"
    assert far.p_permutation == pytest.approx(2 / 252)  # exact: the most extreme of 252 splits
    assert far.ci_low > 0
    near = compare([0.77, 0.30, 0.53, 0.42, 0.28], [0.80, 0.35, 0.50, 0.45, 0.30])
    assert not near.significant and near.verdict() == "not distinguishable from seed noise"
    assert near.ci_low < 0 < near.ci_high
    with pytest.raises(ValueError, match="at least 2"):
        compare([0.5], [0.6, 0.7])


def test_the_commands(tmp_path):
    exp_show = tmp_path / "exp.json"
    exp_show.write_text(json.dumps(EXP_SHOW))
    out = tmp_path / "summary.json"
    r = CliRunner().invoke(
        cli, ["sweep", "summary", "--exp-show", str(exp_show), "--json", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "## format.recipe=tags (3 runs)" in r.output and "| **mean** | | 0.7033 |" in r.output
    summary = json.loads(out.read_text())
    tags = summary["configs"][0]
    assert [run["seed"] for run in tags["runs"]] == [0, 1, 2]
    assert tags["summary"]["after.accuracy"]["mean"] == pytest.approx(0.7033, abs=1e-4)
    r = CliRunner().invoke(
        cli,
        ["sweep", "compare", "format.recipe=answer_only", "format.recipe=tags",
         "--exp-show", str(exp_show), "--json", str(tmp_path / "c.json")],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "after.accuracy: A 0.0150 (n=3), B 0.7033 (n=3)" in r.output
    assert json.loads((tmp_path / "c.json").read_text())["metrics"]["after.accuracy"]["diff"] > 0
    r = CliRunner().invoke(
        cli, ["sweep", "compare", "seed=9", "format.recipe=tags", "--exp-show", str(exp_show)]
    )
    assert r.exit_code == 1 and "A: seed=9: selects 0 finished run(s)" in r.output


def test_a_committed_summary_is_compared_with_experiments_of_another_clone(tmp_path):
    # results/seed_sweep.json of an earlier commit against a new commit's experiments, run in
    # a clone of their own: the runs of both sources, told apart by commit.
    exp_show = tmp_path / "exp.json"
    exp_show.write_text(json.dumps(EXP_SHOW))
    old = tmp_path / "seed_sweep.json"
    r = CliRunner().invoke(
        cli, ["sweep", "summary", "--exp-show", str(exp_show), "--json", str(old)]
    )
    assert r.exit_code == 0, r.output
    new = tmp_path / "new.json"
    new.write_text(json.dumps([NEWER]))
    args = ["sweep", "compare", "commit=ccccccc,format.recipe=tags", "commit=ddddddd"]
    r = CliRunner().invoke(cli, [*args, "--exp-show", str(old), "--exp-show", str(new)])
    assert r.exit_code == 0, r.output
    assert "after.accuracy: A 0.7033 (n=3), B 0.9600 (n=3)" in r.output
    r = CliRunner().invoke(
        cli, ["sweep", "summary", "--exp-show", str(old), "--exp-show", str(new)]
    )
    assert "## commit=ccccccc, format.recipe=tags (3 runs)" in r.output
    assert "## commit=ddddddd, format.recipe=tags (3 runs)" in r.output


def test_rl_experiments_are_summarized_with_the_rl_model_scores(tmp_path):
    def rl(name: str, seed: int, after: float, after_rl: float) -> dict:
        exp = _exp(name, seed, "tags", after)
        data = exp["revs"][0]["data"]
        data["params"]["params.yaml"]["data"]["grpo"] = {"steps": 40}
        data["metrics"]["metrics/eval.json"]["data"]["rl"] = {"accuracy": after_rl}
        return exp

    show = json.loads(json.dumps(EXP_SHOW))
    show[1]["experiments"] = [rl(f"rl-s{s}", s, 0.7, 0.75 + s / 100) for s in range(3)]
    exp_show = tmp_path / "exp.json"
    exp_show.write_text(json.dumps(show))
    r = CliRunner().invoke(cli, ["sweep", "summary", "--exp-show", str(exp_show)])
    assert r.exit_code == 0, r.output
    assert "| seed | run | after.accuracy | eval.loss | rl.accuracy |" in r.output, r.output
    assert "| **mean** | | 0.7000 | 0.3000 | 0.7600 |" in r.output, r.output


def test_every_run_records_its_commit_device_and_params(tmp_path, monkeypatch):
    # A repository whose commit holds the train stage's fingerprint, as a pipeline run leaves it.
    repo = tmp_path / "repo"
    (repo / "train").mkdir(parents=True)
    device = "cpu:cpu x1 AMD EPYC [avx2 fma]"
    (repo / "train" / "fingerprint.json").write_text(json.dumps({"device": device}))
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env |= {"GIT_COMMITTER_EMAIL": "t@t", "PATH": os.environ["PATH"], "HOME": str(tmp_path)}

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "run")
    sha = git("rev-parse", "HEAD")
    show = json.loads(json.dumps(EXP_SHOW))
    show[1]["rev"] = sha
    show[1]["experiments"][1]["revs"][0]["rev"] = sha  # tags-s1: its fingerprint is readable
    exp_show = tmp_path / "exp.json"
    exp_show.write_text(json.dumps(show))
    monkeypatch.chdir(repo)

    runs = runs_from_exp_show(show)
    assert {r.commit for r in runs} == {sha}
    assert [r.device for r in runs] == [None, device, None, None, None, None]
    r = CliRunner().invoke(
        cli, ["sweep", "summary", "--exp-show", str(exp_show), "--json", "summary.json"]
    )
    assert r.exit_code == 0, r.output
    assert f"Made on: an unrecorded device at {sha[:7]} (seeds 0, 2); {device} at {sha[:7]}" in (
        r.output
    )
    tags = json.loads((repo / "summary.json").read_text())["configs"][0]
    assert tags["devices"] == [device] and tags["commits"] == [sha]
    run = tags["runs"][1]
    assert (run["name"], run["seed"], run["commit"], run["device"]) == ("tags-s1", 1, sha, device)
    assert run["params"] == {"seed": 1, "format.recipe": "tags"}
    assert run["after.accuracy"] == 0.72
