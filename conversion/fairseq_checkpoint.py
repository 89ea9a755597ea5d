# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""Reading original fairseq SSLAM / EAT checkpoints without fairseq, and mapping their keys to the native layout.

Checkpoints are read with `torch.load(..., weights_only=True)`: tensors, containers and primitive values, plus the few
numpy / argparse types that only rebuild plain data (fairseq may store them in `extra_state` or `args`), each allowed
by its exact name. A zip checkpoint (torch.save's format) whose pickle names any other global (code, arbitrary
classes, a function of an allowed module, a name that does not exist) is refused before loading, from its opcodes
alone; nothing in it is executed. A legacy (non-zip) file cannot be scanned beforehand: torch's weights-only loader
reads it, and it is refused when that loader meets anything else.
"""

import importlib
import logging
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError

from sslam.modeling_sslam.configuration_sslam import SSLAMConfig
from sslam.modeling_sslam.modeling_sslam import build_2d_sincos_position_table
from sslam.modeling_sslam.pretraining_sslam import SSLAMForPreTraining


logger = logging.getLogger(__name__)

ENCODER_PREFIX = "modality_encoders.IMAGE."

# One explicit table: fairseq (regex on the key without the optional "model." prefix) -> native key template.
# Fused qkv tensors are split into q/k/v by `split_fused_qkv`.
ENCODER_KEY_MAP: list[tuple[str, str]] = [
    (r"modality_encoders\.IMAGE\.extra_tokens", "embeddings.cls_token"),
    (r"modality_encoders\.IMAGE\.local_encoder\.proj\.(weight|bias)", r"embeddings.patch_embeddings.projection.\1"),
    (r"modality_encoders\.IMAGE\.fixed_positional_encoder\.positions", "embeddings.position_embeddings"),
    (r"modality_encoders\.IMAGE\.context_encoder\.norm\.(weight|bias)", r"pre_layernorm.\1"),
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"encoder.layer.\1.attention.qkv.\2"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"encoder.layer.\1.attention.o_proj.\2"),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", r"encoder.layer.\1.attention_layernorm.\2"),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", r"encoder.layer.\1.output_layernorm.\2"),
    (r"blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", r"encoder.layer.\1.mlp.fc1.\2"),
    (r"blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", r"encoder.layer.\1.mlp.fc2.\2"),
]
DECODER_KEY_MAP: list[tuple[str, str]] = [
    (r"modality_encoders\.IMAGE\.decoder\.blocks\.(\d+)\.0\.(weight|bias)", r"layers.\1.conv.\2"),
    (r"modality_encoders\.IMAGE\.decoder\.proj\.(weight|bias)", r"proj.\1"),
]
HEAD_KEY_MAP: list[tuple[str, str]] = [
    (r"fc_norm\.(weight|bias)", r"fc_norm.\1"),
    (r"head\.(weight|bias)", r"classifier.\1"),
]

DEFAULT_MAX_TIME_PATCHES = 768  # rows of the sin-cos table since EAT commit a916d7d (2024-04)
POSITIONS_KEY = "embeddings.position_embeddings"
# Largest difference between a stored table and the float32 one that still counts as "the same layout": fp16 training
# rounds the stored values (|v| <= 1) by at most 2**-11.
POSITION_TABLE_ATOL = 1e-3


class CheckpointError(ValueError):
    """A checkpoint that cannot be converted (unsafe, corrupt, or not an SSLAM/EAT checkpoint)."""


# numpy's per-dtype classes. A rebuilt `numpy.dtype` is an instance of one of them, and torch's weights-only loader
# checks the class of every object it builds, so rebuilding numpy data needs these classes (and only these).
NUMPY_DTYPE_CLASSES = (
    "BoolDType", "ByteDType", "UByteDType", "ShortDType", "UShortDType", "IntDType", "UIntDType", "LongDType",
    "ULongDType", "LongLongDType", "ULongLongDType", "Int8DType", "UInt8DType", "Int16DType", "UInt16DType",
    "Int32DType", "UInt32DType", "Int64DType", "UInt64DType", "Float16DType", "Float32DType", "Float64DType",
    "LongDoubleDType", "Complex64DType", "Complex128DType", "CLongDoubleDType", "BytesDType", "StrDType",
    "StringDType", "VoidDType", "ObjectDType", "DateTime64DType", "TimeDelta64DType",
)  # fmt: skip
# Globals that only rebuild plain data (numpy scalars/arrays/dtypes, argparse namespaces), by exact name. fairseq may
# pickle them in `extra_state` / `args`; they are allowed on top of torch's weights_only set. Any other name, also one
# from the same modules (e.g. the function `numpy.dtypes._add_dtype_helper`), is refused.
DATA_ONLY_GLOBALS = frozenset(
    {
        "argparse.Namespace",
        "numpy.dtype",
        "numpy.ndarray",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
    }
    | {f"numpy.dtypes.{name}" for name in NUMPY_DTYPE_CLASSES}
)


def _numpy_dtype_classes() -> list:
    """The classes of `NUMPY_DTYPE_CLASSES` that this numpy has."""
    import numpy.dtypes

    return [getattr(numpy.dtypes, name) for name in NUMPY_DTYPE_CLASSES if hasattr(numpy.dtypes, name)]


def _resolve_global(path: Path, name: str):
    module, _, attribute = name.rpartition(".")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2 warns on numpy.core
            return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as error:
        message = f"{path} needs {name}, which this environment lacks ({error}); it was not loaded."
        raise CheckpointError(message) from error


def _data_only_globals(path: Path) -> list:
    """The extra globals a zip checkpoint needs, if all of them only rebuild plain data; else a `CheckpointError`.

    Reads the pickle opcodes without running them. Legacy (non-zip) files cannot be scanned and get no extras.
    """
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except ValueError:
        return []
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(_unreadable_message(path, error)) from error
    refused = sorted(name for name in names if name not in DATA_ONLY_GLOBALS)
    if refused:
        raise CheckpointError(
            f"{path} pickles code or objects that are not plain data ({', '.join(refused)}), so it was not loaded "
            "(nothing from it was run). Only tensors, containers, numbers, strings and numpy/argparse data are "
            "accepted."
        )
    extras = [_resolve_global(path, name) for name in names]
    if any(name.startswith("numpy.") for name in names):
        extras += _numpy_dtype_classes()
    return extras


def _unreadable_message(path: Path, error: Exception) -> str:
    first_line = str(error).strip().split(". ")[0].splitlines()[0] if str(error).strip() else type(error).__name__
    return f"{path} is not a readable PyTorch checkpoint (corrupt or truncated?): {first_line}."


def _unpickling_error_message(path: Path, error: Exception) -> str:
    """A short message for a `weights_only` refusal: unsafe content, a legacy pickle the loader does not accept, or
    bytes that are not a pickle at all."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    global_line = next((line for line in lines if "unsupported global" in line.lower()), None)
    if global_line is not None:
        return (
            f"{path} pickles objects other than tensors and plain data, so it was not loaded (nothing from it was "
            f"run). {global_line}"
        )
    if not zipfile.is_zipfile(path) and _starts_with_a_pickle(path):
        detail = next((line for line in lines if line.startswith("Unsupported")), "content it cannot rebuild")
        return (
            f"{path} was refused because it cannot be checked: it is a legacy (non-zip) pickle, whose contents cannot "
            f"be scanned before loading, and torch's weights-only loader stopped at what it does not accept "
            f"({detail}). Nothing from it was run. Only torch.save's zip format can be checked."
        )
    return f"{path} is not a readable PyTorch checkpoint (corrupt, truncated or not written by torch.save)."


