"""SentencePiece tokenizers: train one with Gemma's id layout, or load Gemma's `tokenizer.model`."""

from __future__ import annotations

import io
import os
import random
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

from tunixrt_dvc.text.chat import BOS, END_OF_TURN, EOS, PAD, START_OF_TURN, TURN_TOKENS, UNK
from tunixrt_dvc.text.recipes import RECIPE_TAGS

# The trainer records its options in the model file, the thread count included: keep it fixed so
# the bytes do not depend on the machine.
TRAINER_THREADS = 2
# More training sentences than this are sampled (seeded): the vocabulary of templated text
# saturates long before, and the trainer holds its sentences in memory.
MAX_TRAINING_SENTENCES = 100_000
# Sentences longer than this (bytes) are left out of training; they are still tokenized.
MAX_SENTENCE_BYTES = 16_384


class TokenizerError(ValueError):
    """A tokenizer that cannot be trained or used as this project needs."""


def train_tokenizer(texts: Iterable[str], *, vocab_size: int, seed: int) -> bytes:
    """Train a BPE SentencePiece model on rendered examples; returns the model's bytes.

    Gemma's id layout (PAD 0, EOS 1, BOS 2, UNK 3), then the turn tokens, `\\n` and the recipe
    tags as single pieces. Identity normalization, no dummy prefix and kept whitespace make
    `decode(encode(x)) == x` (for characters seen in training) and let a prompt and its completion
    be encoded separately. BPE rather than unigram: on templated text unigram's seed pieces stay
    short (words cross the repeated context), BPE finds the words. `vocab_size` is an upper
    bound: a corpus with fewer distinct merges gives a smaller vocabulary. Same texts and seed,
    same bytes (the model is written from memory, so it embeds no path).
    """
    spm.set_random_generator_seed(seed)
    texts = bounded_sample(texts, cap=MAX_TRAINING_SENTENCES, seed=seed)
    out = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=out,
            model_type="bpe",
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            character_coverage=1.0,
            pad_id=0,
            eos_id=1,
            bos_id=2,
            unk_id=3,
            pad_piece=PAD,
            eos_piece=EOS,
            bos_piece=BOS,
            unk_piece=UNK,
            user_defined_symbols=[*TURN_TOKENS, "\n", *RECIPE_TAGS],
            add_dummy_prefix=False,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            split_digits=True,
            # Pieces may span spaces (" = ", " + "): templated text encodes ~25% shorter.
            split_by_whitespace=False,
            num_threads=TRAINER_THREADS,
            input_sentence_size=MAX_TRAINING_SENTENCES,
            shuffle_input_sentence=True,
            max_sentence_length=MAX_SENTENCE_BYTES,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise TokenizerError(_training_error(str(e), vocab_size)) from None
    return out.getvalue()


def bounded_sample(texts: Iterable[str], *, cap: int, seed: int) -> list[str]:
    """All texts, in order, when there are at most `cap`; else a seeded uniform sample of `cap`.

    SentencePiece loads everything its iterator yields before sampling, so memory would grow with
    the corpus; a reservoir sample here keeps it flat (in input order, so small corpora are
    passed through unchanged).
    """
    rng = random.Random(seed)
    sample: list[tuple[int, str]] = []
    for i, text in enumerate(texts):
        if i < cap:
            sample.append((i, text))
        elif (j := rng.randrange(i + 1)) < cap:
            sample[j] = (i, text)
    sample.sort(key=lambda pair: pair[0])
    return [text for _, text in sample]


def _training_error(message: str, vocab_size: int) -> str:
    """SentencePiece's check failure, in this project's terms."""
    if "sentences_.empty()" in message:
        return f"no training text (or every text is longer than {MAX_SENTENCE_BYTES} bytes)"
    if m := re.search(r"smaller than required_chars\. \d+ vs (\d+)", message):
        return (
            f"vocab_size {vocab_size} is too small: the training text needs {m[1]} pieces for its "
            "characters and the special pieces alone"
        )
    # "INTERNAL: src/trainer_interface.cc(744) [condition] message" -> the message.
    return re.sub(r"^.*?\) \[.*?\] ", "", message.strip())


