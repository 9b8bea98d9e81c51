"""Structured attention graphs (Shitole et al., NeurIPS 2021) over the model's own glimpses.

The SAG paper searches image patches with a beam search because every candidate set costs a
forward pass. Here a set's confidence is the model re-run on exactly that set of glimpses (the
what path on their pixels alone, as `:predict` with `glimpse_boxes` computes it), and the runs
are batched: exact enumeration of all 2^T - 1 sets in one batched run up to 8 glimpses (255
sets, about two seconds on 2 cores); above that, the paper's beam search, one batched run per
search level.

Terms as in the paper: a set is *sufficient* when its confidence is at least `threshold` x the
confidence from all glimpses; *minimal* when dropping any one glimpse makes it insufficient.
The graph's roots are a diverse choice of minimal sets (pairwise overlap <= 1); each node's
children drop one glimpse (the 3 largest confidence drops), and nodes whose relative confidence
is at or below `expand_threshold` are not expanded. Identical subsets are one node.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

EXACT_MAX_GLIMPSES = 8
MAX_NODES = 40
FAN_OUT = 3
_BEAM_MAX_ROOTS = 10

# Glimpse sets [S, T] bool (no empty row) -> [S] probability of the explained class.
Evaluate = Callable[[np.ndarray], np.ndarray]


def exact_evaluations(steps: int) -> int:
    """Model runs of an exact enumeration: every non-empty subset once."""
    return 2**steps - 1


def _mask(subset: frozenset[int], steps: int) -> np.ndarray:
    m = np.zeros(steps, bool)
    m[list(subset)] = True
    return m


@dataclass
class SetScores:
    """Confidences of glimpse sets, each a model run, cached: a set is never run twice."""

    evaluate: Evaluate
    steps: int
    cache: dict[frozenset[int], float] = field(default_factory=dict)

    def confidences(self, subsets: Iterable[frozenset[int]]) -> list[float]:
        """Every subset's confidence; the ones not seen yet in one batched model run."""
        subsets = list(subsets)
        missing = [s for s in dict.fromkeys(subsets) if s not in self.cache]
        if any(not s for s in missing):
            raise ValueError("the empty set of glimpses has no confidence to look up")
        if missing:
            found = self.evaluate(np.stack([_mask(s, self.steps) for s in missing]))
            self.cache.update(zip(missing, (float(c) for c in found), strict=True))
        return [self.cache[s] for s in subsets]

    def conf(self, subset: frozenset[int]) -> float:
        return self.confidences([subset])[0]

    def all_subsets(self) -> list[frozenset[int]]:
        codes = np.arange(1, 2**self.steps)
        bits = (codes[:, None] >> np.arange(self.steps)) & 1
        return [frozenset(np.flatnonzero(b).tolist()) for b in bits]


@dataclass
class Search:
    scores: SetScores
    threshold: float  # absolute: fraction x full confidence

    @property
    def steps(self) -> int:
        return self.scores.steps

    def confidences(self, subsets: Iterable[frozenset[int]]) -> list[float]:
        return self.scores.confidences(subsets)

    def conf(self, subset: frozenset[int]) -> float:
        return self.scores.conf(subset)

    def exact(self) -> list[frozenset[int]]:
        """Every minimal sufficient set, by enumerating all 2^T - 1 subsets."""
        t = self.steps
        codes = np.arange(1, 2**t)
        bits = ((codes[:, None] >> np.arange(t)) & 1).astype(bool)
        subsets = self.scores.all_subsets()
        conf = np.array(self.confidences(subsets))
        sufficient = np.zeros(2**t, bool)
        sufficient[codes] = conf >= self.threshold
        minimal = sufficient[codes].copy()
        for i in range(t):
            has = bits[:, i]
            minimal &= ~(has & sufficient[codes & ~(1 << i)])
        return [s for s, m in zip(subsets, minimal, strict=True) if m]

    def _shrink(self, subset: frozenset[int]) -> frozenset[int]:
        """The paper's remove_extra_patches: drop glimpses while the rest stays sufficient."""
        while len(subset) > 1:
            smaller = [subset - {g} for g in sorted(subset)]
            confs = self.confidences(smaller)
            fits = [s for s, c in zip(smaller, confs, strict=True) if c >= self.threshold]
            if not fits:
                break
            subset = fits[0]
        return subset

    def beam(self, width: int) -> list[frozenset[int]]:
        """The paper's beam search from the empty set, adding one glimpse per step."""
        beam: list[frozenset[int]] = [frozenset()]
        roots: list[frozenset[int]] = []
        for _ in range(self.steps):
            successors = sorted(
                {b | {g} for b in beam for g in range(self.steps) if g not in b}, key=sorted
            )
            below = []
            for s, c in zip(successors, self.confidences(successors), strict=True):
                if c >= self.threshold:
                    root = self._shrink(s)
                    if root not in roots:
                        roots.append(root)
                else:
                    below.append(s)
            beam = sorted(below, key=lambda s: (-self.conf(s), sorted(s)))[:width]
            if len(roots) >= _BEAM_MAX_ROOTS or not beam:
                break
        return roots


def diverse(sets: list[frozenset[int]], limit: int) -> list[frozenset[int]]:
    """Greedy choice of sets sharing at most one glimpse pairwise (paper: overlap_thresh=1)."""
    chosen: list[frozenset[int]] = []
    for s in sets:
        if all(len(s & c) <= 1 for c in chosen):
            chosen.append(s)
        if len(chosen) == limit:
            break
    return chosen


