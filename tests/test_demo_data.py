"""Checks of the committed demo data (demo_data/) and its loader API (demo_data/loader.py)."""

from collections import Counter

import numpy as np
import pytest

from sslam.demo_data import loader
from sslam.demo_data.loader import (
    DEMO_DIR,
    EXAMPLE_CLIP,
    SAMPLE_RATE,
    class_names,
    load_labelled_dataset,
    load_mixture_dataset,
    load_pretrain_files,
    materialize_mixture,
    read_manifest,
    read_mixture_recipes,
    verify_manifest,
)

EVENT_COUNTS = {
    "arrow_impact": 70,
    "sling_impact": 36,
    "shield_impact": 31,
    "melee_swing": 45,
    "sword_clash": 27,
    "ranged_shot": 45,
    "footsteps": 44,
    "human_death": 81,
    "animal": 46,
    "mining": 49,
    "woodcutting": 26,
    "field_gathering": 24,
    "construction": 30,
    "speech_greek": 36,
    "speech_latin": 33,
    "speech_persian": 48,
    "speech_napatan": 64,
}
INSTRUMENT_CLASSES = {
    "piano", "chromatic_percussion", "organ", "guitar", "bass", "strings",
    "brass", "reed", "pipe", "ethnic", "percussive", "drums",
}  # fmt: skip
MANIFEST_COLUMNS = {"id", "path", "split", "num_samples", "source_package", "upstream_path", "licence", "pcm_sha256"}


@pytest.mark.parametrize("set_name", ["pretrain", "events", "instruments"])
def test_manifest_matches_files_on_disk(set_name):
    rows = read_manifest(set_name)
    assert MANIFEST_COLUMNS <= set(rows[0])
    assert len({row["id"] for row in rows}) == len(rows)
    on_disk = {p.relative_to(DEMO_DIR / set_name).as_posix() for p in (DEMO_DIR / set_name / "audio").rglob("*.*")}
    assert on_disk == {row["path"] for row in rows}
    assert (DEMO_DIR / set_name / "ATTRIBUTION.md").is_file()


def test_committed_data_fits_the_size_budget():
    folders = ("pretrain", "events", "instruments", "mixtures", "LICENSES")
    total = sum(p.stat().st_size for folder in folders for p in (DEMO_DIR / folder).rglob("*") if p.is_file())
    assert total <= 40 * 1024 * 1024


def test_event_classes_and_counts():
    assert Counter(row["label"] for row in read_manifest("events")) == EVENT_COUNTS
    assert class_names("events") == sorted(EVENT_COUNTS)


def test_event_split_is_grouped_and_stratified():
    rows = read_manifest("events")
    sides = {}
    for row in rows:
        sides.setdefault(row["group"], set()).add(row["split"])
    assert all(len(split) == 1 for split in sides.values()), "a take group is on both sides of the split"
    for label, count in EVENT_COUNTS.items():
        tests = sum(row["split"] == "test" for row in rows if row["label"] == label)
        assert 0.15 <= tests / count <= 0.25, label
    swordhit = {row["split"] for row in rows if row["group"] == "attack/weapon/swordhit_12"}
    assert len(swordhit) == 1 and len([r for r in rows if r["group"] == "attack/weapon/swordhit_12"]) == 3


def test_instrument_split_holds_out_pitches():
    rows = read_manifest("instruments")
    assert set(class_names("instruments")) == INSTRUMENT_CLASSES
    assert Counter(row["label"] for row in rows) == {label: 40 for label in INSTRUMENT_CLASSES}
    for row in rows:
        assert row["split"] == ("test" if int(row["key"]) % 5 == 0 else "train")
        assert int(row["num_samples"]) == 3 * SAMPLE_RATE
    assert Counter(row["label"] for row in rows if row["split"] == "test") == {label: 8 for label in INSTRUMENT_CLASSES}


def test_pretrain_chunks_are_bounded_and_exclude_event_files():
    rows = read_manifest("pretrain")
    lengths = np.array([int(row["num_samples"]) for row in rows])
    assert lengths.min() >= SAMPLE_RATE and lengths.max() <= 10 * SAMPLE_RATE
    assert 30 <= lengths.sum() / SAMPLE_RATE / 60 <= 45
    zero_ad = [row["upstream_path"].split(":")[1] for row in rows if row["source_package"] == "0ad-data"]
    assert zero_ad and all(path.startswith(("audio/ambient/", "audio/music/")) for path in zero_ad)
    assert len(load_pretrain_files()) == len(rows)


