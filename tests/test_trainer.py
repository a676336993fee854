"""The training loop on CPU: a tiny ZSM on a tiny synthetic Vimeo-format set trains with a finite loss and
writes checkpoints; a run resumed from a checkpoint ends with exactly the weights of the uninterrupted run;
the loss guard stops on repeated non-finite losses; the CLI reports option mistakes in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from stvsr.data.io import write_image
from stvsr.train import options
from stvsr.train.cli import main
from stvsr.train.trainer import Trainer, TrainingStopped, find_latest_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def make_vimeo(root, clips=3, size=(32, 32)):
    """Vimeo layout: sequences/00001/000k/im1..7.png (GT) and sequences_LR/... (x4 smaller)."""
    rng = np.random.default_rng(0)
    h, w = size
    names = []
    for c in range(1, clips + 1):
        name = f"00001/{c:04d}"
        names.append(name)
        base = rng.integers(0, 256, (h + 8, w + 8, 3)).astype(np.float64)
        for f in range(1, 8):
            gt = base[f : f + h, f : f + w].astype(np.uint8)
            write_image(root / "sequences" / name / f"im{f}.png", gt)
            lr = gt.reshape(h // 4, 4, w // 4, 4, 3).mean(axis=(1, 3)).round().astype(np.uint8)
            write_image(root / "sequences_LR" / name / f"im{f}.png", lr)
    (root / "list.txt").write_text("\n".join(names) + "\n")
    return root


def base_options(tmp_path, data, **train):
    raw = {
        "name": "tiny",
        "use_tb_logger": False,
        "device": "cpu",
        "datasets": {
            "train": {
                "mode": "Vimeo7",
                "dataroot_GT": str(data / "sequences"),
                "dataroot_LQ": str(data / "sequences_LR"),
                "list_file": str(data / "list.txt"),
                "N_frames": 3,
                "LQ_index_list": [0, 2],
                "GT_size": 16,
                "LQ_size": 4,
                "batch_size": 2,
                "n_workers": 0,
            },
        },
        "network_G": {"which_model_G": "LunaTokis", "nf": 8, "nframes": 2, "groups": 2, "front_RBs": 1, "back_RBs": 1},
        "path": {"root": str(tmp_path / "run")},
        "train": {
            "lr_G": 1e-3,
            "niter": 6,
            "T_period": [4, 4],
            "restarts": [4],
            "restart_weights": [0.5],
            "eta_min": 1e-7,
            **train,
        },
        "logger": {"print_freq": 1, "save_checkpoint_freq": 3, "keep_checkpoints": 2},
    }
    return options.validate(raw, None), raw


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_vimeo(tmp_path_factory.mktemp("vimeo"), clips=5)


def test_trains_validates_and_saves_checkpoints(tmp_path, data):
    _, raw = base_options(tmp_path, data, val_freq=3)
    val = {k: v for k, v in raw["datasets"]["train"].items() if k not in ("batch_size", "n_workers")}
    raw["datasets"]["val"] = {**val, "phase": "val"}
    opt = options.validate(raw, None)
    trainer = Trainer(opt)
    result = trainer.train()
    trainer.close()
    assert result["iter"] == 6 and np.isfinite(result["loss"])
    assert 5.0 < result["psnr_y"] < 60.0
    models = tmp_path / "run" / "experiments" / "tiny" / "models"
    assert sorted(p.name for p in models.iterdir()) == ["iter_00000003.pth", "iter_00000006.pth"]
    assert find_latest_checkpoint(models).name == "iter_00000006.pth"
    state = torch.load(models / "iter_00000006.pth", weights_only=True)
    assert (
        state["iter"] == 6 and state["options"]["name"] == "tiny" and {"python", "numpy", "torch"} <= set(state["rng"])
    )
    assert (tmp_path / "run" / "experiments" / "tiny" / "options.yml").is_file()
    # the weights load as an official checkpoint (the 'params' entry)
    from stvsr.archs import build_arch
    from stvsr.model.weights import load_official

    net = build_arch(opt["network_G"])
    load_official(net, models / "iter_00000006.pth")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), trainer.net.state_dict().values()))


def with_workers(opt, workers):
    opt["datasets"]["train"]["n_workers"] = workers
    return opt


@pytest.mark.parametrize("workers", [0, 2])
def test_exact_resume(tmp_path, data, workers):
    """2k iterations straight == k, then a fresh process-like Trainer resuming for k (k = 3, and the resume
    point is inside an epoch: 5 clips, batch 2 -> 2 iterations per epoch), with random crops and flips, an EMA of
    the weights, and DataLoader workers (whose assignment of samples differs between the two runs)."""
    augment = {"use_flip": True, "use_rot": True, "GT_size": 16, "LQ_size": 4}
    opt, _ = base_options(tmp_path / "a", data, ema_decay=0.9)
    opt["datasets"]["train"].update(augment)
    straight = Trainer(with_workers(opt, workers))
    straight.train()
    straight.close()

    opt_b, _ = base_options(tmp_path / "b", data, ema_decay=0.9)
    opt_b["datasets"]["train"].update(augment)
    first = Trainer(with_workers(opt_b, workers))
    first.train(stop_at=3)
    first.close()
    torch.manual_seed(123)  # whatever happens in between must not matter
    np.random.seed(5)
    opt_b2, _ = base_options(tmp_path / "b", data, ema_decay=0.9)
    opt_b2["datasets"]["train"].update(augment)
    resumed = Trainer(with_workers(opt_b2, workers), resume="auto")
    assert resumed.iter == 3
    resumed.train()
    resumed.close()
    for attr in ("model", "eval_model"):
        a, b = getattr(straight, attr).state_dict(), getattr(resumed, attr).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.optimizer.param_groups[0]["lr"] == resumed.optimizer.param_groups[0]["lr"]
    # and the run did change the weights (a resume that trained nothing would pass the comparison too)
    assert not torch.equal(straight.model.state_dict()["conv_first.weight"], first_weights(opt))


def first_weights(opt):
    from stvsr.archs import build_arch

    torch.manual_seed(opt["train"]["manual_seed"])
    return build_arch(opt["network_G"]).state_dict()["conv_first.weight"]


def test_ema_follows_the_formula(tmp_path, data):
    """ema_k = d * ema_(k-1) + (1 - d) * w_k, starting from the initial weights."""
    opt, _ = base_options(tmp_path, data, ema_decay=0.75, niter=2)
    trainer = Trainer(opt)
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train(stop_at=1)
    w1 = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train(stop_at=2)
    trainer.close()
    for k, w2 in trainer.model.state_dict().items():
        expected = 0.75 * (0.75 * initial[k] + 0.25 * w1[k]) + 0.25 * w2
        torch.testing.assert_close(trainer.ema.model.state_dict()[k], expected, rtol=1e-6, atol=1e-7)
    state = torch.load(find_latest_checkpoint(opt["path"]["models"]), weights_only=True)
    assert all(torch.equal(state["params_ema"][k], v) for k, v in trainer.ema.model.state_dict().items())


def test_architecture_training_objective(tmp_path, data):
    """The trainer's loss is the arch's training_objective(lqs, gt, pixel, feature, time); pixel carries the
    weight."""
    opt, _ = base_options(tmp_path, data, niter=1, pixel_weight=0.5, pixel_criterion="l1", pixel_reduction="mean")
    trainer = Trainer(opt)
    seen = {}

    def training_objective(lqs, gt, pixel, feature=None, time=None):
        out = trainer.model(lqs)
        seen.update(out=out.shape, gt=gt.shape, feature=feature, time=time)
        seen["ratio"] = float(pixel(out, gt).detach() / (out - gt).abs().mean().detach())
        return pixel(out[:, 1], gt[:, 1])

    trainer.model.training_objective = training_objective
    trainer.train()
    trainer.close()
    assert seen["out"] == seen["gt"] == (2, 3, 3, 16, 16) and seen["feature"] is None and seen["time"] is None
    assert seen["ratio"] == pytest.approx(0.5)


def test_tensorboard_scalars_and_image_triplets(tmp_path, data):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, raw = base_options(tmp_path, data, val_freq=2, niter=2)
    raw["use_tb_logger"] = True
    raw["logger"]["val_images"] = 2
    val = {k: v for k, v in raw["datasets"]["train"].items() if k not in ("batch_size", "n_workers")}
    raw["datasets"]["val"] = {**val, "phase": "val"}
    trainer = Trainer(options.validate(raw, None))
    trainer.train()
    trainer.close()
    events = EventAccumulator(str(tmp_path / "run" / "experiments" / "tiny" / "tb_logger")).Reload()
    tags = events.Tags()
    assert {"loss", "lr", "time/iter", "time/data", "val/psnr_y"} <= set(tags["scalars"])
    images = sorted(tags["images"])
    assert len(images) == 2
    image = events.Images(images[0])[0]
    assert (image.width, image.height) == (3 * 32, 32)  # [bicubic | output | GT] of the middle frame (32x32)


def test_mixed_precision_needs_cuda(tmp_path, data):
    opt, _ = base_options(tmp_path, data, amp="bf16")
    with pytest.raises(ValueError, match="train.amp: bf16 mixed precision needs a CUDA device"):
        Trainer(opt)


def test_loss_guard_stops(tmp_path, data):
    opt, _ = base_options(tmp_path, data, max_bad_steps=2)
    trainer = Trainer(opt)
    trainer.pixel_loss = lambda out, gt: (out - gt).sum() * float("nan")
    before = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    with pytest.raises(TrainingStopped, match="2 steps in a row skipped for a non-finite loss"):
        trainer.train()
    trainer.close()
    assert all(torch.equal(before[k], v) for k, v in trainer.net.state_dict().items())


def test_cli_reports_option_errors(tmp_path, data, capsys):
    _, raw = base_options(tmp_path, data)
    raw["train"]["lr_g"] = 1
    path = tmp_path / "opt.yml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["-opt", str(path)]) == 2
    err = capsys.readouterr().err
    assert "train.lr_g" in err and "'lr_G'" in err
    del raw["train"]["lr_g"]
    path.write_text(yaml.safe_dump(raw))
    assert main(["-opt", str(path), "--set", "train.niter=2", "--set", "logger.save_checkpoint_freq=1"]) == 0
    assert main(["-opt", str(path), "--set", "train.niter=3", "--auto_resume"]) == 0
    models = tmp_path / "run" / "experiments" / "tiny" / "models"
    assert sorted(p.name for p in models.iterdir()) == ["iter_00000002.pth", "iter_00000003.pth"]
    assert "Resumed from" in capsys.readouterr().out


def test_validation_on_a_folder_of_clips(tmp_path, data):
    """datasets.val may be a Vid4-style folder (VideoFolder 7-frame windows, LR made from GT)."""
    _, raw = base_options(tmp_path, data, val_freq=1, niter=1)
    raw["datasets"]["val"] = {
        "mode": "VideoFolder",
        "dataroot_GT": str(data / "sequences" / "00001"),
        "degradation": "BI",
        "window": 7,
    }
    trainer = Trainer(options.validate(raw, None))
    result = trainer.train()
    baseline = trainer.validate_baseline()
    trainer.close()
    assert len(trainer.val_set) == 5 and 5.0 < result["psnr_y"] < 60.0 and 5.0 < baseline < 60.0


def test_building_the_demo_set_is_announced(tmp_path, data, capsys, monkeypatch):
    """A config with path.demo_data says, before the ~10 s build, that and where it builds the demo set (the data
    module's record reaches the training console), and shows the build's progress bars."""
    import stvsr.data.demo as demo

    calls = []

    def fake_build(root, spec, progress):  # the real one takes ~10 s; the datasets below are the tiny ones
        calls.append(progress)
        root.mkdir()

    monkeypatch.setattr(demo, "make_demo_data", fake_build)
    _, raw = base_options(tmp_path, data)
    raw["path"]["demo_data"] = str(tmp_path / "demo")
    trainer = Trainer(options.validate(raw, None))
    trainer.close()
    assert f"Building the demo set in {tmp_path / 'demo'}" in capsys.readouterr().out
    assert calls == [True]


def test_records_of_every_stvsr_module_reach_the_console_and_the_log_file(tmp_path, data, capsys):
    """The model built (stvsr.archs), data warnings (stvsr.data) and the deformable offsets' divergence warning
    (stvsr.ops) are in the training log, not only the trainer's own lines; after the run the package logger is
    as before (its records propagate to the application's handlers again)."""
    import logging

    _, raw = base_options(tmp_path, data, niter=1)
    trainer = Trainer(options.validate(raw, None))
    logging.getLogger("stvsr.ops.modules").warning("DCNSep: mean |offset| = 174.4 > 100 (test record)")
    trainer.train()
    trainer.close()
    out = capsys.readouterr().out
    log = next((tmp_path / "run" / "experiments" / "tiny").glob("train_tiny_*.log")).read_text()
    for text in ("Built LunaTokis (", "mean |offset| = 174.4", "Training tiny on cpu"):
        assert text in out and text in log
    assert out.count("Training tiny on cpu") == 1  # once, not also through a second handler
    package = logging.getLogger("stvsr")
    assert package.propagate and package.level == logging.NOTSET and not package.handlers