def _starts_with_a_pickle(path: Path) -> bool:
    """Whether the file starts with a complete pickle, parsed opcode by opcode (nothing is run)."""
    with path.open("rb") as handle:
        try:
            return any(opcode.name == "STOP" for opcode, _, _ in pickletools.genops(handle))
        except Exception:  # any malformed opcode stream: not a pickle
            return False


def load_checkpoint_safely(path: str | Path) -> dict:
    """Loads a fairseq checkpoint with `weights_only=True`; refuses anything else with a `CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    extra_globals = _data_only_globals(path)
    try:
        with torch.serialization.safe_globals(extra_globals):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(_unpickling_error_message(path, error)) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(_unreadable_message(path, error)) from error
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise CheckpointError(f"{path} is not a fairseq checkpoint: expected a dict with a 'model' state dict.")
    if not isinstance(checkpoint.get("cfg"), dict):
        raise CheckpointError(f"{path} has no stored 'cfg' dict, so its architecture cannot be read.")
    return checkpoint


def rename_keys(state_dict: dict[str, torch.Tensor], key_map: list[tuple[str, str]]) -> tuple[dict, list[str]]:
    """Applies the first matching rule of `key_map` to every key. Returns the renamed dict and the unmatched keys."""
    renamed, unmatched = {}, []
    for key, tensor in state_dict.items():
        for pattern, template in key_map:
            if re.fullmatch(pattern, key):
                renamed[re.sub(pattern, template, key)] = tensor
                break
        else:
            unmatched.append(key)
    return renamed, unmatched


def split_fused_qkv(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`attention.qkv.{weight,bias}` (rows q, k, v) -> `attention.{q,k,v}_proj.{weight,bias}`."""
    result = {}
    for key, tensor in state_dict.items():
        match = re.fullmatch(r"(.*attention\.)qkv\.(weight|bias)", key)
        if match is None:
            result[key] = tensor
            continue
        if tensor.shape[0] % 3 != 0:
            raise CheckpointError(f"fused qkv tensor {key} has {tensor.shape[0]} rows, not a multiple of 3.")
        for name, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
            result[f"{match.group(1)}{name}.{match.group(2)}"] = part.clone()
    return result


