"""Gemma's SentencePiece model rebuilt from the vocabulary table a GGUF file stores
(`tokenizer.ggml.tokens`, `.scores`, `.token_type`).

The table is all that BPE encoding reads; the rest of the model (normalizer, special ids, byte
fallback) is Gemma's fixed layout, written here. It sits in `model`, beside the GGUF import, since
`model` is below `text` in the package layers (docs/architecture.md); `text.tokenizer.Tokenizer`
loads the result.
"""

from __future__ import annotations

from collections.abc import Sequence

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

from tunixrt_dvc.text.chat import BOS, EOS, PAD, TURN_TOKENS, UNK

Piece = pb.ModelProto.SentencePiece
# Gemma's special pieces in their ids' order (pad 0, eos 1, bos 2, unk 3), and the turn markers
# the project's tokenizer requires.
SPECIAL = (PAD, EOS, BOS, UNK)
TURN_MARKERS = TURN_TOKENS
# GGUF's token types are SentencePiece's piece types, number for number (llama.cpp copied them):
# 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
PIECE_TYPES = frozenset(Piece.Type.values())


class VocabError(ValueError):
    """A vocabulary table that is not of Gemma's layout."""


def gemma_sentencepiece_model(
    pieces: Sequence[str], scores: Sequence[float], types: Sequence[int]
) -> bytes:
    """A serialized `ModelProto` of Gemma's layout holding this vocabulary, in order.

    BPE with byte fallback, identity normalization, no dummy prefix, kept whitespace (so that
    `decode(encode(x)) == x` and text between control turn markers encodes as when written
    whole). Piece types are kept, except that the piece at unk's id becomes the one UNKNOWN piece
    SentencePiece requires (GGUF files mark it control). Raises `VocabError` for tables of unequal
    lengths, an unknown piece type, special pieces out of Gemma's places or missing turn markers.
    """
    if not len(pieces) == len(scores) == len(types):
        raise VocabError(
            f"{len(pieces)} pieces, {len(scores)} scores and {len(types)} types: one each a piece"
        )
    for i, want in enumerate(SPECIAL):
        got = pieces[i] if i < len(pieces) else None
        if got != want:
            raise VocabError(f"piece {i} is {got!r}, Gemma's layout has {want!r} there")
    if missing := [m for m in TURN_MARKERS if m not in pieces]:
        raise VocabError(f"no piece {', '.join(missing)} (not a Gemma vocabulary)")
    unk = SPECIAL.index("<unk>")
    model = pb.ModelProto()
    for i, (piece, score, kind) in enumerate(zip(pieces, scores, types, strict=True)):
        if kind not in PIECE_TYPES:
            raise VocabError(f"piece {i} ({piece!r}) has type {kind}: not one of 1 to 6")
        if kind == Piece.UNKNOWN and i != unk:
            raise VocabError(f"piece {i} ({piece!r}) is of unknown type; only <unk> may be")
        model.pieces.add(piece=piece, score=score, type=Piece.UNKNOWN if i == unk else kind)
    spec = model.trainer_spec
    spec.model_type = pb.TrainerSpec.BPE
    spec.vocab_size = len(pieces)
    spec.byte_fallback = True
    spec.split_digits = True
    spec.pad_id, spec.eos_id, spec.bos_id, spec.unk_id = range(len(SPECIAL))
    spec.pad_piece, spec.eos_piece, spec.bos_piece, spec.unk_piece = SPECIAL
    norm = model.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = False
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    data = model.SerializeToString()
    try:  # SentencePiece's own checks (byte pieces for byte fallback, duplicate pieces, ...)
        spm.SentencePieceProcessor().LoadFromSerializedProto(data)
    except RuntimeError as e:
        raise VocabError(f"SentencePiece refuses the model: {e}") from None
    return data
