"""Loading and decoding throughput of pre-training shards, per DataLoader worker. Prints a Markdown table.

Writes `--clips` synthetic 10 s clips (tones and noise, 16 kHz) as FLAC and as OGG/Vorbis shards (`write_shards`), then
reads one epoch of a `ShardedAudioStream` through its `EpochDataLoader` with 1 and 2 workers (batches of 12) in three
ways: the raw tar read (what a resume skips), read + `decode_audio` (FLAC/OGG -> float32), and read + the whole
pre-training collator (decoding, Kaldi filter bank of 1024 frames, the masks of 16 clones). clips/s per worker is
the total rate divided by the workers; a run needs about `steps_per_s x batch / (clips/s per worker)` workers per
process to keep the model fed (the step rate comes from `python -m sslam.benchmarks.bench_pretraining_step` or the
Trainer's `train_steps_per_second`).

    python -m sslam.benchmarks.bench_shards [--clips 240] [--clips_per_shard 20] [--workers 1 2]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sslam.modeling_sslam.audio_io import decode_audio
from sslam.modeling_sslam.configuration_sslam import SSLAMConfig
from sslam.modeling_sslam.feature_extraction_sslam import SSLAMFeatureExtractor
from sslam.training.collator import SSLAMPretrainingCollator
from sslam.training.shards import ShardedAudioStream, shard_dataloader, write_shards

BATCH = 12
SECONDS = 10


def synthetic_clips(count: int) -> list[dict]:
    time_axis = np.arange(SECONDS * 16000) / 16000
    clips = []
    for index in range(count):
        rng = np.random.default_rng(index)
        tones = sum(0.1 * np.sin(2 * np.pi * rng.uniform(100, 4000) * time_axis) for _ in range(3))
        clips.append({"array": (tones + 0.02 * rng.standard_normal(time_axis.shape)).astype(np.float32),
                      "sampling_rate": 16000})  # fmt: skip
    return clips


def read_only(items: list[dict]) -> int:
    return len(items)


def decode_only(items: list[dict]) -> int:
    return sum(decode_audio(item["audio"]).shape[0] > 0 for item in items)


class FullCollator:
    """The pre-training collator (a picklable callable for the workers)."""

    def __init__(self):
        self.collator = SSLAMPretrainingCollator.from_config(SSLAMConfig(clone_batch=16), SSLAMFeatureExtractor())

    def __call__(self, items: list[dict]) -> int:
        return self.collator(items)["input_values"].shape[0]


def clips_per_second(folder: Path, workers: int, collate) -> float:
    stream = ShardedAudioStream(str(folder), batch_size=BATCH, num_workers=workers, seed=0, buffer_size=50)
    loader = shard_dataloader(stream, collate, seed=0)
    start = time.perf_counter()
    clips = sum(loader)
    return clips / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=240)
    parser.add_argument("--clips_per_shard", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    clips = synthetic_clips(args.clips)
    cases = {"tar read only": read_only, "read + decode": decode_only, "read + collator": FullCollator()}
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for audio_format in ("flac", "ogg"):
            folder = Path(root) / audio_format
            write_shards(clips, folder, args.clips_per_shard, audio_format=audio_format)
            megabytes = sum(path.stat().st_size for path in folder.glob("*.tar")) / 2**20
            for name, collate in cases.items():
                for workers in args.workers:
                    rate = clips_per_second(folder, workers, collate)
                    rows.append((audio_format, f"{megabytes / args.clips * 1024:.0f}", name, workers, rate))
    print(f"\n{args.clips} clips of {SECONDS} s, batches of {BATCH}, torch threads 1, {os.cpu_count()} CPUs\n")
    print("| shards | KiB per clip | work | workers | clips/s | clips/s per worker |")
    print("|---|---|---|---|---|---|")
    for audio_format, size, name, workers, rate in rows:
        print(f"| {audio_format} | {size} | {name} | {workers} | {rate:.1f} | {rate / workers:.1f} |")


if __name__ == "__main__":
    main()
