# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""SSLAM / EAT pre-training from the command line: `python -m sslam.training.pretrain` (also under `accelerate launch`).

Settings come from, in increasing priority: the defaults of `PretrainArguments`, the `--preset`, a YAML file
(`--config`, keys = flag names without dashes) and the flags themselves.

    python -m sslam.training.pretrain --preset stage1 --data /data/audioset.tsv --output_dir runs/stage1
    python -m sslam.training.pretrain --preset stage2 --init_from runs/stage1/pretraining --data /data/wavs \
        --output_dir runs/stage2
    accelerate launch --multi_gpu --num_processes 8 -m sslam.training.pretrain --config stage2.yaml

At the end, `OUTPUT_DIR/pretraining/` holds the full model (student, decoder, EMA teacher; reload it with
`SSLAMForPreTraining.from_pretrained` or pass it to `--init_from`) and `OUTPUT_DIR/encoder/` the student encoder as an
`SSLAMModel` for `AutoModel.from_pretrained`. Checkpoints (`OUTPUT_DIR/checkpoint-N/`) resume exactly with
`--resume_from_checkpoint last` (or a checkpoint path).
"""

import argparse
import dataclasses
import os
from dataclasses import dataclass, field

import torch
import yaml
from transformers import set_seed

from sslam.modeling_sslam.configuration_sslam import LARGE_PRESET, SSLAMConfig
from sslam.modeling_sslam.feature_extraction_sslam import SSLAMFeatureExtractor
from sslam.modeling_sslam.pretraining_sslam import SSLAMForPreTraining

from .callbacks import EMATeacherCallback
from .collator import CROP_MODES, SSLAMPretrainingCollator
from .data import DATA_FORMATS, build_pretraining_dataset
from .trainer import SSLAMPretrainingTrainer, pretraining_arguments, save_encoder

PRESETS = {
    "stage1": dict(objective="eat", clone_batch=16, learning_rate=5e-4, warmup_steps=53_333, max_steps=400_000),
    "stage2": dict(objective="sslam", clone_batch=8, learning_rate=5e-5, warmup_steps=25_000, max_steps=200_000),
}
"""Stage 1 = EAT pre-training from scratch; Stage 2 = SSLAM, continued from a Stage-1 model (`--init_from`). Both
use 12 clips per device (4 devices in the original), AdamW (0.9, 0.95), weight decay 0.05, cosine schedule, clipping
at 4 and the EMA schedule 0.9998 -> 0.99999 over 100k updates (restarted at Stage 2)."""

MODEL_SIZES = {
    "base": {},
    "large": dict(LARGE_PRESET),
    "tiny": dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        decoder_hidden_size=16,
        decoder_num_layers=2,
        average_top_k_layers=2,
    ),
}
"""`base` = SSLAM / EAT base (the `SSLAMConfig` defaults), `large` = `SSLAMConfig.large()`, `tiny` = for smoke tests."""

ARCHITECTURE_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "decoder_hidden_size",
    "decoder_num_layers",
    "decoder_kernel_size",
    "decoder_groups",
)
TRAINING_CONFIG_FIELDS = (
    "objective",
    "clone_batch",
    "max_length",
    "mask_prob",
    "unmixed_window_frames",
    "mask_noise_std",
    "ema_decay",
    "ema_end_decay",
    "ema_anneal_end_step",
)


@dataclass
class PretrainArguments:
    """Every setting of the pre-training CLI (flag `--name` = YAML key `name`)."""

    # data
    data: str | None = field(default=None, metadata={"help": "folder, .tsv manifest, file list, audiofolder or Hub id"})
    data_format: str = field(default="auto", metadata={"choices": DATA_FORMATS})
    split: str = "train"
    audio_column: str = "audio"
    dataset_config: str | None = field(default=None, metadata={"help": "config name of a Hub dataset"})
    streaming: bool = field(default=False, metadata={"help": "stream an audiofolder/Hub dataset"})
    shuffle_buffer_size: int = 10_000
    crop: str = field(default="start", metadata={"choices": CROP_MODES, "help": "long clips: keep the start or crop"})
    # model
    preset: str | None = field(default=None, metadata={"choices": tuple(PRESETS)})
    model_size: str = field(default="base", metadata={"choices": tuple(MODEL_SIZES)})
    model_config: str | None = field(default=None, metadata={"help": "SSLAMConfig JSON (instead of model_size)"})
    init_from: str | None = field(
        default=None, metadata={"help": "saved SSLAMForPreTraining folder (or a converter output with pretraining/)"}
    )
    attn_implementation: str = field(default="sdpa", metadata={"choices": ("sdpa", "eager")})
    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    intermediate_size: int | None = None
    decoder_hidden_size: int | None = None
    decoder_num_layers: int | None = None
    decoder_kernel_size: int | None = None
    decoder_groups: int | None = None
    objective: str | None = field(default=None, metadata={"choices": ("eat", "sslam")})
    clone_batch: int | None = None
    max_length: int | None = field(default=None, metadata={"help": "clip length in frames (1024 = 10 s)"})
    mask_prob: float | None = None
    unmixed_window_frames: int | None = None
    mask_noise_std: float | None = None
    ema_decay: float | None = None
    ema_end_decay: float | None = None
    ema_anneal_end_step: int | None = None
    # optimisation
    output_dir: str | None = None
    max_steps: int = 400_000
    per_device_train_batch_size: int = 12
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-4
    warmup_steps: int = 53_333
    weight_decay: float = 0.05
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    max_grad_norm: float = 4.0
    lr_scheduler_type: str = "cosine"
    optim: str = "adamw_torch"
    seed: int = 1
    bf16: bool = False
    use_cpu: bool = False
    activation_checkpointing: bool = False
    num_workers: int = 4
    logging_steps: int = 100
    save_steps: int = 10_000
    save_total_limit: int | None = None
    report_to: str = "none"
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "'last' or a checkpoint folder"})
    ema_sync_check_steps: int = field(default=0, metadata={"help": "check teachers agree across processes"})


def _parse_bool(text: str) -> bool:
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}.")


def _field_type(dataclass_field: dataclasses.Field):
    """The parser type of a field annotated `T` or `T | None`."""
    annotation = dataclass_field.type
    for candidate in (bool, int, float, str):
        if annotation in (candidate, candidate | None):
            return _parse_bool if candidate is bool else candidate
    raise TypeError(f"Unsupported type {annotation} for --{dataclass_field.name}.")


EXAMPLES = """examples:
  python -m sslam.training.pretrain --preset stage1 --data /data/train.tsv --output_dir runs/stage1 --bf16
  python -m sslam.training.pretrain --preset stage2 --init_from runs/stage1/pretraining --data /data/wavs \\
      --output_dir runs/stage2 --bf16
  python -m sslam.training.pretrain --config stage2.yaml --resume_from_checkpoint last
  python -m sslam.training.pretrain --preset stage1 --model_size tiny --data data/demo --output_dir runs/smoke \\
      --max_steps 20 --per_device_train_batch_size 4
  accelerate launch --multi_gpu --num_processes 8 -m sslam.training.pretrain --config stage1.yaml

