"""Structured attention graphs (Shitole et al., NeurIPS 2021) over the model's own glimpses.

The SAG paper searches image patches with a beam search because every candidate set costs a
forward pass. Here the prediction is the mean of the glimpse logits, so the confidence of any
subset of glimpses is the same decision rule applied to that subset: softmax(mean of its glimpse
logits)[class], one small matrix product for all subsets at once. (The glimpse logits come from
the one canvas pass of the full prediction; the subset score is the model's rule on those, not
a re-run of the model with the other glimpses blanked.) That makes exact enumeration possible
up to 12 glimpses (4,095 subsets); above that the paper's beam search is used.

Terms as in the paper: a set is *sufficient* when its confidence is at least `threshold` x the
confidence from all glimpses; *minimal* when dropping any one glimpse makes it insufficient.
The graph's roots are a diverse choice of minimal sets (pairwise overlap <= 1); each node's
children drop one glimpse (the 3 largest confidence drops), and nodes whose relative confidence
is at or below `expand_threshold` are not expanded. Identical subsets are one node.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from service.explain.methods import softmax

EXACT_MAX_GLIMPSES = 12
MAX_NODES = 40
FAN_OUT = 3
_CHUNK = 4096
_BEAM_MAX_ROOTS = 10


def subset_confidence(glimpse_logits: np.ndarray, masks: np.ndarray, k: int) -> np.ndarray:
    """masks [S, T] bool (non-empty rows) -> [S] probability of class k from those glimpses."""
    out = np.empty(len(masks))
    for i in range(0, len(masks), _CHUNK):
        m = masks[i : i + _CHUNK].astype(np.float64)
        mean = m @ glimpse_logits / m.sum(1, keepdims=True)
        out[i : i + _CHUNK] = softmax(mean)[:, k]
    return out


def _mask(subset: frozenset[int], steps: int) -> np.ndarray:
    m = np.zeros(steps, bool)
    m[list(subset)] = True
    return m


@dataclass
class Search:
    glimpse_logits: np.ndarray
    k: int
    threshold: float  # absolute: fraction x full confidence
    cache: dict[frozenset[int], float] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.glimpse_logits)

    def conf(self, subset: frozenset[int]) -> float:
        if not subset:
            return 0.0
        if subset not in self.cache:
            mask = _mask(subset, self.steps)[None]
            self.cache[subset] = float(subset_confidence(self.glimpse_logits, mask, self.k)[0])
        return self.cache[subset]

    def exact(self) -> list[frozenset[int]]:
        """Every minimal sufficient set, by enumerating all 2^T - 1 subsets."""
        t = self.steps
        codes = np.arange(1, 2**t)
        bits = ((codes[:, None] >> np.arange(t)) & 1).astype(bool)
        conf = subset_confidence(self.glimpse_logits, bits, self.k)
        sufficient = np.zeros(2**t, bool)
        sufficient[codes] = conf >= self.threshold
        minimal = sufficient[codes].copy()
        for i in range(t):
            has = bits[:, i]
            minimal &= ~(has & sufficient[codes & ~(1 << i)])
        for code, c in zip(codes, conf, strict=True):
            self.cache[frozenset(np.flatnonzero(bits[code - 1]).tolist())] = float(c)
        return [frozenset(np.flatnonzero(bits[c - 1]).tolist()) for c in codes[minimal]]

    def _shrink(self, subset: frozenset[int]) -> frozenset[int]:
        """The paper's remove_extra_patches: drop glimpses while the rest stays sufficient."""
        changed = True
        while changed:
            changed = False
            for g in sorted(subset):
                smaller = subset - {g}
                if smaller and self.conf(smaller) >= self.threshold:
                    subset, changed = smaller, True
                    break
        return subset

    def beam(self, width: int) -> list[frozenset[int]]:
        """The paper's beam search from the empty set, adding one glimpse per step."""
        beam: list[frozenset[int]] = [frozenset()]
        roots: list[frozenset[int]] = []
        for _ in range(self.steps):
            successors = {b | {g} for b in beam for g in range(self.steps) if g not in b}
            below = []
            for s in successors:
                if self.conf(s) >= self.threshold:
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
    glimpse_logits: np.ndarray,
    k: int,
    threshold: float,
    max_roots: int,
    beam_width: int,
    expand_threshold: float,
) -> Graph:
    steps = len(glimpse_logits)
    full = float(subset_confidence(glimpse_logits, np.ones((1, steps), bool), k)[0])
    s = Search(glimpse_logits, k, threshold * full)
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
        children = sorted(((conf - s.conf(subset - {g})) / full, g) for g in subset)[::-1]
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
