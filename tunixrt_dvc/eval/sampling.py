"""Greedy, batched generation with Tunix's `Sampler` and its KV cache."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import jax
from flax import nnx
from tunix.generate import sampler as sampler_lib

from tunixrt_dvc.loop.progress import Progress
from tunixrt_dvc.model.config import ModelConfig
from tunixrt_dvc.text.tokenizer import Tokenizer


@dataclass(frozen=True)
class Generation:
    text: str  # the completion, without the prompt and without the stop token
    n_tokens: int  # generated tokens, the stop token included when one was produced
    tokens: tuple[int, ...] = ()  # those tokens' ids


def cache_size_for(*, max_prompt_tokens: int, max_new_tokens: int) -> int:
    """KV cache length: the prompt bucket plus the new tokens (gotcha 7: their sum must fit)."""
    return _bucket(max_prompt_tokens) + max_new_tokens


def _bucket(n: int) -> int:
    """Prompt lengths rounded up to a multiple of 16, so the sampler compiles once per bucket."""
    return max(16, math.ceil(n / 16) * 16)


def generate(
    model: nnx.Module,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    *,
    config: ModelConfig,
    max_new_tokens: int,
    batch_size: int,
    desc: str = "generate",
) -> list[Generation]:
    """Greedy completions of rendered generation prompts, stopping on `<end_of_turn>` or EOS.

    `tokenizer` is the project's `Tokenizer`; the sampler gets `tokenizer.sp` (the SentencePiece
    processor, not Tunix's adapter: gotcha 1; with control-piece turn markers, the wrapper that
    encodes them as ids) and prepends BOS itself, as training does (gotcha 3). Every batch has
    the same shape (the last one is topped up with copies), so generation compiles once.
    """
    if not prompts:
        return []
    prompt_len = max(len(tokenizer.encode(p)) + 1 for p in prompts)  # +1: BOS
    max_prompt = _bucket(prompt_len)
    sampler = sampler_lib.Sampler(
        model,
        tokenizer.sp,
        sampler_lib.CacheConfig(
            cache_size=max_prompt + max_new_tokens,
            num_layers=config.num_layers,
            num_kv_heads=config.num_kv_heads,
            head_dim=config.head_dim,
        ),
    )
    stops = [tokenizer.end_of_turn_id, tokenizer.eos_id]
    batch_size = min(batch_size, len(prompts))
    out: list[Generation] = []
    n_batches = math.ceil(len(prompts) / batch_size)
    main = jax.process_index() == 0
    with Progress(desc, len(prompts), unit="item", rate="gen tok/s", enabled=main) as progress:
        progress.compiling(f"batch 1/{n_batches}")
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
            lengths = [_generated_length(tokens, stops) for tokens in result.tokens]
            for text, tokens, n in zip(
                result.text[:n_real], result.tokens[:n_real], lengths[:n_real], strict=True
            ):
                ids = tuple(int(t) for t in tokens[:n])
                out.append(Generation(text=text, n_tokens=n, tokens=ids))
            # Decoding runs until every row stopped: the slots past a row's stop, and the
            # top-up copies, are the padding.
            slots = batch_size * max(lengths)
            progress.update(n_real, real=sum(lengths[:n_real]), computed=slots)
    return out


def _generated_length(tokens, stops: Sequence[int]) -> int:
    """Tokens up to and including the first stop token (all of them if none was produced)."""
    for i, t in enumerate(tokens):
        if int(t) in stops:
            return i + 1
    return len(tokens)
