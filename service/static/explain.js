// The "compare with other explanations" panel: one figure per method, beside the glimpses.
//
// Each figure comes from POST :explain. Its response follows AI Platform's legacy shape, where
// the rendered overlay sits somewhere inside `attributions_by_label[].attributions` as
// {"b64_jpeg": ...}; the image is looked for rather than read from one fixed path, so the
// panel keeps working as the explain API adds fields around it.

import { ApiError, explain } from "./api.js";

const MAX_DEPTH = 6;

function findImage(value, depth = 0) {
  if (!value || typeof value !== "object" || depth > MAX_DEPTH) return null;
  if (typeof value.b64_jpeg === "string") return `data:image/jpeg;base64,${value.b64_jpeg}`;
  if (typeof value.b64_png === "string") return `data:image/png;base64,${value.b64_png}`;
  for (const child of Object.values(value)) {
    const found = findImage(child, depth + 1);
    if (found) return found;
  }
  return null;
}

function figureFor(compare, method, name) {
  let figure = compare.querySelector(`figure[data-method="${method}"]`);
  if (!figure) {
    figure = document.createElement("figure");
    figure.className = "view explanation";
    figure.dataset.method = method;
    // After the figures there already, so the first one is beside the photo's glimpses and
    // the lists move down, rather than below the lists, out of sight.
    const figures = compare.querySelectorAll(":scope > figure");
    figures[figures.length - 1].after(figure);
  }
  const img = document.createElement("img");
  img.alt = `${name} explanation of the same photo`;
  const caption = document.createElement("figcaption");
  caption.textContent = name;
  figure.replaceChildren(img, caption);
  return { figure, img, caption };
}

/**
 * Wire the method buttons. `context()` gives {model, b64, token} for the photo on show, or
 * null when there is none yet.
 */
export function setUpExplain({ buttons, compare, status, error, context }) {
  const showError = (text) => {
    error.textContent = text;
    error.hidden = !text;
  };

  async function run(button) {
    const ctx = context();
    if (!ctx) return;
    const { method } = button.dataset;
    const name = button.textContent.trim();
    showError("");
    button.disabled = true;
    status.textContent = `Computing ${name}…`;
    try {
      const explanation = await explain(ctx.model, ctx.b64, method, ctx.token);
      const source = findImage(explanation);
      if (!source) throw new ApiError(200, `The ${name} answer holds no image to show`);
      const { img } = figureFor(compare, method, name);
      img.src = source;
      status.textContent = `${name} is shown beside the glimpses.`;
    } catch (err) {
      status.textContent = "";
      // 404, or 405 where the path falls through to GET /v1/models/{model}: no explain route.
      if (err instanceof ApiError && (err.status === 404 || err.status === 405)) {
        showError(`${name} is not available: this gateway has no explain API yet ` +
          `(${err.describe()}).`);
      } else {
        showError(`${name} failed: ${err instanceof ApiError ? err.describe() : err.message}`);
      }
    } finally {
      button.disabled = false;
    }
  }

  for (const button of buttons) button.addEventListener("click", () => run(button));

  return {
    /** Forget the figures of the previous photo. */
    reset() {
      compare.querySelectorAll("figure.explanation").forEach((f) => f.remove());
      status.textContent = "";
      showError("");
    },
  };
}
