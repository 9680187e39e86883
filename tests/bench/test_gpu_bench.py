"""bench/gpu.py keeps working where it can be run here: its whole path (files, our server, the diffusers worker,
the table) on the tiny SD1 model on the CPU. Its timings are not checked (no timing asserts in tests)."""
import subprocess
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]


def test_smoke_run_prints_a_table_with_both_engines(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--device", "cpu", "--tiny", "--families", "sd15", "--batches", "1",
         "--steps", "2", "--runs", "1", "--repeats", "1", "--dtype", "fp32", "--models-dir", str(tmp_path)],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout.split("sd15 (64x64, cfg 7.5)")[1].splitlines()
    rows = {line.split()[0]: line.split() for line in table if line.strip().startswith(("ours", "diffusers"))}
    assert set(rows) == {"ours", "diffusers"}
    assert rows["ours"][1] == rows["diffusers"][1] == "1"  # batch
    for engine in ("ours", "diffusers"):
        first, start, load, image = (float(value) for value in rows[engine][2:6])
        assert 0 < start < first and 0 < load < first and image > 0  # start-up and loading are parts of the first
    float(rows["diffusers"][6])  # the step time (a difference of two times: tiny models make it noise)
    assert rows["diffusers"][-1].endswith("x")


def test_flux_transformer_is_written_in_bfl_layout_that_loads_back_unchanged():
    """The benchmark writes FLUX.1 as people download it (BFL's layout); the loader's converter gives back every
    tensor of the model it came from."""
    import torch

    from diffusion.families.flux.demo import bfl_layout, build_tiny_flux
    from diffusion.families.flux.detection import is_bfl_layout
    from diffusion.families.flux.loading import bfl_to_diffusers

    state = build_tiny_flux(0).transformer.state_dict()
    written = bfl_layout(state)
    assert is_bfl_layout(written.keys())
    assert "double_blocks.0.img_attn.norm.query_norm.scale" in written and "single_blocks.0.linear1.weight" in written
    loaded = bfl_to_diffusers(written)
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[key], state[key]) for key in state)


def test_fp8_weight_storage_runs_for_flux_on_every_engine(tmp_path):
    """`--weight-dtype` reaches our server's UNETLoader and the diffusers worker's transformer alike (FLUX only)."""
    refused = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--device", "cpu", "--tiny", "--families", "sd15", "--weight-dtype",
         "fp8_e4m3fn", "--models-dir", str(tmp_path)], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "run it with --families flux alone" in refused.stderr
    result = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--device", "cpu", "--tiny", "--families", "flux", "--batches", "1",
         "--steps", "2", "--runs", "1", "--repeats", "1", "--dtype", "fp32", "--weight-dtype", "fp8_e4m3fn",
         "--models-dir", str(tmp_path)], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout.split("flux (64x64")[1].splitlines()
    assert {line.split()[0] for line in table if line.strip().startswith(("ours", "diffusers"))} == {"ours",
                                                                                                      "diffusers"}
