"""LoRA dropout on the CPU: PEFT's ``nn.Dropout`` against vlcl's ``LaneDropout``.

Usage:
    python benchmarks/lora_dropout.py [--repeats 20] [--steps 10] [--threads N]

Two measurements, side by side with their ratio:
1. the dropout alone on the embedded model's largest LoRA input (64 images x
   65 tokens = 4160 rows of the 512-wide MLP activation);
2. a whole LoRA training step (forward, backward, AdamW) of the shipped model
   at batch 64 on the 'sketch' task, with every LoRA dropout module of one kind
   or the other (the same p, the same data, the same seed).
"""

from __future__ import annotations

import argparse
import time

import torch

from vlcl.data.benchmarks.embedded import build_embedded
from vlcl.losses import clip_loss
from vlcl.models import load_clip
from vlcl.settings import make_batch
from vlcl.models.encode import image_embeddings, text_embeddings
from vlcl.models.lora import DEFAULT_TARGET_MODULES, LaneDropout, add_lora, lora_dropout_slots


def best_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000 * min(times)


def lora_step_ms(lane: bool, steps: int) -> float:
    torch.manual_seed(0)
    bundle = load_clip("embedded")
    peft = add_lora(bundle.model, rank=16, alpha=32, dropout=0.1, target_modules=DEFAULT_TARGET_MODULES)
    if not lane:  # back to PEFT's own module
        for dropouts, key in lora_dropout_slots(peft):
            dropouts[key] = torch.nn.Dropout(dropouts[key].p)
    peft.train()
    model = peft.base_model.model
    data = build_embedded(tasks=["sketch"], train_scale=0.1, test_images=10, zeroshot_per_class=1).tasks[0].train
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = make_batch(bundle, data, torch.arange(64), torch.zeros(64, dtype=torch.long))

    def step() -> None:
        images = image_embeddings(model, batch.pixel_values)
        texts = text_embeddings(model, batch.input_ids, batch.attention_mask)
        loss = clip_loss(torch.nn.functional.normalize(images, dim=-1), torch.nn.functional.normalize(texts, dim=-1), model.logit_scale.exp())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return best_ms(step, steps)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.randn(4160, 512)
    plain, lane = torch.nn.Dropout(0.1).train(), LaneDropout(0.1).train()
    rows = [
        ("dropout of a 4160 x 512 activation", best_ms(lambda: plain(x), args.repeats), best_ms(lambda: lane(x), args.repeats)),
        ("LoRA training step, batch 64", lora_step_ms(False, args.steps), lora_step_ms(True, args.steps)),
    ]
    print(f"torch threads: {torch.get_num_threads()} (best of the repeats, ms)")
    print(f"{'':40s} {'nn.Dropout':>11s} {'LaneDropout':>12s} {'ratio':>6s}")
    for label, a, b in rows:
        print(f"{label:40s} {a:11.1f} {b:12.1f} {a / b:6.2f}x")


if __name__ == "__main__":
    main()
