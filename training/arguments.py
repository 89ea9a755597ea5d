# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""Pre-training settings: `SSLAMPretrainingArguments`, a `TrainingArguments` subclass whose defaults are the original
optimiser recipe, plus the data and model settings; parsed from the command line and YAML/JSON files with
`HfArgumentParser`.

Settings come from, in increasing priority: the defaults, the `--preset`, a YAML or JSON file (`--config`, keys =
argument names) and the flags themselves. Values are checked when the arguments are built and the paths
(`check_paths`: output folder writable, data, `init_from`, `model_config`) before any work; the command line reports
either as a one-line `error:` with exit code 2.
"""

import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import yaml
from transformers import HfArgumentParser, TrainingArguments

from sslam.modeling_sslam.configuration_sslam import LARGE_PRESET

from .collator import CROP_MODES
from .data import DATA_FORMATS, resolve_data_format

PRESETS = {
    "stage1": dict(objective="eat", clone_batch=16, learning_rate=5e-4, warmup_steps=53_333, max_steps=400_000),
    "stage2": dict(objective="sslam", clone_batch=8, learning_rate=5e-5, warmup_steps=25_000, max_steps=200_000),
}
"""Stage 1 = EAT pre-training from scratch; Stage 2 = SSLAM, continued from a Stage-1 model (`init_from`). Both use 12
clips per device (4 devices in the original), AdamW (0.9, 0.95), weight decay 0.05, cosine schedule, clipping at 4 and
the EMA schedule 0.9998 -> 0.99999 over 100k updates (restarted at Stage 2)."""

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
"""Model-shape settings; they cannot change a model loaded with `init_from`."""
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
"""Pre-training settings stored in the model config; they apply to new and `init_from` models alike."""


@dataclass
class SSLAMPretrainingArguments(TrainingArguments):
    """Every setting of SSLAM / EAT pre-training: `TrainingArguments` with the original recipe as defaults (AdamW
    betas (0.9, 0.95), weight decay 0.05, cosine schedule with warm-up, clipping at 4, 12 clips per device), the data
    source and the model. Model settings left at None keep the value of the model size, `model_config` or
    `init_from`."""

    # data
    data: str | None = field(
        default=None, metadata={"help": "folder, .tsv manifest, file list, shard folder or URL, audiofolder or Hub id"}
    )
    data_format: str = field(default="auto", metadata={"choices": DATA_FORMATS, "help": "how to read --data"})
    split: str = field(default="train", metadata={"help": "split of a datasets source"})
    audio_column: str = field(default="audio", metadata={"help": "audio column of a datasets source"})
    dataset_config: str | None = field(default=None, metadata={"help": "config name of a Hub dataset"})
    streaming: bool = field(default=False, metadata={"help": "stream an audiofolder/Hub dataset"})
    shuffle_buffer_size: int = field(
        default=1000, metadata={"help": "shuffle buffer of a shard stream or streamed source, in clips (per worker)"}
    )
    crop: str = field(default="start", metadata={"choices": CROP_MODES, "help": "long clips: keep the start or crop"})
    max_skipped_fraction: float = field(
        default=0.01,
        metadata={"help": "stop when more than this fraction of clips is unusable (skipped with a warning)"},
    )
    # model
    preset: str | None = field(default=None, metadata={"choices": tuple(PRESETS), "help": "stage1 or stage2 recipe"})
    model_size: str = field(default="base", metadata={"choices": tuple(MODEL_SIZES), "help": "architecture preset"})
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
    ema_sync_check_steps: int = field(default=0, metadata={"help": "check that teachers agree across processes"})
    # the original recipe, as defaults of TrainingArguments fields
    max_steps: int = 400_000
    per_device_train_batch_size: int = 12
    learning_rate: float = 5e-4
    warmup_steps: float = 53_333
    weight_decay: float = 0.05
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 4.0
    lr_scheduler_type: str = "cosine"
    seed: int = 1
    logging_steps: float = 100
    save_steps: float = 10_000
    dataloader_num_workers: int = 4
    dataloader_drop_last: bool = True
    remove_unused_columns: bool = False
    report_to: None | str | list[str] = "none"
    logging_nan_inf_filter: bool = field(
        default=False, metadata={"help": "logged losses are the real values (the divergence guard stops on NaN/inf)"}
    )

    def __post_init__(self):
        self._check_choices()
        self._check_values()
        if self.output_dir is None:
            raise ValueError("output_dir is required.")
        if self.preset == "stage2" and self.init_from is None:
            raise ValueError(
                "the stage2 preset continues a Stage-1 model: pass init_from (a saved SSLAMForPreTraining)."
            )
        if self.init_from is not None and self.model_config is not None:
            raise ValueError("init_from already defines the model: drop model_config.")
        if self.init_from is not None and any(getattr(self, name) is not None for name in ARCHITECTURE_FIELDS):
            raise ValueError("init_from already defines the architecture: drop the size settings.")
        if not torch.cuda.is_available():
            self.use_cpu = True  # bf16 on CPU needs it (TrainingArguments refuses bf16 without a GPU otherwise)
        super().__post_init__()

    def _check_values(self) -> None:
        """Raises a `ValueError` naming the first out-of-range value (before any work starts)."""
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(
                f"max_steps must be a positive number of optimizer steps (or -1: train num_train_epochs epochs), "
                f"got {self.max_steps}."
            )
        positive = {
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "per_device_train_batch_size": self.per_device_train_batch_size,
            "clone_batch": self.clone_batch,
            "shuffle_buffer_size": self.shuffle_buffer_size,
        }
        for name, value in positive.items():
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}.")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm >= 0):
            raise ValueError(f"max_grad_norm must be >= 0 (0 = no clipping), got {self.max_grad_norm}.")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate}.")
        if not 0.0 <= self.max_skipped_fraction <= 1.0:
            raise ValueError(f"max_skipped_fraction must be in [0, 1], got {self.max_skipped_fraction}.")

    def check_paths(self) -> None:
        """Raises a `ValueError` unless `output_dir` is (or can be made) a writable folder and `data`, `init_from`,
        `model_config` and `resume_from_checkpoint` (other than `last`) exist (a URL or Hub id is not checked).
        Creates `output_dir`."""
        check_output_dir(self.output_dir)
        if self.data is not None:
            try:
                resolve_data_format(self.data, self.data_format)
            except FileNotFoundError as error:
                raise ValueError(str(error)) from None
        if self.init_from is not None and not os.path.isdir(self.init_from):
            raise ValueError(f"init_from {self.init_from} is not a folder (a saved SSLAMForPreTraining).")
        if self.model_config is not None and not os.path.isfile(self.model_config):
            raise ValueError(f"model_config {self.model_config} is not a file (an SSLAMConfig JSON).")
        resume = self.resume_from_checkpoint
        if resume not in (None, "last") and not os.path.isdir(resume):
            raise ValueError(f"resume_from_checkpoint {resume} is not a folder (a checkpoint-N folder, or last).")

    def _check_choices(self) -> None:
        for dataclass_field in fields(SSLAMPretrainingArguments):
            choices = dataclass_field.metadata.get("choices")
            value = getattr(self, dataclass_field.name)
            if choices and value is not None and value not in choices:
                allowed = ", ".join(choices)
                raise ValueError(f"{dataclass_field.name}: invalid choice {value!r} (choose from {allowed}).")

    def require_data(self) -> None:
        """Raises a `ValueError` unless `data` names a source (needed by `run_pretraining`, not by a `Trainer` given
        its own dataset)."""
        if self.data is None:
            raise ValueError("data is required (a folder, .tsv manifest, file list, audiofolder directory or Hub id).")

    @classmethod
    def with_preset(cls, preset: str, **overrides) -> "SSLAMPretrainingArguments":
        """The arguments of `PRESETS[preset]`, with `overrides` applied on top."""
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}.")
        return cls(**{**PRESETS[preset], "preset": preset, **overrides})

    def config_overrides(self, names=TRAINING_CONFIG_FIELDS + ARCHITECTURE_FIELDS) -> dict:
        """The model-config fields these arguments set (those not left at None), among `names`."""
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def check_output_dir(output_dir: str | os.PathLike) -> None:
    """Raises a `ValueError` unless `output_dir` is a folder this process can write into (creating it if needed)."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output_dir {path} is a file, not a folder.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ValueError(f"output_dir {path} cannot be written ({error.strerror or error}).") from None


