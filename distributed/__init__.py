"""Scale-out on Ray: the head's queue run by engine workers (Ray actors), one per GPU, or CPU workers.

Imported only when the server starts with `--workers` or `--ray-address`, so Ray stays out of ordinary
start-up. The head stays the single source of truth (SQLite queue and history, websocket, output folder);
workers only run whole prompts and stream back what happened. Knows nothing of HTTP routes or diffusion:
workers build their engine with `app.runtime.build_runtime`, exactly like the single-process server.

Depends on `app` (settings, runtime, the prompt store and queue worker interfaces) and `engine`. Of `server`
it uses only `server.PromptServer`, the public name plugins import, because a worker must stand in for it
(`distributed.actor.WorkerPromptServer`); nothing else of the server, which in turn never imports this package.
"""
