"""How far a long loop (train, grpo, eval) is, while it runs: on stderr, never in a file.

On a terminal, a tqdm bar. Otherwise (a log file, `dvc repro > log`), plain lines: one when a
unit ends and `INTERVAL_S` has passed since the last line, and one from a watch thread whenever
a unit runs longer than that (XLA compiling the first step takes minutes on a real model).
Throughput counts real tokens (not padding; the padding share is shown beside it) and leaves
out the first unit, which includes compilation; the ETA is the steady rate's.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from tqdm import tqdm

INTERVAL_S = 30.0  # not on a terminal: at most this long without a line
TICK_S = 1.0  # on a terminal: how often the bar's clock is redrawn while a unit runs


def duration(seconds: float) -> str:
    """`1h02m03s`, `2m03s`, `3s`."""
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """Progress of `total` units (steps, prompts) from `initial` (a resumed run's step).

    `update` after each unit (or batch of them) with its real and computed (padded) tokens and
    figures to show (loss, reward); `compiling` before a unit that compiles, `compiled` when the
    loop can tell that is over; `note` for a line of its own; `close` at the end (the watch
    thread runs from the first of these calls to it). Disabled, it shows nothing (a process
    other than the first of a job) but keeps count: `rates` still answers.
    """

    def __init__(
        self,
        desc: str,
        total: int,
        *,
        initial: int = 0,
        unit: str = "step",
        rate: str = "real tok/s",
        enabled: bool = True,
        stream: TextIO | None = None,
        tty: bool | None = None,
    ):
        self.desc, self.total, self.unit, self.rate_name = desc, total, unit, rate
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr  # now: tests swap stderr
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.tty = bool(isatty()) if tty is None else tty
        self.interval = INTERVAL_S
        self.done = self.initial = initial
        self.figures: dict[str, float] = {}
        self._real = self._computed = 0  # all units of this run
        self._steady = [0, 0, 0]  # units, real and computed tokens after the first unit
        self._start = self._begin = time.perf_counter()  # _begin: when the first unit began
        self._first_what: str | None = None  # the first unit, named if it compiles
        self._first_end: float | None = None  # when the first unit (with compilation) ended
        self._first_s: float | None = None
        self._last_update = self._last_line = self._start
        self._compiling: tuple[str, float] | None = None  # (what, since)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bar: tqdm | None = None
        self._thread: threading.Thread | None = None
        if enabled and self.tty:
            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit=unit,
                file=self.stream,
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
            )

    # -- what the loops call

    def compiling(self, what: str | None = None) -> None:
        """The next unit compiles first (`what` names it: default the next unit)."""
        if not self.enabled:
            return
        self._watching()
        with self._lock:
            what = what or f"{self.unit} {self.done + 1}/{self.total}"
            now = time.perf_counter()
            self._compiling = (what, now)
            if self._first_end is None:
                self._begin, self._first_what = now, what
            self._show(f"{what} (compiling)")

    def compiled(self) -> None:
        """The compilation `compiling` announced is over."""
        if not self.enabled or self._compiling is None:
            return
        with self._lock:
            what, since = self._compiling
            self._compiling = None
            self._show(f"{what} compiled in {time.perf_counter() - since:.1f}s")

    def update(
        self, n: int = 1, *, real: int = 0, computed: int = 0, **figures: float | None
    ) -> None:
        """`n` more units done, with their `real` and `computed` tokens; `figures` to show."""
        now = time.perf_counter()
        with self._lock:
            first = self._first_end is None
            if first:
                self._first_end, self._first_s = now, now - self._begin
            else:
                self._steady[0] += n
                self._steady[1] += real
                self._steady[2] += computed
            self.done += n
            self._real += real
            self._computed += computed
            self.figures.update({k: v for k, v in figures.items() if v is not None})
            self._last_update = now
            self._compiling = None
            if not self.enabled:
                return
            self._watching()
            if self._bar is not None:
                self._bar.set_postfix_str(self._postfix(now), refresh=False)
                self._bar.update(n)
            elif first or self.done >= self.total or now - self._last_line >= self.interval:
                line = self.status(now)
                if first and self._first_what is not None:
                    line += f" | {self._first_what} took {self._first_s:.1f}s with compilation"
                self._line(line, now)

    def note(self, text: str) -> None:
        """A line of its own (above the bar on a terminal)."""
        if self.enabled:
            self._watching()
            with self._lock:
                self._show(text)

    def close(self) -> None:
        """Stop the watch thread, close the bar; a last line if the last update had none."""
        if not self.enabled or self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self._bar is not None:
                self._bar.close()
            elif self._last_line < self._last_update:
                self._line(self.status(), time.perf_counter())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the figures

    def rates(self) -> tuple[float, float] | None:
        """(real, computed) tokens per second over the units after the first (which compiles);
        None until there are some."""
        units, real, computed = self._steady
        if not units:
            return None
        seconds = max(self._last_update - self._first_end, 1e-9)
        return real / seconds, computed / seconds

    def real_per_s(self) -> float | None:
        """Real tokens per second after the first unit; the first unit's (compilation included)
        only if it was the only one."""
        if (rates := self.rates()) is not None:
            return rates[0]
        if self._first_s and self.done >= self.total:
            return self._real / self._first_s
        return None

    def padding(self) -> float | None:
        """The share of the computed tokens that is padding."""
        return 1 - self._real / self._computed if self._computed else None

    def eta(self, now: float) -> float | None:
        units = self._steady[0]
        if not units:
            return None
        per_unit = (self._last_update - self._first_end) / units
        return max(self.total - self.done, 0) * per_unit - (now - self._last_update)

    def _postfix(self, now: float) -> str:
        parts = [f"{k} {v:.4g}" for k, v in self.figures.items()]
        if (rate := self.real_per_s()) is not None and self._real:
            parts.append(f"{rate:,.0f} {self.rate_name}")
        if (pad := self.padding()) is not None:
            parts.append(f"pad {pad:.1%}")
        if self._compiling is not None and self._bar is not None:
            parts.append("compiling")
        eta = self.eta(now)
        parts.append(f"ETA {duration(max(eta, 0.0))}" if eta is not None else "ETA ?")
        return " | ".join(parts)

    def status(self, now: float | None = None) -> str:
        """The plain line: units done, figures, real tokens/s, padding, elapsed, ETA."""
        now = time.perf_counter() if now is None else now
        pct = f" ({self.done / self.total:.0%})" if self.total else ""
        head = f"{self.desc}: {self.unit} {self.done}/{self.total}{pct}"
        if self._compiling is not None:
            what, since = self._compiling
            head += f" | {what} compiling for {duration(now - since)}"
        elif self._first_end and self.done < self.total:
            running = now - self._last_update
            if running >= self.interval:  # a slow unit: say it is not stuck
                head += f" | {self.unit} {self.done + 1} running for {duration(running)}"
        return f"{head} | {self._postfix(now)} | elapsed {duration(now - self._start)}"

    # -- output

    def _show(self, text: str) -> None:
        now = time.perf_counter()
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(now), refresh=False)
            self._bar.write(f"{self.desc}: {text}", file=self.stream)
        else:
            self._line(f"{self.desc}: {text}", now)

    def _line(self, text: str, now: float) -> None:
        print(text, file=self.stream, flush=True)
        self._last_line = now

    def _watching(self) -> None:
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._watch, name=self.desc, daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        """Keep the output alive while a unit runs: the bar's clock, or a line per interval."""
        while True:
            if self._bar is not None:
                wait = TICK_S
            else:
                wait = self.interval - (time.perf_counter() - self._last_line)
            if self._stop.wait(min(max(wait, 0.05), 3600.0)):
                return
            with self._lock:
                now = time.perf_counter()
                if self._bar is not None:
                    self._bar.set_postfix_str(self._postfix(now), refresh=False)
                    self._bar.refresh()
                elif now - self._last_line >= self.interval:
                    self._line(self.status(now), now)


class SilentBar:
    """Stands in for the tqdm bar Tunix's trainers draw on a terminal (`PeftTrainer._pbar`,
    created only when unset), so that it does not fight ours (which has the loss or reward, real
    tokens/s, padding and an ETA that leaves compilation out)."""

    def update_metrics(self, *args, **kwargs) -> None:
        pass

    def update(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def silence_tunix_bar(trainer) -> None:
    """Keep Tunix's own progress bar of `trainer` (a PeftTrainer) from drawing."""
    trainer._pbar = SilentBar()
