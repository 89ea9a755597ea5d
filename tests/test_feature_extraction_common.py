"""The contract of transformers' feature-extraction tests (tests/test_sequence_feature_extraction_common.py,
tests/test_feature_extraction_common.py and the AST extractor's tests of transformers 5.24, which cannot be imported
out of tree) applied to SSLAMFeatureExtractor, and every `__call__` argument and invalid value of ours.
"""

import json

import numpy as np
import pytest
import torch
from transformers import BatchFeature

from sslam.modeling_sslam.feature_extraction_sslam import SSLAMFeatureExtractor, is_torchaudio_available


SAMPLING_RATE = 16000
BATCH, MIN_LENGTH, MAX_LENGTH = 7, 400, 2000
LENGTH_STEP = (MAX_LENGTH - MIN_LENGTH) // (BATCH - 1)
# AST's test dictionary: the constructor arguments a transformers user passes.
AST_ARGUMENTS = dict(feature_size=1, padding_value=0.0, sampling_rate=SAMPLING_RATE, return_attention_mask=True,
                     do_normalize=True)  # fmt: skip
requires_torchaudio = pytest.mark.skipif(not is_torchaudio_available(), reason="needs torchaudio")


def speech_inputs(equal_length: bool = False, numpify: bool = False, seed: int = 0):
    """transformers' `prepare_inputs_for_common`: 7 clips of 400, 666, ... samples (or 7 of 2000), as lists of floats
    or numpy arrays."""
    rng = np.random.default_rng(seed)
    lengths = [MAX_LENGTH] * BATCH if equal_length else list(range(MIN_LENGTH, MAX_LENGTH, LENGTH_STEP))
    clips = [rng.random(length).tolist() for length in lengths]
    return [np.asarray(clip) for clip in clips] if numpify else clips


def noise(num_samples: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, num_samples).astype(np.float32)


def kaldi_frames(num_samples: int) -> int:
    return 1 + (num_samples - 400) // 160


# --- SequenceFeatureExtractionTestMixin: the inherited pad() on raw waveforms -----------------------------------------


def test_common_properties_and_batch_feature():
    extractor = SSLAMFeatureExtractor(**AST_ARGUMENTS)
    assert all(hasattr(extractor, name) for name in ("feature_size", "sampling_rate", "padding_value"))
    name = extractor.model_input_names[0]
    assert name == "input_values"
    ragged = speech_inputs()
    assert [len(row) for row in BatchFeature({name: ragged})[name]] == [len(row) for row in ragged]
    for tensor_type in ("np", "pt"):
        batch = BatchFeature({name: speech_inputs(equal_length=True)}, tensor_type=tensor_type)[name]
        assert tuple(batch.shape) == (BATCH, MAX_LENGTH)


@pytest.mark.parametrize("numpify", [False, True], ids=["list", "array"])
def test_pad_pads_like_every_transformers_extractor(numpify):
    extractor = SSLAMFeatureExtractor(**AST_ARGUMENTS)
    clips = speech_inputs(numpify=numpify)
    features = BatchFeature({"input_values": clips})
    longest = MAX_LENGTH - 1 - (MAX_LENGTH - 1 - MIN_LENGTH) % LENGTH_STEP  # length of the last clip

    unpadded = extractor.pad(features, padding=False)["input_values"]
    longest_padded = extractor.pad(features, padding="longest")["input_values"]
    to_last = extractor.pad(features, padding="max_length", max_length=len(clips[-1]))["input_values"]
    as_array = extractor.pad(features, padding="longest", return_tensors="np")["input_values"]
    to_max = extractor.pad(features, padding="max_length", max_length=MAX_LENGTH + LENGTH_STEP, return_tensors="np")

    assert [len(row) for row in unpadded] == [len(clip) for clip in clips]
    assert {len(row) for row in longest_padded} == {len(clips[-1])} == {longest}
    np.testing.assert_allclose(np.asarray(longest_padded), np.asarray(to_last), atol=1e-3)
    assert as_array.shape == (BATCH, len(clips[-1]))
    assert to_max["input_values"].shape == (BATCH, MAX_LENGTH + LENGTH_STEP)
    with pytest.raises(ValueError):
        extractor.pad(features, padding="max_length")
    multiple = extractor.pad(features, pad_to_multiple_of=10)["input_values"]
    assert all(len(row) % 10 == 0 for row in multiple)
    rounded = extractor.pad(features, padding="max_length", pad_to_multiple_of=10, max_length=MAX_LENGTH + 1)
    assert {len(row) for row in rounded["input_values"]} == {MAX_LENGTH + 10}
    padding_sum = np.asarray(longest_padded[0])[MIN_LENGTH:].sum()
    assert abs(padding_sum - extractor.padding_value * (longest - MIN_LENGTH)) < 1e-3


