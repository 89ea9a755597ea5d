# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""Numerical checks of a converted model: a zero-input shape probe, and parity with reference outputs of the original.

Reference files use the layout of the fixtures' `inference/*.safetensors` (one clip, no batch dimension):
`hidden_states` (L+1, S, D), `last_hidden_state` (S, D), `layer_results` (L, S, D), `utterance_feature` (D,), and for
classifiers `logits` / `probs_sigmoid` (num_labels,).
"""

from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from sslam.modeling_sslam.audio_io import load_audio
from sslam.modeling_sslam.feature_extraction_sslam import SSLAMFeatureExtractor
from sslam.modeling_sslam.modeling_sslam import SSLAMForAudioClassification, SSLAMModel


REFERENCE_TOLERANCE = 1e-4


class VerificationError(ValueError):
    """The converted model does not reproduce the reference outputs, or produces outputs of the wrong shape."""


def encoder_of(model: SSLAMModel | SSLAMForAudioClassification) -> SSLAMModel:
    return model.sslam if isinstance(model, SSLAMForAudioClassification) else model


@torch.no_grad()
def run_zero_probe(model: SSLAMModel | SSLAMForAudioClassification) -> None:
    """Runs one all-zero clip of `config.max_length` frames and checks the output shapes."""
    config = model.config
    frames = config.max_length - config.max_length % config.patch_size
    probe = torch.zeros(1, frames, config.num_mel_bins)
    outputs = model(probe)
    tokens = 1 + (frames // config.patch_size) * config.num_freq_patches
    if isinstance(model, SSLAMForAudioClassification):
        expected, actual, name = (1, config.num_labels), tuple(outputs.logits.shape), "logits"
    else:
        expected = (1, tokens, config.hidden_size)
        actual, name = tuple(outputs.last_hidden_state.shape), "last_hidden_state"
    if actual != expected:
        raise VerificationError(f"zero probe: {name} has shape {actual}, expected {expected}.")


def reference_frames(reference: dict[str, torch.Tensor], config) -> int | None:
    """Frames of the clip the reference was computed on, from its token count (None if it holds no token outputs)."""
    if "last_hidden_state" not in reference:
        return None
    patch_tokens = reference["last_hidden_state"].shape[0] - 1
    return patch_tokens // config.num_freq_patches * config.patch_size


def load_probe_input(
    path: str | Path, feature_extractor: SSLAMFeatureExtractor, num_frames: int | None = None
) -> torch.Tensor:
    """A `(1, T, mel_bins)` model input from an `.npy` filter bank (already normalised) or an audio file.

    Audio goes through `feature_extractor`, padded or truncated to `num_frames` when given (else to the extractor's
    `max_length`).
    """
    path = Path(path)
    if path.suffix == ".npy":
        features = torch.from_numpy(np.load(path)).float()
        return features.reshape(1, features.shape[-2], features.shape[-1])
    waveform = load_audio(path, target_sampling_rate=feature_extractor.sampling_rate)
    inputs = feature_extractor(
        waveform,
        sampling_rate=feature_extractor.sampling_rate,
        padding="max_length",
        max_length=feature_extractor.max_length if num_frames is None else num_frames,
        return_tensors="pt",
    )
    return inputs["input_values"]


@torch.no_grad()
def model_outputs(
    model: SSLAMModel | SSLAMForAudioClassification, input_values: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The reference quantities for one clip `(1, T, F)`, without the batch dimension."""
    encoder = encoder_of(model)
    encoded = encoder(input_values, output_hidden_states=True, output_ffn_outputs=True)
    outputs = {
        "hidden_states": torch.stack(encoded.hidden_states)[:, 0],
        "last_hidden_state": encoded.last_hidden_state[0],
        "layer_results": torch.stack(encoded.ffn_outputs)[:, 0],
        "utterance_feature": encoded.pooler_output[0],
    }
    if isinstance(model, SSLAMForAudioClassification):
        logits = model(input_values).logits[0]
        outputs.update(logits=logits, probs_sigmoid=torch.sigmoid(logits))
    return outputs


def max_abs_errors(outputs: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, float]:
    """Max |output - reference| for every quantity present in both."""
    errors = {}
    for name in sorted(set(outputs) & set(reference)):
        if outputs[name].shape != reference[name].shape:
            raise VerificationError(
                f"{name}: the model gives shape {tuple(outputs[name].shape)}, the reference "
                f"{tuple(reference[name].shape)} (wrong input length or architecture?)."
            )
        errors[name] = (outputs[name].float() - reference[name].float()).abs().max().item()
    if not errors:
        raise VerificationError(f"the reference holds none of the model's outputs ({sorted(outputs)}).")
    return errors


def check_reference_file(path: str | Path) -> None:
    """Raises a `VerificationError` unless `path` is a readable safetensors file (reads its header only)."""
    path = Path(path)
    if not path.is_file():
        raise VerificationError(f"the reference {path} does not exist.")
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, OSError) as error:
        raise VerificationError(f"the reference {path} is not a safetensors file ({error}).") from error


def verify_against_reference(
    model: SSLAMModel | SSLAMForAudioClassification,
    feature_extractor: SSLAMFeatureExtractor,
    input_path: str | Path,
    reference_path: str | Path,
    tolerance: float = REFERENCE_TOLERANCE,
) -> dict[str, float]:
    """Runs the model on the probe input and compares it with the reference safetensors.

    Returns:
        the max abs error of each compared quantity. Raises a `VerificationError` if any exceeds `tolerance`.
    """
    check_reference_file(reference_path)
    reference = load_file(str(reference_path))
    try:
        input_values = load_probe_input(input_path, feature_extractor, reference_frames(reference, model.config))
    except (OSError, ValueError) as error:  # missing, unreadable or invalid audio / .npy
        raise VerificationError(f"cannot read the probe input {input_path}: {error}") from error
    errors = max_abs_errors(model_outputs(model, input_values), reference)
    failed = {name: error for name, error in errors.items() if not error <= tolerance}
    if failed:
        raise VerificationError(f"converted model differs from {reference_path} beyond {tolerance:g}: {failed}")
    return errors


__all__ = [
    "REFERENCE_TOLERANCE",
    "VerificationError",
    "check_reference_file",
    "load_probe_input",
    "max_abs_errors",
    "model_outputs",
    "run_zero_probe",
    "verify_against_reference",
]
