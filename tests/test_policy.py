"""The keep policy, driven with hand-built classifications, small images and explicit times."""

from types import SimpleNamespace

import numpy as np

from appliance.config import KeepConfig
from appliance.pipeline.frames import Classification, Discard, Keep
from appliance.pipeline.policy import REASONS, KeepRule, Policy, hamming, image_hash

RAMP = np.repeat(np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))[:, :, None], 3, axis=2)
MIRRORED_RAMP = RAMP[:, ::-1].copy()


def policy(**keep) -> Policy:
    return Policy(KeepRule.from_config(KeepConfig(**keep)))


def seen(*top_k) -> Classification:
    return Classification(top_k=top_k, inference_ms=10.0, backend="test")


def gray_frame(level, size=(32, 32)) -> np.ndarray:
    return np.full((*size, 3), level, dtype=np.uint8)


def reasons(p: Policy, *classifications, lores=RAMP, every_s=1.0) -> list[str]:
    return [p.decide(c, lores, now_s=i * every_s).reason for i, c in enumerate(classifications)]


class ImageThatMustNotBeRead:
    def __array__(self, *args, **kwargs):
        raise AssertionError("the policy read the image")


# Targets and scores

def test_an_exact_label_is_kept_and_any_other_is_not_a_target():
    p = policy(labels=("Narwhal",))
    assert p.decide(seen(("Narwhal", 0.9)), RAMP, 0.0) == Keep("match", "Narwhal", 0.9)
    assert p.decide(seen(("Beluga", 0.9)), RAMP, 1.0) == Discard("not-a-target")


def test_labels_match_regardless_of_case():
    assert policy(labels=("narwhal",)).decide(seen(("NARWHAL", 0.9)), RAMP, 0.0).is_keep


def test_a_glob_keeps_every_label_it_covers_and_nothing_else():
    p = policy(labels=("*Owl*",))
    assert reasons(p, seen(("Barn Owl", 0.9)), seen(("Great Horned Owl", 0.9)), seen(("Sparrow", 0.9))) \
        == ["match", "match", "not-a-target"]


def test_anything_except_keeps_every_label_but_the_ignored_ones():
    p = policy(labels=("*",), ignore=("background", "*Duck*"))
    assert reasons(p, seen(("Robin", 0.9)), seen(("background", 0.9)), seen(("Mallard Duck", 0.9))) \
        == ["match", "ignored-label", "ignored-label"]


def test_a_target_under_the_min_score_is_below_min_score():
    assert policy(min_score=0.6).decide(seen(("Robin", 0.59)), RAMP, 0.0) == Discard("below-min-score")


def test_a_per_label_min_score_overrides_the_global_one_for_its_labels_only():
    p = policy(min_score=0.5, min_score_by_label={"*Owl*": 0.8})
    assert reasons(p, seen(("Barn Owl", 0.7)), seen(("Robin", 0.7))) == ["below-min-score", "match"]


def test_the_first_matching_per_label_pattern_wins():
    p = policy(min_score_by_label={"Barn Owl": 0.3, "*Owl*": 0.9})
    assert p.decide(seen(("Barn Owl", 0.4)), RAMP, 0.0).is_keep


def test_a_target_ranked_below_an_ignored_top_label_is_kept_as_itself():
    p = policy(ignore=("background",), min_score=0.3)
    decision = p.decide(seen(("background", 0.6), ("Narwhal", 0.35)), RAMP, 0.0)
    assert decision == Keep("match", "Narwhal", 0.35)


def test_an_ignored_top_label_wins_over_a_target_too_weak_to_keep():
    p = policy(ignore=("background",), min_score=0.5)
    assert p.decide(seen(("background", 0.6), ("Narwhal", 0.35)), RAMP, 0.0) == Discard("ignored-label")


def test_no_target_below_an_ignored_top_label_is_ignored_label():
    p = policy(labels=("Narwhal",), ignore=("background",))
    assert p.decide(seen(("background", 0.6), ("Beluga", 0.3)), RAMP, 0.0) == Discard("ignored-label")


