"""Dataset loaders, the polyphonic mixture builder, the linear probe and fine-tuning on tiny synthetic data."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from datasets import Audio, DatasetDict

from sslam.evaluation import datasets_io as dio
from sslam.evaluation.finetune import (
    RECIPES,
    AudioClassificationCollator,
    SpectrogramAugmentation,
    build_finetune_trainer,
    label_config,
    layer_decay_parameter_groups,
)
from sslam.evaluation.linear_probe import (
    EmbeddingCache,
    EncoderFeatures,
    LogMelStatistics,
    compute_features,
    run_linear_probe,
)
from sslam.evaluation.run import main as run_cli
from sslam.modeling_sslam import SSLAMConfig, SSLAMForAudioClassification, SSLAMModel
from sslam.modeling_sslam.audio_io import decode_audio
from sslam.modeling_sslam.feature_extraction_sslam import SSLAMFeatureExtractor

SR = 16_000
TONES_HZ = (300.0, 800.0, 2000.0, 5000.0)
CLASS_NAMES = ["low", "mid", "high", "top"]


def tone(frequency: float, rng: np.random.Generator, seconds: float = 1.3, rate: int = SR) -> np.ndarray:
    """A noisy sine with random detuning and phase."""
    t = np.arange(int(seconds * rate)) / rate
    f = frequency * rng.uniform(0.93, 1.07)
    return (0.3 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) + 0.03 * rng.standard_normal(t.size)).astype(
        np.float32
    )


def tone_data(n: int, seed: int, num_classes: int = 3):
    rng = np.random.default_rng(seed)
    labels = [i % num_classes for i in range(n)]
    return [tone(TONES_HZ[c], rng) for c in labels], labels


def tiny_config(**kwargs) -> SSLAMConfig:
    return SSLAMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, **kwargs)


@pytest.fixture(scope="module")
def extractor():
    return SSLAMFeatureExtractor(max_length=128)


@pytest.fixture(scope="module")
def tone_splits():
    """Single-label in-memory train/test datasets of 3 tone classes."""
    train = dio.from_waveforms(*tone_data(24, seed=0), CLASS_NAMES[:3])
    test = dio.from_waveforms(*tone_data(15, seed=1), CLASS_NAMES[:3])
    return DatasetDict(train=train, test=test)


@pytest.fixture(scope="module")
def audio_tree(tmp_path_factory):
    """root/<split>/<label>/*.wav (8 kHz, 2 channels for 'dog') and the list of written files."""
    root = tmp_path_factory.mktemp("audiofolder")
    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("test", 1)):
        for label, hz in (("cat", 500.0), ("dog", 1500.0)):
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                clip = tone(hz, rng, seconds=0.5, rate=8000)
                sf.write(root / split / label / f"{i}.wav", np.stack([clip, clip], 1) if label == "dog" else clip, 8000)
    return root


def torchcodec_works() -> bool:
    try:
        Audio().encode_example({"array": np.zeros(160, np.float32), "sampling_rate": SR})
    except Exception:
        return False
    return True


# ------------------------------------------------------------------------------------------------ loaders


def load_waveform(value):
    return decode_audio(value, SR)


def test_decode_audio_accepts_every_audio_form(audio_tree):
    path = audio_tree / "train" / "dog" / "0.wav"
    from_path = load_waveform(str(path))
    assert from_path.dtype == np.float32 and from_path.shape == (8000,)  # 0.5 s at 8 kHz -> 16 kHz, channels averaged
    np.testing.assert_allclose(load_waveform({"path": str(path), "bytes": None}), from_path)
    np.testing.assert_allclose(load_waveform({"path": None, "bytes": path.read_bytes()}), from_path, atol=1e-6)
    samples, rate = sf.read(path, dtype="float32")
    from_array = load_waveform({"array": samples.mean(1), "sampling_rate": rate})
    np.testing.assert_allclose(from_array, from_path, atol=1e-6)
    np.testing.assert_array_equal(load_waveform(from_path), from_path)
    decoded = SimpleNamespace(data=torch.from_numpy(samples.T.copy()), sample_rate=rate)  # torchcodec's AudioSamples
    from_decoder = load_waveform(SimpleNamespace(get_all_samples=lambda: decoded))
    np.testing.assert_allclose(from_decoder, from_path, atol=1e-6)
    with pytest.raises(ValueError, match="1-D"):
        load_waveform(np.zeros((2, 100)))


def test_load_audiofolder_with_splits(audio_tree):
    data = dio.load_audiofolder(audio_tree, decode=False)
    assert set(data) == {"train", "test"}
    assert data["train"].features["label"].names == ["cat", "dog"]
    assert data["train"]["label"] == [0, 0, 1, 1] and data["test"]["label"] == [0, 1]
    assert load_waveform(data["test"][1]["audio"]).shape == (8000,)
    single = dio.load_audiofolder(audio_tree / "train", decode=False)
    assert len(single) == 4 and dio.label_targets(single).tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="no audio files"):
        dio.load_audiofolder(audio_tree / "train" / "cat")


@pytest.mark.skipif(not torchcodec_works(), reason="datasets decodes audio with torchcodec, which needs FFmpeg")
def test_load_audiofolder_decoded_with_torchcodec(audio_tree):
    data = dio.load_audiofolder(audio_tree / "test")
    assert load_waveform(data[1]["audio"]).shape == (8000,)


def test_load_csv_manifest_single_and_multi_label(tmp_path, audio_tree):
    rows = [f"{audio_tree}/train/cat/0.wav,cat", f"{audio_tree}/train/dog/0.wav,dog"]
    (tmp_path / "single.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    single = dio.load_manifest(tmp_path / "single.csv", decode=False)
    assert single.features["label"].names == ["cat", "dog"] and single["label"] == [0, 1]
    (tmp_path / "multi.tsv").write_text("path\tlabels\ntrain/cat/0.wav\tcat,dog\ntrain/dog/1.wav\tdog\n")
    multi = dio.load_manifest(tmp_path / "multi.tsv", root=audio_tree, label_names=["dog", "cat", "bird"], decode=False)
    assert multi["labels"] == [[1, 0], [0]]
    np.testing.assert_array_equal(dio.label_targets(multi), [[1, 1, 0], [1, 0, 0]])
    assert multi[1]["audio"]["path"] == str(audio_tree / "train" / "dog" / "1.wav")
    (tmp_path / "bad.csv").write_text("file,label\na.wav,cat\n")
    with pytest.raises(ValueError, match="'path'"):
        dio.load_manifest(tmp_path / "bad.csv")


def test_load_fairseq_tsv_and_lbl(tmp_path, audio_tree):
    (tmp_path / "eval.tsv").write_text(f"{audio_tree}/train\ncat/0.wav\t8000\ndog/1.wav\t8000\n")
    (tmp_path / "eval.lbl").write_text("cat/0\t/m/cat,/m/dog\ndog/1\t/m/dog\n")
    (tmp_path / "label_descriptors.csv").write_text('0,/m/dog,"Dog"\n1,/m/bird,"Bird"\n2,/m/cat,"Cat"\n')
    data = dio.load_fairseq_manifest(tmp_path / "eval.tsv", decode=False)
    assert dio.label_names(data) == ["/m/dog", "/m/bird", "/m/cat"]
    np.testing.assert_array_equal(dio.label_targets(data), [[1, 0, 1], [1, 0, 0]])
    assert load_waveform(data[0]["audio"]).shape == (8000,)
    (tmp_path / "short.lbl").write_text("cat/0\t/m/cat\n")
    with pytest.raises(ValueError, match="1 entries"):
        dio.load_fairseq_manifest(tmp_path / "eval.tsv", tmp_path / "short.lbl")


# -------------------------------------------------------------------------------------------- mixtures


def test_mixtures_labels_are_the_source_classes(tone_splits):
    mixtures = dio.build_polyphonic_mixtures(tone_splits, num_sources=(2, 3), num_mixtures=10, seed=3)
    assert isinstance(mixtures, DatasetDict) and set(mixtures) == {"train", "test"}
    for split, data in mixtures.items():
        source_labels = np.asarray(tone_splits[split]["label"])
        assert dio.label_names(data) == CLASS_NAMES[:3]
        for row in data:
            assert 2 <= len(row["labels"]) <= 3
            assert row["labels"] == sorted(source_labels[row["source_indices"]].tolist())  # split-preserving
            assert len(set(row["labels"])) == len(row["labels"])
            audio = np.asarray(row["audio"]["array"])
            assert np.abs(audio).max() == pytest.approx(0.7, abs=1e-6)
            assert all(-6.0 <= g <= 6.0 for g in row["gains_db"])
    assert dio.label_targets(mixtures["test"]).shape == (10, 3)


def test_mixtures_are_deterministic(tone_splits):
    first, again, other = (
        dio.build_polyphonic_mixtures(tone_splits["train"], num_sources=2, num_mixtures=4, seed=seed)
        for seed in (0, 0, 1)
    )
    assert first["labels"] == again["labels"] and first["source_indices"] == again["source_indices"]
    np.testing.assert_array_equal(first[0]["audio"]["array"], again[0]["audio"]["array"])
    assert first["source_indices"] != other["source_indices"]


def test_mixtures_written_to_files(tmp_path, tone_splits):
    data = dio.build_polyphonic_mixtures(tone_splits["test"], num_mixtures=3, output_dir=tmp_path, duration_s=1.0)
    data = data.cast_column("audio", Audio(decode=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"mixture_00000{i}.wav" for i in range(3)]
    assert load_waveform(data[0]["audio"]).shape == (SR,)


def test_mix_sources_places_scales_and_normalises():
    rng = np.random.default_rng(0)
    quiet, loud = np.full(100, 0.01, np.float32), np.full(100, 2.0, np.float32)
    mixture, onsets, gains = dio.mix_sources([quiet, loud], 200, rng, gain_db=0.0, max_onset_fraction=0.5)
    assert gains == [0.0, 0.0] and all(0 <= o <= 100 for o in onsets)
    assert np.abs(mixture).max() == pytest.approx(0.7)
    expected = np.zeros(200)
    for onset in onsets:  # both sources have unit RMS after normalisation
        expected[onset : onset + 100] += 1.0
    np.testing.assert_allclose(mixture, expected * 0.7 / expected.max(), atol=1e-6)
    with pytest.raises(ValueError, match="num_sources"):
        dio.build_polyphonic_mixtures(dio.from_waveforms([quiet] * 2, [0, 0], ["a"]), num_sources=2)


# ---------------------------------------------------------------------------------------------- probe


@pytest.fixture(scope="module")
def tiny_encoder():
    torch.manual_seed(0)
    return SSLAMModel(tiny_config()).eval()


def test_logmel_baseline_probe_separates_tones(tone_splits, extractor):
    assert run_linear_probe(tone_splits["train"], tone_splits["test"], LogMelStatistics(extractor))["accuracy"] >= 0.9


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_random_sslam_probe_beats_chance_and_is_deterministic(tone_splits, extractor, tiny_encoder, pooling):
    features = EncoderFeatures(tiny_encoder, extractor, pooling=pooling)
    first = run_linear_probe(tone_splits["train"], tone_splits["test"], features)
    second = run_linear_probe(tone_splits["train"], tone_splits["test"], features)
    assert first == second
    assert first["accuracy"] >= 0.8  # chance is 1/3


def test_probe_on_mixtures_reports_multilabel_metrics(extractor):
    rng = np.random.default_rng(0)
    waveforms = [tone(TONES_HZ[i % 4], rng) for i in range(48)]
    single = dio.from_waveforms(waveforms, [i % 4 for i in range(48)], CLASS_NAMES)
    train = dio.build_polyphonic_mixtures(single, num_sources=2, num_mixtures=40, seed=0)
    test = dio.build_polyphonic_mixtures(single, num_sources=2, num_mixtures=24, seed=1)
    result = run_linear_probe(train, test, LogMelStatistics(extractor, batch_size=8))
    assert set(result) == {"mAP", "mAUC", "d_prime"}
    assert result["mAP"] >= 0.8  # chance is about 0.5 (2 of 4 classes present)


def test_embedding_cache_is_keyed_and_persisted(tmp_path, tone_splits, extractor, tiny_encoder):
    cache = EmbeddingCache(tmp_path)
    cls = EncoderFeatures(tiny_encoder, extractor)
    features = compute_features(tone_splits["test"], cls, cache=cache)
    assert features.shape == (15, 32) and len(list(tmp_path.glob("*.npy"))) == 1
    compute_features(tone_splits["test"], EncoderFeatures(tiny_encoder, extractor, pooling="mean"), cache=cache)
    baseline = compute_features(tone_splits["test"], LogMelStatistics(extractor), cache=cache)
    assert baseline.shape == (15, 3 * 128) and len(list(tmp_path.glob("*.npy"))) == 3
    reloaded = compute_features(tone_splits["test"], cls, cache=EmbeddingCache(tmp_path))
    np.testing.assert_array_equal(reloaded, features)


@pytest.mark.parametrize("source", ["encoder", "logmel"])
def test_feature_errors_name_the_dataset_row(extractor, tiny_encoder, source):
    """Features are computed in batches of 8: a NaN clip in row 10 is "Clip 10", not its index in its batch."""
    waveforms, labels = tone_data(12, seed=3)
    waveforms[10] = waveforms[10].copy()
    waveforms[10][100] = np.nan
    dataset = dio.from_waveforms(waveforms, labels, CLASS_NAMES[:3])
    features = EncoderFeatures(tiny_encoder, extractor, batch_size=8) if source == "encoder" else LogMelStatistics(
        extractor, batch_size=8)  # fmt: skip
    with pytest.raises(ValueError, match=r"^Clip 10 contains NaN"):
        features(dataset)


def test_probe_rejects_mismatched_targets(extractor):
    waveforms, labels = tone_data(12, seed=2)
    single = dio.from_waveforms(waveforms, labels, CLASS_NAMES[:3])
    assert run_linear_probe(single, single, LogMelStatistics(extractor))["accuracy"] == 1.0
    multi = dio.from_waveforms(waveforms, [[label] for label in labels], CLASS_NAMES[:3])
    with pytest.raises(ValueError, match="differ in kind"):
        run_linear_probe(single, multi, LogMelStatistics(extractor))


# ------------------------------------------------------------------------------------------- finetune


def test_layer_decay_groups_follow_the_original_scales():
    model = SSLAMForAudioClassification(tiny_config(num_labels=3))
    groups = layer_decay_parameter_groups(model, 1e-3, 0.05, 0.5)
    scale_of = {id(p): (g["lr_scale"], g["weight_decay"], g["lr"]) for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert scale_of[id(named["sslam.encoder.layer.0.attention.q_proj.weight"])] == (0.25, 0.05, 2.5e-4)
    assert scale_of[id(named["sslam.encoder.layer.1.mlp.fc1.bias"])] == (0.5, 0.0, 5e-4)
    assert scale_of[id(named["sslam.embeddings.cls_token"])] == (1.0, 0.05, 1e-3)
    for name in ("sslam.embeddings.patch_embeddings.projection.weight", "classifier.weight"):
        assert scale_of[id(named[name])][0] == 1.0
    for name in ("sslam.pre_layernorm.weight", "fc_norm.bias", "classifier.bias"):
        assert scale_of[id(named[name])][:2] == (1.0, 0.0)
    assert len(scale_of) == len(named)


def test_mixup_mixes_inputs_and_labels_with_the_reversed_batch():
    torch.manual_seed(0)
    values = torch.randn(4, 64, 128)
    mixed, labels = SpectrogramAugmentation(3, mixup_alpha=0.8, mixup_prob=1.0, mask_ratio=0.0)(
        {"input_values": values}, torch.tensor([0, 1, 2, 0])
    )
    lam = labels[1, 1]  # clip 1 (class 1) is mixed with clip 2 (class 2)
    assert torch.allclose(labels, lam * torch.eye(3)[[0, 1, 2, 0]] + (1 - lam) * torch.eye(3)[[0, 2, 1, 0]])
    assert torch.allclose(mixed["input_values"], lam * values + (1 - lam) * values.flip(0))
    unmixed, hard = SpectrogramAugmentation(3, mixup_alpha=0.8, mixup_prob=0.0, mask_ratio=0.0)(
        {"input_values": values}, torch.tensor([2, 0, 1, 1])
    )
    assert torch.equal(unmixed["input_values"], values) and torch.equal(hard, torch.eye(3)[[2, 0, 1, 1]])


def test_spec_augment_masks_bands_with_zeros_per_example():
    torch.manual_seed(0)
    values = torch.randn(8, 1, 64, 128) + 5.0  # no zeros before masking
    augmentation = SpectrogramAugmentation(3, mixup_alpha=0.0, mask_ratio=0.3)
    masked, labels = augmentation({"input_values": values}, torch.zeros(8))
    zero = masked["input_values"][:, 0] == 0  # (B, T, F)
    whole_bins, whole_frames = zero.all(dim=1), zero.all(dim=2)
    assert torch.equal(zero, whole_bins[:, None, :] | whole_frames[:, :, None])  # masks are full bands
    assert whole_bins.sum(1).max() <= 0.3 * 128 and whole_frames.sum(1).max() <= 0.3 * 64
    assert len({tuple(row.tolist()) for row in whole_bins}) > 1  # drawn per example
    assert torch.equal(masked["input_values"][~zero[:, None]], values[~zero[:, None]]) and labels.shape == (8,)


def test_finetune_trainer_optimises_the_models_own_loss(tmp_path, tone_splits, extractor):
    """The trainer only augments: its loss is `model(**augmented batch).loss`, with the recipe's label smoothing in
    the model config."""
    recipe = RECIPES["esc50"]
    torch.manual_seed(0)
    settings = {**recipe.model_kwargs(tone_splits["train"]), "drop_path_rate": 0.0}  # a deterministic forward
    model = SSLAMForAudioClassification(tiny_config(**settings))
    assert model.config.label_smoothing == recipe.label_smoothing == 0.1
    args = recipe.training_arguments(str(tmp_path), use_cpu=True, report_to="none")
    trainer = build_finetune_trainer(model, args, tone_splits["train"], None, extractor, recipe=recipe)
    batch = trainer.data_collator([tone_splits["train"][i] for i in range(4)])
    with torch.no_grad():
        model.eval()
        assert trainer.compute_loss(model, batch).item() == model(**batch).loss.item()
        model.train()
        torch.manual_seed(1)
        trained = trainer.compute_loss(model, batch)
        torch.manual_seed(1)
        features = {key: value for key, value in batch.items() if key != "labels"}
        augmented, labels = trainer.augmentation(features, batch["labels"])
        expected = model(**augmented, labels=labels).loss
    assert not torch.equal(augmented["input_values"], batch["input_values"])  # SpecAugment ran
    assert trained.item() == expected.item() != model(**batch).loss.item()


def test_collator_builds_model_inputs(tone_splits, extractor):
    collator = AudioClassificationCollator.for_dataset(tone_splits["train"], extractor)
    batch = collator([tone_splits["train"][i] for i in range(3)])
    assert batch["input_values"].shape == (3, 128, 128) and batch["labels"].tolist() == [0, 1, 2]
    mixtures = dio.build_polyphonic_mixtures(tone_splits["train"], num_sources=2, num_mixtures=2, seed=0)
    multi = AudioClassificationCollator.for_dataset(mixtures, extractor)([mixtures[0], mixtures[1]])
    assert multi["labels"].dtype == torch.float32 and multi["labels"].sum(1).tolist() == [2.0, 2.0]


def run_short_finetune(train, test, extractor, tmp_path, recipe):
    torch.manual_seed(0)
    model = SSLAMForAudioClassification(tiny_config(pooling="mean", **recipe.model_kwargs(train)))
    args = recipe.training_arguments(
        str(tmp_path), learning_rate=1e-2, warmup_steps=1, max_steps=6, per_device_train_batch_size=8,
        save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True,
    )
    trainer = build_finetune_trainer(model, args, train, test, extractor, recipe=recipe)
    before = trainer.evaluate()
    trainer.train()
    return before, trainer.evaluate(), trainer


def test_finetune_single_label_trains_and_reports_accuracy(tmp_path, tone_splits, extractor):
    recipe = RECIPES["esc50"]
    before, after, trainer = run_short_finetune(tone_splits["train"], tone_splits["test"], extractor, tmp_path, recipe)
    assert {"eval_accuracy", "eval_loss"} <= set(after)
    assert after["eval_loss"] < before["eval_loss"]
    assert trainer.model.config.id2label == {0: "low", 1: "mid", 2: "high"}
    scales = sorted({g["lr_scale"] for g in trainer.optimizer.param_groups})
    assert scales == pytest.approx([0.65**2, 0.65, 1.0])


def test_finetune_multi_label_reports_map(tmp_path, tone_splits, extractor):
    train = dio.build_polyphonic_mixtures(tone_splits["train"], num_sources=(1, 2), num_mixtures=16, seed=0)
    test = dio.build_polyphonic_mixtures(tone_splits["test"], num_sources=(1, 2), num_mixtures=8, seed=1)
    assert label_config(train)["problem_type"] == "multi_label_classification"
    _, after, _ = run_short_finetune(train, test, extractor, tmp_path, RECIPES["as20k"])
    assert {"eval_mAP", "eval_mAUC", "eval_d_prime"} <= set(after)
    assert 0.0 < after["eval_mAP"] <= 1.0


def test_finetune_rejects_mismatched_model_and_arguments(tmp_path, tone_splits, extractor):
    model = SSLAMForAudioClassification(tiny_config(num_labels=5))
    args = RECIPES["esc50"].training_arguments(str(tmp_path), use_cpu=True)
    with pytest.raises(ValueError, match="label_config"):
        build_finetune_trainer(model, args, tone_splits["train"], None, extractor, recipe=RECIPES["esc50"])
    args = RECIPES["esc50"].training_arguments(str(tmp_path), use_cpu=True, remove_unused_columns=True)
    with pytest.raises(ValueError, match="remove_unused_columns"):
        build_finetune_trainer(model, args, tone_splits["train"], None, extractor, recipe=RECIPES["esc50"])


# ------------------------------------------------------------------------------------------------------ CLI


def test_cli_linear_probe_writes_metrics(tmp_path, audio_tree, capsys):
    output = tmp_path / "metrics.json"
    run_cli(["linear-probe", "--data", str(audio_tree), "--max_length", "128", "--output", str(output)])
    assert json.loads(output.read_text()) == json.loads(capsys.readouterr().out) == {"accuracy": 1.0}
    with pytest.raises(SystemExit):
        run_cli(["linear-probe", "--data", str(audio_tree), "--train", str(audio_tree / "train")])
    (tmp_path / "cats.csv").write_text(f"path,label\n{audio_tree}/test/cat/0.wav,cat\n")
    with pytest.raises(ValueError, match="different classes"):
        run_cli(["linear-probe", "--train", str(audio_tree / "train"), "--test", str(tmp_path / "cats.csv")])
