"""The tokenizer: Gemma's id layout, reproducible bytes, lossless and separable encoding, BOS
handling as Tunix's sampler does it, a real-Gemma-style model whose ids are looked up, and turn
markers that are control pieces (a tokenizer rebuilt from GGUF) encoded as their ids."""

from __future__ import annotations

import io
import random
from types import SimpleNamespace

import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

from tunixrt_dvc.text.chat import END_OF_TURN, PROMPT_SUFFIX, START_OF_TURN, render_prompt
from tunixrt_dvc.text.injection import control_layout_ok
from tunixrt_dvc.text.recipes import RECIPE_TAGS, render_completion
from tunixrt_dvc.text.tokenizer import Tokenizer, TokenizerError, TurnIdProcessor, train_tokenizer
from tunixrt_dvc.traces.schemas import Response

NAMES = ("Mia", "Leo", "Zoë", "Omar", "Iris")
ITEMS = ("apples", "marbles", "cards", "shells")


def pairs(n: int, *, seed: int = 0, recipe: str = "reasoning_tags") -> list[tuple[str, str]]:
    """(prompt, completion) of n rendered addition problems."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        who, what = rng.choice(NAMES), rng.choice(ITEMS)
        q = f"{who} has {a} {what} and finds {b} more. How many {what} does {who} have now?"
        r = Response(
            steps=[f"{a % 10} + {b % 10} = {a % 10 + b % 10}", f"{a} + {b} = {a + b}"],
            final_answer=str(a + b),
        )
        out.append(
            (render_prompt(q, instruction="Show your work."), render_completion(r, recipe=recipe))
        )
    return out


@pytest.fixture(scope="module")
def corpus() -> list[tuple[str, str]]:
    return pairs(400) + pairs(100, seed=1, recipe="tunix_rt")


@pytest.fixture(scope="module")
def model(corpus) -> bytes:
    return train_tokenizer((p + c for p, c in corpus), vocab_size=300, seed=0)


def test_gemma_id_layout_and_single_pieces(model: bytes) -> None:
    tok = Tokenizer.load(model)
    sp = tok.sp
    assert [sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<eos>", "<bos>", "<unk>"]
    assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)
    assert tok.stop_ids == [tok.end_of_turn_id, tok.eos_id]
    for piece in (START_OF_TURN, END_OF_TURN, "\n", *RECIPE_TAGS):
        assert len(tok.encode(piece)) == 1, piece
    assert tok.control_pieces == {"<pad>", "<eos>", "<bos>", START_OF_TURN, END_OF_TURN}
    assert tok.control_ids == {0, 1, 2, tok.start_of_turn_id, tok.end_of_turn_id}
    assert tok.vocab_size == sp.get_piece_size() <= 300


def test_model_bytes_reproducible_and_pathless(corpus, model: bytes, tmp_path) -> None:
    again = train_tokenizer((p + c for p, c in corpus), vocab_size=300, seed=0)
    assert again == model
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model)
    assert proto.trainer_spec.model_prefix == ""
    assert proto.trainer_spec.input == []
    (tmp_path / "t.model").write_bytes(model)
    assert Tokenizer.load(tmp_path / "t.model").model_bytes() == model


def test_lossless_and_separable(corpus, model: bytes) -> None:
    tok = Tokenizer.load(model)
    for prompt, completion in corpus:
        ids, n_prompt = tok.encode_example(prompt, completion)
        assert tok.decode(ids) == prompt + completion  # BOS decodes to nothing
        assert ids == [tok.bos_id, *tok.encode(prompt + completion)]
        assert n_prompt == 1 + len(tok.encode(prompt))
        assert ids[n_prompt - 1] == tok.encode("\n")[0]  # ...<start_of_turn>model\n
        assert ids[-1] == tok.end_of_turn_id


def test_bos_as_tunix_sampler_adds_it(corpus, model: bytes) -> None:
    """The prompt ids training sees are the ids Tunix's Sampler builds from the prompt text."""
    from tunix.generate.sampler import Sampler
    from tunix.generate.tokenizer_adapter import TokenizerAdapter

    tok = Tokenizer.load(model)
    fake_sampler = SimpleNamespace(tokenizer=TokenizerAdapter(tok.sp))
    for prompt, completion in corpus[:20]:
        ids, n_prompt = tok.encode_example(prompt, completion)
        assert Sampler.tokenize(fake_sampler, prompt).tolist() == ids[:n_prompt]


def test_vocab_size_is_an_upper_bound(corpus) -> None:
    texts = [p + c for p, c in corpus]
    small = Tokenizer.load(train_tokenizer(texts, vocab_size=120, seed=0))
    big = Tokenizer.load(train_tokenizer(texts, vocab_size=50_000, seed=0))
    assert small.vocab_size == 120
    assert 120 < big.vocab_size < 50_000  # what the corpus supports
    with pytest.raises(TokenizerError, match="vocab_size 40 is too small"):
        train_tokenizer(texts, vocab_size=40, seed=0)
    with pytest.raises(TokenizerError, match="no training text"):
        train_tokenizer([], vocab_size=300, seed=0)