# Confirmation, cooldown, rate cap

def test_with_two_of_three_the_first_win_is_unconfirmed_and_the_second_is_kept():
    p = policy(confirm_frames=2, confirm_window=3)
    assert reasons(p, seen(("Robin", 0.9)), seen(("Robin", 0.9))) == ["unconfirmed", "match"]


def test_with_two_of_three_one_frame_without_a_winner_between_wins_still_confirms():
    p = policy(confirm_frames=2, confirm_window=3)
    assert reasons(p, seen(("Robin", 0.9)), seen(("Robin", 0.1)), seen(("Robin", 0.9))) \
        == ["unconfirmed", "below-min-score", "match"]


def test_with_two_of_three_a_win_that_left_the_window_no_longer_counts():
    p = policy(confirm_frames=2, confirm_window=3, ignore=("background",))
    frames = [seen(("Robin", 0.9)), seen(("Robin", 0.1)), seen(("background", 0.9)), seen(("Robin", 0.9))]
    assert reasons(p, *frames) == ["unconfirmed", "below-min-score", "ignored-label", "unconfirmed"]


def test_wins_of_another_label_do_not_confirm_a_label():
    p = policy(confirm_frames=2, confirm_window=3)
    assert reasons(p, seen(("Robin", 0.9)), seen(("Wren", 0.9))) == ["unconfirmed", "unconfirmed"]


def test_a_window_narrower_than_confirm_frames_is_widened_to_it():
    p = policy(confirm_frames=2, confirm_window=1)
    assert reasons(p, seen(("Robin", 0.9)), seen(("Robin", 0.9))) == ["unconfirmed", "match"]


def test_a_label_kept_recently_is_in_cooldown_until_cooldown_s_has_passed():
    p = policy(cooldown_s=10.0)
    robin = seen(("Robin", 0.9))
    assert [p.decide(robin, RAMP, now_s).reason for now_s in (100.0, 109.9, 110.0)] \
        == ["match", "cooldown", "match"]


def test_the_cooldown_of_one_label_does_not_hold_back_another():
    p = policy(cooldown_s=10.0)
    assert reasons(p, seen(("Robin", 0.9)), seen(("Wren", 0.9))) == ["match", "match"]


def test_the_rate_cap_allows_max_per_minute_keeps_in_any_sliding_minute():
    p = policy(max_per_minute=2)
    robin = seen(("Robin", 0.9))
    assert [p.decide(robin, RAMP, now_s).reason for now_s in (0.0, 10.0, 59.9, 60.0, 65.0, 70.0)] \
        == ["match", "match", "rate-cap", "match", "rate-cap", "match"]


def test_a_rate_cap_of_zero_is_no_cap():
    assert set(reasons(policy(max_per_minute=0), *[seen(("Robin", 0.9))] * 50, every_s=0.01)) == {"match"}


# Near-duplicates and the image hash

def test_the_same_image_kept_again_for_the_same_label_is_a_duplicate():
    assert reasons(policy(duplicate_max_distance=4), seen(("Robin", 0.9)), seen(("Robin", 0.9))) \
        == ["match", "duplicate"]


def test_a_clearly_different_image_of_the_same_label_is_kept():
    p = policy(duplicate_max_distance=4)
    assert p.decide(seen(("Robin", 0.9)), RAMP, 0.0).is_keep
    assert p.decide(seen(("Robin", 0.9)), MIRRORED_RAMP, 1.0).is_keep


def test_an_image_is_not_compared_with_keeps_of_another_label():
    assert reasons(policy(duplicate_max_distance=4), seen(("Robin", 0.9)), seen(("Wren", 0.9))) \
        == ["match", "match"]


