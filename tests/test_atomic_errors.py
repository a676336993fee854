"""stvsr.atomic (a file or folder appears complete or not at all) and stvsr.errors (one base class)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import stvsr
from stvsr.atomic import atomic_path, atomic_write, commit, temporary_sibling
from stvsr.errors import StvsrError


def test_atomic_write_text_and_bytes(tmp_path):
    target = tmp_path / "sub" / "report.txt"
    assert atomic_write(target, "a\r\nb\n") == target
    assert target.read_bytes() == b"a\r\nb\n"  # newlines as given
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.txt"]


def test_writer_that_raises_leaves_no_file(tmp_path):
    target = tmp_path / "weights.pth"
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_writer_that_raises_keeps_the_old_file(tmp_path):
    target = tmp_path / "options.yml"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("new, half written")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["options.yml"]


def test_folder_replaces_an_existing_folder_or_is_discarded(tmp_path):
    target = tmp_path / "db.lmdb"
    (target / "old").mkdir(parents=True)
    with atomic_path(target, folder=True) as tmp:
        assert not tmp.exists() and tmp.name == f".db.lmdb.tmp-{__import__('os').getpid()}"
        tmp.mkdir()
        (tmp / "data.mdb").write_bytes(b"x")
    assert sorted(p.name for p in target.iterdir()) == ["data.mdb"]
    with pytest.raises(ValueError), atomic_path(target, folder=True) as tmp:
        tmp.mkdir()
        raise ValueError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db.lmdb"]


def test_folder_without_replace_refuses_an_existing_one(tmp_path):
    target = tmp_path / "demo"
    (target / "x").mkdir(parents=True)
    tmp = temporary_sibling(target, folder=True)
    (tmp / "y").mkdir(parents=True)
    with pytest.raises(OSError):
        commit(tmp, target, replace_folder=False)
    assert [p.name for p in target.iterdir()] == ["x"]


def test_temporary_file_keeps_the_suffix(tmp_path):
    tmp = temporary_sibling(tmp_path / "out.mp4")
    assert tmp.suffix == ".mp4" and tmp.name.startswith(".out.mp4.tmp-") and tmp.parent == tmp_path


def _package_modules():
    for info in pkgutil.walk_packages(stvsr.__path__, "stvsr."):
        try:
            yield importlib.import_module(info.name)
        except ImportError:  # optional dependencies (e.g. PyAV) not installed
            continue


def test_every_error_class_is_a_stvsr_error():
    """Every exception class of the package but the stop signals (a KeyboardInterrupt: not an error, and not to
    be caught by ``except Exception``)."""
    found = {}
    for module in _package_modules():
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                if issubclass(obj, KeyboardInterrupt):
                    continue
                found[f"{module.__name__}.{name}"] = obj
    expected = {"OptionsError", "DataError", "CorruptValueError", "MissingClipsError", "InferError", "EvalError",
                "EvaluationStopped", "CheckpointMismatchError", "TrainingStopped", "TrainingInterrupted"}  # fmt: skip
    assert expected <= {qualified.rsplit(".", 1)[1] for qualified in found}
    assert [q for q, cls in found.items() if not issubclass(cls, StvsrError)] == []


def test_builtin_bases_kept():
    from stvsr.data import DataError
    from stvsr.train.options import OptionsError

    assert issubclass(OptionsError, ValueError) and issubclass(DataError, RuntimeError)


def test_no_code_branches_on_an_error_message():
    pattern = re.compile(r"\bin\s+str\(\s*(exc|e|err|error|ex)\s*\)")
    root = Path(stvsr.__file__).parent
    hits = [
        f"{path.relative_to(root)}:{n}"
        for path in root.rglob("*.py")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert hits == []
