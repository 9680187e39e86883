"""A training-loss curve drawn with Pillow: raw losses in a light line, their moving average in a bold one.

Knows nothing of nodes or training; takes a list of losses and returns a PIL image.
"""
from __future__ import annotations

from typing import Any, Sequence

BACKGROUND = (255, 255, 255)
AXES = (60, 60, 60)
GRID = (225, 225, 225)
RAW = (150, 185, 230)
SMOOTH = (200, 60, 40)
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 16, 28, 32


def moving_average(values: Sequence[float], window: int) -> list[float]:
    averaged, running = [], 0.0
    for index, value in enumerate(values):
        running += value
        if index >= window:
            running -= values[index - window]
        averaged.append(running / min(index + 1, window))
    return averaged


def loss_plot(losses: Sequence[float], width: int = 512, height: int = 320, first_step: int = 0,
              title: str = "loss") -> Any:
    """The curve of `losses` (step first_step+1 onwards) with axis labels and the latest value in the title."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, right, top, bottom = MARGIN_LEFT, width - MARGIN_RIGHT, MARGIN_TOP, height - MARGIN_BOTTOM
    values = [float(value) for value in losses]
    heading = f"{title}: {values[-1]:.4g} at step {first_step + len(values)}" if values else f"{title}: no steps"
    draw.text((left, 8), heading, fill=AXES, font=font)
    draw.rectangle((left, top, right, bottom), outline=AXES)
    if not values:
        return image
    low, high = min(values), max(values)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    for fraction in (0.25, 0.5, 0.75):
        y = bottom - fraction * (bottom - top)
        draw.line((left + 1, y, right - 1, y), fill=GRID)
    for value, y in ((high, top), (low, bottom)):
        draw.text((4, y - 6), f"{value:.3g}", fill=AXES, font=font)
    draw.text((left, bottom + 8), str(first_step + 1), fill=AXES, font=font)
    draw.text((right - 40, bottom + 8), str(first_step + len(values)), fill=AXES, font=font)

    def points(series: Sequence[float]) -> list[tuple[float, float]]:
        span = max(len(series) - 1, 1)
        return [(left + (right - left) * index / span, bottom - (bottom - top) * (value - low) / (high - low))
                for index, value in enumerate(series)]

    window = max(1, len(values) // 10)
    for series, colour, line_width in ((values, RAW, 1), (moving_average(values, window), SMOOTH, 2)):
        coordinates = points(series)
        if len(coordinates) == 1:
            x, y = coordinates[0]
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
        else:
            draw.line(coordinates, fill=colour, width=line_width)
    return image


class LossPreview:
    """A progress preview that draws the curve only when someone asks for the image (`to_image`)."""

    def __init__(self, losses: Sequence[float], first_step: int = 0) -> None:
        self.losses = tuple(losses)
        self.first_step = first_step

    @property
    def loss(self) -> float | None:
        return self.losses[-1] if self.losses else None

    def to_image(self) -> Any:
        return loss_plot(self.losses, first_step=self.first_step)
