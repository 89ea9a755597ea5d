"""Safety and error handling of the checkpoint converters, fp16 checkpoints, old positional tables, labels CSVs, the
Hub push guard, and the remote-code (Hub EAT) migration."""

import importlib
import json
import logging
import pickle
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sslam.conversion import export
from sslam.conversion.convert_fairseq_checkpoint import convert_fairseq_checkpoint
from sslam.conversion.convert_fairseq_checkpoint import main as convert_main
from sslam.conversion.convert_hub_checkpoint import convert_hub_checkpoint
from sslam.conversion.convert_hub_checkpoint import main as convert_hub_main
from sslam.conversion.fairseq_checkpoint import DATA_ONLY_GLOBALS, CheckpointError, load_checkpoint_safely
from sslam.conversion.labels import LabelsError, read_labels_csv
from sslam.modeling_sslam.feature_extraction_sslam import NORMALIZATION_STATS, SSLAMFeatureExtractor
from sslam.modeling_sslam.modeling_sslam import SSLAMForAudioClassification, SSLAMModel


REPO_ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5  # SPEC "Corrections": inference parity
FP16_RELATIVE_TOLERANCE = 5e-3  # fp16-rounded weights vs float32 ones, relative to the largest output (measured ~5e-4)
FINETUNED = "sslam_finetuned_tiny.pt"
PRETRAINED = "sslam_pretrain_tiny.pt"
IMAGE = "modality_encoders.IMAGE."
PRE_2024_TIME_PATCHES = 64  # SPEC §2.2: pre-April-2024 tables cover 64 x 8 patches
FORBIDDEN_LOAD = "weights_only=" + "False"


class CreatesMarkerFile:
    """Unpickling this object would create `marker` (it pickles a call to `open(marker, "w")`)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def load_fixture_checkpoint(fixtures_dir: Path, name: str) -> dict:
    return torch.load(fixtures_dir / "checkpoints" / name, map_location="cpu", weights_only=True)


def save_checkpoint(checkpoint: dict, path: Path) -> Path:
    torch.save(checkpoint, path)
    return path


def clip_input(fixtures_dir: Path, max_frames: int | None = None) -> tuple[str, torch.Tensor]:
    """The longest fixture clip of at most `max_frames` frames: its name and model input `(1, T, 128)`."""
    inputs = {path.stem.removeprefix("fbank_"): np.load(path) for path in (fixtures_dir / "inputs").glob("fbank_*.npy")}
    fitting = {name: array for name, array in inputs.items() if max_frames is None or array.shape[0] <= max_frames}
    assert fitting, f"no fixture input has at most {max_frames} frames"
    name = max(fitting, key=lambda key: (fitting[key].shape[0], key))
    return name, torch.from_numpy(fitting[name])[None]


def reference(fixtures_dir: Path, kind: str, clip: str) -> dict[str, torch.Tensor]:
    return load_file(fixtures_dir / "inference" / f"infer_{kind}_{clip}.safetensors")


def last_block_index(state_dict: dict) -> int:
    return max(int(key.split(".")[-4]) for key in state_dict if ".mlp.fc1.weight" in key)


# --- unsafe and broken files ------------------------------------------------------------------------------------------


def test_malicious_checkpoint_is_refused_without_running_code(fixtures_dir, tmp_path):
    marker = tmp_path / "marker"
    checkpoint = load_fixture_checkpoint(fixtures_dir, FINETUNED)
    checkpoint["extra_state"]["payload"] = CreatesMarkerFile(marker)
    path = save_checkpoint(checkpoint, tmp_path / "malicious.pt")
    with pytest.raises(CheckpointError, match="not loaded"):
        convert_fairseq_checkpoint(path, tmp_path / "out")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_plain_numpy_and_namespace_data_are_accepted(fixtures_dir, tmp_path):
    import argparse

    checkpoint = load_fixture_checkpoint(fixtures_dir, FINETUNED)
    checkpoint["extra_state"]["best"] = np.float64(0.5)
    checkpoint["extra_state"]["history"] = np.arange(3)
    checkpoint["args"] = argparse.Namespace(seed=1)
    loaded = load_checkpoint_safely(save_checkpoint(checkpoint, tmp_path / "numpy.pt"))
    assert loaded["extra_state"]["best"] == 0.5


class CallsGlobal:
    """Unpickling this object calls `function("payload")`: the pickle names the function's module and name."""

    def __init__(self, function):
        self.function = function

    def __reduce__(self):
        return (self.function, ("payload",))


