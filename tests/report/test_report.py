"""The report stage: delta_report.md, eval_traces.jsonl, determinism and bad inputs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.params import REPO, write_params

from stages.report import main as report_main
from tunixrt_dvc.task.metrics import accuracy_plot_rows, eval_metrics
from tunixrt_dvc.task.scoring import ScoredItem
from tunixrt_dvc.traces.schemas import StoredTrace, dumps

MANIFEST = {
    "git_sha": "0123456789abcdef0123456789abcdef01234567",
    "seed": 0,
    "data_sha256": "d" * 64,
    "params": {"model": {"preset": "tiny"}, "format": {"recipe": "reasoning_tags"}},
    "packages": {"google-tunix": "0.1.7", "jax": "0.10.2"},
    # What differs between identical runs stays out of the outputs.
    "finished_at": "2026-05-07T08:50:00+00:00",
    "timings": {"wall_s": 157.2},
    "host": {"python": "3.11.2", "cpus": 2},
    # tokenizer_sha256, checkpoint_sha256 and device are missing on purpose: "unknown".
}


def _item(
    i: int,
    *,
    category: str,
    difficulty: str,
    generation: str,
    steps: list[str],
    answer: str | None,
    expected: str,
    correct: bool,
    follows: bool,
    ok_steps: int,
    well_formed: bool = True,
) -> ScoredItem:
    n_eq = sum("=" in s for s in steps)
    return ScoredItem(
        id=f"eval_v1-{i:04d}",
        prompt=f"Question {i}: what is the total?",
        category=category,
        difficulty=difficulty,
        expected_answer=expected,
        generation=generation,
        steps=steps,
        answer=answer,
        correct=correct,
        well_formed=well_formed,
        steps_total=n_eq,
        steps_correct=ok_steps,
        answer_follows=follows,
        gen_tokens=len(generation.split()) + 1,
    )


def _gen(steps: list[str], answer: str) -> str:
    return "<reasoning>" + "\n".join(steps) + "</reasoning><answer>" + answer + "</answer>"


def _pairs() -> tuple[list[ScoredItem], list[ScoredItem]]:
    good = ["7 + 5 = 12", "4 + 8 + 1 = 13", "347 + 285 = 632"]
    before = [
        _item(0, category="add", difficulty="hard", generation="", steps=[], answer=None,
              expected="632", correct=False, follows=False, ok_steps=0, well_formed=False),
        _item(1, category="sub", difficulty="easy", generation="7 7 7 | <end>", steps=[],
              answer=None, expected="4", correct=False, follows=False, ok_steps=0,
              well_formed=False),
        _item(2, category="mul", difficulty="medium", generation=_gen(["7 × 6 = 42"], "42"),
              steps=["7 × 6 = 42"], answer="42", expected="42", correct=True, follows=True,
              ok_steps=1),
        _item(3, category="two_step", difficulty="medium", generation=_gen(["4 × 6 = 25"], "25"),
              steps=["4 × 6 = 25"], answer="25", expected="28", correct=False, follows=False,
              ok_steps=0),
    ]  # fmt: skip
    after = [
        _item(0, category="add", difficulty="hard", generation=_gen(good, "632"), steps=good,
              answer="632", expected="632", correct=True, follows=True, ok_steps=3),
        _item(1, category="sub", difficulty="easy", generation=_gen(["5 - 1 = 4"], "4"),
              steps=["5 - 1 = 4"], answer="4", expected="4", correct=True, follows=True,
              ok_steps=1),
        _item(2, category="mul", difficulty="medium", generation=_gen(["7 × 6 = 48"], "48"),
              steps=["7 × 6 = 48"], answer="48", expected="42", correct=False, follows=False,
              ok_steps=0),
        _item(3, category="two_step", difficulty="medium", generation=_gen(["4 × 6 = 24"], "24"),
              steps=["4 × 6 = 24"], answer="24", expected="28", correct=False, follows=True,
              ok_steps=1),
    ]  # fmt: skip
    return before, after


def _inputs(tmp_path: Path, *, n_examples: int = 2) -> dict[str, Path]:
    before, after = _pairs()
    paths = {
        "before": tmp_path / "eval" / "before.jsonl",
        "after": tmp_path / "eval" / "after.jsonl",
        "metrics": tmp_path / "metrics" / "eval.json",
        "manifest": tmp_path / "train" / "run_manifest.json",
        "format-stats": tmp_path / "data" / "formatted" / "stats.json",
        "params": tmp_path / "params.yaml",
    }
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    paths["before"].write_text("".join(dumps(s) + "\n" for s in before), encoding="utf-8")
    paths["after"].write_text("".join(dumps(s) + "\n" for s in after), encoding="utf-8")
    metrics = eval_metrics(before, after)
    metrics["after"]["wall_s"] = 1.5  # keys only the eval stage knows are allowed
    paths["metrics"].write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    paths["manifest"].write_text(json.dumps(MANIFEST), encoding="utf-8")
    stats = {"recipe": "reasoning_tags", "instruction": "Show your work."}
    paths["format-stats"].write_text(json.dumps(stats), encoding="utf-8")
    write_params(paths["params"], {"report": {"n_examples": n_examples, "seed_sweep": None}})
    paths["train-plots"] = _train_plots(tmp_path / "train" / "plots" / "metrics")
    paths["templates"] = REPO / ".dvc" / "plots"
    return paths


def _train_plots(root: Path) -> Path:
    """DVCLive's files as the train stage writes them: 12 steps, evaluations at 0, 6 and 12."""
    curves = {
        "train/loss": [(s, 6.0 / s) for s in range(1, 13)],
        "train/grad_norm": [(s, 2.0 / s**0.5) for s in range(1, 13)],
        "train/lr": [(s, 0.003 * min(1, s / 3)) for s in range(1, 13)],
        "eval/loss": [(0, 6.2), (6, 1.1), (12, 0.4)],
    }
    for name, rows in curves.items():
        path = root / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        column = name.split("/")[1]
        path.write_text(f"step\t{column}\n" + "".join(f"{a}\t{b!r}\n" for a, b in rows))
    return root


