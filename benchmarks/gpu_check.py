"""A short GPU check (CUDA only; the project itself never needs a GPU).

1. Fixture parity on CUDA in fp32 (TF32 off): the converted tiny checkpoints vs the original's outputs, eager and SDPA.
2. One Stage-2 (SSLAM) training step at base size under bf16 autocast: finite loss and gradients, teacher kept fp32.
3. Inference time of the base encoder, batch 8 x 10 s: fp32 SDPA and bf16 autocast.
4. The feature extractor's batched torch filter bank on the device (`device="cuda"`): agreement with the CPU and
   time per clip in a batch of 16 x 10 s.

    python -m sslam.conversion.convert_fairseq_checkpoint --checkpoint_path ../shared/fixtures/checkpoints/sslam_pretrain_tiny.pt \
        --pytorch_dump_folder_path converted/pretrain   # and sslam_finetuned_tiny.pt -> converted/finetuned
    python -m sslam.benchmarks.gpu_check --fixtures ../shared/fixtures --converted converted
"""

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

import sslam.modeling_sslam  # noqa: F401
from sslam.modeling_sslam import SSLAMConfig, SSLAMFeatureExtractor, SSLAMForPreTraining, SSLAMModel
from sslam.training.ema import TeacherEMA
from transformers import AutoModel, AutoModelForAudioClassification


@torch.no_grad()
def fixture_parity(fixtures: Path, converted: Path) -> None:
    """`converted/{pretrain,finetuned}`: the tiny fixture checkpoints converted with conversion.convert_fairseq_checkpoint."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for name, auto_class, kind in [("pretrain", AutoModel, "pretrain"),
                                   ("finetuned", AutoModelForAudioClassification, "finetune")]:
        folder = converted / name
        for attention in ("eager", "sdpa"):
            model = auto_class.from_pretrained(folder, attn_implementation=attention).cuda().eval()
            for clip in ("a", "b", "ref"):
                inputs = torch.from_numpy(np.load(fixtures / "inputs" / f"fbank_{clip}.npy"))[None].cuda()
                reference = load_file(fixtures / "inference" / f"infer_{kind}_{clip}.safetensors")
                output = model(inputs, output_hidden_states=True)
                states = torch.stack(output.hidden_states)[:, 0].cpu()
                error = (states - reference["hidden_states"]).abs().max().item()
                line = f"parity {name:9s} {attention:5s} {clip:3s} hidden states max abs err {error:.2e}"
                if "logits" in reference:
                    logit_error = (output.logits[0].cpu() - reference["logits"]).abs().max().item()
                    line += f", logits {logit_error:.2e}"
                print(line, flush=True)


def stage2_step() -> None:
    torch.manual_seed(0)
    model = SSLAMForPreTraining(SSLAMConfig(objective="sslam", clone_batch=8)).cuda().train()
    ema = TeacherEMA.from_config(model.config)
    batch = torch.randn(12, 1, 1024, 128, device="cuda")
    generator = torch.Generator().manual_seed(0)
    for step in range(3):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            output = model(batch, generator=generator)
        output.loss.backward()
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        gradients_finite = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        teacher_dtypes = {p.dtype for p in model.teacher.parameters()}
        print(f"stage2 base step {step}: {elapsed:.3f} s, loss {output.loss.item():.3f}, terms "
              f"{ {k: round(v.item(), 1) for k, v in output.loss_terms.items()} }, grads finite {gradients_finite}, "
              f"teacher dtypes {teacher_dtypes}, peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB",
              flush=True)
        model.zero_grad(set_to_none=True)
        ema.step(model.teacher, model.sslam, step + 1)


@torch.no_grad()
def inference_speed() -> None:
    model = SSLAMModel(SSLAMConfig()).cuda().eval()
    batch = torch.randn(8, 1, 1024, 128, device="cuda")
    for label, autocast in [("fp32 sdpa", False), ("bf16 autocast", True)]:
        timings = []
        for _ in range(12):
            torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                model(batch)
            torch.cuda.synchronize()
            timings.append(time.perf_counter() - start)
        print(f"inference base batch 8 x 10 s, {label}: median {statistics.median(timings[2:]) * 1e3:.1f} ms",
              flush=True)


def fbank_on_device() -> None:
    extractor = SSLAMFeatureExtractor()
    rng = np.random.default_rng(0)
    clips = [rng.normal(0, 0.1, 160_000).astype(np.float32) for _ in range(16)]
    on_cpu = extractor(clips, sampling_rate=16_000, return_tensors="pt")["input_values"]
    timings = []
    for _ in range(12):
        torch.cuda.synchronize()
        start = time.perf_counter()
        on_device = extractor(clips, sampling_rate=16_000, return_tensors="pt", device="cuda")["input_values"]
        torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
    error = (on_device.cpu() - on_cpu).abs().max().item()
    print(f"fbank on {on_device.device}: max abs difference from the CPU {error:.2e}, "
          f"{statistics.median(timings[2:]) / 16 * 1e3:.2f} ms per clip in a batch of 16 x 10 s", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixtures", type=Path, default=Path("../shared/fixtures"))
    parser.add_argument("--converted", type=Path, required=True, help="folder with pretrain/ and finetuned/ conversions")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name()}", flush=True)
    fixture_parity(args.fixtures, args.converted)
    stage2_step()
    inference_speed()
    fbank_on_device()


if __name__ == "__main__":
    main()
