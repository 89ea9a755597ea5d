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

The forward runs four public steps, which tests and custom training loops may call on their own: `prepare_batch`
(masks and mixtures, `sslam.modeling_sslam.masking`), `student_predictions` (student encoder on the visible patches
and the CNN decoder), `teacher_targets` (`sslam.modeling_sslam.objectives`) and `pretraining_loss_terms`. The EMA update
of the teacher is a training policy and lives in `sslam.training` (`TeacherEMA`, `EMATeacherCallback`).

Written from the published description of the original fairseq code and checked against its outputs (the parity
tests); the original's hard-coded shapes (1024 frames, 768 channels, 12 layers, 240-frame windows) are generalised.
"""

import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import ModelOutput, logging

from .masking import PretrainingMaskGenerator, draw_mask_noise, gather_tokens, select_patch_rows, visible_first_order
from .modeling_sslam import SSLAMModel, SSLAMPreTrainedModel
from .objectives import (
    TeacherTargets,
    build_source_retention_target,
    build_teacher_targets,
    feature_spread,
    pretraining_loss_terms,
)

logger = logging.get_logger(__name__)

DECODER_NORM_EPS = 1e-5  # the decoder's LayerNorm over channels (no affine)
PRETRAINING_SUBFOLDER = "pretraining"
"""Where a full pre-training model (student, decoder, teacher) is saved beside an encoder-only folder (by the
converters and by `sslam.training`)."""


def pretraining_folder(path: str | os.PathLike) -> str:
    """`path`, or `path/pretraining` when `path` is an encoder folder with the full pre-training model beside it (a
    converter or pre-training output). Raises `FileNotFoundError` when neither holds a `config.json`."""
    nested = os.path.join(path, PRETRAINING_SUBFOLDER)
    if os.path.isfile(os.path.join(nested, "config.json")):
        return nested
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{os.fspath(path)!r} is not a saved model folder (no config.json).")
    return os.fspath(path)


# ----------------------------------------------------------------------------------------------------------------------
# Decoder
# ----------------------------------------------------------------------------------------------------------------------


class SSLAMDecoderLayer(nn.Module):
    """Grouped Conv2d (`padding = k // 2`, trimmed to the input size for even k) -> LayerNorm over channels (no affine,
    eps 1e-5) -> GELU; the layer input is added when input and output channel counts are equal.
    `(B, C_in, H, W)` -> `(B, decoder_hidden_size, H, W)`."""

    def __init__(self, config, in_channels: int):
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

    def __init__(self, config):
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


# ----------------------------------------------------------------------------------------------------------------------
# Outputs and intermediate steps
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class SSLAMForPreTrainingOutput(ModelOutput):
    """
    Output of [`SSLAMForPreTraining`]. `rows = clips * clone_batch` student rows (Stage 2: clips = 2B, clean then
    mixed), `N` patches, `D` channels.

    loss (`()`): sum of all loss-term elements divided by `sample_size`.
    loss_terms (`dict[str, ()]`): detached float32 sum of each term (`eat_patch_loss`, `eat_cls_loss`, and in Stage 2
        `mix_patch_loss`).
    sample_size (`()` int64): number of masked patches over all student rows.
    target_var, pred_var (`()`): mean over channels of the std of the masked-patch targets / decoder predictions.
    mask (`(B * clone_batch, N)` bool): the masks used (True = masked).
    unmixed_window_starts (`(num_windows,)`, Stage 2): the unmixed windows' frame starts.
    decoder_output (`(rows, N, D)`): only with `return_loss=False`.
    """

    loss: torch.Tensor | None = None
    loss_terms: dict[str, torch.Tensor] | None = None
    sample_size: torch.Tensor | None = None
    target_var: torch.Tensor | None = None
    pred_var: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    unmixed_window_starts: torch.Tensor | None = None
    decoder_output: torch.Tensor | None = None


@dataclass
class PretrainingBatch:
    """A batch as the student and the teacher see it ([`SSLAMForPreTraining.prepare_batch`]).

    clean (`(B, C, T, F)`): the input clips. clips (`(clips, C, T, F)`): the clean clips, and in Stage 2 their partial
    mixtures after them. mask (`(B * clone_batch, N)` bool, True = masked): the clean clips' masks. student_mask
    (`(rows, N)` bool): the masks of every student row (Stage 2: the mixtures reuse their clean clips' masks).
    unmixed_window_starts (`list[int]`, Stage 2): frame starts of the unmixed windows.
    """

    clean: torch.Tensor
    clips: torch.Tensor
    mask: torch.Tensor
    student_mask: torch.Tensor
    unmixed_window_starts: list[int] | None = None

    @property
    def sample_size(self) -> torch.Tensor:
        """Masked patches over all student rows (int64)."""
        return self.student_mask.sum().long()


@dataclass
class StudentPredictions:
    """What the student side predicts ([`SSLAMForPreTraining.student_predictions`]).

    cls (`(rows, D)`): the student's CLS outputs. decoder_output (`(rows, N, D)`): the decoder's patch predictions.
    order (`(rows, N)`): visible patches first (`[:, :num_kept]`, in the order the student saw them), then masked ones.
    """

    cls: torch.Tensor
    decoder_output: torch.Tensor
    order: torch.Tensor
    num_kept: int


# ----------------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------------


class SSLAMForPreTraining(SSLAMPreTrainedModel):
    """SSLAM / EAT pre-training: student encoder `sslam`, CNN `decoder`, frozen EMA `teacher` (always eval, never
    trained, kept in float32 and run without autocast). `config.objective` selects Stage 1 (`"eat"`) or Stage 2
    (`"sslam"`).

    Input `(B, T, F)` or `(B, 1, T, F)` normalised log-mel spectrograms (T a multiple of the patch size). The teacher
    is a checkpointed submodule; it is moved by `sslam.training.TeacherEMA` after every optimizer step, not here.
    """

    _keep_in_fp32_modules_strict = ["teacher"]

    def __init__(self, config):
        super().__init__(config)
        self.sslam = SSLAMModel(config)
        self.decoder = SSLAMDecoder(config)
        self.teacher = SSLAMModel(config)
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

    @property
    def masking(self) -> PretrainingMaskGenerator:
        """The mask and window generator of this model's config."""
        return PretrainingMaskGenerator.from_config(self.config)

    # -- the steps of the forward ------------------------------------------------------------------------------------

    def prepare_batch(
        self,
        input_values: torch.Tensor,
        mask: torch.Tensor | None = None,
        unmixed_window_starts: torch.Tensor | list[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> PretrainingBatch:
        """Checks the input, draws (or checks) the masks and, in Stage 2, the unmixed windows, and mixes the clips.
        Missing masks are drawn first, then the windows, from `generator` (the global RNG when None)."""
        self.sslam.prepare_input_values(input_values)  # validation only; the teacher sees the input's own dtype
        clean = input_values.unsqueeze(1) if input_values.ndim == 3 else input_values
        batch, _, num_frames, _ = clean.shape
        masking = self.masking
        time_patches = num_frames // self.config.patch_size
        if masking.mixes and batch < 2:
            raise ValueError("the SSLAM (Stage 2) objective mixes each clip with another one: it needs batch >= 2.")
        if mask is None:
            mask = masking.batch_masks(batch, time_patches, generator)
        mask = self._check_mask(mask, batch, time_patches * self.config.num_freq_patches).to(clean.device)
        if not masking.mixes:
            return PretrainingBatch(clean=clean, clips=clean, mask=mask, student_mask=mask)
        if unmixed_window_starts is None:
            unmixed_window_starts = masking.window_starts(num_frames, generator)
        starts = masking.check_window_starts(unmixed_window_starts, num_frames)
        clips = torch.cat([clean, masking.mix(clean, starts)])
        return PretrainingBatch(
            clean=clean, clips=clips, mask=mask, student_mask=torch.cat([mask, mask]), unmixed_window_starts=starts
        )

    def student_predictions(
        self,
        batch: PretrainingBatch,
        mask_noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        kept_token_ids: torch.Tensor | None = None,
    ) -> StudentPredictions:
        """The student encoder on the visible patches of every clone, and the decoder on its outputs plus the mask
        tokens (drawn from `generator` unless `mask_noise` is given)."""
        order = visible_first_order(batch.student_mask, kept_token_ids)
        num_patches = batch.student_mask.shape[1]
        num_kept = num_patches - int(batch.student_mask[0].sum())  # the same in every row
        tokens = self.sslam.embed_patches(batch.clips).repeat_interleave(self.config.clone_batch, dim=0)
        hidden = self.sslam(patch_embeddings=gather_tokens(tokens, order[:, :num_kept])).last_hidden_state
        patches = hidden[:, 1:]
        noise = self._mask_noise(mask_noise, order, num_kept, patches, generator)
        restore = order.argsort(dim=1)
        decoder_input = gather_tokens(torch.cat([patches, noise], dim=1), restore)
        time_patches = batch.clips.shape[2] // self.config.patch_size
        return StudentPredictions(
            cls=hidden[:, 0], decoder_output=self.decoder(decoder_input, time_patches), order=order, num_kept=num_kept
        )

    def teacher_ffn_outputs(self, clips: torch.Tensor, keep_rows: list[int] | None = None) -> list[torch.Tensor]:
        """The teacher's per-layer FFN outputs `(clips, N', D)` at the patch tokens, optionally on a subset of patch
        rows (`keep_rows`, removed after the patch embedding)."""
        tokens = self.teacher.embed_patches(clips)
        if keep_rows is not None:
            tokens = select_patch_rows(tokens, keep_rows, self.config.num_freq_patches)
        outputs = self.teacher(patch_embeddings=tokens, output_ffn_outputs=True)
        return [ffn[:, 1:] for ffn in outputs.ffn_outputs]

    def teacher_targets(self, batch: PretrainingBatch) -> TeacherTargets:
        """Teacher targets in float32 without autocast or gradients.

        Stage 1: patch target = `build_teacher_targets` of the clips; utterance target = its token mean.
        Stage 2: the same patch target for clean + mixed clips; utterance target = token mean of the last layer's
        target; Source Retention target from a second pass on the clean clips' mixed patch rows only.
        """
        config = self.config

        def targets_of(layers: list[torch.Tensor], top_k: int) -> torch.Tensor:
            return build_teacher_targets(layers, top_k, config.instance_norm_target_layer, config.layer_norm_targets)

        with torch.no_grad(), torch.autocast(device_type=batch.clips.device.type, enabled=False):
            layers = self.teacher_ffn_outputs(batch.clips.float())
            patch = targets_of(layers, config.average_top_k_layers)
            if batch.unmixed_window_starts is None:
                return TeacherTargets(patch=patch, utterance=patch.mean(dim=1))
            mixed_rows = self.masking.mixed_rows(batch.clean.shape[2], batch.unmixed_window_starts)
            foreign = targets_of(self.teacher_ffn_outputs(batch.clean.float(), mixed_rows), config.average_top_k_layers)
            own = patch[: batch.clean.shape[0]]  # the clean clips' target (the normalisations are per sample)
            return TeacherTargets(
                patch=patch,
                utterance=targets_of(layers, 1).mean(dim=1),
                source_retention=build_source_retention_target(own, foreign, mixed_rows, config.num_freq_patches),
            )

    # -- forward ------------------------------------------------------------------------------------------------------

    def forward(
        self,
        input_values: torch.Tensor,
        mask: torch.Tensor | None = None,
        unmixed_window_starts: torch.Tensor | list[int] | None = None,
        mask_noise: torch.Tensor | None = None,
        return_loss: bool = True,
        generator: torch.Generator | None = None,
        kept_token_ids: torch.Tensor | None = None,
    ) -> SSLAMForPreTrainingOutput:
        r"""
        input_values (`(B, T, F)` or `(B, 1, T, F)`): normalised log-mel spectrograms; Stage 2 needs B >= 2.
        mask (`(B * clone_batch, N)`, *optional*): 1/True = masked, rows clip-major (`i * clone_batch + j`), the same
            masked count in every row. Drawn with `PretrainingMaskGenerator.batch_masks` (using `generator`) when None.
            In Stage 2 the mixed clips reuse the masks of their clean clips.
        unmixed_window_starts (`(num_unmixed_windows,)` frame starts, *optional*, Stage 2): drawn with
            `PretrainingMaskGenerator.window_starts` (using `generator`) when None.
        mask_noise (`(rows, N, D)`, *optional*): the decoder's mask tokens at the masked patches (other entries are
            ignored). When None they are drawn from N(0, mask_noise_std^2) with `generator` (`draw_mask_noise`).
        return_loss (`bool`): when False, no teacher pass and no loss; the decoder output is returned instead.
        generator (`torch.Generator`, *optional*): source of the random masks, windows and noise that are not given.
        kept_token_ids (`(rows, num_kept)`, *optional*): order of the visible patches for the student
            (default: `mask.argsort`, as the original).
        """
        batch = self.prepare_batch(input_values, mask, unmixed_window_starts, generator)
        student = self.student_predictions(batch, mask_noise, generator, kept_token_ids)
        starts = batch.unmixed_window_starts
        output = SSLAMForPreTrainingOutput(
            mask=batch.mask,
            unmixed_window_starts=None if starts is None else torch.tensor(starts, dtype=torch.long),
            sample_size=batch.sample_size,
        )
        if not return_loss:
            output.decoder_output = student.decoder_output
            return output

        targets = self.teacher_targets(batch)
        config = self.config
        terms = pretraining_loss_terms(
            student.decoder_output,
            student.cls,
            targets,
            batch.student_mask,
            config.clone_batch,
            output.sample_size,
            config.cls_loss_weight,
            config.d2v_loss_weight,
            config.loss_scale,
        )
        sums = {name: term.float().sum() for name, term in terms.items()}
        output.loss = sum(sums.values()) / output.sample_size
        output.loss_terms = {name: value.detach() for name, value in sums.items()}
        with torch.no_grad():
            masked = batch.student_mask
            output.pred_var = feature_spread(student.decoder_output[masked])
            output.target_var = feature_spread(targets.patch.repeat_interleave(config.clone_batch, dim=0)[masked])
        return output

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
            return gather_tokens(mask_noise.to(patches.device), order[:, num_kept:]).to(patches.dtype)
        if self.config.mask_noise_std == 0:
            return patches.new_zeros(rows, num_masked, hidden)
        noise = draw_mask_noise(rows, num_masked, hidden, self.config.mask_noise_std, generator, patches.device)
        return noise.to(device=patches.device, dtype=patches.dtype)


__all__ = [
    "PRETRAINING_SUBFOLDER",
    "PretrainingBatch",
    "SSLAMDecoder",
    "SSLAMDecoderLayer",
    "SSLAMForPreTraining",
    "SSLAMForPreTrainingOutput",
    "StudentPredictions",
    "pretraining_folder",
]
