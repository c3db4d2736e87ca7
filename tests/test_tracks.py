"""Agreement over frames: boxes over time joined into tracks, a track's species by votes, its best frames kept."""

from __future__ import annotations

import itertools
import re

import pytest

from appliance.pipeline.detections import Box, Detection
from appliance.pipeline.frames import Discard, Keep
from appliance.pipeline.tracks import REASONS, Observation, Tracker, TrackRule, centre_jump, random_event_id

EVERY_S = 0.25  # four frames a second, about what a two-stage loop manages on a Pi


def seen(left, top=0.4, size=0.1, label="Robin", score=0.8, detector="bird", discard_reason=None) -> Observation:
    """A detection of a square ``size`` wide at ``left``, ``top``, and what the classifier said of its crop."""
    return Observation(Detection(Box(left, top, left + size, top + size), 16, detector, 0.7), label, score,
                       discard_reason)


def tracker(**rule) -> Tracker:
    """A tracker whose event ids read e1, e2, … in the order its tracks start."""
    numbers = itertools.count(1)
    return Tracker(TrackRule(**rule), new_event_id=lambda: f"e{next(numbers)}")


def run(t: Tracker, frames, every_s=EVERY_S, start_s=0.0):
    """Feed each frame's observations in turn; every verdict, and every track ended (the rest at the end)."""
    verdicts, ended = [], []
    for i, observations in enumerate(frames):
        result = t.update(observations, start_s + i * every_s)
        verdicts += result.verdicts
        ended += result.ended
    return verdicts, ended + list(t.end_all())


def standing_keeps(verdicts):
    """(event_id, frame_no) of each keep not replaced by a later one of its event."""
    kept = {(v.event_id, v.frame_no) for v in verdicts if v.decision.is_keep}
    return kept - {(v.event_id, v.replaces) for v in verdicts if v.replaces is not None}


def crossing(steps=15, step=0.05, top=0.4, scores=None, **observation):
    """One bird flying left to right, ``step`` of the width a frame."""
    scores = scores or [0.8] * steps
    return [[seen(0.02 + i * step, top, score=scores[i], **observation)] for i in range(steps)]


# Events

def test_one_bird_crossing_the_frame_is_one_event_and_one_keep():
    verdicts, ended = run(tracker(), crossing())
    assert {v.event_id for v in verdicts} == {"e1"}
    assert [v.decision for v in verdicts].count(Keep("match", "Robin", 0.8)) == 1
    assert [(e.event_id, e.label, e.frames, e.is_confirmed, e.kept) for e in ended] == \
        [("e1", "Robin", 15, True, (2,))]


def test_the_first_frames_of_a_track_are_unconfirmed_and_the_frame_that_confirms_it_is_kept_at_once():
    verdicts, _ = run(tracker(min_frames=3), crossing(steps=5))
    assert [v.decision.reason for v in verdicts] == ["track-unconfirmed"] * 2 + ["match"] + ["track-not-best"] * 2


def test_two_birds_at_once_are_two_events_with_a_keep_each():
    high, low = crossing(top=0.1), crossing(top=0.6)
    verdicts, ended = run(tracker(), [a + b for a, b in zip(high, low)])
    assert [(e.event_id, e.frames, len(e.kept)) for e in ended] == [("e1", 15, 1), ("e2", 15, 1)]
    assert len(standing_keeps(verdicts)) == 2


def test_a_single_frame_false_detection_is_not_kept_when_agreement_needs_three_frames():
    verdicts, ended = run(tracker(min_frames=3), [[], [], [seen(0.5, score=0.95)], [], [], [], [], [], []])
    assert [v.decision for v in verdicts] == [Discard("track-unconfirmed")]
    assert [(e.frames, e.is_confirmed, e.kept) for e in ended] == [(1, False, ())]


def test_a_gap_longer_than_max_gap_frames_starts_a_new_event_and_one_as_long_does_not():
    bird = [[seen(0.5)]] * 4
    _, ended = run(tracker(max_gap_frames=2, max_gap_s=60.0), bird + [[]] * 2 + bird + [[]] * 3 + bird)
    assert [(e.event_id, e.frames) for e in ended] == [("e1", 8), ("e2", 4)]


