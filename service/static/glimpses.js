// Draw a prediction's glimpses over the user's photo, one after another, in an SVG overlay.
//
// The overlay's viewBox is the photo's size as the gateway decoded it
// (preprocessing.original_size), so `box_original` boxes are used as they come, at the
// photo's own resolution, whatever size the photo is displayed at.
//
// The glimpses overlap (the model tiles a region with 64-px squares 40-48 px apart), so one
// frame each would draw a grid of crossing lines with the numbers piled at the corners. What
// reads at a glance instead: one outline around everything the model looked at, each glimpse's
// number at its own centre, and the frame of one glimpse only, the one under the pointer (on
// the photo or its line in the list).
//
// What each glimpse is worth (the :explain API's `glimpses` method: the class's probability
// from its pixels alone, and from all the others without it) comes later, and is added to the
// labels and the list by showWorth().

const SVG = "http://www.w3.org/2000/svg";
const STEP_MS = 450;

const percent = (x) => `${(100 * x).toFixed(1)}%`;
const wholePercent = (x) => `${Math.round(100 * x)}%`;

/**
 * A class as the model names it. Models with their own labels ("dog", "vehicle") come with an
 * empty synset, so only the label is shown; a model without names still says which class.
 */
const classLabel = (c) => c.label || c.synset || `class ${c.index}`;

function el(name, attrs = {}, text = "") {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text) node.textContent = text;
  return node;
}

function rectAttrs(box) {
  return {
    x: box.xmin, y: box.ymin,
    width: Math.max(0, box.xmax - box.xmin), height: Math.max(0, box.ymax - box.ymin),
  };
}

const overlaps = (a, b) =>
  a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;

/**
 * Where a label goes: the corner (x, y) of its box, moved by one label height (then width) in
 * the directions `dy`, `dx` (+1 or -1) past the labels already placed, because boxes often
 * overlap and stacked labels would be unreadable.
 */
function placeLabel(x, y, w, h, placed, bounds, dx = 1, dy = 1) {
  const spot = { x, y, w, h };
  const outside = () => (dy > 0 ? spot.y + h > bounds.height : spot.y < 0);
  for (let tries = 0; tries < 64 && placed.some((p) => overlaps(p, spot)); tries += 1) {
    spot.y += dy * h;
    if (outside()) {
      spot.y = y;
      spot.x += dx * w;
    }
  }
  placed.push(spot);
  return spot;
}

/** A label: a dark rectangle with the number in bold and `rest` after it. */
function label(cls, order, rest, x, y, layout, dx, dy) {
  const size = 3 * layout.unit;
  // Width from the character count: the text is short and mostly digits (tabular figures).
  const chars = String(order).length + (rest ? rest.length + 1 : 0);
  const w = size * (0.62 * chars + 0.6);
  const h = size * 1.35;
  const spot = placeLabel(dx > 0 ? x : x - w, dy > 0 ? y : y - h, w, h, layout.placed, layout,
    dx, dy);
  const group = el("g", { class: cls, "data-order": order });
  group.append(el("rect", { x: spot.x, y: spot.y, width: spot.w, height: spot.h }));
  const text = el("text", { x: spot.x + size * 0.3, y: spot.y + size * 1.05, "font-size": size });
  text.append(el("tspan", { class: "number" }, String(order)));
  if (rest) text.append(` ${rest}`);
  group.append(text);
  return group;
}

const centre = (box) => ({ x: (box.xmin + box.xmax) / 2, y: (box.ymin + box.ymax) / 2 });

/**
 * Where a badge centred on (x, y) goes: there if it covers no badge placed already, else the
 * nearest free spot a badge's size or two away (the model's glimpses are far enough apart that
 * this is rare; boxes a user sends need not be). Kept inside the photo.
 */
function placeBadge(x, y, w, h, placed, bounds) {
  const inside = (spot) => ({
    ...spot,
    x: Math.min(Math.max(spot.x, 0), Math.max(0, bounds.width - w)),
    y: Math.min(Math.max(spot.y, 0), Math.max(0, bounds.height - h)),
  });
  const steps = [[0, 0], [0, 1], [0, -1], [1, 0], [-1, 0], [1, 1], [-1, 1], [1, -1], [-1, -1]];
  for (const reach of [1, 2]) {
    for (const [dx, dy] of steps) {
      const spot = inside({ x: x - w / 2 + reach * dx * w, y: y - h / 2 + reach * dy * h, w, h });
      if (!placed.some((p) => overlaps(p, spot))) {
        placed.push(spot);
        return spot;
      }
    }
  }
  const spot = inside({ x: x - w / 2, y: y - h / 2, w, h });
  placed.push(spot);
  return spot;
}

/**
 * A glimpse's badge at its centre: its order in bold and, once known, below it what it is
 * worth alone. Sizes follow the photo (`layout.unit` is 1% of its longer side), so they read
 * the same at any display size.
 */
