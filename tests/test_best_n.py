"""Keep the best N: the pure rule with plain values, the writer applying it to a real store and real files,
the config keys, and the counts by reason in a real run's status."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from conftest import IMAGES
from PIL import Image

from appliance.config import Config, StorageConfig, load_config
from appliance.errors import ConfigError
from appliance.pipeline.frames import ArrayImage, Classification, Keep
from appliance.pipeline.writer import KeepJob, ModelInfo, Writer
from appliance.service.app import Appliance
from appliance.service.status import read_status
from appliance.storage.retention import BEST_N_PROTECTED, NOT_BEST, BestN, Rival, plan_best_n
from appliance.storage.store import Store

# -- the rule, with plain values -------------------------------------------------------------------


def rival(id, score, is_starred=False, is_relabelled=False, is_taken_off=True):
    return Rival(id, score, is_starred, is_relabelled, is_taken_off)


TEN = [rival(i, 0.5 + i / 100) for i in range(1, 11)]  # ids 1-10, scores 0.51-0.60: item 1 is the worst


def test_below_its_limit_a_label_keeps_without_replacing():
    assert plan_best_n(0.1, [(10, TEN[:9]), (0, TEN[:9])]) == BestN()
    assert plan_best_n(0.1, [(0, TEN), (0, TEN)]) == BestN()  # both limits off


def test_the_eleventh_keep_replaces_the_worst_when_it_scores_better():
    assert plan_best_n(0.55, [(10, TEN), (0, TEN)]) == BestN(replace_id=1)


def test_a_keep_no_better_than_the_worst_is_refused():
    assert plan_best_n(0.51, [(10, TEN), (0, TEN)]) == BestN(refused=NOT_BEST)
    assert plan_best_n(0.30, [(10, TEN), (0, TEN)]) == BestN(refused=NOT_BEST)


def test_a_starred_or_relabelled_item_is_never_replaced():
    protected = [rival(1, 0.51, is_starred=True), rival(2, 0.52, is_relabelled=True), *TEN[2:]]
    assert plan_best_n(0.99, [(10, protected), (0, protected)]) == BestN(replace_id=3)


def test_one_not_taken_off_is_replaced_only_if_the_owner_chose_so():
    on_device = [rival(1, 0.51, is_taken_off=False), *TEN[1:]]
    assert plan_best_n(0.99, [(10, on_device), (0, on_device)]) == BestN(replace_id=2)
    assert plan_best_n(0.99, [(10, on_device), (0, on_device)], may_replace_not_taken_off=True) == BestN(replace_id=1)


def test_with_nothing_that_may_go_a_better_keep_is_refused_as_protected_and_a_worse_one_as_not_best():
    starred = [rival(i, 0.5 + i / 100, is_starred=True) for i in range(1, 11)]
    assert plan_best_n(0.99, [(10, starred), (0, starred)]) == BestN(refused=BEST_N_PROTECTED)
    assert plan_best_n(0.50, [(10, starred), (0, starred)]) == BestN(refused=NOT_BEST)


def test_on_a_tie_of_scores_the_oldest_is_replaced():
    tied = [rival(7, 0.5), rival(3, 0.5), rival(9, 0.8)]
    assert plan_best_n(0.6, [(3, tied), (0, tied)]) == BestN(replace_id=3)


def test_the_narrowest_full_scope_chooses_and_one_replacement_serves_both():
    day = [rival(5, 0.7), rival(6, 0.8)]
    everything = [rival(1, 0.2), rival(2, 0.3), *day]
    # The day is full: the worst of the day goes, though older days hold worse keeps.
    assert plan_best_n(0.9, [(2, day), (4, everything)]) == BestN(replace_id=5)
    # Only the overall limit is reached: the worst of all goes.
    assert plan_best_n(0.9, [(3, day), (4, everything)]) == BestN(replace_id=1)


# -- the writer applying it to a real store and real files ------------------------------------------

DAY_S = 1794960000.0  # 2026-11-18T00:00:00Z
HOUR_S = 3600.0


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "data")
    yield store
    store.close()


def writer_for(store, **storage):
    return Writer(store, StorageConfig(min_free_bytes=0, **storage), ModelInfo("m", "s"), Counter())


def job(label, score, at_s, kind="match", image=None):
    rgb = np.random.default_rng(int(at_s)).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    return KeepJob(Keep(kind, label, score, kind), Classification(((label, score),), 5.0, "cpu"),
                   image or ArrayImage(rgb), at_s, f"{label}-{at_s}.jpg")


def keep_ten(writer, label="Ara macao", day_s=DAY_S, is_taken_off=True):
    """Ten keeps of ``label`` on the UTC day starting at ``day_s``, scoring 0.51 to 0.60, oldest worst."""
    ids = [writer.write(job(label, 0.5 + i / 100, day_s + i * HOUR_S)) for i in range(1, 11)]
    assert None not in ids
    if is_taken_off:
        writer.store.mark_offloaded(ids, "2026-11-19T00:00:00Z")
    return ids


def files_of(store):
    return sorted(p.relative_to(store.data_dir) for p in store.data_dir.rglob("*.jpg"))


def test_the_eleventh_keep_of_a_label_on_a_day_replaces_the_worst_when_n_is_10(store):
    writer = writer_for(store, best_per_label_per_day=10)
    ids = keep_ten(writer)
    worst = store.get(ids[0])
    new_id = writer.write(job("Ara macao", 0.9, DAY_S + 23 * HOUR_S))
    assert new_id is not None
    assert [r["id"] for r in store.rows()] == ids[1:] + [new_id]
    assert not (store.data_dir / worst["image_path"]).exists() and not (store.data_dir / worst["thumb_path"]).exists()
    assert len(files_of(store)) == 2 * 10  # ten images, ten thumbnails
    assert writer.counts == Counter({"replaced-better": 1})


class Unread:
    """A kept image (``frames.MainImage``) that must not be read: a refused keep costs no JPEG."""

    def array(self):
        raise AssertionError("the image of a refused keep was read to be encoded")

    def detach(self):
        return self


def test_a_worse_eleventh_keep_is_refused_counted_and_never_encoded_or_written(store):
    writer = writer_for(store, best_per_label_per_day=10)
    ids = keep_ten(writer)
    files = files_of(store)
    assert writer.write(job("Ara macao", 0.51, DAY_S + 23 * HOUR_S, image=Unread())) is None  # a tie is not better
    assert [r["id"] for r in store.rows()] == ids and files_of(store) == files
    assert writer.counts == Counter({"not-best": 1}) and writer.kept == 10


def test_a_starred_item_is_never_replaced(store):
    writer = writer_for(store, best_per_label_per_day=10)
    ids = keep_ten(writer)
    store.set_starred(ids[0], True)
    writer.write(job("Ara macao", 0.9, DAY_S + 23 * HOUR_S))
    assert ids[0] in [r["id"] for r in store.rows()] and store.get(ids[1]) is None
    for item in ids:
        store.set_starred(item, True)
    assert writer.write(job("Ara macao", 0.99, DAY_S + 23.5 * HOUR_S)) is None
    assert writer.counts["best-n-protected"] == 1 and len(store.rows()) == 10


def test_one_not_taken_off_is_not_replaced_unless_the_owner_chose_so(store):
    writer = writer_for(store, best_per_label_per_day=10)
    ids = keep_ten(writer, is_taken_off=False)
    files = files_of(store)
    assert writer.write(job("Ara macao", 0.9, DAY_S + 23 * HOUR_S)) is None
    assert [r["id"] for r in store.rows()] == ids and files_of(store) == files
    assert writer.counts == Counter({"best-n-protected": 1})
    store.mark_offloaded(ids[3:4], "2026-11-19T00:00:00Z")  # one of them is now on a USB stick
    writer.write(job("Ara macao", 0.9, DAY_S + 23 * HOUR_S))
    assert store.get(ids[3]) is None and store.get(ids[0]) is not None
    writer.config = StorageConfig(min_free_bytes=0, best_per_label_per_day=10, replace_not_taken_off=True)
    writer.write(job("Ara macao", 0.9, DAY_S + 23.5 * HOUR_S))
    assert store.get(ids[0]) is None
    assert writer.counts["replaced-better"] == 2


def test_other_labels_and_other_days_are_untouched(store):
    writer = writer_for(store, best_per_label_per_day=10)
    day_before = [writer.write(job("Ara macao", 0.1, DAY_S - 1 - i)) for i in range(10)]  # worse, up to 23:59:59
    other_label = [writer.write(job("Pica pica", 0.2, DAY_S + i)) for i in range(3)]
    store.mark_offloaded(day_before + other_label, "2026-11-19T00:00:00Z")
    ids = keep_ten(writer)
    writer.write(job("Ara macao", 0.9, DAY_S + 23 * HOUR_S))
    remaining = {r["id"] for r in store.rows()}
    assert set(day_before) | set(other_label) <= remaining and ids[0] not in remaining
    assert writer.write(job("Ara macao", 0.9, DAY_S + 86400)) is not None  # the next day starts afresh
    assert writer.counts == Counter({"replaced-better": 1})


def test_at_the_quota_a_better_keep_still_takes_the_place_of_a_worse_one(store):
    writer = writer_for(store, best_per_label_per_day=10, replace_not_taken_off=True)
    ids = keep_ten(writer, is_taken_off=False)
    writer.config = StorageConfig(min_free_bytes=0, quota_bytes=store.used_bytes + 500, when_full="stop",
                                  best_per_label_per_day=10, replace_not_taken_off=True)
    assert writer.write(job("Pica pica", 0.9, DAY_S + 23 * HOUR_S)) is None  # another label: no room
    new_id = writer.write(job("Ara macao", 0.9, DAY_S + 23 * HOUR_S))
    assert new_id is not None and store.get(ids[0]) is None
    assert writer.counts == Counter({"storage-full": 1, "replaced-better": 1})


def test_a_persons_correction_decides_which_label_an_item_counts_under(store):
    writer = writer_for(store, best_per_label_per_day=2)
    macaw, other = writer.write(job("Ara macao", 0.5, DAY_S)), writer.write(job("Pica pica", 0.3, DAY_S + 1))
    store.mark_offloaded([macaw, other], "2026-11-19T00:00:00Z")
    store.relabel(other, "Ara macao")  # a macaw after all: counts as one, but its score is not a macaw's
    assert writer.write(job("Ara macao", 0.9, DAY_S + 2)) is not None
    assert store.get(macaw) is None and store.get(other) is not None


def test_audit_keeps_neither_count_nor_are_replaced(store):
    writer = writer_for(store, best_per_label_per_day=1)
    audit = writer.write(job("Ara macao", 0.1, DAY_S, kind="audit"))
    store.mark_offloaded([audit], "2026-11-19T00:00:00Z")
    assert writer.write(job("Ara macao", 0.5, DAY_S + 1)) is not None
    assert writer.write(job("Ara macao", 0.05, DAY_S + 2, kind="audit")) is not None
    assert store.get(audit) is not None and writer.counts == Counter()


def test_an_item_whose_file_is_missing_no_longer_counts(store):
    writer = writer_for(store, best_per_label_per_day=2)
    ids = [writer.write(job("Ara macao", 0.8, DAY_S + i)) for i in range(2)]
    store.mark_missing(ids[0], True)  # start-up found its file gone (a card edited elsewhere)
    assert writer.write(job("Ara macao", 0.5, DAY_S + 2)) is not None and writer.counts == Counter()


def test_the_overall_limit_replaces_the_worst_of_the_label_on_any_day(store):
    writer = writer_for(store, best_per_label=3)
    ids = [writer.write(job("Ara macao", score, DAY_S + day * 86400)) for day, score in ((0, 0.6), (1, 0.4), (2, 0.7))]
    store.mark_offloaded(ids, "2026-11-22T00:00:00Z")
    assert writer.write(job("Ara macao", 0.3, DAY_S + 3 * 86400)) is None
    new_id = writer.write(job("Ara macao", 0.5, DAY_S + 3 * 86400))
    assert [r["id"] for r in store.rows()] == [ids[0], ids[2], new_id]
    assert writer.counts == Counter({"not-best": 1, "replaced-better": 1})


def test_with_both_limits_a_full_day_gives_up_its_worst_though_other_days_hold_worse(store):
    writer = writer_for(store, best_per_label_per_day=2, best_per_label=5)
    ids = [writer.write(job("Ara macao", score, at_s)) for score, at_s in
           ((0.2, DAY_S - HOUR_S), (0.6, DAY_S), (0.7, DAY_S + HOUR_S))]
    store.mark_offloaded(ids, "2026-11-19T00:00:00Z")
    new_id = writer.write(job("Ara macao", 0.8, DAY_S + 2 * HOUR_S))
    assert [r["id"] for r in store.rows()] == [ids[0], ids[2], new_id]


class StarredWhileEncoded:
    """A kept image (``frames.MainImage``) whose pixels are read while a person stars ``item`` on the page."""

    def __init__(self, store, item):
        self.store, self.item = store, item

    def array(self):
        self.store.set_starred(self.item, True)
        return np.zeros((24, 32, 3), dtype=np.uint8)

    def detach(self):
        return self


def test_the_keep_to_replace_is_chosen_again_once_the_new_one_is_durable(store):
    writer = writer_for(store, best_per_label_per_day=10)
    ids = keep_ten(writer)
    new_id = writer.write(job("Ara macao", 0.9, DAY_S + 23 * HOUR_S, image=StarredWhileEncoded(store, ids[0])))
    assert store.get(ids[0]) is not None and store.get(ids[1]) is None and store.get(new_id) is not None


# -- the config ---------------------------------------------------------------------------------------


def test_the_rule_is_off_by_default():
    storage = Config().storage
    assert (storage.best_per_label_per_day, storage.best_per_label, storage.replace_not_taken_off) == (0, 0, False)


@pytest.mark.parametrize("text, message", [
    ("best_per_label_per_day = -1", "storage.best_per_label_per_day: -1 is out of range, allowed: a whole number from 0"),
    ("best_per_label = 2.5", "storage.best_per_label: 2.5 is not a whole number"),
    ('replace_not_taken_off = "yes"', "storage.replace_not_taken_off: 'yes' is not true or false"),
    ("best_per_label_per_day = 10\nbest_per_label = 5",
     "storage.best_per_label: 5 is fewer than storage.best_per_label_per_day (10), which could then never be "
     "reached, allowed: 0 (no overall limit) or at least 10"),
])
def test_a_bad_best_n_key_is_one_line_naming_the_file_the_key_and_what_is_allowed(tmp_path, text, message):
    path = tmp_path / "appliance.toml"
    path.write_text(f"[storage]\n{text}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: {message}") and "\n" not in str(error.value)


# -- a real run: the counts by reason in its status ----------------------------------------------------


@pytest.mark.parametrize("may_replace, reasons", [
    (True, {"match": 4, "replaced-better": 1, "not-best": 1}),
    (False, {"match": 4, "best-n-protected": 1, "not-best": 1}),
])
def test_a_run_counts_replaced_and_refused_keeps_by_reason_in_its_status(make_config, tmp_path, may_replace, reasons):
    # The whole-frame chickadee scores 0.70; a closer crop of it 0.93; the macaw is another label.
    replay = tmp_path / "replay"
    replay.mkdir()
    (replay / "1_chickadee.bmp").symlink_to(IMAGES / "bird.bmp")
    with Image.open(IMAGES / "bird.bmp") as photo:
        photo.crop((51, 17, 460, 325)).save(replay / "2_chickadee_closer.png")
    (replay / "3_chickadee.bmp").symlink_to(IMAGES / "bird.bmp")
    (replay / "4_macaw.jpg").symlink_to(IMAGES / "parrot.jpg")
    config = make_config(images=replay, storage={"data_dir": str(tmp_path / "data"), "min_free_bytes": 0,
                                                 "best_per_label": 1, "replace_not_taken_off": may_replace})
    with Appliance(config) as appliance:
        appliance.run()
    status = read_status(config.status.runtime_dir)
    assert status["frames"]["by_reason"] == reasons
    store = Store(config.storage.data_dir)
    kept = [r["source"] for r in store.rows()]
    store.close()
    assert kept == (["2_chickadee_closer.png", "4_macaw.jpg"] if may_replace else ["1_chickadee.bmp", "4_macaw.jpg"])
    assert status["frames"]["kept"] == len(kept) + may_replace
