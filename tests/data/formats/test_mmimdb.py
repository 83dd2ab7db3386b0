"""MM-IMDb loader on a tiny ``multimodal_imdb.hdf5`` in the Fuel layout of Arevalo et al."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlmm.data.datasets import load_dataset
from mlmm.data.formats import load_mmimdb
from mlmm.data.formats.mmimdb import MMIMDB_GENRES
from mlmm.errors import MlmmError

h5py = pytest.importorskip("h5py")

N = 8
SPLIT_ROWS = {"train": (0, 4), "dev": (4, 6), "test": (6, 8)}
SOURCES = ("features", "vgg_features", "images", "genres", "imdb_ids")


def _fuel_split_table():
    """Fuel's root attribute: one row per (split, source) with start/stop and a null ref."""
    dtype = np.dtype(
        [
            ("split", "S5"),
            ("source", "S15"),
            ("start", np.int64),
            ("stop", np.int64),
            ("indices", h5py.ref_dtype),
            ("available", bool),
            ("comment", "S1"),
        ]
    )
    rows = [
        (name.encode(), source.encode(), start, stop, h5py.Reference(), True, b".")
        for name, (start, stop) in SPLIT_ROWS.items()
        for source in SOURCES
    ]
    return np.array(rows, dtype=dtype)


def _write(root, split_attr=True, **overrides):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    genres = np.zeros((N, 23), dtype=np.int32)
    genres[np.arange(N), np.arange(N) % 3] = 1  # Drama, Comedy, Romance in turn
    genres[1, 0] = 1  # movie 1 is a drama comedy
    images = np.broadcast_to(
        np.arange(1, N + 1, dtype=np.int32)[:, None, None, None], (N, 3, 256, 160)
    ).copy()
    images[2] = 0  # no poster
    images[3, 0, 0, 0] = -104  # BGR mean-subtracted values go negative
    features = rng.normal(size=(N, 300)).astype(np.float32)
    features[5] = 0.0  # a plot with no known word
    data = {
        "features": features,
        "vgg_features": rng.normal(size=(N, 4096)).astype(np.float32),
        "images": images,
        "genres": genres,
        "imdb_ids": np.array([f"{i:07d}".encode() for i in range(N)], dtype="S7"),
    }
    data.update(overrides)
    with h5py.File(root / "multimodal_imdb.hdf5", "w") as f:
        for key, value in data.items():
            f.create_dataset(key, data=value, compression="gzip")
        f["genres"].attrs["target_names"] = json.dumps(list(MMIMDB_GENRES))
        if split_attr:
            f.attrs["split"] = _fuel_split_table()
    return root


def test_fuel_splits_genres_and_natural_missingness(tmp_path):
    _write(tmp_path)
    ds = load_mmimdb(tmp_path)
    assert ds.n_samples == N and ds.spec("image").shape == (4096,)
    assert ds.meta["official_split"].tolist() == ["train"] * 4 + ["dev"] * 2 + ["test"] * 2
    assert ds.meta["imdb_ids"][:2].tolist() == ["0000000", "0000001"]
    assert ds.meta["genres"].shape == (N, 23) and ds.meta["genre_names"][0] == "Drama"
    assert ds.task.kind == "multilabel" and ds.task.label_names == MMIMDB_GENRES
    assert ds.targets.dtype == np.float32 and (ds.targets == ds.meta["genres"]).all()
    drama = load_mmimdb(tmp_path, genre="Drama")
    assert drama.targets.tolist() == [1, 1, 0, 1, 0, 0, 1, 0]  # Drama: rows 0, 3, 6 and 1
    assert ds.observed[5].tolist() == [False, True]
    comedy = load_dataset("mmimdb", root=str(tmp_path), split="dev", genre="Comedy")
    assert comedy.targets.tolist() == [1, 0] and comedy.task.class_names == ("not Comedy", "Comedy")
    pixels = load_mmimdb(tmp_path, split="train", image="pixels")
    assert pixels.spec("image").kind == "image" and pixels.spec("image").shape == (3, 256, 160)
    assert pixels.observed[:, 1].tolist() == [True, True, False, True]
    assert pixels.inputs["image"][3, 0, 0, 0] == -104


def test_the_published_rows_stand_in_for_a_missing_split_table(tmp_path):
    _write(tmp_path, split_attr=False)
    with pytest.raises(MlmmError, match="no 'split' attribute and 8 rows, not the published"):
        load_mmimdb(tmp_path)


def test_bad_files_get_one_line_errors(tmp_path):
    with pytest.raises(MlmmError, match="does not hold multimodal_imdb.hdf5"):
        load_mmimdb(tmp_path)
    _write(tmp_path, features=np.zeros((N, 200), np.float32))
    with pytest.raises(MlmmError, match=r"'features' has shape \(8, 200\), expected \(8, 300\)"):
        load_mmimdb(tmp_path)
    _write(tmp_path)
    with pytest.raises(MlmmError, match="unknown MM-IMDb genre 'Dramma'. Did you mean 'Drama'"):
        load_mmimdb(tmp_path, genre="Dramma")
    path = tmp_path / "multimodal_imdb.hdf5"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(MlmmError, match="not a readable HDF5 file") as err:
        load_mmimdb(tmp_path)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------- raw release
