"""Greedy, batched generation with Tunix's `Sampler` and its KV cache."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm import tqdm


@dataclass(frozen=True)
class Generation:
    text: str  # the completion, without the prompt and without the stop token
    n_tokens: int  # generated tokens, the stop token included when one was produced


def cache_size_for(*, max_prompt_tokens: int, max_new_tokens: int) -> int:
    """KV cache length: the prompt bucket plus the new tokens (gotcha 7: their sum must fit)."""
    return _bucket(max_prompt_tokens) + max_new_tokens


def _bucket(n: int) -> int:
    """Prompt lengths rounded up to a multiple of 16, so the sampler compiles once per bucket."""
    return max(16, math.ceil(n / 16) * 16)


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    num_layers: int,
    num_kv_heads: int,
    head_dim: int,
    desc: str = "generate",
) -> list[Generation]:
    """Greedy completions of rendered generation prompts, stopping on `<end_of_turn>` or EOS.

    `tokenizer` is the project's `Tokenizer`; the sampler gets its raw SentencePiece processor
    (gotcha 1) and prepends BOS itself, as training does (gotcha 3). Every batch has the same
    shape (the last one is topped up with copies), so generation compiles once.
    """
    from tunix.generate import sampler as sampler_lib

    if not prompts:
        return []
    prompt_len = max(len(tokenizer.encode(p)) + 1 for p in prompts)  # +1: BOS
    max_prompt = _bucket(prompt_len)
    sampler = sampler_lib.Sampler(
        model,
        tokenizer.sp,
        sampler_lib.CacheConfig(
            cache_size=max_prompt + max_new_tokens,
            num_layers=num_layers,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
        ),
    )
    stops = [tokenizer.end_of_turn_id, tokenizer.eos_id]
    batch_size = min(batch_size, len(prompts))
    out: list[Generation] = []
    with tqdm(total=len(prompts), desc=desc, unit="prompt", disable=None) as bar:
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            n_real = len(chunk)
            chunk += [chunk[-1]] * (batch_size - n_real)
            result = sampler(
                chunk,
                max_generation_steps=max_new_tokens,
                max_prompt_length=max_prompt,
                eos_tokens=stops,
                temperature=0.0,
            )
            for text, tokens in zip(result.text[:n_real], result.tokens[:n_real], strict=True):
                out.append(Generation(text=text, n_tokens=_generated_length(tokens, stops)))
            bar.update(n_real)
    return out


def _generated_length(tokens, stops: Sequence[int]) -> int:
    """Tokens up to and including the first stop token (all of them if none was produced)."""
    for i, t in enumerate(tokens):
        if int(t) in stops:
            return i + 1
    return len(tokens)


def bench_row(ctx) -> list[dict]:
    """Eval generation: batched against one prompt at a time, and the eval set after compile.

    Uses params.yaml's model (random init from the seed: throughput does not depend on the
    weights, and every prompt generates the full `eval.max_new_tokens`), its tokenizer in
    data/formatted and the eval set.
    """
    import time

    from tunixrt_dvc import model as model_lib
    from tunixrt_dvc.evalsets import load_evalset
    from tunixrt_dvc.formatting import render_prompt
    from tunixrt_dvc.params import load_params
    from tunixrt_dvc.tokenizer import Tokenizer

    params = load_params()
    tok = Tokenizer.load("data/formatted/tokenizer.model")
    net, cfg = model_lib.build_model(
        params.model, vocab_size=tok.vocab_size, max_len=params.train.seq_len, seed=params.seed
    )
    prompts = [
        render_prompt(i.prompt, instruction=params.format.instruction)
        for i in load_evalset(params.eval.evalset)
    ]
    dims = {
        "num_layers": cfg.num_layers,
        "num_kv_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "max_new_tokens": params.eval.max_new_tokens,
    }

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
