"""The `sslam` command line (`python -m sslam.cli.main`): classify and embed the original repo's reference clips.

The fine-tuned fixture checkpoint is converted once (with the AudioSet display names of `labels.csv`); the CLI's scores
and embeddings are checked against the same model run in-process on the same clips.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

import sslam.modeling_sslam  # noqa: F401  (registers the Auto classes)
from sslam.cli.main import main as sslam_main
from sslam.modeling_sslam.audio_io import load_audio
from sslam.modeling_sslam.embedding import extract_embeddings, window_starts


REPO_ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
SCORE_TOLERANCE = 1e-5
TABLE_DECIMALS = 4  # `sslam classify` prints scores as `  0.1234  label`
TABLE_LINE = re.compile(r"^  (\d\.\d{4})  (.+)$")


def run_cli(*args, module: str = "cli.main") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def sslam(*args) -> subprocess.CompletedProcess:
    result = run_cli(*args)
    assert result.returncode == 0, f"sslam {' '.join(map(str, args))} failed:\n{result.stderr}"
    return result


def sslam_side_by_side(*commands: list) -> None:
    """Runs several `sslam` commands at once (each start-up imports torch and transformers) and checks they pass."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "sslam.cli.main", *map(str, args)],
            cwd=REPO_ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for args in commands
    ]
    for args, process in zip(commands, processes):
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, f"sslam {' '.join(map(str, args))} failed:\n{stderr}"


@pytest.fixture(scope="module")
def model_dir(fixtures_dir, finetuned_labels_csv, tmp_path_factory) -> Path:
    """The fine-tuned fixture checkpoint converted with the AudioSet display names."""
    folder = tmp_path_factory.mktemp("cli") / "finetuned"
    result = run_cli(
        "--checkpoint_path", fixtures_dir / "checkpoints" / "sslam_finetuned_tiny.pt",
        "--pytorch_dump_folder_path", folder, "--labels_csv", finetuned_labels_csv,
        module="conversion.convert_fairseq_checkpoint",
    )  # fmt: skip
    assert result.returncode == 0, f"conversion failed:\n{result.stderr}"
    return folder


@pytest.fixture(scope="module")
def clips(reference_data_dir) -> list[Path]:
    paths = sorted(reference_data_dir.glob("*.wav"))
    assert paths, f"no .wav clips in {reference_data_dir}"
    return paths


@pytest.fixture(scope="module")
def classifier(model_dir):
    model = AutoModelForAudioClassification.from_pretrained(model_dir).eval()
    return model, AutoFeatureExtractor.from_pretrained(model_dir)


def waveform_of(clip: Path, extractor) -> np.ndarray:
    return load_audio(clip, target_sampling_rate=extractor.sampling_rate)


@torch.no_grad()
def expected_top_k(classifier, clip: Path, k: int) -> list[tuple[str, float]]:
    """Top-k (label, sigmoid score) of the model run in-process on the clip."""
    model, extractor = classifier
    features = extractor(waveform_of(clip, extractor), sampling_rate=extractor.sampling_rate, return_tensors="pt")
    scores = torch.sigmoid(model(**features).logits[0])
    top = torch.topk(scores, k)
    return [(model.config.id2label[int(index)], float(score)) for score, index in zip(top.values, top.indices)]


# ---------------------------------------------------------------------------------------------------------- classify


def test_classify_prints_top_k_display_names_and_sigmoid_scores(model_dir, clips, classifier, finetuned_label_rows):
    k = 3
    lines = sslam("classify", *clips, "--model", model_dir, "--top-k", k).stdout.splitlines()
    display_names = {row[2] for row in finetuned_label_rows}
    assert len(lines) == len(clips) * (k + 1), lines
    for index, clip in enumerate(clips):
        header, *rows = lines[index * (k + 1) : (index + 1) * (k + 1)]
        assert header == str(clip)
        printed = [TABLE_LINE.match(row) for row in rows]
        assert all(printed), rows
        expected = expected_top_k(classifier, clip, k)
        assert [match.group(2) for match in printed] == [label for label, _ in expected]
        assert {label for label, _ in expected} <= display_names
        for match, (_, score) in zip(printed, expected):
            assert float(match.group(1)) == pytest.approx(score, abs=0.5 * 10**-TABLE_DECIMALS + SCORE_TOLERANCE)


def test_classify_json_scores_equal_the_model_in_process(model_dir, clips, classifier):
    lines = sslam("classify", *clips, "--model", model_dir, "--json").stdout.splitlines()
    assert len(lines) == len(clips)
    for line, clip in zip(lines, clips):
        record = json.loads(line)
        expected = expected_top_k(classifier, clip, len(record["labels"]))
        assert record["file"] == str(clip) and len(record["labels"]) == 5  # the default --top-k
        assert [item["label"] for item in record["labels"]] == [label for label, _ in expected]
        np.testing.assert_allclose(
            [item["score"] for item in record["labels"]], [score for _, score in expected], rtol=0, atol=SCORE_TOLERANCE
        )


