// The diagnostic page: one request per image to /api/predict and /api/explain, so a bad
// file is reported on its own line and the others still come through. Text is set with
// textContent only (file names and server messages are never parsed as HTML).
"use strict";

const $ = (selector) => document.querySelector(selector);
// Why this model has no Grad-CAM overlay (from /api/model), or null when it has one.
let noExplanations = null;

function fmt(value, digits = 3) {
  return value === null || value === undefined ? "n/a" : Number(value).toFixed(digits);
}

function addRow(list, term, text, href) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  if (href) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    dd.appendChild(a);
  } else {
    dd.textContent = text;
  }
  list.append(dt, dd);
}

async function showModel() {
  const list = $("#model");
  try {
    const response = await fetch("/api/model");
    const m = await response.json();
    list.replaceChildren();
    let name = m.name ? `${m.name}, version ${m.version}` : m.uri;
    if (m.alias) name += ` (@${m.alias})`;
    addRow(list, "Model", name);
    addRow(list, "Backbone", `${m.backbone || "unknown"}, input ${m.image_size} × ${m.image_size} px`);
    addRow(list, "Threshold", `${fmt(m.threshold)} (chosen on validation; p ≥ threshold is "clot")`);
    // One row per headline metric of the catalogue (clot_hpo/evaluate/catalogue.py, page_metrics).
    for (const metric of m.metrics || []) {
      let text = metric.value === null ? "not recorded" : fmt(metric.value);
      if (metric.value !== null && metric.ci_low !== null && metric.ci_high !== null) {
        const level = metric.ci_level ? `${+(metric.ci_level * 100).toFixed(1)}% ` : "";
        text += ` (${level}interval ${fmt(metric.ci_low)} to ${fmt(metric.ci_high)})`;
      }
      addRow(list, metric.label, text);
    }
    if (m.model_card_url) addRow(list, "Model card", "open", m.model_card_url);
    noExplanations = m.explanations_unavailable || null;
    if (noExplanations) addRow(list, "Grad-CAM", `unavailable: ${noExplanations}`);
  } catch (error) {
    list.replaceChildren();
    addRow(list, "Model", `cannot read /api/model: ${error}`);
  }
}

function post(url, file) {
  const body = new FormData();
  body.append("file", file, file.name);
  return fetch(url, { method: "POST", body });
}

async function errorText(response) {
  try {
    const data = await response.json();
    return `${response.status}: ${data.detail}`;
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

function figure(alt, caption) {
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  img.alt = alt;
  const cap = document.createElement("figcaption");
  cap.textContent = caption;
  fig.append(img, cap);
  return [fig, img];
}

async function handle(file) {
  const item = document.createElement("li");
  item.className = "result";
  const [original, originalImg] = figure(`${file.name}`, "image");
  const [heat, heatImg] = figure(`Grad-CAM overlay of ${file.name}`, "Grad-CAM overlay");
  const text = document.createElement("div");
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = file.name;
  const status = document.createElement("div");
  status.textContent = "scoring…";
  text.append(name, status);
  item.append(original, heat, text);
  $("#results").prepend(item);
  originalImg.src = URL.createObjectURL(file);

  const started = performance.now();
  const response = await post("/api/predict", file);
  if (!response.ok) {
    original.remove();  // nothing to show: the file is not an image the model can read
    heat.remove();
    item.classList.add("failed");
    status.className = "error";
    status.textContent = await errorText(response);
    item.dataset.state = "error";
    return;
  }
  const [result] = await response.json();
  const decision = document.createElement("div");
  decision.className = `decision ${result.label ? "clot" : "no-clot"}`;
  decision.textContent = result.label ? "Clot" : "No clot";
  const probability = document.createElement("div");
  probability.className = "probability";
  probability.textContent = `probability ${fmt(result.probability)} at threshold ${fmt(result.threshold)}`;
  const timing = document.createElement("div");
  timing.className = "timing";
  timing.textContent = `${fmt(result.ms, 1)} ms on the server, ${fmt(performance.now() - started, 0)} ms in all`;
  status.replaceWith(decision, probability, timing);

  if (noExplanations) {
    heat.querySelector("figcaption").textContent = `No overlay: ${noExplanations}`;
    item.dataset.state = "done";
    return;
  }
  const explained = await post("/api/explain", file);
  if (explained.ok) {
    heatImg.src = URL.createObjectURL(await explained.blob());
    await heatImg.decode().catch(() => {});
    item.dataset.state = "done";
  } else {
    heat.querySelector("figcaption").textContent = await errorText(explained);
    item.dataset.state = "error";
  }
}

async function handleAll(files) {
  for (const file of files) await handle(file);  // in order, one at a time: the server stays responsive
}

document.addEventListener("DOMContentLoaded", () => {
  showModel();
  const input = $("#files");
  input.addEventListener("change", () => { handleAll([...input.files]); input.value = ""; });
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    handleAll([...event.dataTransfer.files]);
  });
  drop.addEventListener("keydown", (event) => { if (event.key === "Enter") input.click(); });
});