def checkpoint_calling(monkeypatch, tmp_path: Path, global_name: str) -> list:
    """A zip checkpoint whose pickle calls `global_name`. That global is replaced by a recorder while the test runs,
    so a checkpoint whose call ran during loading leaves an entry in the returned list."""
    module_name, _, attribute = global_name.rpartition(".")
    calls = []

    def recorder(*args, **kwargs):
        calls.append(args)

    recorder.__module__, recorder.__name__, recorder.__qualname__ = module_name, attribute, attribute
    monkeypatch.setattr(importlib.import_module(module_name), attribute, recorder, raising=False)
    torch.save({"model": {}, "cfg": {}, "payload": CallsGlobal(recorder)}, tmp_path / "calls.pt")
    return calls


ALLOWED_MODULES = sorted({name.rpartition(".")[0] for name in DATA_ONLY_GLOBALS})
# A callable of every module the allow-list takes names from, none of them on it (classes included: numpy.memmap
# opens files, argparse.ArgumentParser is not data).
CALLABLES_OF_ALLOWED_MODULES = {
    "argparse": ["argparse._get_action_name", "argparse.ArgumentParser"],
    "numpy": ["numpy.save", "numpy.memmap"],
    "numpy._core.multiarray": ["numpy._core.multiarray.frombuffer"],
    "numpy.core.multiarray": ["numpy.core.multiarray.frombuffer"],
    "numpy.dtypes": ["numpy.dtypes._add_dtype_helper"],
}


def test_the_callables_cover_every_module_of_the_allow_list():
    assert sorted(CALLABLES_OF_ALLOWED_MODULES) == ALLOWED_MODULES


@pytest.mark.parametrize("global_name", [name for names in CALLABLES_OF_ALLOWED_MODULES.values() for name in names])
def test_a_callable_of_an_allowed_module_is_refused_before_it_runs(monkeypatch, tmp_path, global_name):
    calls = checkpoint_calling(monkeypatch, tmp_path, global_name)
    with pytest.raises(CheckpointError, match=rf"not plain data \({re.escape(global_name)}\).*nothing from it was run"):
        load_checkpoint_safely(tmp_path / "calls.pt")
    assert calls == []


