"""A FUSE passthrough that forgets every write not yet fsync'd when it dies: simulated power loss.

Writes are held in this process's memory (per file, whole-file overlays) and reach the
backing directory only on fsync/fdatasync. SIGKILL this process and the unsynced data
is gone, exactly as a disk cache loses it on power loss; mount a new instance over the
same backing directory and the files hold only what was synced.

Run: python -m tests.faults.lazyfs BACKING_DIR MOUNT_POINT [EIO_FLAG] (foreground). While
the file EIO_FLAG exists, writes and fsyncs fail with EIO (an I/O error on the card).
Needs /dev/fuse, fusermount and the fusepy package (tests skip without them).
"""

from __future__ import annotations

import errno
import os
import sys
import threading
from pathlib import Path
from typing import Any

from fuse import FUSE, FuseOSError, Operations  # type: ignore[import-untyped]


class LazyFs(Operations):  # type: ignore[misc]
    """Passthrough with a volatile write cache that only fsync makes durable."""

    def __init__(self, backing: Path, eio_flag: Path | None = None) -> None:
        self.backing = backing
        # While this file exists, writes and fsyncs fail with EIO: a failing SD card.
        self.eio_flag = eio_flag
        self.overlays: dict[str, bytearray] = {}
        self.dirty: dict[str, tuple[int, int]] = {}  # path -> unsynced byte range [lo, hi)
        self._mutex = threading.Lock()

    def _real(self, path: str) -> str:
        return str(self.backing / path.lstrip("/"))

    def _overlay(self, path: str) -> bytearray:
        overlay = self.overlays.get(path)
        if overlay is None:
            try:
                overlay = bytearray(Path(self._real(path)).read_bytes())
            except FileNotFoundError:
                overlay = bytearray()
            self.overlays[path] = overlay
        return overlay

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        try:
            st = os.lstat(self._real(path))
        except OSError as exc:
            raise FuseOSError(exc.errno or errno.EIO) from exc
        attrs = {
            k: getattr(st, k)
            for k in (
                "st_atime",
                "st_ctime",
                "st_gid",
                "st_mode",
                "st_mtime",
                "st_nlink",
                "st_uid",
            )
        }
        with self._mutex:
            overlay = self.overlays.get(path)
            attrs["st_size"] = len(overlay) if overlay is not None else st.st_size
        return attrs

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._real(path))]

    def access(self, path: str, amode: int) -> None:
        if not os.access(self._real(path), amode):
            raise FuseOSError(errno.EACCES)

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        fd = os.open(self._real(path), os.O_WRONLY | os.O_CREAT, mode)
        os.close(fd)
        return 0

    def open(self, path: str, flags: int) -> int:
        if not os.path.exists(self._real(path)):
            raise FuseOSError(errno.ENOENT)
        return 0

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self._mutex:
            overlay = self.overlays.get(path)
            if overlay is not None:
                return bytes(overlay[offset : offset + size])
        with open(self._real(path), "rb") as f:
            f.seek(offset)
            return f.read(size)

    def _fail_if_broken(self) -> None:
        if self.eio_flag is not None and self.eio_flag.exists():
            raise FuseOSError(errno.EIO)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        self._fail_if_broken()
        with self._mutex:
            overlay = self._overlay(path)
            end = offset + len(data)
            if len(overlay) < end:
                overlay.extend(b"\0" * (end - len(overlay)))
            overlay[offset:end] = data
            self._mark_dirty(path, offset, end)
        return len(data)

    def _mark_dirty(self, path: str, lo: int, hi: int) -> None:
        old_lo, old_hi = self.dirty.get(path, (lo, hi))
        self.dirty[path] = (min(lo, old_lo), max(hi, old_hi))

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        with self._mutex:
            overlay = self._overlay(path)
            if len(overlay) > length:
                del overlay[length:]
            else:
                overlay.extend(b"\0" * (length - len(overlay)))
            self._mark_dirty(path, length, length)

    def fsync(self, path: str, datasync: int, fh: int) -> None:
        self._fail_if_broken()
        with self._mutex:
            span = self.dirty.pop(path, None)
            if span is None:
                return
            overlay = self.overlays[path]
            lo, hi = span
            fd = os.open(self._real(path), os.O_WRONLY | os.O_CREAT)
            try:
                os.pwrite(fd, bytes(overlay[lo:hi]), lo)
                os.ftruncate(fd, len(overlay))
                os.fsync(fd)
            finally:
                os.close(fd)

    def flush(self, path: str, fh: int) -> None:
        return None  # close() is not a sync: the data stays volatile

    def release(self, path: str, fh: int) -> None:
        return None

    def unlink(self, path: str) -> None:
        with self._mutex:
            self.overlays.pop(path, None)
            self.dirty.pop(path, None)
        os.unlink(self._real(path))

    def rename(self, old: str, new: str) -> None:
        with self._mutex:
            if old in self.overlays:
                self.overlays[new] = self.overlays.pop(old)
            if old in self.dirty:
                self.dirty[new] = self.dirty.pop(old)
        os.rename(self._real(old), self._real(new))

    def mkdir(self, path: str, mode: int) -> None:
        os.mkdir(self._real(path), mode)

    def rmdir(self, path: str) -> None:
        os.rmdir(self._real(path))

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(self._real(path), mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(self._real(path), uid, gid)

    def utimens(self, path: str, times: tuple[float, float] | None = None) -> None:
        os.utime(self._real(path), times)

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self._real(path))
        return {
            k: getattr(st, k)
            for k in (
                "f_bavail",
                "f_bfree",
                "f_blocks",
                "f_bsize",
                "f_favail",
                "f_ffree",
                "f_files",
                "f_flag",
                "f_frsize",
                "f_namemax",
            )
        }


def main() -> None:
    """``python -m tests.faults.lazyfs BACKING MOUNT [EIO_FLAG_FILE]``."""
    backing, mount = Path(sys.argv[1]), sys.argv[2]
    eio_flag = Path(sys.argv[3]) if len(sys.argv) > 3 else None
    FUSE(LazyFs(backing, eio_flag), mount, foreground=True, nothreads=True)


if __name__ == "__main__":
    main()
