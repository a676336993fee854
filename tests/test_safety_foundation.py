"""The shared guards every command uses before and while it writes: permissions of atomic writes, stale
temporaries, writable output folders, source/destination overlap, devices, folder names, stop signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from stvsr.atomic import atomic_write, remove_stale_temporaries, temporary_sibling
from stvsr.device import DeviceError, resolve_device
from stvsr.outputs import OutputError, check_writable_folder, describe_write_error, refuse_overlap
from stvsr.schema import Key, folder_name_problem, validate
from stvsr.signals import StopSignal, raise_on_stop_signals, stop_exit_code, stop_name


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_files_get_the_permissions_of_the_umask(tmp_path, umask):
    before = os.umask(umask)
    try:
        path = atomic_write(tmp_path / "report.txt", "x")
    finally:
        os.umask(before)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".out.mp4.tmp-{pid}-abcd1234.mp4"
    stale.write_bytes(b"half a video")
    mine = temporary_sibling(tmp_path / "out.mp4")
    assert not stale.exists()
    assert mine.exists() and mine.name.startswith(f".out.mp4.tmp-{os.getpid()}-")
    remove_stale_temporaries(tmp_path / "out.mp4")
    assert mine.exists()  # this process's own temporary is never removed


def test_writable_folder_is_created_and_left_clean(tmp_path):
    folder = check_writable_folder(tmp_path / "a" / "b", "--results_root")
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_a_file_is_not_a_results_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match=r"--results_root .*f: exists and is not a folder"):
        check_writable_folder(tmp_path / "f", "--results_root")
    with pytest.raises(OutputError, match="cannot create the folder"):
        check_writable_folder(tmp_path / "f" / "sub", "--results_root")


def test_read_only_folder_is_refused(readonly_fs):
    with pytest.raises(OutputError, match=r"--results_root: cannot write .*Read-only file system"):
        check_writable_folder(readonly_fs, "--results_root")


def test_full_file_system_is_refused_with_the_free_space(small_fs):
    (small_fs / "filler").write_bytes(b"\0" * (2 * 2**20 - 2048))  # tmpfs counts whole pages: leaves < 4 kB
    with pytest.raises(OutputError, match=r"No space left on device \(0\.\d MB free"):
        check_writable_folder(small_fs / "results", "--results_root")


def test_write_error_names_the_file_and_the_reason(tmp_path):
    exc = OSError(28, "No space left on device")
    assert describe_write_error(exc, tmp_path / "x.pth").startswith(f"cannot write {tmp_path / 'x.pth'}: No space")


@pytest.mark.parametrize(
    "src, dst, relation",
    [("data", "data", "is the same folder as"), ("data", "data/lmdb", "is inside"), ("data/gt", "data", "holds")],
)
def test_destination_overlapping_its_source_is_refused(tmp_path, src, dst, relation):
    (tmp_path / "data" / "gt").mkdir(parents=True)
    with pytest.raises(OutputError, match=f"--dst .* {relation} --src"):
        refuse_overlap(tmp_path / src, tmp_path / dst, "--src", "--dst")


def test_overlap_is_found_through_links(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "data")
    with pytest.raises(OutputError, match="is the same folder as"):
        refuse_overlap(tmp_path / "data", tmp_path / "alias", "--src", "--dst")
    refuse_overlap(tmp_path / "data", tmp_path / "data_LR", "--src", "--dst")  # siblings with a common prefix


def test_devices(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type in ("cpu", "cuda")
    with pytest.raises(DeviceError, match="--device 'gpu0': not a device"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="--device cuda: CUDA is not available on this machine .*use --device cpu"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DeviceError, match=r"cuda:2: there is no such GPU.*cuda:0 \.\. cuda:1"):
        resolve_device("cuda:2", "device")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x", "a\\b", ".hidden", " pad"])
def test_bad_folder_names(name):
    assert folder_name_problem(name) is not None


def test_good_folder_names():
    assert folder_name_problem("zsm_demo-2.1") is None


def test_schema_minimum_lists_every_problem():
    schema = {"a": Key(int, 1, minimum=1), "b": Key(float, 0.5, minimum=0), "c": Key(int, 1, minimum=1)}
    with pytest.raises(ValueError) as info:
        validate({"a": 0, "b": -1.0, "c": 3}, schema)
    assert info.value.problems == ["a=0 must be >= 1", "b=-1.0 must be >= 0"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_stop_signals_raise_the_same_interruption(sig):
    with pytest.raises(KeyboardInterrupt) as info, raise_on_stop_signals():
        os.kill(os.getpid(), sig)
        for _ in range(1000):
            pass
    assert isinstance(info.value, StopSignal)
    assert stop_name(info.value) == signal.Signals(sig).name and stop_exit_code(info.value) == 128 + sig
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


def test_plain_ctrl_c_is_sigint():
    assert stop_name(KeyboardInterrupt()) == "SIGINT" and stop_exit_code(KeyboardInterrupt()) == 130


def test_stop_signal_in_a_process(tmp_path):
    """A real SIGHUP to a process inside the block runs its cleanup and exits with 129."""
    script = textwrap.dedent(
        """
        import os, signal, sys, time
        from stvsr.signals import raise_on_stop_signals, stop_exit_code
        try:
            with raise_on_stop_signals():
                print("ready", flush=True)
                time.sleep(30)
        except KeyboardInterrupt as exc:
            print("cleaned up", flush=True)
            sys.exit(stop_exit_code(exc))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGHUP)
    out, _ = proc.communicate(timeout=20)
    assert out.strip() == "cleaned up" and proc.returncode == 129
