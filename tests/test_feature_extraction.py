"""Tests for SSLAMFeatureExtractor and load_audio, checked against the fbank fixtures of the original code."""

import io
import json
import re
import warnings

import numpy as np
import pytest
import soundfile
import torch
from transformers.testing_utils import CaptureLogger

from sslam.modeling_sslam import audio_io, feature_extraction_sslam
from sslam.modeling_sslam.audio_io import load_audio
from sslam.modeling_sslam.feature_extraction_sslam import (
    NORMALIZATION_STATS,
    SSLAMFeatureExtractor,
    is_torchaudio_available,
)


requires_torchaudio = pytest.mark.skipif(not is_torchaudio_available(), reason="needs torchaudio (the reference)")

SAMPLING_RATE = 16000
BACKENDS = [pytest.param("torchaudio", marks=requires_torchaudio), "torch"]
BACKEND_TOLERANCE = 1e-5  # torch re-implementation vs torchaudio, normalised features
# The fixture filter banks were computed in float32, whose rounding (FFT, mel matmul, resampling convolution) depends
# on the CPU's kernels: on the machine that made them the recipe reproduces them bit for bit, on another CPU it does
# not. Each fixture test therefore computes the same recipe in float64 and accepts a float32 result within twice the
# fixture's own float32 rounding error (its distance to the float64 result), plus 1e-6: a genuine recipe difference
# (window, pre-emphasis, mel scale, padding, normalisation) moves the features by orders of magnitude more.
ROUNDING_FACTOR, ROUNDING_FLOOR = 2.0, 1e-6


def read_fixture_clip(fixtures_dir, name):
    """Waveform as the original scripts read it (float64 from soundfile) and its sampling rate."""
    return soundfile.read(fixtures_dir / "audio" / f"input_{name}.wav")


def expected_fbank(fixtures_dir, name):
    return np.load(fixtures_dir / "inputs" / f"fbank_{name}.npy")


