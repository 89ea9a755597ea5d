"""Time-frame embeddings (pooling="time", windowed embed_time_frames), SSLAMForAudioFrameClassification and the
HEAR 2021 module."""

import math

import numpy as np
import pytest
import torch

import sslam.modeling_sslam  # noqa: F401  (registers the Auto classes)
from sslam.modeling_sslam import (
    SSLAMConfig,
    SSLAMFeatureExtractor,
    SSLAMForAudioFrameClassification,
    SSLAMModel,
    hear,
)
from sslam.modeling_sslam.embedding import (
    embed_long_audio,
    embed_time_frames,
    extract_embeddings,
    nearest_window,
    row_centre_times,
    window_starts,
)
from sslam.modeling_sslam.modeling_sslam import frame_classification_loss

RATE = 16_000
HOP_S = 0.16


def tiny_config(**kwargs) -> SSLAMConfig:
    values = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    values.update(kwargs)
    return SSLAMConfig(**values)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return SSLAMModel(tiny_config()).eval()


@pytest.fixture(scope="module")
def extractor():
    return SSLAMFeatureExtractor(max_length=64)  # windows of 4 rows (0.64 s): short audio already needs several


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, int(round(seconds * RATE))).astype(np.float32)


def expected_rows(num_samples: int) -> int:
    """Rows with at least one real 25 ms frame: ceil(frames / 16), frames = 1 + (n - 400) // 160."""
    return math.ceil((1 + (num_samples - 400) // 160) / 16)


# ------------------------------------------------------------------------------------- pooling="time"


def test_time_pooling_shapes_times_and_padding_rows(encoder):
    extractor = SSLAMFeatureExtractor(max_length=320)
    clips = [noise(2.0), noise(1.3, 1), noise(3.2, 2)]
    results = extract_embeddings(encoder, extractor, clips, sampling_rate=RATE, pooling="time")
    for clip, result in zip(clips, results):
        rows = expected_rows(len(clip))
        assert result.frames.shape == (rows, 8 * 32)
        np.testing.assert_allclose(result.times, (np.arange(rows) + 0.5) * HOP_S)
        assert result.cls.shape == (32,)
    assert [len(r.frames) for r in results] == [13, 8, 20]  # 1.3 s: 128 frames = 8 rows; 3.2 s: 318 frames


def test_time_rows_are_the_patch_tokens_of_each_row(encoder):
    extractor = SSLAMFeatureExtractor(max_length=320)
    clip = noise(2.0)
    patches = extract_embeddings(encoder, extractor, clip, sampling_rate=RATE, pooling="frames")[0]
    concat = extract_embeddings(encoder, extractor, clip, sampling_rate=RATE, pooling="time")[0]
    mean = extract_embeddings(encoder, extractor, clip, sampling_rate=RATE, pooling="time", frequency_pooling="mean")[0]
    cls = extract_embeddings(encoder, extractor, clip, sampling_rate=RATE, pooling="cls")[0]
    rows = len(concat.frames)
    by_row = patches[: rows * 8].reshape(rows, 8, 32)  # n = t * 8 + f
    np.testing.assert_allclose(concat.frames, by_row.reshape(rows, 256), atol=1e-6)
    np.testing.assert_allclose(mean.frames, by_row.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(concat.cls, cls, atol=1e-6)


def test_time_pooling_with_longest_padding_matches_each_clip_alone(encoder):
    extractor = SSLAMFeatureExtractor(max_length=None)
    short, long = noise(0.9), noise(2.5, 1)
    together = extract_embeddings(encoder, extractor, [short, long], sampling_rate=RATE, pooling="time")
    alone = extract_embeddings(encoder, extractor, short, sampling_rate=RATE, pooling="time")[0]
    assert len(together[0].frames) == expected_rows(len(short)) == len(alone.frames)
    np.testing.assert_allclose(together[0].frames, alone.frames, atol=1e-5)


def test_time_pooling_rejects_an_unknown_frequency_pooling(encoder, extractor):
    with pytest.raises(ValueError, match="frequency_pooling"):
        extract_embeddings(encoder, extractor, noise(1.0), sampling_rate=RATE, pooling="time", frequency_pooling="max")


# ----------------------------------------------------------------------------------- embed_time_frames


def test_nearest_window_assigns_each_row_to_the_closest_window_centre():
    starts = window_starts(10, 4, 2)
    assert starts == [0, 2, 4, 6]
    assert nearest_window(10, starts, 4).tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]


def test_windowed_equals_single_pass_for_a_clip_within_one_window(encoder):
    extractor = SSLAMFeatureExtractor(max_length=320)
    clips = [noise(2.0), noise(3.1, 1)]
    single = extract_embeddings(encoder, extractor, clips, sampling_rate=RATE, pooling="time")
    windowed = embed_time_frames(encoder, extractor, clips, sampling_rate=RATE)
    for a, b in zip(single, windowed):
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.times, b.times)
        np.testing.assert_array_equal(a.cls, b.cls)


def test_windowed_rows_come_from_the_nearest_window(encoder, extractor):
    clip = noise(3.0)
    result = embed_time_frames(encoder, extractor, clip, sampling_rate=RATE)[0]
    rows = expected_rows(len(clip))
    assert result.frames.shape == (rows, 256)
    starts = window_starts(rows, 4, 2)
    owner = nearest_window(rows, starts, 4)
    for index, start in enumerate(starts):  # encode each window's audio on its own and compare its owned rows
        audio = clip[start * 2560 : start * 2560 + 4 * 2560 + 240]
        alone = extract_embeddings(encoder, extractor, audio, sampling_rate=RATE, pooling="time")[0].frames
        owned = np.flatnonzero(owner == index)
        np.testing.assert_allclose(result.frames[owned], alone[owned - start], atol=1e-4)


def test_windowed_is_independent_of_batching_and_bounds_the_batch(encoder, extractor):
    clips = [noise(2.2), noise(1.7, 1), noise(0.5, 2)]
    seen = []
    hook = encoder.register_forward_hook(lambda module, args, kwargs_out: seen.append(args[0].shape[0]))
    try:
        one = embed_time_frames(encoder, extractor, clips, sampling_rate=RATE, batch_size=1)
        assert set(seen) == {1}
        seen.clear()
        three = embed_time_frames(encoder, extractor, clips, sampling_rate=RATE, batch_size=3)
        assert max(seen) == 3
    finally:
        hook.remove()
    for a, b in zip(one, three):
        np.testing.assert_allclose(a.frames, b.frames, atol=1e-5)
        np.testing.assert_allclose(a.cls, b.cls, atol=1e-5)


def test_windowed_rejects_windows_shorter_than_a_row(encoder, extractor):
    with pytest.raises(ValueError, match="window_seconds"):
        embed_time_frames(encoder, extractor, noise(1.0), sampling_rate=RATE, window_seconds=0.05)
    with pytest.raises(ValueError, match="embed_time_frames"):
        embed_long_audio(encoder, extractor, noise(1.0), RATE, pooling="time")


# ------------------------------------------------------------------------------------ frame classifier


@pytest.fixture(scope="module")
def frame_model():
    torch.manual_seed(0)
    config = tiny_config(num_labels=3, id2label={0: "dog", 1: "cat", 2: "bird"}, label2id={"dog": 0, "cat": 1, "bird": 2})
    return SSLAMForAudioFrameClassification(config).eval()


def test_frame_classifier_logits_and_masked_loss(frame_model):
    inputs = torch.randn(2, 64, 128)
    mask = torch.ones(2, 64, dtype=torch.int32)
    mask[1, 32:] = 0  # clip 1: rows 2 and 3 are padding
    labels = torch.zeros(2, 4, 3)
    labels[0, 1, 2] = labels[1, 0, 0] = 1.0
    output = frame_model(inputs, attention_mask=mask, labels=labels)
    assert output.logits.shape == (2, 4, 3)
    changed = labels.clone()
    changed[1, 2:] = 1.0  # only padding rows differ: the loss must not change
    assert torch.allclose(frame_model(inputs, attention_mask=mask, labels=changed).loss, output.loss)
    real = torch.tensor([[True] * 4, [True, True, False, False]])
    manual = torch.nn.functional.binary_cross_entropy_with_logits(output.logits[real], labels[real])
    assert torch.allclose(output.loss, manual, atol=1e-6)


def test_frame_loss_ignores_minus_100_and_checks_shapes():
    logits = torch.tensor([[[2.0, -1.0], [0.5, 0.0]]])
    labels = torch.tensor([[[1.0, 0.0], [-100.0, -100.0]]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[0, 0], labels[0, 0])
    assert torch.allclose(frame_classification_loss(logits, labels), expected)
    with pytest.raises(ValueError, match="frame logits"):
        frame_classification_loss(logits, labels[:, :1])


def test_frame_classifier_round_trips_through_the_auto_class(frame_model, tmp_path):
    from transformers import AutoConfig, AutoModelForAudioFrameClassification

    frame_model.save_pretrained(tmp_path)
    loaded = AutoModelForAudioFrameClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is SSLAMForAudioFrameClassification
    assert loaded.config.id2label == {0: "dog", 1: "cat", 2: "bird"}
    assert AutoConfig.from_pretrained(tmp_path).auto_map["AutoModelForAudioFrameClassification"].endswith(
        "SSLAMForAudioFrameClassification"
    )
    inputs = torch.randn(1, 64, 128)
    torch.testing.assert_close(loaded(inputs).logits, frame_model(inputs).logits)


# ----------------------------------------------------------------------------------------------- HEAR


@pytest.fixture(scope="module")
def hear_model(encoder, extractor):
    return hear.SSLAMHEARModel(encoder, extractor)


def test_hear_model_attributes(hear_model):
    assert hear_model.sample_rate == 16000 and type(hear_model.sample_rate) is int
    assert hear_model.timestamp_embedding_size == 256 and type(hear_model.timestamp_embedding_size) is int
    assert hear_model.scene_embedding_size == 32 and type(hear_model.scene_embedding_size) is int
    assert isinstance(hear_model, torch.nn.Module)


def check_timestamps(timestamps: torch.Tensor, num_samples: int) -> None:
    """The HEAR rules: milliseconds, strictly increasing, evenly spaced (within the validator's 1e-3 ms), row centres
    from 80 ms, covering the audio up to its last full 25 ms frame."""
    steps = torch.diff(timestamps, dim=-1)
    assert torch.all(steps > 0)
    assert torch.all((steps - steps.mean()).abs() < 1e-3)
    assert torch.allclose(steps, torch.full_like(steps, 160.0))
    assert torch.all(timestamps[:, 0] == 80.0)
    duration_ms = 1000.0 * num_samples / RATE
    assert torch.all(timestamps[:, -1] + 80.0 >= duration_ms - 25.0)
    assert torch.all(timestamps[:, -1] - 80.0 < duration_ms)


def test_hear_timestamp_embeddings_follow_the_spec(hear_model):
    audio = torch.rand(4, int(2.0 * RATE)) * 2 - 1  # the validator feeds 16 x 2 s of uniform noise
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, hear_model)
    assert embeddings.dtype == torch.float32
    assert embeddings.shape == (4, 13, hear_model.timestamp_embedding_size)
    assert timestamps.shape == embeddings.shape[:2]
    check_timestamps(timestamps, audio.shape[1])


def test_hear_batched_equals_one_at_a_time(hear_model):
    audio = torch.rand(3, int(1.7 * RATE), generator=torch.Generator().manual_seed(1)) * 2 - 1
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, hear_model)
    scenes = hear.get_scene_embeddings(audio, hear_model)
    for index in range(3):
        one, one_times = hear.get_timestamp_embeddings(audio[index : index + 1], hear_model)
        torch.testing.assert_close(embeddings[index : index + 1], one, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(timestamps[index : index + 1], one_times)
        torch.testing.assert_close(scenes[index : index + 1], hear.get_scene_embeddings(audio[index : index + 1], hear_model),
                                   atol=1e-5, rtol=1e-5)


def test_hear_scene_embeddings_are_patch_means_or_cls(encoder, extractor, hear_model):
    audio = torch.rand(2, int(3.74 * RATE)) * 2 - 1
    scenes = hear.get_scene_embeddings(audio, hear_model)
    assert scenes.shape == (2, 32) and scenes.dtype == torch.float32
    frames = embed_time_frames(encoder, extractor, list(audio.numpy()), sampling_rate=RATE)
    expected = np.stack([clip.frames.reshape(len(clip.frames), 8, 32).mean(axis=(0, 1)) for clip in frames])
    np.testing.assert_allclose(scenes.numpy(), expected, atol=1e-5)
    cls_model = hear.SSLAMHEARModel(encoder, extractor, scene_pooling="cls")
    np.testing.assert_allclose(hear.get_scene_embeddings(audio, cls_model).numpy(),
                               np.stack([clip.cls for clip in frames]), atol=1e-5)


def test_hear_ten_minutes_stay_evenly_spaced():
    torch.manual_seed(0)
    small = SSLAMModel(tiny_config(hidden_size=16, num_hidden_layers=1, num_attention_heads=1, intermediate_size=32))
    model = hear.SSLAMHEARModel(small, SSLAMFeatureExtractor(), frequency_pooling="mean", batch_size=16)
    audio = torch.rand(1, 600 * RATE, generator=torch.Generator().manual_seed(0)) * 0.2 - 0.1
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    assert embeddings.shape == (1, 3750, 16) and torch.isfinite(embeddings).all()
    check_timestamps(timestamps, audio.shape[1])
    np.testing.assert_allclose(timestamps[0].numpy(), 1000.0 * row_centre_times(3750, HOP_S))


def test_hear_load_model_from_a_folder_and_the_errors(frame_model, tmp_path, monkeypatch):
    folder = tmp_path / "frames"
    frame_model.save_pretrained(folder)
    SSLAMFeatureExtractor(max_length=64).save_pretrained(folder)
    model = hear.load_model(str(folder), frequency_pooling="mean")
    assert isinstance(model.encoder, SSLAMModel)
    assert model.timestamp_embedding_size == 32 and model.feature_extractor.max_length == 64
    torch.testing.assert_close(model.encoder.state_dict()["embeddings.cls_token"],
                               frame_model.sslam.state_dict()["embeddings.cls_token"])
    monkeypatch.setenv(hear.MODEL_ENVIRONMENT_VARIABLE, str(folder))
    assert hear.load_model().feature_extractor.max_length == 64
    weights = folder / "model.safetensors"
    with pytest.raises(ValueError, match="is a file"):
        hear.load_model(str(weights))
    with pytest.raises(ValueError, match="n_sounds, n_samples"):
        hear.get_timestamp_embeddings(torch.zeros(RATE), model)
    with pytest.raises(ValueError, match="scene_pooling"):
        hear.SSLAMHEARModel(model.encoder, model.feature_extractor, scene_pooling="max")
