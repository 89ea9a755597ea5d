"""Command line for linear probes and fine-tuning (``python -m sslam.evaluation.run`` / ``sslam evaluate``).

Data is ``--data DIR`` (an audio folder ``DIR/{train,test}/<label>/<file>``) or ``--train`` and ``--test``, each an
audio folder (``DIR/<label>/<file>``), a CSV/TSV manifest with ``path`` and ``label``/``labels`` columns or an original
fairseq ``.tsv`` (with its ``.lbl`` next to it); both splits must have the same classes. Files are decoded with
soundfile, so no FFmpeg is needed. ``--polyphonic K`` turns single-label data into seeded K-source mixtures first.

    python -m sslam.evaluation.run linear-probe --data data/esc50                                    # log-mel baseline
    python -m sslam.evaluation.run linear-probe --model converted/sslam-base --data data/esc50 --polyphonic 3
    python -m sslam.evaluation.run finetune --model converted/sslam-base --recipe esc50 --train data/train \\
        --test data/test --output-dir runs/esc50 --max-steps 200
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from datasets import Dataset

from sslam.evaluation.datasets_io import (
    build_polyphonic_mixtures,
    label_names,
    load_audiofolder,
    load_fairseq_manifest,
    load_manifest,
)
from sslam.evaluation.finetune import RECIPES, build_finetune_trainer
from sslam.evaluation.linear_probe import EmbeddingCache, EncoderFeatures, LogMelStatistics, run_linear_probe
from sslam.modeling_sslam.feature_extraction_sslam import NORMALIZATION_STATS, SSLAMFeatureExtractor


def load_data(path: str | Path) -> Dataset:
    """One split from an audio folder, a CSV/TSV manifest or a fairseq ``.tsv`` + ``.lbl`` pair."""
    path = Path(path)
    if path.is_dir():
        data = load_audiofolder(path, decode=False)
        if not isinstance(data, Dataset):
            raise ValueError(f"{path} holds several splits ({', '.join(data)}); pass one split folder")
        return data
    if path.suffix.lower() == ".tsv" and path.with_suffix(".lbl").exists():
        return load_fairseq_manifest(path, decode=False)
    if path.suffix.lower() in (".csv", ".tsv"):
        return load_manifest(path, decode=False)
    raise ValueError(f"{path} is neither an audio folder nor a .csv/.tsv manifest")


def linear_probe(args: argparse.Namespace) -> dict[str, float]:
    train, test = _splits(args)
    extractor = SSLAMFeatureExtractor.from_dataset_stats(args.normalization, max_length=args.max_length)
    if args.model:
        from sslam.modeling_sslam.modeling_sslam import SSLAMModel

        model = SSLAMModel.from_pretrained(args.model).to(args.device)
        features = EncoderFeatures(model, extractor, pooling=args.pooling, batch_size=args.batch_size)
    else:
        features = LogMelStatistics(extractor, batch_size=args.batch_size)
    cache = EmbeddingCache(args.cache_dir) if args.cache_dir else None
    return run_linear_probe(train, test, features, C=args.C, seed=args.seed, cache=cache)


def finetune(args: argparse.Namespace) -> dict[str, float]:
    from sslam.modeling_sslam.modeling_sslam import SSLAMForAudioClassification

    train, test = _splits(args)
    recipe = RECIPES[args.recipe]
    if args.max_length is not None:
        recipe = replace(recipe, max_length=args.max_length)
    extractor = recipe.feature_extractor()
    model = SSLAMForAudioClassification.from_pretrained(
        args.model, ignore_mismatched_sizes=True, **recipe.model_kwargs(train)
    )
    overrides = {
        name: value
        for name, value in (
            ("max_steps", args.max_steps),
            ("learning_rate", args.learning_rate),
            ("per_device_train_batch_size", args.batch_size),
        )
        if value is not None
    }
    training_args = recipe.training_arguments(
        args.output_dir, seed=args.seed, save_strategy="no", use_cpu=args.device == "cpu", **overrides
    )
    trainer = build_finetune_trainer(model, training_args, train, test, extractor, recipe=recipe)
    trainer.train()
    metrics = trainer.evaluate()
    trainer.save_model(args.output_dir)
    return {key.removeprefix("eval_"): value for key, value in metrics.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sslam.evaluation.run",
        description=__doc__.split("\n\n")[0],
        epilog="examples:\n" + __doc__.strip().split("\n\n")[-1],  # the docstring's last paragraph
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    probe = commands.add_parser("linear-probe", help="frozen-encoder (or log-mel baseline) linear probe")
    probe.add_argument("--model", help="saved SSLAM model folder; omit for the log-mel baseline")
    probe.add_argument("--pooling", choices=("cls", "mean"), default="cls")
    probe.add_argument("--normalization", choices=sorted(NORMALIZATION_STATS), default="audioset")
    probe.add_argument("--max_length", "--max-length", type=int, default=1024, help="frames per clip (1024 = 10.24 s)")
    probe.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    probe.add_argument("--batch_size", "--batch-size", type=int, default=16)
    probe.add_argument("--cache_dir", "--cache-dir", help="keep embeddings as .npy files here")
    tune = commands.add_parser("finetune", help="fine-tune SSLAMForAudioClassification with an original recipe")
    tune.add_argument("--model", required=True, help="saved SSLAM model folder to start from")
    tune.add_argument("--recipe", choices=sorted(RECIPES), required=True)
    tune.add_argument("--output_dir", "--output-dir", required=True)
    tune.add_argument("--max_length", "--max-length", type=int, help="override the recipe's frames per clip")
    tune.add_argument("--max_steps", "--max-steps", type=int)
    tune.add_argument("--learning_rate", "--learning-rate", type=float)
    tune.add_argument("--batch_size", "--batch-size", type=int)
    for command in (probe, tune):
        command.add_argument("--data", help="audio folder with train/ and test/ split folders")
        command.add_argument("--train", help="audio folder, CSV/TSV manifest or fairseq .tsv")
        command.add_argument("--test", help="same kinds as --train")
        command.add_argument("--polyphonic", type=int, metavar="K", help="evaluate on K-source mixtures")
        command.add_argument("--seed", type=int, default=0)
        command.add_argument("--device", default="cpu")
        command.add_argument("--output", help="also write the metrics to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.data is None) == (args.train is None or args.test is None) or (args.data and (args.train or args.test)):
        parser.error("pass either --data or both --train and --test")
    metrics = linear_probe(args) if args.command == "linear-probe" else finetune(args)
    text = json.dumps(metrics, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")


def _splits(args: argparse.Namespace) -> tuple[Dataset, Dataset]:
    if args.data:
        splits = load_audiofolder(args.data, decode=False)
        if set(splits) != {"train", "test"}:
            raise ValueError(f"{args.data} must hold exactly the split folders train/ and test/")
        train, test = splits["train"], splits["test"]
    else:
        train, test = load_data(args.train), load_data(args.test)
    if label_names(train) != label_names(test):
        raise ValueError(f"train and test have different classes: {label_names(train)} vs {label_names(test)}")
    if args.polyphonic:
        train = build_polyphonic_mixtures(train, num_sources=args.polyphonic, seed=args.seed)
        test = build_polyphonic_mixtures(test, num_sources=args.polyphonic, seed=args.seed + 1)
    return train, test


if __name__ == "__main__":
    main()
