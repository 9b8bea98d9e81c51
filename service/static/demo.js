// The demo page: pick or drop a photo, classify it, draw the glimpses, show errors as they come.

import { ApiError, loadConfig, predict } from "./api.js";
import { setUpExplain } from "./explain.js";
import { drawGlimpses, percent } from "./glimpses.js";
import { preparePhoto } from "./photo.js";

const $ = (id) => document.getElementById(id);
const ui = {
  form: $("predict-form"), drop: $("drop"), file: $("photo"),
  tokenRow: $("token-row"), token: $("token"),
  numGlimpses: $("num-glimpses"), topK: $("top-k"),
  status: $("status"), error: $("error"),
  result: $("result"), topClass: $("top-class"), topScore: $("top-score"),
  coverage: $("coverage"), fullImage: $("full-image"), converted: $("converted"),
  view: $("photo-view"), overlay: $("overlay"), glimpses: $("glimpse-list"), topKList: $("top-k-list"),
};

// Fallbacks until /demo/config.json answers: the gateway's defaults.
let config = { model: "saccader", auth_required: false, max_payload_bytes: 1_500_000 };
let photo = null; // {url, b64, scaled, name} of the photo on show
let run = 0; // bumped per request, so a slow answer for an older photo is dropped

function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = !text;
}

function askForToken(focus) {
  ui.tokenRow.hidden = false;
  if (focus) ui.token.focus();
}

const token = () => ui.token.value.trim() || null;

function clamp(input) {
  const { min, max } = input;
  const value = input.value.trim() === "" ? NaN : Math.round(Number(input.value));
  const fixed = Number.isFinite(value) ? Math.min(Number(max), Math.max(Number(min), value))
    : Number(input.defaultValue);
  input.value = String(fixed);
  return fixed;
}

function showTopK(prediction) {
  ui.topKList.replaceChildren(...prediction.top_k.map((c) => {
    const item = document.createElement("li");
    const meter = document.createElement("meter");
    Object.assign(meter, { min: 0, max: 1, value: c.score });
    meter.setAttribute("aria-hidden", "true");
    item.append(`${c.label} ${percent(c.score)} `, meter);
    return item;
  }));
}

async function show(prediction, current) {
  const top = prediction.top_class;
  ui.topClass.textContent = top.label;
  ui.topScore.textContent = percent(top.score);
  ui.coverage.textContent = percent(prediction.coverage);
  ui.fullImage.textContent = `${prediction.full_image.label} (${percent(prediction.full_image.score)})`;
  const notes = [];
  if (photo.scaled) notes.push("The photo was over the gateway's size limit, so a smaller copy was sent.");
  if (prediction.preprocessing.converted_from) {
    notes.push(`The gateway converted it from ${prediction.preprocessing.converted_from}.`);
  }
  ui.converted.textContent = notes.join(" ");
  ui.converted.hidden = notes.length === 0;
  showTopK(prediction);
  ui.result.dataset.state = "drawing";
  ui.result.hidden = false;
  ui.view.alt = `Your photo, with the ${prediction.glimpses.length} glimpses the model took outlined`;
  const drawn = await drawGlimpses(ui.overlay, ui.glimpses, prediction, current);
  if (!current()) return;
  ui.result.dataset.state = "done";
  ui.status.textContent = `${top.label}, ${percent(top.score)}, from ${drawn} glimpses.`;
}

async function classify() {
  if (!photo) {
    showError("Choose a photo first.");
    ui.file.focus();
    return;
  }
  const mine = ++run;
  const current = () => mine === run;
  const parameters = { num_glimpses: clamp(ui.numGlimpses), top_k: clamp(ui.topK) };
  showError("");
  ui.result.dataset.state = "waiting";
  ui.status.textContent = `Classifying ${photo.name}…`;
  ui.form.setAttribute("aria-busy", "true");
  try {
    const prediction = await predict(config.model, photo.b64, parameters, token());
    if (current()) await show(prediction, current);
  } catch (err) {
    if (!current()) return;
    ui.status.textContent = "";
    ui.result.dataset.state = "error";
    const message = err instanceof ApiError ? err.describe() : `Unexpected error: ${err.message}`;
    showError(message);
    if (err instanceof ApiError && err.status === 401) askForToken(true);
  } finally {
    if (current()) ui.form.removeAttribute("aria-busy");
  }
}

async function choose(file) {
  if (!file) return;
  run += 1; // whatever is still drawing belongs to the previous photo
  if (photo) URL.revokeObjectURL(photo.url);
  explainPanel.reset();
  ui.result.hidden = true;
  ui.overlay.replaceChildren();
  ui.glimpses.replaceChildren();
  photo = null;
  try {
    photo = { ...(await preparePhoto(file, config.max_payload_bytes)), name: file.name };
  } catch (err) {
    showError(`Could not read ${file.name}: ${err.message}`);
    return;
  }
  ui.view.classList.toggle("upright", photo.scaled);
  ui.view.src = photo.url;
  await classify();
}

const explainPanel = setUpExplain({
  buttons: document.querySelectorAll(".methods button"),
  compare: $("compare"),
  status: $("explain-status"),
  error: $("explain-error"),
  context: () => (photo ? { model: config.model, b64: photo.b64, token: token() } : null),
});

ui.file.addEventListener("change", () => choose(ui.file.files[0]));
ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  classify();
});

// Drag and drop is a shortcut only: the file input does the same with a keyboard.
ui.drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  ui.drop.classList.add("over");
});
ui.drop.addEventListener("dragleave", () => ui.drop.classList.remove("over"));
ui.drop.addEventListener("drop", (event) => {
  event.preventDefault();
  ui.drop.classList.remove("over");
  choose(event.dataTransfer.files[0]);
});

loadConfig().then((loaded) => {
  config = loaded;
  if (config.auth_required) askForToken(false);
  document.body.dataset.ready = "true";
}).catch((err) => {
  showError(`Could not read the demo's settings: ${err instanceof ApiError ? err.describe() : err.message}`);
  document.body.dataset.ready = "true";
});
