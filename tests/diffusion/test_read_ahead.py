"""Model files read ahead (`diffusion.read_ahead`, `diffusion.loading.read_ahead`): a loader takes what was read
for the same file version and settings instead of reading again, and gets the same model; anything else (no read,
a failed read, another version of the file) leaves the loader reading for itself."""
import logging
import os
import shutil
import threading

import torch

from diffusion import files, loading
from diffusion.manager import ModelManager
from diffusion.read_ahead import ReadAhead


def test_a_read_is_taken_once_after_it_finishes():
    reads = ReadAhead()
    release, calls = threading.Event(), []

    def read():
        calls.append(1)
        release.wait(10)
        return {"weight": 1}

    reads.start("file", read)
    reads.start("file", read)  # already held: not read twice
    taken = []
    taker = threading.Thread(target=lambda: taken.append(reads.take("file")))
    taker.start()
    taker.join(0.2)
    assert taker.is_alive()  # waits for the read to finish
    release.set()
    taker.join(10)
    assert taken == [{"weight": 1}] and calls == [1]
    assert reads.take("file") is None and len(reads) == 0


def test_a_failed_read_leaves_nothing_to_take(caplog):
    reads = ReadAhead()

    def read():
        raise ValueError("ckpt_name: broken.safetensors is not a readable safetensors file")

    reads.start("broken", read)
    with caplog.at_level(logging.INFO, logger="diffusion.read_ahead"):
        assert reads.take("broken") is None
    assert "the loader reads the file itself" in caplog.text
    assert reads.take("never started") is None


def test_clear_drops_what_nobody_took():
    reads = ReadAhead()
    reads.start("a", lambda: 1)
    reads.start("b", lambda: 2)
    reads.clear()
    assert len(reads) == 0 and reads.take("a") is None


def _counting_reads(monkeypatch):
    calls = []
    original = loading.read_safetensors

    def counted(path, *args, **kwargs):
        calls.append(os.path.basename(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(loading, "read_safetensors", counted)
    return calls


def _weights(model):
    return {name: tensor.clone() for name, tensor in model.network.state_dict().items()}


def test_the_loader_takes_the_read_ahead_and_builds_the_same_model(tmp_path, tiny_models_dir, monkeypatch):
    path = tmp_path / "tiny-sd1.safetensors"
    shutil.copyfile(tiny_models_dir / "checkpoints" / "tiny-sd1.safetensors", path)
    expected = _weights(loading.load_checkpoint(ModelManager(torch.device("cpu"), torch.float32), path)[0])
    calls = _counting_reads(monkeypatch)
    models, reads = ModelManager(torch.device("cpu"), torch.float32), ReadAhead()
    loading.read_ahead(reads, models, "checkpoint", path, "ckpt_name")
    assert len(reads) == 1
    model = loading.load_checkpoint(models, path, reads=reads)[0]
    assert calls == ["tiny-sd1.safetensors"] and len(reads) == 0  # read once, taken
    loaded = _weights(model)
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[name], expected[name]) for name in expected)
    loading.read_ahead(reads, models, "checkpoint", path, "ckpt_name")  # held by the manager now: nothing to read
    assert len(reads) == 0 and calls == ["tiny-sd1.safetensors"]


def test_a_file_rewritten_after_its_read_ahead_is_read_again(tmp_path, tiny_models_dir):
    from diffusion.families.sd import demo

    path = tmp_path / "tiny-sd1.safetensors"
    shutil.copyfile(tiny_models_dir / "checkpoints" / "tiny-sd1.safetensors", path)
    models, reads = ModelManager(torch.device("cpu"), torch.float32), ReadAhead()
    loading.read_ahead(reads, models, "checkpoint", path, "ckpt_name")
    demo.write_checkpoint(demo.build_tiny_components("sd1", seed=7), path)  # another version of the file
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # (even within the clock's tick)
    rewritten = _weights(loading.load_checkpoint(ModelManager(torch.device("cpu"), torch.float32), path)[0])
    loaded = _weights(loading.load_checkpoint(models, path, reads=reads)[0])
    assert all(torch.equal(loaded[name], rewritten[name]) for name in rewritten)  # the stale read is not used
    assert len(reads) == 1  # it is dropped with the rest after the prompt
    reads.clear()


