# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""The random structure of a pre-training batch, in one place: inverse 2-D block masks, the order in which the
student sees the visible patches, the decoder's mask tokens, and the Stage-2 unmixed windows and partial mixtures.

[`PretrainingMaskGenerator`] is built from an `SSLAMConfig` and is what both the batch collator
(`sslam.training.collator`, in the DataLoader workers) and `SSLAMForPreTraining`'s fallback (masks drawn in `forward`)
use, so a masking or mixing setting is read from the config in exactly one place.

Patches are time-major: patch `p = t * freq_patches + f` of a `time_patches x freq_patches` grid.
"""

from dataclasses import dataclass

import torch

from .configuration_sslam import SSLAMConfig

# ----------------------------------------------------------------------------------------------------------------------
# Inverse block masks
# ----------------------------------------------------------------------------------------------------------------------


def compute_block_mask_2d(
    num_masks: int,
    time_patches: int,
    freq_patches: int,
    mask_prob: float,
    mask_length: int,
    mask_prob_adjust: float = 0.0,
    inverse: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(Inverse) 2-D block masking of a `time_patches x freq_patches` patch grid, as the original data loader does.

    With `inverse=True` (the original's setting) `int(L * (1 - mask_prob + mask_prob_adjust) / mask_length**2)` block
    centres are drawn uniformly with replacement over the `L = time_patches * freq_patches` cells; each marks a
    `mask_length x mask_length` block (offsets clamped at the grid edges); the number of marked cells is then forced
    to `int(L * (1 - mask_prob))` by un-marking (or marking) a random subset of cells with `torch.multinomial` without
    replacement, row by row; finally the marked cells are the *visible* ones. With `inverse=False` the marked cells
    are the masked ones and `mask_prob` is used as given.

    Args:
        num_masks: number of masks (rows) to draw, e.g. `clone_batch` for one clip.
        generator: optional `torch.Generator` (CPU); the global RNG when None. With `torch.manual_seed(s)` set before
            the call and no generator, the draws equal the original's.
    Returns:
        `(num_masks, time_patches * freq_patches)` float32 mask, 1 = masked, time-major; every row has exactly the same
        number of masked patches.
    """
    if mask_length < 2:
        raise ValueError(
            f"block masking needs mask_length >= 2 (the original uses 1-D masking otherwise), got {mask_length}."
        )
    num_cells = time_patches * freq_patches
    if inverse:
        mask_prob = 1 - mask_prob
    num_centres = int(num_cells * ((mask_prob + mask_prob_adjust) / mask_length**2))
    marked = torch.zeros((num_masks, time_patches, freq_patches))
    centre_ids = torch.randint(0, num_cells, size=(num_masks, num_centres), generator=generator)
    marked.view(num_masks, -1).scatter_(1, centre_ids, 1)
    rows, centre_t, centre_f = marked.nonzero(as_tuple=True)

    offset = mask_length // 2
    block_rows, block_t, block_f = [], [], []
    for dt in range(mask_length):
        for df in range(mask_length):
            block_rows.append(rows)
            block_t.append(centre_t + (dt - offset))
            block_f.append(centre_f + (df - offset))
    block_t = torch.cat(block_t).clamp_(min=0, max=time_patches - 1)
    block_f = torch.cat(block_f).clamp_(min=0, max=freq_patches - 1)
    marked[(torch.cat(block_rows), block_t, block_f)] = 1

    marked = marked.reshape(num_masks, -1)
    _force_marked_count(marked, int(num_cells * mask_prob), generator)
    return 1 - marked if inverse else marked


def _force_marked_count(marked: torch.Tensor, target: int, generator: torch.Generator | None) -> None:
    """In place: un-marks (or marks) uniformly chosen cells of each `(num_masks, L)` row until `target` are marked."""
    counts = marked.sum(dim=-1)
    for row_index in range(len(marked)):
        row = marked[row_index]
        count = counts[row_index]
        if count > target:
            row[torch.multinomial(row, int(count - target), replacement=False, generator=generator)] = 0
        elif count < target:
            row[torch.multinomial(1 - row, int(target - count), replacement=False, generator=generator)] = 1


