"""support.poll, the tests' one deadline poll (the e2e tests wait with it)."""

from __future__ import annotations

import pytest

from support import poll


def test_poll_returns_the_first_truthy_answer_and_asks_until_then() -> None:
    answers = iter([None, 0, "", "found", "later"])
    assert poll(lambda: next(answers), 5, "never", interval=0) == "found"
    assert next(answers) == "later"  # asked no more once it had its answer


def test_poll_fails_at_its_deadline_with_the_state_it_shows() -> None:
    asked: list[int] = []
    with pytest.raises(AssertionError, match=r"^still 0 after \d+ tries$"):
        poll(lambda: asked.append(0), 0.2, lambda: f"still 0 after {len(asked)} tries", interval=0.01)
    assert len(asked) > 1
    with pytest.raises(AssertionError, match="^the server never answered$"):
        poll(lambda: False, 0, "the server never answered")
