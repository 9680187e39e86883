"""The output cache: every node's outputs stored under a signature of what produced them.

A signature is built from the node's class, its constant inputs, the signatures of the nodes it links to
(with the output index) and its `IS_CHANGED` value, so it is the same for the same computation in any
workflow and any node id (except for nodes that are not idempotent or get their own id as UNIQUE_ID, whose
signature includes it). Re-running an unchanged graph finds every node here; changing one widget changes
the signatures of that node and its dependents only. `OutputCache` keeps the most recently used entries across
prompts; `LastPromptCache` is ComfyUI's classic cache, only the latest prompt's; `RamPressureCache` keeps
outputs while RAM allows. Knows nothing of what the outputs are.
"""
from __future__ import annotations

import hashlib
import json
import math
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from engine.input_spec import is_link

DEFAULT_CACHE_SIZE = 64


@dataclass(frozen=True)
class CacheEntry:
    outputs: tuple[list[Any], ...]  # one list per output slot (ComfyUI list semantics)
    ui: dict[str, Any] | None = None


class OutputCache:
    """A bounded LRU map from signature to `CacheEntry`; entries are whole, never half-written."""

    def __init__(self, max_entries: int = DEFAULT_CACHE_SIZE) -> None:
        if max_entries < 0:
            raise ValueError("cache size must be >= 0")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, signature: str) -> CacheEntry | None:
        with self._lock:
            entry = self._entries.get(signature)
            if entry is not None:
                self._entries.move_to_end(signature)
            return entry

    def put(self, signature: str, entry: CacheEntry) -> None:
        if self.max_entries == 0:
            return
        with self._lock:
            self._entries[signature] = entry
            self._entries.move_to_end(signature)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def discard_where(self, holds: Callable[[Any], bool]) -> int:
        """Drop every entry with an output value for which `holds(value)` is true; returns how many."""
        with self._lock:
            doomed = [signature for signature, entry in self._entries.items()
                      if any(holds(value) for values in entry.outputs for value in values)]
            for signature in doomed:
                del self._entries[signature]
            return len(doomed)

    def prompt_finished(self, signatures: set[str]) -> None:
        """A prompt ended having computed or looked up `signatures`. An LRU keeps everything within its bound;
        `LastPromptCache` forgets the rest."""

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, signature: object) -> bool:
        return signature in self._entries


class LastPromptCache(OutputCache):
    """ComfyUI's classic cache: every output of the latest prompt, however many, and nothing older. Re-running
    or editing the same workflow reuses its unchanged nodes; another workflow starts from an empty cache."""

    def __init__(self) -> None:
        super().__init__(max_entries=0)

    def put(self, signature: str, entry: CacheEntry) -> None:
        with self._lock:
            self._entries[signature] = entry

    def prompt_finished(self, signatures: set[str]) -> None:
        with self._lock:
            for signature in [known for known in self._entries if known not in signatures]:
                del self._entries[signature]


