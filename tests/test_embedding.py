"""`extract_embeddings` and `embed_long_audio`: windows longer than a training clip are seen whole, errors name the
caller's clip or window (with its time span), and window arguments are checked before any work."""

import numpy as np
import pytest
import torch

from sslam.modeling_sslam import SSLAMConfig, SSLAMFeatureExtractor, SSLAMModel
from sslam.modeling_sslam.embedding import check_window, embed_long_audio, extract_embeddings

RATE = 16000


@pytest.fixture(scope="module")
def model() -> SSLAMModel:
    torch.manual_seed(0)
    config = SSLAMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    return SSLAMModel(config).eval()


@pytest.fixture(scope="module")
def extractor() -> SSLAMFeatureExtractor:
    return SSLAMFeatureExtractor()


def noise(seconds: float, seed: int, amplitude: float = 0.3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-amplitude, amplitude, int(seconds * RATE)).astype(np.float32)


def test_a_window_longer_than_a_training_clip_is_featurised_whole(model, extractor):
    """A 30 s window: replacing its seconds 10-30 moves the embedding about as much as replacing seconds 0-10 (it
    moved it ~30x less when every window was cut to the extractor's 10 s)."""
    audio = noise(30, 0)
    late, early = audio.copy(), audio.copy()
    late[10 * RATE :] = noise(20, 1, amplitude=0.05)
    early[: 10 * RATE] = noise(10, 2, amplitude=0.05)

    def embed(waveform):
        return embed_long_audio(model, extractor, waveform, RATE, window_seconds=30, hop_seconds=30).pooled

    reference = embed(audio)
    late_change = np.abs(embed(late) - reference).max()
    early_change = np.abs(embed(early) - reference).max()

    assert late_change > 0.3 * early_change > 0


def test_a_window_of_a_training_clip_is_padded_like_one(model, extractor):
    clip = noise(7, 3)
    windowed = embed_long_audio(model, extractor, clip, RATE, window_seconds=10)
    whole = extract_embeddings(model, extractor, clip, sampling_rate=RATE)
    np.testing.assert_array_equal(windowed.windows, whole)


def test_errors_name_the_callers_clip_not_its_index_in_the_internal_batch(model, extractor):
    clips = [noise(1, seed) for seed in range(12)]
    clips[10][100] = np.nan
    with pytest.raises(ValueError, match=r"^Clip 10 contains NaN"):
        extract_embeddings(model, extractor, clips, sampling_rate=RATE, batch_size=8)
    with pytest.raises(ValueError, match=r"^b\.wav contains NaN"):
        extract_embeddings(model, extractor, clips[9:11], sampling_rate=RATE, clip_names=["a.wav", "b.wav"])


def test_errors_name_the_window_and_its_time_span(model, extractor):
    """Ten minutes in 10 s windows every 5 s: a NaN at 597 s is only in window 118 (590-600 s)."""
    audio = np.zeros(600 * RATE, dtype=np.float32)
    audio[597 * RATE] = np.nan
    with pytest.raises(ValueError, match=r"^Window 118 \(590\.00-600\.00 s\) of long\.wav contains NaN"):
        embed_long_audio(model, extractor, audio, RATE, window_seconds=10, hop_seconds=5, name="long.wav")


@pytest.mark.parametrize(
    "window, hop, match",
    [
        (float("nan"), 5.0, "window_seconds must be a positive number of seconds, got nan"),
        (float("inf"), 5.0, "window_seconds must be a positive number of seconds, got inf"),
        (0.0, 5.0, "window_seconds must be a positive"),
        (0.001, 0.001, r"window_seconds=0.001 is shorter than one patch of 16 frames \(0.175 s\)"),
        (10.0, float("nan"), "hop_seconds must be a positive number of seconds, got nan"),
        (3.0, 5.0, "hop_seconds=5 is longer than window_seconds=3: the audio between the windows would be skipped"),
        (200.0, 5.0, r"window_seconds=200 needs 20000 frames, more than the model's position table covers \(12288"),
    ],
)
def test_invalid_windows_are_refused_before_any_work(model, extractor, window, hop, match):
    with pytest.raises(ValueError, match=match):
        check_window(extractor, window, hop, max_frames=model.config.max_time_patches * model.config.patch_size)
    with pytest.raises(ValueError, match=match):
        embed_long_audio(model, extractor, noise(1, 0), RATE, window_seconds=window, hop_seconds=hop)


def test_the_default_hop_is_five_seconds_or_the_window(model, extractor):
    audio = noise(12, 4)
    assert embed_long_audio(model, extractor, audio, RATE, window_seconds=10).starts.tolist() == [0.0, 2.0]
    assert embed_long_audio(model, extractor, audio, RATE, window_seconds=3).starts.tolist() == [0.0, 3.0, 6.0, 9.0]
