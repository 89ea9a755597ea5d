# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""SSLAM / EAT pre-training as a function (`run_pretraining`) and from the command line
(`python -m sslam.training.pretrain`, also under `accelerate launch`; settings: `sslam.training.arguments`).

    python -m sslam.training.pretrain --preset stage1 --data /data/audioset.tsv --output_dir runs/stage1
    python -m sslam.training.pretrain --preset stage2 --init_from runs/stage1/pretraining --data /data/wavs \\
        --output_dir runs/stage2
    accelerate launch --multi_gpu --num_processes 8 -m sslam.training.pretrain --config stage2.yaml

At the end, `OUTPUT_DIR/pretraining/` holds the full model (student, decoder, EMA teacher; reload it with
`SSLAMForPreTraining.from_pretrained` or pass it to `--init_from`) and `OUTPUT_DIR/encoder/` the student encoder as an
`SSLAMModel` for `AutoModel.from_pretrained` ([`OutputLayout`]). Checkpoints (`OUTPUT_DIR/checkpoint-N/`) resume
exactly with `--resume_from_checkpoint last` (or a checkpoint path).

Exit codes of the command line: 0 = trained and saved; 2 = a usage error found before any work (a one-line `error:`
naming the flag, value or path); 1 = the run stopped on purpose (`training.errors.PretrainingError`: divergence, too
many unusable clips, not enough data, collapse, no complete checkpoint, ...; a one-line `error:`); any other failure
is a traceback (exit code 1).
"""

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import set_seed

from sslam.modeling_sslam.configuration_sslam import SSLAMConfig
from sslam.modeling_sslam.feature_extraction_sslam import SSLAMFeatureExtractor
from sslam.modeling_sslam.pretraining_sslam import PRETRAINING_SUBFOLDER, SSLAMForPreTraining, pretraining_folder

from .arguments import MODEL_SIZES, TRAINING_CONFIG_FIELDS, SSLAMPretrainingArguments, parse_args
from .callbacks import CollapseGuardCallback, EMATeacherCallback
from .collator import SSLAMPretrainingCollator
from .data import build_pretraining_dataset, resolve_data_format
from .errors import DataSourceError, PretrainingError
from .shards import ShardedAudioStream
from .trainer import SSLAMPretrainingTrainer, save_encoder

ENCODER_SUBFOLDER = "encoder"


@dataclass(frozen=True)
class OutputLayout:
    """Where a pre-training run writes its results under `root` (the `output_dir`)."""

    root: Path

    @property
    def pretraining(self) -> Path:
        """The full `SSLAMForPreTraining` (student, decoder, teacher)."""
        return self.root / PRETRAINING_SUBFOLDER

    @property
    def encoder(self) -> Path:
        """The student encoder as an `SSLAMModel` folder with its feature extractor."""
        return self.root / ENCODER_SUBFOLDER

    @property
    def trainer_state(self) -> Path:
        """The log history and global step (`trainer_state.json`)."""
        return self.root / "trainer_state.json"


@dataclass
class PretrainingRun:
    """A finished run: the trainer (`trainer.state` has the log history, `trainer.model` the trained model) and where
    its outputs were written."""

    trainer: SSLAMPretrainingTrainer
    layout: OutputLayout


def build_config(args: SSLAMPretrainingArguments) -> SSLAMConfig:
    """Model config from `model_config` or `model_size`, with the explicit size and training settings applied."""
    if args.model_config is not None:
        base = SSLAMConfig.from_json_file(args.model_config).to_dict()
    else:
        base = SSLAMConfig(**MODEL_SIZES[args.model_size]).to_dict()
    return SSLAMConfig(**{**base, **args.config_overrides()})


def build_model(args: SSLAMPretrainingArguments) -> SSLAMForPreTraining:
    """A new model (seeded by `seed`) or the student, decoder and teacher of `init_from`."""
    if args.init_from is None:
        set_seed(args.seed)
        config = build_config(args)
        config._attn_implementation = args.attn_implementation
        return SSLAMForPreTraining(config)
    return SSLAMForPreTraining.from_pretrained(
        pretraining_folder(args.init_from),
        dtype=torch.float32,
        attn_implementation=args.attn_implementation,
        **args.config_overrides(TRAINING_CONFIG_FIELDS),
    )


def build_feature_extractor(args: SSLAMPretrainingArguments, config: SSLAMConfig) -> SSLAMFeatureExtractor:
    """The extractor of `init_from` when it has one (keeps its normalisation), else the AudioSet one; its clip length
    is the training clip length `config.max_length`."""
    folder = pretraining_folder(args.init_from) if args.init_from else None
    if folder and os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
        extractor = SSLAMFeatureExtractor.from_pretrained(folder)
    else:
        extractor = SSLAMFeatureExtractor()
    extractor.max_length = config.max_length
    return extractor


def build_train_dataset(args: SSLAMPretrainingArguments):
    """The dataset of `args.data`: a [`ShardedAudioStream`] for shards (for this process and worker layout), else
    `build_pretraining_dataset`. Raises [`DataSourceError`] when the data cannot be read."""
    try:
        if resolve_data_format(args.data, args.data_format) == "shards":
            return ShardedAudioStream(
                args.data,
                batch_size=args.per_device_train_batch_size,
                num_workers=args.dataloader_num_workers,
                rank=args.process_index,
                world_size=args.world_size,
                seed=args.data_seed if args.data_seed is not None else args.seed,
                buffer_size=args.shuffle_buffer_size,
                gradient_accumulation_steps=args.gradient_accumulation_steps,
            )
        return build_pretraining_dataset(
            args.data,
            data_format=args.data_format,
            split=args.split,
            audio_column=args.audio_column,
            streaming=args.streaming,
            config_name=args.dataset_config,
            seed=args.seed,
            shuffle_buffer_size=args.shuffle_buffer_size,
        )
    except (OSError, ValueError) as error:
        raise DataSourceError(f"cannot read --data {args.data}: {error}") from error


def build_trainer(args: SSLAMPretrainingArguments) -> SSLAMPretrainingTrainer:
    """Model, data, collator and `SSLAMPretrainingTrainer` for `args` (paths checked first)."""
    args.require_data()
    args.check_paths()
    dataset = build_train_dataset(args)
    model = build_model(args)
    feature_extractor = build_feature_extractor(args, model.config)
    collator = SSLAMPretrainingCollator.from_config(model.config, feature_extractor, seed=args.seed, crop=args.crop)
    return SSLAMPretrainingTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=feature_extractor,
        callbacks=[
            EMATeacherCallback.from_config(model.config, sync_check_steps=args.ema_sync_check_steps),
            CollapseGuardCallback.from_config(model.config),
        ],
    )


def run_pretraining(args: SSLAMPretrainingArguments) -> PretrainingRun:
    """Trains (resuming when `args.resume_from_checkpoint` is `"last"` or a checkpoint folder), then writes the
    trainer state, the full model and the encoder ([`OutputLayout`]). A run that stops on purpose raises a
    `training.errors.PretrainingError` and writes no model (its checkpoints stay)."""
    trainer = build_trainer(args)
    layout = OutputLayout(Path(args.output_dir))
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_state()
    trainer.save_model(str(layout.pretraining))
    if trainer.args.should_save:
        save_encoder(trainer.model, layout.encoder, trainer.processing_class)
    return PretrainingRun(trainer, layout)


def main(argv: list[str] | None = None) -> PretrainingRun:
    """The command line: parses `argv` (see `sslam.training.arguments.parse_args`; usage errors exit with code 2) and
    runs; a run that stops on purpose exits with code 1 and a one-line `error:`."""
    args = parse_args(argv)
    try:
        return run_pretraining(args)
    except PretrainingError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()


__all__ = [
    "ENCODER_SUBFOLDER",
    "OutputLayout",
    "PretrainingRun",
    "build_config",
    "build_feature_extractor",
    "build_model",
    "build_train_dataset",
    "build_trainer",
    "main",
    "run_pretraining",
]
