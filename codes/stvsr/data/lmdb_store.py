"""LMDB frame stores: raw uint8 HWC BGR values (the official layout) described by a readable ``meta_info.txt``.

``meta_info.txt`` sits inside the LMDB folder, one line per key::

    # stvsr LMDB meta info: key (H,W,C) [crc32:xxxxxxxx]; values are raw uint8 H*W*C bytes, BGR
    00001_0001_1 (256,448,3) crc32:8f0e3c1a

The loader takes keys and shapes from it, so no shape is hard-coded anywhere. BasicSR's lines
(``name.png (H,W,C) 1``) parse too (the extension is dropped, the compression level ignored).

:class:`LmdbWriter` makes a database visible only when it is complete: it writes into a hidden temporary
folder next to the destination and renames it at the end, so a killed run never leaves a half database
under the final name (a failed or interrupted one removes its temporary). It replaces only what it could have
written itself (:func:`lmdb_destination_problem`): a folder holding ``data.mdb`` and nothing but ``data.mdb``,
``lock.mdb`` and ``meta_info.txt``; a file, a link or any other folder is refused, ``overwrite`` or not.
:class:`LmdbStore` reads one, opening the environment lazily in each process (DataLoader workers included).

A damaged database is reported, never a crash: every open compares the size of ``data.mdb`` with the pages
the environment says it uses (a truncated file would otherwise end the process with SIGBUS on the first read
past its end), and every value read is checked against the CRC-32 of ``meta_info.txt``
(:class:`CorruptValueError` names the key).
"""

from __future__ import annotations

import errno
import logging
import math
import os
import pickle
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lmdb
import numpy as np

from ..atomic import atomic_write, commit, discard, temporary_sibling
from ..outputs import OutputError, describe_write_error, free_space
from .io import IMAGE_EXTENSIONS, DataError, natural_key, require_dir

logger = logging.getLogger(__name__)

META_NAME = "meta_info.txt"
META_HEADER = "# stvsr LMDB meta info: key (H,W,C) [crc32:xxxxxxxx]; values are raw uint8 H*W*C bytes, BGR"
PAGE_SIZE = 4096
LMDB_FILES = frozenset({"data.mdb", "lock.mdb", META_NAME})  # all that a folder written by LmdbWriter holds
NAMES_SHOWN = 5
_LINE = re.compile(r"^(?P<key>\S+)\s+\((?P<shape>[0-9,\s]+)\)(?P<rest>.*)$")
_CRC = re.compile(r"crc32:([0-9a-fA-F]{8})")


class CorruptValueError(DataError):
    """A value whose bytes do not match the CRC-32 of ``meta_info.txt``; ``key`` names it."""

    def __init__(self, message: str, key: str = "") -> None:  # one argument: DataLoader re-raises it so
        super().__init__(message)
        self.key = key


def _rebuild_hint(path: Path) -> str:
    return (
        f"rebuild it with python data_scripts/create_lmdb.py --src <frames folder> --dst {path} --overwrite "
        "(or copy it again from a good source)"
    )


def check_file_size(path: str | Path, env: lmdb.Environment) -> None:
    """DataError when ``data.mdb`` is shorter than the pages the environment says it uses.

    ``env.info()`` and ``env.stat()`` come from the meta pages (the first two pages, read when the environment
    is opened), so this touches no data page: psize * (last_pgno + 1) bytes must be in the file, or a read
    of a value past its end would be a bus error (SIGBUS) that kills the process without a message.
    """
    data = Path(path) / "data.mdb"
    size = data.stat().st_size
    psize = int(env.stat()["psize"])
    pages = int(env.info()["last_pgno"]) + 1
    if size < psize * pages:
        raise DataError(
            f"LMDB {path} is damaged: {data} is {size:,} bytes but the database uses {psize * pages:,} bytes "
            f"({pages:,} pages of {psize}): the file is truncated (an interrupted copy or download, or a full "
            f"disk); {_rebuild_hint(Path(path))}"
        )