@pytest.mark.parametrize("numpify", [False, True], ids=["list", "array"])
def test_pad_truncates_like_every_transformers_extractor(numpify):
    extractor = SSLAMFeatureExtractor(**AST_ARGUMENTS)
    clips = speech_inputs(numpify=numpify)
    features = BatchFeature({"input_values": clips})

    cut = extractor.pad(features, padding="max_length", max_length=len(clips[0]), truncation=True, return_tensors="np")
    uncut = extractor.pad(features, padding="max_length", max_length=len(clips[0]))["input_values"]
    assert cut["input_values"].shape == (BATCH, len(clips[0]))
    assert len({len(row) for row in uncut}) > 1
    for arguments in ({"truncation": True}, {"padding": "longest", "truncation": True},
                      {"padding": "max_length", "truncation": True}):  # fmt: skip
        with pytest.raises(ValueError):
            extractor.pad(features, **arguments)
    rounded = extractor.pad(
        features, padding="max_length", max_length=len(clips[0]), pad_to_multiple_of=12, truncation=True
    )["input_values"]
    assert {len(row) for row in rounded} == {-(-len(clips[0]) // 12) * 12}


def test_pad_accepts_tensors_and_returns_masks():
    extractor = SSLAMFeatureExtractor(**AST_ARGUMENTS)
    clips = speech_inputs()
    features = BatchFeature({"input_values": clips})
    as_numpy = extractor.pad(features, padding="longest", return_tensors="np")
    as_torch = extractor.pad(features, padding="longest", return_tensors="pt")
    assert abs(as_numpy["input_values"].astype(np.float32).sum() - as_torch["input_values"].numpy().sum()) < 1e-2
    assert list(as_numpy["attention_mask"].shape) == list(as_numpy["input_values"].shape[:2])
    assert as_numpy["attention_mask"].sum(-1).tolist() == [len(clip) for clip in clips]
    shortest = min(len(clip) for clip in clips)
    cut = extractor.pad(features, padding="max_length", max_length=shortest, truncation=True, return_tensors="np")
    assert cut["attention_mask"].shape == (BATCH, shortest) and cut["attention_mask"].all()
    double = np.random.default_rng(0).random(100)
    for value in (double, double.tolist()):  # AST's test_double_precision_pad
        assert extractor.pad([{"input_values": value}], return_tensors="np")["input_values"].dtype == np.float32
        assert extractor.pad([{"input_values": value}], return_tensors="pt")["input_values"].dtype == torch.float32


# --- FeatureExtractionSavingTestMixin ---------------------------------------------------------------------------------


def test_json_and_save_load_round_trips(tmp_path):
    extractor = SSLAMFeatureExtractor(**AST_ARGUMENTS)
    saved = json.loads(extractor.to_json_string())
    assert all(saved[key] == value for key, value in AST_ARGUMENTS.items())
    assert {"mel_filters", "window", "_mel_bands"}.isdisjoint(saved)
    extractor.to_json_file(tmp_path / "extractor.json")
    assert SSLAMFeatureExtractor.from_json_file(tmp_path / "extractor.json").to_dict() == extractor.to_dict()
    written = extractor.save_pretrained(tmp_path / "folder")[0]
    json.loads(open(written).read())
    assert SSLAMFeatureExtractor.from_pretrained(tmp_path / "folder").to_dict() == extractor.to_dict()
    assert SSLAMFeatureExtractor() is not None


def test_legacy_configs_load(tmp_path):
    """Folders of earlier versions stored the mel bins in feature_size, the length as target_length and "auto"."""
    legacy = {"feature_extractor_type": "SSLAMFeatureExtractor", "feature_size": 128, "target_length": 512,
              "sampling_rate": 16000, "fbank_backend": "auto", "padding_value": 0.0}  # fmt: skip
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(legacy))
    extractor = SSLAMFeatureExtractor.from_pretrained(tmp_path)
    assert (extractor.feature_size, extractor.num_mel_bins, extractor.max_length) == (1, 128, 512)
    assert extractor.target_length == 512
    expected = SSLAMFeatureExtractor(max_length=512)(noise(16000), sampling_rate=SAMPLING_RATE)["input_values"]
    np.testing.assert_array_equal(extractor(noise(16000), sampling_rate=SAMPLING_RATE)["input_values"], expected)


# --- the AST extractor's own tests, with its constructor vocabulary --------------------------------------------------


def test_ast_vocabulary_and_calls():
    """AST's `test_call`: lists and arrays agree and batch with `padding=True` (2-D arrays: see below)."""
    extractor = SSLAMFeatureExtractor(**AST_ARGUMENTS, num_mel_bins=128, max_length=1024)
    assert (extractor.feature_size, extractor.num_mel_bins, extractor.max_length) == (1, 128, 1024)
    clips = [noise(length, seed) for seed, length in enumerate((800, 1000, 1200))]
    as_lists = [clip.tolist() for clip in clips]
    single = extractor(as_lists[0], sampling_rate=SAMPLING_RATE, return_tensors="np")["input_values"]
    assert single.shape == (1, 1024, 128)
    np.testing.assert_allclose(single, extractor(clips[0], sampling_rate=SAMPLING_RATE)["input_values"], atol=1e-3)
    batched = extractor(as_lists, sampling_rate=SAMPLING_RATE, padding=True, return_tensors="np")
    assert batched["input_values"].shape == (3, 16, 128)  # own lengths (3, 4, 5 frames) rounded up to one patch
    assert batched["attention_mask"].sum(-1).tolist() == [kaldi_frames(len(clip)) for clip in clips]
    same = extractor(clips, sampling_rate=SAMPLING_RATE, padding=True, return_tensors="np")["input_values"]
    np.testing.assert_allclose(batched["input_values"], same, atol=1e-3)
    # AST's "2-D numpy arrays are batched": one clip per row.
    stacked = np.stack([clips[0]] * 3)
    np.testing.assert_array_equal(
        extractor(stacked, sampling_rate=SAMPLING_RATE)["input_values"],
        extractor([clips[0]] * 3, sampling_rate=SAMPLING_RATE)["input_values"],
    )


# --- __call__ arguments -----------------------------------------------------------------------------------------------


LENGTHS = (16000, 7000, 31000)  # 98, 42 and 192 Kaldi frames


@pytest.mark.parametrize(
    "arguments, frames, mask_sums",
    [
        ({}, 1024, [98, 42, 192]),
        ({"padding": "max_length"}, 1024, [98, 42, 192]),
        ({"padding": "max_length", "max_length": 64}, 64, [64, 42, 64]),
        ({"max_length": 96}, 96, [96, 42, 96]),
        ({"padding": "max_length", "max_length": 64, "pad_to_multiple_of": 48}, 96, [64, 42, 64]),
        ({"padding": True}, 192, [98, 42, 192]),
        ({"padding": "longest"}, 192, [98, 42, 192]),
        ({"padding": "longest", "pad_to_multiple_of": 64}, 192, [98, 42, 192]),
        ({"padding": "longest", "pad_to_multiple_of": 128}, 256, [98, 42, 192]),
        ({"padding": "longest", "max_length": 96}, 96, [96, 42, 96]),
        ({"padding": "longest", "max_length": 64, "truncation": False}, 192, [98, 42, 192]),
        ({"padding": True, "truncation": True}, 192, [98, 42, 192]),
        ({"target_length": None}, 192, [98, 42, 192]),
        ({"target_length": 512}, 512, [98, 42, 192]),
    ],
    ids=str,
)
@pytest.mark.parametrize("return_tensors", [None, "np", "pt"])
def test_padding_arguments(arguments, frames, mask_sums, return_tensors):
    """Every padding argument with the semantics of `SequenceFeatureExtractor`, mapped onto frames: output length,
    the frame mask, and the real frames equal to the clip's own unpadded frames."""
    extractor = SSLAMFeatureExtractor()
    clips = [noise(length, seed) for seed, length in enumerate(LENGTHS)]
    output = extractor(clips, sampling_rate=SAMPLING_RATE, return_attention_mask=True, return_tensors=return_tensors,
                       **arguments)  # fmt: skip
    values, mask = output["input_values"], output["attention_mask"]
    assert isinstance(values, torch.Tensor if return_tensors == "pt" else np.ndarray)
    assert tuple(values.shape) == (3, frames, 128) and tuple(mask.shape) == (3, frames)
    assert np.asarray(mask).sum(-1).tolist() == mask_sums
    values = np.asarray(values)
    for row, clip, real in zip(values, clips, mask_sums):
        alone = extractor(clip, sampling_rate=SAMPLING_RATE, padding="do_not_pad")["input_values"][0]
        np.testing.assert_allclose(row[:real], alone[:real], rtol=0, atol=1e-6)
        padded = (extractor.padding_value - extractor.mean) / (2 * extractor.std)
        np.testing.assert_allclose(row[real:], padded, rtol=1e-6)


def test_do_not_pad_and_attention_mask_defaults():
    extractor = SSLAMFeatureExtractor()
    clips = [noise(length, seed) for seed, length in enumerate(LENGTHS)]
    ragged = extractor(clips, sampling_rate=SAMPLING_RATE, padding="do_not_pad", return_attention_mask=True)
    assert [row.shape for row in ragged["input_values"]] == [(98, 128), (42, 128), (192, 128)]
    assert [row.sum() for row in ragged["attention_mask"]] == [98, 42, 192]
    equal = extractor([clips[0], clips[0]], sampling_rate=SAMPLING_RATE, padding=False, return_tensors="pt")
    assert equal["input_values"].shape == (2, 98, 128)
    assert "attention_mask" not in extractor(clips, sampling_rate=SAMPLING_RATE)  # the original: no mask
    assert "attention_mask" in extractor(clips, sampling_rate=SAMPLING_RATE, padding=True)
    assert "attention_mask" not in extractor(clips, sampling_rate=SAMPLING_RATE, padding=True,
                                             return_attention_mask=False)  # fmt: skip
    assert "attention_mask" in SSLAMFeatureExtractor(return_attention_mask=True)(clips, sampling_rate=SAMPLING_RATE)


def test_own_length_extractor_defaults_to_longest():
    extractor = SSLAMFeatureExtractor(max_length=None)
    output = extractor([noise(16000), noise(7000)], sampling_rate=SAMPLING_RATE, return_tensors="pt")
    assert output["input_values"].shape == (2, 112, 128) and output["attention_mask"].sum(-1).tolist() == [98, 42]


def test_device_argument_keeps_tensors_on_the_device():
    extractor = SSLAMFeatureExtractor()
    on_cpu = extractor(noise(16000), sampling_rate=SAMPLING_RATE, return_tensors="pt", device="cpu")
    assert on_cpu["input_values"].device.type == "cpu"
    np.testing.assert_array_equal(
        on_cpu["input_values"].numpy(), extractor(noise(16000), sampling_rate=SAMPLING_RATE)["input_values"]
    )


# --- invalid values ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"num_mel_bins": 3}, "num_mel_bins must be more than 3 and a multiple of patch_size"),
        ({"num_mel_bins": 0}, "num_mel_bins must be more than 3"),
        ({"num_mel_bins": 100}, r"multiple of patch_size \(16\), got 100"),
        ({"feature_size": 2, "num_mel_bins": 128}, "feature_size is the number of input channels.*must be 1, got 2"),
        ({"feature_size": 1, "sampling_rate": 16000, "num_mel_bins": 2}, "num_mel_bins must be more than 3"),
        ({"max_length": 0}, "max_length must be a positive integer, got 0"),
        ({"max_length": -16}, "max_length must be a positive integer"),
        ({"max_length": 100}, r"max_length must be a multiple of patch_size \(16\) frames.*got 100"),
        ({"max_length": 10.5}, "max_length must be a positive integer"),
        ({"target_length": 100}, r"max_length must be a multiple of patch_size"),
        ({"target_length": -1}, "target_length must be a positive integer"),
        ({"max_length": 512, "target_length": 256}, "disagree; pass only max_length"),
        ({"sampling_rate": 0}, "sampling_rate must be a positive integer"),
        ({"patch_size": 0}, "patch_size must be a positive integer"),
        ({"std": 0.0}, "std must be positive and finite"),
        ({"std": float("nan")}, "std must be positive and finite"),
        ({"mean": float("inf")}, "mean must be a finite number"),
        ({"fbank_backend": "librosa"}, "fbank_backend must be one of"),
    ],
    ids=str,
)
def test_impossible_constructor_values_are_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        SSLAMFeatureExtractor(**arguments)


