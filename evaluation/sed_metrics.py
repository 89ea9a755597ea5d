"""Sound event detection metrics, computed by the field's libraries (pinned: sed_eval 0.2.1, sed_scores_eval 0.0.4).

* `event_based_f1`: `sed_eval.sound_event.EventBasedMetrics` with the DCASE settings: an estimated event matches a
  reference event of its class when its onset is within 200 ms and its offset within max(200 ms, 20 % of the
  reference event's length) (optimal one-to-one matching); a class without any output scores 0
  (``empty_system_output_handling="zero_score"``, as the DCASE baseline). Macro F1 (mean over the classes with
  reference events, DCASE's headline number) and micro F1.
* `segment_based_f1`: `sed_eval.sound_event.SegmentBasedMetrics` on 1 s segments. Macro F1 over the classes with
  reference activity; sed_eval gives a class that the system never outputs an undefined F (and would leave it out
  of its mean), here it counts 0. Micro F1 as sed_eval computes it.
* `psds_scores`: PSDS1 and PSDS2 from `sed_scores_eval.intersection_based.psds` on the frame probabilities, with the
  DCASE 2021-2024 scenarios (`PSDS_SCENARIOS`), over the classes that have reference events (PSDS is undefined for a
  class without any; same-class reference events that touch are merged first, as PSDS requires).
* `frame_map`: frame-level macro mAP (`metrics.mean_average_precision` over every model row of every clip).

Inputs are keyed by audio id: `reference` and `estimated` map ids to `strong_labels.Event` lists (every reference
id must be evaluated: an id missing from `estimated` has no output, and an estimated id without reference is an
error), frame scores map ids to `(R, C)` probabilities on the model's rows (row r spans [r h, (r + 1) h)).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from sslam.evaluation.metrics import mean_average_precision
from sslam.evaluation.strong_labels import Event, merge_events

ONSET_COLLAR_SECONDS = 0.2
OFFSET_COLLAR_FRACTION = 0.2
SEGMENT_SECONDS = 1.0
PSDS_SCENARIOS = {
    "psds1": dict(dtc_threshold=0.7, gtc_threshold=0.7, cttc_threshold=None, alpha_ct=0.0, alpha_st=1.0,
                  max_efpr=100.0),
    "psds2": dict(dtc_threshold=0.1, gtc_threshold=0.1, cttc_threshold=0.3, alpha_ct=0.5, alpha_st=1.0,
                  max_efpr=100.0),
}


def _check_ids(reference: Mapping, estimated: Mapping, what: str) -> None:
    extra = sorted(set(estimated) - set(reference))
    if extra:
        raise ValueError(f"{what} has audio ids without a reference: {extra[:5]}")
    if not reference:
        raise ValueError("no reference clips to evaluate")


def _sed_eval_events(events: Sequence[Event], audio_id: str) -> list[dict]:
    return [
        {"filename": audio_id, "onset": event.onset, "offset": event.offset, "event_label": event.label}
        for event in events
    ]


def _overall_and_macro(metric, label_names: Sequence[str], zero_for_silent_classes: bool) -> dict[str, float]:
    with warnings.catch_warnings():  # sed_eval's nanmean over classes that are all undefined
        warnings.simplefilter("ignore", RuntimeWarning)
        results = metric.results()
    overall = results["overall"]
    if zero_for_silent_classes:
        per_class = []
        for name in label_names:
            if metric.class_wise[name]["Nref"] > 0:
                value = results["class_wise"][name]["f_measure"]["f_measure"]
                per_class.append(0.0 if np.isnan(value) else value)
        macro = float(np.mean(per_class)) if per_class else float("nan")
    else:
        macro = float(results["class_wise_average"]["f_measure"]["f_measure"])
    return {
        "f1_macro": macro,
        "f1_micro": float(overall["f_measure"]["f_measure"]),
        "precision_micro": float(overall["f_measure"]["precision"]),
        "recall_micro": float(overall["f_measure"]["recall"]),
    }


def event_based_f1(
    reference: Mapping[str, Sequence[Event]], estimated: Mapping[str, Sequence[Event]], label_names: Sequence[str]
) -> dict[str, float]:
    """Event-based F1 (collars 200 ms / max(200 ms, 20 %)): ``f1_macro``, ``f1_micro``, ``precision_micro``,
    ``recall_micro`` (fractions)."""
    import sed_eval

    _check_ids(reference, estimated, "estimated")
    metric = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=list(label_names),
        t_collar=ONSET_COLLAR_SECONDS,
        percentage_of_length=OFFSET_COLLAR_FRACTION,
        empty_system_output_handling="zero_score",
    )
    for audio_id, events in reference.items():
        metric.evaluate(
            reference_event_list=_sed_eval_events(events, audio_id),
            estimated_event_list=_sed_eval_events(estimated.get(audio_id, []), audio_id),
        )
    return _overall_and_macro(metric, label_names, zero_for_silent_classes=False)


def segment_based_f1(
    reference: Mapping[str, Sequence[Event]],
    estimated: Mapping[str, Sequence[Event]],
    label_names: Sequence[str],
    durations: Mapping[str, float],
) -> dict[str, float]:
    """Segment-based F1 on 1 s segments over each clip's whole duration: ``f1_macro`` (a class with reference
    activity but no output counts 0), ``f1_micro``, ``precision_micro``, ``recall_micro``."""
    import sed_eval

    _check_ids(reference, estimated, "estimated")
    metric = sed_eval.sound_event.SegmentBasedMetrics(
        event_label_list=list(label_names), time_resolution=SEGMENT_SECONDS
    )
    for audio_id, events in reference.items():
        metric.evaluate(
            reference_event_list=_sed_eval_events(events, audio_id),
            estimated_event_list=_sed_eval_events(estimated.get(audio_id, []), audio_id),
            evaluated_length_seconds=float(durations[audio_id]),
        )
    return _overall_and_macro(metric, label_names, zero_for_silent_classes=True)


def score_timestamps(num_rows: int, hop_seconds: float, duration: float | None = None) -> np.ndarray:
    """`(num_rows + 1,)` row boundaries `r * hop` in seconds (the last one cut to `duration` when it lies past it)."""
    timestamps = np.round(np.arange(num_rows + 1, dtype=np.float64) * hop_seconds, 6)
    if duration is not None and num_rows > 0:
        timestamps[-1] = max(min(timestamps[-1], duration), timestamps[-2] + 1e-6)
    return timestamps


def psds_scores(
    frame_scores: Mapping[str, np.ndarray],
    hop_seconds: float,
    reference: Mapping[str, Sequence[Event]],
    durations: Mapping[str, float],
    label_names: Sequence[str],
) -> dict:
    """PSDS1 and PSDS2 of frame probabilities (`(R, C)` per clip on the model's rows): ``{"psds1", "psds2",
    "classes"}``, ``classes`` being the classes with reference events that the scores were computed over."""
    from sed_scores_eval import intersection_based
    from sed_scores_eval.base_modules.scores import create_score_dataframe

    if set(frame_scores) != set(reference) or set(durations) != set(reference):
        raise ValueError("frame_scores, reference and durations must have the same audio ids")
    present = sorted({event.label for events in reference.values() for event in events})
    if len(present) < 2:
        raise ValueError(f"PSDS needs reference events of at least 2 classes, got {present}")
    columns = [list(label_names).index(name) for name in present]
    scores = {
        audio_id: create_score_dataframe(
            np.asarray(values, dtype=np.float64)[:, columns],
            score_timestamps(len(values), hop_seconds, float(durations[audio_id])),
            present,
        )
        for audio_id, values in frame_scores.items()
    }
    ground_truth = {
        audio_id: [(event.onset, event.offset, event.label) for event in merge_events(events)]
        for audio_id, events in reference.items()
    }
    durations = {audio_id: float(value) for audio_id, value in durations.items()}
    results = {
        name: float(intersection_based.psds(scores, ground_truth, durations, **scenario)[0])
        for name, scenario in PSDS_SCENARIOS.items()
    }
    return {**results, "classes": present}


def frame_map(frame_scores: Sequence[np.ndarray], frame_targets: Sequence[np.ndarray]) -> float:
    """Frame-level macro mAP: the rows of all clips pooled, AP per class, mean over classes with positive rows."""
    if len(frame_scores) != len(frame_targets):
        raise ValueError(f"{len(frame_scores)} score arrays but {len(frame_targets)} target arrays")
    return mean_average_precision(np.concatenate(frame_scores), np.concatenate(frame_targets))


def detection_scores(
    reference: Mapping[str, Sequence[Event]],
    estimated: Mapping[str, Sequence[Event]],
    frame_scores: Mapping[str, np.ndarray],
    frame_targets: Mapping[str, np.ndarray],
    hop_seconds: float,
    durations: Mapping[str, float],
    label_names: Sequence[str],
) -> dict[str, float]:
    """Every metric of this module on one evaluation set: ``event_f1`` / ``segment_f1`` (macro) and their
    ``_micro`` variants, ``psds1``, ``psds2`` and ``frame_map`` (fractions)."""
    events = event_based_f1(reference, estimated, label_names)
    segments = segment_based_f1(reference, estimated, label_names, durations)
    psds = psds_scores(frame_scores, hop_seconds, reference, durations, label_names)
    ids = list(reference)
    return {
        "event_f1": events["f1_macro"],
        "event_f1_micro": events["f1_micro"],
        "segment_f1": segments["f1_macro"],
        "segment_f1_micro": segments["f1_micro"],
        "psds1": psds["psds1"],
        "psds2": psds["psds2"],
        "frame_map": frame_map([frame_scores[i] for i in ids], [frame_targets[i] for i in ids]),
    }


__all__ = [
    "ONSET_COLLAR_SECONDS",
    "OFFSET_COLLAR_FRACTION",
    "PSDS_SCENARIOS",
    "SEGMENT_SECONDS",
    "detection_scores",
    "event_based_f1",
    "frame_map",
    "psds_scores",
    "score_timestamps",
    "segment_based_f1",
]