def open_environment(path: str | Path) -> lmdb.Environment:
    """A read-only environment of the LMDB folder ``path``, checked against truncation before any read."""
    data = Path(path) / "data.mdb"
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False)
    except lmdb.Error as exc:
        size = data.stat().st_size if data.is_file() else 0
        raise DataError(
            f"LMDB {path} is damaged: {data} ({size:,} bytes) cannot be opened as an LMDB ({exc}); "
            f"{_rebuild_hint(Path(path))}"
        ) from None
    try:
        check_file_size(path, env)
    except BaseException:
        env.close()
        raise
    return env


@dataclass(frozen=True)
class Entry:
    """One value of an LMDB: its key, its (H, W, C) shape and an optional CRC-32 of its bytes."""

    key: str
    shape: tuple[int, ...]
    crc32: int | None = None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape)

    def line(self) -> str:
        shape = ",".join(str(n) for n in self.shape)
        crc = "" if self.crc32 is None else f" crc32:{self.crc32:08x}"
        return f"{self.key} ({shape}){crc}"


def parse_meta_line(line: str, where: str) -> Entry | None:
    """The entry of one ``meta_info.txt`` line; None for blank and comment lines."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    match = _LINE.match(line)
    if match is None:
        raise DataError(f"{where}: cannot parse '{line}': expected 'key (H,W,C) [crc32:xxxxxxxx]'")
    key = match["key"]
    stem, ext = os.path.splitext(key)
    if ext.lower() in IMAGE_EXTENSIONS:
        key = stem
    shape = tuple(int(s) for s in match["shape"].replace(" ", "").split(",") if s)
    crc = _CRC.search(match["rest"])
    return Entry(key, shape, int(crc.group(1), 16) if crc else None)


def read_meta(db_path: str | Path) -> dict[str, Entry]:
    """Entries of ``db_path/meta_info.txt`` in file order; a DataError if the file is missing or malformed."""
    meta = Path(db_path) / META_NAME
    if not meta.is_file():
        raise DataError(
            f"{meta} is missing: {db_path} was not made by create_lmdb.py (or is from the official scripts); "
            f"rebuild it, or add the file with: python data_scripts/create_lmdb.py --write-meta {db_path} "
            "--shape H,W,C"
        )
    entries: dict[str, Entry] = {}
    with open(meta, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            entry = parse_meta_line(line, f"{meta}:{number}")
            if entry is not None:
                entries[entry.key] = entry
    if not entries:
        raise DataError(f"{meta} lists no keys: rebuild the LMDB with create_lmdb.py")
    return entries


def write_meta(db_path: str | Path, entries: Iterable[Entry]) -> None:
    text = "\n".join([META_HEADER, *(e.line() for e in entries)]) + "\n"
    atomic_write(Path(db_path) / META_NAME, text)


def map_size_for(value_sizes: Iterable[int], key_length: int = 32) -> int:
    """Bytes to reserve for values of these sizes, from LMDB's page layout rather than a guess.

    A value larger than a page is stored on its own run of overflow pages (16-byte header); every key also
    takes a leaf-node slot (about key length + 16 bytes), and leaf pages are half full after splits in the
    worst case. 10 % and 16 MiB are added for branch pages, free-list pages and the two meta pages. On Linux
    the reservation is virtual: the file only grows as data is written. The writer doubles it anyway if it
    ever runs out (:class:`LmdbWriter`).
    """
    n, data_pages = 0, 0
    for size in value_sizes:
        n += 1
        data_pages += math.ceil((size + 16) / PAGE_SIZE)
    leaf_pages = math.ceil(n * (key_length + 16) * 2 / PAGE_SIZE)
    return int((data_pages + leaf_pages) * PAGE_SIZE * 1.1) + 16 * 2**20


def lmdb_destination_problem(path: str | Path) -> str | None:
    """Why :class:`LmdbWriter` must never replace ``path`` (None when it is absent, an empty folder, or an LMDB
    folder it could have written: ``data.mdb`` and nothing but ``data.mdb``, ``lock.mdb``, ``meta_info.txt``)."""
    path = Path(path)
    if path.is_symlink():
        return f"is a link (to {os.readlink(path)}), not an LMDB folder"
    if not path.exists():
        return None
    if not path.is_dir():
        return "is a file, not an LMDB folder"
    try:
        names = sorted(p.name for p in path.iterdir())
    except OSError as exc:
        return f"cannot be listed ({exc.strerror})"
    if not names:
        return None
    foreign = [n for n in names if n not in LMDB_FILES or not (path / n).is_file() or (path / n).is_symlink()]
    if foreign or "data.mdb" not in names:
        shown = foreign or names
        listed = ", ".join(shown[:NAMES_SHOWN]) + (", ..." if len(shown) > NAMES_SHOWN else "")
        return f"is a folder that is not an LMDB written by create_lmdb (it holds {listed})"
    return None


def check_lmdb_destination(path: str | Path, overwrite: bool = False) -> None:
    """DataError when :class:`LmdbWriter` may not write ``path``: it exists and is not a database it could have
    written (refused even with ``overwrite``: it would delete the user's data), or it is such a database and
    ``overwrite`` is false."""
    path = Path(path)
    problem = lmdb_destination_problem(path)
    if problem:
        raise DataError(
            f"{path} {problem}: it is never replaced, even with --overwrite; choose another --dst "
            "(a new folder name such as NAME.lmdb), or remove it yourself if it is not needed"
        )
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise DataError(f"{path} already exists: pass --overwrite to replace it, or choose another --dst")


def _write_failure(path: Path, exc: BaseException, pending_bytes: int = 0) -> OutputError:
    """One message for a failed LMDB write. LMDB reports a full file system as an I/O error (EIO, not ENOSPC),
    so a write failure with less free space than the batch needs is said to be a full disk."""
    if isinstance(exc, OSError) and exc.errno is not None:
        error = exc
    else:
        free = free_space(path.parent)
        if free is not None and free < pending_bytes + 2**20:
            error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        else:
            error = OSError(errno.EIO, str(exc))
    return OutputError(
        f"{describe_write_error(error, path)}; nothing was written under {path} (the partial database was "
        "removed): free space or choose another --dst, then run the same command again"
    )


class LmdbWriter:
    """Writes uint8 HWC arrays under string keys into a new LMDB, atomically.

    Use as a context manager. Values go into ``.NAME.tmp-PID`` next to ``path``; batches of ``batch``
    values are committed together; on a clean exit ``meta_info.txt`` is written and the folder renamed to
    ``path``. On an exception (or a kill) the final name never appears; on an exception, a stop signal or a
    failed write (a full disk: :class:`stvsr.outputs.OutputError`) the temporary is removed. An existing
    ``path`` is replaced only with ``overwrite`` and only when it is an LMDB folder this writer could have made
    (:func:`check_lmdb_destination`, checked again just before the rename).
    """

    def __init__(
        self, path: str | Path, map_size: int, batch: int = 256, overwrite: bool = False, checksum: bool = True
    ) -> None:
        self.path = Path(path)
        check_lmdb_destination(self.path, overwrite)
        self.tmp = temporary_sibling(self.path, folder=True)
        self.map_size = max(int(map_size), 2**20)
        self.batch = batch
        self.checksum = checksum
        self.entries: list[Entry] = []
        self._pending: list[tuple[bytes, bytes]] = []
        self._env: lmdb.Environment | None = None

    def __enter__(self):  # returns self
        try:
            self._env = lmdb.open(str(self.tmp), map_size=self.map_size, subdir=True, meminit=False)
        except (lmdb.Error, OSError) as exc:
            discard(self.tmp)
            raise _write_failure(self.path, exc) from None
        return self

    def put(self, key: str, img: np.ndarray) -> None:
        if img.dtype != np.uint8:
            raise DataError(f"LMDB value for key {key} must be uint8, got {img.dtype}")
        data = np.ascontiguousarray(img).tobytes()
        crc = zlib.crc32(data) if self.checksum else None
        self.entries.append(Entry(key, tuple(img.shape), crc))
        self._pending.append((key.encode("ascii"), data))
        if len(self._pending) >= self.batch:
            self._commit()

    def _commit(self) -> None:
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    for key, data in self._pending:
                        txn.put(key, data)
                break
            except lmdb.MapFullError:
                self.map_size *= 2
                logger.info("LMDB map full; growing the map to %d bytes", self.map_size)
                self._env.set_mapsize(self.map_size)
            except (lmdb.Error, OSError) as exc:
                raise _write_failure(self.path, exc, sum(len(d) for _, d in self._pending)) from None
        self._pending.clear()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            try:
                if exc_type is None:
                    self._commit()
                    self._env.sync(True)
            except lmdb.Error as error:
                raise _write_failure(self.path, error) from None
            finally:
                self._env.close()
            if exc_type is None:
                try:
                    write_meta(self.tmp, self.entries)
                except OSError as error:
                    raise _write_failure(self.path, error) from None
                check_lmdb_destination(self.path, overwrite=True)  # nothing else appeared there meanwhile
                commit(self.tmp, self.path)
        except BaseException:
            discard(self.tmp)
            raise
        if exc_type is not None:
            discard(self.tmp)


_READERS: dict[tuple[int, int], tuple[int, lmdb.Environment]] = {}  # data.mdb (dev, inode) -> (pid, env)


def _open_readonly(path: Path) -> lmdb.Environment:
    """One read-only environment per database and process, shared by every store that reads it.

    LMDB refuses a second open of a database in one process, and an environment must not be used across
    fork(): a forked DataLoader worker closes the copy it inherited (harmless to the parent: read-only,
    no lock file) and opens its own. Databases are told apart by the file, as LMDB does, so one rebuilt at
    the same path is opened afresh.
    """
    st = os.stat(Path(path) / "data.mdb")
    key = (st.st_dev, st.st_ino)
    pid, env = _READERS.get(key, (None, None))
    if env is not None and pid == os.getpid():
        return env
    if env is not None:
        env.close()
    env = open_environment(path)
    _READERS[key] = (os.getpid(), env)
    return env


class LmdbStore:
    """Read-only access to an LMDB described by its ``meta_info.txt``; picklable for DataLoader workers.

    The database is opened (and checked against truncation) when the store is made, so a damaged file is
    reported before any work starts. ``verify`` (default True): every value read is checked against its CRC-32
    in ``meta_info.txt``; a mismatch raises :class:`CorruptValueError` naming the key.
    """

    def __init__(self, path: str | Path, verify: bool = True) -> None:
        self.path = require_dir(path, "LMDB")
        if not (self.path / "data.mdb").is_file():
            raise DataError(f"{self.path} has no data.mdb: it is not an LMDB folder; build it with create_lmdb.py")
        self.entries = read_meta(self.path)
        self.verify = verify
        self._env: lmdb.Environment | None = None
        self._pid: int | None = None
        self._environment()  # a damaged (truncated) file is reported now, not at the first read

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_env"], state["_pid"] = None, None
        return state

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def keys(self) -> list[str]:
        return list(self.entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._entry(key).shape

    def _entry(self, key: str) -> Entry:
        try:
            return self.entries[key]
        except KeyError:
            raise DataError(
                f"key {key} is not in {self.path / META_NAME}: the LMDB was built from another list; "
                "rebuild it with create_lmdb.py from the same list"
            ) from None

    def _environment(self) -> lmdb.Environment:
        if self._env is None or self._pid != os.getpid():  # one environment per process (fork-safe)
            self._env = _open_readonly(self.path)
            self._pid = os.getpid()
        return self._env

    def get_bytes(self, key: str) -> bytes:
        with self._environment().begin(write=False) as txn:
            buf = txn.get(key.encode("ascii"))
        if buf is None:
            raise DataError(
                f"key {key} is listed in {self.path / META_NAME} but missing from the database: "
                f"the LMDB is incomplete; rebuild it (check with create_lmdb.py --check {self.path})"
            )
        return buf

    def get(self, key: str) -> np.ndarray:
        """The value of ``key`` as a uint8 (H, W, C) array in the stored (BGR) order."""
        entry = self._entry(key)
        buf = self.get_bytes(key)
        if len(buf) != entry.nbytes:
            raise DataError(
                f"LMDB {self.path} value of key {key} has {len(buf)} bytes but {META_NAME} says shape "
                f"{entry.shape} ({entry.nbytes} bytes): the database or its meta info is corrupt; rebuild it "
                f"(create_lmdb.py --check {self.path} lists every bad key)"
            )
        if self.verify and entry.crc32 is not None:
            crc = zlib.crc32(buf)
            if crc != entry.crc32:
                raise CorruptValueError(
                    f"LMDB {self.path}: the value of key {key} is corrupt (CRC-32 {crc:08x}, {META_NAME} says "
                    f"{entry.crc32:08x}); {_rebuild_hint(self.path)}. create_lmdb.py --check {self.path} lists "
                    "every bad key; datasets.<phase>.checksum: skip leaves such samples out",
                    key,
                )
        return np.frombuffer(buf, dtype=np.uint8).reshape(entry.shape)

    def check(self) -> Iterator[tuple[str, str | None]]:
        """Yields (key, problem or None) for every key of the meta info: present, right size, right CRC."""
        env = self._environment()
        with env.begin(write=False) as txn:
            for key, entry in self.entries.items():
                buf = txn.get(key.encode("ascii"))
                if buf is None:
                    yield key, "missing from the database"
                elif len(buf) != entry.nbytes:
                    yield key, f"{len(buf)} bytes, expected {entry.nbytes} for shape {entry.shape}"
                elif entry.crc32 is not None and zlib.crc32(buf) != entry.crc32:
                    yield key, "checksum mismatch (corrupt value)"
                else:
                    yield key, None

    def extra_keys(self) -> list[str]:
        """Keys stored in the database but not listed in the meta info."""
        with self._environment().begin(write=False) as txn:
            stored = [k.decode("ascii") for k in txn.cursor().iternext(keys=True, values=False)]
        return [k for k in stored if k not in self.entries]


def meta_from_database(path: str | Path, shape: tuple[int, int, int]) -> int:
    """Write ``meta_info.txt`` for an existing LMDB (e.g. an official one) whose values all have ``shape``.

    Every value is checked to have ``prod(shape)`` bytes first; returns the number of keys.
    """
    path = require_dir(path, "LMDB")
    entries = []
    env = open_environment(path)
    try:
        with env.begin(write=False) as txn:
            for key, value in txn.cursor():
                if len(value) != math.prod(shape):
                    raise DataError(
                        f"LMDB {path} value of key {key.decode('ascii')} has {len(value)} bytes, not "
                        f"{math.prod(shape)} for shape {shape}: give the right --shape"
                    )
                entries.append(Entry(key.decode("ascii"), tuple(shape), zlib.crc32(value)))
    finally:
        env.close()
    entries.sort(key=lambda e: natural_key(e.key))
    write_meta(path, entries)
    return len(entries)


def read_keys_file(path: str | Path) -> list[str]:
    """Clip names from an official key file: a ``.pkl`` holding a list, a set, or a dict with ``'keys'``
    (entries like '00001_0001'), or a text list (one '00001/0001' per line). Sorted, duplicates removed.
    A ``.pkl`` is unpickled: use only key files you trust (the official ones, or your own)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"key file {path} does not exist: check the 'cache_keys' / list option")
    if path.suffix == ".pkl":
        with open(path, "rb") as f:
            obj = pickle.load(f)
        if isinstance(obj, dict):
            if "keys" not in obj:
                raise DataError(f"key file {path} is a dict without 'keys': expected the official format")
            obj = obj["keys"]
        keys = {str(k).replace("/", "_") for k in obj}
    else:
        keys = {line.strip().replace("/", "_") for line in path.read_text(encoding="utf-8").splitlines()}
        keys.discard("")
    return sorted(keys, key=natural_key)
