"""Agreement over frames: the detector's boxes joined into tracks, a track's species by votes, its best frames kept.

A bird crossing the frame is one event, not one keep a frame. Each frame's target detections, each with
what the species classifier said of its crop, join the open tracks by overlap (IoU), or by how far their
centre moved for a small fast subject whose boxes no longer overlap; a detection that joins none starts a
track, and a track that goes too long without one ends. A track's species is the label with the most
summed crop scores (Frigate's object classification asks for at least 3 attempts and 60 % agreement: those
are the defaults here); a track is confirmed once it has ``min_frames`` frames and its leading label has
``min_share`` of the scores. Every keep carries its track's ``event_id``.

No image is held back: each frame is decided when it is seen, so the loop never keeps a frame beyond its
own turn. A frame seen before its track is confirmed is discarded ("track-unconfirmed"); from then on the
track keeps its best ``best_per_track`` frames of its label as they come: the first at once, and once that
many are kept, a later frame only if it beats the worst of them by ``better_by``, replacing it (the verdict
names the keep it replaces, for the store to delete). Each replacement raises the standing scores' sum by
more than ``better_by``, so while one label leads a track it writes at most ``best_per_track * (1 + 1 /
better_by)`` keeps; when it ends, its standing keeps are its best frames seen since it was confirmed.

Pure: no I/O, no clock (time comes in as monotonic seconds), no images; a test drives it with plain values.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Callable, Sequence

from appliance.pipeline.detections import Box, Detection, iou
from appliance.pipeline.frames import Decision, Discard, Keep
from appliance.pipeline.policy import MATCH

TRACK_UNCONFIRMED = "track-unconfirmed"
TRACK_NOT_BEST = "track-not-best"
REASONS = (MATCH, TRACK_UNCONFIRMED, TRACK_NOT_BEST)
"""Every reason a verdict of this module gives of its own, the keep first; an observation may bring another
(its ``discard_reason``, from the keep rule)."""


@dataclass(frozen=True)
class TrackRule:
    """How detections join into tracks and what a track keeps; the loop builds one from the config."""

    # 0.3 is SORT's default. Two boxes of one size overlap that much while the subject moves up to about
    # half its width between frames ((1 - d) / (1 + d) >= 0.3 for d <= 0.54); lower joins neighbours.
    min_iou: float = 0.3
    # A subject whose boxes overlap less than min_iou still joins a track if its centre moved at most this
    # many box sizes (widths across, heights down): a small bird hopping its own length between two frames
    # of a two-stage loop at a few frames a second. 0 turns it off.
    max_jump: float = 1.5
    max_gap_frames: int = 5  # a track ends after more frames than this in a row without a detection of it,
    max_gap_s: float = 5.0   # or more seconds than this since its last one, whichever comes first
    min_frames: int = 3      # frames a track needs before it is confirmed,
    min_share: float = 0.6   # and the share of its summed scores its leading label needs (0-1)
    best_per_track: int = 1  # keeps a track may have standing at once (1 or more)
    better_by: float = 0.1   # how much a frame must beat the worst standing keep to replace it (> 0)


@dataclass(frozen=True)
class Observation:
    """One target the detector found in a frame, with what the species classifier said of its crop.

    ``label`` and ``score`` are the crop's (its top-1, or the keep rule's candidate label). ``discard_reason``
    is why the keep rule alone would discard this crop (a policy reason such as "below-min-score"), or None if
    it would keep it: such a crop still joins its track and votes, but is never kept, and its verdict carries
    that reason.
    """

    detection: Detection
    label: str
    score: float
    discard_reason: str | None = None

    @property
    def box(self) -> Box:
        return self.detection.box


@dataclass(frozen=True)
class TrackVerdict:
    """What became of one observation: its ``decision`` and the track it joined.

    ``frame_no`` counts the track's frames from 0, so ``(event_id, frame_no)`` names a keep. ``replaces``
    is the ``frame_no`` of the keep of the same event that this keep supersedes (the track already had
    ``best_per_track`` standing and this one beat the worst by ``better_by``), else None: the store may
    delete that one once this one is durable.
    """

    observation: Observation
    decision: Decision
    event_id: str
    frame_no: int
    replaces: int | None = None


@dataclass(frozen=True)
class TrackSummary:
    """A track as it stands: its leading ``label``, that label's ``share`` of the scores, its standing keeps."""

    event_id: str
    detector_label: str
    label: str
    share: float
    frames: int
    is_confirmed: bool
    kept: tuple[int, ...]  # the frame_no of each standing keep, best first
    first_s: float
    last_s: float


