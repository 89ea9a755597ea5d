"""Injected faults in pre-training: `kill -9` during a checkpoint save, half-written checkpoints, checkpoints without
optimizer / RNG state, a diverging run, bad clips (skipped, counted, limited), too little data, and the command line's
usage errors (one `error:` line, exit code 2, before any work)."""

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file
from transformers import TrainerControl, TrainerState

from sslam.training.arguments import SSLAMPretrainingArguments, parse_args
from sslam.training.callbacks import DivergenceGuardCallback, SkippedClipsCallback
from sslam.training.checkpoints import checkpoint_problems, resolve_resume_checkpoint
from sslam.training.data import EpochShuffleSampler
from sslam.training.errors import CheckpointError, TooManySkippedClipsError, TrainingDivergedError
from sslam.training.pretrain import build_trainer, main, run_pretraining

REPO_ROOT = Path(__file__).resolve().parents[1]
FLAGS = [
    "--preset", "stage1", "--model_size", "tiny", "--max_length", "128", "--clone_batch", "2",
    "--per_device_train_batch_size", "2", "--dataloader_num_workers", "0", "--logging_steps", "1",
    "--warmup_steps", "1", "--seed", "3", "--learning_rate", "1e-3", "--disable_tqdm", "true",
]  # fmt: skip


def write_wav(path: Path, samples: np.ndarray, subtype: str | None = None) -> Path:
    soundfile.write(path, samples, 16000, subtype=subtype)
    return path


