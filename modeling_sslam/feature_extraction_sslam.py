# Copyright 2026 The sslam project authors.
# Licensed under the MIT License.
"""Feature extractor for SSLAM / EAT: 128-bin Kaldi log-mel filter banks, padded and normalised as in the original.

Recipe of the original inference and training code, per clip: mono 16 kHz float waveform in [-1, 1] -> subtract the
waveform mean -> `torchaudio.compliance.kaldi.fbank(x[None], htk_compat=True, sample_frequency=16000,
use_energy=False, window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)` -> zero-pad (log-mel domain)
or truncate to `target_length` frames -> `(x - mean) / (2 * std)`.

Two interchangeable back ends compute the filter bank: torchaudio's Kaldi port (the reference, one clip per call) and
a vectorised torch re-implementation that stacks the equal-length clips of a batch and needs only torch.
"""

import functools
import importlib
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Number

import numpy as np
import torch
from transformers import BatchFeature, SequenceFeatureExtractor
from transformers.utils import PaddingStrategy, TensorType, logging


logger = logging.get_logger(__name__)

# (mean, std) of the log-mel features used by the original recipes; normalisation is (x - mean) / (2 * std).
NORMALIZATION_STATS = {
    "audioset": (-4.268, 4.569),
    "esc50": (-6.627, 5.359),
    "speechcommands": (-6.846, 5.565),
    "spass": (-5.275, 3.268),
}

FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
PREEMPHASIS_COEFFICIENT = 0.97
LOW_FREQUENCY_HZ = 20.0
LOG_FLOOR = torch.finfo(torch.float32).eps
FBANK_BACKENDS = ("auto", "torchaudio", "torch")
# Frames per vectorised fbank call: keeps each intermediate (frames x 512 floats) around 4 MB, cache-sized. Stacking a
# whole batch of 10 s clips at once was several times slower per clip on a 2-core CPU than chunks of this size.
MAX_FRAMES_PER_CALL = 2048
# Float audio is expected in [-1, 1]. Resampling and lossy decoding overshoot full scale a little; a clip whose samples
# (mean removed) reach beyond this is almost surely on another scale (e.g. int16 values stored as floats) and is logged.
MAX_EXPECTED_PEAK = 2.0



_UNSET = object()  # sentinel: an optional alias argument that was not passed


@functools.cache
def is_torchaudio_available() -> bool:
    """Whether `torchaudio.compliance.kaldi` and `torchaudio.functional` can be imported."""
    try:
        importlib.import_module("torchaudio.compliance.kaldi")
        importlib.import_module("torchaudio.functional")
    except (ImportError, OSError):
        return False
    return True


def _require_torchaudio(purpose: str) -> None:
    if not is_torchaudio_available():
        raise ImportError(f"{purpose} needs torchaudio, which cannot be imported. Install torchaudio.")


