"""Retrieval recall at gallery scale: time and peak memory against one raw matrix product of the same size.

    python benchmarks/retrieval_scale.py                       # 1k, 10k, 100k images x 5 captions, d = 512
    python benchmarks/retrieval_scale.py --images 100000 --captions-per-image 5 --reference
    python benchmarks/retrieval_scale.py --images 100000 --captions 500000   # the issue's gallery-scale goal

Each size runs in a fresh process (so that its peak resident memory is its own), on random unit features with
five captions per image (captions listed image by image, as data sets list them) and every caption string
distinct (``text_groups``: the evaluator always passes them). Printed side by side, medians of ``--repeats``:

- ``product``: one raw matrix product S = I T^T of the same size, the floor (the captions in slabs of at most
  2**26 scores when S does not fit in memory: a product whose output is kept costs memory writes that counting
  does not, so both are timed on cache-sized and on memory-sized slabs and the faster one is the floor);
- ``recall``: ``vlcl.metrics.retrieval_recall`` (both directions, R@1/5/10), its ratio to the product, and the
  peak resident memory of the process (features included) against the features' own size;
- ``--reference``: the row-chunked computation of vlcl 0.1 before issue 18 (``tests/reference_retrieval.py``,
  two products, one per direction), for the record; skipped above 20k images (it takes an hour there).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(images: int, captions: int, dim: int, repeats: int, reference: bool, block_mb: int, slabs: list[int]) -> dict:
    import torch

    from vlcl.metrics.retrieval import retrieval_recall

    generator = torch.Generator().manual_seed(0)
    image_features = torch.nn.functional.normalize(torch.randn(images, dim, generator=generator), dim=1)
    text_features = torch.empty(captions, dim)
    for start in range(0, captions, 65536):  # filled in place: no second full-size copy while normalising
        part = torch.randn(min(65536, captions - start), dim, generator=generator)
        text_features[start : start + len(part)] = torch.nn.functional.normalize(part, dim=1)
    index = torch.arange(captions) * images // captions
    groups = torch.arange(captions)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def timed(run) -> list[float]:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return times

    def product(slab_scores: int):
        def run():
            step = max(1, slab_scores // images)
            for start in range(0, captions, step):
                torch.mm(image_features, text_features[start : start + step].t())
        return run

    # recall first: the peak resident memory read after it is its own (the whole-matrix floor would raise it)
    recall_times = timed(lambda: retrieval_recall(image_features, text_features, index, text_groups=groups, block_bytes=block_mb << 20))
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    floors = {f"slabs of {s:,} scores": statistics.median(timed(product(s))) for s in slabs}
    if images * captions <= 2**28:
        floors["whole matrix"] = statistics.median(timed(lambda: image_features @ text_features.t()))
    floor_name = min(floors, key=floors.get)
    result = {
        "images": images, "captions": captions, "dim": dim, "threads": torch.get_num_threads(),
        "product_s": floors[floor_name], "product_kind": floor_name, "products_s": floors,
        "recall_s": statistics.median(recall_times), "features_mb": (images + captions) * dim * 4 / 2**20,
        "rss_before_mb": base_rss, "peak_rss_mb": peak_rss,
    }
    if reference:
        sys.path.insert(0, str(ROOT / "tests"))
        from reference_retrieval import reference_recall

        result["reference_s"] = statistics.median(timed(lambda: reference_recall(image_features, text_features, index, text_groups=groups)))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--captions-per-image", type=int, default=5)
    parser.add_argument("--captions", type=int, help="captions in all (instead of --captions-per-image)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--block-mb", type=int, default=256, help="retrieval_recall's block_bytes, in MiB")
    parser.add_argument("--reference", action="store_true", help="also time the pre-issue-18 computation (<= 20k images)")
    parser.add_argument("--floor-slabs", type=int, nargs="+", default=[2**21, 2**26],
                        help="slab sizes (scores) the raw product is timed at; the fastest is the floor")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one size in this process
    args = parser.parse_args()
    if args.one:
        images, captions = map(int, args.one.split("x"))
        print(json.dumps(measure(images, captions, args.dim, args.repeats, args.reference and images <= 20000, args.block_mb, args.floor_slabs)))
        return
    print(f"{'images':>8} {'captions':>9} {'product s':>10} {'recall s':>9} {'recall/product':>15} "
          f"{'reference/product':>18} {'RSS before MB':>13} {'peak RSS MB':>12} {'features MB':>12}  floor")
    for images in args.images:
        captions = args.captions or images * args.captions_per_image
        command = [sys.executable, __file__, "--one", f"{images}x{captions}", "--dim", str(args.dim),
                   "--repeats", str(args.repeats if images < 100000 else 1), "--block-mb", str(args.block_mb),
                   "--floor-slabs", *map(str, args.floor_slabs)]
        if args.reference:
            command.append("--reference")
        out = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        reference = f"{out['reference_s'] / out['product_s']:.2f}" if "reference_s" in out else "-"
        print(f"{images:>8} {captions:>9} {out['product_s']:>10.2f} {out['recall_s']:>9.2f} "
              f"{out['recall_s'] / out['product_s']:>15.2f} {reference:>18} {out['rss_before_mb']:>13.0f} {out['peak_rss_mb']:>12.0f} "
              f"{out['features_mb']:>12.0f}  {out['product_kind']} ({out['threads']} threads)", flush=True)


if __name__ == "__main__":
    main()
