# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""PyTorch SSLAM encoder and audio classifier.

SSLAM (Self-Supervised Learning from Audio Mixtures, ICLR 2025, arXiv 2506.12222) uses the EAT / data2vec 2.0 audio
ViT: 16x16 patches of a (T, 128) log-mel spectrogram, time-major tokens (n = t * 8 + f), fixed 2-D sin-cos positions on
the patch tokens, a CLS token without position, a LayerNorm before the first block and post-norm blocks with no final
LayerNorm. Written from the published description and checked against outputs of the original fairseq code.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from .configuration_sslam import SSLAMConfig


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


def frame_mask_to_token_mask(attention_mask: torch.Tensor, patch_size: int, freq_patches: int) -> torch.Tensor:
    """Turns a frame mask into a patch-token mask.

    Args:
        attention_mask: `(B, T)`, 1 for frames of real audio. A patch row is real when its first frame is.
    Returns:
        `(B, (T // patch_size) * freq_patches)` bool, time-major like the tokens.
    """
    rows = attention_mask[:, ::patch_size].bool()
    return rows.repeat_interleave(freq_patches, dim=1)


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
        self.patch_size = config.patch_size
        self.num_mel_bins = config.num_mel_bins
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        return self.projection(input_values).flatten(2).transpose(1, 2)


class SSLAMEmbeddings(nn.Module):
    """Patch tokens plus fixed positions, and the CLS token (which gets no position)."""

    def __init__(self, config: SSLAMConfig):
        super().__init__()
        self.config = config
        self.patch_embeddings = SSLAMPatchEmbeddings(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        table = build_2d_sincos_position_table(config.hidden_size, config.max_time_patches, config.num_freq_patches)
        self.register_buffer("position_embeddings", table, persistent=True)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        """`(B, C, T, F)` -> patch tokens with positions `(B, N, D)`."""
        tokens = self.patch_embeddings(input_values)
        return tokens + self.position_embeddings[:, : tokens.shape[1]].to(tokens.dtype)

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
        query, key, value: `(B, H, S, head_dim)`. attention_mask: bool `(B, 1, 1, S)` (True = attend) or None.
    Returns:
        output `(B, S, H, head_dim)` and weights `(B, H, S, S)`.
    """
    scores = torch.matmul(query * scaling, key.transpose(-2, -1))
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


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

    def _split_heads(self, states: torch.Tensor) -> torch.Tensor:
        batch, length, _ = states.shape
        return states.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(B, S, D)` -> `(B, S, D)` and the attention weights (eager only)."""
        batch, length, _ = hidden_states.shape
        query = self._split_heads(self.q_proj(hidden_states))
        key = self._split_heads(self.k_proj(hidden_states))
        value = self._split_heads(self.v_proj(hidden_states))

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            scaling=self.scaling,
            dropout=self.dropout if self.training else 0.0,
            is_causal=False,
            **kwargs,
        )
        output = output.reshape(batch, length, -1)
        return self.output_dropout(self.o_proj(output)), weights


class SSLAMMLP(nn.Module):
    """fc1 -> activation -> dropout -> fc2 -> dropout."""

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
    """Post-norm block: `x = x + attn(x); r = LN1(x); f = mlp(r); out = LN2(r + f)`.

    Returns the block output, the raw MLP output `f` (the teacher's per-layer target feature) and the attention
    weights (eager only).
    """

    def __init__(self, config: SSLAMConfig, drop_path_rate: float = 0.0):
        super().__init__()
        self.attention = SSLAMAttention(config)
        self.attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SSLAMMLP(config)
        self.mlp_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.output_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.drop_path = SSLAMDropPath(drop_path_rate)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        attention_output, weights = self.attention(hidden_states, attention_mask, **kwargs)
        hidden_states = hidden_states + self.drop_path(attention_output)
        residual = self.attention_layernorm(hidden_states)
        ffn_output = self.mlp(residual)
        hidden_states = self.output_layernorm(residual + self.drop_path(self.mlp_dropout(ffn_output)))
        return hidden_states, ffn_output, weights


