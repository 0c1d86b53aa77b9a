"""The audit write-ahead log: AuditEvents on disk before the response they record leaves.

Events are appended (one JSON line, one write(2)) to the open segment file. The writer
seals the segment when it takes a batch, fsyncs it, stores the batch, then deletes it. Each
segment is held under an exclusive flock by the process writing it, so at start-up a server
replays exactly the segments whose writer died (a crash), whichever process it was.
"""

from __future__ import annotations

import fcntl
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)
SUFFIX = ".wal"


class Segment:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        # The events of a segment are one batch: their ids name its documents
        # (fhir_server.storage.audit_batches), `<batch>.<chunk>.<n>`.
        self.batch = uuid.uuid4().hex
        self.chunk = 0
        self.count = 0  # events in the current chunk
        self.size = 0  # their JSON bytes

    @classmethod
    def open(cls, path: Path, *, create: bool) -> Segment | None:
        """Opens and locks `path`; None if another live writer holds it."""
        flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT | os.O_EXCL if create else 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return cls(path, fd)

    def append(self, line: bytes) -> None:
        os.write(self.fd, line)

    def sync(self) -> None:
        os.fsync(self.fd)

    def read(self) -> Iterator[dict[str, Any]]:
        with open(self.path, "rb") as f:
            for line in f:
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError:
                    log.warning("skipping a torn line in %s", self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        os.close(self.fd)


class WriteAheadLog:
    def __init__(self, directory: Path, name: str) -> None:
        """`name` keeps the segments of different databases apart in one directory."""
        self.directory = directory
        self.name = name
        self._session = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._seq = 0
        self.current: Segment | None = None

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.current = self._new_segment()

    def _new_segment(self) -> Segment:
        self._seq += 1
        name = f"{self.name}-{self._session}-{self._seq:08d}{SUFFIX}"
        # Locked under a name no one scans, then renamed: never seen unlocked.
        hidden = self.directory / f".{name}"
        segment = Segment.open(hidden, create=True)
        assert segment is not None  # a fresh, uniquely named file
        segment.path = hidden.rename(self.directory / name)
        return segment

    def append(self, line: bytes) -> None:
        assert self.current is not None, "the write-ahead log is not open"
        self.current.append(line)

    def seal(self) -> Segment:
        """Closes the current segment to new events and starts the next one."""
        assert self.current is not None, "the write-ahead log is not open"
        sealed, self.current = self.current, self._new_segment()
        return sealed

    def orphans(self) -> list[Segment]:
        """Segments left by writers that are gone (locked for us now), oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob(f"{self.name}-*{SUFFIX}"), key=lambda p: p.stat().st_mtime):
            segment = Segment.open(path, create=False)
            if segment is not None:
                found.append(segment)
        return found

    def close(self) -> None:
        """Removes the (empty) current segment."""
        if self.current is not None:
            self.current.remove()
            self.current = None