@pytest.mark.parametrize("set_name", ["pretrain", "events", "instruments"])
def test_decoded_pcm_hashes_match_for_a_sample(set_name):
    sample = [row["id"] for row in read_manifest(set_name)[::40]]
    assert verify_manifest(set_name, sample) == []


def test_verify_manifest_detects_a_changed_hash(monkeypatch):
    row = read_manifest("events")[0]
    monkeypatch.setattr(loader, "pcm_sha256", lambda pcm: "0" * 64)
    assert verify_manifest("events", [row["id"]]) == [row["id"]]


@pytest.mark.parametrize("set_name", ["events", "instruments"])
def test_mixtures_use_clips_of_their_own_split_only(set_name):
    rows = read_manifest(set_name)
    split_of = {row["id"]: row["split"] for row in rows}
    label_of = {row["id"]: row["label"] for row in rows}
    for split, expected in (("train", 600), ("test", 200)):
        recipes = read_mixture_recipes(set_name, split)
        assert len(recipes) == expected
        for recipe in recipes:
            clips = [component["clip"] for component in recipe["components"]]
            assert {split_of[clip] for clip in clips} == {split}
            assert sorted(label_of[clip] for clip in clips) == recipe["labels"]
            assert len(set(recipe["labels"])) == len(clips) in (2, 3)
            assert all(-6 <= component["gain_db"] <= 6 for component in recipe["components"])
            assert all(0 <= component["onset"] < recipe["num_samples"] for component in recipe["components"])


def test_mixture_materialisation_is_deterministic():
    recipe = read_mixture_recipes("events", "test")[0]
    rows = {row["id"]: row for row in read_manifest("events", "test")}
    clips = {c["clip"]: loader.read_clip("events", rows[c["clip"]]["path"]) for c in recipe["components"]}
    first = materialize_mixture(recipe, clips)
    second = materialize_mixture(recipe, dict(reversed(list(clips.items()))))
    assert first.dtype == np.float32 and first.shape == (3 * SAMPLE_RATE,)
    assert np.array_equal(first, second)
    assert np.isclose(np.abs(first).max(), 0.7)


def test_mixture_dataset_has_the_labelled_audio_schema():
    from sslam.evaluation.datasets_io import label_targets

    mixtures = load_mixture_dataset("instruments", "test")
    names = class_names("instruments")
    assert mixtures.num_rows == 200 and mixtures.features["labels"].feature.names == names
    targets = label_targets(mixtures)
    assert targets.shape == (200, len(names)) and set(targets.sum(axis=1)) <= {2.0, 3.0}
    recipes = read_mixture_recipes("instruments", "test")
    assert [names[i] for i in mixtures[0]["labels"]] == sorted(recipes[0]["labels"])
    waveforms = np.stack([np.asarray(audio["array"]) for audio in mixtures["audio"]])
    assert waveforms.shape == (200, 3 * SAMPLE_RATE) and np.allclose(np.abs(waveforms).max(axis=1), 0.7)
    assert {audio["sampling_rate"] for audio in mixtures["audio"]} == {SAMPLE_RATE}


def test_labelled_dataset_gives_float_waveforms_and_known_labels():
    clips = load_labelled_dataset("events", "test")
    assert len(clips) == sum(row["split"] == "test" for row in read_manifest("events"))
    waveform = np.asarray(clips[0]["audio"]["array"], dtype=np.float32)
    assert waveform.ndim == 1 and np.abs(waveform).max() <= 1.0
    assert clips.features["label"].int2str(clips[0]["label"]) in EVENT_COUNTS


def test_example_clip_is_ten_seconds_of_real_audio():
    waveform = loader.pcm_to_float(loader.read_pcm(EXAMPLE_CLIP))
    assert len(waveform) == 10 * SAMPLE_RATE and np.sqrt(np.mean(waveform**2)) > 0.01


def test_load_labelled_dataset_has_class_label_feature():
    dataset = loader.load_labelled_dataset("instruments", "test")
    assert dataset.num_rows == 96 and dataset.features["label"].names == class_names("instruments")
    assert len(dataset[0]["audio"]["array"]) == 3 * SAMPLE_RATE and dataset[0]["audio"]["sampling_rate"] == SAMPLE_RATE
    assert dataset[0]["id"] == read_manifest("instruments", "test")[0]["id"]
