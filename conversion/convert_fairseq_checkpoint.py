# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""Convert an original fairseq SSLAM / EAT checkpoint (github.com/ta012/SSLAM, github.com/cwx-worst-one/EAT) to a
native Hugging Face folder, without fairseq.

A pre-training checkpoint becomes an `SSLAMModel` (the student encoder) plus `pretraining/` (`SSLAMForPreTraining`:
student, CNN decoder and the EMA teacher from `_ema`); a fine-tuned checkpoint becomes an
`SSLAMForAudioClassification`. The architecture comes from the cfg stored in the checkpoint, weights are loaded
strictly and cast to float32, and the result is checked on a zero probe and, optionally, against reference outputs of
the original code. A pre-2024 EAT checkpoint with a `(1, 512, D)` positional table (64 time patches) gets the table
extended to `max_time_patches` rows, keeping the stored rows (`fairseq_checkpoint.fit_position_table`); the model card
records it.

Example:

    python -m sslam.conversion.convert_fairseq_checkpoint --checkpoint_path SSLAM_AS2M_finetuned.pt \\
        --pytorch_dump_folder_path sslam-as2m --labels_csv class_labels_indices.csv \\
        --verify_input test.wav --verify_reference original_outputs.safetensors
"""

import argparse
import copy
import logging
from pathlib import Path

import torch

from sslam.modeling_sslam.modeling_sslam import SSLAMForAudioClassification, SSLAMModel
from sslam.modeling_sslam.pretraining_sslam import SSLAMForPreTraining

from .export import (
    ConvertedModel,
    build_feature_extractor,
    check_and_save,
    conversion_parser,
    load_state_dict_strictly,
    parse_conversion_args,
    run_conversion_cli,
    set_labels,
    sha256_of,
)
from .fairseq_checkpoint import NativeWeights, fairseq_to_native, load_checkpoint_safely, pretraining_state_dict
from .labels import LabelsError


logger = logging.getLogger(__name__)


def prefixed(prefix: str, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}{key}": value for key, value in state_dict.items()}


def detect_dataset_stats(checkpoint: dict) -> str:
    """Normalisation statistics the checkpoint's task used (ESC-50 and Speech Commands flags), else AudioSet."""
    task_cfg = checkpoint["cfg"].get("task") or {}
    if task_cfg.get("esc50_eval"):
        return "esc50"
    if task_cfg.get("spcv2_eval"):
        return "speechcommands"
    return "audioset"


def detect_objective(checkpoint: dict) -> str:
    """`"sslam"` for a checkpoint trained with the SSLAM Stage-2 code (its user_dir), else `"eat"`."""
    user_dir = str((checkpoint["cfg"].get("common") or {}).get("user_dir") or "")
    return "sslam" if "sslam" in user_dir.lower() else "eat"


def training_summary(checkpoint: dict, kind: str) -> dict:
    """The model card's training section, from the cfg stored in the checkpoint (the data itself is not recorded)."""
    cfg = checkpoint["cfg"]
    optimization, dataset, model_cfg = (cfg.get(name) or {} for name in ("optimization", "dataset", "model"))
    learning_rate = optimization.get("lr")
    recipe = {
        "Task": (cfg.get("task") or {}).get("_name"),
        "Updates": optimization.get("max_update"),
        "Learning rate": learning_rate[0] if isinstance(learning_rate, list) else learning_rate,
        "Clips per GPU and update": dataset.get("batch_size"),
        "GPUs": (cfg.get("distributed_training") or {}).get("distributed_world_size"),
        "fp16": (cfg.get("common") or {}).get("fp16"),
    }
    if kind == "classification":
        recipe |= {key: model_cfg.get(key) for key in ("mixup", "drop_path_rate", "layer_decay", "label_smoothing")}
    else:
        keys = ("clone_batch", "ema_decay", "ema_end_decay", "ema_anneal_end_step")
        recipe |= {key: model_cfg.get(key) for key in keys}
    return {
        "data": "The training data is not recorded in the checkpoint; the settings below are those stored in its cfg.",
        "recipe": {name: value for name, value in recipe.items() if value is not None},
    }


def build_classifier(weights: NativeWeights, labels_csv: str | None, source: str) -> SSLAMForAudioClassification:
    set_labels(weights.config, weights.config.num_labels, weights.label_mids, labels_csv)
    model = SSLAMForAudioClassification(weights.config)
    load_state_dict_strictly(model, prefixed("sslam.", weights.encoder) | weights.head, source)
    return model


def build_encoder(weights: NativeWeights, source: str) -> SSLAMModel:
    model = SSLAMModel(weights.config)
    load_state_dict_strictly(model, weights.encoder, source)
    return model


def build_pretraining_model(weights: NativeWeights, objective: str, source: str) -> SSLAMForPreTraining:
    """`SSLAMForPreTraining` with the student, decoder and EMA teacher of the checkpoint."""
    config = copy.deepcopy(weights.config)
    config.objective = objective
    if weights.teacher is None:
        note = "The checkpoint has no `_ema` teacher; the teacher was initialised as a copy of the student."
        logger.warning(note)
        weights.notes.append(note)
    model = SSLAMForPreTraining(config)
    load_state_dict_strictly(model, pretraining_state_dict(weights), source)
    return model


def convert_fairseq_checkpoint(
    checkpoint_path: str | Path,
    output_dir: str | Path,
    labels_csv: str | Path | None = None,
    dataset_stats: str | None = None,
    objective: str | None = None,
    verify_input: str | Path | None = None,
    verify_reference: str | Path | None = None,
) -> dict[str, float]:
    """Converts one checkpoint into `output_dir`.

    Returns:
        the max abs errors against `verify_reference` (empty without one).
    """
    checkpoint_path = Path(checkpoint_path)
    checkpoint = load_checkpoint_safely(checkpoint_path)
    weights = fairseq_to_native(checkpoint)
    source = checkpoint_path.name
    if weights.kind == "classification":
        model, pretraining = build_classifier(weights, labels_csv, source), None
    else:
        if labels_csv is not None:
            raise LabelsError("--labels_csv applies to fine-tuned checkpoints; this is a pre-training checkpoint.")
        model = build_encoder(weights, source)
        pretraining = build_pretraining_model(weights, objective or detect_objective(checkpoint), source)
    feature_extractor = build_feature_extractor(
        weights.config.max_length, dataset_stats or detect_dataset_stats(checkpoint)
    )
    converted = ConvertedModel(
        model=model,
        feature_extractor=feature_extractor,
        pretraining=pretraining,
        source_name=source,
        source_sha256=sha256_of(checkpoint_path),
        source_description="original fairseq checkpoint (github.com/ta012/SSLAM, github.com/cwx-worst-one/EAT)",
        converter=__spec__.name,
        training=training_summary(checkpoint, weights.kind),
        notes=weights.notes,
    )
    return check_and_save(converted, output_dir, verify_input, verify_reference)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = conversion_parser(
        __doc__,
        prog="python -m sslam.conversion.convert_fairseq_checkpoint",
        source_flag="--checkpoint_path",
        source_help="fairseq checkpoint (.pt) of SSLAM or EAT.",
    )
    parser.add_argument(
        "--objective",
        choices=("eat", "sslam"),
        help="Pre-training objective stored in pretraining/config.json (default: from the checkpoint's user_dir).",
    )
    return parse_conversion_args(parser, argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run_conversion_cli(
        args, convert_fairseq_checkpoint, checkpoint_path=args.checkpoint_path, objective=args.objective
    )


if __name__ == "__main__":
    main()
