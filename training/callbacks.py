# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""Training policies of SSLAM pre-training as `TrainerCallback`s: the EMA teacher update, the collapse guard, the
divergence guard, the skipped-clip limit and the shard-stream position.

Each callback owns its state. Callbacks that want values in the training logs expose them through
`metrics_to_log()`; `SSLAMPretrainingTrainer.log` adds them to every training-loss log entry (and to the final
metrics). Callbacks that need what the `TrainerCallback` events do not carry get it from the trainer:
`observe_batch(loss=..., skipped=..., num_clips=...)` after each training micro-batch and `observe_grad_norm(norm)`
before each optimizer step.
"""

import math

import torch
from accelerate import PartialState
from accelerate.utils import extract_model_from_parallel
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from .checkpoints import newest_complete_checkpoint
from .ema import TeacherEMA
from .errors import DataLayoutChangedError, RepresentationCollapseError, TooManySkippedClipsError, TrainingDivergedError
from .shards import ShardedAudioStream


def sum_over_processes(values: list[float]) -> list[float]:
    """Element-wise sums of `values` over all processes (a collective call; the values themselves without
    torch.distributed)."""
    tensor = torch.tensor(values, dtype=torch.float64)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        tensor = tensor.to(PartialState().device)
        torch.distributed.all_reduce(tensor)
    return tensor.cpu().tolist()


def non_finite_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the parameters and buffers of `model` (this process's shards under FSDP) holding NaN or inf."""
    names = []
    for name, tensor in model.state_dict().items():
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        if local.is_floating_point() and not bool(torch.isfinite(local).all()):
            names.append(name)
    return names


def saved_state(state, callback_class: type) -> dict | None:
    """What a checkpoint recorded for `callback_class` (its `ExportableState.state()`), or None in a new run."""
    if not state.global_step or not isinstance(state.stateful_callbacks, dict):
        return None
    return state.stateful_callbacks.get(callback_class.__name__)


def teacher_checksums(teacher: torch.nn.Module) -> torch.Tensor:
    """`(num_tensors, 2)` float64: sum and index-weighted sum of every teacher tensor (order-sensitive)."""
    rows = []
    for tensor in teacher.state_dict().values():
        values = tensor.detach().double().flatten()
        weights = torch.arange(1, values.numel() + 1, dtype=torch.float64, device=values.device)
        rows.append(torch.stack([values.sum(), (values * weights).sum()]))
    return torch.stack(rows)


