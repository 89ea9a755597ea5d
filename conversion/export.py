# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""What both converters share: strict weight loading, checks, writing the native folder, the model card, Hub upload."""

import argparse
import hashlib
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import constants, create_repo, get_token, upload_folder
from torch import nn

import sslam.modeling_sslam  # noqa: F401  (registers the Auto classes, so save_pretrained writes auto_map + code files)
from sslam.modeling_sslam.feature_extraction_sslam import NORMALIZATION_STATS, SSLAMFeatureExtractor
from sslam.modeling_sslam.modeling_sslam import SSLAMForAudioClassification, SSLAMModel, non_finite_tensors
from sslam.modeling_sslam.pretraining_sslam import PRETRAINING_SUBFOLDER
from sslam.model_cards.generate import write_model_card

from .fairseq_checkpoint import CheckpointError
from .labels import LabelsError, label_maps, resolve_label_names
from .verification import (
    REFERENCE_TOLERANCE,
    VerificationError,
    check_reference_file,
    run_zero_probe,
    verify_against_reference,
)


logger = logging.getLogger(__name__)

_TRUE_STRINGS = {"1", "ON", "YES", "TRUE"}


class HubAccessError(RuntimeError):
    """`--push_to_hub` was asked for but the Hub cannot be used (offline mode or no token)."""