@dataclass(frozen=True)
class FrameTracks:
    """What ``Tracker.update`` says of one frame: a verdict per observation, in their order; tracks it ended."""

    verdicts: tuple[TrackVerdict, ...]
    ended: tuple[TrackSummary, ...]


def centre_jump(a: Box, b: Box) -> float:
    """How far the centre moved from ``a`` to ``b`` in box sizes: across in widths or down in heights,
    whichever is more, each of the larger box (so the frame's aspect ratio does not matter)."""
    width = max(a.right - a.left, b.right - b.left, _TINY)
    height = max(a.bottom - a.top, b.bottom - b.top, _TINY)
    return max(abs(a.left + a.right - b.left - b.right) / 2 / width,
               abs(a.top + a.bottom - b.top - b.bottom) / 2 / height)


def random_event_id() -> str:
    """A uuid4 in hex: unique across restarts and cameras with no clock to trust (a Pi without RTC or NTP)."""
    return uuid.uuid4().hex


@dataclass(eq=False)
class _Track:
    event_id: str
    detector_label: str
    box: Box
    first_s: float
    last_s: float
    frames: int = 0
    missed: int = 0  # frames in a row without a detection of it
    votes: dict[str, float] = field(default_factory=dict)  # label -> summed crop scores
    kept: dict[int, tuple[str, float]] = field(default_factory=dict)  # standing keeps: frame_no -> label, score

    @property
    def label(self) -> str:
        return max(self.votes, key=self.votes.__getitem__)  # a tie goes to the label seen first

    @property
    def share(self) -> float:
        total = sum(self.votes.values())
        return self.votes[self.label] / total if total > 0 else 0.0

    def summary(self, rule: TrackRule) -> TrackSummary:
        kept = sorted(self.kept, key=lambda n: -self.kept[n][1])
        return TrackSummary(self.event_id, self.detector_label, self.label, self.share, self.frames,
                            _is_confirmed(self, rule), tuple(kept), self.first_s, self.last_s)


