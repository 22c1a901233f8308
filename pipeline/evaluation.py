"""The labelled evaluation set of a run: ``--eval DIR`` or the built-in digits' held-out split."""
from __future__ import annotations

from pipeline.context import RunContext
from pipeline.data import LabelledSet, digits_splits, labelled_folder


def evaluation_set(ctx: RunContext) -> tuple[LabelledSet, str] | None:
    """(labelled images, a description of where they come from), or None without labels."""
    if ctx.config.eval is not None:
        return (labelled_folder(ctx.config.eval, what="evaluation folder"),
                f"folder {ctx.config.eval}")
    if ctx.config.dataset == "digits":
        return digits_splits(ctx.config.parity.seed)["eval"], "scikit-learn digits, held-out split"
    return None
