"""Progress on stderr that reads well both on a terminal and in a log file.

:func:`progress` is the one way every long loop of the toolkit shows progress. On a terminal (``stderr`` is a TTY,
or a Jupyter kernel's stream) it returns a real ``tqdm.auto.tqdm`` bar. Anywhere else (a run redirected into a log
file, CI output, ``nohup``) it returns a :class:`LineProgress`: plain lines, one at the start, then about every
10% or every :data:`INTERVAL` seconds, whichever comes first, and one at the end ("done", or "stopped" when the
loop ended early); a loop shorter than :data:`MIN_SECONDS` prints nothing, e.g.::

    gru_ae epoch 1/2: 0% (0/300 batch) 0.0s
    gru_ae epoch 1/2: 40% (120/300 batch) 12.3s, eta 18.5s, loss=0.412
    gru_ae epoch 1/2: done 100% (300/300 batch) 30.8s, loss=0.398

never a ``\\r``, no line over :data:`MAX_LINE` characters. ``enabled=False`` (the commands' ``--no-progress``)
turns both off: the loop runs as is and nothing is printed.

Both kinds take what the call sites use of tqdm: iteration, ``update(n)``, ``set_postfix(...)``,
``set_description(...)``, ``close()`` and ``with``.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator

#: The longest line :class:`LineProgress` prints (longer ones are cut, ending in "...").
MAX_LINE = 300
#: Seconds between two lines at most (while the loop advances).
INTERVAL = 60.0
#: Fraction of the total between two lines at most (with a known total).
STEP = 0.1
#: A loop prints nothing until it has run this many seconds: only long loops write to a log (the organisers' MLP
#: alone runs 18 short loops per candidate, which would otherwise fill a run's log with hundreds of lines).
MIN_SECONDS = 10.0


def is_terminal(stream=None) -> bool:
    """Whether ``stream`` (default: the current ``sys.stderr``) shows a live progress bar: a TTY, or a Jupyter
    kernel's output stream (where ``tqdm.auto`` draws a widget)."""
    stream = sys.stderr if stream is None else stream
    if type(stream).__module__.split(".")[0] == "ipykernel":
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def progress(iterable: Iterable | None = None, desc: str | None = None, total: float | None = None,
             enabled: bool = True, leave: bool = True, unit: str = "it", file=None, **tqdm_kwargs: Any):
    """Progress over ``iterable`` (or a manual counter, with ``total`` and ``update(n)``), on ``file`` (default:
    the current ``sys.stderr``): a ``tqdm.auto.tqdm`` bar when ``file`` is a terminal, a :class:`LineProgress`
    otherwise; nothing shown (the iterable passed through) when ``enabled`` is False. ``desc``, ``total``,
    ``leave`` and ``unit`` mean what they mean to tqdm (``leave`` only matters to the bar: the lines stay);
    ``tqdm_kwargs`` go to the bar only."""
    file = sys.stderr if file is None else file
    if enabled and is_terminal(file):
        from tqdm.auto import tqdm
        return tqdm(iterable, desc=desc, total=total, leave=leave, unit=unit, file=file, **tqdm_kwargs)
    return LineProgress(iterable, desc=desc, total=total, enabled=enabled, unit=unit, file=file)


def _clean(text: str) -> str:
    """One line: carriage returns, newlines and tabs become spaces."""
    return " ".join(str(text).replace("\r", " ").replace("\n", " ").replace("\t", " ").split())


def _seconds(s: float) -> str:
    if s < 600:
        return f"{s:.1f}s"
    m, s = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _count(n: float) -> str:
    return f"{n:,}" if float(n).is_integer() else f"{n:,.2f}"