def test_another_precision_is_another_read(tiny_models_dir, monkeypatch):
    path = tiny_models_dir / "checkpoints" / "tiny-sd1.safetensors"
    calls = _counting_reads(monkeypatch)
    reads = ReadAhead()
    loading.read_ahead(reads, ModelManager(torch.device("cpu"), torch.float32), "checkpoint", path, "ckpt_name")
    model = loading.load_checkpoint(ModelManager(torch.device("cpu"), torch.bfloat16), path, reads=reads)[0]
    assert model.network.dtype == torch.bfloat16 and len(reads) == 1  # the bf16 loader read for itself
    loading.load_checkpoint(ModelManager(torch.device("cpu"), torch.float32), path, reads=reads)  # fp32 takes it
    assert len(calls) == 2 and len(reads) == 0


def test_nothing_is_read_ahead_for_files_the_loader_would_refuse(tmp_path):
    models, reads = ModelManager(torch.device("cpu"), torch.float32), ReadAhead()
    (tmp_path / "pickled.ckpt").write_bytes(b"not read")
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    loading.read_ahead(reads, models, "checkpoint", tmp_path / "missing.safetensors", "ckpt_name")
    loading.read_ahead(reads, models, "checkpoint", tmp_path / "pickled.ckpt", "ckpt_name")
    loading.read_ahead(reads, models, "diffusion_model", tmp_path / "model.gguf", "unet_name")
    loading.read_ahead(reads, models, "diffusion_model", tmp_path / "missing.safetensors", "unet_name", "no_such")
    assert len(reads) == 0


def test_keeps_fp8_follows_the_files_fp8_weights(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(4, 4).to(torch.float8_e4m3fn)}, str(tmp_path / "fp8.safetensors"))
    save_file({"w": torch.zeros(4, 4)}, str(tmp_path / "fp32.safetensors"))
    assert files.keeps_fp8(tmp_path / "fp8.safetensors", "unet_name", lambda parameters: True)
    assert not files.keeps_fp8(tmp_path / "fp8.safetensors", "unet_name", lambda parameters: False)
    assert not files.keeps_fp8(tmp_path / "fp32.safetensors", "unet_name", lambda parameters: True)


def test_unet_loader_reads_ahead_per_weight_dtype(tiny_models_dir, monkeypatch):
    from diffusion import registry
    from diffusion.families.flux.demo import DEMO_FLUX_TRANSFORMER

    registry.family("flux").make_demo_models(tiny_models_dir)
    path = tiny_models_dir / "diffusion_models" / DEMO_FLUX_TRANSFORMER
    expected = _weights(loading.load_diffusion_model(ModelManager(torch.device("cpu"), torch.bfloat16), path,
                                                     weight_dtype="fp8_e4m3fn"))
    calls = _counting_reads(monkeypatch)
    models, reads = ModelManager(torch.device("cpu"), torch.bfloat16), ReadAhead()
    loading.read_ahead(reads, models, "diffusion_model", path, "unet_name", "fp8_e4m3fn")
    loaded = _weights(loading.load_diffusion_model(models, path, weight_dtype="fp8_e4m3fn", reads=reads))
    assert len(calls) == 1 and len(reads) == 0
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[name].float(), expected[name].float()) for name in expected)
    loading.read_ahead(reads, models, "diffusion_model", path, "unet_name", "fp8_e4m3fn")  # held: nothing read
    loading.read_ahead(reads, models, "diffusion_model", path, "unet_name")  # held only as fp8: "default" is read
    assert len(reads) == 1
