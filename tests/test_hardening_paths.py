"""Issue 13, writes outside OUT_DIR or over inputs, and long names: the manifest and records are
never written through a link or into a pipe, ``--summary-json`` is checked before any work, a
sub-folder swapped for a link mid-write cannot redirect an output, and any name that fits as an
output fits as its temporary."""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from _mounts import readonly_fs  # noqa: F401 (fixture)
from conftest import write_tone
from whisperjav_enhance import atomic, audio, safeio
from whisperjav_enhance.atomic import (atomic_file, find_partials, partial_matcher,
                                       remove_partials, temporary_name)
from whisperjav_enhance.errors import ConfigError, OutputError
from whisperjav_enhance.manifest import Manifest, read_manifest, write_json_atomic
from whisperjav_enhance.outdir import LOCK_NAME, RECORDS_NAME, check_summary_path

SHORT = np.zeros(480, np.float32)


def _no_block(fn, fifo: Path, timeout_s: float = 10.0):
    """Run ``fn``; if it blocks on ``fifo`` (opened for reading), release it and fail."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # a writer appears: the open returns
        os.close(fd)
        t.join(timeout_s)
        pytest.fail(f"{fn} blocked on the pipe {fifo}")
    if "error" in box:
        raise box["error"]
    return box.get("value")


# -- manifest and records ------------------------------------------------------------------------
@pytest.mark.parametrize("dir_fd", [True, False], ids=["posix-nofollow", "portable-check"])
def test_manifest_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path, monkeypatch,
                                                                        dir_fd):
    monkeypatch.setattr(safeio, "HAVE_DIR_FD", dir_fd and safeio.HAVE_DIR_FD)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.jsonl").symlink_to(victim)
    with pytest.raises(OutputError, match="symbolic link"):
        Manifest(out / "manifest.jsonl", "run1")
    assert victim.read_text() == "keep me\n"
    with pytest.raises(OutputError, match="symbolic link"):
        read_manifest(out / "manifest.jsonl")


def test_manifest_that_is_a_pipe_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "manifest.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="pipe"):
        _no_block(lambda: Manifest(fifo, "run1"), fifo)
    with pytest.raises(OutputError, match="pipe"):
        _no_block(lambda: read_manifest(fifo), fifo)


def test_summary_replaces_a_link_at_its_name_instead_of_writing_through_it(tmp_path):
    victim = tmp_path / "input.wav"
    victim.write_bytes(b"RIFF audio")
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").symlink_to(victim)
    write_json_atomic(out / "summary.json", {"a": 1}, root=out)
    assert victim.read_bytes() == b"RIFF audio"
    assert not (out / "summary.json").is_symlink()


# -- the summary path ------------------------------------------------------------------------------
@pytest.fixture
def run_paths(tmp_path):
    src = tmp_path / "in"
    inputs = [src / "a.wav", src / "b.wav"]
    for p in inputs:
        write_tone(p, 0.05)
    out = tmp_path / "out"
    out.mkdir()
    outputs = [out / "a.wav", out / "b.wav"]
    return dict(inputs=inputs, outputs=outputs, manifest=out / "manifest.jsonl", out_dir=out)


def test_summary_path_may_not_be_an_input_the_manifest_or_an_output(tmp_path, run_paths):
    rp = run_paths
    for bad, what in [(rp["inputs"][1], "an input"), (rp["manifest"], "manifest"),
                      (rp["outputs"][0], "an output"), (rp["out_dir"] / LOCK_NAME, "own file"),
                      (rp["out_dir"] / RECORDS_NAME, "own file")]:
        with pytest.raises(ConfigError, match=what):
            check_summary_path(bad, **rp)
    hard = tmp_path / "hard.json"
    os.link(rp["inputs"][0], hard)      # another name of an input is still the input
    with pytest.raises(ConfigError, match="an input"):
        check_summary_path(hard, **rp)
    relative = os.path.relpath(rp["inputs"][0])
    with pytest.raises(ConfigError, match="an input"):
        check_summary_path(relative, **rp)


def test_summary_path_may_not_be_a_folder_link_pipe_or_under_a_file(tmp_path, run_paths):
    folder = tmp_path / "x.json"
    folder.mkdir()
    with pytest.raises(ConfigError, match="a folder"):
        check_summary_path(folder, **run_paths)
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(ConfigError, match="symbolic link"):
        check_summary_path(link, **run_paths)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="pipe"):
        check_summary_path(fifo, **run_paths)
    with pytest.raises(ConfigError, match="/dev/null is a device"):
        check_summary_path("/dev/null", **run_paths)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        check_summary_path(blocker / "summary.json", **run_paths)


def test_summary_path_accepts_a_new_or_existing_file_in_a_writable_folder(tmp_path, run_paths):
    assert check_summary_path(tmp_path / "deep" / "new" / "s.json", **run_paths) == \
        tmp_path / "deep" / "new" / "s.json"
    old = tmp_path / "old.json"
    old.write_text("{}")
    assert check_summary_path(old, **run_paths) == old
    assert not (tmp_path / "deep").exists()   # checking creates nothing


def test_summary_path_on_a_read_only_filesystem_is_refused(readonly_fs, run_paths):
    with pytest.raises(ConfigError, match="not writable"):
        check_summary_path(readonly_fs / "s.json", **run_paths)


# -- outputs cannot be redirected ------------------------------------------------------------------
def _swap_for_link(folder: Path, elsewhere: Path) -> None:
    folder.rename(folder.with_name(folder.name + ".moved"))
    folder.symlink_to(elsewhere, target_is_directory=True)


@pytest.mark.parametrize("dir_fd", [True, False], ids=["posix-dir-fd", "portable-check"])
def test_subfolder_swapped_for_a_link_mid_write_cannot_redirect_the_output(tmp_path, monkeypatch,
                                                                            dir_fd):
    if dir_fd and not safeio.HAVE_DIR_FD:
        pytest.skip("no directory descriptors on this platform")
    monkeypatch.setattr(atomic, "HAVE_DIR_FD", dir_fd)
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (out / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    try:
        with atomic_file(out / "sub" / "x.wav", root=out) as fh:
            fh.write(b"data")
            _swap_for_link(out / "sub", elsewhere)
    except OutputError as exc:
        assert not dir_fd and "link" in str(exc)   # the portable path refuses before the rename
    else:
        assert dir_fd                              # descriptors: written where it was opened
        assert (out / "sub.moved" / "x.wav").read_bytes() == b"data"
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("dir_fd", [True, False], ids=["posix-dir-fd", "portable-check"])
def test_linked_subfolder_is_never_written_through(tmp_path, monkeypatch, dir_fd):
    if dir_fd and not safeio.HAVE_DIR_FD:
        pytest.skip("no directory descriptors on this platform")
    monkeypatch.setattr(atomic, "HAVE_DIR_FD", dir_fd)
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OutputError, match="link"):
        audio.write_audio_atomic(out / "sub" / "deeper" / "x.wav", SHORT, 48_000, root=out)
    assert list(elsewhere.iterdir()) == []
    with pytest.raises(OutputError, match="outside"):
        audio.write_audio_atomic(tmp_path / "x.wav", SHORT, 48_000, root=out)


def test_new_subfolders_are_made_below_the_root(tmp_path):
    out = tmp_path / "out"
    audio.write_audio_atomic(out / "a" / "b" / "x.wav", SHORT, 48_000, root=out)
    assert sf.info(str(out / "a" / "b" / "x.wav")).frames == len(SHORT)


# -- long names ----------------------------------------------------------------------------------
LONG_NAMES = ["あ" * 80 + ".wav",          # 244 bytes: 80 Japanese characters
              "あ" * 83 + "ab.wav",        # 255 bytes: the longest name Linux allows
              "a" * 251 + ".wav",          # 255 ASCII characters
              "シーン" * 20 + "_" + "1" * 60 + ".wav"]


@pytest.mark.parametrize("name", LONG_NAMES)
def test_any_name_that_fits_as_an_output_fits_as_its_temporary(tmp_path, name):
    assert len(name.encode()) <= 255
    out = tmp_path / "out"
    audio.write_audio_atomic(out / name, SHORT, 48_000, root=out)
    assert [p.name for p in out.iterdir()] == [name]
    temp = temporary_name(name)
    for measure in (lambda s: len(s.encode()), lambda s: len(s.encode("utf-16-le")) // 2, len):
        assert measure(temp) <= measure(name)
    assert partial_matcher(out / name).fullmatch(temp)


def test_short_names_keep_their_whole_stem_in_the_temporary():
    temp = temporary_name("scene_0001.wav", "abc123")
    assert temp.startswith(".scene_0001~") and temp.endswith(".abc123.partial")
    assert partial_matcher("/out/scene_0001.wav").fullmatch(temp)


def test_partials_are_matched_per_output_even_when_long_names_share_a_prefix(tmp_path):
    a, b = tmp_path / ("あ" * 80 + "_1.wav"), tmp_path / ("あ" * 80 + "_2.wav")
    ta, tb = tmp_path / temporary_name(a.name), tmp_path / temporary_name(b.name)
    legacy = tmp_path / ".short.k2j4_x9a.partial"   # what an older version left for short.wav
    other = tmp_path / ".unrelated~0123456789ab.abcdef.partial"
    for p in (ta, tb, legacy, other):
        p.write_bytes(b"x")
    assert partial_matcher(a).fullmatch(ta.name) and not partial_matcher(a).fullmatch(tb.name)
    assert find_partials([a, tmp_path / "short.wav"]) == sorted([ta, legacy])
    assert remove_partials([a]) == [ta]
    assert tb.exists() and legacy.exists() and other.exists()


def test_a_failed_write_leaves_no_temporary(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_file(out / ("あ" * 80 + ".wav"), root=out) as fh:
            fh.write(b"half")
            raise RuntimeError("boom")
    assert list(out.iterdir()) == []


def test_older_versions_temporaries_are_matched_exactly_as_mkstemp_named_them():
    """tempfile.mkstemp(prefix=".<stem>.", suffix=".partial"): 8 characters of [a-z0-9_]."""
    import tempfile

    matches = partial_matcher("/out/short.wav").fullmatch
    assert len(next(tempfile._get_candidate_names())) == 8
    assert matches(".short.k2j4_x9a.partial") and matches(".short.zzzzzzzz.partial")
    for other in (".short.abc.partial",            # another program's, not mkstemp's
                  ".short.k2j4_x9a1.partial", ".short.K2J4X9AB.partial", ".short.a.b.c.d.partial",
                  ".short.wav.k2j4_x9a.partial", ".shorter.k2j4_x9a.partial"):
        assert not matches(other), other


def _temporaries(folder: Path, output_name: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    made = [folder / temporary_name(output_name), folder / ".x.k2j4_x9a.partial"]
    for p in made:
        p.write_bytes(b"x")
    return made


@pytest.mark.parametrize("dir_fd", [True, False], ids=["posix-dir-fd", "portable-check"])
def test_clean_up_never_goes_through_a_linked_subfolder(tmp_path, monkeypatch, dir_fd):
    """A sub-folder swapped for a link (to another folder holding files named like our
    temporaries) is neither scanned nor emptied, with OUT_DIR given or not."""
    if dir_fd and not safeio.HAVE_DIR_FD:
        pytest.skip("no directory descriptors on this platform")
    monkeypatch.setattr(atomic, "HAVE_DIR_FD", dir_fd)
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    bait = _temporaries(elsewhere, "x.wav")
    mine = _temporaries(out / "real", "x.wav")
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)
    outputs = [out / "sub" / "x.wav", out / "real" / "x.wav", out / "missing" / "x.wav"]
    assert find_partials(outputs, root=out) == sorted(mine)
    assert find_partials(outputs) == sorted(mine)
    assert remove_partials(outputs) == sorted(mine)
    assert all(p.exists() for p in bait) and not any(p.exists() for p in mine)
    mine = _temporaries(out / "real", "x.wav")
    assert remove_partials(outputs, root=out) == sorted(mine)
    assert remove_partials([tmp_path / "x.wav"], root=out) == []     # outside OUT_DIR: never
    assert all(p.exists() for p in bait)


def test_a_temporary_linked_elsewhere_is_removed_as_a_link(tmp_path):
    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("keep")
    link = out / temporary_name("x.wav")
    link.symlink_to(victim)
    assert remove_partials([out / "x.wav"], root=out) == [link]
    assert victim.read_text() == "keep"


# -- flushing --------------------------------------------------------------------------------------
def test_the_rename_is_flushed_with_one_fsync_of_the_folder(tmp_path, monkeypatch):
    if not safeio.HAVE_DIR_FD:
        pytest.skip("folders are flushed only where they can be opened (POSIX)")
    out = tmp_path / "out"
    calls = []
    real_fsync = os.fsync

    def fsync(fd):
        folder = stat.S_ISDIR(os.fstat(fd).st_mode)
        calls.append(("folder" if folder else "file", (out / "x.json").exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_json_atomic(out / "x.json", {"a": 1}, root=out)
    assert calls == [("file", False), ("folder", True)]   # data first; the folder after the rename


def test_a_filesystem_that_cannot_flush_folders_still_gets_its_output(tmp_path, monkeypatch):
    if not safeio.HAVE_DIR_FD:
        pytest.skip("folders are flushed only where they can be opened (POSIX)")
    real_fsync = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert write_json_atomic(tmp_path / "x.json", {"a": 1}) == tmp_path / "x.json"
    assert (tmp_path / "x.json").read_text().startswith("{")


# -- Windows: which reparse points are links -------------------------------------------------------
@pytest.mark.parametrize("tag, is_link", [(0xA0000003, True),    # a junction (mount point)
                                          (0x9000601A, False),   # a OneDrive placeholder
                                          (0x80000013, False)])  # a deduplicated file
def test_only_junctions_among_reparse_points_count_as_links(tag, is_link):
    reparse = SimpleNamespace(st_file_attributes=stat.FILE_ATTRIBUTE_REPARSE_POINT,
                              st_reparse_tag=tag)
    assert safeio._is_junction(reparse) is is_link
    assert not safeio._is_junction(SimpleNamespace(st_file_attributes=0, st_reparse_tag=0xA0000003))
    assert not safeio._is_junction(os.lstat(__file__))   # POSIX: no such fields
