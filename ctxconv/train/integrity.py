"""Digests that let a checkpoint prove it is the file training wrote.

Two layers, both sha256:

- **content digests**, stored inside the payload: one of the tensor payload (the
  ``state_dict``), one of the model config and one of everything else (data set info,
  normalisation, progress, optimizer state). They survive a re-save by another tool and
  name the part that changed.
- **a file seal**: the sha256 of every byte before it, written as the zip comment that
  ends a ``torch.save`` archive (``torch.load`` ignores it). It catches a flip anywhere in
  the file, including bytes ``torch.load`` would never look at, and any truncation.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from typing import Any

import torch

SEAL_PREFIX = b"ctxconv-sha256:"
_EOCD = b"PK\x05\x06"  # zip end-of-central-directory signature
_EOCD_SIZE = 22  # fixed part; the comment length is its last two bytes
DIGEST_KEYS = ("state_dict", "model_config")  # the rest is digested as "metadata"


class SealError(ValueError):
    """The file's bytes do not match its seal, or its end is not a whole zip archive."""


def _feed(h: Any, obj: Any) -> None:
    """Hash ``obj`` canonically: types, dict keys in sorted order, tensors by dtype/shape/bytes."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=lambda k: (type(k).__name__, repr(k))):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__[0]}{len(obj)}".encode())
        for item in obj:
            _feed(h, item)
    elif obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    else:
        raise TypeError(f"cannot digest a {type(obj).__name__} in a checkpoint")


def digest(obj: Any) -> str:
    """sha256 (hex) of a canonical encoding of nested dicts, lists, scalars and tensors."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def content_digests(payload: Mapping[str, Any], skip: tuple[str, ...] = ()) -> dict[str, str]:
    """{"state_dict", "model_config", "metadata"} digests of a checkpoint payload."""
    rest = {k: v for k, v in payload.items() if k not in DIGEST_KEYS and k not in skip}
    return {**{k: digest(payload.get(k)) for k in DIGEST_KEYS}, "metadata": digest(rest)}


def seal(archive: bytes) -> bytes:
    """``archive`` (a zip written by torch.save, no comment) with its sha256 as zip comment."""
    at = archive.rfind(_EOCD)
    if at < 0 or len(archive) != at + _EOCD_SIZE:
        raise ValueError("not a zip archive without comment: cannot seal it")
    comment_len = len(SEAL_PREFIX) + 64
    head = archive[: at + _EOCD_SIZE - 2] + struct.pack("<H", comment_len)
    return head + SEAL_PREFIX + hashlib.sha256(head).hexdigest().encode()


def check_seal(data: bytes) -> bool:
    """True if ``data`` is sealed and intact, False if it carries no seal (older files).

    Raises SealError when the bytes do not match the seal or the archive's end is cut off.
    """
    at = data.rfind(_EOCD, max(0, len(data) - _EOCD_SIZE - 0xFFFF))
    if at < 0 or len(data) < at + _EOCD_SIZE:
        raise SealError("it does not end with a zip directory (truncated, or not a checkpoint)")
    (comment_len,) = struct.unpack("<H", data[at + _EOCD_SIZE - 2 : at + _EOCD_SIZE])
    if len(data) != at + _EOCD_SIZE + comment_len:
        raise SealError("the file's length does not match its zip directory (truncated or cut)")
    if comment_len == 0:
        return False
    head, comment = data[: at + _EOCD_SIZE], data[at + _EOCD_SIZE :]
    if not comment.startswith(SEAL_PREFIX):
        raise SealError("the file ends with an unknown zip comment instead of its sha256 seal")
    if comment[len(SEAL_PREFIX) :].decode("ascii", "replace") != hashlib.sha256(head).hexdigest():
        raise SealError("its bytes do not match the sha256 recorded when it was written")
    return True
