"""Which frames to keep: the keep rule, the motion gate before inference, and the decision after it.

Pure: no I/O, no clock, no logging. Time comes in as monotonic seconds, and everything remembered
between frames lives in the ``History`` that each ``Policy`` owns, so a test drives it with plain values.
"""

from __future__ import annotations

import fnmatch
import re
from collections import deque
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import numpy as np

from appliance.config import KeepConfig
from appliance.pipeline.frames import Classification, Decision, Discard, Keep

MATCH = "match"
AUDIT = "audit"
STATIC_SCENE = "static-scene"
IGNORED_LABEL = "ignored-label"
NOT_A_TARGET = "not-a-target"
BELOW_MIN_SCORE = "below-min-score"
UNCONFIRMED = "unconfirmed"
COOLDOWN = "cooldown"
RATE_CAP = "rate-cap"
DUPLICATE = "duplicate"
REASONS = (MATCH, AUDIT, STATIC_SCENE, IGNORED_LABEL, NOT_A_TARGET, BELOW_MIN_SCORE,
           UNCONFIRMED, COOLDOWN, RATE_CAP, DUPLICATE)
"""Every reason a ``Keep`` or ``Discard`` from this module can carry, keeps first."""

RATE_WINDOW_S = 60.0
SIGNATURE_PX = 32

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_LUMA.flags.writeable = False  # shared by every call, so nobody may change it


@dataclass(frozen=True)
class KeepRule:
    """A ``KeepConfig`` with its unset fields resolved; see ``KeepConfig`` for what each knob means.

    Build it with ``from_config`` so its defaults are the config's and cannot drift from them.
    """

    labels: tuple[str, ...]
    ignore: tuple[str, ...]
    min_score: float
    min_score_by_label: Mapping[str, float]  # pattern -> score, in order: the first match wins
    confirm_frames: int
    confirm_window: int
    cooldown_s: float
    max_per_minute: int          # 0: no cap
    duplicate_max_distance: int  # -1: off
    motion_gate: bool
    motion_min_change: float
    audit_one_in: int            # 0: off
    audit_budget_bytes: int

    @classmethod
    def from_config(cls, keep_config: KeepConfig, defaults=None) -> KeepRule:
        """Resolve ``keep_config``: its unset labels, ignore and min_score come from ``defaults``.

        ``defaults`` is a model catalog entry's default rule (anything with ``.labels``, ``.ignore``
        and ``.min_score``) or None; what neither sets is ``["*"]``, ``[]`` and 0.5.
        """
        def resolved(name, fallback):
            for source in (keep_config, defaults):
                value = getattr(source, name, None)
                if value is not None:
                    return value
            return fallback

        copied = ("confirm_frames", "confirm_window", "cooldown_s", "max_per_minute", "duplicate_max_distance",
                  "motion_gate", "motion_min_change", "audit_one_in", "audit_budget_bytes")
        return cls(labels=tuple(resolved("labels", ("*",))), ignore=tuple(resolved("ignore", ())),
                   min_score=float(resolved("min_score", 0.5)),
                   min_score_by_label=MappingProxyType(dict(keep_config.min_score_by_label)),
                   **{name: getattr(keep_config, name) for name in copied})


@dataclass
class History:
    """What a ``Policy`` remembers between frames; bounded by the rule and the model's label set."""

    winners: deque            # per classified frame: the label that passed its threshold, or None
    keep_times_s: deque       # the latest max_per_minute match keeps, oldest first
    last_keep_s: dict[str, float] = field(default_factory=dict)
    last_hash: dict[str, int] = field(default_factory=dict)
    discards_since_audit: int = 0
    last_signature: np.ndarray | None = None  # of the last frame the motion gate let through


@dataclass(frozen=True)
class Candidate:
    """What the keep rule makes of one classification before any history: the ``label`` and ``score``
    it would keep it as (else its top-1), and ``discard_reason``, None when they pass."""

    label: str
    score: float
    discard_reason: str | None


@dataclass(frozen=True)
class _LabelRule:
    is_target: bool
    is_ignored: bool
    min_score: float


