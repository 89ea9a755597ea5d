# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""PyTorch SSLAM encoder and audio classifier.

SSLAM (Self-Supervised Learning from Audio Mixtures, ICLR 2025, arXiv 2506.12222) uses the EAT / data2vec 2.0 audio
ViT: 16x16 patches of a (T, 128) log-mel spectrogram, time-major tokens (n = t * 8 + f), fixed 2-D sin-cos positions on
the patch tokens, a CLS token without position, a LayerNorm before the first block and post-norm blocks with no final
LayerNorm. Written from the published description and checked against outputs of the original fairseq code.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput, TokenClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, logging
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_sslam import SSLAMConfig


logger = logging.get_logger(__name__)


def build_2d_sincos_position_table(hidden_size: int, time_patches: int, freq_patches: int) -> torch.Tensor:
    """Fixed 2-D sin-cos table of the original, computed in float32.

    Returns:
        `(1, time_patches * freq_patches, hidden_size)`: row `t * freq_patches + f`; the first half of the channels
        encodes the frequency index f, the second half the time index t, each as `[sin(p * w_k), cos(p * w_k)]` with
        `w_k = 10000 ** (-k / (hidden_size / 4))`.
    """
    if hidden_size % 4 != 0:
        raise ValueError(f"hidden_size must be a multiple of 4 for the sin-cos table, got {hidden_size}.")
    quarter = hidden_size // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter)

    def encode(positions: torch.Tensor) -> torch.Tensor:
        angles = positions.reshape(-1, 1) * omega.reshape(1, -1)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    time_index, freq_index = torch.meshgrid(
        torch.arange(time_patches, dtype=torch.float32), torch.arange(freq_patches, dtype=torch.float32), indexing="ij"
    )
    table = torch.cat([encode(freq_index), encode(time_index)], dim=1)
    return table.unsqueeze(0)