def kaldi_mel_filters(num_mel_bins: int, fft_length: int, sampling_rate: int) -> torch.Tensor:
    """Kaldi triangular mel filters from 20 Hz to Nyquist, as `torchaudio.compliance.kaldi.get_mel_banks` builds them.

    Computed in float32 with the same operation order as Kaldi's torch port, so the two agree bit for bit.

    Returns:
        `torch.Tensor` of shape `(num_mel_bins, fft_length // 2 + 1)`; the Nyquist column is zero.
    """
    low_mel = 1127.0 * math.log(1.0 + LOW_FREQUENCY_HZ / 700.0)
    high_mel = 1127.0 * math.log(1.0 + 0.5 * sampling_rate / 700.0)
    mel_step = (high_mel - low_mel) / (num_mel_bins + 1)
    index = torch.arange(num_mel_bins, dtype=torch.float32)[:, None]
    left, center, right = (low_mel + (index + offset) * mel_step for offset in (0.0, 1.0, 2.0))
    fft_frequencies = (sampling_rate / fft_length) * torch.arange(fft_length // 2, dtype=torch.float32)
    fft_mel = 1127.0 * (1.0 + fft_frequencies / 700.0).log()
    rising = (fft_mel - left) / (center - left)
    falling = (right - fft_mel) / (right - center)
    filters = torch.minimum(rising, falling).clamp_min(0.0)
    return torch.nn.functional.pad(filters, (0, 1))


def kaldi_fbank(
    waveforms: torch.Tensor, window: torch.Tensor, mel_filters: torch.Tensor, frame_shift: int
) -> torch.Tensor:
    """Batched Kaldi log-mel filter bank (snip_edges, no dither, no energy), equal to `kaldi.fbank` per row.

    Args:
        waveforms: `(batch, num_samples)` float32 clips of equal length, at least `len(window)` samples.
        window: `(frame_length,)` analysis window (symmetric Hann for the SSLAM recipe).
        mel_filters: `(num_mel_bins, fft_length // 2 + 1)` filters from [`kaldi_mel_filters`].
        frame_shift: hop between frames, in samples.

    Returns:
        `torch.Tensor` of shape `(batch, 1 + (num_samples - frame_length) // frame_shift, num_mel_bins)`.
    """
    fft_length = 2 * (mel_filters.shape[-1] - 1)
    frames = waveforms.unfold(-1, window.shape[0], frame_shift)
    frames = frames - frames.mean(dim=-1, keepdim=True)
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)  # Kaldi repeats the first sample
    frames = (frames - PREEMPHASIS_COEFFICIENT * previous) * window
    spectrum = torch.fft.rfft(frames, n=fft_length)
    power = spectrum.real.square() + spectrum.imag.square()
    return torch.matmul(power, mel_filters.T).clamp_min(LOG_FLOOR).log()


def torchaudio_fbank(waveform: torch.Tensor, sampling_rate: int, num_mel_bins: int) -> torch.Tensor:
    """The original recipe's `torchaudio.compliance.kaldi.fbank` call on a `(num_samples,)` clip -> `(frames, bins)`."""
    from torchaudio.compliance import kaldi

    return kaldi.fbank(
        waveform[None],
        htk_compat=True,
        sample_frequency=sampling_rate,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=num_mel_bins,
        dither=0.0,
        frame_shift=FRAME_SHIFT_MS,
    )


def _to_float_tensor(audio, name: str) -> torch.Tensor:
    """Turn an array, tensor or (nested) list into a float32 CPU tensor, rejecting non-float data."""
    if isinstance(audio, torch.Tensor):
        dtype, is_float = audio.dtype, audio.is_floating_point()
        integer = not (is_float or audio.is_complex() or dtype == torch.bool)
    else:
        audio = np.asarray(audio)
        dtype, is_float, integer = audio.dtype, audio.dtype.kind == "f", audio.dtype.kind in "iu"
    if integer:
        raise ValueError(
            f"{name} has integer dtype {dtype}. Convert it to float audio in [-1, 1] first, "
            "e.g. `audio.astype(np.float32) / 32768` for 16-bit PCM."
        )
    if not is_float:
        raise ValueError(f"{name} has unsupported dtype {dtype}; expected float audio in [-1, 1].")
    if isinstance(audio, np.ndarray):  # copy: read-only, strided or big-endian arrays are fine too
        return torch.from_numpy(np.array(audio, dtype=np.float32))
    return audio.detach().to(device="cpu", dtype=torch.float32)


def _average_channels(audio: torch.Tensor) -> torch.Tensor:
    """`(channels, samples)` or `(samples, channels)` -> `(samples,)`, averaging over the smaller axis."""
    return audio.mean(dim=int(audio.shape[1] < audio.shape[0]))


class SSLAMFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Turns 16 kHz mono waveforms into the normalised 128-bin Kaldi log-mel filter banks that SSLAM / EAT expect.

    Every clip has its waveform mean removed, goes through the Kaldi filter bank (25 ms frames, 10 ms hop), is
    padded with `padding_value` rows (in the log-mel domain) or truncated to `max_length` frames and normalised as
    `(x - mean) / (2 * std)`. Padded frames therefore become `(padding_value - mean) / (2 * std)`, not 0, exactly as
    in the original code.

    The constructor takes the vocabulary of transformers' `ASTFeatureExtractor` (`feature_size` is the number of input
    channels, `num_mel_bins` the mel bins, `max_length` the clip length in frames), so an AST user can switch by
    changing the class name. `target_length` is the original recipe's name of `max_length` and is accepted as an
    alias (also in `preprocessor_config.json` files written by earlier versions, whose `feature_size` held the mel
    bins).

    Args:
        feature_size (`int`, *optional*, defaults to 1):
            Channels of the input waveform; SSLAM takes mono audio.
        sampling_rate (`int`, *optional*, defaults to 16000):
            Sampling rate the model expects, in Hz.
        num_mel_bins (`int`, *optional*, defaults to 128):
            Mel bins of the filter bank (more than 3; a multiple of `patch_size`).
        max_length (`int` or `None`, *optional*, defaults to 1024):
            Frames per clip (1024 = 10 s), a multiple of `patch_size`. `None` makes `padding="longest"` the default:
            each clip keeps its own frame count, rounded up to a multiple of `patch_size`, and a batch is padded to
            its longest clip.
        padding_value (`float`, *optional*, defaults to 0.0):
            Log-mel value of padded frames, before normalisation.
        mean (`float`, *optional*, defaults to -4.268):
            Normalisation mean (AudioSet); see `NORMALIZATION_STATS` and [`~SSLAMFeatureExtractor.from_dataset_stats`].
        std (`float`, *optional*, defaults to 4.569):
            Normalisation standard deviation; features are divided by `2 * std`.
        do_normalize (`bool`, *optional*, defaults to `True`):
            Whether to normalise the filter banks.
        patch_size (`int`, *optional*, defaults to 16):
            Patch height of the model: padded lengths are multiples of it.
        return_attention_mask (`bool`, *optional*, defaults to `False`):
            Default for `__call__` with `padding="max_length"` (the original model sees padding unmasked).
        fbank_backend (`str`, *optional*, defaults to `"auto"`):
            `"torchaudio"` (reference implementation, one clip at a time), `"torch"` (vectorised re-implementation,
            batches equal-length clips) or `"auto"` (torchaudio when it can be imported, else torch).

    Example:

    ```python
    >>> import numpy as np
    >>> extractor = SSLAMFeatureExtractor()
    >>> audio = np.random.default_rng(0).uniform(-0.5, 0.5, 16000 * 10).astype(np.float32)
    >>> extractor(audio, sampling_rate=16000, return_tensors="pt")["input_values"].shape
    torch.Size([1, 1024, 128])
    ```
    """

    model_input_names = ["input_values", "attention_mask"]

    def __init__(
        self,
        feature_size: int = 1,
        sampling_rate: int = 16000,
        num_mel_bins: int | None = None,
        max_length: int | None = 1024,
        padding_value: float = 0.0,
        mean: float = -4.268,
        std: float = 4.569,
        do_normalize: bool = True,
        patch_size: int = 16,
        return_attention_mask: bool = False,
        fbank_backend: str = "auto",
        target_length=_UNSET,
        **kwargs,
    ):
        feature_size, num_mel_bins = _channels_and_mel_bins(feature_size, num_mel_bins)
        max_length = _resolve_alias("max_length", max_length, "target_length", target_length, default=1024)
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        if fbank_backend not in FBANK_BACKENDS:
            raise ValueError(f"fbank_backend must be one of {FBANK_BACKENDS}, got {fbank_backend!r}.")
        if fbank_backend == "torchaudio":
            _require_torchaudio('fbank_backend="torchaudio"')
        _check_positive_int("patch_size", patch_size)
        _check_positive_int("sampling_rate", sampling_rate)
        if num_mel_bins <= 3 or num_mel_bins % patch_size != 0:
            raise ValueError(
                f"num_mel_bins must be more than 3 and a multiple of patch_size ({patch_size}), got {num_mel_bins}."
            )
        _check_frame_count("max_length", max_length, patch_size, allow_none=True)
        if not (isinstance(std, (int, float)) and math.isfinite(std) and std > 0):
            raise ValueError(f"std must be positive and finite, got {std}.")
        if not (isinstance(mean, (int, float)) and math.isfinite(mean)):
            raise ValueError(f"mean must be a finite number, got {mean}.")
        self.num_mel_bins = num_mel_bins
        self.max_length = max_length
        self.mean = mean
        self.std = std
        self.do_normalize = do_normalize
        self.patch_size = patch_size
        self.fbank_backend = fbank_backend
        # Cached arrays under the names that `to_dict` leaves out of preprocessor_config.json.
        self.window = torch.hann_window(self.frame_length, periodic=False, dtype=torch.float32)
        self.mel_filters = kaldi_mel_filters(num_mel_bins, self.fft_length, sampling_rate)

    @property
    def target_length(self) -> int | None:
        """The original recipe's name of `max_length` (an alias: reads and writes `max_length`)."""
        return self.max_length

    @target_length.setter
    def target_length(self, value: int | None) -> None:
        _check_frame_count("target_length", value, self.patch_size, allow_none=True)
        self.max_length = value

    @classmethod
    def from_dataset_stats(cls, dataset: str, **kwargs) -> "SSLAMFeatureExtractor":
        """Extractor normalised with the statistics of one of `NORMALIZATION_STATS` (e.g. `"esc50"`)."""
        if dataset not in NORMALIZATION_STATS:
            raise ValueError(f"Unknown dataset {dataset!r}; known: {sorted(NORMALIZATION_STATS)}.")
        mean, std = NORMALIZATION_STATS[dataset]
        return cls(mean=mean, std=std, **kwargs)

    @property
    def frame_length(self) -> int:
        """Analysis window length in samples (25 ms)."""
        return int(self.sampling_rate * FRAME_LENGTH_MS / 1000)

    @property
    def frame_shift(self) -> int:
        """Hop between frames in samples (10 ms)."""
        return int(self.sampling_rate * FRAME_SHIFT_MS / 1000)

    @property
    def fft_length(self) -> int:
        """FFT size: the window length rounded up to a power of two."""
        return 1 << (self.frame_length - 1).bit_length()

    @property
    def min_num_samples(self) -> int:
        """Fewest samples that yield `patch_size` frames (the minimum when clips keep their own length)."""
        return self.frame_length + self.frame_shift * (self.patch_size - 1)

    def num_frames(self, num_samples: int) -> int:
        """Filter-bank frames Kaldi computes from `num_samples` samples (snip_edges: whole windows only)."""
        return 1 + (num_samples - self.frame_length) // self.frame_shift

    def __call__(
        self,
        raw_speech,
        sampling_rate: int | None = None,
        padding: bool | str | None = None,
        max_length: int | None = None,
        truncation: bool | None = None,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | TensorType | None = None,
        resample: bool = False,
        average_channels: bool = False,
        add_channel_dim: bool = False,
        target_length=_UNSET,
        clip_names: Sequence[str] | None = None,
        **kwargs,
    ) -> BatchFeature:
        """
        Compute model inputs for one clip or a batch.

        Args:
            raw_speech (`np.ndarray`, `torch.Tensor`, `list[float]` or a list of those):
                Float audio in [-1, 1]. A 1-D array or a list of numbers is one clip; a list of arrays is a batch. A
                2-D array, alone or inside a list, is always one clip: `(samples, 1)` or `(1, samples)` is mono
                (`soundfile.read(..., always_2d=True)` returns mono that way), any other 2-D shape is multi-channel
                audio (`(channels, samples)` or `(samples, channels)`, the channels on the shorter axis), averaged
                with `average_channels=True` and refused otherwise. A batch is passed as a list (`list(array)` for
                the rows of a 2-D array), so stereo is never read as two clips. Samples beyond
                `MAX_EXPECTED_PEAK` (2.0) are logged as a warning (audio on another scale, e.g. int16); samples so
                large that the filter bank overflows float32 raise.
            sampling_rate (`int`, *optional*):
                Rate of `raw_speech`; strongly recommended, it is checked against `self.sampling_rate`.
            padding (`bool` or `str`, *optional*):
                `"max_length"` (the original recipe): every clip padded or truncated to `max_length` frames.
                `True` / `"longest"`: clips keep their own frame counts, rounded up to `pad_to_multiple_of`, and the
                batch is padded to its longest clip. `False` / `"do_not_pad"`: no padding at all (the frame count of
                each clip as Kaldi gives it; a batch must then have equal lengths for tensors). Default:
                `"max_length"`, or `"longest"` when the extractor's `max_length` is None.
            max_length (`int`, *optional*):
                Frames for `padding="max_length"` and the truncation length; default: the extractor's `max_length`.
                A positive multiple of `patch_size`.
            truncation (`bool`, *optional*):
                Cut clips longer than `max_length` frames. Default: True with `padding="max_length"` (the recipe) or
                when `max_length` is given, else False.
            pad_to_multiple_of (`int`, *optional*):
                With `padding="longest"`, round the padded length up to a multiple of this (default and minimum: a
                multiple of `patch_size`, which the model needs).
            return_attention_mask (`bool`, *optional*):
                Whether to return the `(batch, frames)` int32 frame mask (1 = computed from audio, 0 = padding).
                Defaults to `True` with `padding="longest"`, else to `self.return_attention_mask`.
            return_tensors (`str` or [`~utils.TensorType`], *optional*):
                `"pt"` for torch tensors, `"np"` or `None` for numpy arrays.
            resample (`bool`, *optional*, defaults to `False`):
                Resample audio at another rate with `torchaudio.functional.resample` instead of raising.
            average_channels (`bool`, *optional*, defaults to `False`):
                Average multi-channel clips to mono instead of raising.
            add_channel_dim (`bool`, *optional*, defaults to `False`):
                Return `input_values` as `(batch, 1, frames, mel_bins)` (the original layout).
            target_length (`int` or `None`, *optional*):
                The original recipe's argument: an int means `padding="max_length", max_length=target_length`; None
                means `padding="longest"`.
            clip_names (`Sequence[str]`, *optional*):
                One name per clip, used in errors and warnings (default: "The audio" for one clip, "Clip i" in a
                list), e.g. file names, or a helper's index of the caller's clip instead of its internal batch.

        Returns:
            [`BatchFeature`] with `input_values` of shape `(batch, frames, mel_bins)` (float32) and, if requested,
            `attention_mask` of shape `(batch, frames)` (int32).
        """
        if kwargs:
            raise TypeError(f"{type(self).__name__}.__call__ got unexpected argument(s) {sorted(kwargs)}.")
        if target_length is not _UNSET:
            if padding is not None or max_length is not None:
                raise ValueError("pass either target_length (the original's name) or padding/max_length, not both.")
            _check_frame_count("target_length", target_length, self.patch_size, allow_none=True)
            padding, max_length = ("longest", None) if target_length is None else ("max_length", target_length)
        plan = self._padding_plan(padding, max_length, truncation, pad_to_multiple_of)
        if return_attention_mask is None:
            return_attention_mask = plan.strategy == "longest" or self.return_attention_mask
        needs_resampling = self._check_sampling_rate(sampling_rate, resample)

        names = _clip_names(raw_speech, clip_names)
        clips = self._split_clips(raw_speech, names, average_channels)
        min_samples = self.frame_length if plan.strategy == "max_length" else self.min_num_samples
        clips = [
            self._prepare_clip(clip, name, sampling_rate if needs_resampling else None, min_samples)
            for clip, name in zip(clips, names)
        ]
        _warn_about_loud_clips(clips, names)
        fbanks = self._compute_fbanks(clips)
        _check_finite_fbanks(fbanks, clips, names)
        input_values, attention_mask = self._pad_and_stack(fbanks, plan)
        if isinstance(input_values, list) and return_tensors is not None:
            raise ValueError(
                "padding='do_not_pad' gave clips of different lengths, which cannot form one tensor: pass "
                "padding=True (or return_tensors=None for a list of arrays)."
            )
        if self.do_normalize:
            input_values = _apply(lambda values: (values - self.mean) / (self.std * 2), input_values)
        if add_channel_dim:
            input_values = _apply(lambda values: values.unsqueeze(-3), input_values)

        data = {"input_values": input_values}
        if return_attention_mask:
            data["attention_mask"] = attention_mask
        if return_tensors is None or TensorType(return_tensors) != TensorType.PYTORCH:
            data = {key: _apply(lambda value: value.numpy(), value) for key, value in data.items()}
        return BatchFeature(data, tensor_type=return_tensors)

    def _padding_plan(self, padding, max_length, truncation, pad_to_multiple_of) -> "PaddingPlan":
        """Validates the padding arguments against the recipe and resolves their defaults."""
        if padding is None:
            padding = "max_length" if self.max_length is not None else "longest"
        strategies = {True: "longest", "longest": "longest", "max_length": "max_length", False: "do_not_pad",
                      "do_not_pad": "do_not_pad"}
        if isinstance(padding, PaddingStrategy):
            padding = padding.value
        if not isinstance(padding, (bool, str)) or padding not in strategies:
            raise ValueError(
                f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}."
            )
        strategy = strategies[padding]
        _check_frame_count("max_length", max_length, self.patch_size, allow_none=True)
        length = max_length if max_length is not None else self.max_length
        if strategy == "max_length" and length is None:
            raise ValueError("padding='max_length' needs a max_length (the extractor's max_length is None).")
        if truncation is None:
            truncation = strategy == "max_length" or max_length is not None
        if truncation and length is None:
            raise ValueError("truncation=True needs a max_length (the extractor's max_length is None).")
        multiple = self.patch_size if pad_to_multiple_of is None else pad_to_multiple_of
        _check_frame_count("pad_to_multiple_of", multiple, self.patch_size)
        return PaddingPlan(strategy, length if truncation or strategy == "max_length" else None, multiple)

    def _check_sampling_rate(self, sampling_rate: int | None, resample: bool) -> bool:
        """Validate `sampling_rate`; return whether the audio must be resampled."""
        if sampling_rate is None:
            logger.warning(
                f"No `sampling_rate` was passed to {self.__class__.__name__}; assuming {self.sampling_rate} Hz. "
                "Pass `sampling_rate` to catch silent errors from audio at another rate."
            )
            return False
        if sampling_rate == self.sampling_rate:
            return False
        if not resample:
            raise ValueError(
                f"The audio has a sampling rate of {sampling_rate} Hz but {self.__class__.__name__} expects "
                f"{self.sampling_rate} Hz. Resample it first, or pass `resample=True` to resample it here."
            )
        if sampling_rate <= 0 or sampling_rate != int(sampling_rate):
            raise ValueError(f"sampling_rate must be a positive integer to resample, got {sampling_rate}.")
        _require_torchaudio("resample=True")
        return True

    def _split_clips(self, raw_speech, names: list[str], average_channels: bool) -> list[torch.Tensor]:
        """Split the accepted input layouts into a list of mono float32 clips, one per name."""
        if isinstance(raw_speech, (np.ndarray, torch.Tensor)):
            return [self._to_mono(raw_speech, names[0], average_channels)]
        if isinstance(raw_speech[0], (Number, np.generic)):
            return [_to_float_tensor(raw_speech, names[0])]
        return [self._to_mono(clip, name, average_channels) for clip, name in zip(raw_speech, names)]

    @staticmethod
    def _to_mono(clip, name: str, average_channels: bool) -> torch.Tensor:
        """One clip -> `(samples,)`: 1-D as it is, 2-D with a size-1 axis as mono, other 2-D clips (multi-channel)
        averaged only when allowed."""
        audio = _to_float_tensor(clip, name)
        if audio.ndim == 1:
            return audio
        if audio.ndim == 2 and 1 in audio.shape:
            return audio.reshape(-1)
        if audio.ndim == 2 and average_channels:
            return _average_channels(audio)
        if audio.ndim == 2:
            raise ValueError(
                f"{name} has shape {tuple(audio.shape)}: a 2-D array is one multi-channel clip ({min(audio.shape)} "
                "channels) and SSLAM expects mono. Pass `average_channels=True` to average the channels, or pass a "
                "batch of clips as a list of 1-D arrays (e.g. `list(array)`)."
            )
        raise ValueError(f"{name} has shape {tuple(audio.shape)}; expected 1-D mono audio.")

    def _prepare_clip(
        self, audio: torch.Tensor, name: str, resample_from: int | None, min_samples: int
    ) -> torch.Tensor:
        """Validate a `(samples,)` clip, resample it if asked, and remove its mean."""
        if audio.numel() == 0:
            raise ValueError(f"{name} is empty.")
        if not torch.isfinite(audio.sum()) and not torch.isfinite(audio).all():
            raise ValueError(f"{name} contains NaN or infinite values.")
        if resample_from is not None:
            import torchaudio.functional

            audio = torchaudio.functional.resample(audio, orig_freq=int(resample_from), new_freq=self.sampling_rate)
        if audio.shape[0] < min_samples:
            needed = "one 25 ms frame" if min_samples < self.min_num_samples else f"one patch of {self.patch_size} frames"
            raise ValueError(
                f"{name} is too short: {audio.shape[0]} samples at {self.sampling_rate} Hz, but at least "
                f"{min_samples} samples are needed for {needed}."
            )
        return audio - audio.mean()

    def _resolved_backend(self) -> str:
        if self.fbank_backend == "auto":
            return "torchaudio" if is_torchaudio_available() else "torch"
        return self.fbank_backend

    def _compute_fbanks(self, clips: list[torch.Tensor]) -> list[torch.Tensor]:
        """Log-mel filter banks `(frames_i, mel_bins)` of mean-removed clips; torch stacks equal lengths."""
        if self._resolved_backend() == "torchaudio":
            return [torchaudio_fbank(clip, self.sampling_rate, self.num_mel_bins) for clip in clips]
        fbanks = [None] * len(clips)
        for chunk in self._equal_length_chunks(clips):
            batch = torch.stack([clips[index] for index in chunk])
            for index, fbank in zip(chunk, kaldi_fbank(batch, self.window, self.mel_filters, self.frame_shift)):
                fbanks[index] = fbank
        return fbanks

    def _equal_length_chunks(self, clips: list[torch.Tensor]) -> list[list[int]]:
        """Indices of equal-length clips, in chunks of at most `MAX_FRAMES_PER_CALL` frames (at least one clip)."""
        groups = defaultdict(list)
        for index, clip in enumerate(clips):
            groups[clip.shape[0]].append(index)
        chunks = []
        for num_samples, indices in groups.items():
            size = max(1, MAX_FRAMES_PER_CALL // self.num_frames(num_samples))
            chunks += [indices[start : start + size] for start in range(0, len(indices), size)]
        return chunks

    def _pad_and_stack(
        self, fbanks: list[torch.Tensor], plan: "PaddingPlan"
    ) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor | list[torch.Tensor]]:
        """Truncates, pads with `padding_value` and stacks the filter banks as `plan` says.

        Returns:
            features `(batch, frames, mel_bins)` and the int32 frame mask `(batch, frames)`; with
            `padding="do_not_pad"` and clips of different lengths, lists of `(frames_i, mel_bins)` / `(frames_i,)`.
        """
        if plan.truncate_to is not None:
            fbanks = [fbank[: plan.truncate_to] for fbank in fbanks]
        lengths = [fbank.shape[0] for fbank in fbanks]
        if plan.strategy == "do_not_pad" and len(set(lengths)) > 1:
            return fbanks, [torch.ones(length, dtype=torch.int32) for length in lengths]
        if plan.strategy == "max_length":
            frames = plan.truncate_to
        elif plan.strategy == "longest":
            frames = math.ceil(max(lengths) / plan.multiple) * plan.multiple
        else:
            frames = max(lengths)
        features = torch.full((len(fbanks), frames, self.num_mel_bins), float(self.padding_value))
        attention_mask = torch.zeros((len(fbanks), frames), dtype=torch.int32)
        for row, fbank in enumerate(fbanks):
            features[row, : fbank.shape[0]] = fbank
            attention_mask[row, : fbank.shape[0]] = 1
        return features, attention_mask