def test_numpy_integers_are_accepted():
    extractor = SSLAMFeatureExtractor(target_length=np.int64(512), patch_size=np.int64(16))
    assert extractor(noise(16000), sampling_rate=SAMPLING_RATE)["input_values"].shape == (1, 512, 128)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"padding": "maximum"}, "padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got 'maximum'"),
        ({"padding": 1.5}, "padding must be True, False"),
        ({"max_length": 0}, "max_length must be a positive integer, got 0"),
        ({"max_length": -32}, "max_length must be a positive integer"),
        ({"max_length": 100}, r"max_length must be a multiple of patch_size \(16\)"),
        ({"padding": "longest", "pad_to_multiple_of": 10}, r"pad_to_multiple_of must be a multiple of patch_size"),
        ({"padding": "longest", "pad_to_multiple_of": 0}, "pad_to_multiple_of must be a positive integer"),
        ({"target_length": 0}, "target_length must be a positive integer"),
        ({"target_length": 24}, r"target_length must be a multiple of patch_size"),
        ({"target_length": 512, "padding": "longest"}, "either target_length .* or padding/max_length, not both"),
        ({"padding": "do_not_pad", "return_tensors": "pt"}, "different lengths, which cannot form one tensor"),
        ({"return_tensors": "tf2"}, "tf2"),
    ],
    ids=str,
)
def test_impossible_call_values_are_refused(arguments, message):
    clips = [noise(16000), noise(7000, 1)]
    with pytest.raises(ValueError, match=message):
        SSLAMFeatureExtractor()(clips, sampling_rate=SAMPLING_RATE, **arguments)


