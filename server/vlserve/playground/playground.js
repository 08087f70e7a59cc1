// The playground: plain DOM code against vlserve's own HTTP API (no framework, no build step).
// Controls come from /v1/models; every request goes through the same routes as any client's.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "vlserve-api-key"; // session storage only: gone when the tab closes
const state = { models: [], image: null, examples: [] };

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function fmt(x, digits = 4) { return Number(x).toFixed(digits); }

// ---- the server ----------------------------------------------------------------------------

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

class ServerError extends Error {}

async function explain(resp) {
  // the server's own words: {"error": {"type", "message", "param"}}
  let text = await resp.text();
  try {
    const e = JSON.parse(text).error;
    if (e) text = `${e.type}: ${e.message}` + (e.param ? ` (param: ${e.param})` : "");
  } catch (_) { /* not JSON: show it as it came */ }
  return new ServerError(`${resp.status} ${text}`);
}

async function call(path, body) {
  const resp = await fetch(path, body === undefined ? { headers: headers() }
    : { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!resp.ok) throw await explain(resp);
  return resp.json();
}

function showError(err) {
  const box = $("error");
  box.textContent = err ? String(err.message || err) : "";
  box.hidden = !err;
}

// Runs a task's request with its button disabled; errors go to the error box.
async function running(button, work) {
  button.disabled = true;
  showError(null);
  try { await work(); } catch (err) { showError(err); } finally { button.disabled = false; }
}

function currentModel() { return state.models.find((m) => m.name === $("model").value); }

function needImage() {
  if (!state.image) throw new Error("choose an image first: drop, paste or pick one, or click an example");
  return state.image.dataUrl;
}

// ---- models and their controls -------------------------------------------------------------

async function loadModels() {
  const { models } = await call("/v1/models");
  state.models = models;
  const select = $("model");
  select.replaceChildren(...models.map((m) => el("option", {
    value: m.name, textContent: m.state === "ready" ? m.name : `${m.name} (${m.state})`,
    disabled: m.state !== "ready" })));
  // the model requests without a name get (model.toml's default = true), else the first ready one
  const ready = models.filter((m) => m.state === "ready");
  const first = ready.find((m) => m.default) || ready[0];
  if (first) select.value = first.name;
  applyModel();
}

function applyModel() {
  const m = currentModel();
  if (!m) { $("model-info").textContent = "no model is ready"; return; }
  const caps = m.capabilities || {};
  $("model-info").textContent = `${m.family} · ${m.tasks.join(", ")} · ${m.device || ""} ${m.dtype || ""}`;
  for (const task of document.querySelectorAll(".task")) {
    const served = m.tasks.includes(task.dataset.task);
    task.classList.toggle("unserved", !served);
    task.title = served ? "" : `${m.name} does not serve ${task.dataset.task}`;
  }
  const modes = caps.vqa_modes || [];
  $("vqa-mode").replaceChildren(...modes.map((v) => el("option", { value: v, textContent: v })));
  showFor("vqa-mode");
}

// Shows the controls marked data-show="<value> ..." for the select's current value.
function showFor(selectId) {
  const select = $(selectId);
  for (const label of select.closest(".task").querySelectorAll("[data-show]")) {
    label.hidden = !label.dataset.show.split(" ").includes(select.value);
  }
}

// ---- the image -----------------------------------------------------------------------------

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function clearResults() {
  for (const out of document.querySelectorAll(".results")) out.replaceChildren();
}

async function setImage(dataUrl, name, example = null) {
  state.image = { dataUrl, name, example };
  clearResults();  // answers about the previous image would read as answers about this one
  $("preview").src = dataUrl;
  $("preview").hidden = false;
  $("drop-hint").hidden = true;
  $("image-info").textContent = name;
  for (const img of $("examples").children) img.classList.toggle("chosen", img.dataset.index === String(example?.index));
  if (example) {
    const q = example.questions.find((x) => x.question.startsWith("what color")) || example.questions[0];
    $("vqa-question").value = q.question;
    $("score-texts").value = [example.caption, ...example.negatives].join("\n");
  }
}

async function setFile(file) {
  if (!file) return;
  await setImage(await readFile(file), `${file.name || "pasted image"} (${file.type || "unknown type"}, ${file.size} bytes)`);
}

async function loadExamples() {
  const resp = await fetch("/playground/examples");
  if (!resp.ok) return;
  state.examples = await resp.json();
  $("examples").replaceChildren(...state.examples.map((ex) => {
    const img = el("img", { src: ex.url, alt: ex.caption, title: ex.caption });
    img.dataset.index = ex.index;
    img.addEventListener("click", async () => setImage(await blobUrl(ex.url), `example ${ex.index}: ${ex.caption}`, ex));
    return img;
  }));
  const single = state.examples.find((ex) => !/ (left of|above) /.test(ex.caption));
  if (single && !$("rank-text").value) $("rank-text").value = single.caption;
}

async function blobUrl(url) {
  const resp = await fetch(url);
  return readFile(await resp.blob());
}

function wireImageInput() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => setFile(e.target.files[0]).catch(showError));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    setFile(e.dataTransfer.files[0]).catch(showError);
  });
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData?.items || [])].find((i) => i.type.startsWith("image/"));
    if (item) setFile(item.getAsFile()).catch(showError);
  });
}

