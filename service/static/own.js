// "Try your own glimpses": the auditor's counterfactual. What does the model see from here only?
//
// The section starts with the model's own glimpses as an editable list of boxes. Each can be
// removed (a button per box, so a keyboard does it too); new boxes are drawn by dragging on the
// photo (pointer events: mouse, pen and touch), in a layer of the overlay SVG above the model's
// glimpses. "Ask the model" sends :predict with `glimpse_boxes`, and the model decides from
// exactly those pixels.
//
// Boxes are kept in pixels of the 224x224 view the model classifies (what the API takes); the
// overlay draws in the photo's own pixels (its viewBox), and preprocessing.crop_box is the square
// of the photo that becomes the view: view px = (photo px - crop.min) * 224 / crop side.

import { ApiError, predict } from "./api.js";
import { classLabel, el, label, percent, rectAttrs, unit, where } from "./glimpses.js";

const VIEW = 224;
const MAX_BOXES = 16; // the most the model takes (parameters.glimpse_boxes)
const MIN_SIDE = 1; // view pixels: the API refuses anything thinner

const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));

/** A box in view pixels -> the same box in photo pixels. */
function toPhoto(v, crop) {
  const sy = (crop.ymax - crop.ymin) / VIEW;
  const sx = (crop.xmax - crop.xmin) / VIEW;
  return {
    ymin: crop.ymin + v.ymin * sy, xmin: crop.xmin + v.xmin * sx,
    ymax: crop.ymin + v.ymax * sy, xmax: crop.xmin + v.xmax * sx,
  };
}

/** A box in photo pixels (already inside the crop) -> view pixels, within 0..224. */
function toView(p, crop) {
  const sy = VIEW / (crop.ymax - crop.ymin);
  const sx = VIEW / (crop.xmax - crop.xmin);
  const y = (v) => clamp((v - crop.ymin) * sy, 0, VIEW);
  const x = (v) => clamp((v - crop.xmin) * sx, 0, VIEW);
  return { ymin: y(p.ymin), xmin: x(p.xmin), ymax: y(p.ymax), xmax: x(p.xmax) };
}

/** The box two photo points span, clipped to the crop (the model sees nothing outside it). */
function spanned(a, b, crop) {
  return {
    ymin: clamp(Math.min(a.y, b.y), crop.ymin, crop.ymax),
    xmin: clamp(Math.min(a.x, b.x), crop.xmin, crop.xmax),
    ymax: clamp(Math.max(a.y, b.y), crop.ymin, crop.ymax),
    xmax: clamp(Math.max(a.x, b.x), crop.xmin, crop.xmax),
  };
}

const boxes = (n) => (n === 1 ? "this 1 box" : `these ${n} boxes`);

/**
 * Wire the section. `ui` holds its elements; `context()` gives {model, b64, token} for the
 * photo on show (or null); `renderTopK(list, classes)` fills a list of classes as the page's
 * own; `onUnauthorized()` is called on a 401.
 */