def check_teacher_in_sync(teacher: torch.nn.Module) -> None:
    """Raises `RuntimeError` if the teacher differs between processes (no-op without torch.distributed).

    Teachers stay identical across data-parallel ranks because every rank applies the same EMA rule to the same
    (all-reduced) student; this check makes that assumption visible in long runs.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    local = teacher_checksums(teacher)
    gathered = [torch.empty_like(local) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(gathered, local)
    different = [rank for rank, other in enumerate(gathered) if not torch.equal(other, gathered[0])]
    if different:
        raise RuntimeError(f"The EMA teacher of rank(s) {different} differs from rank 0's.")


class EMATeacherCallback(TrainerCallback):
    """Moves the frozen teacher of an `SSLAMForPreTraining` towards its student once per optimizer step.

    `on_step_end` fires after each optimizer step (never on gradient-accumulation micro-batches) with
    `state.global_step = k` completed updates; the teacher is then moved with the decay of step k, exactly the update
    the original applies before the forward of step k + 1. The schedule follows `global_step`, so it restarts at 0 in
    a new run (Stage 2) and continues after `resume_from_checkpoint`; the teacher itself is a submodule of the model and
    is saved with every checkpoint.

    Args:
        ema: the schedule; by default [`TeacherEMA.from_config`] of the model's config, at the start of training.
        sync_check_steps: every that many steps, check that the teacher is identical on every process (0 = never).

    Attributes:
        last_decay: the decay of the latest update (logged as `ema_decay`).
        num_updates: updates applied by this callback.
    """

    def __init__(self, ema: TeacherEMA | None = None, sync_check_steps: int = 0):
        if sync_check_steps < 0:
            raise ValueError(f"sync_check_steps must be >= 0, got {sync_check_steps}.")
        self.ema = ema
        self.sync_check_steps = sync_check_steps
        self.last_decay: float | None = None
        self.num_updates = 0

    @classmethod
    def from_config(cls, config, sync_check_steps: int = 0) -> "EMATeacherCallback":
        """The callback with the schedule of an `SSLAMConfig`."""
        return cls(TeacherEMA.from_config(config), sync_check_steps)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.ema is None:
            self.ema = TeacherEMA.from_config(extract_model_from_parallel(model).config)
        if state.global_step:  # a resumed run: the decay of the checkpoint's last update, for the logs
            self.last_decay = self.ema.decay_at(state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        model = extract_model_from_parallel(model)
        self.last_decay = self.ema.step(model.teacher, model.sslam, state.global_step)
        self.num_updates += 1
        if self.sync_check_steps and state.global_step % self.sync_check_steps == 0:
            check_teacher_in_sync(model.teacher)

    def metrics_to_log(self) -> dict[str, float]:
        return {} if self.last_decay is None else {"ema_decay": self.last_decay}


class CollapseGuardCallback(TrainerCallback):
    """Stops training with a `RepresentationCollapseError` when, after `check_after_steps` optimizer steps, a logged
    `target_var` or `pred_var` (the spread of the teacher targets / decoder predictions at the masked patches, averaged
    over the logging window) falls below its minimum. A minimum of 0 disables that check.

    Build it from the model config's `min_target_var`, `min_pred_var` and `collapse_check_after_steps` with
    [`CollapseGuardCallback.from_config`].
    """

    def __init__(self, min_target_var: float = 0.0, min_pred_var: float = 0.0, check_after_steps: int = 0):
        self.minimums = {"target_var": min_target_var, "pred_var": min_pred_var}
        self.check_after_steps = check_after_steps

    @classmethod
    def from_config(cls, config) -> "CollapseGuardCallback":
        return cls(config.min_target_var, config.min_pred_var, config.collapse_check_after_steps)

    def check(self, logs: dict[str, float], step: int) -> None:
        """Raises `RepresentationCollapseError` for the first logged spread below its minimum."""
        if step <= self.check_after_steps:
            return
        for name, minimum in self.minimums.items():
            if minimum > 0 and name in logs and logs[name] < minimum:
                raise RepresentationCollapseError(
                    f"{name} is {logs[name]:.6g} < min_{name} = {minimum} at step {step} (checked after "
                    f"{self.check_after_steps} steps): the representation is collapsing."
                )

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.check(logs or {}, state.global_step)


class DivergenceGuardCallback(TrainerCallback):
    """Stops training with a [`TrainingDivergedError`] naming the step when a micro-batch loss or the gradient norm
    of an optimizer step is NaN or infinite on any process, *before* that optimizer step: the weights stay those of
    the last good step, no non-finite weight reaches a checkpoint, and the newest checkpoint is kept as the last good
    state (the message names it).

    The trainer reports each training micro-batch's loss (`observe_batch`) and each step's gradient norm
    (`observe_grad_norm`); the check runs in `on_pre_optimizer_step` (one small all-reduce per step, so that every
    process stops together).
    """

    def __init__(self):
        self._losses: list[torch.Tensor] = []
        self._grad_norm = None

    def observe_batch(self, loss: torch.Tensor | None = None, **kwargs) -> None:
        if loss is not None:
            self._losses.append(loss.detach().float().reshape(()))

    def observe_grad_norm(self, grad_norm) -> None:
        self._grad_norm = grad_norm

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        losses = torch.stack(self._losses).cpu() if self._losses else torch.zeros(0)
        grad_norm = float(self._grad_norm) if self._grad_norm is not None else 0.0
        self._losses, self._grad_norm = [], None
        finite_losses, finite_norm = bool(torch.isfinite(losses).all()), math.isfinite(grad_norm)
        bad_loss, bad_norm = sum_over_processes([float(not finite_losses), float(not finite_norm)])
        if bad_loss or bad_norm:
            step = state.global_step + 1
            what = " and ".join(name for name, bad in (("loss", bad_loss), ("gradient norm", bad_norm)) if bad)
            raise TrainingDivergedError(
                f"training diverged at step {step}: non-finite {what} (losses on this process: "
                f"{[round(value, 6) for value in losses.tolist()]}, gradient norm {grad_norm}). Stopped before the "
                f"optimizer step; {last_good_state(args.output_dir, args.world_size)}. Resume from it with a lower "
                "--learning_rate (or check the data)."
            )


def last_good_state(output_dir: str, world_size: int) -> str:
    """A sentence naming the newest complete checkpoint of `output_dir` (or saying there is none)."""
    folder, _ = newest_complete_checkpoint(output_dir, world_size)
    if folder is None:
        return f"no checkpoint was saved in {output_dir}"
    return f"the newest complete checkpoint is {folder} (saved weights are always finite)"


class SkippedClipsCallback(TrainerCallback, ExportableState):
    """Counts the clips the collator skipped (undecodable, empty, non-finite, far out of range: it logs a warning
    naming each) and stops the run with a [`TooManySkippedClipsError`] when their fraction exceeds `max_fraction`.

    The check runs after every optimizer step on the counts of all processes, with at least `min_clips` clips in the
    denominator (so a few bad clips early in a run do not stop it: the first check allows `max_fraction *
    min_clips` skipped clips), and at the end of training on the exact fraction. `metrics_to_log()` reports
    `skipped_clips` (since the last log), `skipped_clips_total` and `skipped_fraction`; the totals are part of every
    checkpoint and continue after a resume.
    """

    def __init__(self, max_fraction: float = 0.01, min_clips: int = 1000):
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"max_skipped_fraction must be in [0, 1], got {max_fraction}.")
        self.max_fraction = max_fraction
        self.min_clips = min_clips
        self.skipped_total = 0
        self.clips_total = 0
        self.examples: list[str] = []  # the first skipped clips of this process, for the error message
        self._pending = [0, 0]  # skipped, clips of this process since the last optimizer step
        self._logged_skipped = 0

    def state(self) -> dict:
        return {
            "args": {"max_fraction": self.max_fraction, "min_clips": self.min_clips},
            "attributes": {"skipped_total": self.skipped_total, "clips_total": self.clips_total},
        }

    def observe_batch(self, skipped: list[str] = (), num_clips: int = 0, **kwargs) -> None:
        self._pending[0] += len(skipped)
        self._pending[1] += num_clips
        self.examples += [example.rstrip(".") for example in skipped[: max(0, 5 - len(self.examples))]]

    def on_train_begin(self, args, state, control, **kwargs):
        saved = saved_state(state, SkippedClipsCallback)
        if saved is not None:
            self.skipped_total = int(saved["attributes"]["skipped_total"])
            self.clips_total = int(saved["attributes"]["clips_total"])
            self._logged_skipped = self.skipped_total

    def on_step_end(self, args, state, control, **kwargs):
        skipped, clips = sum_over_processes(self._pending)
        self._pending = [0, 0]
        self.skipped_total += int(skipped)
        self.clips_total += int(clips)
        self.check(state.global_step, max(self.clips_total, self.min_clips))

    def on_train_end(self, args, state, control, **kwargs):
        self.check(state.global_step, self.clips_total)

    def check(self, step: int, denominator: int) -> None:
        """Raises [`TooManySkippedClipsError`] when `skipped_total > max_fraction * denominator`."""
        if self.skipped_total and self.skipped_total > self.max_fraction * denominator:
            raise TooManySkippedClipsError(
                f"{self.skipped_total} of {self.clips_total} clips ({self.skipped_total / self.clips_total:.1%}) "
                f"could not be used by step {step}, more than --max_skipped_fraction {self.max_fraction}; "
                f"e.g. {'; '.join(self.examples) or 'see the warnings of the other processes'}."
            )

    def metrics_to_log(self) -> dict[str, float]:
        window = self.skipped_total - self._logged_skipped
        self._logged_skipped = self.skipped_total
        fraction = self.skipped_total / self.clips_total if self.clips_total else 0.0
        return {"skipped_clips": window, "skipped_clips_total": self.skipped_total, "skipped_fraction": fraction}


class ShardPositionCallback(TrainerCallback, ExportableState):
    """Resumes a [`ShardedAudioStream`] at its exact position and keeps its layout in every checkpoint.

    In `on_train_begin` it tells the stream (the train dataloader's dataset) where the run is: epoch
    `global_step // steps_per_epoch`, and `(global_step % steps_per_epoch) * gradient_accumulation_steps` batches
    into it (the stream skips those clips as raw tar members, before decoding). A resume with another layout
    (processes, workers, batch size, seed, buffer or shards) raises [`DataLayoutChangedError`]: the data order depends
    on all of them. After each step it sets `state.epoch` to `global_step / steps_per_epoch` (the value of an
    uninterrupted run; the Trainer counts a resumed epoch from the resume point).
    """

    def __init__(self, layout: dict | None = None):
        self.layout = layout
        self._steps_per_epoch = None

    def state(self) -> dict:
        return {"args": {"layout": self.layout}, "attributes": {}}

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        stream = train_dataloader.dataset
        if not isinstance(stream, ShardedAudioStream):
            raise TypeError(f"ShardPositionCallback needs a ShardedAudioStream, got {type(stream).__name__}.")
        saved = saved_state(state, ShardPositionCallback)
        if saved is not None and saved["args"]["layout"] != stream.layout:
            before, now = saved["args"]["layout"], stream.layout
            changed = {key: (before.get(key), now[key]) for key in now if before.get(key) != now[key]}
            changed = {key: "changed" if key in ("shards", "num_samples") else value for key, value in changed.items()}
            raise DataLayoutChangedError(
                f"the checkpoint's shard stream had another layout ({changed}); resume with the same processes, "
                "--dataloader_num_workers, --per_device_train_batch_size, --seed, --shuffle_buffer_size and shards."
            )
        self.layout = stream.layout
        batches = len(stream) // stream.batch_size
        accumulation = args.gradient_accumulation_steps
        self._steps_per_epoch = batches // accumulation
        epoch, steps_done = divmod(state.global_step, self._steps_per_epoch)
        stream.set_position(epoch, steps_done * accumulation)

    def on_step_end(self, args, state, control, **kwargs):
        state.epoch = state.global_step / self._steps_per_epoch


__all__ = [
    "CollapseGuardCallback",
    "DivergenceGuardCallback",
    "EMATeacherCallback",
    "RepresentationCollapseError",
    "ShardPositionCallback",
    "SkippedClipsCallback",
    "check_teacher_in_sync",
    "non_finite_tensors",
    "sum_over_processes",
    "teacher_checksums",
]
