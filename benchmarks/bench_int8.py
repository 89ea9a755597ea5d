"""int8 dynamic quantisation (onnxruntime) of an SSLAM encoder: accuracy change on the bundled events set and speed-up.

1. Exports the encoder as the waveform -> hidden-states ONNX graph of `sslam export` (fp32), and its int8 version
   (`sslam export --format onnx-int8`: per-channel int8 weights of the encoder's matrix products).
2. Accuracy: a linear probe (standardised logistic regression, `sslam.evaluation.linear_probe`) on the mean of the
   patch tokens, fitted on the events train split (588 clips), scored on the test split (147 clips): fitted on fp32
   features and scored on fp32 and on int8 features (what quantisation costs a deployed head trained on the fp32
   model), and fitted and scored on int8 features (what an int8 pipeline keeps of the information). Clips keep their
   own length (1-2 s).
3. Speed per 10 s clip (`demo_data.EXAMPLE_CLIP`, 1024 frames), front end included, round-robin medians: torch eager
   fp32 (extractor + SDPA model), onnxruntime fp32, onnxruntime int8.

Without `--model`, a base-size encoder with random weights (seed 0) is used: its accuracy is that of random
features (the demo's random-init encoder probes at ~58 %), and trained weights with outlier channels may lose more
under int8, so pass a trained encoder folder (e.g. `outputs/demo/encoders/sslam` after `sslam demo`) when you have one.

    python -m sslam.benchmarks.bench_int8 [--model DIR] [--threads 2] [--repeats 5]
"""

import argparse
import copy
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset

import sslam.demo_data as demo_data
from sslam.benchmarks.bench_inference import cpu_name, round_robin
from sslam.conversion.deployment import LoadedModel, export_onnx, load_saved_model, onnx_session, quantize_onnx_int8
from sslam.evaluation.datasets_io import label_targets
from sslam.evaluation.linear_probe import fit_linear_probe, iter_waveform_batches, score_linear_probe
from sslam.modeling_sslam import SSLAMConfig, SSLAMFeatureExtractor, SSLAMModel
from sslam.modeling_sslam.audio_io import load_audio


@dataclass
class OnnxPatchMeans:
    """Feature source: mean of the patch tokens of an exported encoder graph's `last_hidden_state`, clip by clip."""

    session: object

    def __call__(self, dataset: Dataset) -> np.ndarray:
        rows = []
        for _, waveforms in iter_waveform_batches(dataset, 1):
            hidden = self.session.run(["last_hidden_state"], {"waveform": waveforms[0][None]})[0]
            rows.append(hidden[0, 1:].mean(axis=0))
        return np.stack(rows)


def random_encoder(folder: Path) -> Path:
    torch.manual_seed(0)
    SSLAMModel(SSLAMConfig()).save_pretrained(folder)
    SSLAMFeatureExtractor(max_length=None).save_pretrained(folder)
    return folder


def encoder_of(loaded: LoadedModel, max_length: int | None) -> LoadedModel:
    """The encoder of a saved folder, with its extractor cut / padded to `max_length` frames (None: own length)."""
    extractor = copy.deepcopy(loaded.feature_extractor)
    extractor.max_length = max_length
    return LoadedModel(getattr(loaded.model, "sslam", loaded.model).eval(), extractor)


def probe_results(fp32, int8) -> dict[str, float]:
    """Accuracies of probes on the events set, and the mean cosine between fp32 and int8 test features."""
    train, test = demo_data.load_labelled_dataset("events", "train"), demo_data.load_labelled_dataset("events", "test")
    features = {(name, split): OnnxPatchMeans(session)(data)
                for name, session in (("fp32", fp32), ("int8", int8))
                for split, data in (("train", train), ("test", test))}  # fmt: skip
    train_targets, test_targets = label_targets(train), label_targets(test)
    fp32_probe = fit_linear_probe(features["fp32", "train"], train_targets)
    int8_probe = fit_linear_probe(features["int8", "train"], train_targets)
    a, b = features["fp32", "test"], features["int8", "test"]
    cosine = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return {
        "fp32": score_linear_probe(fp32_probe, a, test_targets)["accuracy"],
        "int8 features, fp32 probe": score_linear_probe(fp32_probe, b, test_targets)["accuracy"],
        "int8 features, int8 probe": score_linear_probe(int8_probe, b, test_targets)["accuracy"],
        "cosine": float(cosine.mean()),
    }


def speed(encoder: LoadedModel, fp32, int8, repeats: int) -> dict[str, float]:
    clip = load_audio(demo_data.EXAMPLE_CLIP)[None]
    extractor = encoder.feature_extractor

    @torch.no_grad()
    def eager():
        encoder.model(**extractor(clip[0], sampling_rate=16_000, return_tensors="pt"))

    timings = round_robin({
        "torch eager fp32": eager,
        "onnxruntime fp32": lambda: fp32.run(None, {"waveform": clip}),
        "onnxruntime int8": lambda: int8.run(None, {"waveform": clip}),
    }, repeats)  # fmt: skip
    return {name: statistics.median(values) for name, values in timings.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a saved SSLAM folder (encoder or classifier; its encoder is used)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        folder = Path(args.model) if args.model else random_encoder(scratch / "random-base")
        loaded = load_saved_model(folder)
        sessions = {}
        for name, max_length in (("own", None), ("10s", 1024)):
            encoder = encoder_of(loaded, max_length)
            fp32 = export_onnx(encoder, scratch / f"{name}-fp32.onnx")
            int8 = quantize_onnx_int8(fp32, scratch / f"{name}-int8.onnx")
            sessions[name] = encoder, onnx_session(fp32, args.threads), onnx_session(int8, args.threads)
            sizes = {"fp32": fp32.stat().st_size / 2**20, "int8": int8.stat().st_size / 2**20}
        results = probe_results(*sessions["own"][1:])
        times = speed(*sessions["10s"], args.repeats)

    source = f"`{args.model}`" if args.model else "base config, random weights (seed 0)"
    print(f"## int8 dynamic quantisation (onnxruntime), encoder: {source}\n")
    print(f"This machine: {cpu_name()}; {args.threads} threads.\n")
    print("| | fp32 | int8 | change |")
    print("|---|---|---|---|")
    rows = (("probe fitted on fp32 features (a head trained on the fp32 model)", "int8 features, fp32 probe"),
            ("probe fitted on each runtime's own features", "int8 features, int8 probe"))  # fmt: skip
    for label, key in rows:
        change = 100 * (results[key] - results["fp32"])
        print(f"| events test accuracy (147 clips), {label} | {100 * results['fp32']:.1f} % "
              f"| {100 * results[key]:.1f} % | {change:+.1f} points |")  # fmt: skip
    print(f"| feature cosine, fp32 vs int8 (mean over the test clips) | 1 | {results['cosine']:.4f} | |")
    ratio = sizes["fp32"] / sizes["int8"]
    print(f"| model file | {sizes['fp32']:.0f} MiB | {sizes['int8']:.0f} MiB | {ratio:.1f}x smaller |")
    print(f"\n## Speed per 10 s clip (front end included, median of {args.repeats} rounds)\n")
    print("| runtime | s per clip | speed-up vs torch eager fp32 |")
    print("|---|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.3f} | {times['torch eager fp32'] / seconds:.2f}x |")


if __name__ == "__main__":
    main()
