# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""Pre-training data sources.

Every source becomes a dataset of *undecoded* audio references; decoding, resampling and the filter bank happen in the
collator, i.e. in the DataLoader workers. Items have the form `{"audio": source, "epoch": int, "index": int}`, where
`source` is a file path, a `{"bytes", "path"}` dict (datasets' `Audio(decode=False)`), a `{"array", "sampling_rate"}`
dict or a torchcodec `AudioDecoder`. `(epoch, index)` is the item's identity: the collator derives the item's masks
(and random crop) from it, so masks do not depend on batch composition, worker count, number of processes or resumes.

Sources:
- a folder of audio files (searched recursively),
- the original `.tsv` manifest (first line: root folder; then `relative_path<TAB>anything`),
- a text file listing one audio path per line (relative paths are relative to the list file), or a Python list,
- a `datasets` audio dataset: an `audiofolder` directory or a Hub id, map-style or streaming,
- tar shards written by `sslam shard` (a folder with an `index.json`, or its URL), read by
  `training.shards.ShardedAudioStream`.

[`decode_usable_clip`] (decoding + [`clip_problem`]: undecodable, empty, non-finite, far out of range) is the one check
of a clip's usability, shared by the collator (which skips such clips) and the shard writer (which leaves them out).
"""

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, Sampler, get_worker_info

from sslam.modeling_sslam.audio_io import decode_audio
from sslam.modeling_sslam.feature_extraction_sslam import MAX_EXPECTED_PEAK

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aif", ".aiff")
DATA_FORMATS = ("auto", "folder", "tsv", "list", "audiofolder", "hub", "shards")
SHARD_INDEX_NAME = "index.json"

# Independent random streams derived from the run seed.
ORDER_STREAM, MASK_STREAM, WINDOW_STREAM, CROP_STREAM, SHARD_ORDER_STREAM, SHARD_SHUFFLE_STREAM = 0, 1, 2, 3, 4, 5

MAX_ABS_AMPLITUDE = MAX_EXPECTED_PEAK
"""Float audio is in [-1, 1] (resampling and lossy decoding overshoot a little); a clip peaking above the feature
extractor's `MAX_EXPECTED_PEAK` is on another scale (e.g. int16 values stored as floats) and is not used for
pre-training."""


DECODE_ERRORS = (OSError, ValueError, TypeError, RuntimeError, EOFError)
"""What decoding or feature extraction raises for a bad clip (soundfile, torchcodec, the extractor's checks)."""


class UnusableClipError(ValueError):
    """A clip that cannot be used for pre-training; the message says why."""


def clip_problem(waveform: np.ndarray, max_abs_amplitude: float = MAX_ABS_AMPLITUDE) -> str | None:
    """Why a decoded `(num_samples,)` clip cannot be used for pre-training (empty, NaN/inf samples, peak above
    `max_abs_amplitude`), or None when it can."""
    if waveform.size == 0:
        return "is empty"
    peak = float(np.abs(waveform).max())  # NaN or inf if any sample is
    if not np.isfinite(peak):
        return "contains NaN or infinite samples"
    if peak > max_abs_amplitude:
        return f"peaks at {peak:.3g}, far outside [-1, 1] (float audio on the wrong scale?)"
    return None


def decode_usable_clip(source, sampling_rate: int = 16000, max_abs_amplitude: float = MAX_ABS_AMPLITUDE) -> np.ndarray:
    """`decode_audio(source, sampling_rate)` -> `(num_samples,)` float32, or an [`UnusableClipError`] saying why the
    clip cannot be used (it cannot be decoded, or [`clip_problem`])."""
    try:
        waveform = decode_audio(source, sampling_rate)
    except DECODE_ERRORS as error:
        raise UnusableClipError(f"cannot be decoded ({error})") from error
    problem = clip_problem(waveform, max_abs_amplitude)
    if problem is not None:
        raise UnusableClipError(problem)
    return waveform


def describe_source(source, position: int | None = None) -> str:
    """A name for an audio reference in messages: its path, a dict's `path`, else `item <position>`."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, dict) and source.get("path"):
        return str(source["path"])
    return f"item {position}" if position is not None else type(source).__name__


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for `torch.Generator.manual_seed`, mixing `seed` and non-negative integer `keys`."""
    high, low = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return (int(high) << 31) | (int(low) >> 1)


def seeded_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU `torch.Generator` seeded with [`derive_seed`]`(seed, *keys)`."""
    return torch.Generator().manual_seed(derive_seed(seed, *keys))


def read_tsv_manifest(path: str | os.PathLike) -> list[str]:
    """Paths listed in an original SSLAM/EAT manifest: first line the root folder, then `relpath<TAB>...` lines."""
    lines = Path(path).read_text().splitlines()
    if not lines or not lines[0].strip():
        raise ValueError(f"{path} is not a manifest: its first line must be the root folder of the audio files.")
    root = lines[0].strip()
    files = [os.path.join(root, line.split("\t", 1)[0]) for line in lines[1:] if line.strip()]
    if not files:
        raise ValueError(f"The manifest {path} lists no audio files.")
    return files


def read_file_list(path: str | os.PathLike) -> list[str]:
    """Paths in a text file, one per line; relative paths are taken relative to the list file's folder."""
    folder = Path(path).parent
    lines = Path(path).read_text().splitlines()
    files = [os.path.normpath(folder / line.strip()) for line in lines if line.strip()]
    if not files:
        raise ValueError(f"The file list {path} is empty.")
    return files


def list_audio_files(folder: str | os.PathLike, extensions: Sequence[str] = AUDIO_EXTENSIONS) -> list[str]:
    """Audio files under `folder` (recursive), sorted, selected by extension (case-insensitive)."""
    suffixes = tuple(extension.lower() for extension in extensions)
    files = sorted(str(path) for path in Path(folder).rglob("*") if path.suffix.lower() in suffixes and path.is_file())
    if not files:
        raise ValueError(f"No audio files ({', '.join(suffixes)}) found under {folder}.")
    return files


class EpochShuffleSampler(Sampler[int]):
    """Seeded per-epoch shuffle whose values also encode the epoch: it yields `epoch * num_items + index`.

    [`PretrainingAudioDataset`] splits such a value back into `(epoch, index)`. The order of epoch `e` depends only on
    `(seed, e)`, so it is the same on every process and after a resume. Call `set_epoch` before each epoch, as with
    `DistributedSampler` (the `Trainer` does).
    """

    def __init__(self, num_items: int, seed: int = 0, shuffle: bool = True):
        if num_items <= 0:
            raise ValueError(f"num_items must be positive, got {num_items}.")
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.num_items, generator=seeded_generator(self.seed, ORDER_STREAM, self.epoch))
        else:
            order = torch.arange(self.num_items)
        return iter((order + self.epoch * self.num_items).tolist())

    def __len__(self) -> int:
        return self.num_items


class PretrainingAudioDataset(Dataset):
    """Map-style dataset of undecoded audio references.

    Args:
        sources: a sequence of audio references (paths, dicts, decoders), or of rows holding one under `audio_column`
            (e.g. a `datasets.Dataset` whose audio column was cast to `Audio(decode=False)`).
        audio_column: the key of the audio reference in each row; `None` when `sources` holds references directly.

    `dataset[i]` accepts `i >= len(dataset)` as produced by [`EpochShuffleSampler`]: `epoch, index = divmod(i, len)`.
    """

    def __init__(self, sources: Sequence, audio_column: str | None = None):
        if len(sources) == 0:
            raise ValueError("The pre-training dataset is empty.")
        self.sources = sources
        self.audio_column = audio_column

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, draw: int) -> dict:
        epoch, index = divmod(int(draw), len(self.sources))
        source = self.sources[index]
        if self.audio_column is not None:
            source = source[self.audio_column]
        return {"audio": source, "epoch": epoch, "index": index}