EXAMPLES = """examples:
  python -m sslam.training.pretrain --preset stage1 --data /data/train.tsv --output_dir runs/stage1 --bf16
  python -m sslam.training.pretrain --preset stage2 --init_from runs/stage1/pretraining --data /data/wavs \\
      --output_dir runs/stage2 --bf16
  python -m sslam.training.pretrain --config stage2.yaml --resume_from_checkpoint last
  python -m sslam.training.pretrain --preset stage1 --model_size tiny --data data/demo --output_dir runs/smoke \\
      --max_steps 20 --per_device_train_batch_size 4
  accelerate launch --multi_gpu --num_processes 8 -m sslam.training.pretrain --config stage1.yaml

settings: defaults < --preset < --config file (YAML or JSON; keys = argument names) < flags. See training/README.md."""


class PretrainingArgumentParser(HfArgumentParser):
    """`HfArgumentParser` whose usage errors are one `error:` line (the usage of every `TrainingArguments` option
    would fill a screen) with exit code 2."""

    def error(self, message: str):
        self.exit(2, f"error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> PretrainingArgumentParser:
    """The parser over `SSLAMPretrainingArguments`, with `--config FILE` (YAML or JSON)."""
    from argparse import RawDescriptionHelpFormatter

    parser = PretrainingArgumentParser(
        SSLAMPretrainingArguments,
        prog="python -m sslam.training.pretrain",
        description="SSLAM / EAT self-supervised pre-training.",
        epilog=EXAMPLES,
        formatter_class=RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML or JSON file whose keys are argument names; flags override it")
    return parser


def read_settings_file(path: str) -> dict:
    """The mapping of argument names to values in a YAML (`.yaml`/`.yml`) or JSON file."""
    text = Path(path).read_text()
    values = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    return values or {}


def parse_args(argv: list[str] | None = None) -> SSLAMPretrainingArguments:
    """Defaults < `--preset` < `--config` file < explicit flags. Invalid settings or paths exit with a one-line usage
    error (code 2)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    first_pass, _ = parser.parse_known_args(argv)
    file_values = {}
    if first_pass.config:
        try:
            file_values = read_settings_file(first_pass.config)
        except (OSError, ValueError, yaml.YAMLError) as error:
            parser.error(f"cannot read --config {first_pass.config}: {error}")
        if not isinstance(file_values, dict):
            parser.error(f"{first_pass.config} must hold a mapping of argument names to values.")
        known = {dataclass_field.name for dataclass_field in fields(SSLAMPretrainingArguments)}
        unknown = sorted(set(file_values) - known)
        if unknown:
            parser.error(f"unknown key(s) in {first_pass.config}: {', '.join(unknown)}.")
    preset = first_pass.preset or file_values.get("preset")
    if preset is not None and preset not in PRESETS:
        parser.error(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}.")
    parser.set_defaults(**{**PRESETS.get(preset, {}), **file_values})
    try:
        arguments, _ = parser.parse_args_into_dataclasses(argv, look_for_args_file=False)
        arguments.require_data()
        arguments.check_paths()
    except ValueError as error:
        parser.error(str(error))
    return arguments


__all__ = [
    "ARCHITECTURE_FIELDS",
    "MODEL_SIZES",
    "PRESETS",
    "PretrainingArgumentParser",
    "SSLAMPretrainingArguments",
    "TRAINING_CONFIG_FIELDS",
    "build_parser",
    "check_output_dir",
    "parse_args",
]
