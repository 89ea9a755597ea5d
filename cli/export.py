"""`sslam export`: a saved SSLAM folder as a deployment artefact.

Formats:
  onnx          OUT/model.onnx: one graph from the 16 kHz float32 waveform (batch, samples) to the main output
                (logits for a classifier; last_hidden_state, then pooler_output, for an encoder), the filter bank
                included; checked against eager fp32 in onnxruntime (<= 1e-4) before it is written
  onnx-int8     the same graph with int8 dynamic quantisation of the encoder's weight products (onnxruntime)
  torch-export  OUT/model.pt2: torch.export program on features, inputs input_values (B, T, 128) and a frame-level
                attention_mask (B, T), T any multiple of 16 frames up to the position table
Beside the model: config.json, preprocessor_config.json and, for classifiers, labels.json (names in output order).
"""

import argparse
import json
import sys

EXAMPLES = """examples:
  sslam export --model converted/sslam-as2m --format onnx --output deploy/onnx
  sslam export --model converted/sslam-as2m --format onnx-int8 --output deploy/onnx-int8
  sslam export --model converted/sslam-base --format torch-export --output deploy/pt2"""


def build_parser() -> argparse.ArgumentParser:
    from sslam.conversion.deployment import EXPORT_FORMATS, SUPPORTED_OPSETS

    parser = argparse.ArgumentParser(
        prog="sslam export", description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="a saved SSLAM folder (classifier or encoder)")
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    parser.add_argument("--output", required=True, help="folder to write the model, its config and labels into")
    opsets = f"{{{SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}}}"
    parser.add_argument(
        "--opset", type=int, choices=SUPPORTED_OPSETS, metavar=opsets, help="ONNX opset (default: the exporter's, 20)"
    )
    parser.add_argument(
        "--no_verify", "--no-verify", action="store_true", help="skip the onnxruntime vs eager check (ONNX formats)"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.opset is not None and args.format == "torch-export":
        parser.error("--opset applies to the ONNX formats only, not to torch-export.")
    from sslam.conversion.deployment import ExportError, export_model

    try:
        summary = export_model(args.model, args.output, args.format, opset=args.opset, verify=not args.no_verify)
    except (ExportError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
