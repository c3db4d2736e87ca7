"""Which keeps notify, and when: the rules of ``[notify]``, pure (no I/O, no clock: time is passed in).

``NotifyRule.decide(capture, now_s, tz, sent)`` looks at a keep's row as it is when it is sent, and says
``send``, ``skip`` (with the reason) or ``wait`` (until when). In this order:

1. an audit keep (``kind = "audit"``) never notifies: it is a sample of what the model discarded;
2. its *effective label* (the correction if a person made one, else the model's) must match one of
   ``labels``: exact names or globs (``*Owl*``), case-insensitive;
3. its score must reach the first pattern of ``min_score_by_label`` that matches, else ``min_score``;
4. with ``first_of_day``, a label notifies at most once a day: the day of the *keep's* time in the
   device's time zone (``system.timezone``), so a keep at 23:59 and one at 00:01 are two days;
5. during ``quiet_hours`` (``HH:MM-HH:MM`` in the device's time zone, which may cross midnight; equal
   ends mean none) a keep that passed 1-4 waits until they end;
6. a label notified less than ``cooldown_s`` ago (by the time it is *sent*) is skipped.

Steps 1-4 are final whenever they are asked; 6 is asked at the moment of sending, so a keep that waited
through the night is judged against what was sent by then: of twenty chickadees kept during quiet
hours, the first notifies when they end and the cooldown skips the others. ``Sent`` is what the rules
remember (per label: when it last notified, and the day of that keep); its keeper records each send.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo

SKIP_REASONS = ("audit", "label", "score", "first_of_day", "cooldown")


@dataclass(frozen=True)
class Decision:
    """``action`` is ``"send"``, ``"skip"`` (``reason`` one of ``SKIP_REASONS``) or ``"wait"`` (``until_s``:
    UTC seconds when it may go). ``label`` (casefolded) and ``day`` are what ``Sent.record`` keeps."""

    action: str
    reason: str = ""
    until_s: float | None = None
    label: str = ""
    day: str = ""


@dataclass
class Sent:
    """Per casefolded label, ``(sent_at_s, day)``: when it last notified and the local day of that keep."""

    last: dict[str, tuple[float, str]] = field(default_factory=dict)

    def record(self, decision: Decision, now_s: float) -> None:
        self.last[decision.label] = (now_s, decision.day)


@dataclass(frozen=True)
class QuietHours:
    """``HH:MM-HH:MM`` as minutes of the day; ``start > end`` crosses midnight."""

    start_min: int
    end_min: int

    @classmethod
    def parse(cls, text: str) -> QuietHours | None:
        """``"22:00-06:30"`` (checked by the config's ``valid_quiet_hours``); None for ``""`` or equal ends."""
        if not text:
            return None
        start, end = (int(hh) * 60 + int(mm) for hh, mm in (part.split(":") for part in text.split("-")))
        quiet = cls(start, end)
        return quiet if quiet.start_min != quiet.end_min else None

    def until(self, now_s: float, tz: tzinfo) -> float | None:
        """When the quiet hours that hold at ``now_s`` end (UTC seconds); None outside them."""
        local = datetime.fromtimestamp(now_s, tz)
        minute = local.hour * 60 + local.minute
        if self.start_min < self.end_min:
            inside = self.start_min <= minute < self.end_min
        else:
            inside = minute >= self.start_min or minute < self.end_min
        if not inside:
            return None
        end_day = local.date() + timedelta(days=0 if minute < self.end_min else 1)
        return datetime.combine(end_day, time(*divmod(self.end_min, 60)), tzinfo=tz).timestamp()


@dataclass(frozen=True)
class NotifyRule:
    """The ``[notify]`` rules; ``min_score_by_label`` as ``(pattern, score)`` pairs in the file's order."""

    labels: tuple[str, ...] = ("*",)
    min_score: float = 0.0
    min_score_by_label: tuple[tuple[str, float], ...] = ()
    first_of_day: bool = False
    cooldown_s: float = 0.0
    quiet: QuietHours | None = None

    @classmethod
    def from_config(cls, notify) -> NotifyRule:
        """From a ``NotifyConfig``."""
        return cls(tuple(notify.labels), notify.min_score, tuple(notify.min_score_by_label.items()),
                   notify.first_of_day, notify.cooldown_s, QuietHours.parse(notify.quiet_hours))

    def decide(self, capture: dict, now_s: float, tz: tzinfo, sent: Sent) -> Decision:
        """Send, skip or wait for the keep ``capture`` (its row) at ``now_s``; ``tz`` is the device's."""
        label = effective_label(capture)
        key, day = label.casefold(), local_day(capture["captured_at"], tz)

        def skip(reason):
            return Decision("skip", reason, label=key, day=day)

        if capture.get("kind") == "audit":
            return skip("audit")
        if not any(matches(pattern, label) for pattern in self.labels):
            return skip("label")
        if (capture.get("score") or 0.0) < self.min_score_for(label):
            return skip("score")
        last_sent_s, last_day = sent.last.get(key, (None, None))
        if self.first_of_day and last_day == day:
            return skip("first_of_day")
        if self.quiet and (until_s := self.quiet.until(now_s, tz)) is not None:
            return Decision("wait", "quiet_hours", until_s, label=key, day=day)
        # A send "in the future" is a clock set back (NTP after a boot without one): it blocks nothing
        if last_sent_s is not None and 0.0 <= now_s - last_sent_s < self.cooldown_s:
            return skip("cooldown")
        return Decision("send", label=key, day=day)

    def min_score_for(self, label: str) -> float:
        for pattern, score in self.min_score_by_label:
            if matches(pattern, label):
                return score
        return self.min_score

    def quiet_until(self, now_s: float, tz: tzinfo) -> float | None:
        """When the quiet hours holding at ``now_s`` end; None outside them (or with none)."""
        return self.quiet.until(now_s, tz) if self.quiet else None


def effective_label(capture: dict) -> str:
    """A person's correction wins over the model's label."""
    return capture.get("corrected_label") or capture["label"]


def matches(pattern: str, label: str) -> bool:
    """An exact name or a glob, case-insensitive; an exact name may hold glob characters (``[``)."""
    pattern, label = pattern.casefold(), label.casefold()
    return pattern == label or fnmatch.fnmatchcase(label, pattern)


def local_day(captured_at: str, tz: tzinfo) -> str:
    """``2026-01-01`` for a UTC ``captured_at`` (``…Z``), as a calendar in ``tz`` has it."""
    moment = datetime.fromisoformat(captured_at.replace("Z", "+00:00"))
    return date.isoformat(moment.astimezone(tz).date())
