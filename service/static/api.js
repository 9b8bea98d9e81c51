// Calls to the gateway's public API. Every failure becomes an ApiError carrying the HTTP status
// and the gateway's own message ({"error": ...}), so the page can show it instead of guessing.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status; // 0 when the gateway could not be reached at all
  }

  describe() {
    return this.status ? `${this.message} (HTTP ${this.status})` : this.message;
  }
}

const path = (model, verb) => `/v1/models/${encodeURIComponent(model)}:${verb}`;

async function request(url, init) {
  let response;
  try {
    response = await fetch(url, { ...init, cache: "no-store", credentials: "same-origin" });
  } catch (err) {
    throw new ApiError(0, `Could not reach the gateway: ${err.message}`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = JSON.parse(text);
  } catch {
    // Not JSON: a proxy's error page, say. Its text is still the best message there is.
  }
  if (!response.ok) {
    // TF Serving's routes answer {"error": "..."}, Google's a google.rpc.Status.
    const given = data && (typeof data.error === "string" ? data.error : data.error?.message);
    const message = typeof given === "string" && given
      ? given
      : (text.trim().slice(0, 300) || response.statusText || "request failed");
    throw new ApiError(response.status, message);
  }
  if (data === null) {
    throw new ApiError(response.status, "The gateway answered with something that is not JSON");
  }
  return data;
}

export function loadConfig() {
  return request("/demo/config.json", { method: "GET" });
}

function post(url, body, token) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  return request(url, { method: "POST", headers, body: JSON.stringify(body) });
}

/**
 * One photo through :predict; resolves to its prediction (service/schemas.py Prediction).
 * With `parameters.glimpse_boxes` (view pixels) the model decides from exactly those boxes.
 */
export async function predict(model, b64, parameters, token) {
  const body = {
    instances: [{ input_image_bytes: { b64 }, key: "demo" }],
    // The page draws the glimpses itself over the user's photo: no annotated image needed.
    parameters: { ...parameters, annotated_image: false, original_pixels: true },
  };
  const data = await post(path(model, "predict"), body, token);
  return data.predictions[0];
}

/**
 * One photo through :explain with a method (and any other `parameters`); resolves to its
 * explanation (explanations[0]).
 */
export async function explain(model, b64, method, token, parameters = {}) {
  const body = { instances: [{ input_image_bytes: { b64 } }], parameters: { ...parameters, method } };
  const data = await post(path(model, "explain"), body, token);
  if (!Array.isArray(data.explanations) || data.explanations.length === 0) {
    throw new ApiError(200, "The explain API answered without explanations");
  }
  return data.explanations[0];
}
