"""The eval's generation says how far it is, per batch, and generates the same without it."""

from __future__ import annotations

import re

from support.params import model_params

from tunixrt_dvc.eval import sampling
from tunixrt_dvc.loop import progress
from tunixrt_dvc.model.build import build_model
from tunixrt_dvc.text.chat import END_OF_TURN, render_prompt
from tunixrt_dvc.text.tokenizer import Tokenizer, train_tokenizer

PROMPTS = [
    render_prompt(f"Mia has {a} shells and finds {b} more. How many?", instruction="Add.")
    for a, b in [(12, 30), (7, 45), (130, 2), (5, 61), (88, 9)]
]


def test_generation_reports_items_generated_tokens_and_eta_per_batch(monkeypatch, capsys):
    tok = Tokenizer.load(
        train_tokenizer(
            [p + "12 + 30 = 42" + END_OF_TURN for p in PROMPTS * 30], vocab_size=200, seed=0
        )
    )
    small = model_params(
        num_layers=1, embed_dim=32, hidden_dim=64, num_heads=2, head_dim=16, num_kv_heads=1
    )
    net, config = build_model(small, vocab_size=tok.vocab_size, max_len=128, seed=0)

    def generate():
        return sampling.generate(
            net, tok, PROMPTS, config=config, max_new_tokens=8, batch_size=2, desc="eval after"
        )

    monkeypatch.setattr(progress, "INTERVAL_S", 0.2)
    shown = generate()
    out, err = capsys.readouterr()
    assert "eval after:" not in out
    lines = [x for x in err.splitlines() if x.startswith("eval after:")]
    assert lines[0] == "eval after: batch 1/3 (compiling)", lines
    first = next(x for x in lines if x.startswith("eval after: item 2/5 (40%)"))
    assert "ETA ?" in first and re.search(r"batch 1/3 took \d+\.\ds with compilation$", first)
    # Generated tokens are the real ones: a row's slots after its stop token and the last
    # batch's top-up copy (of its one prompt) are padding.
    n = [g.n_tokens for g in shown]
    slots = 2 * (max(n[0], n[1]) + max(n[2], n[3]) + n[4])
    assert re.fullmatch(
        rf"eval after: item 5/5 \(100%\) \| [\d,]+ gen tok/s \| pad {1 - sum(n) / slots:.1%}"
        r" \| ETA 0s \| elapsed \d+s",
        lines[-1],
    ), lines

    monkeypatch.setattr(sampling.jax, "process_index", lambda: 1)  # a process that shows nothing
    assert generate() == shown
    assert "eval after:" not in capsys.readouterr().err