class StreamingPretrainingDataset(IterableDataset):
    """Iterable dataset over a stream of audio references, for corpora that are read sequentially.

    Args:
        stream: a `datasets.IterableDataset` (which assigns its shards to DataLoader workers itself) or any
            re-iterable of references/rows (which this class splits between workers round-robin).
        audio_column: as in [`PretrainingAudioDataset`].

    Items are numbered per epoch in stream order (interleaved over workers), so masks are reproducible for a fixed
    number of DataLoader workers and processes. `set_epoch` is forwarded to the stream (datasets reshuffles there).
    """

    def __init__(self, stream: Iterable, audio_column: str | None = None):
        self.stream = stream
        self.audio_column = audio_column
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.stream, "set_epoch"):
            self.stream.set_epoch(epoch)

    def __iter__(self):
        worker = get_worker_info()
        worker_id, num_workers = (0, 1) if worker is None else (worker.id, worker.num_workers)
        shards_itself = _is_datasets_iterable(self.stream)
        for position, row in enumerate(self.stream):
            if shards_itself:
                index = position * num_workers + worker_id
            elif position % num_workers == worker_id:
                index = position
            else:
                continue
            source = row if self.audio_column is None else row[self.audio_column]
            yield {"audio": source, "epoch": self.epoch, "index": index}


def _is_datasets_iterable(stream) -> bool:
    import datasets

    return isinstance(stream, datasets.IterableDataset)


