"""Packing: tokenized examples into fixed-length rows, so that compute is not spent on padding.

A row holds several examples back to back; `segment_ids` tells them apart (0 is padding), so that
each attends only to itself (`sft.inputs.model_inputs`) and its positions restart at 0.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Example:
    """A tokenized example: `ids` = [BOS] + prompt + completion; loss on ids[n_prompt:]."""

    ids: np.ndarray
    n_prompt: int


def load_examples(path: Path) -> list[Example]:
    """Tokenized records written by the format stage (`ids`, `n_prompt`)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            out.append(Example(np.asarray(r["ids"], np.int32), int(r["n_prompt"])))
    return out


def pack_rows(lengths: Sequence[int], *, seq_len: int, window: int = 2048) -> list[list[int]]:
    """Best-fit-decreasing packing of examples (by index) into rows of `seq_len` tokens.

    Works on windows of consecutive examples, so the (already shuffled) order still mixes rows.
    """
    rows: list[list[int]] = []
    for start in range(0, len(lengths), window):
        idx = sorted(range(start, min(start + window, len(lengths))), key=lambda i: -lengths[i])
        bins: list[list[int]] = []
        free: list[int] = []
        for i in idx:
            n = lengths[i]
            if n > seq_len:
                raise ValueError(f"example of {n} tokens does not fit a row of {seq_len}")
            best = -1
            for b, f in enumerate(free):
                if n <= f and (best < 0 or f < free[best]):
                    best = b
            if best < 0:
                bins.append([i])
                free.append(seq_len - n)
            else:
                bins[best].append(i)
                free[best] -= n
        rows.extend(bins)
    return rows


def _row_arrays(
    examples: Sequence[Example], row: list[int], seq_len: int
) -> tuple[np.ndarray, ...]:
    tokens = np.zeros(seq_len, np.int32)
    loss_mask = np.zeros(seq_len, np.int32)
    positions = np.zeros(seq_len, np.int32)
    segments = np.zeros(seq_len, np.int32)
    at = 0
    for seg, i in enumerate(row, start=1):
        ex = examples[i]
        n = len(ex.ids)
        tokens[at : at + n] = ex.ids
        loss_mask[at + ex.n_prompt : at + n] = 1
        positions[at : at + n] = np.arange(n)
        segments[at : at + n] = seg
        at += n
    return tokens, loss_mask, positions, segments


def epoch_batches(
    examples: Sequence[Example], *, batch_size: int, seq_len: int, seed: int, epoch: int
) -> list[dict[str, np.ndarray]]:
    """One epoch: shuffled by (seed, epoch), packed, rows shuffled; a short tail is dropped."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(examples))
    shuffled = [examples[i] for i in order]
    rows = pack_rows([len(e.ids) for e in shuffled], seq_len=seq_len)
    rows = [rows[i] for i in rng.permutation(len(rows))]
    out = []
    for b in range(len(rows) // batch_size):
        arrays = [
            _row_arrays(shuffled, r, seq_len) for r in rows[b * batch_size : (b + 1) * batch_size]
        ]
        tokens, mask, pos, seg = (np.stack(a) for a in zip(*arrays, strict=True))
        out.append(
            {"input_tokens": tokens, "input_mask": mask, "positions": pos, "segment_ids": seg}
        )
    return out


def batch_stream(
    examples: Sequence[Example], *, batch_size: int, seq_len: int, seed: int
) -> Iterator[dict[str, np.ndarray]]:
    """Endless, deterministic stream of packed batches (epoch after epoch)."""
    epoch = 0
    while True:
        batches = epoch_batches(
            examples, batch_size=batch_size, seq_len=seq_len, seed=seed, epoch=epoch
        )
        if not batches:
            raise ValueError(
                f"{len(examples)} examples do not fill one batch of "
                f"{batch_size} rows x {seq_len} tokens"
            )
        yield from batches
        epoch += 1


def real_token_fraction(batches: Sequence[dict[str, np.ndarray]]) -> float:
    """Share of the computed tokens (rows x seq_len) that belong to an example."""
    real = sum(int((b["segment_ids"] > 0).sum()) for b in batches)
    computed = sum(b["segment_ids"].size for b in batches)
    return real / computed


def eval_batches(
    examples: Sequence[Example], *, batch_size: int, seq_len: int
) -> list[dict[str, np.ndarray]]:
    """Every example once, packed in order; the last batch is topped up with empty rows."""
    if not examples:
        return []
    batches = []
    rows = pack_rows([len(e.ids) for e in examples], seq_len=seq_len)
    for b in range(0, len(rows), batch_size):
        chunk = rows[b : b + batch_size]
        arrays = [_row_arrays(examples, r, seq_len) for r in chunk]
        arrays += [_row_arrays(examples, [], seq_len)] * (batch_size - len(chunk))
        tokens, mask, pos, seg = (np.stack(a) for a in zip(*arrays, strict=True))
        batches.append(
            {"input_tokens": tokens, "input_mask": mask, "positions": pos, "segment_ids": seg}
        )
    return batches
