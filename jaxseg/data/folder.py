"""A folder of images and a folder of masks, paired by file stem, as a grain-compatible source.

    root/images/a.jpg   root/masks/a.png
    root/images/b.png   root/masks/b.png

Masks are class-index images ("P" palette indices, or "L"/"I;16"/"I" integer values, optionally
remapped with `value_map`) or RGB colour-coded images decoded with `palette`. Every decoded
mask is checked: values are in [0, K) or ignore_index, else the file is named in the error.

Splits come from list files of stems (`split_files`) or a seeded shuffle of all stems
(`split_ratio` to train, the rest to val): the same split on every host."""

from __future__ import annotations

import hashlib
import logging
import operator
import os

import numpy as np
from PIL import Image

from jaxseg.data import images as image_io
from jaxseg.data.pipeline import bad_values, distinct_values
from jaxseg.data.table import register

IMAGE_EXTENSIONS = image_io.EXTENSIONS
_INTEGER_MASK_MODES = ("1", "L", "P", "I", *image_io.SIXTEEN_BIT)

log = logging.getLogger(__name__)


class BadExampleError(image_io.ImageError):
    """An image/mask pair that cannot be used; the message names the file(s)."""


def _examples(names: list[str], k: int = 5) -> str:
    shown = ", ".join(names[:k])
    return shown + (f", ... ({len(names) - k} more)" if len(names) > k else "")