def load_datasets_audio(
    name_or_path: str,
    data_format: str,
    split: str = "train",
    audio_column: str = "audio",
    streaming: bool = False,
    config_name: str | None = None,
    seed: int = 0,
    shuffle_buffer_size: int = 10_000,
):
    """Loads an `audiofolder` directory or a Hub dataset with its audio column left undecoded.

    Returns:
        a `datasets.Dataset`, or a shuffled `datasets.IterableDataset` when `streaming`.
    """
    import datasets

    if data_format == "audiofolder":
        dataset = datasets.load_dataset("audiofolder", data_dir=name_or_path, split=split, streaming=streaming)
    else:
        dataset = datasets.load_dataset(name_or_path, config_name, split=split, streaming=streaming)
    if dataset.column_names is not None and audio_column not in dataset.column_names:  # None: unknown (streaming)
        raise ValueError(f"{name_or_path} has no column {audio_column!r}; its columns are {dataset.column_names}.")
    dataset = dataset.select_columns([audio_column]).cast_column(audio_column, datasets.Audio(decode=False))
    if streaming:
        dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
    return dataset


def resolve_data_format(data: str, data_format: str = "auto") -> str:
    """The concrete format of `data`: `auto` picks shards (a URL, a `.json` index or a folder holding
    `index.json`), tsv (`.tsv` file), list (other file) or folder (directory)."""
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {DATA_FORMATS}, got {data_format!r}.")
    if data_format == "hub":
        return data_format
    if "://" in data:
        if data_format not in ("auto", "shards"):
            raise ValueError(f"URLs are read as shards only (data_format='shards'), got data_format={data_format!r}.")
        return "shards"
    if not os.path.exists(data):
        raise FileNotFoundError(
            f"Training data not found: {data!r}. Pass an existing folder, .tsv manifest or file list "
            "(or data_format='hub' for a Hugging Face Hub dataset id)."
        )
    if data_format != "auto":
        return data_format
    if data.endswith(".json") or os.path.isfile(os.path.join(data, SHARD_INDEX_NAME)):
        return "shards"
    if os.path.isdir(data):
        return "folder"
    return "tsv" if data.lower().endswith(".tsv") else "list"


def build_pretraining_dataset(
    data: str | Sequence[str],
    data_format: str = "auto",
    split: str = "train",
    audio_column: str = "audio",
    streaming: bool = False,
    config_name: str | None = None,
    seed: int = 0,
    shuffle_buffer_size: int = 10_000,
) -> PretrainingAudioDataset | StreamingPretrainingDataset:
    """Builds the pre-training dataset from any supported source.

    Args:
        data: a folder, a `.tsv` manifest, a file list, an `audiofolder` directory, a Hub dataset id, or a Python
            list of audio paths.
        data_format: one of `DATA_FORMATS`; `auto` never contacts the Hub.
        split, audio_column, config_name: for `datasets` sources.
        streaming: read a `datasets` source as a stream (corpora that do not fit on disk or in the cache). Folder,
            manifest and list sources are indexed lazily already and are never held in memory.
        seed, shuffle_buffer_size: shuffling of a streamed source (map-style sources are shuffled by the sampler).
    """
    if not isinstance(data, (str, os.PathLike)):
        return PretrainingAudioDataset(list(data))
    data = os.fspath(data)
    data_format = resolve_data_format(data, data_format)
    if data_format == "shards":
        raise ValueError(f"{data} holds shards: read them with sslam.training.shards.ShardedAudioStream.")
    if data_format in ("audiofolder", "hub"):
        dataset = load_datasets_audio(
            data, data_format, split, audio_column, streaming, config_name, seed, shuffle_buffer_size
        )
        if streaming:
            return StreamingPretrainingDataset(dataset, audio_column=audio_column)
        return PretrainingAudioDataset(dataset, audio_column=audio_column)
    if streaming:
        raise ValueError(
            f"streaming applies to datasets sources (audiofolder, hub), not to data_format={data_format!r}."
        )
    readers = {"folder": list_audio_files, "tsv": read_tsv_manifest, "list": read_file_list}
    return PretrainingAudioDataset(readers[data_format](data))


__all__ = [
    "AUDIO_EXTENSIONS",
    "DATA_FORMATS",
    "DECODE_ERRORS",
    "MAX_ABS_AMPLITUDE",
    "UnusableClipError",
    "clip_problem",
    "decode_usable_clip",
    "describe_source",
    "EpochShuffleSampler",
    "PretrainingAudioDataset",
    "StreamingPretrainingDataset",
    "build_pretraining_dataset",
    "derive_seed",
    "list_audio_files",
    "load_datasets_audio",
    "read_file_list",
    "read_tsv_manifest",
    "resolve_data_format",
    "seeded_generator",
]
