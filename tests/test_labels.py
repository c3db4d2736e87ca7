"""Labels: parsed from every labels-file format, and read out of the real Coral models."""

import zipfile
from pathlib import Path

import pytest

from appliance.errors import ModelError
from appliance.inference.labels import load_labels, parse_labels

CORAL = Path(__file__).resolve().parents[2] / "shared/models/coral"
LABELS_FILE_OF = {
    "mobilenet_v2_1.0_224_inat_bird_quant.tflite": "inat_bird_labels.txt",
    "mobilenet_v2_1.0_224_inat_insect_quant.tflite": "inat_insect_labels.txt",
    "mobilenet_v2_1.0_224_quant.tflite": "imagenet_labels.txt",
    "tf2_mobilenet_v2_1.0_224_ptq.tflite": "imagenet_labels.txt",
    "mobilenet_v1_0.25_128_quant.tflite": "imagenet_labels.txt",
    "mobilenet_v1_0.25_128_quant_edgetpu.tflite": "imagenet_labels.txt",
}


def test_every_shared_model_is_covered_here():
    assert sorted(p.name for p in CORAL.glob("*.tflite")) == sorted(LABELS_FILE_OF)


@pytest.mark.parametrize("model", sorted(LABELS_FILE_OF))
def test_labels_embedded_in_each_model_equal_its_plain_labels_file(model):
    embedded = load_labels(CORAL / model)
    plain = load_labels(CORAL / model, labels_path=CORAL / LABELS_FILE_OF[model])
    assert embedded == plain
    assert embedded == (CORAL / LABELS_FILE_OF[model]).read_text(encoding="utf-8").splitlines()


def test_the_bird_model_has_964_species_then_background():
    labels = load_labels(CORAL / "mobilenet_v2_1.0_224_inat_bird_quant.tflite")
    assert len(labels) == 965
    assert labels[0] == "Haemorhous cassinii (Cassin's Finch)"
    assert labels[-1] == "background"


def test_imagenet_labels_with_commas_stay_whole_and_background_is_index_0():
    labels = load_labels(CORAL / "mobilenet_v1_0.25_128_quant.tflite")
    assert len(labels) == 1001
    assert labels[:2] == ["background", "tench, Tinca tinca"]


def test_an_explicit_labels_file_wins_over_the_embedded_labels(tmp_path):
    mine = tmp_path / "mine.txt"
    mine.write_text("0 narwhal\n1 ocean\n")
    assert load_labels(CORAL / "mobilenet_v1_0.25_128_quant.tflite", labels_path=mine) == ["narwhal", "ocean"]


def test_an_empty_labels_path_means_the_embedded_labels():
    assert load_labels(CORAL / "mobilenet_v1_0.25_128_quant.tflite", labels_path="")[0] == "background"


def test_a_model_that_is_not_a_zip_has_no_embedded_labels_and_the_error_names_it(tmp_path):
    model = tmp_path / "plain.tflite"
    model.write_bytes(bytes(4) + b"TFL3" + bytes(100))
    with pytest.raises(ModelError, match=r"plain\.tflite: the model has no embedded labels"):
        load_labels(model)


def test_a_zip_model_without_a_labels_file_is_an_error_naming_it(tmp_path):
    model = tmp_path / "nolabels.tflite"
    with zipfile.ZipFile(model, "w") as archive:
        archive.writestr("readme.txt", "no labels here")
    with pytest.raises(ModelError, match=r"nolabels\.tflite: the model has no embedded labels"):
        load_labels(model)


def test_a_missing_model_is_an_error_naming_it(tmp_path):
    with pytest.raises(ModelError, match=r"absent\.tflite: no such model file"):
        load_labels(tmp_path / "absent.tflite")


def test_a_missing_labels_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(ModelError, match=r"absent\.txt: no such labels file"):
        load_labels(CORAL / "mobilenet_v1_0.25_128_quant.tflite", labels_path=tmp_path / "absent.txt")


def test_a_labels_file_with_only_blank_lines_is_an_error_naming_it(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    with pytest.raises(ModelError, match=r"empty\.txt: has no labels"):
        load_labels(CORAL / "mobilenet_v1_0.25_128_quant.tflite", labels_path=empty)


def test_a_labels_file_that_is_not_utf8_is_an_error_naming_it(tmp_path):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ModelError, match=r"latin1\.txt: labels are not UTF-8"):
        load_labels(CORAL / "mobilenet_v1_0.25_128_quant.tflite", labels_path=latin)


@pytest.mark.parametrize("text", [
    "0 cat\n1 dog\n2 hot dog\n",
    "0:cat\n1:dog\n2:hot dog\n",
    "0: cat\n1: dog\n2: hot dog\n",
    "  0   cat  \n1\tdog\n2 :  hot dog\n",
    "2 hot dog\n0 cat\n1 dog\n",
])
def test_numbered_labels_in_every_format_give_the_same_list(text):
    assert parse_labels(text) == ["cat", "dog", "hot dog"]


def test_bare_labels_are_indexed_by_line_number():
    assert parse_labels("cat\ndog\nhot dog\n") == ["cat", "dog", "hot dog"]


def test_bare_imagenet_and_inat_labels_are_not_mistaken_for_numbered_ones():
    text = "background\ntench, Tinca tinca\nHaemorhous cassinii (Cassin's Finch)\n"
    assert parse_labels(text) == ["background", "tench, Tinca tinca", "Haemorhous cassinii (Cassin's Finch)"]


def test_a_bare_label_starting_with_a_number_keeps_the_whole_file_bare():
    assert parse_labels("cat\n7 Up\n3-toed sloth\n") == ["cat", "7 Up", "3-toed sloth"]


def test_one_bare_line_among_numbered_ones_makes_every_line_a_bare_label():
    assert parse_labels("0 cat\n1 dog\nbird\n") == ["0 cat", "1 dog", "bird"]


def test_gaps_in_numbered_labels_are_empty_labels_so_indexes_stay_right():
    assert parse_labels("0 person\n2 car\n5 truck\n") == ["person", "", "car", "", "", "truck"]


def test_a_blank_line_inside_a_bare_file_keeps_its_index():
    assert parse_labels("cat\n\ndog\n") == ["cat", "", "dog"]


def test_blank_lines_inside_a_numbered_file_do_not_count():
    assert parse_labels("0 cat\n\n1 dog\n") == ["cat", "dog"]


def test_blank_lines_at_the_end_crlf_and_a_byte_order_mark_are_ignored():
    assert parse_labels("\ufeffcat\r\ndog\r\n\r\n\n  \n") == ["cat", "dog"]


def test_the_same_number_twice_is_an_error_naming_the_source():
    with pytest.raises(ModelError, match=r"my\.txt: label number 1 is given twice \('dog' and 'bird'\)"):
        parse_labels("0 cat\n1 dog\n1 bird\n", source="my.txt")


def test_empty_text_has_no_labels():
    assert parse_labels("") == []
    assert parse_labels("\n\n") == []