class Tokenizer:
    """A SentencePiece model with its special ids looked up by piece, never assumed."""

    def __init__(self, sp: spm.SentencePieceProcessor, *, source: str = "<bytes>"):
        ids = {piece: _id_of(sp, piece) for piece in (PAD, EOS, BOS, START_OF_TURN, END_OF_TURN)}
        missing = [p for p, i in ids.items() if i is None]
        if missing:
            raise TokenizerError(f"{source}: no piece {', '.join(missing)} (not a Gemma tokenizer)")
        if ids[PAD] != 0:
            # Tunix (and the trainer here) treat token id 0 as padding.
            raise TokenizerError(f"{source}: {PAD} has id {ids[PAD]}; padding must be id 0")
        turn_ids = {piece: ids[piece] for piece in TURN_TOKENS}
        # What Tunix's Sampler and RLCluster take, and what every encode here goes through: the
        # processor itself when the turn markers are user-defined pieces (Google's tokenizer.model,
        # ours), else a wrapper that writes the turns as their ids.
        self.sp: spm.SentencePieceProcessor | TurnIdProcessor = sp
        if not _turns_encode_as_text(sp, source, turn_ids):
            self.sp = TurnIdProcessor(sp, turn_ids)
        self.pad_id, self.eos_id, self.bos_id = ids[PAD], ids[EOS], ids[BOS]
        self.start_of_turn_id, self.end_of_turn_id = ids[START_OF_TURN], ids[END_OF_TURN]
        controls = {sp.id_to_piece(i) for i in range(sp.get_piece_size()) if sp.is_control(i)}
        self.control_pieces: frozenset[str] = frozenset(controls | set(ids))
        self.control_ids: frozenset[int] = frozenset(sp.piece_to_id(p) for p in self.control_pieces)

    @classmethod
    def load(cls, source: str | os.PathLike[str] | bytes) -> Tokenizer:
        """From model bytes or a `tokenizer.model` path (ours or Gemma's own)."""
        if isinstance(source, bytes):
            data, name = source, "<bytes>"
        else:
            data, name = Path(source).read_bytes(), str(source)
        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(data)
        except RuntimeError:
            raise TokenizerError(f"{name}: not a SentencePiece model") from None
        return cls(sp, source=name)

    @property
    def turns_as_ids(self) -> bool:
        """Whether the turn markers are control pieces, encoded as their ids (not as text)."""
        return isinstance(self.sp, TurnIdProcessor)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def stop_ids(self) -> list[int]:
        """What generation stops on (the sampler stops on EOS only unless told)."""
        return [self.end_of_turn_id, self.eos_id]

    def model_bytes(self) -> bytes:
        return self.sp.serialized_model_proto()

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without BOS (the sampler adds it)."""
        return self.sp.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` over many texts, on all cores (SentencePiece's own threads)."""
        return self.sp.encode(list(texts), num_threads=-1)

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode(list(ids))

    def encode_example(self, prompt_text: str, completion_text: str) -> tuple[list[int], int]:
        """`[BOS] + prompt + completion` and the count of BOS + prompt tokens.

        The sampler encodes a prompt alone and prepends BOS; encoding the two parts separately
        makes training see exactly the ids generation starts from.
        """
        prompt = self.encode(prompt_text)
        return [self.bos_id, *prompt, *self.encode(completion_text)], 1 + len(prompt)


def _id_of(sp: spm.SentencePieceProcessor, piece: str) -> int | None:
    i = sp.piece_to_id(piece)  # an unknown piece maps to unk's id
    return i if sp.id_to_piece(i) == piece else None


