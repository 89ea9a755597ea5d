"""Fine-tuning `SSLAMForAudioClassification` with the transformers `Trainer`, following the original EAT/SSLAM recipe.

What the original fine-tuning does and where it lives here:

* layer-wise learning-rate decay: block i of L gets ``lr * layer_decay ** (L - i)``; patch embedding, CLS token,
  pre-block LayerNorm, fc_norm and classifier keep the full rate (`layer_decay_parameter_groups`);
* AdamW betas (0.9, 0.95), weight decay 0.05 except for 1-D parameters and biases, cosine schedule to ``min_lr``,
  no gradient clipping (`FineTuneRecipe.training_arguments`);
* mixup (one lambda ~ Beta(alpha, alpha) per batch with probability ``mixup_prob``, mixed with the reversed batch,
  labels mixed linearly) then SpecAugment (frequency and time masks of up to ``mask_ratio`` of each axis, drawn per
  example, filled with 0 in the normalised domain), on training batches only (`SpectrogramAugmentation`);
* losses: multi-label BCE-with-logits summed and divided by the batch's label mass, single-label cross-entropy
  (with label smoothing on hard labels, soft cross-entropy on mixed labels): the model's own loss
  (`sslam.modeling_sslam.modeling_sslam.classification_loss`, label smoothing in the model config), so
  `model(x, labels=y).loss` is what the trainer optimises;
* validation metrics: mAP / mAUC / d-prime or accuracy (`build_compute_metrics`).

Frame classification (sound event detection) uses the same trainer, layer decay and encoder freezing:
`build_frame_finetune_trainer` trains an `SSLAMForAudioFrameClassification` on strongly labelled data (an
``events`` column, see `datasets_io`) with `FrameClassificationCollator` (frame targets at the model's 160 ms rows,
`strong_labels.events_to_frame_targets`; padding rows -100 and masked), no mixup or SpecAugment (they would move
audio away from its labels), and frame-level mAP as the validation metric. A recipe with `freeze_encoder=True`
gives the frozen-encoder linear head; otherwise the whole model is fine-tuned with layer-wise lr decay.

Not reproduced: the waveform roll / random gain augmentation (``roll_aug``), weighted sampling for AS-2M, fp16 as
fairseq does it, and BCE for single-label data with mixup (the SPC-2 recipe); the warm-up here starts from 0, not
from ``min_lr``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset
from torchaudio.transforms import FrequencyMasking, TimeMasking
from transformers import EvalPrediction, Trainer, TrainingArguments

from sslam.evaluation.datasets_io import (
    SAMPLING_RATE,
    is_strongly_labelled,
    label_column,
    label_names,
    label_targets,
    multi_hot,
)
from sslam.evaluation.metrics import accuracy, mean_average_precision, multilabel_metrics
from sslam.evaluation.strong_labels import Event, events_to_frame_targets
from sslam.modeling_sslam.audio_io import decode_audio
from sslam.modeling_sslam.embedding import row_hop_seconds
from sslam.modeling_sslam.feature_extraction_sslam import SSLAMFeatureExtractor

LabelFormat = Literal["class_id", "class_ids", "multi_hot"]
_BLOCK_PATTERN = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")


# ---------------------------------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class FineTuneRecipe:
    """Hyper-parameters of one original fine-tuning recipe (SPEC §9.3); see `RECIPES`."""

    learning_rate: float
    batch_size: int
    max_steps: int
    warmup_steps: int
    mixup_alpha: float
    mixup_prob: float = 0.9
    mask_ratio: float = 0.2
    label_smoothing: float = 0.0
    max_length: int = 1024
    normalization: str = "audioset"
    layer_decay: float = 0.65
    weight_decay: float = 0.05
    drop_path_rate: float = 0.1
    min_lr: float = 1e-6
    freeze_encoder: bool = False

    def training_arguments(self, output_dir: str, **overrides: Any) -> TrainingArguments:
        """`TrainingArguments` for this recipe; ``overrides`` win (e.g. ``max_steps``, ``eval_strategy``)."""
        arguments = dict(
            output_dir=output_dir,
            learning_rate=self.learning_rate,
            per_device_train_batch_size=self.batch_size,
            per_device_eval_batch_size=self.batch_size,
            max_steps=self.max_steps,
            warmup_steps=self.warmup_steps,
            weight_decay=self.weight_decay,
            adam_beta1=0.9,
            adam_beta2=0.95,
            adam_epsilon=1e-8,
            lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr": self.min_lr},
            max_grad_norm=0.0,
            remove_unused_columns=False,
            report_to="none",
        )
        arguments.update(overrides)
        return TrainingArguments(**arguments)

    def feature_extractor(self, **kwargs: Any) -> SSLAMFeatureExtractor:
        """The feature extractor of this recipe (its normalisation statistics and clip length)."""
        return SSLAMFeatureExtractor.from_dataset_stats(self.normalization, max_length=self.max_length, **kwargs)

    def model_kwargs(self, dataset: Dataset) -> dict[str, Any]:
        """Config overrides for `SSLAMForAudioClassification.from_pretrained`: labels of ``dataset``, drop path and
        label smoothing."""
        return {**label_config(dataset), "drop_path_rate": self.drop_path_rate, "label_smoothing": self.label_smoothing}


RECIPES: dict[str, FineTuneRecipe] = {
    "as2m": FineTuneRecipe(5e-5, 96, 400_000, 40_000, mixup_alpha=0.8),
    "as20k": FineTuneRecipe(5e-5, 48, 40_000, 4_000, mixup_alpha=0.8),
    "esc50": FineTuneRecipe(
        5e-5, 48, 4_000, 400, mixup_alpha=0.0, mask_ratio=0.4, label_smoothing=0.1, max_length=512,
        normalization="esc50",
    ),
    "spc2": FineTuneRecipe(
        2e-4, 256, 40_000, 4_000, mixup_alpha=0.8, max_length=128, normalization="speechcommands"
    ),
    "spass": FineTuneRecipe(5e-5, 48, 3_906, 390, mixup_alpha=0.8, normalization="spass"),
    "spass_linear": FineTuneRecipe(1e-3, 48, 3_906, 0, mixup_alpha=0.8, normalization="spass", freeze_encoder=True),
}


# ------------------------------------------------------------------------------------------------------- data


def label_config(dataset: Dataset) -> dict[str, Any]:
    """``num_labels``, ``id2label``, ``label2id`` and ``problem_type`` for an `SSLAMConfig`, from a dataset.

    Class names come from the label column's `ClassLabel`, else they are the class indices as strings.
    """
    targets = label_targets(dataset)
    multilabel = targets.ndim == 2
    names = label_names(dataset) or [str(i) for i in range(targets.shape[1] if multilabel else targets.max() + 1)]
    return {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {name: i for i, name in enumerate(names)},
        "problem_type": "multi_label_classification" if multilabel else "single_label_classification",
    }


def infer_label_format(dataset: Dataset) -> LabelFormat:
    """How a dataset stores targets: one class id, a list of class ids, or multi-hot rows."""
    name = label_column(dataset)
    if name == "label":
        return "class_id"
    return "class_ids" if isinstance(dataset.features[name].feature, ClassLabel) else "multi_hot"


@dataclass
class AudioClassificationCollator:
    """Rows with ``audio`` and ``label``/``labels`` -> model inputs.

    Decodes and resamples each clip to 16 kHz mono, runs the feature extractor (its ``max_length`` sets the clip
    length) and stacks the targets: (B,) int64 class ids, or (B, num_labels) float32 multi-hot.
    """

    feature_extractor: Any
    num_labels: int
    label_format: LabelFormat

    @classmethod
    def for_dataset(cls, dataset: Dataset, feature_extractor: Any) -> AudioClassificationCollator:
        return cls(feature_extractor, label_config(dataset)["num_labels"], infer_label_format(dataset))

    def __call__(self, rows: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        waveforms = [decode_audio(row["audio"], SAMPLING_RATE) for row in rows]
        batch = dict(self.feature_extractor(waveforms, sampling_rate=SAMPLING_RATE, return_tensors="pt"))
        key = "label" if self.label_format == "class_id" else "labels"
        if key in rows[0]:
            batch["labels"] = self._targets([row[key] for row in rows])
        return batch

    def _targets(self, values: list) -> torch.Tensor:
        if self.label_format == "class_id":
            return torch.tensor(values, dtype=torch.long)
        if self.label_format == "class_ids":
            return torch.from_numpy(multi_hot(values, self.num_labels))
        return torch.tensor(np.asarray(values, dtype=np.float32))


# ----------------------------------------------------------------------------------------------- augmentation


@dataclass
class SpectrogramAugmentation:
    """Mixup followed by SpecAugment on a training batch of normalised filter banks.

    Randomness comes from torch's global generator, which the Trainer seeds. With ``mixup_alpha > 0`` single-label
    targets become one-hot floats (mixed when a batch is mixed), as in the original.
    """

    num_labels: int
    mixup_alpha: float = 0.8
    mixup_prob: float = 0.9
    mask_ratio: float = 0.2

    def __call__(
        self, inputs: dict[str, torch.Tensor], labels: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``inputs["input_values"]`` (B, T, F) or (B, 1, T, F); ``labels`` (B,) ids or (B, C) targets."""
        inputs = dict(inputs)
        if self.mixup_alpha > 0:
            inputs, labels = self._mixup(inputs, labels)
        if self.mask_ratio > 0:
            inputs["input_values"] = self._spec_augment(inputs["input_values"])
        return inputs, labels

    def _mixup(self, inputs: dict[str, torch.Tensor], labels: torch.Tensor):
        if labels.ndim == 1:
            labels = F.one_hot(labels.long(), self.num_labels)
        labels = labels.float()
        if torch.rand(()) >= self.mixup_prob:
            return inputs, labels
        lam = torch.distributions.Beta(self.mixup_alpha, self.mixup_alpha).sample().item()
        values = inputs["input_values"]
        inputs["input_values"] = lam * values + (1.0 - lam) * values.flip(0)
        if inputs.get("attention_mask") is not None:
            inputs["attention_mask"] = torch.maximum(inputs["attention_mask"], inputs["attention_mask"].flip(0))
        return inputs, lam * labels + (1.0 - lam) * labels.flip(0)

    def _spec_augment(self, values: torch.Tensor) -> torch.Tensor:
        spectrogram = (values if values.ndim == 4 else values.unsqueeze(1)).transpose(2, 3)  # (B, 1, F, T)
        frequency_masking = FrequencyMasking(spectrogram.shape[2] * self.mask_ratio, iid_masks=True)
        time_masking = TimeMasking(spectrogram.shape[3] * self.mask_ratio, iid_masks=True)
        masked = time_masking(frequency_masking(spectrogram)).transpose(2, 3)
        return masked if values.ndim == 4 else masked.squeeze(1)


