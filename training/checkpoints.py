# Copyright 2026 The sslam developers. Licensed under the MIT licence.
"""Atomic checkpoints and which checkpoint a run resumes from.

`SSLAMPretrainingTrainer` writes every checkpoint into `OUTPUT_DIR/.incomplete/checkpoint-N/` and, once every process
has written its part, renames it to `OUTPUT_DIR/checkpoint-N/` (files and folder synced to disk first): a
`checkpoint-N` folder is therefore always complete, even after a `kill -9` or a power loss during a save.
Checkpoints written otherwise (by another tool, copied, or on a file system that lost data) are verified before a
resume ([`checkpoint_problems`]): `last` falls back to the newest complete one and names those it skipped; an explicit
checkpoint that is not complete is an error, because resuming it would not continue the run exactly (a fresh
optimizer or RNG state gives other losses than the uninterrupted run).
"""

import json
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path

import safetensors

from .errors import CheckpointError

logger = logging.getLogger(__name__)

STAGING_FOLDER = ".incomplete"
"""Where checkpoints are written before they are renamed into place (inside the output folder)."""
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def _zip_problem(path: Path) -> str | None:
    """`torch.save` files are zip archives whose directory is at the end: a truncated file has none."""
    try:
        with zipfile.ZipFile(path):
            return None
    except (OSError, zipfile.BadZipFile) as error:
        return f"{path.name} is truncated or corrupt ({error})"


def _safetensors_problem(path: Path) -> str | None:
    try:
        with safetensors.safe_open(str(path), "pt"):
            return None
    except (OSError, safetensors.SafetensorError) as error:
        return f"{path.name} is truncated or corrupt ({error})"


def _model_problems(folder: Path) -> list[str]:
    if (folder / "model.safetensors").is_file():
        return [problem for problem in [_safetensors_problem(folder / "model.safetensors")] if problem]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError) as error:
            return [f"{index.name} is unreadable ({error})"]
        return [problem for name in files if (problem := _safetensors_problem(folder / name))]
    if any(path.is_dir() and any(path.iterdir()) for path in folder.glob("pytorch_model_fsdp_*")):
        return []  # FSDP sharded state dict (a distributed-checkpoint folder)
    return ["no model weights (model.safetensors)"]


def checkpoint_problems(folder: str | os.PathLike, world_size: int = 1) -> list[str]:
    """Why `folder` cannot be resumed exactly by `world_size` processes (empty list: it can).

    Checks that `trainer_state.json` is readable and names the folder's step, that the model weights, `optimizer.pt`
    and `scheduler.pt` are present and not truncated, and that the RNG state of every process is there
    (`rng_state.pth`, or `rng_state_<rank>.pth` for each of `world_size` processes).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    problems = []
    state_file = folder / "trainer_state.json"
    try:
        step = json.loads(state_file.read_text())["global_step"]
        match = CHECKPOINT_PATTERN.match(folder.name)
        if match and int(match.group(1)) != step:
            problems.append(f"trainer_state.json is at step {step}, not {match.group(1)}")
    except FileNotFoundError:
        problems.append("no trainer_state.json")
    except (OSError, ValueError, KeyError, TypeError) as error:
        problems.append(f"trainer_state.json is unreadable ({error})")
    problems += _model_problems(folder)
    optimizer_folders = [path for path in folder.glob("optimizer_*") if path.is_dir()]  # FSDP sharded optimizer
    for name in ("optimizer.pt", "scheduler.pt"):
        if name == "optimizer.pt" and optimizer_folders:
            continue
        path = folder / name
        problem = _zip_problem(path) if path.is_file() else f"no {name}"
        if problem:
            problems.append(problem)
    rng_names = ["rng_state.pth"] if world_size == 1 else [f"rng_state_{rank}.pth" for rank in range(world_size)]
    missing_rng = [name for name in rng_names if not (folder / name).is_file()]
    if missing_rng:
        written = sorted(path.name for path in folder.glob("rng_state*.pth"))
        problems.append(
            f"no {', '.join(missing_rng)} for {world_size} process(es) (it has {', '.join(written) or 'no RNG state'}: "
            "resume with the number of processes that wrote it)"
        )
    else:
        problems += [problem for name in rng_names if (problem := _zip_problem(folder / name))]
    return problems


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The `checkpoint-N` folders of `output_dir`, newest (highest N) first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in output_dir.iterdir() if (m := CHECKPOINT_PATTERN.match(path.name))]
    return [path for _, path in sorted(found, reverse=True) if path.is_dir()]


def newest_complete_checkpoint(output_dir: str | os.PathLike, world_size: int = 1) -> tuple[Path | None, dict]:
    """The newest checkpoint of `output_dir` that can be resumed, and `{skipped newer checkpoint: its problems}`."""
    skipped = {}
    for folder in list_checkpoints(output_dir):
        problems = checkpoint_problems(folder, world_size)
        if not problems:
            return folder, skipped
        skipped[folder] = problems
    return None, skipped


def resolve_resume_checkpoint(resume_from_checkpoint, output_dir: str, world_size: int = 1) -> str | None:
    """The checkpoint folder to resume: `True`/`"last"` -> the newest complete one (a warning names every newer one
    skipped, and why); a path -> that folder, if it is complete. Raises [`CheckpointError`] otherwise."""
    if resume_from_checkpoint in (None, False):
        return None
    if resume_from_checkpoint is True or resume_from_checkpoint == "last":
        folder, skipped = newest_complete_checkpoint(output_dir, world_size)
        for skipped_folder, problems in skipped.items():
            logger.warning("Skipping incomplete checkpoint %s: %s.", skipped_folder, "; ".join(problems))
        if folder is None:
            found = "; ".join(f"{path.name}: {', '.join(problems)}" for path, problems in skipped.items())
            raise CheckpointError(
                f"--resume_from_checkpoint last: no complete checkpoint in {output_dir}"
                + (f" ({found})" if found else " (it has no checkpoint-N folder)")
            )
        logger.warning("Resuming from %s.", folder)
        return str(folder)
    problems = checkpoint_problems(resume_from_checkpoint, world_size)
    if problems:
        raise CheckpointError(
            f"cannot resume exactly from {resume_from_checkpoint}: {'; '.join(problems)}. To start a new run from "
            "its weights (fresh optimizer, schedule and EMA step count), pass it as --init_from instead."
        )
    return str(resume_from_checkpoint)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def publish_checkpoint(staged: str | os.PathLike, final: str | os.PathLike) -> None:
    """Syncs every file of the finished checkpoint `staged` to disk, then renames it to `final` (replacing an older
    folder of the same step, e.g. from before a resume)."""
    staged, final = Path(staged), Path(final)
    for path in staged.rglob("*"):
        if path.is_file():
            _fsync(path)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staged, final)
    _fsync(final.parent)


__all__ = [
    "STAGING_FOLDER",
    "checkpoint_problems",
    "list_checkpoints",
    "newest_complete_checkpoint",
    "publish_checkpoint",
    "resolve_resume_checkpoint",
]