export function setUpOwnGlimpses({ ui, overlay, context, renderTopK, onUnauthorized }) {
  let state = null; // {crop, width, height, topK, boxes: [{view, source}], isCurrent, layer...}
  let asked = 0; // bumped per question, so an answer for older boxes is dropped
  let drag = null; // {pointerId, start, draft}

  const say = (text) => { ui.status.textContent = text; };
  const showError = (text) => {
    ui.error.textContent = text;
    ui.error.hidden = !text;
  };

  // The user's boxes are drawn once they differ from the model's glimpses (drawn already) or
  // once the model was asked about them; the model's own glimpses then fade behind them.
  const showMine = () => overlay.classList.add("mine");

  function markStale() {
    if (!ui.answer.hidden) ui.stale.hidden = false;
  }

  function edited() {
    showMine();
    markStale();
    render();
  }

  function removeBox(index) {
    const removed = state.boxes.splice(index, 1)[0];
    edited();
    say(`Removed ${removed.source ? `the model's glimpse ${removed.source}` : "your box"}; ` +
      `${state.boxes.length} left.`);
    // Keep the keyboard where it was: on the next box's button, the previous one, or the title.
    const buttons = ui.list.querySelectorAll("button");
    (buttons[Math.min(index, buttons.length - 1)] || ui.title).focus();
  }

  function listItem(box, index) {
    const item = document.createElement("li");
    item.dataset.index = String(index + 1);
    const text = document.createElement("span");
    const who = box.source ? `The model's glimpse ${box.source}` : "Your box";
    text.textContent = `${who}, ${where(toPhoto(box.view, state.crop))}`;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = `Remove glimpse ${index + 1}`;
    remove.addEventListener("click", () => removeBox(index));
    const row = document.createElement("div");
    row.className = "own-item";
    row.append(text, " ", remove);
    item.append(row);
    return item;
  }

  /** The list, the buttons and the boxes on the photo, from state.boxes. */
  function render() {
    const n = state.boxes.length;
    ui.list.replaceChildren(...state.boxes.map(listItem));
    ui.empty.hidden = n > 0;
    ui.ask.disabled = n === 0;
    ui.section.dataset.boxes = String(n);
    const layout = { unit: unit(state.width, state.height), height: state.height, placed: [] };
    state.outlines.replaceChildren(...state.boxes.map((box, i) => {
      const photo = toPhoto(box.view, state.crop);
      const group = el("g", { class: "own-box", "data-index": i + 1 });
      group.append(el("rect", { class: "own-outline", ...rectAttrs(photo) }));
      group.append(label("own-label", i + 1, "", photo.xmax, photo.ymax, layout, -1, -1));
      return group;
    }));
  }

  // Drawing: pointer positions -> the overlay's user space (photo pixels) through its CTM.
  function photoPoint(event) {
    const ctm = overlay.getScreenCTM();
    if (!ctm) return null;
    return new DOMPoint(event.clientX, event.clientY).matrixTransform(ctm.inverse());
  }

  function limitReached() {
    say(`${MAX_BOXES} boxes is the most the model takes: remove one to draw another.`);
  }

  function onDown(event) {
    if (!state || drag || (event.pointerType === "mouse" && event.button !== 0)) return;
    event.preventDefault();
    if (state.boxes.length >= MAX_BOXES) {
      limitReached();
      return;
    }
    const start = photoPoint(event);
    if (!start) return;
    const draft = el("rect", { class: "own-draft", x: start.x, y: start.y, width: 0, height: 0 });
    state.layer.append(draft);
    drag = { pointerId: event.pointerId, start, draft };
    event.currentTarget.setPointerCapture(event.pointerId);
  }

  function onMove(event) {
    if (!drag || event.pointerId !== drag.pointerId) return;
    const point = photoPoint(event);
    if (!point) return;
    for (const [key, value] of Object.entries(rectAttrs(spanned(drag.start, point, state.crop)))) {
      drag.draft.setAttribute(key, String(value));
    }
  }

  function onUp(event) {
    if (!drag || event.pointerId !== drag.pointerId) return;
    const { start, draft } = drag;
    drag = null;
    draft.remove();
    const end = photoPoint(event);
    if (!end) return;
    const view = toView(spanned(start, end, state.crop), state.crop);
    if (view.ymax - view.ymin < MIN_SIDE || view.xmax - view.xmin < MIN_SIDE) {
      say("Drag across the photo, inside the dashed square the model sees, to draw a box.");
      return;
    }
    state.boxes.push({ view, source: null });
    edited();
    const n = state.boxes.length;
    if (n >= MAX_BOXES) limitReached();
    else say(`Box ${n} added.`);
  }

  function onCancel(event) {
    if (!drag || event.pointerId !== drag.pointerId) return;
    drag.draft.remove();
    drag = null;
  }

  async function ask() {
    const ctx = context();
    if (!state || !ctx || state.boxes.length === 0) return;
    const mine = ++asked;
    const { isCurrent } = state;
    const live = () => mine === asked && isCurrent();
    const sent = state.boxes.map(({ view: v }) => [v.ymin, v.xmin, v.ymax, v.xmax]);
    showError("");
    ui.section.dataset.state = "asking";
    ui.section.setAttribute("aria-busy", "true");
    say(`Asking the model about ${boxes(sent.length)}…`);
    try {
      const parameters = { glimpse_boxes: sent, top_k: state.topK };
      const answer = await predict(ctx.model, ctx.b64, parameters, ctx.token);
      if (!live()) return;
      const top = answer.top_class;
      ui.count.textContent = `From ${boxes(sent.length)} alone:`;
      ui.topClass.textContent = classLabel(top);
      ui.topScore.textContent = percent(top.score);
      renderTopK(ui.topK, answer.top_k);
      ui.answer.hidden = false;
      ui.stale.hidden = true;
      showMine();
      ui.section.dataset.state = "done";
      say(`From ${boxes(sent.length)} alone: ${classLabel(top)}, ${percent(top.score)}.`);
    } catch (err) {
      if (!live()) return;
      say("");
      ui.section.dataset.state = "error";
      showError(err instanceof ApiError ? err.describe() : `Unexpected error: ${err.message}`);
      if (err instanceof ApiError && err.status === 401) onUnauthorized();
    } finally {
      if (mine === asked) ui.section.removeAttribute("aria-busy");
    }
  }

  function useModels() {
    state.boxes = state.glimpses.map((g) => ({ view: { ...g.box }, source: g.order }));
    overlay.classList.remove("mine");
    markStale();
    render();
  }

  ui.ask.addEventListener("click", ask);
  ui.clear.addEventListener("click", () => {
    if (!state) return;
    state.boxes = [];
    edited();
    say("No boxes left: drag on the photo to draw new ones.");
  });
  ui.restore.addEventListener("click", () => {
    if (!state) return;
    useModels();
    say(`Back to the model's ${state.boxes.length} glimpses.`);
  });

  function reset() {
    asked += 1; // an answer still on its way is for boxes no longer on show
    drag = null;
    if (state) state.layer.remove();
    state = null;
    overlay.classList.remove("mine", "drawable");
    ui.section.hidden = true;
    ui.section.removeAttribute("aria-busy");
    delete ui.section.dataset.state;
    ui.list.replaceChildren();
    ui.answer.hidden = true;
    ui.stale.hidden = true;
    ui.topK.replaceChildren();
    say("");
    showError("");
  }

  return {
    reset,

    /**
     * Start from `prediction`'s glimpses, drawn in `overlay` already (call it once they are:
     * the drawing layer goes above them). `isCurrent()` false drops answers for this photo.
     */
    start(prediction, isCurrent) {
      reset();
      const [height, width] = prediction.preprocessing.original_size;
      const layer = el("g", { class: "own-layer" });
      // The whole photo takes pointers, so a drag may start outside the crop; it is clipped.
      const surface = el("rect", { class: "own-surface", x: 0, y: 0, width, height });
      const outlines = el("g", { class: "own-boxes" });
      layer.append(surface, outlines);
      surface.addEventListener("pointerdown", onDown);
      surface.addEventListener("pointermove", onMove);
      surface.addEventListener("pointerup", onUp);
      surface.addEventListener("pointercancel", onCancel);
      surface.addEventListener("lostpointercapture", onCancel);
      overlay.append(layer);
      overlay.classList.add("drawable");
      state = {
        crop: prediction.preprocessing.crop_box, width, height, layer, outlines, isCurrent,
        topK: prediction.top_k.length,
        glimpses: [...prediction.glimpses].sort((a, b) => a.order - b.order),
        boxes: [],
      };
      useModels();
      ui.section.hidden = false;
    },
  };
}
