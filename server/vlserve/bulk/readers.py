"""The inputs of a bulk job, each read as a stream of `Item`s in a fixed order.

folder       every image file under a folder (recursively); key: its relative path;
             text: a sidecar `<stem>.txt` if there is one (img2dataset's "files" layout)
manifest     a JSONL, CSV or Parquet table, one row per item: `image` (a path, relative to
             the manifest's folder, or bytes in Parquet), `text` (or `caption`), `key` (else
             the row number)
webdataset   tar shards (one .tar, or a folder of them): the members of one sample share a
             key (the member name up to its first dot), as img2dataset writes them:
             `<key>.jpg` / `.png` + `<key>.txt` and/or `<key>.json` (its "caption")

A reader never raises for a bad item: the item carries the error and the job records it.
Keys in `skip` (done by an earlier run) are passed over without reading their images.

`partitions()` cuts an input into pieces that `read_partition` reads on their own, in
order (files of a folder, a shard, a manifest's rows or Parquet row groups): the workers
of a Ray job (ray_data.py) take one at a time; `items` is every partition read in turn.
"""

from __future__ import annotations

import csv
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
MANIFEST_SUFFIXES = (".jsonl", ".csv", ".parquet")
KINDS = ("folder", "manifest", "webdataset")
_BAD_LINE = "\x00bad_line"  # a JSONL line that does not parse: its row is an error


@dataclass
class Item:
    key: str
    image: bytes | None = None
    text: str | list[str] | None = None
    error: str | None = None  # "type: message", set when the item cannot be read


def detect_kind(path: Path) -> str:
    if path.is_dir():
        return "webdataset" if any(path.glob("*.tar")) else "folder"
    if path.suffix == ".tar":
        return "webdataset"
    if path.suffix in MANIFEST_SUFFIXES:
        return "manifest"
    raise ValueError(f"{path}: not a folder, a .tar shard or a manifest ({', '.join(MANIFEST_SUFFIXES)})")


def open_input(path: str | Path, kind: str = "auto") -> "Reader":
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "no such file or folder", str(path))
    kind = detect_kind(path) if kind == "auto" else kind
    return {"folder": FolderReader, "manifest": ManifestReader, "webdataset": WebDatasetReader}[kind](path)


def _read(path: Path) -> tuple[bytes | None, str | None]:
    try:
        return path.read_bytes(), None
    except FileNotFoundError:
        return None, f"not_found: no such file: {path}"
    except OSError as exc:
        return None, f"unreadable: {path}: {exc.strerror or exc}"


PART_ITEMS = 256  # files or manifest rows per partition, unless told


def _chunks(things: list, size: int) -> list[list]:
    return [things[i:i + size] for i in range(0, len(things), size)]


class Reader:
    kind: str

    def __init__(self, path: Path):
        self.path = path

    def total(self) -> int | None:
        """The number of items, when it is cheap to know (for the ETA)."""
        return None

    def partitions(self, size: int = PART_ITEMS) -> list:
        """Small picklable descriptions of the input's pieces, in input order; `size` items each
        where the reader can choose (a folder, a JSONL or CSV manifest)."""
        raise NotImplementedError

    def read_partition(self, part, skip: set[str] = frozenset()) -> Iterator[Item]:
        raise NotImplementedError

    def items(self, skip: set[str] = frozenset()) -> Iterator[Item]:
        for part in self.partitions():
            yield from self.read_partition(part, skip)


class FolderReader(Reader):
    kind = "folder"

    def _files(self) -> list[Path]:
        return sorted(p for p in self.path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())

    def total(self) -> int:
        return len(self._files())

    def partitions(self, size=PART_ITEMS) -> list[list[str]]:
        return _chunks([file.relative_to(self.path).as_posix() for file in self._files()], size)

    def read_partition(self, keys, skip=frozenset()):
        for key in keys:
            if key in skip:
                continue
            file = self.path / key
            image, error = _read(file)
            sidecar = file.with_suffix(".txt")
            text = sidecar.read_text().strip() if sidecar.is_file() else None
            yield Item(key, image, text, error)


def _manifest_rows(path: Path) -> Iterator[dict]:
    """The rows of a JSONL or CSV manifest (Parquet ones are read by row group)."""
    if path.suffix == ".jsonl":
        with path.open() as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except ValueError:
                        yield {_BAD_LINE: f"invalid_input: {path.name} line {n} is not JSON"}
    else:
        with path.open(newline="") as f:
            yield from csv.DictReader(f)


