"""Model cards for SSLAM checkpoints: Hub metadata (``ModelCardData`` + ``model-index``) and a Jinja2 markdown body.

Two kinds: ``"pretrained"`` (the self-supervised encoder, ``pipeline_tag: feature-extraction``) and ``"finetuned"``
(an audio tagger / classifier, ``pipeline_tag: audio-classification``). Cards render offline and parse back with
``huggingface_hub.ModelCard``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
CardKind = Literal["pretrained", "finetuned"]
PIPELINE_TAGS = {"pretrained": "feature-extraction", "finetuned": "audio-classification"}
BASE_TAGS = ("audio", "sslam", "eat", "data2vec", "self-supervised-learning", "audioset")
# Hub metric ids of the metric names used in results.
METRIC_TYPES = {"mAP": "map", "mAUC": "roc_auc", "d_prime": "d_prime", "accuracy": "accuracy"}
# AudioSet constants of the original feature pipeline.
DEFAULT_PREPROCESSING = {
    "sampling_rate": 16000, "num_mel_bins": 128, "mean": -4.268, "std": 4.569, "max_length": 1024
}

CONVERSION_FIELDS = ("source", "source_file", "sha256", "converter", "parity", "tolerance")
TRAINING_FIELDS = ("data", "recipe", "notes")

# The released SSLAM checkpoints' training (SSLAM and EAT scripts, configs and README).
ORIGINAL_PRETRAINING = {
    "data": "AudioSet-2M (about 2 million 10-second clips of the unbalanced and balanced training sets), without "
    "labels.",
    "recipe": {
        "Stage 1 (EAT)": "the released EAT-base checkpoint after 10 epochs (400,000 updates of 48 clips, lr 5e-4)",
        "Stage 2 (SSLAM)": "200,000 updates (about 5 epochs) of 48 clips, lr 5e-5, cosine decay after 25,000 "
        "warm-up updates",
        "Mixtures": "each clip mixed with its batch neighbour (element-wise max of the normalised log-mel "
        "spectrograms) outside two unmixed 2.4 s windows",
        "Objectives": "EAT's masked frame and utterance bootstrapping losses on clean and mixed clips, plus the "
        "Source Retention Loss",
        "Teacher": "exponential moving average of the student, decay 0.9998 to 0.99999 over 100,000 updates",
        "Optimiser": "AdamW, betas (0.9, 0.95), weight decay 0.05, fp16",
    },
}
ORIGINAL_AS2M_FINETUNING = {
    "data": "AudioSet-2M training clips with their 527 labels, weighted sampling of 200,000 clips per epoch; the "
    "released checkpoint is the best one on the AudioSet evaluation set.",
    "recipe": {
        "Updates": "400,000 of 96 clips",
        "Learning rate": "5e-5, cosine to 1e-6 after 40,000 warm-up updates",
        "Layer-wise lr decay": "0.65",
        "Mixup": "alpha 0.8, probability 0.9",
        "SpecAugment": "frequency and time masks of up to 20 %",
        "Drop path": "0.1",
        "Loss": "binary cross-entropy",
    },
}


@dataclass(frozen=True)
class Result:
    """One evaluation number, in percent as the papers report it.

    Args:
        metric: ``"mAP"``, ``"mAUC"``, ``"d_prime"`` or ``"accuracy"``.
        value: e.g. 50.2 (mAP in %).
        dataset_name: readable dataset name, e.g. ``"AudioSet-2M (eval)"``.
        dataset_type: Hub dataset id or a short identifier, e.g. ``"audioset"``.
        split: evaluation split.
        source: where the number comes from, e.g. ``"SSLAM paper, Table 1"`` or ``"measured with this checkpoint"``.
        source_url: link to the source; the ``model-index`` records the source only when this is given.
    """

    metric: str
    value: float
    dataset_name: str
    dataset_type: str
    split: str | None = None
    source: str | None = None
    source_url: str | None = None

    def __post_init__(self):
        if self.metric not in METRIC_TYPES:
            raise ValueError(f"unknown metric {self.metric!r}; expected one of {sorted(METRIC_TYPES)}")

    def to_eval_result(self) -> EvalResult:
        return EvalResult(
            task_type="audio-classification",
            task_name="Audio Classification",
            dataset_type=self.dataset_type,
            dataset_name=self.dataset_name,
            dataset_split=self.split,
            metric_type=METRIC_TYPES[self.metric],
            metric_name=self.metric,
            metric_value=self.value,
            source_name=self.source if self.source_url else None,
            source_url=self.source_url,
        )


def build_model_card(
    kind: CardKind,
    model_name: str,
    config: Any,
    *,
    repo_id: str | None = None,
    results: Sequence[Result | Mapping[str, Any]] | None = None,
    training: Mapping[str, Any] | None = None,
    conversion: Mapping[str, Any] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    base_model: str | None = None,
    license: str = "mit",
    datasets: Sequence[str] | None = None,
    tags: Sequence[str] = (),
) -> ModelCard:
    """Render the model card of an SSLAM checkpoint.

    Args:
        kind: ``"pretrained"`` or ``"finetuned"``.
        model_name: name used in the title and the ``model-index``.
        config: the checkpoint's `SSLAMConfig` (or its ``to_dict()``).
        repo_id: Hub id used in the loading snippets (default: ``model_name``).
        results: evaluation numbers (`Result` or its fields as a mapping); they go into ``model-index``.
        training: what the checkpoint was trained on and how, as ``{"data": str, "recipe": {name: value} or str,
            "notes": str}`` (``recipe`` and ``notes`` optional; a mapping renders as a table). Default for
            ``"pretrained"``: `ORIGINAL_PRETRAINING`; required for ``"finetuned"`` (`ORIGINAL_AS2M_FINETUNING`
            describes the released AS-2M fine-tune).
        conversion: provenance of converted weights: ``source`` (URL or repo), ``source_file``, ``sha256``,
            ``converter``, ``parity`` (``{quantity: max abs difference}``), ``tolerance``.
        preprocessing: the feature extractor's settings (``SSLAMFeatureExtractor.to_dict()``); defaults to AudioSet.
        base_model: Hub id of the pre-trained checkpoint a fine-tune starts from.
        license: licence id (the original SSLAM and EAT code and weights are MIT).
        datasets: Hub dataset ids for the metadata.
        tags: extra tags.
    """
    if kind not in PIPELINE_TAGS:
        raise ValueError(f"kind must be one of {sorted(PIPELINE_TAGS)}, got {kind!r}")
    if training is None and kind == "finetuned":
        raise ValueError("a finetuned card needs `training` (ORIGINAL_AS2M_FINETUNING for the released AS-2M model)")
    if kind == "finetuned" and not (config.get("id2label") if isinstance(config, Mapping) else config.id2label):
        raise ValueError("a finetuned card needs a config with id2label")
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    results = [r if isinstance(r, Result) else Result(**r) for r in results or ()]
    card_data = ModelCardData(
        model_name=model_name,
        license=license,
        library_name="transformers",
        pipeline_tag=PIPELINE_TAGS[kind],
        tags=[*BASE_TAGS, PIPELINE_TAGS[kind], *tags],
        base_model=base_model,
        datasets=list(datasets) if datasets else None,
        metrics=sorted({METRIC_TYPES[r.metric] for r in results}) or None,
        eval_results=[r.to_eval_result() for r in results] or None,
    )
    content = _environment().get_template(f"{kind}.md.j2").render(
        card_data=card_data.to_yaml(),
        model_name=model_name,
        repo_id=repo_id or model_name,
        architecture=_architecture(config),
        labels=_labels(config),
        results=results,
        training=_known_fields(training or ORIGINAL_PRETRAINING, TRAINING_FIELDS, "training"),
        conversion=_known_fields(conversion, CONVERSION_FIELDS, "conversion") if conversion else None,
        preprocessing=_preprocessing(preprocessing or {}, config["patch_size"]),
        base_model=base_model,
        license=license,
    )
    return ModelCard(content)


def write_model_card(folder: str | Path, **kwargs: Any) -> ModelCard:
    """Build a card with `build_model_card` and save it as ``folder/README.md``."""
    card = build_model_card(**kwargs)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    card.save(folder / "README.md")
    return card


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _known_fields(values: Mapping[str, Any], names: Sequence[str], what: str) -> dict[str, Any]:
    """``values`` with every one of ``names`` present (None when missing); unknown keys are an error."""
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown {what} fields {unknown}; expected some of {list(names)}")
    return {name: values.get(name) for name in names}


def _architecture(config: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size", "pooling")
    missing = [key for key in keys if key not in config]
    if missing:
        raise ValueError(f"config lacks {missing}; pass an SSLAMConfig")
    return {key: config[key] for key in keys}


def _labels(config: Mapping[str, Any]) -> dict[str, Any]:
    """Label count, problem type and two phrases of the card's opening paragraph."""
    id2label = config.get("id2label") or {}
    names = [id2label[key] for key in list(id2label)[:5]]
    multilabel = config.get("problem_type") == "multi_label_classification"
    return {
        "num_labels": len(id2label),
        "problem_type": config.get("problem_type"),
        "examples": f" (e.g. {', '.join(names)})" if names else "",
        "output": "as a multi-label tagger: each class gets an independent sigmoid score."
        if multilabel
        else "as a single-label classifier: the scores are a softmax over the classes.",
    }


def _preprocessing(preprocessing: Mapping[str, Any], patch_size: int) -> dict[str, Any]:
    """Feature-extractor settings over the AudioSet defaults, plus the clip length and patch count as text."""
    values = {key: value for key, value in preprocessing.items() if key in DEFAULT_PREPROCESSING}
    values = {**DEFAULT_PREPROCESSING, **values}
    frames = values["max_length"]
    if frames is None:
        values["clip_length"] = "each clip's own frame count rounded up to a multiple of 16"
        values["num_patch_tokens"] = "N"
    else:
        values["clip_length"] = f"{frames} frames ({frames / 100:.2f} s)"
        values["num_patch_tokens"] = (frames // patch_size) * (values["num_mel_bins"] // patch_size)
    return values
