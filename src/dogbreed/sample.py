"""``dogbreed make-sample``: a small synthetic set in the dogImages layout, made here, no download.

Each "breed" is a shape with its own colour scheme, drawn at a random place, size and angle over a
noisy background, so a small network learns it well above chance in a short CPU run while a
constant guess does not.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

BREEDS = [
    "Affenpinscher", "Beagle", "Border_collie", "Dalmatian", "Golden_retriever",
    "Papillon", "Pug", "Samoyed", "Shiba_inu", "Whippet",
]
SHAPES = ["circle", "square", "triangle", "cross", "ring", "star", "bar", "diamond", "dots", "stripes"]
PALETTE = [
    (200, 40, 40), (40, 160, 60), (40, 70, 200), (220, 180, 30), (150, 50, 180),
    (30, 170, 170), (230, 110, 20), (120, 120, 120), (240, 120, 170), (90, 60, 30),
]
SPLIT_SIZES = {"train": 40, "valid": 10, "test": 10}


def _polygon(cx, cy, r, points, angle, inner=None):
    coords = []
    count = points * (2 if inner else 1)
    for i in range(count):
        radius = (inner if (inner and i % 2) else r)
        theta = angle + 2 * math.pi * i / count
        coords.append((cx + radius * math.cos(theta), cy + radius * math.sin(theta)))
    return coords


def draw_example(label: int, size: int, rng: random.Random) -> Image.Image:
    background = tuple(rng.randint(60, 200) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    noise = Image.effect_noise((size, size), 40).convert("RGB")
    image = Image.blend(image, noise, 0.25)
    draw = ImageDraw.Draw(image)
    color = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in PALETTE[label % len(PALETTE)])
    shape = SHAPES[label % len(SHAPES)]
    r = rng.uniform(0.18, 0.32) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    angle = rng.uniform(0, 2 * math.pi)
    width = max(2, int(r / 4))
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, r, 4, angle), fill=color)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, r, 3, angle), fill=color)
    elif shape == "cross":
        for a in (angle, angle + math.pi / 2):
            dx, dy = r * math.cos(a), r * math.sin(a)
            draw.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=color, width=width)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=color, width=width)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, r, 5, angle, inner=r * 0.45), fill=color)
    elif shape == "bar":
        dx, dy = r * math.cos(angle), r * math.sin(angle)
        draw.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=color, width=width * 2)
    elif shape == "diamond":
        draw.polygon(_polygon(cx, cy, r, 4, math.pi / 4 + rng.uniform(-0.2, 0.2)), fill=color)
    elif shape == "dots":
        for _ in range(6):
            x, y = rng.uniform(0, size), rng.uniform(0, size)
            draw.ellipse((x - r / 4, y - r / 4, x + r / 4, y + r / 4), fill=color)
    else:  # stripes
        for k in range(-3, 4):
            offset = k * r / 2
            dx, dy = size * math.cos(angle), size * math.sin(angle)
            ox, oy = offset * -math.sin(angle), offset * math.cos(angle)
            draw.line((cx + ox - dx, cy + oy - dy, cx + ox + dx, cy + oy + dy), fill=color, width=width)
    return image.filter(ImageFilter.GaussianBlur(0.6))


def make_sample(root: Path, classes: int = 5, size: int = 160, seed: int = 0, per_split: dict | None = None) -> dict:
    """Write ``root/{train,valid,test}/NNN.Breed/Breed_NNNNN.jpg``; returns the image counts."""
    if not 2 <= classes <= len(BREEDS):
        raise ValueError(f"classes must be between 2 and {len(BREEDS)}")
    per_split = per_split or SPLIT_SIZES
    root = Path(root)
    counts = {}
    serial = 0
    for split_index, (split, count) in enumerate(per_split.items()):
        rng = random.Random(seed * 1000 + split_index)
        total = 0
        for label in range(classes):
            folder = root / split / f"{label + 1:03d}.{BREEDS[label]}"
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(count):
                serial += 1
                draw_example(label, size, rng).save(folder / f"{BREEDS[label]}_{serial:05d}.jpg", quality=90)
                total += 1
        counts[split] = total
    return counts
