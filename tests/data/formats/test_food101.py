"""UPMC Food-101 loader on a tiny image folder and header-less CRLF title CSVs."""

from __future__ import annotations

import numpy as np
import pytest

from mlmm.data.datasets import load_dataset
from mlmm.data.formats import food101 as food101_module
from mlmm.data.formats import load_food101
from mlmm.errors import MlmmError

Image = pytest.importorskip("PIL.Image")

TRAIN = [
    ("apple_pie_1.jpg", "My Apple Pie Recipe", "apple_pie"),
    ("apple_pie_2.jpg", '"Pie, with apples &amp; cream"', "apple_pie"),
    ("tacos_1.jpg", "Fish Tacos", "tacos"),
    ("tacos_2.jpg", "", "tacos"),  # no title
    ("tacos_3.jpg", "Tacos al pastor", "tacos"),  # image file missing
    ("tacos_4.jpg", "Broken image", "tacos"),  # not a JPEG
]
TEST = [  # titles as in the published test_titles.csv: list artefacts, literal escape text
    ("tacos_9.jpg", "Street tacos", "tacos"),
    ("apple_pie_9.jpg", '"[[""Coleen\'s Recipes: BEST APPLE PIE EVER !!!""]]"', "apple_pie"),
    ("apple_pie_8.jpg", r"Candy Apple Pie Recipe - Moms Need To Know \xe2\x84\xa2", "apple_pie"),
]


