"""Deployment exports (`sslam.conversion.deployment`, `sslam export`): the waveform -> logits ONNX graph with the
filter bank inside classifies bundled clips in onnxruntime like the eager model, at two input lengths; the encoder
graph with own-length features; int8 quantisation; torch.export on features with a dynamic time axis; clear errors.
Tiny models with random weights (the graphs are what is tested, not the weights).
"""

import json

import numpy as np
import pytest
import torch

import sslam.demo_data as demo_data
from sslam.cli.main import main as sslam_main
from sslam.conversion.deployment import (
    ExportError,
    WaveformFrontEnd,
    eager_outputs,
    export_model,
    load_saved_model,
    onnx_session,
    quantize_onnx_int8,
)
from sslam.modeling_sslam.audio_io import load_audio
from sslam.modeling_sslam.configuration_sslam import SSLAMConfig
from sslam.modeling_sslam.feature_extraction_sslam import SSLAMFeatureExtractor, is_torchaudio_available
from sslam.modeling_sslam.modeling_sslam import SSLAMForAudioClassification, SSLAMModel


TOLERANCE = 1e-4  # onnxruntime vs eager fp32


def tiny_config(**overrides) -> SSLAMConfig:
    names = demo_data.class_names("events")
    fields = dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, max_time_patches=64,
        num_labels=len(names), id2label=dict(enumerate(names)), label2id={name: i for i, name in enumerate(names)},
    )  # fmt: skip
    return SSLAMConfig(**{**fields, **overrides})


def save_model(folder, model_class, **extractor_arguments):
    torch.manual_seed(0)
    model_class(tiny_config()).save_pretrained(folder)
    SSLAMFeatureExtractor(**extractor_arguments).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """A tiny events classifier with the default (10 s, 1024-frame) extractor."""
    return save_model(tmp_path_factory.mktemp("classifier"), SSLAMForAudioClassification)


@pytest.fixture(scope="module")
def onnx_dir(classifier_dir, tmp_path_factory):
    """`sslam export --format onnx` of the classifier."""
    output = tmp_path_factory.mktemp("onnx")
    sslam_main(["export", "--model", str(classifier_dir), "--format", "onnx", "--output", str(output)])
    return output


@pytest.fixture(scope="module")
def encoder_onnx(tmp_path_factory):
    """The ONNX graph of a tiny encoder whose extractor keeps each clip's own length (max_length None)."""
    folder = save_model(tmp_path_factory.mktemp("encoder"), SSLAMModel, max_length=None)
    output = tmp_path_factory.mktemp("encoder-onnx")
    summary = export_model(folder, output, "onnx")
    return folder, output, summary


def bundled_clips() -> dict[str, np.ndarray]:
    """The 10 s example recording and a 1-2 s sound event: two input lengths."""
    event = demo_data.read_manifest("events", "test")[0]
    return {"example-10s": load_audio(demo_data.EXAMPLE_CLIP), "event": demo_data.read_clip("events", event["path"])}


def test_onnx_folder_holds_model_config_and_labels(onnx_dir, classifier_dir, capsys):
    assert {path.name for path in onnx_dir.iterdir()} == {
        "model.onnx", "config.json", "labels.json", "preprocessor_config.json"
    }  # fmt: skip
    labels = json.loads((onnx_dir / "labels.json").read_text())
    assert labels == demo_data.class_names("events")
    config = json.loads((onnx_dir / "config.json").read_text())
    assert [config["id2label"][str(index)] for index in range(len(labels))] == labels
    session = onnx_session(onnx_dir / "model.onnx")
    (graph_input,) = session.get_inputs()
    assert graph_input.name == "waveform" and graph_input.type == "tensor(float)"
    assert all(isinstance(dim, str) for dim in graph_input.shape)  # dynamic batch and samples
    assert [output.name for output in session.get_outputs()] == ["logits"]


@pytest.mark.parametrize("clip", ["example-10s", "event"])
def test_onnx_classifies_bundled_clips_like_eager(onnx_dir, classifier_dir, clip):
    waveform = bundled_clips()[clip][None].astype(np.float32)
    (logits,) = onnx_session(onnx_dir / "model.onnx").run(None, {"waveform": waveform})
    (expected,) = eager_outputs(load_saved_model(classifier_dir), waveform)
    assert logits.shape == expected.shape == (1, len(demo_data.class_names("events")))
    assert np.abs(logits - expected).max() <= TOLERANCE
    labels = json.loads((onnx_dir / "labels.json").read_text())
    top5 = [labels[index] for index in np.argsort(-logits[0])[:5]]
    assert top5 == [labels[index] for index in np.argsort(-expected[0])[:5]]


def test_onnx_batch_matches_single_clips(onnx_dir):
    session = onnx_session(onnx_dir / "model.onnx")
    clips = np.stack([bundled_clips()["example-10s"][start : start + 24_000] for start in (0, 50_000, 90_000)])
    (batched,) = session.run(None, {"waveform": clips})
    for row, clip in zip(batched, clips):
        np.testing.assert_allclose(row, session.run(None, {"waveform": clip[None]})[0][0], rtol=0, atol=1e-5)


