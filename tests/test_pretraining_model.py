"""`SSLAMForPreTraining` as a model: sizes and shapes, targets, teacher handling (EMA, freezing, float32, loading),
determinism and every error path. Random weights; the fixture parity lives in test_pretraining_parity.py."""

import math

import pytest
import torch

from sslam.conversion.fairseq_checkpoint import CheckpointError, NativeWeights, pretraining_model_from_native
from sslam.modeling_sslam.configuration_sslam import SSLAMConfig
from sslam.modeling_sslam.masking import (
    PretrainingMaskGenerator,
    draw_mask_noise,
    gather_tokens,
    mix_spectrograms,
    mixed_patch_rows,
    position_mask_noise,
    visible_first_order,
)
from sslam.modeling_sslam.modeling_sslam import SSLAMModel
from sslam.modeling_sslam.objectives import build_teacher_targets, pretraining_loss_terms
from sslam.modeling_sslam.pretraining_sslam import SSLAMForPreTraining
from sslam.training.callbacks import CollapseGuardCallback, RepresentationCollapseError
from sslam.training.ema import TeacherEMA


def tiny_config(**overrides) -> SSLAMConfig:
    fields = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        decoder_hidden_size=16,
        decoder_num_layers=2,
        clone_batch=2,
        max_time_patches=64,
        unmixed_window_frames=48,
    )
    fields.update(overrides)
    return SSLAMConfig(**fields)


def tiny_model(seed: int = 0, **overrides) -> SSLAMForPreTraining:
    torch.manual_seed(seed)
    return SSLAMForPreTraining(tiny_config(**overrides)).train()


def spectrograms(batch: int, frames: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, frames, 128, generator=torch.Generator().manual_seed(seed))


def compute_pretraining_masks(config: SSLAMConfig, batch: int, time_patches: int, generator=None) -> torch.Tensor:
    return PretrainingMaskGenerator.from_config(config).batch_masks(batch, time_patches, generator)


def forward_steps(model: SSLAMForPreTraining, input_values: torch.Tensor, seed: int) -> dict:
    """The forward's steps one by one, drawing from a generator seeded like the forward's: batch, student, targets,
    the loss terms and the student's encoder input."""
    generator = torch.Generator().manual_seed(seed)
    batch = model.prepare_batch(input_values, generator=generator)
    student = model.student_predictions(batch, generator=generator)
    targets = model.teacher_targets(batch)
    config = model.config
    terms = pretraining_loss_terms(
        student.decoder_output, student.cls, targets, batch.student_mask, config.clone_batch, batch.sample_size
    )
    tokens = model.sslam.embed_patches(batch.clips).repeat_interleave(config.clone_batch, dim=0)
    visible = gather_tokens(tokens, student.order[:, : student.num_kept])
    encoder_input = model.sslam(patch_embeddings=visible, output_hidden_states=True).hidden_states[0]
    return dict(batch=batch, student=student, targets=targets, terms=terms, student_encoder_input=encoder_input)


def masked_per_row(config: SSLAMConfig, num_patches: int) -> int:
    prob = 1 - config.mask_prob if config.inverse_mask else config.mask_prob
    kept_or_masked = int(num_patches * prob)
    return num_patches - kept_or_masked if config.inverse_mask else kept_or_masked


