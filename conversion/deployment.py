# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""Deployment exports of saved SSLAM models: ONNX graphs from the 16 kHz waveform to the model's main output (the
feature extractor's torch filter bank inside the graph, so a deployment needs no Python audio code), int8 dynamic
quantisation with onnxruntime, and `torch.export` programs with a dynamic batch and time axis.

    from sslam.conversion.deployment import export_model
    export_model("converted/sslam-as2m", "deploy/onnx", "onnx")        # deploy/onnx/model.onnx + config + labels

The ONNX graph has one input, `waveform` `(batch, samples)` float32 mono 16 kHz in [-1, 1] (the clips of one batch
share their length), and the output `logits` (a classifier) or `last_hidden_state` and `pooler_output` (an
encoder). Its front end is `SSLAMFeatureExtractor`'s recipe with the folder's settings (its `max_length`: pad or cut
to that many frames; none: the clip's own frames rounded up to a patch), in the torch filter bank's operations
(`torch.fft.rfft` exports as the ONNX `DFT` op): so the graph gives what `extractor(clip, return_tensors="pt")` and
the model give, to float32 rounding.
"""

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.fx.experimental._config as fx_config
from torch import nn
from torch.export import Dim
from transformers import AutoConfig

import sslam.modeling_sslam  # noqa: F401  (registers the Auto classes)
from sslam.modeling_sslam.feature_extraction_sslam import (
    SSLAMFeatureExtractor,
    kaldi_fbank,
    mel_filter_bands,
    normalize_fbank,
)
from sslam.modeling_sslam.modeling_sslam import SSLAMForAudioClassification, SSLAMModel


logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("onnx", "onnx-int8", "torch-export")
ONNX_FILE, TORCH_EXPORT_FILE, LABELS_FILE = "model.onnx", "model.pt2", "labels.json"
# Opsets whose ops onnxruntime 1.32 runs for this graph. 20 is the exporter's default; from 23 on SDPA becomes the
# ONNX Attention op, which onnxruntime's CPU kernel rejects with a padding mask.
SUPPORTED_OPSETS = range(18, 23)
ONNX_TOLERANCE = 1e-4  # onnxruntime vs eager fp32, main output, checked after every fp32 export
MAX_BATCH = 1024


class ExportError(RuntimeError):
    """A model cannot be exported as asked (unsupported option, failed export or failed parity check)."""


class WaveformFrontEnd(nn.Module):
    """`SSLAMFeatureExtractor`'s recipe as torch operations, for export: `(B, samples)` float32 16 kHz clips of equal
    length -> `(B, frames, mel_bins)` model input.

    Per clip: remove the waveform mean, Kaldi filter bank ([`kaldi_fbank`]), pad with `padding_value` rows or cut to
    `max_length` frames (None: pad to a multiple of `patch_size`), normalise. Padding and cutting are a concatenation
    and a slice of constant length, so no shape depends on data.
    """

    def __init__(self, feature_extractor: SSLAMFeatureExtractor):
        super().__init__()
        extractor = feature_extractor
        self.frame_length, self.frame_shift, self.fft_length = (
            extractor.frame_length, extractor.frame_shift, extractor.fft_length,
        )  # fmt: skip
        self.num_mel_bins, self.patch_size = extractor.num_mel_bins, extractor.patch_size
        self.max_length = extractor.max_length
        self.padding_value, self.mean, self.std = float(extractor.padding_value), extractor.mean, extractor.std
        self.do_normalize = extractor.do_normalize
        self.register_buffer("window", extractor.window.clone(), persistent=False)
        bands = mel_filter_bands(extractor.mel_filters)
        self.band_bins = [(low, high) for low, high, _ in bands]
        for index, (_, _, weights) in enumerate(bands):
            self.register_buffer(f"mel_band_{index}", weights, persistent=False)

    def mel_bands(self) -> tuple:
        return tuple((low, high, getattr(self, f"mel_band_{i}")) for i, (low, high) in enumerate(self.band_bins))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        waveform = waveform - waveform.mean(dim=-1, keepdim=True)
        if self.max_length is not None:  # frames past max_length are never used: do not compute them
            waveform = waveform[:, : self.frame_length + self.frame_shift * (self.max_length - 1)]
        fbank = kaldi_fbank(waveform, self.window, self.mel_bands(), self.fft_length, self.frame_shift)
        if self.max_length is None:
            length = (fbank.shape[1] + self.patch_size - 1) // self.patch_size * self.patch_size
            extra = self.patch_size - 1
        else:
            length, extra = self.max_length, self.max_length
        padding = fbank.new_full((fbank.shape[0], extra, self.num_mel_bins), self.padding_value)
        fbank = torch.cat([fbank, padding], dim=1)[:, :length]
        return normalize_fbank(fbank, self.mean, self.std) if self.do_normalize else fbank


class WaveformModel(nn.Module):
    """Front end + model: `(B, samples)` waveform -> `logits` (classifier) or `(last_hidden_state, pooler_output)`."""

    def __init__(self, model: SSLAMModel | SSLAMForAudioClassification, feature_extractor: SSLAMFeatureExtractor):
        super().__init__()
        self.front_end = WaveformFrontEnd(feature_extractor)
        self.model = model

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(self.front_end(waveform), return_dict=True)
        if isinstance(self.model, SSLAMForAudioClassification):
            return (outputs.logits,)
        return outputs.last_hidden_state, outputs.pooler_output


def output_names(model: nn.Module) -> list[str]:
    """Names of the exported graph's outputs: the main output first."""
    if isinstance(model, SSLAMForAudioClassification):
        return ["logits"]
    return ["last_hidden_state", "pooler_output"]


def sample_range(model: nn.Module, front_end: WaveformFrontEnd) -> tuple[int, int]:
    """Fewest and most samples the exported graph takes: one frame, and (without a fixed `max_length`) as many as
    fill the position table."""
    if front_end.max_length is not None:
        return front_end.frame_length, 2**31 - 1
    frames = model.config.max_time_patches * model.config.patch_size
    return front_end.frame_length, front_end.frame_length + front_end.frame_shift * (frames - 1)


@dataclass
class LoadedModel:
    """A saved folder's model (eval mode) and feature extractor."""

    model: SSLAMModel | SSLAMForAudioClassification
    feature_extractor: SSLAMFeatureExtractor

    @property
    def label_names(self) -> list[str] | None:
        if not isinstance(self.model, SSLAMForAudioClassification):
            return None
        return [self.model.config.id2label[index] for index in range(self.model.config.num_labels)]


def load_saved_model(folder: str | Path) -> LoadedModel:
    """The classifier (if the folder's `architectures` name one) or the encoder of a saved SSLAM folder."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ExportError(f"{folder} is not a saved model folder (no config.json).")
    config = AutoConfig.from_pretrained(folder)
    if config.model_type != "sslam":
        raise ExportError(f"{folder} holds a {config.model_type!r} model, not an SSLAM model.")
    architectures = config.architectures or []
    classifier = any(name.endswith("ForAudioClassification") for name in architectures)
    model_class = SSLAMForAudioClassification if classifier else SSLAMModel
    model = model_class.from_pretrained(folder).eval()
    if (folder / "preprocessor_config.json").is_file():
        extractor = SSLAMFeatureExtractor.from_pretrained(folder)
    else:
        logger.warning(f"{folder} has no preprocessor_config.json; exporting with the default feature extractor.")
        extractor = SSLAMFeatureExtractor()
    return LoadedModel(model, extractor)


def export_onnx(
    loaded: LoadedModel, path: str | Path, opset: int | None = None, example_seconds: float = 2.0
) -> Path:
    """Writes the waveform -> main-output ONNX graph (one file) to `path`, with a dynamic batch and sample axis."""
    if opset is not None and opset not in SUPPORTED_OPSETS:
        raise ExportError(
            f"opset {opset} is not supported; use {SUPPORTED_OPSETS.start}-{SUPPORTED_OPSETS.stop - 1} (default 20)."
        )
    wrapper = WaveformModel(loaded.model, loaded.feature_extractor).eval()
    low, high = sample_range(loaded.model, wrapper.front_end)
    example = example_waveform(2, max(low, int(example_seconds * loaded.feature_extractor.sampling_rate)))
    shapes = {"waveform": {0: Dim("batch", min=1, max=MAX_BATCH), 1: Dim("samples", min=low, max=high)}}
    path = Path(path)
    with torch.no_grad(), fx_config.patch(backed_size_oblivious=True):
        program = torch.onnx.export(
            wrapper, (example,), dynamo=True, dynamic_shapes=shapes, input_names=["waveform"],
            output_names=output_names(loaded.model), opset_version=opset, external_data=False, verbose=False,
        )  # fmt: skip
    program.save(str(path))
    return path


def quantize_onnx_int8(source: str | Path, target: str | Path) -> Path:
    """Dynamic int8 quantisation (onnxruntime, per-channel int8 weights) of the encoder's weight matrix products;
    the front end (its mel-filter products) and the attention products between activations stay float32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source)).graph
    weights = {initializer.name: initializer.dims for initializer in graph.initializer}
    front_end = [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and any(name.startswith("front_end.") for name in node.input if name in weights)
    ]
    quantize_dynamic(
        str(source), str(target), op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
        weight_type=QuantType.QInt8, nodes_to_exclude=front_end,
    )  # fmt: skip
    return Path(target)