function addBadge(glimpse, layout) {
  const worth = layout.worth.get(glimpse.order);
  const big = 3.4 * layout.unit;
  const small = 2.5 * layout.unit;
  const digits = String(glimpse.order).length;
  const rest = worth ? percent(worth.probability) : "";
  const w = Math.max(big * (0.62 * digits + 0.7), small * (0.6 * rest.length + 0.7));
  const h = big * 1.3 + (rest ? small * 1.2 : 0);
  const at = centre(glimpse.box_original);
  const spot = placeBadge(at.x, at.y, w, h, layout.placed, layout);
  const group = el("g", { class: "label", "data-order": glimpse.order });
  const r = 0.25 * big;
  group.append(el("rect", { x: spot.x, y: spot.y, width: w, height: h, rx: r, ry: r }));
  const middle = spot.x + w / 2;
  group.append(el("text", { class: "number", x: middle, y: spot.y + big * 1.02, "font-size": big },
    String(glimpse.order)));
  if (rest) {
    group.append(el("text", { class: "worth", x: middle, y: spot.y + big * 1.3 + small * 0.9,
      "font-size": small }, rest));
  }
  layout.labels.append(group);
}

/**
 * The outline of the union of `boxes`: the sides of the cells of the grid their edges make
 * that have a covered cell on one side only. One path, so overlapping strokes never darken.
 */
function unionOutline(boxes) {
  const xs = [...new Set(boxes.flatMap((b) => [b.xmin, b.xmax]))].sort((a, b) => a - b);
  const ys = [...new Set(boxes.flatMap((b) => [b.ymin, b.ymax]))].sort((a, b) => a - b);
  const holds = (b, i, j) =>
    b.xmin <= xs[i] && xs[i + 1] <= b.xmax && b.ymin <= ys[j] && ys[j + 1] <= b.ymax;
  const covered = (i, j) => i >= 0 && j >= 0 && i < xs.length - 1 && j < ys.length - 1 &&
    boxes.some((b) => holds(b, i, j));
  const parts = [];
  for (let i = 0; i < xs.length - 1; i += 1) {
    for (let j = 0; j < ys.length - 1; j += 1) {
      if (!covered(i, j)) continue;
      const [x0, x1, y0, y1] = [xs[i], xs[i + 1], ys[j], ys[j + 1]];
      if (!covered(i, j - 1)) parts.push(`M${x0} ${y0}H${x1}`);
      if (!covered(i, j + 1)) parts.push(`M${x0} ${y1}H${x1}`);
      if (!covered(i - 1, j)) parts.push(`M${x0} ${y0}V${y1}`);
      if (!covered(i + 1, j)) parts.push(`M${x1} ${y0}V${y1}`);
    }
  }
  return parts.join("");
}

/** A glimpse: its frame (shown while it is pointed at), the union's outline, its badge. */
function addGlimpse(glimpse, layout) {
  const group = el("g", { class: "glimpse", "data-order": glimpse.order });
  const box = rectAttrs(glimpse.box_original);
  group.append(el("rect", { class: "box-halo", ...box }), el("rect", { class: "box", ...box }));
  layout.frames.append(group);
  const outline = unionOutline(layout.drawn.map((g) => g.box_original));
  for (const path of layout.union.children) path.setAttribute("d", outline);
  addBadge(glimpse, layout);
}

/** Where a box is, in the photo's pixels, for the lists under it. */
function where(box) {
  return `at x ${Math.round(box.xmin)}–${Math.round(box.xmax)}, ` +
    `y ${Math.round(box.ymin)}–${Math.round(box.ymax)} px`;
}

function listItem(glimpse, worth) {
  const item = document.createElement("li");
  item.dataset.order = String(glimpse.order);
  const place = document.createElement("span");
  place.className = "where";
  place.textContent = `${wholePercent(glimpse.new_pixels)} new pixels, ${where(glimpse.box_original)}`;
  item.append(place);
  if (worth) {
    const value = document.createElement("span");
    value.className = "worth";
    value.textContent = `alone ${percent(worth.probability)}, without it ${percent(worth.without)}`;
    item.append("; ", value);
  }
  return item;
}

/**
 * Reset the overlay for a new prediction: the crop the model sees, a dimming layer with a
 * hole per glimpse (filled in as they appear), nothing else yet.
 */
