"""Supervised fine-tuning with Tunix's `PeftTrainer`: packed batches, completion-only loss.

Read top to bottom: batches (packing), model inputs, optimizer, the run with its resume guard,
and the final export of the weights.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunixrt_dvc.params import TrainParams

# --------------------------------------------------------------------------------------------
# Batches: examples packed into fixed-length rows, so that compute is not spent on padding.
# --------------------------------------------------------------------------------------------


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


def model_inputs(batch: dict) -> dict:
    """Tunix input function: causal attention within each packed example only."""
    import jax.numpy as jnp

    seg = batch["segment_ids"]
    seq_len = seg.shape[-1]
    causal = jnp.tril(jnp.ones((seq_len, seq_len), dtype=jnp.bool_))
    same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] > 0)
    return {
        "input_tokens": batch["input_tokens"],
        "input_mask": batch["input_mask"],
        "positions": batch["positions"],
        "attention_mask": same & causal[None],
    }


def make_loss_fn(compute_dtype: str | None = None):
    """Tunix's completion-only loss (`_default_loss_fn`), or its mixed-precision variant.

    With `compute_dtype` set, the forward and backward passes run on a copy of the weights cast to
    it while the optimizer keeps the weights in their own dtype (float32 master weights, bfloat16
    matmuls); the log-softmax stays in float32.
    """
    from tunix.sft.peft_trainer import _default_loss_fn

    if compute_dtype is None:
        return _default_loss_fn

    import jax
    import jax.numpy as jnp
    from flax import nnx

    dtype = jnp.dtype(compute_dtype)

    # Tunix's formula with gathered targets: wrapping the cast model so that `_default_loss_fn`
    # gets float32 logits works too, but its one-hot targets made the step 3% slower here.
    # Named arguments: nnx.value_and_grad maps keyword arguments to positions by name.
    def loss_fn(model, input_tokens, input_mask, positions, attention_mask):
        graphdef, weights, rest = nnx.split(model, nnx.Param, ...)
        weights = jax.tree.map(lambda w: w.astype(dtype), weights)
        logits, _ = nnx.merge(graphdef, weights, rest)(
            input_tokens, positions, None, attention_mask
        )
        logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32))
        target = jnp.take_along_axis(logp, input_tokens[:, 1:, None], axis=-1)[..., 0]
        mask = input_mask[:, 1:].astype(jnp.float32)
        return -jnp.sum(target * mask) / (jnp.sum(mask) + 1e-8)

    return loss_fn


# --------------------------------------------------------------------------------------------
# Optimizer: AdamW, linear warmup + cosine decay, global-norm clipping; lr visible to Tunix.
# --------------------------------------------------------------------------------------------


def make_optimizer(p: TrainParams):
    import optax

    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=p.learning_rate,
        warmup_steps=min(p.warmup_steps, p.steps),
        decay_steps=max(p.steps, p.warmup_steps + 1),
        end_value=p.learning_rate * 0.05,
    )

    def adamw_clipped(learning_rate, weight_decay, max_norm):
        return optax.chain(
            optax.clip_by_global_norm(max_norm),
            optax.adamw(learning_rate, b1=0.9, b2=0.98, weight_decay=weight_decay),
        )

    # inject_hyperparams makes the learning rate part of the state, where Tunix logs it from.
    return optax.inject_hyperparams(adamw_clipped, static_args=("max_norm",))(
        learning_rate=schedule, weight_decay=p.weight_decay, max_norm=p.grad_clip
    )


# --------------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class TrainResult:
    steps: int
    resumed_from: int
    train_loss_first: float
    train_loss_last: float
    eval_loss_first: float | None
    eval_loss_last: float | None
    real_token_fraction: float
    tokens_per_s: float
    wall_s: float


class _StepLog:
    """Tunix training hook: appends each step's metrics to a JSONL file that survives a kill."""

    def __init__(self, path: Path, resumed_from: int):
        import tunix.sft.hooks as hooks

        self.path = path
        rows = []
        if path.exists() and resumed_from:
            rows = [
                r
                for r in map(json.loads, path.read_text().splitlines())
                if r["step"] <= resumed_from
            ]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        self._file = open(path, "a", buffering=1)  # noqa: SIM115 - closed by close()
        self._t = time.perf_counter()
        self.step_times: list[float] = []

        log = self

        class Hooks(hooks.TrainingHooks):
            def on_train_start(self, train_ctx) -> None:
                log._t = time.perf_counter()

            def on_train_end(self, train_ctx) -> None:
                pass

            def on_train_step_start(self, train_ctx) -> None:
                pass

            def on_train_step_end(self, train_ctx, train_step, train_loss) -> None:
                now = time.perf_counter()
                log.step_times.append(now - log._t)
                log._t = now
                hist = train_ctx.metrics_logger
                row = {"step": int(train_step), "loss": float(train_loss)}
                for name in ("grad_norm", "learning_rate"):
                    if hist.metric_exists("", name, "train"):
                        row[name] = float(hist.get_metric_history("", name, "train")[-1])
                log._file.write(json.dumps({"kind": "train", **row}) + "\n")

            def on_eval_step_start(self, train_ctx) -> None:
                pass

            def on_eval_step_end(self, train_ctx, eval_loss) -> None:
                hist = train_ctx.metrics_logger
                loss = float(hist.get_metric_history("", "loss", "eval")[-1])
                row = {"kind": "eval", "step": int(train_ctx.train_steps), "eval_loss": loss}
                log._file.write(json.dumps(row) + "\n")

        self.hooks = Hooks()

    def close(self) -> None:
        self._file.close()

    def rows(self, kind: str) -> list[dict]:
        """The last row per step (a resumed run logs the replayed steps again, identically)."""
        by_step: dict[int, dict] = {}
        for r in map(json.loads, self.path.read_text().splitlines()):
            if r["kind"] == kind:
                by_step[r["step"]] = {k: v for k, v in r.items() if k != "kind"}
        return [by_step[s] for s in sorted(by_step)]


