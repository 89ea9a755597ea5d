"""Pre-training package: data sources, collator, EMA callback, trainer, resume and CLI (tiny model, CPU)."""

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from sslam.modeling_sslam.configuration_sslam import SSLAMConfig
from sslam.modeling_sslam.feature_extraction_sslam import SSLAMFeatureExtractor
from sslam.modeling_sslam.pretraining_sslam import SSLAMForPreTraining
from sslam.modeling_sslam.audio_io import decode_audio
from sslam.modeling_sslam.pretraining_sslam import pretraining_folder
from sslam.training.arguments import SSLAMPretrainingArguments, parse_args
from sslam.training.callbacks import CollapseGuardCallback, EMATeacherCallback, check_teacher_in_sync, teacher_checksums
from sslam.training.collator import SSLAMPretrainingCollator
from sslam.training.data import (
    EpochShuffleSampler,
    PretrainingAudioDataset,
    StreamingPretrainingDataset,
    build_pretraining_dataset,
)
from sslam.training.ema import TeacherEMA
from sslam.training.pretrain import main
from sslam.training.trainer import SSLAMPretrainingTrainer, decay_parameter_names, save_encoder

FRAMES = 256  # 16 patch rows x 8 = 128 patches per clip
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    decoder_hidden_size=16,
    decoder_num_layers=2,
    decoder_groups=16,
    average_top_k_layers=2,
    clone_batch=2,
    max_length=FRAMES,
    unmixed_window_frames=64,
)


def tiny_config(objective: str = "eat", **overrides) -> SSLAMConfig:
    return SSLAMConfig(**{**TINY, "objective": objective, **overrides})


FAST_EMA = dict(ema_decay=0.9, ema_end_decay=0.99, ema_anneal_end_step=10)  # teacher moves visibly in a few steps


