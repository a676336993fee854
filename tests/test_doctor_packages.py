"""stvsr-doctor checks the packages of the data, video and logging paths (PyAV, lmdb, OpenCV, TensorBoard) by
using them, and fails (exit 1) when a required one is missing or broken; TensorBoard is optional."""

from __future__ import annotations

import pytest

from stvsr import doctor


def test_every_package_is_tried_and_reported() -> None:
    lines, problems = doctor.describe_packages()
    text = "\n".join(lines)
    assert problems == []
    for label in ("PyAV", "lmdb", "OpenCV", "TensorBoard"):
        assert f"  {label}" in text
    assert "write and read: ok" in text and "encoders:" in text


@pytest.mark.parametrize("required", [True, False])
def test_missing_or_broken_package(monkeypatch: pytest.MonkeyPatch, required: bool) -> None:
    def missing() -> str:
        raise ImportError("No module named 'av'")

    def broken() -> str:
        raise RuntimeError("cannot write")

    packages = [("Missing", missing, required, "x"), ("Broken", broken, required, "y")]
    monkeypatch.setattr(doctor, "PACKAGES", packages)
    lines, problems = doctor.describe_packages()
    text = "\n".join(lines)
    if required:
        assert "Missing      MISSING" in text and "Broken       FAIL (RuntimeError: cannot write)" in text
        assert len(problems) == 2
    else:
        assert "not installed" in text and problems == []


def test_doctor_exits_1_without_a_required_package(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def missing() -> str:
        raise ImportError("No module named 'av'")

    monkeypatch.setattr(doctor, "PACKAGES", [("PyAV", missing, True, "video files")])
    monkeypatch.setattr(doctor, "check_parity", lambda devs: (["Parity: skipped in this test"], True))
    assert doctor.main([]) == 1
    out = capsys.readouterr().out
    assert "PROBLEMS: PyAV is not installed" in out
