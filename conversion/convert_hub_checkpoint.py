# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""Migrate a Hub remote-code EAT / SSLAM checkpoint (`model_type: "eat"`, e.g. `ta012/SSLAM_pretrain`,
`worstchan/EAT-base_epoch30_finetune_AS2M`) to the native format, so it loads without `trust_remote_code` and with
transformers 5.

Input: a local folder with the remote-code `config.json` and `model.safetensors` (keys `model.local_encoder.proj.*`,
`model.extra_tokens`, `model.fixed_positional_encoder.positions`, `model.pre_norm.*`, `model.blocks.{i}.*` and, for
`model_variant: "finetune"`, `model.fc_norm.*`, `model.head.*`). Output: an `SSLAMModel` ("pretrain") or
`SSLAMForAudioClassification` ("finetune") folder. The remote code's `fc_norm` uses LayerNorm eps 1e-5 where the
original (fairseq) model uses 1e-6; the native model uses the original 1e-6.

Example:

    python -m sslam.conversion.convert_hub_checkpoint --input_dir SSLAM_AS2M_Finetuned/ --pytorch_dump_folder_path sslam-as2m
"""

import argparse
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from sslam.modeling_sslam.configuration_sslam import SSLAMConfig
from sslam.modeling_sslam.modeling_sslam import SSLAMForAudioClassification, SSLAMModel

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
from .fairseq_checkpoint import (
    DEFAULT_MAX_TIME_PATCHES,
    HEAD_KEY_MAP,
    POSITIONS_KEY,
    CheckpointError,
    build_config,
    cfg_value,
    encoder_state_dict,
    fit_position_table,
    rename_keys,
)
from .labels import LabelsError


logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
# Remote-code (HF EAT) key -> fairseq key, so the fairseq table does the rest of the mapping.
HUB_TO_FAIRSEQ_KEY_MAP: list[tuple[str, str]] = [
    (r"model\.local_encoder\.proj\.(weight|bias)", r"modality_encoders.IMAGE.local_encoder.proj.\1"),
    (r"model\.extra_tokens", "modality_encoders.IMAGE.extra_tokens"),
    (r"model\.fixed_positional_encoder\.positions", "modality_encoders.IMAGE.fixed_positional_encoder.positions"),
    (r"model\.pre_norm\.(weight|bias)", r"modality_encoders.IMAGE.context_encoder.norm.\1"),
    (r"model\.blocks\.(.+)", r"blocks.\1"),
    (r"model\.fc_norm\.(weight|bias)", r"fc_norm.\1"),
    (r"model\.head\.(weight|bias)", r"head.\1"),
]
REMOTE_FC_NORM_EPS_NOTE = (
    "The remote-code EAT classifier applies fc_norm with LayerNorm eps 1e-5; the original fairseq model, and this "
    "native port, use eps 1e-6 (logits can differ from the remote code in the last digits)."
)
# Remote-code settings the native model does not implement, with the only supported value.
UNSUPPORTED_SETTINGS = {"layer_norm_first": False, "norm_affine": True, "fixed_positions": True}


def read_hub_config(input_dir: Path) -> dict:
    path = input_dir / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{input_dir} has no config.json.")
    try:
        hub_config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}.") from error
    if not isinstance(hub_config, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(hub_config).__name__}.")
    if hub_config.get("model_type") != "eat":
        raise CheckpointError(
            f"{path} has model_type {hub_config.get('model_type')!r}; expected the remote-code EAT type 'eat'."
        )
    for name, supported in UNSUPPORTED_SETTINGS.items():
        if hub_config.get(name, supported) != supported:
            raise CheckpointError(f"{path}: {name}={hub_config[name]!r} is not supported (SSLAM/EAT use {supported}).")
    if hub_config.get("model_variant", "pretrain") not in ("pretrain", "finetune"):
        raise CheckpointError(f"{path}: unknown model_variant {hub_config['model_variant']!r}.")
    if hub_config.get("stride", hub_config.get("patch_size", 16)) != hub_config.get("patch_size", 16):
        raise CheckpointError(f"{path}: overlapping patches (stride != patch_size) are not supported.")
    return hub_config


def is_classifier(hub_config: dict) -> bool:
    return hub_config.get("model_variant", "pretrain") == "finetune"


def config_from_hub_config(hub_config: dict) -> SSLAMConfig:
    """`SSLAMConfig` from the remote-code EAT config (SPEC §2.7 field names); values of the wrong type or an
    impossible architecture give a `CheckpointError`."""
    hidden_size = cfg_value(hub_config, "embed_dim", "config.json", int, default=768)
    image_size = hub_config.get("img_size") or (1024, 128)
    if not (isinstance(image_size, (list, tuple)) and len(image_size) == 2):
        raise CheckpointError(f"config.json: img_size must be [frames, mel_bins], got {image_size!r}.")
    fields = dict(
        hidden_size=hidden_size,
        num_hidden_layers=hub_config.get("depth", 12),
        num_attention_heads=hub_config.get("num_heads", 12),
        intermediate_size=int(hidden_size * cfg_value(hub_config, "mlp_ratio", "config.json", (int, float), 4.0)),
        qkv_bias=hub_config.get("qkv_bias", True),
        layer_norm_eps=hub_config.get("norm_eps") or 1e-6,
        patch_size=hub_config.get("patch_size", 16),
        num_channels=hub_config.get("in_chans", 1),
        num_mel_bins=hub_config.get("mel_bins", 128),
        max_time_patches=hub_config.get("max_length", DEFAULT_MAX_TIME_PATCHES),
        max_length=image_size[0],
        hidden_dropout_prob=hub_config.get("drop_rate", 0.0),
        attention_probs_dropout_prob=hub_config.get("attn_drop_rate", 0.0),
        activation_dropout=hub_config.get("activation_dropout", 0.0),
        drop_path_rate=hub_config.get("end_drop_path_rate", 0.0),
    )
    if is_classifier(hub_config):
        fields.update(num_labels=hub_config.get("num_classes", 527), problem_type="multi_label_classification")
    return build_config(fields, "config.json")


def stored_label_names(hub_config: dict) -> list[str] | None:
    """Class names from the remote-code config's id2label, unless they are transformers' LABEL_i placeholders."""
    id2label = hub_config.get("id2label") or {}
    names = [id2label[key] for key in sorted(id2label, key=int)]
    if len(names) != hub_config.get("num_classes") or all(name == f"LABEL_{i}" for i, name in enumerate(names)):
        return None
    return names


def native_state_dicts(state_dict: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """Remote-code weights -> (encoder state dict for `SSLAMModel`, head state dict with fc_norm.* / classifier.*)."""
    fairseq_names, unmatched = rename_keys(state_dict, HUB_TO_FAIRSEQ_KEY_MAP)
    hub_name_of, _ = rename_keys({key: key for key in state_dict}, HUB_TO_FAIRSEQ_KEY_MAP)
    head_keys = {key for key in fairseq_names if key.startswith(("fc_norm.", "head."))}
    head, _ = rename_keys({key: fairseq_names[key] for key in head_keys}, HEAD_KEY_MAP)
    encoder, encoder_unmatched = encoder_state_dict({k: v for k, v in fairseq_names.items() if k not in head_keys})
    unmatched += [hub_name_of[key] for key in encoder_unmatched]
    if unmatched:
        raise CheckpointError(f"unknown keys in {WEIGHTS_NAME} (no mapping for them): {sorted(unmatched)}")
    return encoder, {key: value.float() for key, value in head.items()}


def build_model(
    config: SSLAMConfig, encoder: dict, head: dict, classifier: bool, source: str
) -> SSLAMModel | SSLAMForAudioClassification:
    if classifier:
        model = SSLAMForAudioClassification(config)
        load_state_dict_strictly(model, {f"sslam.{key}": value for key, value in encoder.items()} | head, source)
    else:
        model = SSLAMModel(config)
        load_state_dict_strictly(model, encoder | head, source)
    return model


def convert_hub_checkpoint(
    input_dir: str | Path,
    output_dir: str | Path,
    labels_csv: str | Path | None = None,
    dataset_stats: str | None = None,
    verify_input: str | Path | None = None,
    verify_reference: str | Path | None = None,
) -> dict[str, float]:
    """Converts one remote-code folder into `output_dir`; returns the max abs errors against `verify_reference`."""
    input_dir = Path(input_dir)
    hub_config = read_hub_config(input_dir)
    weights_path = input_dir / WEIGHTS_NAME
    if not weights_path.is_file():
        raise CheckpointError(f"{input_dir} has no {WEIGHTS_NAME}.")
    config = config_from_hub_config(hub_config)
    encoder, head = native_state_dicts(load_file(str(weights_path)))
    notes = []
    if POSITIONS_KEY in encoder:
        encoder[POSITIONS_KEY], note = fit_position_table(encoder[POSITIONS_KEY], config)
        notes += [note] if note else []
    classifier = is_classifier(hub_config)
    if classifier:
        stored_names = stored_label_names(hub_config) if labels_csv is None else None
        set_labels(config, config.num_labels, stored_names, labels_csv)
        notes.append(REMOTE_FC_NORM_EPS_NOTE)
    elif labels_csv is not None:
        raise LabelsError("--labels_csv applies to classifiers (model_variant 'finetune'); this is a 'pretrain' model.")
    for note in notes:
        logger.warning(note)
    model = build_model(config, encoder, head, classifier, f"{input_dir}/{WEIGHTS_NAME}")
    converted = ConvertedModel(
        model=model,
        feature_extractor=build_feature_extractor(config.max_length, dataset_stats or "audioset"),
        source_name=f"{input_dir.name}/{WEIGHTS_NAME}",
        source_sha256=sha256_of(weights_path),
        source_description="Hugging Face Hub remote-code EAT/SSLAM checkpoint (model_type 'eat')",
        converter=__spec__.name,
        training={"data": "The training data and recipe are not recorded in the remote-code repository."},
        notes=notes,
    )
    return check_and_save(converted, output_dir, verify_input, verify_reference)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = conversion_parser(
        __doc__,
        prog="python -m sslam.conversion.convert_hub_checkpoint",
        source_flag="--input_dir",
        source_help="Local copy of the remote-code repository.",
    )
    return parse_conversion_args(parser, argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run_conversion_cli(args, convert_hub_checkpoint, input_dir=args.input_dir)


if __name__ == "__main__":
    main()