@dataclass
class SSLAMEncoderOutput(ModelOutput):
    """
    Output of [`SSLAMModel.encode_tokens`].

    last_hidden_state (`(B, S, D)`): output of the last block (CLS first).
    hidden_states (`tuple` of `(B, S, D)`, *optional*): pre-norm output, then every block's output.
    attentions (`tuple` of `(B, H, S, S)`, *optional*): attention weights of each block (eager attention only).
    ffn_outputs (`tuple` of `(B, S, D)`, *optional*): each block's MLP output before the residual and the second
        LayerNorm; the original's "layer results" that the pre-training teacher turns into targets.
    """

    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    ffn_outputs: tuple[torch.Tensor, ...] | None = None


class SSLAMEncoder(nn.Module):
    """The stack of post-norm blocks, with drop-path rising linearly to `config.drop_path_rate`."""

    def __init__(self, config: SSLAMConfig):
        super().__init__()
        last = max(config.num_hidden_layers - 1, 1)
        rates = [config.drop_path_rate * index / last for index in range(config.num_hidden_layers)]
        self.layer = nn.ModuleList([SSLAMLayer(config, rate) for rate in rates])

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        output_ffn: bool = False,
    ) -> SSLAMEncoderOutput:
        all_hidden = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        all_ffn = [] if output_ffn else None
        for layer in self.layer:
            hidden_states, ffn_output, weights = layer(hidden_states, attention_mask)
            if output_hidden_states:
                all_hidden.append(hidden_states)
            if output_attentions:
                all_attentions.append(weights)
            if output_ffn:
                all_ffn.append(ffn_output)
        return SSLAMEncoderOutput(
            last_hidden_state=hidden_states,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
            ffn_outputs=tuple(all_ffn) if output_ffn else None,
        )


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
        """Checks the input and returns it as `(B, C, T, F)`."""
        if input_values.ndim == 3:
            input_values = input_values.unsqueeze(1)
        if input_values.ndim != 4:
            raise ValueError(
                f"input_values must be (batch, frames, mel_bins) or (batch, 1, frames, mel_bins), "
                f"got shape {tuple(input_values.shape)}."
            )
        _, channels, frames, bins = input_values.shape
        config = self.config
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
                "split long audio with modeling_sslam.embedding.embed_long_audio."
            )
        return input_values.to(self.embeddings.patch_embeddings.projection.weight.dtype)

    def embed_patches(self, input_values: torch.Tensor) -> torch.Tensor:
        """`(B, T, F)` or `(B, 1, T, F)` -> patch tokens plus fixed positions `(B, N, D)` (no CLS)."""
        return self.embeddings(self.prepare_input_values(input_values))

    def encode_tokens(
        self,
        patch_tokens: torch.Tensor,
        token_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        output_ffn: bool = False,
    ) -> SSLAMEncoderOutput:
        """Prepends CLS, applies the pre-norm LayerNorm and runs the blocks.

        Args:
            patch_tokens: `(B, N, D)` tokens (with positions; any subset or order of patches).
            token_mask: optional `(B, N)` bool, True for real patches; padded patches are not attended to.
        """
        hidden_states = self.pre_layernorm(self.embeddings.prepend_cls(patch_tokens))
        attention_mask = None
        if token_mask is not None:
            cls_column = token_mask.new_ones(token_mask.shape[0], 1)
            attention_mask = torch.cat([cls_column, token_mask], dim=1).bool()[:, None, None, :]
        return self.encoder(
            hidden_states,
            attention_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            output_ffn=output_ffn,
        )

    def token_mask_from_attention_mask(self, attention_mask: torch.Tensor | None, num_tokens: int):
        """Frame mask `(B, T)` -> patch-token mask `(B, N)`, or None when every patch is real."""
        if attention_mask is None:
            return None
        token_mask = frame_mask_to_token_mask(attention_mask, self.config.patch_size, self.config.num_freq_patches)
        if token_mask.shape[1] != num_tokens:
            raise ValueError(
                f"attention_mask covers {attention_mask.shape[1]} frames, which does not match the input "
                f"({num_tokens // self.config.num_freq_patches * self.config.patch_size} frames)."
            )
        return None if bool(token_mask.all()) else token_mask

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        input_values (`(B, T, 128)` or `(B, 1, T, 128)`): normalised log-mel frames from [`SSLAMFeatureExtractor`].
        attention_mask (`(B, T)`, *optional*): 1 for frames of real audio; padded patch rows are not attended to.
        """
        config = self.config
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        return_dict = config.return_dict if return_dict is None else return_dict

        patch_tokens = self.embed_patches(input_values)
        token_mask = self.token_mask_from_attention_mask(attention_mask, patch_tokens.shape[1])
        encoded = self.encode_tokens(
            patch_tokens, token_mask, output_hidden_states=output_hidden_states, output_attentions=output_attentions
        )
        output = BaseModelOutputWithPooling(
            last_hidden_state=encoded.last_hidden_state,
            pooler_output=encoded.last_hidden_state[:, 0],
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
        )
        return output if return_dict else output.to_tuple()


def pool_tokens(last_hidden_state: torch.Tensor, pooling: str, token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """`(B, 1 + N, D)` -> `(B, D)`: the CLS token, or the mean of the real patch tokens."""
    if pooling == "cls":
        return last_hidden_state[:, 0]
    patches = last_hidden_state[:, 1:]
    if token_mask is None:
        return patches.mean(dim=1)
    weights = token_mask.to(patches.dtype).unsqueeze(-1)
    return (patches * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, problem_type: str | None, num_items_in_batch=None
) -> torch.Tensor:
    """Sum of per-item losses divided by the item count, so gradient accumulation with `num_items_in_batch` (the
    Trainer's count over all accumulated micro-batches) gives the same gradient as one large batch.

    single-label: cross-entropy over labels != -100 (items = labels); multi-label: BCE-with-logits (items = label
    entries); regression: squared error (items = targets).
    """
    problem_type = problem_type or infer_problem_type(logits, labels)
    if problem_type == "single_label_classification":
        total = F.cross_entropy(logits.float(), labels.long().view(-1), reduction="sum", ignore_index=-100)
        count = (labels != -100).sum()
    elif problem_type == "multi_label_classification":
        total = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="sum")
        count = labels.numel()
    elif problem_type == "regression":
        total = F.mse_loss(logits.float().squeeze(-1), labels.float().squeeze(-1), reduction="sum")
        count = labels.numel()
    else:
        raise ValueError(f"Unknown problem_type {problem_type!r}.")
    if num_items_in_batch is not None:
        count = num_items_in_batch
    if isinstance(count, torch.Tensor):
        count = count.to(total.device)
    return total / count


def infer_problem_type(logits: torch.Tensor, labels: torch.Tensor) -> str:
    """transformers' rule: one output -> regression; integer labels -> single-label; float multi-hot -> multi-label."""
    if logits.shape[-1] == 1:
        return "regression"
    if labels.dtype in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8) and labels.ndim == 1:
        return "single_label_classification"
    return "multi_label_classification"


