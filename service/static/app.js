// wingmark demo page: send an image (file, drop or webcam frame) to POST /v1/landmarks and draw the answer.
// No build step and no dependencies. After each answer the canvas carries data-faces and data-points
// (the number of faces and landmarks drawn), which the browser test reads.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
const video = $("video");
let busy = false;
let stream = null;

// Nose tip index per scheme: the origin of the pose axes.
const NOSE = { ibug68: 30, aflw19: 13 };
const AXIS_COLOURS = ["#d62728", "#2ca02c", "#1f77b4"];

function setStatus(text) { $("status").textContent = text; }

function showError(text) {
  const el = $("error");
  el.textContent = text;
  el.hidden = !text;
}

// A problem+json document (RFC 9457) or any other failed response -> one readable line.
async function problemText(response) {
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (body && (body.title || body.detail)) {
    const where = body.status ? ` (HTTP ${body.status})` : "";
    return `${body.title || "Error"}${where}: ${body.detail || ""}`.trim();
  }
  return `The server answered HTTP ${response.status} ${response.statusText}.`;
}

// R = R_roll @ R_pitch @ R_yaw (degrees), as in model_store.pose.rotation_from_euler.
function rotation(yaw, pitch, roll) {
  const [a, b, c] = [yaw, pitch, roll].map((d) => (d * Math.PI) / 180);
  const ry = [[Math.cos(a), 0, Math.sin(a)], [0, 1, 0], [-Math.sin(a), 0, Math.cos(a)]];
  const rx = [[1, 0, 0], [0, Math.cos(b), -Math.sin(b)], [0, Math.sin(b), Math.cos(b)]];
  const rz = [[Math.cos(c), -Math.sin(c), 0], [Math.sin(c), Math.cos(c), 0], [0, 0, 1]];
  const mul = (p, q) => p.map((row) => q[0].map((_, j) => row.reduce((s, v, k) => s + v * q[k][j], 0)));
  return mul(rz, mul(rx, ry));
}

function drawFaces(body) {
  const scheme = body.model.scheme;
  const unit = Math.max(canvas.width, canvas.height) / 400;
  let points = 0;
  for (const face of body.faces) {
    const [x1, y1, x2, y2] = face.box;
    if ($("boxes").checked) {
      ctx.strokeStyle = "#ffd400";
      ctx.lineWidth = Math.max(1, 1.5 * unit);
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    }
    ctx.fillStyle = "#00e5ff";
    ctx.strokeStyle = "rgba(0, 0, 0, 0.6)";
    ctx.lineWidth = Math.max(0.5, 0.5 * unit);
    for (const [x, y] of face.landmarks) {
      ctx.beginPath();
      ctx.arc(x, y, Math.max(1.5, 1.6 * unit), 0, 2 * Math.PI);
      ctx.fill();
      ctx.stroke();
      points += 1;
    }
    if (face.pose) {
      const r = rotation(face.pose.yaw, face.pose.pitch, face.pose.roll);
      const origin = face.landmarks[NOSE[scheme]] || face.landmarks[0];
      const length = 0.45 * Math.max(x2 - x1, y2 - y1);
      ctx.lineWidth = Math.max(2, 2.5 * unit);
      for (let k = 0; k < 3; k++) {  // column k of R: head axis k in image axes (x right, y down)
        ctx.strokeStyle = AXIS_COLOURS[k];
        ctx.beginPath();
        ctx.moveTo(origin[0], origin[1]);
        ctx.lineTo(origin[0] + length * r[0][k], origin[1] + length * r[1][k]);
        ctx.stroke();
      }
    }
  }
  return points;
}