def gemma_like(*, turn_tokens_as: str = "user_defined", pad_id: int = 0) -> bytes:
    """A model laid out like Gemma 3's tokenizer.model: <pad> <eos> <bos> <unk>, control pieces
    <mask> and [@BOS@], 99 <unusedN>, then <start_of_turn> 105 and <end_of_turn> 106."""
    rng = random.Random(0)
    words = ["apples", "more", "has", "user", "model", "How", "many", "the", "answer"]
    texts = [
        " ".join(rng.choice(words) + str(rng.randint(0, 99)) for _ in range(12)) for _ in range(300)
    ]
    unused = [f"<unused{i}>" for i in range(99)]
    turn = [START_OF_TURN, END_OF_TURN]
    ids = {"pad_id": pad_id, "eos_id": 1, "bos_id": 2, "unk_id": 3 if pad_id == 0 else 0}
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=out,
        model_type="bpe",
        vocab_size=400,
        hard_vocab_limit=False,
        **ids,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        control_symbols=["<mask>", "[@BOS@]", *(turn if turn_tokens_as == "control" else [])],
        user_defined_symbols=[*unused, *(turn if turn_tokens_as != "control" else []), "\n"],
        byte_fallback=True,
        add_dummy_prefix=False,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        minloglevel=2,
    )
    return out.getvalue()


def test_real_gemma_layout_is_looked_up(tmp_path) -> None:
    path = tmp_path / "tokenizer.model"
    path.write_bytes(gemma_like())
    tok = Tokenizer.load(path)
    assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)
    assert (tok.start_of_turn_id, tok.end_of_turn_id) == (105, 106)
    assert tok.control_pieces == {
        "<pad>",
        "<eos>",
        "<bos>",
        "<mask>",
        "[@BOS@]",
        START_OF_TURN,
        END_OF_TURN,
    }
    assert tok.control_ids == {0, 1, 2, 4, 5, 105, 106}
    prompt = render_prompt("How many apples?", instruction="")
    completion = render_completion(
        Response(steps=["1 + 2 = 3"], final_answer="3"), recipe="tunix_rt"
    )
    ids, n_prompt = tok.encode_example(prompt, completion)
    assert ids[:2] == [2, 105] and ids[-1] == 106
    suffix = tok.encode("<end_of_turn>\n<start_of_turn>model\n")
    assert suffix[:3] == [106, 107, 105]
    assert ids[n_prompt - len(suffix) : n_prompt] == suffix
    assert tok.decode(ids) == prompt + completion  # byte fallback covers unseen characters


def turns_as(model: bytes, kind: str, **normalizer: bool) -> bytes:
    """`model` with the turn pieces' type set to `kind` (CONTROL: as a GGUF rebuild has them)
    and normalizer flags changed; ids and scores stay."""
    proto = sentencepiece_model_pb2.ModelProto.FromString(model)
    for piece in proto.pieces:
        if piece.piece in (START_OF_TURN, END_OF_TURN):
            piece.type = getattr(sentencepiece_model_pb2.ModelProto.SentencePiece, kind)
    for field, value in normalizer.items():
        setattr(proto.normalizer_spec, field, value)
    return proto.SerializeToString()


@pytest.fixture(scope="module", params=["trained", "gemma_like"])
def user_defined(request, model: bytes) -> bytes:
    """Turn markers as user-defined pieces: the project's trained tokenizer, Google's layout."""
    return model if request.param == "trained" else gemma_like()


def test_user_defined_turns_encode_as_before(corpus, user_defined: bytes) -> None:
    """The processor itself, no wrapper: ids are SentencePiece's own, as before control pieces
    were accepted (the default pipeline's outputs do not change)."""
    tok = Tokenizer.load(user_defined)
    raw = spm.SentencePieceProcessor(model_proto=user_defined)
    assert type(tok.sp) is spm.SentencePieceProcessor and not tok.turns_as_ids
    texts = [t for pair in corpus[:50] for t in pair]
    assert [tok.encode(t) for t in texts] == raw.encode(texts)
    assert tok.encode_batch(texts) == raw.encode(texts)