def write_clip(path: Path, seconds: float, sampling_rate: int = 16000, channels: int = 1, seed: int = 0) -> Path:
    """Seeded noise plus a tone, peak about 0.3."""
    rng = np.random.default_rng(seed)
    time = np.arange(int(seconds * sampling_rate)) / sampling_rate
    mono = 0.2 * np.sin(2 * np.pi * (200 + 50 * seed) * time) + 0.05 * rng.standard_normal(time.shape)
    samples = np.stack([mono * (1 - 0.3 * c) for c in range(channels)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples.astype(np.float32), sampling_rate)
    return path


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    """Eight clips of 1.5-3 s: 16 kHz mono, one 22.05 kHz file and one stereo file."""
    folder = tmp_path_factory.mktemp("audio")
    for index in range(8):
        rate = 22050 if index == 3 else 16000
        write_clip(folder / f"clip{index}.wav", 1.5 + 0.2 * index, rate, channels=2 if index == 5 else 1, seed=index)
    return folder


def make_collator(config: SSLAMConfig, seed: int = 0, crop: str = "start") -> SSLAMPretrainingCollator:
    return SSLAMPretrainingCollator.from_config(config, SSLAMFeatureExtractor(max_length=FRAMES), seed, crop)


def make_trainer(output_dir, dataset, config, callbacks=(), model=None, **arguments) -> SSLAMPretrainingTrainer:
    torch.manual_seed(0)
    model = model or SSLAMForPreTraining(config)
    defaults = dict(
        per_device_train_batch_size=2,
        max_steps=2,
        learning_rate=1e-3,
        warmup_steps=1,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    return SSLAMPretrainingTrainer(
        model=model,
        args=SSLAMPretrainingArguments(output_dir=str(output_dir), **{**defaults, **arguments}),
        train_dataset=dataset,
        data_collator=make_collator(config),
        callbacks=list(callbacks),
    )


def losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def callbacks_of(trainer, callback_class) -> list:
    return [callback for callback in trainer.callback_handler.callbacks if isinstance(callback, callback_class)]


class StateRecorder(TrainerCallback):
    """Snapshots of student and teacher at the start and after every optimizer step (runs after the EMA callback)."""

    def __init__(self):
        self.states, self.substeps = [], 0

    def _snapshot(self, model):
        self.states.append({name: value.clone() for name, value in model.state_dict().items()})

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._snapshot(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._snapshot(model)

    def on_substep_end(self, args, state, control, model=None, **kwargs):
        self.substeps += 1
        teacher_now = {name: value for name, value in model.state_dict().items() if name.startswith("teacher.")}
        assert all(torch.equal(value, self.states[-1][name]) for name, value in teacher_now.items())


# ---------------------------------------------------------------------------------------------------------------------
# data sources
# ---------------------------------------------------------------------------------------------------------------------


def test_data_sources_folder_tsv_list_and_audiofolder(audio_dir, tmp_path, monkeypatch):
    files = sorted(str(path) for path in audio_dir.glob("*.wav"))
    assert list(build_pretraining_dataset(str(audio_dir)).sources) == files

    manifest = tmp_path / "train.tsv"
    manifest.write_text(f"{audio_dir}\n" + "".join(f"{Path(f).name}\t16000\n" for f in files[:3]))
    assert list(build_pretraining_dataset(str(manifest)).sources) == files[:3]

    (tmp_path / "sub").mkdir()
    file_list = tmp_path / "sub" / "list.txt"
    file_list.write_text(f"{files[0]}\n../other/clip.wav\n")  # relative paths: relative to the list's folder
    assert list(build_pretraining_dataset(str(file_list)).sources) == [files[0], str(tmp_path / "other" / "clip.wav")]
    assert build_pretraining_dataset(files[:2])[1] == {"audio": files[1], "epoch": 0, "index": 1}

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    audiofolder = build_pretraining_dataset(str(audio_dir), data_format="audiofolder")
    item = audiofolder[len(audiofolder) + 2]  # a sampler draw of epoch 1
    assert (item["epoch"], item["index"]) == (1, 2) and set(item["audio"]) == {"bytes", "path"}
    clip = decode_audio(item["audio"])
    assert clip.dtype == np.float32 and clip.ndim == 1
    stream = build_pretraining_dataset(str(audio_dir), data_format="audiofolder", streaming=True, seed=1)
    streamed = list(stream)
    assert [item["index"] for item in streamed] == list(range(8)) and {item["epoch"] for item in streamed} == {0}
    assert sorted(Path(item["audio"]["path"]).name for item in streamed) == sorted(Path(f).name for f in files)

    with pytest.raises(FileNotFoundError, match="Training data not found"):
        build_pretraining_dataset(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="data_format"):
        build_pretraining_dataset(str(audio_dir), data_format="parquet")
    with pytest.raises(ValueError, match="streaming"):
        build_pretraining_dataset(str(audio_dir), streaming=True)


def test_streaming_dataset_numbers_items_per_epoch():
    dataset = StreamingPretrainingDataset([{"audio": "a.wav"}, {"audio": "b.wav"}], audio_column="audio")
    dataset.set_epoch(3)
    assert list(dataset) == [{"audio": "a.wav", "epoch": 3, "index": 0}, {"audio": "b.wav", "epoch": 3, "index": 1}]


def test_epoch_sampler_is_seeded_per_epoch_and_encodes_the_epoch():
    sampler = EpochShuffleSampler(10, seed=5)
    first = list(sampler)
    assert sorted(first) == list(range(10)) and first == list(EpochShuffleSampler(10, seed=5))
    sampler.set_epoch(2)
    second = list(sampler)
    assert sorted(second) == list(range(20, 30)) and [d - 20 for d in second] != first
    dataset = PretrainingAudioDataset([f"{i}.wav" for i in range(10)])
    assert dataset[second[0]] == {"audio": f"{second[0] - 20}.wav", "epoch": 2, "index": second[0] - 20}


# ---------------------------------------------------------------------------------------------------------------------
# collator
# ---------------------------------------------------------------------------------------------------------------------


def test_collator_shapes_and_reproducible_masks(audio_dir):
    dataset = build_pretraining_dataset(str(audio_dir))
    collator = make_collator(tiny_config("sslam"), seed=3)
    batch = collator([dataset[0], dataset[3], dataset[5]])  # 16 kHz, 22.05 kHz, stereo
    assert batch["input_values"].shape == (3, 1, FRAMES, 128)
    assert batch["mask"].shape == (3 * 2, 128) and batch["mask"].dtype == torch.bool
    assert (batch["mask"].sum(dim=1) == batch["mask"][0].sum()).all()
    starts = batch["unmixed_window_starts"]
    assert starts.dtype == torch.long and starts.shape == (2,) and (starts % 16 == 0).all()

    again = collator([dataset[3], dataset[0]])  # an item's masks do not depend on the batch it is in
    assert torch.equal(again["mask"][:2], batch["mask"][2:4]) and torch.equal(again["mask"][2:], batch["mask"][:2])
    next_epoch = collator([dataset[len(dataset)]])
    assert not torch.equal(next_epoch["mask"], batch["mask"][:2])
    other_seed = make_collator(tiny_config("sslam"), seed=4)([dataset[0]])
    assert not torch.equal(other_seed["mask"], batch["mask"][:2])
    assert "unmixed_window_starts" not in make_collator(tiny_config("eat"))([dataset[0]])


def test_collator_accepts_raw_items_and_crops(audio_dir):
    path = str(audio_dir / "clip7.wav")
    samples, rate = soundfile.read(path, dtype="float32")

    class FakeDecoder:  # the interface of torchcodec's AudioDecoder (datasets 5 decoded audio)
        def get_all_samples(self):
            return type("Samples", (), {"data": torch.from_numpy(samples)[None], "sample_rate": rate})()

    collator = make_collator(tiny_config())
    from_path = collator([path])
    from_dict = collator([{"audio": {"array": samples, "sampling_rate": rate}}])
    from_decoder = collator([FakeDecoder()])
    assert torch.equal(from_path["mask"], from_dict["mask"])  # content-keyed masks
    torch.testing.assert_close(from_path["input_values"], from_dict["input_values"])
    torch.testing.assert_close(from_path["input_values"], from_decoder["input_values"])

    cropper = make_collator(tiny_config(), crop="random", seed=1)
    long_clip = {"audio": {"array": np.tile(samples, 2), "sampling_rate": rate}, "epoch": 0, "index": 4}
    assert torch.equal(cropper([long_clip])["input_values"], cropper([long_clip])["input_values"])
    assert not torch.equal(cropper([long_clip])["input_values"], collator([long_clip])["input_values"])


# ---------------------------------------------------------------------------------------------------------------------
# trainer
# ---------------------------------------------------------------------------------------------------------------------


def test_optimizer_groups_follow_the_original_recipe(audio_dir, tmp_path):
    trainer = make_trainer(tmp_path, build_pretraining_dataset(str(audio_dir)), tiny_config())
    optimizer = trainer.create_optimizer()
    model = trainer.model
    names = {id(param): name for name, param in model.named_parameters()}
    decayed = {names[id(p)] for group in optimizer.param_groups if group["weight_decay"] > 0 for p in group["params"]}
    not_decayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}

    assert decayed == set(decay_parameter_names(model))
    assert {"sslam.embeddings.cls_token", "sslam.embeddings.patch_embeddings.projection.weight"} <= decayed
    assert {"decoder.layers.0.conv.weight", "sslam.encoder.layer.0.attention.q_proj.weight"} <= decayed
    assert {"sslam.pre_layernorm.weight", "decoder.proj.bias", "sslam.encoder.layer.1.mlp.fc1.bias"} <= not_decayed
    assert not any(name.startswith("teacher.") for name in decayed | not_decayed)
    trainable = {name for name, param in model.named_parameters() if not name.startswith("teacher.")}
    assert decayed | not_decayed == trainable and not decayed & not_decayed
    group = optimizer.param_groups[0]
    assert group["betas"] == (0.9, 0.95) and group["weight_decay"] == 0.05
    assert trainer.args.max_grad_norm == 4.0 and trainer.args.lr_scheduler_type == "cosine"
    with pytest.raises(ValueError, match="remove_unused_columns"):
        SSLAMPretrainingTrainer(
            model=model, args=SSLAMPretrainingArguments(output_dir=str(tmp_path), remove_unused_columns=True)
        )


@pytest.mark.parametrize("objective", ["eat", "sslam"])
def test_training_steps_update_the_teacher_by_the_ema_rule(audio_dir, tmp_path, objective):
    config = tiny_config(objective, **FAST_EMA)
    recorder = StateRecorder()
    trainer = make_trainer(tmp_path, build_pretraining_dataset(str(audio_dir)), config, [recorder])
    trainer.train()

    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2 and all(np.isfinite(entry["loss"]) for entry in logs)
    terms = [key for key in logs[0] if key.startswith("loss_")]
    assert sorted(terms) == (
        ["loss_eat_cls_loss", "loss_eat_patch_loss"]
        + (["loss_mix_patch_loss"] if objective == "sslam" else [])
    )
    assert sum(logs[0][key] for key in terms) == pytest.approx(logs[0]["loss"], rel=1e-5)
    assert logs[0]["sample_size"] == (2 if objective == "eat" else 4) * 2 * 103
    ema = TeacherEMA.from_config(config)
    for step in (1, 2):
        decay = ema.decay_at(step)
        assert logs[step - 1]["ema_decay"] == pytest.approx(decay)
        before, after = recorder.states[step - 1], recorder.states[step]
        for name, param in trainer.model.sslam.named_parameters():
            expected = decay * before[f"teacher.{name}"] + (1 - decay) * after[f"sslam.{name}"]
            torch.testing.assert_close(after[f"teacher.{name}"], expected, rtol=0, atol=1e-6)
    first, last = recorder.states[0], recorder.states[2]
    assert not torch.equal(first["teacher.pre_layernorm.weight"], last["teacher.pre_layernorm.weight"])


def test_ema_callback_fires_once_per_optimizer_step_under_gradient_accumulation(audio_dir, tmp_path):
    ema, recorder = EMATeacherCallback(), StateRecorder()
    trainer = make_trainer(
        tmp_path,
        build_pretraining_dataset(str(audio_dir)),
        tiny_config(**FAST_EMA),
        [ema, recorder],
        gradient_accumulation_steps=2,
        max_steps=3,
        warmup_steps=0,
    )
    trainer.train()
    assert callbacks_of(trainer, EMATeacherCallback) == [ema] and len(callbacks_of(trainer, CollapseGuardCallback)) == 1
    assert ema.num_updates == 3 and ema.last_decay == ema.ema.decay_at(3)
    assert recorder.substeps == 3  # one non-final micro-batch per step, where the teacher did not move
    assert len({tuple(state["teacher.pre_layernorm.weight"].tolist()) for state in recorder.states}) == 4


def test_teacher_checksums_detect_a_different_teacher():
    torch.manual_seed(0)
    model = SSLAMForPreTraining(tiny_config())
    before = teacher_checksums(model.teacher)
    assert torch.equal(before, teacher_checksums(model.teacher))
    check_teacher_in_sync(model.teacher)  # a no-op without torch.distributed
    weight = model.teacher.encoder.layer[1].mlp.fc2.weight[0]
    with torch.no_grad():
        weight[[3, 4]] = weight[[4, 3]]  # same values, another order
    swapped = teacher_checksums(model.teacher)
    assert not torch.equal(before, swapped)
    with torch.no_grad():
        weight[3] += 1e-3
    assert not torch.equal(swapped, teacher_checksums(model.teacher))


def test_resume_continues_exactly(audio_dir, tmp_path):
    """5 uninterrupted steps vs the same run resumed from its step-2 checkpoint (crossing an epoch boundary)."""
    dataset = PretrainingAudioDataset(sorted(str(path) for path in audio_dir.glob("*.wav"))[:6])
    config = tiny_config("sslam")  # mask-token noise on: the RNG state must be restored too
    full = make_trainer(tmp_path / "full", dataset, config, max_steps=5, save_strategy="steps", save_steps=2)
    full.train()
    resumed = make_trainer(tmp_path / "resumed", dataset, config, max_steps=5)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))

    assert len(losses(full)) == 5
    np.testing.assert_allclose(losses(resumed)[-3:], losses(full)[-3:], rtol=1e-6, atol=1e-6)
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    for name, value in full_state.items():
        torch.testing.assert_close(resumed_state[name], value, rtol=0, atol=1e-6, msg=name)
    resumed_ema, full_ema = (callbacks_of(trainer, EMATeacherCallback)[0] for trainer in (resumed, full))
    assert resumed_ema.last_decay == full_ema.last_decay