def _turns_encode_as_text(
    sp: spm.SentencePieceProcessor, source: str, turn_ids: dict[str, int]
) -> bool:
    """True when each turn marker, written as text, encodes to its piece (user-defined pieces);
    False when they are control pieces that can be encoded as ids instead; else refused."""
    as_text = {piece: sp.encode(piece, out_type=str) for piece in turn_ids}
    if all(got == [piece] for piece, got in as_text.items()):
        return True
    for piece, got in as_text.items():
        if got != [piece] and not sp.is_control(turn_ids[piece]):
            raise TokenizerError(
                f"{source}: the text {piece!r} encodes to {got}, not to its piece (turns are "
                "written as text: it must be a user-defined piece with no dummy prefix, or a "
                "control piece)"
            )
    # Control markers: the text between them is encoded piece by piece, which equals encoding
    # the whole (as with user-defined markers) only if no segment gains or loses spaces.
    normalizer = sentencepiece_model_pb2.ModelProto.FromString(
        sp.serialized_model_proto()
    ).normalizer_spec
    bad = [f for f in ("add_dummy_prefix", "remove_extra_whitespaces") if getattr(normalizer, f)]
    if bad:
        raise TokenizerError(
            f"{source}: the turn markers are control pieces, encoded as ids between separately "
            f"encoded text, so normalizer_spec.{' and '.join(bad)} must be false (as in "
            "Gemma's own tokenizer.model)"
        )
    return False


class TurnIdProcessor:
    """A SentencePiece processor whose text turn markers become their (control) ids.

    SentencePiece never parses a control piece out of text and decodes it to nothing. Here
    `encode` splits text at the marker strings and puts each marker's id between the encoded
    pieces, and `decode` writes markers back as text: the ids and text equal those of the same
    vocabulary with user-defined markers. Tunix calls `encode`/`decode`/`bos_id`/`eos_id`/
    `pad_id`; anything else that does not encode or decode is the processor's own.
    """

    def __init__(self, processor: spm.SentencePieceProcessor, turn_ids: dict[str, int]):
        self.processor = processor
        self._id_of = dict(turn_ids)
        self._piece_of = {i: piece for piece, i in turn_ids.items()}
        self._split = re.compile("(" + "|".join(map(re.escape, turn_ids)) + ")")

    def encode(
        self,
        text: str | Sequence[str],
        out_type: type = int,
        num_threads: int | None = None,
    ) -> list[int] | list[str] | list[list[int]] | list[list[str]]:
        """Ids (or pieces, `out_type=str`) of one text or of a batch, as the processor's."""
        if out_type not in (int, str):
            raise ValueError(f"out_type {out_type!r}: only int and str")
        single = isinstance(text, str)
        parts = [self._split.split(t) for t in ([text] if single else text)]
        # One batched call over every text segment (SentencePiece's threads), then reassembly:
        # parts alternate text, marker, text, ...
        threads = {} if num_threads is None else {"num_threads": num_threads}
        segments = [seg for p in parts for seg in p[0::2]]
        encoded = iter(self.processor.encode(segments, out_type=out_type, **threads))
        out = []
        for p in parts:
            ids = list(next(encoded))
            for marker in p[1::2]:
                ids.append(self._id_of[marker] if out_type is int else marker)
                ids.extend(next(encoded))
            out.append(ids)
        return out[0] if single else out

    def decode(self, ids: Iterable[int]) -> str:
        """Text of one id sequence, turn markers included (other control pieces decode to "")."""
        out, run = [], []
        for i in map(int, ids):
            if (piece := self._piece_of.get(i)) is None:
                run.append(i)
                continue
            out += [self.processor.decode(run), piece]
            run = []
        out.append(self.processor.decode(run))
        return "".join(out)

    # SentencePiece's CamelCase names, which Tunix's tokenizer helpers call.
    EncodeAsIds = Encode = encode
    DecodeIds = Decode = decode

    def __getattr__(self, name: str):
        if name.startswith("__") or name == "processor":  # copy/pickle probe a bare instance
            raise AttributeError(name)
        # Any other encode/decode entry point of the processor would mis-encode the markers.
        if re.match(r"(?i)(sample_?)?(encode|decode|parallel|nbest|calculate)", name):
            raise AttributeError(f"{name}: not supported with control-piece turn markers")
        return getattr(self.processor, name)