function showTable(body) {
  const table = $("faces");
  const tbody = table.querySelector("tbody");
  tbody.replaceChildren();
  const fmt = (v) => (v === null || v === undefined ? "–" : v.toFixed(1));
  body.faces.forEach((face, i) => {
    const tr = document.createElement("tr");
    const pose = face.pose || {};
    for (const cell of [String(i + 1), fmt(face.detection_score), fmt(pose.yaw), fmt(pose.pitch), fmt(pose.roll)]) {
      const td = document.createElement("td");
      td.textContent = cell;
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
  });
  table.hidden = body.faces.length === 0;
}

function showTimings(timings) {
  const dl = $("timings");
  dl.replaceChildren();
  for (const [stage, ms] of Object.entries(timings)) {
    const dt = document.createElement("dt");
    dt.textContent = stage;
    const dd = document.createElement("dd");
    dd.textContent = `${ms.toFixed(1)} ms`;
    dl.append(dt, dd);
  }
  dl.hidden = false;
}

// Draw ``source`` (an ImageBitmap or the video) at its own size, post ``blob``, draw the answer over it.
async function analyse(source, width, height, blob, name) {
  busy = true;
  showError("");
  canvas.width = width;
  canvas.height = height;
  ctx.drawImage(source, 0, 0, width, height);
  canvas.dataset.faces = "0";
  canvas.dataset.points = "0";
  canvas.dataset.state = "busy";
  setStatus(`Sending ${name} (${width}x${height}, ${(blob.size / 1024).toFixed(0)} KiB)…`);
  const params = new URLSearchParams({ scheme: $("scheme").value });
  if ($("pose").checked) params.set("pose", "true");
  if ($("views").value) params.set("views", $("views").value);
  const form = new FormData();
  form.append("image", blob, name);
  const started = performance.now();
  try {
    const response = await fetch(`/v1/landmarks?${params}`, { method: "POST", body: form });
    if (!response.ok) {
      showError(await problemText(response));
      setStatus(`${name}: no landmarks.`);
      canvas.dataset.state = "error";
      return;
    }
    const body = await response.json();
    const points = drawFaces(body);
    canvas.dataset.faces = String(body.faces.length);
    canvas.dataset.points = String(points);
    canvas.dataset.state = "done";
    showTable(body);
    showTimings(body.timings_ms);
    const m = body.model;
    const views = body.views === 1 ? "1 view" : `${body.views} views`;
    $("model").textContent = `${m.name} ${m.version} (${m.scheme}, ${m.backend}, ${views}); faces from ${body.box_source}`;
    const roundTrip = (performance.now() - started).toFixed(0);
    setStatus(body.faces.length
      ? `${name}: ${body.faces.length} face(s), ${points} points; round trip ${roundTrip} ms.`
      : `${name}: no face found (round trip ${roundTrip} ms).`);
  } catch (err) {
    showError(`Could not reach the service: ${err.message}`);
    canvas.dataset.state = "error";
  } finally {
    busy = false;
  }
}

async function analyseFile(file) {
  if (!file) return;
  if (busy) { setStatus("Still waiting for the previous answer…"); return; }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch (_) {
    // The browser cannot show it; let the service say what is wrong with it.
    showError("");
    canvas.dataset.state = "busy";
    const form = new FormData();
    form.append("image", file, file.name);
    const response = await fetch("/v1/landmarks", { method: "POST", body: form });
    showError(response.ok ? "The browser cannot display this image." : await problemText(response));
    canvas.dataset.state = "error";
    return;
  }
  await analyse(bitmap, bitmap.width, bitmap.height, file, file.name);
}

async function snapFrame() {
  if (busy || !stream || !video.videoWidth) return;
  const frame = document.createElement("canvas");
  frame.width = video.videoWidth;
  frame.height = video.videoHeight;
  frame.getContext("2d").drawImage(video, 0, 0);
  const blob = await new Promise((resolve) => frame.toBlob(resolve, "image/jpeg", 0.9));
  await analyse(frame, frame.width, frame.height, blob, "webcam frame");
  if ($("live").checked && stream) requestAnimationFrame(snapFrame);
}

async function toggleCamera() {
  if (stream) {
    stream.getTracks().forEach((t) => t.stop());
    stream = null;
    video.hidden = true;
    $("camera").textContent = "Start webcam";
    $("snap").disabled = $("live").disabled = true;
    $("live").checked = false;
    return;
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("This browser gives no camera access here (it needs https or http://127.0.0.1 / localhost).");
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (err) {
    showError(`No webcam: ${err.message}`);
    return;
  }
  video.srcObject = stream;
  video.hidden = false;
  await video.play();
  $("camera").textContent = "Stop webcam";
  $("snap").disabled = $("live").disabled = false;
}

$("file").addEventListener("change", (e) => analyseFile(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  analyseFile(e.dataTransfer.files[0]);
});
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
$("camera").addEventListener("click", toggleCamera);
$("snap").addEventListener("click", snapFrame);
$("live").addEventListener("change", () => { if ($("live").checked) snapFrame(); });
