"""The shapes as unit polygons (radius about 1, y pointing down)."""

from __future__ import annotations

import math

Polygon = tuple[tuple[float, float], ...]


def _regular(n: int, radius: float = 1.0, start_deg: float = -90.0, inner: float | None = None) -> Polygon:
    """A regular n-gon, or an n-pointed star when ``inner`` is given."""
    steps = 2 * n if inner is not None else n
    points = []
    for k in range(steps):
        r = inner if inner is not None and k % 2 else radius
        a = math.radians(start_deg + 360.0 * k / steps)
        points.append((r * math.cos(a), r * math.sin(a)))
    return tuple(points)


def _heart() -> Polygon:
    ts = (2 * math.pi * k / 40 for k in range(40))
    pts = [(16 * math.sin(t) ** 3, -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))) for t in ts]
    return tuple((x / 16.5, (y + 2.5) / 15.0) for x, y in pts)


def _cross(arm: float = 0.34) -> Polygon:
    a, b = arm, 1.0
    return ((-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a))


UNIT_SHAPES: dict[str, Polygon] = {
    "circle": _regular(32),
    "square": ((-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)),
    "triangle": tuple((x * 1.1, y * 1.1 + 0.22) for x, y in _regular(3)),
    "diamond": ((0.0, -1.05), (0.72, 0.0), (0.0, 1.05), (-0.72, 0.0)),
    "star": _regular(5, inner=0.45),
    "cross": _cross(),
    "heart": _heart(),
    "hexagon": _regular(6, start_deg=0.0),
    "arrow": ((-1.0, -0.28), (0.15, -0.28), (0.15, -0.75), (1.0, 0.0), (0.15, 0.75), (0.15, 0.28), (-1.0, 0.28)),
}