class Policy:
    """Decides, frame by frame, which frames the appliance keeps under one ``KeepRule``."""

    def __init__(self, rule: KeepRule):
        self.rule = rule
        # A window shorter than confirm_frames could never confirm anything, so it is widened.
        self.history = History(winners=deque(maxlen=max(rule.confirm_window, rule.confirm_frames)),
                               keep_times_s=deque(maxlen=rule.max_per_minute))
        self._is_target = _matcher(rule.labels)
        self._is_ignored = _matcher(rule.ignore)
        self._min_scores = [(_matcher((pattern,)), score) for pattern, score in rule.min_score_by_label.items()]
        # Labels come from the model's fixed label set, so this cache stays small and saves
        # matching every pattern on every frame.
        self._label_rules: dict[str, _LabelRule] = {}

    def gate(self, lores: np.ndarray, now_s: float) -> Discard | None:
        """Before inference: ``None`` means classify this frame, ``Discard("static-scene")`` skips it.

        With the gate off this returns at once. Otherwise a 32x32 grayscale area average of ``lores``
        (RGB or gray ``uint8``) is compared with that of the last frame the gate let through (the first
        frame always passes); a mean absolute change (0-1) below ``motion_min_change`` is static.
        Comparing with the last classified frame, not the last one seen, means slow drift still adds
        up to a change. ``now_s`` is not used yet; it keeps ``gate`` and ``decide`` called alike.
        """
        if not self.rule.motion_gate:
            return None
        signature = _area_mean(_gray(lores), SIGNATURE_PX, SIGNATURE_PX) / 255.0
        previous = self.history.last_signature
        if previous is not None and float(np.abs(signature - previous).mean()) < self.rule.motion_min_change:
            return Discard(STATIC_SCENE)
        self.history.last_signature = signature
        return None

    def decide(self, classification: Classification, lores: np.ndarray, now_s: float,
               audit_bytes_used: int = 0) -> Decision:
        """Keep or discard one classified frame; ``now_s`` is monotonic seconds.

        1. The candidate is the first label in ``top_k`` that matches a ``labels`` pattern and no
           ``ignore`` pattern (case-insensitive globs). None: "ignored-label" if the top-1 label is
           ignored, else "not-a-target". Its score below its min score (the first matching
           ``min_score_by_label`` pattern, else ``min_score``): "ignored-label" if the top-1 label is
           ignored, else "below-min-score".
        2. Every classified frame adds its winner (the candidate that passed, or None) to the last
           ``confirm_window``; fewer than ``confirm_frames`` wins of the candidate: "unconfirmed".
        3. The same label kept less than ``cooldown_s`` ago: "cooldown".
        4. ``max_per_minute`` keeps already in the last 60 s (0 is no cap): "rate-cap".
        5. A dHash of ``lores`` within ``duplicate_max_distance`` bits of the last keep of the same
           label: "duplicate" (-1 is off; ``lores`` is only read here, so discards never hash).
        6. Otherwise ``Keep("match")`` as the candidate label and score, remembered for 3 to 5.
        7. Every ``audit_one_in``-th discard of this method becomes ``Keep("audit", kind="audit")`` as
           the top-1 label and score, while ``audit_bytes_used`` < ``audit_budget_bytes``; a discard
           due while over budget stays a discard. Audit keeps leave steps 3 to 5 untouched.
        """
        decision = self._match(classification, lores, now_s)
        if decision.is_keep or not classification.top_k:
            return decision
        return self.audit(decision, classification.label, classification.score, audit_bytes_used)

    def candidate(self, classification: Classification) -> Candidate:
        """Step 1 of ``decide`` alone, remembering nothing: the label the keep rule would keep this
        classification as, and why it would not (``discard_reason``, None if it passes)."""
        top_k = classification.top_k
        if not top_k:
            return Candidate("", 0.0, NOT_A_TARGET)
        top_is_ignored = self._label_rule(top_k[0][0]).is_ignored
        for label, score in top_k:
            label_rule = self._label_rule(label)
            if label_rule.is_target and not label_rule.is_ignored:
                break
        else:
            return Candidate(top_k[0][0], top_k[0][1], IGNORED_LABEL if top_is_ignored else NOT_A_TARGET)
        if score < label_rule.min_score:
            return Candidate(label, score, IGNORED_LABEL if top_is_ignored else BELOW_MIN_SCORE)
        return Candidate(label, score, None)

    def throttle(self, label: str, score: float, image: np.ndarray, now_s: float) -> Decision:
        """Steps 3 to 6 of ``decide`` for a keep already confirmed (by ``confirm_frames``, or by a track):
        cooldown, rate cap, duplicate (a dHash of ``image``, read only here), else ``Keep("match")``,
        remembered for the next."""
        rule, history = self.rule, self.history
        last_keep_s = history.last_keep_s.get(label)
        if last_keep_s is not None and now_s - last_keep_s < rule.cooldown_s:
            return Discard(COOLDOWN)
        keep_times_s = history.keep_times_s
        if rule.max_per_minute and len(keep_times_s) == rule.max_per_minute \
                and now_s - keep_times_s[0] < RATE_WINDOW_S:
            return Discard(RATE_CAP)
        if rule.duplicate_max_distance >= 0:
            frame_hash = image_hash(image)
            last_hash = history.last_hash.get(label)
            if last_hash is not None and hamming(frame_hash, last_hash) <= rule.duplicate_max_distance:
                return Discard(DUPLICATE)
            history.last_hash[label] = frame_hash
        history.last_keep_s[label] = now_s
        keep_times_s.append(now_s)
        return Keep(MATCH, label, score)

    def audit(self, discard: Decision, label: str, score: float, audit_bytes_used: int) -> Decision:
        """Step 7 of ``decide``: count one discard, and make every ``audit_one_in``-th an audit keep as
        ``label`` and ``score`` while audit keeps use less than ``audit_budget_bytes``."""
        if discard.is_keep or not self.rule.audit_one_in:
            return discard
        history = self.history
        history.discards_since_audit += 1
        if history.discards_since_audit < self.rule.audit_one_in:
            return discard
        history.discards_since_audit = 0
        if audit_bytes_used >= self.rule.audit_budget_bytes:
            return discard
        return Keep(AUDIT, label, score, kind="audit")

    def _match(self, classification, lores, now_s):
        history = self.history
        candidate = self.candidate(classification)
        if candidate.discard_reason:
            history.winners.append(None)
            return Discard(candidate.discard_reason)
        label = candidate.label
        history.winners.append(label)
        if history.winners.count(label) < self.rule.confirm_frames:
            return Discard(UNCONFIRMED)
        return self.throttle(label, candidate.score, lores, now_s)

    def _label_rule(self, label):
        label_rule = self._label_rules.get(label)
        if label_rule is None:
            min_score = next((score for matches, score in self._min_scores if matches(label)), self.rule.min_score)
            label_rule = _LabelRule(self._is_target(label), self._is_ignored(label), min_score)
            self._label_rules[label] = label_rule
        return label_rule


