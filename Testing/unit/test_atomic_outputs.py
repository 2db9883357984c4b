import pytest

from ReirradiationDoseLib.core.atomic import atomicOutputDir


def test_success_moves_folder_into_place(tmp_path):
    out = tmp_path / "out"
    with atomicOutputDir(out) as tmp:
        (tmp / "a.txt").write_text("done")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "done"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_leaves_no_partial_output_and_keeps_previous(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("previous complete run")
    with pytest.raises(RuntimeError):
        with atomicOutputDir(out) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_replaces_previous_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x")
    with atomicOutputDir(out) as tmp:
        (tmp / "new.txt").write_text("y")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_outputs_are_ordinary_folders_and_files_not_private(tmp_path):
    """The temporary folder and file are made private (mkdtemp / mkstemp: 0700 / 0600); what lands gets the
    permissions any new folder or file gets under the umask, so that a colleague (or the TPS import service) can
    read a report or a DICOM REG written on a shared drive. Found: the dose command's output folder and its
    registration_<course>.dcm were private."""
    import os
    import stat

    from ReirradiationDoseLib.core.atomic import atomicWriteFile, atomicWriteText

    previous = os.umask(0o022)
    try:
        out = tmp_path / "out"
        with atomicOutputDir(out) as tmp:
            atomicWriteText(tmp / "a.txt", "done")
            atomicWriteFile(tmp / "b.dcm", lambda temporary: open(temporary, "wb").write(b"x"))
        assert stat.S_IMODE(out.stat().st_mode) == 0o755
        assert stat.S_IMODE((out / "a.txt").stat().st_mode) == 0o644
        assert stat.S_IMODE((out / "b.dcm").stat().st_mode) == 0o644
        os.umask(0o077)  # a user who keeps everything private keeps it so
        with atomicOutputDir(tmp_path / "private") as tmp:
            atomicWriteText(tmp / "a.txt", "done")
        assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "private" / "a.txt").stat().st_mode) == 0o600
    finally:
        os.umask(previous)
