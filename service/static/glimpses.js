// Draw a prediction's glimpses over the user's photo, one after another, in an SVG overlay.
//
// The overlay's viewBox is the photo's size as the gateway decoded it
// (preprocessing.original_size), so `box_original` boxes are used as they come, at the
// photo's own resolution, whatever size the photo is displayed at.
//
// What each glimpse is worth (the :explain API's `glimpses` method: the class's probability
// from its pixels alone, and from all the others without it) comes later, and is added to the
// labels and the list by showWorth().

const SVG = "http://www.w3.org/2000/svg";
const STEP_MS = 450;

const percent = (x) => `${(100 * x).toFixed(1)}%`;
const wholePercent = (x) => `${Math.round(100 * x)}%`;

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

/** A glimpse's label: its order, and what it is worth alone once that is known. */
function addLabel(glimpse, layout) {
  const worth = layout.worth.get(glimpse.order);
  const box = glimpse.box_original;
  layout.labels.append(label("label", glimpse.order, worth ? percent(worth.probability) : "",
    box.xmin, box.ymin, layout, 1, 1));
}

/** The glimpse's outline, into the boxes layer, and its label, into the layer above it all. */
function addGlimpse(glimpse, layout) {
  const group = el("g", { class: "glimpse", "data-order": glimpse.order });
  group.append(el("rect", { class: "box", ...rectAttrs(glimpse.box_original) }));
  layout.boxes.append(group);
  addLabel(glimpse, layout);
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
  const boxes = el("g", { class: "glimpses" });
  const labels = el("g", { class: "labels" }); // above every box: outlines must not cross labels
  svg.append(boxes, labels);
  return {
    mask, boxes, labels, unit: unit(width, height), width, height, placed: [],
    drawn: [], worth: new Map(),
  };
}

const unit = (width, height) => Math.max(width, height) / 100;
const layouts = new WeakMap(); // svg -> the layout of the glimpses drawn in it

const reducedMotion = () => window.matchMedia("(prefers-reduced-motion: reduce)").matches;
const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/**
 * Draw the glimpses in order into `svg` and `list`. `isCurrent()` turning false (a newer photo
 * was picked) stops the animation. Resolves to the number drawn.
 */
export async function drawGlimpses(svg, list, prediction, isCurrent) {
  const layout = prepare(svg, prediction);
  layouts.set(svg, layout);
  list.replaceChildren();
  const glimpses = [...prediction.glimpses].sort((a, b) => a.order - b.order);
  const delay = reducedMotion() ? 0 : STEP_MS;
  for (const glimpse of glimpses) {
    if (layout.drawn.length > 0 && delay) await sleep(delay);
    if (!isCurrent()) return layout.drawn.length;
    layout.mask.append(el("rect", { fill: "black", ...rectAttrs(glimpse.box_original) }));
    addGlimpse(glimpse, layout);
    list.append(listItem(glimpse));
    layout.drawn.push(glimpse);
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
  for (const glimpse of layout.drawn) addLabel(glimpse, layout);
  list.replaceChildren(...layout.drawn.map((g) => listItem(g, layout.worth.get(g.order))));
}

export { el, label, percent, rectAttrs, unit, where };