def float64_recipe(waveform: np.ndarray, rate: int, frames: int | None, extractor) -> np.ndarray:
    """The original recipe in float64: resample, remove the mean, Kaldi fbank, pad (log-mel domain) or truncate to
    `frames` (None: to a multiple of the patch size), normalise."""
    from torchaudio.compliance import kaldi
    from torchaudio.functional import resample

    audio = torch.from_numpy(np.asarray(waveform, dtype=np.float64))
    if rate != SAMPLING_RATE:
        audio = resample(audio, orig_freq=rate, new_freq=SAMPLING_RATE)
    audio = audio - audio.mean()
    fbank = kaldi.fbank(
        audio[None], htk_compat=True, sample_frequency=SAMPLING_RATE, use_energy=False, window_type="hanning",
        num_mel_bins=extractor.num_mel_bins, dither=0.0, frame_shift=10,
    ).numpy()
    frames = frames or -(-fbank.shape[0] // extractor.patch_size) * extractor.patch_size
    padded = np.full((frames, fbank.shape[1]), extractor.padding_value, dtype=np.float64)
    padded[: min(frames, fbank.shape[0])] = fbank[:frames]
    return (padded - extractor.mean) / (2 * extractor.std)


def fixture_tolerance(fixtures_dir, name, extractor) -> float:
    """Twice the float32 rounding error of the fixture itself (see ROUNDING_FACTOR), plus a floor."""
    waveform, rate = read_fixture_clip(fixtures_dir, name)
    expected = expected_fbank(fixtures_dir, name)
    reference = float64_recipe(waveform, rate, expected.shape[0], extractor)
    return ROUNDING_FACTOR * float(np.abs(expected - reference).max()) + ROUNDING_FLOOR


def noise(num_samples, seed=0, amplitude=0.5):
    return np.random.default_rng(seed).uniform(-amplitude, amplitude, num_samples).astype(np.float32)


def padded_frame_value(extractor):
    return (extractor.padding_value - extractor.mean) / (2 * extractor.std)


def num_frames(extractor, num_samples):
    return 1 + (num_samples - extractor.frame_length) // extractor.frame_shift


# --- parity with the original recipe ---------------------------------------------------------------------------


@requires_torchaudio  # the float64 reference of the recipe uses torchaudio's Kaldi port
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "name, own_length",
    [
        pytest.param("a", False, id="a"),
        pytest.param("b", False, id="b-fixed"),
        pytest.param("b", True, id="b-own-length"),
        pytest.param("ref", False, id="ref-32kHz"),  # resampled with torchaudio
    ],
)
def test_matches_fixture_fbank(fixtures_dir, name, own_length, backend):
    """Every expectation comes from the fixture files: the fixed length is the fixture fbank's length (its clip padded
    or truncated to it); in own-length mode the clip keeps its Kaldi frame count rounded up to the patch size, and
    the frames both cover must agree."""
    waveform, rate = read_fixture_clip(fixtures_dir, name)
    expected = expected_fbank(fixtures_dir, name)
    extractor = SSLAMFeatureExtractor(fbank_backend=backend)
    tolerance = max(fixture_tolerance(fixtures_dir, name, extractor), BACKEND_TOLERANCE if backend == "torch" else 0)
    kwargs = dict(padding="longest") if own_length else dict(padding="max_length", max_length=expected.shape[0])
    output = extractor(waveform, sampling_rate=rate, resample=True, return_attention_mask=True, **kwargs)

    features, mask = output["input_values"][0], output["attention_mask"][0]
    assert features.dtype == np.float32
    num_samples = round(len(waveform) * SAMPLING_RATE / rate)
    real_frames = num_frames(extractor, num_samples)
    if own_length:
        assert features.shape == (-(-real_frames // extractor.patch_size) * extractor.patch_size, expected.shape[1])
    else:
        assert features.shape == expected.shape
    covered = min(real_frames, expected.shape[0])
    assert mask.sum() == covered if not own_length else mask.sum() == real_frames
    np.testing.assert_allclose(features[:covered], expected[:covered], rtol=0, atol=tolerance)
    np.testing.assert_allclose(features[real_frames:], padded_frame_value(extractor), rtol=1e-6)
    if not own_length:
        np.testing.assert_allclose(features, expected, rtol=0, atol=tolerance)


@requires_torchaudio
def test_fixture_tolerance_is_within_float32_rounding(fixtures_dir):
    """The derived bound stays a rounding bound: below 1e-3 in normalised units for every fixture clip (a changed
    recipe step moves features by 1e-2 or more)."""
    extractor = SSLAMFeatureExtractor()
    for name in ("a", "b", "ref"):
        assert fixture_tolerance(fixtures_dir, name, extractor) < 1e-3, name


@requires_torchaudio
def test_torch_backend_matches_torchaudio(fixtures_dir):
    rng = np.random.default_rng(1)
    quiet_tone = 1e-4 * np.sin(np.arange(16000) * 0.3).astype(np.float32)
    clips = [read_fixture_clip(fixtures_dir, name)[0] for name in ("a", "b")]
    clips += [noise(length, seed) for seed, length in enumerate((2800, 16123, 16123, 33333))]
    clips += [quiet_tone, np.zeros(8000, np.float32), rng.normal(0, 0.1, 24000).clip(-1, 1)]
    kwargs = dict(sampling_rate=SAMPLING_RATE, target_length=None, return_tensors="pt")

    reference = SSLAMFeatureExtractor(fbank_backend="torchaudio")(clips, **kwargs)
    vectorised = SSLAMFeatureExtractor(fbank_backend="torch")(clips, **kwargs)

    torch.testing.assert_close(vectorised["attention_mask"], reference["attention_mask"], rtol=0, atol=0)
    torch.testing.assert_close(vectorised["input_values"], reference["input_values"], rtol=0, atol=BACKEND_TOLERANCE)


def test_padding_is_applied_before_normalisation(fixtures_dir):
    """Padded rows are `padding_value` normalised, in the extractor and in every fixture clip that is padded (whichever
    clips of a fixture set are shorter than their fixture length); a clip shorter than the default length is always
    checked on the extractor side."""
    extractor = SSLAMFeatureExtractor()
    for name in ("a", "b", "ref"):
        waveform, rate = read_fixture_clip(fixtures_dir, name)
        expected = expected_fbank(fixtures_dir, name)
        features = extractor(waveform, sampling_rate=rate, resample=True, max_length=expected.shape[0],
                             return_attention_mask=True)  # fmt: skip
        real_frames = features["attention_mask"][0].sum()
        assert real_frames == min(num_frames(extractor, round(len(waveform) * SAMPLING_RATE / rate)), len(expected))
        np.testing.assert_allclose(expected[real_frames:], padded_frame_value(extractor), rtol=1e-6)
        np.testing.assert_allclose(features["input_values"][0, real_frames:], padded_frame_value(extractor), rtol=1e-6)
    short = extractor(noise(16000), sampling_rate=SAMPLING_RATE)["input_values"][0]
    np.testing.assert_allclose(short[num_frames(extractor, 16000) :], padded_frame_value(extractor), rtol=1e-6)


# --- batching, masks, layouts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("target_length", [None, 1024])
def test_batch_equals_single_calls(backend, target_length):
    clips = [noise(16000, 0), noise(8000 + 37, 1), noise(16000, 2), noise(36000, 3)]
    extractor = SSLAMFeatureExtractor(fbank_backend=backend, target_length=target_length)

    batch = extractor(clips, sampling_rate=SAMPLING_RATE)["input_values"]

    for row, clip in zip(batch, clips):
        single = extractor(clip, sampling_rate=SAMPLING_RATE)["input_values"][0]
        np.testing.assert_allclose(row[: len(single)], single, rtol=0, atol=1e-6)
        np.testing.assert_allclose(row[len(single) :], padded_frame_value(extractor), rtol=1e-6)
    if target_length is None:
        longest = max(num_frames(extractor, len(clip)) for clip in clips)
        assert batch.shape[1] == -(-longest // extractor.patch_size) * extractor.patch_size
    else:
        assert batch.shape[1] == target_length


def test_chunks_of_frames_match_one_call(monkeypatch):
    clips = [noise(16000, seed) for seed in range(3)] + [noise(12000, 5)]
    extractor = SSLAMFeatureExtractor(fbank_backend="torch")
    monkeypatch.setattr(feature_extraction_sslam, "FRAMES_PER_CHUNK", 10_000)
    one_call = extractor(clips, sampling_rate=SAMPLING_RATE)["input_values"]

    monkeypatch.setattr(feature_extraction_sslam, "FRAMES_PER_CHUNK", 37)  # chunks that end inside a patch
    chunked = extractor(clips, sampling_rate=SAMPLING_RATE)["input_values"]

    np.testing.assert_allclose(chunked, one_call, rtol=0, atol=1e-6)


@pytest.mark.parametrize("rows", [2, 3, 5, 12])
def test_two_dimensional_array_is_a_batch_of_rows(rows):
    """One rule for every 2-D shape (transformers' convention): one clip per row, a warning when the rows could be
    channels (at most 8), and one averaged clip with average_channels=True."""
    clips = np.stack([noise(16000, seed) for seed in range(rows)])
    extractor = SSLAMFeatureExtractor(target_length=None)

    with CaptureLogger(feature_extraction_sslam.logger) as captured:
        batch = extractor(clips, sampling_rate=SAMPLING_RATE)["input_values"]
    as_list = extractor(list(clips), sampling_rate=SAMPLING_RATE)["input_values"]
    averaged = extractor(clips, sampling_rate=SAMPLING_RATE, average_channels=True)["input_values"]
    mono = extractor(clips.mean(axis=0), sampling_rate=SAMPLING_RATE)["input_values"]

    np.testing.assert_array_equal(batch, as_list)
    assert batch.shape[0] == rows
    assert (f"batch of {rows} clips" in captured.out and "average_channels=True" in captured.out) == (rows <= 8)
    np.testing.assert_allclose(averaged, mono, rtol=0, atol=1e-6)
    assert averaged.shape[0] == 1


@pytest.mark.parametrize("layout", ["(N, 1)", "(1, N)", "[(N, 1)]", "[(1, N)]"])
def test_a_size_one_axis_is_one_mono_clip(layout):
    clip = noise(16000)
    audio = {"(N, 1)": clip[:, None], "(1, N)": clip[None], "[(N, 1)]": [clip[:, None]], "[(1, N)]": [clip[None]]}
    extractor = SSLAMFeatureExtractor(target_length=None)

    output = extractor(audio[layout], sampling_rate=SAMPLING_RATE)["input_values"]

    np.testing.assert_array_equal(output, extractor(clip, sampling_rate=SAMPLING_RATE)["input_values"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_mask_marks_frames_computed_from_audio(backend):
    lengths = (5000, 16000, 3000)
    clips = [noise(length, seed) for seed, length in enumerate(lengths)]
    extractor = SSLAMFeatureExtractor(fbank_backend=backend)

    own_length = extractor(clips, sampling_rate=SAMPLING_RATE, target_length=None)
    truncated = extractor(clips, sampling_rate=SAMPLING_RATE, target_length=32, return_attention_mask=True)

    mask = own_length["attention_mask"]
    assert mask.dtype == np.int32
    assert mask.shape == own_length["input_values"].shape[:2]
    for row, length in zip(mask, lengths):
        real = num_frames(extractor, length)
        assert row[:real].all() and not row[real:].any()
    expected_truncated = [min(num_frames(extractor, length), 32) for length in lengths]
    assert truncated["attention_mask"].sum(axis=1).tolist() == expected_truncated


def test_attention_mask_defaults():
    clip = noise(16000)
    extractor = SSLAMFeatureExtractor()

    assert "attention_mask" not in extractor(clip, sampling_rate=SAMPLING_RATE)
    assert "attention_mask" in extractor(clip, sampling_rate=SAMPLING_RATE, return_attention_mask=True)
    assert "attention_mask" in extractor(clip, sampling_rate=SAMPLING_RATE, target_length=None)
    explicitly_unmasked = extractor(clip, sampling_rate=SAMPLING_RATE, target_length=None, return_attention_mask=False)
    assert "attention_mask" not in explicitly_unmasked
    masked_by_default = SSLAMFeatureExtractor(return_attention_mask=True)
    assert "attention_mask" in masked_by_default(clip, sampling_rate=SAMPLING_RATE)


def test_minimum_length_gives_one_patch():
    extractor = SSLAMFeatureExtractor(target_length=None)

    output = extractor(noise(extractor.min_num_samples), sampling_rate=SAMPLING_RATE)

    assert output["input_values"].shape[1] == extractor.patch_size
    assert output["attention_mask"].all()


def test_short_clip_is_padded_to_a_fixed_target_length():
    extractor = SSLAMFeatureExtractor(target_length=64)
    short = noise(extractor.min_num_samples - 1)

    output = extractor(short, sampling_rate=SAMPLING_RATE, return_attention_mask=True)

    frames = extractor.num_frames(len(short))
    assert output["input_values"].shape == (1, 64, extractor.num_mel_bins)
    assert output["attention_mask"][0].sum() == frames < extractor.patch_size
    padded = (0.0 - extractor.mean) / (2 * extractor.std)
    np.testing.assert_allclose(output["input_values"][0, frames:], padded, rtol=1e-6)


def test_channel_dim_and_tensor_types():
    clips = [noise(16000, 0), noise(12000, 1)]
    extractor = SSLAMFeatureExtractor(target_length=None)

    flat = extractor(clips, sampling_rate=SAMPLING_RATE, return_tensors="pt")
    with_channel = extractor(clips, sampling_rate=SAMPLING_RATE, return_tensors="pt", add_channel_dim=True)
    as_numpy = extractor(clips, sampling_rate=SAMPLING_RATE, return_tensors="np", add_channel_dim=True)

    batch, frames, bins = flat["input_values"].shape
    assert (batch, bins) == (len(clips), extractor.num_mel_bins)
    assert with_channel["input_values"].shape == (batch, 1, frames, bins)
    assert with_channel["input_values"].dtype == torch.float32
    assert with_channel["attention_mask"].dtype == torch.int32
    torch.testing.assert_close(with_channel["input_values"][:, 0], flat["input_values"], rtol=0, atol=0)
    assert isinstance(as_numpy["input_values"], np.ndarray)
    np.testing.assert_array_equal(as_numpy["input_values"], with_channel["input_values"].numpy())


def test_input_types_agree():
    clip = np.random.default_rng(0).uniform(-0.5, 0.5, 16000)  # float64
    extractor = SSLAMFeatureExtractor(target_length=None)
    reference = extractor(clip.astype(np.float32), sampling_rate=SAMPLING_RATE)["input_values"]

    read_only = clip.copy()
    read_only.flags.writeable = False
    variants = (clip, clip.astype(">f8"), read_only, torch.from_numpy(clip), torch.from_numpy(clip).float())
    for variant in (*variants, clip.tolist(), [clip]):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            output = extractor(variant, sampling_rate=SAMPLING_RATE)["input_values"]
        np.testing.assert_array_equal(output, reference)


def test_integer_settings_give_float_features():
    clip = noise(5000)
    with_ints = SSLAMFeatureExtractor(padding_value=0, mean=-4, std=5, target_length=None)
    with_floats = SSLAMFeatureExtractor(padding_value=0.0, mean=-4.0, std=5.0, target_length=None)

    output = with_ints(clip, sampling_rate=SAMPLING_RATE)["input_values"]

    assert output.dtype == np.float32
    np.testing.assert_array_equal(output, with_floats(clip, sampling_rate=SAMPLING_RATE)["input_values"])


@pytest.mark.parametrize("layout", ["list-channels-first", "list-channels-last", "top-level-stereo"])
def test_average_channels(layout):
    left, right = noise(16000, 0), noise(16000, 1)
    stereo = np.stack([left, right])
    audio = {
        "list-channels-first": [stereo],
        "list-channels-last": [stereo.T],
        "top-level-stereo": stereo,
    }[layout]
    extractor = SSLAMFeatureExtractor(target_length=None)

    output = extractor(audio, sampling_rate=SAMPLING_RATE, average_channels=True)["input_values"]
    mono = extractor((left + right) / 2, sampling_rate=SAMPLING_RATE)["input_values"]

    np.testing.assert_allclose(output, mono, rtol=0, atol=1e-6)


# --- serialisation ---------------------------------------------------------------------------------------------


def test_dataset_stats():
    for name, (mean, std) in NORMALIZATION_STATS.items():
        extractor = SSLAMFeatureExtractor.from_dataset_stats(name, target_length=None)
        assert (extractor.mean, extractor.std, extractor.target_length) == (mean, std, None)
    with pytest.raises(ValueError, match="Unknown dataset 'nope'.*esc50"):
        SSLAMFeatureExtractor.from_dataset_stats("nope")


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"dataset": "esc50", "target_length": None, "fbank_backend": "torch", "return_attention_mask": True}],
    ids=["default", "esc50-own-length"],
)
def test_save_and_load_round_trip(tmp_path, kwargs):
    kwargs = dict(kwargs)
    dataset = kwargs.pop("dataset", None)
    extractor = (
        SSLAMFeatureExtractor.from_dataset_stats(dataset, **kwargs) if dataset else SSLAMFeatureExtractor(**kwargs)
    )
    clips = [noise(16000, 0), noise(5000, 1)]

    extractor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    loaded = SSLAMFeatureExtractor.from_pretrained(tmp_path)

    assert "mel_filters" not in saved and "window" not in saved
    assert saved["feature_extractor_type"] == "SSLAMFeatureExtractor"
    assert loaded.to_dict() == extractor.to_dict()
    expected = extractor(clips, sampling_rate=SAMPLING_RATE, return_attention_mask=True)
    actual = loaded(clips, sampling_rate=SAMPLING_RATE, return_attention_mask=True)
    for key in ("input_values", "attention_mask"):
        np.testing.assert_array_equal(actual[key], expected[key])


# --- input validation ------------------------------------------------------------------------------------------

_CLIP = noise(16000)
_NAN_CLIP = _CLIP.copy()
_NAN_CLIP[100] = np.nan
_INF_CLIP = _CLIP.copy()
_INF_CLIP[5] = -np.inf
_STEREO = np.stack([_CLIP, _CLIP])


@pytest.mark.parametrize(
    "audio, kwargs, match",
    [
        (_CLIP, {"sampling_rate": 8000}, r"8000 Hz.*16000 Hz.*resample=True"),
        ((_CLIP * 32767).astype(np.int16), {}, r"integer dtype int16.*\[-1, 1\].*32768"),
        ([(_CLIP * 32767).astype(np.int32)], {}, r"Clip 0 has integer dtype int32"),
        (torch.zeros(16000, dtype=torch.int16), {}, r"integer dtype torch.int16"),
        (_NAN_CLIP, {}, "NaN"),
        ([_CLIP, _INF_CLIP], {}, "Clip 1 contains NaN or infinite"),
        (np.zeros(0, np.float32), {}, "empty"),
        ([], {}, "empty"),
        ([_CLIP, np.zeros(0, np.float32)], {}, "Clip 1 is empty"),
        (_CLIP[:399], {"target_length": None}, r"too short: 399 samples.*at least 400 samples.*one 25 ms frame"),
        (_CLIP[:399], {}, r"too short: 399 samples.*at least 400 samples.*one 25 ms frame"),
        ([_STEREO], {}, r"shape \(2, 16000\).*multi-channel.*average_channels=True"),
        ([_STEREO.T], {}, r"shape \(16000, 2\).*average_channels=True"),
        (_STEREO.T, {}, r"shape \(16000, 2\): multi-channel audio \(2 channels\).*average_channels=True"),
        (np.zeros((2, 3, 16000), np.float32), {}, r"The audio has shape \(2, 3, 16000\); expected 1-D"),
        ([np.zeros((2, 3, 16000), np.float32)], {}, r"shape \(2, 3, 16000\); expected 1-D"),
        (_CLIP > 0, {}, "unsupported dtype bool"),
        (_CLIP.astype(np.complex64), {}, "unsupported dtype complex64"),
        (np.array([_CLIP, _CLIP[:5000]], dtype=object), {}, "unsupported dtype object"),
        (_CLIP, {"target_length": 0}, "target_length must be a positive integer"),
        (_CLIP, {"target_length": 10.5}, "target_length must be a positive integer"),
    ],
    ids=[
        "wrong-rate", "int16", "int32-in-list", "torch-int16", "nan", "inf-in-batch", "empty-array", "empty-list",
        "empty-in-batch", "too-short", "too-short-fixed", "stereo-in-list", "stereo-last-in-list",
        "stereo-channels-last-2d", "3d", "3d-in-list", "bool", "complex", "object", "zero-target", "float-target",
    ],
)  # fmt: skip
def test_invalid_input_raises(audio, kwargs, match):
    extractor = SSLAMFeatureExtractor()
    kwargs = {"sampling_rate": SAMPLING_RATE, **kwargs}
    with pytest.raises(ValueError, match=match):
        extractor(audio, **kwargs)


def test_invalid_constructor_arguments():
    with pytest.raises(ValueError, match="fbank_backend must be one of"):
        SSLAMFeatureExtractor(fbank_backend="librosa")
    with pytest.raises(ValueError, match="target_length"):
        SSLAMFeatureExtractor(target_length=-1)
    with pytest.raises(ValueError, match="std must be positive"):
        SSLAMFeatureExtractor(std=0.0)


def test_works_without_torchaudio(monkeypatch):
    def unavailable(*args, **kwargs):
        raise AssertionError("torchaudio must not be used")

    monkeypatch.setattr(feature_extraction_sslam, "is_torchaudio_available", lambda: False)
    monkeypatch.setattr(feature_extraction_sslam, "torchaudio_fbank", unavailable)
    extractor = SSLAMFeatureExtractor()

    output = extractor([_CLIP, _CLIP[:5000]], sampling_rate=SAMPLING_RATE)

    assert output["input_values"].shape == (2, extractor.max_length, extractor.num_mel_bins)
    with pytest.raises(ImportError, match="torchaudio"):
        SSLAMFeatureExtractor(fbank_backend="torchaudio")
    with pytest.raises(ImportError, match="resample=True needs torchaudio"):
        extractor(_CLIP, sampling_rate=2 * SAMPLING_RATE, resample=True)


def test_missing_sampling_rate_warns():
    extractor = SSLAMFeatureExtractor()
    with CaptureLogger(feature_extraction_sslam.logger) as captured:
        extractor(_CLIP)
    assert "sampling_rate" in captured.out
    with CaptureLogger(feature_extraction_sslam.logger) as captured:
        extractor(_CLIP, sampling_rate=SAMPLING_RATE)
    assert captured.out == ""


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [1e18, 1e30])
def test_finite_audio_that_overflows_the_filter_bank_raises_naming_the_clip(backend, scale):
    extractor = SSLAMFeatureExtractor(fbank_backend=backend)
    with pytest.raises(ValueError, match=r"Clip 1 has samples up to .*e\+\d+ in magnitude, which overflow"):
        extractor([_CLIP, _CLIP * scale], sampling_rate=SAMPLING_RATE)


def test_audio_on_another_scale_is_logged_naming_the_clip():
    extractor = SSLAMFeatureExtractor()
    with CaptureLogger(feature_extraction_sslam.logger) as captured:
        output = extractor([_CLIP, _CLIP * 1000, _CLIP * 32768], sampling_rate=SAMPLING_RATE)["input_values"]
    assert re.search(r"Clip 1 \(peak 50\d\.\d\), Clip 2 \(peak 1\.6\d+e\+04\): samples far outside", captured.out)
    assert "Clip 0" not in captured.out and "32768" in captured.out
    assert np.isfinite(output).all()  # still computed: suspicious, but usable
    with CaptureLogger(feature_extraction_sslam.logger) as captured:
        extractor(_CLIP * 3.5, sampling_rate=SAMPLING_RATE)  # peak 1.75 (decoding overshoot): no warning
    assert captured.out == ""


@pytest.mark.parametrize(
    "audio, match",
    [([_CLIP, _NAN_CLIP], "b.wav contains NaN"), ([_CLIP, _CLIP[:100]], "b.wav is too short"),
     ([_STEREO, _CLIP], r"a.wav has shape \(2, 16000\)")],
)  # fmt: skip
def test_clip_names_name_the_clips_in_errors(audio, match):
    extractor = SSLAMFeatureExtractor()
    with pytest.raises(ValueError, match=match):
        extractor(audio, sampling_rate=SAMPLING_RATE, clip_names=["a.wav", "b.wav"])
    with pytest.raises(ValueError, match="clip_names has 1 name"):
        extractor([_CLIP, _CLIP], sampling_rate=SAMPLING_RATE, clip_names=["a.wav"])


@pytest.mark.parametrize(("field", "value"), [("mean", float("nan")), ("std", float("inf")), ("std", -1.0)])
def test_invalid_normalisation_in_a_saved_config_is_refused_on_load(tmp_path, field, value):
    SSLAMFeatureExtractor().save_pretrained(tmp_path)
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))  # json writes NaN / Infinity
    with pytest.raises(ValueError, match=f"{field} must be"):
        SSLAMFeatureExtractor.from_pretrained(tmp_path)