def _list_stems(directory: str, kind: str) -> dict[str, str]:
    """stem -> file name for the image files in `directory` (hidden files and others ignored)."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{kind} directory not found: {directory}")
    found: dict[str, str] = {}
    for name in sorted(os.listdir(directory)):
        stem, ext = os.path.splitext(name)
        # Dot files include macOS "._a.png" resource forks, which look like images but are not.
        if name.startswith(".") or ext.lower() not in IMAGE_EXTENSIONS:
            continue
        if not os.path.isfile(os.path.join(directory, name)):
            continue
        if stem in found:
            raise ValueError(
                f"two {kind} files share the stem {stem!r} in {directory}: {found[stem]}, {name}"
            )
        found[stem] = name
    return found


def _colours(codes: np.ndarray) -> list[tuple[int, int, int]]:
    return [(int(c) >> 16, (int(c) >> 8) & 255, int(c) & 255) for c in codes]


class FolderSource:
    """Grain-compatible random-access source over root/images_dir and root/masks_dir.

    Example i is {"image": u8[H,W,3] (channels=3; else u8 or u16[H,W,channels]), "mask":
    u8[H,W] (i32[H,W] when K or ignore_index exceed 255), "name": str (the file stem)}; mask
    values are in [0, K) or ignore_index.
    """

    def __init__(
        self,
        root: str,
        split: str = "train",
        *,
        images_dir: str = "images",
        masks_dir: str = "masks",
        class_names: tuple[str, ...],
        value_map: dict[int, int] | None = None,
        palette: tuple[tuple[int, int, int], ...] | None = None,
        split_files: dict[str, str] | None = None,
        pairs: list[tuple[str, str, str]] | None = None,
        split_ratio: float = 0.8,
        seed: int = 0,
        ignore_index: int = 255,
        max_pixels: int = 89_478_485,
        skip_bad: bool = False,
        invalid_to_ignore: bool = False,
        channels: int = 3,
    ):
        """Args:
        root: dataset folder holding images_dir and masks_dir (and any split list files).
        split: a key of split_files, or "train"/"val" for the ratio split.
        class_names: K names; mask values must end up in [0, K) or ignore_index.
        value_map: stored integer mask value -> class index (e.g. {0: 0, 255: 1}); a value
          missing from the map is an error.
        palette: palette[k] is the RGB colour of class k in RGB colour-coded masks.
        split_files: split -> list file (one stem a line, relative to root), or a tuple of stems.
        pairs: the split's examples as (name, image path, mask path), paths relative to root,
          paired by the caller (a provider's layout: jaxseg.data.layout); images_dir,
          masks_dir and the split options are then unused.
        split_ratio, seed: without split_files, a seeded shuffle of the sorted stems puts the
          first round(ratio * N) in "train" and the rest in "val".
        max_pixels: images or masks with more pixels are refused (decompression bombs).
        skip_bad: decode every pair of the split now and drop the bad ones, recording them in
          `self.skipped` as (stem, reason); otherwise a bad pair raises when it is read.
        invalid_to_ignore: mask values that are no class (outside [0, K), missing from
          value_map, or colours not in the palette) become ignore_index instead of an error.
        channels: 3 reads every image as u8 RGB; another count reads each file's own bands
          (a file with another count is refused).
        """
        self.root = root
        self.split = split
        self.class_names = tuple(class_names)
        if not self.class_names:
            raise ValueError("class_names must not be empty")
        self.ignore_index = int(ignore_index)
        self.max_pixels = int(max_pixels)
        self.invalid_to_ignore = bool(invalid_to_ignore)
        self.channels = int(channels)
        self.value_map = (
            None if value_map is None else {int(k): int(v) for k, v in value_map.items()}
        )
        self._palette_keys, self._palette_classes = self._palette_lookup(palette)
        self.palette = palette  # what labels the output (dataset.json), when masks have one
        num_classes = len(self.class_names)
        fits_u8 = num_classes <= 256 and 0 <= self.ignore_index <= 255
        self._mask_dtype = np.uint8 if fits_u8 else np.int32
        image_io.allow_pixels(self.max_pixels)

        if pairs is None:
            self._images_path = os.path.join(root, images_dir)
            self._masks_path = os.path.join(root, masks_dir)
            images, masks = _paired_stems(self._images_path, self._masks_path)
            stems = self._split_stems(sorted(images), split, split_files, split_ratio, seed)
            self._pairs = [(s, images[s], masks[s]) for s in stems]
        else:
            self._images_path = self._masks_path = root
            self._pairs = [tuple(p) for p in pairs]
            if not self._pairs:
                raise ValueError(f"split {split!r} of {root} is empty")
        self.skipped: list[tuple[str, str]] = []
        if skip_bad:
            self._pairs, self.skipped = _drop_bad(
                self._pairs, self._load, f"split {split!r} in {root}"
            )

    def _palette_lookup(self, palette):
        """Sorted 24-bit colour codes and the class of each, for searchsorted decoding."""
        if palette is None:
            return None, None
        if len(palette) != len(self.class_names):
            raise ValueError(
                f"palette has {len(palette)} colours for {len(self.class_names)} classes"
            )
        codes = np.array([(r << 16) | (g << 8) | b for r, g, b in palette], dtype=np.int64)
        if len(np.unique(codes)) != len(codes):
            raise ValueError(f"palette repeats a colour: {palette}")
        order = np.argsort(codes)
        return codes[order], order.astype(np.int32)

    def _split_stems(self, stems, split, split_files, split_ratio, seed) -> list[str]:
        if split_files is not None:
            if split not in split_files:
                raise ValueError(f"unknown split {split!r}; split_files has {sorted(split_files)}")
            path = split_files[split]
            if isinstance(path, list | tuple):  # the stems themselves (dataset presets)
                listed, path = [str(s) for s in path], f"<{split} stems>"
            else:
                path = os.path.join(self.root, path)
                if not os.path.isfile(path):
                    raise FileNotFoundError(f"split list for {split!r} not found: {path}")
                with open(path) as f:
                    listed = [
                        ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")
                    ]
            # Lists often hold file names rather than stems; accept both.
            listed = [
                os.path.splitext(s)[0] if s.lower().endswith(IMAGE_EXTENSIONS) else s
                for s in listed
            ]
            if len(set(listed)) != len(listed):
                dupes = sorted({s for s in listed if listed.count(s) > 1})
                raise ValueError(f"split list {path} repeats stems: {_examples(dupes)}")
            unknown = sorted(set(listed) - set(stems))
            if unknown:
                raise ValueError(
                    f"split list {path} names {len(unknown)} stems with no image/mask pair: "
                    f"{_examples(unknown)}"
                )
            chosen = sorted(listed)
        else:
            if split not in ("train", "val"):
                raise ValueError(f"unknown split {split!r}; without split_files: train, val")
            if not 0.0 <= split_ratio <= 1.0:
                raise ValueError(f"split_ratio must be in [0, 1], got {split_ratio}")
            perm = np.random.default_rng(seed).permutation(len(stems))
            n_train = int(round(split_ratio * len(stems)))
            picked = perm[:n_train] if split == "train" else perm[n_train:]
            chosen = sorted(stems[i] for i in picked)
        if not chosen:
            raise ValueError(f"split {split!r} of {self.root} is empty")
        return chosen

    def __len__(self) -> int:
        return len(self._pairs)

    def image_file(self, index: int) -> str:
        """The path of example index's image file (jaxseg.pack stores its bytes as they are)."""
        return os.path.join(self._images_path, self._pairs[index][1])

    def __getitem__(self, index: int) -> dict:
        """Returns {"image": u8[H,W,3], "mask": u8 or i32[H,W], "name": str}."""
        index = operator.index(index)  # accepts numpy integers, as grain passes them
        if not 0 <= index < len(self._pairs):
            raise IndexError(f"index {index} out of range for FolderSource of length {len(self)}")
        return self._load(*self._pairs[index])

    def _open(self, path: str) -> Image.Image:
        """Opens and decodes one file; every failure becomes a BadExampleError naming it."""
        try:
            return image_io.open_image(path, self.max_pixels)
        except image_io.ImageError as e:
            raise BadExampleError(str(e)) from e

    def _load(self, stem: str, image_name: str, mask_name: str) -> dict:
        image_path = os.path.join(self._images_path, image_name)
        mask_path = os.path.join(self._masks_path, mask_name)
        # Annotation tools display (and so annotate) images as viewers do, EXIF-rotated:
        # the image comes back upright, and its shown size is what the mask must have.
        try:
            image, orientation = (
                image_io.read_rgb_upright(image_path, self.max_pixels)
                if self.channels == 3  # else each file's own bands, u8 or u16
                else image_io.read_bands_upright(image_path, self.max_pixels, self.channels)
            )
        except image_io.ImageError as e:
            raise BadExampleError(str(e)) from e
        mask = self._open(mask_path)
        shown = image.shape[1], image.shape[0]
        if mask.size != shown:
            stored = shown[::-1] if orientation in image_io.SWAPS_AXES else shown
            detail = f" (EXIF orientation {orientation} gives {shown[0]}x{shown[1]})"
            if shown != stored and mask.size == stored:
                detail += (
                    "; the mask matches the stored, unrotated pixels: remove the EXIF "
                    "orientation tag or rotate the mask"
                )
            raise BadExampleError(
                f"size mismatch: image {image_path} is {stored[0]}x{stored[1]} (WxH), "
                f"mask {mask_path} is {mask.width}x{mask.height}"
                + (detail if orientation != 1 else "")
            )
        return {"image": image, "mask": self._mask_array(mask, mask_path), "name": stem}

    def _mask_array(self, img: Image.Image, path: str) -> np.ndarray:
        """u8/i32[H,W] class indices or ignore_index."""
        if img.mode in ("RGB", "RGBA"):
            mask = self._decode_colours(np.asarray(img)[..., :3], path)
        elif img.mode in _INTEGER_MASK_MODES:
            # For "P" this is the palette index, which is the class; convert("L") would replace
            # it with the luminance of the palette colour.
            values = np.asarray(img)
            if values.dtype == np.bool_:
                values = values.astype(np.uint8)
            if self.value_map is not None:
                return self._apply_value_map(values, path)
            mask = values
        else:
            raise BadExampleError(
                f"{path}: unsupported mask mode {img.mode}; use one of "
                f"{', '.join(_INTEGER_MASK_MODES)} or RGB/RGBA with a palette"
            )
        bad = bad_values(mask, len(self.class_names), self.ignore_index)
        if bad.size and self.invalid_to_ignore:
            mask = np.where(np.isin(mask, bad), self.ignore_index, mask)
        elif bad.size:
            raise BadExampleError(
                f"{path}: mask values {bad[:10].tolist()} are outside [0, {len(self.class_names)})"
                f" and not ignore_index={self.ignore_index}"
                + ("" if self.value_map is not None else "; pass value_map to remap them")
            )
        return mask.astype(self._mask_dtype, copy=False)

    def _apply_value_map(self, values: np.ndarray, path: str) -> np.ndarray:
        """values int[H,W] mapped through value_map and checked, as u8/i32[H,W]. The map and
        the check act on the distinct values; pixels go through one table lookup."""
        if values.dtype == np.uint8:  # one table over all 256 values, -1 for unmapped
            return self._apply_value_table(values, path)
        present = distinct_values(values)
        missing = [int(v) for v in present if int(v) not in self.value_map]
        if missing and not self.invalid_to_ignore:
            raise BadExampleError(
                f"{path}: mask values {missing[:10]} are not in value_map "
                f"(keys {sorted(self.value_map)[:10]})"
            )
        mapped = np.array(
            [self.value_map.get(int(v), self.ignore_index) for v in present], dtype=np.int64
        )
        bad = bad_values(mapped, len(self.class_names), self.ignore_index)
        if bad.size and not self.invalid_to_ignore:
            raise BadExampleError(
                f"{path}: mask values {np.unique(bad)[:10].tolist()} are outside "
                f"[0, {len(self.class_names)}) and not ignore_index={self.ignore_index} "
                "(given by value_map)"
            )
        mapped[np.isin(mapped, bad)] = self.ignore_index
        mapped = mapped.astype(self._mask_dtype)
        # present is sorted, so searchsorted gives each pixel's position in it.
        return mapped[np.searchsorted(present, values)]

    def _apply_value_table(self, values: np.ndarray, path: str) -> np.ndarray:
        """_apply_value_map for u8 masks: a 256-entry table, the checks on its entries and
        on the pixels that hit an unmapped one."""
        num_classes = len(self.class_names)
        table = np.full(256, -1, np.int64)
        for k, v in self.value_map.items():
            if 0 <= k < 256:
                table[k] = v
        wrong = (table >= num_classes) & (table != self.ignore_index) | (table < -1)
        if wrong.any() and not self.invalid_to_ignore:
            used = np.flatnonzero(wrong)
            used = used[np.isin(used, values)] if used.size else used
            if used.size:
                raise BadExampleError(
                    f"{path}: mask values {np.unique(table[used])[:10].tolist()} are outside "
                    f"[0, {num_classes}) and not ignore_index={self.ignore_index} "
                    "(given by value_map)"
                )
        table[wrong] = self.ignore_index
        mapped = np.take(table.astype(np.int16), values)
        if mapped.min() < 0:
            missing = np.unique(values[mapped < 0])
            if not self.invalid_to_ignore:
                raise BadExampleError(
                    f"{path}: mask values {missing[:10].tolist()} are not in value_map "
                    f"(keys {sorted(self.value_map)[:10]})"
                )
            mapped[mapped < 0] = self.ignore_index
        return mapped.astype(self._mask_dtype)

    def _decode_colours(self, rgb: np.ndarray, path: str) -> np.ndarray:
        if self._palette_keys is None:
            raise BadExampleError(
                f"{path} is an RGB colour-coded mask; pass palette (one RGB colour per class)"
            )
        codes = (
            (rgb[..., 0].astype(np.int64) << 16)
            | (rgb[..., 1].astype(np.int64) << 8)
            | rgb[..., 2].astype(np.int64)
        )
        keys = self._palette_keys
        pos = np.minimum(np.searchsorted(keys, codes), len(keys) - 1)
        known = keys[pos] == codes
        if not known.all() and not self.invalid_to_ignore:
            unknown = np.unique(codes[~known])
            raise BadExampleError(
                f"{path}: {int((~known).sum())} pixels have colours not in the palette, "
                f"first {_colours(unknown[:5])}"
            )
        return np.where(known, self._palette_classes[pos], self.ignore_index)

    def __repr__(self) -> str:
        # The caches' key (class weights, channel stats, class presence): the digest names the
        # split's files, which a seeded split (and so each replica of config.seeds) changes.
        bands = "" if self.channels == 3 else f", channels={self.channels}"
        files = hashlib.sha1("\n".join(str(p[1]) for p in self._pairs).encode()).hexdigest()
        return (
            f"FolderSource(root={self.root!r}, split={self.split!r}, len={len(self)}, "
            f"files={files[:12]}, classes={len(self.class_names)}, "
            f"skipped={len(self.skipped)}{bands})"
        )


@register("folder")
def build(
    split: str,
    *,
    root: str = "",
    class_names: tuple = (),
    value_map=(),
    palette=(),
    train_list="",
    val_list="",
    test_list="",
    split_ratio=0.8,
    seed=0,
    ignore_index=255,
    max_pixels=89_478_485,
    skip_bad=False,
    invalid_to_ignore=False,
    channels=3,
):
    if not root:
        raise ValueError("data.root is empty: set --config.data.root=DIR (images/ and masks/)")
    if not class_names:
        raise ValueError("data.class_names is empty: name the classes of the folder dataset")
    if split == "test":  # only from a list: the ratio split divides stems into train and val
        if not test_list:
            raise ValueError("the folder dataset has no test split: set data.test_list=FILE")
        lists = {"test": test_list}
    else:
        lists = {"train": train_list, "val": val_list} if train_list or val_list else {}
    return FolderSource(
        root,
        split,
        class_names=tuple(class_names),
        value_map=dict(value_map) or None,
        palette=tuple(tuple(c) for c in palette) or None,
        split_files=lists or None,
        split_ratio=split_ratio,
        seed=seed,
        ignore_index=ignore_index,
        max_pixels=max_pixels,
        skip_bad=skip_bad,
        invalid_to_ignore=invalid_to_ignore,
        channels=channels,
    )


def _paired_stems(images_path: str, masks_path: str) -> tuple[dict, dict]:
    """({stem: image file}, {stem: mask file}) of two folders whose stems pair up one to one;
    ValueError saying what was found otherwise."""
    images = _list_stems(images_path, "images")
    masks = _list_stems(masks_path, "masks")
    no_mask = sorted(set(images) - set(masks))
    no_image = sorted(set(masks) - set(images))
    found = f"found {len(images)} images in {images_path}, {len(masks)} masks in {masks_path}"
    if not images or not masks:
        raise ValueError(f"no image/mask pairs: {found} (extensions {IMAGE_EXTENSIONS})")
    if no_mask or no_image:
        raise ValueError(
            f"images and masks do not pair up by stem: {found}; "
            f"{len(no_mask)} images without masks [{_examples(no_mask)}], "
            f"{len(no_image)} masks without images [{_examples(no_image)}]"
        )
    return images, masks


def _drop_bad(pairs: list[tuple], load, where: str) -> tuple[list[tuple], list[tuple[str, str]]]:
    """(the pairs load(*pair) reads, [(stem, reason)] of those it refuses with
    BadExampleError), logged; ValueError when none is left. where: "split 'x' in <root>"."""
    good, skipped = [], []
    for pair in pairs:
        try:
            load(*pair)
        except BadExampleError as e:
            skipped.append((pair[0], str(e)))
        else:
            good.append(pair)
    if skipped:
        log.warning(
            "FolderSource %s: skipped %d of %d bad examples [%s]",
            where,
            len(skipped),
            len(pairs),
            _examples([s for s, _ in skipped]),
        )
    if not good:
        raise ValueError(
            f"every example of {where} is bad: " + ("; ".join(r for _, r in skipped[:3]))
        )
    return good, skipped