def test_classify_refuses_an_encoder_folder(model_dir, clips, tmp_path, capsys):
    config = json.loads((model_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architectures": ["SSLAMModel"]}))
    with pytest.raises(SystemExit) as exit_info:  # in-process: the error paths need no fresh interpreter
        sslam_main(["classify", str(clips[0]), "--model", str(tmp_path)])
    assert exit_info.value.code == 2 and "holds no classifier" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------- embed


def test_embed_cls_and_frames_write_one_npy_per_clip(model_dir, clips, classifier, tmp_path):
    model, extractor = classifier
    sslam_side_by_side(
        ["embed", *clips, "--model", model_dir, "--pooling", "cls", "--output-dir", tmp_path],
        ["embed", *clips, "--model", model_dir, "--pooling", "frames", "--output-dir", tmp_path],
    )
    hidden_size, patch_size = model.config.hidden_size, model.config.patch_size
    num_patches = (extractor.max_length // patch_size) * (extractor.num_mel_bins // patch_size)  # 512 for 10 s
    for clip in clips:
        cls = np.load(tmp_path / f"{clip.stem}.cls.npy")
        assert cls.shape == (hidden_size,)
        waveform = waveform_of(clip, extractor)
        expected = extract_embeddings(model.sslam, extractor, waveform, extractor.sampling_rate, pooling="cls")[0]
        np.testing.assert_allclose(cls, expected, rtol=0, atol=SCORE_TOLERANCE)
        assert np.load(tmp_path / f"{clip.stem}.frames.npy").shape == (num_patches, hidden_size)


def test_embed_to_one_safetensors_file(model_dir, clips, classifier, tmp_path):
    output = tmp_path / "embeddings.safetensors"
    sslam("embed", *clips, "--model", model_dir, "--pooling", "mean", "--output", output)
    arrays = load_file(output)
    assert sorted(arrays) == sorted(clip.stem for clip in clips)
    assert {array.shape for array in arrays.values()} == {(classifier[0].config.hidden_size,)}


def test_embed_in_windows(model_dir, clips, classifier, tmp_path):
    model, extractor = classifier
    window_s, hop_s = 4, 2
    sslam("embed", *clips, "--model", model_dir, "--window", window_s, "--hop", hop_s, "--output-dir", tmp_path)
    rate = extractor.sampling_rate
    for clip in clips:
        num_windows = len(window_starts(len(waveform_of(clip, extractor)), window_s * rate, hop_s * rate))
        assert np.load(tmp_path / f"{clip.stem}.cls.npy").shape == (num_windows, model.config.hidden_size)


def test_embed_time_pooling_writes_frames_times_and_cls(model_dir, clips, classifier, tmp_path):
    from sslam.modeling_sslam.embedding import embed_time_frames

    model, extractor = classifier
    sslam_side_by_side(
        ["embed", clips[0], "--model", model_dir, "--pooling", "time", "--output-dir", tmp_path],
        ["embed", *clips, "--model", model_dir, "--pooling", "time", "--frequency_pooling", "mean",
         "--output", tmp_path / "time.safetensors"],
    )
    stored = np.load(tmp_path / f"{clips[0].stem}.time.npz")
    expected = embed_time_frames(model.sslam, extractor, waveform_of(clips[0], extractor), extractor.sampling_rate)[0]
    np.testing.assert_allclose(stored["frames"], expected.frames, rtol=0, atol=SCORE_TOLERANCE)
    np.testing.assert_array_equal(stored["times"], expected.times)
    assert stored["cls"].shape == (model.config.hidden_size,)
    arrays = load_file(tmp_path / "time.safetensors")
    assert sorted(arrays) == sorted(f"{clip.stem}.{key}" for clip in clips for key in ("frames", "times", "cls"))
    assert arrays[f"{clips[0].stem}.frames"].shape == (len(expected.times), model.config.hidden_size)


def test_embed_time_pooling_needs_a_safetensors_output(model_dir, clips, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sslam_main(["embed", str(clips[0]), "--model", str(model_dir), "--pooling", "time", "--output", "x.npy"])
    assert exit_info.value.code == 2 and ".safetensors" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------------------------- help


def test_sslam_help_runs_as_a_module():
    result = sslam("--help")
    assert "sslam embed" in result.stdout and "sslam classify" in result.stdout


@pytest.mark.parametrize(
    ("command", "example"),
    [
        ([], "sslam classify clip.wav"),
        (["embed"], "sslam embed clip.wav"),
        (["classify"], "sslam classify clip.wav"),
        (["detect"], "sslam detect soundscape.flac --model"),
        (["pretrain"], "python -m sslam.training.pretrain --preset stage1"),
        (["evaluate"], "python -m sslam.evaluation.run linear-probe"),
        (["convert"], "python -m sslam.conversion.convert_fairseq_checkpoint --checkpoint_path"),
        (["convert-hub"], "python -m sslam.conversion.convert_hub_checkpoint --input_dir"),
        (["demo"], "sslam demo --quick"),
    ],
    ids=lambda value: " ".join(value) or "sslam" if isinstance(value, list) else None,
)
def test_every_help_shows_an_example(command, example, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sslam_main([*command, "--help"])
    assert exit_info.value.code in (0, None)
    assert example in capsys.readouterr().out
