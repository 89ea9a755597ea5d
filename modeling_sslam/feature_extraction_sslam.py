# Copyright 2026 The sslam project authors.
# Licensed under the MIT License.
"""Feature extractor for SSLAM / EAT: 128-bin Kaldi log-mel filter banks, padded and normalised as in the original.

Recipe of the original inference and training code, per clip: mono 16 kHz float waveform in [-1, 1] -> subtract the
waveform mean -> `torchaudio.compliance.kaldi.fbank(x[None], htk_compat=True, sample_frequency=16000,
use_energy=False, window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)` -> zero-pad (log-mel domain)
or truncate to `target_length` frames -> `(x - mean) / (2 * std)`.

Two back ends compute the filter bank. `"torch"` (the default) is a vectorised re-implementation of the same recipe
in torch ops, computed in cache-sized chunks of frames straight into the output, on any device; it agrees with
torchaudio to float32 rounding (about 1e-6 on the log-mel values), not bit for bit, because it forms the power
spectrum as re^2 + im^2 and applies the mel filters band by band. `"torchaudio"` calls the original's
`kaldi.fbank` one clip at a time and reproduces the original bit for bit.
"""

import functools
import importlib
import math
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
# "auto" is the name earlier versions saved for the default; it means "torch" now.
FBANK_BACKENDS = ("torch", "torchaudio", "auto")
# Frames per vectorised fbank call. Each intermediate is then (frames x 512 floats) = 1 MB and stays in a core's L2
# cache: a whole 10 s clip (998 frames) per call was 3x slower per frame on the 2-core EPYC (see benchmarks/).
FRAMES_PER_CHUNK = 512
# Consecutive mel filters applied as one block, restricted to the FFT bins where one of them is non-zero: 16 gives
# the fewest multiply-adds that still run at matmul speed (6x fewer than the dense 257 x 128 product).
FILTERS_PER_BAND = 16
# Float audio is expected in [-1, 1]. Resampling and lossy decoding overshoot full scale a little; a clip whose samples
# (mean removed) reach beyond this is almost surely on another scale (e.g. int16 values stored as floats) and is logged.
MAX_EXPECTED_PEAK = 2.0

MAX_CHANNEL_LIKE_ROWS = 8  # a 2-D batch with this many rows or fewer could be multi-channel audio (warned about)
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


def mel_filter_bands(mel_filters: torch.Tensor, filters_per_band: int = FILTERS_PER_BAND) -> tuple:
    """Splits dense mel filters into blocks of consecutive filters over the FFT bins where they are non-zero.

    Args:
        mel_filters: `(num_mel_bins, num_fft_bins)` from [`kaldi_mel_filters`].

    Returns:
        tuple of `(first_bin, end_bin, weights)` with `weights` of shape `(end_bin - first_bin, filters)`, in filter
        order; `power[..., first_bin:end_bin] @ weights` are those filters' energies (see [`apply_mel_bands`]).
    """
    bands = []
    for first in range(0, mel_filters.shape[0], filters_per_band):
        block = mel_filters[first : first + filters_per_band]
        used = block.ne(0).any(dim=0).nonzero().flatten()
        low, high = (int(used.min()), int(used.max()) + 1) if used.numel() else (0, 1)
        bands.append((low, high, block[:, low:high].T.contiguous()))
    return tuple(bands)


def apply_mel_bands(power: torch.Tensor, mel_bands: tuple) -> torch.Tensor:
    """`(..., num_fft_bins)` power spectra -> `(..., num_mel_bins)` mel energies, band by band."""
    return torch.cat([power[..., low:high] @ weights for low, high, weights in mel_bands], dim=-1)