# --- audio_io --------------------------------------------------------------------------------------------------


def test_load_audio_matches_original_reading(fixtures_dir):
    waveform, _ = read_fixture_clip(fixtures_dir, "a")

    loaded = load_audio(fixtures_dir / "audio" / "input_a.wav")

    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, waveform.astype(np.float32))


@requires_torchaudio
def test_load_audio_resamples_like_the_original(fixtures_dir):
    expected = expected_fbank(fixtures_dir, "ref")
    extractor = SSLAMFeatureExtractor()

    waveform = load_audio(fixtures_dir / "audio" / "input_ref.wav", target_sampling_rate=SAMPLING_RATE)
    features = extractor(waveform, sampling_rate=SAMPLING_RATE, max_length=expected.shape[0])

    tolerance = fixture_tolerance(fixtures_dir, "ref", extractor)
    np.testing.assert_allclose(features["input_values"][0], expected, rtol=0, atol=tolerance)


def test_load_audio_averages_channels(tmp_path):
    left, right = noise(8000, 0), noise(8000, 1)
    path = tmp_path / "stereo.flac"
    soundfile.write(path, np.stack([left, right], axis=1), SAMPLING_RATE, subtype="PCM_24")
    decoded = soundfile.read(path, dtype="float64")[0]

    mono = load_audio(path)

    np.testing.assert_array_equal(mono, decoded.mean(axis=1).astype(np.float32))
    with pytest.raises(ValueError, match=r"stereo\.flac has 2 channels.*average_channels=True"):
        load_audio(path, average_channels=False)


