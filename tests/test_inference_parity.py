"""Converting the fixture fairseq checkpoints with the CLI reproduces the original model's outputs.

The two tiny checkpoints are converted once per session with `python -m sslam.conversion.convert_fairseq_checkpoint` and
loaded through the Auto classes; every hidden state, the last hidden state, the CLS feature and the logits must match
the outputs of the original code (`inference/*.safetensors`) within 1e-5 for eager and SDPA attention.
"""

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModel, AutoModelForAudioClassification

import sslam.modeling_sslam  # noqa: F401  (registers the Auto classes)
from sslam.conversion.convert_fairseq_checkpoint import main as convert_main
from sslam.modeling_sslam.modeling_sslam import SSLAMForAudioClassification, SSLAMModel


REPO_ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5  # SPEC "Corrections": inference parity for eager and SDPA
FC_NORM_EPS = 1e-6  # SPEC corrections 7: fc_norm eps is always 1e-6 in the original
ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa")
CHECKPOINTS = {"pretrain": "sslam_pretrain_tiny.pt", "finetune": "sslam_finetuned_tiny.pt"}


@pytest.fixture(scope="session")
def converted_dirs(fixtures_dir, tmp_path_factory) -> dict[str, Path]:
    """Both fixture checkpoints converted with the CLI (run side by side), keyed "pretrain" / "finetune"."""
    root = tmp_path_factory.mktemp("converted")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "sslam.conversion.convert_fairseq_checkpoint", "--checkpoint_path",
             str(fixtures_dir / "checkpoints" / file_name), "--pytorch_dump_folder_path", str(root / name)],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for name, file_name in CHECKPOINTS.items()
    }
    for name, process in processes.items():
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, f"converting {name} failed:\n{output}"
    return {name: root / name for name in CHECKPOINTS}


def fixture_inputs(fixtures_dir: Path) -> dict[str, torch.Tensor]:
    """Model inputs `(1, T, 128)` of every fixture clip, keyed by clip name."""
    paths = sorted((fixtures_dir / "inputs").glob("fbank_*.npy"))
    assert paths, "the fixtures hold no inputs/fbank_*.npy"
    return {path.stem.removeprefix("fbank_"): torch.from_numpy(np.load(path))[None] for path in paths}


def reference(fixtures_dir: Path, kind: str, clip: str) -> dict[str, torch.Tensor]:
    return load_file(fixtures_dir / "inference" / f"infer_{kind}_{clip}.safetensors")


def stored_checkpoint(fixtures_dir: Path, kind: str) -> dict:
    return torch.load(fixtures_dir / "checkpoints" / CHECKPOINTS[kind], map_location="cpu", weights_only=True)


def max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    return (actual - expected).abs().max().item()


@torch.no_grad()
def assert_encoder_matches(encoder: SSLAMModel, input_values: torch.Tensor, expected: dict[str, torch.Tensor]):
    outputs = encoder(input_values, output_hidden_states=True, output_ffn_outputs=True)
    ffn_outputs = outputs.ffn_outputs
    errors = {
        "hidden_states": max_error(torch.stack(outputs.hidden_states)[:, 0], expected["hidden_states"]),
        "last_hidden_state": max_error(outputs.last_hidden_state[0], expected["last_hidden_state"]),
        "utterance_feature": max_error(outputs.pooler_output[0], expected["utterance_feature"]),
        "layer_results": max_error(torch.stack(ffn_outputs)[:, 0], expected["layer_results"]),
    }
    assert max(errors.values()) <= TOLERANCE, errors


@pytest.mark.parametrize("attn_implementation", ATTENTION_IMPLEMENTATIONS)
def test_pretraining_checkpoint_matches_original(converted_dirs, fixtures_dir, attn_implementation):
    model = AutoModel.from_pretrained(converted_dirs["pretrain"], attn_implementation=attn_implementation)
    assert isinstance(model, SSLAMModel) and not model.training
    for clip, input_values in fixture_inputs(fixtures_dir).items():
        assert_encoder_matches(model, input_values, reference(fixtures_dir, "pretrain", clip))


@pytest.mark.parametrize("attn_implementation", ATTENTION_IMPLEMENTATIONS)
def test_finetuned_checkpoint_matches_original(converted_dirs, fixtures_dir, attn_implementation):
    model = AutoModelForAudioClassification.from_pretrained(
        converted_dirs["finetune"], attn_implementation=attn_implementation
    )
    assert isinstance(model, SSLAMForAudioClassification) and not model.training
    for clip, input_values in fixture_inputs(fixtures_dir).items():
        expected = reference(fixtures_dir, "finetune", clip)
        assert_encoder_matches(model.sslam, input_values, expected)
        with torch.no_grad():
            logits = model(input_values).logits[0]
        assert max_error(logits, expected["logits"]) <= TOLERANCE
        assert max_error(torch.sigmoid(logits), expected["probs_sigmoid"]) <= TOLERANCE