// ---- caption -------------------------------------------------------------------------------

function numberOr(id, fallback = undefined) {
  const v = $(id).value.trim();
  return v === "" ? fallback : Number(v);
}

function decodingOptions() {
  const mode = $("cap-mode").value;
  const opts = { max_new_tokens: numberOr("cap-max") };
  if (mode === "beam") opts.num_beams = numberOr("cap-beams", 3);
  if (mode === "sample") {
    Object.assign(opts, { do_sample: true, temperature: numberOr("cap-temperature", 1),
                          top_p: numberOr("cap-top-p", 1), seed: numberOr("cap-seed") });
  }
  return opts;
}

function captionItem(c) {
  return el("li", {},
    el("div", { className: "caption", textContent: c.text || "(empty)" }),
    el("div", { className: "tokens", textContent:
      `log-prob ${fmt(c.logprob)} · p ${fmt(Math.exp(c.logprob))} · tokens [${c.tokens.join(", ")}]` }));
}

async function caption() {
  const image = needImage();
  const out = $("cap-out");
  out.replaceChildren();
  if ($("cap-stream").checked) return streamCaption(image, out);
  const body = { model: $("model").value, images: [image], num_captions: numberOr("cap-n", 1),
                 prompt: $("cap-prompt").value.trim() || undefined, ...decodingOptions() };
  const res = await call("/v1/caption", body);
  out.replaceChildren(...res.captions[0].map(captionItem));
}

// One caption token by token: OpenAI's chat completions stream (server-sent events).
async function streamCaption(image, out) {
  const mode = $("cap-mode").value;
  if (mode === "beam" || numberOr("cap-n", 1) !== 1) throw new Error("streaming serves one greedy or sampled caption");
  const content = [{ type: "image_url", image_url: { url: image } }];
  const prompt = $("cap-prompt").value.trim();
  if (prompt) content.push({ type: "text", text: prompt });
  const opts = decodingOptions();
  const body = { model: $("model").value, stream: true, messages: [{ role: "user", content }],
                 max_tokens: opts.max_new_tokens, temperature: mode === "sample" ? opts.temperature : 0,
                 top_p: opts.top_p, seed: opts.seed };
  const resp = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!resp.ok) throw await explain(resp);
  const text = el("div", { className: "caption" });
  const info = el("div", { className: "tokens", textContent: "streaming…" });
  out.append(el("li", {}, text, info));
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", chunks = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("");
      if (!data || data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new ServerError(`${chunk.error.type}: ${chunk.error.message}`);
      const delta = chunk.choices?.[0]?.delta?.content;
      if (delta) { text.textContent += delta; chunks += 1; info.textContent = `streaming… ${chunks} pieces`; }
    }
  }
  info.textContent = `streamed in ${chunks} pieces`;
}