def non_finite_tensors(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """The floating tensors of `state_dict` that hold NaN or inf values, as "name (count of size values)"."""
    problems = []
    for name, tensor in state_dict.items():
        if not tensor.is_floating_point() or tensor.is_meta:
            continue
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            problems.append(f"{name} ({bad} of {tensor.numel()} values)")
    return problems


def token_attention_mask(
    attention_mask: torch.Tensor | None,
    batch_size: int,
    num_patches: int,
    num_frames: int | None,
    config: SSLAMConfig,
) -> torch.Tensor | None:
    """Either attention-mask convention -> the `(B, 1 + N)` bool token mask (True = attend; CLS first).

    Args:
        attention_mask: `None`; frame-level `(B, T)` (1 for frames of real audio, as the feature extractor returns it;
            a patch row is real when any of its frames is, and the CLS token is always real); or token-level
            `(B, 1 + N)` (1 for the tokens to attend to: CLS, then the N time-major patch tokens), used as given. T is
            a multiple of the patch size and 1 + N is odd, so the two shapes never coincide.
        num_frames: frames of the input, or None when the model was given patch embeddings (token masks only).
    """
    if attention_mask is None:
        return None
    expected = [f"({batch_size}, {1 + num_patches}) with one entry per token (CLS + patches)"]
    if num_frames is not None:
        expected.insert(0, f"({batch_size}, {num_frames}) with one entry per frame")
    lengths = (1 + num_patches,) if num_frames is None else (num_frames, 1 + num_patches)
    if attention_mask.ndim != 2 or attention_mask.shape[0] != batch_size or attention_mask.shape[1] not in lengths:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}; expected " + " or ".join(expected) + "."
        )
    mask = attention_mask.bool()
    if mask.shape[1] == 1 + num_patches:
        return mask
    rows = mask.reshape(batch_size, num_frames // config.patch_size, config.patch_size).any(dim=-1)
    patches = rows.repeat_interleave(config.num_freq_patches, dim=1)
    return torch.cat([patches.new_ones(batch_size, 1), patches], dim=1)


def drop_path(hidden_states: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample (the residual branch is dropped for whole samples)."""
    if drop_prob == 0.0 or not training:
        return hidden_states
    keep_prob = 1.0 - drop_prob
    shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
    keep = hidden_states.new_empty(shape).bernoulli_(keep_prob)
    return hidden_states * keep / keep_prob


class SSLAMDropPath(nn.Module):
    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return drop_path(hidden_states, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"p={self.drop_prob}"


class SSLAMPatchEmbeddings(nn.Module):
    """Conv2d patchify: `(B, C, T, F)` -> `(B, (T/p) * (F/p), D)`, time-major."""

    def __init__(self, config: SSLAMConfig):
        super().__init__()
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        return self.projection(input_values).flatten(2).transpose(1, 2)


class SSLAMEmbeddings(nn.Module):
    """Patch tokens plus fixed positions, and the CLS token (which gets no position)."""

    def __init__(self, config: SSLAMConfig):
        super().__init__()
        self.patch_embeddings = SSLAMPatchEmbeddings(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        table = build_2d_sincos_position_table(config.hidden_size, config.max_time_patches, config.num_freq_patches)
        self.register_buffer("position_embeddings", table, persistent=True)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        """`(B, C, T, F)` -> patch tokens with positions `(B, N, D)`.

        The positions are cast to the weights' dtype, not to the tokens': under bf16 autocast the conv output is bf16
        and the fp32 positions promote the sum, so the residual stream stays fp32 as in the original (casting them
        to bf16 tripled the bf16 drift). A model loaded in bf16 keeps a bf16 stream.
        """
        tokens = self.patch_embeddings(input_values)
        return tokens + self.position_embeddings[:, : tokens.shape[1]].to(self.cls_token.dtype)

    def prepend_cls(self, tokens: torch.Tensor) -> torch.Tensor:
        """`(B, N, D)` -> `(B, 1 + N, D)`."""
        return torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention as the original computes it: q scaled before q.k^T, softmax in float32.

    Args:
        query, key, value: `(B, H, S, head_dim)`. attention_mask: `(B, 1, S, S)` or None; additive float (0 = attend,
            the dtype's minimum = masked), as `create_bidirectional_mask` builds it for eager attention, or boolean
            (True = attend), as it builds it for SDPA.
    Returns:
        output `(B, S, H, head_dim)` and weights `(B, H, S, S)`.
    """
    scores = torch.matmul(query * scaling, key.transpose(-2, -1))
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    elif attention_mask is not None:
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


# Implementations whose kernels never form the attention weights: with `output_attentions=True` the weights are
# computed by `eager_attention_forward` instead (same mathematics, so outputs agree to rounding).
IMPLEMENTATIONS_WITHOUT_WEIGHTS = ("sdpa",)


class SSLAMAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections (the original's fused qkv, split)."""

    def __init__(self, config: SSLAMConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.dropout = config.attention_probs_dropout_prob
        size = config.hidden_size
        self.q_proj = nn.Linear(size, size, bias=config.qkv_bias)
        self.k_proj = nn.Linear(size, size, bias=config.qkv_bias)
        self.v_proj = nn.Linear(size, size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(size, size)
        self.output_dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(B, S, D)` -> `(B, S, D)` and the attention weights `(B, H, S, S)` (None unless `output_attentions`
        for implementations that do not form them)."""
        hidden_shape = (*hidden_states.shape[:-1], self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        implementation = self.config._attn_implementation
        if kwargs.get("output_attentions") and implementation in IMPLEMENTATIONS_WITHOUT_WEIGHTS:
            implementation = "eager"
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        output, weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            scaling=self.scaling,
            dropout=self.dropout if self.training else 0.0,
            **kwargs,
        )
        if kwargs.get("output_attentions") and weights is None:
            raise ValueError(
                f"attn_implementation={implementation!r} does not return attention weights, so output_attentions=True "
                "cannot be honoured; load the model with attn_implementation='eager' or 'sdpa'."
            )
        output = output.reshape(*hidden_states.shape[:-1], -1)
        return self.output_dropout(self.o_proj(output)), weights


class SSLAMMLP(nn.Module):
    """fc1 -> activation -> dropout -> fc2 -> dropout. Its output is the original's per-layer "layer result", the
    feature the pre-training teacher turns into targets (recorded as `ffn_outputs`)."""

    def __init__(self, config: SSLAMConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.activation_dropout = nn.Dropout(config.activation_dropout)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.output_dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.activation_dropout(self.activation(self.fc1(hidden_states)))
        return self.output_dropout(self.fc2(hidden_states))


class SSLAMLayer(GradientCheckpointingLayer):
    """Post-norm block: `x = x + attn(x); r = LN1(x); f = mlp(r); out = LN2(r + f)`, `(B, S, D)` -> `(B, S, D)`."""

    def __init__(self, config: SSLAMConfig, drop_path_rate: float = 0.0):
        super().__init__()
        self.attention = SSLAMAttention(config)
        self.attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SSLAMMLP(config)
        self.mlp_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.output_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.drop_path = SSLAMDropPath(drop_path_rate)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        attention_output, _ = self.attention(hidden_states, attention_mask, **kwargs)
        hidden_states = hidden_states + self.drop_path(attention_output)
        residual = self.attention_layernorm(hidden_states)
        ffn_output = self.mlp(residual)
        return self.output_layernorm(residual + self.drop_path(self.mlp_dropout(ffn_output)))


class SSLAMEncoder(nn.Module):
    """The stack of post-norm blocks, with drop-path rising linearly from 0 to `config.drop_path_rate`."""

    def __init__(self, config: SSLAMConfig):
        super().__init__()
        last = max(config.num_hidden_layers - 1, 1)
        rates = [config.drop_path_rate * index / last for index in range(config.num_hidden_layers)]
        self.layer = nn.ModuleList([SSLAMLayer(config, rate) for rate in rates])

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        for layer in self.layer:
            hidden_states = layer(hidden_states, attention_mask, **kwargs)
        return hidden_states


@dataclass
class SSLAMModelOutput(BaseModelOutputWithPooling):
    """
    Output of [`SSLAMModel`].

    last_hidden_state (`(B, 1 + N, D)`): output of the last block (CLS first, then the time-major patch tokens).
    pooler_output (`(B, D)`): the CLS token.
    hidden_states (`tuple` of `(B, 1 + N, D)`, *optional*, `output_hidden_states=True`): the input of the first
        block (after the pre-norm LayerNorm), then every block's output.
    attentions (`tuple` of `(B, H, S, S)`, *optional*, `output_attentions=True`): attention weights of each block.
    ffn_outputs (`tuple` of `(B, 1 + N, D)`, *optional*, `output_ffn_outputs=True`): each block's MLP output before
        the residual and the second LayerNorm; the original's "layer results" that the pre-training teacher turns
        into targets.
    """

    ffn_outputs: tuple[torch.Tensor, ...] | None = None


class SSLAMPreTrainedModel(PreTrainedModel):
    config: SSLAMConfig
    config_class = SSLAMConfig
    base_model_prefix = "sslam"
    main_input_name = "input_values"
    input_modalities = ("audio",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["SSLAMEmbeddings", "SSLAMLayer"]
    _supports_sdpa = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {
        "hidden_states": SSLAMLayer,
        "attentions": SSLAMAttention,
        "ffn_outputs": OutputRecorder(SSLAMMLP, capture_initial_hidden_state=False),
    }
    _input_embed_layer = "patch_embeddings"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        """Truncated-normal linear layers, default conv/LayerNorm init, CLS ~ N(0, std) and the fixed sin-cos table."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            if module.weight is not None:
                init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, SSLAMEmbeddings):
            init.trunc_normal_(module.cls_token, std=std)
            table = build_2d_sincos_position_table(
                self.config.hidden_size, self.config.max_time_patches, self.config.num_freq_patches
            )
            init.copy_(module.position_embeddings, table)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, with a warning naming every loaded weight that holds NaN or inf values
        (a diverged run or a corrupt file: such a model outputs NaN)."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        problems = non_finite_tensors(model.state_dict())
        if problems:
            source = args[0] if args else kwargs.get("pretrained_model_name_or_path")
            logger.warning(
                f"{len(problems)} weight tensor(s) loaded from {source} hold NaN or inf values, so the model's outputs "
                f"will not be finite: {', '.join(problems)}."
            )
        return loaded

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Also maps `AutoModel` to `SSLAMModel` in the saved `auto_map`, so `trust_remote_code=True` users can load
        the encoder of any saved SSLAM folder (transformers writes only the saved class's own entry)."""
        if type(self)._auto_class is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.setdefault("AutoModel", "modeling_sslam.SSLAMModel")
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)


class SSLAMModel(SSLAMPreTrainedModel):
    """The SSLAM encoder. Input `(B, T, 128)` or `(B, 1, T, 128)` normalised log-mel frames (T a multiple of 16);
    output `last_hidden_state` `(B, 1 + N, D)` with CLS first and `N = (T / 16) * 8` time-major patch tokens."""

    def __init__(self, config: SSLAMConfig):
        super().__init__(config)
        self.embeddings = SSLAMEmbeddings(config)
        self.pre_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = SSLAMEncoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings.projection

    def prepare_input_values(self, input_values: torch.Tensor) -> torch.Tensor:
        """Checks the input and returns it as `(B, C, T, F)` in the model's dtype."""
        if not isinstance(input_values, torch.Tensor):
            raise TypeError(
                f"input_values must be a torch.Tensor, got {type(input_values).__name__}; call the feature extractor "
                "with return_tensors='pt' (or use torch.from_numpy)."
            )
        shape = tuple(input_values.shape)
        if input_values.ndim == 3:
            input_values = input_values.unsqueeze(1)
        if input_values.ndim != 4:
            raise ValueError(
                f"input_values must be (batch, frames, mel_bins) or (batch, 1, frames, mel_bins), got shape {shape}."
            )
        batch, channels, frames, bins = input_values.shape
        config = self.config
        if batch == 0:
            raise ValueError(f"input_values is an empty batch (shape {shape}).")
        if channels != config.num_channels or bins != config.num_mel_bins:
            raise ValueError(
                f"input_values has {channels} channel(s) and {bins} mel bins; the model expects "
                f"{config.num_channels} and {config.num_mel_bins} (shape {tuple(input_values.shape)})."
            )
        if frames % config.patch_size != 0 or frames == 0:
            raise ValueError(
                f"the number of frames ({frames}) must be a positive multiple of patch_size ({config.patch_size}); "
                "use the feature extractor, which pads to a multiple of the patch size."
            )
        if frames // config.patch_size > config.max_time_patches:
            raise ValueError(
                f"{frames} frames exceed the position table ({config.max_time_patches * config.patch_size} frames); "
                "split long audio with sslam.modeling_sslam.embedding.embed_long_audio (pooled windows) or "
                "embed_time_frames (time frames)."
            )
        return input_values.to(self.embeddings.patch_embeddings.projection.weight.dtype)

    def embed_patches(self, input_values: torch.Tensor) -> torch.Tensor:
        """`(B, T, F)` or `(B, 1, T, F)` -> patch tokens plus fixed positions `(B, N, D)` (no CLS)."""
        return self.embeddings(self.prepare_input_values(input_values))

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        input_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        patch_embeddings: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SSLAMModelOutput:
        r"""
        input_values (`(B, T, 128)` or `(B, 1, T, 128)`): normalised log-mel frames from [`SSLAMFeatureExtractor`].
        attention_mask (`(B, T)` per frame or `(B, 1 + N)` per token, *optional*): 1 for real audio / tokens to
            attend to; padded patches are not attended to (see [`token_attention_mask`]).
        patch_embeddings (`(B, N, D)`, *optional*): instead of `input_values`, patch tokens that already carry their
            positions (e.g. `embed_patches` output, or any subset of its patches), like `inputs_embeds` for text
            models. The CLS token is prepended.
        """
        if (input_values is None) == (patch_embeddings is None):
            raise ValueError("pass exactly one of input_values and patch_embeddings.")
        num_frames = None
        if patch_embeddings is None:
            num_frames = self.prepare_input_values(input_values).shape[2]
            patch_embeddings = self.embed_patches(input_values)
        batch, num_patches, _ = patch_embeddings.shape
        token_mask = token_attention_mask(attention_mask, batch, num_patches, num_frames, self.config)
        hidden_states = self.pre_layernorm(self.embeddings.prepend_cls(patch_embeddings))
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden_states, attention_mask=token_mask)
        hidden_states = self.encoder(hidden_states, mask, **kwargs)
        return SSLAMModelOutput(last_hidden_state=hidden_states, pooler_output=hidden_states[:, 0])


def pool_tokens(last_hidden_state: torch.Tensor, pooling: str, token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """`(B, 1 + N, D)` -> `(B, D)`: the CLS token, or the mean of the attended patch tokens (`token_mask`
    `(B, 1 + N)`, see [`token_attention_mask`])."""
    if pooling == "cls":
        return last_hidden_state[:, 0]
    patches = last_hidden_state[:, 1:]
    if token_mask is None:
        return patches.mean(dim=1)
    weights = token_mask[:, 1:].to(patches.dtype).unsqueeze(-1)
    return (patches * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def time_rows(
    patch_tokens: torch.Tensor,
    num_freq_patches: int,
    frequency_pooling: str = "concat",
    token_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Time-major patch tokens `(B, N, D)` -> one feature per time row (16 frames, 160 ms): `(B, N / F, F * D)` with
    `"concat"` (frequency patches in order, lowest band first) or `(B, N / F, D)` with `"mean"` (over the row's
    attended patches when `token_mask` `(B, 1 + N)` is given, see [`token_attention_mask`])."""
    batch, num_patches, hidden = patch_tokens.shape
    rows = patch_tokens.reshape(batch, num_patches // num_freq_patches, num_freq_patches, hidden)
    if frequency_pooling == "concat":
        return rows.reshape(batch, num_patches // num_freq_patches, num_freq_patches * hidden)
    if frequency_pooling != "mean":
        raise ValueError(f"frequency_pooling must be 'concat' or 'mean', got {frequency_pooling!r}.")
    if token_mask is None:
        return rows.mean(dim=2)
    weights = token_mask[:, 1:].reshape(batch, -1, num_freq_patches, 1).to(rows.dtype)
    return (rows * weights).sum(dim=2) / weights.sum(dim=2).clamp(min=1.0)


def row_attention_mask(token_mask: torch.Tensor | None, num_freq_patches: int) -> torch.Tensor | None:
    """`(B, 1 + N)` token mask -> `(B, N / F)` bool: a time row is real when any of its patches is attended."""
    if token_mask is None:
        return None
    return token_mask[:, 1:].reshape(token_mask.shape[0], -1, num_freq_patches).any(dim=-1)


def frame_classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, row_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Binary cross-entropy of frame logits `(B, R, C)` against frame targets `(B, R, C)` in [0, 1], averaged over
    the entries that count: rows where `row_mask` `(B, R)` is True (padding rows are left out) and targets that are
    not -100 (transformers' "ignore" value, which collators put on padding rows)."""
    if labels.shape != logits.shape:
        raise ValueError(
            f"labels have shape {tuple(labels.shape)} but the frame logits have {tuple(logits.shape)} "
            "(batch, time rows of 16 frames, num_labels)."
        )
    labels = labels.float()
    keep = labels != -100
    if row_mask is not None:
        keep = keep & row_mask.unsqueeze(-1)
    losses = F.binary_cross_entropy_with_logits(logits.float(), labels.clamp(min=0.0), reduction="none")
    return (losses * keep).sum() / keep.sum().clamp(min=1)


def infer_problem_type(logits: torch.Tensor, labels: torch.Tensor) -> str:
    """transformers' rule: one output -> regression; integer labels -> single-label; float multi-hot -> multi-label."""
    if logits.shape[-1] == 1:
        return "regression"
    if not labels.is_floating_point() and labels.ndim == 1:
        return "single_label_classification"
    return "multi_label_classification"


def classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, problem_type: str | None, label_smoothing: float = 0.0
) -> torch.Tensor:
    """The original fine-tuning recipe's loss of one batch (the loss `Trainer` optimises, averaged over the
    micro-batches of a gradient-accumulation step).

    * single-label, hard `(B,)` class ids: cross-entropy with `label_smoothing`, mean over labels != -100;
    * single-label, soft `(B, C)` targets (mixup): soft cross-entropy, mean over the batch;
    * multi-label `(B, C)`: BCE-with-logits summed over the batch and divided by its label mass `labels.sum()`;
    * regression: mean squared error.
    """
    problem_type = problem_type or infer_problem_type(logits, labels)
    logits = logits.float()
    if problem_type == "single_label_classification":
        if labels.ndim == 2:
            return F.cross_entropy(logits, labels.float())
        return F.cross_entropy(logits, labels.long().view(-1), ignore_index=-100, label_smoothing=label_smoothing)
    if problem_type == "multi_label_classification":
        total = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="sum")
        return total / labels.float().sum().clamp(min=1.0)
    if problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1), labels.float().squeeze(-1))
    raise ValueError(f"Unknown problem_type {problem_type!r}.")


class SSLAMForAudioClassification(SSLAMPreTrainedModel):
    """Encoder -> CLS (or mean of patch tokens, `config.pooling`) -> fc_norm (LayerNorm, eps 1e-6) -> Linear.

    Returns logits `(B, num_labels)`; with `labels` also the loss of [`classification_loss`] (the original recipe,
    with `config.label_smoothing`).
    """

    # The loss is normalised per batch (by its label mass for multi-label data, as the original): the Trainer averages
    # it over gradient-accumulation micro-batches instead of passing `num_items_in_batch`.
    accepts_loss_kwargs = False

    def __init__(self, config: SSLAMConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.sslam = SSLAMModel(config)
        self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SequenceClassifierOutput:
        r"""
        labels (`(B,)` class indices, `(B, num_labels)` multi-hot or soft targets, *optional*): targets for the loss.
        """
        outputs = self.sslam(input_values, attention_mask=attention_mask, **kwargs)
        token_mask = None
        if self.config.pooling == "mean" and attention_mask is not None:
            hidden = outputs.last_hidden_state
            frames = self.sslam.prepare_input_values(input_values).shape[2]
            token_mask = token_attention_mask(attention_mask, hidden.shape[0], hidden.shape[1] - 1, frames, self.config)
        pooled = pool_tokens(outputs.last_hidden_state, self.config.pooling, token_mask)
        logits = self.classifier(self.fc_norm(pooled))
        loss = None
        if labels is not None:
            loss = classification_loss(logits, labels, self.config.problem_type, self.config.label_smoothing)
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class SSLAMForAudioFrameClassification(SSLAMPreTrainedModel):
    """Encoder -> one feature per time row of 16 frames (160 ms; its frequency patches concatenated or averaged,
    `config.frequency_pooling`) -> fc_norm (LayerNorm) -> Linear: frame logits `(B, R, num_labels)` with
    `R = T / 16`, for sound event detection. With `labels` `(B, R, num_labels)` also the loss of
    [`frame_classification_loss`] (binary cross-entropy, padding rows of the attention mask left out).

    `config.detection_thresholds` and `config.detection_median_filter` say how `sslam.evaluation.detection` turns
    the frame probabilities into events.
    """

    accepts_loss_kwargs = False

    def __init__(self, config: SSLAMConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.sslam = SSLAMModel(config)
        width = config.hidden_size * (config.num_freq_patches if config.frequency_pooling == "concat" else 1)
        self.fc_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(width, config.num_labels)
        self.post_init()

    def frame_logits(self, rows: torch.Tensor) -> torch.Tensor:
        """Row features `(..., width)` (from [`time_rows`] with `config.frequency_pooling`) -> logits
        `(..., num_labels)`; lets windowed inference over long audio reuse the head."""
        return self.classifier(self.fc_norm(rows))

    @can_return_tuple
    def forward(
        self,
        input_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        r"""
        labels (`(B, R, num_labels)` frame targets in [0, 1], *optional*): R = frames / 16; entries of -100 are
            ignored.
        """
        outputs = self.sslam(input_values, attention_mask=attention_mask, **kwargs)
        hidden = outputs.last_hidden_state
        frames = self.sslam.prepare_input_values(input_values).shape[2]
        token_mask = token_attention_mask(attention_mask, hidden.shape[0], hidden.shape[1] - 1, frames, self.config)
        rows = time_rows(hidden[:, 1:], self.config.num_freq_patches, self.config.frequency_pooling, token_mask)
        logits = self.frame_logits(rows)
        loss = None
        if labels is not None:
            row_mask = row_attention_mask(token_mask, self.config.num_freq_patches)
            loss = frame_classification_loss(logits, labels, row_mask)
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


__all__ = [
    "SSLAMForAudioClassification",
    "SSLAMForAudioFrameClassification",
    "SSLAMModel",
    "SSLAMModelOutput",
    "SSLAMPreTrainedModel",
    "build_2d_sincos_position_table",
    "classification_loss",
    "frame_classification_loss",
    "non_finite_tensors",
    "pool_tokens",
    "row_attention_mask",
    "time_rows",
    "token_attention_mask",
]
