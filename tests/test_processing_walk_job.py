"""A walking process keeps the CFI indexes it read for the next walks, and reads a replaced file
anew."""

from __future__ import annotations

import os
from pathlib import Path

from symbolon.processing.cfi import CfiIndex
from symbolon.processing.pipeline import walk_job

SYM = [
    "MODULE Linux x86_64 0123456789ABCDEF0123456789ABCDEF0 lib.so",
    "FUNC 1000 20 0 f",
    "STACK CFI INIT 1000 20 .cfa: $rsp 8 + .ra: .cfa -8 + ^",
]


def write_index(path: Path, lines: list[str]) -> None:
    path.write_bytes(CfiIndex.from_sym_lines(lines).to_bytes())


def test_an_index_read_once_is_kept_for_the_next_walks(tmp_path, monkeypatch):
    path = tmp_path / "lib.cfi"
    write_index(path, SYM)
    first = walk_job.load_index(str(path))
    assert first is not None
    reads: list[bytes] = []
    original = CfiIndex.from_bytes
    monkeypatch.setattr(CfiIndex, "from_bytes", lambda data: reads.append(data) or original(data))
    assert walk_job.load_index(str(path)) is first
    assert reads == []

    # Rebuilt in place (evicted and made again): the new file is read, not the kept one used.
    write_index(path, [*SYM, "STACK CFI INIT 2000 10 .cfa: $rsp 8 + .ra: .cfa -8 + ^"])
    os.utime(path, ns=(1, 1))
    again = walk_job.load_index(str(path))
    assert again is not None and again is not first and len(reads) == 1


def test_kept_indexes_are_bounded_by_their_files_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(walk_job, "KEPT_INDEX_BYTES", 1)
    monkeypatch.setattr(walk_job, "_kept", type(walk_job._kept)())
    monkeypatch.setattr(walk_job, "_kept_bytes", 0)
    path = tmp_path / "lib.cfi"
    write_index(path, SYM)
    assert walk_job.load_index(str(path)) is not None
    assert len(walk_job._kept) == 0 and walk_job._kept_bytes == 0
