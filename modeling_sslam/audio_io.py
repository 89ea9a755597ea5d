# Copyright 2026 The sslam project authors.
# Licensed under the MIT License.
"""Decode audio into the float32 mono waveforms that [`SSLAMFeatureExtractor`] expects.

The one place where the project decodes audio (`load_audio`: files, bytes, file-like objects), turns any audio value
into a waveform (`decode_audio`: also `datasets` values and torchcodec decoders) and averages channels / resamples
(`to_mono_16k`). The pre-training collator and the evaluation loaders call these.
"""

import io
import os
import re
from collections.abc import Mapping

import numpy as np
import soundfile
import torch
from transformers.utils import logging


logger = logging.get_logger(__name__)

# libsndfile's log line for a WAV data chunk that the file does not hold completely: "data : 320000 (should be 19956)".
_SHORT_DATA_CHUNK = re.compile(r"^data\s*:\s*(\d+) \(should be (\d+)\)", re.MULTILINE)
_UNKNOWN_CHUNK_SIZE = 0xFFFFFFFF  # what streaming writers put in the header when the length is not known
# Compressed formats without an exact length in their header (e.g. MP3 without a Xing frame) get an estimated frame
# count; a shortfall within this fraction of it is not reported as truncation.
FRAME_COUNT_TOLERANCE = 0.01


AudioSource = str | os.PathLike | bytes | bytearray | memoryview | io.IOBase


def load_audio(
    source: AudioSource, target_sampling_rate: int = 16000, average_channels: bool = True
) -> np.ndarray:
    """Decode an audio file to a float32 mono waveform in [-1, 1] at `target_sampling_rate`.

    Decodes with soundfile (wav, flac, ogg, mp3, ...) and falls back to torchcodec for other formats. Samples are read
    as float64, averaged over channels and cast to float32, like the original SSLAM scripts; other rates are converted
    with `torchaudio.functional.resample` (default arguments), see [`to_mono_16k`]. A truncated file (its header
    promises more audio than it holds, e.g. a partial download) decodes to the audio present, with a warning naming
    it.

    Args:
        source: an audio file path, its encoded bytes, or a binary file-like object (e.g. `io.BytesIO`), read from
            its current position.
        target_sampling_rate: rate of the returned waveform, in Hz.
        average_channels: average multi-channel audio to mono; if `False`, multi-channel files raise.

    Returns:
        `np.ndarray` of shape `(num_samples,)`, float32.

    Raises:
        FileNotFoundError: `source` is a path that does not exist.
        ValueError: the audio cannot be decoded, or has several channels and `average_channels` is `False`.
    """
    return _load_audio(source, target_sampling_rate, average_channels, name=None)


def _load_audio(source: AudioSource, target_sampling_rate: int, average_channels: bool, name: str | None) -> np.ndarray:
    """`load_audio`, naming the audio `name` in its errors (default: the path or the file object's name)."""
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"Audio file not found: {source}")
        name = name or str(source)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    elif not (hasattr(source, "read") and hasattr(source, "seek")):
        raise TypeError(f"Expected an audio file path, bytes or a binary file object, got {type(source).__name__}.")
    if name is None and isinstance(getattr(source, "name", None), str):
        name = source.name
    name = f"audio file {name}" if name else "audio bytes"
    samples, sampling_rate = _decode(source, name)  # (num_samples, channels) float64
    if samples.shape[1] > 1 and not average_channels:
        raise ValueError(
            f"The {name} has {samples.shape[1]} channels; pass average_channels=True to average them to mono."
        )
    return to_mono_16k(samples, sampling_rate, target_sampling_rate, channel_axis=1)


def to_mono_16k(
    waveform: np.ndarray | torch.Tensor,
    sampling_rate: int,
    target_sampling_rate: int = 16000,
    channel_axis: int | None = None,
) -> np.ndarray:
    """A decoded waveform -> `(num_samples,)` float32 mono at `target_sampling_rate` (16 kHz by default).

    Channels are averaged in the input's precision before the cast to float32, then other rates are converted with
    `torchaudio.functional.resample` (default arguments, as the original SSLAM code). Averaging before resampling
    equals resampling each channel: both are linear.

    Args:
        waveform: `(num_samples,)`, or 2-D with a channel axis.
        sampling_rate: rate of `waveform`, in Hz.
        target_sampling_rate: rate of the result, in Hz.
        channel_axis: the channel axis of a 2-D `waveform`; `None` takes the shorter axis (`(channels, samples)` or
            `(samples, channels)`).
    """
    samples = waveform.numpy() if isinstance(waveform, torch.Tensor) else np.asarray(waveform)
    if samples.ndim == 2:
        axis = int(samples.shape[0] > samples.shape[1]) if channel_axis is None else channel_axis
        samples = samples.mean(axis=axis)
    elif samples.ndim != 1:
        raise ValueError(f"Expected 1-D or 2-D audio samples, got shape {tuple(samples.shape)}.")
    mono = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    if sampling_rate != target_sampling_rate:
        import torchaudio.functional

        mono = torchaudio.functional.resample(mono, orig_freq=int(sampling_rate), new_freq=int(target_sampling_rate))
    return mono.numpy()


