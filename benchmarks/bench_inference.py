"""Inference speed and precision of the SSLAM base encoder and of the feature extractor on CPU, beside the original's.

Prints the speed table of the inference issue: our figures measured here, the original fairseq code's figures as
measured on the reference machine (2 cores of a CPU with AMX; constants below, not re-measured: the original is not
runnable here), and the ratio original / ours. The CPU running the benchmark is named in the table's heading; on
another CPU compare with care (bf16 GEMMs in particular run several times faster with AMX).

* Model: base config (random weights, seed 0), a batch of 8 clips of 10 s (8 x 1024 x 128 frames), no gradients;
  fp32 eager, fp32 SDPA (what `from_pretrained` gives) and bf16 autocast with SDPA, alternating round-robin
  (`--repeats` rounds after a warm-up round) so load from other processes hits every case alike; median and min.
  bf16 drift: max (and mean) |bf16 autocast output - fp32 eager output| of `last_hidden_state`; the max is a noisy
  statistic that moves by about 0.003 with the input draw.
* Feature extractor: one 10 s clip per call (default call, and each backend), and a batch of 16 clips of 10 s per
  call (per clip); medians of round-robin rounds.
* Peak RSS: a fresh process builds the base encoder and runs one fp32 SDPA forward of the batch (its `VmHWM`).
* `--profile`: where the time goes (torch.profiler, self CPU time per operator) of one fp32 SDPA forward and one
  batched feature-extractor call.

    python -m sslam.benchmarks.bench_inference [--repeats 5] [--threads 2] [--profile]
"""

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sslam.modeling_sslam import SSLAMConfig, SSLAMFeatureExtractor, SSLAMModel

# The original fairseq code on the reference machine (2 cores, same random weights; the inference issue's table).
ORIGINAL = {
    "fp32": 4.39,  # s, base encoder, 8 x 10 s, fp32
    "bf16": 2.15,  # s, same under bf16 autocast
    "bf16_drift": 0.030,  # max abs, bf16 autocast output vs fp32
    "fbank_ms": 2.97,  # ms per 10 s clip, torchaudio kaldi.fbank recipe
    "rss_gb": 1.79,  # GB, peak RSS of the base encoder forward
}
REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_CASES = {"fp32 eager": ("eager", False), "fp32 sdpa": ("sdpa", False), "bf16 sdpa": ("sdpa", True)}


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), with its AMX / avx512_bf16 support."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    features = [flag for flag in ("amx_bf16", "avx512_bf16") if flag in flags]
    return f"{name} ({', '.join(features) or 'no bf16 instructions'}; {info.count('processor')} logical CPUs)"


def round_robin(functions: dict, repeats: int) -> dict[str, list[float]]:
    """Runs each function once (warm-up), then `repeats` rounds of all of them in turn: `{name: [seconds, ...]}`."""
    timings = {name: [] for name in functions}
    for round_index in range(repeats + 1):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            if round_index:
                timings[name].append(time.perf_counter() - start)
    return timings


def base_model(attn_implementation: str) -> SSLAMModel:
    torch.manual_seed(0)
    config = SSLAMConfig()
    config._attn_implementation = attn_implementation
    return SSLAMModel(config).eval()


def model_cases(batch: torch.Tensor) -> tuple[dict, dict]:
    """The timed closures of every model case, and their outputs (for the drift)."""
    models = {implementation: base_model(implementation) for implementation in ("eager", "sdpa")}
    outputs = {}

    def case(name, implementation, autocast):
        @torch.no_grad()
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                outputs[name] = models[implementation](batch).last_hidden_state

        return run

    return {name: case(name, *arguments) for name, arguments in MODEL_CASES.items()}, outputs


def fbank_cases() -> dict:
    rng = np.random.default_rng(0)
    clips = [rng.normal(0, 0.1, 160_000).astype(np.float32) for _ in range(16)]
    default = SSLAMFeatureExtractor()
    torch_backend = SSLAMFeatureExtractor(fbank_backend="torch")
    torchaudio_backend = SSLAMFeatureExtractor(fbank_backend="torchaudio")
    return {
        "default, one clip": lambda: default(clips[0], sampling_rate=16_000),
        "torch, one clip": lambda: torch_backend(clips[0], sampling_rate=16_000),
        "torch, batch of 16": lambda: torch_backend(clips, sampling_rate=16_000),
        "torchaudio, one clip": lambda: torchaudio_backend(clips[0], sampling_rate=16_000),
        "torchaudio, batch of 16": lambda: torchaudio_backend(clips, sampling_rate=16_000),
    }


def peak_rss_gb(threads: int, batch_size: int) -> float:
    """Peak resident memory of a fresh process that builds the base encoder and runs one fp32 SDPA forward."""
    command = [sys.executable, "-m", "sslam.benchmarks.bench_inference", "--child_rss", "--threads", str(threads),
               "--batch_size", str(batch_size)]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["rss_gb"]


