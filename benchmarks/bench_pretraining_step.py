"""Speed and memory of one SSLAM Stage-2 pre-training step on CPU, and data-parallel throughput.

Prints Markdown tables.

1. One step (forward + backward of `SSLAMForPreTraining`, optimizer excluded) of a small model: embed 192, depth 4,
   heads 3, decoder 192 (6 layers), clone batch 4, batch 4 clips of 1024 x 128 frames, objective "sslam", torch
   threads = 2; fp32 and bf16 autocast; SDPA attention. Timing: the cases alternate round-robin in one process
   (`--repeats` rounds after one warm-up round), so a burst of load from other processes hits every case alike; the
   median and the minimum are reported, with "forward" = the training forward alone (autograd on). Memory: each case
   runs one warm-up and one timed step in a fresh process; "peak RSS" is that process's resident-set high-water
   mark (`VmHWM`, which counts torch's allocations, unlike tracemalloc, and unlike `ru_maxrss` is not inherited
   from the spawning process) and "step peak" is that mark minus the resident set just before the first step
   (model and inputs already built).
2. Samples/s of `python -m sslam.training.pretrain` on synthetic 10 s clips with the same model (fbank in the main process,
   `dataloader_num_workers 0`): one process with 2 threads vs `accelerate launch` with 2 CPU processes of 1 thread each
   (gloo), 4 clips per process and step; the Trainer's `train_samples_per_second` over `--train_steps` steps
   (first step included).

The original fairseq code's step on the reference machine (2 cores of a CPU with AMX; the inference issue's table,
not re-measured here): 1.05 s fp32, 0.53 s bf16 autocast. The first table puts our step beside it (fp32 vs fp32,
bf16 vs bf16) and names the CPU that ran the benchmark; the loss column is the fp32 / bf16 loss of the fixed batch.

    python -m sslam.benchmarks.bench_pretraining_step [--repeats 10] [--threads 2] [--train_steps 8] [--skip_throughput]
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

from sslam.benchmarks.bench_inference import cpu_name, peak_resident_bytes
from sslam.modeling_sslam.configuration_sslam import SSLAMConfig
from sslam.modeling_sslam.masking import PretrainingMaskGenerator
from sslam.modeling_sslam.pretraining_sslam import SSLAMForPreTraining

ORIGINAL_STEP_SECONDS = {"fp32": 1.05, "bf16 autocast": 0.53}
MODEL = dict(
    hidden_size=192,
    num_hidden_layers=4,
    num_attention_heads=3,
    intermediate_size=768,
    decoder_hidden_size=192,
    clone_batch=4,
    objective="sslam",
)
BATCH_SIZE = 4
FRAMES = 1024
CASES = {"fp32": False, "bf16 autocast": True}
REPO_ROOT = Path(__file__).resolve().parents[1]


def resident_bytes() -> int:
    """Current resident set size of this process (Linux)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def step_inputs(config: SSLAMConfig) -> dict:
    """A fixed batch: normal(0, 0.5) "spectrograms" `(4, 1, 1024, 128)`, masks `(16, 512)`, two window starts."""
    generator = torch.Generator().manual_seed(0)
    masking = PretrainingMaskGenerator.from_config(config)
    return {
        "input_values": 0.5 * torch.randn(BATCH_SIZE, 1, FRAMES, config.num_mel_bins, generator=generator),
        "mask": masking.batch_masks(BATCH_SIZE, FRAMES // config.patch_size, generator).bool(),
        "unmixed_window_starts": masking.window_starts(FRAMES, generator),
    }


def build_case_model(threads: int) -> tuple[SSLAMForPreTraining, dict]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = SSLAMConfig(**MODEL)
    config._attn_implementation = "sdpa"
    return SSLAMForPreTraining(config).train(), step_inputs(config)


def case_functions(model: SSLAMForPreTraining, inputs: dict, autocast: bool):
    """(forward, step) closures: the training forward returning the loss, and forward + backward."""

    def forward():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return model(**inputs).loss

    def step():
        forward().backward()
        model.zero_grad(set_to_none=True)

    return forward, step


def time_cases(repeats: int, threads: int) -> dict:
    """Round-robin timings of every case's step and forward, `{case: {"step": [...], "forward": [...], "loss": x}}`."""
    model, inputs = build_case_model(threads)
    functions = {case: case_functions(model, inputs, autocast) for case, autocast in CASES.items()}
    timings = {case: {"step": [], "forward": []} for case in CASES}
    for case, (forward, _) in functions.items():
        with torch.no_grad():
            timings[case]["loss"] = forward().item()
    for round_index in range(repeats + 1):
        for case, (forward, step) in functions.items():
            for name, function in (("step", step), ("forward", forward)):
                start = time.perf_counter()
                function()
                if round_index > 0:
                    timings[case][name].append(time.perf_counter() - start)
    return timings


def measure_memory(autocast: bool, threads: int) -> dict:
    """Runs in a child process: peak RSS and its rise over one step (MiB)."""
    model, inputs = build_case_model(threads)
    _, step = case_functions(model, inputs, autocast)
    start_rss = resident_bytes()
    step()
    step()
    peak = peak_resident_bytes()
    return {"peak": peak / 2**20, "step_peak": (peak - start_rss) / 2**20}


def memory_in_subprocess(case: str, threads: int) -> dict:
    module = "benchmarks.bench_pretraining_step"
    command = [sys.executable, "-m", module, "--child_case", case, "--threads", str(threads)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def write_clips(folder: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    for index in range(count):
        soundfile.write(folder / f"clip{index}.wav", (0.1 * rng.standard_normal(160_000)).astype(np.float32), 16000)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def training_throughput(data: Path, output: Path, processes: int, train_steps: int) -> float:
    """`train_samples_per_second` of a `training.pretrain` run on `processes` CPU processes (2 threads in total)."""
    flags = [
        "--data", str(data), "--output_dir", str(output), "--objective", "sslam", "--max_steps", str(train_steps),
        "--per_device_train_batch_size", str(BATCH_SIZE), "--dataloader_num_workers", "0", "--warmup_steps", "1",
        "--logging_steps", "1000", "--save_steps", "100000",
    ]  # fmt: skip
    for name, value in MODEL.items():
        if name != "objective":
            flags += [f"--{name}", str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": str(2 // processes), "PYTHONPATH": str(REPO_ROOT)}
    if processes == 1:
        command = [sys.executable, "-m", "sslam.training.pretrain", *flags]
    else:
        env["ACCELERATE_USE_CPU"] = "true"
        command = [
            str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes",
            str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), "-m", "sslam.training.pretrain", *flags,
        ]  # fmt: skip
    subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True)
    state = json.loads((output / "trainer_state.json").read_text())
    return state["log_history"][-1]["train_samples_per_second"]


def print_step_table(timings: dict, memory: dict, repeats: int, threads: int) -> None:
    print(
        f"## One Stage-2 step (forward + backward), embed 192 / depth 4 / heads 3 / decoder 192, clone 4, "
        f"batch 4 x 1024 x 128, {threads} threads, {repeats} rounds\n"
    )
    print(f"This machine: {cpu_name()}. The original's figures were measured on the reference machine, not here.\n")
    print("| what | original | sslam, median (min) | ratio (median / min) | loss |")
    print("|---|---|---|---|---|")
    for case, times in timings.items():
        step_median, step_min = statistics.median(times["step"]), min(times["step"])
        original = ORIGINAL_STEP_SECONDS[case]
        print(
            f"| Stage-2 step fwd+bwd, {case} | {original:.2f} s | {step_median:.3f} ({step_min:.3f}) s "
            f"| {original / step_median:.2f}x / {original / step_min:.2f}x | {times['loss']:.6f} |"
        )
    print("\n| case | forward median (s) | forward min (s) | peak RSS (MiB) | step peak (MiB) |")
    print("|---|---|---|---|---|")
    for case, times in timings.items():
        print(
            f"| {case} | {statistics.median(times['forward']):.3f} | {min(times['forward']):.3f} "
            f"| {memory[case]['peak']:.0f} | {memory[case]['step_peak']:.0f} |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train_steps", type=int, default=8)
    parser.add_argument("--skip_throughput", action="store_true")
    parser.add_argument("--child_case", choices=tuple(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child_case:
        print(json.dumps(measure_memory(CASES[args.child_case], args.threads)))
        return

    memory = {case: memory_in_subprocess(case, args.threads) for case in CASES}
    print_step_table(time_cases(args.repeats, args.threads), memory, args.repeats, args.threads)
    if args.skip_throughput:
        return
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "clips"
        data.mkdir()
        write_clips(data, 4 * BATCH_SIZE * args.train_steps)
        rates = {n: training_throughput(data, Path(scratch) / f"run{n}", n, args.train_steps) for n in (1, 2)}
    print(f"\n## training.pretrain throughput on CPU, {args.train_steps} steps, 4 clips per process and step\n")
    print("| processes | threads each | samples/s |")
    print("|---|---|---|")
    for processes, rate in rates.items():
        print(f"| {processes} | {2 // processes} | {rate:.2f} |")


if __name__ == "__main__":
    main()
