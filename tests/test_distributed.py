"""Data-parallel pre-training on 2 CPU processes (gloo) with `accelerate launch -m sslam.training.pretrain`.

Stage 1: two processes with 2 clips each make the same update as one process accumulating two micro-batches of 2
(the original optimises per-device micro-batches; see training/trainer.py). Stage 2: one 2-process step equals the
average of the two per-process half-batch steps computed alone (SGD, no clipping, so the update is linear).
Teachers are checked to be identical on both ranks after every step (`--ema_sync_check_steps 1`). Shards: a
2-process run from tar shards, one of whose processes is killed with SIGKILL after a checkpoint, resumes with
`--resume_from_checkpoint last` to the loss sequence of the uninterrupted run.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file

from sslam.modeling_sslam.configuration_sslam import SSLAMConfig
from sslam.modeling_sslam.pretraining_sslam import SSLAMForPreTraining
from sslam.training.data import EpochShuffleSampler
from sslam.training.arguments import MODEL_SIZES, parse_args
from sslam.training.ema import TeacherEMA
from sslam.training.pretrain import build_trainer, main
from sslam.training.shards import write_shards

REPO_ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).parent / "accelerate"
TINY_FLAGS = [
    "--model_size", "tiny", "--max_length", "256", "--clone_batch", "2", "--unmixed_window_frames", "64",
    "--mask_noise_std", "0",  # the mask-token noise comes from each process's own RNG stream
    "--per_device_train_batch_size", "2", "--dataloader_num_workers", "0", "--logging_steps", "1", "--save_steps", "1000",
    "--seed", "3", "--ema_sync_check_steps", "1",
]  # fmt: skip

# a Stage-1 model to continue with Stage 2
STAGE1_TINY = dict(MODEL_SIZES["tiny"], objective="eat", max_length=256, clone_batch=2)

pytestmark = pytest.mark.skipif(not ACCELERATE.exists(), reason=f"{ACCELERATE} not found")


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    for index in range(8):
        soundfile.write(folder / f"clip{index}.wav", (0.1 * rng.standard_normal(40_000)).astype(np.float32), 16000)
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_two_processes(argv: list[str], script: Path | None = None, succeed: bool = True, config_file=None):
    """`accelerate launch` on 2 CPU processes, as in the environment notes (--multi_gpu + ACCELERATE_USE_CPU), of
    `python -m sslam.training.pretrain` (or of `script`), with an accelerate `config_file` if given (flags win)."""
    target = [str(script)] if script else ["-m", "sslam.training.pretrain"]
    config = ["--config_file", str(config_file)] if config_file else []
    command = [
        str(ACCELERATE), "launch", *config, "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()), *target, *argv,
    ]  # fmt: skip
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert (result.returncode == 0) == succeed, (result.stdout + result.stderr)[-5000:]
    return result


def training_log(output_dir: Path) -> tuple[list[dict], dict]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "loss" in entry], state


def saved_weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(output_dir / "pretraining" / "model.safetensors")


def test_stage1_two_processes_match_one_process_with_accumulation(audio_dir, tmp_path):
    common = ["--preset", "stage1", "--data", str(audio_dir), "--max_steps", "2", "--learning_rate", "1e-4",
              "--warmup_steps", "0", *TINY_FLAGS]  # fmt: skip
    launch_two_processes([*common, "--output_dir", str(tmp_path / "ddp")])
    main([*common, "--output_dir", str(tmp_path / "single"), "--gradient_accumulation_steps", "2"])

    ddp_log, ddp_state = training_log(tmp_path / "ddp")
    single_log, _ = training_log(tmp_path / "single")
    assert ddp_state["epoch"] == 1.0  # 8 clips in 2 steps of 2 x 2: both processes shared one epoch
    for ddp_entry, single_entry in zip(ddp_log, single_log, strict=True):
        for key in ("loss", "loss_eat_cls_loss", "loss_eat_patch_loss", "grad_norm", "sample_size", "ema_decay"):
            assert ddp_entry[key] == pytest.approx(single_entry[key], rel=1e-5), key
    ddp_weights, single_weights = saved_weights(tmp_path / "ddp"), saved_weights(tmp_path / "single")
    for name, value in single_weights.items():
        torch.testing.assert_close(ddp_weights[name], value, rtol=0, atol=2e-6, msg=name)


def test_stage2_two_process_step_is_the_mean_of_the_half_batch_steps(audio_dir, tmp_path):
    stage1 = tmp_path / "stage1"
    torch.manual_seed(0)
    SSLAMForPreTraining(SSLAMConfig(**STAGE1_TINY)).save_pretrained(stage1)
    learning_rate = 0.5
    argv = ["--preset", "stage2", "--init_from", str(stage1), "--data", str(audio_dir), "--max_steps", "1",
            "--optim", "sgd", "--learning_rate", str(learning_rate), "--lr_scheduler_type", "constant",
            "--warmup_steps", "0", "--weight_decay", "0", "--max_grad_norm", "0",
            *[flag for flag in TINY_FLAGS if flag not in ("--model_size", "tiny")]]  # fmt: skip
    launch_two_processes([*argv, "--output_dir", str(tmp_path / "ddp")])

    trainer = build_trainer(parse_args([*argv, "--output_dir", str(tmp_path / "alone")]))
    model, dataset, collator = trainer.model.train(), trainer.train_dataset, trainer.data_collator
    order = list(EpochShuffleSampler(len(dataset), seed=3))
    initial = {name: value.clone() for name, value in model.state_dict().items()}
    gradients = []
    for rank in (0, 1):
        model.zero_grad()
        model(**collator([dataset[draw] for draw in order[2 * rank : 2 * rank + 2]])).loss.backward()
        gradients.append({name: param.grad.clone() for name, param in model.named_parameters() if param.requires_grad})

    ddp_weights = saved_weights(tmp_path / "ddp")
    for name, gradient in gradients[0].items():
        expected = initial[name] - learning_rate * (gradient + gradients[1][name]) / 2
        torch.testing.assert_close(ddp_weights[name], expected, rtol=0, atol=2e-6, msg=name)
    decay = TeacherEMA.from_config(model.config).decay_at(1)
    for name, param in model.sslam.named_parameters():
        expected = decay * initial[f"teacher.{name}"] + (1 - decay) * ddp_weights[f"sslam.{name}"]
        torch.testing.assert_close(ddp_weights[f"teacher.{name}"], expected, rtol=0, atol=1e-6, msg=name)


KILL_ONE_PROCESS = """
    import os, signal, sys
    from transformers import TrainerCallback
    import sslam.training.pretrain as pretrain

    class KillRankOne(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if args.process_index == 1 and state.global_step == {kill_step}:
                os.kill(os.getpid(), signal.SIGKILL)

    build_trainer = pretrain.build_trainer

    def build_trainer_that_dies(args):
        trainer = build_trainer(args)
        trainer.add_callback(KillRankOne())
        return trainer

    pretrain.build_trainer = build_trainer_that_dies
    pretrain.main(sys.argv[1:])
"""


def test_two_process_shard_run_resumes_after_kill_9_of_one_process(tmp_path):
    """8 shards of 2 clips, 2 processes x 1 worker: 4 batches of 2 per process and epoch. Rank 1 is killed with
    SIGKILL at step 4 (checkpoint-3 is the newest); the resumed run (mid-epoch, then into epoch 2) logs the same 6
    losses as the uninterrupted run and saves the same weights."""
    rng = np.random.default_rng(1)
    clips = [{"array": (0.1 * rng.standard_normal(8000)).astype(np.float32), "sampling_rate": 16000} for _ in range(16)]
    shards = tmp_path / "shards"
    write_shards(clips, shards, clips_per_shard=2)
    common = ["--preset", "stage1", "--data", str(shards), "--max_steps", "6", "--learning_rate", "1e-3",
              "--warmup_steps", "1", *TINY_FLAGS, "--dataloader_num_workers", "1", "--save_steps", "3"]  # fmt: skip
    ddp_config = REPO_ROOT / "training" / "accelerate_configs" / "ddp.yaml"  # the documented config
    launch_two_processes([*common, "--output_dir", str(tmp_path / "full")], config_file=ddp_config)

    script = tmp_path / "kill_one_process.py"
    script.write_text(textwrap.dedent(KILL_ONE_PROCESS).replace("{kill_step}", "4"))
    killed = tmp_path / "killed"
    result = launch_two_processes([*common, "--output_dir", str(killed)], script=script, succeed=False,
                                  config_file=ddp_config)  # fmt: skip
    assert "rank      : 1 (local_rank: 1)\n  exitcode  : -9" in result.stderr  # torchrun's report: killed by SIGKILL
    assert sorted(path.name for path in killed.iterdir()) == ["checkpoint-3"]
    launch_two_processes([*common, "--output_dir", str(killed), "--resume_from_checkpoint", "last"],
                         config_file=ddp_config)  # fmt: skip

    full_log, full_state = training_log(tmp_path / "full")
    resumed_log, resumed_state = training_log(killed)
    assert len(full_log) == 6 and [entry["loss"] for entry in resumed_log] == [entry["loss"] for entry in full_log]
    assert resumed_state["epoch"] == full_state["epoch"] == 1.5
    full_weights, resumed_weights = saved_weights(tmp_path / "full"), saved_weights(killed)
    for name, value in full_weights.items():
        assert torch.equal(resumed_weights[name], value), name
