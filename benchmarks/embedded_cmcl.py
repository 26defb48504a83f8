"""CMCL on the embedded benchmark: the table of docs/results/embedded_cmcl.md, and what a threshold protects.

    python benchmarks/embedded_cmcl.py table RUN_DIR [RUN_DIR ...]
        one Markdown row per finished run: its method options, plasticity (mean of the diagonal of the
        mean R@1 matrix: each task right after learning it), Last, forgetting, BWT, zero-shot PD, the held-out
        base world's final R@1, train and wall seconds.
    python benchmarks/embedded_cmcl.py directions RUN_DIR [--stage 0]
        how many input directions each threshold rule protects, from the covariances a cmcl run saved with
        its stage checkpoint: the two projections' inputs (the pooled features), and the inner layers summed.
    python benchmarks/embedded_cmcl.py weights RUN_DIR [--stage 0]
        how far training moved the weights: ||W_stage - W_pretrained|| / ||W_pretrained|| of the two projections
        and (mean, max) over the other Linear weights, and the root-mean-square entry of each projection.
    python benchmarks/embedded_cmcl.py similarities RUN_DIR [--stage 0]
        on the test set of the task of that stage, before (pre-trained) and after: the loss the task trains
        (CLIP's, on batches of 64 test pairs), the spread of the image-caption cosines (mean, std, and the
        mean gap between a caption's own image and the others), and mean R@1.

Reads only run directories; trains nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml

from vlcl.engine.checkpoint import read_stage_checkpoint
from vlcl.methods.cmcl import RunningCovariance, kept_directions

RULES = [("absolute", 0.1), ("absolute", 1.0), ("relative", 1e-1), ("relative", 1e-2), ("relative", 1e-3),
         ("energy", 0.9), ("energy", 0.97), ("energy", 0.99), ("energy", 0.999), ("energy", 1.0)]


def options_of(run_dir: Path) -> str:
    """The method and the options the run set, e.g. ``cmcl threshold=energy input_threshold=0.97 lr=1e-4``."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    method = dict(config["method"])
    name = method.pop("name")
    parts = [name, *(f"{k}={v}" for k, v in method.items()), f"lr={config['train']['lr']:g}"]
    return " ".join(parts)


def row(run_dir: Path) -> dict[str, float | str]:
    results = json.loads((run_dir / "results.json").read_text())
    matrix = results["matrices"]["mean_R@1"]
    summary = results["summary"]
    task = summary["retrieval"]["mean_R@1"]
    pretrained = results["pretrained"]["R@1_row"]["mean_R@1"]
    return {
        "setting": options_of(run_dir),
        "plasticity": sum(matrix[i][i] for i in range(len(matrix))) / len(matrix),
        "pretrained diagonal": sum(pretrained) / len(pretrained),
        "last": task["last"],
        "forgetting": task["forgetting"],
        "bwt": task["bwt"],
        "zero-shot PD": summary["zeroshot_mean_pd"],
        "base final": summary["heldout_mean_R@1"]["base"]["final"],
        "train s": results["timings"]["train_seconds"],
        "wall s": results["timings"]["wall_seconds_this_session"],
        "diagonal": " / ".join(f"{matrix[i][i]:.1f}" for i in range(len(matrix))),
    }


def cell(value: float | str | None, digits: int) -> str:
    """A table cell: text as it is, a number rounded, a measure the run has not got (a one-task run's forgetting) as -."""
    if value is None:
        return "-"
    return value if isinstance(value, str) else f"{value:.{digits}f}"