def to_float32(state_dict: dict) -> dict[str, torch.Tensor]:
    """Casts floating tensors (fp16 / bf16 in real checkpoints) to float32."""
    return {key: value.float() if value.is_floating_point() else value for key, value in state_dict.items()}


def strip_prefix(state_dict: dict, prefix: str) -> dict:
    return {key[len(prefix) :] if key.startswith(prefix) else key: value for key, value in state_dict.items()}


@dataclass
class NativeWeights:
    """A fairseq checkpoint split into native state dicts (float32)."""

    kind: str  # "pretraining" or "classification"
    config: SSLAMConfig
    encoder: dict[str, torch.Tensor]
    teacher: dict[str, torch.Tensor] | None = None
    decoder: dict[str, torch.Tensor] | None = None
    head: dict[str, torch.Tensor] | None = None
    label_mids: list[str] | None = None
    notes: list[str] = field(default_factory=list)  # changes made while converting (e.g. an extended position table)


def encoder_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
    """Maps a fairseq encoder state dict (student or `_ema`) to `SSLAMModel` keys; returns it and unmatched keys."""
    renamed, unmatched = rename_keys(state_dict, ENCODER_KEY_MAP)
    return split_fused_qkv(to_float32(renamed)), unmatched


_REQUIRED = object()


def cfg_section(parent: Mapping, key: str, where: str) -> Mapping:
    """`parent[key]`, a section (dict) of a stored cfg; a `CheckpointError` naming `where.key` otherwise."""
    value = parent.get(key)
    if not isinstance(value, Mapping):
        raise CheckpointError(f"the checkpoint's {where}.{key} must be a section (dict), got {value!r}.")
    return value


def cfg_value(section: Mapping, key: str, where: str, types: type | tuple[type, ...], default=_REQUIRED):
    """`section[key]` checked to be an instance of `types` (a bool is not a number); a missing or None value gives
    `default`, or a `CheckpointError` naming `where.key` when there is none."""
    value = section.get(key)
    if value is None:
        if default is _REQUIRED:
            raise CheckpointError(f"the checkpoint's {where}.{key} is missing; the architecture needs it.")
        return default
    types = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        expected = " or ".join(kind.__name__ for kind in types)
        raise CheckpointError(
            f"the checkpoint's {where}.{key} must be {expected}, got {value!r} ({type(value).__name__})."
        )
    return value


