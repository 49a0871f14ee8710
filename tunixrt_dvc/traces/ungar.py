"""UNGAR High Card Duel episodes as reasoning traces.

`ungar` is optional and not on PyPI, so it is imported only when an `ungar:` source is opened.
Each trace states the two cards, works out their ranks, compares them and names the winner; the
winner is taken from the episode's rewards and must agree with the comparison.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

from tunixrt_dvc.errors import InvalidInput, MissingDependency, Problem
from tunixrt_dvc.traces.schemas import MAX_TRACE_BYTES, ReasoningTrace, StoredTrace, TraceStep
from tunixrt_dvc.traces.source import DEFAULT_CREATED_AT, Rejected, Source

GAME = "high_card_duel"
INSTALL = "pip install 'ungar @ git+https://github.com/m-cahill/ungar.git'"
_NAMESPACE = uuid.UUID("5d1f7a3e-8c2b-5e47-b0a9-3f6d2c8e1a94")
# Ace high; Jokers (in UNGAR's 56-card deck) beat everything, as in UNGAR's own scoring.
RANKS = {
    "TWO": ("2", 2),
    "THREE": ("3", 3),
    "FOUR": ("4", 4),
    "FIVE": ("5", 5),
    "SIX": ("6", 6),
    "SEVEN": ("7", 7),
    "EIGHT": ("8", 8),
    "NINE": ("9", 9),
    "TEN": ("10", 10),
    "JACK": ("Jack", 11),
    "QUEEN": ("Queen", 12),
    "KING": ("King", 13),
    "ACE": ("Ace", 14),
    "JOKER": ("Joker", 15),
}
RULES = (
    "High Card Duel: each of two players holds one card and both reveal it. The higher rank wins"
    " (2 to 10, then Jack 11, Queen 12, King 13, Ace 14; a Joker is 15); equal ranks tie."
)


class MissingUngar(MissingDependency):
    """`ungar` is not installed: exit status 2 with what to install."""

    def __init__(self) -> None:
        super().__init__(
            f"the ungar source needs the optional package `ungar` (not on PyPI): {INSTALL}"
        )


class UngarApi(NamedTuple):
    make_high_card_duel_spec: Any
    play_random_episode: Any


def load() -> UngarApi:
    """The two functions used, from `ungar` (top level, or its games/runner modules)."""
    try:
        import ungar
    except ImportError:
        raise MissingUngar() from None
    make = getattr(ungar, "make_high_card_duel_spec", None)
    play = getattr(ungar, "play_random_episode", None)
    try:
        if make is None:
            from ungar.games.high_card_duel import make_high_card_duel_spec as make
        if play is None:
            from ungar.runner import play_random_episode as play
    except ImportError as e:
        raise MissingDependency(f"the installed `ungar` lacks {e.name}: {INSTALL}") from None
    return UngarApi(make, play)


def parse_url(url: str) -> tuple[int, int]:
    """`ungar:high_card_duel?episodes=N&seed=S` -> (N, S); seed defaults to 0."""
    parts = urlsplit(url)
    problems = []
    if parts.path != GAME:
        problems.append(Problem(url, None, "game", f"only {GAME!r} is supported"))
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    values = {}
    for key, default, low in (("episodes", None, 1), ("seed", "0", 0)):
        text = query.pop(key, default)
        try:
            values[key] = int(text) if text is not None else None
        except ValueError:
            values[key] = None
        if values[key] is None or values[key] < low:
            problems.append(Problem(url, None, key, f"must be an integer >= {low}, got {text!r}"))
    problems += [Problem(url, None, k, "unknown parameter") for k in sorted(query)]
    if problems:
        raise InvalidInput(problems)
    return values["episodes"], values["seed"]


def _card(card: Any) -> tuple[str, int, str]:
    """(words, rank value, short code) of an UNGAR Card."""
    rank, suit = card.rank.name, card.suit.name
    word, value = RANKS[rank]
    if rank == "JOKER":
        return "Joker", value, "JK"
    return f"{word} of {suit.title()}", value, f"{word[0] if value > 10 else word}{suit[0]}"


def episode_to_trace(episode: Any, *, seed: int, index: int) -> ReasoningTrace:
    """One finished High Card Duel episode (states, moves, rewards) as a trace."""
    hands = episode.states[-1].hands
    (name1, v1, code1), (name2, v2, code2) = _card(hands[0]), _card(hands[1])
    r1, r2 = episode.rewards[0], episode.rewards[1]
    by_cards = "Player 1" if v1 > v2 else "Player 2" if v2 > v1 else "Tie"
    by_rewards = "Player 1" if r1 > r2 else "Player 2" if r2 > r1 else "Tie"
    if by_cards != by_rewards:
        raise ValueError(
            f"episode {index}: the cards ({code1} vs {code2}) say {by_cards},"
            f" the rewards ({r1}, {r2}) say {by_rewards}"
        )
    steps = []
    for state, move in zip(episode.states, episode.moves, strict=False):
        p = state.current_player()
        name, value = (name1, v1) if p == 0 else (name2, v2)
        steps.append(f"Player {p + 1} {move.name}s the {name}: rank {value}.")
    sign = ">" if v1 > v2 else "<" if v1 < v2 else "="
    steps.append(f"Compare the ranks: {v1} {sign} {v2}.")
    steps.append(
        "The ranks are equal, so it is a tie."
        if by_cards == "Tie"
        else f"{'Player 1' if v1 > v2 else 'Player 2'} has the higher card, so {by_cards} wins."
    )
    kinds = ["reveal"] * (len(steps) - 2) + ["compare", "result"]
    return ReasoningTrace(
        trace_version="1.0",
        prompt=f"{RULES} Player 1 holds the {name1}. Player 2 holds the {name2}. Who wins?",
        final_answer=by_cards,
        steps=[
            TraceStep(i=i, type=k, content=c)
            for i, (k, c) in enumerate(zip(kinds, steps, strict=True))
        ],
        meta={
            "source": "ungar",
            "game": GAME,
            "seed": seed,
            "episode": index,
            "cards": [code1, code2],
            "rewards": [float(r1), float(r2)],
            "tags": ["ungar", GAME],
        },
    )


def episode_seed(seed: int, index: int) -> int:
    """A seed per episode that no other (seed, index) pair shares (unlike seed + index)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:8], "big")


