// The demo page: pick or drop a photo, classify it, draw the glimpses, show errors as they come.

import { ApiError, explain, loadConfig, predict } from "./api.js";
import { setUpExplain } from "./explain.js";
import { classLabel, drawGlimpses, percent, showWorth } from "./glimpses.js";
import { setUpOwnGlimpses } from "./own.js";
import { preparePhoto } from "./photo.js";

const $ = (id) => document.getElementById(id);
const ui = {
  form: $("predict-form"), drop: $("drop"), file: $("photo"),
  tokenRow: $("token-row"), token: $("token"), modelRow: $("model-row"), model: $("model"),
  numGlimpses: $("num-glimpses"), topK: $("top-k"),
  status: $("status"), error: $("error"),
  result: $("result"), topClass: $("top-class"), topScore: $("top-score"),
  coverage: $("coverage"), fullImage: $("full-image"), converted: $("converted"),
  view: $("photo-view"), overlay: $("overlay"), glimpses: $("glimpse-list"), topKList: $("top-k-list"),
  worthNote: $("worth-note"),
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

function showTopK(list, classes) {
  list.replaceChildren(...classes.map((c) => {
    const item = document.createElement("li");
    const meter = document.createElement("meter");
    Object.assign(meter, { min: 0, max: 1, value: c.score });
    meter.setAttribute("aria-hidden", "true");
    item.append(`${classLabel(c)} ${percent(c.score)} `, meter);
    return item;
  }));
}

const describe = (err) => (err instanceof ApiError ? err.describe() : err.message);

/**
 * What each glimpse is worth on its own: :explain with method `glimpses` re-runs the model on
 * each glimpse alone and on all the others without it. Asked as soon as the prediction is in,
 * shown once the glimpses are drawn; a failure is a note, not an error: the prediction stands.
 */
function askWorth(prediction) {
  const parameters = {
    faithfulness: false,
    num_glimpses: prediction.glimpses.length,
    label_index: prediction.top_class.index,
  };
  return explain(config.model, photo.b64, "glimpses", token(), parameters).then((explanation) => {
    const entry = explanation.attributions_by_label?.[0];
    if (!entry || !Array.isArray(entry.glimpses)) {
      throw new Error("the explain API answered without glimpses");
    }
    return entry;
  });
}

async function showWorthWhenDrawn(worth, current) {
  ui.result.dataset.worth = "waiting";
  ui.worthNote.textContent = "Working out what each glimpse is worth on its own…";
  try {
    const entry = await worth;
    if (!current()) return;
    showWorth(ui.overlay, ui.glimpses, entry.glimpses);
    ui.worthNote.textContent = "Alone: the class's probability from that glimpse's pixels only. " +
      "Without it: from all the other glimpses. The numbers on the photo give the first.";
    ui.result.dataset.worth = "done";
  } catch (err) {
    if (!current()) return;
    ui.worthNote.textContent = `Could not work out what each glimpse is worth on its own: ${describe(err)}`;
    ui.result.dataset.worth = "error";
  }
}

async function show(prediction, current) {
  const top = prediction.top_class;
  const name = classLabel(top);
  ui.topClass.textContent = name;
  ui.topScore.textContent = percent(top.score);
  ui.coverage.textContent = percent(prediction.coverage);
  const full = prediction.full_image;
  ui.fullImage.textContent = `${classLabel(full)} (${percent(full.score)})`;
  const notes = [];
  if (photo.scaled) notes.push("The photo was over the gateway's size limit, so a smaller copy was sent.");
  if (prediction.preprocessing.converted_from) {
    notes.push(`The gateway converted it from ${prediction.preprocessing.converted_from}.`);
  }
  ui.converted.textContent = notes.join(" ");
  ui.converted.hidden = notes.length === 0;
  showTopK(ui.topKList, prediction.top_k);
  own.reset();
  const worth = askWorth(prediction);
  worth.catch(() => {}); // handled once the glimpses are drawn; never an unhandled rejection
  ui.result.dataset.state = "drawing";
  ui.result.hidden = false;
  ui.view.alt = `Your photo, with the ${prediction.glimpses.length} glimpses the model took outlined`;
  const drawn = await drawGlimpses(ui.overlay, ui.glimpses, prediction, current);
  if (!current()) return;
  ui.result.dataset.state = "done";
  ui.status.textContent = `${name}, ${percent(top.score)}, from ${drawn} glimpses.`;
  own.start(prediction, current);
  showWorthWhenDrawn(worth, current); // not awaited: the form is free again meanwhile
}

async function classify() {
  if (!photo) {
    showError("Choose a photo first.");
    ui.file.focus();
    return;
  }
  const mine = ++run;
  const current = () => mine === run;
  const parameters = { num_glimpses: clamp(ui.numGlimpses) };
  // Left at its default, top_k is the model's own (5, or every class of a model of fewer).
  const topK = clamp(ui.topK);
  if (ui.topK.value !== ui.topK.defaultValue) parameters.top_k = topK;
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
    const message = err instanceof ApiError ? describe(err) : `Unexpected error: ${err.message}`;
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
  own.reset();
  ui.result.hidden = true;
  ui.overlay.replaceChildren();
  ui.glimpses.replaceChildren();
  ui.worthNote.textContent = "";
  delete ui.result.dataset.worth;
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

const own = setUpOwnGlimpses({
  ui: {
    section: $("own"), title: $("own-title"), list: $("own-list"), empty: $("own-empty"),
    ask: $("own-ask"), clear: $("own-clear"), restore: $("own-restore"),
    status: $("own-status"), error: $("own-error"), answer: $("own-answer"), stale: $("own-stale"),
    count: $("own-count"), topClass: $("own-class"), topScore: $("own-score"), topK: $("own-top-k"),
  },
  overlay: ui.overlay,
  context: () => (photo ? { model: config.model, b64: photo.b64, token: token() } : null),
  renderTopK: showTopK,
  onUnauthorized: () => askForToken(true),
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

// The gateway serves several models: the page asks the one picked (the default first).
function offerModels(models) {
  ui.model.replaceChildren(...models.map((name) => new Option(name, name, false, name === config.model)));
  ui.modelRow.hidden = models.length < 2;
}

ui.model.addEventListener("change", () => {
  config = { ...config, model: ui.model.value };
  if (photo) ui.form.requestSubmit();
});

loadConfig().then((loaded) => {
  config = loaded;
  offerModels(config.models || [config.model]);
  if (config.auth_required) askForToken(false);
  document.body.dataset.ready = "true";
}).catch((err) => {
  showError(`Could not read the demo's settings: ${describe(err)}`);
  document.body.dataset.ready = "true";
});
