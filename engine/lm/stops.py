"""Stop strings for streamed text: emit only what can no longer turn into a stop string.

    stops = StopStrings(["\\nUser:", "</s>"])
    for piece in pieces:
        text, stopped = stops.feed(piece)
        emit(text)
        if stopped:
            break
    else:
        emit(stops.flush())

The text is cut where the first stop string to be completed starts (of two completed at the same
place, the longer); the stop string and everything after it are never emitted. Between pieces,
the longest tail that is the start of some stop string is held back (so a stop split over two
pieces is still caught, and nothing of it leaks).
"""

from __future__ import annotations

from typing import Sequence

from engine.lm.sampling import SamplingError


class StopStrings:
    """Text-level stop strings with hold-back for streaming; an empty list passes text through.

    >>> s = StopStrings(["END"])
    >>> s.feed("abc E"), s.feed("ND more")
    (('abc ', False), ('', True))
    """

    def __init__(self, stops: Sequence[str]):
        if isinstance(stops, str):
            raise SamplingError("stop: expected a list of strings, got one string (wrap it in a list)")
        self.stops = tuple(stops)
        for i, s in enumerate(self.stops):
            if not isinstance(s, str) or not s:
                raise SamplingError(f"stop[{i}]: expected a non-empty string, got {s!r}")
        self._held = ""
        self.stopped = False
        # Every proper prefix of a stop string: the tails worth holding back.
        self._prefixes = {s[:n] for s in self.stops for n in range(1, len(s))}
        self._longest = max((len(s) for s in self.stops), default=0)

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to emit now, stopped). After a stop, every call returns ("", True)."""
        if self.stopped:
            return "", True
        if not self.stops:
            return text, False
        buf = self._held + text
        # The stop that completes first wins (then the one starting first), as when text is
        # checked token by token: the result does not depend on how the text was split. The held
        # tail holds no whole stop, so searching held + new text finds every candidate.
        hits = [(i + len(s), i) for s in self.stops if (i := buf.find(s)) >= 0]
        if hits:
            self._held = ""
            self.stopped = True
            return buf[: min(hits)[1]], True
        keep = self._hold_length(buf)
        self._held = buf[len(buf) - keep :]
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """What was held back, at the end of the stream (empty after a stop)."""
        out, self._held = self._held, ""
        return "" if self.stopped else out

    def _hold_length(self, buf: str) -> int:
        # The longest tail of buf that a stop string starts with (shorter than the stop itself).
        for n in range(min(len(buf), self._longest - 1), 0, -1):
            if buf[len(buf) - n :] in self._prefixes:
                return n
        return 0


class TokenText:
    """The text of generated token ids, piece by piece, cut at the first stop string: the
    tokenizer's stream decoder (special tokens skipped) through StopStrings. One per sequence;
    LanguageModel.generate and the server's scheduler both stream through it.

    >>> text = TokenText(tokenizer, ["\\n\\n"])
    >>> pieces = [text.push(t) for t in ids]      # text.stopped once a stop string completed
    >>> tail = text.finish()                       # what was held back, at the end
    """

    def __init__(self, tokenizer, stops: Sequence[str] = ()):
        self._decoder = tokenizer.stream_decoder(skip_special_tokens=True)
        self._stops = StopStrings(stops)
        self.stopped = False

    def push(self, token_id: int) -> str:
        out, self.stopped = self._stops.feed(self._decoder.push(token_id))
        return out

    def finish(self) -> str:
        out, self.stopped = self._stops.feed(self._decoder.flush())
        return out if self.stopped else out + self._stops.flush()