def visible_first_order(mask: torch.Tensor, kept_token_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The order in which patches are laid out for the student: visible patches first, then masked ones.

    Args:
        mask: `(rows, N)`, nonzero = masked, the same masked count in every row.
        kept_token_ids: optional `(rows, num_kept)` patch indices of the visible patches in the order the student
            should see them (e.g. another platform's `argsort` order); by default `mask.to(torch.uint8).argsort(dim=1)`
            as the original (its order is not stable, which only changes float summation order).
    Returns:
        `(rows, N)` int64 permutation: `[:, :num_kept]` visible, `[:, num_kept:]` masked (where mask-token noise goes).
    """
    order = mask.to(torch.uint8).argsort(dim=1)
    if kept_token_ids is None:
        return order
    num_kept = mask.shape[1] - int(mask[0].bool().sum())
    kept_token_ids = kept_token_ids.to(device=order.device, dtype=torch.long)
    if kept_token_ids.shape != (mask.shape[0], num_kept):
        raise ValueError(
            f"kept_token_ids must have shape {(mask.shape[0], num_kept)} (rows, visible patches), "
            f"got {tuple(kept_token_ids.shape)}."
        )
    same_set = torch.equal(kept_token_ids.sort(dim=1).values, order[:, :num_kept].sort(dim=1).values)
    if not same_set:
        raise ValueError("kept_token_ids must list exactly the visible (unmasked) patches of each mask row.")
    return torch.cat([kept_token_ids, order[:, num_kept:]], dim=1)


def gather_tokens(tokens: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """`(rows, N, D)` tokens -> `(rows, K, D)`: row `r` takes tokens `token_ids[r]` `(rows, K)`, in that order (e.g. the
    visible patches `visible_first_order(mask)[:, :num_kept]` that the student sees)."""
    ids = token_ids.to(tokens.device).unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
    return torch.gather(tokens, 1, ids)


def draw_mask_noise(
    num_rows: int, num_masked: int, hidden_size: int, std: float, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """The decoder's mask tokens: one draw of shape `(rows, num_masked, D)` from N(0, std^2), as the original.

    Element `j` of row `r` belongs at patch `visible_first_order(mask)[r, num_kept + j]` (see `position_mask_noise`).
    """
    device = generator.device if generator is not None else device
    return torch.empty(num_rows, num_masked, hidden_size, device=device).normal_(0, std, generator=generator)


def position_mask_noise(noise: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """`(rows, num_masked, D)` noise in draw order -> `(rows, N, D)` at the masked patches (zeros at visible ones)."""
    rows, num_masked, hidden = noise.shape
    masked_ids = order[:, order.shape[1] - num_masked :].to(noise.device)
    positioned = noise.new_zeros(rows, order.shape[1], hidden)
    return positioned.scatter_(1, masked_ids.unsqueeze(-1).expand(-1, -1, hidden), noise)


# ----------------------------------------------------------------------------------------------------------------------
# Stage-2 unmixed windows and partial mixtures
# ----------------------------------------------------------------------------------------------------------------------


def check_unmixed_window_geometry(num_frames: int, window_frames: int, num_windows: int, patch_size: int) -> None:
    """Raises a `ValueError` unless `num_windows` windows of `window_frames` fit in a clip of `num_frames` frames.

    Windows start on patch boundaries, cover whole patch rows and do not overlap; at least one patch row of the clip
    stays mixed (the original never leaves the last patch row unmixed).
    """
    if num_windows < 0:
        raise ValueError(f"num_unmixed_windows must be >= 0, got {num_windows}.")
    if window_frames <= 0 or window_frames % patch_size != 0:
        raise ValueError(
            f"unmixed_window_frames ({window_frames}) must be a positive multiple of patch_size ({patch_size})."
        )
    time_patches = num_frames // patch_size
    if num_windows * (window_frames // patch_size) > time_patches - 1:
        raise ValueError(
            f"{num_windows} unmixed window(s) of {window_frames} frames do not fit in a clip of {num_frames} frames: "
            f"they would cover {num_windows * window_frames} frames, but at most {(time_patches - 1) * patch_size} "
            f"may be unmixed (one patch row of {patch_size} frames must stay mixed). Use shorter or fewer windows."
        )


def unmixed_window_start_range(
    window_index: int, earliest_row: int, time_patches: int, window_rows: int, num_windows: int
) -> tuple[int, int]:
    """Inclusive range of patch rows where unmixed window `window_index` (0-based) may start.

    The rule generalises the original's draw (T = 1024 frames, two windows of 15 patch rows: first start in
    {0, ..., 31} rows = {0, 16, ..., 496} frames, second in {first + 15, ..., 48} rows = {idx1 + 240, ..., 768} frames):
    window `k` (1-based) of `n` starts after the previous window (`earliest_row`) and at most at
    `min(R - 1 - (n - k + 1) * w, max(earliest_row, floor(k * R / n) - 1))` for `R` patch rows and `w` rows per
    window; i.e. window k starts within the first k/n of the clip when possible, and the remaining windows plus one
    mixed patch row always fit after it.
    """
    k = window_index + 1
    fit_limit = time_patches - 1 - (num_windows - k + 1) * window_rows
    share_limit = max(earliest_row, (k * time_patches) // num_windows - 1)
    return earliest_row, min(fit_limit, share_limit)


def draw_unmixed_window_starts(
    num_frames: int,
    window_frames: int,
    num_windows: int,
    patch_size: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draws the unmixed windows of one Stage-2 batch (shared by all clips), uniformly within
    `unmixed_window_start_range`, with `torch.randint` on `generator` (global RNG when None).

    Returns:
        `(num_windows,)` int64 frame starts, increasing, multiples of `patch_size`.
    """
    check_unmixed_window_geometry(num_frames, window_frames, num_windows, patch_size)
    time_patches, window_rows = num_frames // patch_size, window_frames // patch_size
    starts, earliest = [], 0
    for index in range(num_windows):
        low, high = unmixed_window_start_range(index, earliest, time_patches, window_rows, num_windows)
        row = int(torch.randint(low, high + 1, (1,), generator=generator))
        starts.append(row * patch_size)
        earliest = row + window_rows
    return torch.tensor(starts, dtype=torch.long)


def check_unmixed_window_starts(
    starts: list[int], num_frames: int, window_frames: int, num_windows: int, patch_size: int
) -> None:
    """Raises a `ValueError` unless `starts` are `num_windows` increasing, non-overlapping patch-aligned window starts
    whose windows lie inside the clip."""
    check_unmixed_window_geometry(num_frames, window_frames, num_windows, patch_size)
    if len(starts) != num_windows:
        raise ValueError(f"expected {num_windows} unmixed window start(s), got {len(starts)}: {starts}.")
    previous_end = 0
    for start in starts:
        if start % patch_size != 0:
            raise ValueError(f"unmixed window starts must be multiples of patch_size ({patch_size}), got {starts}.")
        if start < previous_end:
            raise ValueError(
                f"unmixed windows must be increasing and must not overlap, got starts {starts} "
                f"with {window_frames}-frame windows."
            )
        previous_end = start + window_frames
    if previous_end > num_frames:
        raise ValueError(f"unmixed windows {starts} of {window_frames} frames exceed the clip ({num_frames} frames).")


def unmixed_patch_rows(starts: list[int], window_frames: int, patch_size: int) -> list[int]:
    """Patch rows covered by the unmixed windows, increasing."""
    window_rows = window_frames // patch_size
    return [start // patch_size + offset for start in starts for offset in range(window_rows)]


def mixed_patch_rows(time_patches: int, starts: list[int], window_frames: int, patch_size: int) -> list[int]:
    """Patch rows outside the unmixed windows (where clip `i` is mixed with clip `i - 1`), increasing."""
    unmixed = set(unmixed_patch_rows(starts, window_frames, patch_size))
    return [row for row in range(time_patches) if row not in unmixed]


def mix_spectrograms(spectrograms: torch.Tensor, starts: list[int], window_frames: int) -> torch.Tensor:
    """Partial mixtures: clip `i` mixed with clip `i - 1` (clip 0 with the last) by element-wise maximum, except in
    the unmixed windows where clip `i` is kept.

    Args:
        spectrograms: `(B, C, T, F)` normalised log-mel spectrograms, B >= 2.
        starts: frame starts of the unmixed windows; each covers `window_frames` frames.
    Returns:
        `(B, C, T, F)` mixtures.
    """
    foreign = torch.roll(spectrograms, shifts=1, dims=0)
    for start in starts:
        foreign[:, :, start : start + window_frames, :] = float("-inf")
    return torch.max(spectrograms, foreign)


def select_patch_rows(tokens: torch.Tensor, rows: list[int], freq_patches: int) -> torch.Tensor:
    """`(B, R * F, D)` time-major patch tokens -> `(B, len(rows) * F, D)`: the given patch rows, in the given order."""
    batch, num_tokens, hidden = tokens.shape
    grid = tokens.reshape(batch, num_tokens // freq_patches, freq_patches, hidden)
    return grid[:, rows].reshape(batch, len(rows) * freq_patches, hidden)


# ----------------------------------------------------------------------------------------------------------------------
# The generator
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PretrainingMaskGenerator:
    """Draws and checks the masks and (Stage 2) unmixed windows of pre-training batches, with the settings of one
    `SSLAMConfig`. Build it with [`PretrainingMaskGenerator.from_config`].

    Attributes:
        clone_batch: masked copies of each clip. freq_patches, patch_size: the patch grid.
        mask_prob, mask_prob_adjust, mask_length, inverse_mask: see [`compute_block_mask_2d`].
        window_frames: frames per unmixed window, or None for Stage 1 (no mixing). num_windows: unmixed windows.
    """

    clone_batch: int
    freq_patches: int
    patch_size: int
    mask_prob: float
    mask_prob_adjust: float
    mask_length: int
    inverse_mask: bool
    window_frames: int | None
    num_windows: int

    @classmethod
    def from_config(cls, config: SSLAMConfig) -> "PretrainingMaskGenerator":
        return cls(
            clone_batch=config.clone_batch,
            freq_patches=config.num_freq_patches,
            patch_size=config.patch_size,
            mask_prob=config.mask_prob,
            mask_prob_adjust=config.mask_prob_adjust,
            mask_length=config.mask_length,
            inverse_mask=config.inverse_mask,
            window_frames=config.unmixed_window_frames if config.objective == "sslam" else None,
            num_windows=config.num_unmixed_windows,
        )

    @property
    def mixes(self) -> bool:
        """Whether batches are partially mixed (Stage 2)."""
        return self.window_frames is not None

    def clip_masks(self, time_patches: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The `clone_batch` masks of one clip: `(clone_batch, time_patches * freq_patches)` float32, 1 = masked."""
        return compute_block_mask_2d(
            self.clone_batch,
            time_patches,
            self.freq_patches,
            mask_prob=self.mask_prob,
            mask_length=self.mask_length,
            mask_prob_adjust=self.mask_prob_adjust,
            inverse=self.inverse_mask,
            generator=generator,
        )

    def batch_masks(self, num_clips: int, time_patches: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Masks of a batch as the original collater draws them, clip after clip from one generator.

        Returns:
            `(num_clips * clone_batch, N)` float32, 1 = masked; row `i * clone_batch + j` is clone `j` of clip `i`.
        """
        return torch.cat([self.clip_masks(time_patches, generator) for _ in range(num_clips)], dim=0)

    def window_starts(self, num_frames: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Stage 2: the batch's unmixed window starts, `(num_windows,)` int64 frames (see
        [`draw_unmixed_window_starts`])."""
        if not self.mixes:
            raise ValueError("Stage 1 (objective 'eat') does not mix clips: there are no unmixed windows to draw.")
        return draw_unmixed_window_starts(num_frames, self.window_frames, self.num_windows, self.patch_size, generator)

    def check_window_starts(self, starts, num_frames: int) -> list[int]:
        """`starts` (any int sequence or tensor) as a checked list of frame starts."""
        starts = [int(start) for start in torch.as_tensor(starts).reshape(-1).tolist()]
        check_unmixed_window_starts(starts, num_frames, self.window_frames, self.num_windows, self.patch_size)
        return starts

    def mixed_rows(self, num_frames: int, starts: list[int]) -> list[int]:
        """Patch rows where the clips of a batch with unmixed windows `starts` are mixed."""
        return mixed_patch_rows(num_frames // self.patch_size, starts, self.window_frames, self.patch_size)

    def mix(self, spectrograms: torch.Tensor, starts: list[int]) -> torch.Tensor:
        """[`mix_spectrograms`] with this generator's window length."""
        return mix_spectrograms(spectrograms, starts, self.window_frames)


__all__ = [
    "PretrainingMaskGenerator",
    "check_unmixed_window_geometry",
    "check_unmixed_window_starts",
    "compute_block_mask_2d",
    "draw_mask_noise",
    "draw_unmixed_window_starts",
    "gather_tokens",
    "mix_spectrograms",
    "mixed_patch_rows",
    "position_mask_noise",
    "select_patch_rows",
    "unmixed_patch_rows",
    "unmixed_window_start_range",
    "visible_first_order",
]
