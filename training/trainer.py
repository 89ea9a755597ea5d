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

Faults
------
* Bad clips: the collator skips them and reports them in the batch; `compute_loss` hands the counts to
  `SkippedClipsCallback` (which stops the run past `max_skipped_fraction`) and gives a micro-batch whose clips were
  all skipped (a silent placeholder) zero weight: no gradient, left out of the logged means.
* Divergence: each micro-batch loss and each step's gradient norm go to `DivergenceGuardCallback`, which stops the
  run before an optimizer step with a non-finite value; `save_model` refuses non-finite weights.
* Checkpoints are written into `OUTPUT_DIR/.incomplete/` and renamed into place when every process has written its
  part (`training.checkpoints`); `train(resume_from_checkpoint=True | "last" | path)` resumes only a complete one.
"""

import copy
import os
import shutil

import torch
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import rotate_checkpoints

from sslam.modeling_sslam.modeling_sslam import SSLAMModel

from .callbacks import (
    CollapseGuardCallback,
    DivergenceGuardCallback,
    EMATeacherCallback,
    ShardPositionCallback,
    SkippedClipsCallback,
    non_finite_tensors,
    sum_over_processes,
)
from .checkpoints import STAGING_FOLDER, publish_checkpoint, resolve_resume_checkpoint
from .data import EpochShuffleSampler, PretrainingAudioDataset
from .errors import NotEnoughDataError, TrainingDivergedError
from .shards import ShardedAudioStream, shard_dataloader

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

    Per micro-batch: `loss`, `loss_<term>` (= term sum / sample_size; the terms add up to the loss), `sample_size`
    (masked patches of the micro-batch on one device), `target_var`, `pred_var`. `summary` returns their means over
    the window's micro-batches of all processes (micro-batches added with weight 0, the placeholders of all-skipped
    batches, are left out), then starts a new window; `session_loss` is the mean loss over every summarised window.
    """

    def __init__(self):
        self._sums: dict[str, torch.Tensor] = {}
        self.count = 0.0  # weighted micro-batches of this process in the window
        self.micro_batches = 0  # all micro-batches in the window (the same on every process)
        self._session = [0.0, 0.0]  # loss sum and count over the summarised windows, all processes

    def add(self, output, device: torch.device, weight: float = 1.0) -> None:
        sample_size = output.sample_size.float()
        values = {f"loss_{name}": value / sample_size for name, value in output.loss_terms.items()}
        values.update(loss=output.loss, sample_size=sample_size, target_var=output.target_var, pred_var=output.pred_var)
        for name, value in values.items():
            value = value.detach().float().to(device) * weight if weight else torch.zeros((), device=device)
            self._sums[name] = self._sums[name] + value if name in self._sums else value
        self.count += weight
        self.micro_batches += 1

    def summary(self, accelerator) -> dict[str, float]:
        """Window means over the weighted micro-batches of all processes (a collective call: every process must
        call it); empty when the window had none."""
        names = sorted(self._sums)
        count = torch.tensor(self.count, device=self._sums[names[0]].device)
        sums = accelerator.reduce(torch.stack([self._sums[name] for name in names] + [count]), reduction="sum").tolist()
        count = sums.pop()
        self._sums, self.count, self.micro_batches = {}, 0.0, 0
        if not count:
            return {}
        means = {name: total / count for name, total in zip(names, sums)}
        self._session[0] += means["loss"] * count
        self._session[1] += count
        return means

    @property
    def session_loss(self) -> float | None:
        """Mean loss over the micro-batches of every summarised window (None before the first)."""
        return self._session[0] / self._session[1] if self._session[1] else None


