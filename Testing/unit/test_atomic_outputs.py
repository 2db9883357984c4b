import pytest

from ReirradiationDoseLib.core.atomic import OUTPUT_MARKER, atomicOutputDir
from ReirradiationDoseLib.core.errors import InputError


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
    (out / OUTPUT_MARKER).write_text("")
    with pytest.raises(RuntimeError):
        with atomicOutputDir(out) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_replaces_previous_output(tmp_path):
    out = tmp_path / "out"
    with atomicOutputDir(out) as tmp:
        (tmp / "old.txt").write_text("x")
    with atomicOutputDir(out) as tmp:
        (tmp / "new.txt").write_text("y")
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_folder_that_is_not_an_earlier_output_is_never_replaced(tmp_path, monkeypatch):
    """Found by a bad-input review: the output folder replaced whatever folder it named — the case's own input
    folder (every CT, RTDOSE and RTSTRUCT deleted), or with ``-o ""`` the current folder. Only an empty folder or
    an earlier output (it holds the marker every output gets) is replaced; anything else is refused, untouched."""
    inputs = tmp_path / "case"
    inputs.mkdir()
    (inputs / "RTDOSE.dcm").write_bytes(b"dose")
    with pytest.raises(InputError, match="not an earlier output of Reirradiation") as raised:
        with atomicOutputDir(inputs) as tmp:
            (tmp / "summary.json").write_text("{}")
    assert str(inputs) in str(raised.value)
    assert sorted(p.name for p in inputs.iterdir()) == ["RTDOSE.dcm"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case"]
    monkeypatch.chdir(inputs)
    with pytest.raises(InputError, match="no output folder given"):
        with atomicOutputDir(""):
            pass
    assert sorted(p.name for p in inputs.iterdir()) == ["RTDOSE.dcm"]
    # an output written before the marker existed is known by its summary naming the software
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "summary.json").write_text('{"software": "Reirradiation", "courses": []}')
    with atomicOutputDir(legacy) as tmp:
        (tmp / "a.txt").write_text("x")
    assert sorted(p.name for p in legacy.iterdir()) == [OUTPUT_MARKER, "a.txt"]
    (inputs / "summary.json").write_text('{"software": "another tool"}')
    with pytest.raises(InputError, match="not an earlier output of Reirradiation"):
        with atomicOutputDir(inputs):
            pass
    (inputs / "summary.json").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomicOutputDir(empty) as tmp:
        (tmp / "a.txt").write_text("x")
    assert sorted(p.name for p in empty.iterdir()) == [OUTPUT_MARKER, "a.txt"]


def test_an_output_that_cannot_be_made_is_refused_before_the_run(tmp_path):
    """Checked before the computation (the dose command called it after minutes of registration: a traceback)."""
    from ReirradiationDoseLib.core.atomic import checkOutputDir

    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(InputError, match="exists and is not a folder"):
        checkOutputDir(file)
    with pytest.raises(InputError, match="cannot be made: .*file.txt is not a writable folder"):
        checkOutputDir(file / "new" / "out")
    assert checkOutputDir(tmp_path / "new" / "out") == tmp_path / "new" / "out"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]  # the probe folder is removed
    # a place whose permissions say yes but where nothing can be made (as root: /proc), refused before the run too
    # (an adversarial review: refused after the computation, naming the hidden temporary folder)
    from pathlib import Path

    dangling = tmp_path / "link"
    dangling.symlink_to(tmp_path / "unmounted" / "share" / "out")
    with pytest.raises(InputError, match=r"link: the output folder is a symbolic link to .*unmounted/share/out, whose "
                                         r"folder .*unmounted/share does not exist"):
        checkOutputDir(dangling)
    assert not (tmp_path / "unmounted").exists()
    dangling.unlink()
    if Path("/proc").is_dir():
        with pytest.raises(InputError, match="/proc/out: the output folder cannot be made: /proc is not a writable"):
            checkOutputDir("/proc/out")


def test_files_added_to_an_earlier_output_are_not_deleted_with_it(tmp_path):
    """A newcomer's review: notes put into an earlier output folder were deleted without a word when the run was
    repeated. The marker lists what the run wrote; a file it does not list stops the next run, named, unless a file
    browser left it; an earlier output whose marker has no list (older version) is replaced as before."""
    out = tmp_path / "out"
    with atomicOutputDir(out) as tmp:
        (tmp / "summary.json").write_text("{}")
        (tmp / "pictures").mkdir()
        (tmp / "pictures" / "a.png").write_text("x")
    marker = (out / OUTPUT_MARKER).read_text()
    assert marker.endswith("files written:\npictures/a.png\nsummary.json\n")
    (out / ".AppleDouble").mkdir()
    for name in (".DS_Store", "pictures/._a.png", "pictures/Thumbs.db", "Icon\r", "ehthumbs.db",
                 ".AppleDouble/summary.json"):  # a file browser's, not the user's work
        (out / name).write_text("x")
    with atomicOutputDir(out) as tmp:  # replaced (a verification review: a Finder visit blocked the next run)
        (tmp / "summary.json").write_text("{}")
    (out / "my_notes.txt").write_text("keep me")
    with pytest.raises(InputError, match=r"holds files it did not write \(my_notes.txt\): replacing the folder would "
                                         "delete them; move them out or give a new folder"):
        with atomicOutputDir(out):
            pass
    assert (out / "my_notes.txt").read_text() == "keep me" and (out / "summary.json").is_file()
    (out / "my_notes.txt").unlink()
    (out / ".review_notes.md").write_text("a hidden file of the user's")  # not a file browser's: it stops the run
    with pytest.raises(InputError, match=r"holds files it did not write \(.review_notes.md\)"):
        with atomicOutputDir(out):
            pass
    (out / ".review_notes.md").unlink()
    (out / OUTPUT_MARKER).write_text("Written by Reirradiation.\n")  # an older marker without its list
    with atomicOutputDir(out) as tmp:
        (tmp / "summary.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "summary.json"]
