"""Which layers pruning must leave untouched: the stem conv, the classifier, and every module
the user names (exact qualified name or ``fnmatch`` pattern)."""
from __future__ import annotations

import fnmatch

from torch import nn

from pipeline.errors import UserInputError


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or fnmatch.fnmatchcase(name, pattern)


def protected_names(model: nn.Module, protect: tuple[str, ...] = ()) -> list[str]:
    """Qualified names of the protected modules (see :func:`protected_modules`), in model order."""
    named = [(name, m) for name, m in model.named_modules() if name]
    convs = [name for name, m in named if isinstance(m, nn.Conv2d)]
    linears = [name for name, m in named if isinstance(m, nn.Linear)]
    if not convs:
        raise UserInputError("cannot prune: the model has no Conv2d layer (no stem to protect)")
    if not linears:
        raise UserInputError("cannot prune: the model has no Linear classifier to protect")
    chosen = {convs[0], linears[-1]}
    for pattern in protect:
        hits = [name for name, _ in named if _matches(name, pattern)]
        if not hits:
            raise UserInputError(
                f"protect entry {pattern!r} matches no module of the model "
                f"(module names look like {convs[min(1, len(convs) - 1)]!r})"
            )
        chosen.update(hits)
    return [name for name, _ in named if name in chosen]


def protected_modules(model: nn.Module, protect: tuple[str, ...] = ()) -> list[nn.Module]:
    """The modules pruning must leave untouched: the stem conv (first ``Conv2d``), the classifier
    (last ``Linear``), and every module whose qualified name matches an entry of ``protect``
    (exact name or ``fnmatch`` pattern; a container protects everything inside it).

    Raises :class:`UserInputError` for a ``protect`` entry that matches nothing (a typo would
    otherwise silently prune the layer the user meant to keep).
    """
    names = set(protected_names(model, protect))
    return [m for name, m in model.named_modules() if name in names]
