# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""Pre-training corpora as WebDataset-style tar shards: writing them (`write_shards`, `sslam shard`) and reading them
as a deterministic, exactly resumable stream (`ShardedAudioStream`).

Layout of a shard folder::

    index.json               {"format": "sslam-audio-shards", "version": 1, "audio_format": "flac", "sampling_rate":
                              16000, "clips_per_shard": N, "num_clips": total, "skipped": [...],
                              "shards": [{"url": "train-000000.tar", "num_samples": N}, ...]}
    train-000000.tar         per clip: 000000042.flac (16 kHz mono audio, FLAC or OGG/Vorbis) + 000000042.json
    train-000001.tar         ({"source": original path or name, "duration": seconds, "sampling_rate": 16000})

Every shard holds `clips_per_shard` clips (the last one may hold fewer), the members of a clip are adjacent and keys
have no dots, so `webdataset` and `datasets`' `webdataset` loader read the shards too. Shard URLs in the index are
relative to the index (local folders, or any fsspec URL: `https://...`, `s3://...`).

Reading (one `ShardedAudioStream` per process): the shard order of epoch `e` is a permutation seeded by
`(seed, e)`; shard `j` of that order goes to stream `j % (world_size * num_workers)`, stream `rank * num_workers +
worker`; each stream reads its shards through a shuffle buffer seeded by `(seed, e, rank, worker)` and yields exactly
`samples_per_stream` clips (the same for every stream and epoch, a multiple of the batch size), so every process
takes the same number of full batches (no DDP hang). The position is a function of the global step: a resumed run
skips the consumed clips as raw tar members, before any decoding (`set_position`, called by
`callbacks.ShardPositionCallback`). Items are `{"audio": {"bytes", "path"}, "epoch", "index", "name"}` with `index`
the clip's ordinal in the corpus, so the collator's `(seed, epoch, index)` masks do not depend on the layout. A clip
that cannot be read from its shard (truncated or missing shard, missing member) becomes an item with an `"error"`,
which the collator skips and counts like an undecodable clip.
"""

import io
import json
import logging
import os
import posixpath
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path

import fsspec
import numpy as np
import soundfile
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .data import (
    SHARD_INDEX_NAME,
    SHARD_ORDER_STREAM,
    SHARD_SHUFFLE_STREAM,
    UnusableClipError,
    decode_usable_clip,
    describe_source,
)
from .errors import NotEnoughDataError

logger = logging.getLogger(__name__)

INDEX_NAME = SHARD_INDEX_NAME
SHARD_FORMAT = "sslam-audio-shards"
SHARD_FORMAT_VERSION = 1
AUDIO_FORMATS = {"flac": ("FLAC", "PCM_24"), "ogg": ("OGG", "VORBIS")}
"""Shard audio encodings `write_shards` writes: lossless FLAC (24 bit) or Vorbis in OGG (lossy, about 4x smaller)."""
READABLE_EXTENSIONS = ("flac", "ogg", "opus", "wav", "mp3")
"""Audio members the reader takes (shards written by other tools may hold any of them)."""
SAMPLING_RATE = 16_000


# ---------------------------------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class EncodedClip:
    """One clip ready for a shard (`audio` = encoded bytes), or the reason it was left out (`problem`)."""

    source: str
    audio: bytes | None = None
    metadata: dict = field(default_factory=dict)
    problem: str | None = None


def encode_clip(source, name: str, audio_format: str = "flac") -> EncodedClip:
    """Decodes any audio reference to 16 kHz mono and checks it ([`decode_usable_clip`]), then encodes it."""
    try:
        waveform = decode_usable_clip(source, SAMPLING_RATE)
    except UnusableClipError as problem:
        return EncodedClip(name, problem=str(problem))
    peak = float(np.abs(waveform).max())
    if peak > 1.0 and audio_format == "flac":
        logger.warning("%s peaks at %.3g: samples beyond [-1, 1] are clipped in the FLAC shard.", name, peak)
    container, subtype = AUDIO_FORMATS[audio_format]
    buffer = io.BytesIO()
    soundfile.write(buffer, waveform, SAMPLING_RATE, format=container, subtype=subtype)
    metadata = {"source": name, "duration": round(waveform.shape[0] / SAMPLING_RATE, 4), "sampling_rate": SAMPLING_RATE}
    return EncodedClip(name, buffer.getvalue(), metadata)


def _encode_job(job: tuple) -> EncodedClip:
    return encode_clip(*job)


def _add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # mtime 0: the same corpus gives byte-identical shards
    archive.addfile(info, io.BytesIO(data))


class ShardWriter:
    """Writes clips into `folder/{prefix}-{number:06d}.tar`, `clips_per_shard` per shard, then `index.json`.

    Each shard is written as `*.tar.partial` and renamed when complete; the index is written last, so a folder with an
    `index.json` is complete. Use as a context manager; `add` takes encoded audio bytes and the clip's metadata.
    """

    def __init__(self, folder: str | os.PathLike, clips_per_shard: int, audio_format: str = "flac", prefix="train"):
        if clips_per_shard < 1:
            raise ValueError(f"clips_per_shard must be a positive integer, got {clips_per_shard}.")
        if audio_format not in AUDIO_FORMATS:
            raise ValueError(f"audio_format must be one of {sorted(AUDIO_FORMATS)}, got {audio_format!r}.")
        self.folder = Path(folder)
        if self.folder.exists() and (not self.folder.is_dir() or any(self.folder.iterdir())):
            raise FileExistsError(f"{self.folder} exists and is not an empty folder: shards are not overwritten.")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.clips_per_shard, self.audio_format, self.prefix = clips_per_shard, audio_format, prefix
        self.shards: list[dict] = []
        self.skipped: list[dict] = []
        self.num_clips = 0
        self.index: dict | None = None
        self._archive: tarfile.TarFile | None = None
        self._in_shard = 0

    def add(self, audio: bytes, metadata: dict) -> None:
        """Appends one clip (encoded bytes in `audio_format`) with its JSON metadata."""
        if self._archive is None:
            self._open_shard()
        key = f"{self.num_clips:09d}"
        _add_member(self._archive, f"{key}.{self.audio_format}", audio)
        _add_member(self._archive, f"{key}.json", json.dumps(metadata, sort_keys=True).encode())
        self.num_clips += 1
        self._in_shard += 1
        if self._in_shard == self.clips_per_shard:
            self._close_shard()

    def skip(self, source: str, reason: str) -> None:
        """Records a clip left out (it is listed in the index under `skipped`)."""
        logger.warning("skipping %s: %s", source, reason)
        self.skipped.append({"source": source, "reason": reason})

    def _shard_name(self) -> str:
        return f"{self.prefix}-{len(self.shards):06d}.tar"

    def _open_shard(self) -> None:
        self._archive = tarfile.open(self.folder / f"{self._shard_name()}.partial", "w", format=tarfile.USTAR_FORMAT)
        self._in_shard = 0

    def _close_shard(self) -> None:
        name = self._shard_name()
        self._archive.close()
        os.replace(self.folder / f"{name}.partial", self.folder / name)
        self.shards.append({"url": name, "num_samples": self._in_shard})
        self._archive = None

    def close(self) -> dict:
        """Closes the last shard and writes `index.json` (once); returns the index."""
        if self.index is not None:
            return self.index
        if self._archive is not None:
            self._close_shard()
        index = {
            "format": SHARD_FORMAT,
            "version": SHARD_FORMAT_VERSION,
            "audio_format": self.audio_format,
            "sampling_rate": SAMPLING_RATE,
            "clips_per_shard": self.clips_per_shard,
            "num_clips": self.num_clips,
            "shards": self.shards,
            "skipped": self.skipped,
        }
        partial = self.folder / f"{INDEX_NAME}.partial"
        partial.write_text(json.dumps(index, indent=1))
        os.replace(partial, self.folder / INDEX_NAME)
        self.index = index
        return index

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        elif self._archive is not None:
            self._archive.close()


def write_shards(
    sources: Iterable,
    folder: str | os.PathLike,
    clips_per_shard: int = 1000,
    audio_format: str = "flac",
    prefix: str = "train",
    num_workers: int = 0,
) -> dict:
    """Decodes, checks and encodes every audio reference of `sources` (in order) into shards under `folder`.

    Args:
        sources: audio references (paths, `{"bytes", "path"}` or `{"array", "sampling_rate"}` dicts, ...), in the
            order to write them; shuffle them first (the reader shuffles only within a stream's shards).
        folder: a new or empty folder.
        clips_per_shard: clips per shard (the last shard may hold fewer).
        audio_format: `"flac"` or `"ogg"` ([`AUDIO_FORMATS`]).
        num_workers: processes that decode and encode (0 = this process).

    Clips that cannot be decoded or are unusable ([`decode_usable_clip`]) are left out with a warning naming them and listed
    under `skipped` in the index. Returns the index.
    """
    jobs = ((source, describe_source(source, position), audio_format) for position, source in enumerate(sources))
    with ShardWriter(folder, clips_per_shard, audio_format, prefix) as writer:
        if num_workers > 0:
            with Pool(num_workers) as pool:
                _write_all(writer, pool.imap(_encode_job, jobs, chunksize=8))
        else:
            _write_all(writer, map(_encode_job, jobs))
    return writer.index


def _write_all(writer: ShardWriter, clips: Iterable[EncodedClip]) -> None:
    for clip in clips:
        if clip.problem is None:
            writer.add(clip.audio, clip.metadata)
        else:
            writer.skip(clip.source, clip.problem)


# ---------------------------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------------------------


def index_url(data: str) -> str:
    """The index of a shard folder or URL: `data` itself when it names a `.json` file, else `data/index.json`."""
    return data if data.endswith(".json") else posixpath.join(data.rstrip("/"), INDEX_NAME)


def read_index(data: str) -> dict:
    """The parsed index of a shard folder or URL, with each shard's `url` resolved against the index's location."""
    url = index_url(data)
    try:
        with fsspec.open(url, "rt") as handle:
            index = json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"No shard index at {url}: write shards with `sslam shard`.") from None
    except ValueError as error:
        raise ValueError(f"{url} is not a valid shard index: {error}") from None
    if not isinstance(index, dict) or index.get("format") != SHARD_FORMAT:
        raise ValueError(f"{url} is not an sslam shard index (format {SHARD_FORMAT!r}).")
    if not index.get("shards"):
        raise ValueError(f"The shard index {url} lists no shards.")
    base = posixpath.dirname(url)
    for shard in index["shards"]:
        if "://" not in shard["url"] and not posixpath.isabs(shard["url"]):
            shard["url"] = posixpath.join(base, shard["url"])
    return index


def read_shard(url: str, num_samples: int, audio_format: str) -> Iterator[tuple[str, dict]]:
    """`(key, sample)` for the `num_samples` clips of a shard, streamed (local path or fsspec URL); `sample` holds
    `audio` bytes and `metadata`, or `error` when the clip could not be read (truncated or unreadable shard, missing
    member): exactly `num_samples` pairs in any case, so the stream keeps its length."""
    shard_name = posixpath.basename(url)
    produced = 0
    try:
        with fsspec.open(url, "rb") as handle, tarfile.open(fileobj=handle, mode="r|*") as archive:
            for key, sample in _group_members(archive, audio_format):
                if produced == num_samples:
                    message = "%s holds more clips than its index lists (%d): the rest is ignored."
                    logger.warning(message, url, num_samples)
                    return
                produced += 1
                yield f"{shard_name}/{key}", sample
    except (OSError, tarfile.TarError, EOFError) as error:
        reason = f"shard {url} could not be read after {produced} clips ({type(error).__name__}: {error})"
        logger.warning("%s: its %d remaining clips are skipped.", reason, num_samples - produced)
        for ordinal in range(produced, num_samples):
            yield f"{shard_name}/#{ordinal}", {"error": reason}
        return
    if produced < num_samples:
        reason = f"shard {url} ends after {produced} of its {num_samples} clips"
        logger.warning("%s: the missing clips are skipped.", reason)
        for ordinal in range(produced, num_samples):
            yield f"{shard_name}/#{ordinal}", {"error": reason}


def _group_members(archive: tarfile.TarFile, audio_format: str) -> Iterator[tuple[str, dict]]:
    """Adjacent tar members with the same key (the name up to its first dot) -> `(key, {"audio", "metadata"})`."""
    key, members = None, {}
    for member in archive:
        if not member.isfile():
            continue
        stem, _, extension = posixpath.basename(member.name).partition(".")
        if stem != key and key is not None:
            yield key, _sample(members, audio_format)
            members = {}
        key = stem
        members[extension] = archive.extractfile(member).read()
    if key is not None:
        yield key, _sample(members, audio_format)


def _sample(members: dict[str, bytes], audio_format: str) -> dict:
    """The audio member (the index's `audio_format`, else the first readable extension) and the JSON metadata."""
    extension = next((ext for ext in (audio_format, *READABLE_EXTENSIONS) if ext in members), None)
    if extension is None:
        return {"error": f"no audio member (found {', '.join(sorted(members)) or 'nothing'})"}
    try:
        metadata = json.loads(members["json"]) if "json" in members else {}
    except ValueError:
        metadata = {}
    return {"audio": members[extension], "extension": extension, "metadata": metadata}


@dataclass(frozen=True)
class StreamPlan:
    """The shards of each (rank, worker) stream in one epoch, and the clips every stream yields."""

    streams: list[list[int]]
    samples_per_stream: int


class ShardedAudioStream(IterableDataset):
    """One process's stream of pre-training items from a shard index (see the module docstring).

    Args:
        data: a shard folder, its `index.json`, or their URL.
        batch_size: clips per batch on this process.
        num_workers: DataLoader workers (0 = the main process reads).
        rank, world_size: this process and the number of processes.
        seed: seeds the per-epoch shard order and the shuffle buffers.
        buffer_size: shuffle buffer per stream, in clips (memory: about `buffer_size` encoded clips per worker).
        gradient_accumulation_steps: every stream yields a multiple of `batch_size` times this.

    `len()` is the number of clips this process takes per epoch, the same in every epoch; `set_epoch` and
    `set_position(epoch, batches_done)` must be called before `iter()` (the DataLoader copies the stream into its
    workers then).
    """

    def __init__(self, data: str, batch_size: int, num_workers: int = 0, rank: int = 0, world_size: int = 1,
                 seed: int = 0, buffer_size: int = 1000, gradient_accumulation_steps: int = 1):  # fmt: skip
        if min(batch_size, buffer_size, gradient_accumulation_steps) < 1 or num_workers < 0:
            raise ValueError(
                f"batch_size, buffer_size and gradient_accumulation_steps must be positive and num_workers >= 0, got "
                f"{batch_size}, {buffer_size}, {gradient_accumulation_steps} and {num_workers}."
            )
        index = read_index(data)
        self.data = data
        self.urls = [shard["url"] for shard in index["shards"]]
        self.sizes = [int(shard["num_samples"]) for shard in index["shards"]]
        self.offsets = np.cumsum([0, *self.sizes[:-1]]).tolist()
        self.audio_format = index.get("audio_format", "flac")
        self.batch_size, self.num_workers, self.seed, self.buffer_size = batch_size, num_workers, seed, buffer_size
        self.rank, self.world_size, self.gradient_accumulation_steps = rank, world_size, gradient_accumulation_steps
        self.epoch = 0
        self.position: tuple[int, int] | None = None  # (epoch, batches this process consumed in it)
        self.num_streams = world_size * max(1, num_workers)
        if len(self.urls) < self.num_streams:
            raise NotEnoughDataError(
                f"{data} has {len(self.urls)} shards, fewer than the {self.num_streams} streams of "
                f"{world_size} process(es) x {max(1, num_workers)} worker(s): write smaller shards "
                "(sslam shard --clips_per_shard) or use fewer DataLoader workers."
            )
        if self.plan(0).samples_per_stream == 0:
            raise NotEnoughDataError(
                f"{data}: each of the {self.num_streams} (process, worker) streams gets fewer clips than one optimizer "
                f"step of {batch_size} x {gradient_accumulation_steps} (batch x accumulation): use fewer workers, "
                "fewer processes or a smaller batch."
            )

    @property
    def layout(self) -> dict:
        """What the data order depends on; a checkpoint records it and a resume must match it."""
        return {
            "world_size": self.world_size,
            "num_workers": self.num_workers,
            "batch_size": self.batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "seed": self.seed,
            "buffer_size": self.buffer_size,
            "shards": [posixpath.basename(url) for url in self.urls],
            "num_samples": self.sizes,
        }

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_position(self, epoch: int, batches_done: int) -> None:
        """Resume: in epoch `epoch`, this process has already consumed `batches_done` batches."""
        self.position = (epoch, batches_done)

    def plan(self, epoch: int) -> StreamPlan:
        """Shards of every stream in `epoch` (a seeded permutation dealt round-robin) and the clips per stream: the
        `k = num_shards // num_streams` smallest shards' total (every stream holds at least `k` shards), rounded down
        to whole optimizer steps (`batch_size x gradient_accumulation_steps`), so it is the same for every stream and
        epoch and an epoch ends on an optimizer step."""
        generator = np.random.default_rng(np.random.SeedSequence([self.seed, SHARD_ORDER_STREAM, epoch]))
        order = generator.permutation(len(self.urls)).tolist()
        streams = [order[stream :: self.num_streams] for stream in range(self.num_streams)]
        smallest = sum(sorted(self.sizes)[: len(self.urls) // self.num_streams])
        step = self.batch_size * self.gradient_accumulation_steps
        return StreamPlan(streams, smallest // step * step)

    def __len__(self) -> int:
        return max(1, self.num_workers) * self.plan(0).samples_per_stream

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        if num_workers != max(1, self.num_workers):
            raise RuntimeError(f"This stream was built for {self.num_workers} workers but runs in {num_workers}.")
        epoch = self.epoch
        plan = self.plan(epoch)
        role, skip = self._role_and_skip(worker, num_workers, epoch)
        shards = plan.streams[self.rank * num_workers + role]
        seeds = np.random.SeedSequence([self.seed, SHARD_SHUFFLE_STREAM, epoch, self.rank, role])
        generator = np.random.default_rng(seeds)
        for position, item in enumerate(self._shuffled(self._items(shards, epoch), generator)):
            if position >= plan.samples_per_stream:
                return
            if position >= skip:
                yield item

    def _role_and_skip(self, worker: int, num_workers: int, epoch: int) -> tuple[int, int]:
        """Which stream this worker continues and how many of its clips were consumed. Worker `r` made batches
        `r, r + nw, ...` of the process's epoch; a new DataLoader polls workers from 0, so after `done` batches
        worker `w` continues the stream of worker `(w + done) % nw`."""
        if self.position is None or self.position[0] != epoch:
            return worker, 0
        done = self.position[1]
        role = (worker + done) % num_workers
        return role, (done // num_workers + (1 if role < done % num_workers else 0)) * self.batch_size

    def _items(self, shards: list[int], epoch: int) -> Iterator[dict]:
        for shard in shards:
            samples = read_shard(self.urls[shard], self.sizes[shard], self.audio_format)
            for ordinal, (name, sample) in enumerate(samples):
                index = self.offsets[shard] + ordinal
                if "error" in sample:
                    yield {"audio": None, "epoch": epoch, "index": index, "name": name, "error": sample["error"]}
                    continue
                path = f"{name}.{sample['extension']}"
                source = sample["metadata"].get("source") if isinstance(sample["metadata"], dict) else None
                label = f"{path} ({source})" if source else path
                yield {"audio": {"bytes": sample["audio"], "path": path}, "epoch": epoch, "index": index, "name": label}

    def _shuffled(self, items: Iterator[dict], generator: np.random.Generator) -> Iterator[dict]:
        """A shuffle buffer of `buffer_size` items drawing from `generator`."""
        buffer = []
        for item in items:
            if len(buffer) < self.buffer_size:
                buffer.append(item)
                continue
            slot = int(generator.integers(len(buffer)))
            buffer[slot], item = item, buffer[slot]
            yield item
        for slot in generator.permutation(len(buffer)):
            yield buffer[slot]


class EpochDataLoader(DataLoader):
    """A plain `DataLoader` over a [`ShardedAudioStream`] that forwards `set_epoch` (the Trainer calls it) to the
    stream. Give it its own `generator`, so that `iter()` does not draw from the global torch RNG that a resume
    restores."""

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


def shard_dataloader(stream: ShardedAudioStream, collate_fn, seed: int, pin_memory=False, prefetch_factor=None):
    """The [`EpochDataLoader`] of a stream: batches of `stream.batch_size`, `stream.num_workers` workers."""
    return EpochDataLoader(
        stream,
        batch_size=stream.batch_size,
        collate_fn=collate_fn,
        num_workers=stream.num_workers,
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor if stream.num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
    )


__all__ = [
    "AUDIO_FORMATS",
    "READABLE_EXTENSIONS",
    "EncodedClip",
    "EpochDataLoader",
    "INDEX_NAME",
    "SHARD_FORMAT",
    "ShardWriter",
    "ShardedAudioStream",
    "StreamPlan",
    "encode_clip",
    "index_url",
    "read_index",
    "read_shard",
    "shard_dataloader",
    "write_shards",
]
