"""Demo data of the sslam project: real audio committed in this package, and its loaders.

Sets: ``pretrain`` (unlabelled chunks), ``events`` (0AD-17 events), ``instruments`` (GM instrument families),
and polyphonic mixtures of the two labelled sets, as ``datasets.Dataset`` objects in the project's labelled-audio
schema (``audio`` + ``label`` / ``labels``). See ``README.md`` and :mod:`sslam.demo_data.loader`.
"""

from sslam.demo_data.loader import (
    DEMO_DIR,
    EXAMPLE_CLIP,
    LABELLED_SETS,
    SAMPLE_RATE,
    class_names,
    load_labelled_dataset,
    load_mixture_dataset,
    load_pretrain_files,
    materialize_mixture,
    read_clip,
    read_manifest,
    read_mixture_recipes,
    verify_manifest,
)

__all__ = [
    "DEMO_DIR",
    "EXAMPLE_CLIP",
    "LABELLED_SETS",
    "SAMPLE_RATE",
    "class_names",
    "load_labelled_dataset",
    "load_mixture_dataset",
    "load_pretrain_files",
    "materialize_mixture",
    "read_clip",
    "read_manifest",
    "read_mixture_recipes",
    "verify_manifest",
]