def _write_raw(root, map_layout=False):
    """split.json + IMDbPY-style <id>.json (plot is a list) + <id>.jpeg, ids as 7-digit strings."""
    from PIL import Image

    image_dir = root / ("images" if map_layout else "dataset")
    label_dir = root / ("labels" if map_layout else "dataset")
    image_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    movies = {
        "0000001": {"plot": ["A short one.", "A much longer plot about a family drama."],
                    "genres": ["Drama", "Family"], "title": "One"},
        "0000002": {"plot outline": "Jokes.", "genres": ["Comedy", "Talk-Show"]},
        "0000003": {"plot": [], "genres": ["Drama"]},  # no text at all
        "0000004": {"plot": "Space.", "genres": ["Sci-Fi"]},  # poster missing; a str plot
        "0000005": {"plot": ["Broken poster."], "genres": ["Drama"]},  # poster undecodable
    }  # fmt: skip
    for movie, record in movies.items():
        (label_dir / f"{movie}.json").write_text(json.dumps(record))
        if movie == "0000004":
            continue
        if movie == "0000005":
            (image_dir / f"{movie}.jpeg").write_bytes(b"\xff\xd8 truncated")
            continue
        Image.new("RGB", (12, 18), (10, 20, 30)).save(image_dir / f"{movie}.jpeg", "JPEG")
    split = {"train": ["0000001", "0000002", "0000005"], "dev": ["0000003"], "test": ["0000004"]}
    (root / "split.json").write_text(json.dumps(split))
    return root


@pytest.mark.parametrize("map_layout", [False, True])
def test_the_raw_release_reads_posters_plots_and_genres(tmp_path, map_layout):
    pytest.importorskip("PIL")
    _write_raw(tmp_path, map_layout)
    ds = load_mmimdb(tmp_path, image_size=4, text_dim=16)
    assert ds.meta["imdb_ids"].tolist() == ["0000001", "0000002", "0000003", "0000004"]
    assert ds.meta["bad_images"] == 1 and ds.meta["missing_images"] == 1
    assert ds.meta["official_split"].tolist() == ["train", "train", "dev", "test"]
    assert ds.meta["texts"][:2] == ["A much longer plot about a family drama.", "Jokes."]
    assert ds.meta["texts"][3] == "Space."  # a plot given as one string, not as a list
    assert ds.observed.tolist() == [[True, True], [True, True], [False, True], [True, False]]
    assert ds.targets[:, 0].tolist() == [1, 0, 1, 0]  # Drama
    genres = ds.meta["genres"]
    assert genres[1].sum() == 1  # Talk-Show is not one of the 23 genres
    assert genres[0, MMIMDB_GENRES.index("Family")] == 1
    assert ds.spec("image").shape == (3, 4, 4) and ds.spec("text").shape == (16,)
    with pytest.raises(MlmmError, match=r"0000005\.jpeg could not be decoded"):
        load_mmimdb(tmp_path, split="train", bad_images="error")


def test_a_listed_movie_without_metadata_is_an_error(tmp_path):
    pytest.importorskip("PIL")
    _write_raw(tmp_path)
    (tmp_path / "dataset" / "0000003.json").unlink()
    with pytest.raises(MlmmError, match=r"0000003\.json is missing; split\.json lists the movie"):
        load_mmimdb(tmp_path, split="dev")


def test_the_genres_train_a_multilabel_model_end_to_end(tmp_path):
    from mlmm import Trainer, create_method
    from mlmm.eval import evaluate

    _write(tmp_path)
    train, test = load_mmimdb(tmp_path, split="train"), load_mmimdb(tmp_path, split="test")
    model = create_method("hemis", train.specs, train.task, embed_dim=8, hidden=16)
    trained = Trainer(max_epochs=3, batch_size=4, seed=0, progress=False).fit(model, train)
    assert trained.predict(test).shape == (2, 23)
    assert set(np.unique(trained.predict(test))) <= {0, 1}
    table = evaluate(trained, test, "none", subsets=False, patterns=False)
    metrics = set(table.metric)
    assert {"micro_f1", "macro_f1", "samples_f1", "macro_auroc", "auroc[Drama]"} <= metrics
    # Drama is on in one of the two test movies, so its AUROC is defined; Western never is
    auroc = table.set_index("metric").value
    assert 0 <= auroc["auroc[Drama]"] <= 1 and np.isnan(auroc["auroc[Western]"])


