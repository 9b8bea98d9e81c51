// Draw a prediction's glimpses over the user's photo, one after another, in an SVG overlay.
//
// The overlay's viewBox is the photo's size as the gateway decoded it
// (preprocessing.original_size), so `box_original` boxes are used as they come, at the
// photo's own resolution, whatever size the photo is displayed at.

const SVG = "http://www.w3.org/2000/svg";
const STEP_MS = 450;

const percent = (x) => `${(100 * x).toFixed(1)}%`;

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
 * Where a glimpse's label goes: its box's top-left corner, moved down (then right) past the
 * labels already placed, because glimpses often overlap and stacked labels would be unreadable.
 */
function placeLabel(box, w, h, placed, bounds) {
  const spot = { x: box.xmin, y: box.ymin, w, h };
  for (let tries = 0; tries < 64 && placed.some((p) => overlaps(p, spot)); tries += 1) {
    spot.y += h;
    if (spot.y + h > bounds.height) {
      spot.y = box.ymin;
      spot.x += w;
    }
  }
  placed.push(spot);
  return spot;
}

/** The glimpse's outline, into the boxes layer, and its label, into the layer above it all. */
function addGlimpse(glimpse, layout) {
  const box = glimpse.box_original;
  const group = el("g", { class: "glimpse", "data-order": glimpse.order });
  group.append(el("rect", { class: "box", ...rectAttrs(box) }));
  layout.boxes.append(group);
  const size = 3 * layout.unit;
  const score = percent(glimpse.score);
  // Width from the character count: the text is short and mostly digits (tabular figures).
  const w = size * (0.62 * (String(glimpse.order).length + score.length + 1) + 0.6);
  const spot = placeLabel(box, w, size * 1.35, layout.placed, layout);
  const label = el("g", { class: "label", "data-order": glimpse.order });
  label.append(el("rect", { x: spot.x, y: spot.y, width: spot.w, height: spot.h }));
  const text = el("text", { x: spot.x + size * 0.3, y: spot.y + size * 1.05, "font-size": size });
  text.append(el("tspan", { class: "number" }, String(glimpse.order)), ` ${score}`);
  label.append(text);
  layout.labels.append(label);
}

function listItem(glimpse) {
  const item = document.createElement("li");
  const b = glimpse.box_original;
  item.textContent = `score ${percent(glimpse.score)}, at x ${Math.round(b.xmin)}–` +
    `${Math.round(b.xmax)}, y ${Math.round(b.ymin)}–${Math.round(b.ymax)} px`;
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
  const boxes = el("g");
  const labels = el("g"); // above every box: later outlines must not cross earlier labels
  svg.append(boxes, labels);
  return { mask, boxes, labels, unit: Math.max(width, height) / 100, width, height, placed: [] };
}

const reducedMotion = () => window.matchMedia("(prefers-reduced-motion: reduce)").matches;
const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/**
 * Draw the glimpses in order into `svg` and `list`. `isCurrent()` turning false (a newer photo
 * was picked) stops the animation. Resolves to the number drawn.
 */
export async function drawGlimpses(svg, list, prediction, isCurrent) {
  const layout = prepare(svg, prediction);
  list.replaceChildren();
  const glimpses = [...prediction.glimpses].sort((a, b) => a.order - b.order);
  const delay = reducedMotion() ? 0 : STEP_MS;
  let drawn = 0;
  for (const glimpse of glimpses) {
    if (drawn > 0 && delay) await sleep(delay);
    if (!isCurrent()) return drawn;
    layout.mask.append(el("rect", { fill: "black", ...rectAttrs(glimpse.box_original) }));
    addGlimpse(glimpse, layout);
    list.append(listItem(glimpse));
    drawn += 1;
  }
  return drawn;
}

export { percent };
