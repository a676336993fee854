"""One schema mechanism for every YAML: every problem listed with its key path, all of it checked before any file
or folder is touched, and one rule for relative paths (the YAML's folder, then the repository root)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stvsr.eval import cli as test_cli
from stvsr.eval import vimeo_cli
from stvsr.infer import cli as infer_cli
from stvsr.model.choose import ModelChoiceError
from stvsr.schema import Key, OptionsError, validate
from stvsr.train import options
from stvsr.train.cli import main as train_main

NET = {"which_model_G": "LunaTokis", "nf": 8, "nframes": 7, "groups": 8, "front_RBs": 1, "back_RBs": 1}
BASE = {
    "name": "unit",
    "datasets": {"train": {"mode": "Vimeo7", "dataroot_GT": "data/gt", "dataroot_LQ": "data/lq"}},
    "network_G": NET,
    "train": {"lr_G": 4e-4, "niter": 10, "T_period": [10]},
}


@pytest.fixture
def root(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.setenv("STVSR_ROOT", str(repo))
    monkeypatch.chdir(tmp_path)
    return repo


def write(folder: Path, data: dict, name: str = "opt.yml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(yaml.safe_dump(data))
    return folder / name


def test_schema_reports_every_problem_with_its_path():
    schema = {"a": Key(int, required=True), "b": {"c": Key(str, "x", choices=("x", "y")), "d": Key(float, 1.0)}}
    assert validate({"a": 2.0, "b": {"d": "4e-4"}}, schema) == {"a": 2, "b": {"c": "x", "d": 4e-4}}
    with pytest.raises(OptionsError) as info:
        validate({"b": {"c": "z", "e": 1, "d": "many"}, "f": 0}, schema, "top")
    problems = info.value.problems
    assert len(problems) == 5 and str(info.value).startswith("5 problems:")
    assert any(p.startswith("top.f: unknown option 'f'") for p in problems)
    assert any(p.startswith("top.b.e: unknown option 'e'") for p in problems)
    assert "top.a: required option is missing" in problems
    assert any(p.startswith("top.b.c='z' is not one of 'x', 'y'") for p in problems)
    assert any(p.startswith("top.b.d: expected number") for p in problems)


def test_training_unknown_keys_listed_with_their_paths(tmp_path, root):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["train"]["lr_g"] = 1
    data["logger"] = {"print_frq": 1}
    data["datasets"]["train"]["GT_sise"] = 32
    del data["datasets"]["train"]["dataroot_LQ"]
    with pytest.raises(OptionsError) as info:
        options.load(write(tmp_path / "opts", data))
    text = "\n".join(info.value.problems)
    expected = [("train.lr_g", "lr_G"), ("logger.print_frq", "print_freq"), ("datasets.train.GT_sise", "GT_size")]
    for path, hint in expected:
        assert f"{path}: unknown option" in text and f"Did you mean '{hint}'" in text
    assert "datasets.train.dataroot_LQ: required option is missing" in text
    assert len(info.value.problems) == 4


def test_missing_required_key_reported_before_the_experiment_folder_is_touched(tmp_path, root, capsys):
    exp = root / "experiments" / "unit"
    (exp / "models").mkdir(parents=True)
    (exp / "marker").write_text("the previous run")
    data = yaml.safe_load(yaml.safe_dump(BASE))
    del data["datasets"]["train"]["dataroot_GT"]
    assert train_main(["-opt", str(write(tmp_path / "opts", data))]) == 2
    assert "datasets.train.dataroot_GT: required option is missing" in capsys.readouterr().err
    assert sorted(p.name for p in exp.parent.iterdir()) == ["unit"]  # not archived
    assert sorted(p.name for p in exp.iterdir()) == ["marker", "models"]  # nothing written


def test_a_section_that_is_not_a_mapping_is_one_problem(tmp_path, root):
    with pytest.raises(OptionsError) as info:
        options.validate({**BASE, "train": 5, "logger": [1]})
    assert any(p.startswith("train: expected a mapping") for p in info.value.problems)
    assert any(p.startswith("logger: expected a mapping") for p in info.value.problems)


def test_training_paths_follow_the_rule(tmp_path, root):
    (tmp_path / "opts" / "data" / "gt").mkdir(parents=True)  # next to the YAML
    (root / "data" / "lq").mkdir(parents=True)  # under the repository root
    opt = options.load(write(tmp_path / "opts", BASE))
    assert opt["datasets"]["train"]["dataroot_GT"] == str(tmp_path / "opts" / "data" / "gt")
    assert opt["datasets"]["train"]["dataroot_LQ"] == str(root / "data" / "lq")


def test_a_path_only_under_the_current_directory_is_an_error(tmp_path, root):
    (tmp_path / "data" / "gt").mkdir(parents=True)  # the cwd is tmp_path: neither the YAML's folder nor the root
    with pytest.raises(OptionsError, match=r"datasets.train.dataroot_GT: data/gt exists only relative to the current"):
        options.load(write(tmp_path / "opts", BASE))


def test_test_and_inference_yamls_follow_the_same_rule(tmp_path, root):
    (tmp_path / "opts" / "clips").mkdir(parents=True)
    (tmp_path / "opts" / "in.mp4").write_bytes(b"")
    (root / "weights").mkdir()
    (root / "weights" / "w.pth").write_bytes(b"")
    test_yaml = {"datasets": {"test": {"dataroot_GT": "clips"}}, "path": {"pretrain_model_G": "weights/w.pth"}}
    opt = test_cli.load_options(str(write(tmp_path / "opts", test_yaml)))
    assert opt["datasets"]["test"]["dataroot_GT"] == str(tmp_path / "opts" / "clips")
    assert opt["path"]["pretrain_model_G"] == str(root / "weights" / "w.pth")

    infer_yaml = {"network_G": {"which_model_G": "bicubic"}, "infer": {"input": "in.mp4", "output": "out.mp4"}}
    args = infer_cli.build_parser().parse_args(["-opt", str(write(tmp_path / "opts", infer_yaml, "infer.yml"))])
    settings = infer_cli.resolve(args)
    assert settings["input"] == str(tmp_path / "opts" / "in.mp4")
    assert settings["output"] == str(root / "out.mp4")  # outputs: under the repository root

    vimeo_yaml = {"datasets": {"dataroot_GT": "clips", "lists": {"slow": "in.mp4"}, "splits": ["slow"]}}
    args = vimeo_cli.build_parser().parse_args(["-opt", str(write(tmp_path / "opts", vimeo_yaml, "v.yml")), "--model",
                                                 "bicubic"])  # fmt: skip
    settings = vimeo_cli.resolve(args)
    assert settings["data"]["dataroot_GT"] == str(tmp_path / "opts" / "clips")
    assert settings["lists"] == {"slow": str(tmp_path / "opts" / "in.mp4")}


def test_test_yaml_problems_listed_with_their_paths(tmp_path, root):
    bad = {"nmae": "x", "datasets": {"test": {"dataroot_gt": "x"}}, "path": {"results_rot": "r"}}
    with pytest.raises(ModelChoiceError) as info:
        test_cli.load_options(str(write(tmp_path / "opts", bad)))
    assert "nmae: unknown option 'nmae'. Did you mean 'name'" in str(info.value)
    assert "path.results_rot: unknown option" in str(info.value)
    assert "datasets.test.dataroot_gt: unknown option 'dataroot_gt'. Did you mean 'dataroot_GT'" in str(info.value)