def build_config(fields: dict, source: str) -> SSLAMConfig:
    """`SSLAMConfig(**fields)`; a config it refuses (wrong type, impossible shape) becomes a `CheckpointError`."""
    try:
        return SSLAMConfig(**fields)
    except (ValueError, TypeError, StrictDataclassError) as error:
        reason = str(error).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{source} describes an architecture SSLAMConfig refuses: {reason}") from error


def detect_kind(checkpoint: dict) -> str:
    """`"classification"` for a fine-tuned `mae_image_classification` checkpoint, else `"pretraining"`."""
    model_cfg = cfg_section(checkpoint["cfg"], "model", "cfg")
    name = model_cfg.get("_name")
    if name == "mae_image_classification" or "pretrained_model_args" in model_cfg:
        return "classification"
    if name == "data2vec_multi":
        return "pretraining"
    raise CheckpointError(f"unsupported fairseq model type {name!r}: expected data2vec_multi or mae_image_classification.")


def checkpoint_target_length(checkpoint: dict, image_cfg: dict) -> int:
    """Clip length in frames the checkpoint was trained with: the task's `target_length` (fine-tuning may differ from
    pre-training, e.g. 512 for ESC-50), else the modality's, else 1024."""
    task_cfg = checkpoint["cfg"].get("task") or {}
    return task_cfg.get("target_length") or image_cfg.get("target_length") or 1024


def config_from_fairseq_cfg(checkpoint: dict, kind: str) -> SSLAMConfig:
    """Builds an `SSLAMConfig` from the cfg stored in the checkpoint (any size); a cfg that lacks a field the
    architecture needs, holds one of the wrong type or describes an impossible model gives a `CheckpointError`."""
    model_cfg = cfg_section(checkpoint["cfg"], "model", "cfg")
    if kind == "classification":
        arguments = cfg_section(model_cfg, "pretrained_model_args", "cfg.model")
        architecture = cfg_section(arguments, "model", "cfg.model.pretrained_model_args")
        where = "cfg.model.pretrained_model_args.model"
    else:
        where, architecture = "cfg.model", model_cfg
    image = cfg_section(cfg_section(architecture, "modalities", where), "image", f"{where}.modalities")
    decoder = image.get("decoder") or {}
    if architecture.get("layer_norm_first", False):
        raise CheckpointError("layer_norm_first=True (pre-norm) checkpoints are not SSLAM/EAT and are not supported.")
    embed_dim = cfg_value(architecture, "embed_dim", where, int)
    if image.get("embed_dim", embed_dim) != embed_dim:
        raise CheckpointError("modality embed_dim differs from model embed_dim (extra projection); not supported.")
    if image.get("num_extra_tokens", 1) != 1 or image.get("prenet_depth", 0) != 0:
        raise CheckpointError("only checkpoints with one CLS token and no prenet blocks are supported.")
    image_where = f"{where}.modalities.image"
    fields = dict(
        hidden_size=embed_dim,
        num_hidden_layers=cfg_value(architecture, "depth", where, int),
        num_attention_heads=cfg_value(architecture, "num_heads", where, int),
        intermediate_size=int(embed_dim * cfg_value(architecture, "mlp_ratio", where, (int, float))),
        layer_norm_eps=architecture.get("norm_eps") or 1e-6,
        patch_size=cfg_value(image, "patch_size", image_where, int),
        num_channels=cfg_value(image, "in_chans", image_where, int),
        max_time_patches=image.get("max_length", DEFAULT_MAX_TIME_PATCHES),
        max_length=checkpoint_target_length(checkpoint, image),
        decoder_hidden_size=decoder.get("decoder_dim", 768),
        decoder_num_layers=decoder.get("decoder_layers", 6),
        decoder_kernel_size=decoder.get("decoder_kernel", 3),
        decoder_groups=decoder.get("decoder_groups", 16),
        clone_batch=architecture.get("clone_batch", 8),
        mask_prob=image.get("mask_prob", 0.8),
        mask_prob_adjust=image.get("mask_prob_adjust", 0.07),
        mask_length=image.get("mask_length", 5),
        inverse_mask=image.get("inverse_mask", True),
        mask_noise_std=image.get("mask_noise_std", 0.01),
        average_top_k_layers=architecture.get("average_top_k_layers", 12),
        instance_norm_target_layer=architecture.get("instance_norm_target_layer", True),
        layer_norm_targets=architecture.get("layer_norm_targets", True),
        cls_loss_weight=architecture.get("cls_loss", 1.0),
        d2v_loss_weight=architecture.get("d2v_loss", 1.0),
        loss_scale=architecture.get("loss_scale"),
        ema_decay=architecture.get("ema_decay", 0.9998),
        ema_end_decay=architecture.get("ema_end_decay", 0.99999),
        ema_anneal_end_step=architecture.get("ema_anneal_end_step", 100_000),
        min_target_var=architecture.get("min_target_var", 0.0),
        min_pred_var=architecture.get("min_pred_var", 0.0),
    )
    if kind == "classification":
        fields.update(
            drop_path_rate=model_cfg.get("drop_path_rate", 0.0),
            pooling="cls" if model_cfg.get("prediction_mode", "CLS_TOKEN") == "CLS_TOKEN" else "mean",
            num_labels=cfg_value(model_cfg, "num_classes", "cfg.model", int),
            problem_type="multi_label_classification",
        )
    return build_config(fields, "the checkpoint's cfg")


