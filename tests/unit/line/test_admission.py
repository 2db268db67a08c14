"""line/admission.py: NG images stay out of the bank; a streak or a rate jump freezes it until lifted."""

from __future__ import annotations

import math

import pytest

from anomalib_adaclip.line import Admission


def admission(**overrides: float) -> Admission:
    settings = {"threshold": 1.0, "freeze_streak": 3, "rate_window": 4, "rate_factor": math.inf} | overrides
    return Admission(**settings)


def test_above_the_threshold_is_ng_and_not_admitted() -> None:
    judge = admission()
    ok, at, ng = judge.judge(0.5), judge.judge(1.0), judge.judge(1.5)
    assert (ok.decision, ok.admit) == ("OK", True)
    assert (at.decision, at.admit) == ("OK", True)  # "above" is strict
    assert (ng.decision, ng.admit, ng.alarm) == ("NG", False, "")
    assert (judge.judged, judge.admitted) == (3, 2)


def test_a_streak_freezes_the_bank_once_and_it_stays_frozen_until_lifted() -> None:
    judge = admission()
    verdicts = [judge.judge(score) for score in (2.0, 2.0, 0.5, 2.0, 2.0, 2.0, 0.5, 2.0)]
    assert [bool(v.alarm) for v in verdicts] == [False, False, False, False, False, True, False, False]
    assert verdicts[5].alarm == "3 NG images in a row (freeze_streak=3)"
    assert judge.frozen and verdicts[6].decision == "OK" and not verdicts[6].admit  # frozen: OK images stay out
    judge.lift()
    assert not judge.frozen and judge.streak == 0
    assert judge.judge(0.5).admit


def test_a_jump_of_the_ng_rate_freezes_the_bank() -> None:
    judge = admission(freeze_streak=100, rate_factor=2.0)
    # 8 images before the window of 4, one NG: an earlier rate of 1/8, so more than 2 * max(1/8, 1/4) = 50 % freezes.
    for score in (2.0, *[0.5] * 7):
        judge.judge(score)
    for score in (0.5, 0.5, 2.0, 0.5, 2.0):  # the window [0.5, 2, 0.5, 2] is 50 %: not above
        assert not judge.judge(score).alarm
    verdict = judge.judge(2.0)  # window [2, 0.5, 2, 2]: 75 %
    assert verdict.alarm.startswith("an NG rate of 75.0% in the last 4 images, above 2 times the")
    assert judge.frozen


def test_no_threshold_no_judgement() -> None:
    with pytest.raises(RuntimeError, match="no threshold"):
        admission(threshold=None).judge(0.0)


def test_a_restored_state_judges_exactly_as_the_original() -> None:
    scores = [0.5, 2.0, 0.5, 0.5, 2.0, 2.0, 0.5, 2.0, 0.5, 2.0, 2.0, 2.0, 0.5]
    original = admission(freeze_streak=3, rate_factor=2.0)
    for score in scores[:6]:
        original.judge(score)
    restored = admission(freeze_streak=3, rate_factor=2.0)
    restored.load_state_dict(original.state_dict())
    assert [original.judge(s) for s in scores[6:]] == [restored.judge(s) for s in scores[6:]]
    assert original.state_dict() == restored.state_dict()
