// The counting page: uploads, the image with its particles outlined and numbered, corrections, totals.
"use strict";

const state = {
  overview: null,      // /api/overview
  current: null,       // id of the image shown
  details: null,       // /api/images/<id> of the image shown
  picture: null,       // its display image
  paths: new Map(),    // "class/id" -> Path2D of the particle's outline, in image pixels
  pending: [],         // clicks of a split or merge in progress
  drawing: null,       // points of an outline being drawn with the add tool
  uploads: new Map(),  // name -> {progress, error} while uploading or refused
  busy: false,
};

const $ = (id) => document.getElementById(id);
const key = (p) => `${p.class}/${p.id}`;
const tool = () => document.querySelector('input[name="tool"]:checked').value;

function particles(n) { return `${n} particle${n === 1 ? "" : "s"}`; }

function say(text) { $("message").textContent = text || ""; }

async function api(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

// ---- images and totals ---------------------------------------------------------------------

async function refreshOverview() {
  state.overview = await api("/api/overview");
  const o = state.overview;
  $("model-line").textContent = `model ${o.model.path} · counting by ${o.model.counting} · work folder ${o.workdir}`;
  $("upload-limit").textContent = `up to ${o.max_upload_mib} MiB each`;
  $("batch-total").textContent = o.total;
  $("batch-images").textContent = o.counted_images;
  document.body.classList.toggle("hide-class", o.model.classes.length < 2);
  document.body.classList.toggle("hide-length", !o.model.fibres);
  renderList();
  const pending = o.images.some((i) => i.status === "queued" || i.status === "counting");
  const shown = o.images.find((i) => i.id === state.current);
  if (shown && shown.status === "done" && (!state.details || state.details.status !== "done")) await openImage(shown.id);
  if (!state.current) {
    const first = o.images.find((i) => i.status === "done");
    if (first) await openImage(first.id);
  }
  if (pending || state.uploads.size && [...state.uploads.values()].some((u) => !u.error)) setTimeout(poll, 400);
}

let polling = false;
let pollAgain = false;  // a poll asked for while one runs: it may have read the overview before the change
async function poll() {
  if (polling) { pollAgain = true; return; }
  polling = true;
  try { await refreshOverview(); } catch (e) { say(e.message); } finally { polling = false; }
  if (pollAgain) { pollAgain = false; poll(); }
}

function renderList() {
  const list = $("image-list");
  list.replaceChildren();
  for (const [name, upload] of state.uploads) {
    const li = document.createElement("li");
    li.className = upload.error ? "error" : "uploading";
    li.innerHTML = `<span class="name"></span><span class="state"></span>`;
    li.querySelector(".name").textContent = name;
    li.querySelector(".state").textContent = upload.error || `uploading ${Math.round(upload.progress * 100)} %`;
    list.append(li);
  }
  for (const image of state.overview ? state.overview.images : []) {
    const li = document.createElement("li");
    li.className = `image-row ${image.status}` + (image.id === state.current ? " current" : "");
    li.dataset.id = image.id;
    li.innerHTML = `<span class="name"></span><span class="state"></span>`;
    li.querySelector(".name").textContent = image.name;
    const stateText = li.querySelector(".state");
    if (image.status === "done") {
      stateText.innerHTML = `<span class="count"></span> · ${image.seconds.toFixed(1)} s`;
      stateText.querySelector(".count").textContent = particles(image.count);
    } else if (image.status === "error") {
      stateText.textContent = image.error;
    } else {
      stateText.textContent = image.status === "queued" ? "queued" : `${image.stage} ${Math.round(image.progress * 100)} %`;
      const bar = document.createElement("progress");
      bar.max = 1; bar.value = image.progress;
      li.append(bar);
    }
    li.addEventListener("click", () => image.status === "done" ? openImage(image.id) : say(image.error || `${image.name} is still counting`));
    list.append(li);
  }
}

function upload(file) {
  // raw bytes with the name in the query: the server streams them to disk under its upload limit
  state.uploads.set(file.name, { progress: 0 });
  renderList();
  const request = new XMLHttpRequest();
  request.open("POST", `/api/images?name=${encodeURIComponent(file.name)}`);
  request.upload.onprogress = (e) => { if (e.lengthComputable) { state.uploads.get(file.name).progress = e.loaded / e.total; renderList(); } };
  request.onload = () => {
    if (request.status === 202) state.uploads.delete(file.name);
    else {
      let message = `${file.name}: refused (${request.status})`;
      try { message = JSON.parse(request.responseText).error || message; } catch (e) { /* not JSON */ }
      state.uploads.set(file.name, { error: message });
    }
    poll();
  };
  request.onerror = () => { state.uploads.set(file.name, { error: `${file.name}: the upload failed; is skipnas serve still running?` }); renderList(); };
  request.send(file);
  poll();
}

// ---- one image ----------------------------------------------------------------------------

async function openImage(id) {
  const details = await api(`/api/images/${id}`);
  if (details.status !== "done") { say(details.error || `${details.name} is still counting`); return; }
  const picture = new Image();
  picture.src = `/api/images/${id}/display.png`;
  await picture.decode();
  state.current = id;
  state.picture = picture;
  state.pending = [];
  setDetails(details);
  say("");
  renderList();
}

function setDetails(details) {
  state.details = details;
  state.paths = new Map();
  for (const p of details.particles) {
    const path = new Path2D();
    for (const ring of p.outline) {
      path.moveTo(ring[0], ring[1]);
      for (let i = 2; i < ring.length; i += 2) path.lineTo(ring[i], ring[i + 1]);
      path.closePath();
    }
    state.paths.set(key(p), path);
  }
  $("image-total").textContent = `${details.name}: ${particles(details.count)}`;
  const row = document.querySelector(`#image-list li[data-id="${details.id}"] .count`);
  if (row) row.textContent = particles(details.count);
  draw();
  renderTable();
}

function hue(id) { return Math.round(((id * 0.618034) % 1) * 360); }

function draw() {
  const canvas = $("canvas");
  const d = state.details;
  if (!d) return;
  canvas.style.display = "block";
  $("placeholder").style.display = "none";
  canvas.width = state.picture.naturalWidth;
  canvas.height = state.picture.naturalHeight;
  const box = $("canvas-box");  // the whole image in view, as large as the box allows
  const fit = Math.min(box.clientWidth / canvas.width, box.clientHeight / canvas.height);
  canvas.style.width = `${Math.floor(canvas.width * fit)}px`;
  canvas.style.height = `${Math.floor(canvas.height * fit)}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.drawImage(state.picture, 0, 0);
  const toCanvas = canvas.width / d.width;             // the display image may be smaller than the image
  const cssPixel = canvas.width / Math.max(canvas.clientWidth, 1);
  ctx.setTransform(toCanvas, 0, 0, toCanvas, 0, 0);
  const line = Math.max(1, 1.5 * cssPixel) / toCanvas;
  ctx.font = `bold ${Math.round(12 * cssPixel / toCanvas)}px system-ui, sans-serif`;
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  const chosen = new Set(state.pending.map((c) => c.key));
  for (const p of d.particles) {
    const path = state.paths.get(key(p));
    ctx.lineWidth = chosen.has(key(p)) ? 3 * line : line;
    if (p.kept) {
      ctx.strokeStyle = `hsl(${hue(p.id)}, 95%, 55%)`;
      ctx.setLineDash([]);
      ctx.fillStyle = `hsla(${hue(p.id)}, 95%, 55%, 0.18)`;
      ctx.fill(path);
    } else {
      ctx.strokeStyle = "rgba(255, 70, 70, 0.9)";
      ctx.setLineDash([4 * line, 3 * line]);
    }
    ctx.stroke(path);
    ctx.setLineDash([]);
    ctx.fillStyle = p.kept ? "#fff" : "rgba(255, 120, 120, 0.9)";
    ctx.fillText(String(p.id), p.anchor[0], p.anchor[1]);
  }
  if (state.drawing && state.drawing.length > 1) {
    ctx.beginPath();
    ctx.moveTo(state.drawing[0][0], state.drawing[0][1]);
    for (const [x, y] of state.drawing.slice(1)) ctx.lineTo(x, y);
    ctx.strokeStyle = "#ffe14d";
    ctx.lineWidth = line;
    ctx.stroke();
  }
}

function renderTable() {
  const body = document.querySelector("#particle-table tbody");
  body.replaceChildren();
  const chosen = new Set(state.pending.map((c) => c.key));
  for (const p of state.details.particles) {
    const tr = document.createElement("tr");
    tr.dataset.key = key(p);
    tr.className = (p.kept ? "" : "rejected") + (chosen.has(key(p)) ? " selected" : "");
    const cells = [p.id, p.class, p.area, p.equivalent_diameter, p.length, p.confidence.toFixed(2)];
    const classes = ["", "class-col", "", "", "length-col", ""];
    cells.forEach((value, i) => {
      const td = document.createElement("td");
      td.textContent = value;
      if (classes[i]) td.className = classes[i];
      tr.append(td);
    });
    tr.addEventListener("click", () => edit({ action: "toggle", class: p.class, id: p.id }));
    body.append(tr);
  }
}

async function edit(action) {
  if (!state.current || state.busy) return;
  state.busy = true;
  try {
    setDetails(await api(`/api/images/${state.current}/edit`, { method: "POST", body: JSON.stringify(action) }));
    say("");
    refreshOverview().catch((e) => say(e.message));
  } catch (e) {
    say(e.message);
  } finally {
    state.busy = false;
    state.pending = [];
  }
}

function imagePoint(event) {
  const canvas = $("canvas");
  const box = canvas.getBoundingClientRect();
  return [(event.clientX - box.left) / box.width * state.details.width, (event.clientY - box.top) / box.height * state.details.height];
}

function particleAt([x, y]) {
  const ctx = $("canvas").getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  const hits = state.details.particles.filter((p) => ctx.isPointInPath(state.paths.get(key(p)), x, y));
  return hits.find((p) => p.kept) || hits[0] || null;
}

function click(point) {
  const hit = particleAt(point);
  const mode = tool();
  if (mode === "toggle") {
    if (!hit) { say("no particle there; use add to mark a missed one"); return; }
    edit({ action: "toggle", class: hit.class, id: hit.id });
  } else if (mode === "add") {
    edit({ action: "add", x: point[0], y: point[1] });
  } else if (mode === "split") {
    if (!hit) { say("click inside the particle to split"); return; }
    if (state.pending.length && state.pending[0].key !== key(hit)) { say("both clicks of a split go inside one particle"); return; }
    state.pending.push({ key: key(hit), particle: hit, point });
    if (state.pending.length === 2) {
      edit({ action: "split", class: hit.class, id: hit.id, points: state.pending.map((c) => c.point) });
    } else { say(`particle ${hit.id}: now click inside the other piece`); draw(); renderTable(); }
  } else if (mode === "merge") {
    if (!hit) { say("click a particle to merge"); return; }
    if (state.pending.length && state.pending[0].particle.class !== hit.class) { say("merge particles of one class"); return; }
    state.pending.push({ key: key(hit), particle: hit, point });
    if (state.pending.length === 2) {
      edit({ action: "merge", class: hit.class, ids: state.pending.map((c) => c.particle.id) });
    } else { say(`particle ${hit.id}: now click the one to join it`); draw(); renderTable(); }
  }
}

function setUp() {
  const canvas = $("canvas");
  canvas.addEventListener("mousedown", (e) => { if (state.details && tool() === "add") state.drawing = [imagePoint(e)]; });
  canvas.addEventListener("mousemove", (e) => {
    if (state.drawing) { state.drawing.push(imagePoint(e)); draw(); }
  });
  canvas.addEventListener("mouseup", (e) => {
    if (!state.details) return;
    const outline = state.drawing;
    state.drawing = null;
    const point = imagePoint(e);
    if (outline && outline.length >= 3) {
      const [x0, y0] = outline[0];
      const span = Math.max(...outline.map(([x, y]) => Math.hypot(x - x0, y - y0)));
      if (span * $("canvas").clientWidth / state.details.width > 6) { edit({ action: "add", points: outline }); return; }
    }
    click(point);
  });
  document.querySelectorAll('input[name="tool"]').forEach((r) => r.addEventListener("change", () => { state.pending = []; say(""); draw(); }));
  $("undo").addEventListener("click", () => edit({ action: "undo" }));
  document.addEventListener("keydown", (e) => { if ((e.ctrlKey || e.metaKey) && e.key === "z") { e.preventDefault(); edit({ action: "undo" }); } });
  $("file-input").addEventListener("change", (e) => { [...e.target.files].forEach(upload); e.target.value = ""; });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); [...e.dataTransfer.files].forEach(upload); });
  $("save-dataset").addEventListener("click", async () => {
    try {
      const saved = await api("/api/save", { method: "POST" });
      $("save-result").textContent = `${saved.images} images, ${saved.particles} particles in ${saved.folder}. Fine-tune: ${saved.command}`;
    } catch (e) { say(e.message); }
  });
  window.addEventListener("resize", draw);
  poll();
}

setUp();