class SSLAMPretrainingTrainer(Trainer):
    """Trainer for [`SSLAMForPreTraining`] with a data collator from `sslam.training.collator`.

    * `compute_loss` returns the model's loss; its terms, `sample_size`, `target_var` and `pred_var` are averaged over
      each logging window and logged with the loss (the real mean over the window's micro-batches), together with the
      `metrics_to_log()` of every callback that has one (`ema_decay`, the skipped-clip counts).
    * Pre-training needs an [`EMATeacherCallback`] (the teacher update), a [`CollapseGuardCallback`], a
      [`DivergenceGuardCallback`] and a [`SkippedClipsCallback`] (its limit from `args.max_skipped_fraction`); each is
      added when `callbacks` has none, as TRL's trainers add their reference-model callbacks.
    * Weight decay follows [`decay_parameter_names`]; the teacher (`requires_grad=False`) is not optimised.
    * A [`PretrainingAudioDataset`] is read in an [`EpochShuffleSampler`] order seeded by `data_seed` (else `seed`),
      so data order and masks are identical after `train(resume_from_checkpoint=...)`. A [`ShardedAudioStream`] is
      read by its own `EpochDataLoader` (not sharded again by accelerate) and resumed at its exact position by a
      [`ShardPositionCallback`].
    * Checkpoints hold student, decoder and teacher in one `model.safetensors` (the teacher is a submodule) and are
      atomic (see the module docstring).

    See the module docstring for what the optimised loss equals under gradient accumulation and DDP. Use
    [`SSLAMPretrainingArguments`] for the original recipe; `remove_unused_columns` must be False.
    """

    loss_is_scaled_for_ga = False

    def __init__(self, model=None, args: TrainingArguments | None = None, callbacks=None, train_dataset=None, **kwargs):
        if args is not None and args.remove_unused_columns:
            raise ValueError(
                "SSLAM pre-training needs remove_unused_columns=False: the collator reads the raw audio column "
                "(SSLAMPretrainingArguments sets it)."
            )
        callbacks = list(callbacks or [])
        if isinstance(train_dataset, ShardedAudioStream):
            args = check_shard_stream(train_dataset, args)
            callbacks.append(ShardPositionCallback())
        elif args is not None and isinstance(train_dataset, PretrainingAudioDataset):
            check_enough_clips(len(train_dataset), args)
        max_skipped_fraction = getattr(args, "max_skipped_fraction", 0.01)
        defaults = {
            CollapseGuardCallback: lambda: CollapseGuardCallback.from_config(model.config),
            EMATeacherCallback: lambda: EMATeacherCallback.from_config(model.config),
            DivergenceGuardCallback: DivergenceGuardCallback,
            SkippedClipsCallback: lambda: SkippedClipsCallback(max_skipped_fraction),
        }
        for callback_class, build in defaults.items():  # first, so that other callbacks' on_step_end see the update
            if not any(isinstance(callback, callback_class) for callback in callbacks):
                callbacks.insert(0, build())
        super().__init__(model=model, args=args, callbacks=callbacks, train_dataset=train_dataset, **kwargs)
        self._metrics_window = TrainingMetricsWindow()
        self._staging_dir: str | None = None

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if not isinstance(dataset, PretrainingAudioDataset):
            return super()._get_train_sampler(train_dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return EpochShuffleSampler(len(dataset), seed=seed, shuffle=self.args.train_sampling_strategy != "sequential")

    def get_train_dataloader(self):
        if isinstance(self.train_dataset, ShardedAudioStream):
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            pin_memory = self.args.dataloader_pin_memory and torch.cuda.is_available()
            return shard_dataloader(
                self.train_dataset, self.data_collator, seed, pin_memory, self.args.dataloader_prefetch_factor
            )
        return super().get_train_dataloader()

    def get_decay_parameter_names(self, model: torch.nn.Module) -> list[str]:
        return decay_parameter_names(model)

    def _observers(self, method: str) -> list:
        return [callback for callback in self.callback_handler.callbacks if hasattr(callback, method)]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The model's loss (already normalised by its own sample size; `num_items_in_batch` is not used); zero for
        the placeholder of a batch whose clips were all skipped."""
        skipped = inputs.pop("skipped_clips", [])
        num_clips = inputs.pop("num_clips", len(inputs["input_values"]))
        outputs = model(**inputs)
        loss = outputs.loss
        if model.training:
            placeholder = len(skipped) == num_clips
            for callback in self._observers("observe_batch"):
                callback.observe_batch(loss=None if placeholder else loss, skipped=skipped, num_clips=num_clips)
            self._metrics_window.add(outputs, self.args.device, weight=0.0 if placeholder else 1.0)
            if placeholder:
                loss = loss * 0.0
        return (loss, outputs) if return_outputs else loss

    def _get_grad_norm(self, model, grad_norm=None):
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        for callback in self._observers("observe_grad_norm"):
            callback.observe_grad_norm(grad_norm)
        return grad_norm

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Training-loss entries: the window's real mean loss (not the Trainer's, which counts skipped micro-batches
        as 0), its pre-training diagnostics and the callbacks' `metrics_to_log()`; the final metrics: the callbacks'
        metrics and `train_loss` over the real micro-batches."""
        step_log, final_log = "loss" in logs, "train_loss" in logs
        if (step_log or final_log) and self._metrics_window.micro_batches:
            window = self._metrics_window.summary(self.accelerator)
            if step_log:
                del logs["loss"]
                logs.update(window)
        if final_log and self._metrics_window.session_loss is not None:
            logs["train_loss"] = self._metrics_window.session_loss
        if step_log or final_log:
            for callback in self._observers("metrics_to_log"):
                logs.update(callback.metrics_to_log())
        super().log(logs, start_time)

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """`Trainer.train`, resuming only from a complete checkpoint (`True` or `"last"`: the newest complete one;
        see `training.checkpoints`); raises [`NotEnoughDataError`] when the run took no optimizer step."""
        resume_from_checkpoint = resolve_resume_checkpoint(
            resume_from_checkpoint, self.args.output_dir, self.args.world_size
        )
        output = super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)
        if self.state.global_step == 0:
            raise NotEnoughDataError("no optimizer step was taken: the data gave no full batch.")
        return output

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`Trainer.save_model`, refusing (with a [`TrainingDivergedError`]) to save non-finite weights."""
        bad = non_finite_tensors(self.model)
        if sum_over_processes([len(bad)])[0]:
            where = ", ".join(bad[:5]) if bad else "another process's shards"
            raise TrainingDivergedError(
                f"not saving {output_dir or self.args.output_dir}: the model holds NaN or inf values at step "
                f"{self.state.global_step} (in {where})."
            )
        super().save_model(output_dir, _internal_call)

    def _get_output_dir(self, trial) -> str:
        return self._staging_dir if self._staging_dir is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """`Trainer._save_checkpoint` into `OUTPUT_DIR/.incomplete/`, then (when every process has written its part)
        renamed to `OUTPUT_DIR/checkpoint-N` and rotated (`save_total_limit`)."""
        run_dir = self._get_output_dir(trial)
        staging = os.path.join(run_dir, STAGING_FOLDER)
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)  # what a killed save left
        self.accelerator.wait_for_everyone()
        self._staging_dir = staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_dir = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            name = f"checkpoint-{self.state.global_step}"
            publish_checkpoint(os.path.join(staging, name), os.path.join(run_dir, name))
            os.rmdir(staging)
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )
        self.accelerator.wait_for_everyone()


def check_enough_clips(num_clips: int, args: TrainingArguments) -> None:
    """Raises [`NotEnoughDataError`] when `num_clips` clips give no full batch on every process."""
    needed = args.per_device_train_batch_size * args.world_size
    if args.dataloader_drop_last and num_clips < needed:
        raise NotEnoughDataError(
            f"{num_clips} clip(s), fewer than one batch of {args.per_device_train_batch_size} clips on each of "
            f"{args.world_size} process(es): add clips or lower --per_device_train_batch_size."
        )


def check_shard_stream(stream: ShardedAudioStream, args: TrainingArguments) -> TrainingArguments:
    """Checks that `stream` was built for these arguments and this process; returns the arguments with
    `ignore_data_skip=True` (the stream skips consumed clips itself, before decoding)."""
    expected = {
        "batch_size": args.per_device_train_batch_size,
        "num_workers": args.dataloader_num_workers,
        "rank": args.process_index,
        "world_size": args.world_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
    }
    wrong = {name: (getattr(stream, name), value) for name, value in expected.items() if getattr(stream, name) != value}
    if wrong:
        raise ValueError(f"the ShardedAudioStream was built for other settings ((stream, arguments): {wrong}).")
    if args.dataloader_persistent_workers:
        raise ValueError("dataloader_persistent_workers is not supported with shards (workers must see set_epoch).")
    if args.ignore_data_skip:
        raise ValueError("ignore_data_skip is not supported with shards: a shard stream resumes at its exact position.")
    args = copy.copy(args)
    args.ignore_data_skip = True
    return args


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


__all__ = [
    "SSLAMPretrainingTrainer",
    "TrainingMetricsWindow",
    "check_enough_clips",
    "check_shard_stream",
    "decay_parameter_names",
    "save_encoder",
]
