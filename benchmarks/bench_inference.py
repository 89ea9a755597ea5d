"""Inference speed of the SSLAM base encoder and of the feature extractor on CPU.

Prints a Markdown table. Model: base config (random weights), a batch of 8 clips of 10 s (1024 x 128 frames),
torch threads = 2 (default): fp32 eager, fp32 SDPA, bf16 autocast (SDPA). Feature extractor: one 10 s clip, and a
batch of 32 clips per call (reported per clip).

Reference on this machine kind (the original fairseq code): 4.23 s median for the fp32 batch of 8 (0.53 s per clip)
and 2.9 ms per clip for its torchaudio fbank.

    python -m sslam.benchmarks.bench_inference [--repeats 5] [--threads 2]
"""

import argparse
import statistics
import time

import numpy as np
import torch

from sslam.modeling_sslam import SSLAMConfig, SSLAMFeatureExtractor, SSLAMModel

ORIGINAL_FP32_BATCH_SECONDS = 4.23
ORIGINAL_FBANK_MS_PER_CLIP = 2.9


def median_seconds(function, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        function()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def time_model(attn_implementation: str, autocast: bool, batch: torch.Tensor, repeats: int) -> float:
    torch.manual_seed(0)
    config = SSLAMConfig()
    config._attn_implementation = attn_implementation
    model = SSLAMModel(config).eval()

    @torch.no_grad()
    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model(batch)

    return median_seconds(run, repeats)


def time_feature_extractor(repeats: int) -> tuple[float, float]:
    extractor = SSLAMFeatureExtractor()
    rng = np.random.default_rng(0)
    clips = [rng.normal(0, 0.1, 160_000).astype(np.float32) for _ in range(32)]
    single = median_seconds(lambda: extractor(clips[0], sampling_rate=16_000), repeats * 4)
    batched = median_seconds(lambda: extractor(clips, sampling_rate=16_000), repeats)
    return single, batched / len(clips)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    batch = torch.randn(args.batch_size, 1, 1024, 128)
    rows = []
    for label, attn, autocast in [
        ("fp32 eager", "eager", False),
        ("fp32 sdpa", "sdpa", False),
        ("bf16 autocast (sdpa)", "sdpa", True),
    ]:
        seconds = time_model(attn, autocast, batch, args.repeats)
        rows.append((label, seconds, seconds / args.batch_size, ORIGINAL_FP32_BATCH_SECONDS / seconds))

    print(f"## SSLAM base encoder, batch {args.batch_size} x 10 s, {args.threads} threads, median of {args.repeats}\n")
    print("| case | batch (s) | per clip (s) | speed-up vs original fp32 (4.23 s) |")
    print("|---|---|---|---|")
    for label, seconds, per_clip, speedup in rows:
        print(f"| {label} | {seconds:.3f} | {per_clip:.3f} | {speedup:.2f}x |")

    single, per_clip_batched = time_feature_extractor(args.repeats)
    print("\n## Feature extraction (10 s clip at 16 kHz)\n")
    print("| case | ms per clip | vs original (2.9 ms) |")
    print("|---|---|---|")
    print(f"| one clip per call | {single * 1e3:.2f} | {ORIGINAL_FBANK_MS_PER_CLIP / (single * 1e3):.2f}x |")
    print(
        f"| batch of 32 per call | {per_clip_batched * 1e3:.2f} | "
        f"{ORIGINAL_FBANK_MS_PER_CLIP / (per_clip_batched * 1e3):.2f}x |"
    )


if __name__ == "__main__":
    main()
