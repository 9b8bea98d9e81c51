// Turn the user's file into the base64 the API takes, and keep a local URL to show it.
//
// The file's own bytes are sent when they fit in the gateway's body limit, so the model sees
// exactly what was picked. A larger photo (a phone's, say) is re-encoded as a smaller JPEG in
// the browser rather than refused; the boxes still land right because the overlay's coordinate
// system is the size the gateway reports, stretched over the photo shown at its own resolution.

const ENVELOPE = 1024; // JSON around the base64: keys, parameters, a little slack
const QUALITY = 0.9;

const b64Length = (bytes) => 4 * Math.ceil(bytes / 3);

function readBase64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

function encode(canvas) {
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("encoding failed"))),
      "image/jpeg", QUALITY);
  });
}

// Decoded upright (EXIF orientation applied, as browsers show photos), so the copy sent is
// upright too; the page then shows the original upright as well, and the boxes fit.
async function shrink(file, budget) {
  const bitmap = await createImageBitmap(file);
  try {
    let scale = Math.min(1, Math.sqrt(budget / (b64Length(file.size) + ENVELOPE)));
    for (let attempt = 0; attempt < 8; attempt += 1) {
      const canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(bitmap.width * scale));
      canvas.height = Math.max(1, Math.round(bitmap.height * scale));
      canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      const blob = await encode(canvas);
      if (b64Length(blob.size) + ENVELOPE <= budget) return blob;
      scale *= 0.8;
    }
  } finally {
    bitmap.close();
  }
  return null;
}

/**
 * {url, b64, scaled}: `url` shows the original file; `b64` is what to send; `scaled` says
 * whether it was shrunk to fit `maxPayloadBytes` (and so re-encoded upright: the page must then
 * show the original with its EXIF orientation applied; otherwise without). A file the browser cannot decode is sent
 * as it is, so that the gateway's own message says what is wrong with it.
 */
export async function preparePhoto(file, maxPayloadBytes) {
  const url = URL.createObjectURL(file);
  if (b64Length(file.size) + ENVELOPE <= maxPayloadBytes) {
    return { url, b64: await readBase64(file), scaled: false };
  }
  let smaller = null;
  try {
    smaller = await shrink(file, maxPayloadBytes);
  } catch {
    // Not decodable here: fall through and let the gateway name the problem.
  }
  return smaller
    ? { url, b64: await readBase64(smaller), scaled: true }
    : { url, b64: await readBase64(file), scaled: false };
}
