# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""`Trainer` subclass for SSLAM / EAT pre-training, and saving its encoder.

Loss under gradient accumulation and data parallelism
-----------------------------------------------------
`SSLAMForPreTraining` returns, per micro-batch, `loss = sum of its loss elements / sample_size` (its own count of
masked patches). The trainer keeps the Trainer's division by the number of accumulation steps
(`loss_is_scaled_for_ga = False`) and DDP averages gradients over processes, so the optimised gradient is the mean,
over the `GA x world_size` micro-batches of an optimizer step, of each micro-batch's gradient. That is exactly what the
original fairseq code optimises for the same per-device batch (it sums gradients over GPUs and accumulation steps and
divides by the summed sample size; every micro-batch of a fixed per-device size has the same sample size, because
every mask row masks the same number of patches). Consequences:

* the patch terms equal those of one big batch (a mean over all masked patches);
* the utterance (CLS) term, a *sum over the rows of a micro-batch* in the original, equals the one-big-batch sum
  divided by `GA x world_size`; it therefore depends on the per-device micro-batch size, not on how many devices or
  accumulation steps make up the global batch. Keep the per-device batch of the recipe (12 clips) to keep the
  original's balance of the terms; `GA = k` on one device reproduces `k` devices exactly.
* Stage 2 mixes clip `i` with clip `i - 1` *within* each micro-batch (as each original GPU did).
"""

import copy
import os

import torch
from transformers import Trainer, TrainingArguments

from sslam.modeling_sslam.modeling_sslam import SSLAMModel

from .callbacks import CollapseGuardCallback, EMATeacherCallback
from .data import EpochShuffleSampler, PretrainingAudioDataset

def decay_parameter_names(model: torch.nn.Module) -> list[str]:
    """Names of the parameters that get weight decay, as in the original: every trainable parameter except 1-D ones
    (LayerNorm weights, biases) and biases. The `(1, 1, D)` CLS token is decayed; the frozen teacher is left out."""
    return [
        name
        for name, param in model.named_parameters()
        if param.requires_grad and param.ndim > 1 and not name.endswith(".bias")
    ]


class TrainingMetricsWindow:
    """Running sums of the model's diagnostics over the micro-batches between two log events.

    Per micro-batch: `loss_<term>` (= term sum / sample_size; the terms add up to the loss), `sample_size` (masked
    patches of the micro-batch on one device), `target_var`, `pred_var`. `summary` returns their means over the window
    and over processes, then starts a new window.
    """

    def __init__(self):
        self._sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, output, device: torch.device) -> None:
        sample_size = output.sample_size.float()
        values = {f"loss_{name}": value / sample_size for name, value in output.loss_terms.items()}
        values.update(sample_size=sample_size, target_var=output.target_var, pred_var=output.pred_var)
        for name, value in values.items():
            value = value.detach().float().to(device)
            self._sums[name] = self._sums[name] + value if name in self._sums else value
        self.count += 1

    def summary(self, accelerator) -> dict[str, float]:
        """Window means averaged over processes (a collective call: every process must call it)."""
        names = sorted(self._sums)
        means = torch.stack([self._sums[name] for name in names]) / self.count
        means = accelerator.reduce(means, reduction="mean")
        self._sums, self.count = {}, 0
        return dict(zip(names, means.tolist()))


class SSLAMPretrainingTrainer(Trainer):
    """Trainer for [`SSLAMForPreTraining`] with a data collator from `sslam.training.collator`.

    * `compute_loss` returns the model's loss; its terms, `sample_size`, `target_var` and `pred_var` are averaged over
      each logging window and logged with the loss, together with the `metrics_to_log()` of every callback that has
      one (the EMA callback's `ema_decay`).
    * Pre-training needs an [`EMATeacherCallback`] (the teacher update) and a [`CollapseGuardCallback`]; each is added
      from the model config when `callbacks` has none, as TRL's trainers add their reference-model callbacks.
    * Weight decay follows [`decay_parameter_names`]; the teacher (`requires_grad=False`) is not optimised.
    * A [`PretrainingAudioDataset`] is read in an [`EpochShuffleSampler`] order seeded by `data_seed` (else `seed`),
      so data order and masks are identical after `train(resume_from_checkpoint=...)`.
    * Checkpoints hold student, decoder and teacher in one `model.safetensors` (the teacher is a submodule).

    See the module docstring for what the optimised loss equals under gradient accumulation and DDP. Use
    [`SSLAMPretrainingArguments`] for the original recipe; `remove_unused_columns` must be False.
    """

    loss_is_scaled_for_ga = False

    def __init__(self, model=None, args: TrainingArguments | None = None, callbacks=None, **kwargs):
        if args is not None and args.remove_unused_columns:
            raise ValueError(
                "SSLAM pre-training needs remove_unused_columns=False: the collator reads the raw audio column "
                "(SSLAMPretrainingArguments sets it)."
            )
        callbacks = list(callbacks or [])
        for callback_class in (CollapseGuardCallback, EMATeacherCallback):  # first, so that other callbacks'
            if not any(isinstance(callback, callback_class) for callback in callbacks):  # on_step_end see the update
                callbacks.insert(0, callback_class.from_config(model.config))
        super().__init__(model=model, args=args, callbacks=callbacks, **kwargs)
        self._metrics_window = TrainingMetricsWindow()

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if not isinstance(dataset, PretrainingAudioDataset):
            return super()._get_train_sampler(train_dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return EpochShuffleSampler(len(dataset), seed=seed, shuffle=self.args.train_sampling_strategy != "sequential")

    def get_decay_parameter_names(self, model: torch.nn.Module) -> list[str]:
        return decay_parameter_names(model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The model's loss (already normalised by its own sample size; `num_items_in_batch` is not used)."""
        outputs = model(**inputs)
        if model.training:
            self._metrics_window.add(outputs, self.args.device)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the window's pre-training diagnostics and the callbacks' `metrics_to_log()` to the training-loss log
        entries."""
        if "loss" in logs and self._metrics_window.count:
            logs.update(self._metrics_window.summary(self.accelerator))
            for callback in self.callback_handler.callbacks:
                if hasattr(callback, "metrics_to_log"):
                    logs.update(callback.metrics_to_log())
        super().log(logs, start_time)


def save_encoder(model, output_dir: str | os.PathLike, feature_extractor=None) -> None:
    """Saves the student encoder of an `SSLAMForPreTraining` as an `SSLAMModel` folder (config.json,
    model.safetensors, and preprocessor_config.json when `feature_extractor` is given) that
    `AutoModel.from_pretrained` loads once `modeling_sslam` is imported."""
    student = model.sslam
    encoder = SSLAMModel(copy.deepcopy(student.config))
    encoder.load_state_dict(student.state_dict())
    encoder.save_pretrained(output_dir)
    if feature_extractor is not None:
        feature_extractor.save_pretrained(output_dir)


__all__ = ["SSLAMPretrainingTrainer", "TrainingMetricsWindow", "decay_parameter_names", "save_encoder"]