def test_layer_norm_eps_is_the_original(converted_dirs, fixtures_dir):
    norm_eps = json.loads((fixtures_dir / "config" / "pretrain_cfg_resolved.json").read_text())["model"]["norm_eps"]
    encoder = AutoModel.from_pretrained(converted_dirs["pretrain"])
    classifier = AutoModelForAudioClassification.from_pretrained(converted_dirs["finetune"])
    for model in (encoder, classifier.sslam):
        norms = [module for module in model.modules() if isinstance(module, nn.LayerNorm)]
        assert len(norms) == 1 + 2 * model.config.num_hidden_layers
        assert {norm.eps for norm in norms} == {norm_eps}
    assert classifier.fc_norm.eps == FC_NORM_EPS


def test_classifier_config_and_labels_default_to_stored_mids(converted_dirs, fixtures_dir):
    labels = stored_checkpoint(fixtures_dir, "finetune")["task_state"]["labels"]
    mids = sorted(labels, key=lambda mid: int(labels[mid]))
    config = AutoModelForAudioClassification.from_pretrained(converted_dirs["finetune"]).config
    assert config.problem_type == "multi_label_classification"
    assert [config.id2label[index] for index in range(config.num_labels)] == mids
    assert config.label2id == {mid: index for index, mid in enumerate(mids)}


@pytest.mark.parametrize("kind", CHECKPOINTS)
def test_output_folder_layout(converted_dirs, fixtures_dir, kind):
    folder = converted_dirs[kind]
    cfg = stored_checkpoint(fixtures_dir, kind)["cfg"]
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md"):
        assert (folder / name).is_file(), name
    preprocessor = json.loads((folder / "preprocessor_config.json").read_text())
    assert preprocessor["feature_extractor_type"] == "SSLAMFeatureExtractor"
    assert preprocessor["max_length"] == cfg["task"]["target_length"]
    assert (preprocessor["mean"], preprocessor["std"]) == (-4.268, 4.569)  # AudioSet statistics (SPEC §1.2)
    card = (folder / "README.md").read_text()
    assert CHECKPOINTS[kind] in card
    assert (folder / "pretraining" / "model.safetensors").is_file() == (kind == "pretrain")


@pytest.mark.parametrize("kind", CHECKPOINTS)
def test_output_folder_has_remote_code(converted_dirs, kind):
    folder = converted_dirs[kind]
    auto_map = json.loads((folder / "config.json").read_text()).get("auto_map", {})
    assert {"AutoConfig", "AutoModel"} <= set(auto_map)
    if kind == "finetune":
        assert "AutoModelForAudioClassification" in auto_map
    for module in {entry.split(".")[0] for entry in auto_map.values()}:
        assert (folder / f"{module}.py").is_file(), module