def _guard_resume(work_dir: Path, fingerprint: dict) -> None:
    """Keep a checkpoint only if it was made by this exact config and data; else start fresh.

    Tunix resumes silently from whatever is in its checkpoint directory, so this is the only thing
    standing between a stale directory and a silently different result.
    """
    stamp = work_dir / "fingerprint.json"
    want = json.dumps(fingerprint, sort_keys=True)
    if work_dir.exists() and (not stamp.exists() or stamp.read_text() != want):
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(want)


def train(
    model,
    *,
    train_examples: Sequence[Example],
    val_examples: Sequence[Example],
    params: TrainParams,
    seed: int,
    work_dir: Path,
    fingerprint: dict,
) -> tuple[TrainResult, list[dict], list[dict]]:
    """Fine-tune `model` in place; resumes from `work_dir` when it holds this run's checkpoint.

    Returns the result, the per-step train rows and the eval rows.
    """
    import orbax.checkpoint as ocp
    from tunix.sft import peft_trainer

    _guard_resume(work_dir, fingerprint)
    config = peft_trainer.TrainingConfig(
        eval_every_n_steps=params.eval_every,
        max_steps=params.steps,
        checkpoint_root_directory=str((work_dir / "checkpoints").resolve()),
        checkpointing_options=ocp.CheckpointManagerOptions(
            save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(
                params.checkpoint_every
            ),
            max_to_keep=2,
        ),
        # In-memory metrics only: no TensorBoard files, no W&B, nothing on the network.
        metrics_logging_options=None,
        pbar_description="train",
    )
    trainer = peft_trainer.PeftTrainer(model, make_optimizer(params), config)
    trainer = trainer.with_gen_model_input_fn(model_inputs)
    trainer = trainer.with_loss_fn(make_loss_fn(params.compute_dtype))
    resumed_from = trainer.train_steps
    log = _StepLog(work_dir / "steps.jsonl", resumed_from)
    trainer.with_training_hooks(log.hooks)

    stream = batch_stream(
        train_examples, batch_size=params.batch_size, seq_len=params.seq_len, seed=seed
    )
    first_epoch = epoch_batches(
        train_examples, batch_size=params.batch_size, seq_len=params.seq_len, seed=seed, epoch=0
    )
    eval_batches = _eval_batches(val_examples, params)
    t0 = time.perf_counter()
    try:
        trainer.train(stream, eval_batches or None)
    finally:
        log.close()
    wall = time.perf_counter() - t0

    train_rows = log.rows("train")
    # Tunix also evaluates on entry, so a resumed run logs an extra evaluation at the step it
    # resumed from: keep the scheduled ones, as an uninterrupted run has them.
    eval_rows = [r for r in log.rows("eval") if r["step"] % params.eval_every == 0]
    if eval_batches and eval_rows[-1]["step"] != trainer.train_steps:
        # Tunix evaluates every `eval_every` steps only; the final model always gets one.
        eval_rows.append(
            {
                "step": trainer.train_steps,
                "eval_loss": eval_loss(model, eval_batches, params.compute_dtype),
            }
        )
    # The first step includes XLA compilation: leave it out of the throughput.
    timed = log.step_times[1:] or log.step_times
    tokens_per_step = params.batch_size * params.seq_len
    result = TrainResult(
        steps=trainer.train_steps,
        resumed_from=resumed_from,
        train_loss_first=train_rows[0]["loss"],
        train_loss_last=train_rows[-1]["loss"],
        eval_loss_first=eval_rows[0]["eval_loss"] if eval_rows else None,
        eval_loss_last=eval_rows[-1]["eval_loss"] if eval_rows else None,
        real_token_fraction=real_token_fraction(first_epoch),
        tokens_per_s=tokens_per_step * len(timed) / max(sum(timed), 1e-9),
        wall_s=wall,
    )
    return result, train_rows, eval_rows


