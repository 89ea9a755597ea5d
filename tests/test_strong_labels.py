"""Strong labels: events, DCASE TSV files, frame targets, the strongly labelled datasets layout, and the strong labels
of mixtures and soundscapes, proven from their recipes."""

import numpy as np
import pytest

import sslam.demo_data as demo_data
from sslam.evaluation.datasets_io import (
    build_polyphonic_mixtures,
    dataset_events,
    from_strong_labels,
    from_waveforms,
    load_dcase_tsv_dataset,
)
from sslam.evaluation.mixing import mix_waveforms, source_spans
from sslam.evaluation.strong_labels import (
    Event,
    events_to_frame_targets,
    merge_events,
    read_dcase_tsv,
    write_dcase_tsv,
)

RATE = 16_000


def test_event_rejects_impossible_times():
    for onset, offset in [(1.0, 1.0), (2.0, 1.0), (-0.1, 1.0), (0.0, float("nan"))]:
        with pytest.raises(ValueError, match="onset < offset"):
            Event(onset, offset, "dog")


def test_merge_events_joins_touching_and_overlapping_events_of_a_class():
    events = [Event(3.0, 4.0, "dog"), Event(1.0, 2.0, "dog"), Event(2.0, 2.5, "dog"), Event(1.5, 3.0, "cat")]
    assert merge_events(events) == [Event(1.5, 3.0, "cat"), Event(1.0, 2.5, "dog"), Event(3.0, 4.0, "dog")]


def test_frame_targets_need_half_of_a_row_covered():
    hop = 0.16  # rows [0, .16), [.16, .32), [.32, .48), [.48, .64), [.64, .80)
    events = [
        Event(0.09, 0.35, "dog"),  # row 0 covered 0.07 (< 0.08), row 1 fully, row 2 0.03
        Event(0.50, 0.59, "dog"),  # row 3 covered 0.09 (>= 0.08)
        Event(0.64, 0.70, "cat"),  # row 4 covered 0.06 by one event ...
        Event(0.70, 0.75, "cat"),  # ... and 0.05 by another: merged 0.11 -> active
    ]
    targets = events_to_frame_targets(events, 5, hop, ["dog", "cat"])
    assert targets[:, 0].tolist() == [0, 1, 0, 1, 0]
    assert targets[:, 1].tolist() == [0, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="not among the classes"):
        events_to_frame_targets([Event(0.0, 1.0, "bird")], 5, hop, ["dog", "cat"])


def test_dcase_tsv_round_trip_empty_clips_and_column_order(tmp_path):
    events = {"a.wav": [Event(1.0, 2.5, "dog", 0.9), Event(0.25, 0.75, "cat", 0.5)], "b.wav": []}
    path = write_dcase_tsv(tmp_path / "events.tsv", events, with_scores=True)
    lines = path.read_text().splitlines()
    assert lines[0] == "filename\tonset\toffset\tevent_label\tscore"
    assert lines[1] == "a.wav\t0.250\t0.750\tcat\t0.5000"
    assert lines[3] == "b.wav\t\t\t\t"
    assert read_dcase_tsv(path) == {"a.wav": sorted(events["a.wav"], key=lambda e: e.onset), "b.wav": []}
    baseline = tmp_path / "baseline.tsv"  # the DCASE baseline's prediction column order
    baseline.write_text("event_label\tonset\toffset\tfilename\ndog\t1.0\t2.0\tc.wav\n")
    assert read_dcase_tsv(baseline) == {"c.wav": [Event(1.0, 2.0, "dog")]}


