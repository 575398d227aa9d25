"""What the readers of providers' layouts (cityscapes, voc, ade20k, coco_stuff, camvid, drive)
share: finding a split's files where the provider puts them, pairing images with masks, and
one-line errors that name the path and the layout expected. The examples are then read by
jaxseg.data.folder.FolderSource over the explicit (name, image, mask) pairs, so every reader
keeps the folder dataset's guarantees: allow-listed formats, the pixel cap, EXIF orientation,
stray mask values refused (or ignored with invalid_to_ignore), the file named in errors.
"""

from __future__ import annotations

import os

from jaxseg.data.folder import FolderSource


class LayoutError(FileNotFoundError):
    """A root that does not hold the provider's layout; the message is one line."""


def check_root(root: str, dataset: str, holds: str) -> str:
    """root, or a ValueError saying data.root must be set (holds: what the folder holds)."""
    if not root:
        raise ValueError(f"{dataset}: data.root is empty: set --config.data.root=DIR ({holds})")
    return root


def folder(path: str, dataset: str, layout: str) -> str:
    """path if it is a folder, else LayoutError naming it and the layout expected."""
    if not os.path.isdir(path):
        raise LayoutError(f"{dataset}: {path} is not a folder; expected {layout}")
    return path


def files(directory: str, suffix: str, dataset: str, layout: str, *, nested=False) -> dict:
    """{key: path relative to directory} of the files whose names end with suffix (matched
    without case), key the relative path less the suffix; hidden files skipped. nested: in
    the sub-folders (one level, as Cityscapes' cities) instead of directory itself. An
    absent folder or no such file is a LayoutError naming directory and the layout."""
    folder(directory, dataset, layout)
    found = {}
    subdirs = sorted(os.listdir(directory)) if nested else [""]
    for sub in subdirs:
        where = os.path.join(directory, sub)
        if sub.startswith(".") or not os.path.isdir(where):
            continue
        for name in sorted(os.listdir(where)):
            if name.startswith(".") or not name.lower().endswith(suffix.lower()):
                continue
            relative = os.path.join(sub, name) if sub else name
            found[relative[: len(relative) - len(suffix)]] = relative
    if not found:
        where = os.path.join(directory, "*", "") if nested else directory + os.sep
        raise LayoutError(f"{dataset}: no {where}*{suffix} files; expected {layout}")
    return found


def examples(shown: list[str], k: int = 3) -> str:
    more = f", ... ({len(shown) - k} more)" if len(shown) > k else ""
    return ", ".join(shown[:k]) + more


def pair(keys, image_of, mask_of, root: str, dataset: str) -> list[tuple[str, str, str]]:
    """[(name, image path, mask path)] relative to root for each key (sorted), where
    image_of(key) and mask_of(key) give the paths; the name is the key's file name. A key
    whose image or mask file is missing is a LayoutError naming the first missing files."""
    pairs, missing = [], []
    for key in sorted(keys):
        image, mask = image_of(key), mask_of(key)
        missing += [p for p in (image, mask) if not os.path.isfile(os.path.join(root, p))]
        pairs.append((os.path.basename(key), image, mask))
    if missing:
        shown = [os.path.join(root, p) for p in missing]
        raise LayoutError(f"{dataset}: {len(missing)} files missing: {examples(shown)}")
    return pairs


def folder_pairs(
    root: str,
    dataset: str,
    layout: str,
    images: tuple[str, str],
    masks: tuple[str, tuple[str, ...]],
    *,
    nested: bool = False,
    mask_key=lambda key: key,
) -> tuple[list[tuple[str, str, str]], str]:
    """(the (name, image, mask) pairs of a folder of images and a folder of masks, the mask
    suffix used): images = (folder relative to root, suffix), masks = (folder, suffixes in
    order of preference: the first every image has a mask with, else the last); a mask is
    mask_key(image key) + suffix. nested: the images sit in sub-folders (Cityscapes' cities)."""
    image_dir, image_suffix = images
    mask_dir, suffixes = masks
    keys = files(os.path.join(root, image_dir), image_suffix, dataset, layout, nested=nested)
    folder(os.path.join(root, mask_dir), dataset, layout)

    def has_all(suffix: str) -> bool:
        return all(os.path.isfile(os.path.join(root, mask_dir, mask_key(k) + suffix)) for k in keys)

    suffix = next((s for s in suffixes[:-1] if has_all(s)), suffixes[-1])
    found = pair(
        keys,
        lambda key: os.path.join(image_dir, key + image_suffix),
        lambda key: os.path.join(mask_dir, mask_key(key) + suffix),
        root,
        dataset,
    )
    return found, suffix


def read_list(path: str, dataset: str, layout: str) -> list[str]:
    """The names in a split list file (one a line, blank lines skipped; only the first
    field, as VOC's lists hold one name and some mirrors add a second column)."""
    if not os.path.isfile(path):
        raise LayoutError(f"{dataset}: split list {path} not found; expected {layout}")
    with open(path) as f:
        names = [line.split()[0] for line in f if line.strip()]
    if not names:
        raise LayoutError(f"{dataset}: split list {path} is empty; expected {layout}")
    return names


def source(root, split, pairs, *, class_names, palette, value_map, cls=FolderSource, **common):
    """cls (FolderSource or a subclass) over pairs, labelled with the dataset's palette.

    The palette is set after construction: FolderSource decodes RGB masks with its palette
    argument and so refuses a palette that repeats a colour, which COCO-Stuff's does; these
    readers' masks are class-index images, so the palette only labels the output."""
    built = cls(root, split, class_names=class_names, value_map=value_map, pairs=pairs, **common)
    built.palette = tuple(tuple(c) for c in palette)
    return built


def hex_palette(text: str) -> tuple[tuple[int, int, int], ...]:
    """((r, g, b), ...) of whitespace-separated RRGGBB hex colours (long palettes stay short)."""
    return tuple(tuple(int(c[i : i + 2], 16) for i in (0, 2, 4)) for c in text.split())
