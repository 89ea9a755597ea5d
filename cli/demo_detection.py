"""The main job's detection stage: sound event detection on strongly labelled soundscapes.

Data (`demo_data/soundscapes`): 10 s soundscapes, each 1-4 events of distinct classes of the 0AD-17 event set over
real 0 A.D. ambience. Test soundscapes use only clips of the event set's test split and test backgrounds (recordings
that no training soundscape and no pre-training chunk uses); the split was made before mixing. The training
soundscapes are split (seeded, by soundscape) into a fit part and a validation part.

For each frozen encoder and the log-mel frame baseline: frame features of every 160 ms row
(`evaluation.detection.EncoderFrameFeatures` / `LogMelFrameStatistics`), one linear frame head with the same
recipe (`evaluation.detection.select_frame_head`: fitted on the fit part, L2 penalty, per-class thresholds and median
filter chosen on the validation part), then on the test soundscapes: events (`decode_events`) scored by
`evaluation.sed_metrics.detection_scores` (event-based and segment-based macro F1, PSDS1, PSDS2, frame mAP).

Writes `detection_piano_roll.png` (one test soundscape: its spectrogram, the ground truth, and each source's frame
probabilities with its detected events) and each encoder with its head as an `SSLAMForAudioFrameClassification`
folder under `detection/<encoder>/` (what `sslam detect --model` loads).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

VALIDATION_FRACTION = 0.2
TABLE_COLUMNS = (
    ("event_f1", "event F1"), ("segment_f1", "segment F1"), ("psds1", "PSDS1"), ("psds2", "PSDS2"),
    ("frame_map", "frame mAP"),
)
PIANO_ROLL_MIN_EVENTS = 3


def load_soundscapes(split: str, limit: int | None) -> dict:
    """`{"ids", "waveforms", "events" {id: [Event]}, "durations" {id: s}}` of the first `limit` soundscapes of a
    split, rendered from their recipes (what `demo_data.load_soundscape_dataset` holds, without the Arrow table)."""
    import sslam.demo_data as demo_data

    recipes = demo_data.read_soundscape_recipes(split)[:limit]
    clips = {row["id"]: demo_data.read_clip("events", row["path"]) for row in demo_data.read_manifest("events", split)}
    ids = [recipe["id"] for recipe in recipes]
    waveforms = [demo_data.materialize_soundscape(recipe, clips) for recipe in recipes]
    return {
        "ids": ids,
        "waveforms": waveforms,
        "events": {recipe["id"]: demo_data.soundscape_events(recipe) for recipe in recipes},
        "durations": {recipe["id"]: recipe["num_samples"] / recipe["sample_rate"] for recipe in recipes},
    }


def subset(data: dict, indices) -> dict:
    ids = [data["ids"][i] for i in indices]
    return {
        "ids": ids,
        "waveforms": [data["waveforms"][i] for i in indices],
        "events": {clip: data["events"][clip] for clip in ids},
        "durations": {clip: data["durations"][clip] for clip in ids},
    }


def fit_validation_split(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of the training soundscapes into fit and validation indices (sorted)."""
    order = np.random.default_rng(seed).permutation(count)
    cut = max(1, round(VALIDATION_FRACTION * count))
    return np.sort(order[cut:]), np.sort(order[:cut])


def frame_targets(data: dict, features: list[np.ndarray], hop: float, names: list[str]) -> list[np.ndarray]:
    from sslam.evaluation.strong_labels import events_to_frame_targets

    return [
        events_to_frame_targets(data["events"][clip], len(rows), hop, names) for clip, rows in zip(data["ids"], features)
    ]


def evaluate_source(source, fit: dict, validation: dict, test: dict, hop: float, names: list[str], seed: int):
    """Fit one source's frame head and score it on the test soundscapes: `(scores, head, test probabilities)`."""
    from sslam.evaluation.detection import decode_events, select_frame_head
    from sslam.evaluation.sed_metrics import detection_scores

    features = {name: source(part["waveforms"]) for name, part in (("fit", fit), ("validation", validation),
                                                                  ("test", test))}
    targets = {name: frame_targets(part, features[name], hop, names)
               for name, part in (("fit", fit), ("validation", validation), ("test", test))}
    head = select_frame_head(
        features["fit"], targets["fit"], features["validation"], targets["validation"], validation["events"],
        validation["durations"], hop, names, seed=seed,
    )
    probabilities = {clip: head.probabilities(rows) for clip, rows in zip(test["ids"], features["test"])}
    estimated = {
        clip: decode_events(probabilities[clip], hop, names, head.thresholds, head.median_filter, test["durations"][clip])
        for clip in test["ids"]
    }
    scores = detection_scores(
        test["events"], estimated, probabilities, dict(zip(test["ids"], targets["test"])), hop, test["durations"], names
    )
    scores["median_filter_rows"] = head.median_filter
    scores["l2"] = head.l2
    return scores, head, probabilities, estimated, targets["test"]


