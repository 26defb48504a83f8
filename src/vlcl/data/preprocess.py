"""Image preprocessing with Pillow and torch only (no torchvision).

CLIP's recipe: resize the shortest edge (bicubic), centre crop, scale to
[0, 1], normalise with the checkpoint's mean/std. The sizes and statistics are
read from the checkpoint's ``preprocessor_config.json``. Every image is first
made 8-bit RGB by :func:`to_rgb`, which keeps the full range of 16-bit and
float images and puts transparent pixels on white.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any image Pillow opens -> 8-bit RGB with its full range.

    - 16-bit greyscale (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``): value x 255 / 65535
      (Pillow's own ``convert`` clips at 255, which turns a 16-bit image white).
    - ``I`` (32-bit integers): values up to 255 are kept as they are; when the
      maximum is above 255 every value is scaled by 255 / maximum (the image's own
      bit depth is not recorded); negative values are 0.
    - ``F`` (floats): values in [0, 1] when the maximum is at most 1 (x 255, negatives
      0), else scaled by 255 / maximum; NaN and infinities are 0.
    - Images with alpha (``RGBA``, ``LA``, ``PA``, ``RGBa``, and ``P``, ``L``, ``RGB``
      with a transparent colour) are composited on a **white** background:
      sketches and icons are dark strokes on transparent pixels, and dropping the
      alpha would make them black on black.
    - Every other mode (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``...)
      goes through Pillow's ``convert("RGB")``.

    A mode Pillow cannot convert raises ``ValueError`` naming it.
    """
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode in SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        return _deep_grey_to_rgb(image)
    try:
        if _has_alpha(image):
            return _on_white(image)
        return image.convert("RGB")
    except ValueError as exc:
        raise ValueError(f"image mode {image.mode} cannot be converted to RGB ({exc})") from None


def _has_alpha(image: Image.Image) -> bool:
    """Pillow's ``has_transparency_data`` (Pillow >= 10.1 only): an alpha band, a transparent colour, an RGBA palette."""
    if image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
        return True
    return image.mode == "P" and image.palette is not None and image.palette.mode.endswith("A")


def _on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _deep_grey_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale -> RGB, scaled as :func:`to_rgb` says."""
    values = np.asarray(image).astype(np.float32)
    if image.mode == "F":
        values[~np.isfinite(values)] = 0.0
        peak = float(values.max(initial=0.0))
        scale = 255.0 if peak <= 1.0 else 255.0 / peak
    elif image.mode == "I":
        peak = float(values.max(initial=0.0))
        scale = 1.0 if peak <= 255.0 else 255.0 / peak
    else:
        scale = 255.0 / 65535.0
    grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    transparent = image.info.get("transparency")
    if isinstance(transparent, int):  # a 16-bit PNG's transparent grey value: those pixels are white
        grey[np.asarray(image) == transparent] = 255
    return Image.fromarray(grey, "L").convert("RGB")


@dataclass(frozen=True)
class ImagePreprocessor:
    image_size: int
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    resize_shortest_edge: int | None = None

    @classmethod
    def from_pretrained(cls, directory: str | Path, image_size: int) -> "ImagePreprocessor":
        """Read ``preprocessor_config.json`` if present; fall back to CLIP's statistics."""
        path = Path(directory) / "preprocessor_config.json"
        if not path.is_file():
            return cls(image_size=image_size)
        data = json.loads(path.read_text(encoding="utf-8"))
        crop = data.get("crop_size", image_size)
        crop = crop.get("height", image_size) if isinstance(crop, dict) else int(crop)
        size = data.get("size", crop)
        size = size.get("shortest_edge", crop) if isinstance(size, dict) else int(size)
        return cls(
            image_size=int(crop),
            mean=tuple(data.get("image_mean", OPENAI_MEAN)),
            std=tuple(data.get("image_std", OPENAI_STD)),
            resize_shortest_edge=int(size),
        )

    def to_config(self) -> dict:
        """The ``preprocessor_config.json`` that CLIPImageProcessor understands."""
        return {
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": True,
            "size": {"shortest_edge": self.resize_shortest_edge or self.image_size},
            "do_center_crop": True,
            "crop_size": {"height": self.image_size, "width": self.image_size},
            "do_normalize": True,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            "do_convert_rgb": True,
            "resample": 3,
        }

    def _resize_and_crop(self, image: Image.Image) -> Image.Image:
        image = to_rgb(image)
        target = self.resize_shortest_edge or self.image_size
        width, height = image.size
        if (width, height) != (target, target) or target != self.image_size:
            scale = target / min(width, height)
            new_size = (max(target, round(width * scale)), max(target, round(height * scale)))
            if new_size != image.size:
                image = image.resize(new_size, Image.BICUBIC)
            left = (image.width - self.image_size) // 2
            top = (image.height - self.image_size) // 2
            image = image.crop((left, top, left + self.image_size, top + self.image_size))
        return image

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """One PIL image -> normalised float tensor [3, H, W]."""
        array = np.array(self._resize_and_crop(image), dtype=np.uint8)  # a writable copy for torch
        return self.normalize_uint8(array[None])[0]

    def normalize_uint8(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """A batch of uint8 [N, H, W, 3] images already at the model's size -> [N, 3, H, W].

        The fast path for in-memory data sets such as the embedded benchmark.
        """
        batch = torch.as_tensor(images)
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected uint8 images [N, H, W, 3], got shape {tuple(batch.shape)}")
        if batch.shape[1] != self.image_size or batch.shape[2] != self.image_size:
            raise ValueError(
                f"images are {batch.shape[1]}x{batch.shape[2]} but the model expects "
                f"{self.image_size}x{self.image_size}; use the preprocessor on PIL images"
            )
        batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (batch - mean) / std