# ---------------------------------------------------------------------------------------------------------------------
# export and CLI
# ---------------------------------------------------------------------------------------------------------------------


def test_save_encoder_writes_an_automodel_folder(tmp_path):
    from transformers import AutoModel

    import sslam.modeling_sslam  # noqa: F401  (registers the Auto classes)

    torch.manual_seed(0)
    model = SSLAMForPreTraining(tiny_config())
    save_encoder(model, tmp_path, SSLAMFeatureExtractor(max_length=FRAMES))
    encoder = AutoModel.from_pretrained(tmp_path)
    assert type(encoder).__name__ == "SSLAMModel"
    for name, value in model.sslam.state_dict().items():
        assert torch.equal(encoder.state_dict()[name], value)
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["max_length"] == FRAMES
    assert model.config.architectures != ["SSLAMModel"]  # the training model's config is left alone


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--preset {stage1,stage2}" in help_text and "--resume_from_checkpoint" in help_text
    assert "examples:" in help_text and "accelerate launch" in help_text


def test_cli_runs_two_steps_from_yaml(audio_dir, tmp_path):
    output = tmp_path / "run"
    settings = {
        "data": str(audio_dir),
        "output_dir": str(output),
        "preset": "stage1",
        "model_size": "tiny",
        "max_length": FRAMES,
        "clone_batch": 2,
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "warmup_steps": 1,
        "dataloader_num_workers": 0,
        "logging_steps": 1,
        "save_steps": 100,
    }
    config_file = tmp_path / "run.yaml"
    config_file.write_text("\n".join(f"{key}: {value}" for key, value in settings.items()))
    run = main(["--config", str(config_file), "--learning_rate", "1e-4"])

    assert run.trainer.state.global_step == 2 and run.layout.encoder == output / "encoder"
    assert run.trainer.args.learning_rate == 1e-4 and run.trainer.args.max_steps == 2  # flags beat the file
    state = json.loads((run.layout.trainer_state).read_text())
    assert state["log_history"] == run.trainer.state.log_history
    logs = [entry for entry in state["log_history"] if "loss" in entry]
    assert state["global_step"] == 2 and all(np.isfinite(entry["loss"]) for entry in logs)
    assert [entry["learning_rate"] for entry in logs] == [0.0, 1e-4]
    saved = load_file(output / "pretraining" / "model.safetensors")
    assert {key.split(".")[0] for key in saved} == {"sslam", "decoder", "teacher"}
    assert json.loads((output / "encoder" / "config.json").read_text())["architectures"] == ["SSLAMModel"]
    assert json.loads((output / "pretraining" / "config.json").read_text())["objective"] == "eat"


