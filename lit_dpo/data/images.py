"""The images of vision-language rows, as TRL's vision format holds them: an ``images`` column (a list) or an
``image`` column (one image). An image is a file path (relative to the data file's folder), its bytes, a PIL image
(a Hub data set's ``Image`` feature, decoded) or ``{"bytes": ..., "path": ...}`` (the feature undecoded, as
Parquet files hold it). Each becomes its encoded bytes (PIL images as PNG, losslessly), checked to open as an
image; a missing file or bytes that are no image stop the read with one line naming the file, row and field
(``images[1]``)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from lit_dpo.errors import DataError

IMAGE_COLUMNS = ("images", "image")


def images_column(images: tuple[bytes, ...]) -> dict[str, Any]:
    """A prompt's images as a judge's column (PIL images, as TRL's reward functions get them); none: no column."""
    return {"images": [decoded(data) for data in images]} if images else {}


def image_format(data: bytes) -> str:
    """The encoded image's format as a file extension (``png``, ``jpeg``, ...)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return (image.format or "png").lower()


def has_images(record: dict[str, Any]) -> bool:
    return any(record.get(column) is not None for column in IMAGE_COLUMNS)


def row_images(record: dict[str, Any], source: str, row: int) -> tuple[bytes, ...]:
    """The encoded bytes of a record's images, in order (none: an empty tuple)."""
    if record.get("images") is not None:
        value, column = record["images"], "images"
        if not isinstance(value, (list, tuple)):
            raise DataError.at(source, row, column, f"expected a list of images, got {type(value).__name__}")
    else:
        value, column = ([] if record.get("image") is None else [record["image"]]), "image"
    names = [f"{column}[{i}]" if column == "images" else column for i in range(len(value))]
    return tuple(image_bytes(item, source, row, name) for item, name in zip(value, names))


def image_bytes(value: Any, source: str, row: int, field: str) -> bytes:
    """One image as its encoded bytes, checked to open as an image."""
    if isinstance(value, dict):  # the Image feature, undecoded
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, str):
        data = _read(value, source, row, field)
    elif _is_pil(value):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        data = buffer.getvalue()
    else:
        raise DataError.at(
            source, row, field, f"expected an image path, bytes or a PIL image, got {type(value).__name__}"
        )
    _check_opens(data, source, row, field)
    return data


def _read(path: str, source: str, row: int, field: str) -> bytes:
    local = Path(path).expanduser()
    if not local.is_absolute() and Path(source).is_file():
        local = Path(source).parent / local  # relative to the data file, wherever the run starts
    try:
        return local.read_bytes()
    except OSError as err:
        raise DataError.at(source, row, field, f"cannot read image file {local} ({err.strerror})") from None


def decoded(data: bytes) -> Any:
    """An encoded image as the RGB PIL image processors and judges take."""
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


def _is_pil(value: Any) -> bool:
    from PIL import Image

    return isinstance(value, Image.Image)


def _check_opens(data: bytes, source: str, row: int, field: str) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()  # the structure, without decoding every pixel
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError.at(source, row, field, f"not a readable image ({reason[:100]})") from None
