"""Which images enter the bank, and when it freezes: the line's defence against learning defects as normal.

An online scorer learns "normal" from the images it has seen. Admitted defects would teach it that the defect is
normal: the tenth part with the same scratch would score like a good one. So:

- an image whose score is above the threshold is NG: it is scored, its row says NG, and it does **not** enter the
  bank;
- a streak of NG images (``freeze_streak`` in a row), or an NG rate of the last ``rate_window`` images above
  ``rate_factor`` times the rate before them, **freezes** the bank: from then on no image enters it, OK or not, and
  an alarm is logged. Something has changed on the line (a tool breaking, a new batch of material, a moved camera)
  and a person must look;
- a frozen bank stays frozen until a person lifts the freeze (:meth:`Admission.lift`; the line's marker file).

The state is plain numbers, saved in the line's snapshot, so that a replayed or restarted line decides exactly as
an uninterrupted one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Admission", "Verdict"]


@dataclass(frozen=True)
class Verdict:
    """What the line does with one scored image.

    Attributes:
        ng: The score is above the threshold.
        admit: The image enters the bank (OK, and the bank is not frozen).
        alarm: Why the bank froze at this image, or ``""``.
    """

    ng: bool
    admit: bool
    alarm: str = ""

    @property
    def decision(self) -> str:
        """``"NG"`` or ``"OK"``, as the predictions table writes it."""
        return "NG" if self.ng else "OK"


class Admission:
    """The threshold, the NG streak and rate, and the freeze.

    Args:
        threshold: Scores above it are NG (``None`` until calibrated: :meth:`judge` refuses to run without one).
        freeze_streak: NG images in a row that freeze the bank.
        rate_window: Images whose NG rate is compared with the rate before them.
        rate_factor: How many times the earlier rate freezes the bank.
    """

    def __init__(self, threshold: float | None, freeze_streak: int, rate_window: int, rate_factor: float) -> None:
        self.threshold = threshold
        self.freeze_streak = freeze_streak
        self.rate_window = rate_window
        self.rate_factor = rate_factor
        self.streak = 0
        self.window: deque[bool] = deque()
        self.before_total = 0
        self.before_ng = 0
        self.frozen = False
        self.frozen_reason = ""
        self.judged = 0
        self.admitted = 0

    def judge(self, score: float) -> Verdict:
        """Judge one scored image and count it (call once per image, in arrival order).

        Raises:
            RuntimeError: No threshold yet.
        """
        if self.threshold is None:
            raise RuntimeError("Admission has no threshold: give one or calibrate it on known-good images first.")
        ng = score > self.threshold
        self.judged += 1
        self.streak = self.streak + 1 if ng else 0
        self.window.append(ng)
        if len(self.window) > self.rate_window:
            self.before_ng += self.window.popleft()
            self.before_total += 1
        alarm = "" if self.frozen else self._alarm()
        if alarm:
            self.frozen, self.frozen_reason = True, alarm
        admit = not ng and not self.frozen
        self.admitted += admit
        return Verdict(ng=ng, admit=admit, alarm=alarm)

    def _alarm(self) -> str:
        if self.streak >= self.freeze_streak:
            return f"{self.streak} NG images in a row (freeze_streak={self.freeze_streak})"
        if len(self.window) == self.rate_window and self.before_total >= self.rate_window:
            recent = sum(self.window) / self.rate_window
            earlier = self.before_ng / self.before_total
            if recent > self.rate_factor * max(earlier, 1 / self.rate_window):
                return (
                    f"an NG rate of {recent:.1%} in the last {self.rate_window} images, above {self.rate_factor:g} "
                    f"times the {earlier:.1%} of the {self.before_total} images before them"
                )
        return ""

    def freeze(self, reason: str) -> None:
        """Freeze the bank (a person's decision, or an alarm)."""
        self.frozen, self.frozen_reason = True, reason

    def lift(self) -> None:
        """Lift a freeze: images enter the bank again; the streak and the recent window start afresh."""
        self.frozen, self.frozen_reason = False, ""
        self.streak = 0
        self.window.clear()

    def state_dict(self) -> dict[str, Any]:
        """Everything that changes as images are judged (plain values)."""
        return {
            "threshold": self.threshold,
            "streak": self.streak,
            "window": list(self.window),
            "before_total": self.before_total,
            "before_ng": self.before_ng,
            "frozen": self.frozen,
            "frozen_reason": self.frozen_reason,
            "judged": self.judged,
            "admitted": self.admitted,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s values (the settings stay this object's)."""
        self.threshold = state["threshold"]
        self.streak = int(state["streak"])
        self.before_total = int(state["before_total"])
        self.before_ng = int(state["before_ng"])
        self.window = deque(bool(value) for value in state["window"])
        while len(self.window) > self.rate_window:  # a snapshot of a line with a longer window
            self.before_ng += self.window.popleft()
            self.before_total += 1
        self.frozen = bool(state["frozen"])
        self.frozen_reason = str(state["frozen_reason"])
        self.judged = int(state["judged"])
        self.admitted = int(state["admitted"])
