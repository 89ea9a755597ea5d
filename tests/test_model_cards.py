"""Model cards render offline, parse back with huggingface_hub and carry their results and provenance."""

import re

import pytest
from huggingface_hub import ModelCard

from sslam.model_cards import ORIGINAL_AS2M_FINETUNING, Result, build_model_card, write_model_card
from sslam.modeling_sslam import SSLAMConfig

PAPER = "https://arxiv.org/abs/2506.12222"


@pytest.fixture(scope="module")
def classifier_config():
    return SSLAMConfig(
        num_labels=3,
        id2label={0: "Speech", 1: "Music", 2: "Dog"},
        problem_type="multi_label_classification",
    )


@pytest.fixture(scope="module")
def finetuned_card(classifier_config):
    return build_model_card(
        "finetuned",
        "sslam-base-as2m",
        classifier_config,
        repo_id="org/sslam-base-as2m",
        base_model="org/sslam-base",
        results=[
            Result("mAP", 50.2, "AudioSet-2M", "audioset", split="eval", source="SSLAM paper", source_url=PAPER),
            {"metric": "mAUC", "value": 97.1, "dataset_name": "AudioSet-2M", "dataset_type": "audioset"},
        ],
        training=ORIGINAL_AS2M_FINETUNING,
        conversion={
            "source": "https://huggingface.co/ta012/SSLAM_AS2M_Finetuned",
            "sha256": "0123abcd" * 8,
            "parity": {"logits": 3.1e-6},
            "tolerance": 1e-5,
        },
    )


def test_pretrained_card_metadata_and_body():
    card = ModelCard(str(build_model_card("pretrained", "sslam-base", SSLAMConfig(), repo_id="org/sslam-base")))
    assert card.data.pipeline_tag == "feature-extraction"
    assert card.data.library_name == "transformers"
    assert card.data.license == "mit"
    assert {"audio", "sslam", "eat"} <= set(card.data.tags)
    assert not card.data.eval_results
    for text in ("2506.12222", "AutoModel.from_pretrained(\"org/sslam-base\")", "trust_remote_code=True",
                 "(x - mean) / (2 * std)", "(1, 512, 768)", "@inproceedings{alex2025sslam", "chen2024eat",
                 "baevski2023data2vec2", "AudioSet-2M", "Source Retention Loss"):
        assert text in card.text, text
    assert not re.search(r"\{\{ |\{%", card.text)  # no Jinja left over (BibTeX's "{{SSLAM}" is fine)


def test_finetuned_card_carries_model_index_results(finetuned_card):
    card = ModelCard(str(finetuned_card))
    assert card.data.pipeline_tag == "audio-classification"
    assert card.data.base_model == "org/sslam-base"
    assert card.data.metrics == ["map", "roc_auc"]
    results = {r.metric_name: r for r in card.data.eval_results}
    assert results["mAP"].metric_value == 50.2 and results["mAP"].metric_type == "map"
    assert results["mAP"].dataset_split == "eval" and results["mAP"].source_url == PAPER
    assert results["mAUC"].task_type == "audio-classification"
    assert card.data.model_name == "sslam-base-as2m"


def test_finetuned_card_body(finetuned_card):
    text = finetuned_card.text
    for snippet in ('pipeline("audio-classification", model="org/sslam-base-as2m")', "logits.sigmoid()",
                    "AutoModelForAudioClassification", "It predicts 3 classes (e.g. Speech, Music, Dog)",
                    "0123abcd" * 8, "| logits | 3.1e-06 |", "| AudioSet-2M | eval | mAP | 50.2 | SSLAM paper |",
                    "Layer-wise lr decay", "[org/sslam-base](https://huggingface.co/org/sslam-base)"):
        assert snippet in text, snippet


def test_single_label_card_uses_softmax_and_preprocessing_overrides():
    config = SSLAMConfig(num_labels=2, id2label={0: "yes", 1: "no"})
    card = build_model_card(
        "finetuned", "sslam-spc", config, training={"data": "Speech Commands V2.", "recipe": "20 epochs, lr 2e-4."},
        preprocessing={"max_length": 128, "mean": -6.846, "std": 5.565, "num_mel_bins": 128},
    )
    assert "logits.softmax(-1)" in card.text and "single-label classifier" in card.text
    assert "Speech Commands V2.\n\n20 epochs, lr 2e-4." in card.text
    assert "to 128 frames (1.28 s)" in card.text and "mean -6.846 and std 5.565" in card.text
    variable = build_model_card("pretrained", "m", SSLAMConfig(), preprocessing={"max_length": None})
    assert "own frame count rounded up" in variable.text and "(1, N, 768)" in variable.text


def test_write_model_card_round_trips(tmp_path, classifier_config):
    written = write_model_card(
        tmp_path / "model", kind="pretrained", model_name="sslam-base", config=classifier_config.to_dict(),
        results=[Result("mAP", 16.9, "AudioSet-20K", "audioset", source="linear eval")],
    )
    loaded = ModelCard.load(tmp_path / "model" / "README.md")
    assert loaded.data.to_dict() == written.data.to_dict()
    assert loaded.data.eval_results[0].metric_value == 16.9


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="finetuned"), "needs `training`"),
        (dict(kind="demo"), "kind"),
        (dict(kind="pretrained", results=[dict(metric="f1", value=1, dataset_name="x", dataset_type="x")]), "metric"),
        (dict(kind="pretrained", conversion={"sha": "0"}), "unknown conversion fields"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model_card(model_name="m", config=SSLAMConfig(), **kwargs)
