// The explorer's page: plain JavaScript, no build step.  State lives in `explorer`
// (also read by the browser test): the current image, the last answer, a request counter.
"use strict";
const explorer = { image: null, last: null, completed: 0, seq: 0, token: "" };
window.explorer = explorer;
const $ = (id) => document.getElementById(id);

function showError(msg) {
  const e = $("error");
  e.textContent = msg || "";
  e.hidden = !msg;
}

async function call(path, options) {
  const r = await fetch(path, options);
  let body;
  try { body = await r.json(); } catch (err) { body = { error: `the server answered ${r.status} without JSON` }; }
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

function target() {
  if ($("kind-neuron").checked) {
    const t = { layer: $("layer").value, channel: Number($("channel").value || 0) };
    if ($("row").value !== "" && $("col").value !== "") {
      t.row = Number($("row").value);
      t.col = Number($("col").value);
    }
    return t;
  }
  return $("class").value === "" ? null : { class: Number($("class").value) };
}

function method() {
  const m = document.querySelector("input[name=method]:checked");
  return m ? m.value : "saliency";
}

function img(src, title) {
  if (!src) return "";
  const i = document.createElement("img");
  i.src = src;
  i.title = title || "";
  return i;
}

function pct(v) { return (100 * v).toFixed(1) + "%"; }

function render(res) {
  $("picture").src = res.picture;
  $("map").src = res.map;
  const methodLabel = document.querySelector(`input[name=method][value="${res.method}"]`).parentNode.textContent;
  $("map-title").textContent = `${methodLabel.trim()}: ${res.target.text}`;
  const pred = $("prediction");
  pred.innerHTML = "";
  for (const p of res.prediction) {
    const li = document.createElement("li");
    li.textContent = `${p.name}: ${(100 * p.p).toFixed(1)}%`;
    pred.appendChild(li);
  }
  let info = "";
  if (res.box) {
    info = `GrabCut box (x0, y0, x1, y1) = (${res.box.join(", ")}), mask ${res.mask_area} px`;
    if (res.box_iou !== undefined) info += `; IoU with the true box (blue) ${res.box_iou.toFixed(2)}`;
  }
  $("map-info").textContent = info;
  const ms = res.ms;
  $("timing").textContent = `server: prediction ${ms.predict.toFixed(0)} ms, map ${ms.map.toFixed(0)} ms, ` +
    `layer view ${ms.layers.toFixed(0)} ms, total ${ms.total.toFixed(0)} ms`;
  const flow = $("flow");
  flow.innerHTML = "";
  let previous = null;
  for (const l of res.layers) {
    const card = document.createElement("div");
    card.className = "layer " + l.type;
    const line = (text, cls) => {
      const d = document.createElement("div");
      if (cls) d.className = cls;
      d.textContent = text;
      card.appendChild(d);
    };
    const name = document.createElement("b");
    name.textContent = l.name;
    card.appendChild(name);
    line(`${l.type} (${l.shape.join("x")})`);
    if (l.inputs && (l.inputs.length > 1 || l.inputs[0] !== previous))   // a graph: not the card before
      line(`\u2190 ${l.inputs.join(", ")}`, "reads");
    previous = l.name;
    line(`|dS/d out| ${l.grad_norm.toExponential(2)}`, "num");
    if (l.active !== undefined)
      line(`act ${pct(l.active)} in ${pct(l.arrived)} out ${pct(l.passed)}`, "num");
    const pics = document.createElement("div");
    if (l.map) pics.appendChild(img(l.map, "where |dS/d output| is large (sum over channels)"));
    if (l.mask) pics.appendChild(img(l.mask, "ReLU mask: fraction of channels passing the gradient back"));
    card.appendChild(pics);
    flow.appendChild(card);
  }
}

async function update() {
  if (!explorer.image) return;
  const seq = ++explorer.seq;
  document.body.classList.add("busy");
  try {
    const res = await call("/api/explain", {
      method: "POST", headers: { "Content-Type": "application/json", "X-Explorer-Token": explorer.token },
      body: JSON.stringify({ image: explorer.image, method: method(), target: target() }),
    });
    if (seq !== explorer.seq) return;            // a newer request is on its way
    explorer.last = res;
    showError("");
    render(res);
  } catch (err) {
    if (seq === explorer.seq) showError(err.message);
  } finally {
    if (seq === explorer.seq) {
      document.body.classList.remove("busy");
      explorer.completed += 1;
    }
  }
}

async function upload(file) {
  const seq = ++explorer.seq;
  try {
    const res = await call("/api/upload", { method: "POST", body: file,
      headers: { "Content-Type": "application/octet-stream", "X-Explorer-Token": explorer.token } });
    explorer.image = res.image;
    $("scene").value = "";
    await update();
  } catch (err) {
    if (seq === explorer.seq) {
      showError(`${file.name}: ${err.message}`);
      explorer.completed += 1;
    }
  }
}

async function init() {
  const info = await call("/api/info");
  explorer.token = info.token;          // the server's per-process token: every POST carries it
  $("model-line").textContent = `model ${info.model} - input ${info.input_shape.join("x")}, ` +
    `${info.classes.length} classes; uploads up to ${(info.max_upload_bytes / 1048576).toFixed(0)} MB`;
  const scene = $("scene");
  scene.add(new Option("(uploaded image)", ""));
  for (const s of info.scenes) scene.add(new Option(s.label, s.id));
  info.classes.forEach((name, i) => $("class").add(new Option(`${i}: ${name}`, String(i))));
  for (const l of info.layers) {
    if (l.type !== "flatten" && l.type !== "dropout")
      $("layer").add(new Option(`${l.name} (${l.shape.join("x")})`, l.name));
  }
  const methods = $("methods");
  info.methods.forEach((m, k) => {
    const label = document.createElement("label");
    label.innerHTML = `<input type="radio" name="method" value="${m.id}"${k === 1 ? " checked" : ""}> `;
    label.appendChild(document.createTextNode(m.label));
    methods.appendChild(label);
  });
  for (const id of ["class", "layer", "channel", "row", "col", "kind-class", "kind-neuron"])
    $(id).addEventListener("change", update);
  methods.addEventListener("change", update);
  scene.addEventListener("change", () => { if (scene.value) { explorer.image = scene.value; update(); } });
  $("upload").addEventListener("change", (e) => { if (e.target.files.length) upload(e.target.files[0]); });
  if (info.scenes.length) { scene.value = info.scenes[0].id; explorer.image = info.scenes[0].id; await update(); }
  else explorer.completed += 1;
  explorer.ready = true;
}

init().catch((err) => showError(err.message));