def run_detection_stage(
    encoders: dict, max_length: int, root: Path, *, train_limit: int | None = None, test_limit: int | None = None,
    seed: int = 0,
) -> dict:
    """Frame heads for every encoder and the log-mel baseline on the soundscapes; results as a dict (see
    `detection_markdown`), the piano roll and the encoders' frame classifiers written under `root`."""
    import sslam.demo_data as demo_data
    from sslam.evaluation.detection import EncoderFrameFeatures, LogMelFrameStatistics
    from sslam.modeling_sslam import SSLAMFeatureExtractor
    from sslam.modeling_sslam.embedding import row_hop_seconds

    start = time.perf_counter()
    extractor = SSLAMFeatureExtractor(max_length=max_length)
    hop = row_hop_seconds(extractor)
    names = demo_data.class_names("events")
    train = load_soundscapes("train", train_limit)
    test = load_soundscapes("test", test_limit)
    fit_indices, validation_indices = fit_validation_split(len(train["ids"]), seed)
    fit, validation = subset(train, fit_indices), subset(train, validation_indices)
    sources = {name: EncoderFrameFeatures(model, extractor) for name, model in encoders.items()}
    sources["logmel_baseline"] = LogMelFrameStatistics(extractor)
    scores, outputs, targets = {}, {}, None
    for name, source in sources.items():
        scores[name], head, probabilities, estimated, targets = evaluate_source(
            source, fit, validation, test, hop, names, seed
        )
        outputs[name] = (probabilities, estimated)
        if name in encoders:
            save_frame_classifier(head.to_frame_classifier(encoders[name], names), extractor, root / "detection" / name)
    shown = next((clip for clip in test["ids"] if len(test["events"][clip]) >= PIANO_ROLL_MIN_EVENTS), test["ids"][0])
    plot_piano_roll(test, shown, outputs, names, hop, extractor, root / "detection_piano_roll.png")
    all_targets = np.concatenate(targets)
    return {
        "scores": scores,
        "chance": {"frame_map": float(all_targets.mean(axis=0)[all_targets.any(axis=0)].mean())},
        "split_sizes": {"fit": len(fit["ids"]), "validation": len(validation["ids"]), "test": len(test["ids"])},
        "events": {part: sum(map(len, data["events"].values())) for part, data in
                   (("fit", fit), ("validation", validation), ("test", test))},
        "piano_roll_soundscape": shown,
        "wall_seconds": time.perf_counter() - start,
    }


def save_frame_classifier(model, extractor, folder: Path) -> None:
    model.save_pretrained(folder)
    extractor.save_pretrained(folder)


def detection_markdown(results: dict) -> str:
    """The detection table (macro F1s, PSDS, frame mAP in %) and its split sizes."""
    header = "| encoder | " + " | ".join(title for _, title in TABLE_COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(TABLE_COLUMNS) + 1)]
    for name, values in results["scores"].items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * values[key]:.1f}" for key, _ in TABLE_COLUMNS) + " |")
    chance = results["chance"]["frame_map"]
    lines.append("| chance (class prevalence) | - | - | - | - | " + f"{100 * chance:.1f} |")
    sizes = results["split_sizes"]
    events = results["events"]
    return (
        "\n".join(lines)
        + f"\n\nSoundscapes (10 s): {sizes['fit']} fit / {sizes['validation']} validation / {sizes['test']} test "
        f"({events['fit']} / {events['validation']} / {events['test']} events). Wall time "
        f"{results['wall_seconds']:.0f} s.\n"
    )


def plot_piano_roll(test: dict, clip: str, outputs: dict, names: list[str], hop: float, extractor, path: Path) -> None:
    """One test soundscape: log-mel spectrogram, ground-truth events, and per source its frame probabilities (shade)
    with its detected events (outlines), over the classes that occur or are detected."""
    from matplotlib.colors import PowerNorm
    from matplotlib.patches import Rectangle

    from sslam.cli.demo import pyplot

    plt = pyplot()
    waveform = test["waveforms"][test["ids"].index(clip)]
    reference = test["events"][clip]
    shown = sorted({event.label for event in reference}
                   | {event.label for _, estimated in outputs.values() for event in estimated[clip]})
    rows = {label: index for index, label in enumerate(shown)}
    duration = test["durations"][clip]
    fbank = extractor(waveform, sampling_rate=extractor.sampling_rate, padding="longest", truncation=False,
                      return_tensors="np")["input_values"][0]
    panels = 2 + len(outputs)
    figure, axes = plt.subplots(panels, 1, figsize=(10, 1.2 + 0.28 * len(shown) * panels + 1.0), sharex=True,
                                gridspec_kw={"height_ratios": [1.6] + [1.0] * (panels - 1)})
    axes[0].imshow(fbank.T, origin="lower", aspect="auto", extent=(0, fbank.shape[0] * 0.01, 0, fbank.shape[1]),
                   cmap="magma")
    axes[0].set_ylabel("mel bin")
    axes[0].set_title(f"{clip}: log-mel spectrogram, ground truth (filled), and per source its frame probabilities\n"
                      "(grey, square-root scale from 0 to 1) and detected events (boxes)", fontsize=9)

    def roll(axis, events, title, colour):
        for event in events:
            axis.add_patch(Rectangle((event.onset, rows[event.label] - 0.4), event.offset - event.onset, 0.8,
                                     fill=colour is not None, facecolor=colour, edgecolor="tab:blue", linewidth=1.2))
        axis.set_yticks(range(len(shown)))
        axis.set_yticklabels(shown, fontsize=7)
        axis.set_ylim(-0.6, len(shown) - 0.4)
        axis.set_ylabel(title, fontsize=8, rotation=0, ha="right", va="center")

    roll(axes[1], reference, "ground truth", "tab:green")
    for axis, (name, (probabilities, estimated)) in zip(axes[2:], outputs.items()):
        values = probabilities[clip][:, [names.index(label) for label in shown]]
        axis.imshow(values.T, origin="lower", aspect="auto", extent=(0, len(values) * hop, -0.5, len(shown) - 0.5),
                    cmap="Greys", norm=PowerNorm(0.5, vmin=0.0, vmax=1.0))
        roll(axis, estimated[clip], name, None)
    axes[-1].set_xlim(0, duration)
    axes[-1].set_xlabel("time (s)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