def decode_audio(value, target_sampling_rate: int = 16000) -> np.ndarray:
    """Any audio value -> float32 mono waveform at `target_sampling_rate`.

    Args:
        value: what [`load_audio`] reads (a path, bytes, a binary file-like object); a `{"array", "sampling_rate"}`
            dict; an undecoded `{"bytes", "path"}` dict (`datasets.Audio(decode=False)`; the bytes win when both are
            set); a torchcodec `AudioDecoder` (what `datasets` 5 decodes to); or a 1-D array or tensor, taken to be at
            `target_sampling_rate` already.

    Returns:
        `np.ndarray` `(num_samples,)` float32.

    Raises:
        FileNotFoundError, ValueError: see [`load_audio`]; a raw array that is not 1-D raises `ValueError`.
        TypeError: `value` is none of the above.
    """
    if isinstance(value, (str, os.PathLike, bytes, bytearray, memoryview, io.IOBase)):
        return load_audio(value, target_sampling_rate)
    if hasattr(value, "get_all_samples"):  # torchcodec AudioDecoder: AudioSamples.data is (channels, samples)
        decoded = value.get_all_samples()
        return to_mono_16k(decoded.data.float(), decoded.sample_rate, target_sampling_rate, channel_axis=0)
    if isinstance(value, Mapping) and value.get("array") is not None:
        array = np.asarray(value["array"], dtype=np.float32)
        return to_mono_16k(array, int(value["sampling_rate"]), target_sampling_rate)
    if isinstance(value, Mapping) and value.get("bytes") is not None:
        return _load_audio(value["bytes"], target_sampling_rate, True, name=value.get("path"))
    if isinstance(value, Mapping) and value.get("path") is not None:
        return load_audio(value["path"], target_sampling_rate)
    if isinstance(value, (np.ndarray, torch.Tensor, list, tuple)):
        array = value.numpy() if isinstance(value, torch.Tensor) else value
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 1:
            raise ValueError(f"A raw waveform must be 1-D (mono), got shape {array.shape}.")
        return np.ascontiguousarray(array)
    raise TypeError(
        f"Cannot decode audio from {type(value).__name__}: expected a path, bytes, a file-like object, an "
        "AudioDecoder, a 1-D array, or a dict with 'array' + 'sampling_rate', 'bytes' or 'path'."
    )


def _decode(source, name: str) -> tuple[np.ndarray, int]:
    """Decoded samples `(num_samples, channels)` as float64 and the audio's sampling rate."""
    start = None if isinstance(source, (str, os.PathLike)) else source.tell()
    try:
        with soundfile.SoundFile(source) as handle:
            samples = handle.read(dtype="float64", always_2d=True)
            truncation = _truncation(handle, samples.shape[0])
            if truncation is not None:
                logger.warning(f"Truncated {name}: {truncation}. Only the audio present is used.")
            return samples, handle.samplerate
    except soundfile.SoundFileError as error:
        soundfile_error = error
    if start is not None:
        source.seek(start)
    try:
        return _decode_with_torchcodec(source)
    except Exception as error:  # torchcodec raises RuntimeError/ValueError and may lack its FFmpeg libraries
        torchcodec_error = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"Could not decode {name}: it is corrupt or in an unsupported format "
            f"(soundfile: {soundfile_error}; torchcodec fallback: {torchcodec_error})."
        ) from error


def _truncation(handle: soundfile.SoundFile, frames_read: int) -> str | None:
    """How much less audio the file holds than its header promises (None if it holds all of it)."""
    chunk = _SHORT_DATA_CHUNK.search(handle.extra_info)
    if chunk is not None and int(chunk[2]) < int(chunk[1]) != _UNKNOWN_CHUNK_SIZE:
        return f"its header promises {int(chunk[1])} bytes of audio, the file holds {int(chunk[2])}"
    if frames_read < handle.frames * (1 - FRAME_COUNT_TOLERANCE):
        return f"its header promises {handle.frames} frames, {frames_read} could be decoded"
    return None


def _decode_with_torchcodec(source) -> tuple[np.ndarray, int]:
    """Fallback decoder for formats libsndfile lacks (needs torchcodec and FFmpeg libraries)."""
    from torchcodec.decoders import AudioDecoder

    decoded = AudioDecoder(os.fspath(source) if isinstance(source, os.PathLike) else source).get_all_samples()
    return decoded.data.double().T.numpy(), decoded.sample_rate


__all__ = ["decode_audio", "load_audio", "to_mono_16k"]