class ManifestReader(Reader):
    kind = "manifest"

    def total(self) -> int | None:
        if self.path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(self.path).metadata.num_rows
        return sum(1 for _ in _manifest_rows(self.path))

    def partitions(self, size=PART_ITEMS) -> list:
        """Parquet: (first row number, row group) per row group, the images stay in the file until
        a partition is read; JSONL / CSV: the rows themselves (text: paths and captions), numbered."""
        if self.path.suffix == ".parquet":
            import pyarrow.parquet as pq

            meta, first, parts = pq.ParquetFile(self.path).metadata, 0, []
            for group in range(meta.num_row_groups):
                parts.append((first, group))
                first += meta.row_group(group).num_rows
            return parts
        return _chunks(list(enumerate(_manifest_rows(self.path))), size)

    def items(self, skip=frozenset()):
        if self.path.suffix == ".parquet":
            yield from super().items(skip)
        else:  # streamed, without the list of rows partitions() makes
            yield from self._items(enumerate(_manifest_rows(self.path)), skip)

    def read_partition(self, part, skip=frozenset()):
        if self.path.suffix == ".parquet":
            import pyarrow.parquet as pq

            first, group = part
            batches = pq.ParquetFile(self.path).iter_batches(batch_size=1024, row_groups=[group])
            part = enumerate((row for batch in batches for row in batch.to_pylist()), first)
        yield from self._items(part, skip)

    def _items(self, rows, skip) -> Iterator[Item]:
        for i, row in rows:
            key = str(row.get("key") if row.get("key") not in (None, "") else i)
            if key in skip:
                continue
            if _BAD_LINE in row:
                yield Item(key, error=row[_BAD_LINE])
                continue
            text = row.get("text", row.get("caption"))
            image = row.get("image", row.get("image_path"))
            if isinstance(image, dict):  # HF datasets' image struct: {"bytes", "path"}
                image = image.get("bytes") or image.get("path")
            if isinstance(image, (bytes, bytearray)):
                yield Item(key, bytes(image), text)
            elif isinstance(image, str) and image:
                data, error = _read(self.path.parent / image)
                yield Item(key, data, text, error)
            else:  # a text-only row (embed --modality text); a job that needs an image says so
                yield Item(key, None, text)


def _sample_key(name: str) -> tuple[str, str]:
    """'00000/000000012.jpg' -> ('00000/000000012', 'jpg'): WebDataset splits at the first dot
    of the base name."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _sample_item(key: str, members: dict[str, bytes]) -> Item:
    image = next((members[e] for e in ("jpg", "jpeg", "png", "webp") if e in members), None)
    text = members["txt"].decode("utf-8", "replace").strip() if "txt" in members else None
    if text is None and "json" in members:
        try:
            meta = json.loads(members["json"])
            text = meta.get("caption", meta.get("text")) if isinstance(meta, dict) else None
        except ValueError:
            pass
    return Item(key, image, text)


class WebDatasetReader(Reader):
    kind = "webdataset"

    def shards(self) -> list[Path]:
        return sorted(self.path.glob("*.tar")) if self.path.is_dir() else [self.path]

    def partitions(self, size=PART_ITEMS) -> list[Path]:
        return self.shards()

    def read_partition(self, shard, skip=frozenset()):
        try:
            yield from self._shard(shard, skip)
        except (tarfile.TarError, OSError) as exc:  # a damaged shard: its readable samples stand
            if shard.name not in skip:
                yield Item(shard.name, error=f"invalid_shard: {shard}: {exc}")

    def _shard(self, shard: Path, skip) -> Iterator[Item]:
        key, members = None, {}
        with tarfile.open(shard, mode="r|*") as tar:  # streamed: a sample's members are adjacent
            for member in tar:
                if not member.isfile():
                    continue
                k, ext = _sample_key(member.name)
                if k != key:
                    if key is not None and key not in skip:
                        yield _sample_item(key, members)
                    key, members = k, {}
                if k not in skip:
                    members[ext] = tar.extractfile(member).read()
        if key is not None and key not in skip:
            yield _sample_item(key, members)