def test_presets_set_the_recipe_and_overrides_win(tmp_path):
    stage1 = SSLAMPretrainingArguments.with_preset("stage1", output_dir=str(tmp_path), max_steps=7)
    assert (stage1.objective, stage1.clone_batch, stage1.learning_rate, stage1.max_steps) == ("eat", 16, 5e-4, 7)
    assert (stage1.adam_beta2, stage1.weight_decay, stage1.max_grad_norm, stage1.remove_unused_columns) == (
        0.95, 0.05, 4.0, False
    )
    with pytest.raises(ValueError, match="init_from"):
        SSLAMPretrainingArguments.with_preset("stage2", output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown preset"):
        SSLAMPretrainingArguments.with_preset("stage3", output_dir=str(tmp_path))


def test_cli_errors(audio_dir, tmp_path, capsys):
    required = ["--output_dir", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(tmp_path / "nowhere"), "--model_size", "tiny", *required])
    assert exit_info.value.code == 2 and "error: Training data not found" in capsys.readouterr().err
    data = ["--data", str(audio_dir)]
    for argv in (
        [*data, *required, "--preset", "stage3"],
        [*data, *required, "--preset", "stage2"],  # Stage 2 needs --init_from
        [*data, *required, "--crop", "middle"],
        [*data, "--init_from", str(tmp_path), "--hidden_size", "64", *required],
        required,  # no --data
    ):
        with pytest.raises(SystemExit) as exit_info:
            parse_args(argv)
        assert exit_info.value.code == 2
    config_file = tmp_path / "bad.yaml"
    config_file.write_text("learning_rat: 1e-4\n")
    with pytest.raises(SystemExit):
        parse_args(["--config", str(config_file), "--data", str(audio_dir), *required])
    with pytest.raises(FileNotFoundError, match="config.json"):
        pretraining_folder(str(tmp_path))
