"""A folder of pictures with captions, the simplest way to bring one's own images.

Captions come from either a JSONL file, one object per line:

    {"image": "relative/path.jpg", "captions": ["...", "..."]}
    {"image": "relative/path.jpg", "caption": "..."}        (lines of one image are grouped)

or a COCO-style captions json (`images` [{id, file_name}], `annotations` [{image_id, caption}]),
with paths relative to the folder. Every image gets exactly `captions_per_image` captions, since
the retrieval protocols assume a fixed number per image: extra captions are dropped (the first
ones are kept, in file order), and fewer is an error unless `allow_fewer=True`, which repeats an
image's captions cyclically up to the count. All files are checked to exist at construction so
a typo fails before hours of extraction; images are decoded lazily.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

from teran.data.base import ImageCaptions


class ImageFolderCaptions(ImageCaptions):
    """Images under `root` with their captions; `image_id` is the relative path sans extension."""

    def __init__(
        self,
        root: str | Path,
        entries: Iterable[tuple[str, Sequence[str]]],
        captions_per_image: int = 5,
        allow_fewer: bool = False,
        source: str | Path | None = None,
    ) -> None:
        if captions_per_image < 1:
            raise ValueError(f"captions_per_image must be >= 1, got {captions_per_image}")
        self.root = Path(root)
        self.captions_per_image = captions_per_image
        origin = f"{source}: " if source is not None else ""
        self._paths: list[str] = []
        self._captions: list[list[str]] = []
        ids: dict[str, str] = {}
        for rel, captions in entries:
            pure = PurePosixPath(rel)
            if pure.is_absolute() or ".." in pure.parts or not pure.parts:
                raise ValueError(f"{origin}image path {rel!r} must be relative, inside {root}")
            image_id = str(pure.with_suffix(""))
            if image_id in ids:
                raise ValueError(
                    f"{origin}images {ids[image_id]!r} and {rel!r} share the id {image_id!r}"
                )
            ids[image_id] = rel
            self._paths.append(rel)
            self._captions.append(self._fit(list(captions), rel, origin, allow_fewer))
        if not self._paths:
            raise ValueError(f"{origin}no images")
        self._ids = list(ids)
        missing = [str(self.root / rel) for rel in self._paths if not (self.root / rel).is_file()]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise FileNotFoundError(f"{origin}missing image files: {', '.join(missing[:5])}{more}")

    def _fit(self, captions: list[str], rel: str, origin: str, allow_fewer: bool) -> list[str]:
        n = self.captions_per_image
        if not captions:
            raise ValueError(f"{origin}image {rel!r} has no captions")
        if len(captions) < n:
            if not allow_fewer:
                raise ValueError(
                    f"{origin}image {rel!r} has {len(captions)} captions, needs {n} "
                    "(pass allow_fewer=True to repeat them)"
                )
            captions = [captions[i % len(captions)] for i in range(n)]
        return captions[:n]

    @classmethod
    def from_jsonl(
        cls,
        path: str | Path,
        root: str | Path | None = None,
        captions_per_image: int = 5,
        allow_fewer: bool = False,
    ) -> ImageFolderCaptions:
        """Captions from a JSONL file; `root` defaults to the file's folder."""
        path = Path(path)
        grouped: dict[str, list[str]] = {}
        for number, line in enumerate(_read_text(path).splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e})") from e
            if not isinstance(record, dict) or not isinstance(record.get("image"), str):
                raise ValueError(f"{where}: expected an object with a string 'image'")
            if "captions" in record:
                captions = record["captions"]
                if not isinstance(captions, list):
                    raise ValueError(f"{where}: 'captions' must be a list of strings")
            elif "caption" in record:
                captions = [record["caption"]]
            else:
                raise ValueError(f"{where}: no 'captions' or 'caption'")
            if not all(isinstance(c, str) for c in captions):
                raise ValueError(f"{where}: captions must be strings")
            grouped.setdefault(record["image"], []).extend(captions)
        return cls(
            path.parent if root is None else root,
            grouped.items(),
            captions_per_image=captions_per_image,
            allow_fewer=allow_fewer,
            source=path,
        )

    @classmethod
    def from_coco_json(
        cls,
        path: str | Path,
        root: str | Path | None = None,
        captions_per_image: int = 5,
        allow_fewer: bool = False,
    ) -> ImageFolderCaptions:
        """Captions from a COCO-style json, images in its `images` order; `root` as above."""
        path = Path(path)
        try:
            data: Any = json.loads(_read_text(path))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        try:
            files = {im["id"]: str(im["file_name"]) for im in data["images"]}
            grouped: dict[Any, list[str]] = {image_id: [] for image_id in files}
            for ann in data["annotations"]:
                if ann["image_id"] not in grouped:
                    raise ValueError(f"annotation for unknown image id {ann['image_id']!r}")
                if not isinstance(ann["caption"], str):
                    raise ValueError(f"caption of annotation {ann.get('id')!r} is not a string")
                grouped[ann["image_id"]].append(ann["caption"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: not a COCO captions file ({e!s})") from e
        return cls(
            path.parent if root is None else root,
            [(files[image_id], captions) for image_id, captions in grouped.items()],
            captions_per_image=captions_per_image,
            allow_fewer=allow_fewer,
            source=path,
        )

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        root: str | Path | None = None,
        captions_per_image: int = 5,
        allow_fewer: bool = False,
    ) -> ImageFolderCaptions:
        """Picks the reader by extension: `.jsonl` or `.json` (COCO-style)."""
        suffix = Path(path).suffix.lower()
        if suffix == ".jsonl":
            reader = cls.from_jsonl
        elif suffix == ".json":
            reader = cls.from_coco_json
        else:
            raise ValueError(f"{path}: unknown captions format {suffix!r}; use .jsonl or .json")
        return reader(path, root, captions_per_image=captions_per_image, allow_fewer=allow_fewer)

    def __len__(self) -> int:
        return len(self._paths)

    def captions(self, index: int) -> list[str]:
        return list(self._captions[index])

    def image_id(self, index: int) -> str:
        return self._ids[index]

    def path(self, index: int) -> Path:
        return self.root / self._paths[index]

    def image(self, index: int) -> Image.Image:
        path = self.path(index)
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except FileNotFoundError as e:
            raise FileNotFoundError(f"image {path} does not exist") from e
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ValueError(f"{path}: cannot decode image ({e})") from e


def from_path(
    path: str | Path,
    root: str | Path | None = None,
    captions_per_image: int = 5,
    allow_fewer: bool = False,
) -> ImageFolderCaptions:
    """`ImageFolderCaptions.from_path`, for callers that only have a captions file."""
    return ImageFolderCaptions.from_path(
        path, root, captions_per_image=captions_per_image, allow_fewer=allow_fewer
    )


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"captions file {path} does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from e