@dataclass
class ConvertedModel:
    """A converted model ready to be checked and written, with what the model card should say about its origin."""

    model: SSLAMModel | SSLAMForAudioClassification
    feature_extractor: SSLAMFeatureExtractor
    source_name: str  # file the weights came from
    source_sha256: str
    source_description: str  # what kind of source it is, for the card
    converter: str  # module that did the conversion
    training: dict  # model card "training" section: data, recipe (optional), notes (optional)
    pretraining: nn.Module | None = None  # SSLAMForPreTraining, saved to the `pretraining/` subfolder
    notes: list[str] = field(default_factory=list)  # changes made during conversion


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_state_dict_strictly(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """`load_state_dict(strict=True)` with one error that names every missing, unexpected and mis-shaped weight."""
    expected = module.state_dict()
    problems = []
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mis_shaped = [
        f"{key} {tuple(tensor.shape)} (model: {tuple(expected[key].shape)})"
        for key, tensor in sorted(state_dict.items())
        if key in expected and tensor.shape != expected[key].shape
    ]
    if missing:
        problems.append(f"missing weights {missing}")
    if unexpected:
        problems.append(f"unexpected weights {unexpected}")
    if mis_shaped:
        problems.append(f"wrong shapes {mis_shaped}")
    if problems:
        raise CheckpointError(f"{source} does not fit {type(module).__name__}: " + "; ".join(problems))
    non_finite = non_finite_tensors(state_dict)
    if non_finite:
        raise CheckpointError(
            f"{source} holds NaN or inf values in {len(non_finite)} tensor(s), so it was not converted (the model "
            f"would output NaN): {', '.join(non_finite)}."
        )
    module.load_state_dict(state_dict, strict=True)


def set_labels(config, num_labels: int, stored_mids: list[str] | None, labels_csv: str | Path | None) -> None:
    """Fills `id2label` / `label2id`: CSV display names (checked), else stored mids, else transformers' defaults."""
    names = resolve_label_names(num_labels, stored_mids, labels_csv)
    if names is None:
        return
    if len(names) != num_labels:
        raise CheckpointError(f"the checkpoint stores {len(names)} class ids but its head has {num_labels} outputs.")
    config.id2label, config.label2id = label_maps(names)


def build_feature_extractor(max_length: int, dataset_stats: str = "audioset") -> SSLAMFeatureExtractor:
    """The original front end with the normalisation statistics of `dataset_stats` and the checkpoint's clip length."""
    return SSLAMFeatureExtractor.from_dataset_stats(dataset_stats, max_length=max_length)


def hub_offline() -> bool:
    flags = (os.environ.get(name, "").upper() for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return constants.is_offline_mode() or any(flag in _TRUE_STRINGS for flag in flags)


def hub_token() -> str:
    """The Hub token for an upload; a `HubAccessError` (before any network use) in offline mode or without one."""
    if hub_offline():
        raise HubAccessError("--push_to_hub needs network access, but HF_HUB_OFFLINE is set. Nothing was converted.")
    token = get_token()
    if not token:
        raise HubAccessError(
            "--push_to_hub needs a Hugging Face token (set HF_TOKEN or run `hf auth login`). Nothing was converted."
        )
    return token


def push_folder(folder: Path, repo_id: str, token: str) -> None:
    create_repo(repo_id, token=token, exist_ok=True)
    upload_folder(repo_id=repo_id, folder_path=folder, token=token, commit_message="Upload converted SSLAM model")
    logger.info(f"uploaded {folder} to https://huggingface.co/{repo_id}")


def check_and_save(
    converted: ConvertedModel,
    output_dir: str | Path,
    verify_input: str | Path | None = None,
    verify_reference: str | Path | None = None,
) -> dict[str, float]:
    """Zero probe, optional reference parity, then writes the folder (weights, config, extractor, code, card).

    Returns:
        the max abs error of every compared quantity (empty without a reference).
    """
    model = converted.model.eval()
    run_zero_probe(model)
    errors = {}
    if verify_reference is not None:
        errors = verify_against_reference(model, converted.feature_extractor, verify_input, verify_reference)
        for name, error in errors.items():
            logger.info(f"parity {name}: max abs error {error:.3g}")
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    converted.feature_extractor.save_pretrained(output_dir)
    if converted.pretraining is not None:
        converted.pretraining.save_pretrained(output_dir / PRETRAINING_SUBFOLDER)
    write_card(converted, output_dir, errors)
    logger.info(f"wrote {output_dir}")
    return errors


def write_card(converted: ConvertedModel, output_dir: Path, errors: dict[str, float]) -> None:
    """README.md with the architecture, preprocessing, training summary and conversion provenance."""
    kind = "finetuned" if isinstance(converted.model, SSLAMForAudioClassification) else "pretrained"
    training = dict(converted.training)
    if converted.notes:
        conversion_notes = " ".join(converted.notes)
        training["notes"] = " ".join(filter(None, [training.get("notes"), f"Conversion notes: {conversion_notes}"]))
    write_model_card(
        output_dir,
        kind=kind,
        model_name=output_dir.name,
        config=converted.model.config,
        training=training,
        conversion={
            "source": converted.source_description,
            "source_file": converted.source_name,
            "sha256": converted.source_sha256,
            "converter": f"`python -m {converted.converter}`",
            "parity": {name: f"{error:.3g}" for name, error in errors.items()} or None,
            "tolerance": REFERENCE_TOLERANCE if errors else None,
        },
        preprocessing=converted.feature_extractor.to_dict(),
    )


def conversion_parser(module_doc: str, prog: str, source_flag: str, source_help: str) -> argparse.ArgumentParser:
    """The parser of a converter CLI: the module docstring's first paragraph as description and its `Example:`
    section as epilog, the (required) source option, then the output options both converters share."""
    description = module_doc.split("\n\n")[0]
    _, _, example = module_doc.partition("\n\nExample:\n")
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=f"example:{example.rstrip()}" if example else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(source_flag, source_flag.replace("_", "-"), required=True, help=source_help)
    parser.add_argument(
        "--pytorch_dump_folder_path", "--pytorch-dump-folder-path", required=True,
        help="Output folder for the native model.",
    )
    parser.add_argument(
        "--labels_csv", "--labels-csv", help="AudioSet-style 'index,mid,display_name' CSV giving the class names."
    )
    parser.add_argument(
        "--dataset_stats",
        choices=sorted(NORMALIZATION_STATS),
        help="Normalisation statistics of the feature extractor (default: from the checkpoint, else audioset).",
    )
    parser.add_argument(
        "--verify_input", "--verify-input", help="Probe input: an .npy filter bank (T, 128) or an audio file."
    )
    parser.add_argument(
        "--verify_reference", "--verify-reference", help="Reference outputs (safetensors) of the original on the probe."
    )
    parser.add_argument(
        "--push_to_hub", "--push-to-hub", metavar="REPO_ID", help="Upload the converted folder to this Hub repo."
    )
    return parser


def output_folder_problem(folder: str | Path) -> str | None:
    """Why `folder` cannot be written as an output folder (an existing file, a file on its path, no permission), or
    None. Nothing is created: a temporary file is made and removed in its nearest existing ancestor."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        return f"{folder} is an existing file, not a folder"
    ancestor = folder
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} (on the path of {folder}) is a file"
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as error:
        return f"cannot write to {ancestor}: {error.strerror or error}"
    return None


def parse_conversion_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parses `argv` (None = `sys.argv[1:]`) and checks the options before any work: the verification options come
    together and name readable files, and the dump folder can be written."""
    args = parser.parse_args(argv)
    if (args.verify_input is None) != (args.verify_reference is None):
        parser.error("--verify_input and --verify_reference must be given together.")
    if args.verify_input is not None and not Path(args.verify_input).is_file():
        parser.error(f"--verify_input {args.verify_input} does not exist.")
    if args.verify_reference is not None:
        try:
            check_reference_file(args.verify_reference)
        except VerificationError as error:
            parser.error(f"--verify_reference: {error}")
    problem = output_folder_problem(args.pytorch_dump_folder_path)
    if problem is not None:
        parser.error(f"--pytorch_dump_folder_path: {problem}.")
    return args


def run_conversion_cli(args: argparse.Namespace, convert: Callable[..., dict[str, float]], **kwargs) -> None:
    """Checks Hub access first (when pushing), converts, then uploads; conversion errors exit with their message."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        token = hub_token() if args.push_to_hub else None
        errors = convert(
            output_dir=args.pytorch_dump_folder_path,
            labels_csv=args.labels_csv,
            dataset_stats=args.dataset_stats,
            verify_input=args.verify_input,
            verify_reference=args.verify_reference,
            **kwargs,
        )
    except (CheckpointError, LabelsError, VerificationError, HubAccessError) as error:
        sys.exit(f"error: {error}")
    if errors:
        logger.info(f"parity OK: largest max abs error {max(errors.values()):.3g}")
    if token is not None:
        push_folder(Path(args.pytorch_dump_folder_path), args.push_to_hub, token)


__all__ = [
    "ConvertedModel",
    "HubAccessError",
    "build_feature_extractor",
    "check_and_save",
    "conversion_parser",
    "hub_token",
    "load_state_dict_strictly",
    "output_folder_problem",
    "parse_conversion_args",
    "push_folder",
    "run_conversion_cli",
    "set_labels",
    "sha256_of",
]
