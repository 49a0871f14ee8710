"""UNGAR High Card Duel -> traces.

`ungar` is not on PyPI, so the conversion is tested on episodes built here with a stand-in module
that mirrors its API (Card(suit, rank) enums, Episode(states, moves, rewards), a state's `hands` and
`current_player()`); the missing-package path is tested for real, in a fresh interpreter.
"""

from __future__ import annotations

import enum
import importlib.util
import random
import subprocess
import sys
import types
from dataclasses import dataclass

import pytest
from support.params import write_params

from tunixrt_dvc.errors import InvalidInput
from tunixrt_dvc.task.reservations import load_reservations
from tunixrt_dvc.traces import ungar
from tunixrt_dvc.traces.export import export
from tunixrt_dvc.traces.schemas import StoredTrace
from tunixrt_dvc.traces.urls import open_source

Suit = enum.Enum("Suit", "SPADES HEARTS DIAMONDS CLUBS")
Rank = enum.Enum("Rank", "ACE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN JACK QUEEN KING JOKER")


@dataclass(frozen=True)
class Card:
    suit: Suit
    rank: Rank


@dataclass(frozen=True)
class Move:
    id: int
    name: str


@dataclass(frozen=True)
class State:
    hands: tuple[Card, Card]
    revealed: tuple[bool, bool]
    player: int

    def current_player(self) -> int:
        return self.player


@dataclass
class Episode:
    states: list
    moves: list
    rewards: tuple[float, ...]


VALUE = {r: (100 if r.name == "JOKER" else 99 if r.name == "ACE" else r.value) for r in Rank}


def episode(c1: Card, c2: Card) -> Episode:
    """Both players reveal; rewards as UNGAR scores them."""
    s0 = State((c1, c2), (False, False), 0)
    s1 = State((c1, c2), (True, False), 1)
    s2 = State((c1, c2), (True, True), -1)
    v1, v2 = VALUE[c1.rank], VALUE[c2.rank]
    rewards = (1.0, -1.0) if v1 > v2 else (-1.0, 1.0) if v2 > v1 else (0.0, 0.0)
    return Episode([s0, s1, s2], [Move(0, "reveal"), Move(0, "reveal")], rewards)


@pytest.fixture
def fake_ungar(monkeypatch):
    def play_random_episode(spec, seed=None):
        deck = [Card(s, r) for s in Suit for r in Rank]
        random.Random(seed).shuffle(deck)
        return episode(deck[0], deck[1])

    module = types.ModuleType("ungar")
    module.make_high_card_duel_spec = lambda: "spec"
    module.play_random_episode = play_random_episode
    monkeypatch.setitem(sys.modules, "ungar", module)
    return module


def test_episode_to_trace_states_cards_comparison_and_winner():
    t = ungar.episode_to_trace(
        episode(Card(Suit.HEARTS, Rank.QUEEN), Card(Suit.CLUBS, Rank.SEVEN)), seed=4, index=2
    )
    assert t.prompt.endswith(
        "Player 1 holds the Queen of Hearts. Player 2 holds the 7 of Clubs. Who wins?"
    )
    assert [s.content for s in t.steps] == [
        "Player 1 reveals the Queen of Hearts: rank 12.",
        "Player 2 reveals the 7 of Clubs: rank 7.",
        "Compare the ranks: 12 > 7.",
        "Player 1 has the higher card, so Player 1 wins.",
    ]
    assert [s.type for s in t.steps] == ["reveal", "reveal", "compare", "result"]
    assert t.final_answer == "Player 1"
    assert t.meta["cards"] == ["QH", "7C"] and t.meta["rewards"] == [1.0, -1.0]
    assert t.meta["seed"] == 4 and t.meta["episode"] == 2


@pytest.mark.parametrize(
    ("r1", "r2", "answer", "compare"),
    [
        (Rank.ACE, Rank.KING, "Player 1", "14 > 13"),  # Ace high
        (Rank.TWO, Rank.ACE, "Player 2", "2 < 14"),
        (Rank.TEN, Rank.TEN, "Tie", "10 = 10"),
        (Rank.ACE, Rank.JOKER, "Player 2", "14 < 15"),
    ],
)
def test_outcomes(r1, r2, answer, compare):
    t = ungar.episode_to_trace(
        episode(Card(Suit.SPADES, r1), Card(Suit.DIAMONDS, r2)), seed=0, index=0
    )
    assert t.final_answer == answer
    assert t.steps[2].content == f"Compare the ranks: {compare}."


def test_rewards_must_agree_with_the_cards():
    e = episode(Card(Suit.SPADES, Rank.TWO), Card(Suit.SPADES, Rank.KING))
    e.rewards = (1.0, -1.0)
    with pytest.raises(ValueError, match="the cards .* say Player 2, the rewards .* say Player 1"):
        ungar.episode_to_trace(e, seed=0, index=0)


def test_source_is_deterministic_and_varied(fake_ungar):
    url = "ungar:high_card_duel?episodes=40&seed=3"
    a, b = list(open_source(url)), list(open_source(url))
    assert a == b and all(isinstance(x, StoredTrace) for x in a)
    assert len({x.trace.prompt for x in a}) > 30  # real signal, not a constant prompt
    assert {x.trace.final_answer for x in a} >= {"Player 1", "Player 2"}
    assert open_source(url).kind == "ungar"
    assert [x.id for x in open_source("ungar:high_card_duel?episodes=40&seed=4")] != [
        x.id for x in a
    ]


def test_export_from_ungar(fake_ungar, tmp_path):
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "e.jsonl").write_text(
        '{"id":"1","prompt":"unrelated","expected_answer":"1","category":"c","difficulty":"d"}\n'
    )
    report = export(
        "ungar:high_card_duel?episodes=5",
        tmp_path / "o.jsonl",
        reserved=load_reservations(tmp_path / "ev"),
    )
    assert report.written == 5
    assert '"source":"ungar"' in (tmp_path / "o.jsonl").read_text()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ungar:poker?episodes=1", "game: only 'high_card_duel'"),
        ("ungar:high_card_duel", "episodes: must be an integer >= 1, got None"),
        ("ungar:high_card_duel?episodes=0", "episodes: must be an integer >= 1, got '0'"),
        ("ungar:high_card_duel?episodes=2&seed=x", "seed: must be an integer >= 0, got 'x'"),
        ("ungar:high_card_duel?episodes=2&speed=1", "speed: unknown parameter"),
    ],
)
def test_bad_urls(url, message, fake_ungar):
    with pytest.raises(InvalidInput, match=message):
        open_source(url)


@pytest.mark.skipif(importlib.util.find_spec("ungar") is not None, reason="ungar is installed")
def test_missing_package_exits_2_saying_what_to_install(tmp_path):
    write_params(tmp_path / "params.yaml")
    (tmp_path / "evalsets").mkdir()
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from tunixrt_dvc.cli import main; main()",
            "export",
            "--source",
            "ungar:high_card_duel?episodes=3",
            "--out",
            str(tmp_path / "o.jsonl"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 2, r.stderr
    assert "needs the optional package `ungar`" in r.stderr
    assert "pip install 'ungar @ git+https://github.com/m-cahill/ungar.git'" in r.stderr
    assert not (tmp_path / "o.jsonl").exists()
