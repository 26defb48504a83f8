"""The evaluation path against a bare forward loop of the same model over the same inputs.

    python benchmarks/eval_path.py                  # the shipped model on the embedded benchmark's evaluation sets
    python benchmarks/eval_path.py --repeats 5

Printed side by side (medians of ``--repeats``, one process, the machine's threads):

- ``bare forward``: ``model.vision_model`` + ``visual_projection`` over every evaluated image (already float tensors
  in the model's normalisation, made before the clock starts) and ``text_model`` + ``text_projection`` over every
  caption and class prompt (tokenised before the clock starts, padded to the longest of the set), in batches of
  ``eval.batch_size``, under ``torch.no_grad()`` - nothing else;
- ``feature extraction``: what vlcl's evaluator does for the same inputs (uint8 -> float and normalisation per
  batch, padding trimmed per batch, L2-normalised float32 features), and its ratio to the bare forward;
- ``whole evaluation``: one stage's ``Evaluator.evaluate`` (features + retrieval recall + alignment + zero-shot
  accuracy of every set), and its ratio to the bare forward.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vlcl.config import load_config
from vlcl.data.registry import build_benchmark
from vlcl.engine.evaluate import Evaluator
from vlcl.models.encode import tokenize
from vlcl.models.loading import load_clip


def timed(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="config overrides (model.path=..., data.*, eval.batch_size=...)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = load_config(None, args.overrides)
    bundle = load_clip(config.model.path)
    model = bundle.model.eval()
    benchmark = build_benchmark(config.data, image_size=bundle.preprocess.image_size, preprocess=bundle.preprocess)
    evaluator = Evaluator(benchmark, bundle.tokenizer, bundle.preprocess, bundle.context_length, config.eval)
    batch = config.eval.batch_size
    image_sets = [s.images for s in benchmark.retrieval_sets()] + [z.images for z in benchmark.zeroshot]
    text_sets = [s.captions for s in benchmark.retrieval_sets()] + [[p for ps in z.prompts() for p in ps] for z in benchmark.zeroshot]
    pixels = [bundle.preprocess.normalize_uint8(images) for images in image_sets]
    tokens = [tokenize(bundle.tokenizer, texts, bundle.context_length) for texts in text_sets]
    images, texts = sum(len(p) for p in pixels), sum(len(t[0]) for t in tokens)

    @torch.no_grad()
    def bare() -> None:
        for values in pixels:
            for start in range(0, len(values), batch):
                model.visual_projection(model.vision_model(pixel_values=values[start : start + batch]).pooler_output)
        for ids, mask in tokens:
            for start in range(0, len(ids), batch):
                out = model.text_model(input_ids=ids[start : start + batch], attention_mask=mask[start : start + batch])
                model.text_projection(out.pooler_output)

    def extraction() -> None:
        for images_of_set in image_sets:
            evaluator._images(model, images_of_set)
        for ids, mask in tokens:
            evaluator._texts(model, ids, mask)

    bare()  # warm-up
    floor = timed(bare, args.repeats)
    features = timed(extraction, args.repeats)
    whole = timed(lambda: evaluator.evaluate(model), args.repeats)
    print(f"{images} images, {texts} texts (captions and class prompts), batch {batch}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    print(f"{'bare forward':>20} {floor:8.2f} s  1.00x")
    print(f"{'feature extraction':>20} {features:8.2f} s  {features / floor:.2f}x")
    print(f"{'whole evaluation':>20} {whole:8.2f} s  {whole / floor:.2f}x")


if __name__ == "__main__":
    main()
