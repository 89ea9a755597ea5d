"""The `sslam` command line: embed, classify, pretrain, evaluate, convert, demo.

Run `sslam COMMAND --help` for the options and examples of each command.
"""

import argparse
import sys
from pathlib import Path

EPILOGS = {
    "embed": """examples:
  sslam embed clip.wav --model converted/sslam-base                     # CLS embedding -> clip.cls.npy
  sslam embed a.flac b.mp3 --model DIR --pooling mean --output emb.safetensors
  sslam embed long.ogg --model DIR --pooling frames --output-dir feats/  # (N, D) patch tokens per file
  sslam embed long.wav --model DIR --window 10 --hop 5                  # windowed, for audio of any length""",
    "classify": """examples:
  sslam classify clip.wav --model converted/sslam-as2m --top-k 5
  sslam classify *.flac --model DIR --json""",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sslam", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    embed = commands.add_parser(
        "embed", help="write embeddings of audio files", epilog=EPILOGS["embed"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    embed.add_argument("audio", nargs="+", help="audio files (wav/flac/ogg/mp3; any rate; channels are averaged)")
    embed.add_argument("--model", required=True, help="a saved SSLAM model folder")
    embed.add_argument("--pooling", choices=["cls", "mean", "frames"], default="cls")
    embed.add_argument("--output", help="one .npy or .safetensors file for all clips (cls/mean pooling)")
    embed.add_argument("--output-dir", help="folder for one <name>.<pooling>.npy file per clip (default: beside it)")
    embed.add_argument("--window", type=float, help="embed in windows of this many seconds (long audio)")
    embed.add_argument("--hop", type=float, default=5.0, help="window hop in seconds (with --window)")
    embed.add_argument("--device", default="cpu")

    classify = commands.add_parser(
        "classify", help="top-k labels of audio files", epilog=EPILOGS["classify"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    classify.add_argument("audio", nargs="+")
    classify.add_argument("--model", required=True, help="a saved SSLAMForAudioClassification folder")
    classify.add_argument("--top-k", type=int, default=5)
    classify.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    classify.add_argument("--device", default="cpu")

    for name, help_text in [
        ("pretrain", "Stage 1 / Stage 2 pre-training (same options as python -m training.pretrain)"),
        ("evaluate", "linear-probe or fine-tune evaluation (same options as python -m evaluation.run)"),
        ("convert", "convert an original fairseq checkpoint (python -m conversion.convert_fairseq_checkpoint)"),
        ("convert-hub", "migrate a Hub remote-code EAT/SSLAM folder (python -m conversion.convert_hub_checkpoint)"),
        ("demo", "the main job: mini-SSLAM on the bundled real audio, end to end"),
    ]:
        sub = commands.add_parser(name, help=help_text, add_help=False)
        sub.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def run_embed(args) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    from modeling_sslam.audio_io import load_audio
    from modeling_sslam.embedding import embed_long_audio, extract_embeddings

    model, extractor = load_model_and_extractor(args.model, args.device, classification=False)
    embeddings = {}
    for path in args.audio:
        waveform = load_audio(path, target_sampling_rate=extractor.sampling_rate)
        if args.window:
            result = embed_long_audio(
                model, extractor, waveform, extractor.sampling_rate, args.window, args.hop, pooling=args.pooling
            )
            embeddings[path] = result.windows
        else:
            embeddings[path] = extract_embeddings(
                model, extractor, waveform, sampling_rate=extractor.sampling_rate, pooling=args.pooling
            )[0]
    if args.output:
        arrays = {Path(path).stem: np.ascontiguousarray(array) for path, array in embeddings.items()}
        if args.output.endswith(".safetensors"):
            save_file(arrays, args.output)
        elif len(arrays) == 1:
            np.save(args.output, next(iter(arrays.values())))
        else:
            np.save(args.output, np.stack(list(arrays.values())))
        print(f"wrote {args.output}")
        return
    for path, array in embeddings.items():
        folder = Path(args.output_dir) if args.output_dir else Path(path).parent
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{Path(path).stem}.{args.pooling}.npy"
        np.save(target, array)
        print(f"{path}: {tuple(array.shape)} -> {target}")


def run_classify(args) -> None:
    import json

    import torch

    from modeling_sslam.audio_io import load_audio

    model, extractor = load_model_and_extractor(args.model, args.device, classification=True)
    multi_label = model.config.problem_type == "multi_label_classification"
    for path in args.audio:
        waveform = load_audio(path, target_sampling_rate=extractor.sampling_rate)
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
    import modeling_sslam  # noqa: F401  (registers the Auto classes)
    from transformers import AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification

    auto_class = AutoModelForAudioClassification if classification else AutoModel
    model = auto_class.from_pretrained(folder).to(device).eval()
    if not classification and hasattr(model, "sslam"):
        model = model.sslam
    return model, AutoFeatureExtractor.from_pretrained(folder)


def delegate(command: str, argv: list[str]) -> None:
    """Runs the module behind a command with the remaining arguments."""
    if command == "pretrain":
        from training.pretrain import main
    elif command == "evaluate":
        from evaluation.run import main
    elif command == "convert":
        from conversion.convert_fairseq_checkpoint import main
    elif command == "convert-hub":
        from conversion.convert_hub_checkpoint import main
    else:
        from cli.demo import main
    main(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if argv and argv[0] in {"pretrain", "evaluate", "convert", "convert-hub", "demo"}:
        delegate(argv[0], argv[1:])
        return
    args = parser.parse_args(argv)
    if args.command == "embed":
        run_embed(args)
    else:
        run_classify(args)


if __name__ == "__main__":
    main()