def _run(paths: dict[str, Path], out: Path, *extra: str):
    args = [f"--{k}={v}" for k, v in paths.items()] + [f"--out={out}", *extra]
    return CliRunner().invoke(report_main, [str(a) for a in args])


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_report_snapshot(in_tmp, snapshot) -> None:
    paths = _inputs(Path("."))
    res = _run(paths, Path("report"))
    assert res.exit_code == 0, res.output
    assert "report: 4 items -> report/delta_report.md; 8 traces" in res.output
    snapshot.assert_match(Path("report/delta_report.md").read_text(), "delta_report.md")


def test_report_content(in_tmp) -> None:
    paths = _inputs(in_tmp, n_examples=1)
    assert _run(paths, in_tmp / "report").exit_code == 0
    text = (in_tmp / "report" / "delta_report.md").read_text()
    assert "| accuracy | 0.2500 | 0.5000 | +0.2500 |" in text
    assert "| add | 0.0000 | 1.0000 | +1.0000 |" in text
    assert "| mul | 1.0000 | 0.0000 | -1.0000 |" in text
    # Difficulty rows in easy, medium, hard order.
    assert text.index("| easy |") < text.index("| medium |") < text.index("| hard |")
    assert "2 item(s) went from wrong to correct, 1 from correct to wrong." in text
    # n_examples=1: the largest improvement (a hard item fixed with 3/3 steps) and the regression.
    assert "## Largest improvements (1 of 3 improved items)" in text
    assert "### 1. `eval_v1-0000` (add, hard)" in text and "eval_v1-0001" not in text
    assert "## Regressions (1 of 1 items that got worse)" in text
    assert "### 1. `eval_v1-0002` (mul, medium)" in text
    # Generations are escaped into one table row each.
    assert "&lt;reasoning&gt;7 + 5 = 12<br>4 + 8 + 1 = 13" in text
    # The run: known hashes, "unknown" for what the manifest lacks, params, and no absolute paths.
    assert f"| git commit | `{MANIFEST['git_sha']}` |" in text
    assert "| tokenizer sha256 | `unknown` |" in text and "| device | `unknown` |" in text
    assert "google-tunix 0.1.7" in text and '"preset": "tiny"' in text
    assert str(in_tmp) not in text
    assert "2026-05-07" not in text and "157.2" not in text and "3.11.2" not in text
    assert "- before: `eval/before.jsonl` (sha256 `" in text


