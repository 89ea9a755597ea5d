"""The main job's --quick mode end to end (pipeline and outputs, not the scores), and the CLI on real clips."""

import json
import subprocess
import sys

import numpy as np
import pytest
from huggingface_hub import ModelCard

import sslam.demo_data as demo_data
from sslam.cli.demo import ENCODERS, PROBE_TASKS

REPO = demo_data.DEMO_DIR.parent


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("demo")
    completed = subprocess.run(
        [sys.executable, "-m", "sslam.cli.main", "demo", "--quick", "--output_dir", str(output_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return output_dir, completed.stdout


def test_quick_demo_writes_results_for_every_encoder(quick_run):
    output_dir, stdout = quick_run
    results = json.loads((output_dir / "results.json").read_text())
    expected_columns = {f"{set_name}_{kind}" for set_name, kind, _ in PROBE_TASKS}

    assert set(results["scores"]) == {*ENCODERS, "logmel_baseline"}
    for scores in results["scores"].values():
        assert set(scores) == expected_columns
        assert all(0.0 <= value <= 1.0 for value in scores.values())
    assert set(results["chance"]) == expected_columns
    for sizes in results["split_sizes"].values():
        assert sizes["train"] > 0 and sizes["test"] > 0
    assert {"stage1", "sslam", "control_mbua", "linear_probes", "total"} <= set(results["wall_seconds"])
    assert results["seeds"]["pretraining"] == results["settings"]["seed"]
    assert "| sslam |" in stdout and "| sslam |" in (output_dir / "results.md").read_text()


def test_quick_demo_plots_and_loss_terms(quick_run):
    output_dir, _ = quick_run
    for name in ("loss_curves.png", "scores.png"):
        assert (output_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((output_dir / "sslam" / "trainer_state.json").read_text())["log_history"]
    logged = {key for entry in history for key in entry}
    assert {"loss_eat_patch_loss", "loss_mix_patch_loss", "loss_eat_cls_loss"} <= logged


def test_quick_demo_saves_loadable_encoders_with_cards(quick_run):
    import sslam.modeling_sslam  # noqa: F401
    from transformers import AutoFeatureExtractor, AutoModel

    output_dir, _ = quick_run
    results = json.loads((output_dir / "results.json").read_text())
    for name in ENCODERS:
        folder = output_dir / "encoders" / name
        model = AutoModel.from_pretrained(folder).eval()
        extractor = AutoFeatureExtractor.from_pretrained(folder)
        assert extractor.max_length == results["settings"]["max_length"]
        card = ModelCard.load(folder / "README.md")
        reported = {round(result.metric_value, 2) for result in card.data.eval_results}
        assert {round(100 * value, 2) for value in results["scores"][name].values()} == reported
        assert model.config.hidden_size == results["settings"]["hidden_size"]


def test_cli_embed_and_classify_on_bundled_clip(quick_run, tmp_path):
    output_dir, _ = quick_run
    encoder = output_dir / "encoders" / "sslam"
    clip = str(demo_data.EXAMPLE_CLIP)
    target = tmp_path / "emb.npy"

    completed = subprocess.run(
        [sys.executable, "-m", "sslam.cli.main", "embed", clip, "--model", str(encoder), "--output", str(target)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    embedding = np.load(target)
    assert embedding.shape == (json.loads((encoder / "config.json").read_text())["hidden_size"],)
    assert np.isfinite(embedding).all()