def _write(root, train=TRAIN, test=TEST):
    (root / "texts").mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("test", test)):
        lines = [f"{f},{t},{c}" for f, t, c in rows]
        (root / "texts" / f"{split}_titles.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
        for k, (filename, _, label) in enumerate(rows):
            folder = root / "images" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            if filename == "tacos_3.jpg":
                continue
            if filename == "tacos_4.jpg":
                (folder / filename).write_bytes(b"not a jpeg at all")
                continue
            colour = (40 * k % 256, 200, 10)
            Image.new("RGB", (10, 8), colour).save(folder / filename, "JPEG")
    return root


def test_images_titles_and_natural_missingness(tmp_path):
    _write(tmp_path)
    ds = load_food101(tmp_path, image_size=4, text_dim=32)
    assert ds.task.class_names == ("apple_pie", "tacos")
    assert ds.meta["files"].tolist()[:3] == [
        "train/apple_pie/apple_pie_1.jpg",
        "train/apple_pie/apple_pie_2.jpg",
        "train/tacos/tacos_1.jpg",
    ]
    assert ds.meta["bad_images"] == 1 and ds.meta["missing_images"] == 1
    assert ds.n_samples == 8  # 6 train rows - 1 undecodable + 3 test rows
    assert ds.meta["texts"][1] == "Pie, with apples &amp; cream"  # quoted comma kept, no unescaping
    assert ds.targets.tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    assert ds.observed[:, 0].tolist() == [True, True, True, True, False, True, True, True]
    assert ds.observed[:, 1].tolist() == [True, True, True, False, True, True, True, True]
    assert ds.spec("image").shape == (3, 4, 4)
    red = ds.inputs["image"][0, 0]  # first image: colour (0, 200, 10)
    assert (
        abs(float(red.mean())) < 0.05
        and abs(float(ds.inputs["image"][0, 1].mean()) - 200 / 255) < 0.05
    )
    # hashing: "fish" and "tacos" are two counted words of row 2
    assert ds.inputs["text"][2].sum() == 2
    test = load_dataset(
        "food101", root=str(tmp_path), split="test", image_size=4, unescape_html=True
    )
    assert test.meta["official_split"].tolist() == ["test"] * 3
    assert test.targets.tolist() == [1, 0, 0]
    assert test.meta["texts"][1] == '[["Coleen\'s Recipes: BEST APPLE PIE EVER !!!"]]'
    assert test.meta["texts"][2].endswith(r"Know \xe2\x84\xa2")  # kept as written


def test_bad_images_can_be_an_error_naming_the_file(tmp_path):
    _write(tmp_path)
    with pytest.raises(MlmmError, match=r"tacos_4\.jpg could not be decoded as an image") as err:
        load_food101(tmp_path, split="train", image_size=4, bad_images="error")
    assert "\n" not in str(err.value)


def test_unescaping_and_token_ids_for_the_text_backbone(tmp_path, monkeypatch):
    _write(tmp_path)
    seen = {}

    def fake_ids(texts, length):  # the real tokenizer needs the optional text package
        seen["texts"] = list(texts)
        return np.arange(1, len(texts) * length + 1).reshape(len(texts), length)

    monkeypatch.setattr("mlmm.nn.backbones.minilm_token_ids", fake_ids)
    ds = load_food101(
        tmp_path, split="train", image_size=4, text="minilm", text_length=5, unescape_html=True
    )
    assert seen["texts"][1] == "Pie, with apples & cream"
    assert ds.spec("text").shape == (5,) and ds.spec("text").standardize is False
    assert ds.inputs["text"][0].tolist() == [1, 2, 3, 4, 5]


def test_bad_csvs_and_roots_get_one_line_errors(tmp_path):
    with pytest.raises(MlmmError, match="does not hold texts/train_titles.csv"):
        load_food101(tmp_path)
    _write(tmp_path, test=[("sushi_1.jpg", "Sushi", "sushi")])
    with pytest.raises(MlmmError, match="line 1: class 'sushi' is not a class of the training"):
        load_food101(tmp_path, split="test")
    (tmp_path / "texts" / "test_titles.csv").write_text("a.jpg,title\n")
    with pytest.raises(MlmmError, match="line 1 has 2 fields, expected 3"):
        load_food101(tmp_path)
    # the file's line, past a blank line and a title quoted over two lines
    csv_text = 'apple_pie_1.jpg,"Pie,\nwith a break",apple_pie\n\nsushi_1.jpg,Sushi,sushi\n'
    (tmp_path / "texts" / "test_titles.csv").write_text(csv_text)
    with pytest.raises(MlmmError, match="line 4: class 'sushi' is not a class of the training"):
        load_food101(tmp_path, split="test")
    assert food101_module.FOOD101_FILES[0] == "texts/train_titles.csv"


def test_the_split_of_missing_aware_prompts_carves_val_from_train(tmp_path):
    import json

    _write(tmp_path)
    split = {
        "train": ["apple_pie_1.jpg", "tacos_1.jpg", "tacos_2.jpg"],
        "val": ["apple_pie_2.jpg", "not_in_the_csv.jpg"],
        "test": ["apple_pie_9.jpg"],
    }
    (tmp_path / "split.json").write_text(json.dumps(split))
    ds = load_food101(tmp_path, image_size=4, map_split=tmp_path / "split.json")
    assert ds.meta["official_split"].tolist() == ["train"] * 3 + ["val", "test"]
    assert ds.meta["files"][3] == "train/apple_pie/apple_pie_2.jpg"  # val images: images/train
    assert ds.meta["unlisted"] == 1
    val = load_food101(tmp_path, split="val", image_size=4, map_split=tmp_path / "split.json")
    assert val.n_samples == 1 and val.targets.tolist() == [0]
    with pytest.raises(MlmmError, match="split must be one of"):
        load_food101(tmp_path, split="val")  # no val without MAP's split


def test_a_file_in_two_splits_of_maps_split_json_is_refused(tmp_path):
    # val is carved from train: a file listed in both loaded silently before (a leak)
    import json

    _write(tmp_path)
    split = {"train": ["apple_pie_1.jpg", "tacos_1.jpg"], "val": ["tacos_1.jpg"], "test": []}
    (tmp_path / "split.json").write_text(json.dumps(split))
    with pytest.raises(MlmmError, match="lists 'tacos_1.jpg' in both 'train' and 'val'"):
        load_food101(tmp_path, image_size=4, map_split=tmp_path / "split.json")
    split["val"] = "apple_pie_2.jpg"  # one name, not a list: "no readable sample" before
    (tmp_path / "split.json").write_text(json.dumps(split))
    with pytest.raises(MlmmError, match="'val' should be a list of file names, got str"):
        load_food101(tmp_path, image_size=4, map_split=tmp_path / "split.json")


def test_a_header_row_is_refused_not_read_as_a_sample(tmp_path):
    # in the training CSV a header made a class named 'class'; the published CSVs have none
    _write(tmp_path)
    path = tmp_path / "texts" / "train_titles.csv"
    path.write_bytes(b"filename,title,class\r\n" + path.read_bytes())
    with pytest.raises(MlmmError, match="line 1 reads .* which looks like a header") as err:
        load_food101(tmp_path, image_size=4)
    assert "delete that line" in str(err.value) and "\n" not in str(err.value)


def test_an_unclosed_quote_is_one_line_naming_the_csv(tmp_path):
    _write(tmp_path)
    path = tmp_path / "texts" / "test_titles.csv"
    path.write_text('tacos_9.jpg,"Street tacos' + "x" * 200_000 + ",tacos\r\n")
    with pytest.raises(MlmmError, match=r"test_titles\.csv line 1 is not readable CSV") as err:
        load_food101(tmp_path, image_size=4)
    assert "\n" not in str(err.value)


def test_a_nul_byte_is_one_line_naming_the_line_not_an_unclosed_quote(tmp_path):
    # Python 3.10's csv module raised "line contains NUL", reported as "an unclosed quote?";
    # 3.11+ kept the NUL inside the title silently
    _write(tmp_path)
    path = tmp_path / "texts" / "test_titles.csv"
    lines = path.read_bytes().split(b"\r\n")
    lines[1] = lines[1].replace(b"pie", b"p\x00ie", 1)
    path.write_bytes(b"\r\n".join(lines))
    with pytest.raises(MlmmError, match=r"test_titles\.csv line 2 holds a NUL byte") as err:
        load_food101(tmp_path, image_size=4)
    text = str(err.value)
    assert "re-save it as UTF-8" in text and "unclosed quote" not in text and "\n" not in text
    # a UTF-16 save (NUL after every ASCII byte) is named at its first line
    path.write_bytes("tacos_9.jpg,Street tacos,tacos\r\n".encode("utf-16-le"))
    with pytest.raises(MlmmError, match=r"test_titles\.csv line 1 holds a NUL byte"):
        load_food101(tmp_path, image_size=4)


def test_a_byte_order_mark_is_not_part_of_the_first_file_name(tmp_path):
    # a CSV re-saved as "UTF-8 with BOM" named '\ufeffapple_pie_1.jpg': its image was missing
    _write(tmp_path)
    path = tmp_path / "texts" / "train_titles.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    ds = load_food101(tmp_path, image_size=4, split="train")
    assert ds.meta["files"][0] == "train/apple_pie/apple_pie_1.jpg"
    assert ds.meta["missing_images"] == 1 and ds.observed[0].all()


def test_a_csv_that_is_not_utf8_is_one_line_naming_the_line(tmp_path):
    # the published CSVs are UTF-8; a cp1252 re-save had its bytes replaced by U+FFFD silently
    _write(tmp_path)
    path = tmp_path / "texts" / "test_titles.csv"
    lines = path.read_bytes().split(b"\r\n")
    lines[1] = "apple_pie_9.jpg,Crème brûlée pie,apple_pie".encode("cp1252")
    path.write_bytes(b"\r\n".join(lines))
    with pytest.raises(MlmmError, match=r"test_titles\.csv line 2 is not UTF-8") as err:
        load_food101(tmp_path, image_size=4)
    assert "re-save the file as UTF-8" in str(err.value) and "\n" not in str(err.value)
    lines[1] = "apple_pie_9.jpg,Crème brûlée pie,apple_pie".encode()  # UTF-8 reads as written
    path.write_bytes(b"\r\n".join(lines))
    ds = load_food101(tmp_path, image_size=4, split="test")
    assert ds.meta["texts"][1] == "Crème brûlée pie"


@pytest.mark.parametrize(
    ("row", "what"),
    [
        ("../../../secret.jpg,Pie,apple_pie", "file name '../../../secret.jpg'"),
        ("/etc/secret.jpg,Pie,apple_pie", "file name '/etc/secret.jpg'"),
        (r"..\secret.jpg,Pie,apple_pie", r"file name '..\\\\secret.jpg'"),
        ("C:secret.jpg,Pie,apple_pie", "file name 'C:secret.jpg'"),
        ("apple_pie_9.jpg,Pie,..", "class '..'"),
        ("apple_pie_9.jpg,Pie,../../x", "class '../../x'"),
        (",Pie,apple_pie", "file name ''"),
    ],
)
def test_a_csv_name_that_leaves_the_root_is_refused(tmp_path, row, what):
    # images are read at images/<split>/<class>/<file>: '..' reached files outside the root
    _write(tmp_path)
    outside = tmp_path / "images" / "secret.jpg"
    Image.new("RGB", (4, 4)).save(outside, "JPEG")
    path = tmp_path / "texts" / "test_titles.csv"
    path.write_bytes(path.read_bytes() + row.encode() + b"\r\n")
    with pytest.raises(MlmmError, match=rf"line 4: {what} is not a plain name") as err:
        load_food101(tmp_path, image_size=4)
    assert "\n" not in str(err.value)


def _class_idx(tmp_path, order):
    import json

    split = {"train": ["apple_pie_1.jpg", "tacos_1.jpg"], "val": [], "test": ["tacos_9.jpg"]}
    (tmp_path / "map").mkdir(exist_ok=True)
    (tmp_path / "map" / "split.json").write_text(json.dumps(split))
    (tmp_path / "map" / "class_idx.json").write_text(json.dumps(order))
    return tmp_path / "map" / "split.json"


def test_maps_class_idx_beside_its_split_gives_the_class_order(tmp_path):
    _write(tmp_path)
    map_split = _class_idx(tmp_path, {"frozen_yogurt": 0, "tacos": 1, "apple_pie": 2})
    ds = load_food101(tmp_path, image_size=4, map_split=map_split)
    assert ds.task.class_names == ("frozen_yogurt", "tacos", "apple_pie")
    assert ds.targets.tolist() == [2, 1, 1]  # apple_pie_1, tacos_1, then test tacos_9
    assert ds.meta["class_order"] == str(tmp_path / "map" / "class_idx.json")
    # "sorted" keeps the order before class_idx.json was read; no map_split: sorted as before
    old = load_food101(tmp_path, image_size=4, map_split=map_split, class_idx="sorted")
    assert old.task.class_names == ("apple_pie", "tacos") and old.targets.tolist() == [0, 1, 1]
    assert old.meta["class_order"] == "sorted"
    plain = load_food101(tmp_path, image_size=4, split="test")
    assert plain.task.class_names == ("apple_pie", "tacos")
    # an explicit class_idx without MAP's split
    named = load_food101(
        tmp_path, image_size=4, split="test", class_idx=map_split.parent / "class_idx.json"
    )
    assert named.targets.tolist() == [1, 2, 2]


@pytest.mark.parametrize(
    ("order", "message"),
    [
        ({"tacos": 0, "apple_pie": 2}, r"gives indices \[0, 2\]\.\.\., expected each of 0\.\.1"),
        ({"tacos": 0, "apple_pie": True}, "should be a JSON object"),
        (["tacos", "apple_pie"], "should be a JSON object"),
        ({"tacos": 0, "../apple_pie": 1}, "names class '../apple_pie', expected plain"),
        ({"tacos": 0, "sushi": 1}, r"line 1: class 'apple_pie' is not a class of .*class_idx"),
    ],
)
def test_a_wrong_class_idx_is_one_line(tmp_path, order, message):
    _write(tmp_path)
    map_split = _class_idx(tmp_path, order)
    with pytest.raises(MlmmError, match=message) as err:
        load_food101(tmp_path, image_size=4, map_split=map_split)
    assert "\n" not in str(err.value)


def test_an_unreadable_class_idx_beside_map_split_says_how_to_go_without_it(tmp_path):
    # found beside map_split, not passed: the error named a class_idx= the user never gave
    _write(tmp_path)
    map_split = _class_idx(tmp_path, {"apple_pie": 0, "tacos": 1})
    (map_split.parent / "class_idx.json").write_text('{"apple_pie": 0,')
    with pytest.raises(MlmmError, match=r"class_idx\.json is not a readable JSON file") as err:
        load_food101(tmp_path, image_size=4, map_split=map_split)
    assert "class_idx='sorted'" in str(err.value) and "\n" not in str(err.value)
    ds = load_food101(tmp_path, image_size=4, map_split=map_split, class_idx="sorted")
    assert ds.task.class_names == ("apple_pie", "tacos")
