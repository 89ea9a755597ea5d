"""SSLAMConfig, SSLAMModel and SSLAMForAudioClassification as transformers models: presets, save/load round trips,
Auto classes, remote code, the audio-classification pipeline, batching and padding, attention back ends, gradient
checkpointing, bf16, pooling, gradient accumulation and input errors.

The model under test is the fixture's fine-tuned checkpoint, converted in-process once per module.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForPreTraining,
    pipeline,
)

import sslam.modeling_sslam  # noqa: F401  (registers the Auto classes)
from sslam.conversion.convert_fairseq_checkpoint import convert_fairseq_checkpoint
from sslam.modeling_sslam.audio_io import load_audio
from sslam.modeling_sslam.configuration_sslam import SSLAMConfig
from sslam.modeling_sslam.feature_extraction_sslam import SSLAMFeatureExtractor
from sslam.modeling_sslam.modeling_sslam import SSLAMForAudioClassification, SSLAMModel


TOLERANCE = 1e-5  # SPEC "Corrections": inference parity, eager and SDPA alike
GRADIENT_TOLERANCE = 1e-5  # relative to the largest gradient of a tensor
GRADIENT_FLOOR = 1e-7  # relative to the largest gradient of the model
BF16_RELATIVE_TOLERANCE = 5e-2  # bf16 autocast vs float32 logits, relative to the largest logit (measured ~5e-3)
FINETUNED = "sslam_finetuned_tiny.pt"
# SPEC §2.1: parameter counts of the base encoder (without the fixed positional table) and of the 527-class head.
BASE_ENCODER_PARAMETERS = 85_254_144
BASE_AUDIOSET_HEAD_PARAMETERS = 406_799


@pytest.fixture(scope="module")
def classifier_dir(fixtures_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model") / "sslam-tiny-classifier"
    convert_fairseq_checkpoint(fixtures_dir / "checkpoints" / FINETUNED, folder)
    return folder


@pytest.fixture(scope="module")
def classifier(classifier_dir) -> SSLAMForAudioClassification:
    return SSLAMForAudioClassification.from_pretrained(classifier_dir)


@pytest.fixture(scope="module")
def fbank_inputs(fixtures_dir) -> torch.Tensor:
    """All fixture filter banks padded with their pad value to the longest one: `(clips, T, 128)`."""
    arrays = [np.load(path) for path in sorted((fixtures_dir / "inputs").glob("fbank_*.npy"))]
    frames = max(array.shape[0] for array in arrays)
    return torch.stack([torch.from_numpy(np.pad(a, ((0, frames - a.shape[0]), (0, 0)), mode="edge")) for a in arrays])


@pytest.fixture(scope="module")
def waveforms(fixtures_dir) -> list[np.ndarray]:
    """Every fixture clip as 16 kHz mono float32, longest first, plus a shortened copy of the longest one (so the
    batch always needs padding)."""
    clips = sorted((load_audio(path) for path in (fixtures_dir / "audio").glob("*.wav")), key=len, reverse=True)
    return [*clips, clips[0][: len(clips[0]) * 3 // 5]]


def max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    return (actual.float() - expected.float()).abs().max().item()


# --- configuration ----------------------------------------------------------------------------------------------------


def test_default_config_is_the_base_model():
    config = SSLAMConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert config.intermediate_size == 3072 and config.head_dim == 64
    assert config.layer_norm_eps == 1e-6 and config.qkv_bias and config.hidden_act == "gelu"
    assert (config.patch_size, config.num_mel_bins, config.num_channels) == (16, 128, 1)
    assert (config.max_time_patches, config.max_length, config.pooling) == (768, 1024, "cls")
    decoder = (config.decoder_hidden_size, config.decoder_num_layers, config.decoder_kernel_size, config.decoder_groups)
    assert decoder == (768, 6, 3, 16)


def test_base_parameter_count_matches_the_original():
    model = SSLAMForAudioClassification(SSLAMConfig(num_labels=527))
    assert sum(parameter.numel() for parameter in model.sslam.parameters()) == BASE_ENCODER_PARAMETERS
    head = sum(p.numel() for p in model.fc_norm.parameters()) + sum(p.numel() for p in model.classifier.parameters())
    assert head == BASE_AUDIOSET_HEAD_PARAMETERS
    assert not any(name.endswith("position_embeddings") for name, _ in model.named_parameters())


def test_large_preset_shapes():
    config = SSLAMConfig.large()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (1024, 24, 16)
    assert (config.intermediate_size, config.head_dim) == (4096, 64)
    assert (config.decoder_hidden_size, config.decoder_num_layers, config.decoder_kernel_size) == (1024, 3, 5)
    assert SSLAMConfig.large(num_hidden_layers=2).num_attention_heads == 16
    layer = SSLAMModel(SSLAMConfig.large(num_hidden_layers=1))
    shapes = {name: tuple(tensor.shape) for name, tensor in layer.state_dict().items()}
    assert shapes["encoder.layer.0.attention.q_proj.weight"] == (1024, 1024)
    assert shapes["encoder.layer.0.mlp.fc1.weight"] == (4096, 1024)
    assert shapes["embeddings.position_embeddings"] == (1, 768 * 8, 1024)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"hidden_size": 100, "num_attention_heads": 12}, "divisible by num_attention_heads"),
        ({"num_mel_bins": 100}, "multiple of patch_size"),
        ({"hidden_size": 66, "num_attention_heads": 6}, "multiple of 4"),
        ({"mask_prob": 1.5}, "mask_prob"),
        ({"pooling": "max"}, "pooling"),
        ({"layer_norm_eps": -1.0}, "layer_norm_eps must be a positive finite number, got -1.0"),
        ({"layer_norm_eps": float("nan")}, "layer_norm_eps must be a positive finite number, got nan"),
        ({"patch_size": 0}, "patch_size must be a positive integer, got 0"),
        ({"num_attention_heads": 0}, "num_attention_heads must be a positive integer, got 0"),
        ({"hidden_act": "bogus"}, "hidden_act 'bogus' is not an activation transformers knows"),
    ],
)
def test_config_rejects_impossible_settings(fields, message):
    with pytest.raises((ValueError, StrictDataclassError), match=message):
        SSLAMConfig(**fields)


def test_a_saved_config_with_an_unknown_activation_is_refused_on_load(classifier_dir, tmp_path):
    config = json.loads((classifier_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_act": "bogus"}))
    with pytest.raises(StrictDataclassError, match="hidden_act 'bogus' is not an activation"):
        AutoConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("model_class", [SSLAMForAudioClassification, SSLAMModel, AutoModel])
def test_loading_non_finite_weights_warns_naming_the_tensors(classifier_dir, tmp_path, model_class, caplog):
    shutil.copytree(classifier_dir, tmp_path / "model")
    weights = load_file(tmp_path / "model" / "model.safetensors")
    weights["sslam.encoder.layer.0.mlp.fc1.weight"][0, :2] = torch.tensor([float("nan"), float("inf")])
    weights["classifier.bias"][3] = -float("inf")
    save_file(weights, tmp_path / "model" / "model.safetensors", metadata={"format": "pt"})

    with caplog.at_level("WARNING"):
        model_class.from_pretrained(tmp_path / "model")

    expected = ["encoder.layer.0.mlp.fc1.weight (2 of"]
    if model_class is SSLAMForAudioClassification:
        expected.append("classifier.bias (1 of")
    assert f"{len(expected)} weight tensor(s) loaded from {tmp_path / 'model'} hold NaN or inf values" in caplog.text
    assert all(name in caplog.text for name in expected)
    caplog.clear()
    with caplog.at_level("WARNING"):
        model_class.from_pretrained(classifier_dir)
    assert "NaN or inf" not in caplog.text


# --- saving, loading, Auto classes, remote code -----------------------------------------------------------------------


def test_save_and_load_round_trip(classifier, fbank_inputs, tmp_path):
    for model, model_class in ((classifier, SSLAMForAudioClassification), (classifier.sslam, SSLAMModel)):
        model.save_pretrained(tmp_path / model_class.__name__)
        reloaded = model_class.from_pretrained(tmp_path / model_class.__name__)
        original_state, reloaded_state = model.state_dict(), reloaded.state_dict()
        assert sorted(original_state) == sorted(reloaded_state)
        assert all(torch.equal(original_state[key], reloaded_state[key]) for key in original_state)
        ignored = {"transformers_version", "architectures", "_name_or_path"}
        original_config = {k: v for k, v in model.config.to_dict().items() if k not in ignored}
        assert original_config == {k: v for k, v in reloaded.config.to_dict().items() if k not in ignored}
        with torch.no_grad():
            assert torch.equal(model(fbank_inputs[:1])[0], reloaded(fbank_inputs[:1])[0])


def test_auto_classes(classifier_dir, classifier):
    assert isinstance(AutoConfig.from_pretrained(classifier_dir), SSLAMConfig)
    assert isinstance(AutoFeatureExtractor.from_pretrained(classifier_dir), SSLAMFeatureExtractor)
    assert isinstance(AutoModelForAudioClassification.from_pretrained(classifier_dir), SSLAMForAudioClassification)
    encoder = AutoModel.from_pretrained(classifier_dir)
    assert type(encoder) is SSLAMModel
    expected = classifier.sslam.state_dict()
    assert all(torch.equal(tensor, expected[key]) for key, tensor in encoder.state_dict().items())
    tiny = SSLAMConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    assert type(AutoModelForPreTraining.from_config(tiny)).__name__ == "SSLAMForPreTraining"


REMOTE_CODE_SCRIPT = r"""
import importlib.abc, json, sys