def test_lengths_an_own_length_extractor_cannot_provide_are_refused():
    extractor = SSLAMFeatureExtractor(max_length=None)
    with pytest.raises(ValueError, match="padding='max_length' needs a max_length"):
        extractor(noise(16000), sampling_rate=SAMPLING_RATE, padding="max_length")
    with pytest.raises(ValueError, match="truncation=True needs a max_length"):
        extractor(noise(16000), sampling_rate=SAMPLING_RATE, truncation=True)
    with pytest.raises(TypeError, match=r"unexpected argument\(s\) \['paddding'\]"):
        extractor(noise(16000), sampling_rate=SAMPLING_RATE, paddding=True)


# --- back ends --------------------------------------------------------------------------------------------------------


def original_recipe(waveform: np.ndarray, frames: int) -> np.ndarray:
    """The original inference script's features (`SSLAM_Inference/inference/inference.py`), written out here."""
    import torch.nn.functional as F
    from torchaudio.compliance import kaldi

    audio = torch.from_numpy(waveform).float()
    audio = audio - audio.mean()
    fbank = kaldi.fbank(audio[None], htk_compat=True, sample_frequency=16000, use_energy=False,
                        window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)  # fmt: skip
    fbank = F.pad(fbank, (0, 0, 0, frames - fbank.shape[0])) if fbank.shape[0] < frames else fbank[:frames]
    return ((fbank - (-4.268)) / (4.569 * 2)).numpy()


