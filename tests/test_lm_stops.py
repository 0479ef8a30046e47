"""engine.lm.stops.StopStrings: streamed pieces, split at every position, give the text a one-shot
reference cut gives (written here independently: the stop completed first wins); no part of a
stop string is ever emitted; empty list passes through; bad stop lists are clear errors."""

from __future__ import annotations

import itertools

import pytest

from engine.lm.sampling import SamplingError
from engine.lm.stops import StopStrings


def reference_cut(text: str, stops) -> tuple[str, bool]:
    """Scan end positions left to right; the first at which some stop ends decides (longest stop
    on a tie, i.e. the earliest start)."""
    for end in range(1, len(text) + 1):
        starts = [end - len(s) for s in stops if end >= len(s) and text[end - len(s) : end] == s]
        if starts:
            return text[: min(starts)], True
    return text, False


def stream(pieces, stops) -> tuple[list[str], bool]:
    st = StopStrings(stops)
    out = []
    for p in pieces:
        text, stopped = st.feed(p)
        out.append(text)
        if stopped:
            return out, True
    out.append(st.flush())
    return out, False


TEXTS = [
    "Hello world, User: bye",
    "no stop here at all",
    "aaab aab ab",
    "<|im_end|> at the start",
    "ends with a partial <|im_e",
    "abcd then c",
    "xx\n\nUser: hi\n\n",
    "ünïcödé ☃ stops ☃☃ here",
    "",
]
STOPS = [
    ["User:"],
    ["ab"],
    ["aab", "b "],
    ["<|im_end|>", "<|endoftext|>"],
    ["abcd", "c"],
    ["\n\n", "\nUser:"],
    ["☃☃"],
    ["z"],
]


@pytest.mark.parametrize("stops", STOPS, ids=[repr(s) for s in STOPS])
def test_every_two_and_three_way_split_matches_the_one_shot_cut(stops):
    for text in TEXTS:
        want = reference_cut(text, stops)
        n = len(text)
        for i, j in itertools.combinations_with_replacement(range(n + 1), 2):
            pieces = [text[:i], text[i:j], text[j:]]
            out, stopped = stream(pieces, stops)
            assert ("".join(out), stopped) == want, (text, stops, pieces)


@pytest.mark.parametrize("stops", STOPS, ids=[repr(s) for s in STOPS])
def test_character_by_character_never_emits_part_of_a_stop(stops):
    for text in TEXTS:
        want, _ = reference_cut(text, stops)
        st = StopStrings(stops)
        emitted = ""
        for ch in text:
            piece, stopped = st.feed(ch)
            emitted += piece
            # What is out is always a prefix of the final text: nothing is ever taken back.
            assert want.startswith(emitted), (text, stops, emitted)
            if stopped:
                break
        else:
            emitted += st.flush()
        assert emitted == want


def test_hold_back_and_flush():
    st = StopStrings(["</s>"])
    assert st.feed("abc<") == ("abc", False)
    assert st.feed("/") == ("", False)
    assert st.feed("x") == ("</x", False)
    assert st.feed("</") == ("", False)
    assert st.flush() == "</"
    st = StopStrings(["</s>"])
    assert st.feed("a</s>b") == ("a", True)
    assert st.feed("more") == ("", True)
    assert st.flush() == ""


def test_empty_list_passes_through():
    st = StopStrings([])
    assert st.feed("any text </s>") == ("any text </s>", False)
    assert st.flush() == ""


def test_bad_stop_lists():
    with pytest.raises(SamplingError, match="one string"):
        StopStrings("</s>")
    with pytest.raises(SamplingError, match=r"stop\[1\]"):
        StopStrings(["a", ""])
    with pytest.raises(SamplingError, match=r"stop\[0\]"):
        StopStrings([3])
