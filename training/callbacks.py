# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""The EMA teacher update as a `TrainerCallback`."""

import torch
from accelerate.utils import extract_model_from_parallel
from transformers import TrainerCallback


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
    """Blends the student into the frozen teacher once per optimizer step.

    `on_step_end` fires after each optimizer step (never on gradient-accumulation micro-batches) with
    `state.global_step = k` completed updates; the teacher is then moved with `decay = model.ema_decay_at(k)`, exactly
    the update the original applies before the forward of step k + 1. It calls `model.update_teacher(k)`, i.e.
    `model.ema_step(model.ema_decay_at(k))` plus recording k for the model's collapse guard. The decay schedule
    follows `global_step`, so it restarts at 0 in a new run (Stage 2) and continues after `resume_from_checkpoint`.

    Args:
        sync_check_steps: every that many steps, check that the teacher is identical on every process (0 = never).

    Attributes:
        last_decay: the decay of the latest update (logged by `SSLAMPretrainingTrainer` as `ema_decay`).
        num_updates: updates applied by this callback.
    """

    def __init__(self, sync_check_steps: int = 0):
        if sync_check_steps < 0:
            raise ValueError(f"sync_check_steps must be >= 0, got {sync_check_steps}.")
        self.sync_check_steps = sync_check_steps
        self.last_decay: float | None = None
        self.num_updates = 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        """Tells the model how many updates are done (non-zero after a resume), for its collapse guard."""
        extract_model_from_parallel(model).num_updates = state.global_step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        model = extract_model_from_parallel(model)
        self.last_decay = model.update_teacher(state.global_step)
        self.num_updates += 1
        if self.sync_check_steps and state.global_step % self.sync_check_steps == 0:
            check_teacher_in_sync(model.teacher)


__all__ = ["EMATeacherCallback", "check_teacher_in_sync", "teacher_checksums"]