# -------------------------------------------------------------------------------------------- optimisation


def layer_decay_parameter_groups(
    model: torch.nn.Module, learning_rate: float, weight_decay: float, layer_decay: float
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with layer-wise learning-rate decay.

    Parameters of encoder block i (``...encoder.layer.{i}.``) of L blocks get ``learning_rate * layer_decay **
    (L - i)``; all others the full rate. 1-D parameters and biases get no weight decay. Frozen parameters are left
    out. Each group carries its ``lr_scale``.
    """
    num_layers = model.config.num_hidden_layers
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        block = _BLOCK_PATTERN.search(name)
        scale = layer_decay ** (num_layers - int(block.group(1))) if block else 1.0
        decayed = parameter.ndim > 1 and not name.endswith(".bias")
        groups.setdefault((scale, decayed), []).append(parameter)
    return [
        {
            "params": params,
            "lr": learning_rate * scale,
            "lr_scale": scale,
            "weight_decay": weight_decay if decayed else 0.0,
        }
        for (scale, decayed), params in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1]))
    ]


class SSLAMFineTuneTrainer(Trainer):
    """`Trainer` with layer-wise lr decay and mixup + SpecAugment on training batches; the loss is the model's own
    (the original recipe, see `classification_loss`)."""

    def __init__(
        self,
        *args: Any,
        layer_decay: float = 0.65,
        augmentation: SpectrogramAugmentation | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.layer_decay = layer_decay
        self.augmentation = augmentation

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            groups = layer_decay_parameter_groups(
                opt_model, self.args.learning_rate, self.args.weight_decay, self.layer_decay
            )
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Augments training batches, then returns the model's loss."""
        if model.training and self.augmentation is not None:
            features = {key: value for key, value in inputs.items() if key != "labels"}
            augmented, labels = self.augmentation(features, inputs["labels"])
            inputs = {**augmented, "labels": labels}
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)