def assert_consistent_output(output, steps: dict, config: SSLAMConfig, batch: int, frames: int):
    """Shapes, sample size and `loss = sum(terms) / sample_size` of a forward, and the shapes of its steps."""
    stage2 = config.objective == "sslam"
    clips = 2 * batch if stage2 else batch
    time_patches = frames // config.patch_size
    num_patches = time_patches * config.num_freq_patches
    masked = masked_per_row(config, num_patches)
    rows = clips * config.clone_batch
    hidden = config.hidden_size

    assert output.mask.shape == (batch * config.clone_batch, num_patches)
    assert int(output.sample_size) == rows * masked
    expected_terms = {"eat_cls_loss", "eat_patch_loss"} | ({"mix_patch_loss"} if stage2 else set())
    assert set(output.loss_terms) == expected_terms == set(steps["terms"])
    total = sum(float(term) for term in output.loss_terms.values())
    assert float(output.loss.detach()) == pytest.approx(total / int(output.sample_size), rel=1e-6)
    for name, term in steps["terms"].items():
        assert float(term.sum()) == pytest.approx(float(output.loss_terms[name]), rel=1e-5), name
    assert math.isfinite(float(output.loss.detach())) and float(output.pred_var) > 0 and float(output.target_var) > 0
    assert steps["student"].decoder_output.shape == (rows, num_patches, hidden)
    assert steps["student_encoder_input"].shape == (rows, 1 + num_patches - masked, hidden)
    assert steps["terms"]["eat_cls_loss"].shape == (rows, hidden)
    targets = steps["targets"]
    assert targets.patch.shape == (clips, num_patches, hidden)
    assert targets.utterance.shape == (clips, hidden)
    if stage2:
        assert output.unmixed_window_starts.shape == (config.num_unmixed_windows,)
        assert targets.source_retention.shape == (batch, num_patches, hidden)
    else:
        assert targets.source_retention is None and output.unmixed_window_starts is None


# ---------------------------------------------------------------------------------------------------------------------
# Sizes, clip lengths and batch sizes
# ---------------------------------------------------------------------------------------------------------------------


def test_stage2_at_base_size():
    """SSLAMConfig() defaults (base: D 768, 12 blocks, decoder 6 x 768) on 1024-frame clips; one forward, batch 2,
    clone 2."""
    torch.manual_seed(0)
    config = SSLAMConfig(clone_batch=2)
    model = SSLAMForPreTraining(config)
    clips = spectrograms(2, config.max_length)
    with torch.no_grad():
        output = model(clips, generator=torch.Generator().manual_seed(0))
        steps = forward_steps(model, clips, seed=0)
    assert_consistent_output(output, steps, config, 2, config.max_length)


def test_stage2_at_large_width():
    """SSLAMConfig.large() (D 1024, 16 heads, MLP 4096, decoder 3 x 1024 with 5x5 kernels, mask 0.75) with the depth
    reduced from 24 to 2 blocks: the full-depth model needs about a minute per forward on one CPU thread."""
    torch.manual_seed(0)
    config = SSLAMConfig.large(clone_batch=2, num_hidden_layers=2, average_top_k_layers=2)
    model = SSLAMForPreTraining(config)
    clips = spectrograms(2, config.max_length)
    with torch.no_grad():
        output = model(clips, generator=torch.Generator().manual_seed(0))
        steps = forward_steps(model, clips, seed=0)
    assert_consistent_output(output, steps, config, 2, config.max_length)


