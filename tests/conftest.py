"""Shared fixtures: backend parametrisation that skips, with the reason, what does not work here.

Tests marked ``ext`` need the compiled extension; they are skipped (saying why) where it cannot be
built. Its first use in a session compiles it (once; the build is cached).
"""

from __future__ import annotations

import pytest
import torch

from stvsr.ops import BACKENDS
from stvsr.ops.backends import why_unavailable


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ext: needs the compiled DCN extension (skipped where it cannot be built)")
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped without one); run them with -m cuda")


def skip_unless_available(backend: str) -> None:
    reason = why_unavailable(backend)
    if reason:
        pytest.skip(f"DCN backend '{backend}' is unavailable on cpu: {reason}")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-shape tests: they gain nothing from a second thread, and on a busy
    2-core machine two spinning OpenMP threads make them many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test draws the same random numbers, whatever ran before it."""
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _skip_ext_marked(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("ext") is not None:
        skip_unless_available("ext")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every backend that works here, one at a time (the others are reported as skipped)."""
    skip_unless_available(request.param)
    return request.param


@pytest.fixture(params=[b for b in BACKENDS if b != "torch"])
def other_backend(request: pytest.FixtureRequest) -> str:
    """Every backend but the pure PyTorch reference that works here, to compare with it."""
    skip_unless_available(request.param)
    return request.param


@pytest.fixture(params=[pytest.param("ext", marks=pytest.mark.ext), "torch"])
def gradcheck_backend(request: pytest.FixtureRequest) -> str:
    """The backends whose backward is hand-written or the reference: 'ext' and 'torch'."""
    return request.param


def _mount_tmpfs(path, size: str, readonly: bool) -> bool:
    """Mount a tmpfs of ``size`` at ``path`` (root only); False where this machine does not allow it."""
    import subprocess

    options = f"size={size}" + (",ro" if readonly else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def _tmpfs(tmp_path_factory, size: str, readonly: bool):
    import subprocess

    path = tmp_path_factory.mktemp("ro_fs" if readonly else "small_fs")
    if not _mount_tmpfs(path, size, readonly):
        pytest.skip("needs a small file system: mounting a tmpfs is not allowed here (run the tests as root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def tmpfs_of(tmp_path_factory):
    """A function ``size -> path`` that mounts a tmpfs of ``size`` ('8m'), unmounted after the test; skips where a
    file system cannot be mounted."""
    mounted = []

    def make(size: str):
        gen = _tmpfs(tmp_path_factory, size, readonly=False)
        mounted.append(gen)
        return next(gen)

    yield make
    for gen in mounted:
        gen.close()


@pytest.fixture
def small_fs(tmp_path_factory):
    """A 2 MB file system (tmpfs), to fill: what a full disk does to a command. Skipped where it cannot be made."""
    yield from _tmpfs(tmp_path_factory, "2m", readonly=False)


@pytest.fixture
def readonly_fs(tmp_path_factory):
    """An empty read-only file system (tmpfs mounted ro): root ignores permission bits, so a chmod'ed folder is
    not read-only for root; this is. Skipped where it cannot be made."""
    yield from _tmpfs(tmp_path_factory, "1m", readonly=True)
