"""Parity of `SSLAMForPreTraining` with the original fairseq SSLAM (Stage 2) and EAT (Stage 1) code, on the reference
fixtures (`losses/`, `ema/`, `checkpoints/`). Every expected value, configuration value, seed and shape is read from
the fixture files, so the tests also run on a fixture set with another architecture, clip length or batch."""

import json
import random
import re

import pytest
import torch
from safetensors.torch import load_file

from sslam.conversion.fairseq_checkpoint import (
    DECODER_KEY_MAP,
    ENCODER_KEY_MAP,
    fairseq_to_native,
    load_checkpoint_safely,
    pretraining_model_from_native,
    rename_keys,
)
from sslam.modeling_sslam.configuration_sslam import SSLAMConfig
from sslam.modeling_sslam.masking import (
    PretrainingMaskGenerator,
    gather_tokens,
    select_patch_rows,
    unmixed_window_start_range,
)
from sslam.modeling_sslam.objectives import pretraining_loss_terms
from sslam.modeling_sslam.pretraining_sslam import SSLAMForPreTraining
from sslam.training.ema import TeacherEMA

ORIGINAL_LOSS_NAMES = {
    "eat": {"eat_patch_loss": "IMAGE_regression", "eat_cls_loss": "cls"},
    "sslam": {"eat_cls_loss": "eat_cls_loss", "eat_patch_loss": "eat_patch_loss", "mix_patch_loss": "mix_patch_loss"},
}
"""Our loss-term names -> the names the original fairseq code logs (`loss_<name>`)."""

TERM_RTOL = 1e-5
INTERMEDIATE_ATOL = 1e-5
EMA_ATOL = 1e-6
GRAD_TOL = 1e-4


@pytest.fixture(scope="module")
def fixture(fixtures_dir):
    """Everything the parity tests read from the fixture folder."""
    losses = fixtures_dir / "losses"
    stage2 = json.loads((losses / "stage2_results.json").read_text())
    weights = fairseq_to_native(load_checkpoint_safely(fixtures_dir / "checkpoints" / "sslam_pretrain_tiny.pt"))
    return {
        "weights": weights,
        "stage2": stage2,
        "stage1": json.loads((losses / "stage1_results.json").read_text()),
        "refs2": load_file(losses / "stage2_loss_refs.safetensors"),
        "refs1": load_file(losses / "stage1_loss_refs.safetensors"),
        "ema": load_file(fixtures_dir / "ema" / "ema_step_refs.safetensors"),
        "windows": fixture_window_starts(stage2, weights.config),
    }


def window_starts_from_results(results: dict) -> list[int] | None:
    """The unmixed window starts recorded in `stage2_results.json` (`mix.idx_1`, `mix.idx_2`, ...), or None."""
    mix = results.get("mix") or {}
    numbered = {int(key[len("idx_") :]): value for key, value in mix.items() if re.fullmatch(r"idx_\d+", key)}
    return [numbered[index] for index in sorted(numbered)] or None


def regenerate_window_starts(
    results: dict, num_frames: int, window_frames: int, num_windows: int, patch: int
) -> list[int]:
    """The original's draw: `random.seed(seed)` then one `random.choice` per window over the candidate starts (frames,
    every patch) of the generalised rule, which equal the original's lists for its 1024-frame geometry."""
    random.seed(results["seeds"]["python_random_seed_before_forward"])
    starts, earliest = [], 0
    for index in range(num_windows):
        low, high = unmixed_window_start_range(
            index, earliest, num_frames // patch, window_frames // patch, num_windows
        )
        start = random.choice(range(low * patch, high * patch + 1, patch))
        starts.append(start)
        earliest = (start + window_frames) // patch
    return starts


def fixture_window_starts(results: dict, config: SSLAMConfig) -> list[int]:
    """Recorded starts, else regenerated from the seed with the original's window settings (the config defaults)."""
    recorded = window_starts_from_results(results)
    if recorded is not None:
        return recorded
    frames = results["source_shape"][-2]
    return regenerate_window_starts(
        results, frames, config.unmixed_window_frames, config.num_unmixed_windows, config.patch_size
    )


def build_model(fixture, objective: str, noise: bool, attn_implementation: str = "eager") -> SSLAMForPreTraining:
    """The fixture checkpoint as `SSLAMForPreTraining`, configured like the fixture run."""
    results = fixture["stage2"]
    overrides = dict(
        objective=objective, clone_batch=results["clone_batch"], num_unmixed_windows=len(fixture["windows"])
    )
    if "no_mix_region_size" in results.get("mix", {}):
        overrides["unmixed_window_frames"] = results["mix"]["no_mix_region_size"]
    if not noise:
        overrides["mask_noise_std"] = 0.0
    model = pretraining_model_from_native(fixture["weights"], **overrides)
    model.config._attn_implementation = attn_implementation
    return model.train()