def hashed(bits: int) -> np.ndarray:
    """An 8x9 gray image (the hash's own grid) whose dHash has exactly its first ``bits`` bits set."""
    rows = []
    for r in range(8):
        level, row = 100, [100]
        for c in range(8):
            level += 10 if r * 8 + c < bits else -10
            row.append(level)
        rows.append(row)
    return np.array(rows, dtype=np.uint8)


def test_an_image_exactly_duplicate_max_distance_bits_away_is_a_duplicate_and_one_bit_more_is_kept():
    assert [hamming(image_hash(hashed(0)), image_hash(hashed(n))) for n in (4, 5)] == [4, 5]
    for distance, expected in ((4, "duplicate"), (5, "match")):
        p = policy(duplicate_max_distance=4)
        assert p.decide(seen(("Robin", 0.9)), hashed(0), 0.0).is_keep
        assert p.decide(seen(("Robin", 0.9)), hashed(distance), 1.0).reason == expected


def test_a_frame_is_compared_with_the_last_keep_not_with_the_last_frame_that_was_a_duplicate():
    # 4 bits from the keep: a duplicate; 8 bits from the keep (but 4 from that duplicate): kept.
    p = policy(duplicate_max_distance=4)
    robin = seen(("Robin", 0.9))
    assert [p.decide(robin, hashed(bits), float(i)).reason for i, bits in enumerate((0, 4, 8))] \
        == ["match", "duplicate", "match"]


def test_duplicates_are_kept_when_the_check_is_off():
    assert reasons(policy(), seen(("Robin", 0.9)), seen(("Robin", 0.9))) == ["match", "match"]


def test_a_frame_that_is_not_kept_never_reads_the_image():
    p = policy(labels=("Narwhal",), duplicate_max_distance=4)
    assert p.decide(seen(("Beluga", 0.9)), ImageThatMustNotBeRead(), 0.0) == Discard("not-a-target")


def test_a_keep_without_the_duplicate_check_never_reads_the_image():
    assert policy().decide(seen(("Robin", 0.9)), ImageThatMustNotBeRead(), 0.0).is_keep


def test_the_hash_of_a_brightening_ramp_sets_every_bit_and_of_its_mirror_none():
    assert image_hash(RAMP) == 2**64 - 1
    assert image_hash(MIRRORED_RAMP) == 0


def test_the_hash_works_on_square_and_non_square_images_alike():
    for height, width in [(224, 224), (128, 128), (48, 64)]:
        ramp = np.tile(np.linspace(0, 255, width).astype(np.uint8), (height, 1))
        assert image_hash(np.repeat(ramp[:, :, None], 3, axis=2)) == image_hash(ramp) == 2**64 - 1


def test_an_image_smaller_than_the_hash_grid_still_tells_a_ramp_from_its_mirror():
    ramp = np.tile(np.arange(0, 250, 50, dtype=np.uint8), (4, 1))
    assert hamming(image_hash(ramp), image_hash(ramp[:, ::-1])) >= 32


def test_the_hash_sees_a_line_thinner_than_its_grid_because_it_averages_areas():
    line = gray_frame(100, size=(48, 64))
    line[:, 33:35] = 200  # between the columns a 9-wide nearest-neighbour sample would pick
    assert image_hash(gray_frame(100, size=(48, 64))) == 0
    assert bin(image_hash(line)).count("1") == 8  # one brighter-than-its-left cell per row


def test_hamming_counts_the_bits_that_differ():
    assert hamming(0b1011, 0b0010) == 2
    assert hamming(2**64 - 1, 0) == 64


# Motion gate

def test_the_motion_gate_is_off_by_default():
    p = policy()
    assert p.gate(gray_frame(100), 0.0) is None
    assert p.gate(gray_frame(100), 1.0) is None


def test_the_first_frame_is_always_classified_and_a_static_one_after_it_is_skipped():
    p = policy(motion_gate=True, motion_min_change=0.02)
    assert p.gate(gray_frame(100), 0.0) is None
    assert p.gate(gray_frame(101), 1.0) == Discard("static-scene")