// ---- VQA -----------------------------------------------------------------------------------

function barRow(label, value, shown, cls = "") {
  return el("div", { className: "bar-row" }, el("span", { textContent: label }),
    el("div", {}, el("div", { className: `bar ${cls}`, style: `width:${Math.max(0, Math.min(1, value)) * 100}%` })),
    el("span", { textContent: shown }));
}

async function ask() {
  const mode = $("vqa-mode").value;
  const body = { model: $("model").value, images: [needImage()], questions: [$("vqa-question").value], mode };
  if (mode === "rank") body.candidates = $("vqa-candidates").value.split(",").map((s) => s.trim()).filter(Boolean);
  if (mode !== "generate") body.top_k = numberOr("vqa-top-k");
  const answer = (await call("/v1/vqa", body)).answers[0];
  const rows = (answer.ranked || [{ text: answer.text, prob: Math.exp(answer.logprob) }])
    .map((r) => barRow(r.text, r.prob, fmt(r.prob, 3)));
  $("vqa-out").replaceChildren(el("p", {}, "answer: ", el("strong", { textContent: answer.text }),
    el("span", { className: "muted", textContent: ` (${mode})` })), ...rows);
}

// ---- score and rank ------------------------------------------------------------------------

function meter(value, cls, digits) {
  return el("td", { className: "meter" }, el("span", { className: `bar ${cls}`,
    style: `width:${Math.max(0, Math.min(1, value)) * 70}%` }), fmt(value, digits));
}

async function score() {
  const texts = $("score-texts").value.split("\n").map((s) => s.trim()).filter(Boolean);
  if (!texts.length) throw new Error("type one or more texts, one per line");
  const heads = currentModel()?.capabilities?.score_heads || ["itc"];
  const res = await call("/v1/retrieval/score", { model: $("model").value, images: [needImage()], texts, heads });
  const head = el("tr", {}, el("th", { textContent: "text" }),
    ...heads.map((h) => el("th", { textContent: h === "itc" ? "ITC cosine" : "ITM probability" })));
  $("score-out").replaceChildren(head, ...texts.map((t, j) => el("tr", {}, el("td", { textContent: t }),
    ...heads.map((h) => meter(res[h][0][j], h, h === "itc" ? 4 : 3)))));
}

async function rank() {
  const pool = state.examples.map((ex) => ({ url: ex.url, label: `example ${ex.index}` }));
  if (state.image && !state.image.example) pool.push({ url: state.image.dataUrl, label: "your image" });
  const images = await Promise.all(pool.map((p) => (p.url.startsWith("data:") ? p.url : blobUrl(p.url))));
  const res = await call("/v1/retrieval/rank", { model: $("model").value, query_text: $("rank-text").value,
                                                 candidate_images: images, top_k: images.length });
  $("rank-out").replaceChildren(...res.results.map((r) => el("li", {},
    el("img", { src: images[r.index], alt: pool[r.index].label }),
    el("span", { textContent: `${pool[r.index].label} · ITC ${fmt(r.itc)}` + (r.itm == null ? "" : ` · ITM ${fmt(r.itm, 3)}`) }))));
}

// ---- start ---------------------------------------------------------------------------------

function start() {
  const key = $("api-key");
  key.value = sessionStorage.getItem(KEY_STORE) || "";
  $("key-form").addEventListener("submit", (e) => e.preventDefault());
  key.addEventListener("change", () => { sessionStorage.setItem(KEY_STORE, key.value); loadModels().catch(showError); });
  $("model").addEventListener("change", () => { clearResults(); applyModel(); });
  $("cap-mode").addEventListener("change", () => showFor("cap-mode"));
  $("vqa-mode").addEventListener("change", () => showFor("vqa-mode"));
  showFor("cap-mode");
  for (const [id, work] of [["cap-run", caption], ["vqa-run", ask], ["score-run", score], ["rank-run", rank]]) {
    $(id).addEventListener("click", () => running($(id), work));
  }
  wireImageInput();
  loadExamples().catch(showError);
  loadModels().catch(showError);
}

start();
