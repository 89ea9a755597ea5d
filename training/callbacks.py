# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""Training policies of SSLAM pre-training as `TrainerCallback`s: the EMA teacher update and the collapse guard.

Each callback owns its state. Callbacks that want values in the training logs expose them through
`metrics_to_log()`; `SSLAMPretrainingTrainer.log` adds them to every training-loss log entry.
"""

import torch
from accelerate.utils import extract_model_from_parallel
from transformers import TrainerCallback

from .ema import TeacherEMA


class RepresentationCollapseError(RuntimeError):
    """The target or prediction spread fell below its configured minimum after the warm-up."""


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


__all__ = [
    "CollapseGuardCallback",
    "EMATeacherCallback",
    "RepresentationCollapseError",
    "check_teacher_in_sync",
    "teacher_checksums",
]
