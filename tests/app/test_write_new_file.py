"""Files the program creates under a free name (a worker's outputs placed on the head) appear complete or not at
all and never replace another file."""
import os

import pytest

from app.files import write_new_file


def test_the_first_free_name_is_taken_and_nothing_else_is_left(tmp_path):
    (tmp_path / "a.png").write_bytes(b"old")
    assert write_new_file(tmp_path, iter(["a.png", "b.png", "c.png"]), b"new") == "b.png"
    assert (tmp_path / "a.png").read_bytes() == b"old" and (tmp_path / "b.png").read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["a.png", "b.png"]


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def no_room(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_room)
    with pytest.raises(OSError, match="No space"):
        write_new_file(tmp_path, iter(["a.png"]), b"data")
    assert os.listdir(tmp_path) == []
