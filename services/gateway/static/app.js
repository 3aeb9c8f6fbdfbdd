// The search page: every call goes to the gateway's JSON API (/v1/...), nothing else.
"use strict";

const PALETTE = ["#ff4d4d", "#4dd2ff", "#ffd24d", "#7dff4d", "#ff4dff", "#ff9f40", "#b266ff",
                 "#40e0d0"];
const $ = (id) => document.getElementById(id);
// mode: what the results are for, so that paging repeats it: a sentence (Search) or a stored
// image (SearchSimilarImages, "images like it")
const state = { query: "", filter: null, offset: 0, topK: 12, hits: [], selected: null,
                mode: { kind: "text" } };

function headers(json) {
  const out = {};
  const key = $("api-key").value.trim();
  if (key) out["Authorization"] = "Bearer " + key;
  if (json) out["Content-Type"] = "application/json";
  return out;
}

class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || "HTTP " + status);
    this.status = status;
    this.code = error.code || "";
    this.field = error.field || "";
  }
}

async function api(path, body) {
  let response;
  try {
    response = await fetch(path, {
      method: body === undefined ? "GET" : "POST",
      headers: headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(503, { error: { message: "the gateway cannot be reached" } });
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function readable(err) {
  if (err.status === 503 || err.status === 504)
    return "The search service is unavailable right now (" + err.message + "). Try again shortly.";
  if (err.status === 401) return "This server needs an API key: paste one with the search role above.";
  if (err.status === 403) return "Your API key may not do this (" + err.message + ").";
  if (err.status === 429) return "Too many requests: " + err.message;
  if (err.status === 413) return "Too large: " + err.message;
  if (err.field) return "Please check “" + err.field + "”: " + err.message;
  return err.message;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function parseFilter(text) {
  // "key=value, key=a|b" -> Filter: equals, or any_of for several values; numbers stay numbers
  const must = [];
  for (const part of text.split(",").map((s) => s.trim()).filter(Boolean)) {
    const at = part.indexOf("=");
    if (at < 1) throw new ApiError(400, { error: { message: "write key=value", field: "filters" } });
    const key = part.slice(0, at).trim();
    const values = part.slice(at + 1).split("|").map((v) => {
      const t = v.trim();
      if (t === "true" || t === "false") return t === "true";
      return t !== "" && !isNaN(Number(t)) ? Number(t) : t;
    });
    must.push(values.length > 1 ? { key, any_of: values } : { key, equals: values[0] });
  }
  return must.length ? { must } : null;
}

async function thumbnail(img, id, side) {
  // <img src> cannot send the API key, so pictures are fetched and shown as blobs
  const path = "/v1/images/" + id.split("/").map(encodeURIComponent).join("/") +
    (side ? "/thumbnail?max_side=" + side : "/source");
  try {
    const response = await fetch(path, { headers: headers(false) });
    if (!response.ok) return;
    img.src = URL.createObjectURL(await response.blob());
  } catch (err) { /* the card stays without its picture */ }
}

function chips(words) {
  const box = $("words");
  box.replaceChildren();
  words.forEach((word, i) => {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.textContent = word;
    chip.dataset.word = i;
    chip.style.background = PALETTE[i % PALETTE.length];
    chip.addEventListener("mouseenter", () => highlight(i, true));
    chip.addEventListener("mouseleave", () => highlight(i, false));
    box.append(chip);
  });
}

function highlight(word, on) {
  document.querySelectorAll('.box[data-word="' + word + '"]').forEach((b) => {
    b.classList.toggle("show", on);
  });
  document.querySelectorAll('.chip[data-word="' + word + '"]').forEach((c) => {
    c.classList.toggle("active", on);
  });
}

function card(hit, words) {
  const el = document.createElement("article");
  el.className = "hit";
  el.dataset.id = hit.id;
  const frame = document.createElement("div");
  frame.className = "frame";
  const img = document.createElement("img");
  img.alt = hit.id;
  frame.append(img);
  hit.alignment.forEach((a, i) => {
    const b = document.createElement("div");
    b.className = "box";
    b.dataset.word = i;
    b.title = a.word + " " + a.similarity.toFixed(3);
    b.style.borderColor = PALETTE[i % PALETTE.length];
    b.style.left = 100 * a.box.x1 + "%";
    b.style.top = 100 * a.box.y1 + "%";
    b.style.width = 100 * (a.box.x2 - a.box.x1) + "%";
    b.style.height = 100 * (a.box.y2 - a.box.y1) + "%";
    frame.append(b);
  });
  const id = document.createElement("div");
  id.className = "id";
  id.textContent = hit.id;
  const score = document.createElement("div");
  score.className = "score";
  if (state.mode.kind === "image") {
    score.textContent = "regions " + hit.score.toFixed(3);  // summed best-region cosines
  } else {
    const mean = hit.score / Math.max(1, words.length);
    score.textContent = "MrSw " + hit.score.toFixed(3) + " · mean " + mean.toFixed(3);
  }
  el.append(frame, id, score);
  el.addEventListener("click", () => openDetail(hit));
  thumbnail(img, hit.id, 256);
  return el;
}

function filterOrShow() {
  // the filter box as a Filter (null: none); undefined when it cannot be read (error shown)
  try {
    return parseFilter($("filters").value);
  } catch (err) {
    showError(readable(err));
    $("results").dataset.state = "done";
    return undefined;
  }
}

async function search(offset) {
  showError("");
  const query = $("query").value.trim();
  if (!query) {
    showError("Type a sentence to search for, e.g. “a red circle”.");
    $("results").dataset.state = "done";
    return;
  }
  const filter = filterOrShow();
  if (filter === undefined) return;
  Object.assign(state, { query, filter, offset, topK: Number($("top-k").value),
                         mode: { kind: "text" } });
  const body = { query, top_k: state.topK, offset, explain: true };
  if (filter) body.filter = filter;
  await show("/v1/search", body);
}

async function similar(imageId, offset) {
  // images like a stored one: SearchSimilarImages, which leaves the image itself out
  showError("");
  const filter = filterOrShow();
  if (filter === undefined) return;
  Object.assign(state, { query: "", filter, offset, topK: Number($("top-k").value),
                         mode: { kind: "image", id: imageId } });
  const body = { image_id: imageId, top_k: state.topK, offset };
  if (filter) body.filter = filter;
  await show("/v1/search-similar-images", body);
}

async function show(path, body) {
  try {
    render(await api(path, body));
  } catch (err) {
    render({ hits: [], words: [] });
    showError(readable(err));
  }
}

function page(offset) {
  if (state.mode.kind === "image") similar(state.mode.id, offset);
  else search(offset);
}

function render(result) {
  state.hits = result.hits;
  chips(result.words);
  if (state.mode.kind === "image") {
    const like = document.createElement("span");
    like.id = "like-of";
    like.textContent = "Images like " + state.mode.id;
    $("words").append(like);
  }
  $("results").replaceChildren(...result.hits.map((h) => card(h, result.words)));
  $("results").dataset.state = "done";
  $("pager").hidden = !result.hits.length && state.offset === 0;
  $("page").textContent = "page " + (Math.floor(state.offset / state.topK) + 1);
  $("prev").disabled = state.offset === 0;
  $("next").disabled = result.hits.length < state.topK;
  if (!result.hits.length && (state.query || state.mode.kind === "image") &&
      !$("error").textContent)
    showError(state.offset ? "No more results." : "No image matches this search and filter.");
}

async function openDetail(hit) {
  state.selected = hit;
  document.querySelectorAll(".hit").forEach((c) => {
    c.classList.toggle("selected", c.dataset.id === hit.id);
  });
  $("detail").hidden = false;
  $("detail-title").textContent = hit.id;
  $("detail-payload").textContent = JSON.stringify(hit.payload, null, 1);
  $("detail-image").removeAttribute("src");
  thumbnail($("detail-image"), hit.id, 0);
  const list = $("sentences");
  list.replaceChildren();
  list.dataset.state = "loading";
  try {
    const found = await api("/v1/search-sentences", { image_id: hit.id, top_k: 5 });
    for (const s of found.hits) {
      const li = document.createElement("li");
      li.className = "sentence";
      li.textContent = s.text + " ";
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = s.score.toFixed(3);
      li.append(score);
      list.append(li);
    }
    if (!found.hits.length) list.textContent = "No sentences stored yet (POST /v1/sentences).";
  } catch (err) {
    list.textContent = readable(err);
  }
  list.dataset.state = "done";
}

async function stats() {
  try {
    const s = await api("/v1/stats");
    $("stats").textContent = s.images + " images · " + s.sentences + " sentences · model " +
      s.model_version;
    const empty = Number(s.images) === 0;
    $("notice").hidden = !empty;
    $("notice").textContent = empty
      ? "No collection yet: ingest images first (POST /v1/images, or run make serve)." : "";
  } catch (err) {
    $("stats").textContent = "";
    showError(readable(err));
  }
}

$("search-form").addEventListener("submit", (e) => { e.preventDefault(); search(0); });
$("prev").addEventListener("click", () => page(Math.max(0, state.offset - state.topK)));
$("next").addEventListener("click", () => page(state.offset + state.topK));
$("close-detail").addEventListener("click", () => { $("detail").hidden = true; });
$("like-this").addEventListener("click", () => {
  if (state.selected) similar(state.selected.id, 0);
});
$("api-key").value = localStorage.getItem("teran-api-key") || "";
$("api-key").addEventListener("change", () => {
  localStorage.setItem("teran-api-key", $("api-key").value.trim());
  stats();
});
stats();
