"""Pictures of predictions: class colours, palette masks, overlays, the confusion matrix."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def default_palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """PASCAL VOC's colour map (the bits of the class index spread over R, G and B, high
    bits first): class 0 black, 1 dark red, 2 dark green, ...; distinct for 2**24 classes."""
    colours = []
    for k in range(num_classes):
        r = g = b = 0
        index = k
        for shift in range(7, -1, -1):
            r |= (index & 1) << shift
            g |= ((index >> 1) & 1) << shift
            b |= ((index >> 2) & 1) << shift
            index >>= 3
        colours.append((r, g, b))
    return tuple(colours)


def colorize(labels: np.ndarray, palette) -> np.ndarray:
    """u8[H,W,3] colours of class indices int[H,W]; indices outside the palette are white."""
    table = np.full((max(len(palette), int(labels.max(initial=0)) + 1), 3), 255, np.uint8)
    table[: len(palette)] = np.asarray(palette, np.uint8).reshape(-1, 3)
    return table[labels]


def overlay(image: np.ndarray, labels: np.ndarray, palette, opacity: float = 0.5) -> np.ndarray:
    """u8[H,W,3]: image u8[H,W,3] blended with the class colours of labels int[H,W].

    Pillow blends in u8 without float copies of the image (an 8192x8192 image would need
    three 800 MB float32 arrays otherwise)."""
    colours = Image.fromarray(colorize(labels, palette))
    return np.asarray(Image.blend(Image.fromarray(image), colours, opacity))


def label_image(labels: np.ndarray, palette) -> Image.Image:
    """Class indices int[H,W] as a palette ("P") PNG image with the class colours embedded,
    or, above 256 classes, a 16-bit greyscale image of the indices (PNG holds no larger
    palette)."""
    if len(palette) <= 256:
        img = Image.fromarray(labels.astype(np.uint8), mode="P")
        flat = [c for colour in palette for c in colour]
        img.putpalette(flat + [0] * (768 - len(flat)))
        return img
    return Image.fromarray(labels.astype(np.uint16), mode="I;16")


def confusion_image(confusion: np.ndarray, class_names, cell: int = 36) -> Image.Image:
    """The row-normalised confusion matrix (rows: truth, columns: prediction) as an RGB
    image: white to dark blue cells with the percentage, class names left of each row and
    class indices above the columns."""
    cm = np.asarray(confusion, np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(class_names)
    font = ImageFont.load_default(size=max(8, cell // 3))
    labels = [f"{i} {name}" for i, name in enumerate(class_names)]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(int(probe.textlength(t, font=font)) for t in labels) + 12
    title = "rows: true class, columns: predicted class; % of each row"
    width = max(label_w + k * cell, int(probe.textlength(title, font=font))) + 8
    top = cell + 24
    img = Image.new("RGB", (width, top + k * cell + 8), "white")
    draw = ImageDraw.Draw(img)
    draw.text((4, 4), title, "black", font)
    for j in range(k):
        draw.text((label_w + j * cell + cell // 2, top - 4), str(j), "black", font, anchor="mb")
    for i in range(k):
        y = top + i * cell
        draw.text((label_w - 6, y + cell // 2), labels[i], "black", font, anchor="rm")
        for j in range(k):
            v = share[i, j]
            colour = tuple(int(255 - v * (255 - c)) for c in (8, 48, 107))
            x = label_w + j * cell
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=colour, outline=(200,) * 3)
            if rows[i, 0] > 0:
                ink = "white" if v > 0.5 else "black"
                draw.text((x + cell // 2, y + cell // 2), f"{100 * v:.0f}", ink, font, "mm")
    return img
