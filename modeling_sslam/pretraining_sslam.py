# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""SSLAM / EAT self-supervised pre-training: `SSLAMForPreTraining`.

Two objectives share one model (`config.objective`):

* `"eat"` (Stage 1, EAT): a student sees only the visible patches of `clone_batch` inverse-block-masked copies of each
  clip; a light CNN decoder predicts, at the masked patches, the teacher's layer-averaged and normalised FFN outputs
  of the full clip; the student's CLS predicts the token mean of that target. The teacher is an EMA of the student.
* `"sslam"` (Stage 2, SSLAM): each clip `i` is also partially mixed with clip `i - 1` (element-wise maximum of the
  log-mel spectrograms outside `num_unmixed_windows` unmixed windows). Clean and mixed clips are trained like EAT (with
  the same masks), the utterance target uses the last teacher layer only, and the Source Retention Loss asks the
  decoder output of a mixed clip to predict, in its mixed patch rows, the average of the clip's own target and of the
  foreign clip's target computed by the teacher from only the foreign clip's mixed rows.

Written from the published description of the original fairseq code and checked against its outputs (the parity
tests); the original's hard-coded shapes (1024 frames, 768 channels, 12 layers, 240-frame windows) are generalised.

Loss-term names and the original's names:

| objective | here | original |
|---|---|---|
| `"eat"` | `eat_patch_loss` | `IMAGE_regression` |
| `"eat"` | `eat_cls_loss` | `cls` |
| `"sslam"` | `eat_patch_loss`, `eat_cls_loss`, `mix_patch_loss` | same names |
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput, logging

from .configuration_sslam import SSLAMConfig
from .modeling_sslam import SSLAMModel, SSLAMPreTrainedModel

logger = logging.get_logger(__name__)

ORIGINAL_LOSS_NAMES = {
    "eat": {"eat_patch_loss": "IMAGE_regression", "eat_cls_loss": "cls"},
    "sslam": {"eat_cls_loss": "eat_cls_loss", "eat_patch_loss": "eat_patch_loss", "mix_patch_loss": "mix_patch_loss"},
}
"""Our loss-term names -> the names the original fairseq code logs (`loss_<name>`)."""

TARGET_NORM_EPS = 1e-5  # instance norm and layer norm of the teacher targets (no affine)
DECODER_NORM_EPS = 1e-5  # the decoder's LayerNorm over channels (no affine)


class RepresentationCollapseError(RuntimeError):
    """Raised when the target or prediction variance falls below its configured minimum after the warm-up."""


# ----------------------------------------------------------------------------------------------------------------------
# Masking
# ----------------------------------------------------------------------------------------------------------------------


