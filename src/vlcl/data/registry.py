"""Build the benchmark a run config names."""

from __future__ import annotations

from vlcl.config import DataConfig
from vlcl.data import embedded  # noqa: F401  (registers 'embedded')
from vlcl.data.benchmark import Benchmark, benchmark_builder


def build_benchmark(data: DataConfig, image_size: int) -> Benchmark:
    builder = benchmark_builder(data.benchmark)
    return builder(
        tasks=data.tasks,
        seed=data.seed,
        train_scale=data.train_scale,
        test_images=data.test_images,
        zeroshot_per_class=data.zeroshot_per_class,
        image_size=image_size,
    )