function prepare(svg, prediction) {
  const [height, width] = prediction.preprocessing.original_size;
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const mask = el("mask", { id: "unseen", maskUnits: "userSpaceOnUse" });
  mask.append(el("rect", { x: 0, y: 0, width, height, fill: "white" }));
  const defs = el("defs");
  defs.append(mask);
  svg.append(defs, el("rect", { class: "dim", x: 0, y: 0, width, height, mask: "url(#unseen)" }));
  svg.append(el("rect", { class: "crop", ...rectAttrs(prediction.preprocessing.crop_box) }));
  const union = el("g", { class: "union" });
  union.append(el("path", { class: "union-halo" }), el("path", { class: "union-line" }));
  const frames = el("g", { class: "glimpses" });
  const labels = el("g", { class: "labels" }); // above every line: lines must not cross numbers
  svg.append(union, frames, labels);
  // The photo is drawn at the overlay's shape, as large as the page allows (demo.css).
  svg.parentElement?.style.setProperty("--aspect", String(width / height));
  return {
    mask, union, frames, labels, unit: unit(width, height), width, height, placed: [],
    drawn: [], worth: new Map(), list: null, active: null,
  };
}

const unit = (width, height) => Math.max(width, height) / 100;
const layouts = new WeakMap(); // svg -> the layout of the glimpses drawn in it

const reducedMotion = () => window.matchMedia("(prefers-reduced-motion: reduce)").matches;
const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/** Show glimpse `order`'s frame, and mark its badge and list item (null: none). */
function setActive(layout, order) {
  layout.active = order;
  const mark = (nodes) => {
    for (const node of nodes) node.classList.toggle("active", Number(node.dataset.order) === order);
  };
  mark(layout.frames.children);
  mark(layout.labels.children);
  if (layout.list) mark(layout.list.children);
}

/**
 * The glimpse under a point of the photo: of those holding it, the one whose centre is nearest,
 * so the one whose number is nearest too.
 */
function glimpseAt(layout, point) {
  let best = null;
  let bestDistance = Infinity;
  for (const g of layout.drawn) {
    const b = g.box_original;
    if (point.x < b.xmin || point.x > b.xmax || point.y < b.ymin || point.y > b.ymax) continue;
    const c = centre(b);
    const distance = Math.hypot(point.x - c.x, point.y - c.y);
    if (distance < bestDistance) [best, bestDistance] = [g.order, distance];
  }
  return best;
}

const following = new WeakSet(); // overlays whose pointer is followed already

/**
 * Follow the pointer over the photo and over the list, once per overlay. Listening on the
 * overlay's parent catches the pointer whether the photo or the drawing layer above it has it.
 */
function followPointer(svg, list) {
  if (following.has(svg)) return;
  following.add(svg);
  const frame = svg.parentElement;
  frame.addEventListener("pointermove", (event) => {
    const layout = layouts.get(svg);
    const ctm = svg.getScreenCTM();
    if (!layout || !ctm) return;
    const point = new DOMPoint(event.clientX, event.clientY).matrixTransform(ctm.inverse());
    const order = glimpseAt(layout, point);
    if (order !== layout.active) setActive(layout, order);
  });
  frame.addEventListener("pointerleave", () => {
    const layout = layouts.get(svg);
    if (layout) setActive(layout, null);
  });
  list.addEventListener("pointerover", (event) => {
    const layout = layouts.get(svg);
    const item = event.target.closest?.("li[data-order]");
    if (layout && item) setActive(layout, Number(item.dataset.order));
  });
  list.addEventListener("pointerleave", () => {
    const layout = layouts.get(svg);
    if (layout) setActive(layout, null);
  });
}

/**
 * Draw the glimpses in order into `svg` and `list`. `isCurrent()` turning false (a newer photo
 * was picked) stops the animation. Resolves to the number drawn.
 */
export async function drawGlimpses(svg, list, prediction, isCurrent) {
  const layout = prepare(svg, prediction);
  layout.list = list;
  layouts.set(svg, layout);
  followPointer(svg, list);
  list.replaceChildren();
  const glimpses = [...prediction.glimpses].sort((a, b) => a.order - b.order);
  const delay = reducedMotion() ? 0 : STEP_MS;
  for (const glimpse of glimpses) {
    if (layout.drawn.length > 0 && delay) await sleep(delay);
    if (!isCurrent()) return layout.drawn.length;
    layout.mask.append(el("rect", { fill: "black", ...rectAttrs(glimpse.box_original) }));
    layout.drawn.push(glimpse);
    addGlimpse(glimpse, layout);
    list.append(listItem(glimpse));
  }
  return layout.drawn.length;
}

/**
 * Add what each drawn glimpse is worth to its label and list item. `glimpses` are the :explain
 * answer's (`attributions_by_label[0].glimpses`): {order, probability, without, ...}.
 */
export function showWorth(svg, list, glimpses) {
  const layout = layouts.get(svg);
  if (!layout) return;
  for (const g of glimpses) layout.worth.set(g.order, g);
  layout.placed = [];
  layout.labels.replaceChildren();
  for (const glimpse of layout.drawn) addBadge(glimpse, layout);
  list.replaceChildren(...layout.drawn.map((g) => listItem(g, layout.worth.get(g.order))));
  setActive(layout, layout.active);
}

export { classLabel, el, label, percent, rectAttrs, unit, where };
