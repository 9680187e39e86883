"""Entry point: `python main.py` starts the server; `python main.py run WORKFLOW.json` runs one headless."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from app.settings import add_common_arguments, settings_from_args
from diffusion.heap import share_one_arena
from serve import add_server_arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="main.py", description=__doc__)
    add_common_arguments(parser)
    add_server_arguments(parser)
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run a workflow file (API or editor format) without the server")
    run.add_argument("workflow", type=Path, help="the workflow JSON file")
    run.add_argument("--output-node", action="append", dest="output_nodes", metavar="ID",
                     help="run only this output node (repeatable)")
    add_common_arguments(run, for_subcommand=True)
    demo = commands.add_parser("make-demo-models",
                               help="write the tiny random-weight demo models of every family, so every "
                                    "shipped workflow runs (their images are noise)")
    add_common_arguments(demo, for_subcommand=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    share_one_arena()  # before any thread starts: a prompt's thread then reuses freed CPU memory (diffusion.heap)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    if args.command == "run":
        from app.headless import run_workflow_file
        from app.runtime import build_runtime

        return run_workflow_file(build_runtime(settings), args.workflow, output_nodes=args.output_nodes)
    if args.command == "make-demo-models":
        from app.runtime import write_demo_models

        for path in write_demo_models(settings, every_family=True):
            print(path)
        print("These models have random weights: they exercise the whole pipeline, but their images are noise.")
        return 0
    from serve import serve

    return serve(settings, args)


if __name__ == "__main__":
    sys.exit(main())
