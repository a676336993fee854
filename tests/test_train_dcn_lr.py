"""train.dcn_lr_mul: the convolutions that predict deformable offsets train at lr x dcn_lr_mul (BasicSR's option for
EDVR), the rest at lr; the scheduler (warm-up included) scales both groups alike."""

from __future__ import annotations

import pytest

from stvsr.train import options
from stvsr.train.trainer import Trainer, offset_parameters
from test_trainer import base_options, make_vimeo

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_vimeo(tmp_path_factory.mktemp("vimeo"), clips=2)


def test_offset_convs_get_their_own_learning_rate(tmp_path, data):
    _, raw = base_options(tmp_path, data, dcn_lr_mul=0.1, warmup_iter=4, niter=2, T_period=[8], restarts=None,
                          restart_weights=None)  # fmt: skip
    trainer = Trainer(options.validate(raw, None))
    try:
        normal, dcn = trainer.optimizer.param_groups
        offsets = offset_parameters(trainer.model)
        assert offsets and {id(p) for p in dcn["params"]} == {id(p) for p in offsets}
        names = {id(p): n for n, p in trainer.model.named_parameters()}
        assert all("conv_offset" in names[id(p)] for p in dcn["params"])
        assert len(normal["params"]) + len(dcn["params"]) == len(list(trainer.model.parameters()))
        trainer.train()
        assert normal["lr"] == pytest.approx(1e-3 * 2 / 4)  # warm-up: iteration 2 of 4
        assert dcn["lr"] == pytest.approx(0.1 * normal["lr"])
    finally:
        trainer.close()


def test_dcn_lr_mul_must_be_positive(tmp_path, data):
    _, raw = base_options(tmp_path, data)
    raw["train"]["dcn_lr_mul"] = 0
    with pytest.raises(options.OptionsError, match="dcn_lr_mul"):
        options.validate(raw, None)
