"""One spatial scale per run: a model declares the factors it makes, and a run reconciles the options', the
datasets' and the protocol's with it in one place (stvsr.runner.reconcile_scale)."""

from __future__ import annotations

import pytest
import yaml

from stvsr.archs import build_arch
from stvsr.runner import ModelFacts, ScaleMismatchError, SpaceScale, reconcile_scale
from stvsr.train.cli import main
from test_trainer import base_options, make_vimeo

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fixed_models_declare_their_factor():
    facts = ModelFacts.of(build_arch({"which_model_G": "bicubic"}))
    assert facts.scales == SpaceScale(fixed=4) and facts.scales.describe() == "x4 only"


def test_agreeing_sources_give_the_factor_and_none_gives_the_default():
    assert reconcile_scale(SpaceScale(4), "M", scale=4, **{"datasets.train.scale": 4, "protocol.scale": None}) == 4
    assert reconcile_scale(SpaceScale(4), "M") == 4
    continuous = SpaceScale.continuous(1, 8, (2, 4))
    assert reconcile_scale(continuous, "C", scale=3.5) == 3.5 and reconcile_scale(continuous, "C") == 4
    assert continuous.describe() == "any factor in [1, 8] (trained on [2, 4])"


def test_disagreeing_sources_are_one_error_listing_them():
    with pytest.raises(ScaleMismatchError) as info:
        reconcile_scale(SpaceScale(4), "LunaTokis", scale=2, **{"datasets.train.scale": 4})
    assert str(info.value).startswith("the spatial scale of this run is not one: scale x2, datasets.train.scale x4;")
    assert "LunaTokis makes x4 only" in str(info.value)
    with pytest.raises(ScaleMismatchError, match="scale x2; LunaTokis makes x4 only"):
        reconcile_scale(SpaceScale(4), "LunaTokis", scale=2)
    with pytest.raises(ScaleMismatchError, match=r"scale x9; C makes any factor in \[1, 8\]"):
        reconcile_scale(SpaceScale.continuous(1, 8, (2, 4)), "C", scale=9)


def test_training_refuses_a_scale_the_data_and_model_do_not_have(tmp_path, capsys):
    data = make_vimeo(tmp_path / "vimeo", clips=2)
    _, raw = base_options(tmp_path, data)
    raw["scale"] = 2
    path = tmp_path / "options.yml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["-opt", str(path)]) == 2
    err = capsys.readouterr().err
    assert "scale x2, datasets.train.scale x4; LunaTokis makes x4 only" in err
    assert not (tmp_path / "run" / "experiments").exists()


def test_official_keys_without_effect_are_listed_once(tmp_path, capsys):
    data = make_vimeo(tmp_path / "vimeo", clips=2)
    _, raw = base_options(tmp_path, data, niter=1, T_period=[1], restarts=None, restart_weights=None)
    raw.update(model="VideoSR_base", distortion="sr", gpu_ids=[0, 1, 2, 3])
    path = tmp_path / "options.yml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["-opt", str(path)]) == 0
    out = capsys.readouterr().out
    line = "Options with no effect here (accepted so that official configs load): model, distortion, gpu_ids"
    assert out.count(line) == 1


def test_evaluation_reconciles_the_protocol_scale_with_the_model():
    from stvsr.eval.evaluator import EvalError, evaluate_clips
    from stvsr.eval.protocol import Protocol

    with pytest.raises(EvalError, match="protocol.scale x2; Bicubic makes x4 only"):
        evaluate_clips(build_arch({"which_model_G": "bicubic"}), [], Protocol(scale=2), progress=False)
