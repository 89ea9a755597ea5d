"""`sslam detect`: sound event detection with a saved `SSLAMForAudioFrameClassification`, written as a DCASE TSV.

Each file is decoded to 16 kHz mono, encoded in overlapping windows of the model's clip length (any length works;
a progress bar shows on files longer than a minute), turned into frame probabilities and decoded into events with
the model's per-class thresholds and median filter (`config.detection_thresholds`, `config.detection_median_filter`)
or the ones given here (`sslam.evaluation.detection.decode_events`). The TSV has the DCASE columns `filename onset
offset event_label` (seconds) plus `score` (the event's highest frame probability); a file without events gets an
empty row.
"""

from __future__ import annotations

import sys
from pathlib import Path

LONG_FILE_SECONDS = 60.0

EPILOG = """examples:
  sslam detect soundscape.flac --model outputs/demo/detection/sslam              # -> events.tsv
  sslam detect a.wav b.ogg --model DIR --threshold 0.3 --output runs/events.tsv
  sslam detect hour_long.mp3 --model DIR --median_filter 5 --device cuda"""


def add_detect_parser(commands) -> None:
    """Registers `sslam detect` on the `sslam` sub-command parsers."""
    import argparse

    parser = commands.add_parser(
        "detect", help="sound event detection: onsets, offsets and labels as a DCASE TSV", description=__doc__,
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("audio", nargs="+", help="audio files (wav/flac/ogg/mp3; any rate and length)")
    parser.add_argument("--model", required=True, help="a saved SSLAMForAudioFrameClassification folder")
    parser.add_argument("--threshold", type=float, help="one threshold for every class, in (0, 1) "
                        "(default: the model's per-class detection_thresholds)")
    parser.add_argument("--median_filter", "--median-filter", type=int,
                        help="median filter length in 160 ms rows, odd (default: the model's)")
    parser.add_argument("--output", default="events.tsv", help="the TSV to write (default: %(default)s)")
    parser.add_argument("--hop_seconds", "--hop-seconds", type=float,
                        help="hop between windows of long audio (default: half the model's clip length)")
    parser.add_argument("--batch_size", "--batch-size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(run=run_detect, command_parser=parser)


def check_detect_arguments(parser, args) -> None:
    """Usage errors (exit code 2) before anything is loaded."""
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        parser.error(f"--threshold must lie in (0, 1), got {args.threshold}")
    if args.median_filter is not None and (args.median_filter < 1 or args.median_filter % 2 == 0):
        parser.error(f"--median_filter must be a positive odd number of rows, got {args.median_filter}")
    if args.hop_seconds is not None and args.hop_seconds <= 0:
        parser.error(f"--hop_seconds must be positive, got {args.hop_seconds}")
    if args.batch_size < 1:
        parser.error(f"--batch_size must be positive, got {args.batch_size}")
    names = [Path(path).name for path in args.audio]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        parser.error(f"the TSV names files by their file name, and several inputs are named {', '.join(repeated)}")


def run_detect(args, parser) -> None:
    """`sslam detect`: checks everything first (usage errors exit 2), then decodes file by file; a file that cannot be
    read is reported and left out of the TSV, and the command then exits 1."""
    from sslam.cli.inference import (
        FILE_ERRORS,
        check_device,
        check_inputs,
        check_model_folder,
        exit_if_any_failed,
        load_config,
        load_extractor,
        report_failure,
    )
    from sslam.conversion.export import output_folder_problem
    from sslam.evaluation.detection import decode_events, frame_probabilities
    from sslam.evaluation.strong_labels import write_dcase_tsv
    from sslam.modeling_sslam.audio_io import load_audio
    from sslam.modeling_sslam.embedding import row_hop_seconds

    check_detect_arguments(parser, args)
    paths = check_inputs(args.audio, parser)
    problem = output_folder_problem(Path(args.output).parent)
    if problem is not None:
        parser.error(f"--output {args.output}: {problem}.")
    check_model_folder(args.model, parser)
    check_device(args.device, parser)
    config = load_config(args.model)
    if not any(name.endswith("ForAudioFrameClassification") for name in config.architectures or []):
        parser.error(
            f"--model {args.model} holds no frame classifier (architectures {config.architectures}); `sslam detect` "
            "needs an SSLAMForAudioFrameClassification folder, e.g. outputs/demo/detection/sslam from `sslam demo`."
        )
    extractor = load_extractor(args.model)
    model = load_frame_classifier(args.model, args.device)
    labels = [model.config.id2label[index] for index in range(model.config.num_labels)]
    thresholds = model.config.detection_thresholds if args.threshold is None else args.threshold
    median_filter = model.config.detection_median_filter if args.median_filter is None else args.median_filter
    rate = extractor.sampling_rate
    events, failed = {}, 0
    for path in paths:
        try:
            waveform = load_audio(path, target_sampling_rate=rate)
            probabilities = frame_probabilities(
                model, extractor, waveform, sampling_rate=rate, hop_seconds=args.hop_seconds,
                batch_size=args.batch_size, progress=len(waveform) > LONG_FILE_SECONDS * rate,
            )[0]  # fmt: skip
        except FILE_ERRORS as error:
            report_failure(path, error)
            failed += 1
            continue
        found = decode_events(
            probabilities, row_hop_seconds(extractor), labels, thresholds, median_filter, len(waveform) / rate
        )
        events[Path(path).name] = found
        print(f"{path}: {len(found)} event(s)", file=sys.stderr)
    if events:
        print(f"wrote {write_dcase_tsv(args.output, events, with_scores=True)}")
    exit_if_any_failed(failed, len(paths), "events were written")


def load_frame_classifier(folder: str, device: str):
    """The frame classifier of a checked model folder, on `device` in eval mode; a one-line exit naming why it
    cannot be loaded."""
    from transformers import AutoModelForAudioFrameClassification

    from sslam.cli.inference import _last_line

    try:
        return AutoModelForAudioFrameClassification.from_pretrained(folder).to(device).eval()
    except Exception as error:  # no or corrupt weights, invalid config values
        sys.exit(f"error: cannot load a model from {folder}: {_last_line(error)}")
