"""Sound event detection: metrics from sed_eval / sed_scores_eval cross-checked on hand-built cases, decoding
(thresholds, median filter), frame features and heads, and the frame fine-tuning path with the Trainer."""

import math

import numpy as np
import pytest
import torch

from sslam.evaluation.detection import (
    EncoderFrameFeatures,
    LogMelFrameStatistics,
    class_thresholds,
    decode_events,
    fit_frame_head,
    frame_f1_thresholds,
    select_frame_head,
)
from sslam.evaluation.sed_metrics import event_based_f1, frame_map, psds_scores, segment_based_f1
from sslam.evaluation.strong_labels import Event, events_to_frame_targets

CLASSES = ["dog", "cat"]


def E(onset, offset, label="dog"):
    return Event(onset, offset, label)


# --------------------------------------------------------------------------------------- event-based F1


def test_event_f1_perfect_and_partial():
    reference = {"a": [E(1.0, 3.0), E(5.0, 6.5, "cat")], "b": [E(2.0, 5.0, "cat")]}
    assert event_based_f1(reference, reference, CLASSES)["f1_macro"] == 1.0
    # a: dog 1-3 found, cat 5-7 missed, a false cat at 8-9: TP 1 of 2 outputs and 2 references.
    reference = {"a": [E(1.0, 3.0), E(5.0, 7.0, "cat")]}
    scores = event_based_f1(reference, {"a": [E(1.0, 3.0), E(8.0, 9.0, "cat")]}, CLASSES)
    assert scores["f1_micro"] == pytest.approx(0.5)
    assert scores["f1_macro"] == pytest.approx(0.5)  # dog 1, cat 0
    # Without the false cat: micro P 1, R 1/2 -> 2/3; a class with references and no output counts 0 (macro 0.5).
    scores = event_based_f1(reference, {"a": [E(1.0, 3.0)]}, CLASSES)
    assert scores["f1_micro"] == pytest.approx(2 / 3)
    assert scores["f1_macro"] == pytest.approx(0.5)
    assert event_based_f1(reference, {}, CLASSES)["f1_micro"] == 0.0  # no output at all scores 0, not NaN


@pytest.mark.parametrize(
    ("estimate", "hit"),
    [
        ((1.15, 3.0), True), ((0.85, 3.0), True), ((1.25, 3.0), False), ((0.75, 3.0), False),  # onset collar 200 ms
        ((1.0, 3.35), True), ((1.0, 2.65), True), ((1.0, 3.45), False), ((1.0, 2.55), False),  # offset: 20 % of 2 s
    ],
)
def test_event_f1_collars(estimate, hit):
    scores = event_based_f1({"a": [E(1.0, 3.0)]}, {"a": [E(*estimate)]}, CLASSES)
    assert scores["f1_micro"] == (1.0 if hit else 0.0)


@pytest.mark.parametrize(("reference", "offset", "hit"), [
    ((0.0, 8.0), 6.5, True), ((0.0, 8.0), 6.3, False),  # 8 s event: offset collar 1.6 s
    ((1.0, 1.5), 1.65, True), ((1.0, 1.5), 1.75, False),  # 0.5 s event: the 200 ms floor
])
def test_event_f1_offset_collar_is_the_larger_of_200ms_and_20_percent(reference, offset, hit):
    scores = event_based_f1({"a": [E(*reference)]}, {"a": [E(reference[0], offset)]}, CLASSES)
    assert scores["f1_micro"] == (1.0 if hit else 0.0)


def test_event_f1_counts_false_alarms_in_clips_without_events_and_rejects_unknown_ids():
    scores = event_based_f1({"a": [E(1.0, 3.0)], "b": []}, {"a": [E(1.0, 3.0)], "b": [E(1.0, 3.0)]}, CLASSES)
    assert scores["precision_micro"] == pytest.approx(0.5) and scores["f1_micro"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="without a reference"):
        event_based_f1({"a": []}, {"z": []}, CLASSES)


# ------------------------------------------------------------------------------------- segment-based F1