def test_load_audio_reads_bytes_and_file_objects(tmp_path):
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([noise(8000, 0), noise(8000, 1)], axis=1), 8000, subtype="PCM_16")
    from_path = load_audio(path)

    assert from_path.shape == (16000,)  # 1 s at 8 kHz, averaged and resampled
    np.testing.assert_array_equal(load_audio(path.read_bytes()), from_path)
    np.testing.assert_array_equal(load_audio(io.BytesIO(path.read_bytes())), from_path)
    with path.open("rb") as handle:
        np.testing.assert_array_equal(load_audio(handle), from_path)
    with pytest.raises(ValueError, match="Could not decode audio bytes"):
        load_audio(b"\0" * 4096)


def test_to_mono_16k_averages_the_channel_axis_then_resamples():
    stereo = np.stack([noise(8000, 0), noise(8000, 1)])  # (channels, samples)
    expected = audio_io.to_mono_16k(stereo.mean(axis=0), 8000)

    assert expected.dtype == np.float32 and expected.shape == (16000,)
    np.testing.assert_array_equal(audio_io.to_mono_16k(stereo, 8000), expected)
    np.testing.assert_array_equal(audio_io.to_mono_16k(torch.from_numpy(stereo.T.copy()), 8000), expected)
    one_sample = stereo[:, :1]  # (2 channels, 1 sample): the shorter-axis rule would misread it
    assert audio_io.to_mono_16k(one_sample, 16000, channel_axis=0).tolist() == [one_sample.mean(dtype=np.float32)]