def fit_position_table(table: torch.Tensor, config: SSLAMConfig) -> tuple[torch.Tensor, str | None]:
    """Returns the stored sin-cos table sized for `config.max_time_patches` (updating the config where needed) and a
    note describing any change (None if the table fits as stored).

    A pre-April-2024 EAT checkpoint stores a `(1, 512, D)` table (64 time patches = 1024 frames). If its rows equal the
    first rows of the full table (up to fp16 rounding), it is extended to `config.max_time_patches` rows with computed
    values; the stored rows are kept, so outputs for inputs up to the old length are unchanged. If the layout differs,
    the stored table is kept as it is and `config.max_time_patches` (and `max_length` if needed) is reduced to fit it.
    A table longer than the config says raises `config.max_time_patches` to match.
    """
    freq_patches = config.num_freq_patches
    if table.ndim != 3 or table.shape[0] != 1 or table.shape[2] != config.hidden_size or table.shape[1] % freq_patches:
        raise CheckpointError(
            f"the positional table has shape {tuple(table.shape)}; expected (1, time_patches * {freq_patches}, "
            f"{config.hidden_size})."
        )
    stored_time_patches = table.shape[1] // freq_patches
    if stored_time_patches == config.max_time_patches:
        return table, None
    if stored_time_patches > config.max_time_patches:
        config.max_time_patches = stored_time_patches
        note = f"The stored positional table has {stored_time_patches} time patches; max_time_patches set to match."
        return table, note
    full = build_2d_sincos_position_table(config.hidden_size, config.max_time_patches, freq_patches)
    if torch.allclose(table, full[:, : table.shape[1]], rtol=0.0, atol=POSITION_TABLE_ATOL):
        note = (
            f"The checkpoint stores a positional table for {stored_time_patches} time patches "
            f"({stored_time_patches * config.patch_size} frames, pre-2024 EAT layout). It was extended to "
            f"{config.max_time_patches} time patches with computed sin-cos rows; the stored rows are kept unchanged."
        )
        return torch.cat([table, full[:, table.shape[1] :]], dim=1), note
    config.max_time_patches = stored_time_patches
    config.max_length = min(config.max_length, stored_time_patches * config.patch_size)
    note = (
        f"The checkpoint's positional table ({stored_time_patches} time patches) does not follow the standard sin-cos "
        f"layout, so it is kept unchanged and max_time_patches is {stored_time_patches} (inputs up to "
        f"{stored_time_patches * config.patch_size} frames)."
    )
    return table, note