def build_compute_metrics(multilabel: bool) -> Callable[[EvalPrediction], dict[str, float]]:
    """``compute_metrics`` for the Trainer: mAP / mAUC / d_prime of sigmoid scores, or accuracy of the argmax."""

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        if multilabel:
            scores = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
            return multilabel_metrics(scores, prediction.label_ids)
        return {"accuracy": accuracy(logits, prediction.label_ids)}

    return compute_metrics


def build_finetune_trainer(
    model: torch.nn.Module,
    args: TrainingArguments,
    train_dataset: Dataset,
    eval_dataset: Dataset | None,
    feature_extractor: Any,
    *,
    recipe: FineTuneRecipe,
    **trainer_kwargs: Any,
) -> SSLAMFineTuneTrainer:
    """A ready-to-train `SSLAMFineTuneTrainer` for an `SSLAMForAudioClassification`.

    The model's ``problem_type`` must match the data (see `label_config`; build the model with
    ``recipe.model_kwargs(train_dataset)``, which also sets the recipe's label smoothing); ``recipe`` supplies the
    layer decay, mixup, SpecAugment and encoder freezing (learning rate, steps and schedule come from ``args``,
    e.g. ``recipe.training_arguments(...)``). ``args.remove_unused_columns`` must be False: the collator needs the
    raw ``audio`` column.
    """
    if args.remove_unused_columns:
        raise ValueError("set TrainingArguments(remove_unused_columns=False): the collator needs the 'audio' column")
    expected = label_config(train_dataset)
    if (model.config.problem_type, model.config.num_labels) != (expected["problem_type"], expected["num_labels"]):
        raise ValueError(
            f"model has problem_type={model.config.problem_type!r}, num_labels={model.config.num_labels} but the data "
            f"needs {expected['problem_type']!r} with {expected['num_labels']} labels; build the model with "
            "`label_config(train_dataset)`"
        )
    if recipe.freeze_encoder:
        model.base_model.requires_grad_(False)
    augmentation = SpectrogramAugmentation(
        expected["num_labels"], recipe.mixup_alpha, recipe.mixup_prob, recipe.mask_ratio
    )
    return SSLAMFineTuneTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=AudioClassificationCollator.for_dataset(train_dataset, feature_extractor),
        processing_class=feature_extractor,
        compute_metrics=build_compute_metrics(expected["problem_type"] == "multi_label_classification"),
        layer_decay=recipe.layer_decay,
        augmentation=augmentation,
        **trainer_kwargs,
    )


