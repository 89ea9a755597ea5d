# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""`sslam shard`: write a pre-training corpus (a folder, a manifest, a file list or a `datasets` dataset) as tar shards
that `sslam pretrain --data DIR` streams (see `sslam.training.shards`)."""

import argparse
import sys
from pathlib import Path

import numpy as np

from sslam.cli.inference import _positive_int

EPILOG = """examples:
  sslam shard /data/audioset/wavs --output_dir /data/audioset/shards --clips_per_shard 1000 --num_workers 8
  sslam shard /data/audioset/train.tsv --output_dir shards --audio_format ogg
  sslam shard my/hub-dataset --data_format hub --split train --output_dir shards
  sslam pretrain --preset stage1 --data /data/audioset/shards --output_dir runs/stage1   # or an https:// URL

Clips are decoded to 16 kHz mono, checked (undecodable, empty, NaN/inf or far out of range: left out with a warning
and listed under "skipped" in index.json) and stored as FLAC (lossless, 24 bit) or OGG/Vorbis. The clip order is
shuffled with --seed before writing (the reader shuffles only within the shards of one stream)."""


class ShardArgumentParser(argparse.ArgumentParser):
    """Usage errors as one `error:` line, exit code 2."""

    def error(self, message: str):
        fail(f"{message} (see {self.prog} --help)", 2)


def build_parser() -> argparse.ArgumentParser:
    from sslam.training.data import DATA_FORMATS
    from sslam.training.shards import AUDIO_FORMATS

    parser = ShardArgumentParser(
        prog="sslam shard", description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", help="folder of audio files, .tsv manifest, file list, audiofolder or Hub dataset id")
    parser.add_argument("--output_dir", "--output-dir", required=True, help="a new (or empty) folder for the shards")
    parser.add_argument("--data_format", "--data-format", choices=[f for f in DATA_FORMATS if f != "shards"],
                        default="auto")  # fmt: skip
    parser.add_argument("--split", default="train", help="split of a datasets source")
    parser.add_argument("--audio_column", "--audio-column", default="audio", help="audio column of a datasets source")
    parser.add_argument("--dataset_config", "--dataset-config", help="config name of a Hub dataset")
    parser.add_argument("--streaming", action="store_true", help="stream a datasets source (written in stream order)")
    parser.add_argument("--clips_per_shard", "--clips-per-shard", type=_positive_int, default=1000)
    parser.add_argument("--audio_format", "--audio-format", choices=sorted(AUDIO_FORMATS), default="flac")
    parser.add_argument("--prefix", default="train", help="shard file names: PREFIX-000000.tar, ...")
    parser.add_argument("--seed", type=int, default=0, help="seed of the clip order")
    parser.add_argument("--no_shuffle", "--no-shuffle", action="store_true", help="keep the source order")
    parser.add_argument("--num_workers", "--num-workers", type=int, default=0,
                        help="processes that decode and encode (0 = this one)")  # fmt: skip
    return parser


def corpus_sources(args) -> list | object:
    """The audio references to write: a shuffled (unless `--no_shuffle`) list, or a stream in its order."""
    from sslam.training.data import build_pretraining_dataset

    dataset = build_pretraining_dataset(
        args.data, args.data_format, args.split, args.audio_column, args.streaming, args.dataset_config, args.seed
    )
    if args.streaming:
        return (item["audio"] for item in dataset)
    order = range(len(dataset)) if args.no_shuffle else np.random.default_rng(args.seed).permutation(len(dataset))
    return [dataset[int(position)]["audio"] for position in order]


def fail(message: str, code: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Exit codes: 0 = shards written; 2 = usage error (missing data, output folder not empty); 1 = the corpus
    cannot be read or has no usable clip."""
    from sslam.training.shards import write_shards

    args = build_parser().parse_args(argv)
    if args.num_workers < 0:
        fail(f"--num_workers must be >= 0, got {args.num_workers}.", 2)
    output = Path(args.output_dir)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        fail(f"--output_dir {output} exists and is not an empty folder: shards are not overwritten.", 2)
    try:
        sources = corpus_sources(args)
    except FileNotFoundError as error:
        fail(str(error), 2)
    except (OSError, ValueError) as error:
        fail(f"cannot read {args.data}: {error}", 1)
    index = write_shards(sources, output, args.clips_per_shard, args.audio_format, args.prefix, args.num_workers)
    skipped = len(index["skipped"])
    print(
        f"wrote {index['num_clips']} clips in {len(index['shards'])} shards to {args.output_dir}"
        + (f" ({skipped} skipped: see the warnings and index.json)" if skipped else "")
    )
    if not index["num_clips"]:
        fail(f"no usable clip in {args.data} ({skipped} skipped).", 1)


if __name__ == "__main__":
    main()
