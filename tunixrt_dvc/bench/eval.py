"""Bench row `eval`: batched generation against one prompt at a time, and the eval set."""

from __future__ import annotations

import time

from tunixrt_dvc.bench.context import BenchContext
from tunixrt_dvc.eval.sampling import generate
from tunixrt_dvc.model.build import build_model
from tunixrt_dvc.params import load_params
from tunixrt_dvc.task.evalsets import load_evalset
from tunixrt_dvc.text.chat import render_prompt
from tunixrt_dvc.text.tokenizer import Tokenizer


def eval_row(ctx: BenchContext) -> list[dict]:
    """Eval generation: batched against one prompt at a time, and the eval set after compile.

    Uses params.yaml's model (random init from the seed: throughput does not depend on the
    weights, and every prompt generates the full `eval.max_new_tokens`), its tokenizer in
    data/formatted and the eval set.
    """
    params = load_params(ctx.params_file)
    tok = Tokenizer.load("data/formatted/tokenizer.model")
    net, cfg = build_model(
        params.model, vocab_size=tok.vocab_size, max_len=params.train.seq_len, seed=params.seed
    )
    prompts = [
        render_prompt(i.prompt, instruction=params.format.instruction)
        for i in load_evalset(params.eval.evalset)
    ]
    dims = {"config": cfg, "max_new_tokens": params.eval.max_new_tokens}

    def timed(batch: list[str], batch_size: int) -> float:
        generate(net, tok, batch[:batch_size], batch_size=batch_size, **dims)  # compile
        t0 = time.perf_counter()
        gens = generate(net, tok, batch, batch_size=batch_size, **dims)
        return sum(g.n_tokens for g in gens) / (time.perf_counter() - t0)

    single = timed(prompts[:8], 1)
    batched = timed(prompts, params.eval.batch_size)
    t0 = time.perf_counter()
    generate(net, tok, prompts, batch_size=params.eval.batch_size, **dims)
    wall = time.perf_counter() - t0
    return [
        {"row": "eval", "metric": "one prompt at a time, tokens/s", "value": round(single, 1)},
        {
            "row": "eval",
            "metric": f"batched ({params.eval.batch_size}), tokens/s",
            "value": round(batched, 1),
        },
        {
            "row": "eval",
            "metric": "batched / one at a time (target >= 10)",
            "value": round(batched / single, 1),
        },
        {
            "row": "eval",
            "metric": f"eval set ({len(prompts)} prompts) after compile, s "
            "(target <= 15; one model)",
            "value": round(wall, 2),
        },
    ]
