# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""The errors that stop a pre-training run on purpose. The command line prints them as one `error:` line and exits
with code 1 (usage errors, found before any work, exit with code 2)."""


class PretrainingError(RuntimeError):
    """A run cannot continue (or start) and says why: the base class of the errors below."""


class DataSourceError(PretrainingError):
    """The training data cannot be read (an empty manifest, an invalid shard index, ...)."""


class NotEnoughDataError(PretrainingError):
    """The data gives no full batch (fewer usable clips than one batch per process), or no step was trained."""


class TooManySkippedClipsError(PretrainingError):
    """The fraction of clips that could not be used (undecodable, empty, non-finite, far out of range) exceeds
    `max_skipped_fraction`."""


class TrainingDivergedError(PretrainingError):
    """A non-finite loss or gradient norm (or non-finite weights about to be saved): the run stops before the
    optimizer step, so no non-finite weight reaches a checkpoint or a saved model."""


class RepresentationCollapseError(PretrainingError):
    """The target or prediction spread fell below its configured minimum after the warm-up."""


class CheckpointError(PretrainingError):
    """A checkpoint cannot be resumed exactly (missing or truncated files, another process layout), or no complete
    checkpoint exists."""


class DataLayoutChangedError(PretrainingError):
    """A shard stream resumed with another number of processes, workers, batch size, seed or shard list than the one
    its checkpoint was written with (the data order depends on all of them)."""


__all__ = [
    "CheckpointError",
    "DataLayoutChangedError",
    "DataSourceError",
    "NotEnoughDataError",
    "PretrainingError",
    "RepresentationCollapseError",
    "TooManySkippedClipsError",
    "TrainingDivergedError",
]