def compute_block_mask_2d(
    num_masks: int,
    time_patches: int,
    freq_patches: int,
    mask_prob: float,
    mask_length: int,
    mask_prob_adjust: float = 0.0,
    inverse: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(Inverse) 2-D block masking of a `time_patches x freq_patches` patch grid, as the original data loader does.

    With `inverse=True` (the original's setting) `int(L * (1 - mask_prob + mask_prob_adjust) / mask_length**2)` block
    centres are drawn uniformly with replacement over the `L = time_patches * freq_patches` cells; each marks a
    `mask_length x mask_length` block (offsets clamped at the grid edges); the number of marked cells is then forced
    to `int(L * (1 - mask_prob))` by un-marking (or marking) a random subset of cells with `torch.multinomial` without
    replacement, row by row; finally the marked cells are the *visible* ones. With `inverse=False` the marked cells
    are the masked ones and `mask_prob` is used as given.

    Args:
        num_masks: number of masks (rows) to draw, e.g. `clone_batch` for one clip.
        generator: optional `torch.Generator` (CPU); the global RNG when None. With `torch.manual_seed(s)` set before
            the call and no generator, the draws equal the original's.
    Returns:
        `(num_masks, time_patches * freq_patches)` float32 mask, 1 = masked, time-major (`p = t * freq_patches + f`);
        every row has exactly the same number of masked patches.
    """
    if mask_length < 2:
        raise ValueError(
            f"block masking needs mask_length >= 2 (the original uses 1-D masking otherwise), got {mask_length}."
        )
    num_cells = time_patches * freq_patches
    if inverse:
        mask_prob = 1 - mask_prob
    num_centres = int(num_cells * ((mask_prob + mask_prob_adjust) / mask_length**2))
    marked = torch.zeros((num_masks, time_patches, freq_patches))
    centre_ids = torch.randint(0, num_cells, size=(num_masks, num_centres), generator=generator)
    marked.view(num_masks, -1).scatter_(1, centre_ids, 1)
    rows, centre_t, centre_f = marked.nonzero(as_tuple=True)

    offset = mask_length // 2
    block_rows, block_t, block_f = [], [], []
    for dt in range(mask_length):
        for df in range(mask_length):
            block_rows.append(rows)
            block_t.append(centre_t + (dt - offset))
            block_f.append(centre_f + (df - offset))
    block_t = torch.cat(block_t).clamp_(min=0, max=time_patches - 1)
    block_f = torch.cat(block_f).clamp_(min=0, max=freq_patches - 1)
    marked[(torch.cat(block_rows), block_t, block_f)] = 1

    marked = marked.reshape(num_masks, -1)
    _force_marked_count(marked, int(num_cells * mask_prob), generator)
    return 1 - marked if inverse else marked


def _force_marked_count(marked: torch.Tensor, target: int, generator: torch.Generator | None) -> None:
    """In place: un-marks (or marks) uniformly chosen cells of each `(num_masks, L)` row until `target` are marked."""
    counts = marked.sum(dim=-1)
    for row_index in range(len(marked)):
        row = marked[row_index]
        count = counts[row_index]
        if count > target:
            row[torch.multinomial(row, int(count - target), replacement=False, generator=generator)] = 0
        elif count < target:
            row[torch.multinomial(1 - row, int(target - count), replacement=False, generator=generator)] = 1


def compute_pretraining_masks(
    config: SSLAMConfig, batch_size: int, time_patches: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Masks for a batch as the original collater builds them: `clone_batch` masks per clip, clips in order.

    Returns:
        `(batch_size * clone_batch, time_patches * freq_patches)` float32, 1 = masked; row `i * clone_batch + j` is
        clone `j` of clip `i`.
    """
    masks = [
        compute_block_mask_2d(
            config.clone_batch,
            time_patches,
            config.num_freq_patches,
            mask_prob=config.mask_prob,
            mask_length=config.mask_length,
            mask_prob_adjust=config.mask_prob_adjust,
            inverse=config.inverse_mask,
            generator=generator,
        )
        for _ in range(batch_size)
    ]
    return torch.cat(masks, dim=0)


def visible_first_order(mask: torch.Tensor, kept_token_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The order in which patches are laid out for the student: visible patches first, then masked ones.

    Args:
        mask: `(rows, N)`, nonzero = masked, the same masked count in every row.
        kept_token_ids: optional `(rows, num_kept)` patch indices of the visible patches in the order the student
            should see them (e.g. another platform's `argsort` order); by default `mask.to(torch.uint8).argsort(dim=1)`
            as the original (its order is not stable, which only changes float summation order).
    Returns:
        `(rows, N)` int64 permutation: `[:, :num_kept]` visible, `[:, num_kept:]` masked (where mask-token noise goes).
    """
    order = mask.to(torch.uint8).argsort(dim=1)
    if kept_token_ids is None:
        return order
    num_kept = mask.shape[1] - int(mask[0].bool().sum())
    kept_token_ids = kept_token_ids.to(device=order.device, dtype=torch.long)
    if kept_token_ids.shape != (mask.shape[0], num_kept):
        raise ValueError(
            f"kept_token_ids must have shape {(mask.shape[0], num_kept)} (rows, visible patches), "
            f"got {tuple(kept_token_ids.shape)}."
        )
    same_set = torch.equal(kept_token_ids.sort(dim=1).values, order[:, :num_kept].sort(dim=1).values)
    if not same_set:
        raise ValueError("kept_token_ids must list exactly the visible (unmasked) patches of each mask row.")
    return torch.cat([kept_token_ids, order[:, num_kept:]], dim=1)


def draw_mask_noise(
    num_rows: int, num_masked: int, hidden_size: int, std: float, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """The decoder's mask tokens: one draw of shape `(rows, num_masked, D)` from N(0, std^2), as the original.

    Element `j` of row `r` belongs at patch `visible_first_order(mask)[r, num_kept + j]` (see `position_mask_noise`).
    """
    device = generator.device if generator is not None else device
    return torch.empty(num_rows, num_masked, hidden_size, device=device).normal_(0, std, generator=generator)


def position_mask_noise(noise: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """`(rows, num_masked, D)` noise in draw order -> `(rows, N, D)` at the masked patches (zeros at visible ones)."""
    rows, num_masked, hidden = noise.shape
    masked_ids = order[:, order.shape[1] - num_masked :].to(noise.device)
    positioned = noise.new_zeros(rows, order.shape[1], hidden)
    return positioned.scatter_(1, masked_ids.unsqueeze(-1).expand(-1, -1, hidden), noise)


# ----------------------------------------------------------------------------------------------------------------------
# Stage-2 mixing geometry
# ----------------------------------------------------------------------------------------------------------------------


def check_unmixed_window_geometry(num_frames: int, window_frames: int, num_windows: int, patch_size: int) -> None:
    """Raises a `ValueError` unless `num_windows` windows of `window_frames` fit in a clip of `num_frames` frames.

    Windows start on patch boundaries, cover whole patch rows and do not overlap; at least one patch row of the clip
    stays mixed (the original never leaves the last patch row unmixed).
    """
    if num_windows < 0:
        raise ValueError(f"num_unmixed_windows must be >= 0, got {num_windows}.")
    if window_frames <= 0 or window_frames % patch_size != 0:
        raise ValueError(
            f"unmixed_window_frames ({window_frames}) must be a positive multiple of patch_size ({patch_size})."
        )
    time_patches = num_frames // patch_size
    if num_windows * (window_frames // patch_size) > time_patches - 1:
        raise ValueError(
            f"{num_windows} unmixed window(s) of {window_frames} frames do not fit in a clip of {num_frames} frames: "
            f"they would cover {num_windows * window_frames} frames, but at most {(time_patches - 1) * patch_size} "
            f"may be unmixed (one patch row of {patch_size} frames must stay mixed). Use shorter or fewer windows."
        )


def unmixed_window_start_range(
    window_index: int, earliest_row: int, time_patches: int, window_rows: int, num_windows: int
) -> tuple[int, int]:
    """Inclusive range of patch rows where unmixed window `window_index` (0-based) may start.

    The rule generalises the original's draw (T = 1024 frames, two windows of 15 patch rows: first start in
    {0, ..., 31} rows = {0, 16, ..., 496} frames, second in {first + 15, ..., 48} rows = {idx1 + 240, ..., 768} frames):
    window `k` (1-based) of `n` starts after the previous window (`earliest_row`) and at most at
    `min(R - 1 - (n - k + 1) * w, max(earliest_row, floor(k * R / n) - 1))` for `R` patch rows and `w` rows per
    window; i.e. window k starts within the first k/n of the clip when possible, and the remaining windows plus one
    mixed patch row always fit after it.
    """
    k = window_index + 1
    fit_limit = time_patches - 1 - (num_windows - k + 1) * window_rows
    share_limit = max(earliest_row, (k * time_patches) // num_windows - 1)
    return earliest_row, min(fit_limit, share_limit)


def draw_unmixed_window_starts(
    num_frames: int,
    window_frames: int,
    num_windows: int,
    patch_size: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draws the unmixed windows of one Stage-2 batch (shared by all clips), uniformly within
    `unmixed_window_start_range`, with `torch.randint` on `generator` (global RNG when None).

    Returns:
        `(num_windows,)` int64 frame starts, increasing, multiples of `patch_size`.
    """
    check_unmixed_window_geometry(num_frames, window_frames, num_windows, patch_size)
    time_patches, window_rows = num_frames // patch_size, window_frames // patch_size
    starts, earliest = [], 0
    for index in range(num_windows):
        low, high = unmixed_window_start_range(index, earliest, time_patches, window_rows, num_windows)
        row = int(torch.randint(low, high + 1, (1,), generator=generator))
        starts.append(row * patch_size)
        earliest = row + window_rows
    return torch.tensor(starts, dtype=torch.long)


def check_unmixed_window_starts(
    starts: list[int], num_frames: int, window_frames: int, num_windows: int, patch_size: int
) -> None:
    """Raises a `ValueError` unless `starts` are `num_windows` increasing, non-overlapping patch-aligned window starts
    whose windows lie inside the clip."""
    check_unmixed_window_geometry(num_frames, window_frames, num_windows, patch_size)
    if len(starts) != num_windows:
        raise ValueError(f"expected {num_windows} unmixed window start(s), got {len(starts)}: {starts}.")
    previous_end = 0
    for start in starts:
        if start % patch_size != 0:
            raise ValueError(f"unmixed window starts must be multiples of patch_size ({patch_size}), got {starts}.")
        if start < previous_end:
            raise ValueError(f"unmixed windows must be increasing and must not overlap, got starts {starts} "
                             f"with {window_frames}-frame windows.")
        previous_end = start + window_frames
    if previous_end > num_frames:
        raise ValueError(f"unmixed windows {starts} of {window_frames} frames exceed the clip ({num_frames} frames).")


def unmixed_patch_rows(starts: list[int], window_frames: int, patch_size: int) -> list[int]:
    """Patch rows covered by the unmixed windows, increasing."""
    window_rows = window_frames // patch_size
    return [start // patch_size + offset for start in starts for offset in range(window_rows)]


def mixed_patch_rows(time_patches: int, starts: list[int], window_frames: int, patch_size: int) -> list[int]:
    """Patch rows outside the unmixed windows (where clip `i` is mixed with clip `i - 1`), increasing."""
    unmixed = set(unmixed_patch_rows(starts, window_frames, patch_size))
    return [row for row in range(time_patches) if row not in unmixed]


def mix_spectrograms(spectrograms: torch.Tensor, starts: list[int], window_frames: int) -> torch.Tensor:
    """Partial mixtures: clip `i` mixed with clip `i - 1` (clip 0 with the last) by element-wise maximum, except in
    the unmixed windows where clip `i` is kept.

    Args:
        spectrograms: `(B, C, T, F)` normalised log-mel spectrograms, B >= 2.
        starts: frame starts of the unmixed windows; each covers `window_frames` frames.
    Returns:
        `(B, C, T, F)` mixtures.
    """
    foreign = torch.roll(spectrograms, shifts=1, dims=0)
    for start in starts:
        foreign[:, :, start : start + window_frames, :] = float("-inf")
    return torch.max(spectrograms, foreign)


def select_patch_rows(tokens: torch.Tensor, rows: list[int], freq_patches: int) -> torch.Tensor:
    """`(B, R * F, D)` time-major patch tokens -> `(B, len(rows) * F, D)`: the given patch rows, in the given order."""
    batch, num_tokens, hidden = tokens.shape
    grid = tokens.reshape(batch, num_tokens // freq_patches, freq_patches, hidden)
    return grid[:, rows].reshape(batch, len(rows) * freq_patches, hidden)


# ----------------------------------------------------------------------------------------------------------------------
# Targets and losses
# ----------------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------------------------------


class SSLAMDecoderLayer(nn.Module):
    """Grouped Conv2d (`padding = k // 2`, trimmed to the input size for even k) -> LayerNorm over channels (no affine,
    eps 1e-5) -> GELU; the layer input is added when input and output channel counts are equal.
    `(B, C_in, H, W)` -> `(B, decoder_hidden_size, H, W)`."""

    def __init__(self, config: SSLAMConfig, in_channels: int):
        super().__init__()
        kernel = config.decoder_kernel_size
        self.conv = nn.Conv2d(
            in_channels, config.decoder_hidden_size, kernel, padding=kernel // 2, groups=config.decoder_groups
        )
        self.trim = 1 if kernel % 2 == 0 else 0
        self.layer_norm = nn.LayerNorm(config.decoder_hidden_size, eps=DECODER_NORM_EPS, elementwise_affine=False)
        self.activation = nn.GELU()
        self.use_residual = in_channels == config.decoder_hidden_size

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        output = self.conv(hidden_states)
        if self.trim:
            output = output[:, :, : -self.trim, : -self.trim]
        # Normalise over channels on a (B, H, W, C) view; permuting (rather than swapping C and W) keeps the next
        # convolution on a fast channels-last path on CPU.
        output = self.activation(self.layer_norm(output.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return output + hidden_states if self.use_residual else output


class SSLAMDecoder(nn.Module):
    """The light CNN decoder on the patch grid: `(B, N, D)` tokens (time-major) -> `(B, N, D)` predictions."""

    def __init__(self, config: SSLAMConfig):
        super().__init__()
        channels = [config.hidden_size] + [config.decoder_hidden_size] * (config.decoder_num_layers - 1)
        self.layers = nn.ModuleList([SSLAMDecoderLayer(config, in_channels) for in_channels in channels])
        self.proj = nn.Linear(config.decoder_hidden_size, config.hidden_size)

    def forward(self, tokens: torch.Tensor, time_patches: int) -> torch.Tensor:
        batch, num_tokens, hidden = tokens.shape
        grid = tokens.transpose(1, 2).reshape(batch, hidden, time_patches, num_tokens // time_patches)
        for layer in self.layers:
            grid = layer(grid)
        return self.proj(grid.reshape(batch, -1, num_tokens).transpose(1, 2))


@dataclass
class SSLAMForPreTrainingOutput(ModelOutput):
    """
    Output of [`SSLAMForPreTraining`]. `rows = clips * clone_batch` student rows (Stage 2: clips = 2B, clean then
    mixed), `N` patches, `D` channels.

    loss (`()`): sum of all loss-term elements divided by `sample_size`.
    loss_terms (`dict[str, ()]`): detached float32 sum of each term (`eat_patch_loss`, `eat_cls_loss`, and in Stage 2
        `mix_patch_loss`; see `ORIGINAL_LOSS_NAMES`).
    sample_size (`()` int64): number of masked patches over all student rows.
    target_var, pred_var (`()`): mean over channels of the std of the masked-patch targets / decoder predictions.
    mask (`(B * clone_batch, N)` bool): the masks used (True = masked). unmixed_window_starts (`(num_windows,)`, Stage 2).
    Only with `output_intermediates=True`:
    decoder_output (`(rows, N, D)`), student_encoder_input (`(rows, 1 + num_kept, D)`: CLS + visible tokens after the
    pre-norm LayerNorm), kept_token_ids (`(rows, num_kept)`), cls_loss_per_row (`(rows, D)`: the CLS term's
    elements), teacher_patch_targets (`(clips, N, D)`), teacher_utterance_targets (`(clips, D)`), and in Stage 2
    source_retention_targets (`(B, N, D)`) and teacher_dropped_input (`(B, 1 + kept_rows * F, D)`: the teacher's
    input to its first block for the clean clips with the unmixed rows removed).
    """

    loss: torch.Tensor | None = None
    loss_terms: dict[str, torch.Tensor] | None = None
    sample_size: torch.Tensor | None = None
    target_var: torch.Tensor | None = None
    pred_var: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    unmixed_window_starts: torch.Tensor | None = None
    decoder_output: torch.Tensor | None = None
    student_encoder_input: torch.Tensor | None = None
    kept_token_ids: torch.Tensor | None = None
    cls_loss_per_row: torch.Tensor | None = None
    teacher_patch_targets: torch.Tensor | None = None
    teacher_utterance_targets: torch.Tensor | None = None
    source_retention_targets: torch.Tensor | None = None
    teacher_dropped_input: torch.Tensor | None = None


@dataclass
class _TeacherTargets:
    patch: torch.Tensor  # (clips, N, D)
    utterance: torch.Tensor  # (clips, D)
    source_retention: torch.Tensor | None = None  # (B, N, D), Stage 2
    dropped_input: torch.Tensor | None = None  # (B, 1 + kept, D), Stage 2 with intermediates


def native_pretraining_state_dict(weights) -> dict[str, torch.Tensor]:
    """`SSLAMForPreTraining` state dict of converted fairseq weights (`NativeWeights`): student = `encoder`, decoder =
    `decoder`, teacher = `teacher` (a copy of the student when the checkpoint has no `_ema`)."""
    teacher = weights.encoder if weights.teacher is None else weights.teacher
    parts = {"sslam.": weights.encoder, "decoder.": weights.decoder, "teacher.": teacher}
    return {prefix + key: tensor for prefix, part in parts.items() for key, tensor in part.items()}


class SSLAMForPreTraining(SSLAMPreTrainedModel):
    """SSLAM / EAT pre-training: student encoder `sslam`, CNN `decoder`, frozen EMA `teacher` (always eval, never
    trained, kept in float32 and run without autocast). `config.objective` selects Stage 1 (`"eat"`) or Stage 2
    (`"sslam"`).

    Input `(B, T, F)` or `(B, 1, T, F)` normalised log-mel spectrograms (T a multiple of the patch size). The EMA update
    is not done in `forward`: call `update_teacher(step)` (or `ema_step(decay)`) after every optimizer step.
    """

    _keep_in_fp32_modules_strict = ["teacher"]

    def __init__(self, config: SSLAMConfig):
        super().__init__(config)
        self.sslam = SSLAMModel(config)
        self.decoder = SSLAMDecoder(config)
        self.teacher = SSLAMModel(config)
        self.num_updates = 0
        self.post_init()
        self.init_teacher_from_student()

    # -- teacher management --------------------------------------------------------------------------------------

    def get_input_embeddings(self) -> nn.Module:
        return self.sslam.get_input_embeddings()

    def train(self, mode: bool = True) -> "SSLAMForPreTraining":
        """Sets the student and decoder to `mode`; the teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def _freeze_teacher(self) -> None:
        self.teacher.requires_grad_(False)
        self.teacher.eval()

    @torch.no_grad()
    def init_teacher_from_student(self) -> None:
        """Copies every student parameter and buffer into the teacher and freezes it."""
        if not any(tensor.is_meta for tensor in self.sslam.state_dict().values()):
            self.teacher.load_state_dict(self.sslam.state_dict())
        self._freeze_teacher()

    @torch.no_grad()
    def _init_missing_teacher_tensors(self, missing_keys) -> None:
        """After loading a checkpoint: teacher tensors absent from it are copied from the student."""
        missing = sorted(key[len("teacher.") :] for key in missing_keys if key.startswith("teacher."))
        if missing:
            student = self.sslam.state_dict()
            teacher = self.teacher.state_dict()
            for key in missing:
                teacher[key].copy_(student[key])
            logger.warning(
                "The checkpoint has no EMA teacher weights for %d tensor(s); they were initialised from the student.",
                len(missing),
            )
        self._freeze_teacher()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`; teacher tensors missing from the checkpoint (e.g. an `SSLAMModel`
        checkpoint) are initialised from the student instead of randomly."""
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, loading_info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        model._init_missing_teacher_tensors(loading_info["missing_keys"])
        return (model, loading_info) if output_loading_info else model

    @classmethod
    def from_native_weights(cls, weights, **config_overrides) -> "SSLAMForPreTraining":
        """Builds the model from a converted fairseq pre-training checkpoint (`conversion.fairseq_checkpoint.
        NativeWeights`, see `native_pretraining_state_dict`) with a strict load. `config_overrides` set config fields
        (e.g. `objective="eat"`)."""
        if weights.decoder is None:
            raise ValueError(f"a {weights.kind!r} checkpoint has no decoder; a pre-training checkpoint is needed.")
        model = cls(SSLAMConfig(**{**weights.config.to_dict(), **config_overrides}))
        model.load_state_dict(native_pretraining_state_dict(weights), strict=True)
        return model

    def ema_decay_at(self, step: int) -> float:
        """EMA decay after `step` optimizer updates: linear from `ema_decay` to `ema_end_decay` over
        `ema_anneal_end_step` updates, then `ema_end_decay` (constant `ema_decay` when both are equal)."""
        start, end, total = self.config.ema_decay, self.config.ema_end_decay, self.config.ema_anneal_end_step
        if start == end:
            return start
        if step >= total:
            return end
        return end - (end - start) * (1 - step / total)

    @torch.no_grad()
    def ema_step(self, decay: float) -> None:
        """One EMA update of the teacher in float32: `teacher = decay * teacher + (1 - decay) * student` for every
        trainable student parameter that the teacher has; frozen parameters and buffers (the position table) are
        copied. Skipped when `decay >= 1`."""
        if decay >= 1:
            return
        rate = 1 - decay
        teacher_params = dict(self.teacher.named_parameters())
        for name, param in self.sslam.named_parameters():
            if name not in teacher_params:
                continue
            teacher_param = teacher_params[name]
            student_value = param.detach().to(teacher_param.dtype)
            if param.requires_grad:
                teacher_param.mul_(1 - rate).add_(student_value, alpha=rate)
            else:
                teacher_param.copy_(student_value)
        teacher_buffers = dict(self.teacher.named_buffers())
        for name, buffer in self.sslam.named_buffers():
            if name in teacher_buffers:
                teacher_buffers[name].copy_(buffer)

    def update_teacher(self, step: int) -> float:
        """What to call after optimizer step `step` (1-based): records `num_updates = step` (for the collapse guard)
        and applies `ema_step(ema_decay_at(step))`. Returns the decay used."""
        self.num_updates = step
        decay = self.ema_decay_at(step)
        self.ema_step(decay)
        return decay

    # -- forward --------------------------------------------------------------------------------------------------

    def forward(
        self,
        input_values: torch.Tensor,
        mask: torch.Tensor | None = None,
        unmixed_window_starts: torch.Tensor | list[int] | None = None,
        mask_noise: torch.Tensor | None = None,
        return_loss: bool = True,
        generator: torch.Generator | None = None,
        kept_token_ids: torch.Tensor | None = None,
        output_intermediates: bool = False,
    ) -> SSLAMForPreTrainingOutput:
        r"""
        input_values (`(B, T, F)` or `(B, 1, T, F)`): normalised log-mel spectrograms; Stage 2 needs B >= 2.
        mask (`(B * clone_batch, N)`, *optional*): 1/True = masked, rows clip-major (`i * clone_batch + j`), the same
            masked count in every row. Drawn with `compute_pretraining_masks` (using `generator`) when None. In Stage 2
            the mixed clips reuse the masks of their clean clips.
        unmixed_window_starts (`(num_unmixed_windows,)` frame starts, *optional*, Stage 2): drawn with
            `draw_unmixed_window_starts` (using `generator`) when None.
        mask_noise (`(rows, N, D)`, *optional*): the decoder's mask tokens at the masked patches (other entries are
            ignored). When None they are drawn from N(0, mask_noise_std^2) with `generator` (`draw_mask_noise`).
        return_loss (`bool`): when False, no teacher pass and no loss; the decoder output is returned instead.
        generator (`torch.Generator`, *optional*): source of the random masks, windows and noise that are not given.
        kept_token_ids (`(rows, num_kept)`, *optional*): order of the visible patches for the student
            (default: `mask.argsort`, as the original).
        output_intermediates (`bool`): also return targets, decoder output, student input and the CLS term.
        """
        spectrograms = self._check_input(input_values)
        batch, _, num_frames, _ = spectrograms.shape
        config = self.config
        stage2 = config.objective == "sslam"
        time_patches = num_frames // config.patch_size
        num_patches = time_patches * config.num_freq_patches

        if stage2 and batch < 2:
            raise ValueError("the SSLAM (Stage 2) objective mixes each clip with another one: it needs batch >= 2.")
        if mask is None:
            mask = compute_pretraining_masks(config, batch, time_patches, generator)
        mask = self._check_mask(mask, batch, num_patches).to(spectrograms.device)

        starts = None
        clips = spectrograms
        if stage2:
            starts = self._window_starts(unmixed_window_starts, num_frames, generator)
            clips = torch.cat([spectrograms, mix_spectrograms(spectrograms, starts, config.unmixed_window_frames)])
        student_mask = torch.cat([mask, mask]) if stage2 else mask

        order = visible_first_order(student_mask, kept_token_ids)
        num_kept = num_patches - int(student_mask[0].sum())  # the same in every row
        student = self._run_student(clips, order, num_kept, output_intermediates)
        noise = self._mask_noise(mask_noise, order, num_kept, student["patches"], generator)
        decoder_output = self._decode(student["patches"], noise, order, time_patches)

        output = SSLAMForPreTrainingOutput(
            mask=mask,
            unmixed_window_starts=torch.tensor(starts, dtype=torch.long) if stage2 else None,
            sample_size=student_mask.sum().long(),
        )
        if output_intermediates or not return_loss:
            output.decoder_output = decoder_output
        if output_intermediates:
            output.student_encoder_input = student["encoder_input"]
            output.kept_token_ids = order[:, :num_kept]
        if not return_loss:
            return output

        targets = self._teacher_targets(clips, spectrograms, starts, output_intermediates)
        self._add_losses(output, decoder_output, student["cls"], targets, student_mask, stage2)
        if output_intermediates:
            output.teacher_patch_targets = targets.patch
            output.teacher_utterance_targets = targets.utterance
            output.source_retention_targets = targets.source_retention
            output.teacher_dropped_input = targets.dropped_input
        self._check_collapse(output)
        return output

    def _check_input(self, input_values: torch.Tensor) -> torch.Tensor:
        """Validates the input (shape, mel bins, frames) and returns it as `(B, C, T, F)` in its own dtype."""
        self.sslam.prepare_input_values(input_values)
        return input_values.unsqueeze(1) if input_values.ndim == 3 else input_values

    def _check_mask(self, mask: torch.Tensor, batch: int, num_patches: int) -> torch.Tensor:
        """Checks the mask's shape and per-row masked count; returns it as bool (True = masked)."""
        expected = (batch * self.config.clone_batch, num_patches)
        if mask.ndim != 2 or tuple(mask.shape) != expected:
            raise ValueError(
                f"mask must have shape {expected} (batch * clone_batch, patches), got {tuple(mask.shape)}."
            )
        mask = mask != 0
        masked_per_row = mask.sum(dim=1)
        if not bool((masked_per_row == masked_per_row[0]).all()):
            raise ValueError(
                f"every mask row must mask the same number of patches, got counts {masked_per_row.tolist()}."
            )
        if not 0 < int(masked_per_row[0]) < num_patches:
            raise ValueError(
                f"mask rows must mask some but not all of the {num_patches} patches, got {int(masked_per_row[0])}."
            )
        return mask

    def _window_starts(self, starts, num_frames: int, generator: torch.Generator | None) -> list[int]:
        config = self.config
        if starts is None:
            starts = draw_unmixed_window_starts(
                num_frames, config.unmixed_window_frames, config.num_unmixed_windows, config.patch_size, generator
            )
        starts = [int(start) for start in torch.as_tensor(starts).reshape(-1).tolist()]
        check_unmixed_window_starts(
            starts, num_frames, config.unmixed_window_frames, config.num_unmixed_windows, config.patch_size
        )
        return starts

    def _run_student(self, clips: torch.Tensor, order: torch.Tensor, num_kept: int, keep_input: bool) -> dict:
        """Student encoder on the visible patches of every clone.

        Returns `cls` `(rows, D)`, `patches` `(rows, num_kept, D)` (in `order`) and, with `keep_input`,
        `encoder_input` `(rows, 1 + num_kept, D)`.
        """
        tokens = self.sslam.embed_patches(clips).repeat_interleave(self.config.clone_batch, dim=0)
        kept = order[:, :num_kept].unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
        encoded = self.sslam.encode_tokens(torch.gather(tokens, 1, kept), output_hidden_states=keep_input)
        hidden = encoded.last_hidden_state
        return {
            "cls": hidden[:, 0],
            "patches": hidden[:, 1:],
            "encoder_input": encoded.hidden_states[0] if keep_input else None,
        }

    def _mask_noise(self, mask_noise, order, num_kept: int, patches: torch.Tensor, generator) -> torch.Tensor:
        """The mask tokens in `order[:, num_kept:]` order: `(rows, num_masked, D)`."""
        rows, _, hidden = patches.shape
        num_masked = order.shape[1] - num_kept
        if mask_noise is not None:
            if tuple(mask_noise.shape) != (rows, order.shape[1], hidden):
                raise ValueError(
                    f"mask_noise must have shape {(rows, order.shape[1], hidden)} (rows, patches, hidden), "
                    f"got {tuple(mask_noise.shape)}."
                )
            masked_ids = order[:, num_kept:].unsqueeze(-1).expand(-1, -1, hidden)
            return torch.gather(mask_noise.to(patches.device), 1, masked_ids).to(patches.dtype)
        if self.config.mask_noise_std == 0:
            return patches.new_zeros(rows, num_masked, hidden)
        noise = draw_mask_noise(rows, num_masked, hidden, self.config.mask_noise_std, generator, patches.device)
        return noise.to(device=patches.device, dtype=patches.dtype)

    def _decode(self, patches, noise, order, time_patches: int) -> torch.Tensor:
        """Visible outputs + mask tokens, un-shuffled to patch order, through the CNN decoder: `(rows, N, D)`."""
        restore = order.argsort(dim=1).unsqueeze(-1).expand(-1, -1, patches.shape[-1])
        decoder_input = torch.gather(torch.cat([patches, noise], dim=1), 1, restore)
        return self.decoder(decoder_input, time_patches)

    def _teacher_ffn(self, clips: torch.Tensor, keep_rows: list[int] | None = None, keep_input: bool = False):
        """Teacher FFN outputs (patch tokens only) per layer, optionally on a subset of patch rows, and the input to
        its first block when `keep_input`."""
        tokens = self.teacher.embed_patches(clips)
        if keep_rows is not None:
            tokens = select_patch_rows(tokens, keep_rows, self.config.num_freq_patches)
        encoded = self.teacher.encode_tokens(tokens, output_ffn=True, output_hidden_states=keep_input)
        layers = [ffn[:, 1:] for ffn in encoded.ffn_outputs]
        return layers, encoded.hidden_states[0] if keep_input else None

    def _make_targets(self, layers: list[torch.Tensor], top_k: int) -> torch.Tensor:
        """`build_teacher_targets` with the config's normalisation flags."""
        config = self.config
        return build_teacher_targets(layers, top_k, config.instance_norm_target_layer, config.layer_norm_targets)

    def _teacher_targets(self, clips, clean, starts, keep_input: bool) -> _TeacherTargets:
        """Teacher targets in float32 without autocast or gradients.

        Stage 1: patch target = `build_teacher_targets` of the clips; utterance target = its token mean.
        Stage 2: the same patch target for clean + mixed clips; utterance target = token mean of the last layer's
        target; Source Retention target from a second pass on the clean clips' mixed patch rows only.
        """
        config = self.config
        make = self._make_targets
        with torch.no_grad(), torch.autocast(device_type=clips.device.type, enabled=False):
            layers, _ = self._teacher_ffn(clips.float())
            patch = make(layers, config.average_top_k_layers)
            if starts is None:
                return _TeacherTargets(patch=patch, utterance=patch.mean(dim=1))

            batch = clean.shape[0]
            time_patches = clean.shape[2] // config.patch_size
            mixed_rows = mixed_patch_rows(time_patches, starts, config.unmixed_window_frames, config.patch_size)
            dropped_layers, dropped_input = self._teacher_ffn(clean.float(), mixed_rows, keep_input)
            own = patch[:batch]  # the clean clips' target (the normalisations are per sample)
            foreign = make(dropped_layers, config.average_top_k_layers)
            return _TeacherTargets(
                patch=patch,
                utterance=make(layers, 1).mean(dim=1),
                source_retention=build_source_retention_target(own, foreign, mixed_rows, config.num_freq_patches),
                dropped_input=dropped_input,
            )

    def _add_losses(self, output, decoder_output, cls_prediction, targets: _TeacherTargets, masked, stage2: bool):
        """Fills `loss`, `loss_terms`, `cls_loss_per_row`, `pred_var`, `target_var` of `output`.

        Terms (element-wise, summed): `eat_cls_loss` = d2v(CLS, utterance target) * cls_loss_weight * sample_size over
        all rows; `eat_patch_loss` = d2v(decoder, patch target) * d2v_loss_weight at the masked patches of all rows;
        Stage 2 `mix_patch_loss` = 2 * d2v(decoder, SRL target) * d2v_loss_weight at the masked patches of the mixed
        rows (the x2 makes its normalisation by `sample_size` a mean over the mixed rows).
        """
        config = self.config
        clone = config.clone_batch
        sample_size = output.sample_size
        patch_target = targets.patch.repeat_interleave(clone, dim=0)[masked]
        prediction = decoder_output[masked]

        terms = {}
        cls_term = regression_loss(cls_prediction, targets.utterance.repeat_interleave(clone, dim=0), config.loss_scale)
        terms["eat_cls_loss"] = cls_term * (config.cls_loss_weight * sample_size)
        terms["eat_patch_loss"] = regression_loss(prediction, patch_target, config.loss_scale) * config.d2v_loss_weight
        if stage2:
            mixed_rows_mask = masked.chunk(2, dim=0)[1]
            mixed_prediction = decoder_output.chunk(2, dim=0)[1][mixed_rows_mask]
            srl_target = targets.source_retention.repeat_interleave(clone, dim=0)[mixed_rows_mask]
            terms["mix_patch_loss"] = (
                regression_loss(mixed_prediction, srl_target, config.loss_scale) * 2.0 * config.d2v_loss_weight
            )

        sums = {name: term.float().sum() for name, term in terms.items()}
        output.loss = sum(sums.values()) / sample_size
        output.loss_terms = {name: value.detach() for name, value in sums.items()}
        output.cls_loss_per_row = terms["eat_cls_loss"].detach()
        with torch.no_grad():
            output.pred_var = feature_spread(prediction)
            output.target_var = feature_spread(patch_target)

    def _check_collapse(self, output: SSLAMForPreTrainingOutput) -> None:
        """Raises `RepresentationCollapseError` when, after `collapse_check_after_steps` updates, the target or
        prediction spread is below `min_target_var` / `min_pred_var`."""
        config = self.config
        if self.num_updates <= config.collapse_check_after_steps:
            return
        for name, value, threshold in (
            ("target_var", output.target_var, config.min_target_var),
            ("pred_var", output.pred_var, config.min_pred_var),
        ):
            if float(value) < threshold:
                raise RepresentationCollapseError(
                    f"{name} is {float(value):.6g} < min_{name} = {threshold} at update {self.num_updates} "
                    f"(checked after {config.collapse_check_after_steps} updates): the representation is collapsing."
                )


__all__ = [
    "ORIGINAL_LOSS_NAMES",
    "RepresentationCollapseError",
    "SSLAMDecoder",
    "SSLAMDecoderLayer",
    "SSLAMForPreTraining",
    "SSLAMForPreTrainingOutput",
    "build_source_retention_target",
    "native_pretraining_state_dict",
    "build_teacher_targets",
    "check_unmixed_window_geometry",
    "compute_block_mask_2d",
    "compute_pretraining_masks",
    "draw_mask_noise",
    "draw_unmixed_window_starts",
    "mix_spectrograms",
    "mixed_patch_rows",
    "position_mask_noise",
    "regression_loss",
    "unmixed_window_start_range",
    "visible_first_order",
]