def frames_log_mel(
    frames: torch.Tensor, window: torch.Tensor, mel_bands: tuple, fft_length: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Kaldi log-mel energies of analysis frames: per-frame DC removal, pre-emphasis 0.97 (first sample repeated),
    window, `|rfft(n=fft_length)|^2`, mel filters, `log(max(x, eps))`.

    Args:
        frames: `(..., num_frames, frame_length)` float32 frames (a strided view of the waveform is fine).
        window: `(frame_length,)` analysis window. mel_bands: [`mel_filter_bands`] of the mel filters.
        out: optional `(..., num_frames, num_mel_bins)` tensor to write the result into.

    Returns:
        `(..., num_frames, num_mel_bins)` log mel energies.
    """
    frames = frames - frames.mean(dim=-1, keepdim=True)
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    frames = (frames - PREEMPHASIS_COEFFICIENT * previous) * window
    spectrum = torch.fft.rfft(frames, n=fft_length)
    power = spectrum.real.square() + spectrum.imag.square()
    return torch.log(apply_mel_bands(power, mel_bands).clamp_min_(LOG_FLOOR), out=out)


def kaldi_fbank(
    waveforms: torch.Tensor, window: torch.Tensor, mel_bands: tuple, fft_length: int, frame_shift: int
) -> torch.Tensor:
    """Batched Kaldi log-mel filter bank (snip_edges, no dither, no energy), equal to `kaldi.fbank` per row up to
    float32 rounding. Pure torch ops: runs on any device and exports (torch.export, ONNX).

    Args:
        waveforms: `(..., num_samples)` float32 clips of equal length, at least `len(window)` samples.
        window: `(frame_length,)` analysis window (symmetric Hann for the SSLAM recipe).
        mel_bands: [`mel_filter_bands`] of the filters from [`kaldi_mel_filters`]. frame_shift: hop in samples.

    Returns:
        `torch.Tensor` of shape `(..., 1 + (num_samples - frame_length) // frame_shift, num_mel_bins)`.
    """
    return frames_log_mel(waveforms.unfold(-1, window.shape[0], frame_shift), window, mel_bands, fft_length)


def normalize_fbank(values: torch.Tensor, mean: float, std: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """The recipe's normalisation `(x - mean) / (2 * std)` (into `out`, which may be `values`, when given)."""
    return torch.div(torch.sub(values, mean, out=out), std * 2, out=out)


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
        fbank_backend (`str`, *optional*, defaults to `"torch"`):
            `"torch"` (vectorised re-implementation in torch ops, on any device; equal to the original up to float32
            rounding) or `"torchaudio"` (the original's `kaldi.fbank` call, one clip at a time; bit for bit).
            `"auto"`, the default saved by earlier versions, means `"torch"`.

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
        fbank_backend: str = "torch",
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
        self._mel_bands = mel_filter_bands(self.mel_filters)

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
        device: str | torch.device | None = None,
        target_length=_UNSET,
        clip_names: Sequence[str] | None = None,
        **kwargs,
    ) -> BatchFeature:
        """
        Compute model inputs for one clip or a batch.

        Args:
            raw_speech (`np.ndarray`, `torch.Tensor`, `list[float]` or a list of those):
                Float audio in [-1, 1]. A 1-D array or a list of numbers is one clip; a list of arrays is a batch. A
                2-D array is a batch of equal-length clips, one per row (transformers' convention, as AST reads it),
                except that `(samples, 1)` and `(1, samples)` are one mono clip (`soundfile.read(...,
                always_2d=True)` returns mono that way) and that with `average_channels=True` a 2-D array is one
                multi-channel clip, averaged. A 2-D array of at most 8 rows may be multi-channel audio: it is read as
                a batch and a warning says so; a `(samples, channels)` array with at most 8 columns is multi-channel
                audio, refused unless `average_channels=True`. Inside a list, a 2-D element is multi-channel audio (`(channels,
                samples)` or `(samples, channels)`, the channels on the shorter axis), averaged with
                `average_channels=True` and refused otherwise. Samples beyond
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
            device (`str` or `torch.device`, *optional*):
                Device to compute the filter banks on (e.g. `"cuda"`), where `return_tensors="pt"` outputs stay.
                Default: the CPU.
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

        raw_speech = _rows_of_a_batch(raw_speech, average_channels)
        names = _clip_names(raw_speech, clip_names)
        clips = self._split_clips(raw_speech, names, average_channels)
        resample_from = sampling_rate if needs_resampling else None
        clips = [self._prepare_clip(clip, name, resample_from) for clip, name in zip(clips, names)]
        _warn_about_loud_clips(clips, names)
        lengths = [self.num_frames(clip.shape[0]) for clip in clips]
        if plan.truncate_to is not None:
            lengths = [min(length, plan.truncate_to) for length in lengths]
        if plan.strategy == "do_not_pad" and len(set(lengths)) > 1 and return_tensors is not None:
            raise ValueError(
                "padding='do_not_pad' gives clips of different lengths, which cannot form one tensor: pass "
                "padding=True (or return_tensors=None for a list of arrays)."
            )
        device = torch.device("cpu") if device is None else torch.device(device)
        clips = [clip.to(device) for clip in clips]
        input_values, attention_mask, rows = self._allocate_outputs(lengths, plan, device)
        self._compute_fbanks(clips, rows, names)
        if add_channel_dim:
            input_values = _apply(lambda values: values.unsqueeze(-3), input_values)

        data = {"input_values": input_values}
        if return_attention_mask:
            data["attention_mask"] = _apply(lambda mask: mask.to(device), attention_mask)
        if return_tensors is None or TensorType(return_tensors) != TensorType.PYTORCH:
            data = {key: _apply(lambda value: value.cpu().numpy(), value) for key, value in data.items()}
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
                f"{name} has shape {tuple(audio.shape)}: multi-channel audio ({min(audio.shape)} channels) and SSLAM "
                "expects mono. Pass `average_channels=True` to average the channels, or pass a batch of clips as a "
                "list of 1-D arrays (e.g. `list(array)`)."
            )
        raise ValueError(f"{name} has shape {tuple(audio.shape)}; expected 1-D mono audio.")

    def _prepare_clip(self, audio: torch.Tensor, name: str, resample_from: int | None) -> torch.Tensor:
        """Validate a `(samples,)` clip, resample it if asked, and remove its mean."""
        if audio.numel() == 0:
            raise ValueError(f"{name} is empty.")
        if not torch.isfinite(audio.sum()) and not torch.isfinite(audio).all():
            raise ValueError(f"{name} contains NaN or infinite values.")
        if resample_from is not None:
            import torchaudio.functional

            audio = torchaudio.functional.resample(audio, orig_freq=int(resample_from), new_freq=self.sampling_rate)
        if audio.shape[0] < self.frame_length:
            raise ValueError(
                f"{name} is too short: {audio.shape[0]} samples at {self.sampling_rate} Hz, but at least "
                f"{self.frame_length} samples are needed for one 25 ms frame."
            )
        return audio - audio.mean()

    def _resolved_backend(self) -> str:
        return "torch" if self.fbank_backend == "auto" else self.fbank_backend

    def _compute_fbanks(self, clips: list[torch.Tensor], rows: list[torch.Tensor], names: list[str]) -> None:
        """Writes the (normalised) log-mel filter bank of each mean-removed clip into `rows[i]` `(frames_i, mel_bins)`:
        its first `frames_i` Kaldi frames (clips are cut before the transform: frames are independent). Each clip is
        checked and normalised while it is still in cache."""
        torchaudio_backend = self._resolved_backend() == "torchaudio"
        window, bands = self.window, self._mel_bands
        if clips and clips[0].device != window.device:
            device = clips[0].device
            window = window.to(device)
            bands = tuple((low, high, weights.to(device)) for low, high, weights in bands)
        for clip, row, name in zip(clips, rows, names):
            if torchaudio_backend:
                row.copy_(torchaudio_fbank(clip, self.sampling_rate, self.num_mel_bins)[: row.shape[0]])
            else:
                frames = clip.unfold(0, self.frame_length, self.frame_shift)
                for start in range(0, row.shape[0], FRAMES_PER_CHUNK):
                    stop = min(start + FRAMES_PER_CHUNK, row.shape[0])
                    frames_log_mel(frames[start:stop], window, bands, self.fft_length, out=row[start:stop])
            _check_finite_fbanks([row], [clip], [name])
            if self.do_normalize:
                normalize_fbank(row, self.mean, self.std, out=row)

    def _allocate_outputs(
        self, lengths: list[int], plan: "PaddingPlan", device: torch.device
    ) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor | list[torch.Tensor], list[torch.Tensor]]:
        """The padded output and frame mask for clips of `lengths` kept frames, and each clip's rows to fill.

        Returns:
            features `(batch, frames, mel_bins)` (padding rows set to `padding_value`, normalised if the features
            are), the int32 frame mask
            `(batch, frames)` and the views `features[i, :lengths[i]]`; with `padding="do_not_pad"` and clips of
            different lengths, lists of `(frames_i, mel_bins)` / `(frames_i,)` tensors instead.
        """
        bins = self.num_mel_bins
        if plan.strategy == "do_not_pad" and len(set(lengths)) > 1:
            features = [torch.empty((length, bins), device=device) for length in lengths]
            return features, [torch.ones(length, dtype=torch.int32) for length in lengths], features
        if plan.strategy == "max_length":
            frames = math.ceil(plan.truncate_to / plan.multiple) * plan.multiple
        elif plan.strategy == "longest":
            frames = math.ceil(max(lengths) / plan.multiple) * plan.multiple
        else:
            frames = max(lengths)
        features = torch.empty((len(lengths), frames, bins), device=device)
        attention_mask = torch.zeros((len(lengths), frames), dtype=torch.int32)
        padding_row = torch.tensor(float(self.padding_value), device=device)
        if self.do_normalize:  # the value normalising a padding row gives (same float32 operations)
            padding_row = normalize_fbank(padding_row, self.mean, self.std)
        for row, length in enumerate(lengths):
            features[row, length:] = padding_row
            attention_mask[row, :length] = 1
        return features, attention_mask, [features[row, :length] for row, length in enumerate(lengths)]

    def to_dict(self) -> dict:
        output = super().to_dict()
        output.pop("_mel_bands", None)  # derived from mel_filters, which is not saved either
        return output


@dataclass(frozen=True)
class PaddingPlan:
    """How `SSLAMFeatureExtractor.__call__` pads: `strategy` ("max_length", "longest" or "do_not_pad"), the length
    clips are cut to (None = no truncation; for "max_length" also the padded length) and the multiple "longest"
    rounds up to."""

    strategy: str
    truncate_to: int | None
    multiple: int


def _rows_of_a_batch(raw_speech, average_channels: bool):
    """A 2-D array that is a batch (transformers' convention) -> the list of its rows; anything else as given. A
    batch of at most `MAX_CHANNEL_LIKE_ROWS` rows could be multi-channel audio: a warning says how it was read."""
    if not isinstance(raw_speech, (np.ndarray, torch.Tensor)) or raw_speech.ndim != 2:
        return raw_speech
    rows, columns = raw_speech.shape
    if 1 in raw_speech.shape or average_channels or columns <= MAX_CHANNEL_LIKE_ROWS < rows:
        return raw_speech  # one clip: mono, to be averaged, or `(samples, channels)` audio (refused unless averaged)
    if rows <= MAX_CHANNEL_LIKE_ROWS:
        logger.warning(
            f"A 2-D array of shape {tuple(raw_speech.shape)} is read as a batch of {rows} clips (one per row, "
            f"transformers' convention). If it is one {rows}-channel recording, pass `average_channels=True`."
        )
    return list(raw_speech)


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
    peaks = [max(-float(low), float(high)) for low, high in (torch.aminmax(clip) for clip in clips)]  # one pass
    loud = [f"{name} (peak {peak:.4g})" for name, peak in zip(names, peaks) if peak > MAX_EXPECTED_PEAK]
    if loud:
        logger.warning(
            f"{', '.join(loud)}: samples far outside [-1, 1]. SSLAM expects float audio in [-1, 1]; audio on the "
            "int16 scale must be divided by 32768. The features of these clips do not match what the model learned."
        )


def _check_finite_fbanks(fbanks: list[torch.Tensor], clips: list[torch.Tensor], names: list[str]) -> None:
    """Raises naming the first clip whose filter bank is not finite (finite samples so large that float32 overflows)."""
    for fbank, clip, name in zip(fbanks, clips, names):
        # One reduction instead of isfinite's four passes: log-mel values are bounded, so the sum of finite ones
        # cannot overflow, and it is inf or NaN exactly when an element is.
        if not torch.isfinite(fbank.sum()):
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


__all__ = [
    "NORMALIZATION_STATS",
    "SSLAMFeatureExtractor",
    "apply_mel_bands",
    "frames_log_mel",
    "kaldi_fbank",
    "kaldi_mel_filters",
    "mel_filter_bands",
    "normalize_fbank",
]
