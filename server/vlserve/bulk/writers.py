"""Where a bulk job's rows go, durably, so that a killed job resumes where it stopped.

JSONL      one file; each batch's lines are appended, flushed and fsynced. On resume the
           keys already written are read back; a last line cut short by a kill is dropped
           (that item runs again).
Parquet    a folder of part files `part-00000.parquet`, ... (pyarrow and pandas read the
           folder as one table). Rows are buffered and written as a part every `part_rows`
           rows: to a temporary name, fsynced, then renamed, so a part is whole or absent.
           On resume the keys are read back from the parts' `key` columns.

Either way a row is done once it is durable, and the rerun skips exactly those keys.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

FORMATS = ("jsonl", "parquet")


def format_of(out: Path, given: str | None = None) -> str:
    if given:
        return given
    return "jsonl" if out.suffix == ".jsonl" else "parquet"


def open_output(out: str | Path, columns: dict[str, str], fmt: str | None = None, part_rows: int = 1024):
    out = Path(out)
    fmt = format_of(out, fmt)
    if fmt == "jsonl":
        return JsonlWriter(out)
    return ParquetWriter(out, columns, part_rows)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JsonlWriter:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.done = self._recover()
        self.file = path.open("a", encoding="utf-8")

    def _recover(self) -> set[str]:
        if not self.path.exists():
            return set()
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a line cut short by a kill: drop it, its item runs again
            with self.path.open("r+b") as f:
                f.truncate(end)
        return {json.loads(line)["key"] for line in data[:end].splitlines() if line.strip()}

    def write(self, rows: list[dict]) -> None:
        self.file.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        self.file.flush()
        os.fsync(self.file.fileno())
        self.done.update(r["key"] for r in rows)

    def close(self) -> None:
        self.file.close()


def _arrow_type(name: str):
    import pyarrow as pa

    return {"str": pa.string(), "float": pa.float64(), "floats": pa.list_(pa.float32()),
            "strs": pa.list_(pa.string()), "bools": pa.list_(pa.bool_()),
            "float_list": pa.list_(pa.float64())}[name]


def row_schema(columns: dict[str, str]):
    """A job's rows as Arrow: key, the result columns, error. Fixed, so that a part (or a Ray
    block) whose rows are all errors still has the result columns' types."""
    import pyarrow as pa

    return pa.schema([("key", pa.string())] + [(c, _arrow_type(t)) for c, t in columns.items()]
                     + [("error", pa.string())])


class ParquetWriter:
    def __init__(self, folder: Path, columns: dict[str, str], part_rows: int = 1024):
        if folder.exists() and not folder.is_dir():
            raise FileExistsError(17, "Parquet output is a folder of parts; a file is in the way", str(folder))
        self.folder, self.part_rows = folder, max(1, part_rows)
        self.schema = row_schema(columns)
        folder.mkdir(parents=True, exist_ok=True)
        for tmp in folder.glob(".part-*.tmp"):  # a part a kill left half written
            tmp.unlink()
        self.parts = sorted(folder.glob("part-*.parquet"))
        self.done = self._recover()
        self.pending: list[dict] = []

    def _recover(self) -> set[str]:
        import pyarrow.parquet as pq

        return {k for part in self.parts for k in pq.read_table(part, columns=["key"]).column("key").to_pylist()}

    def write(self, rows: list[dict]) -> None:
        self.pending.extend(rows)
        while len(self.pending) >= self.part_rows:
            self._flush(self.pending[:self.part_rows])
            self.pending = self.pending[self.part_rows:]

    def _flush(self, rows: list[dict]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        index = int(self.parts[-1].stem.split("-")[1]) + 1 if self.parts else 0
        final, tmp = self.folder / f"part-{index:05d}.parquet", self.folder / f".part-{index:05d}.tmp"
        table = pa.Table.from_pylist([{c: r.get(c) for c in self.schema.names} for r in rows], schema=self.schema)
        with tmp.open("wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.folder)
        self.parts.append(final)
        self.done.update(r["key"] for r in rows)

    def close(self) -> None:
        if self.pending:
            self._flush(self.pending)
            self.pending = []