def test_control_turns_encode_as_their_ids(corpus, user_defined: bytes) -> None:
    """The same vocabulary with control turn pieces: each marker is its one id, and every id,
    text and batch encoding (the format stage's `tok.sp.encode(texts, num_threads=1)`) equals the
    user-defined model's."""
    ud, tok = Tokenizer.load(user_defined), Tokenizer.load(turns_as(user_defined, "CONTROL"))
    assert isinstance(tok.sp, TurnIdProcessor) and tok.turns_as_ids
    sot, eot = tok.start_of_turn_id, tok.end_of_turn_id
    assert (sot, eot) == (ud.start_of_turn_id, ud.end_of_turn_id)
    assert len(tok.sp.processor.encode(START_OF_TURN)) > 1  # written as text: several pieces
    assert (tok.encode(START_OF_TURN), tok.encode(END_OF_TURN)) == ([sot], [eot])
    assert tok.control_ids == ud.control_ids and tok.control_pieces == ud.control_pieces
    suffix = tok.encode(PROMPT_SUFFIX)
    assert suffix == ud.encode(PROMPT_SUFFIX) and suffix[0] == eot and sot in suffix
    for prompt, completion in corpus:
        ids, n_prompt = tok.encode_example(prompt, completion)
        assert (ids, n_prompt) == ud.encode_example(prompt, completion)
        assert ids == [tok.bos_id, *tok.encode(prompt + completion)]  # separable
        assert ids[:2] == [tok.bos_id, sot] and ids[-1] == eot
        assert ids[n_prompt - len(suffix) : n_prompt] == suffix
        assert control_layout_ok(tok, ids, n_prompt, suffix=suffix)
        assert tok.decode(ids) == prompt + completion  # markers decode to their text
    texts = [t for pair in corpus for t in pair]
    assert tok.sp.encode(texts, num_threads=1) == ud.sp.encode(texts, num_threads=1)
    assert tok.encode_batch(texts) == ud.encode_batch(texts)
    assert tok.sp.encode(texts[0], out_type=str) == ud.sp.encode(texts[0], out_type=str)
    text = f" a  {END_OF_TURN} b{START_OF_TURN}{START_OF_TURN}  "  # spaces beside markers kept
    assert tok.encode(text) == ud.encode(text) and tok.decode(tok.encode(text)) == text
    with pytest.raises(AttributeError, match="not supported with control-piece turn markers"):
        tok.sp.encode_as_pieces  # noqa: B018 (would bypass the markers)


def test_control_turns_as_tunix_sampler_encodes_them(corpus, user_defined: bytes) -> None:
    """What Tunix gets (`tok.sp`, wrapped in its TokenizerAdapter) builds the prompt ids training
    saw, markers as ids, and decodes them back to text."""
    from tunix.generate.sampler import Sampler
    from tunix.generate.tokenizer_adapter import TokenizerAdapter

    tok = Tokenizer.load(turns_as(user_defined, "CONTROL"))
    adapter = TokenizerAdapter(tok.sp)
    assert (adapter.bos_id(), adapter.eos_id(), adapter.pad_id()) == (2, 1, 0)
    fake_sampler = SimpleNamespace(tokenizer=adapter)
    for prompt, completion in corpus[:20]:
        ids, n_prompt = tok.encode_example(prompt, completion)
        assert Sampler.tokenize(fake_sampler, prompt).tolist() == ids[:n_prompt]
        assert adapter.decode(ids[n_prompt:]) == completion


def test_control_turns_trained_as_control_symbols_accepted() -> None:
    tok = Tokenizer.load(gemma_like(turn_tokens_as="control"))
    assert tok.turns_as_ids
    ids, _ = tok.encode_example(render_prompt("How many apples?", instruction=""), "3<end_of_turn>")
    assert ids[:2] == [2, tok.start_of_turn_id] and ids[-1] == tok.end_of_turn_id


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (lambda: turns_as(gemma_like(), "NORMAL"), "encodes to .*, not to its piece"),
        (
            lambda: turns_as(gemma_like(), "CONTROL", add_dummy_prefix=True),
            "normalizer_spec.add_dummy_prefix must be false",
        ),
        (
            lambda: turns_as(gemma_like(), "CONTROL", remove_extra_whitespaces=True),
            "normalizer_spec.remove_extra_whitespaces must be false",
        ),
        (lambda: gemma_like(pad_id=4), "padding must be id 0"),
        (lambda: b"not a model", "not a SentencePiece model"),
    ],
)
def test_unusable_tokenizers_refused(model, message: str) -> None:
    with pytest.raises(TokenizerError, match=message):
        Tokenizer.load(model())


def test_missing_turn_tokens_refused() -> None:
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["plain text only"] * 10),
        model_writer=out,
        vocab_size=20,
        hard_vocab_limit=False,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        minloglevel=2,
    )
    with pytest.raises(TokenizerError, match="no piece <start_of_turn>, <end_of_turn>"):
        Tokenizer.load(out.getvalue())


def test_training_texts_are_sampled_to_a_bounded_set():
    from tunixrt_dvc.text.tokenizer import bounded_sample

    small = [f"t{i}" for i in range(10)]
    assert bounded_sample(iter(small), cap=10, seed=0) == small
    big = (f"t{i}" for i in range(1000))
    a = bounded_sample(big, cap=50, seed=1)
    assert len(a) == 50 == len(set(a))
    assert a == bounded_sample((f"t{i}" for i in range(1000)), cap=50, seed=1)
    assert a != bounded_sample((f"t{i}" for i in range(1000)), cap=50, seed=2)
    assert a == sorted(a, key=lambda t: int(t[1:]))  # input order kept
