"""`sslam embed` and `sslam classify`: embeddings and top-k labels of audio files.

Every argument is checked before any work starts (the inputs exist, the model folder exists, `--window` / `--hop`,
`--device`, the outputs can be written and no two inputs would write the same file); a usage error exits with status
2. Each file is then handled on its own: one that cannot be decoded or is not usable audio (empty, too short, NaN,
out of range) is reported on stderr as `error: FILE: reason`, the others are still written, and the command exits
with status 1 when any file failed.
"""

import argparse
import sys
from collections import defaultdict
from pathlib import Path

EMBED_EPILOG = """examples:
  sslam embed clip.wav --model converted/sslam-base                     # CLS embedding -> clip.cls.npy
  sslam embed a.flac b.mp3 --model DIR --pooling mean --output emb.safetensors
  sslam embed long.ogg --model DIR --pooling frames --output-dir feats/  # (N, D) patch tokens per file
  sslam embed long.ogg --model DIR --pooling time                       # 160 ms rows + times -> long.time.npz
  sslam embed long.wav --model DIR --window 10 --hop 5                  # windowed, for audio of any length"""
CLASSIFY_EPILOG = """examples:
  sslam classify clip.wav --model converted/sslam-as2m --top-k 5
  sslam classify *.flac --model DIR --json
  sslam classify long.wav --model DIR --window 10 --hop 5  # audio longer than a clip is scored in windows"""
WINDOW_BATCH_SIZE = 8
# Errors a single input file can raise while it is decoded, featurised, run and written: reported for that file.
FILE_ERRORS = (ValueError, OSError, RuntimeError)