def image_hash(lores: np.ndarray) -> int:
    """A 64-bit dHash of an RGB or gray image of any size: near-identical images differ in few bits.

    The image is area-averaged to 9x8 gray; each bit says whether a cell is brighter than its
    left neighbour, row by row, the first bit the most significant.
    """
    small = _area_mean(_gray(lores), 8, 9)
    return int.from_bytes(np.packbits(small[:, 1:] > small[:, :-1]).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    """How many bits differ between two image hashes."""
    return (a ^ b).bit_count()


def _matcher(patterns):
    """A case-insensitive test of a label against fnmatch-style patterns (exact names are patterns too)."""
    if not patterns:
        return lambda label: False
    regex = re.compile("|".join(fnmatch.translate(pattern) for pattern in patterns), re.IGNORECASE)
    return lambda label: regex.match(label) is not None


def _gray(image):
    image = np.asarray(image)
    return image @ _LUMA if image.ndim == 3 else image.astype(np.float32, copy=False)


def _area_mean(gray, rows, cols):
    """``gray`` averaged over a rows x cols grid of near-equal areas (np.add.reduceat, no sampling)."""
    row_starts, row_sizes = _bins(gray.shape[0], rows)
    col_starts, col_sizes = _bins(gray.shape[1], cols)
    sums = np.add.reduceat(np.add.reduceat(gray, row_starts, axis=0), col_starts, axis=1)
    return sums / np.outer(row_sizes, col_sizes)


def _bins(length, count):
    starts = np.arange(count) * length // count
    # An image smaller than the grid gives empty bins, for which reduceat returns the one pixel at
    # the start; counting that pixel once makes such bins repeat pixels instead of dividing by zero.
    return starts, np.maximum(np.diff(starts, append=length), 1)