def noise(seed: int, seconds: float = 1.0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


@pytest.fixture(scope="module")
def good_audio(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("good")
    for index in range(8):
        write_wav(folder / f"clip{index}.wav", noise(index, 0.6 + 0.1 * index))
    return folder


def losses(log_history: list[dict]) -> list[float]:
    return [entry["loss"] for entry in log_history if "loss" in entry]


def last_error_line(stderr: str) -> str:
    """The `error:` line of a run's stderr (warnings may precede it); asserts it is the last line."""
    error = stderr[stderr.rindex("error:") :]
    assert error.count("\n") <= 1, error
    return error.strip()


# ---------------------------------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------------------------------

KILLING_RUN = """
    import io, os, signal, sys
    import torch
    from transformers import Trainer
    from sslam.training.pretrain import main

    original = Trainer._save_optimizer_and_scheduler

    def save_half_then_die(self, output_dir):
        # kill -9 in the middle of writing optimizer.pt of checkpoint-{kill_step} (model.safetensors is written)
        if self.state.global_step == {kill_step}:
            buffer = io.BytesIO()
            torch.save(self.optimizer.state_dict(), buffer)
            with open(os.path.join(output_dir, "optimizer.pt"), "wb") as handle:
                handle.write(buffer.getvalue()[: buffer.tell() // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, output_dir)

    Trainer._save_optimizer_and_scheduler = save_half_then_die
    main(sys.argv[1:])
"""


@pytest.fixture(scope="module")
def uninterrupted(good_audio, tmp_path_factory) -> tuple[Path, list[dict]]:
    """6 steps (8 clips, 4 steps per epoch: crosses an epoch boundary), checkpoints every 2 steps."""
    output = tmp_path_factory.mktemp("uninterrupted") / "run"
    run = main([*FLAGS, "--data", str(good_audio), "--max_steps", "6", "--save_steps", "2", "--output_dir",
                str(output)])  # fmt: skip
    return output, run.trainer.state.log_history


def test_kill_9_during_a_checkpoint_save_then_resume_gives_identical_losses(good_audio, uninterrupted, tmp_path):
    output = tmp_path / "run"
    script = tmp_path / "killing_run.py"
    script.write_text(textwrap.dedent(KILLING_RUN).replace("{kill_step}", "4"))
    argv = [*FLAGS, "--data", str(good_audio), "--max_steps", "6", "--save_steps", "2", "--output_dir", str(output)]
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    killed = subprocess.run([sys.executable, str(script), *argv], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    # the half-written checkpoint never became a checkpoint-N folder
    assert sorted(path.name for path in output.iterdir()) == [".incomplete", "checkpoint-2"]
    partial = output / ".incomplete" / "checkpoint-4"
    assert (partial / "model.safetensors").is_file()
    assert "optimizer.pt is truncated" in " ".join(checkpoint_problems(partial))
    assert checkpoint_problems(output / "checkpoint-2") == []

    resumed = main([*argv, "--resume_from_checkpoint", "last"])
    expected = losses(uninterrupted[1])
    assert len(expected) == 6 and losses(resumed.trainer.state.log_history) == expected
    assert sorted(path.name for path in output.iterdir()) == [
        "checkpoint-2", "checkpoint-4", "checkpoint-6", "encoder", "pretraining", "trainer_state.json"
    ]  # fmt: skip
    reference = load_file(uninterrupted[0] / "pretraining" / "model.safetensors")
    for name, value in load_file(output / "pretraining" / "model.safetensors").items():
        assert torch.equal(value, reference[name]), name


def damage(checkpoint: Path, how: str) -> None:
    if how == "no trainer_state.json":
        (checkpoint / "trainer_state.json").unlink()
    else:
        name = how.split()[1]
        data = (checkpoint / name).read_bytes()
        (checkpoint / name).write_bytes(data[: len(data) // 3])


@pytest.mark.parametrize(
    "how, reason",
    [
        ("no trainer_state.json", "no trainer_state.json"),
        ("truncated model.safetensors", "model.safetensors is truncated or corrupt"),
        ("truncated optimizer.pt", "optimizer.pt is truncated or corrupt"),
        ("truncated rng_state.pth", "rng_state.pth is truncated or corrupt"),
    ],
)
def test_last_skips_a_half_written_newest_checkpoint_and_says_so(uninterrupted, tmp_path, caplog, how, reason):
    output = tmp_path / "run"
    output.mkdir()
    for step in (2, 4):
        shutil.copytree(uninterrupted[0] / f"checkpoint-{step}", output / f"checkpoint-{step}")
    damage(output / "checkpoint-4", how)
    assert resolve_resume_checkpoint("last", str(output)) == str(output / "checkpoint-2")
    assert f"Skipping incomplete checkpoint {output / 'checkpoint-4'}: {reason}" in caplog.text
    with pytest.raises(CheckpointError, match=f"cannot resume exactly from .*checkpoint-4: {reason}"):
        resolve_resume_checkpoint(str(output / "checkpoint-4"), str(output))


def test_resume_falls_back_past_a_broken_checkpoint_and_matches(good_audio, uninterrupted, tmp_path, caplog):
    output = tmp_path / "run"
    output.mkdir()
    for step in (2, 4):
        shutil.copytree(uninterrupted[0] / f"checkpoint-{step}", output / f"checkpoint-{step}")
    damage(output / "checkpoint-4", "truncated model.safetensors")
    run = main([*FLAGS, "--data", str(good_audio), "--max_steps", "6", "--save_steps", "2", "--output_dir", str(output),
                "--resume_from_checkpoint", "last"])  # fmt: skip
    assert "Skipping incomplete checkpoint" in caplog.text and f"Resuming from {output / 'checkpoint-2'}" in caplog.text
    assert losses(run.trainer.state.log_history) == losses(uninterrupted[1])
    assert checkpoint_problems(output / "checkpoint-4") == []  # rewritten, complete


@pytest.mark.parametrize("missing", ["optimizer.pt", "rng_state.pth", "scheduler.pt"])
def test_resume_without_optimizer_or_rng_state_is_an_error(good_audio, uninterrupted, tmp_path, capsys, missing):
    """Resuming with a fresh optimizer (or RNG) would silently differ from the uninterrupted run: refused, with the
    way to start a new run from the weights (--init_from)."""
    output = tmp_path / "run"
    shutil.copytree(uninterrupted[0] / "checkpoint-2", output / "checkpoint-2")
    (output / "checkpoint-2" / missing).unlink()
    argv = [*FLAGS, "--data", str(good_audio), "--max_steps", "6", "--output_dir", str(output)]
    for resume, message in (
        (str(output / "checkpoint-2"), f"cannot resume exactly from {output / 'checkpoint-2'}: no {missing}"),
        ("last", f"--resume_from_checkpoint last: no complete checkpoint in {output} (checkpoint-2: no {missing}"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--resume_from_checkpoint", resume])
        error = last_error_line(capsys.readouterr().err)
        assert exit_info.value.code == 1 and error.startswith(f"error: {message}"), error
    assert "--init_from" in error or resume == "last"
    assert not (output / "encoder").exists()


def test_resume_last_without_any_checkpoint_is_an_error(good_audio, tmp_path):
    args = parse_args([*FLAGS, "--data", str(good_audio), "--output_dir", str(tmp_path),
                       "--resume_from_checkpoint", "last"])  # fmt: skip
    with pytest.raises(CheckpointError, match="it has no checkpoint-N folder"):
        run_pretraining(args)


# ---------------------------------------------------------------------------------------------------------------------
# divergence
# ---------------------------------------------------------------------------------------------------------------------


def test_a_diverging_run_stops_loudly_and_saves_no_non_finite_weights(good_audio, tmp_path, capsys):
    output = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main([*FLAGS, "--data", str(good_audio), "--learning_rate", "1e6", "--warmup_steps", "0", "--max_steps", "20",
              "--save_steps", "1", "--output_dir", str(output)])  # fmt: skip
    error = last_error_line(capsys.readouterr().err)
    assert exit_info.value.code == 1
    step = int(error.split("training diverged at step ")[1].split(":")[0])
    assert 1 < step < 20 and "non-finite loss" in error and f"{output / f'checkpoint-{step - 1}'}" in error
    assert not (output / "encoder").exists() and not (output / "pretraining").exists()
    checkpoints = sorted(output.glob("checkpoint-*"))
    assert [path.name for path in checkpoints] == [f"checkpoint-{n}" for n in range(1, step)]
    for checkpoint in checkpoints:
        assert all(torch.isfinite(value).all() for value in load_file(checkpoint / "model.safetensors").values())
        logged = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
        assert all(math.isfinite(value) and value > 0 for value in losses(logged))  # the real loss, never a 0


def guard_state(step: int) -> TrainerState:
    state = TrainerState()
    state.global_step = step
    return state


def test_divergence_guard_stops_before_the_optimizer_step(tmp_path):
    args = SSLAMPretrainingArguments(output_dir=str(tmp_path))
    guard = DivergenceGuardCallback()
    guard.observe_batch(loss=torch.tensor(2.0))
    guard.observe_grad_norm(torch.tensor(3.0))
    guard.on_pre_optimizer_step(args, guard_state(4), TrainerControl())  # finite: passes
    cases = ((2.0, float("inf"), "non-finite gradient norm"), (float("nan"), 1.0, "non-finite loss"))
    for loss, norm, message in cases:
        guard.observe_batch(loss=torch.tensor(1.0))
        guard.observe_batch(loss=torch.tensor(loss))
        guard.observe_grad_norm(torch.tensor(norm))
        with pytest.raises(TrainingDivergedError, match=f"diverged at step 8: {message}.*no checkpoint was saved"):
            guard.on_pre_optimizer_step(args, guard_state(7), TrainerControl())


def test_non_finite_weights_are_never_saved(good_audio, tmp_path):
    args = parse_args([*FLAGS, "--data", str(good_audio), "--max_steps", "2", "--output_dir", str(tmp_path)])
    trainer = build_trainer(args)
    with torch.no_grad():
        trainer.model.decoder.proj.weight[0, 0] = float("nan")
    with pytest.raises(TrainingDivergedError, match=r"holds NaN or inf values at step 0 \(in decoder.proj.weight\)"):
        trainer.save_model(str(tmp_path / "model"))
    with pytest.raises(TrainingDivergedError):
        trainer._save_checkpoint(trainer.model, None)
    assert not (tmp_path / "model").exists() and not list(tmp_path.glob("checkpoint-*"))


# ---------------------------------------------------------------------------------------------------------------------
# bad clips and too little data
# ---------------------------------------------------------------------------------------------------------------------

BAD_CLIPS = {
    "corrupt.wav": "cannot be decoded",
    "empty.wav": "empty",
    "nan.wav": "contains NaN or infinite samples",
    "huge.wav": "far outside [-1, 1]",
    "int16_scale.wav": "far outside [-1, 1]",
}


@pytest.fixture(scope="module")
def mixed_audio(tmp_path_factory) -> Path:
    """7 good clips and 5 bad ones: corrupt bytes, an empty WAV, a NaN-valued WAV, samples of 1e20, int16-scale
    floats."""
    folder = tmp_path_factory.mktemp("mixed")
    for index in range(7):
        write_wav(folder / f"good{index}.wav", noise(index))
    (folder / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    write_wav(folder / "empty.wav", np.zeros(0, dtype=np.float32))
    nan_clip = noise(20)
    nan_clip[300] = np.nan
    write_wav(folder / "nan.wav", nan_clip, "FLOAT")
    write_wav(folder / "huge.wav", noise(21) * 1e21, "FLOAT")
    write_wav(folder / "int16_scale.wav", noise(22) * 32767, "FLOAT")
    return folder


def test_bad_clips_are_skipped_named_and_counted_and_the_run_completes(mixed_audio, tmp_path, caplog):
    run = main([*FLAGS, "--data", str(mixed_audio), "--max_steps", "6", "--save_steps", "1000", "--output_dir",
                str(tmp_path / "run"), "--max_skipped_fraction", "0.5"])  # fmt: skip (12 clips: one epoch)
    for name, reason in BAD_CLIPS.items():
        assert any(f"skipping clip {mixed_audio / name}: " in line and reason in line for line in caplog.messages), name
    history = run.trainer.state.log_history
    step_logs = [entry for entry in history if "grad_norm" in entry]
    assert len(step_logs) == 6 and sum(entry["skipped_clips"] for entry in step_logs) == 5
    assert history[-1]["skipped_clips_total"] == 5 and history[-1]["skipped_fraction"] == pytest.approx(5 / 12)
    assert all(math.isfinite(entry["loss"]) and entry["loss"] > 1 for entry in step_logs if "loss" in entry)
    assert run.trainer.state.global_step == 6 and (tmp_path / "run" / "encoder" / "model.safetensors").is_file()


def test_too_many_bad_clips_stop_the_run_with_an_error(mixed_audio, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # default limit 1 %: checked exactly at the end
        main([*FLAGS, "--data", str(mixed_audio), "--max_steps", "6", "--output_dir", str(tmp_path / "end")])
    error = last_error_line(capsys.readouterr().err)
    assert exit_info.value.code == 1 and error.startswith("error: 5 of 12 clips (41.7%) could not be used by step 6")
    assert "--max_skipped_fraction 0.01" in error and not (tmp_path / "end" / "encoder").exists()

    # with a limit of 0 the check during the run stops at the first step that drew a bad clip
    order = list(EpochShuffleSampler(12, seed=3))
    files = sorted(str(path) for path in mixed_audio.iterdir())
    first_bad_step = next(n // 2 + 1 for n, draw in enumerate(order) if Path(files[draw]).name in BAD_CLIPS)
    args = parse_args([*FLAGS, "--data", str(mixed_audio), "--max_steps", "6", "--max_skipped_fraction", "0",
                       "--output_dir", str(tmp_path / "early")])  # fmt: skip
    with pytest.raises(TooManySkippedClipsError, match=f"could not be used by step {first_bad_step},"):
        run_pretraining(args)


def test_a_batch_of_only_bad_clips_contributes_no_gradient(mixed_audio, tmp_path):
    """Every clip unusable (limit 1.0): each batch is a zero-weight placeholder; with SGD (no momentum, no weight
    decay) the student does not move, and no loss is logged (there is none)."""
    bad_only = tmp_path / "bad"
    bad_only.mkdir()
    for name in BAD_CLIPS:
        shutil.copy(mixed_audio / name, bad_only / name)
    trainer = build_trainer(parse_args([*FLAGS, "--data", str(bad_only), "--max_steps", "2", "--optim", "sgd",
                                        "--weight_decay", "0", "--max_skipped_fraction", "1", "--output_dir",
                                        str(tmp_path / "run")]))  # fmt: skip
    before = {name: value.clone() for name, value in trainer.model.sslam.state_dict().items()}
    trainer.train()
    for name, value in trainer.model.sslam.state_dict().items():
        assert torch.equal(value, before[name]), name
    step_logs = [entry for entry in trainer.state.log_history if "grad_norm" in entry]
    assert len(step_logs) == 2 and all("loss" not in entry and entry["grad_norm"] == 0 for entry in step_logs)
    assert trainer.state.log_history[-1]["skipped_clips_total"] == 4


@pytest.mark.parametrize("case", ["3 clips, batch 4", "2 unusable clips"])
def test_fewer_usable_clips_than_one_batch_is_an_error_not_an_untrained_encoder(mixed_audio, good_audio, tmp_path,
                                                                                capsys, case):  # fmt: skip
    data = tmp_path / "data"
    data.mkdir()
    if case == "3 clips, batch 4":
        for index in range(3):
            shutil.copy(good_audio / f"clip{index}.wav", data)
        argv, message = ["--per_device_train_batch_size", "4"], "error: 3 clip(s), fewer than one batch of 4 clips"
    else:
        shutil.copy(mixed_audio / "corrupt.wav", data)
        shutil.copy(mixed_audio / "empty.wav", data)
        argv, message = [], "error: 4 of 4 clips (100.0%) could not be used by step 2"  # 2 steps of 2
    with pytest.raises(SystemExit) as exit_info:
        main([*FLAGS, "--data", str(data), "--max_steps", "2", "--output_dir", str(tmp_path / "run"), *argv])
    assert exit_info.value.code == 1 and last_error_line(capsys.readouterr().err).startswith(message)
    assert not (tmp_path / "run" / "encoder").exists() and not (tmp_path / "run" / "pretraining").exists()


def test_collator_skips_bad_clips_per_item_and_keeps_stage_2_pairs(mixed_audio):
    from sslam.modeling_sslam.configuration_sslam import SSLAMConfig
    from sslam.modeling_sslam.feature_extraction_sslam import SSLAMFeatureExtractor
    from sslam.training.arguments import MODEL_SIZES
    from sslam.training.collator import SSLAMPretrainingCollator, UnusableClipError

    config = SSLAMConfig(
        **MODEL_SIZES["tiny"], objective="sslam", clone_batch=2, max_length=256, unmixed_window_frames=64
    )
    collator = SSLAMPretrainingCollator.from_config(config, SSLAMFeatureExtractor(max_length=256), seed=1)
    good = [{"audio": str(mixed_audio / f"good{i}.wav"), "epoch": 0, "index": i} for i in range(2)]
    bad = {"audio": str(mixed_audio / "nan.wav"), "epoch": 0, "index": 9}
    clean = collator(good)
    batch = collator([good[0], bad, good[1]])
    assert batch["input_values"].shape[0] == 2 and batch["num_clips"] == 3
    assert batch["skipped_clips"] == [f"{mixed_audio / 'nan.wav'}: contains NaN or infinite samples"]
    assert torch.equal(batch["mask"], clean["mask"]) and torch.equal(batch["input_values"], clean["input_values"])
    lone = collator([bad, good[0]])  # Stage 2 mixes pairs: a lone usable clip cannot be used either
    assert lone["input_values"].shape[0] == 2 and lone["input_values"].std() < 1e-5  # silent placeholders
    assert len(lone["skipped_clips"]) == lone["num_clips"] == 2
    assert "left without a clip to mix with" in lone["skipped_clips"][1]
    strict = SSLAMPretrainingCollator.from_config(config, SSLAMFeatureExtractor(max_length=256), skip_bad_clips=False)
    with pytest.raises(UnusableClipError, match="nan.wav: contains NaN"):
        strict([good[0], bad])


def test_skip_counts_continue_after_a_resume():
    callback = SkippedClipsCallback(max_fraction=0.5)
    state = guard_state(3)
    state.stateful_callbacks = {"SkippedClipsCallback": {"attributes": {"skipped_total": 4, "clips_total": 40}}}
    callback.on_train_begin(None, state, TrainerControl())
    callback.observe_batch(skipped=["a.wav: is empty"], num_clips=2)
    callback.on_step_end(None, state, TrainerControl())
    assert callback.metrics_to_log() == {"skipped_clips": 1, "skipped_clips_total": 5, "skipped_fraction": 5 / 42}
    with pytest.raises(ValueError, match="max_skipped_fraction must be in"):
        SkippedClipsCallback(max_fraction=1.5)


# ---------------------------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max_steps", "-5"], "max_steps must be a positive number of optimizer steps (or -1"),
        (["--max_steps", "0"], "max_steps must be a positive number of optimizer steps"),
        (["--clone_batch", "0"], "clone_batch must be a positive integer, got 0"),
        (["--gradient_accumulation_steps", "0"], "gradient_accumulation_steps must be a positive integer, got 0"),
        (["--max_grad_norm", "-1"], "max_grad_norm must be >= 0 (0 = no clipping), got -1.0"),
        (["--max_skipped_fraction", "2"], "max_skipped_fraction must be in [0, 1], got 2.0"),
        (["--output_dir", "{file}"], "output_dir {file} is a file, not a folder"),
        (["--output_dir", "{file}/sub"], "output_dir {file}/sub cannot be written"),
        (["--output_dir", "/proc/sslam-not-writable"], "output_dir /proc/sslam-not-writable cannot be written"),
        (["--max_steps", "nine"], "argument --max_steps/--max-steps: invalid int value: 'nine'"),
        (["--resume_from_checkpoint", "{file}"], "resume_from_checkpoint {file} is not a folder"),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2_before_any_work(good_audio, tmp_path, capsys, monkeypatch,
                                                                    flags, message):  # fmt: skip
    monkeypatch.setattr("sslam.training.pretrain.build_trainer", lambda args: pytest.fail("work started"))
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    flags = [flag.replace("{file}", str(a_file)) for flag in flags]
    argv = [*FLAGS, "--data", str(good_audio), "--output_dir", str(tmp_path / "run"), *flags]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert stderr.count("\n") == 1 and stderr.startswith(f"error: {message.replace('{file}', str(a_file))}"), stderr