def test_segment_f1_on_one_second_segments():
    durations = {"a": 10.0}
    reference = {"a": [E(1.0, 3.0), E(5.0, 7.0, "cat")]}
    # dog segments {1, 2} found; cat {5, 6} missed, cat {8} false: TP 2, 3 outputs, 4 references -> 4/7.
    scores = segment_based_f1(reference, {"a": [E(1.0, 3.0), E(8.0, 9.0, "cat")]}, CLASSES, durations)
    assert scores["f1_micro"] == pytest.approx(4 / 7)
    assert scores["f1_macro"] == pytest.approx(0.5)
    # dog 0-2 vs 0.5-2.5: segments {0, 1} vs {0, 1, 2}: 2 TP, 3 outputs, 2 references -> 0.8.
    scores = segment_based_f1({"a": [E(0.0, 2.0)]}, {"a": [E(0.5, 2.5)]}, CLASSES, durations)
    assert scores["f1_micro"] == pytest.approx(0.8)
    # A class with references but no output counts 0 in the macro mean (sed_eval alone would drop it).
    scores = segment_based_f1(reference, {"a": [E(1.0, 3.0)]}, CLASSES, durations)
    assert scores["f1_macro"] == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------------- PSDS

HOP = 0.1
DURATIONS = {"a": 36.0, "b": 36.0}
GROUND_TRUTH = {"a": [E(1.0, 2.0), E(10.0, 11.0, "cat")], "b": [E(5.0, 6.0), E(20.0, 21.0, "cat")]}


def frame_scores(segments: dict, durations=DURATIONS) -> dict:
    """Scores on 0.1 s rows: `segments` {clip: [(onset, offset, label, score)]}, 0 elsewhere."""
    scores = {}
    for clip, duration in durations.items():
        values = np.zeros((int(round(duration / HOP)), len(CLASSES)))
        for onset, offset, label, score in segments.get(clip, []):
            values[int(round(onset / HOP)) : int(round(offset / HOP)), CLASSES.index(label)] = score
        scores[clip] = values
    return scores


def perfect(score=1.0):
    return {clip: [(e.onset, e.offset, e.label, score) for e in events] for clip, events in GROUND_TRUTH.items()}


def test_psds_perfect_and_all_zero():
    scores = psds_scores(frame_scores(perfect()), HOP, GROUND_TRUTH, DURATIONS, CLASSES)
    assert scores["psds1"] == pytest.approx(1.0) and scores["psds2"] == pytest.approx(1.0)
    scores = psds_scores(frame_scores({}), HOP, GROUND_TRUTH, DURATIONS, CLASSES)
    assert scores["psds1"] == pytest.approx(0.0) and scores["psds2"] == pytest.approx(0.0)


def test_psds_one_missed_event_costs_the_class_mean_minus_its_spread():
    # dog found in a, never scored in b: dog's TPR is 0.5 at every FP rate, cat's 1 -> mean 0.75 - std 0.25 = 0.5.
    segments = perfect()
    segments["b"] = [(20.0, 21.0, "cat", 1.0)]
    scores = psds_scores(frame_scores(segments), HOP, GROUND_TRUTH, DURATIONS, CLASSES)
    assert scores["psds1"] == pytest.approx(0.5) and scores["psds2"] == pytest.approx(0.5)


def test_psds2_penalises_cross_triggers():
    # A cat score (0.8) on b's dog event sits between cat's two true detections (1.0, 0.6). As a false positive
    # (1 per 72 s = 50/h) it halves cat's TPR over [0, 50): PSDS1 per class (1, 0.75) -> 0.875 - 0.125 = 0.75.
    # PSDS2 also counts it as a cross-trigger (1 per 2 s of dog = 1800/h, weight 0.5), pushing cat's second
    # detection past the 100/h limit: cat 0.5 -> 0.75 - 0.25 = 0.5.
    segments = perfect()
    segments["b"] = [(5.0, 6.0, "dog", 1.0), (5.0, 6.0, "cat", 0.8), (20.0, 21.0, "cat", 0.6)]
    scores = psds_scores(frame_scores(segments), HOP, GROUND_TRUTH, DURATIONS, CLASSES)
    assert scores["psds1"] == pytest.approx(0.75) and scores["psds2"] == pytest.approx(0.5)