# ------------------------------------------------------------------------------------ frame classification


def strong_label_config(dataset: Dataset) -> dict[str, Any]:
    """``num_labels``, ``id2label``, ``label2id`` and ``problem_type`` for an `SSLAMForAudioFrameClassification`,
    from the class names of a strongly labelled dataset's ``events`` column."""
    if not is_strongly_labelled(dataset):
        raise ValueError(f"frame classification needs an 'events' column (columns: {dataset.column_names})")
    names = list(dataset.features["events"].feature["label"].names)
    return {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {name: i for i, name in enumerate(names)},
        "problem_type": "multi_label_classification",
    }


@dataclass
class FrameClassificationCollator:
    """Rows with ``audio`` and ``events`` -> ``input_values``, the frame ``attention_mask`` and ``labels``
    `(B, R, C)`: the frame targets of `events_to_frame_targets` on the model's rows (R = frames / 16), -100 on
    rows without real audio. Clips are featurised as the extractor says (its ``max_length`` by default)."""

    feature_extractor: Any
    label_names: list[str]

    def __call__(self, rows: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        waveforms = [decode_audio(row["audio"], SAMPLING_RATE) for row in rows]
        batch = dict(self.feature_extractor(
            waveforms, sampling_rate=SAMPLING_RATE, return_attention_mask=True, return_tensors="pt"
        ))
        if "events" in rows[0]:
            batch["labels"] = self._targets([row["events"] for row in rows], batch["attention_mask"])
        return batch

    def _targets(self, events: list[list[Mapping[str, Any]]], frame_mask: torch.Tensor) -> torch.Tensor:
        patch = self.feature_extractor.patch_size
        hop = row_hop_seconds(self.feature_extractor)
        num_rows = frame_mask.shape[1] // patch
        real_rows = frame_mask.reshape(len(events), num_rows, patch).any(dim=-1)
        targets = []
        for clip_events, real in zip(events, real_rows):
            clip = [Event(e["onset"], e["offset"], self.label_names[e["label"]]) for e in clip_events]
            rows = torch.from_numpy(events_to_frame_targets(clip, num_rows, hop, self.label_names))
            rows[~real] = -100.0
            targets.append(rows)
        return torch.stack(targets)


def compute_frame_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """``compute_metrics`` for frame classification: frame-level macro mAP over the rows whose labels are not -100."""
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    labels = np.asarray(prediction.label_ids)
    keep = labels[..., 0] != -100
    scores = np.asarray(logits, dtype=np.float64)[keep]
    return {"frame_mAP": mean_average_precision(scores, labels[keep])}


def build_frame_finetune_trainer(
    model: torch.nn.Module,
    args: TrainingArguments,
    train_dataset: Dataset,
    eval_dataset: Dataset | None,
    feature_extractor: Any,
    *,
    recipe: FineTuneRecipe,
    **trainer_kwargs: Any,
) -> SSLAMFineTuneTrainer:
    """A ready-to-train `SSLAMFineTuneTrainer` for an `SSLAMForAudioFrameClassification` on strongly labelled data:
    the recipe's layer decay and encoder freezing (`freeze_encoder=True`: only fc_norm and the linear head learn),
    the model's own masked binary cross-entropy, frame mAP on ``eval_dataset``. Build the model with
    ``strong_label_config(train_dataset)``; ``args.remove_unused_columns`` must be False."""
    if args.remove_unused_columns:
        raise ValueError("set TrainingArguments(remove_unused_columns=False): the collator needs 'audio' and 'events'")
    expected = strong_label_config(train_dataset)
    if model.config.num_labels != expected["num_labels"]:
        raise ValueError(
            f"model has num_labels={model.config.num_labels} but the data has {expected['num_labels']} classes; "
            "build the model with `strong_label_config(train_dataset)`"
        )
    if recipe.freeze_encoder:
        model.base_model.requires_grad_(False)
    return SSLAMFineTuneTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=FrameClassificationCollator(feature_extractor, list(expected["id2label"].values())),
        processing_class=feature_extractor,
        compute_metrics=compute_frame_metrics,
        layer_decay=recipe.layer_decay,
        augmentation=None,
        **trainer_kwargs,
    )
