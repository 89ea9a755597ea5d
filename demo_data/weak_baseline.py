"""Weak, model-free baseline for the demo sets: a learned model's linear probe should beat it.

Features: 64-band Kaldi log-mel (25 ms / 10 ms), mean and standard deviation over time (128 values).
Classifier: standardisation + logistic regression (one-vs-rest for the multi-label mixtures).
Prints test accuracy for ``events`` and ``instruments`` and test mAP (macro) for their mixtures, each beside
a chance level (majority class; constant score).

    OMP_NUM_THREADS=1 .venv/bin/python -m sslam.demo_data.weak_baseline
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, average_precision_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torchaudio.compliance.kaldi import fbank

from sslam.demo_data.loader import SAMPLE_RATE, LABELLED_SETS, class_names, load_labelled, load_mixtures

MIN_SAMPLES = 400  # one 25 ms frame


def logmel_stats(waveform: np.ndarray) -> np.ndarray:
    """Mean and standard deviation over time of 64 log-mel bands."""
    samples = torch.from_numpy(np.pad(waveform, (0, max(0, MIN_SAMPLES - len(waveform)))))
    features = fbank(samples[None], num_mel_bins=64, sample_frequency=SAMPLE_RATE, dither=0.0, window_type="hanning")
    return torch.cat([features.mean(0), features.std(0, unbiased=False)]).numpy()


def classifier():
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))


def single_label_accuracy(set_name: str) -> tuple[float, float]:
    """Test accuracy of the baseline and of always predicting the most frequent training class."""
    names = class_names(set_name)
    train, test = load_labelled(set_name, "train"), load_labelled(set_name, "test")
    train_y = [names.index(label) for _, label in train]
    test_y = [names.index(label) for _, label in test]
    model = classifier().fit(np.stack([logmel_stats(w) for w, _ in train]), train_y)
    predictions = model.predict(np.stack([logmel_stats(w) for w, _ in test]))
    majority = np.bincount(train_y).argmax()
    return accuracy_score(test_y, predictions), accuracy_score(test_y, [majority] * len(test_y))


def mixture_map(set_name: str) -> tuple[float, float]:
    """Test mAP of the baseline and of a constant (chance) predictor."""
    train_x, train_y, _ = load_mixtures(set_name, "train")
    test_x, test_y, _ = load_mixtures(set_name, "test")
    model = OneVsRestClassifier(classifier()).fit(np.stack([logmel_stats(w) for w in train_x]), train_y)
    scores = model.predict_proba(np.stack([logmel_stats(w) for w in test_x]))
    chance = average_precision_score(test_y, np.zeros_like(test_y), average="macro")
    return average_precision_score(test_y, scores, average="macro"), chance


def main() -> None:
    torch.set_num_threads(1)
    print("| set | test metric | baseline | chance |")
    print("|---|---|---|---|")
    for set_name in LABELLED_SETS:
        value, chance = single_label_accuracy(set_name)
        print(f"| {set_name} | accuracy | {value:.3f} | {chance:.3f} |")
        value, chance_map = mixture_map(set_name)
        print(f"| {set_name} mixtures | mAP | {value:.3f} | {chance_map:.3f} |")


if __name__ == "__main__":
    main()