def traces(api: UngarApi, *, episodes: int, seed: int) -> Iterator[StoredTrace]:
    """`episodes` traces with deterministic ids and times (one second apart from the epoch)."""
    spec = api.make_high_card_duel_spec()
    for k in range(episodes):
        episode = api.play_random_episode(spec, seed=episode_seed(seed, k))
        yield StoredTrace(
            id=str(uuid.uuid5(_NAMESPACE, f"{GAME}:{seed}:{k}")),
            created_at=DEFAULT_CREATED_AT + timedelta(seconds=k),
            trace=episode_to_trace(episode, seed=seed, index=k),
        )


class UngarSource(Source):
    """UNGAR High Card Duel episodes played on the fly."""

    kind = "ungar"

    def __init__(
        self,
        url: str,
        *,
        since: datetime | None,
        limit: int | None,
        max_trace_bytes: int = MAX_TRACE_BYTES,  # an episode's trace is far smaller
    ):
        super().__init__(url, since=since, limit=limit, max_trace_bytes=max_trace_bytes)
        self.episodes, self.seed = parse_url(url)
        self._api = load()  # fails here, with exit status 2, when ungar is not installed

    def _records(self) -> Iterator[tuple[datetime | None, str, int | None, StoredTrace | Rejected]]:
        for k, stored in enumerate(traces(self._api, episodes=self.episodes, seed=self.seed)):
            yield stored.created_at, self.name, k + 1, stored