def eval_loss(model, batches: Sequence[dict], compute_dtype: str | None = None) -> float:
    """Mean completion-only loss over batches, with the loss function the run trains with."""
    from flax import nnx

    loss_fn = make_loss_fn(compute_dtype)
    step = nnx.jit(lambda m, b: loss_fn(m, **model_inputs(b)))
    return float(np.mean([float(step(model, b)) for b in batches]))


def _eval_batches(val_examples: Sequence[Example], params: TrainParams) -> list[dict]:
    """Every validation example once, packed; the last batch is topped up with empty rows."""
    if not val_examples:
        return []
    batches = []
    rows = pack_rows([len(e.ids) for e in val_examples], seq_len=params.seq_len)
    for b in range(0, len(rows), params.batch_size):
        chunk = rows[b : b + params.batch_size]
        arrays = [_row_arrays(val_examples, r, params.seq_len) for r in chunk]
        arrays += [_row_arrays(val_examples, [], params.seq_len)] * (params.batch_size - len(chunk))
        tokens, mask, pos, seg = (np.stack(a) for a in zip(*arrays, strict=True))
        batches.append(
            {"input_tokens": tokens, "input_mask": mask, "positions": pos, "segment_ids": seg}
        )
    return batches


# --------------------------------------------------------------------------------------------
# The trained weights: a plain orbax PyTree checkpoint, byte-identical for identical weights.
# --------------------------------------------------------------------------------------------


