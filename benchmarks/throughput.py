"""Training throughput of finetune, lora and cclip on a randomly initialised CLIP, side by side.

    python benchmarks/throughput.py                      # ViT-B/16-sized, bf16, CUDA if present
    python benchmarks/throughput.py --size small --device cpu --precision fp32 --batch 16

Sizes: ``vit-b-16`` (vision 768 wide, 12 layers, 224 px, patch 16; text 512 wide, 12
layers, 77 tokens; projection 512: OpenAI's ViT-B/16 shapes) and ``small`` (for CPUs).
Each method runs ``--warmup`` untimed steps, then ``--steps`` timed optimiser steps
through the engine's own pieces (the method's loss, AdamW, autocast, gradient
clipping, the method's hooks) on random images and token ids. cclip runs with a
teacher forward per step (no cache: the data here are random tensors), its
most expensive setting. Prints samples/s, peak GPU memory and the ratio to finetune.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from transformers import CLIPConfig, CLIPModel

from vlcl.config import TrainConfig
from vlcl.engine.optim import build_optimizer
from vlcl.engine.train import autocast, enable_gradient_checkpointing
from vlcl.methods import RunContext, Stage, create_method

SIZES = {
    "vit-b-16": dict(
        vision=dict(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=16
        ),
        text=dict(
            hidden_size=512,
            intermediate_size=2048,
            num_hidden_layers=12,
            num_attention_heads=8,
            max_position_embeddings=77,
            vocab_size=49408,
        ),
        projection_dim=512,
    ),
    "small": dict(
        vision=dict(
            hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4, image_size=96, patch_size=16
        ),
        text=dict(
            hidden_size=256,
            intermediate_size=1024,
            num_hidden_layers=4,
            num_attention_heads=4,
            max_position_embeddings=77,
            vocab_size=49408,
        ),
        projection_dim=256,
    ),
}
METHODS = {"finetune": {}, "lora": {}, "cclip": {"cache_teacher": False}}


def build_model(size: str, device: torch.device) -> CLIPModel:
    spec = SIZES[size]
    config = CLIPConfig(text_config=spec["text"], vision_config=spec["vision"], projection_dim=spec["projection_dim"])
    torch.manual_seed(0)
    return CLIPModel(config).to(device)


def random_batch(model: CLIPModel, batch: int, device: torch.device, generator: torch.Generator) -> dict[str, torch.Tensor]:
    vision, text = model.config.vision_config, model.config.text_config
    tokens = text.max_position_embeddings
    ids = torch.randint(1, text.vocab_size - 1, (batch, tokens), generator=generator)
    ids[:, -1] = (
        text.eos_token_id if text.eos_token_id is not None and text.eos_token_id < text.vocab_size else text.vocab_size - 1
    )
    return {
        "pixel_values": torch.randn(batch, 3, vision.image_size, vision.image_size, generator=generator).to(device),
        "input_ids": ids.to(device),
        "attention_mask": torch.ones(batch, tokens, dtype=torch.long, device=device),
        "sample_index": torch.arange(batch, device=device),
        "caption_index": torch.zeros(batch, dtype=torch.long, device=device),
    }


def measure(method_name: str, args, device: torch.device) -> dict[str, float]:
    model = build_model(args.size, device)
    method = create_method(method_name, METHODS[method_name])
    method.setup(model, RunContext(["random"], seed=0, device=device))
    method.begin_task(Stage(0, "random", (0,)), None)
    if args.gradient_checkpointing:
        enable_gradient_checkpointing(method.model)
    train = TrainConfig(batch_size=args.batch, lr=1e-5)
    optimizer = build_optimizer(method.parameter_groups(), train)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    generator = torch.Generator().manual_seed(0)
    batches = [random_batch(model, args.batch, device, generator) for _ in range(2)]
    method.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step(i: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(args.precision, device):
            loss = method.training_loss(batches[i % 2], i).loss
        loss.float().backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        method.before_optimizer_step(i)
        optimizer.step()
        method.after_optimizer_step(i)

    for i in range(args.warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for i in range(args.steps):
        step(args.warmup + i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    trainable = sum(p.numel() for p in params)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {
        "samples_per_s": args.steps * args.batch / seconds,
        "step_s": seconds / args.steps,
        "peak_gib": peak,
        "trainable_m": trainable / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="vit-b-16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="bf16")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    device = torch.device(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    )
    print(
        f"device: {name}; torch {torch.__version__}; size {args.size}; {args.precision}; batch {args.batch}; "
        f"{args.steps} timed steps after {args.warmup}; gradient checkpointing {args.gradient_checkpointing}"
    )
    print(f"{'method':10} {'samples/s':>10} {'s/step':>8} {'peak GiB':>9} {'trainable M':>12} {'vs finetune':>12}")
    base = None
    for method_name in args.methods.split(","):
        result = measure(method_name, args, device)
        base = base or result["samples_per_s"]
        print(
            f"{method_name:10} {result['samples_per_s']:10.1f} {result['step_s']:8.3f} {result['peak_gib']:9.2f} "
            f"{result['trainable_m']:12.2f} {result['samples_per_s'] / base:12.3f}"
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