@dataclass(frozen=True)
class PaddingPlan:
    """How `SSLAMFeatureExtractor.__call__` pads: `strategy` ("max_length", "longest" or "do_not_pad"), the length
    clips are cut to (None = no truncation; for "max_length" also the padded length) and the multiple "longest"
    rounds up to."""

    strategy: str
    truncate_to: int | None
    multiple: int


def _clip_names(raw_speech, clip_names: Sequence[str] | None) -> list[str]:
    """The name of each clip of `raw_speech` in messages: `clip_names`, else "The audio" (one array or one list of
    numbers) or "Clip i" (the i-th element of a list of clips)."""
    if isinstance(raw_speech, (np.ndarray, torch.Tensor)):
        defaults = ["The audio"]
    elif not isinstance(raw_speech, (list, tuple)):
        raise TypeError(f"Expected audio as an array, a tensor or a list, got {type(raw_speech).__name__}.")
    elif len(raw_speech) == 0:
        raise ValueError("The audio is empty: got an empty list.")
    elif isinstance(raw_speech[0], (Number, np.generic)):
        defaults = ["The audio"]
    else:
        defaults = [f"Clip {index}" for index in range(len(raw_speech))]
    if clip_names is None:
        return defaults
    names = [str(name) for name in clip_names]
    if len(names) != len(defaults):
        raise ValueError(f"clip_names has {len(names)} name(s) for {len(defaults)} clip(s).")
    return names