def fairseq_view(native: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Native encoder weights under fairseq names (q/k/v fused again): the inverse of the conversion table."""
    image = "modality_encoders.IMAGE."
    renamed = {
        "embeddings.cls_token": image + "extra_tokens",
        "embeddings.patch_embeddings.projection.weight": image + "local_encoder.proj.weight",
        "embeddings.patch_embeddings.projection.bias": image + "local_encoder.proj.bias",
        "embeddings.position_embeddings": image + "fixed_positional_encoder.positions",
        "pre_layernorm.weight": image + "context_encoder.norm.weight",
        "pre_layernorm.bias": image + "context_encoder.norm.bias",
    }
    layer_parts = {
        "attention.o_proj": "attn.proj",
        "attention_layernorm": "norm1",
        "output_layernorm": "norm2",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
    result = {fairseq: native[key] for key, fairseq in renamed.items()}
    used = set(renamed)
    num_layers = 1 + max(int(key.split(".")[2]) for key in native if key.startswith("encoder.layer."))
    for i in range(num_layers):
        prefix = f"encoder.layer.{i}."
        for param in ("weight", "bias"):
            for part, fairseq in layer_parts.items():
                result[f"blocks.{i}.{fairseq}.{param}"] = native[f"{prefix}{part}.{param}"]
                used.add(f"{prefix}{part}.{param}")
            qkv_names = [f"{prefix}attention.{name}_proj.{param}" for name in "qkv"]
            result[f"blocks.{i}.attn.qkv.{param}"] = torch.cat([native[name] for name in qkv_names])
            used.update(qkv_names)
    assert used == set(native), f"native weights without a fairseq counterpart: {sorted(set(native) - used)}"
    return result


def assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]):
    assert sorted(actual) == sorted(expected)
    different = [key for key in expected if not torch.equal(actual[key], expected[key].float())]
    assert not different, different


def test_pretraining_folder_holds_student_decoder_and_ema_teacher(converted_dirs, fixtures_dir):
    from sslam.modeling_sslam.pretraining_sslam import SSLAMForPreTraining

    model = SSLAMForPreTraining.from_pretrained(converted_dirs["pretrain"], subfolder="pretraining")
    stored = stored_checkpoint(fixtures_dir, "pretrain")["model"]
    ema = stored.pop("_ema")
    decoder_prefix = "modality_encoders.IMAGE.decoder."
    assert_same_tensors(fairseq_view(model.teacher.state_dict()), ema)
    assert_same_tensors(
        fairseq_view(model.sslam.state_dict()), {k: v for k, v in stored.items() if not k.startswith(decoder_prefix)}
    )
    decoder = {
        decoder_prefix + key.replace("layers.", "blocks.").replace(".conv.", ".0."): value
        for key, value in model.decoder.state_dict().items()
    }
    assert_same_tensors(decoder, {k: v for k, v in stored.items() if k.startswith(decoder_prefix)})
    assert not any(parameter.requires_grad for parameter in model.teacher.parameters())
    main_weights = load_file(converted_dirs["pretrain"] / "model.safetensors")
    assert_same_tensors(model.sslam.state_dict(), main_weights)


def write_label_rows(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def convert_finetuned_with_labels(fixtures_dir: Path, labels_csv: Path, output_dir: Path) -> None:
    convert_main([
        "--checkpoint_path", str(fixtures_dir / "checkpoints" / CHECKPOINTS["finetune"]),
        "--pytorch_dump_folder_path", str(output_dir), "--labels_csv", str(labels_csv),
    ])


def test_labels_csv_gives_display_names_in_checkpoint_order(
    finetuned_label_rows, finetuned_labels_csv, fixtures_dir, tmp_path
):
    rows = finetuned_label_rows
    convert_finetuned_with_labels(fixtures_dir, finetuned_labels_csv, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert [config["id2label"][str(index)] for index in range(len(rows))] == [row[2] for row in rows]


def test_labels_csv_with_a_wrong_mid_is_an_error(finetuned_label_rows, fixtures_dir, tmp_path):
    rows = [list(row) for row in finetuned_label_rows]
    wrong_mid = "/m/not_a_real_mid"
    rows[len(rows) // 2][1] = wrong_mid
    with pytest.raises(SystemExit) as error:
        convert_finetuned_with_labels(fixtures_dir, write_label_rows(tmp_path / "labels.csv", rows), tmp_path / "out")
    assert wrong_mid in str(error.value.code)
    assert not (tmp_path / "out").exists()


def verify_args(fixtures_dir: Path, output_dir: Path, clip: str, reference_kind: str) -> list[str]:
    return [
        "--checkpoint_path", str(fixtures_dir / "checkpoints" / CHECKPOINTS["finetune"]),
        "--pytorch_dump_folder_path", str(output_dir),
        "--verify_input", str(fixtures_dir / "inputs" / f"fbank_{clip}.npy"),
        "--verify_reference", str(fixtures_dir / "inference" / f"infer_{reference_kind}_{clip}.safetensors"),
    ]


def test_cli_verifies_against_reference_outputs(fixtures_dir, tmp_path, caplog):
    clip = next(iter(fixture_inputs(fixtures_dir)))
    with caplog.at_level(logging.INFO):
        convert_main(verify_args(fixtures_dir, tmp_path / "out", clip, "finetune"))
    for name in ("hidden_states", "last_hidden_state", "layer_results", "utterance_feature", "logits"):
        assert f"parity {name}: max abs error" in caplog.text
    assert "| logits |" in (tmp_path / "out" / "README.md").read_text()


def test_cli_fails_when_the_reference_does_not_match(fixtures_dir, tmp_path):
    clip = next(iter(fixture_inputs(fixtures_dir)))
    with pytest.raises(SystemExit) as error:
        convert_main(verify_args(fixtures_dir, tmp_path / "out", clip, "pretrain"))
    assert "differs from" in str(error.value.code)
    assert not (tmp_path / "out").exists()