def test_a_changed_frame_is_classified():
    p = policy(motion_gate=True, motion_min_change=0.02)
    p.gate(gray_frame(100), 0.0)
    changed = gray_frame(100)
    changed[:16] = 255
    assert p.gate(changed, 1.0) is None


def test_slow_drift_is_measured_from_the_last_classified_frame():
    p = policy(motion_gate=True, motion_min_change=0.02)  # about 5 grey levels
    assert [p.gate(gray_frame(level), float(level)) for level in (100, 103, 106, 108)] \
        == [None, Discard("static-scene"), None, Discard("static-scene")]


# Audit sample

def test_every_nth_discard_becomes_an_audit_keep_of_the_top_label():
    p = policy(labels=("Narwhal",), audit_one_in=3)
    beluga = seen(("Beluga", 0.7), ("Narwhal", 0.2))
    discard, audit = Discard("below-min-score"), Keep("audit", "Beluga", 0.7, kind="audit")
    assert [p.decide(beluga, RAMP, float(i)) for i in range(6)] == [discard, discard, audit] * 2


def test_keeps_do_not_count_toward_the_audit_sample():
    p = policy(labels=("Narwhal",), audit_one_in=2)
    assert reasons(p, seen(("Beluga", 0.9)), seen(("Narwhal", 0.9)), seen(("Beluga", 0.9))) \
        == ["not-a-target", "match", "audit"]


def test_no_audit_keeps_once_audit_keeps_fill_their_byte_budget():
    p = policy(labels=("Narwhal",), audit_one_in=1, audit_budget_bytes=1000)
    beluga = seen(("Beluga", 0.9))
    assert p.decide(beluga, RAMP, 0.0, audit_bytes_used=999).reason == "audit"
    assert p.decide(beluga, RAMP, 1.0, audit_bytes_used=1000) == Discard("not-a-target")


def test_an_audit_keep_starts_no_cooldown():
    p = policy(min_score=0.5, cooldown_s=100.0, audit_one_in=1)
    assert reasons(p, seen(("Robin", 0.3)), seen(("Robin", 0.9))) == ["audit", "match"]


def test_reasons_lists_every_reason_once():
    assert sorted(REASONS) == sorted({"match", "audit", "static-scene", "ignored-label", "not-a-target",
                                      "below-min-score", "unconfirmed", "cooldown", "rate-cap", "duplicate"})


# The rule from config

def test_a_rule_from_an_empty_config_keeps_every_label_at_half_confidence():
    rule = KeepRule.from_config(KeepConfig())
    assert (rule.labels, rule.ignore, rule.min_score) == (("*",), (), 0.5)


def test_unset_config_fields_take_the_model_catalog_defaults():
    catalog = SimpleNamespace(labels=["*Owl*"], ignore=["background"], min_score=0.3)
    rule = KeepRule.from_config(KeepConfig(), catalog)
    assert (rule.labels, rule.ignore, rule.min_score) == (("*Owl*",), ("background",), 0.3)


def test_config_fields_override_the_model_catalog_defaults():
    catalog = SimpleNamespace(labels=["*Owl*"], ignore=["background"], min_score=0.3)
    rule = KeepRule.from_config(KeepConfig(labels=("Narwhal",), ignore=(), min_score=0.7), catalog)
    assert (rule.labels, rule.ignore, rule.min_score) == (("Narwhal",), (), 0.7)


def test_the_rule_carries_every_other_knob_from_the_config():
    knobs = dict(min_score_by_label={"*Owl*": 0.8}, confirm_frames=2, confirm_window=5, cooldown_s=3.0,
                 max_per_minute=7, duplicate_max_distance=6, motion_gate=True, motion_min_change=0.1,
                 audit_one_in=50, audit_budget_bytes=1234)
    rule = KeepRule.from_config(KeepConfig(**knobs))
    assert {name: getattr(rule, name) for name in knobs} == knobs
