"""The `sslam` command line: embed, classify, detect, shard, pretrain, evaluate, convert, export, demo.

Run `sslam COMMAND --help` for the options and examples of each command.
"""

import argparse
import sys

from sslam.cli.detect import add_detect_parser
from sslam.cli.inference import add_classify_parser, add_embed_parser

EPILOG = """examples:
  sslam classify clip.wav --model converted/sslam-as2m --top-k 5
  sslam embed clip.wav --model converted/sslam-base --pooling mean
  sslam detect soundscape.flac --model outputs/demo/detection/sslam --output events.tsv
  sslam convert --checkpoint_path SSLAM_AS2M_finetuned.pt --pytorch_dump_folder_path converted/sslam-as2m
  sslam export --model converted/sslam-as2m --format onnx --output deploy/onnx
  sslam demo --quick"""
DELEGATED = {
    "shard": "write a pre-training corpus as tar shards for streaming (python -m sslam.cli.shard)",
    "pretrain": "Stage 1 / Stage 2 pre-training (same options as python -m sslam.training.pretrain)",
    "evaluate": "linear-probe or fine-tune evaluation (same options as python -m sslam.evaluation.run)",
    "convert": "convert an original fairseq checkpoint (python -m sslam.conversion.convert_fairseq_checkpoint)",
    "convert-hub": "migrate a Hub remote-code EAT/SSLAM folder (python -m sslam.conversion.convert_hub_checkpoint)",
    "export": "export a saved model to ONNX (waveform in), int8 ONNX or torch.export (python -m sslam.cli.export)",
    "demo": "the main job: mini-SSLAM on the bundled real audio, end to end",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sslam", description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_embed_parser(commands)
    add_classify_parser(commands)
    add_detect_parser(commands)
    for name, help_text in DELEGATED.items():
        sub = commands.add_parser(name, help=help_text, add_help=False)
        sub.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def delegate(command: str, argv: list[str]) -> None:
    """Runs the module behind a command with the remaining arguments."""
    if command == "shard":
        from sslam.cli.shard import main
    elif command == "pretrain":
        from sslam.training.pretrain import main
    elif command == "evaluate":
        from sslam.evaluation.run import main
    elif command == "convert":
        from sslam.conversion.convert_fairseq_checkpoint import main
    elif command == "convert-hub":
        from sslam.conversion.convert_hub_checkpoint import main
    elif command == "export":
        from sslam.cli.export import main
    else:
        from sslam.cli.demo import main
    main(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in DELEGATED:
        delegate(argv[0], argv[1:])
        return
    args = build_parser().parse_args(argv)
    args.run(args, args.command_parser)


if __name__ == "__main__":
    main()
