# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""Teacher targets and loss terms of SSLAM / EAT pre-training, as functions of tensors.

* [`build_teacher_targets`]: the data2vec / EAT target (top-k teacher FFN outputs, instance-normalised, averaged,
  layer-normalised).
* [`build_source_retention_target`]: SSLAM's Source Retention target of the mixed clips.
* [`pretraining_loss_terms`]: the element-wise loss terms (`eat_patch_loss`, `eat_cls_loss`, Stage 2
  `mix_patch_loss`) whose sum over all elements, divided by the number of masked patches, is the pre-training loss.

A new objective adds its targets here and its term to `pretraining_loss_terms`; `SSLAMForPreTraining` sums whatever
terms it returns.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

TARGET_NORM_EPS = 1e-5  # instance norm and layer norm of the teacher targets (no affine)


def instance_norm_over_tokens(layer_output: torch.Tensor) -> torch.Tensor:
    """`(B, N, D)` -> float32 `(B, N, D)` normalised per sample and channel over the N tokens (eps 1e-5, no affine)."""
    return F.instance_norm(layer_output.transpose(1, 2).float(), eps=TARGET_NORM_EPS).transpose(1, 2)


def build_teacher_targets(
    layer_outputs: list[torch.Tensor] | tuple[torch.Tensor, ...],
    top_k: int,
    instance_norm: bool = True,
    layer_norm: bool = True,
) -> torch.Tensor:
    """The data2vec / EAT target: the last `top_k` teacher layer outputs (all of them when fewer), each optionally
    instance-normalised over tokens, averaged, then optionally layer-normalised over channels (eps 1e-5, no affine).

    Args:
        layer_outputs: per-layer `(B, N, D)` FFN outputs of the teacher, patch tokens only.
    Returns:
        float32 `(B, N, D)`.
    """
    layers = list(layer_outputs)[-top_k:]
    if instance_norm:
        layers = [instance_norm_over_tokens(layer) for layer in layers]
    target = layers[0].float()
    for layer in layers[1:]:
        target = target + layer.float()
    target = target / len(layers)
    if layer_norm:
        target = F.layer_norm(target, target.shape[-1:], eps=TARGET_NORM_EPS)
    return target


def build_source_retention_target(
    own_targets: torch.Tensor, foreign_mixed_row_targets: torch.Tensor, mixed_rows: list[int], freq_patches: int
) -> torch.Tensor:
    """Source Retention target of the mixed clips.

    Args:
        own_targets: `(B, N, D)` target of each clean clip `i` (its EAT patch target).
        foreign_mixed_row_targets: `(B, len(mixed_rows) * F, D)` target of each clean clip computed by the teacher from
            that clip's mixed patch rows only; rolled by one so that mixture `i` gets the rows of its foreign clip
            `i - 1`.
        mixed_rows: the patch rows where the clips are mixed, increasing.
    Returns:
        `(B, N, D)`: `own` in the unmixed rows, `(own + foreign) / 2` in the mixed rows.
    """
    batch, num_tokens, hidden = own_targets.shape
    foreign = torch.roll(foreign_mixed_row_targets, shifts=1, dims=0)
    reconstructed = own_targets.clone().reshape(batch, num_tokens // freq_patches, freq_patches, hidden)
    reconstructed[:, mixed_rows] = foreign.reshape(batch, len(mixed_rows), freq_patches, hidden)
    return (own_targets + reconstructed.reshape(batch, num_tokens, hidden)) / 2.0


def regression_loss(prediction: torch.Tensor, target: torch.Tensor, loss_scale: float | None = None) -> torch.Tensor:
    """Element-wise squared error, scaled by `loss_scale` (default `1 / sqrt(D)`), as the original `d2v_loss`.

    Args:
        prediction, target: `(..., D)`; flattened to `(n, D)`.
    Returns:
        float32 `(n, D)`.
    """
    prediction = prediction.reshape(-1, prediction.shape[-1]).float()
    target = target.reshape(-1, prediction.shape[-1])
    scale = loss_scale if loss_scale is not None else 1 / math.sqrt(prediction.shape[-1])
    return F.mse_loss(prediction, target, reduction="none") * scale


def feature_spread(features: torch.Tensor) -> torch.Tensor:
    """The original's `compute_var`: mean over channels of the std over rows (`sqrt(var + 1e-6)`) of `(n, D)`."""
    features = features.reshape(-1, features.shape[-1]).float()
    return torch.sqrt(features.var(dim=0) + 1e-6).mean()


@dataclass
class TeacherTargets:
    """What the student regresses, for the clips of one batch (Stage 2: clean clips, then mixed clips).

    patch (`(clips, N, D)` float32): per-patch target. utterance (`(clips, D)`): target of the student's CLS token.
    source_retention (`(B, N, D)`, Stage 2): the Source Retention target of the mixed clips.
    """

    patch: torch.Tensor
    utterance: torch.Tensor
    source_retention: torch.Tensor | None = None


def pretraining_loss_terms(
    decoder_output: torch.Tensor,
    cls_prediction: torch.Tensor,
    targets: TeacherTargets,
    masked: torch.Tensor,
    clone_batch: int,
    sample_size: torch.Tensor,
    cls_loss_weight: float = 1.0,
    d2v_loss_weight: float = 1.0,
    loss_scale: float | None = None,
) -> dict[str, torch.Tensor]:
    """The element-wise loss terms of one batch (the original's, term by term).

    Args:
        decoder_output: `(rows, N, D)` decoder predictions; rows = clips * clone_batch, clip-major (Stage 2: the
            clean clips' rows, then the mixed clips' rows).
        cls_prediction: `(rows, D)` the student's CLS outputs.
        masked: `(rows, N)` bool, True at the masked patches (where the decoder is scored).
        sample_size: number of masked patches over all rows (`masked.sum()`).
    Returns:
        `eat_cls_loss` `(rows, D)` = d2v(CLS, utterance target) * cls_loss_weight * sample_size; `eat_patch_loss`
        `(masked patches, D)` = d2v(decoder, patch target) * d2v_loss_weight; with a Source Retention target also
        `mix_patch_loss` `(masked patches of the mixed rows, D)` = 2 * d2v(decoder, SRL target) * d2v_loss_weight
        (the x2 makes its normalisation by `sample_size` a mean over the mixed rows). The loss is the sum of every
        element of every term divided by `sample_size`.
    """
    terms = {}
    utterance_target = targets.utterance.repeat_interleave(clone_batch, dim=0)
    terms["eat_cls_loss"] = regression_loss(cls_prediction, utterance_target, loss_scale) * (
        cls_loss_weight * sample_size
    )
    patch_target = targets.patch.repeat_interleave(clone_batch, dim=0)[masked]
    terms["eat_patch_loss"] = regression_loss(decoder_output[masked], patch_target, loss_scale) * d2v_loss_weight
    if targets.source_retention is not None:
        mixed_rows_mask = masked.chunk(2, dim=0)[1]
        mixed_prediction = decoder_output.chunk(2, dim=0)[1][mixed_rows_mask]
        srl_target = targets.source_retention.repeat_interleave(clone_batch, dim=0)[mixed_rows_mask]
        terms["mix_patch_loss"] = regression_loss(mixed_prediction, srl_target, loss_scale) * 2.0 * d2v_loss_weight
    return terms


__all__ = [
    "TeacherTargets",
    "build_source_retention_target",
    "build_teacher_targets",
    "feature_spread",
    "pretraining_loss_terms",
    "regression_loss",
]