def _fit_position_tables(weights: "NativeWeights") -> None:
    """Applies `fit_position_table` to the student and teacher tables (same target size for both)."""
    for state in (weights.encoder, weights.teacher):
        if state is not None and POSITIONS_KEY in state:
            state[POSITIONS_KEY], note = fit_position_table(state[POSITIONS_KEY], weights.config)
            if note is not None and note not in weights.notes:
                logger.warning(note)
                weights.notes.append(note)


def fairseq_to_native(checkpoint: dict) -> NativeWeights:
    """Splits a loaded fairseq checkpoint into native weights; unknown keys raise a `CheckpointError` naming them."""
    kind = detect_kind(checkpoint)
    config = config_from_fairseq_cfg(checkpoint, kind)
    state = dict(checkpoint["model"])
    if kind == "classification":
        head, rest = rename_keys({k: v for k, v in state.items() if not k.startswith("model.")}, HEAD_KEY_MAP)
        encoder, unmatched = encoder_state_dict(strip_prefix({k: v for k, v in state.items() if k.startswith("model.")}, "model."))
        unmatched += rest
        labels = (checkpoint.get("task_state") or {}).get("labels") or {}
        mids = [mid for mid, _ in sorted(labels.items(), key=lambda item: int(item[1]))] or None
        weights = NativeWeights(kind, config, encoder, head=to_float32(head), label_mids=mids)
    else:
        ema = state.pop("_ema", None)
        decoder_keys = {k: v for k, v in state.items() if k.startswith(ENCODER_PREFIX + "decoder.")}
        decoder, unmatched = rename_keys(decoder_keys, DECODER_KEY_MAP)
        encoder, more = encoder_state_dict({k: v for k, v in state.items() if k not in decoder_keys})
        unmatched += more
        teacher = None
        if ema is not None:
            teacher, ema_unmatched = encoder_state_dict(ema)
            unmatched += [f"_ema.{key}" for key in ema_unmatched]
        weights = NativeWeights(kind, config, encoder, teacher=teacher, decoder=to_float32(decoder))
    if unmatched:
        raise CheckpointError(f"unknown keys in the checkpoint (no mapping for them): {sorted(unmatched)}")
    _fit_position_tables(weights)
    return weights


def pretraining_state_dict(weights: NativeWeights) -> dict[str, torch.Tensor]:
    """`SSLAMForPreTraining` state dict of converted fairseq weights: student = `encoder`, decoder = `decoder`, teacher
    = `teacher` (a copy of the student when the checkpoint has no `_ema`)."""
    teacher = weights.encoder if weights.teacher is None else weights.teacher
    parts = {"sslam.": weights.encoder, "decoder.": weights.decoder, "teacher.": teacher}
    return {prefix + key: tensor for prefix, part in parts.items() for key, tensor in part.items()}


def pretraining_model_from_native(weights: NativeWeights, **config_overrides) -> SSLAMForPreTraining:
    """`SSLAMForPreTraining` with the student, decoder and teacher of a converted pre-training checkpoint, loaded
    strictly; `config_overrides` set config fields (e.g. `objective="eat"`)."""
    if weights.decoder is None:
        raise CheckpointError(f"a {weights.kind!r} checkpoint has no decoder; a pre-training checkpoint is needed.")
    model = SSLAMForPreTraining(SSLAMConfig(**{**weights.config.to_dict(), **config_overrides}))
    model.load_state_dict(pretraining_state_dict(weights), strict=True)
    return model


__all__ = [
    "DEFAULT_MAX_TIME_PATCHES",
    "HEAD_KEY_MAP",
    "POSITIONS_KEY",
    "DATA_ONLY_GLOBALS",
    "CheckpointError",
    "NativeWeights",
    "build_config",
    "cfg_section",
    "cfg_value",
    "checkpoint_target_length",
    "fit_position_table",
    "config_from_fairseq_cfg",
    "detect_kind",
    "encoder_state_dict",
    "fairseq_to_native",
    "load_checkpoint_safely",
    "pretraining_model_from_native",
    "pretraining_state_dict",
    "rename_keys",
]