def test_encoder_onnx_keeps_own_lengths(encoder_onnx):
    folder, output, summary = encoder_onnx
    assert max(summary["errors"].values()) <= TOLERANCE  # checked by the export at two lengths
    session = onnx_session(output / "model.onnx")
    assert [item.name for item in session.get_outputs()] == ["last_hidden_state", "pooler_output"]
    loaded = load_saved_model(folder)
    for seconds in (0.5, 2.3):
        waveform = bundled_clips()["example-10s"][None, : int(seconds * 16000)]
        hidden, pooled = session.run(None, {"waveform": waveform})
        frames = -(-(1 + (waveform.shape[1] - 400) // 160) // 16) * 16
        assert hidden.shape == (1, 1 + frames // 16 * 8, 64)
        expected_hidden, expected_pooled = eager_outputs(loaded, waveform)
        assert np.abs(hidden - expected_hidden).max() <= TOLERANCE
        assert np.abs(pooled - expected_pooled).max() <= TOLERANCE
    assert not (output / "labels.json").exists()


@pytest.mark.parametrize("max_length", [1024, 64, None])
@pytest.mark.parametrize("backend", ["torch", "torchaudio"])
def test_front_end_matches_the_feature_extractor(max_length, backend):
    if backend == "torchaudio" and not is_torchaudio_available():
        pytest.skip("needs torchaudio")
    extractor = SSLAMFeatureExtractor(max_length=max_length, fbank_backend=backend)
    waveform = bundled_clips()["example-10s"][None, :37_000]
    expected = extractor(waveform[0], sampling_rate=16000, return_tensors="pt")["input_values"]
    with torch.no_grad():
        actual = WaveformFrontEnd(extractor)(torch.from_numpy(waveform))
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_int8_quantises_the_encoder_only(onnx_dir, tmp_path):
    import onnx

    target = quantize_onnx_int8(onnx_dir / "model.onnx", tmp_path / "int8.onnx")
    nodes = onnx.load(str(target)).graph.node
    assert sum(node.op_type == "MatMulInteger" for node in nodes) >= 2 * 6  # q, k, v, o, fc1, fc2 of both blocks
    float_products = [node for node in nodes if node.op_type == "MatMul"]
    assert any("mel_band" in name for node in float_products for name in node.input)  # the front end stays fp32
    waveform = bundled_clips()["example-10s"][None]
    (fp32,) = onnx_session(onnx_dir / "model.onnx").run(None, {"waveform": waveform})
    (int8,) = onnx_session(target).run(None, {"waveform": waveform})
    cosine = float((fp32 * int8).sum() / np.linalg.norm(fp32) / np.linalg.norm(int8))
    assert 0 < np.abs(int8 - fp32).max() and cosine > 0.99


@pytest.mark.parametrize("model_class", [SSLAMForAudioClassification, SSLAMModel], ids=lambda cls: cls.__name__)
def test_torch_export_has_a_dynamic_time_axis(model_class, tmp_path):
    folder = save_model(tmp_path / "model", model_class)
    sslam_main(["export", "--model", str(folder), "--format", "torch-export", "--output", str(tmp_path / "out")])
    program = torch.export.load(str(tmp_path / "out" / "model.pt2")).module()
    model = model_class.from_pretrained(folder).eval()
    for batch, frames in ((1, 16), (3, 160), (2, 1024)):
        x = torch.randn(batch, frames, 128, generator=torch.Generator().manual_seed(frames))
        mask = torch.ones(batch, frames, dtype=torch.int64)
        mask[-1, frames // 2 :] = 0
        with torch.no_grad():
            torch.testing.assert_close(program(x, attention_mask=mask)[0], model(x, attention_mask=mask)[0],
                                       atol=1e-5, rtol=1e-5)  # fmt: skip
    with pytest.raises(Exception, match="16"):  # the program keeps the guard on the patch size
        program(torch.randn(1, 24, 128), attention_mask=torch.ones(1, 24, dtype=torch.int64))


# --- errors -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--format", "tflite"], "invalid choice: 'tflite'"),
        (["--format", "onnx", "--opset", "23"], "invalid choice: 23"),
        (["--format", "torch-export", "--opset", "20"], "--opset applies to the ONNX formats only"),
    ],
    ids=["format", "opset", "opset-torch-export"],
)
def test_unsupported_options_are_usage_errors(classifier_dir, tmp_path, capsys, arguments, message):
    with pytest.raises(SystemExit) as exit_info:
        sslam_main(["export", "--model", str(classifier_dir), "--output", str(tmp_path), *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_folders_that_hold_no_sslam_model_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sslam_main(["export", "--model", str(tmp_path / "missing"), "--format", "onnx", "--output", str(tmp_path)])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'missing'} is not a saved model folder")
    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ExportError, match="holds a 'vit' model, not an SSLAM model"):
        export_model(tmp_path / "vit", tmp_path / "out", "onnx")
    with pytest.raises(ExportError, match="opset 30 is not supported; use 18-22"):
        export_model(save_model(tmp_path / "tiny", SSLAMModel), tmp_path / "out", "onnx", opset=30)
