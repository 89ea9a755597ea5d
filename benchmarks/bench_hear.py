"""Time and peak memory of the HEAR API (`sslam.modeling_sslam.hear.get_timestamp_embeddings`) on long audio.

Model: the base size (768 wide, 12 blocks; random weights, what `hear.load_model()` gives without a model), the
default extractor (windows of 1024 frames = 10.24 s, hop half a window), timestamp embeddings concatenated over
frequency (6144 values per 160 ms). Each duration runs in its own process, so the peak resident memory (`ru_maxrss`,
including Python, torch and the model) is that run's alone; the time covers the call only (not model creation).

    python -m sslam.benchmarks.bench_hear [--durations 10 60 600] [--threads 2] [--batch_size 8]
"""

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(seconds: float, threads: int, batch_size: int) -> dict:
    """Runs in the child process: one call on `seconds` of noise; prints a JSON line."""
    import torch

    from sslam.modeling_sslam import hear

    torch.set_num_threads(threads)
    model = hear.load_model(batch_size=batch_size)
    audio = torch.rand(1, int(seconds * model.sample_rate), generator=torch.Generator().manual_seed(0)) * 0.2 - 0.1
    start = time.perf_counter()
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    elapsed = time.perf_counter() - start
    steps = torch.diff(timestamps[0])
    return {
        "seconds": seconds,
        "wall_s": elapsed,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "shape": list(embeddings.shape),
        "evenly_spaced": bool(torch.all((steps - steps.mean()).abs() < 1e-3)),
        "last_timestamp_ms": float(timestamps[0, -1]),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--durations", type=float, nargs="+", default=[10.0, 60.0, 600.0], help="seconds of audio")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_size", "--batch-size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.threads, args.batch_size)))
        return
    print(f"HEAR get_timestamp_embeddings, base-size model, {args.threads} threads, {args.batch_size} windows per "
          "forward pass\n")
    print("| audio | time (s) | x real time | peak memory (GB) | embeddings | evenly spaced |")
    print("|---|---|---|---|---|---|")
    for seconds in args.durations:
        command = [sys.executable, "-m", "sslam.benchmarks.bench_hear", "--child", str(seconds),
                   "--threads", str(args.threads), "--batch_size", str(args.batch_size)]
        completed = subprocess.run(command, capture_output=True, text=True, check=True)
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        label = f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
        print(f"| {label} | {result['wall_s']:.1f} | {seconds / result['wall_s']:.1f} | {result['peak_rss_gb']:.2f} "
              f"| {tuple(result['shape'])} | {result['evenly_spaced']} |")


if __name__ == "__main__":
    main()