def peak_resident_bytes() -> int:
    """This process's peak resident set (Linux `VmHWM`; unlike `ru_maxrss` it is not inherited from the parent
    that spawned the process)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_rss(batch_size: int) -> None:
    batch = torch.randn(batch_size, 1024, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base_model("sdpa")(batch)
    print(json.dumps({"rss_gb": peak_resident_bytes() / 1e9}))


def print_profile(batch: torch.Tensor) -> None:
    from torch.profiler import ProfilerActivity, profile

    model = base_model("sdpa")
    extractor = SSLAMFeatureExtractor()
    clips = [np.random.default_rng(index).normal(0, 0.1, 160_000).astype(np.float32) for index in range(16)]
    for title, function in (
        ("base encoder, fp32 SDPA forward", lambda: model(batch)),
        ("feature extractor, batch of 16 x 10 s", lambda: extractor(clips, sampling_rate=16_000)),
    ):
        with torch.no_grad():
            function()
            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                function()
        print(f"\n## Where the time goes: {title} (self CPU time per operator)\n")
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def print_table(timings: dict, fbank: dict, drift: tuple[float, float], rss: float, args) -> None:
    median = {name: statistics.median(values) for name, values in {**timings, **fbank}.items()}
    minimum = {name: min(values) for name, values in {**timings, **fbank}.items()}
    per_clip = {name: 1e3 * value / (16 if "16" in name else 1) for name, value in median.items() if "clip" in name
                or "16" in name}  # fmt: skip
    print(f"## Inference speed: sslam vs the original ({args.threads} threads, {args.repeats} rounds)\n")
    print(f"This machine: {cpu_name()}. The original's figures were measured on the reference machine (2 cores of a")
    print("CPU with AMX), not here. Ratio = original / sslam (> 1: sslam is faster). Model: median (min).\n")
    print("| what | original | sslam | ratio |")
    print("|---|---|---|---|")
    eager, sdpa, bf16 = (median[name] for name in MODEL_CASES)
    print(f"| base encoder, {args.batch_size} x 10 s, fp32 eager / SDPA (default) | {ORIGINAL['fp32']:.2f} s | "
          f"{eager:.2f} ({minimum['fp32 eager']:.2f}) / {sdpa:.2f} ({minimum['fp32 sdpa']:.2f}) s | "
          f"{ORIGINAL['fp32'] / eager:.2f}x / {ORIGINAL['fp32'] / sdpa:.2f}x |")  # fmt: skip
    print(f"| same, bf16 autocast, SDPA (vs original bf16 / fp32) | {ORIGINAL['bf16']:.2f} / {ORIGINAL['fp32']:.2f} s "
          f"| {bf16:.2f} ({minimum['bf16 sdpa']:.2f}) s | {ORIGINAL['bf16'] / bf16:.2f}x / "
          f"{ORIGINAL['fp32'] / bf16:.2f}x |")  # fmt: skip
    print(f"| bf16 output drift from the fp32 output, max abs (mean abs) | {ORIGINAL['bf16_drift']:.3f} | "
          f"{drift[0]:.3f} ({drift[1]:.4f}) | {ORIGINAL['bf16_drift'] / drift[0]:.2f}x smaller |")  # fmt: skip
    fbank_ms = ORIGINAL["fbank_ms"]
    for label, name in (
        ("fbank, one 10 s clip, default call", "default, one clip"),
        ('fbank, `fbank_backend="torch"`, one clip', "torch, one clip"),
        ('fbank, `fbank_backend="torch"`, per clip in a batch of 16', "torch, batch of 16"),
        ('fbank, `fbank_backend="torchaudio"` (bit-exact reference), one clip', "torchaudio, one clip"),
        ('fbank, `fbank_backend="torchaudio"`, per clip in a batch of 16', "torchaudio, batch of 16"),
    ):
        print(f"| {label} | {fbank_ms:.2f} ms | {per_clip[name]:.2f} ms | {fbank_ms / per_clip[name]:.2f}x |")
    print(f"| peak RSS, base encoder forward ({args.batch_size} x 10 s, fp32 SDPA) | {ORIGINAL['rss_gb']:.2f} GB | "
          f"{rss:.2f} GB | {ORIGINAL['rss_gb'] / rss:.2f}x less |")  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fbank_repeats", "--fbank-repeats", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_size", "--batch-size", type=int, default=8)
    parser.add_argument("--profile", action="store_true", help="also print where the time goes")
    parser.add_argument("--child_rss", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child_rss:
        child_rss(args.batch_size)
        return

    batch = torch.randn(args.batch_size, 1024, 128, generator=torch.Generator().manual_seed(0))
    functions, outputs = model_cases(batch)
    timings = round_robin(functions, args.repeats)
    difference = (outputs["bf16 sdpa"].float() - outputs["fp32 eager"]).abs()
    drift = difference.max().item(), difference.mean().item()
    fbank = round_robin(fbank_cases(), args.fbank_repeats)
    print_table(timings, fbank, drift, peak_rss_gb(args.threads, args.batch_size), args)
    if args.profile:
        print_profile(batch)


if __name__ == "__main__":
    main()
