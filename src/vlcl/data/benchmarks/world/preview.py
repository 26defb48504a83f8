"""Contact sheets of every domain, to look at the world (``python -m vlcl.data.benchmarks.world OUT_DIR``)."""

from __future__ import annotations

from PIL import Image

from vlcl.data.benchmarks.world.domains import DOMAINS
from vlcl.data.benchmarks.world.splits import generate_split


def contact_sheet(domain: str, n: int = 8, *, seed: int = 0, scale: int = 4, size: int = 32) -> tuple[Image.Image, list[str]]:
    """``n`` test images of ``domain`` side by side, upscaled ``scale`` times, and their first captions."""
    split = generate_split(domain, n, seed=seed, split="test", captions_per_image=1, size=size)
    cell = size * scale
    sheet = Image.new("RGB", (n * (cell + 2), cell), (128, 128, 128))
    for i, image in enumerate(split.images):
        sheet.paste(Image.fromarray(image).resize((cell, cell), Image.NEAREST), (i * (cell + 2), 0))
    return sheet, [caps[0] for caps in split.captions]


def _write_previews(out_dir: str) -> None:
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for domain in DOMAINS:
        sheet, captions = contact_sheet(domain)
        sheet.save(out / f"{domain}.png")
        print(f"[{domain}] {out / f'{domain}.png'}")
        for i, caption in enumerate(captions):
            print(f"  {i}: {caption}")