class RefuseProjectPackages(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"sslam", "modeling_sslam", "conversion"}:
            raise ImportError(f"the project package {name} must not be used here")
        return None

sys.meta_path.insert(0, RefuseProjectPackages())
import torch
from safetensors.torch import load_file
from transformers import AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification

folder, expected = sys.argv[1], load_file(sys.argv[2])
result = {}
for name, auto_class, key in (("AutoModel", AutoModel, "last_hidden_state"),
                              ("AutoModelForAudioClassification", AutoModelForAudioClassification, "logits")):
    try:
        model = auto_class.from_pretrained(folder, trust_remote_code=True)
        with torch.no_grad():
            output = getattr(model(expected["input_values"]), key)
        result[name] = {"class": type(model).__name__, "module": type(model).__module__,
                        "error": (output - expected[key]).abs().max().item()}
    except Exception as error:
        result[name] = {"exception": f"{type(error).__name__}: {error}"}
extractor = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)
result["AutoFeatureExtractor"] = {"class": type(extractor).__name__, "module": type(extractor).__module__}
print(json.dumps(result))
"""


def test_trust_remote_code_loads_a_copied_folder_without_the_package(
    classifier_dir, classifier, fbank_inputs, tmp_path
):
    folder = shutil.copytree(classifier_dir, tmp_path / "copied-model")
    input_values = fbank_inputs[:1].contiguous()
    with torch.no_grad():
        expected = {
            "input_values": input_values,
            "logits": classifier(input_values).logits,
            "last_hidden_state": classifier.sslam(input_values).last_hidden_state,
        }
    save_file(expected, tmp_path / "expected.safetensors")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env |= {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-I", "-c", REMOTE_CODE_SCRIPT, str(folder), str(tmp_path / "expected.safetensors")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    expected_classes = {"AutoModel": "SSLAMModel", "AutoModelForAudioClassification": "SSLAMForAudioClassification"}
    for name, class_name in expected_classes.items():
        assert "exception" not in result[name], result[name]["exception"]
        assert result[name]["class"] == class_name
        assert result[name]["module"].startswith("transformers_modules.")
        assert result[name]["error"] <= TOLERANCE
    assert result["AutoFeatureExtractor"]["class"] == "SSLAMFeatureExtractor"
    assert result["AutoFeatureExtractor"]["module"].startswith("transformers_modules.")


# --- pipeline ---------------------------------------------------------------------------------------------------------


def pipeline_scores(folder: Path, waveform: np.ndarray) -> dict[str, float]:
    classifier = pipeline("audio-classification", model=str(folder))
    return {item["label"]: item["score"] for item in classifier(waveform, top_k=None)}


def expected_logits(model: SSLAMForAudioClassification, folder: Path, waveform: np.ndarray) -> torch.Tensor:
    extractor = SSLAMFeatureExtractor.from_pretrained(folder)
    inputs = extractor(waveform, sampling_rate=extractor.sampling_rate, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits[0]


def test_pipeline_gives_sigmoid_scores_for_multi_label(classifier_dir, classifier, fixtures_dir):
    waveform = load_audio(fixtures_dir / "audio" / "input_ref.wav")  # the original repo's real test clip
    scores = pipeline_scores(classifier_dir, waveform)
    probabilities = torch.sigmoid(expected_logits(classifier, classifier_dir, waveform))
    id2label = classifier.config.id2label
    assert set(scores) == set(id2label.values())
    assert max(abs(scores[id2label[index]] - probabilities[index].item()) for index in id2label) <= TOLERANCE
    assert abs(sum(scores.values()) - 1.0) > 0.1


def test_pipeline_gives_softmax_scores_for_single_label(classifier_dir, classifier, fixtures_dir, tmp_path):
    single = SSLAMForAudioClassification.from_pretrained(classifier_dir, problem_type="single_label_classification")
    single.save_pretrained(tmp_path / "single")
    SSLAMFeatureExtractor.from_pretrained(classifier_dir).save_pretrained(tmp_path / "single")
    waveform = load_audio(fixtures_dir / "audio" / "input_ref.wav")
    scores = pipeline_scores(tmp_path / "single", waveform)
    probabilities = torch.softmax(expected_logits(single, classifier_dir, waveform), dim=-1)
    id2label = single.config.id2label
    assert max(abs(scores[id2label[index]] - probabilities[index].item()) for index in id2label) <= TOLERANCE
    assert abs(sum(scores.values()) - 1.0) <= TOLERANCE


# --- batching, padding, attention back ends ---------------------------------------------------------------------------


def test_batch_matches_single_clips(classifier, fbank_inputs):
    with torch.no_grad():
        batch = classifier(fbank_inputs, output_hidden_states=True)
        for index in range(fbank_inputs.shape[0]):
            single = classifier(fbank_inputs[index : index + 1], output_hidden_states=True)
            assert max_error(batch.logits[index], single.logits[0]) <= TOLERANCE
            assert max_error(batch.hidden_states[-1][index], single.hidden_states[-1][0]) <= TOLERANCE


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padded_batch_matches_unpadded_clips(classifier_dir, waveforms, pooling):
    """Own-length features of clips of different lengths, padded into one batch with an attention mask."""
    model = SSLAMForAudioClassification.from_pretrained(classifier_dir, pooling=pooling)
    extractor = SSLAMFeatureExtractor.from_pretrained(classifier_dir)
    batch = extractor(waveforms, sampling_rate=extractor.sampling_rate, target_length=None, return_tensors="pt")
    with torch.no_grad():
        padded = model(**batch, output_hidden_states=True)
        for index, waveform in enumerate(waveforms):
            alone = extractor(waveform, sampling_rate=extractor.sampling_rate, target_length=None, return_tensors="pt")
            single = model(alone["input_values"], output_hidden_states=True)
            tokens = single.hidden_states[-1].shape[1]
            assert max_error(padded.hidden_states[-1][index, :tokens], single.hidden_states[-1][0]) <= TOLERANCE
            assert max_error(padded.logits[index], single.logits[0]) <= TOLERANCE


def test_eager_and_sdpa_agree(classifier_dir, waveforms):
    extractor = SSLAMFeatureExtractor.from_pretrained(classifier_dir)
    batch = extractor(waveforms, sampling_rate=extractor.sampling_rate, target_length=None, return_tensors="pt")
    outputs = {}
    for implementation in ("eager", "sdpa"):
        model = SSLAMForAudioClassification.from_pretrained(classifier_dir, attn_implementation=implementation)
        assert model.config._attn_implementation == implementation
        with torch.no_grad():
            masked = model(**batch, output_hidden_states=True)
            unmasked = model(batch["input_values"])
        outputs[implementation] = (masked.hidden_states[-1], masked.logits, unmasked.logits)
    for eager, sdpa in zip(outputs["eager"], outputs["sdpa"]):
        assert max_error(eager, sdpa) <= TOLERANCE


def test_mean_pooling_averages_the_patch_tokens(classifier_dir, fbank_inputs):
    model = SSLAMForAudioClassification.from_pretrained(classifier_dir, pooling="mean")
    with torch.no_grad():
        outputs = model(fbank_inputs, output_hidden_states=True)
        pooled = outputs.hidden_states[-1][:, 1:].mean(dim=1)
        assert max_error(outputs.logits, model.classifier(model.fc_norm(pooled))) <= TOLERANCE


# --- training behaviour -----------------------------------------------------------------------------------------------


def gradients(model, input_values, labels) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model(input_values, labels=labels).loss.backward()
    return {name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None}


def assert_same_gradients(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]):
    """Per tensor, relative to its largest gradient, with a floor for tensors whose gradient is zero in exact
    arithmetic (e.g. the key bias, which softmax ignores) and holds only rounding noise."""
    assert sorted(actual) == sorted(expected) and expected
    floor = GRADIENT_FLOOR * max(gradient.abs().max().item() for gradient in expected.values())
    for name, gradient in expected.items():
        assert max_error(actual[name], gradient) <= GRADIENT_TOLERANCE * gradient.abs().max().item() + floor, name


def multi_hot(num_clips: int, num_labels: int, seed: int = 0) -> torch.Tensor:
    return (torch.rand(num_clips, num_labels, generator=torch.Generator().manual_seed(seed)) < 0.1).float()


def test_gradient_checkpointing_gives_the_same_gradients(classifier_dir, fbank_inputs):
    model = SSLAMForAudioClassification.from_pretrained(classifier_dir, drop_path_rate=0.0).train()
    labels = multi_hot(fbank_inputs.shape[0], model.config.num_labels)
    expected = gradients(model, fbank_inputs, labels)
    calls = []
    model.sslam.encoder.layer[0].mlp.register_forward_hook(lambda *args: calls.append(1))
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    checkpointed = gradients(model, fbank_inputs, labels)
    assert len(calls) == 2, "the checkpointed layer should run again during the backward pass"
    assert_same_gradients(checkpointed, expected)


def test_bf16_autocast_is_close_to_float32(classifier, fbank_inputs):
    with torch.no_grad():
        reference = classifier(fbank_inputs).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = classifier(fbank_inputs).logits
    assert torch.isfinite(logits).all()
    assert max_error(logits, reference) <= BF16_RELATIVE_TOLERANCE * reference.abs().max().item()


def test_loss_is_the_original_fine_tuning_recipe(classifier_dir):
    """`model(x, labels=y).loss` is the loss the fine-tuning trainer optimises: BCE summed over the batch and divided
    by its label mass (multi-label), cross-entropy with the config's label smoothing (hard labels, -100 ignored) or
    soft cross-entropy (mixup targets); per batch, so the Trainer averages it over accumulation micro-batches."""
    generator = torch.Generator().manual_seed(0)
    multi = SSLAMForAudioClassification.from_pretrained(classifier_dir).eval()
    assert multi.accepts_loss_kwargs is False
    input_values = torch.randn(4, 2 * multi.config.patch_size, multi.config.num_mel_bins, generator=generator)
    labels = multi_hot(4, multi.config.num_labels)
    with torch.no_grad():
        output = multi(input_values, labels=labels)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(output.logits, labels, reduction="sum")
    assert output.loss.item() == pytest.approx((expected / labels.sum()).item(), rel=1e-6)

    single = SSLAMForAudioClassification.from_pretrained(
        classifier_dir, problem_type="single_label_classification", label_smoothing=0.1
    ).eval()
    hard = torch.randint(0, single.config.num_labels, (4,), generator=generator)
    hard[1] = -100
    with torch.no_grad():
        output = single(input_values, labels=hard)
        soft = single(input_values, labels=torch.eye(single.config.num_labels)[hard.clamp(min=0)]).loss
    smoothed = torch.nn.functional.cross_entropy(output.logits, hard, ignore_index=-100, label_smoothing=0.1)
    assert output.loss.item() == pytest.approx(smoothed.item(), rel=1e-6)
    one_hot = torch.eye(single.config.num_labels)[hard.clamp(min=0)]
    unsmoothed = torch.nn.functional.cross_entropy(output.logits, one_hot)
    assert soft.item() == pytest.approx(unsmoothed.item(), rel=1e-6)


# --- input errors -----------------------------------------------------------------------------------------------------


def test_input_errors_are_explained(classifier):
    config = classifier.config
    with pytest.raises(ValueError, match="mel bins"):
        classifier(torch.zeros(1, config.patch_size, config.num_mel_bins // 2))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        classifier(torch.zeros(1, config.patch_size + 1, config.num_mel_bins))
    with pytest.raises(ValueError, match="exceed the position table"):
        classifier(torch.zeros(1, (config.max_time_patches + 1) * config.patch_size, config.num_mel_bins))
    with pytest.raises(ValueError, match="input_values must be"):
        classifier(torch.zeros(config.num_mel_bins))
