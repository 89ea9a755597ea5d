"""Masking and Stage-2 mixing geometry (`sslam.modeling_sslam.masking`), targets and loss building blocks
(`sslam.modeling_sslam.objectives`), checked on small tensors against direct formulas (no fixtures needed)."""

import math

import pytest
import torch
import torch.nn.functional as F

from sslam.modeling_sslam.masking import (
    check_unmixed_window_geometry,
    check_unmixed_window_starts,
    compute_block_mask_2d,
    draw_mask_noise,
    draw_unmixed_window_starts,
    mix_spectrograms,
    mixed_patch_rows,
    position_mask_noise,
    select_patch_rows,
    unmixed_patch_rows,
    unmixed_window_start_range,
    visible_first_order,
)
from sslam.modeling_sslam.objectives import (
    build_source_retention_target,
    build_teacher_targets,
    feature_spread,
    regression_loss,
)

PATCH = 16


# ---------------------------------------------------------------------------------------------------------------------
# Masking
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "time_patches, freq_patches, mask_prob, adjust, length",
    [(64, 8, 0.8, 0.07, 5), (32, 8, 0.8, 0.07, 5), (16, 8, 0.75, 0.1, 5), (8, 8, 0.8, 0.07, 3), (64, 8, 0.5, 0.0, 4)],
)
def test_inverse_block_mask_has_exact_masked_count_per_row(time_patches, freq_patches, mask_prob, adjust, length):
    cells = time_patches * freq_patches
    generator = torch.Generator().manual_seed(11)
    mask = compute_block_mask_2d(12, time_patches, freq_patches, mask_prob, length, adjust, generator=generator)
    assert mask.shape == (12, cells) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    expected_visible = int(cells * (1 - mask_prob))
    assert mask.sum(dim=1).tolist() == [cells - expected_visible] * 12


def test_non_inverse_block_mask_count():
    mask = compute_block_mask_2d(6, 32, 8, 0.4, 5, 0.0, inverse=False, generator=torch.Generator().manual_seed(2))
    assert mask.sum(dim=1).tolist() == [int(32 * 8 * 0.4)] * 6


def _visible_neighbour_fraction(mask: torch.Tensor, time_patches: int, freq_patches: int) -> float:
    """Mean fraction of visible 4-neighbours (inside the grid) of visible cells."""
    visible = (mask == 0).reshape(-1, time_patches, freq_patches).float()
    padded = F.pad(visible, (1, 1, 1, 1))
    neighbours = padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:]
    inside = F.pad(torch.ones_like(visible), (1, 1, 1, 1))
    counts = inside[:, :-2, 1:-1] + inside[:, 2:, 1:-1] + inside[:, 1:-1, :-2] + inside[:, 1:-1, 2:]
    return float(((neighbours / counts) * visible).sum() / visible.sum())


def test_visible_patches_form_blocks():
    """Inverse block masking keeps visible patches in clusters; uniformly random 20 % would have ~20 % visible
    neighbours, 5x5 blocks have far more."""
    mask = compute_block_mask_2d(64, 64, 8, 0.8, 5, 0.07, generator=torch.Generator().manual_seed(3))
    assert _visible_neighbour_fraction(mask, 64, 8) > 0.5
    random_mask = torch.ones(64, 512)
    generator = torch.Generator().manual_seed(4)
    for row in random_mask:
        row[torch.randperm(512, generator=generator)[:102]] = 0
    assert _visible_neighbour_fraction(random_mask, 64, 8) < 0.3


def test_block_mask_is_deterministic_with_a_generator_and_matches_the_global_rng():
    args = (8, 64, 8, 0.8, 5, 0.07)
    first = compute_block_mask_2d(*args, generator=torch.Generator().manual_seed(5))
    again = compute_block_mask_2d(*args, generator=torch.Generator().manual_seed(5))
    other = compute_block_mask_2d(*args, generator=torch.Generator().manual_seed(6))
    torch.manual_seed(5)
    global_rng = compute_block_mask_2d(*args)
    assert torch.equal(first, again) and torch.equal(first, global_rng)
    assert not torch.equal(first, other)