def run(fixture, objective: str, noise: bool = False, **kwargs):
    refs = fixture["refs2"]
    model = build_model(fixture, objective, noise, kwargs.pop("attn_implementation", "eager"))
    windows = fixture["windows"] if objective == "sslam" else None
    output = model(refs["source"], mask=refs["precomputed_mask"], unmixed_window_starts=windows, **kwargs)
    return model, output


def intermediates(fixture, objective: str, kept_token_ids: torch.Tensor) -> dict:
    """The forward's steps run one by one on the fixture batch (noise disabled), as a custom loop would run them."""
    refs = fixture["refs2"]
    model = build_model(fixture, objective, noise=False)
    windows = fixture["windows"] if objective == "sslam" else None
    batch = model.prepare_batch(refs["source"], refs["precomputed_mask"], windows)
    student = model.student_predictions(batch, kept_token_ids=kept_token_ids)
    targets = model.teacher_targets(batch)
    config = model.config
    terms = pretraining_loss_terms(
        student.decoder_output, student.cls, targets, batch.student_mask, config.clone_batch, batch.sample_size
    )
    visible = student.order[:, : student.num_kept]
    tokens = model.sslam.embed_patches(batch.clips).repeat_interleave(config.clone_batch, dim=0)
    student_input = model.sslam(patch_embeddings=gather_tokens(tokens, visible), output_hidden_states=True)
    result = dict(
        kept_token_ids=visible,
        student_encoder_input=student_input.hidden_states[0],
        decoder_output=student.decoder_output,
        targets=targets,
        cls_loss_per_row=terms["eat_cls_loss"],
    )
    if batch.unmixed_window_starts is not None:
        rows = model.masking.mixed_rows(batch.clean.shape[2], batch.unmixed_window_starts)
        dropped = select_patch_rows(model.teacher.embed_patches(batch.clean), rows, config.num_freq_patches)
        dropped_pass = model.teacher(patch_embeddings=dropped, output_hidden_states=True)
        result["teacher_dropped_input"] = dropped_pass.hidden_states[0]
    return result


def reference_run(fixture, objective: str, noise: bool) -> dict:
    results = fixture["stage2" if objective == "sslam" else "stage1"]
    return results["with_config_noise" if noise else "noise_disabled"]


def assert_terms_match(output, reference: dict, objective: str):
    original_names = ORIGINAL_LOSS_NAMES[objective]
    assert set(original_names[name] for name in output.loss_terms) == set(reference["loss_terms"])
    for name, value in output.loss_terms.items():
        expected = reference["loss_terms"][original_names[name]]["sum"]
        assert abs(float(value) - expected) <= TERM_RTOL * abs(expected), (name, float(value), expected)
    assert int(output.sample_size) == reference["sample_size"]
    expected_loss = reference["final_objective_loss_sum_div_sample_size"]
    assert abs(float(output.loss.detach()) - expected_loss) <= TERM_RTOL * abs(expected_loss)
    for name in ("pred_var", "target_var"):
        assert abs(float(getattr(output, name)) - reference[name]) <= TERM_RTOL * abs(reference[name]), name


def assert_close_abs(actual: torch.Tensor, expected: torch.Tensor, atol: float = INTERMEDIATE_ATOL):
    assert actual.shape == expected.shape
    assert float((actual.detach() - expected).abs().max()) <= atol


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, rtol: float = TERM_RTOL):
    assert actual.shape == expected.shape
    assert float((actual.detach() - expected).abs().max()) <= rtol * float(expected.abs().max())


# ---------------------------------------------------------------------------------------------------------------------
# Inputs regenerated from their seeds
# ---------------------------------------------------------------------------------------------------------------------