def test_outputs_are_deterministic(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    paths = _inputs(Path("."))
    assert _run(paths, Path("a")).exit_code == 0
    # A rerun whose manifest differs only in time, timings and host gives the same bytes.
    rerun = {**MANIFEST, "finished_at": "2026-05-08T00:00:00+00:00", "timings": {"wall_s": 1.0}}
    paths["manifest"].write_text(json.dumps(rerun, indent=2), encoding="utf-8")
    assert _run(paths, Path("b")).exit_code == 0
    for name in ("delta_report.md", "eval_traces.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_eval_traces(in_tmp) -> None:
    paths = _inputs(in_tmp)
    assert _run(paths, in_tmp / "report").exit_code == 0
    lines = (in_tmp / "report" / "eval_traces.jsonl").read_text().splitlines()
    traces = [StoredTrace.model_validate_json(line) for line in lines]
    assert len(traces) == 8 and len({t.id for t in traces}) == 8
    assert [t.trace.meta["model"]["stage"] for t in traces] == ["before"] * 4 + ["after"] * 4
    assert [t.created_at for t in traces] == sorted(t.created_at for t in traces)
    # Stable serialization: each line is exactly what schemas.dumps writes.
    assert [dumps(t) for t in traces] == lines

    empty = traces[0].trace  # before, item 0: empty generation, nothing parsed
    assert empty.final_answer == "[no answer]"
    assert [(s.i, s.type, s.content) for s in empty.steps] == [
        (0, "generation", "[empty generation]")
    ]
    garbage = traces[1].trace  # before, item 1: unparsable text is kept as the single step
    assert [(s.type, s.content) for s in garbage.steps] == [("generation", "7 7 7 | <end>")]

    fixed = traces[4].trace  # after, item 0
    assert fixed.prompt == "Question 0: what is the total?" and fixed.final_answer == "632"
    assert [s.type for s in fixed.steps] == ["equation"] * 3
    assert fixed.meta["eval"] == {
        "item_id": "eval_v1-0000",
        "category": "add",
        "difficulty": "hard",
        "expected_answer": "632",
    }
    assert fixed.meta["scores"]["correct"] is True and fixed.meta["scores"]["steps_correct"] == 3
    assert fixed.meta["run"]["git_sha"] == MANIFEST["git_sha"]
    assert fixed.meta["run"]["tokenizer_sha256"] == "unknown"
    assert fixed.meta["model"]["preset"] == "tiny" and fixed.meta["tags"] == ["eval", "after"]


def test_stale_metrics_file_is_refused(in_tmp) -> None:
    paths = _inputs(in_tmp)
    metrics = json.loads(paths["metrics"].read_text())
    metrics["after"]["accuracy"] = 0.9
    metrics["before"]["accuracy_by_category"]["add"] = 0.5
    paths["metrics"].write_text(json.dumps(metrics))
    res = _run(paths, in_tmp / "report")
    assert res.exit_code == 1
    assert (
        f"{paths['metrics']}: after.accuracy: is 0.9 but the per-item files give 0.5" in res.output
    )
    assert "before.accuracy_by_category.add: is 0.5" in res.output
    assert not (in_tmp / "report").exists()


def test_bad_item_line_names_file_line_field(in_tmp) -> None:
    paths = _inputs(in_tmp)
    lines = paths["after"].read_text().splitlines()
    record = json.loads(lines[2])
    record["gen_tokens"] = -1
    lines[2] = json.dumps(record)
    paths["after"].write_text("\n".join(lines) + "\n")
    res = _run(paths, in_tmp / "report")
    assert res.exit_code == 1
    assert (
        f"{paths['after']}:3: gen_tokens: Input should be greater than or equal to 0" in res.output
    )
    assert not (in_tmp / "report").exists()


def test_mismatched_items_and_bad_manifest(in_tmp) -> None:
    paths = _inputs(in_tmp)
    lines = paths["after"].read_text().splitlines()
    paths["after"].write_text("\n".join(lines[:3]) + "\n")
    res = _run(paths, in_tmp / "report")
    assert res.exit_code == 1 and "id: missing items ['eval_v1-0003']" in res.output

    paths = _inputs(in_tmp)
    paths["manifest"].write_text('{"git_sha": "abc",\n  oops}')
    res = _run(paths, in_tmp / "report")
    assert res.exit_code == 1 and f"{paths['manifest']}:2: <json>:" in res.output
    assert not (in_tmp / "report").exists()


def test_help() -> None:
    res = CliRunner().invoke(report_main, ["--help"])
    assert res.exit_code == 0 and "--n-examples" in res.output


def test_eval_traces_import_into_a_store(in_tmp) -> None:
    from tunixrt_dvc.cli import main as tunixrt

    paths = _inputs(in_tmp)
    assert _run(paths, in_tmp / "report").exit_code == 0
    args = ["traces", "import", str(in_tmp / "report" / "eval_traces.jsonl")]
    args += ["--store", f"sqlite:{in_tmp / 'store.sqlite'}"]
    first = CliRunner().invoke(tunixrt, args)
    assert first.exit_code == 0, first.output
    assert "inserted 8, skipped 0" in first.output
    # Same ids on a rerun of the report: importing again adds nothing.
    assert _run(paths, in_tmp / "report").exit_code == 0
    again = CliRunner().invoke(tunixrt, args)
    assert again.exit_code == 0 and "inserted 0, skipped 8" in again.output


# --- the HTML page ---------------------------------------------------------------------------

CHARTS = {"loss": 15, "lr": 12, "grad_norm": 12, "by_category": 8, "by_difficulty": 6}


def _figures(html: str) -> dict[str, str]:
    """Each `<figure data-chart=...>` of the page, by name."""
    return {
        m["name"]: m["body"]
        for m in re.finditer(
            r'<figure data-chart="(?P<name>[^"]+)"(?P<body>.*?)</figure>', html, re.S
        )
    }


def test_page_is_self_contained_and_byte_identical(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    paths = _inputs(Path("."))
    assert _run(paths, Path("a")).exit_code == 0 and _run(paths, Path("b")).exit_code == 0
    page = (tmp_path / "a" / "index.html").read_text()
    assert page == (tmp_path / "b" / "index.html").read_text()
    # Nothing to fetch: no scripts, links, imports or external URLs (SVG namespaces aside).
    assert not re.search(r"<script|<link|<img|<iframe|@import|url\([^#]", page)
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", page))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls
    figures = _figures(page)
    assert set(figures) == set(CHARTS)
    for name, points in CHARTS.items():
        assert f'data-points="{points}"' in figures[name] and "<svg" in figures[name], name
    assert str(tmp_path) not in page


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        why = "chromium not found: install Debian's `chromium` package (.ci/run does)"
        if os.environ.get("CI") == "true":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return path


def _offline() -> list[str]:
    """Run without any network: a new network namespace where one can be made."""
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    return ["unshare", "-n"] if probe.returncode == 0 else []


def _browse(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        *_offline(),
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # Even where a namespace cannot be made: nothing resolves, no proxy is reachable.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=socks5://127.0.0.1:9",
        f"--user-data-dir={profile}",
        *args,
        page.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_page_renders_every_chart_in_a_browser_without_network(in_tmp) -> None:
    from PIL import Image

    paths = _inputs(in_tmp)
    assert _run(paths, in_tmp / "report").exit_code == 0
    page = in_tmp / "report" / "index.html"
    dom = _browse(page, in_tmp / "profile", "--dump-dom").stdout
    figures = _figures(dom)
    assert set(figures) == set(CHARTS)
    for name in CHARTS:
        assert re.search(r'<svg[^>]*width="[1-9]', figures[name]), name
    # The data drawn is the report's: every bar by its label, both loss curves as lines.
    before, after = _pairs()
    for row in accuracy_plot_rows(before, after):
        label = f"category: {row['category']}; accuracy: {row['accuracy']:g}; model: {row['model']}"
        assert label in figures["by_category"], label
    assert figures["loss"].count('aria-roledescription="line mark"') == 2
    assert 'id="headline-table"' in dom and "<td>accuracy</td>" in dom

    shot = in_tmp / "shot.png"
    _browse(page, in_tmp / "profile2", "--window-size=1200,2400", f"--screenshot={shot}")
    image = Image.open(shot).convert("RGB")
    pixels = image.getdata()
    ink = sum(1 for p in pixels if p != (255, 255, 255)) / len(pixels)
    assert ink > 0.03 and len(set(pixels)) > 50, (ink, len(set(pixels)))


def test_with_rl_the_report_compares_the_sft_and_rl_models(in_tmp) -> None:
    paths = _inputs(Path("."))
    before, after = _pairs()
    rl = [*after[:3], before[3]]  # RL lost the last item's work
    paths["rl"] = Path("eval/rl.jsonl")
    paths["rl"].write_text("".join(dumps(s) + "\n" for s in rl), encoding="utf-8")
    metrics = eval_metrics(before, after, rl)
    paths["metrics"].write_text(json.dumps(metrics), encoding="utf-8")
    res = _run(paths, Path("report"))
    assert res.exit_code == 0, res.output
    md = Path("report/delta_report.md").read_text()
    section = md.split("## After RL (GRPO)", 1)[1].split("##", 1)[0]
    assert "| metric | after SFT | after RL | delta |" in section
    two_step = metrics["after"]["accuracy_by_category"]["two_step"]
    assert f"| accuracy: two_step | {two_step:.4f}" in section
    assert 'id="rl-table"' in Path("report/index.html").read_text()

    # The rl items must agree with the metrics' rl section, like before and after.
    stale = {**metrics, "rl": {**metrics["rl"], "accuracy": 0.99}}
    paths["metrics"].write_text(json.dumps(stale), encoding="utf-8")
    res = _run(paths, Path("report2"))
    assert res.exit_code != 0 and "rl.accuracy" in res.output, res.output
    assert not Path("report2/delta_report.md").exists()


def test_the_page_shows_the_seed_sweep_the_params_name(in_tmp) -> None:
    paths = _inputs(Path("."))
    sweep = json.loads((REPO / "results" / "seed_sweep.json").read_text())
    Path("sweep.json").write_text(json.dumps(sweep))
    write_params(paths["params"], {"report": {"n_examples": 2, "seed_sweep": "sweep.json"}})
    res = _run(paths, Path("report"))
    assert res.exit_code == 0, res.output
    page = Path("report/index.html").read_text()
    section = page.split('<section id="seeds">', 1)[1].split("</section>", 1)[0]
    acc = sweep["configs"][0]["summary"]["after.accuracy"]
    assert "(seeds 0, 1, 2, 3, 4)" in section
    assert (
        f"{acc['mean']:.4f} &plusmn; {acc['sd']:.4f}" in section and f"{acc['min']:.4f}" in section
    )


def _sweep(device: str | None, steps: int) -> dict:
    runs = [
        {"name": f"s{s}", "seed": s, "after.accuracy": 0.9 + s / 100, "commit": "a" * 40}
        | {"device": device, "params": {"seed": s, "model.preset": "tiny", "train.steps": steps}}
        for s in range(3)
    ]
    stats = {"n": 3, "mean": 0.91, "sd": 0.01, "min": 0.9, "ci_low": 0.885, "ci_high": 0.935}
    return {"configs": [{"config": "all runs", "runs": runs, "summary": {"after.accuracy": stats}}]}


@pytest.mark.parametrize(
    ("device", "steps", "said"),
    [
        ("cpu:cpu x1 AMD EPYC [avx2 fma]", 2000, "This run's device is the same kind"),
        ("cpu:cpu x1 Intel Xeon [avx512f amx]", 2000, "This run ran on another kind of machine"),
        (None, 2000, "whether the sweep's device matches is unknown"),
        ("cpu:cpu x1 AMD EPYC [avx2 fma]", 20, "train.steps: 20 there, 2000 here"),
    ],
)
def test_both_reports_say_where_the_seed_sweep_was_made(in_tmp, device, steps, said) -> None:
    paths = _inputs(Path("."))
    manifest = MANIFEST | {"device": "cpu:cpu x1 AMD EPYC [avx2 fma]"}
    manifest["params"] = {**MANIFEST["params"], "train": {"steps": 2000}, "seed": 0}
    paths["manifest"].write_text(json.dumps(manifest), encoding="utf-8")
    Path("sweep.json").write_text(json.dumps(_sweep(device, steps)))
    write_params(paths["params"], {"report": {"n_examples": 2, "seed_sweep": "sweep.json"}})
    res = _run(paths, Path("report"))
    assert res.exit_code == 0, res.output
    md = Path("report/delta_report.md").read_text()
    section = md.split("## Across seeds", 1)[1].split("\n## ", 1)[0]
    assert "at commit aaaaaaa (seeds 0, 1, 2)" in section and said in section, section
    assert "| after.accuracy | 3 | 0.9100 | 0.0100 | 0.9000 | [0.8850, 0.9350] |" in section
    page = Path("report/index.html").read_text()
    seeds = page.split('<section id="seeds">', 1)[1].split("</section>", 1)[0]
    assert said in seeds.replace("&#x27;", "'")
    mismatch = 'class="origin mismatch"' in seeds
    assert mismatch == (said != "This run's device is the same kind")
