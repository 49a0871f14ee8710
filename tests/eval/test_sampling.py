"""The eval's greedy generation with a tokenizer whose turn markers are control pieces (a Gemma
tokenizer rebuilt from GGUF): the sampler gets the markers as ids, as with user-defined pieces."""

from __future__ import annotations

import numpy as np
from sentencepiece import sentencepiece_model_pb2
from support.params import model_params

from tunixrt_dvc.eval import sampling
from tunixrt_dvc.model.build import build_model
from tunixrt_dvc.text.chat import END_OF_TURN, START_OF_TURN, render_prompt
from tunixrt_dvc.text.tokenizer import Tokenizer, train_tokenizer

PROMPTS = [
    render_prompt(f"Mia has {a} shells and finds {b} more. How many?", instruction="Add.")
    for a, b in [(12, 30), (7, 45), (130, 2)]
]


def control_turns(model: bytes) -> bytes:
    """The same model with its turn pieces typed CONTROL (ids unchanged), as GGUF types them."""
    proto = sentencepiece_model_pb2.ModelProto.FromString(model)
    for piece in proto.pieces:
        if piece.piece in (START_OF_TURN, END_OF_TURN):
            piece.type = sentencepiece_model_pb2.ModelProto.SentencePiece.CONTROL
    return proto.SerializeToString()


def test_generation_gets_control_turn_markers_as_ids(monkeypatch) -> None:
    """Same vocabulary, user-defined vs control turn pieces: the sampler receives the same prompt
    ids ([BOS] + the project's encoding, markers as one id each) and greedy decoding from one
    random model gives the same completions."""
    from tunix.generate import sampler as sampler_lib

    seen: list[list[int]] = []

    class Recording(sampler_lib.Sampler):
        def __call__(self, *args, **kwargs):
            out = super().__call__(*args, **kwargs)
            seen.extend([int(t) for t in np.asarray(p) if t != 0] for p in out.padded_prompt_tokens)
            return out

    monkeypatch.setattr(sampling.sampler_lib, "Sampler", Recording)
    texts = [p + "12 + 30 = 42" + END_OF_TURN for p in PROMPTS * 30]
    model = train_tokenizer(texts, vocab_size=200, seed=0)
    user_defined, control = Tokenizer.load(model), Tokenizer.load(control_turns(model))
    assert control.turns_as_ids and not user_defined.turns_as_ids
    small = model_params(
        num_layers=1, embed_dim=32, hidden_dim=64, num_heads=2, head_dim=16, num_kv_heads=1
    )
    net, cfg = build_model(small, vocab_size=control.vocab_size, max_len=128, seed=0)

    results = {}
    for name, tok in (("user_defined", user_defined), ("control", control)):
        seen.clear()
        results[name] = sampling.generate(
            net, tok, PROMPTS, config=cfg, max_new_tokens=8, batch_size=2
        )
        expected = [[tok.bos_id, *tok.encode(p)] for p in PROMPTS]
        assert seen[: len(PROMPTS)] == expected  # the last batch is topped up with a copy
        for ids in expected:
            assert ids[1] == tok.start_of_turn_id
            assert ids.count(tok.start_of_turn_id) == 2 and ids.count(tok.end_of_turn_id) == 1
    assert expected == [[2, *user_defined.encode(p)] for p in PROMPTS]
    assert results["control"] == results["user_defined"]