settings: defaults < --preset < --config YAML (keys = flag names) < flags. See training/README.md."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the examples' line breaks."""


def build_parser() -> argparse.ArgumentParser:
    """`--config FILE` plus one flag per `PretrainArguments` field (booleans: `--bf16` or `--bf16 false`)."""
    parser = argparse.ArgumentParser(
        prog="python -m sslam.training.pretrain",
        description="SSLAM / EAT self-supervised pre-training.",
        epilog=EXAMPLES,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--config", help="YAML file whose keys are flag names; flags given here override it")
    for dataclass_field in dataclasses.fields(PretrainArguments):
        kind = _field_type(dataclass_field)
        options = dict(type=kind, default=dataclass_field.default, help=dataclass_field.metadata.get("help", " "))
        if "choices" in dataclass_field.metadata:
            options["choices"] = dataclass_field.metadata["choices"]
        if kind is _parse_bool:
            options.update(nargs="?", const=True)
        parser.add_argument(f"--{dataclass_field.name}", **options)
    return parser


def _read_yaml(path: str, parser: argparse.ArgumentParser) -> dict:
    with open(path) as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        parser.error(f"{path} must hold a mapping of flag names to values.")
    known = {dataclass_field.name for dataclass_field in dataclasses.fields(PretrainArguments)}
    unknown = sorted(set(values) - known)
    if unknown:
        parser.error(f"unknown key(s) in {path}: {', '.join(unknown)}.")
    return values


def parse_args(argv: list[str] | None = None) -> PretrainArguments:
    """Defaults < `--preset` < YAML `--config` < explicit flags. Validates the combination."""
    parser = build_parser()
    first_pass, _ = parser.parse_known_args(argv)
    file_values = _read_yaml(first_pass.config, parser) if first_pass.config else {}
    preset = first_pass.preset or file_values.get("preset")
    if preset is not None and preset not in PRESETS:
        parser.error(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}.")
    parser.set_defaults(**{**PRESETS.get(preset, {}), **file_values})
    namespace = vars(parser.parse_args(argv))
    namespace.pop("config")
    args = PretrainArguments(**namespace)
    _validate(args, parser)
    return args


def _validate(args: PretrainArguments, parser: argparse.ArgumentParser) -> None:
    for dataclass_field in dataclasses.fields(PretrainArguments):
        choices = dataclass_field.metadata.get("choices")
        value = getattr(args, dataclass_field.name)
        if choices and value is not None and value not in choices:
            parser.error(f"--{dataclass_field.name}: invalid choice {value!r} (choose from {', '.join(choices)}).")
    if args.data is None:
        parser.error("--data is required (a folder, .tsv manifest, file list, audiofolder directory or Hub id).")
    if args.output_dir is None:
        parser.error("--output_dir is required.")
    if args.preset == "stage2" and args.init_from is None:
        parser.error("--preset stage2 continues a Stage-1 model: pass --init_from (a saved SSLAMForPreTraining).")
    if args.init_from is not None and args.model_config is not None:
        parser.error("--init_from already defines the model: drop --model_config.")
    if args.init_from is not None and any(getattr(args, name) is not None for name in ARCHITECTURE_FIELDS):
        parser.error("--init_from already defines the architecture: drop the size flags.")


def _overrides(args: PretrainArguments, names) -> dict:
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def build_config(args: PretrainArguments) -> SSLAMConfig:
    """Model config from `--model_config` or `--model_size`, with the explicit size and training flags applied."""
    if args.model_config is not None:
        base = SSLAMConfig.from_json_file(args.model_config).to_dict()
    else:
        base = SSLAMConfig(**MODEL_SIZES[args.model_size]).to_dict()
    overrides = _overrides(args, ARCHITECTURE_FIELDS + TRAINING_CONFIG_FIELDS)
    return SSLAMConfig(**{**base, **overrides})


def resolve_init_folder(path: str) -> str:
    """`path`, or `path/pretraining` for a converter output folder (whose top level is the encoder alone)."""
    nested = os.path.join(path, "pretraining")
    if os.path.isfile(os.path.join(nested, "config.json")):
        return nested
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"--init_from {path!r} is not a saved model folder (no config.json).")
    return path


