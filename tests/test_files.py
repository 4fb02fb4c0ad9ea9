"""The files module: atomic writes with the mode open() gives, hard links, safe loading."""

from __future__ import annotations

import json
import math
import os
import stat

import pytest
import torch

from retinacli.errors import CheckpointError, UsageError
from retinacli.files import (
    atomic_directory,
    atomic_write,
    hard_link,
    load_torch,
    read_retinacli_file,
    refuse_existing,
    refuse_nonempty_dir,
    save_torch,
    write_json,
    write_text,
)


@pytest.fixture
def umask():
    """Set the process umask for one test and put the old one back."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda value: os.umask(value)
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_json_leaves_no_temporary_file(tmp_path):
    path = write_json(tmp_path / "out" / "m.json", {"AP": 1.5, "x": None})
    assert json.loads(path.read_text()) == {"AP": 1.5, "x": None}
    write_json(path, {"AP": 2.0})
    assert json.loads(path.read_text()) == {"AP": 2.0}
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.json"]
    with pytest.raises(ValueError):
        write_json(path, {"AP": math.nan})
    assert json.loads(path.read_text()) == {"AP": 2.0}  # the old file survives a failed write
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.json"]


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_new_files_get_the_mode_open_would_give(tmp_path, umask, mask):
    umask(mask)
    with open(tmp_path / "plain.txt", "w") as handle:
        handle.write("x")
    expected = _mode(tmp_path / "plain.txt")
    assert expected == 0o666 & ~mask
    writers = {
        "text": lambda p: write_text(p, "x"),
        "json": lambda p: write_json(p, {"a": 1}),
        "torch": lambda p: save_torch(p, {"w": torch.zeros(1)}),
    }
    for name, write in writers.items():
        path = tmp_path / f"{name}.out"
        write(path)
        assert _mode(path) == expected, name


def test_replacing_a_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    path = write_text(tmp_path / "shared.txt", "one")
    path.chmod(0o664)
    write_text(path, "two")
    assert path.read_text() == "two" and _mode(path) == 0o664


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_write(path, mode="w") as handle:
        handle.write("half")
        raise RuntimeError("disk gone")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_hard_link_gives_a_second_name_to_the_same_bytes(tmp_path):
    source = write_text(tmp_path / "model_final.pth", "weights")
    target = tmp_path / "model_0000009.pth"
    assert hard_link(source, target)
    assert os.path.samefile(source, target) and target.read_text() == "weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_0000009.pth", "model_final.pth"]


def test_refusing_to_overwrite(tmp_path):
    existing = write_text(tmp_path / "out" / "metrics.json", "{}")
    with pytest.raises(UsageError, match="metrics.json: already exists .* pass --overwrite"):
        refuse_existing([tmp_path / "out" / "other.json", existing], overwrite=False)
    refuse_existing([existing], overwrite=True)
    with pytest.raises(UsageError, match="out: the folder is not empty"):
        refuse_nonempty_dir(tmp_path / "out", overwrite=False)
    refuse_nonempty_dir(tmp_path / "missing", overwrite=False)
    refuse_nonempty_dir(tmp_path / "out", overwrite=True)


def test_atomic_directory_appears_complete_or_not_at_all(tmp_path):
    with atomic_directory(tmp_path / "out") as tmp:
        write_text(tmp / "a.json", "{}")
        assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (tmp_path / "out" / "a.json").read_text() == "{}"

    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "failed") as tmp:
        write_text(tmp / "a.json", "{}")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left

    (tmp_path / "empty").mkdir()
    for existing in ("out", "empty"):  # never replaced, not even an empty folder
        refused = pytest.raises(UsageError, match=f"{existing}: already exists .* another --output-dir")
        with refused, atomic_directory(tmp_path / existing):
            pass
    assert (tmp_path / "out" / "a.json").exists()


def test_atomic_directory_refuses_a_folder_created_while_it_wrote(tmp_path):
    refused = pytest.raises(UsageError, match="created by something else")
    with refused, atomic_directory(tmp_path / "out") as tmp:
        write_text(tmp / "a.json", "{}")
        (tmp_path / "out").mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert not any((tmp_path / "out").iterdir())


def test_loading_refuses_foreign_and_newer_files(tmp_path):
    foreign = save_torch(tmp_path / "f.pth", {"state_dict": {}})
    assert load_torch(foreign) == {"state_dict": {}}
    with pytest.raises(CheckpointError, match="not a retinacli checkpoint or model file"):
        read_retinacli_file(foreign, required=())
    newer = save_torch(tmp_path / "n.pth", {"format": "retinacli-checkpoint", "format_version": 99})
    with pytest.raises(CheckpointError, match="format version 99 is not supported"):
        read_retinacli_file(newer, required=())
    old = save_torch(tmp_path / "o.pth", {"format": "retinacli-checkpoint", "format_version": 1})
    with pytest.raises(CheckpointError, match="checkpoint lacks model"):
        read_retinacli_file(old, required=("model",))


def test_a_full_disk_is_a_storage_error_naming_the_file_and_the_space_needed(tmp_path, monkeypatch):
    import errno

    import retinacli.files as files_module
    from retinacli.errors import StorageError

    path = tmp_path / "model_final.pth"
    files_module.save_torch(path, {"w": torch.zeros(4)})
    before = path.read_bytes()
    real_fsync = os.fsync

    def no_space(fd):  # the data does not fit: the kernel says so when it is flushed
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    data = {"w": torch.zeros(300_000)}  # 1.2 MB of float32, plus the zip's headers
    with pytest.raises(StorageError) as info:
        files_module.save_torch(path, data)
    monkeypatch.setattr(os, "fsync", real_fsync)
    message = str(info.value)
    assert message.startswith(f"{path}: no space left on the device while writing it (it needs 1.2 MB, ")
    assert "nothing was replaced" in message and info.value.exit_code == 1
    assert path.read_bytes() == before  # the previous file is whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_final.pth"]  # no temporary left
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StorageError, match=r"last_checkpoint: no space left .*it needs 17 B"):
        files_module.write_text(tmp_path / "last_checkpoint", "model_0000004.pth")


# ----------------------------------------------------------------------------- containment and the output rule

from retinacli.files import (  # noqa: E402
    OUTPUT_MARKER,
    PathOutsideRoot,
    check_output_dir,
    contained_path,
    output_file,
    prepare_output_dir,
    prepare_output_file,
)
from tests.snapshots import changed_outside, snapshot  # noqa: E402


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../x.png", "a name that leaves the folder"),
        ("a/../../x.png", "a name that leaves the folder"),
        ("/etc/passwd", "an absolute path"),
        ("link_dir/x.png", "a link to outside the folder"),
        ("link_file.png", "a link to outside the folder"),
        ("bad\x00name", "NUL character"),
    ],
)
def test_contained_path_refuses_every_way_out(tmp_path, name, reason):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.png").write_bytes(b"x")
    (root / "link_dir").symlink_to(outside)
    (root / "link_file.png").symlink_to(outside / "x.png")
    with pytest.raises(PathOutsideRoot) as info:
        contained_path(root, name)
    assert reason in info.value.reason


def test_contained_path_keeps_names_inside_as_given(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "inner").symlink_to(tmp_path / "a")  # a link that stays inside is fine
    assert contained_path(tmp_path, "a/b.png") == tmp_path / "a" / "b.png"
    assert contained_path(tmp_path, "a/../c.png") == tmp_path / "a" / ".." / "c.png"
    assert contained_path(tmp_path, "inner/b.png") == tmp_path / "inner" / "b.png"
    assert contained_path(tmp_path, "not/yet/made.png") == tmp_path / "not" / "yet" / "made.png"


def test_output_file_names_made_from_data_stay_in_the_folder(tmp_path):
    with pytest.raises(UsageError, match="refused to write '../escape.png' there: a name that leaves the folder"):
        output_file(tmp_path / "out", "../escape.png")


def test_prepare_output_dir_new_empty_own_and_foreign(tmp_path):
    new = prepare_output_dir(tmp_path / "new", command="eval")
    assert (new / OUTPUT_MARKER).is_file()
    (new / "metrics.json").write_text("{}")
    with pytest.raises(UsageError, match=r"holds an earlier output of `retina eval` \(metrics.json\); pass --overwrite"):
        prepare_output_dir(new, command="eval")
    assert prepare_output_dir(new, command="eval", overwrite=True) == new
    with pytest.raises(UsageError, match="holds the output of `retina eval`, not of `retina predict`"):
        prepare_output_dir(new, command="predict", overwrite=True)

    empty = tmp_path / "empty"
    empty.mkdir()
    prepare_output_dir(empty, command="predict")

    foreign = tmp_path / "mine"
    foreign.mkdir()
    for name in ("a.txt", "b.png", "c.json", "d.csv"):
        (foreign / name).write_text(name)
    before = snapshot(tmp_path)
    with pytest.raises(UsageError, match=r"holds files retinacli did not write \(a.txt, b.png, c.json and 1 more\)"):
        prepare_output_dir(foreign, command="eval", overwrite=True)
    assert changed_outside(before, tmp_path) == []


def test_a_forged_or_foreign_marker_does_not_make_a_folder_ours(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    (folder / OUTPUT_MARKER).write_text("eval")  # not our JSON
    with pytest.raises(UsageError, match="holds files retinacli did not write"):
        prepare_output_dir(folder, command="eval", overwrite=True)


def test_a_folder_holding_only_the_marker_counts_as_empty(tmp_path):
    """A command that failed before writing leaves only its marker: the corrected command runs."""
    prepare_output_dir(tmp_path / "o", command="eval")
    assert prepare_output_dir(tmp_path / "o", command="eval") == tmp_path / "o"


def test_check_output_dir_writes_nothing(tmp_path):
    check_output_dir(tmp_path / "later", command="eval")
    assert not (tmp_path / "later").exists()


def test_an_output_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is a file, not a folder; --output-dir names the folder"):
        prepare_output_dir(tmp_path / "f", command="eval", overwrite=True)
    with pytest.raises(UsageError, match="a part of the path is a file"):
        prepare_output_dir(tmp_path / "f" / "sub", command="eval")


def test_prepare_output_file(tmp_path):
    target = tmp_path / "sub" / "lr.png"
    assert prepare_output_file(target) == target and target.parent.is_dir()
    target.write_bytes(b"mine")
    with pytest.raises(UsageError, match=r"lr.png: already exists; pass --overwrite to replace it, or choose another --out"):
        prepare_output_file(target)
    assert prepare_output_file(target, overwrite=True) == target
    with pytest.raises(UsageError, match="is a folder; --out names the file to write"):
        prepare_output_file(tmp_path / "sub", overwrite=True)


def test_contained_path_refuses_a_link_loop(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(PathOutsideRoot):
        contained_path(tmp_path, "a/x.png")


class _Scripted(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1


def test_a_torchscript_archive_named_pth_is_refused_unopened(tmp_path, monkeypatch):
    """torch.load would hand a TorchScript zip to torch.jit.load (which runs its code): it is
    refused by its contents, whatever its name, and torch.jit.load is never called."""
    path = tmp_path / "model_final.pth"
    torch.jit.save(torch.jit.script(_Scripted()), str(path))
    called = []
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: called.append(a))
    with pytest.raises(CheckpointError, match="is a TorchScript archive .* it was not loaded"):
        load_torch(path)
    assert called == []
    torch.save({"w": torch.zeros(2)}, tmp_path / "plain.pth")  # a plain zip checkpoint still loads
    assert load_torch(tmp_path / "plain.pth")["w"].shape == (2,)


def test_a_zip_whose_file_list_cannot_be_read_is_refused_unopened(tmp_path, monkeypatch):
    # Found by the weights fuzz test: a name flagged UTF-8 that is not made Python's zipfile
    # raise UnicodeDecodeError out of load_torch. torch's own zip reader might still list it
    # (and find code), so the file is refused before torch sees it.
    import zipfile

    path = tmp_path / "model.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/d\u00e4ta.pkl", b"x")
    data = path.read_bytes()
    cut = data.rindex("d\u00e4ta".encode())  # the central directory's copy of the name
    path.write_bytes(data[:cut + 1] + b"\x80\x80" + data[cut + 3:])
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a))
    with pytest.raises(CheckpointError, match="list of files cannot be read"):
        load_torch(path)
    assert loads == []