def test_a_missing_global_of_an_allowed_module_is_the_same_refusal(monkeypatch, tmp_path):
    checkpoint_calling(monkeypatch, tmp_path, "numpy.dtypes.NoSuchThing")
    monkeypatch.undo()  # the name no longer exists when the checkpoint is read
    with pytest.raises(CheckpointError, match=r"not plain data \(numpy\.dtypes\.NoSuchThing\)"):
        load_checkpoint_safely(tmp_path / "calls.pt")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_malicious_legacy_pickle_is_refused_because_it_cannot_be_checked(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "legacy.pt"
    with path.open("wb") as handle:
        pickle.dump({"model": {}, "cfg": {}, "payload": CreatesMarkerFile(marker)}, handle)
    with pytest.raises(CheckpointError, match=r"refused because it cannot be checked: it is a legacy \(non-zip\)"):
        load_checkpoint_safely(path)
    assert not marker.exists()


def test_random_bytes_are_a_clear_error(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        convert_fairseq_checkpoint(path, tmp_path / "out")


def test_truncated_file_is_a_clear_error(fixtures_dir, tmp_path):
    data = (fixtures_dir / "checkpoints" / FINETUNED).read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        convert_fairseq_checkpoint(path, tmp_path / "out")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        convert_fairseq_checkpoint(tmp_path / "absent.pt", tmp_path / "out")


def test_checkpoint_without_model_is_an_error(fixtures_dir, tmp_path):
    checkpoint = load_fixture_checkpoint(fixtures_dir, FINETUNED)
    del checkpoint["model"]
    with pytest.raises(CheckpointError, match="'model'"):
        convert_fairseq_checkpoint(save_checkpoint(checkpoint, tmp_path / "no_model.pt"), tmp_path / "out")


@pytest.mark.parametrize("name", [FINETUNED, PRETRAINED])
def test_unknown_key_is_named(fixtures_dir, tmp_path, name):
    checkpoint = load_fixture_checkpoint(fixtures_dir, name)
    checkpoint["model"]["blocks.0.attn.unexpected_scale"] = torch.ones(1)
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.unexpected_scale"):
        convert_fairseq_checkpoint(save_checkpoint(checkpoint, tmp_path / "extra.pt"), tmp_path / "out")


@pytest.mark.parametrize("name, prefix", [(FINETUNED, "model."), (PRETRAINED, "")])
def test_missing_key_is_named(fixtures_dir, tmp_path, name, prefix):
    checkpoint = load_fixture_checkpoint(fixtures_dir, name)
    last = last_block_index(checkpoint["model"])
    del checkpoint["model"][f"{prefix}blocks.{last}.mlp.fc1.weight"]
    with pytest.raises(CheckpointError, match=rf"missing weights .*encoder\.layer\.{last}\.mlp\.fc1\.weight"):
        convert_fairseq_checkpoint(save_checkpoint(checkpoint, tmp_path / "missing.pt"), tmp_path / "out")


def test_missing_teacher_key_is_named(fixtures_dir, tmp_path):
    checkpoint = load_fixture_checkpoint(fixtures_dir, PRETRAINED)
    del checkpoint["model"]["_ema"][IMAGE + "extra_tokens"]
    with pytest.raises(CheckpointError, match=r"teacher\.embeddings\.cls_token"):
        convert_fairseq_checkpoint(save_checkpoint(checkpoint, tmp_path / "missing.pt"), tmp_path / "out")


def test_wrong_shape_is_named(fixtures_dir, tmp_path):
    checkpoint = load_fixture_checkpoint(fixtures_dir, FINETUNED)
    key = "model.blocks.0.mlp.fc1.weight"
    checkpoint["model"][key] = checkpoint["model"][key].t().contiguous()
    with pytest.raises(CheckpointError, match=r"wrong shapes .*encoder\.layer\.0\.mlp\.fc1\.weight"):
        convert_fairseq_checkpoint(save_checkpoint(checkpoint, tmp_path / "shape.pt"), tmp_path / "out")


def test_cli_reports_errors_without_a_traceback(tmp_path):
    with pytest.raises(SystemExit) as error:
        convert_main(["--checkpoint_path", str(tmp_path / "absent.pt"), "--pytorch_dump_folder_path", str(tmp_path)])
    assert str(error.value.code).startswith("error: checkpoint not found")


@pytest.mark.parametrize("name, prefix", [(FINETUNED, "model."), (PRETRAINED, "")])
def test_a_non_finite_weight_is_refused_naming_the_tensor(fixtures_dir, tmp_path, name, prefix):
    checkpoint = load_fixture_checkpoint(fixtures_dir, name)
    checkpoint["model"][f"{prefix}blocks.0.mlp.fc1.weight"][0, :3] = torch.tensor([np.nan, np.inf, -np.inf])
    match = r"NaN or inf values in 1 tensor\(s\).*encoder\.layer\.0\.mlp\.fc1\.weight \(3 of"
    with pytest.raises(CheckpointError, match=match):
        convert_fairseq_checkpoint(save_checkpoint(checkpoint, tmp_path / "nan.pt"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def delete_embed_dim(architecture: dict) -> None:
    del architecture["embed_dim"]


@pytest.mark.parametrize("name", [FINETUNED, PRETRAINED])
@pytest.mark.parametrize(
    "edit, match",
    [
        (delete_embed_dim, r"model\.embed_dim is missing; the architecture needs it"),
        (lambda cfg: cfg.update(modalities=None), r"model\.modalities must be a section \(dict\), got None"),
        (lambda cfg: cfg.update(mlp_ratio="4"), r"model\.mlp_ratio must be int or float, got '4' \(str\)"),
        (lambda cfg: cfg.update(num_heads=3), r"refuses: ValueError: hidden_size \(\d+\) must be divisible by .*\(3\)"),
        (lambda cfg: cfg.update(depth="2"), r"model\.depth must be int, got '2'"),
    ],
    ids=["no-embed_dim", "modalities-None", "mlp_ratio-str", "num_heads-3", "depth-str"],
)  # fmt: skip
def test_an_invalid_stored_cfg_is_a_clear_error(fixtures_dir, tmp_path, name, edit, match):
    checkpoint = load_fixture_checkpoint(fixtures_dir, name)
    model_cfg = checkpoint["cfg"]["model"]
    edit(model_cfg["pretrained_model_args"]["model"] if name == FINETUNED else model_cfg)
    with pytest.raises(CheckpointError, match=match):
        convert_fairseq_checkpoint(save_checkpoint(checkpoint, tmp_path / "cfg.pt"), tmp_path / "out")


def run_converter(capsys, argv: list) -> tuple[int, str]:
    """Runs the fairseq converter's CLI in-process: its exit status and the last line it wrote to stderr."""
    with pytest.raises(SystemExit) as exit_info:
        convert_main([str(arg) for arg in argv])
    code = exit_info.value.code
    lines = capsys.readouterr().err.strip().splitlines() + ([code] if isinstance(code, str) else [])
    return (1 if isinstance(code, str) else code), lines[-1]


def test_cli_refuses_an_invalid_cfg_in_one_line(fixtures_dir, tmp_path, capsys):
    checkpoint = load_fixture_checkpoint(fixtures_dir, PRETRAINED)
    checkpoint["cfg"]["model"]["num_heads"] = 3
    path = save_checkpoint(checkpoint, tmp_path / "heads.pt")
    code, line = run_converter(capsys, ["--checkpoint_path", path, "--pytorch_dump_folder_path", tmp_path / "out"])
    assert code == 1 and re.fullmatch(r"error: .* must be divisible by num_attention_heads \(3\)\.", line)


@pytest.mark.parametrize("problem", ["not-safetensors", "missing"])
def test_cli_checks_the_verify_reference_before_converting(fixtures_dir, tmp_path, capsys, problem):
    reference_path = tmp_path / "reference.safetensors"
    if problem == "not-safetensors":
        reference_path.write_text("not safetensors")
    argv = ["--checkpoint_path", fixtures_dir / "checkpoints" / FINETUNED, "--pytorch_dump_folder_path",
            tmp_path / "out", "--verify_input", next((fixtures_dir / "audio").glob("*.wav")),
            "--verify_reference", reference_path]  # fmt: skip
    code, line = run_converter(capsys, argv)
    expected = "is not a safetensors file" if problem == "not-safetensors" else "does not exist"
    assert code == 2 and line.startswith("python -m sslam.conversion.convert_fairseq_checkpoint: error:")
    assert "error: --verify_reference" in line
    assert expected in line and str(reference_path) in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("problem", ["existing-file", "file-on-the-path"])
def test_cli_refuses_a_dump_path_it_cannot_write_before_converting(fixtures_dir, tmp_path, capsys, problem):
    existing = tmp_path / "model.bin"
    existing.write_text("keep me")
    dump = existing if problem == "existing-file" else existing / "out"
    argv = ["--checkpoint_path", fixtures_dir / "checkpoints" / FINETUNED, "--pytorch_dump_folder_path", dump]
    code, line = run_converter(capsys, argv)
    expected = "is an existing file, not a folder" if problem == "existing-file" else f"{existing} (on the path of"
    assert code == 2 and "error: --pytorch_dump_folder_path" in line and expected in line
    assert existing.read_text() == "keep me"


# --- precision and positional tables ----------------------------------------------------------------------------------


def test_fp16_checkpoint_converts_to_float32(fixtures_dir, tmp_path):
    """Real checkpoints hold fp16 student weights: the converted model is float32 and matches within fp16 rounding."""
    checkpoint = load_fixture_checkpoint(fixtures_dir, FINETUNED)
    checkpoint["model"] = {key: value.half() for key, value in checkpoint["model"].items()}
    convert_fairseq_checkpoint(save_checkpoint(checkpoint, tmp_path / "fp16.pt"), tmp_path / "out")
    model = SSLAMForAudioClassification.from_pretrained(tmp_path / "out")
    assert {tensor.dtype for tensor in model.state_dict().values()} == {torch.float32}
    clip, input_values = clip_input(fixtures_dir)
    expected = reference(fixtures_dir, "finetune", clip)
    with torch.no_grad():
        outputs = model(input_values, output_hidden_states=True)
    pairs = ((outputs.logits[0], expected["logits"]), (outputs.hidden_states[-1][0], expected["last_hidden_state"]))
    for actual, wanted in pairs:
        assert (actual - wanted).abs().max() <= FP16_RELATIVE_TOLERANCE * wanted.abs().max()


def with_pre_2024_table(checkpoint: dict, transform=lambda table: table) -> dict:
    """The checkpoint as EAT stored it before April 2024: a 64 x 8 positional table and no `max_length` in the cfg."""
    state = checkpoint["model"]
    for table_owner in (state, state["_ema"]):
        key = IMAGE + "fixed_positional_encoder.positions"
        freq_patches = table_owner[key].shape[1] // checkpoint["cfg"]["model"]["modalities"]["image"]["max_length"]
        table_owner[key] = transform(table_owner[key][:, : PRE_2024_TIME_PATCHES * freq_patches].clone())
    del checkpoint["cfg"]["model"]["modalities"]["image"]["max_length"]
    return checkpoint


def test_pre_2024_positional_table_is_extended(fixtures_dir, tmp_path, caplog):
    checkpoint = with_pre_2024_table(load_fixture_checkpoint(fixtures_dir, PRETRAINED))
    with caplog.at_level(logging.WARNING):
        convert_fairseq_checkpoint(save_checkpoint(checkpoint, tmp_path / "old.pt"), tmp_path / "out")
    assert "extended" in caplog.text
    model = SSLAMModel.from_pretrained(tmp_path / "out")
    assert model.config.max_time_patches > PRE_2024_TIME_PATCHES
    clip, input_values = clip_input(fixtures_dir, max_frames=PRE_2024_TIME_PATCHES * model.config.patch_size)
    with torch.no_grad():
        last_hidden_state = model(input_values).last_hidden_state[0]
    assert (last_hidden_state - reference(fixtures_dir, "pretrain", clip)["last_hidden_state"]).abs().max() <= TOLERANCE


def test_nonstandard_positional_table_is_kept_as_stored(fixtures_dir, tmp_path):
    checkpoint = with_pre_2024_table(load_fixture_checkpoint(fixtures_dir, PRETRAINED), transform=torch.neg)
    convert_fairseq_checkpoint(save_checkpoint(checkpoint, tmp_path / "odd.pt"), tmp_path / "out")
    model = SSLAMModel.from_pretrained(tmp_path / "out")
    assert model.config.max_time_patches == PRE_2024_TIME_PATCHES
    stored = checkpoint["model"][IMAGE + "fixed_positional_encoder.positions"]
    assert torch.equal(model.embeddings.position_embeddings, stored)


def test_feature_extractor_follows_the_checkpoint_task(fixtures_dir, tmp_path):
    """ESC-50 fine-tuning (`esc50_eval`) uses its own normalisation statistics and clip length."""
    checkpoint = load_fixture_checkpoint(fixtures_dir, FINETUNED)
    target_length = checkpoint["cfg"]["task"]["target_length"] // 2
    checkpoint["cfg"]["task"] |= {"esc50_eval": True, "target_length": target_length}
    convert_fairseq_checkpoint(save_checkpoint(checkpoint, tmp_path / "esc50.pt"), tmp_path / "out")
    extractor = SSLAMFeatureExtractor.from_pretrained(tmp_path / "out")
    assert (extractor.mean, extractor.std) == NORMALIZATION_STATS["esc50"]
    assert extractor.target_length == target_length


@pytest.mark.parametrize("user_dir, objective", [("/SSLAM/Pre-Training/SSLAM_Stage2", "sslam"), ("/EAT", "eat")])
def test_pretraining_objective_follows_the_training_code(fixtures_dir, tmp_path, user_dir, objective):
    checkpoint = load_fixture_checkpoint(fixtures_dir, PRETRAINED)
    checkpoint["cfg"]["common"]["user_dir"] = user_dir
    convert_fairseq_checkpoint(save_checkpoint(checkpoint, tmp_path / "pretrain.pt"), tmp_path / "out")
    config = json.loads((tmp_path / "out" / "pretraining" / "config.json").read_text())
    assert config["objective"] == objective


# --- labels CSV parsing -----------------------------------------------------------------------------------------------


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_labels_csv_header_is_optional(tmp_path):
    rows = '0,/m/a,"Speech"\n1,/m/b,"Male speech, man speaking"\n'
    expected = [("/m/a", "Speech"), ("/m/b", "Male speech, man speaking")]
    assert read_labels_csv(write_text(tmp_path / "plain.csv", rows)) == expected
    assert read_labels_csv(write_text(tmp_path / "header.csv", "index,mid,display_name\n" + rows)) == expected


def test_labels_csv_with_gaps_is_an_error(tmp_path):
    with pytest.raises(LabelsError, match="without gaps"):
        read_labels_csv(write_text(tmp_path / "gap.csv", "0,/m/a,A\n2,/m/b,B\n"))


def test_labels_csv_in_another_order_is_an_error(fixtures_dir, tmp_path):
    labels = load_fixture_checkpoint(fixtures_dir, FINETUNED)["task_state"]["labels"]
    mids = sorted(labels, key=lambda mid: int(labels[mid]))
    mids[0], mids[1] = mids[1], mids[0]
    path = write_text(tmp_path / "swapped.csv", "".join(f"{i},{mid},name {i}\n" for i, mid in enumerate(mids)))
    with pytest.raises(LabelsError, match="orders the classes differently"):
        convert_fairseq_checkpoint(fixtures_dir / "checkpoints" / FINETUNED, tmp_path / "out", labels_csv=path)


# --- Hub upload guard -------------------------------------------------------------------------------------------------


def push_args(fixtures_dir: Path, output_dir: Path) -> list[str]:
    return [
        "--checkpoint_path", str(fixtures_dir / "checkpoints" / FINETUNED),
        "--pytorch_dump_folder_path", str(output_dir), "--push_to_hub", "someone/sslam-test",
    ]


def test_push_to_hub_refuses_offline_before_converting(fixtures_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as error:
        convert_main(push_args(fixtures_dir, tmp_path / "out"))
    assert "HF_HUB_OFFLINE" in str(error.value.code)
    assert not (tmp_path / "out").exists()


def test_push_to_hub_refuses_without_token(fixtures_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "hub_offline", lambda: False)
    monkeypatch.setattr(export, "get_token", lambda: None)
    with pytest.raises(SystemExit) as error:
        convert_main(push_args(fixtures_dir, tmp_path / "out"))
    assert "token" in str(error.value.code)
    assert not (tmp_path / "out").exists()


# --- no unsafe loading anywhere ---------------------------------------------------------------------------------------


def test_no_unsafe_torch_load_in_the_project():
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{number}"
        for path in REPO_ROOT.rglob("*.py")
        if ".venv" not in path.relative_to(REPO_ROOT).parts
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1)
        if FORBIDDEN_LOAD in line.replace(" ", "")
    ]
    assert not offenders, offenders


# --- Hub remote-code (EAT) checkpoints --------------------------------------------------------------------------------


def hub_eat_state_dict(fairseq_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fairseq weights under the remote-code EAT names (SPEC §10.4)."""
    renames = {
        IMAGE + "local_encoder.": "model.local_encoder.",
        IMAGE + "extra_tokens": "model.extra_tokens",
        IMAGE + "fixed_positional_encoder.": "model.fixed_positional_encoder.",
        IMAGE + "context_encoder.norm.": "model.pre_norm.",
        "blocks.": "model.blocks.",
        "fc_norm.": "model.fc_norm.",
        "head.": "model.head.",
    }
    result = {}
    for key, value in fairseq_state.items():
        old = next(prefix for prefix in renames if key.startswith(prefix))
        result[renames[old] + key[len(old):]] = value.contiguous()
    return result


def write_hub_folder(fixtures_dir: Path, folder: Path, name: str) -> Path:
    """A remote-code EAT folder (config.json + model.safetensors) holding the weights of a fixture checkpoint."""
    checkpoint = load_fixture_checkpoint(fixtures_dir, name)
    model_cfg = checkpoint["cfg"]["model"]
    finetune = "pretrained_model_args" in model_cfg
    architecture = model_cfg["pretrained_model_args"]["model"] if finetune else model_cfg
    image = architecture["modalities"]["image"]
    state = checkpoint["model"]
    if finetune:
        state = {key.removeprefix("model."): value for key, value in state.items()}
    else:
        state = {k: v for k, v in state.items() if k != "_ema" and not k.startswith(IMAGE + "decoder.")}
    config = {
        "model_type": "eat",
        "architectures": ["EATModel"],
        "embed_dim": architecture["embed_dim"],
        "depth": architecture["depth"],
        "num_heads": architecture["num_heads"],
        "mlp_ratio": architecture["mlp_ratio"],
        "qkv_bias": True,
        "norm_eps": architecture["norm_eps"],
        "patch_size": image["patch_size"],
        "stride": image["patch_size"],
        "in_chans": image["in_chans"],
        "mel_bins": 128,
        "max_length": image["max_length"],
        "img_size": [checkpoint["cfg"]["task"]["target_length"], 128],
        "model_variant": "finetune" if finetune else "pretrain",
        "num_classes": model_cfg.get("num_classes", 527),
        "layer_norm_first": False,
    }
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    save_file(hub_eat_state_dict(state), folder / "model.safetensors")
    return folder


@pytest.mark.parametrize("name, kind", [(FINETUNED, "finetune"), (PRETRAINED, "pretrain")])
def test_hub_remote_code_checkpoint_converts_with_parity(fixtures_dir, tmp_path, name, kind, caplog):
    hub_folder = write_hub_folder(fixtures_dir, tmp_path / "hub", name)
    with caplog.at_level(logging.WARNING):
        convert_hub_checkpoint(hub_folder, tmp_path / "out")
    model_class = SSLAMForAudioClassification if kind == "finetune" else SSLAMModel
    model = model_class.from_pretrained(tmp_path / "out")
    encoder = model.sslam if kind == "finetune" else model
    clip, input_values = clip_input(fixtures_dir)
    expected = reference(fixtures_dir, kind, clip)
    with torch.no_grad():
        outputs = encoder(input_values, output_hidden_states=True)
        assert (torch.stack(outputs.hidden_states)[:, 0] - expected["hidden_states"]).abs().max() <= TOLERANCE
        if kind == "finetune":
            assert (model(input_values).logits[0] - expected["logits"]).abs().max() <= TOLERANCE
    if kind == "finetune":
        assert model.fc_norm.eps == 1e-6  # the original's eps, not the remote code's 1e-5
        assert "1e-5" in caplog.text and "1e-5" in (tmp_path / "out" / "README.md").read_text()
        assert model.config.problem_type == "multi_label_classification"


def test_hub_checkpoint_with_unknown_key_is_named(fixtures_dir, tmp_path):
    hub_folder = write_hub_folder(fixtures_dir, tmp_path / "hub", FINETUNED)
    weights = load_file(hub_folder / "model.safetensors")
    weights["model.blocks.0.attn.rel_pos"] = torch.zeros(1)
    save_file(weights, hub_folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.blocks\.0\.attn\.rel_pos"):
        convert_hub_checkpoint(hub_folder, tmp_path / "out")


def test_hub_folder_of_another_model_type_is_refused(fixtures_dir, tmp_path):
    hub_folder = write_hub_folder(fixtures_dir, tmp_path / "hub", FINETUNED)
    config = json.loads((hub_folder / "config.json").read_text())
    (hub_folder / "config.json").write_text(json.dumps({**config, "model_type": "vit"}))
    with pytest.raises(CheckpointError, match="model_type 'vit'"):
        convert_hub_checkpoint(hub_folder, tmp_path / "out")


@pytest.mark.parametrize(
    "config_text, match",
    [
        ('{"model_type": "eat", "embed_dim": 768,', r"config\.json is not valid JSON"),
        ("[1, 2]", r"config\.json must hold a JSON object, got list"),
        ('{"model_type": "eat", "mlp_ratio": "4"}', r"config\.json\.mlp_ratio must be int or float, got '4'"),
        ('{"model_type": "eat", "num_heads": 5}', r"config\.json describes an architecture SSLAMConfig refuses.*by"),
    ],
    ids=["truncated-json", "not-an-object", "mlp_ratio-str", "num_heads-5"],
)
def test_hub_folder_with_an_invalid_config_is_a_clear_error(fixtures_dir, tmp_path, config_text, match, capsys):
    hub_folder = write_hub_folder(fixtures_dir, tmp_path / "hub", FINETUNED)
    (hub_folder / "config.json").write_text(config_text)
    with pytest.raises(CheckpointError, match=match):
        convert_hub_checkpoint(hub_folder, tmp_path / "out")
    with pytest.raises(SystemExit) as exit_info:  # `sslam convert-hub`: one line, exit status 1
        convert_hub_main(["--input_dir", str(hub_folder), "--pytorch_dump_folder_path", str(tmp_path / "out")])
    assert re.match(rf"error: .*{match}", exit_info.value.code) and "\n" not in exit_info.value.code
