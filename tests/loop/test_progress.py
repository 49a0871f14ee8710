"""Progress of the long loops: plain lines off a terminal, a bar on one, and Tunix's own bar
kept from drawing beside ours."""

from __future__ import annotations

import io
import re
import threading
import time

import pytest

from tunixrt_dvc.loop import progress
from tunixrt_dvc.loop.progress import Progress, silence_tunix_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(p: Progress, *, steps: int, compile_s: float = 0.0, step_s: float = 0.0) -> None:
    """As the SFT loop reports: it can tell the first step compiled before that step ends."""
    p.compiling()
    time.sleep(compile_s)
    p.compiled()
    for i in range(steps):
        time.sleep(step_s)
        p.update(1, real=900, computed=1000, loss=2.0 - i / 10)
    p.close()


def test_off_a_terminal_lines_carry_step_loss_real_tokens_and_eta(monkeypatch):
    monkeypatch.setattr(progress, "INTERVAL_S", 0.05)
    out = io.StringIO()
    run(Progress("train", 6, stream=out), steps=6, compile_s=0.3, step_s=0.06)
    lines = out.getvalue().splitlines()
    assert lines[0] == "train: step 1/6 (compiling)"
    # The watch thread speaks while the first step compiles.
    assert any(re.match(r"train: step 0/6 .*step 1/6 compiling for", x) for x in lines), lines
    assert any(re.match(r"train: step 1/6 compiled in \d+\.\ds$", x) for x in lines), lines
    first = next(x for x in lines if x.startswith("train: step 1/6 (17%)"))
    assert "with compilation" in first and "ETA ?" in first  # no steady rate yet
    last = lines[-1]
    assert last.startswith("train: step 6/6 (100%) | loss 1.5 |"), last
    assert re.search(r"\| [\d,]+ real tok/s \| pad 10\.0% \| ETA 0s \| elapsed", last), last
    steady = [x for x in lines if re.match(r"train: step [2-5]/6", x)]
    assert steady and all(re.search(r"real tok/s .*ETA \d+s", x) for x in steady), lines


def test_a_huge_interval_leaves_the_compilation_and_the_first_and_last_steps():
    out = io.StringIO()
    run(Progress("train", 4, initial=2, stream=out), steps=2)
    lines = out.getvalue().splitlines()
    assert [x.split(" |")[0] for x in lines] == [
        "train: step 3/4 (compiling)",  # a resumed run goes on from its step
        "train: step 3/4 compiled in 0.0s",
        "train: step 3/4 (75%)",
        "train: step 4/4 (100%)",
    ], lines


def test_on_a_terminal_one_bar_with_the_figures():
    out = Terminal()
    run(Progress("eval after", 6, unit="item", rate="gen tok/s", stream=out), steps=6)
    text = out.getvalue()
    assert "\r" in text and "6/6" in text and "100%" in text
    assert re.search(r"loss 1\.5 \| [\d,]+ gen tok/s \| pad 10\.0% \| ETA 0s\]", text), text
    plain = [x for x in text.split("\n") if x and "\r" not in x]
    assert plain == [], plain  # nothing but the bar (the notes are written above it)


def test_disabled_it_writes_nothing_starts_no_thread_and_still_counts():
    out = Terminal()
    threads = threading.active_count()
    p = Progress("train", 3, enabled=False, stream=out)
    run(p, steps=3, step_s=0.01)
    p.note("x")
    assert out.getvalue() == "" and threading.active_count() == threads
    real, computed = p.rates()
    assert real / computed == pytest.approx(0.9)


def test_tunix_draws_no_bar_of_its_own_beside_ours(monkeypatch):
    """On a terminal PeftTrainer draws a tqdm bar unless one is already set."""
    import optax
    from flax import nnx
    from tunix.sft import peft_trainer

    def draws(silenced: bool) -> str:
        terminal = Terminal()
        monkeypatch.setattr("sys.stderr", terminal)
        config = peft_trainer.TrainingConfig(eval_every_n_steps=10, max_steps=2)
        model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        trainer = peft_trainer.PeftTrainer(model, optax.sgd(0.1), config)
        if silenced:
            silence_tunix_bar(trainer)
        trainer.train([])  # no batch: nothing compiles; the bar is made and closed
        return terminal.getvalue()

    assert "0/2" in draws(silenced=False)
    assert draws(silenced=True) == ""
