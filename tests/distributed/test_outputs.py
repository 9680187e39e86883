"""Files written on a worker land in the head's folders under the names a node there would have chosen."""
import pytest

from app.files import UnsafePathError
from distributed.outputs import OutputCollector, OutputPlacer, ShippedFile


def test_the_collector_ships_each_new_file_once_in_order(tmp_path):
    output, temp = tmp_path / "output", tmp_path / "temp"
    (output / "sub").mkdir(parents=True)
    temp.mkdir()
    (output / "x_00002_.png").write_bytes(b"second")
    (output / "x_00001_.png").write_bytes(b"first")
    (output / "sub" / "y_00001_.png").write_bytes(b"nested")
    (output / ".x.png.part").write_bytes(b"half written")
    (temp / "preview_00001_.png").write_bytes(b"preview")
    collector = OutputCollector({"output": output, "temp": temp})
    shipped = collector.collect()
    assert [(f.folder_type, f.subfolder, f.name, f.data) for f in shipped] == [
        ("output", "sub", "y_00001_.png", b"nested"), ("output", "", "x_00001_.png", b"first"),
        ("output", "", "x_00002_.png", b"second"), ("temp", "", "preview_00001_.png", b"preview")]
    assert (output / "x_00001_.png").stat().st_size == 0  # the name stays taken on the worker
    assert collector.collect() == ()
    (output / "x_00003_.png").write_bytes(b"third")
    assert [f.name for f in collector.collect()] == ["x_00003_.png"]


def test_the_head_continues_its_own_counter_and_renames_the_ui(tmp_path):
    output = tmp_path / "output"
    output.mkdir()
    (output / "x_00007_.png").write_bytes(b"old")
    (output / "x_y_00009_.png").write_bytes(b"another prefix")
    placer = OutputPlacer({"output": output, "temp": tmp_path / "temp"})
    placer.place("w0#1", [ShippedFile("output", "", "x_00001_.png", b"a"),
                          ShippedFile("output", "", "x_00002_.png", b"b")])
    assert (output / "x_00008_.png").read_bytes() == b"a" and (output / "x_00009_.png").read_bytes() == b"b"
    ui = {"images": [{"filename": "x_00002_.png", "subfolder": "", "type": "output"},
                     {"filename": "elsewhere.png", "subfolder": "", "type": "output"}], "text": ["hi"], "n": 3}
    assert placer.rename("w0#1", ui) == {
        "images": [{"filename": "x_00009_.png", "subfolder": "", "type": "output"},
                   {"filename": "elsewhere.png", "subfolder": "", "type": "output"}], "text": ["hi"], "n": 3}


def test_names_are_per_worker_incarnation_and_other_names_are_kept_unless_taken(tmp_path):
    placer = OutputPlacer({"output": tmp_path / "output", "temp": tmp_path / "temp"})
    for source in ("w0#1", "w1#1"):
        placer.place(source, [ShippedFile("temp", "sub", "plain.txt", source.encode())])
    entry = {"filename": "plain.txt", "subfolder": "sub", "type": "temp"}
    assert placer.rename("w0#1", {"files": [entry]})["files"][0]["filename"] == "plain.txt"
    assert placer.rename("w1#1", {"files": [entry]})["files"][0]["filename"] == "plain (1).txt"
    assert (tmp_path / "temp" / "sub" / "plain (1).txt").read_bytes() == b"w1#1"
    placer.forget("w1#1")
    assert placer.rename("w1#1", {"files": [entry]})["files"][0]["filename"] == "plain.txt"


def test_a_worker_cannot_write_outside_the_heads_folders(tmp_path):
    placer = OutputPlacer({"output": tmp_path / "output", "temp": tmp_path / "temp"})
    (tmp_path / "output").mkdir()
    with pytest.raises(UnsafePathError):
        placer.place("w0#1", [ShippedFile("output", "../elsewhere", "x_00001_.png", b"a")])
    assert not (tmp_path / "elsewhere").exists()
