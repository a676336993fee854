"""Training through the real command in other processes: a 2-process torchrun (gloo, CPU) run ends with the
weights of a single-process run on the same total batch; a run killed with SIGKILL and restarted with
``--auto_resume`` ends with the weights of the uninterrupted run."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from stvsr.train import options
from stvsr.train.cli import main
from stvsr.train.trainer import Trainer, find_latest_checkpoint
from test_trainer import base_options, make_vimeo

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "codes" / "train.py"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_vimeo(tmp_path_factory.mktemp("vimeo"), clips=8)


def write_options(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "options.yml"
    path.write_text(yaml.safe_dump(raw))
    return path


def child_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "codes"))
    env.pop("STVSR_ROOT", None)
    return env


def models_dir(root: Path) -> Path:
    """Where base_options(root, ...) runs save their checkpoints."""
    return root / "run" / "experiments" / "tiny" / "models"


def final_weights(models_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(find_latest_checkpoint(models_dir), weights_only=True)["params"]


def assert_equals_uninterrupted_run(weights: dict[str, torch.Tensor], tmp_path: Path, data: Path, train: dict) -> None:
    """``weights`` equal, bit for bit, those of the same run (with flips and rotations) done in one go."""
    _, raw_straight = base_options(tmp_path / "straight", data, **train)
    raw_straight["datasets"]["train"].update(use_flip=True, use_rot=True)
    straight = Trainer(options.validate(raw_straight, None))
    straight.train()
    straight.close()
    assert all(torch.equal(weights[key], value) for key, value in straight.model.state_dict().items())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """Run the commands at once (the nodes of one job) and wait for all."""
    procs = [
        subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd in commands
    ]
    done = []
    try:
        for cmd, proc in zip(commands, procs):
            out, err = proc.communicate(timeout=300)
            done.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return done


def _torchrun_commands(nodes: int, path: Path) -> list[list[str]]:
    """``torchrun`` for 2 processes: one node with 2, or 2 "nodes" of 1 meeting by c10d rendezvous on localhost
    (the multi-node command of docs/training.md, both nodes on this machine)."""
    train = [str(TRAIN), "-opt", str(path), "--launcher", "pytorch"]
    run = [sys.executable, "-m", "torch.distributed.run"]
    if nodes == 1:
        return [[*run, "--standalone", "--nproc_per_node=2", *train]]
    rendezvous = ["--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d",
                  f"--rdzv-endpoint=127.0.0.1:{_free_port()}", f"--rdzv-id=stvsr-test-{os.getpid()}"]  # fmt: skip
    return [[*run, *rendezvous, *train] for _ in range(nodes)]


@pytest.mark.parametrize("nodes", [1, 2], ids=["1node_x2", "2nodes_x1"])
def test_two_process_gloo_run_equals_one_process(tmp_path, data, nodes):
    """Total batch 4: one process takes 4 samples per step, each of the two takes 2 (the same 4: the epoch's
    permutation is shared and each sample's augmentation is seeded by its place in it); the same with the two
    processes on two "nodes" of one process each."""
    train = {"niter": 4, "T_period": [4], "restarts": None, "restart_weights": None}
    _, raw = base_options(tmp_path / "ddp", data, **train)
    raw["datasets"]["train"].update(batch_size=4, use_flip=True, use_rot=True)
    raw["logger"]["save_checkpoint_freq"] = 2
    path = write_options(tmp_path, raw)
    runs = _launch(_torchrun_commands(nodes, path))
    for run in runs:
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    stdout = "".join(run.stdout for run in runs)
    assert "x 2 process(es)" in stdout and stdout.count("Saved checkpoint") == 2  # rank 0 only
    distributed = final_weights(models_dir(tmp_path / "ddp"))
    state = torch.load(find_latest_checkpoint(models_dir(tmp_path / "ddp")), weights_only=True)
    assert len(state["rng_ranks"]) == 2

    _, raw_one = base_options(tmp_path / "one", data, **train)
    raw_one["datasets"]["train"].update(batch_size=4, use_flip=True, use_rot=True)
    single = Trainer(options.validate(raw_one, None))
    single.train()
    single.close()
    initial = Trainer(options.validate(base_options(tmp_path / "init", data, **train)[1], None))
    initial.close()
    changed = 0
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(distributed[key], value, rtol=1e-4, atol=1e-6, msg=key)
        changed += not torch.equal(value, initial.model.state_dict()[key])
    assert changed > 0


def test_launcher_pytorch_outside_torchrun_is_refused(tmp_path, data, capsys, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    _, raw = base_options(tmp_path, data)
    assert main(["-opt", str(write_options(tmp_path, raw)), "--launcher", "pytorch"]) == 2
    assert "torchrun --nproc_per_node=N" in capsys.readouterr().err


def test_killed_run_resumes_exactly(tmp_path, data):
    """The training command killed (SIGKILL) after its first checkpoint, then started again with
    ``--auto_resume``, ends with the weights of a run that was never interrupted."""
    k = 40
    train = {"niter": 2 * k, "T_period": [2 * k], "restarts": None, "restart_weights": None}
    _, raw = base_options(tmp_path / "killed", data, **train)
    raw["datasets"]["train"].update(use_flip=True, use_rot=True)
    raw["logger"].update(save_checkpoint_freq=k, print_freq=10)
    path = write_options(tmp_path, raw)
    models = models_dir(tmp_path / "killed")
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN), "-opt", str(path)],
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not (models / f"iter_{k:08d}.pth").exists():
            assert proc.poll() is None, "the training process ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint after 240 s"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    latest = find_latest_checkpoint(models)
    assert int(latest.stem.split("_")[1]) < 2 * k, "the run finished before it was killed: raise k"

    assert main(["-opt", str(path), "--auto_resume"]) == 0

    assert_equals_uninterrupted_run(final_weights(models), tmp_path, data, train)


def _iteration(line: str) -> int | None:
    match = re.search(r"iter:\s*(\d+),", line)
    return int(match.group(1)) if match else None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_stop_signal_finishes_the_step_saves_and_resumes_exactly(tmp_path, data, sig):
    """Ctrl-C (SIGINT), SIGTERM (kill, Slurm) or SIGHUP (the SSH session dropped) between two checkpoints: the step
    ends, a checkpoint of that iteration is written, one line says how to resume, exit 130 / 143 / 129, no
    traceback; ``--auto_resume`` then ends with the weights of a run that was never interrupted."""
    n = 60
    train = {"niter": n, "T_period": [n], "restarts": None, "restart_weights": None}
    _, raw = base_options(tmp_path / "stopped", data, **train)
    raw["datasets"]["train"].update(use_flip=True, use_rot=True)
    raw["logger"].update(save_checkpoint_freq=1000, print_freq=1)
    path = write_options(tmp_path, raw)
    models = models_dir(tmp_path / "stopped")
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN), "-opt", str(path)],
        env={**child_env(), "PYTHONUNBUFFERED": "1"},  # each log line as it is written
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stdout:
            if (_iteration(line) or 0) >= 3:
                proc.send_signal(sig)
                break
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, out[-2000:] + err[-2000:]
    assert "Traceback" not in err and "Done:" not in out
    latest = find_latest_checkpoint(models)
    assert latest is not None and 3 <= int(latest.stem.split("_")[1]) < n, "stopped too late: raise n"
    resume_lines = [line for line in out.splitlines() if "--auto_resume" in line]
    assert len(resume_lines) == 1 and str(path) in resume_lines[0] and latest.name in resume_lines[0]
    assert not list(models.glob(".*.tmp-*"))  # no temporary left by an interrupted save (stvsr.atomic)
    if sig != signal.SIGINT:
        return  # the resume is the same for every signal: checked once

    assert main(["-opt", str(path), "--auto_resume"]) == 0
    assert_equals_uninterrupted_run(final_weights(models), tmp_path, data, train)


def test_failed_checks_leave_no_experiment_folder_and_damaged_lmdb_is_one_message(tmp_path, data, capsys):
    """Data that fails its checks (missing root, truncated LMDB, corrupt LMDB value) stops the run with one
    message and exit 2, before experiments/<name>/ exists (so the next run has nothing to archive)."""
    from stvsr.data.io import read_image_bgr
    from stvsr.data.make_lmdb import build_lmdb

    exp = tmp_path / "run" / "experiments"
    _, raw = base_options(tmp_path, data)
    raw["datasets"]["train"]["dataroot_GT"] = str(tmp_path / "nowhere")
    assert main(["-opt", str(write_options(tmp_path, raw))]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err
    assert not exp.exists()

    for part in ("sequences", "sequences_LR"):
        build_lmdb(data / part, tmp_path / f"{part}.lmdb", data / "list.txt", progress=False)
    _, raw = base_options(tmp_path, data)
    raw["datasets"]["train"].update(
        dataroot_GT=str(tmp_path / "sequences.lmdb"), dataroot_LQ=str(tmp_path / "sequences_LR.lmdb")
    )
    raw["train"].update(niter=4, T_period=[4], restarts=None, restart_weights=None)  # one epoch: every clip
    path = write_options(tmp_path, raw)
    # values overwritten on disk (frames 2-6 of one clip: every 3-frame sample of it reads one of them) are
    # named when read, not trained on silently
    data_file = tmp_path / "sequences.lmdb" / "data.mdb"
    good = data_file.read_bytes()
    raw_bytes = bytearray(good)
    for f in range(2, 7):
        value = read_image_bgr(data / "sequences" / "00001" / "0001" / f"im{f}.png").tobytes()
        at = raw_bytes.find(value) + 100
        raw_bytes[at : at + 8] = bytes(255 - b for b in raw_bytes[at : at + 8])
    data_file.write_bytes(bytes(raw_bytes))
    assert main(["-opt", str(path)]) == 2
    printed = capsys.readouterr()
    assert re.search(r"key 00001_0001_[2-6] is corrupt", printed.out + printed.err)
    assert not exp.exists()  # found by the check of the first sample, before the experiment folder is made
    # a truncated data.mdb: a message before any read (a bus error would kill the process: run it apart)
    with open(data_file, "r+b") as f:
        f.truncate(len(good) // 2)
    run = subprocess.run(
        [sys.executable, str(TRAIN), "-opt", str(path)],
        env=child_env(), capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert run.returncode not in (-7, 135), "training on a truncated LMDB died of SIGBUS"
    assert run.returncode == 2 and "is damaged" in run.stderr and "truncated" in run.stderr, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert not exp.exists()
