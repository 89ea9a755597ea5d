"""Demo data of the sslam project: real audio committed in this package, and its loaders.

Sets: ``pretrain`` (unlabelled chunks), ``events`` (0AD-17 events), ``instruments`` (GM instrument families),
and polyphonic mixtures of the two labelled sets. See ``README.md`` and :mod:`demo_data.loader`.
"""

from sslam.demo_data.loader import (
    DEMO_DIR,
    EXAMPLE_CLIP,
    LABELLED_SETS,
    SAMPLE_RATE,
    class_names,
    load_labelled,
    load_labelled_dataset,
    load_mixtures,
    load_pretrain_files,
    load_waveform,
    materialize_mixture,
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
    "load_labelled",
    "load_labelled_dataset",
    "load_mixtures",
    "load_pretrain_files",
    "load_waveform",
    "materialize_mixture",
    "read_manifest",
    "read_mixture_recipes",
    "verify_manifest",
]
