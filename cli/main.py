"""The `sslam` command line: embed, classify, detect, pretrain, evaluate, convert, demo.

Run `sslam COMMAND --help` for the options and examples of each command.
"""

import argparse
import sys
from pathlib import Path

from sslam.cli.detect import add_detect_parser, check_detect_arguments, run_detect

EPILOGS = {
    "sslam": """examples:
  sslam classify clip.wav --model converted/sslam-as2m --top-k 5
  sslam embed clip.wav --model converted/sslam-base --pooling mean
  sslam detect soundscape.flac --model outputs/demo/detection/sslam --output events.tsv
  sslam convert --checkpoint_path SSLAM_AS2M_finetuned.pt --pytorch_dump_folder_path converted/sslam-as2m
  sslam demo --quick""",
    "embed": """examples:
  sslam embed clip.wav --model converted/sslam-base                     # CLS embedding -> clip.cls.npy
  sslam embed a.flac b.mp3 --model DIR --pooling mean --output emb.safetensors
  sslam embed long.ogg --model DIR --pooling frames --output-dir feats/  # (N, D) patch tokens per file
  sslam embed long.ogg --model DIR --pooling time                       # 160 ms rows + times -> long.time.npz
  sslam embed long.wav --model DIR --window 10 --hop 5                  # windowed, for audio of any length""",
    "classify": """examples:
  sslam classify clip.wav --model converted/sslam-as2m --top-k 5
  sslam classify *.flac --model DIR --json""",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sslam", description=__doc__, epilog=EPILOGS["sslam"], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    embed = commands.add_parser(
        "embed", help="write embeddings of audio files", epilog=EPILOGS["embed"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    embed.add_argument("audio", nargs="+", help="audio files (wav/flac/ogg/mp3; any rate; channels are averaged)")
    embed.add_argument("--model", required=True, help="a saved SSLAM model folder")
    embed.add_argument("--pooling", choices=["cls", "mean", "frames", "time"], default="cls",
                       help="time: one feature per 160 ms time row with its centre time, any length (.npz per file)")
    embed.add_argument("--frequency_pooling", "--frequency-pooling", choices=["concat", "mean"], default="concat",
                       help="with --pooling time: concatenate (8 x D) or average (D) each row's frequency patches")
    embed.add_argument("--output", help="one .npy or .safetensors file for all clips (cls/mean pooling; "
                       ".safetensors for time pooling)")
    embed.add_argument(
        "--output_dir", "--output-dir", help="folder for one <name>.<pooling>.npy file per clip (default: beside it)"
    )
    embed.add_argument("--window", type=float, help="embed in windows of this many seconds (long audio; with "
                       "--pooling time: the window length, default the model's clip length)")
    embed.add_argument("--hop", type=float, help="window hop in seconds (default 5 with --window; half a window "
                       "with --pooling time)")
    embed.add_argument("--device", default="cpu")

    classify = commands.add_parser(
        "classify", help="top-k labels of audio files", epilog=EPILOGS["classify"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    classify.add_argument("audio", nargs="+")
    classify.add_argument("--model", required=True, help="a saved SSLAMForAudioClassification folder")
    classify.add_argument("--top_k", "--top-k", type=_positive_int, default=5)
    classify.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    classify.add_argument("--device", default="cpu")

    for name, help_text in [
        ("pretrain", "Stage 1 / Stage 2 pre-training (same options as python -m sslam.training.pretrain)"),
        ("evaluate", "linear-probe or fine-tune evaluation (same options as python -m sslam.evaluation.run)"),
        ("convert", "convert an original fairseq checkpoint (python -m sslam.conversion.convert_fairseq_checkpoint)"),
        ("convert-hub", "migrate a Hub remote-code EAT/SSLAM folder (python -m sslam.conversion.convert_hub_checkpoint)"),
        ("demo", "the main job: mini-SSLAM on the bundled real audio, end to end"),
    ]:
        sub = commands.add_parser(name, help=help_text, add_help=False)
        sub.add_argument("args", nargs=argparse.REMAINDER)
    add_detect_parser(commands)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def read_audio(path: str, sampling_rate: int):
    """`load_audio`, with a clean exit (message naming the file) for a missing or undecodable file."""
    from sslam.modeling_sslam.audio_io import load_audio

    try:
        return load_audio(path, target_sampling_rate=sampling_rate)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")


def check_inputs(paths: list[str]) -> None:
    """Exits with a message naming every input file that does not exist."""
    missing = [path for path in paths if not Path(path).is_file()]
    if missing:
        sys.exit(f"error: audio file(s) not found: {', '.join(missing)}")


def run_embed(args) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    from sslam.modeling_sslam.embedding import embed_long_audio, embed_time_frames, extract_embeddings

    if args.output:
        stems = [Path(path).stem for path in args.audio]
        repeated = sorted({stem for stem in stems if stems.count(stem) > 1})
        if repeated:
            sys.exit(f"error: --output keys files by name, and several inputs are named {', '.join(repeated)}.")
    model, extractor = load_model_and_extractor(args.model, args.device, classification=False)
    embeddings = {}
    for path in args.audio:
        waveform = read_audio(path, extractor.sampling_rate)
        if args.pooling == "time":
            result = embed_time_frames(
                model, extractor, waveform, extractor.sampling_rate, frequency_pooling=args.frequency_pooling,
                window_seconds=args.window, hop_seconds=args.hop,
            )[0]
            embeddings[path] = {"frames": result.frames, "times": result.times, "cls": result.cls}
        elif args.window:
            result = embed_long_audio(
                model, extractor, waveform, extractor.sampling_rate, args.window, args.hop or 5.0, pooling=args.pooling
            )
            embeddings[path] = result.windows
        else:
            embeddings[path] = extract_embeddings(
                model, extractor, waveform, sampling_rate=extractor.sampling_rate, pooling=args.pooling
            )[0]
    if args.output and args.pooling == "time":
        arrays = {
            f"{Path(path).stem}.{key}": np.ascontiguousarray(array)
            for path, parts in embeddings.items() for key, array in parts.items()
        }
        save_file(arrays, args.output)
        print(f"wrote {args.output}")
        return
    if args.output:
        arrays = {Path(path).stem: np.ascontiguousarray(array) for path, array in embeddings.items()}
        if args.output.endswith(".safetensors"):
            save_file(arrays, args.output)
            target = args.output
        else:
            target = args.output if args.output.endswith(".npy") else f"{args.output}.npy"  # np.save adds .npy
            shapes = {array.shape for array in arrays.values()}
            if len(shapes) > 1:
                sys.exit(f"error: the embeddings have different shapes {sorted(shapes)}; use a .safetensors --output.")
            np.save(target, next(iter(arrays.values())) if len(arrays) == 1 else np.stack(list(arrays.values())))
        print(f"wrote {target}")
        return
    for path, array in embeddings.items():
        folder = Path(args.output_dir) if args.output_dir else Path(path).parent
        folder.mkdir(parents=True, exist_ok=True)
        if args.pooling == "time":
            target = folder / f"{Path(path).stem}.time.npz"
            np.savez(target, **array)
            print(f"{path}: frames {tuple(array['frames'].shape)}, times {tuple(array['times'].shape)} -> {target}")
            continue
        target = folder / f"{Path(path).stem}.{args.pooling}.npy"
        np.save(target, array)
        print(f"{path}: {tuple(array.shape)} -> {target}")


def run_classify(args) -> None:
    import json

    import torch

    model, extractor = load_model_and_extractor(args.model, args.device, classification=True)
    multi_label = model.config.problem_type == "multi_label_classification"
    for path in args.audio:
        waveform = read_audio(path, extractor.sampling_rate)
        features = extractor(waveform, sampling_rate=extractor.sampling_rate, return_tensors="pt")
        with torch.no_grad():
            logits = model(**{key: value.to(args.device) for key, value in features.items()}).logits[0]
        scores = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)
        top = torch.topk(scores, k=min(args.top_k, scores.numel()))
        labels = [(model.config.id2label[int(index)], float(score)) for score, index in zip(top.values, top.indices)]
        if args.json:
            print(json.dumps({"file": path, "labels": [{"label": l, "score": s} for l, s in labels]}))
        else:
            print(path)
            for label, score in labels:
                print(f"  {score:.4f}  {label}")


def load_model_and_extractor(folder: str, device: str, classification: bool):
    import sslam.modeling_sslam  # noqa: F401  (registers the Auto classes)
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification

    try:
        if classification:
            architectures = AutoConfig.from_pretrained(folder).architectures or []
            if not any(name.endswith("ForAudioClassification") for name in architectures):
                sys.exit(
                    f"error: {folder} holds no classifier (architectures {architectures}); `sslam classify` needs a "
                    "fine-tuned SSLAMForAudioClassification folder (use `sslam embed` for an encoder)."
                )
        auto_class = AutoModelForAudioClassification if classification else AutoModel
        model = auto_class.from_pretrained(folder).to(device).eval()
        extractor = AutoFeatureExtractor.from_pretrained(folder)
    except OSError as error:  # no such folder / no config.json / weights missing
        sys.exit(f"error: cannot load a model from {folder}: {error}")
    if not classification and hasattr(model, "sslam"):
        model = model.sslam
    return model, extractor


def delegate(command: str, argv: list[str]) -> None:
    """Runs the module behind a command with the remaining arguments."""
    if command == "pretrain":
        from sslam.training.pretrain import main
    elif command == "evaluate":
        from sslam.evaluation.run import main
    elif command == "convert":
        from sslam.conversion.convert_fairseq_checkpoint import main
    elif command == "convert-hub":
        from sslam.conversion.convert_hub_checkpoint import main
    else:
        from sslam.cli.demo import main
    main(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if argv and argv[0] in {"pretrain", "evaluate", "convert", "convert-hub", "demo"}:
        delegate(argv[0], argv[1:])
        return
    args = parser.parse_args(argv)
    check_inputs(args.audio)  # before the slow imports and the model
    if args.command == "embed":
        if args.window and args.pooling == "frames":
            parser.error("--window pools each window to one vector: use --pooling cls or mean with it.")
        if (args.window is not None and args.window <= 0) or (args.hop is not None and args.hop <= 0):
            parser.error("--window and --hop must be positive.")
        if args.hop is not None and args.window is None and args.pooling != "time":
            parser.error("--hop needs --window (or --pooling time).")
        if args.pooling == "time" and args.output and not args.output.endswith(".safetensors"):
            parser.error("--pooling time writes frames, times and cls per clip: use a .safetensors --output.")
        run_embed(args)
    elif args.command == "detect":
        check_detect_arguments(parser, args)
        run_detect(args)
    else:
        run_classify(args)


if __name__ == "__main__":
    main()