def test_load_audio_falls_back_to_torchcodec(tmp_path, monkeypatch):
    path = tmp_path / "clip.m4a"
    path.write_bytes(b"\0" * 64)
    samples = np.stack([noise(8000, 0), noise(8000, 1)], axis=1).astype(np.float64)
    monkeypatch.setattr(audio_io, "_decode_with_torchcodec", lambda _: (samples, SAMPLING_RATE))

    np.testing.assert_array_equal(load_audio(path), samples.mean(axis=1).astype(np.float32))


@pytest.mark.parametrize(
    "content",
    [b"\0" * 4096, b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00"],
    ids=["zero-bytes", "truncated-wav-header"],
)  # not random bytes: FFmpeg (the torchcodec fallback) may find MPEG frames in noise
def test_load_audio_reports_corrupt_files(tmp_path, content):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(content)
    with pytest.raises(ValueError, match=f"Could not decode audio file {re.escape(str(corrupt))}"):
        load_audio(corrupt)


def test_load_audio_reports_missing_files(tmp_path):
    missing = tmp_path / "missing.wav"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_audio(missing)


@pytest.mark.parametrize("source", ["path", "bytes"])
def test_load_audio_warns_about_a_truncated_wav_naming_it(tmp_path, source):
    """The header of a 10 s PCM_16 WAV promises 320 kB; only the first 20 kB are present (a partial download)."""
    full = tmp_path / "full.wav"
    soundfile.write(full, noise(160000), SAMPLING_RATE, subtype="PCM_16")
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(full.read_bytes()[:20000])
    with CaptureLogger(audio_io.logger) as captured:
        waveform = load_audio(truncated if source == "path" else truncated.read_bytes())
    name = f"audio file {truncated}" if source == "path" else "audio bytes"
    assert f"Truncated {name}: its header promises 320000 bytes of audio, the file holds 19956" in captured.out
    assert waveform.shape == (19956 // 2,)  # the audio present
    with CaptureLogger(audio_io.logger) as captured:
        load_audio(full)
    assert captured.out == ""
