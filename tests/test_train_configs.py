"""The shipped training configs validate and carry the official recipes (docs/training.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stvsr.train import options

CONFIGS = Path(__file__).resolve().parents[1] / "options" / "train"


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.yml")))
def test_config_validates(name):
    """Every shipped training config (one per model and a *_demo per model) validates as it is."""
    opt = options.load(CONFIGS / f"{name}.yml")
    # TMNet's stage 2 trains on windows of consecutive high-frame-rate frames with time stamps
    assert opt["datasets"]["train"]["mode"] == ("Adobe240" if name.startswith("train_tmnet_stage2") else "Vimeo7")
    assert Path(opt["path"]["experiments_root"]).name == opt["name"]


def test_every_model_has_an_official_and_a_demo_config():
    from stvsr.archs import ARCHS

    names = {p.stem for p in CONFIGS.glob("*.yml")}
    arch = {n: ARCHS.get(options.load(CONFIGS / f"{n}.yml")["network_G"]["which_model_G"]).__name__ for n in names}
    trainable = {ARCHS.get(name).__name__ for name in ARCHS if name != "bicubic"}
    official = {arch[n] for n in names if not n.endswith("_demo")}
    demo = {arch[n] for n in names if n.endswith("_demo")}
    assert official >= trainable and demo >= trainable  # RSTT: train_rstt_{s,m,l}.yml share train_rstt_demo.yml


@pytest.mark.parametrize(
    ("name", "lr", "batch", "arch"), [("train_zsm", 4e-4, 16, "LunaTokis"), ("train_stdan", 2e-4, 18, "STTrans2")]
)
def test_official_recipes(name, lr, batch, arch):
    opt = options.load(CONFIGS / f"{name}.yml")
    tr = opt["train"]
    assert opt["network_G"]["which_model_G"] == arch and opt["datasets"]["train"]["batch_size"] == batch
    assert (tr["lr_G"], tr["beta1"], tr["beta2"], tr["niter"]) == (lr, 0.9, 0.99, 600000)
    assert tr["lr_scheme"] == "CosineAnnealingLR_Restart" and tr["T_period"] == [150000] * 4
    assert tr["restarts"] == [150000, 300000, 450000] and tr["restart_weights"] == [1, 1, 1]
    assert tr["eta_min"] == 1e-7 and tr["warmup_iter"] == -1 and tr["scheduler_order"] == "before"
    assert tr["losses"] == [{"type": "cb", "weight": 1.0, "eps": 1e-6, "reduction": "sum"}] and tr["manual_seed"] == 0
    d = opt["datasets"]["train"]
    assert (d["GT_size"], d["LQ_size"], d["N_frames"], d["use_flip"], d["use_rot"]) == (128, 32, 7, True, True)