def export_torch_program(loaded: LoadedModel, path: str | Path) -> Path:
    """`torch.export` of the model on features: inputs `input_values` `(B, T, mel_bins)` and a frame-level
    `attention_mask` `(B, T)`, T any multiple of the patch size up to the position table. Saved with
    `torch.export.save`; run `torch.export.load(path).module()(input_values, attention_mask=mask)`."""
    config = loaded.model.config
    batch = Dim("batch", min=1, max=MAX_BATCH)
    rows = Dim("rows", min=1, max=config.max_time_patches)
    frames = config.patch_size * rows
    shapes = {"input_values": {0: batch, 1: frames}, "attention_mask": {0: batch, 1: frames}}
    example = torch.randn(2, 2 * config.patch_size, config.num_mel_bins, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(example.shape[:2], dtype=torch.int64)
    with torch.no_grad(), fx_config.patch(backed_size_oblivious=True):  # keeps one patch row (16 frames) legal
        program = torch.export.export(loaded.model, (example,), {"attention_mask": mask}, dynamic_shapes=shapes)
    torch.export.save(program, str(path))
    return Path(path)


def example_waveform(batch: int, num_samples: int, seed: int = 0) -> torch.Tensor:
    """Seeded coloured noise with a tone, `(batch, num_samples)` float32 in [-0.5, 0.5]."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, num_samples, generator=generator).cumsum(dim=-1)
    noise = noise - noise.mean(dim=-1, keepdim=True)
    tone = torch.sin(torch.arange(num_samples) * 2 * torch.pi * 440 / 16000)
    mixed = noise / noise.abs().amax(dim=-1, keepdim=True) + tone
    return (0.5 * mixed / mixed.abs().amax(dim=-1, keepdim=True)).float()


def eager_outputs(loaded: LoadedModel, waveform: np.ndarray) -> list[np.ndarray]:
    """What the eager pipeline gives for a `(B, samples)` batch: the extractor, then the model (main output first)."""
    extractor = loaded.feature_extractor
    features = extractor(list(waveform), sampling_rate=extractor.sampling_rate, return_tensors="pt")
    with torch.no_grad():
        outputs = loaded.model(features["input_values"], return_dict=True)
    if isinstance(loaded.model, SSLAMForAudioClassification):
        return [outputs.logits.numpy()]
    return [outputs.last_hidden_state.numpy(), outputs.pooler_output.numpy()]


def onnx_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session of an exported graph."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_errors(loaded: LoadedModel, path: str | Path, lengths_seconds=(1.0, 3.7)) -> dict[str, float]:
    """Max abs difference between onnxruntime and eager fp32 of each output, over two clip lengths (batch of 2)."""
    session = onnx_session(path)
    names = [output.name for output in session.get_outputs()]
    errors = dict.fromkeys(names, 0.0)
    for seconds in lengths_seconds:
        waveform = example_waveform(2, int(seconds * loaded.feature_extractor.sampling_rate), seed=1).numpy()
        actual = session.run(None, {"waveform": waveform})
        for name, onnx_output, eager_output in zip(names, actual, eager_outputs(loaded, waveform)):
            errors[name] = max(errors[name], float(np.abs(onnx_output - eager_output).max()))
    return errors


def write_metadata(loaded: LoadedModel, output: Path) -> None:
    """config.json, preprocessor_config.json and (classifiers) labels.json, the label names in output order."""
    loaded.model.config.to_json_file(output / "config.json")
    loaded.feature_extractor.to_json_file(output / "preprocessor_config.json")
    if loaded.label_names is not None:
        (output / LABELS_FILE).write_text(json.dumps(loaded.label_names, indent=1, ensure_ascii=False) + "\n")


def export_model(
    model_dir: str | Path, output: str | Path, export_format: str, opset: int | None = None, verify: bool = True
) -> dict:
    """Exports a saved SSLAM folder to `output` in `export_format` (see `EXPORT_FORMATS`).

    Returns:
        a summary: the written files, and for ONNX the max abs error vs eager fp32 per output (`errors`; int8:
        the quantisation's change).
    """
    if export_format not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {export_format!r}; choose one of {', '.join(EXPORT_FORMATS)}.")
    if opset is not None and export_format == "torch-export":
        raise ExportError("--opset applies to ONNX formats only, not to torch-export.")
    loaded = load_saved_model(model_dir)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    summary = {"format": export_format, "model": type(loaded.model).__name__}
    if export_format == "torch-export":
        summary["files"] = [str(export_torch_program(loaded, output / TORCH_EXPORT_FILE))]
    else:
        with tempfile.TemporaryDirectory() as scratch:
            fp32 = export_onnx(loaded, Path(scratch) / ONNX_FILE, opset)
            if verify:
                errors = onnx_errors(loaded, fp32)
                if max(errors.values()) > ONNX_TOLERANCE:
                    raise ExportError(f"onnxruntime differs from eager by {errors} (tolerance {ONNX_TOLERANCE}).")
                summary["errors"] = errors
            if export_format == "onnx-int8":
                quantize_onnx_int8(fp32, output / ONNX_FILE)
                if verify:
                    summary["int8_change"] = onnx_errors(loaded, output / ONNX_FILE)
            else:
                shutil.copyfile(fp32, output / ONNX_FILE)
        summary["files"] = [str(output / ONNX_FILE)]
    write_metadata(loaded, output)
    summary["files"] += sorted(str(path) for path in output.iterdir() if path.name.endswith(".json"))
    return summary


__all__ = [
    "EXPORT_FORMATS",
    "ExportError",
    "LoadedModel",
    "WaveformFrontEnd",
    "WaveformModel",
    "export_model",
    "export_onnx",
    "export_torch_program",
    "load_saved_model",
    "onnx_errors",
    "onnx_session",
    "quantize_onnx_int8",
]
