# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""Configuration of SSLAM (Self-Supervised Learning from Audio Mixtures, ICLR 2025, arXiv 2506.12222).

SSLAM shares its network with EAT / data2vec 2.0 for audio: a ViT over 16x16 patches of 128-bin kaldi log-mel
spectrograms (time-major tokens, fixed 2-D sin-cos positions, a CLS token, a LayerNorm before post-norm blocks).
"""

import math
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.activations import ACT2FN


LARGE_PRESET = dict(
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    decoder_hidden_size=1024,
    decoder_num_layers=3,
    decoder_kernel_size=5,
    mask_prob=0.75,
    mask_prob_adjust=0.1,
    average_top_k_layers=24,
    ema_anneal_end_step=150_000,
)
"""The fields [`SSLAMConfig.large`] changes from the base defaults: EAT-large shapes (D 1024, 24 blocks, 16 heads)
and its pre-training settings. The one copy of the preset (`training.pretrain.MODEL_SIZES["large"]` uses it too)."""

POSITIVE_SHAPE_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "patch_size",
    "num_mel_bins",
    "num_channels",
    "max_time_patches",
    "max_length",
)
"""Architecture fields that must be positive integers (checked before the divisibility rules that use them)."""


@strict
class SSLAMConfig(PreTrainedConfig):
    r"""
    Configuration of [`SSLAMModel`], [`SSLAMForAudioClassification`], [`SSLAMForAudioFrameClassification`] and
    [`SSLAMForPreTraining`]. Defaults give the released SSLAM / EAT base model; [`SSLAMConfig.large`] gives the
    EAT-large shapes.

    Encoder:
        hidden_size (`int`): token width D. num_hidden_layers (`int`): number of post-norm blocks.
        num_attention_heads (`int`): heads per block. intermediate_size (`int`): MLP width (mlp_ratio * D).
        hidden_act (`str`): MLP activation (exact-erf GELU in the original).
        hidden_dropout_prob (`float`): dropout after attention projection and MLP output.
        attention_probs_dropout_prob (`float`): dropout on attention weights.
        activation_dropout (`float`): dropout after the MLP activation.
        drop_path_rate (`float`): stochastic depth, rising linearly from 0 (first block) to this value (last block).
        layer_norm_eps (`float`): eps of every encoder LayerNorm and of the classifier's fc_norm (1e-6).
        qkv_bias (`bool`): bias on the query/key/value projections.
        patch_size (`int`): square patch size in frames x mel bins (16). num_mel_bins (`int`): mel bins (128).
        num_channels (`int`): input channels (1). max_time_patches (`int`): rows of the sin-cos position table
            (768 patch rows = 12,288 frames, about 123 s). max_length (`int`): default clip length in frames (1024).
        initializer_range (`float`): std of the truncated-normal initialisation of linear layers.
        pooling (`str`): `"cls"` (the original) or `"mean"` (mean of real patch tokens) for the classifier.
        label_smoothing (`float`): label smoothing of the classifier's single-label cross-entropy (hard labels).

    Frame classification and detection (see `SSLAMForAudioFrameClassification`):
        frequency_pooling (`str`): how the frequency patches of one time row (16 frames, 160 ms) become one row
            feature: `"concat"` (`num_freq_patches * hidden_size` values, the default) or `"mean"` (`hidden_size`).
        detection_thresholds (`float` or `list[float]`): decision threshold on the frame probabilities, one for all
            classes or one per class (`sslam detect` and `sslam.evaluation.detection` read it).
        detection_median_filter (`int`): length in rows (odd) of the median filter applied to the frame decisions.

    Pre-training (see `SSLAMForPreTraining`):
        objective (`str`): `"eat"` (Stage 1) or `"sslam"` (Stage 2, mixtures + Source Retention Loss).
        decoder_hidden_size, decoder_num_layers, decoder_kernel_size, decoder_groups: the light CNN decoder.
        clone_batch (`int`): masked copies of each clip. mask_prob, mask_prob_adjust, mask_length, inverse_mask:
            inverse 2-D block masking. mask_noise_std (`float`): std of the decoder's mask tokens.
        average_top_k_layers (`int`): teacher layers averaged into the target. instance_norm_target_layer,
            layer_norm_targets (`bool`): target normalisation. cls_loss_weight, d2v_loss_weight (`float`): term
            weights. loss_scale (`float`, *optional*): per-element loss scale (None = 1/sqrt(D)).
        ema_decay, ema_end_decay (`float`), ema_anneal_end_step (`int`): teacher EMA schedule.
        unmixed_window_frames (`int`): length of each unmixed window in frames (240). num_unmixed_windows (`int`).
        min_target_var, min_pred_var (`float`), collapse_check_after_steps (`int`): collapse guard.

    Example:

    ```python
    >>> from sslam.modeling_sslam import SSLAMConfig, SSLAMModel
    >>> config = SSLAMConfig()  # SSLAM / EAT base
    >>> model = SSLAMModel(config)
    ```
    """

    model_type = "sslam"

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    activation_dropout: float | int = 0.0
    drop_path_rate: float | int = 0.0
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    patch_size: int = 16
    num_mel_bins: int = 128
    num_channels: int = 1
    max_time_patches: int = 768
    max_length: int = 1024
    initializer_range: float = 0.02
    pooling: Literal["cls", "mean"] = "cls"
    label_smoothing: float | int = 0.0
    frequency_pooling: Literal["concat", "mean"] = "concat"
    detection_thresholds: float | list[float] = 0.5
    detection_median_filter: int = 1

    objective: Literal["eat", "sslam"] = "sslam"
    decoder_hidden_size: int = 768
    decoder_num_layers: int = 6
    decoder_kernel_size: int = 3
    decoder_groups: int = 16
    clone_batch: int = 8
    mask_prob: float = 0.8
    mask_prob_adjust: float | int = 0.07
    mask_length: int = 5
    inverse_mask: bool = True
    mask_noise_std: float | int = 0.01
    average_top_k_layers: int = 12
    instance_norm_target_layer: bool = True
    layer_norm_targets: bool = True
    cls_loss_weight: float | int = 1.0
    d2v_loss_weight: float | int = 1.0
    loss_scale: float | None = None
    ema_decay: float = 0.9998
    ema_end_decay: float = 0.99999
    ema_anneal_end_step: int = 100_000
    unmixed_window_frames: int = 240
    num_unmixed_windows: int = 2
    min_target_var: float | int = 0.0
    min_pred_var: float | int = 0.0
    collapse_check_after_steps: int = 0

    @property
    def num_freq_patches(self) -> int:
        """Patches along the mel axis (8 for 128 bins)."""
        return self.num_mel_bins // self.patch_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def validate_architecture(self):
        """Checks shapes and settings that the network cannot work with."""
        for name in POSITIVE_SHAPE_FIELDS:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if not (math.isfinite(self.layer_norm_eps) and self.layer_norm_eps > 0):
            raise ValueError(f"layer_norm_eps must be a positive finite number, got {self.layer_norm_eps}.")
        if self.hidden_act not in ACT2FN:
            raise ValueError(
                f"hidden_act {self.hidden_act!r} is not an activation transformers knows ({sorted(ACT2FN)})."
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})."
            )
        if self.num_mel_bins % self.patch_size != 0:
            raise ValueError(f"num_mel_bins ({self.num_mel_bins}) must be a multiple of patch_size ({self.patch_size}).")
        if self.hidden_size % 4 != 0:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of 4 for the 2-D sin-cos table.")
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"mask_prob must be in (0, 1), got {self.mask_prob}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}.")
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {self.pooling!r}.")
        if self.frequency_pooling not in ("concat", "mean"):
            raise ValueError(f"frequency_pooling must be 'concat' or 'mean', got {self.frequency_pooling!r}.")
        if self.detection_median_filter < 1 or self.detection_median_filter % 2 == 0:
            raise ValueError(
                f"detection_median_filter must be a positive odd number of rows, got {self.detection_median_filter}."
            )
        if self.objective not in ("eat", "sslam"):
            raise ValueError(f"objective must be 'eat' or 'sslam', got {self.objective!r}.")

    @classmethod
    def large(cls, **kwargs) -> "SSLAMConfig":
        """EAT-large shapes (D 1024, 24 blocks, 16 heads) with its pre-training settings."""
        return cls(**{**LARGE_PRESET, **kwargs})


__all__ = ["LARGE_PRESET", "SSLAMConfig"]