def test_masks_regenerate_from_the_fixture_seed(fixture):
    refs, results = fixture["refs2"], fixture["stage2"]
    model_config = build_model(fixture, "sslam", noise=False).config
    batch, _, frames, _ = refs["source"].shape
    torch.manual_seed(results["seeds"]["torch_manual_seed_before_mask_generation"])
    masks = PretrainingMaskGenerator.from_config(model_config).batch_masks(batch, frames // model_config.patch_size)
    assert torch.equal(masks, refs["precomputed_mask"])
    assert masks.sum(dim=1).tolist() == [results["masked_per_row"]] * len(masks)


def test_window_starts_regenerate_from_the_fixture_seed(fixture):
    """The generalised window rule with Python `random` reproduces the original's two `random.choice` calls."""
    results = fixture["stage2"]
    recorded = window_starts_from_results(results)
    mix = results.get("mix", {})
    frames = results["source_shape"][-2]
    geometry = (frames, mix.get("no_mix_region_size"), len(recorded or []), mix.get("patch_size"))
    if recorded is None or geometry != (1024, 240, 2, 16):
        pytest.skip("the original's window draw is hard-coded for 1024 frames, two 240-frame windows, 16-frame patches")
    regenerated = regenerate_window_starts(results, frames, mix["no_mix_region_size"], len(recorded), mix["patch_size"])
    assert regenerated == recorded


# ---------------------------------------------------------------------------------------------------------------------
# Stage 2 (SSLAM)
# ---------------------------------------------------------------------------------------------------------------------


def test_stage2_loss_terms_without_noise(fixture):
    _, output = run(fixture, "sslam")
    assert_terms_match(output, reference_run(fixture, "sslam", noise=False), "sslam")


def test_stage2_intermediates_without_noise(fixture):
    refs = fixture["refs2"]
    _, output = run(fixture, "sslam", kept_token_ids=refs["noise0/ids_keep"])
    assert_terms_match(output, reference_run(fixture, "sslam", noise=False), "sslam")
    steps = intermediates(fixture, "sslam", refs["noise0/ids_keep"])
    assert torch.equal(steps["kept_token_ids"], refs["noise0/ids_keep"])
    assert_close_abs(steps["student_encoder_input"], refs["noise0/student_encoder_in_block0"])
    assert_close_abs(steps["targets"].patch, refs["noise0/y_orig_patch"])
    assert_close_abs(steps["targets"].utterance, refs["noise0/y_orig_cls_pooled"])
    assert_close_abs(steps["targets"].source_retention, refs["noise0/y_mix_patch"])
    assert_close_abs(steps["teacher_dropped_input"], refs["noise0/teacher_dropped_input"])
    assert_close_abs(steps["decoder_output"], refs["noise0/decoder_out"])
    assert_close_relative(steps["cls_loss_per_row"], refs["noise0/eat_cls_loss"])


def test_stage2_with_config_noise_injected_and_regenerated(fixture):
    refs, results = fixture["refs2"], fixture["stage2"]
    reference = reference_run(fixture, "sslam", noise=True)
    model, injected = run(fixture, "sslam", noise=True, mask_noise=refs["mask_noise_positioned"])
    assert model.config.mask_noise_std == results["mask_noise_std_config"]
    assert_terms_match(injected, reference, "sslam")

    seed = results["seeds"]["torch_manual_seed_before_forward_(decoder_mask_noise)"]
    _, regenerated = run(fixture, "sslam", noise=True, generator=torch.Generator().manual_seed(seed))
    assert_terms_match(regenerated, reference, "sslam")
    torch.manual_seed(seed)  # the global RNG, seeded right before the forward as in the fixture run
    global_rng = model(refs["source"], mask=refs["precomputed_mask"], unmixed_window_starts=fixture["windows"])
    assert_terms_match(global_rng, reference, "sslam")


def test_stage2_sdpa_attention_within_tolerance(fixture):
    _, output = run(fixture, "sslam", attn_implementation="sdpa")
    assert_terms_match(output, reference_run(fixture, "sslam", noise=False), "sslam")


def student_gradient(model: SSLAMForPreTraining, native_name: str, is_decoder: bool) -> torch.Tensor:
    """Gradient of one original parameter: the fused qkv gradient is the concatenation of the q, k, v gradients."""
    params = dict(model.named_parameters())
    if is_decoder:
        return params[f"decoder.{native_name}"].grad
    fused = re.fullmatch(r"(.*attention\.)qkv\.(weight|bias)", native_name)
    if fused:
        return torch.cat([params[f"sslam.{fused.group(1)}{part}_proj.{fused.group(2)}"].grad for part in "qkv"])
    return params[f"sslam.{native_name}"].grad


@pytest.mark.parametrize("objective", ["sslam", "eat"])
def test_student_gradients_without_noise(fixture, objective):
    refs = fixture["refs2"] if objective == "sslam" else fixture["refs1"]
    prefix = "noise0/grad/"
    expected = {key[len(prefix) :]: value for key, value in refs.items() if key.startswith(prefix)}
    encoder_refs = {key: value for key, value in expected.items() if ".decoder." not in key}
    decoder_refs = {key: value for key, value in expected.items() if ".decoder." in key}
    encoder, unmatched_encoder = rename_keys(encoder_refs, ENCODER_KEY_MAP)
    decoder, unmatched_decoder = rename_keys(decoder_refs, DECODER_KEY_MAP)
    assert not unmatched_encoder and not unmatched_decoder

    model, output = run(fixture, objective)
    output.loss.backward()
    trainable = [name for name, param in model.named_parameters() if param.requires_grad]
    assert len(trainable) == sum(3 if ".qkv." in name else 1 for name in encoder) + len(decoder)
    for names, is_decoder in ((encoder, False), (decoder, True)):
        for name, reference in names.items():
            gradient = student_gradient(model, name, is_decoder)
            tolerance = GRAD_TOL * reference.abs().max() + GRAD_TOL * reference.abs()
            assert bool(((gradient - reference).abs() <= tolerance).all()), name
    assert all(param.grad is None for param in model.teacher.parameters())


# ---------------------------------------------------------------------------------------------------------------------
# Stage 1 (EAT)
# ---------------------------------------------------------------------------------------------------------------------


def stage1_rows(fixture) -> int:
    return fixture["refs2"]["precomputed_mask"].shape[0]


def test_stage1_loss_terms_and_intermediates_without_noise(fixture):
    refs1 = fixture["refs1"]
    kept = fixture["refs2"]["noise0/ids_keep"][: stage1_rows(fixture)]
    _, output = run(fixture, "eat", kept_token_ids=kept)
    assert_terms_match(output, reference_run(fixture, "eat", noise=False), "eat")
    assert output.unmixed_window_starts is None
    steps = intermediates(fixture, "eat", kept)
    assert steps["targets"].source_retention is None and "teacher_dropped_input" not in steps
    assert_close_abs(steps["targets"].patch, refs1["noise0/targets_y"])
    assert_close_abs(steps["targets"].utterance, refs1["noise0/targets_y"].mean(dim=1))
    assert_close_abs(steps["decoder_output"], refs1["noise0/decoder_out"])
    assert_close_relative(steps["cls_loss_per_row"], refs1["noise0/cls_loss"])


def test_stage1_with_config_noise_injected_and_regenerated(fixture):
    reference = reference_run(fixture, "eat", noise=True)
    _, injected = run(fixture, "eat", noise=True, mask_noise=fixture["refs1"]["mask_noise_positioned"])
    assert_terms_match(injected, reference, "eat")
    seed = fixture["stage1"]["torch_manual_seed_before_forward_(decoder_mask_noise)"]
    _, regenerated = run(fixture, "eat", noise=True, generator=torch.Generator().manual_seed(seed))
    assert_terms_match(regenerated, reference, "eat")


# ---------------------------------------------------------------------------------------------------------------------
# EMA
# ---------------------------------------------------------------------------------------------------------------------


def assert_teacher_matches(model: SSLAMForPreTraining, refs: dict[str, torch.Tensor], case: str):
    expected = {key[len(case) + 1 :]: value for key, value in refs.items() if key.startswith(case + "/")}
    native, unmatched = rename_keys(expected, ENCODER_KEY_MAP)
    assert not unmatched and native
    teacher = dict(model.teacher.named_parameters())
    for name, value in native.items():
        fused = re.fullmatch(r"(.*attention\.)qkv\.(weight|bias)", name)
        if fused:
            actual = torch.cat([teacher[f"{fused.group(1)}{part}_proj.{fused.group(2)}"] for part in "qkv"])
        else:
            actual = teacher[name]
        assert float((actual - value).abs().max()) <= EMA_ATOL, name


def test_one_annealed_ema_step(fixture):
    info = fixture["stage2"]["ema"]["annealed"]
    model = build_model(fixture, "sslam", noise=True)
    config = model.config
    assert (config.ema_decay, config.ema_end_decay, config.ema_anneal_end_step) == (
        info["ema_decay"], info["ema_end_decay"], info["ema_anneal_end_step"]
    )
    step = int(re.search(r"get_annealed_rate\([^,]+,[^,]+,\s*(\d+)\s*,", info["formula"]).group(1))
    ema = TeacherEMA.from_config(config)
    assert ema.decay_at(step) == info["decay"]
    positions_before = model.teacher.embeddings.position_embeddings.clone()
    assert ema.step(model.teacher, model.sslam, step) == info["decay"]
    assert_teacher_matches(model, fixture["ema"], "annealed")
    assert torch.equal(model.teacher.embeddings.position_embeddings, positions_before)


def test_one_explicit_ema_step(fixture):
    model = build_model(fixture, "sslam", noise=True)
    TeacherEMA.update(model.teacher, model.sslam, fixture["stage2"]["ema"]["explicit"]["decay"])
    assert_teacher_matches(model, fixture["ema"], "explicit")