class LineProgress:
    """tqdm's interface, printed as a few plain lines (see the module docstring); silent when not ``enabled``.

    ``total`` defaults to ``len(iterable)`` when it has one; without a total the lines give the count and the time
    (every :data:`INTERVAL` seconds). Nothing is printed before the loop has run ``min_seconds`` (default
    :data:`MIN_SECONDS`); the end line only after something was."""

    def __init__(self, iterable: Iterable | None = None, desc: str | None = None, total: float | None = None,
                 enabled: bool = True, unit: str = "it", file=None, interval: float = INTERVAL,
                 step: float = STEP, max_line: int = MAX_LINE, min_seconds: float | None = None):
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except (TypeError, AttributeError):
                total = None
        self.iterable, self.total, self.n = iterable, total, 0
        self.desc, self.unit = desc or "", unit
        self.disable = not enabled
        self.file = sys.stderr if file is None else file
        self.interval, self.step, self.max_line = float(interval), float(step), int(max_line)
        self.min_seconds = MIN_SECONDS if min_seconds is None else float(min_seconds)
        self._shown = False
        self.postfix = ""
        self.closed = False
        self.start_t = self._last_t = time.perf_counter()
        self._last_bucket = 0
        if not self.disable:
            self._print(self.start_t)

    # -- tqdm's interface -------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("LineProgress without an iterable is a manual counter: call update(n)")
        if self.disable:
            yield from self.iterable
            return
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        if self.total is not None:
            return int(self.total)
        return len(self.iterable)  # type: ignore[arg-type]

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        """``n`` more done; prints a line when it crosses the next step of the total or after ``interval`` s."""
        if self.disable or self.closed:
            return
        self.n += n
        now = time.perf_counter()
        bucket = self._bucket()
        done = self.total is not None and self.n >= self.total  # the end line is close()'s
        if not done and (bucket > self._last_bucket or now - self._last_t >= self.interval):
            self._print(now)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        """``key=value`` pairs shown after the count (at the next line printed), as tqdm's."""
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        """Nothing between lines (a log is not redrawn)."""

    def write(self, s: str, file=None, end: str = "\n") -> None:
        if not self.disable:
            print(s, file=file or self.file, end=end, flush=True)

    def close(self) -> None:
        """The end line (once)."""
        if self.closed:
            return
        self.closed = True
        if not self.disable:
            self._print(end=True)

    def __del__(self):  # a manual counter never closed still ends its log with a line, as a tqdm bar does
        try:
            if not getattr(self, "closed", True):
                self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown, a closed stream
            pass

    # -- the lines --------------------------------------------------------------------------------------------------
    def _bucket(self) -> int:
        if not self.total or self.step <= 0:
            return 0
        return int(self.n / self.total / self.step + 1e-9)

    def line(self, now: float | None = None, end: bool = False) -> str:
        """The line for the current state (cut to ``max_line`` characters)."""
        elapsed = (time.perf_counter() if now is None else now) - self.start_t
        unit = f" {self.unit}" if self.unit and self.unit != "it" else ""
        parts = []
        if self.total:
            pct = 100.0 * self.n / self.total
            parts.append(f"{pct:.0f}% ({_count(self.n)}/{_count(self.total)}{unit}) {_seconds(elapsed)}")
            if not end and 0 < self.n < self.total:
                parts.append(f"eta {_seconds(elapsed * (self.total - self.n) / self.n)}")
        else:
            parts.append(f"{_count(self.n)}{unit or ' it'} {_seconds(elapsed)}")
        if self.postfix:
            parts.append(self.postfix)
        head = _clean(self.desc)
        if end:  # stopped: the loop ended early (a break, an exception) or a manual counter fell short
            stopped = self.total is not None and self.n < self.total
            parts[0] = ("stopped " if stopped else "done ") + parts[0]
        text = ", ".join(_clean(p) for p in parts)
        out = f"{head}: {text}" if head else text
        return out if len(out) <= self.max_line else out[:self.max_line - 3] + "..."

    def _print(self, now: float | None = None, end: bool = False) -> None:
        now = time.perf_counter() if now is None else now
        if not self._shown and now - self.start_t < self.min_seconds:
            return  # a short loop: not worth a line in a log
        self._shown = True
        try:
            self.file.write(self.line(now, end) + "\n")
            self.file.flush()
        except (ValueError, OSError):  # a closed stream: progress is never worth a crash
            pass
        self._last_t, self._last_bucket = now, self._bucket()


__all__ = ["INTERVAL", "MAX_LINE", "MIN_SECONDS", "STEP", "LineProgress", "is_terminal", "progress"]