def table(run_dirs: list[Path]) -> str:
    columns = ["setting", "plasticity", "last", "forgetting", "bwt", "zero-shot PD", "base final", "train s", "wall s", "diagonal"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for run_dir in run_dirs:
        values = row(run_dir)
        cells = [cell(values[c], 0 if c.endswith(" s") else 1) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def directions(run_dir: Path, stage: int) -> str:
    state, _ = read_stage_checkpoint(run_dir / "checkpoints" / f"stage_{stage:02d}")
    spectra = {}
    for key, saved in state["inputs"].items():
        values = torch.linalg.eigvalsh(RunningCovariance.from_state(saved).mean()).flip(0)
        spectra[key] = values
    lines = ["| rule | threshold | image (of 128) | text (of 128) | inner layers (kept / total) |", "|---|---|---|---|---|"]
    for rule, threshold in RULES:
        counts = {key: kept_directions(values, threshold, rule) for key, values in spectra.items()}
        inner = [k for k in counts if k not in ("image", "text")]
        kept, total = sum(counts[k] for k in inner), sum(len(spectra[k]) for k in inner)
        inner_cell = f"{kept} / {total}" if inner else "-"
        lines.append(f"| {rule} | {threshold:g} | {counts['image']} | {counts['text']} | {inner_cell} |")
    tops = {key: float(values[0]) for key, values in spectra.items()}
    inner_tops = [top for key, top in tops.items() if key not in ("image", "text")]
    inner_range = f"; inner layers {min(inner_tops):.3g} to {max(inner_tops):.3g}" if inner_tops else ""
    lines += ["", f"largest eigenvalue: image {tops['image']:.3g}, text {tops['text']:.3g}{inner_range}"]
    return "\n".join(lines)


def weights(run_dir: Path, stage: int) -> str:
    from vlcl.models import load_clip

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    before = dict(load_clip(config["model"]["path"]).model.named_parameters())
    after = dict(load_clip(str(run_dir / "checkpoints" / f"stage_{stage:02d}" / "model")).model.named_parameters())
    relative = {
        name: float((after[name] - w).detach().norm() / w.detach().norm())
        for name, w in before.items()
        if name.endswith(".weight") and w.ndim == 2 and "embedding" not in name
    }
    lines = []
    for name in ("visual_projection.weight", "text_projection.weight"):
        rms = float(before[name].pow(2).mean().sqrt())
        lines.append(f"{name}: relative change {relative[name]:.4f} (entries: rms {rms:.4f})")
    inner = [v for k, v in relative.items() if "projection" not in k]
    lines.append(f"other Linear weights ({len(inner)}): relative change mean {sum(inner) / len(inner):.4f}, max {max(inner):.4f}")
    return "\n".join(lines)


def similarities(run_dir: Path, stage: int) -> str:
    from vlcl.config import load_config
    from vlcl.data.registry import build_benchmark
    from vlcl.losses import clip_loss
    from vlcl.models import load_clip
    from vlcl.models.encode import encode_images, encode_token_batches, tokenize

    config = load_config(run_dir / "config.yaml")
    models = {"pre-trained": load_clip(config.model.path), "after": load_clip(str(run_dir / "checkpoints" / f"stage_{stage:02d}" / "model"))}
    test = build_benchmark(config.data, models["after"].preprocess.image_size).tasks[stage].test
    lines = [f"task {test.name}: {len(test.images)} images, {len(test.captions)} captions"]
    for label, bundle in models.items():
        with torch.no_grad():
            images = encode_images(bundle.model, bundle.preprocess.normalize_uint8(test.images))
            ids, mask = tokenize(bundle.tokenizer, test.captions, bundle.context_length)
            texts = encode_token_batches(bundle.model, ids, mask)
            scale = float(bundle.model.logit_scale.exp().clamp(max=100))
            cosines = texts @ images.t()  # [captions, images]
            own = cosines[torch.arange(len(texts)), test.text_to_image]
            gap = float(own.mean() - cosines.mean())
            paired = images[test.text_to_image]
            loss = sum(float(clip_loss(paired[i : i + 64], texts[i : i + 64], scale)) for i in range(0, len(texts) - 63, 64))
            loss /= len(range(0, len(texts) - 63, 64))
            r1 = float((cosines.argmax(1) == test.text_to_image).float().mean() * 100)
        lines.append(f"{label}: logit scale {scale:.1f}, CLIP loss (batches of 64) {loss:.2f}, cosine mean {float(cosines.mean()):.3f} "
                     f"std {float(cosines.std()):.3f}, own-image gap {gap:.3f}, t2i R@1 {r1:.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    table_parser = commands.add_parser("table")
    table_parser.add_argument("runs", nargs="+", type=Path)
    directions_parser = commands.add_parser("directions")
    directions_parser.add_argument("run", type=Path)
    directions_parser.add_argument("--stage", type=int, default=0)
    weights_parser = commands.add_parser("weights")
    weights_parser.add_argument("run", type=Path)
    weights_parser.add_argument("--stage", type=int, default=0)
    similarities_parser = commands.add_parser("similarities")
    similarities_parser.add_argument("run", type=Path)
    similarities_parser.add_argument("--stage", type=int, default=0)
    args = parser.parse_args()
    if args.command == "table":
        print(table(args.runs))
    else:
        print({"directions": directions, "weights": weights, "similarities": similarities}[args.command](args.run, args.stage))


if __name__ == "__main__":
    main()
