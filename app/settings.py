"""Command-line flags shared by every sub-command, and the folders they point to."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from app.cpus import usable_cpu_count
from engine.cache import DEFAULT_CACHE_SIZE

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_INTERRUPT_GRACE_S = 10.0
TEXT_ENCODER_OFFLOAD = {"never": "never", "auto": "when-tight", "always": "always"}  # flag -> environment policy


@dataclass(frozen=True)
class Settings:
    models_dir: Path
    input_dir: Path
    output_dir: Path
    temp_dir: Path
    user_dir: Path
    cache_size: int  # LRU entries (0: no cache); unused with cache_classic
    cpu: bool
    threads: int | None
    custom_nodes_dirs: tuple[Path, ...] = ()
    disable_custom_nodes: bool = False
    demo_models: bool = True
    free_text_encoders: str = "auto"
    dtype: str | None = None
    max_ram: str | None = None
    reserve_vram: float | None = None
    allow_model_links: bool = False
    text_encoder_dtype: str | None = None
    interrupt_grace: float = DEFAULT_INTERRUPT_GRACE_S  # seconds a node may ignore an interrupt before it is abandoned
    cache_classic: bool = False  # ComfyUI's classic cache (the latest prompt's outputs) instead of the LRU
    cache_ram: tuple[float, ...] | None = None  # --cache-ram: RAM headrooms in GiB ((): the defaults); None: off


def add_common_arguments(parser: argparse.ArgumentParser, for_subcommand: bool = False) -> None:
    """Add the shared flags. On a sub-command their defaults are suppressed, so a flag given before the
    sub-command's name is not overwritten by the sub-command's default."""
    def default(value: object) -> object:
        return argparse.SUPPRESS if for_subcommand else value

    folders = parser.add_argument_group("folders (defaults under the project folder)")
    folders.add_argument("--models-dir", type=Path, default=default(None),
                         help="models folder (checkpoints/, diffusers/, loras/, vae/)")
    folders.add_argument("--input-dir", type=Path, default=default(None), help="images and files that nodes load")
    folders.add_argument("--output-dir", type=Path, default=default(None), help="where saved images go")
    folders.add_argument("--temp-dir", type=Path, default=default(None), help="previews")
    folders.add_argument("--user-dir", type=Path, default=default(None),
                         help="per-user data: saved workflows, settings, queue")
    folders.add_argument("--allow-model-links", action="store_true", default=default(False),
                         help="list and load model files that are symbolic links to places outside the models "
                              "folder (another disk); without it they are left out, with a warning")
    engine = parser.add_argument_group("engine")
    caching = engine.add_mutually_exclusive_group()
    caching.add_argument("--cache-size", type=int, default=default(DEFAULT_CACHE_SIZE),
                         help=f"node outputs kept for re-runs (LRU entries, default {DEFAULT_CACHE_SIZE}; 0 disables)")
    caching.add_argument("--cache-lru", type=int, default=default(None), metavar="N",
                         help="ComfyUI's flag: keep the N most recently used node outputs across prompts (as "
                              "--cache-size N); 0 means --cache-classic, as in ComfyUI")
    caching.add_argument("--cache-classic", action="store_true", default=default(False),
                         help="ComfyUI's default cache: keep every output of the latest prompt and nothing older")
    caching.add_argument("--cache-none", action="store_true", default=default(False),
                         help="keep no node outputs: every node runs every time (as --cache-size 0)")
    caching.add_argument("--cache-ram", nargs="*", type=float, default=default(None), metavar="GB",
                         help="ComfyUI's RAM-pressure cache: keep node outputs across prompts while RAM allows; "
                              "when less than GB is available (default 10%% of RAM, at least 2 and at most 10), "
                              "drop outputs of earlier prompts, the largest and least recently used first. An "
                              "optional second GB is the headroom restored when a prompt ends (default: the first)")
    engine.add_argument("--cpu", action="store_true", default=default(False),
                        help="run on the CPU even when a GPU is present")
    precision = engine.add_mutually_exclusive_group()
    for name in ("fp16", "bf16", "fp32"):
        precision.add_argument(f"--{name}", dest="dtype", action="store_const", const=name, default=default(None),
                               help=f"run models in {name} (default: bf16 or fp16 on a GPU; on the CPU bf16 where it "
                                    "computes bf16 natively (AVX512-BF16, AMX), else fp32)")
    encoder_precision = engine.add_mutually_exclusive_group()
    for name in ("fp16", "bf16", "fp32"):
        encoder_precision.add_argument(
            f"--{name}-text-enc", dest="text_encoder_dtype", action="store_const", const=name, default=default(None),
            help=f"run text encoders in {name} (default: as the models); ComfyUI's CPU results: --fp32 --fp16-text-enc")
    engine.add_argument("--max-ram", default=default(None), metavar="SIZE",
                        help="RAM for loaded models, e.g. 8GB or a fraction such as 0.5 (default 0.75 of RAM); "
                             "least recently used models are unloaded beyond it")
    engine.add_argument("--reserve-vram", type=float, default=default(None), metavar="GB",
                        help="GPU memory in GB kept free of models (default 1.0); beyond it models are offloaded")
    engine.add_argument("--threads", type=int, default=default(None),
                        help="CPU threads for torch (default: OMP_NUM_THREADS when set, else the physical cores this "
                             "process may use, within its CPU affinity and cgroup CPU quota)")
    engine.add_argument("--no-demo-models", action="store_true", default=default(False),
                        help="do not create the tiny demo model when the models folder has none")
    engine.add_argument("--interrupt-grace", type=float, default=default(DEFAULT_INTERRUPT_GRACE_S),
                        metavar="SECONDS",
                        help="how long a node may ignore an interrupt before its prompt is abandoned and the queue "
                             f"goes on (default {DEFAULT_INTERRUPT_GRACE_S:g}); the node's thread keeps running, "
                             "holding its memory, until the node returns")
    engine.add_argument("--free-text-encoders", choices=tuple(TEXT_ENCODER_OFFLOAD), default=default("auto"),
                        help="free big text encoders (T5) after encoding: never, auto (when memory is tight, "
                             "default) or always; a freed one is read again on the next encode")
    plugins = parser.add_argument_group("plugins")
    plugins.add_argument("--custom-nodes-dir", type=Path, action="append", default=default([]),
                         dest="custom_nodes_dirs", metavar="DIR",
                         help="another folder of node plugins, after custom_nodes/ (repeatable)")
    plugins.add_argument("--disable-custom-nodes", action="store_true", default=default(False),
                         help="load no plugins")


def settings_from_args(args: argparse.Namespace) -> Settings:
    cache_size, cache_classic = _cache_choice(args)
    cache_ram = _cache_ram_choice(args)
    if args.threads is not None and args.threads < 1:
        raise SystemExit("--threads must be 1 or more")
    max_ram = getattr(args, "max_ram", None)
    if max_ram is not None:
        from diffusion.memory import parse_memory_size

        try:
            parse_memory_size(max_ram, 1)
        except ValueError as error:
            raise SystemExit(f"--max-ram: {error}") from error
    reserve_vram = getattr(args, "reserve_vram", None)
    if reserve_vram is not None and reserve_vram < 0:
        raise SystemExit("--reserve-vram must be 0 or more")
    interrupt_grace = getattr(args, "interrupt_grace", DEFAULT_INTERRUPT_GRACE_S)
    if interrupt_grace <= 0:
        raise SystemExit("--interrupt-grace must be more than 0")
    return Settings(
        models_dir=(args.models_dir or PROJECT_DIR / "models").resolve(),
        input_dir=(args.input_dir or PROJECT_DIR / "input").resolve(),
        output_dir=(args.output_dir or PROJECT_DIR / "output").resolve(),
        temp_dir=(args.temp_dir or PROJECT_DIR / "temp").resolve(),
        user_dir=(args.user_dir or PROJECT_DIR / "user").resolve(),
        cache_size=cache_size,
        cache_classic=cache_classic,
        cache_ram=cache_ram,
        cpu=args.cpu,
        threads=args.threads,
        custom_nodes_dirs=(PROJECT_DIR / "custom_nodes", *(d.resolve() for d in args.custom_nodes_dirs)),
        disable_custom_nodes=args.disable_custom_nodes,
        demo_models=not args.no_demo_models,
        free_text_encoders=args.free_text_encoders,
        dtype=getattr(args, "dtype", None),
        max_ram=max_ram,
        reserve_vram=reserve_vram,
        allow_model_links=getattr(args, "allow_model_links", False),
        text_encoder_dtype=getattr(args, "text_encoder_dtype", None),
        interrupt_grace=interrupt_grace,
    )


def default_thread_count() -> int:
    """Torch's threads when `--threads` is not given: OMP_NUM_THREADS when it is set (the user's or the test
    runner's choice), otherwise the physical cores this process may use (`app.cpus`: within its CPU affinity and
    at most its cgroup quota's whole CPUs). Measured on a 2-core machine with a real-size SD1.5 UNet (256x256,
    cfg batch 2): 3.3 s a step on 1 thread, 1.87 s on 2, so leaving a core idle cost 1.8x; threads beyond the
    CPUs allowed cost more still (bench/threads.py, README)."""
    configured = os.environ.get("OMP_NUM_THREADS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return usable_cpu_count()


def _cache_choice(args: argparse.Namespace) -> tuple[int, bool]:
    """(LRU size, classic?) from --cache-size and ComfyUI's --cache-lru/--cache-classic/--cache-none."""
    lru = getattr(args, "cache_lru", None)
    if args.cache_size < 0 or (lru is not None and lru < 0):
        raise SystemExit("--cache-size and --cache-lru must be 0 or more")
    if getattr(args, "cache_classic", False) or lru == 0:
        return args.cache_size, True
    if getattr(args, "cache_none", False):
        return 0, False
    return (lru if lru is not None else args.cache_size), False


def _cache_ram_choice(args: argparse.Namespace) -> tuple[float, ...] | None:
    """ComfyUI's --cache-ram [GB [GB]]: None when not given, otherwise the (at most two) positive headrooms."""
    headrooms = getattr(args, "cache_ram", None)
    if headrooms is None:
        return None
    if len(headrooms) > 2 or any(not headroom > 0 for headroom in headrooms):
        raise SystemExit("--cache-ram takes at most two sizes in GB, each more than 0")
    return tuple(headrooms)