def add_embed_parser(commands) -> argparse.ArgumentParser:
    embed = commands.add_parser(
        "embed", help="write embeddings of audio files", epilog=EMBED_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    embed.add_argument("audio", nargs="+", help="audio files (wav/flac/ogg/mp3; any rate; channels are averaged)")
    embed.add_argument("--model", required=True, help="a saved SSLAM model folder")
    embed.add_argument(
        "--pooling", choices=["cls", "mean", "frames", "time"], default="cls",
        help="time: one feature per 160 ms time row with its centre time, any length (.npz per file)",
    )  # fmt: skip
    embed.add_argument(
        "--frequency_pooling", "--frequency-pooling", choices=["concat", "mean"], default="concat",
        help="with --pooling time: concatenate (8 x D) or average (D) each row's frequency patches",
    )  # fmt: skip
    embed.add_argument(
        "--output", help="one .npy or .safetensors file for all clips, in an existing folder (time pooling: .safetensors)"
    )
    embed.add_argument(
        "--output_dir", "--output-dir",
        help="folder for one <name>.<pooling>.npy (time pooling: .npz) file per clip (default: beside it)",
    )  # fmt: skip
    embed.add_argument(
        "--window", type=float,
        help="embed in windows of this many seconds (long audio; with --pooling time: the window length, default the "
        "model's clip length)",
    )  # fmt: skip
    embed.add_argument(
        "--hop", type=float,
        help="window hop in seconds (default 5 with --window, half a window with --pooling time; at most the window)",
    )  # fmt: skip
    embed.add_argument("--device", default="cpu")
    embed.set_defaults(run=run_embed, command_parser=embed)
    return embed


def add_classify_parser(commands) -> argparse.ArgumentParser:
    classify = commands.add_parser(
        "classify", help="top-k labels of audio files", epilog=CLASSIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    classify.add_argument("audio", nargs="+")
    classify.add_argument("--model", required=True, help="a saved SSLAMForAudioClassification folder")
    classify.add_argument("--top_k", "--top-k", type=_positive_int, default=5)
    classify.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    classify.add_argument(
        "--window", type=float,
        help="seconds per scored window of audio longer than it (default: the model's clip length, ~10 s); each "
        "label's score is its maximum over the windows (multi-label models) or its mean (single-label)",
    )  # fmt: skip
    classify.add_argument("--hop", type=float, help="window hop in seconds (default 5, at most the window)")
    classify.add_argument("--device", default="cpu")
    classify.set_defaults(run=run_classify, command_parser=classify)
    return classify


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


# ---------------------------------------------------------------------------------------------- checks before work


def check_inputs(paths: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """The input files, each once (in order); a usage error naming every one that is missing or not a file."""
    missing = [path for path in paths if not Path(path).exists()]
    not_files = [path for path in paths if Path(path).exists() and not Path(path).is_file()]
    if missing:
        parser.error(f"audio file(s) not found: {', '.join(missing)}")
    if not_files:
        parser.error(f"not audio files (folders?): {', '.join(not_files)}")
    unique = {}
    for path in paths:
        unique.setdefault(Path(path).resolve(), path)
    return list(unique.values())


def check_model_folder(folder: str, parser: argparse.ArgumentParser) -> None:
    path = Path(folder)
    if not path.exists():
        parser.error(f"--model {folder}: folder not found (a folder saved with save_pretrained or by sslam convert)")
    if not path.is_dir():
        parser.error(f"--model {folder}: is a file, not a model folder")
    if not (path / "config.json").is_file():
        parser.error(f"--model {folder}: no config.json in it, so it is not a saved model folder")


def check_device(device: str, parser: argparse.ArgumentParser) -> None:
    """A usage error unless a tensor can be made on `device` (e.g. `cuda` on a machine without a GPU)."""
    import torch

    try:
        torch.empty(0, device=device)
    except Exception as error:  # RuntimeError (unknown or absent device), AssertionError (torch built without CUDA)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        parser.error(f"--device {device}: not available here ({reason})")


def check_window_arguments(args, parser: argparse.ArgumentParser) -> None:
    """Window options that are wrong whatever the model (the model-dependent limits come with the extractor)."""
    if args.hop is not None and args.window is None and getattr(args, "pooling", None) != "time":
        parser.error("--hop needs --window (or --pooling time).")
    if getattr(args, "pooling", None) == "frames" and args.window is not None:
        parser.error("--window pools each window to one vector: use --pooling cls or mean with it.")


def embedding_targets(args, paths: list[str], parser: argparse.ArgumentParser) -> dict[str, Path]:
    """The file each input's embedding is written to (`--output_dir` or beside the input), checked to be writable
    and distinct: two inputs that would write the same file are a usage error (nothing is overwritten)."""
    from sslam.conversion.export import output_folder_problem

    targets = {}
    for path in paths:
        folder = Path(args.output_dir) if args.output_dir else Path(path).parent
        suffix = "time.npz" if args.pooling == "time" else f"{args.pooling}.npy"
        targets[path] = folder / f"{Path(path).stem}.{suffix}"
    sources = defaultdict(list)
    for path, target in targets.items():
        sources[target].append(path)
    clashes = [f"{' and '.join(group)} -> {target}" for target, group in sources.items() if len(group) > 1]
    if clashes:
        parser.error(
            f"several inputs would write the same file ({'; '.join(clashes)}): embed them into different "
            "--output_dir folders, or into one --output .safetensors file."
        )
    for folder in sorted({target.parent for target in targets.values()}):
        problem = output_folder_problem(folder)
        if problem is not None:
            parser.error(f"cannot write the embeddings: {problem}.")
    return targets


def single_output_target(args, paths: list[str], parser: argparse.ArgumentParser) -> Path:
    """The `--output` file (`.npy` added unless it ends in .npy / .safetensors), checked before any work."""
    from sslam.conversion.export import output_folder_problem

    if args.output_dir:
        parser.error("--output writes one file for all inputs; --output_dir one file per input: give only one.")
    target = Path(args.output if args.output.endswith((".npy", ".safetensors")) else f"{args.output}.npy")
    stems = [Path(path).stem for path in paths]
    repeated = sorted({stem for stem in stems if stems.count(stem) > 1})
    if repeated:
        parser.error(f"--output keys files by name, and several inputs are named {', '.join(repeated)}.")
    if target.suffix == ".npy" and args.pooling == "time":
        parser.error("--pooling time writes frames, times and cls per clip: use a .safetensors --output.")
    if target.suffix == ".npy" and args.window is not None and len(paths) > 1:
        parser.error("with --window each file has its own number of windows: use a .safetensors --output.")
    if target.is_dir():
        parser.error(f"--output {target} is a folder; give a file name (or use --output_dir).")
    if not target.parent.is_dir():
        parser.error(f"--output {target}: the folder {target.parent} does not exist.")
    problem = output_folder_problem(target.parent)
    if problem is not None:
        parser.error(f"--output {target}: {problem}.")
    return target


def check_window_against(extractor, model_config, args, parser: argparse.ArgumentParser) -> None:
    """`--window` / `--hop` against the model: at least one patch, at most its position table (before any audio)."""
    from sslam.modeling_sslam.embedding import check_window

    if args.window is None:
        return
    try:
        check_window(extractor, args.window, args.hop, model_config.max_time_patches * model_config.patch_size)
    except ValueError as error:
        parser.error(f"--window / --hop: {error}")


# ------------------------------------------------------------------------------------------------ model and files


def load_config(folder: str):
    """The config of a model folder, or a one-line exit naming why it cannot be read (invalid JSON or values)."""
    import sslam.modeling_sslam  # noqa: F401  (registers the Auto classes)
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder)
    except Exception as error:  # OSError, JSON errors, config validation (ValueError / StrictDataclassError)
        sys.exit(f"error: cannot load a model from {folder}: {_last_line(error)}")


def load_extractor(folder: str):
    from transformers import AutoFeatureExtractor

    try:
        return AutoFeatureExtractor.from_pretrained(folder)
    except Exception as error:  # no preprocessor_config.json, invalid values (e.g. mean NaN)
        sys.exit(f"error: cannot load the feature extractor of {folder}: {_last_line(error)}")


def load_model(folder: str, device: str, classification: bool, config):
    """The classifier (`classification`) or the encoder of a model folder (a classifier's own encoder when the folder
    holds one), on `device` in eval mode; a one-line exit naming why it cannot be loaded."""
    from transformers import AutoModel, AutoModelForAudioClassification

    auto_class = AutoModelForAudioClassification if classification or holds_classifier(config) else AutoModel
    try:
        model = auto_class.from_pretrained(folder).to(device).eval()
    except Exception as error:  # no or corrupt weights (OSError, SafetensorError), invalid config values
        sys.exit(f"error: cannot load a model from {folder}: {_last_line(error)}")
    if not classification and hasattr(model, "sslam"):
        model = model.sslam
    return model


def holds_classifier(config) -> bool:
    return any(name.endswith("ForAudioClassification") for name in config.architectures or [])


def _last_line(error: Exception) -> str:
    """The most specific line of an error message (wrapped validation errors put the reason last)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def report_failure(path: str, error: Exception) -> None:
    message = _last_line(error)
    print(f"error: {message if path in message else f'{path}: {message}'}", file=sys.stderr)


def exit_if_any_failed(failed: int, total: int, what: str) -> None:
    if failed:
        sys.exit(f"error: {failed} of {total} file(s) failed (reported above); {what} for the other {total - failed}.")


# ------------------------------------------------------------------------------------------------------- commands


def run_embed(args, parser: argparse.ArgumentParser) -> None:
    """`sslam embed`: checks everything first, then embeds and writes file by file."""
    import numpy as np

    from sslam.modeling_sslam.audio_io import load_audio

    paths = check_inputs(args.audio, parser)
    check_window_arguments(args, parser)
    output = single_output_target(args, paths, parser) if args.output else None
    targets = None if output else embedding_targets(args, paths, parser)
    check_model_folder(args.model, parser)
    check_device(args.device, parser)
    config, extractor = load_config(args.model), load_extractor(args.model)
    check_window_against(extractor, config, args, parser)
    model = load_model(args.model, args.device, classification=False, config=config)

    embeddings, failed = {}, 0
    for path in paths:
        try:
            waveform = load_audio(path, target_sampling_rate=extractor.sampling_rate)
            array = embed_file(model, extractor, waveform, args, path)
            if targets is not None:
                targets[path].parent.mkdir(parents=True, exist_ok=True)
                save_embedding(targets[path], array)
                print(f"{path}: {describe(array)} -> {targets[path]}")
            else:
                embeddings[path] = array
        except FILE_ERRORS as error:
            report_failure(path, error)
            failed += 1
    if output is not None and embeddings:
        write_single_output(output, embeddings)
    exit_if_any_failed(failed, len(paths), "embeddings were written")


def embed_file(model, extractor, waveform, args, name: str):
    """One file's embedding: an array, or for `--pooling time` a dict of `frames` `(rows, F)`, `times` `(rows,)` and
    `cls` `(D,)`."""
    from sslam.modeling_sslam.embedding import embed_long_audio, embed_time_frames, extract_embeddings

    rate = extractor.sampling_rate
    if args.pooling == "time":
        result = embed_time_frames(
            model, extractor, waveform, rate, frequency_pooling=args.frequency_pooling, window_seconds=args.window,
            hop_seconds=args.hop,
        )[0]  # fmt: skip
        return {"frames": result.frames, "times": result.times, "cls": result.cls}
    if args.window is not None:
        return embed_long_audio(
            model, extractor, waveform, rate, args.window, args.hop, pooling=args.pooling, name=name
        ).windows
    return extract_embeddings(model, extractor, waveform, sampling_rate=rate, pooling=args.pooling, clip_names=[name])[0]


def save_embedding(target: Path, embedding) -> None:
    """One file's embedding as `.npy`, or `.npz` with its `frames`, `times` and `cls` (time pooling)."""
    import numpy as np

    if isinstance(embedding, dict):
        np.savez(target, **embedding)
    else:
        np.save(target, embedding)


def describe(embedding) -> str:
    if isinstance(embedding, dict):
        return ", ".join(f"{key} {tuple(value.shape)}" for key, value in embedding.items())
    return str(tuple(embedding.shape))


def write_single_output(target: Path, embeddings: dict) -> None:
    """All embeddings in one file: a .safetensors file keyed by file name (`<name>.frames`, `.times`, `.cls` for time
    pooling), or one .npy array (stacked when several)."""
    import numpy as np
    from safetensors.numpy import save_file

    arrays = {}
    for path, embedding in embeddings.items():
        parts = embedding if isinstance(embedding, dict) else {"": embedding}
        for key, array in parts.items():
            arrays[f"{Path(path).stem}.{key}" if key else Path(path).stem] = np.ascontiguousarray(array)
    if target.suffix == ".safetensors":
        save_file(arrays, str(target))
    else:
        shapes = {array.shape for array in arrays.values()}
        if len(shapes) > 1:
            sys.exit(f"error: the embeddings have different shapes {sorted(shapes)}; use a .safetensors --output.")
        np.save(target, next(iter(arrays.values())) if len(arrays) == 1 else np.stack(list(arrays.values())))
    print(f"wrote {target} ({', '.join(arrays)})")


def run_classify(args, parser: argparse.ArgumentParser) -> None:
    """`sslam classify`: checks everything first, then scores file by file (long files in windows)."""
    import json

    from sslam.modeling_sslam.audio_io import load_audio

    paths = check_inputs(args.audio, parser)
    check_window_arguments(args, parser)
    check_model_folder(args.model, parser)
    check_device(args.device, parser)
    config = load_config(args.model)
    if not holds_classifier(config):
        parser.error(
            f"--model {args.model} holds no classifier (architectures {config.architectures}); `sslam classify` "
            "needs a fine-tuned SSLAMForAudioClassification folder (use `sslam embed` for an encoder)."
        )
    extractor = load_extractor(args.model)
    check_window_against(extractor, config, args, parser)
    model = load_model(args.model, args.device, classification=True, config=config)

    failed = 0
    for path in paths:
        try:
            waveform = load_audio(path, target_sampling_rate=extractor.sampling_rate)
            scores, windows = classify_waveform(model, extractor, waveform, args.window, args.hop, args.device, path)
        except FILE_ERRORS as error:
            report_failure(path, error)
            failed += 1
            continue
        if len(windows.starts) > 1:
            note = windowing_note(model, len(waveform) / extractor.sampling_rate, windows)
            print(f"note: {path}: {note}", file=sys.stderr)
        top = scores.topk(min(args.top_k, scores.numel()))
        labels = [(model.config.id2label[int(index)], float(score)) for score, index in zip(top.values, top.indices)]
        if args.json:
            records = [{"label": label, "score": score} for label, score in labels]
            print(json.dumps({"file": path, "labels": records, "windows": len(windows.starts)}))
        else:
            print(path)
            for label, score in labels:
                print(f"  {score:.4f}  {label}")
    exit_if_any_failed(failed, len(paths), "labels were printed")


def clip_seconds(extractor, config) -> float:
    """Length of the clip the model is run on: `max_length` frames (the extractor's, else the config's)."""
    frames = extractor.max_length or config.max_length
    return (extractor.frame_length + extractor.frame_shift * (frames - 1)) / extractor.sampling_rate


def is_multi_label(model) -> bool:
    return model.config.problem_type == "multi_label_classification"


def classify_waveform(model, extractor, waveform, window_seconds, hop_seconds, device, name=None):
    """Class scores `(num_labels,)` of a 16 kHz waveform and its windows. Audio no longer than the model's clip is
    one window (the clip, padded as in training); longer audio is scored per window and each label takes its
    maximum over the windows (multi-label: present anywhere) or its mean (single-label probabilities). `name` (the
    file) is named in errors and warnings."""
    import torch

    from sslam.modeling_sslam.embedding import max_model_frames, split_into_windows

    window_seconds = clip_seconds(extractor, model.config) if window_seconds is None else window_seconds
    rate = extractor.sampling_rate
    windows = split_into_windows(extractor, waveform, rate, window_seconds, hop_seconds, name, max_model_frames(model))
    scores = []
    for start in range(0, len(windows.chunks), WINDOW_BATCH_SIZE):
        batch = slice(start, start + WINDOW_BATCH_SIZE)
        features = extractor(
            windows.chunks[batch], sampling_rate=rate, return_tensors="pt", clip_names=windows.names[batch],
            **windows.feature_kwargs(),
        )  # fmt: skip
        with torch.no_grad():
            logits = model(**{key: value.to(device) for key, value in features.items()}).logits
        scores.append(torch.sigmoid(logits) if is_multi_label(model) else torch.softmax(logits, dim=-1))
    scores = torch.cat(scores).cpu()
    return (scores.amax(dim=0) if is_multi_label(model) else scores.mean(dim=0)), windows


def windowing_note(model, seconds: float, windows) -> str:
    """How a file longer than one clip was scored."""
    aggregate = "maximum" if is_multi_label(model) else "mean"
    return (
        f"{seconds:.1f} s of audio, longer than one clip: scored in {len(windows.starts)} windows of "
        f"{windows.window_seconds:.2f} s every {windows.hop_seconds:.2f} s; each label's score is its {aggregate} "
        "over the windows."
    )


__all__ = ["add_classify_parser", "add_embed_parser", "classify_waveform", "run_classify", "run_embed"]