def test_dcase_tsv_reader_names_bad_rows(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("filename\tonset\toffset\tevent_label\na.wav\t1.0\t\tdog\n")
    with pytest.raises(ValueError, match="line 2"):
        read_dcase_tsv(path)
    path.write_text("file\tonset\toffset\n")
    with pytest.raises(ValueError, match="missing"):
        read_dcase_tsv(path)


def test_strong_dataset_from_a_tsv_and_from_memory(tmp_path):
    import soundfile as sf

    for name in ("a.wav", "b.wav"):
        sf.write(tmp_path / name, np.zeros(RATE, dtype=np.float32), RATE)
    write_dcase_tsv(tmp_path / "gt.tsv", {"a.wav": [Event(0.1, 0.4, "dog"), Event(0.2, 0.9, "cat")], "b.wav": []})
    dataset = load_dcase_tsv_dataset(tmp_path / "gt.tsv", tmp_path, label_names=["cat", "dog", "bird"])
    assert dataset["filename"] == ["a.wav", "b.wav"]
    assert dataset["labels"] == [[0, 1], []]
    assert dataset_events(dataset) == [[Event(0.1, 0.4, "dog"), Event(0.2, 0.9, "cat")], []]
    memory = from_strong_labels([np.zeros(RATE), np.zeros(RATE)], [[Event(0.5, 1.0, "bird")], []], ["cat", "dog", "bird"])
    assert memory["labels"] == [[2], []] and dataset_events(memory)[0] == [Event(0.5, 1.0, "bird")]
    with pytest.raises(ValueError, match="not among the class names"):
        load_dcase_tsv_dataset(tmp_path / "gt.tsv", tmp_path, label_names=["cat"])
    with pytest.raises(FileNotFoundError):
        load_dcase_tsv_dataset(tmp_path / "gt.tsv", tmp_path / "elsewhere")


def test_source_spans_start_at_the_onset_and_end_with_the_source_or_the_mixture():
    assert source_spans([0, 100, 900, 1000], [50, 2000, 50, 10], 1000) == [(0, 50), (100, 1000), (900, 950),
                                                                           (1000, 1000)]


def support(source: np.ndarray, onset: int, length: int) -> tuple[int, int]:
    """First and one-past-last sample where `source`, mixed alone from `onset`, is not zero."""
    alone = mix_waveforms([source], [onset], [0.0], length)
    nonzero = np.flatnonzero(alone)
    return int(nonzero[0]), int(nonzero[-1]) + 1


def test_mixture_strong_labels_follow_from_the_recipe():
    rng = np.random.default_rng(0)
    lengths = [4000, 9000, 12000, 6000, 15000, 3000]
    waveforms = [rng.uniform(-1, 1, n).astype(np.float32) + 0.01 for n in lengths]  # no zero samples
    dataset = from_waveforms(waveforms, [0, 1, 2, 0, 1, 2], ["dog", "cat", "bird"])
    mixtures = build_polyphonic_mixtures(dataset, num_sources=(2, 3), num_mixtures=6, duration_s=1.0, seed=3)
    names = ["dog", "cat", "bird"]
    for row, events in zip(mixtures, dataset_events(mixtures)):
        assert [e.label for e in events] == [names[i] for i in row["labels"]]
        for event, index, onset_s in zip(events, row["source_indices"], row["onsets_s"]):
            onset = round(onset_s * RATE)
            start, end = support(waveforms[index], onset, RATE)  # where the source really sounds in the mixture
            assert (round(event.onset * RATE), round(event.offset * RATE)) == (start, end)
            assert end == min(onset + lengths[index], RATE)
    assert any(e.offset == 1.0 for events in dataset_events(mixtures) for e in events)  # some are cut at the end


def test_soundscape_labels_follow_from_their_recipes():
    lengths = {row["id"]: int(row["num_samples"]) for row in demo_data.read_manifest("events")}
    for split in ("train", "test"):
        recipes = demo_data.read_soundscape_recipes(split)
        split_clips = {row["id"] for row in demo_data.read_manifest("events", split)}
        backgrounds = {row["id"]: row["split"] for row in demo_data.read_manifest("soundscapes")}
        for recipe in recipes[:20]:
            assert backgrounds[recipe["background"]["clip"]] == split
            assert {event["clip"] for event in recipe["events"]} <= split_clips  # split made before mixing
            events = demo_data.soundscape_events(recipe)
            assert 1 <= len(events) <= 4 and len({e.label for e in events}) == len(events)
            for event, component in zip(events, recipe["events"]):
                assert event.label == component["label"]
                assert round(event.onset * RATE) == component["onset"]
                assert round(event.offset * RATE) == component["onset"] + lengths[component["clip"]]
                assert event.offset <= recipe["num_samples"] / RATE
    test_backgrounds = {demo_data.read_soundscape_recipes("test")[i]["background"]["clip"] for i in range(100)}
    train_backgrounds = {demo_data.read_soundscape_recipes("train")[i]["background"]["clip"] for i in range(300)}
    assert not test_backgrounds & train_backgrounds


def test_backgrounds_are_recordings_the_pretraining_corpus_does_not_use():
    used = {row["upstream_path"] for row in demo_data.read_manifest("pretrain")}
    rows = demo_data.read_manifest("soundscapes")
    assert rows and not {row["upstream_path"] for row in rows} & used
    by_recording = {}
    for row in rows:
        by_recording.setdefault(row["upstream_path"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in by_recording.values())
    assert demo_data.verify_manifest("soundscapes") == []


def test_example_soundscape_is_the_rendered_recipe_with_its_ground_truth():
    from sslam.demo_data.build import EXAMPLE_MIN_EVENTS

    recipe = next(r for r in demo_data.read_soundscape_recipes("test") if len(r["events"]) >= EXAMPLE_MIN_EVENTS)
    rendered = demo_data.materialize_soundscape(recipe)
    stored = demo_data.read_clip("soundscapes", "example.flac")
    assert np.abs(stored - rendered).max() <= 1.0 / 32768 + 1e-7
    truth = read_dcase_tsv(demo_data.EXAMPLE_SOUNDSCAPE_TSV)["example.flac"]
    assert [(round(e.onset, 3), round(e.offset, 3), e.label) for e in demo_data.soundscape_events(recipe)] == [
        (e.onset, e.offset, e.label) for e in truth
    ]


def test_soundscape_dataset_layout():
    dataset = demo_data.load_soundscape_dataset("test", limit=3)
    assert dataset.column_names == ["audio", "events", "labels", "id"]
    recipes = demo_data.read_soundscape_recipes("test")[:3]
    assert dataset["id"] == [recipe["id"] for recipe in recipes]
    assert dataset_events(dataset) == [demo_data.soundscape_events(recipe) for recipe in recipes]
    assert len(dataset[0]["audio"]["array"]) == 10 * RATE
