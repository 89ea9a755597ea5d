"""Demo data of the sslam project: real audio committed in this package, and its loaders.

Sets: ``pretrain`` (unlabelled chunks), ``events`` (0AD-17 events), ``instruments`` (GM instrument families),
polyphonic mixtures of the two labelled sets and strongly labelled soundscapes (``soundscapes``), as ``datasets.Dataset`` objects in the project's labelled-audio
schema (``audio`` + ``label`` / ``labels``). See ``README.md`` and :mod:`sslam.demo_data.loader`.
"""

from sslam.demo_data.loader import (
    DEMO_DIR,
    EXAMPLE_CLIP,
    EXAMPLE_SOUNDSCAPE,
    EXAMPLE_SOUNDSCAPE_TSV,
    LABELLED_SETS,
    SAMPLE_RATE,
    class_names,
    load_labelled_dataset,
    load_mixture_dataset,
    load_pretrain_files,
    load_soundscape_dataset,
    materialize_mixture,
    materialize_soundscape,
    read_clip,
    read_manifest,
    read_mixture_recipes,
    read_soundscape_recipes,
    soundscape_events,
    verify_manifest,
)

__all__ = [
    "DEMO_DIR",
    "EXAMPLE_CLIP",
    "EXAMPLE_SOUNDSCAPE",
    "EXAMPLE_SOUNDSCAPE_TSV",
    "LABELLED_SETS",
    "SAMPLE_RATE",
    "class_names",
    "load_labelled_dataset",
    "load_mixture_dataset",
    "load_pretrain_files",
    "load_soundscape_dataset",
    "materialize_mixture",
    "materialize_soundscape",
    "read_clip",
    "read_manifest",
    "read_mixture_recipes",
    "read_soundscape_recipes",
    "soundscape_events",
    "verify_manifest",
]
