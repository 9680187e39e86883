"""Facts about models known while a prompt is validated, before anything is loaded: loader nodes state the family
of what they will load (read from a file's tensor names or a folder's model_index.json, no weights), facts pass
through LoRA and patch nodes by type, and nodes that only work with some families refuse others at validation
(a sampler a FLUX model cannot run, an SD3 text encoder node given a FLUX CLIP) with an error naming the input.
See docs/writing-nodes.md (facts) for the engine's side. Knows nothing of HTTP or the executor.
"""
from __future__ import annotations

from typing import Any, Mapping

from diffusion import registry
from diffusion.sampling.ksampler import choice_problem

Facts = Mapping[str, Any]


def family_facts(family: str | None, outputs: int) -> tuple[Facts | None, ...]:
    """The same family fact for each of a loader's `outputs` (all unknown when the family is)."""
    facts = None if family is None else {"family": family}
    return (facts,) * outputs


def sampler_choice(input_facts: Mapping[str, Facts], widgets: Mapping[str, Any]) -> bool | str:
    """True, or why the linked model's family cannot run the chosen sampler/scheduler (naming that input)."""
    family = input_facts.get("model", {}).get("family")
    if family is None or "sampler_name" not in widgets or "scheduler" not in widgets:
        return True
    problem = choice_problem(registry.family(family).sampling, widgets["sampler_name"], widgets["scheduler"])
    return True if problem is None else problem


def requires_family(input_facts: Mapping[str, Facts], input_name: str, family: str | tuple[str, ...],
                    node: str) -> bool | str:
    """True, or why `input_name` (linked to a model of another known family) does not fit a node that only works
    with `family`'s (or one of these families')."""
    families = (family,) if isinstance(family, str) else family
    found = input_facts.get(input_name, {}).get("family")
    if found is None or found in families:
        return True
    kind = "CLIP" if input_name == "clip" else "model"
    wanted = " or ".join(_title(name) for name in families)
    return f"{input_name}: {node} needs an {wanted} {kind}; this one is a {_title(found)} {kind}"


def _title(family: str) -> str:
    try:
        return registry.family(family).title
    except ValueError:  # a fact some plugin states about its own models
        return family