def build_model(args: PretrainArguments) -> SSLAMForPreTraining:
    """A new model (seeded by `--seed`) or the student, decoder and teacher of `--init_from`."""
    if args.init_from is None:
        set_seed(args.seed)
        config = build_config(args)
        config._attn_implementation = args.attn_implementation
        return SSLAMForPreTraining(config)
    return SSLAMForPreTraining.from_pretrained(
        resolve_init_folder(args.init_from),
        dtype=torch.float32,
        attn_implementation=args.attn_implementation,
        **_overrides(args, TRAINING_CONFIG_FIELDS),
    )


def build_feature_extractor(args: PretrainArguments, config: SSLAMConfig) -> SSLAMFeatureExtractor:
    """The extractor of `--init_from` when it has one (keeps its normalisation), else the AudioSet one; its target
    length is set to the training clip length."""
    folder = resolve_init_folder(args.init_from) if args.init_from else None
    if folder and os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
        extractor = SSLAMFeatureExtractor.from_pretrained(folder)
    else:
        extractor = SSLAMFeatureExtractor()
    extractor.target_length = config.max_length
    return extractor


def build_trainer(args: PretrainArguments) -> SSLAMPretrainingTrainer:
    """Model, data, collator and `SSLAMPretrainingTrainer` for `args`."""
    dataset = build_pretraining_dataset(
        args.data,
        data_format=args.data_format,
        split=args.split,
        audio_column=args.audio_column,
        streaming=args.streaming,
        config_name=args.dataset_config,
        seed=args.seed,
        shuffle_buffer_size=args.shuffle_buffer_size,
    )
    model = build_model(args)
    feature_extractor = build_feature_extractor(args, model.config)
    collator = SSLAMPretrainingCollator.from_config(model.config, feature_extractor, seed=args.seed, crop=args.crop)
    training_arguments = pretraining_arguments(
        args.output_dir,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        adam_beta1=args.adam_beta1,
        adam_beta2=args.adam_beta2,
        max_grad_norm=args.max_grad_norm,
        lr_scheduler_type=args.lr_scheduler_type,
        optim=args.optim,
        seed=args.seed,
        bf16=args.bf16,
        use_cpu=args.use_cpu or not torch.cuda.is_available(),
        activation_checkpointing=args.activation_checkpointing,
        dataloader_num_workers=args.num_workers,
        logging_steps=args.logging_steps,
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        report_to=args.report_to,
    )
    return SSLAMPretrainingTrainer(
        model=model,
        args=training_arguments,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=feature_extractor,
        callbacks=[EMATeacherCallback(sync_check_steps=args.ema_sync_check_steps)],
    )


def main(argv: list[str] | None = None) -> None:
    """Trains, then saves `OUTPUT_DIR/pretraining/` (full model), `OUTPUT_DIR/encoder/` (SSLAMModel) and
    `OUTPUT_DIR/trainer_state.json` (the log history)."""
    args = parse_args(argv)
    trainer = build_trainer(args)
    resume = True if args.resume_from_checkpoint == "last" else args.resume_from_checkpoint
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_state()
    trainer.save_model(os.path.join(args.output_dir, "pretraining"))
    if trainer.args.should_save:
        save_encoder(trainer.model, os.path.join(args.output_dir, "encoder"), trainer.processing_class)


if __name__ == "__main__":
    main()
