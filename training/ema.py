# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""The EMA teacher update: the decay schedule and the in-place update, as the original fairseq `EMAModule` applies
them (after every optimizer step, in float32)."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TeacherEMA:
    """`teacher = decay * teacher + (1 - decay) * student` after every optimizer step, with the decay annealed
    linearly from `decay` to `end_decay` over `anneal_end_step` updates (constant when both are equal).

    Build it from a model config with [`TeacherEMA.from_config`]; [`EMATeacherCallback`] applies it during training.
    """

    decay: float
    end_decay: float
    anneal_end_step: int

    @classmethod
    def from_config(cls, config) -> "TeacherEMA":
        """The schedule of an `SSLAMConfig` (`ema_decay`, `ema_end_decay`, `ema_anneal_end_step`)."""
        return cls(config.ema_decay, config.ema_end_decay, config.ema_anneal_end_step)

    def decay_at(self, step: int) -> float:
        """The decay after `step` optimizer updates (the original's `get_annealed_rate`)."""
        if self.decay == self.end_decay:
            return self.decay
        if step >= self.anneal_end_step:
            return self.end_decay
        return self.end_decay - (self.end_decay - self.decay) * (1 - step / self.anneal_end_step)

    @staticmethod
    @torch.no_grad()
    def update(teacher: torch.nn.Module, student: torch.nn.Module, decay: float) -> None:
        """One in-place update in the teacher's precision (float32): trainable student parameters are blended in,
        frozen parameters and buffers (the position table) are copied. Nothing changes when `decay >= 1`."""
        if decay >= 1:
            return
        teacher_params = dict(teacher.named_parameters())
        blended, sources = [], []
        for name, param in student.named_parameters():
            target = teacher_params.get(name)
            if target is None:
                continue
            value = param.detach().to(target.dtype)
            if param.requires_grad:
                blended.append(target)
                sources.append(value)
            else:
                target.copy_(value)
        if blended:
            torch._foreach_mul_(blended, decay)
            torch._foreach_add_(blended, sources, alpha=1 - decay)
        teacher_buffers = dict(teacher.named_buffers())
        for name, buffer in student.named_buffers():
            if name in teacher_buffers:
                teacher_buffers[name].copy_(buffer)

    def step(self, teacher: torch.nn.Module, student: torch.nn.Module, step: int) -> float:
        """The update after optimizer step `step` (1-based): `update(..., decay_at(step))`. Returns the decay."""
        decay = self.decay_at(step)
        self.update(teacher, student, decay)
        return decay


__all__ = ["TeacherEMA"]