class Tracker:
    """Joins each frame's observations into tracks and decides, frame by frame, which ones to keep.

    Call ``update`` for every frame the detector ran on, with no observations when it found nothing: a
    frame without a detection is what counts toward a gap. Open tracks number at most the most detections a
    frame has times ``max_gap_frames + 1``; each holds one box, its label's votes and its standing keeps.
    """

    def __init__(self, rule: TrackRule = TrackRule(), new_event_id: Callable[[], str] = random_event_id):
        self.rule = rule
        self._new_event_id = new_event_id
        self._tracks: list[_Track] = []  # open, oldest first: an older track wins a tie

    @property
    def open_tracks(self) -> tuple[TrackSummary, ...]:
        return tuple(track.summary(self.rule) for track in self._tracks)

    def update(self, observations: Sequence[Observation], now_s: float) -> FrameTracks:
        """Join one frame's ``observations`` into tracks and decide each; ``now_s`` is monotonic seconds.

        1. Tracks whose last detection is more than ``max_gap_s`` old end before this frame is matched.
        2. Pairs of an open track and an observation of the same detector label are taken best first while
           neither is taken yet (greedy): by IoU, those of at least ``min_iou``; then, among what is left, by
           the centre's jump, those of at most ``max_jump`` box sizes.
        3. An observation left over starts a track. Each adds its score to its label's votes, then:
           its ``discard_reason`` if it has one; "track-unconfirmed" while the track has fewer than
           ``min_frames`` frames or its leading label less than ``min_share`` of its scores; "track-not-best"
           if its label is not the leading one, or the track has ``best_per_track`` keeps standing and it
           beats none by more than ``better_by`` (a keep of another label than the leading one is beaten by
           any); otherwise ``Keep("match")`` as the leading label and its own score.
        4. A track no observation joined has missed one more frame; after ``max_gap_frames`` it ends.
        """
        rule = self.rule
        ended = [track for track in self._tracks if now_s - track.last_s > rule.max_gap_s]
        tracks = [track for track in self._tracks if now_s - track.last_s <= rule.max_gap_s]
        joined = self._match(tracks, observations)
        verdicts, started = [], []
        for index, observation in enumerate(observations):
            track = joined.get(index)
            if track is None:
                track = _Track(self._new_event_id(), observation.detection.label, observation.box, now_s, now_s)
                started.append(track)
            verdicts.append(self._see(track, observation, now_s))
        still_open, seen = [], set(joined.values())
        for track in tracks:
            if track not in seen:
                track.missed += 1
                if track.missed > rule.max_gap_frames:
                    ended.append(track)
                    continue
            still_open.append(track)
        self._tracks = still_open + started
        return FrameTracks(tuple(verdicts), tuple(track.summary(rule) for track in ended))

    def forget(self, event_id: str, frame_no: int) -> None:
        """The keep of frame ``frame_no`` of an open track was not made after all (the keep rule's cooldown,
        rate cap or duplicate test refused it): it no longer stands, and a later frame is no replacement."""
        for track in self._tracks:
            if track.event_id == event_id:
                track.kept.pop(frame_no, None)

    def end_all(self) -> tuple[TrackSummary, ...]:
        """End every open track (the loop is stopping) and say how each stands, oldest first."""
        ended, self._tracks = self._tracks, []
        return tuple(track.summary(self.rule) for track in ended)

    def _match(self, tracks, observations):
        """Observation index -> the open track it joins."""
        rule = self.rule
        pairs = [(t, o) for t, track in enumerate(tracks) for o, observation in enumerate(observations)
                 if observation.detection.label == track.detector_label]
        joined: dict[int, int] = {}
        _take_best_first([(-overlap, t, o) for t, o in pairs
                          if (overlap := iou(tracks[t].box, observations[o].box)) >= rule.min_iou and overlap > 0],
                         joined)
        if rule.max_jump > 0:
            _take_best_first([(jump, t, o) for t, o in pairs if o not in joined
                              and (jump := centre_jump(tracks[t].box, observations[o].box)) <= rule.max_jump],
                             joined)
        return {o: tracks[t] for o, t in joined.items()}

    def _see(self, track, observation, now_s):
        frame_no = track.frames
        track.frames += 1
        track.box, track.last_s, track.missed = observation.box, now_s, 0
        track.votes[observation.label] = track.votes.get(observation.label, 0.0) + observation.score
        decision, replaces = self._decide(track, observation, frame_no)
        return TrackVerdict(observation, decision, track.event_id, frame_no, replaces)

    def _decide(self, track, observation, frame_no):
        if observation.discard_reason:
            return Discard(observation.discard_reason), None
        if not _is_confirmed(track, self.rule):
            return Discard(TRACK_UNCONFIRMED), None
        label, score = track.label, observation.score
        if observation.label != label:
            return Discard(TRACK_NOT_BEST), None
        replaces = None
        if len(track.kept) >= self.rule.best_per_track:
            # The worst standing keep: any of another label than the leading one, else the lowest score.
            replaces = min(track.kept, key=lambda n: (track.kept[n][0] == label, track.kept[n][1]))
            worst_label, worst_score = track.kept[replaces]
            if worst_label == label and score <= worst_score + self.rule.better_by:
                return Discard(TRACK_NOT_BEST), None
            del track.kept[replaces]
        track.kept[frame_no] = (label, score)
        return Keep(MATCH, label, score), replaces


_TINY = 1e-6  # a box of no size still has a size to divide by


def _is_confirmed(track, rule):
    return track.frames >= rule.min_frames and track.share >= rule.min_share


def _take_best_first(pairs, joined):
    """Take ``(cost, track, observation)`` pairs lowest cost first while neither side is taken (greedy: the
    Hungarian method would minimise the total instead, which on a frame's handful of boxes rarely differs)."""
    taken = set(joined.values())
    for _, track, observation in sorted(pairs):
        if observation not in joined and track not in taken:
            joined[observation] = track
            taken.add(track)
