"""Training tried against misuse: nothing a user gets wrong destroys another run's data or reports a wrong result
as success, and each mistake is one message (exit 2) found before the experiment folder is made."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import yaml

from stvsr.model.runs import RunError, run_model
from stvsr.train import options
from stvsr.train.cli import main
from stvsr.train.experiment import ExperimentLock
from stvsr.train.trainer import Trainer, TrainingStopped, find_latest_checkpoint
from test_trainer import base_options, make_vimeo

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_vimeo(tmp_path_factory.mktemp("vimeo"), clips=4)


def write_options(folder: Path, raw: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "options.yml"
    path.write_text(yaml.safe_dump(raw))
    return path


def experiments(tmp_path: Path) -> Path:
    return tmp_path / "run" / "experiments"


def tree(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


def short_run(tmp_path: Path, data: Path, **train) -> dict:
    _, raw = base_options(tmp_path, data, **{"niter": 2, "T_period": [2], "restarts": None, **train})
    raw["train"]["restart_weights"] = None
    raw["logger"]["save_checkpoint_freq"] = 2
    return raw


# ------------------------------------------------------------------ item 3: one run per experiment, its name


def test_second_run_of_a_live_experiment_is_refused_and_touches_nothing(tmp_path, data, capsys):
    raw = short_run(tmp_path, data)
    path = write_options(tmp_path, raw)
    assert main(["-opt", str(path)]) == 0
    exp = experiments(tmp_path) / "tiny"
    before = {p: p.read_bytes() for p in exp.rglob("*") if p.is_file()}
    capsys.readouterr()
    live = ExperimentLock(exp).acquire()  # what a run in progress holds
    try:
        for argv in (["-opt", str(path)], ["-opt", str(path), "--auto_resume"]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert f"experiment {exp} is in use by another training run (pid " in err and "--set name=" in err
            assert [p.name for p in experiments(tmp_path).iterdir() if not p.name.startswith(".")] == ["tiny"]
            assert {p: p.read_bytes() for p in exp.rglob("*") if p.is_file()} == before  # not archived, not written
    finally:
        live.release()
    assert main(["-opt", str(path)]) == 0  # once the run has ended, the next one proceeds (and archives it)
    assert len([p for p in experiments(tmp_path).iterdir() if p.name.startswith("tiny_archived_")]) == 1
    assert not any(p.name.endswith(".lock") for p in experiments(tmp_path).iterdir())  # removed at the end


def test_lock_of_a_dead_run_does_not_block(tmp_path):
    exp = tmp_path / "experiments" / "x"
    lock = ExperimentLock(exp).acquire()
    import os

    os.close(lock._fd)  # the kernel drops the lock with the process's file: a crashed run
    lock._fd = None
    assert lock.path.exists()
    ExperimentLock(exp).acquire().release()


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x", "x/../../y"])
def test_bad_experiment_names_are_refused_before_anything_is_written(tmp_path, data, capsys, name):
    raw = short_run(tmp_path, data)
    (experiments(tmp_path) / "pretrained_models").mkdir(parents=True)
    (experiments(tmp_path) / "pretrained_models" / "w.pth").write_bytes(b"keep me")
    raw["name"] = name
    path = write_options(tmp_path / "opt", raw)
    outside = tree(tmp_path)
    assert main(["-opt", str(path)]) == 2
    err = capsys.readouterr().err
    assert "name: " in err and "experiments/<name>" in err and "Traceback" not in err
    assert tree(tmp_path) == outside  # nothing renamed, created or written, inside experiments/ or outside


# ------------------------------------------------------------------ item 4: a run's saved options are that run


def test_saved_options_of_an_archived_or_copied_run_evaluate_that_run(tmp_path, data):
    raw = short_run(tmp_path, data)
    path = write_options(tmp_path, raw)
    assert main(["-opt", str(path)]) == 0
    first = torch.load(find_latest_checkpoint(experiments(tmp_path) / "tiny" / "models"), weights_only=True)
    raw["train"]["manual_seed"] = 7  # another run of the same name: the first is archived
    assert main(["-opt", str(write_options(tmp_path, raw))]) == 0
    (archived,) = [p for p in experiments(tmp_path).iterdir() if p.name.startswith("tiny_archived_")]
    second = torch.load(find_latest_checkpoint(experiments(tmp_path) / "tiny" / "models"), weights_only=True)
    assert first["run_id"] != second["run_id"]
    assert yaml.safe_load((archived / "options.yml").read_text())["run_id"] == first["run_id"]

    model = run_model(archived / "options.yml")
    assert model["name"] == archived.name  # reports go under the archived run's name
    assert Path(model["path"]["pretrain_model_G"]).parent == archived / "models"
    loaded = torch.load(model["path"]["pretrain_model_G"], weights_only=True)
    assert loaded["run_id"] == first["run_id"]

    copy_dir = experiments(tmp_path) / "tiny_copy"
    import shutil

    shutil.copytree(archived, copy_dir)
    model = run_model(copy_dir / "options.yml")
    assert model["name"] == "tiny_copy" and Path(model["path"]["pretrain_model_G"]).parent == copy_dir / "models"
    assert run_model(experiments(tmp_path) / "tiny" / "options.yml")["name"] == "tiny"

    # a folder whose newest checkpoint is another run's: refused, not evaluated
    newest = find_latest_checkpoint(experiments(tmp_path) / "tiny" / "models")
    shutil.copy(newest, copy_dir / "models" / "iter_00000099.pth")
    with pytest.raises(RunError, match=f"belongs to run {second['run_id']}, not to run {first['run_id']}"):
        run_model(copy_dir / "options.yml")


def test_resumed_run_keeps_its_run_id(tmp_path, data):
    raw = short_run(tmp_path, data)
    path = write_options(tmp_path, raw)
    assert main(["-opt", str(path)]) == 0
    models = experiments(tmp_path) / "tiny" / "models"
    first = torch.load(find_latest_checkpoint(models), weights_only=True)["run_id"]
    raw["train"].update(niter=4, T_period=[4])
    assert main(["-opt", str(write_options(tmp_path, raw)), "--auto_resume"]) == 0
    latest = torch.load(find_latest_checkpoint(models), weights_only=True)
    assert latest["iter"] == 4 and latest["run_id"] == first
    assert yaml.safe_load((models.parent / "options.yml").read_text())["run_id"] == first


# ------------------------------------------------------------------ item 5: non-finite weights, diverging runs


def _poison(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    key = next(iter(state["params"]))
    state["params"][key].view(-1)[0] = float("nan")
    torch.save(state, path)


def test_resume_and_pretrained_weights_that_are_not_finite_are_refused(tmp_path, data, capsys):
    raw = short_run(tmp_path, data)
    path = write_options(tmp_path, raw)
    assert main(["-opt", str(path)]) == 0
    latest = find_latest_checkpoint(experiments(tmp_path) / "tiny" / "models")
    _poison(latest)
    capsys.readouterr()
    assert main(["-opt", str(path), "--auto_resume"]) == 2
    err = capsys.readouterr().err
    assert str(latest) in err and "NaN or infinite" in err and "earlier checkpoint" in err

    raw = short_run(tmp_path / "other", data)
    raw["path"]["pretrain_model_G"] = str(latest)
    assert main(["-opt", str(write_options(tmp_path / "other", raw))]) == 2
    assert "NaN or infinite" in capsys.readouterr().err
    assert not (experiments(tmp_path / "other")).exists()


def test_diverging_safa_stops_with_the_loss_guard(tmp_path, data, capsys):
    """A learning rate that makes SAFA diverge at once: the NaN reaches the loss (not torch.bernoulli inside its
    gate), the steps are skipped, and the run stops after max_bad_steps with exit 1 and no non-finite checkpoint."""
    raw = short_run(tmp_path, data, lr_G=1e6, niter=12, T_period=[12], max_bad_steps=3)
    raw["network_G"] = {"which_model_G": "SAFA", "nf": 8, "block_num": 1, "depth": 1, "last_RBs": 1, "head_nf": 8}
    raw["logger"]["save_checkpoint_freq"] = 1
    assert main(["-opt", str(write_options(tmp_path, raw))]) == 1
    printed = capsys.readouterr()
    assert "steps in a row skipped for a non-finite" in printed.out and "Traceback" not in printed.err
    for checkpoint in (experiments(tmp_path) / "tiny" / "models").glob("iter_*.pth"):
        params = torch.load(checkpoint, weights_only=True)["params"]
        assert all(bool(torch.isfinite(v).all()) for v in params.values() if v.is_floating_point())


def test_non_finite_gradient_skips_the_step(tmp_path, data):
    opt, _ = base_options(tmp_path, data, max_bad_steps=2)
    trainer = Trainer(opt)
    try:
        # finite in the forward pass (0 * sqrt(0)), NaN in the backward one (0 * 1 / (2 sqrt(0)))
        trainer.pixel_loss = lambda out, gt: (out - gt).abs().mean() + (out.sum() * 0).sqrt() * 0
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        with pytest.raises(TrainingStopped, match=r"non-finite gradient \(norm (nan|inf)\)"):
            trainer.train()
        after = trainer.model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)  # no step was taken
    finally:
        trainer.close()


def test_non_finite_weights_are_not_saved(tmp_path, data):
    opt, _ = base_options(tmp_path, data)
    trainer = Trainer(opt)
    try:
        with torch.no_grad():
            next(trainer.model.parameters()).view(-1)[0] = math.inf
        with pytest.raises(TrainingStopped, match="NaN or infinite.*Not saved; no checkpoint was written yet"):
            trainer.save_checkpoint()
        assert find_latest_checkpoint(trainer.models_dir) is None
    finally:
        trainer.close()


# ------------------------------------------------------------------ ordinary mistakes: one message, found first


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("logger", "save_checkpoint_freq", 0, "logger.save_checkpoint_freq=0 must be >= 1"),
        ("logger", "print_freq", 0, "logger.print_freq=0 must be >= 1"),
        ("train", "max_bad_steps", 0, "train.max_bad_steps=0 must be >= 1"),
        ("train", "val_freq", 0, "train.val_freq=0 must be >= 1"),
        ("train", "lr_G", -1e-4, "train.lr_G=-0.0001 must be >= 0"),
    ],
)
def test_zero_or_negative_counts_are_option_errors(tmp_path, data, capsys, section, key, value, message):
    raw = short_run(tmp_path, data)
    raw[section][key] = value
    raw["datasets"]["train"]["GT_size"] = 0
    assert main(["-opt", str(write_options(tmp_path, raw))]) == 2
    err = capsys.readouterr().err
    assert message in err and "datasets.train.GT_size=0 must be >= 1" in err  # every problem, at once
    assert not experiments(tmp_path).exists()


def test_a_dataset_block_that_is_not_a_mapping(tmp_path, data, capsys):
    raw = short_run(tmp_path, data)
    raw["datasets"]["train"] = 5
    assert main(["-opt", str(write_options(tmp_path, raw))]) == 2
    err = capsys.readouterr().err
    assert "datasets.train: expected mapping, got 5" in err and "Traceback" not in err


def test_cuda_on_a_machine_without_it(tmp_path, data, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    raw = short_run(tmp_path, data)
    raw["device"] = "cuda"
    assert main(["-opt", str(write_options(tmp_path, raw))]) == 2
    err = capsys.readouterr().err
    assert "device cuda: CUDA is not available on this machine" in err and "Traceback" not in err


def test_validation_data_that_does_not_fit_is_found_before_training(tmp_path, data, capsys):
    raw = short_run(tmp_path, data, val_freq=2)
    val = {k: v for k, v in raw["datasets"]["train"].items() if k not in ("batch_size", "n_workers")}
    raw["datasets"]["val"] = {**val, "phase": "val", "dataroot_LQ": val["dataroot_GT"]}  # GT given as LR: x1
    assert main(["-opt", str(write_options(tmp_path, raw))]) == 2
    err = capsys.readouterr().err
    assert "LR must be GT/4" in err and "Traceback" not in err  # the first sample read before training
    assert not experiments(tmp_path).exists()


def test_validation_failure_during_training_saves_first(tmp_path, data):
    raw = short_run(tmp_path, data, val_freq=1, niter=4, T_period=[4])
    raw["logger"]["save_checkpoint_freq"] = 100
    val = {k: v for k, v in raw["datasets"]["train"].items() if k not in ("batch_size", "n_workers")}
    raw["datasets"]["val"] = {**val, "phase": "val"}
    trainer = Trainer(options.validate(raw, None))
    try:
        first = trainer.val_set[0]
        broken = {**first, "GT": first["GT"][:, :, :8]}  # a later sample whose GT does not fit
        trainer.val_set = [first, broken]
        with pytest.raises(TrainingStopped, match=r"validation failed at iteration 1: .*Saved .*iter_00000001\.pth"):
            trainer.train()
        assert find_latest_checkpoint(trainer.models_dir).name == "iter_00000001.pth"
    finally:
        trainer.close()


def test_auto_resume_after_changing_the_network_is_one_short_message(tmp_path, data, capsys):
    raw = short_run(tmp_path, data)
    assert main(["-opt", str(write_options(tmp_path, raw))]) == 0
    changed = copy.deepcopy(raw)
    changed["network_G"]["nf"] = 16
    capsys.readouterr()
    assert main(["-opt", str(write_options(tmp_path, changed)), "--auto_resume"]) == 2
    err = capsys.readouterr().err
    assert "other network_G settings (nf 8 -> 16)" in err and len(err.splitlines()) == 1


def test_damaged_latest_checkpoint_names_it_and_the_intact_previous_one(tmp_path, data, capsys):
    raw = short_run(tmp_path, data, niter=4, T_period=[4])
    assert main(["-opt", str(write_options(tmp_path, raw))]) == 0
    models = experiments(tmp_path) / "tiny" / "models"
    latest = find_latest_checkpoint(models)
    latest.write_bytes(latest.read_bytes()[:1000])  # a save cut short (the file system, not stvsr)
    capsys.readouterr()
    assert main(["-opt", str(write_options(tmp_path, raw)), "--auto_resume"]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {latest} cannot be read" in err
    assert "the previous checkpoint iter_00000002.pth is intact" in err
    latest.unlink()
    assert main(["-opt", str(write_options(tmp_path, raw)), "--auto_resume"]) == 0


def test_niter_below_the_checkpoint(tmp_path, data, capsys):
    raw = short_run(tmp_path, data, niter=4, T_period=[4])
    assert main(["-opt", str(write_options(tmp_path, raw))]) == 0
    raw["train"].update(niter=3, T_period=[3])
    capsys.readouterr()
    assert main(["-opt", str(write_options(tmp_path, raw)), "--auto_resume"]) == 2
    err = capsys.readouterr().err
    assert "is at iteration 4, past train.niter 3" in err and "--set train.niter=N" in err


def test_failed_data_check_leaves_no_folder_and_retries_archive_nothing(tmp_path, data, capsys):
    raw = short_run(tmp_path, data)
    raw["datasets"]["train"]["dataroot_LQ"] = raw["datasets"]["train"]["dataroot_GT"]  # LR as large as GT
    for _ in range(2):
        assert main(["-opt", str(write_options(tmp_path, raw))]) == 2
        assert "LR must be GT/4" in capsys.readouterr().err
    assert not experiments(tmp_path).exists()


def test_a_full_disk_during_a_checkpoint_stops_with_one_message(tmp_path, data, tmpfs_of, capsys):
    small_fs = tmpfs_of("8m")  # room for two checkpoints of 2.9 MB, not four
    raw = short_run(tmp_path, data, niter=4, T_period=[4])
    raw["path"]["experiments_root"] = str(small_fs / "tiny")
    raw["logger"]["save_checkpoint_freq"] = 1
    raw["logger"]["keep_checkpoints"] = 0  # keep all: the disk fills up
    assert main(["-opt", str(write_options(tmp_path, raw))]) == 1
    printed = capsys.readouterr()
    assert "cannot write" in printed.out and "MB free on its file system" in printed.out
    assert "the last good checkpoint is" in printed.out and "Traceback" not in printed.err
    saved = sorted((small_fs / "tiny" / "models").glob("iter_*.pth"))
    assert saved and not list((small_fs / "tiny" / "models").glob(".*tmp*"))  # no partial file
    for checkpoint in saved:
        torch.load(checkpoint, weights_only=True)  # every file left is whole


def test_too_little_space_for_one_checkpoint_is_refused_before_training(tmp_path, data, small_fs, capsys):
    raw = short_run(tmp_path, data)
    raw["network_G"].update(nf=32, front_RBs=2, back_RBs=4)  # about 3 MB of weights: > the 2 MB disk
    raw["path"]["experiments_root"] = str(small_fs / "tiny")
    assert main(["-opt", str(write_options(tmp_path, raw))]) == 2
    err = capsys.readouterr().err
    assert "less than one checkpoint of this model" in err
    assert not (small_fs / "tiny").exists()
