"""The main job's --quick mode end to end (pipeline and outputs, not the scores), and the CLI on real clips."""

import json
import subprocess
import sys

import numpy as np
import pytest
from huggingface_hub import ModelCard

import sslam.demo_data as demo_data
from sslam.cli.demo import ENCODERS, PROBE_TASKS

REPO = demo_data.DEMO_DIR.parent


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("demo")
    completed = subprocess.run(
        [sys.executable, "-m", "sslam.cli.main", "demo", "--quick", "--output_dir", str(output_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return output_dir, completed.stdout


def test_quick_demo_writes_results_for_every_encoder(quick_run):
    output_dir, stdout = quick_run
    results = json.loads((output_dir / "results.json").read_text())
    expected_columns = {f"{set_name}_{kind}" for set_name, kind, _ in PROBE_TASKS}

    assert set(results["scores"]) == {*ENCODERS, "logmel_baseline"}
    for scores in results["scores"].values():
        assert set(scores) == expected_columns
        assert all(0.0 <= value <= 1.0 for value in scores.values())
    assert set(results["chance"]) == expected_columns
    for sizes in results["split_sizes"].values():
        assert sizes["train"] > 0 and sizes["test"] > 0
    assert {"stage1", "sslam", "control_mbua", "linear_probes", "total"} <= set(results["wall_seconds"])
    assert results["seeds"]["pretraining"] == results["settings"]["seed"]
    assert "| sslam |" in stdout and "| sslam |" in (output_dir / "results.md").read_text()


def test_quick_demo_plots_and_loss_terms(quick_run):
    output_dir, _ = quick_run
    for name in ("loss_curves.png", "scores.png"):
        assert (output_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((output_dir / "sslam" / "trainer_state.json").read_text())["log_history"]
    logged = {key for entry in history for key in entry}
    assert {"loss_eat_patch_loss", "loss_mix_patch_loss", "loss_eat_cls_loss"} <= logged


def test_quick_demo_saves_loadable_encoders_with_cards(quick_run):
    import sslam.modeling_sslam  # noqa: F401
    from transformers import AutoFeatureExtractor, AutoModel

    output_dir, _ = quick_run
    results = json.loads((output_dir / "results.json").read_text())
    for name in ENCODERS:
        folder = output_dir / "encoders" / name
        model = AutoModel.from_pretrained(folder).eval()
        extractor = AutoFeatureExtractor.from_pretrained(folder)
        assert extractor.max_length == results["settings"]["max_length"]
        card = ModelCard.load(folder / "README.md")
        reported = {round(result.metric_value, 2) for result in card.data.eval_results}
        assert {round(100 * value, 2) for value in results["scores"][name].values()} == reported
        assert model.config.hidden_size == results["settings"]["hidden_size"]


def test_cli_embed_and_classify_on_bundled_clip(quick_run, tmp_path):
    output_dir, _ = quick_run
    encoder = output_dir / "encoders" / "sslam"
    clip = str(demo_data.EXAMPLE_CLIP)
    target = tmp_path / "emb.npy"

    completed = subprocess.run(
        [sys.executable, "-m", "sslam.cli.main", "embed", clip, "--model", str(encoder), "--output", str(target)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    embedding = np.load(target)
    assert embedding.shape == (json.loads((encoder / "config.json").read_text())["hidden_size"],)
    assert np.isfinite(embedding).all()


# ----------------------------------------------------------------------------------------- detection stage


def test_quick_demo_detection_stage(quick_run):
    from sslam.cli.demo_detection import TABLE_COLUMNS

    output_dir, stdout = quick_run
    results = json.loads((output_dir / "results.json").read_text())
    detection = results["detection"]
    assert set(detection["scores"]) == {*ENCODERS, "logmel_baseline"}
    for scores in detection["scores"].values():
        assert all(0.0 <= scores[key] <= 1.0 for key, _ in TABLE_COLUMNS)
    sizes = detection["split_sizes"]
    assert sizes["fit"] + sizes["validation"] == results["settings"]["detection_train_limit"]
    assert sizes["test"] == results["settings"]["detection_test_limit"]
    assert results["wall_seconds"]["detection"] == detection["wall_seconds"] > 0
    assert "frame mAP" in stdout and "PSDS1" in stdout
    assert "Sound event detection" in (output_dir / "results.md").read_text()
    assert (output_dir / "detection_piano_roll.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def run_detect(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "sslam.cli.main", "detect", *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )


def test_sslam_detect_on_a_bundled_soundscape_is_scored_by_the_metrics(quick_run, tmp_path):
    """`sslam detect` with a frame model the main job trained writes a DCASE TSV; its events are scored by the
    sed_eval metrics, and equal (with the scores) what the library computes in-process."""
    from transformers import AutoFeatureExtractor, AutoModelForAudioFrameClassification

    import sslam.modeling_sslam  # noqa: F401
    from sslam.evaluation.detection import decode_events, frame_probabilities
    from sslam.evaluation.sed_metrics import event_based_f1, segment_based_f1
    from sslam.evaluation.strong_labels import read_dcase_tsv
    from sslam.modeling_sslam.audio_io import load_audio

    output_dir, _ = quick_run
    model_dir = output_dir / "detection" / "sslam"
    target = tmp_path / "events.tsv"
    completed = run_detect(demo_data.EXAMPLE_SOUNDSCAPE, "--model", model_dir, "--output", target)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert target.read_text().splitlines()[0] == "filename\tonset\toffset\tevent_label\tscore"
    estimated = read_dcase_tsv(target)
    reference = read_dcase_tsv(demo_data.EXAMPLE_SOUNDSCAPE_TSV)
    assert set(estimated) == set(reference) == {"example.flac"}

    model = AutoModelForAudioFrameClassification.from_pretrained(model_dir).eval()
    extractor = AutoFeatureExtractor.from_pretrained(model_dir)
    waveform = load_audio(demo_data.EXAMPLE_SOUNDSCAPE, target_sampling_rate=16000)
    probabilities = frame_probabilities(model, extractor, waveform, sampling_rate=16000)[0]
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    in_process = decode_events(probabilities, 0.16, labels, model.config.detection_thresholds,
                               model.config.detection_median_filter, len(waveform) / 16000)
    assert [(e.onset, e.offset, e.label) for e in estimated["example.flac"]] == [
        (round(e.onset, 3), round(e.offset, 3), e.label) for e in in_process]

    durations = {"example.flac": 10.0}
    for metric, extra in ((event_based_f1, ()), (segment_based_f1, (durations,))):
        scores = metric(reference, estimated, labels, *extra)
        assert scores == metric(reference, {"example.flac": in_process}, labels, *extra)
        assert all(0.0 <= value <= 1.0 for value in scores.values() if not np.isnan(value))
        assert metric(reference, reference, labels, *extra)["f1_micro"] == 1.0  # the reference scores itself 1
    silent = tmp_path / "silent.tsv"
    assert run_detect(demo_data.EXAMPLE_SOUNDSCAPE, "--model", model_dir, "--threshold", 0.999999,
                      "--output", silent).returncode == 0
    assert read_dcase_tsv(silent) == {"example.flac": []}
    assert event_based_f1(reference, read_dcase_tsv(silent), labels)["f1_micro"] == 0.0


def test_sslam_detect_long_audio_shows_progress_and_usage_errors(quick_run, tmp_path):
    import soundfile as sf

    from sslam.evaluation.strong_labels import read_dcase_tsv

    output_dir, _ = quick_run
    model_dir = output_dir / "detection" / "sslam"
    soundscape = demo_data.read_clip("soundscapes", "example.flac")
    long_file = tmp_path / "long.wav"
    sf.write(long_file, np.tile(soundscape, 7), 16000)  # 70 s
    completed = run_detect(long_file, "--model", model_dir, "--output", tmp_path / "long.tsv")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "windows" in completed.stderr and "100%" in completed.stderr
    assert all(e.offset <= 70.0 for e in read_dcase_tsv(tmp_path / "long.tsv")["long.wav"])
    bad = run_detect(long_file, "--model", model_dir, "--threshold", 1.5)
    assert bad.returncode == 2 and "--threshold" in bad.stderr
    encoder = run_detect(long_file, "--model", output_dir / "encoders" / "sslam")
    assert encoder.returncode == 2 and "holds no frame classifier" in encoder.stderr  # a usage error, as classify