def test_a_track_ends_on_the_frame_that_makes_its_gap_too_long():
    t = tracker(max_gap_frames=2, max_gap_s=60.0)
    t.update([seen(0.5)], 0.0)
    assert [t.update([], s).ended for s in (1.0, 2.0)] == [(), ()]
    assert [e.event_id for e in t.update([], 3.0).ended] == ["e1"]
    assert t.open_tracks == ()


def test_a_gap_longer_than_max_gap_s_starts_a_new_event_even_without_frames_in_between():
    # A motion gate or a pause skips frames: the time since the last detection still ends the track.
    t = tracker(max_gap_frames=100, max_gap_s=2.0)
    first = [t.update([seen(0.5)], s).verdicts[0].event_id for s in (0.0, 0.5, 2.5)]
    later = t.update([seen(0.5)], 4.6)
    assert first == ["e1"] * 3 and later.verdicts[0].event_id == "e2"
    assert [e.event_id for e in later.ended] == ["e1"]


def test_empty_frames_decide_nothing():
    t = tracker()
    assert t.update([], 0.0).verdicts == () and t.update([], 1.0).ended == () and t.end_all() == ()


def test_a_detection_of_another_detector_label_in_the_same_place_starts_its_own_track():
    frames = [[seen(0.5)]] * 4 + [[seen(0.5, label="Tabby", detector="cat")]] * 4
    _, ended = run(tracker(), frames)
    assert [(e.detector_label, e.label, e.frames) for e in ended] == [("bird", "Robin", 4), ("cat", "Tabby", 4)]


# Votes

def test_a_track_of_a_09_b_05_a_08_is_a():
    verdicts, ended = run(tracker(min_frames=3, min_share=0.6),
                          [[seen(0.5, label="A", score=0.9)], [seen(0.5, label="B", score=0.5)],
                           [seen(0.5, label="A", score=0.8)]])
    assert verdicts[-1].decision == Keep("match", "A", 0.8)
    assert (ended[0].label, round(ended[0].share, 3), ended[0].is_confirmed) == ("A", round(1.7 / 2.2, 3), True)


def test_votes_are_weighted_by_score_not_counted():
    # Two weak B frames against one strong A: B has more frames but A more of the summed scores.
    _, ended = run(tracker(min_frames=3, min_share=0.5),
                   [[seen(0.5, label="B", score=0.3)], [seen(0.5, label="A", score=0.9)],
                    [seen(0.5, label="B", score=0.3)]])
    assert (ended[0].label, ended[0].is_confirmed) == ("A", True)


def test_a_track_whose_leading_share_is_below_min_share_never_confirms():
    # From the third frame on, the leading label has 51-59 % of the scores.
    labels = [("A", 0.6), ("B", 0.8), ("A", 0.4), ("B", 0.6), ("A", 0.5), ("B", 0.5)] * 3
    verdicts, ended = run(tracker(min_frames=3, min_share=0.6), [[seen(0.5, label=a, score=s)] for a, s in labels])
    assert {v.decision for v in verdicts} == {Discard("track-unconfirmed")}
    assert (ended[0].frames, ended[0].is_confirmed, ended[0].kept) == (18, False, ())


def test_a_frame_of_another_label_than_the_leading_one_is_not_kept():
    frames = [[seen(0.5, label=a, score=s)] for a, s in [("A", 0.9), ("A", 0.9), ("A", 0.9), ("B", 0.95)]]
    verdicts, _ = run(tracker(best_per_track=2), frames)
    assert [v.decision.reason for v in verdicts] == ["track-unconfirmed"] * 2 + ["match", "track-not-best"]


def test_a_crop_the_keep_rule_discards_votes_but_is_never_kept_and_says_why():
    frames = [[seen(0.5, score=0.8)], [seen(0.5, score=0.3, discard_reason="below-min-score")], [seen(0.5)],
              [seen(0.5, score=0.3, discard_reason="below-min-score")]]
    verdicts, _ = run(tracker(min_frames=3), frames)
    assert [v.decision.reason for v in verdicts] == ["track-unconfirmed", "below-min-score", "match",
                                                     "below-min-score"]


