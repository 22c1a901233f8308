"""Class names: the ``labels`` option, or the labelled evaluation set's own names.

``labels`` is a text file with one class name per line (read with a size cap, UTF-8), or the
word ``dataset`` for the names of the run's labelled evaluation set (``--eval`` folder's class
folders, or the built-in digits). The TFLite sidecar shows the names whenever they are known;
the Core ML package becomes a classifier only when ``labels`` asks for it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import UserInputError

#: a class list of 100,000 names is far below this
MAX_LABELS_BYTES = 4 << 20
DATASET = "dataset"


def dataset_labels(config: Any) -> list[str] | None:
    """The labelled evaluation set's class names (sorted class folders, or digits' 0-9)."""
    if config.eval is not None:
        from pipeline.data import list_images

        root = Path(config.eval)
        try:
            return sorted({p.relative_to(root).parts[0] for p in list_images(root)
                           if len(p.relative_to(root).parts) > 1})
        except UserInputError:   # a bad folder is reported by the stages that read it
            return None
    if config.dataset == "digits":
        from pipeline.data import DIGITS_CLASSES

        return list(DIGITS_CLASSES)   # without loading the dataset (a cached run needs no more)
    return None


def read_labels_file(path: Path, num_classes: int) -> list[str]:
    """One class name per non-empty line; exactly ``num_classes`` of them."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"labels file {path} does not exist; pass a text file with one "
                             "class name per line, or labels: dataset")
    if path.stat().st_size > MAX_LABELS_BYTES:
        raise UserInputError(f"labels file {path} is over {MAX_LABELS_BYTES >> 20} MiB; pass "
                             "a text file with one class name per line")
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    except UnicodeDecodeError:
        raise UserInputError(f"labels file {path} is not UTF-8 text") from None
    if len(names) != num_classes:
        raise UserInputError(f"labels file {path} names {len(names)} classes but the model "
                             f"outputs {num_classes}; give one name per class")
    return names


def explicit_labels(config: Any) -> list[str] | None:
    """The names the ``labels`` option asks for (None when it is unset)."""
    if config.labels is None:
        return None
    if str(config.labels) == DATASET:
        names = dataset_labels(config)
        if names is None or len(names) != config.num_classes:
            raise UserInputError("labels: dataset needs a labelled evaluation set with one "
                                 f"class per output ({config.num_classes}); pass --eval or "
                                 "--dataset, or a labels file")
        return names
    return read_labels_file(Path(config.labels), config.num_classes)


def known_labels(config: Any) -> list[str] | None:
    """The ``labels`` option's names, else the evaluation set's when their count matches the
    model's outputs, else None."""
    names = explicit_labels(config)
    if names is not None:
        return names
    names = dataset_labels(config)
    return names if names is not None and len(names) == config.num_classes else None
