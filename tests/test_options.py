"""stvsr.train.options: validation (unknown keys, types, required keys), --set overrides, path resolution, and the
experiment folder that is never silently overwritten."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stvsr.train import options
from stvsr.train.experiment import prepare_experiment
from stvsr.train.options import OptionsError

BASE = {
    "name": "unit",
    "scale": 4,
    "datasets": {"train": {"mode": "Vimeo7", "dataroot_GT": "data/gt", "dataroot_LQ": "data/lq", "batch_size": 2}},
    "network_G": {"which_model_G": "LunaTokis", "nf": 8, "nframes": 7, "groups": 8, "front_RBs": 1, "back_RBs": 1},
    "train": {"lr_G": "4e-4", "niter": 10, "T_period": [10], "restarts": [], "restart_weights": []},
    "logger": {"save_checkpoint_freq": 5e3},
}


def write(tmp_path: Path, data: dict, name: str = "opt.yml") -> Path:
    (tmp_path / "opts").mkdir(exist_ok=True)
    path = tmp_path / "opts" / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("STVSR_ROOT", str(tmp_path / "repo"))
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path / "repo"


def test_valid_file_types_and_defaults(tmp_path, root):
    opt = options.load(write(tmp_path, BASE))
    assert opt["train"]["lr_G"] == 4e-4  # the string '4e-4' PyYAML produces becomes a float
    assert opt["logger"]["save_checkpoint_freq"] == 5000 and isinstance(opt["logger"]["save_checkpoint_freq"], int)
    assert opt["train"]["beta2"] == 0.99
    assert opt["train"]["losses"] == [{"type": "cb", "weight": 1.0, "eps": 1e-6, "reduction": "sum"}]
    assert opt["path"]["experiments_root"] == str(root / "experiments" / "unit")


@pytest.mark.parametrize(
    ("section", "key", "hint"),
    [
        ("train", "lr_g", "lr_G"),
        ("logger", "print_frq", "print_freq"),
        (None, "scael", "scale"),
        ("network_G", "back_RB", "back_RBs"),
        ("datasets.train", "GT_sise", "GT_size"),
    ],
)
def test_unknown_key_names_it_and_nearest(tmp_path, root, section, key, hint):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    node = data
    for part in section.split(".") if section else []:
        node = node[part]
    node[key] = 1
    with pytest.raises(OptionsError) as info:
        options.load(write(tmp_path, data))
    assert key in str(info.value) and f"'{hint}'" in str(info.value)


def test_wrong_type_and_missing_required(tmp_path, root):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["train"]["niter"] = "many"
    with pytest.raises(OptionsError, match="train.niter"):
        options.load(write(tmp_path, data))
    data["train"]["niter"] = 10
    data["train"]["lr_G"] = True
    with pytest.raises(OptionsError, match="train.lr_G"):
        options.load(write(tmp_path, data))
    del data["train"]["lr_G"]
    with pytest.raises(OptionsError, match="train.lr_G: required"):
        options.load(write(tmp_path, data))
    del data["name"]
    with pytest.raises(OptionsError, match="name: required"):
        options.load(write(tmp_path, data))


def test_set_overrides_parsed_as_yaml(tmp_path, root):
    opt = options.load(write(tmp_path, BASE), ["train.lr_G=1e-4", "train.T_period=[5, 5]", "name=other"])
    assert opt["train"]["lr_G"] == 1e-4 and opt["train"]["T_period"] == [5, 5] and opt["name"] == "other"
    with pytest.raises(OptionsError, match="train.lr_GG"):
        options.load(write(tmp_path, BASE), ["train.lr_GG=1"])
    with pytest.raises(OptionsError, match="key.path=value"):
        options.load(write(tmp_path, BASE), ["train.lr_G"])


def test_paths_relative_to_options_file_then_root_never_cwd(tmp_path, root):
    (tmp_path / "opts" / "data" / "gt").mkdir(parents=True)  # next to the options file
    (root / "data" / "lq").mkdir(parents=True)  # under the repository root
    (tmp_path / "data" / "lq").mkdir(parents=True)  # under the cwd: must not be picked
    opt = options.load(write(tmp_path, BASE))
    train = opt["datasets"]["train"]
    assert train["dataroot_GT"] == str(tmp_path / "opts" / "data" / "gt")
    assert train["dataroot_LQ"] == str(root / "data" / "lq")


def test_experiment_folder_archived_not_overwritten(tmp_path, root, capsys):
    opt = options.load(write(tmp_path, BASE))
    exp = prepare_experiment(opt)
    saved = yaml.safe_load((exp / "options.yml").read_text())
    assert saved["train"]["lr_G"] == 4e-4 and saved["name"] == "unit"
    (exp / "marker").write_text("a run that stopped before its first checkpoint")
    prepare_experiment(opt)  # nothing worth keeping: the folder is reused, not archived
    assert [p.name for p in exp.parent.iterdir()] == ["unit"] and (exp / "marker").exists()
    (exp / "marker").write_text("first run")
    (exp / "models" / "iter_00000005.pth").write_bytes(b"weights")
    prepare_experiment(opt)
    archived = [p for p in exp.parent.iterdir() if p.name.startswith("unit_archived_")]
    assert len(archived) == 1 and (archived[0] / "marker").read_text() == "first run"
    assert not (exp / "marker").exists()
    printed = capsys.readouterr()
    assert (printed.out + printed.err).count("archived to") == 1  # once, not once per handler
    (exp / "marker").write_text("kept")
    prepare_experiment(opt, resume=True)  # resuming keeps the folder
    assert (exp / "marker").read_text() == "kept"


def test_saved_options_load_back(tmp_path, root):
    """experiments/<name>/options.yml (with the keys validate() derives) is a valid options file itself."""
    opt = options.load(write(tmp_path, BASE))
    exp = prepare_experiment(opt)
    again = options.load(exp / "options.yml")
    assert again["network_G"] == opt["network_G"] and again["path"]["models"] == opt["path"]["models"]