def test_block_mask_rejects_mask_length_below_two():
    with pytest.raises(ValueError, match="mask_length >= 2"):
        compute_block_mask_2d(2, 64, 8, 0.8, 1, 0.07)


def test_visible_first_order_and_explicit_kept_ids():
    mask = compute_block_mask_2d(4, 16, 8, 0.8, 5, 0.07, generator=torch.Generator().manual_seed(7))
    num_kept = int((mask[0] == 0).sum())
    order = visible_first_order(mask)
    assert torch.equal(order.sort(dim=1).values, torch.arange(128).expand(4, -1))
    assert bool((mask.gather(1, order[:, :num_kept]) == 0).all())
    assert bool((mask.gather(1, order[:, num_kept:]) == 1).all())

    reversed_kept = order[:, :num_kept].flip(1)
    explicit = visible_first_order(mask, reversed_kept)
    assert torch.equal(explicit[:, :num_kept], reversed_kept)
    assert torch.equal(explicit[:, num_kept:], order[:, num_kept:])
    with pytest.raises(ValueError, match="shape"):
        visible_first_order(mask, reversed_kept[:, 1:])
    with pytest.raises(ValueError, match="visible"):
        visible_first_order(mask, order[:, num_kept - 1 : 2 * num_kept - 1])


def test_mask_noise_lands_on_masked_patches_in_draw_order():
    mask = compute_block_mask_2d(3, 16, 8, 0.8, 5, 0.07, generator=torch.Generator().manual_seed(8))
    order = visible_first_order(mask)
    num_masked = int(mask[0].sum())
    noise = draw_mask_noise(3, num_masked, 6, 0.5, torch.Generator().manual_seed(9))
    assert noise.shape == (3, num_masked, 6)
    again = torch.empty(3, num_masked, 6).normal_(0, 0.5, generator=torch.Generator().manual_seed(9))
    assert torch.equal(noise, again)
    positioned = position_mask_noise(noise, order)
    assert bool((positioned[mask == 0] == 0).all())
    for row in range(3):
        for j in (0, num_masked // 2, num_masked - 1):
            assert torch.equal(positioned[row, order[row, order.shape[1] - num_masked + j]], noise[row, j])


# ---------------------------------------------------------------------------------------------------------------------
# Unmixed windows (Stage 2)
# ---------------------------------------------------------------------------------------------------------------------


def test_window_rule_reproduces_the_original_draw_ranges():
    """For 1024 frames, two 240-frame windows and 16-frame patches the original draws idx1 from range(0, 501, 16)
    and idx2 from range(idx1 + 240, 1023 - 240, 16); the generalised rule gives the same candidate sets."""
    first_low, first_high = unmixed_window_start_range(0, 0, 1024 // PATCH, 240 // PATCH, 2)
    assert list(range(first_low * PATCH, first_high * PATCH + 1, PATCH)) == list(range(0, 501, 16))
    for idx1 in range(0, 501, 16):
        low, high = unmixed_window_start_range(1, (idx1 + 240) // PATCH, 1024 // PATCH, 240 // PATCH, 2)
        assert list(range(low * PATCH, high * PATCH + 1, PATCH)) == list(range(idx1 + 240, 1023 - 240, 16))


@pytest.mark.parametrize(
    "frames, window, count",
    [(1024, 240, 2), (512, 240, 2), (512, 112, 2), (256, 96, 2), (256, 48, 3), (1024, 160, 4), (128, 32, 1)],
)
def test_drawn_windows_are_aligned_disjoint_and_inside_the_clip(frames, window, count):
    generator = torch.Generator().manual_seed(frames + window + count)
    seen_first = set()
    for _ in range(200):
        starts = draw_unmixed_window_starts(frames, window, count, PATCH, generator)
        assert starts.dtype == torch.long and starts.shape == (count,)
        starts = starts.tolist()
        check_unmixed_window_starts(starts, frames, window, count, PATCH)
        assert all(start % PATCH == 0 for start in starts)
        assert all(later >= earlier + window for earlier, later in zip(starts, starts[1:]))
        assert starts[-1] + window <= frames - PATCH  # the last patch row always stays mixed
        seen_first.add(starts[0])
    low, high = unmixed_window_start_range(0, 0, frames // PATCH, window // PATCH, count)
    assert seen_first == {row * PATCH for row in range(low, high + 1)}


def test_window_draw_is_deterministic_with_a_generator():
    def draw(seed):
        return draw_unmixed_window_starts(1024, 240, 2, PATCH, torch.Generator().manual_seed(seed))

    assert torch.equal(draw(1), draw(1))
    assert any(not torch.equal(draw(1), draw(seed)) for seed in range(2, 6))


def test_window_geometry_errors():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        check_unmixed_window_geometry(1024, 250, 2, PATCH)
    with pytest.raises(ValueError, match="positive multiple"):
        check_unmixed_window_geometry(1024, 0, 2, PATCH)
    with pytest.raises(ValueError, match="do not fit"):
        check_unmixed_window_geometry(256, 240, 2, PATCH)
    with pytest.raises(ValueError, match="do not fit"):
        draw_unmixed_window_starts(512, 256, 2, PATCH)  # 32 rows, 2 x 16 rows would leave no mixed row
    check_unmixed_window_geometry(512, 240, 2, PATCH)  # 30 of 32 rows: fits


@pytest.mark.parametrize(
    "starts, message",
    [
        ([0, 100], "multiples"),
        ([256, 0], "increasing"),
        ([0, 224], "overlap"),
        ([0, 800], "exceed"),
        ([0], "expected 2"),
    ],
)
def test_explicit_window_start_errors(starts, message):
    with pytest.raises(ValueError, match=message):
        check_unmixed_window_starts(starts, 1024, 240, 2, PATCH)


def test_mixing_keeps_unmixed_windows_and_takes_the_maximum_elsewhere():
    generator = torch.Generator().manual_seed(12)
    clips = torch.randn(3, 1, 512, 128, generator=generator)
    starts = [64, 320]
    mixed = mix_spectrograms(clips, starts, 112)
    foreign = torch.roll(clips, 1, dims=0)
    frame_is_unmixed = torch.zeros(512, dtype=torch.bool)
    for start in starts:
        frame_is_unmixed[start : start + 112] = True
    assert torch.equal(mixed[:, :, frame_is_unmixed], clips[:, :, frame_is_unmixed])
    assert torch.equal(mixed[:, :, ~frame_is_unmixed], torch.maximum(clips, foreign)[:, :, ~frame_is_unmixed])
    assert torch.equal(mixed[0, :, ~frame_is_unmixed], torch.maximum(clips[0], clips[2])[:, ~frame_is_unmixed])


@pytest.mark.parametrize("frames, window, count", [(1024, 240, 2), (512, 112, 2), (256, 48, 3)])
def test_mixed_proportion_and_patch_rows(frames, window, count):
    starts = draw_unmixed_window_starts(frames, window, count, PATCH, torch.Generator().manual_seed(13)).tolist()
    time_patches = frames // PATCH
    levels = torch.arange(3.0).reshape(3, 1, 1, 1).expand(3, 1, frames, 128)  # clip 0's foreign clip is the largest
    mixed_fraction = float((mix_spectrograms(levels.clone(), starts, window)[0] == 2.0).float().mean())
    assert mixed_fraction == pytest.approx((frames - count * window) / frames)

    mixed, unmixed = mixed_patch_rows(time_patches, starts, window, PATCH), unmixed_patch_rows(starts, window, PATCH)
    assert sorted(mixed + unmixed) == list(range(time_patches)) and not set(mixed) & set(unmixed)
    assert len(mixed) == time_patches - count * window // PATCH and mixed == sorted(mixed)


def test_select_patch_rows_matches_the_grid_layout():
    """Correction 2: token n = t * F + f lives at grid[:, :, t, f] after transpose + reshape."""
    batch, rows, freq, hidden = 2, 10, 8, 5
    tokens = torch.randn(batch, rows * freq, hidden)
    keep = [0, 1, 4, 7, 9]
    grid = tokens.transpose(1, 2).reshape(batch, hidden, rows, freq)
    expected = grid[:, :, keep].reshape(batch, hidden, -1).transpose(1, 2)
    assert torch.equal(select_patch_rows(tokens, keep, freq), expected)


# ---------------------------------------------------------------------------------------------------------------------
# Targets and losses
# ---------------------------------------------------------------------------------------------------------------------


def _direct_target(layers, top_k, instance_norm=True, layer_norm=True):
    """float64 reference: instance norm over tokens per layer, average of the last top_k, layer norm over channels."""
    chosen = [layer.double() for layer in layers[-top_k:]]
    if instance_norm:
        chosen = [_standardise(x, dim=1) for x in chosen]
    target = sum(chosen) / len(chosen)
    return _standardise(target, dim=-1) if layer_norm else target


def _standardise(x: torch.Tensor, dim: int) -> torch.Tensor:
    return (x - x.mean(dim, keepdim=True)) / torch.sqrt(x.var(dim, unbiased=False, keepdim=True) + 1e-5)


@pytest.mark.parametrize("top_k", [1, 2, 3, 12])
@pytest.mark.parametrize("instance_norm, layer_norm", [(True, True), (True, False), (False, True)])
def test_teacher_targets_match_the_direct_formula(top_k, instance_norm, layer_norm):
    generator = torch.Generator().manual_seed(top_k)
    layers = [torch.randn(3, 20, 6, generator=generator) * (i + 1) + i for i in range(3)]
    target = build_teacher_targets(layers, top_k, instance_norm, layer_norm)
    assert target.dtype == torch.float32 and target.shape == (3, 20, 6)
    expected = _direct_target(layers, top_k, instance_norm, layer_norm)
    torch.testing.assert_close(target.double(), expected, atol=1e-5, rtol=1e-5)


def test_utterance_targets_stage1_mean_of_average_stage2_last_layer():
    layers = [torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    stage1 = build_teacher_targets(layers, 4).mean(dim=1)
    stage2 = build_teacher_targets(layers, 1).mean(dim=1)
    torch.testing.assert_close(stage1.double(), _direct_target(layers, 4).mean(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stage2.double(), _direct_target(layers[-1:], 1).mean(1), atol=1e-5, rtol=1e-5)


def test_source_retention_target_matches_a_direct_loop():
    batch, rows, freq, hidden = 3, 10, 4, 5
    mixed_rows = [0, 1, 2, 6, 7, 9]
    own = torch.randn(batch, rows * freq, hidden)
    foreign = torch.randn(batch, len(mixed_rows) * freq, hidden)
    target = build_source_retention_target(own, foreign, mixed_rows, freq)
    for clip in range(batch):
        source = (clip - 1) % batch  # clip i is mixed with clip i - 1
        for position, row in enumerate(mixed_rows):
            own_row = own[clip, row * freq : (row + 1) * freq]
            foreign_row = foreign[source, position * freq : (position + 1) * freq]
            torch.testing.assert_close(target[clip, row * freq : (row + 1) * freq], (own_row + foreign_row) / 2)
        for row in set(range(rows)) - set(mixed_rows):
            assert torch.equal(target[clip, row * freq : (row + 1) * freq], own[clip, row * freq : (row + 1) * freq])


def test_regression_loss_and_feature_spread():
    prediction, target = torch.randn(7, 16), torch.randn(7, 16)
    torch.testing.assert_close(regression_loss(prediction, target), (prediction - target) ** 2 / math.sqrt(16))
    torch.testing.assert_close(regression_loss(prediction, target, 0.5), (prediction - target) ** 2 * 0.5)
    assert regression_loss(prediction.reshape(7, 1, 16), target).shape == (7, 16)
    expected = torch.sqrt(prediction.double().var(0) + 1e-6).mean()
    torch.testing.assert_close(feature_spread(prediction).double(), expected, atol=1e-6, rtol=1e-6)