@pytest.mark.parametrize(
    "objective, batch, frames, window_frames, num_windows",
    [
        ("sslam", 2, 1024, 240, 2),
        ("sslam", 3, 512, 240, 2),
        ("sslam", 5, 256, 48, 3),
        ("sslam", 2, 256, 96, 2),
        ("sslam", 3, 128, 32, 1),
        ("eat", 1, 512, 240, 2),
        ("eat", 3, 256, 240, 2),
        ("eat", 5, 128, 240, 2),
    ],
)
def test_clip_lengths_and_batch_sizes(objective, batch, frames, window_frames, num_windows):
    model = tiny_model(objective=objective, unmixed_window_frames=window_frames, num_unmixed_windows=num_windows)
    clips = spectrograms(batch, frames)
    output = model(clips, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert_consistent_output(output, forward_steps(model, clips, seed=3), model.config, batch, frames)
    output.loss.backward()


def test_decoder_with_an_even_kernel_keeps_the_grid():
    model = tiny_model(decoder_kernel_size=4, decoder_num_layers=3)
    clips = spectrograms(2, 256)
    output = model(clips, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert_consistent_output(output, forward_steps(model, clips, seed=0), model.config, 2, 256)


# ---------------------------------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------------------------------


def teacher_layers(model: SSLAMForPreTraining, clips: torch.Tensor, keep_rows: list[int] | None = None):
    """Teacher FFN outputs computed directly, dropping patch rows on the (B, D, R, F) grid (Correction 2)."""
    tokens = model.teacher.embed_patches(clips)
    if keep_rows is not None:
        batch, num_tokens, hidden = tokens.shape
        grid = tokens.transpose(1, 2).reshape(batch, hidden, -1, model.config.num_freq_patches)
        tokens = grid[:, :, keep_rows].reshape(batch, hidden, -1).transpose(1, 2)
    ffn = model.teacher(patch_embeddings=tokens, output_ffn_outputs=True).ffn_outputs
    return [layer[:, 1:] for layer in ffn]


@torch.no_grad()
def test_stage2_targets_follow_their_definitions():
    model = tiny_model(num_hidden_layers=3, average_top_k_layers=2)
    config, batch, frames = model.config, 3, 256
    clean = spectrograms(batch, frames).unsqueeze(1)
    prepared = model.prepare_batch(clean, generator=torch.Generator().manual_seed(4))
    targets = model.teacher_targets(prepared)
    starts = prepared.unmixed_window_starts
    clips = torch.cat([clean, mix_spectrograms(clean, starts, config.unmixed_window_frames)])
    torch.testing.assert_close(prepared.clips, clips)

    layers = teacher_layers(model, clips)
    patch = build_teacher_targets(layers, 2)
    torch.testing.assert_close(targets.patch, patch)
    torch.testing.assert_close(targets.utterance, build_teacher_targets(layers[-1:], 1).mean(dim=1))

    rows = mixed_patch_rows(frames // config.patch_size, starts, config.unmixed_window_frames, config.patch_size)
    foreign = build_teacher_targets(teacher_layers(model, clean, rows), 2)
    freq, hidden = config.num_freq_patches, config.hidden_size
    srl = targets.source_retention.reshape(batch, -1, freq, hidden)
    own = patch[:batch].reshape(batch, -1, freq, hidden)
    foreign = foreign.reshape(batch, len(rows), freq, hidden)
    for clip in range(batch):
        torch.testing.assert_close(srl[clip, rows], (own[clip, rows] + foreign[(clip - 1) % batch]) / 2)
        unmixed = [row for row in range(own.shape[1]) if row not in rows]
        torch.testing.assert_close(srl[clip, unmixed], own[clip, unmixed])


@torch.no_grad()
def test_stage1_utterance_target_is_the_token_mean_of_the_averaged_target():
    model = tiny_model(objective="eat", num_hidden_layers=3, average_top_k_layers=3)
    clips = spectrograms(2, 128).unsqueeze(1)
    targets = model.teacher_targets(model.prepare_batch(clips, generator=torch.Generator().manual_seed(5)))
    patch = build_teacher_targets(teacher_layers(model, clips), 3)
    torch.testing.assert_close(targets.patch, patch)
    torch.testing.assert_close(targets.utterance, patch.mean(dim=1))


def test_backward_reaches_every_student_and_decoder_parameter_and_no_teacher_parameter():
    model = tiny_model()
    model(spectrograms(2, 256), generator=torch.Generator().manual_seed(6)).loss.backward()
    for name, param in model.named_parameters():
        if name.startswith("teacher."):
            assert not param.requires_grad and param.grad is None, name
        else:
            assert param.grad is not None and bool(param.grad.abs().sum() > 0), name


def test_teacher_runs_in_float32_without_autocast():
    model = tiny_model()
    batch = model.prepare_batch(spectrograms(2, 256), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        plain = model.teacher_targets(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model.teacher_targets(batch)
            decoder_output = model.student_predictions(batch, generator=torch.Generator().manual_seed(7)).decoder_output
    assert decoder_output.dtype == torch.bfloat16
    for name in ("patch", "utterance", "source_retention"):
        assert getattr(autocast, name).dtype == torch.float32
        assert torch.equal(getattr(autocast, name), getattr(plain, name)), name


def test_kept_token_order_only_changes_rounding():
    model = tiny_model(objective="eat", mask_noise_std=0.0)
    clips = spectrograms(2, 256)
    mask = compute_pretraining_masks(model.config, 2, 16, torch.Generator().manual_seed(8))
    default = model(clips, mask=mask)
    kept = visible_first_order(mask)[:, : 128 - int(mask[0].sum())]
    reversed_order = model(clips, mask=mask, kept_token_ids=kept.flip(1))
    for name, value in default.loss_terms.items():
        assert float(reversed_order.loss_terms[name]) == pytest.approx(float(value), rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# Randomness and options
# ---------------------------------------------------------------------------------------------------------------------


def test_generator_makes_the_forward_reproducible_and_draws_masks_first():
    model = tiny_model()
    first = model(spectrograms(2, 512), generator=torch.Generator().manual_seed(9))
    second = model(spectrograms(2, 512), generator=torch.Generator().manual_seed(9))
    assert torch.equal(first.mask, second.mask)
    assert torch.equal(first.unmixed_window_starts, second.unmixed_window_starts)
    assert torch.equal(first.loss, second.loss)
    expected_mask = compute_pretraining_masks(model.config, 2, 32, torch.Generator().manual_seed(9))
    assert torch.equal(first.mask, expected_mask.bool())


def test_injected_noise_equals_the_drawn_noise():
    model = tiny_model(mask_noise_std=0.5)
    clips = spectrograms(2, 256)
    mask = compute_pretraining_masks(tiny_config(), 2, 16, torch.Generator().manual_seed(1))
    drawn = model(clips, mask=mask, unmixed_window_starts=[0, 96], generator=torch.Generator().manual_seed(2))
    no_noise = model(clips, mask=mask, unmixed_window_starts=[0, 96], mask_noise=torch.zeros(8, 128, 32))
    assert not torch.equal(drawn.loss, no_noise.loss)

    order = visible_first_order(torch.cat([mask, mask]))
    noise = draw_mask_noise(8, int(mask[0].sum()), 32, 0.5, torch.Generator().manual_seed(2))
    injected = model(clips, mask=mask, unmixed_window_starts=[0, 96], mask_noise=position_mask_noise(noise, order))
    assert torch.equal(injected.loss, drawn.loss)


def test_return_loss_false_skips_the_teacher():
    model = tiny_model()
    calls = []
    model.teacher.encoder.register_forward_pre_hook(lambda module, args: calls.append(1))
    output = model(spectrograms(2, 256), generator=torch.Generator().manual_seed(10), return_loss=False)
    assert output.loss is None and output.loss_terms is None and not calls
    assert output.decoder_output.shape == (2 * 2 * 2, 128, 32)
    model(spectrograms(2, 256), generator=torch.Generator().manual_seed(10))
    assert len(calls) == 2  # full clips, then the clean clips' mixed rows


# ---------------------------------------------------------------------------------------------------------------------
# Teacher: EMA, freezing, loading
# ---------------------------------------------------------------------------------------------------------------------


def test_fresh_teacher_is_a_frozen_copy_of_the_student_and_stays_in_eval():
    model = tiny_model()
    student, teacher = model.sslam.state_dict(), model.teacher.state_dict()
    assert student.keys() == teacher.keys() and all(torch.equal(student[k], teacher[k]) for k in student)
    model.train()
    assert model.sslam.training and model.decoder.training and not model.teacher.training
    assert not any(module.training for module in model.teacher.modules())
    trainable = [name for name, param in model.named_parameters() if param.requires_grad]
    assert trainable and not any(name.startswith("teacher.") for name in trainable)


def test_ema_decay_schedule():
    ema = TeacherEMA.from_config(tiny_config(ema_decay=0.9, ema_end_decay=0.99, ema_anneal_end_step=100))
    assert ema.decay_at(0) == pytest.approx(0.9)
    assert ema.decay_at(50) == pytest.approx(0.945)
    assert ema.decay_at(100) == 0.99 and ema.decay_at(1000) == 0.99
    constant = TeacherEMA(0.95, 0.95, 100)
    assert constant.decay_at(0) == 0.95 and constant.decay_at(10**6) == 0.95


@torch.no_grad()
def test_ema_step_blends_in_float32_copies_frozen_tensors_and_skips_decay_one():
    model = tiny_model()
    for param in model.sslam.parameters():
        param.add_(torch.randn_like(param))
    model.sslam.embeddings.position_embeddings.mul_(2)
    model.sslam.pre_layernorm.bias.requires_grad_(False)
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}

    TeacherEMA.update(model.teacher, model.sslam, 1.0)
    assert all(torch.equal(teacher_before[k], v) for k, v in model.teacher.state_dict().items())

    ema = TeacherEMA.from_config(model.config)
    assert ema.step(model.teacher, model.sslam, 3) == ema.decay_at(3)
    decay = ema.decay_at(3)
    student = model.sslam.state_dict()
    for name, value in model.teacher.state_dict().items():
        assert value.dtype == torch.float32
        if name in ("embeddings.position_embeddings", "pre_layernorm.bias"):
            assert torch.equal(value, student[name]), name
        else:
            expected = teacher_before[name] * decay + student[name] * (1 - decay)
            torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7)


def test_save_and_load_round_trip_keeps_the_teacher(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.teacher.encoder.layer[0].mlp.fc1.weight.add_(1.0)
    model.save_pretrained(tmp_path)
    loaded = SSLAMForPreTraining.from_pretrained(tmp_path)
    original, reloaded = model.state_dict(), loaded.state_dict()
    assert original.keys() == reloaded.keys() and all(torch.equal(original[k], reloaded[k]) for k in original)
    assert not any(param.requires_grad for param in loaded.teacher.parameters())
    loaded.train()
    assert not loaded.teacher.training


def test_loading_a_checkpoint_without_teacher_initialises_it_from_the_student(tmp_path):
    torch.manual_seed(11)
    encoder = SSLAMModel(tiny_config())
    encoder.save_pretrained(tmp_path)
    model, info = SSLAMForPreTraining.from_pretrained(tmp_path, output_loading_info=True)
    assert any(key.startswith("teacher.") for key in info["missing_keys"])
    student, teacher = model.sslam.state_dict(), model.teacher.state_dict()
    assert all(torch.equal(value, encoder.state_dict()[key]) for key, value in student.items())
    assert all(torch.equal(teacher[key], student[key]) for key in student)
    assert not any(param.requires_grad for param in model.teacher.parameters())


def test_bfloat16_loading_keeps_the_teacher_in_float32(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    model = SSLAMForPreTraining.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert model.sslam.encoder.layer[0].mlp.fc1.weight.dtype == torch.bfloat16
    assert all(tensor.dtype == torch.float32 for tensor in model.teacher.state_dict().values())
    output = model(spectrograms(2, 256), generator=torch.Generator().manual_seed(12))
    batch = model.prepare_batch(spectrograms(2, 256), generator=torch.Generator().manual_seed(12))
    targets = model.teacher_targets(batch)
    assert targets.patch.dtype == torch.float32 and math.isfinite(float(output.loss.detach()))


def test_from_native_weights(tmp_path):
    source = tiny_model(seed=13)
    with torch.no_grad():
        source.teacher.pre_layernorm.weight.add_(1.0)
    weights = NativeWeights(
        "pretraining",
        tiny_config(),
        encoder=source.sslam.state_dict(),
        teacher=source.teacher.state_dict(),
        decoder=source.decoder.state_dict(),
    )
    model = pretraining_model_from_native(weights, objective="eat")
    assert model.config.objective == "eat" and weights.config.objective == "sslam"
    assert all(torch.equal(value, source.state_dict()[key]) for key, value in model.state_dict().items())

    weights.teacher = None
    student_only = pretraining_model_from_native(weights)
    assert torch.equal(student_only.teacher.pre_layernorm.weight, source.sslam.pre_layernorm.weight)

    weights.decoder = {key: value for key, value in weights.decoder.items() if key != "proj.bias"}
    with pytest.raises(RuntimeError, match="proj.bias"):
        pretraining_model_from_native(weights)
    weights.decoder = None
    with pytest.raises(CheckpointError, match="decoder"):
        pretraining_model_from_native(weights)


# ---------------------------------------------------------------------------------------------------------------------
# Error paths
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def good_mask(batch: int = 2, time_patches: int = 16) -> torch.Tensor:
    return compute_pretraining_masks(tiny_config(), batch, time_patches, torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "mask, message",
    [
        (good_mask()[1:], "shape"),
        (torch.cat([good_mask(), good_mask()[:, :8]], dim=1), "shape"),
        (good_mask()[0], "shape"),
        (torch.cat([good_mask()[:3], torch.ones(1, 128)]), "same number"),
        (torch.ones(4, 128), "some but not all"),
        (torch.zeros(4, 128), "some but not all"),
    ],
)
def test_bad_masks_are_rejected(model, mask, message):
    with pytest.raises(ValueError, match=message):
        model(spectrograms(2, 256), mask=mask)


@pytest.mark.parametrize(
    "input_values, message",
    [
        (torch.randn(2, 256, 64), "mel bins"),
        (torch.randn(2, 2, 256, 128), "channel"),
        (torch.randn(2, 250, 128), "multiple of patch_size"),
        (torch.randn(256, 128), "input_values must be"),
        (torch.randn(2, 2000, 128), "position table"),
    ],
)
def test_bad_inputs_are_rejected(model, input_values, message):
    with pytest.raises(ValueError, match=message):
        model(input_values)


def test_stage2_needs_two_clips_but_stage1_does_not(model):
    with pytest.raises(ValueError, match=">= 2"):
        model(spectrograms(1, 256))
    eat = tiny_model(objective="eat")
    assert math.isfinite(float(eat(spectrograms(1, 256)).loss.detach()))


def test_windows_that_cannot_fit_are_rejected(model):
    with pytest.raises(ValueError, match="do not fit"):
        model(spectrograms(2, 64))  # 4 patch rows cannot hold two 3-row windows and a mixed row
    with pytest.raises(ValueError, match="overlap"):
        model(spectrograms(2, 256), unmixed_window_starts=[0, 32])
    with pytest.raises(ValueError, match="expected 2"):
        model(spectrograms(2, 256), unmixed_window_starts=torch.tensor([0]))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        tiny_model(unmixed_window_frames=40)(spectrograms(2, 256))


def test_bad_noise_and_kept_ids_are_rejected(model):
    with pytest.raises(ValueError, match="mask_noise must have shape"):
        model(spectrograms(2, 256), mask=good_mask(), mask_noise=torch.zeros(4, 128, 32))
    with pytest.raises(ValueError, match="kept_token_ids"):
        model(spectrograms(2, 256), mask=good_mask(), kept_token_ids=torch.zeros(8, 3, dtype=torch.long))


def test_collapse_guard_after_warm_up():
    """The guard reads the logged spreads of a real forward: quiet during the warm-up, an error after it."""
    output = tiny_model()(spectrograms(2, 256), generator=torch.Generator().manual_seed(0))
    logs = {"target_var": float(output.target_var), "pred_var": float(output.pred_var)}
    targets = CollapseGuardCallback.from_config(tiny_config(min_target_var=1e6, collapse_check_after_steps=5))
    targets.check(logs, step=5)  # still warming up
    with pytest.raises(RepresentationCollapseError, match=r"target_var is .* < min_target_var = 1000000"):
        targets.check(logs, step=6)
    predictions = CollapseGuardCallback.from_config(tiny_config(min_pred_var=1e6))
    with pytest.raises(RepresentationCollapseError, match=r"pred_var is .* < min_pred_var = 1000000"):
        predictions.check(logs, step=1)
    CollapseGuardCallback.from_config(tiny_config()).check(logs, step=100)  # minimums of 0 disable the checks