def _warn_about_loud_clips(clips: list[torch.Tensor], names: list[str]) -> None:
    """Logs the clips whose (mean-removed) samples reach beyond `MAX_EXPECTED_PEAK`: audio on another scale."""
    peaks = [float(clip.abs().max()) for clip in clips]
    loud = [f"{name} (peak {peak:.4g})" for name, peak in zip(names, peaks) if peak > MAX_EXPECTED_PEAK]
    if loud:
        logger.warning(
            f"{', '.join(loud)}: samples far outside [-1, 1]. SSLAM expects float audio in [-1, 1]; audio on the "
            "int16 scale must be divided by 32768. The features of these clips do not match what the model learned."
        )


def _check_finite_fbanks(fbanks: list[torch.Tensor], clips: list[torch.Tensor], names: list[str]) -> None:
    """Raises naming the first clip whose filter bank is not finite (finite samples so large that float32 overflows)."""
    for fbank, clip, name in zip(fbanks, clips, names):
        if not torch.isfinite(fbank).all():
            raise ValueError(
                f"{name} has samples up to {float(clip.abs().max()):.3g} in magnitude, which overflow the float32 "
                "filter bank (inf/NaN features). SSLAM expects float audio in [-1, 1]: rescale the audio."
            )


def _apply(function, value):
    """`function(value)`, or `[function(item) ...]` for a list (the per-clip arrays of `padding="do_not_pad"`)."""
    return [function(item) for item in value] if isinstance(value, list) else function(value)


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _check_frame_count(name: str, value, patch_size: int, allow_none: bool = False) -> None:
    """A frame count the model can take: a positive int multiple of `patch_size` (or None when allowed)."""
    if value is None and allow_none:
        return
    _check_positive_int(name, value)
    if value % patch_size != 0:
        raise ValueError(
            f"{name} must be a multiple of patch_size ({patch_size}) frames, which the model needs; got {value}."
        )