def test_psds_uses_only_classes_with_reference_events_and_checks_ids():
    labels = CLASSES + ["bird"]
    scores = {clip: np.pad(values, ((0, 0), (0, 1))) for clip, values in frame_scores(perfect()).items()}
    result = psds_scores(scores, HOP, GROUND_TRUTH, DURATIONS, labels)
    assert result["classes"] == ["cat", "dog"] and result["psds1"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same audio ids"):
        psds_scores({"a": scores["a"]}, HOP, GROUND_TRUTH, DURATIONS, labels)


def test_frame_map_pools_rows_of_all_clips():
    scores = [np.array([[0.9, 0.1], [0.8, 0.2]]), np.array([[0.7, 0.9], [0.1, 0.3]])]
    targets = [np.array([[1, 0], [0, 0]]), np.array([[1, 1], [0, 0]])]
    # dog: rows ranked 0.9 (+), 0.8 (-), 0.7 (+), 0.1 (-): AP = (1/1 + 2/3) / 2; cat: its positive ranks first: 1.
    assert frame_map(scores, targets) == pytest.approx(((1 + 2 / 3) / 2 + 1.0) / 2)


# ------------------------------------------------------------------------------------------------ decoding


def test_decode_events_thresholds_and_median_filter():
    probabilities = np.array([[0.1, 0.9], [0.8, 0.9], [0.2, 0.1], [0.7, 0.9], [0.9, 0.9], [0.6, 0.05]])
    events = decode_events(probabilities, 0.16, CLASSES, thresholds=[0.5, 0.5])
    assert [(e.label, round(e.onset, 2), round(e.offset, 2)) for e in events] == [
        ("cat", 0.0, 0.32), ("dog", 0.16, 0.32), ("cat", 0.48, 0.8), ("dog", 0.48, 0.96)]
    assert events[-1].score == pytest.approx(0.9)
    # Per-class thresholds: dog > 0.65 is on in rows 1, 3, 4. A 3-row median filter drops dog's lone row 1, fills
    # dog's row 2 and cat's row 2 (cat: rows 0-4 on); offsets are cut at the clip's 0.75 s.
    filtered = decode_events(probabilities, 0.16, CLASSES, thresholds=[0.65, 0.5], median_filter=3, duration=0.75)
    assert [(e.label, round(e.onset, 2), round(e.offset, 2)) for e in filtered] == [
        ("cat", 0.0, 0.75), ("dog", 0.32, 0.75)]
    with pytest.raises(ValueError, match="odd"):
        decode_events(probabilities, 0.16, CLASSES, median_filter=2)
    with pytest.raises(ValueError, match="one per class"):
        class_thresholds([0.5, 0.5, 0.5], 2)


def test_decoding_perfect_frame_targets_recovers_the_events():
    hop = 0.16
    reference = {"a": [E(0.8, 2.4), E(3.2, 4.0, "cat")], "b": [E(1.6, 6.4, "cat")]}
    estimated = {
        clip: decode_events(events_to_frame_targets(events, 63, hop, CLASSES), hop, CLASSES, duration=10.0)
        for clip, events in reference.items()
    }
    assert estimated["a"][0].onset == pytest.approx(0.8) and estimated["a"][0].offset == pytest.approx(2.4)
    assert event_based_f1(reference, estimated, CLASSES)["f1_macro"] == 1.0


# ----------------------------------------------------------------------------------- frame features, heads


def test_frame_f1_thresholds_pick_the_best_grid_value():
    probabilities = np.array([[0.95, 0.3], [0.62, 0.2], [0.4, 0.9], [0.1, 0.8]])
    targets = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    thresholds = frame_f1_thresholds(probabilities, targets, grid=(0.1, 0.5, 0.7, 0.85))
    assert thresholds.tolist() == [0.5, 0.85]  # dog: > 0.5 keeps both positives only; cat: > 0.85 keeps row 2 only
    assert frame_f1_thresholds(probabilities, np.zeros_like(targets)).tolist() == [0.5, 0.5]


def test_fit_frame_head_separates_a_linear_problem():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((400, 6))
    targets = np.stack([features[:, 0] > 0.5, features[:, 1] + features[:, 2] > 0], axis=1).astype(np.float32)
    head = fit_frame_head(features, targets, l2=1e-5)
    accuracy = ((head.probabilities(features) > 0.5) == targets.astype(bool)).mean()
    assert accuracy > 0.97
    assert fit_frame_head(features, targets, l2=1.0).weight.std() < head.weight.std()  # the penalty shrinks


@pytest.fixture(scope="module")
def tiny_encoder():
    from sslam.modeling_sslam import SSLAMConfig, SSLAMModel

    torch.manual_seed(0)
    config = SSLAMConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    return SSLAMModel(config).eval()


def noise(seconds, seed):
    return np.random.default_rng(seed).uniform(-0.3, 0.3, int(seconds * 16000)).astype(np.float32)


def test_log_mel_frame_statistics_on_the_encoder_rows(tiny_encoder):
    from sslam.modeling_sslam import SSLAMFeatureExtractor

    extractor = SSLAMFeatureExtractor(max_length=64)
    clips = [noise(1.0, 0), noise(0.45, 1)]
    statistics = LogMelFrameStatistics(extractor)(clips)
    rows = EncoderFrameFeatures(tiny_encoder, extractor)(clips)
    assert [s.shape for s in statistics] == [(7, 384), (3, 384)]
    assert [len(r) for r in rows] == [7, 3]
    fbank = extractor(clips[0], sampling_rate=16000, padding="longest", return_tensors="np")["input_values"][0]
    np.testing.assert_allclose(statistics[0][1, :128], fbank[16:32].mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(statistics[0][1, 256:], fbank[16:32].max(axis=0), atol=1e-5)


def test_frame_probabilities_of_stitched_rows_match_the_forward_pass(tiny_encoder):
    from sslam.evaluation.detection import frame_probabilities
    from sslam.modeling_sslam import SSLAMFeatureExtractor, SSLAMForAudioFrameClassification

    torch.manual_seed(0)
    frame_model = SSLAMForAudioFrameClassification(tiny_encoder.config.__class__(
        **{**tiny_encoder.config.to_dict(), "num_labels": 3})).eval()
    extractor = SSLAMFeatureExtractor(max_length=64)
    clip = noise(0.6, 0)  # within one 4-row window
    probabilities = frame_probabilities(frame_model, extractor, clip, sampling_rate=16000)[0]
    inputs = extractor(clip, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        logits = frame_model(**inputs).logits[0, : len(probabilities)]
    np.testing.assert_allclose(probabilities, torch.sigmoid(logits).numpy(), atol=1e-6)


def test_a_selected_head_folds_into_a_frame_classifier(tiny_encoder, tmp_path):
    from transformers import AutoModelForAudioFrameClassification

    from sslam.evaluation.detection import frame_probabilities
    from sslam.modeling_sslam import SSLAMFeatureExtractor

    extractor = SSLAMFeatureExtractor(max_length=64)
    source = EncoderFrameFeatures(tiny_encoder, extractor)
    clips = [noise(1.5, seed) for seed in range(6)]
    events = {f"c{i}": [E(0.3 + 0.1 * i, 0.9 + 0.05 * i, CLASSES[i % 2])] for i in range(6)}
    features = source(clips)
    targets = [events_to_frame_targets(events[f"c{i}"], len(f), 0.16, CLASSES) for i, f in enumerate(features)]
    validation = {clip: events[clip] for clip in ("c4", "c5")}
    head = select_frame_head(features[:4], targets[:4], features[4:], targets[4:], validation,
                             {"c4": 1.5, "c5": 1.5}, 0.16, CLASSES, l2_grid=(1e-4, 1e-2), median_filters=(1, 3))
    assert head.l2 in (1e-4, 1e-2) and head.median_filter in (1, 3) and head.thresholds.shape == (2,)
    model = head.to_frame_classifier(tiny_encoder, CLASSES)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForAudioFrameClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.detection_thresholds == pytest.approx(head.thresholds.tolist())
    assert loaded.config.detection_median_filter == head.median_filter
    probabilities = frame_probabilities(loaded, extractor, clips[:2], sampling_rate=16000)
    for clip_features, clip_probabilities in zip(features, probabilities):
        np.testing.assert_allclose(clip_probabilities, head.probabilities(clip_features), atol=1e-4)


# ----------------------------------------------------------------------------- frame fine-tuning (Trainer)


@pytest.fixture(scope="module")
def strong_data():
    from sslam.evaluation.datasets_io import from_strong_labels

    clips = [noise(1.0, seed) for seed in range(4)]
    events = [[E(0.1, 0.5)], [E(0.2, 0.9, "cat")], [], [E(0.0, 0.3), E(0.5, 1.0, "cat")]]
    return from_strong_labels(clips, events, CLASSES)


def frame_trainer(tmp_path, strong_data, freeze: bool):
    from sslam.evaluation.finetune import RECIPES, build_frame_finetune_trainer, strong_label_config
    from sslam.modeling_sslam import SSLAMConfig, SSLAMFeatureExtractor, SSLAMForAudioFrameClassification

    torch.manual_seed(0)
    config = SSLAMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         **strong_label_config(strong_data))
    model = SSLAMForAudioFrameClassification(config)
    recipe = RECIPES["spass_linear" if freeze else "spass"]
    args = recipe.training_arguments(str(tmp_path), max_steps=2, per_device_train_batch_size=2,
                                     per_device_eval_batch_size=2, warmup_steps=0, learning_rate=1e-2,
                                     save_strategy="no", logging_steps=1, disable_tqdm=True, use_cpu=True)
    extractor = SSLAMFeatureExtractor(max_length=128)
    return build_frame_finetune_trainer(model, args, strong_data, strong_data, extractor, recipe=recipe), model


def test_frame_collator_masks_padding_rows(strong_data):
    from sslam.evaluation.finetune import FrameClassificationCollator
    from sslam.modeling_sslam import SSLAMFeatureExtractor

    collator = FrameClassificationCollator(SSLAMFeatureExtractor(max_length=128), CLASSES)
    batch = collator([strong_data[0], strong_data[3]])
    assert batch["labels"].shape == (2, 8, 2)
    assert torch.all(batch["labels"][:, 7] == -100)  # 1 s = 98 frames: row 7 (frames 112-127) is padding
    assert batch["labels"][0, :7, 0].tolist() == [0, 1, 1, 0, 0, 0, 0]  # dog 0.1-0.5 covers rows 1 and 2 (>= half)
    assert batch["labels"][1, :7, 1].tolist() == [0, 0, 0, 1, 1, 1, 0]  # cat 0.5-1.0 covers 0.04 s of row 6


def test_frozen_encoder_frame_head_trains_only_the_head(tmp_path, strong_data):
    trainer, model = frame_trainer(tmp_path, strong_data, freeze=True)
    encoder_before = {k: v.clone() for k, v in model.sslam.state_dict().items()}
    head_before = model.classifier.weight.detach().clone()
    trainer.train()
    assert all(torch.equal(v, model.sslam.state_dict()[k]) for k, v in encoder_before.items())
    assert not torch.equal(head_before, model.classifier.weight)
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_frame_mAP"] <= 1.0 and math.isfinite(metrics["eval_loss"])


def test_full_frame_fine_tuning_uses_layer_decay(tmp_path, strong_data):
    trainer, model = frame_trainer(tmp_path, strong_data, freeze=False)
    before = model.sslam.encoder.layer[0].mlp.fc1.weight.detach().clone()
    trainer.train()
    assert not torch.equal(before, model.sslam.encoder.layer[0].mlp.fc1.weight)
    scales = sorted({group["lr_scale"] for group in trainer.optimizer.param_groups})
    assert scales == pytest.approx([0.65**2, 0.65, 1.0])
    trainer.save_model(tmp_path / "saved")
    from transformers import AutoModelForAudioFrameClassification

    loaded = AutoModelForAudioFrameClassification.from_pretrained(tmp_path / "saved")
    torch.testing.assert_close(loaded.classifier.weight, model.classifier.weight)