def test_overlapping_split_rows_in_the_fuel_table_are_refused(tmp_path):
    # dev rows 2-5 overlapping train rows 0-3 loaded silently before: movies in two splits
    _write(tmp_path)
    with h5py.File(tmp_path / "multimodal_imdb.hdf5", "a") as f:
        table = f.attrs["split"]
        table["start"][table["split"] == b"dev"] = 2
        f.attrs["split"] = table
    with pytest.raises(
        MlmmError, match=r"train rows \(0, 4\) and dev rows \(2, 6\), which overlap"
    ):
        load_mmimdb(tmp_path, split="test")


def test_numeric_imdb_ids_get_their_leading_zeros_back(tmp_path):
    _write(tmp_path, imdb_ids=np.arange(N, dtype=np.int64) + 120)
    ds = load_mmimdb(tmp_path, split="train")
    assert ds.meta["imdb_ids"].tolist()[:2] == ["0000120", "0000121"]


def test_a_genre_table_of_another_width_names_the_file(tmp_path):
    _write(tmp_path, genres=np.zeros((N, 20), np.int32))
    with pytest.raises(MlmmError, match=r"multimodal_imdb\.hdf5: 'genres' has 20 columns but 23"):
        load_mmimdb(tmp_path)


def test_a_raw_split_listing_a_movie_twice_or_not_a_list_is_one_line(tmp_path):
    pytest.importorskip("PIL")
    _write_raw(tmp_path)
    split_path = tmp_path / "split.json"
    split = json.loads(split_path.read_text())
    split["test"].append("0000001")  # a training movie also in test
    split_path.write_text(json.dumps(split))
    with pytest.raises(MlmmError, match="lists '0000001' in both 'train' and 'test'"):
        load_mmimdb(tmp_path, split="dev", image_size=4)
    split["test"] = [4]  # a number for "0000004": the file is 0000004.json
    split_path.write_text(json.dumps(split))
    assert load_mmimdb(tmp_path, split="test", image_size=4).meta["imdb_ids"].tolist() == [
        "0000004"
    ]
    split["dev"] = 3  # not a list: a TypeError before
    split_path.write_text(json.dumps(split))
    with pytest.raises(MlmmError, match="'dev' should be a list of 7-digit id strings, got int"):
        load_mmimdb(tmp_path, image_size=4)


@pytest.mark.parametrize("table", ["train 0 4", np.zeros((3, 3))])
def test_a_split_attribute_that_is_not_fuels_table_is_one_line(tmp_path, table):
    _write(tmp_path)
    with h5py.File(tmp_path / "multimodal_imdb.hdf5", "a") as f:
        f.attrs["split"] = table  # a TypeError or IndexError before
    with pytest.raises(MlmmError, match="expected Fuel's split table") as err:
        load_mmimdb(tmp_path)
    assert "multimodal_imdb.hdf5" in str(err.value)


def test_non_finite_features_name_the_file_and_dataset(tmp_path):
    features = np.ones((N, 300), np.float32)
    features[6, 3] = np.nan
    _write(tmp_path, features=features)
    with pytest.raises(MlmmError, match=r"hdf5: dataset 'features' holds NaN or inf in 1 row"):
        load_mmimdb(tmp_path, split="test")
    assert load_mmimdb(tmp_path, split="train").n_samples == 4  # other rows are not read


def test_an_empty_split_in_the_fuel_table_overlaps_nothing_and_loads_as_one_line(tmp_path):
    # dev written as rows (2, 2), inside train's (0, 4): refused as an overlap, and loading it
    # alone raised a ValueError from reshape, before
    _write(tmp_path)
    with h5py.File(tmp_path / "multimodal_imdb.hdf5", "a") as f:
        table = f.attrs["split"]
        dev = table["split"] == b"dev"
        table["start"][dev], table["stop"][dev] = 2, 2
        table["start"][table["split"] == b"test"] = 4
        f.attrs["split"] = table
    ds = load_mmimdb(tmp_path)
    assert ds.n_samples == N and "dev" not in ds.meta["official_split"].tolist()
    with pytest.raises(MlmmError, match=r"hdf5: the 'split' attribute gives split 'dev' no rows"):
        load_mmimdb(tmp_path, split="dev")


@pytest.mark.parametrize("movie", ["../outside", "/tmp/outside", "..", ""])
def test_a_raw_split_id_that_leaves_the_root_is_refused(tmp_path, movie):
    # the id names <id>.json and <id>.jpeg under the root: '../outside' read a file beside it
    pytest.importorskip("PIL")
    _write_raw(tmp_path / "root")
    (tmp_path / "outside.json").write_text(json.dumps({"plot": ["x"], "genres": ["Drama"]}))
    split_path = tmp_path / "root" / "split.json"
    split = json.loads(split_path.read_text())
    split["test"].append(movie)
    split_path.write_text(json.dumps(split))
    with pytest.raises(MlmmError, match=rf"'test' lists id '{movie}', which is not a plain") as e:
        load_mmimdb(tmp_path / "root", image_size=4)
    assert "split.json" in str(e.value) and "\n" not in str(e.value)
