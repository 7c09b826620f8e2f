"""A user's images (PNG, JPEG, ``.npy``) as the raw pixels an export reads: H x W x C uint8
in the dataset's stored range (``manifest.input.pixel_scale``: 0..255, or 0..16 for
scikit-learn's digits)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm")


class ImageError(ValueError):
    """An image that cannot be read or given to the model; the message says what to fix."""


@dataclass
class LoadedImage:
    """One image ready for the model, and what was done to it."""

    name: str
    raw: np.ndarray  # (H, W, C) uint8 in the dataset's range
    notes: list[str]


def model_input(manifest: dict[str, Any]) -> tuple[int, int, int, int]:
    """(H, W, C, largest raw pixel value) of the export's input."""
    ds = manifest["dataset"]
    top = int(round(1.0 / float(manifest["input"]["pixel_scale"])))
    return int(ds["image_size"]), int(ds["image_size"]), int(ds["in_channels"]), top


def _from_picture(path: Path, h: int, w: int, c: int, top: int) -> tuple[np.ndarray, list[str]]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            notes = []
            mode = "L" if c == 1 else "RGB"
            if im.mode != mode:
                notes.append(f"converted {im.mode} to {mode}")
                im = im.convert(mode)
            if im.size != (w, h):
                notes.append(f"resized {im.size[0]}x{im.size[1]} to {w}x{h}")
                im = im.resize((w, h), Image.BILINEAR)
            pixels = np.asarray(im, np.float64).reshape(h, w, c)
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from None
    if c not in (1, 3):
        raise ImageError(f"{path}: the model reads {c} channels; give a .npy of shape "
                         f"({h}, {w}, {c})")
    if top != 255:
        notes.append(f"scaled 0..255 to the model's 0..{top}")
    return np.rint(pixels * top / 255.0).astype(np.uint8), notes


def _from_npy(path: Path, h: int, w: int, c: int, top: int) -> list[np.ndarray]:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ImageError(f"{path}: not a readable .npy file ({exc})") from None
    dims = tuple(arr.shape)
    if dims == (h, w, c) or (c == 1 and dims == (h, w)):
        batch = False
    elif dims[1:] == (h, w, c) or (c == 1 and len(dims) == 3 and dims[1:] == (h, w)):
        batch = True
    else:
        want = f"({h}, {w}, {c})" + (f" or ({h}, {w})" if c == 1 else "")
        raise ImageError(f"{path}: shape {dims}; the model reads {want} (or a batch of them "
                         "with a leading axis), raw pixels as the dataset stores them")
    if arr.size == 0:
        raise ImageError(f"{path}: holds no image")
    if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > top:
        raise ImageError(f"{path}: pixels must be integers in 0..{top} (the dataset's raw "
                         f"range; got {arr.dtype} in {arr.min()}..{arr.max()})")
    arr = arr.astype(np.uint8).reshape((-1, h, w, c) if batch else (1, h, w, c))
    return list(arr)


def load_images(paths: list[str], manifest: dict[str, Any]) -> list[LoadedImage]:
    """Every image of ``paths`` (a .npy may hold a batch); raises ImageError naming the
    first one that cannot be used."""
    h, w, c, top = model_input(manifest)
    out: list[LoadedImage] = []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise ImageError(f"{name}: no such file")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            arrays = _from_npy(path, h, w, c, top)
            out += [LoadedImage(name if len(arrays) == 1 else f"{name}[{i}]", a, [])
                    for i, a in enumerate(arrays)]
        elif suffix in IMAGE_SUFFIXES:
            raw, notes = _from_picture(path, h, w, c, top)
            out.append(LoadedImage(name, raw, notes))
        else:
            raise ImageError(f"{name}: unknown image type {suffix or '(none)'}; give "
                             f"{', '.join(IMAGE_SUFFIXES)} or .npy")
    return out