def save_weights(model, path: Path) -> None:
    """Write the model's parameters as an orbax PyTree checkpoint at `path` (replaced).

    Orbax's `Checkpointer` adds commit timestamps and an absolute path to what it writes; the
    handler alone writes only the arrays and their metadata, and the result restores with
    `orbax.checkpoint.PyTreeCheckpointer().restore(path)`.
    """
    import orbax.checkpoint as ocp
    from etils import epath
    from flax import nnx

    state = nnx.state(model, nnx.Param).to_pure_dict()
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    handler = ocp.PyTreeCheckpointHandler(use_ocdbt=False)
    handler.save(epath.Path(tmp), args=ocp.args.PyTreeSave(state))
    handler.finalize(epath.Path(tmp))
    handler.close()
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def load_weights(model, path: Path) -> None:
    """Restore weights written by `save_weights` into a model of the same architecture."""
    import orbax.checkpoint as ocp
    from flax import nnx

    target = nnx.state(model, nnx.Param).to_pure_dict()
    restored = ocp.PyTreeCheckpointer().restore(Path(path).resolve(), item=target)
    nnx.update(model, restored)


# --------------------------------------------------------------------------------------------
# Benchmark rows (`tunixrt bench --rows train`).
# --------------------------------------------------------------------------------------------


def bench_row(ctx) -> list[dict]:
    """The train stage's throughput against a bare jitted JAX step, measured in one run.

    Same model (params.yaml's `model`), batch, optimizer and data (the format stage's output in
    data/formatted, which must exist: run `dvc repro format`); 60 steps each.
    """
    import tempfile

    from flax import nnx

    from tunixrt_dvc import model as model_lib
    from tunixrt_dvc.params import load_params
    from tunixrt_dvc.tokenizer import Tokenizer

    params = load_params()
    data = Path("data/formatted")
    if not (data / "train.jsonl").exists():
        raise FileNotFoundError("data/formatted/train.jsonl: run `dvc repro format` first")
    steps = 60
    tp = params.train.model_copy(
        update={"steps": steps, "eval_every": steps + 1, "checkpoint_every": steps + 1}
    )
    vocab = Tokenizer.load(data / "tokenizer.model").vocab_size
    examples = load_examples(data / "train.jsonl")

    def fresh():
        return model_lib.build_model(
            params.model, vocab_size=vocab, max_len=tp.seq_len, seed=params.seed
        )[0]

    with tempfile.TemporaryDirectory() as tmp:
        result, _, _ = train(
            fresh(),
            train_examples=examples,
            val_examples=[],
            params=tp,
            seed=params.seed,
            work_dir=Path(tmp) / "w",
            fingerprint={},
        )

    net = fresh()
    opt = nnx.Optimizer(net, make_optimizer(tp), wrt=nnx.Param)

    loss_fn = make_loss_fn(tp.compute_dtype)

    @nnx.jit
    def step(m, o, batch):
        loss, grads = nnx.value_and_grad(lambda mm: loss_fn(mm, **model_inputs(batch)))(m)
        o.update(m, grads)
        return loss

    stream = batch_stream(examples, batch_size=tp.batch_size, seq_len=tp.seq_len, seed=params.seed)
    step(net, opt, next(stream)).block_until_ready()  # compile
    t0 = time.perf_counter()
    for _ in range(steps - 1):
        loss = step(net, opt, next(stream))
    loss.block_until_ready()
    bare = tp.batch_size * tp.seq_len * (steps - 1) / (time.perf_counter() - t0)
    fraction = real_token_fraction(
        epoch_batches(
            examples, batch_size=tp.batch_size, seq_len=tp.seq_len, seed=params.seed, epoch=0
        )
    )
    return [
        {"row": "train", "metric": "stage tokens/s", "value": round(result.tokens_per_s, 1)},
        {"row": "train", "metric": "bare jitted JAX step tokens/s", "value": round(bare, 1)},
        {
            "row": "train",
            "metric": "stage / bare (target >= 0.95)",
            "value": round(result.tokens_per_s / bare, 3),
        },
        {
            "row": "train",
            "metric": "real / computed tokens (target >= 0.90)",
            "value": round(fraction, 4),
        },
    ]