@requires_torchaudio
@pytest.mark.parametrize("num_samples", [160_000, 80_000, 200_000], ids=["10s", "5s-padded", "12.5s-truncated"])
def test_torchaudio_backend_is_the_original_bit_for_bit(num_samples):
    waveform = noise(num_samples, seed=3).astype(np.float64)
    expected = original_recipe(waveform, 1024)
    extractor = SSLAMFeatureExtractor(fbank_backend="torchaudio")
    np.testing.assert_array_equal(extractor(waveform, sampling_rate=SAMPLING_RATE)["input_values"][0], expected)
    default = SSLAMFeatureExtractor()(waveform, sampling_rate=SAMPLING_RATE)["input_values"][0]
    np.testing.assert_allclose(default, expected, rtol=0, atol=1e-6)  # torch: float32 rounding, not bit for bit
    assert SSLAMFeatureExtractor().fbank_backend == "torch"


def test_batch_of_sixteen_equals_single_clips():
    extractor = SSLAMFeatureExtractor()
    clips = [noise(160_000 - 160 * index, seed=index) for index in range(16)]
    batch = extractor(clips, sampling_rate=SAMPLING_RATE)["input_values"]
    for row, clip in zip(batch, clips):
        np.testing.assert_array_equal(row, extractor(clip, sampling_rate=SAMPLING_RATE)["input_values"][0])