def test_when_the_leading_label_changes_its_first_frame_replaces_the_keep_of_the_old_one():
    # A leads with 2.7 until the fourth B frame brings B to 2.8 (51 %), which is kept though weaker.
    frames = [[seen(0.5, label="A", score=0.9)]] * 3 + [[seen(0.5, label="B", score=0.7)]] * 4
    verdicts, ended = run(tracker(min_share=0.5), frames)
    assert [(v.decision.reason, v.replaces) for v in verdicts[2:]] == \
        [("match", None)] + [("track-not-best", None)] * 3 + [("match", 2)]
    assert (ended[0].label, ended[0].kept) == ("B", (6,))


def test_a_keep_of_a_label_that_no_longer_leads_is_replaced_before_a_weaker_one_of_the_leading_label():
    frames = [[seen(0.5, label="A", score=0.9)]] * 3 + [[seen(0.5, label="B", score=s)] for s in (0.7,) * 4 + (0.72,)]
    verdicts, ended = run(tracker(min_share=0.5, best_per_track=2), frames)
    assert [(v.frame_no, v.replaces) for v in verdicts if v.decision.is_keep] == [(2, None), (6, None), (7, 2)]
    assert ended[0].kept == (7, 6)


# The best frames

def test_the_frame_kept_in_the_end_is_the_highest_scoring_one():
    scores = [0.5, 0.6, 0.7, 0.75, 0.92, 0.85, 0.8]
    verdicts, ended = run(tracker(best_per_track=1, better_by=0.1), crossing(steps=7, scores=scores))
    assert [(v.frame_no, v.replaces) for v in verdicts if v.decision.is_keep] == [(2, None), (4, 2)]
    assert ended[0].kept == (4,) and standing_keeps(verdicts) == {("e1", 4)}


def test_a_frame_better_by_less_than_the_margin_is_not_kept():
    verdicts, _ = run(tracker(better_by=0.1), crossing(steps=6, scores=[0.6, 0.6, 0.6, 0.65, 0.69, 0.71]))
    assert [v.frame_no for v in verdicts if v.decision.is_keep] == [2, 5]


def test_a_track_keeps_its_best_per_track_frames_and_writes_a_bounded_number():
    scores = [0.3, 0.3, 0.4, 0.9, 0.5, 0.6, 0.45, 0.95, 0.66, 0.8, 0.55, 0.3, 0.88, 0.2, 0.1]
    verdicts, ended = run(tracker(best_per_track=3, better_by=0.05), crossing(scores=scores))
    assert ended[0].kept == (7, 3, 12)  # 0.95, 0.9, 0.88: the best three since confirmation, best first
    assert standing_keeps(verdicts) == {("e1", n) for n in (7, 3, 12)}
    assert sum(v.decision.is_keep for v in verdicts) == 8  # 3 to fill the places, 5 better by the margin


def test_a_bird_crossing_with_best_per_track_three_leaves_three_keeps_of_one_event():
    verdicts, ended = run(tracker(best_per_track=3), crossing())
    assert len(standing_keeps(verdicts)) == 3 and {v.event_id for v in verdicts} == {"e1"}


# Matching

def test_birds_that_cross_each_other_do_not_swap_tracks():
    # One flies right, the other left, a little lower: where they pass, each new box overlaps the other's
    # last box enough to join it (IoU 0.32), but its own last box more (0.67).
    frames = [[seen(0.1 + i * 0.02, top=0.40), seen(0.7 - i * 0.02, top=0.44)] for i in range(31)]
    verdicts, ended = run(tracker(), frames)
    for event_id, top in (("e1", 0.40), ("e2", 0.44)):
        assert {v.observation.box.top for v in verdicts if v.event_id == event_id} == {top}
    rightward = [v.observation.box.left for v in verdicts if v.event_id == "e1"]
    assert rightward == sorted(rightward) and len(rightward) == 31
    assert [(e.event_id, e.frames) for e in ended] == [("e1", 31), ("e2", 31)]


