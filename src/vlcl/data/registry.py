"""Build the benchmark a run config names (found by vlcl.data.benchmark's discovery: no list here)."""

from __future__ import annotations

from vlcl.config import DataConfig
from vlcl.data.benchmark import Benchmark, benchmark_builder


def build_benchmark(data: DataConfig, image_size: int, preprocess=None) -> Benchmark:
    """``preprocess`` (the checkpoint's :class:`~vlcl.data.preprocess.ImagePreprocessor`) resizes real images."""
    builder = benchmark_builder(data.benchmark)
    return builder(
        tasks=data.tasks,
        seed=data.seed,
        train_scale=data.train_scale,
        test_images=data.test_images,
        zeroshot_per_class=data.zeroshot_per_class,
        image_size=image_size,
        preprocess=preprocess,
        root=data.root,
        eval_sets=data.eval_sets,
        on_bad_sample=data.on_bad_sample,
        image_check=data.image_check,
        workers=data.workers,
        max_image_pixels=data.max_image_pixels,
        features=data.features,
    )