@dataclass
class Graph:
    search: str
    full_confidence: float
    minimal: list[frozenset[int]]
    roots: list[frozenset[int]]
    nodes: list[tuple[frozenset[int], float]]  # (subset, confidence), id = index
    edges: list[tuple[int, int, int, float]]  # (source, target, removed glimpse, drop)


def build(
    scores: SetScores,
    threshold: float,
    max_roots: int,
    beam_width: int,
    expand_threshold: float,
) -> Graph:
    """The graph over the glimpses whose sets `scores` runs the model on."""
    steps = scores.steps
    full = scores.conf(frozenset(range(steps)))
    s = Search(scores, threshold * full)
    kind = "exact" if steps <= EXACT_MAX_GLIMPSES else "beam"
    found = s.exact() if kind == "exact" else s.beam(beam_width)
    found.sort(key=lambda m: (len(m), -s.conf(m), sorted(m)))
    roots = diverse(found, max_roots)

    ids: dict[frozenset[int], int] = {}
    nodes: list[tuple[frozenset[int], float]] = []
    edges: list[tuple[int, int, int, float]] = []

    def node(subset: frozenset[int]) -> int:
        if subset not in ids:
            ids[subset] = len(nodes)
            nodes.append((subset, s.conf(subset)))
        return ids[subset]

    queue = deque(node(r) for r in roots)
    expanded: set[int] = set()
    while queue:
        parent = queue.popleft()
        subset, conf = nodes[parent]
        if parent in expanded or len(subset) < 2 or conf / full <= expand_threshold:
            continue
        expanded.add(parent)
        smaller = [subset - {g} for g in sorted(subset)]
        drops = [(conf - c) / full for c in s.confidences(smaller)]
        children = sorted(zip(drops, sorted(subset), strict=True))[::-1]
        for drop, g in children[:FAN_OUT]:
            if len(nodes) >= MAX_NODES and subset - {g} not in ids:
                break
            child = node(subset - {g})
            edges.append((parent, child, g, max(drop, 0.0)))
            queue.append(child)
    return Graph(kind, full, found, roots, nodes, edges)


_THUMB = 96
_GAP = 28
_LABEL = 30


def _thumbnail(view: np.ndarray, boxes: np.ndarray, subset: frozenset[int]) -> Image.Image:
    """The view with only the subset's glimpses lit, the others' pixels dimmed."""
    lit = np.zeros(view.shape[:2], bool)
    for g in subset:
        y0, x0, y1, x1 = boxes[g].astype(int)
        lit[y0:y1, x0:x1] = True
    pixels = np.where(lit[..., None], view, view * 0.25)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).resize((_THUMB, _THUMB))
    draw = ImageDraw.Draw(image)
    scale = _THUMB / view.shape[0]
    for g in subset:
        y0, x0, y1, x1 = (float(v) * scale for v in boxes[g])
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 220, 0))
    return image


def _edge_style(drop: float) -> tuple[tuple[int, int, int], int]:
    """The paper's three strengths: drops below 20, below 60, and from 60 points."""
    if drop < 0.2:
        return (150, 150, 150), 1
    if drop < 0.6:
        return (235, 140, 0), 3
    return (210, 20, 20), 5


def render(graph: Graph, view: np.ndarray, boxes: np.ndarray) -> Image.Image:
    """Rows by subset size, largest at the top; each node shows its glimpses and confidence."""
    sizes = sorted({len(subset) for subset, _ in graph.nodes}, reverse=True)
    rows = {
        size: [i for i, (sub, _) in enumerate(graph.nodes) if len(sub) == size] for size in sizes
    }
    cell_w, cell_h = _THUMB + _GAP, _THUMB + _LABEL + _GAP
    width = max(len(r) for r in rows.values()) * cell_w + _GAP
    canvas = Image.new("RGB", (width, len(sizes) * cell_h + _GAP), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    where: dict[int, tuple[int, int]] = {}
    for r, size in enumerate(sizes):
        ids = rows[size]
        offset = (width - len(ids) * cell_w) // 2 + _GAP // 2
        for c, i in enumerate(ids):
            where[i] = (offset + c * cell_w, _GAP // 2 + r * cell_h)
    for source, target, _, drop in graph.edges:
        (sx, sy), (tx, ty) = where[source], where[target]
        colour, w = _edge_style(drop)
        draw.line([sx + _THUMB // 2, sy + _THUMB + _LABEL, tx + _THUMB // 2, ty], colour, w)
    roots = set(graph.roots)
    for i, (subset, conf) in enumerate(graph.nodes):
        x, y = where[i]
        canvas.paste(_thumbnail(view, boxes, subset), (x, y))
        if subset in roots:
            draw.rectangle(
                [x - 3, y - 3, x + _THUMB + 2, y + _THUMB + 2], outline=(0, 90, 200), width=2
            )
        names = ",".join(str(g + 1) for g in sorted(subset))
        draw.text((x, y + _THUMB + 2), f"{conf / graph.full_confidence:.0%}", (0, 0, 0), font)
        draw.text((x, y + _THUMB + 14), f"g{names}", (60, 60, 60), font)
    return canvas