def test_a_small_fast_bird_whose_boxes_never_overlap_stays_one_track_by_its_centre():
    # 4 % of the width, hopping 5 % a frame: IoU 0 from one frame to the next.
    frames = [[seen(0.1 + i * 0.05, size=0.04)] for i in range(8)]
    _, by_centre = run(tracker(max_jump=1.5), frames)
    _, by_overlap_only = run(tracker(max_jump=0), frames)
    assert [(e.frames, len(e.kept)) for e in by_centre] == [(8, 1)]
    assert len(by_overlap_only) == 8 and not any(e.kept for e in by_overlap_only)


def test_a_detection_that_overlaps_a_track_less_than_min_iou_starts_its_own_when_the_centre_is_not_asked():
    _, ended = run(tracker(min_iou=0.3, max_jump=0), [[seen(0.5)], [seen(0.58)], [seen(0.6)]])  # IoU 0.11, 0.67
    assert [e.frames for e in ended] == [1, 2]


def test_a_bird_that_jumps_further_than_max_jump_starts_a_new_track():
    _, ended = run(tracker(max_jump=1.5), [[seen(0.1, size=0.04)], [seen(0.2, size=0.04)]])
    assert len(ended) == 2


def test_the_best_overlap_wins_when_two_detections_could_join_one_track():
    t = tracker()
    t.update([seen(0.5)], 0.0)
    verdicts = t.update([seen(0.53), seen(0.51)], EVERY_S).verdicts  # IoU 0.54 and 0.82: both could
    assert [(v.event_id, v.frame_no) for v in verdicts] == [("e2", 0), ("e1", 1)]


def test_a_hundred_birds_at_once_keep_their_own_tracks():
    grid = [(0.02 + c * 0.1, 0.02 + r * 0.1) for r in range(10) for c in range(10)]
    frames = [[seen(x + i * 0.01, y, size=0.05) for x, y in grid] for i in range(4)]
    verdicts, ended = run(tracker(), frames)
    assert [(e.event_id, e.frames, len(e.kept)) for e in ended] == [(f"e{n}", 4, 1) for n in range(1, 101)]
    assert all(v.event_id == f"e{n % 100 + 1}" for n, v in enumerate(verdicts))


# Ids, reasons and the geometry

def test_event_ids_are_uuid4_hex_and_stable_for_a_track():
    verdicts, ended = run(Tracker(), crossing(steps=4) + [[]] * 10 + crossing(steps=4))
    ids = [v.event_id for v in verdicts]
    assert ids[:4] == [ids[0]] * 4 and ids[4:] == [ids[4]] * 4 and ids[0] != ids[4]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids) and len({random_event_id() for _ in range(100)}) == 100


def test_reasons_lists_every_reason_of_its_own_once():
    assert sorted(REASONS) == sorted({"match", "track-unconfirmed", "track-not-best"})


def test_the_centre_jump_is_in_box_sizes_along_each_axis():
    assert centre_jump(Box(0.0, 0.0, 0.1, 0.2), Box(0.15, 0.1, 0.25, 0.3)) == pytest.approx(1.5)
    assert centre_jump(Box(0.0, 0.0, 0.1, 0.2), Box(0.05, 0.5, 0.15, 0.7)) == pytest.approx(2.5)
    assert centre_jump(Box(0.5, 0.5, 0.5, 0.5), Box(0.5, 0.5, 0.5, 0.5)) == 0.0


def test_a_keep_the_loop_did_not_make_is_forgotten_and_the_next_good_frame_is_kept_instead():
    """The keep rule's cooldown, rate cap or duplicate test may refuse a track's keep: the track must not
    count it as standing, or it would wait for a frame better by better_by before keeping anything."""
    t = tracker()
    first = [t.update([seen(0.1)], s * EVERY_S).verdicts[0] for s in range(3)][-1]
    assert first.decision.is_keep
    t.forget(first.event_id, first.frame_no)
    again = t.update([seen(0.11)], 3 * EVERY_S).verdicts[0]
    assert again.decision.is_keep and again.replaces is None
    unforgotten = tracker()
    [unforgotten.update([seen(0.1)], s * EVERY_S) for s in range(3)]
    assert unforgotten.update([seen(0.11)], 3 * EVERY_S).verdicts[0].decision == Discard("track-not-best")