class RamPressureCache(OutputCache):
    """ComfyUI's RAM-pressure cache (`--cache-ram`): every output is kept, across prompts, for as long as the
    machine has RAM to spare. When the RAM available (`available()`, bytes) falls below `headroom`, outputs of
    earlier prompts are dropped until it is back above it: first those whose loss frees most for the least
    chance of reuse, scored as ComfyUI does by their size (`size_of(outputs)`, bytes, plus a small base so
    entries without tensors still age out) times 1.3 for every prompt since they were last used. Outputs the
    running prompt computed or looked up are never dropped while it runs; when it ends they count as earlier
    ones, and the same is done to restore `idle_headroom`. The engine knows nothing of the outputs: `available`
    and `size_of` are given."""

    AGE_FACTOR = 1.3  # ComfyUI's bias towards dropping the outputs of workflows not run for a while
    BASE_SIZE = 1  # the size of an entry holding no tensors: ranks it by age alone

    def __init__(self, headroom: int, available: Callable[[], int], size_of: Callable[[Any], int],
                 idle_headroom: int | None = None) -> None:
        super().__init__(max_entries=0)
        if headroom < 0 or (idle_headroom is not None and idle_headroom < 0):
            raise ValueError("RAM headroom must be >= 0")
        self.headroom = headroom
        self.idle_headroom = headroom if idle_headroom is None else idle_headroom
        self._available = available
        self._size_of = size_of
        self._prompt_number = 0
        self._last_used: dict[str, int] = {}  # signature -> number of the prompt that last used it

    def get(self, signature: str) -> CacheEntry | None:
        entry = super().get(signature)
        if entry is not None:
            with self._lock:
                self._last_used[signature] = self._prompt_number
        return entry

    def __contains__(self, signature: object) -> bool:
        # the executor asks this of every node of a prompt before running it: as ComfyUI marks the prompt's
        # nodes used when the prompt starts, an output found here is the running prompt's and is not dropped
        # before the node that needs it reads it
        with self._lock:
            if signature not in self._entries:
                return False
            self._last_used[signature] = self._prompt_number
            return True

    def put(self, signature: str, entry: CacheEntry) -> None:
        with self._lock:
            self._entries[signature] = entry
            self._last_used[signature] = self._prompt_number
            self._release(self.headroom)

    def prompt_finished(self, signatures: set[str]) -> None:
        with self._lock:
            for signature in signatures & self._entries.keys():
                self._last_used[signature] = self._prompt_number
            self._prompt_number += 1
            self._last_used = {key: used for key, used in self._last_used.items() if key in self._entries}
            self._release(self.idle_headroom)

    def _release(self, target: int) -> None:
        """Drop outputs of earlier prompts, highest score first, until `target` bytes are available."""
        if self._available() >= target:
            return
        ranked = sorted((self._eviction_score(signature), signature) for signature in self._entries
                        if self._last_used.get(signature, -1) < self._prompt_number)
        while ranked and self._available() < target:
            _, signature = ranked.pop()
            del self._entries[signature]
            self._last_used.pop(signature, None)

    def _eviction_score(self, signature: str) -> float:
        age = self._prompt_number - self._last_used.get(signature, -1)
        size = self.BASE_SIZE + self._size_of(self._entries[signature].outputs)
        return size * self.AGE_FACTOR ** age


@dataclass
class SignatureBuilder:
    """Computes node signatures for one prompt, memoised; `is_changed` gives a node's IS_CHANGED token."""

    prompt: dict[str, dict[str, Any]]
    node_class: Callable[[str], type | None]
    is_changed: Callable[[str, type], Any]
    _memo: dict[str, str] = field(default_factory=dict)

    def signature(self, node_id: str) -> str:
        stack: list[str] = [node_id]
        visiting: set[str] = set()
        while stack:
            current = stack[-1]
            if current in self._memo:
                stack.pop()
                continue
            missing = [str(v[0]) for v in self.prompt[current].get("inputs", {}).values()
                       if is_link(v) and str(v[0]) not in self._memo and str(v[0]) in self.prompt]
            if missing:
                if current in visiting:
                    raise ValueError(f"dependency cycle through node {current}")
                visiting.add(current)
                stack.extend(missing)
                continue
            self._memo[current] = self._own_signature(current)
            visiting.discard(current)
            stack.pop()
        return self._memo[node_id]

    def known(self) -> set[str]:
        """The signatures computed so far (every node of the prompt looked at, expansions included)."""
        return set(self._memo.values())

    def _own_signature(self, node_id: str) -> str:
        node = self.prompt[node_id]
        class_type = node["class_type"]
        cls = self.node_class(class_type)
        inputs = []
        for name, value in sorted(node.get("inputs", {}).items()):
            if is_link(value):
                upstream = self._memo.get(str(value[0]), f"missing:{value[0]}")
                inputs.append([name, "link", upstream, value[1]])
            else:
                inputs.append([name, "value", value])
        parts: list[Any] = [class_type, inputs]
        if cls is not None:
            if getattr(cls, "NOT_IDEMPOTENT", False) or _receives_its_id(cls):
                parts.append(["node_id", node_id])
            if hasattr(cls, "IS_CHANGED"):
                parts.append(["is_changed", _stable_token(self.is_changed(node_id, cls))])
        encoded = json.dumps(parts, sort_keys=True, default=repr, separators=(",", ":"))
        return hashlib.sha256(encoded.encode()).hexdigest()


def _receives_its_id(cls: type) -> bool:
    """Whether the node gets its own id (a UNIQUE_ID hidden input): its outputs may depend on it (progress bars,
    expansion prefixes), so as in ComfyUI they are never reused for another node id."""
    hidden = cls.INPUT_TYPES().get("hidden") or {}
    return any((kind[0] if isinstance(kind, (list, tuple)) else kind) == "UNIQUE_ID" for kind in hidden.values())


def _stable_token(value: Any) -> Any:
    """NaN never equals itself, so ComfyUI nodes return it to mean "always re-run": give it a fresh token."""
    if isinstance(value, float) and math.isnan(value):
        return f"always-changed:{uuid.uuid4()}"
    return value
