# Copyright 2026 The sslam project authors.
# Licensed under the MIT License.
"""Decode audio files into the float32 mono waveforms that [`SSLAMFeatureExtractor`] expects."""

import os

import numpy as np
import soundfile
import torch


def load_audio(
    path: str | os.PathLike, target_sampling_rate: int = 16000, average_channels: bool = True
) -> np.ndarray:
    """Decode an audio file to a float32 mono waveform in [-1, 1] at `target_sampling_rate`.

    Decodes with soundfile (wav, flac, ogg, mp3, ...) and falls back to torchcodec for other formats. Samples are read
    as float64 and cast to float32, like the original SSLAM scripts; other rates are converted with
    `torchaudio.functional.resample` (default arguments).

    Args:
        path: audio file.
        target_sampling_rate: rate of the returned waveform, in Hz.
        average_channels: average multi-channel audio to mono; if `False`, multi-channel files raise.

    Returns:
        `np.ndarray` of shape `(num_samples,)`, float32.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file cannot be decoded, or has several channels and `average_channels` is `False`.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Audio file not found: {path}")
    samples, sampling_rate = _decode(path)  # (num_samples, channels) float64
    if samples.shape[1] > 1 and not average_channels:
        raise ValueError(
            f"{path} has {samples.shape[1]} channels; pass average_channels=True to average them to mono."
        )
    waveform = torch.from_numpy(samples.mean(axis=1)).float()
    if sampling_rate != target_sampling_rate:
        import torchaudio.functional

        waveform = torchaudio.functional.resample(waveform, orig_freq=sampling_rate, new_freq=target_sampling_rate)
    return waveform.numpy()


def _decode(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decoded samples `(num_samples, channels)` as float64 and the file's sampling rate."""
    try:
        return soundfile.read(path, dtype="float64", always_2d=True)
    except soundfile.SoundFileError as error:
        soundfile_error = error
    try:
        return _decode_with_torchcodec(path)
    except Exception as error:  # torchcodec raises RuntimeError/ValueError and may lack its FFmpeg libraries
        torchcodec_error = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"Could not decode audio file {path}: it is corrupt or in an unsupported format "
            f"(soundfile: {soundfile_error}; torchcodec fallback: {torchcodec_error})."
        ) from error


def _decode_with_torchcodec(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Fallback decoder for formats libsndfile lacks (needs torchcodec and FFmpeg libraries)."""
    from torchcodec.decoders import AudioDecoder

    decoded = AudioDecoder(os.fspath(path)).get_all_samples()
    return decoded.data.double().T.numpy(), decoded.sample_rate


__all__ = ["load_audio"]