class SSLAMForAudioClassification(SSLAMPreTrainedModel):
    """Encoder -> CLS (or mean of patch tokens, `config.pooling`) -> fc_norm (LayerNorm, eps 1e-6) -> Linear.

    Returns logits `(B, num_labels)`; with `labels` also the loss (cross-entropy, BCE for
    `problem_type="multi_label_classification"`, or MSE).
    """

    def __init__(self, config: SSLAMConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.sslam = SSLAMModel(config)
        self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        r"""
        labels (`(B,)` class indices, or `(B, num_labels)` multi-hot floats, *optional*): targets for the loss.
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.sslam(
            input_values,
            attention_mask=attention_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        token_mask = None
        if self.config.pooling == "mean":
            token_mask = self.sslam.token_mask_from_attention_mask(
                attention_mask, outputs.last_hidden_state.shape[1] - 1
            )
        pooled = pool_tokens(outputs.last_hidden_state, self.config.pooling, token_mask)
        logits = self.classifier(self.fc_norm(pooled))

        loss = None
        if labels is not None:
            loss = classification_loss(
                logits, labels, self.config.problem_type, kwargs.get("num_items_in_batch")
            )
        output = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "SSLAMModel",
    "SSLAMForAudioClassification",
    "SSLAMPreTrainedModel",
    "build_2d_sincos_position_table",
    "pool_tokens",
]