def _resolve_alias(name: str, value, alias: str, alias_value, default):
    """`value`, or the alias's value when only the alias was given (e.g. an older `preprocessor_config.json`)."""
    if alias_value is _UNSET:
        return value
    if alias_value is not None:
        _check_positive_int(alias, alias_value)
    if value != default and value != alias_value:
        raise ValueError(f"{name}={value!r} and its alias {alias}={alias_value!r} disagree; pass only {name}.")
    return alias_value


def _channels_and_mel_bins(feature_size, num_mel_bins) -> tuple[int, int]:
    """AST's vocabulary: `feature_size` = input channels (1), `num_mel_bins` = mel bins. A `feature_size` above 1
    without `num_mel_bins` is how earlier versions of this extractor stored the mel bins; it is read that way."""
    if num_mel_bins is None:
        if feature_size == 1:
            return 1, 128
        logger.info(f"Reading feature_size={feature_size} as num_mel_bins (the layout of earlier SSLAM extractors).")
        return 1, feature_size
    if feature_size != 1:
        raise ValueError(
            f"feature_size is the number of input channels and SSLAM takes mono audio: it must be 1, got "
            f"{feature_size} (the mel bins are num_mel_bins)."
        )
    return feature_size, num_mel_bins


__all__ = ["NORMALIZATION_STATS", "SSLAMFeatureExtractor", "kaldi_fbank", "kaldi_mel_filters"]
