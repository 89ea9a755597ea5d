"""Bad input and faults in `sslam embed` / `sslam classify`, run in-process: arguments are checked before any work
(usage errors: one `error:` line, exit status 2), each file is handled on its own (good files are written, every bad
one is reported as `error: FILE: reason`, exit status 1), and audio longer than a clip is classified whole."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from safetensors.numpy import load_file

import sslam.modeling_sslam  # noqa: F401  (registers the Auto classes)
from sslam.cli import inference
from sslam.cli.main import main as sslam_main
from sslam.conversion.convert_fairseq_checkpoint import convert_fairseq_checkpoint
from sslam.modeling_sslam import SSLAMFeatureExtractor, SSLAMForAudioClassification
from sslam.modeling_sslam.embedding import window_starts

RATE = 16000


@pytest.fixture(scope="module")
def model_dir(fixtures_dir, tmp_path_factory) -> Path:
    """The fine-tuned fixture checkpoint, converted in-process (a classifier; `sslam embed` uses its encoder)."""
    folder = tmp_path_factory.mktemp("faults") / "model"
    convert_fairseq_checkpoint(fixtures_dir / "checkpoints" / "sslam_finetuned_tiny.pt", folder)
    return folder


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.3, 0.3, int(seconds * RATE)).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, subtype: str = "FLOAT") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, RATE, subtype=subtype)
    return path


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> dict[str, Path]:
    """A good clip and one file for each kind of bad audio."""
    folder = tmp_path_factory.mktemp("audio")
    nan = noise(2, 1)
    nan[RATE] = np.nan
    return {
        "good": write_wav(folder / "good.flac", noise(2), subtype="PCM_16"),
        "empty": write_wav(folder / "empty.wav", np.zeros(0, np.float32)),
        "10ms": write_wav(folder / "short.wav", noise(0.01)),
        "nan": write_wav(folder / "nan.wav", nan),
        "huge": write_wav(folder / "huge.wav", noise(2) * 1e18),
        "corrupt": _write_bytes(folder / "corrupt.wav", b"\0" * 4096),
    }


def _write_bytes(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


BAD_FILE_MESSAGES = {
    "empty": "is empty",
    "10ms": r"is too short: 160 samples",
    "nan": "contains NaN or infinite values",
    "huge": r"has samples up to \S+e\+17 in magnitude, which overflow the float32 filter bank",
    "corrupt": "Could not decode audio file",
}


def run(capsys, *argv) -> tuple[int, str, str]:
    """`sslam ARGV` in-process: exit status, stdout and stderr (a `sys.exit("error: ...")` message included)."""
    code = 0
    try:
        sslam_main([str(arg) for arg in argv])
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    if isinstance(code, str):
        code, err = 1, err + code + "\n"
    return code or 0, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error:" in line]


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fails the test if the model's weights are loaded: the argument checks must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(inference, "load_model", refuse)


# --------------------------------------------------------------------------------------------- per-file isolation


def test_embed_writes_the_good_file_and_reports_every_bad_one(model_dir, audio, tmp_path, capsys):
    bad = list(BAD_FILE_MESSAGES)
    inputs = [audio["good"], *[audio[name] for name in bad]]
    code, out, err = run(capsys, "embed", *inputs, "--model", model_dir, "--output_dir", tmp_path)
    lines = error_lines(err)
    hidden_size = SSLAMForAudioClassification.from_pretrained(model_dir).config.hidden_size
    assert code == 1 and np.load(tmp_path / "good.cls.npy").shape == (hidden_size,)
    for name in bad:
        matching = [line for line in lines if str(audio[name]) in line]
        assert len(matching) == 1 and re.search(BAD_FILE_MESSAGES[name], matching[0]), (name, lines)
        assert not (tmp_path / f"{audio[name].stem}.cls.npy").exists()
    assert lines[-1] == (
        f"error: {len(bad)} of {len(inputs)} file(s) failed (reported above); embeddings were written for the other 1."
    )


def test_classify_prints_the_good_file_and_reports_every_bad_one(model_dir, audio, capsys):
    inputs = [audio["empty"], audio["good"], audio["nan"]]
    code, out, err = run(capsys, "classify", *inputs, "--model", model_dir, "--top_k", 2)
    assert code == 1
    assert out.splitlines()[0] == str(audio["good"]) and len(out.splitlines()) == 3
    lines = error_lines(err)
    assert re.fullmatch(rf"error: {re.escape(str(audio['empty']))} is empty\.", lines[0])
    assert re.fullmatch(rf"error: {re.escape(str(audio['nan']))} contains NaN or infinite values\.", lines[1])
    assert lines[-1].startswith("error: 2 of 3 file(s) failed")


def test_embed_into_one_file_keeps_the_good_files(model_dir, audio, tmp_path, capsys):
    output = tmp_path / "embeddings.safetensors"
    code, out, err = run(capsys, "embed", audio["good"], audio["empty"], "--model", model_dir, "--output", output)
    assert code == 1 and sorted(load_file(output)) == ["good"]
    assert str(audio["empty"]) in error_lines(err)[0]


def test_audio_on_the_int16_scale_is_embedded_with_a_warning_naming_the_file(model_dir, tmp_path, capsys, caplog):
    loud = write_wav(tmp_path / "loud.wav", noise(2) * 1000)
    code, out, err = run(capsys, "embed", loud, "--model", model_dir, "--output_dir", tmp_path)
    assert code == 0 and (tmp_path / "loud.cls.npy").exists()
    assert re.search(rf"{re.escape(str(loud))} \(peak 3\d\d\.\d\): samples far outside \[-1, 1\]", caplog.text)


# ------------------------------------------------------------------------------------ argument checks before work


def usage_error(capsys, *argv) -> str:
    """Runs a command that must fail with a usage error; returns its error line."""
    code, out, err = run(capsys, *argv)
    assert code == 2, err
    assert out == ""
    return error_lines(err)[-1]


@pytest.mark.parametrize("command", ["embed", "classify"])
def test_missing_inputs_are_named_before_any_work(model_dir, audio, tmp_path, capsys, command, no_model_loading):
    missing = tmp_path / "missing.wav"
    line = usage_error(capsys, command, audio["good"], missing, "--model", model_dir)
    assert line.endswith(f"error: audio file(s) not found: {missing}")


@pytest.mark.parametrize("command", ["embed", "classify"])
def test_a_missing_model_folder_says_folder_not_found(audio, capsys, command):
    line = usage_error(capsys, command, audio["good"], "--model", "/nonexistent")
    assert line.endswith("error: --model /nonexistent: folder not found (a folder saved with save_pretrained or by "
                         "sslam convert)")  # fmt: skip


@pytest.mark.parametrize("window", ["nan", "inf", "0.001", "-3", "200"])
@pytest.mark.parametrize("command", ["embed", "classify"])
def test_invalid_windows_are_refused_before_any_work(model_dir, audio, tmp_path, capsys, command, window,
                                                      no_model_loading):  # fmt: skip
    expected = {
        "nan": "window_seconds must be a positive number of seconds, got nan",
        "inf": "window_seconds must be a positive number of seconds, got inf",
        "0.001": "window_seconds=0.001 is shorter than one patch of 16 frames (0.175 s)",
        "-3": "window_seconds must be a positive number of seconds, got -3.0",
        "200": "window_seconds=200 needs 20000 frames, more than the model's position table covers",
    }[window]
    output = ["--output_dir", tmp_path] if command == "embed" else []
    line = usage_error(capsys, command, audio["good"], "--model", model_dir, "--window", window, *output)
    assert f"error: --window / --hop: {expected}" in line


def test_a_hop_longer_than_the_window_is_refused(model_dir, audio, tmp_path, capsys, no_model_loading):
    options = ["--window", 3, "--hop", 5, "--output_dir", tmp_path]
    line = usage_error(capsys, "embed", audio["good"], "--model", model_dir, *options)
    assert "hop_seconds=5 is longer than window_seconds=3" in line


@pytest.mark.parametrize("device", ["bogus", "cuda:99", pytest.param("cuda", marks=pytest.mark.skipif(
    torch.cuda.is_available(), reason="this machine has a GPU"))])  # fmt: skip
def test_an_unavailable_device_is_a_usage_error(model_dir, audio, tmp_path, capsys, device, no_model_loading):
    options = ["--device", device, "--output_dir", tmp_path]
    line = usage_error(capsys, "embed", audio["good"], "--model", model_dir, *options)
    assert f"error: --device {device}: not available here (" in line


def test_two_inputs_with_one_name_are_refused_instead_of_overwritten(model_dir, tmp_path, capsys, no_model_loading):
    first = write_wav(tmp_path / "a" / "clip.wav", noise(1, 1))
    second = write_wav(tmp_path / "b" / "clip.wav", noise(1, 2))
    line = usage_error(capsys, "embed", first, second, "--model", model_dir, "--output_dir", tmp_path / "out")
    target = tmp_path / "out" / "clip.cls.npy"
    assert f"several inputs would write the same file ({first} and {second} -> {target})" in line
    assert not (tmp_path / "out").exists()
    line = usage_error(capsys, "embed", first, second, "--model", model_dir, "--output", tmp_path / "all.safetensors")
    assert "--output keys files by name, and several inputs are named clip" in line


def read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in: a chmod 555 folder, or /sys when running as root."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except PermissionError:
        return folder
    (folder / "probe").unlink()
    if not Path("/sys").is_dir():
        pytest.skip("no folder is read-only for this user")
    return Path("/sys")


@pytest.mark.parametrize("problem", ["missing-folder", "read-only-folder", "folder-is-a-file"])
def test_outputs_that_cannot_be_written_are_refused_before_any_work(model_dir, audio, tmp_path, capsys, problem,
                                                                     no_model_loading):  # fmt: skip
    if problem == "missing-folder":
        output, expected = tmp_path / "absent" / "emb.npy", f"the folder {tmp_path / 'absent'} does not exist"
    elif problem == "read-only-folder":
        folder = read_only_folder(tmp_path)
        output, expected = folder / "emb.npy", f"cannot write to {folder}"
    else:
        (tmp_path / "file").write_text("")
        output, expected = tmp_path / "file" / "emb.npy", f"the folder {tmp_path / 'file'} does not exist"
    line = usage_error(capsys, "embed", audio["good"], "--model", model_dir, "--output", output)
    assert f"error: --output {output}: {expected}" in line
    if problem == "read-only-folder":
        line = usage_error(capsys, "embed", audio["good"], "--model", model_dir, "--output_dir", output.parent / "sub")
        assert f"cannot write the embeddings: cannot write to {output.parent}" in line


def test_an_output_dir_that_is_a_file_is_refused(model_dir, audio, tmp_path, capsys, no_model_loading):
    (tmp_path / "out").write_text("keep")
    line = usage_error(capsys, "embed", audio["good"], "--model", model_dir, "--output_dir", tmp_path / "out")
    assert f"{tmp_path / 'out'} is an existing file, not a folder" in line


def test_windows_into_one_npy_file_are_refused(model_dir, audio, tmp_path, capsys, no_model_loading):
    other = write_wav(tmp_path / "other.wav", noise(1))
    options = ["--window", 1, "--output", tmp_path / "e.npy"]
    line = usage_error(capsys, "embed", audio["good"], other, "--model", model_dir, *options)
    assert "use a .safetensors --output" in line


def test_an_invalid_config_is_one_line(model_dir, audio, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "preprocessor_config.json", "model.safetensors"):
        (broken / name).write_bytes((model_dir / name).read_bytes())
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "hidden_act": "bogus"}))
    code, out, err = run(capsys, "classify", audio["good"], "--model", broken)
    assert code == 1 and error_lines(err) == [
        f"error: cannot load a model from {broken}: ValueError: hidden_act 'bogus' is not an activation transformers "
        f"knows ({sorted(__import__('transformers').activations.ACT2FN)})."
    ]


# ------------------------------------------------------------------------------------------------ long audio


def test_classify_scores_every_window_of_a_long_file_and_says_so(model_dir, tmp_path, capsys):
    """130 s: 25 windows of the model's 10.255 s clip every 5 s; each label's score is its maximum over them."""
    waveform = noise(130, 3)
    waveform[100 * RATE : 110 * RATE] *= 3  # something happens late in the file
    path = write_wav(tmp_path / "long.wav", waveform)
    code, out, err = run(capsys, "classify", path, "--model", model_dir, "--json", "--top_k", 3)
    assert code == 0
    record = json.loads(out)
    model = SSLAMForAudioClassification.from_pretrained(model_dir).eval()
    extractor = SSLAMFeatureExtractor.from_pretrained(model_dir)
    window = extractor.frame_length + extractor.frame_shift * (extractor.max_length - 1)
    starts = window_starts(len(waveform), window, 5 * RATE)
    with torch.no_grad():
        chunks = [waveform[start : start + window] for start in starts]
        inputs = [extractor(chunk, sampling_rate=RATE, return_tensors="pt") for chunk in chunks]
        per_window = torch.cat([torch.sigmoid(model(**features).logits) for features in inputs])
    expected = per_window.amax(dim=0).topk(3)
    assert record["windows"] == len(starts) == 25
    assert [item["label"] for item in record["labels"]] == [model.config.id2label[int(i)] for i in expected.indices]
    np.testing.assert_allclose([item["score"] for item in record["labels"]], expected.values.numpy(), rtol=0, atol=1e-5)
    assert (
        f"note: {path}: 130.0 s of audio, longer than one clip: scored in 25 windows of 10.26 s every 5.00 s; each "
        "label's score is its maximum over the windows."
    ) in err


def test_classify_of_a_clip_is_one_window(model_dir, audio, capsys):
    code, out, err = run(capsys, "classify", audio["good"], "--model", model_dir, "--json")
    assert code == 0 and json.loads(out)["windows"] == 1 and "note:" not in err


def test_windows_name_the_file_and_the_time_in_errors(model_dir, tmp_path, capsys):
    waveform = noise(40, 4)
    waveform[37 * RATE] = np.nan
    path = write_wav(tmp_path / "long_nan.wav", waveform)
    code, out, err = run(capsys, "embed", path, "--model", model_dir, "--window", 10, "--output_dir", tmp_path)
    assert code == 1
    assert f"error: Window 6 (30.00-40.00 s) of {path} contains NaN or infinite values." in error_lines(err)
