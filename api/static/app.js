// The page at `/`: submit photos and show their parsing, through the public API only
// (POST /v1/jobs, GET /v1/jobs?ids=, GET /v1/jobs/<id>/outputs/<name>, cancel), with the
// outputs ticked above the drop box (keypoints, masks, garments, try-on pack) made too.
// Every API path is relative ("v1/jobs"): fetch resolves it against the page's <base>,
// the service's root, so the page works behind a proxy that serves it under a prefix.
"use strict";

const KEY_STORAGE = "m2fp.apiKey";
const POLL_MS = 1000;           // between polls while jobs are under way
const MAX_RETRY_S = 30;         // the longest wait between tries when the service fails
const MAX_IDS = 100;            // job ids per poll (the API's bound)
const EXPLORE_MAX_SIDE = 1280;  // the explorer canvas draws at most this many pixels a side
const PART_ALPHA = 0.55;        // how strongly a class color covers the photo in the explorer
const DIM = 0.3;                // what is left of pixels outside the highlighted person
// OpenPose BODY_25's limbs (pairs of point indices), the ones OpenPose itself draws.
const BODY_25_LIMBS = [[1, 8], [1, 2], [1, 5], [2, 3], [3, 4], [5, 6], [6, 7], [8, 9], [9, 10], [10, 11], [8, 12],
                       [12, 13], [13, 14], [1, 0], [0, 15], [15, 17], [0, 16], [16, 18], [14, 19], [19, 20],
                       [14, 21], [11, 22], [22, 23], [11, 24]];
const SVG_NS = "http://www.w3.org/2000/svg";
// The try-on pack's sizes, in the order shown, and what each is called.
const TRYON_SIZES = {"photo": "At the photo's size", "768x1024": "At 768 × 1024, the size try-on models take"};
const GROUP_NAMES = {keypoints: "body keypoints", masks: "masks", garments: "garments", tryon: "try-on pack"};

const $ = (selector, root = document) => root.querySelector(selector);
// Where the service is: the page's <base> (e.g. https://example.org/parse/ behind a proxy).
const SERVICE_ROOT = new URL(".", document.baseURI).href;

// ---- talking to the API ------------------------------------------------------------

class ApiError extends Error {
  // kind: "unreachable", "unauthorized", "busy" (429, 503), "server" (other 5xx), "client" (other 4xx)
  constructor(kind, message, {status = 0, code = "", retryAfter = null} = {}) {
    super(message);
    Object.assign(this, {kind, status, code, retryAfter});
  }

  get transient() {
    return this.kind === "unreachable" || this.kind === "busy";
  }
}

function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = apiKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  let response;
  try {
    response = await fetch(path, {...options, headers});
  } catch (err) {
    throw new ApiError("unreachable", `Cannot reach the service at ${SERVICE_ROOT}: it may be down, ` +
                       "or this device offline.");
  }
  if (response.ok) return response;
  const body = await response.json().catch(() => null);
  const error = (body && body.error) || {code: "", message: `${response.status} ${response.statusText}`};
  const retryAfter = parseInt(response.headers.get("Retry-After"), 10);
  const info = {status: response.status, code: error.code, retryAfter: Number.isFinite(retryAfter) ? retryAfter : null};
  if (response.status === 401) {
    throw new ApiError("unauthorized", key ? "The service did not accept this API key: check it above."
                                           : "This service needs an API key: enter it above.", info);
  }
  if (response.status === 429 || response.status === 503) {
    throw new ApiError("busy", `The service is busy: ${error.message}`, info);
  }
  throw new ApiError(response.status >= 500 ? "server" : "client", error.message, info);
}

async function apiJson(path, options) {
  const response = await api(path, options);
  try {
    return await response.json();
  } catch (err) {  // a proxy or portal answering in its stead: back off like any server fault
    throw new ApiError("server", "The service sent an answer this page cannot read.");
  }
}

// Wait `ms`, or less when something calls nudge() (a new job, a new key).
let wakeUp = () => {};
function pause(ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    wakeUp = () => { clearTimeout(timer); resolve(); };
  });
}
function nudge() {
  wakeUp();
}

// The next wait after `failures` failures in a row: Retry-After when the service named one.
function retryDelay(error, failures) {
  if (error.retryAfter != null) return Math.max(1, error.retryAfter);  // (not for errors other than ApiError)
  return Math.min(MAX_RETRY_S, 2 ** Math.min(failures, 5));
}

// ---- the banner: what is wrong with the service as a whole -------------------------

// A role="alert" region: screen readers announce every change of it, so it is written
// only when what it says changes, not on every retry.
const banner = $("#banner");
function showProblem(error, seconds) {
  let text = error.message;
  if (error.kind !== "unauthorized") text += ` Trying again in ${seconds} s.`;
  if (banner.textContent !== text) banner.textContent = text;
  if (banner.dataset.kind !== error.kind) banner.dataset.kind = error.kind;
  if (banner.hidden) banner.hidden = false;
}
function clearProblem() {
  if (banner.hidden) return;
  banner.hidden = true;
  banner.textContent = "";
  delete banner.dataset.kind;
}

// ---- the API key -------------------------------------------------------------------

const keyInput = $("#api-key");
const keyState = $("#key-state");
const waitingForKey = new Set();  // cards whose submission was refused for want of a key

function showKeyState() {
  keyState.textContent = apiKey() ? "key saved in this browser" : "no key";
}

$("#key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
  showKeyState();
  clearProblem();
  for (const card of waitingForKey) submit(card);
  waitingForKey.clear();
  nudge();
});
keyInput.value = apiKey();
showKeyState();

// ---- what to make besides the standard outputs ----------------------------------------

// The choices apply to the photos sent after them: each card keeps those it came with, so
// a photo that waits for a key, or for the service, is sent as it was asked for.
const choices = $("#choices");
const personInput = $("#person");
const tryonBox = $("input[name='outputs'][value='tryon']", choices);
const followTryon = () => { personInput.disabled = !tryonBox.checked; };
tryonBox.addEventListener("change", followTryon);
followTryon();  // a reloaded page may keep the box ticked

function currentChoices() {
  const outputs = [...choices.querySelectorAll("input[name='outputs']:checked")].map((box) => box.value);
  return {outputs, person: outputs.includes("tryon") ? personInput.value.trim() : ""};
}

function describeChoices({outputs, person}) {
  if (!outputs.length) return "";
  const named = outputs.map((group) => GROUP_NAMES[group] || group);
  if (person) named[outputs.indexOf("tryon")] += ` for person ${person}`;
  return `Also asked for: ${named.join(", ")}.`;
}

// ---- cards ---------------------------------------------------------------------------

const cards = $("#cards");
// job id -> its cards (the same photo dropped twice is one job, shown on both), for jobs that have not ended
const tracked = new Map();
const TERMINAL = new Set(["succeeded", "failed", "canceled", "not_found"]);

function percent(fraction) {
  const value = fraction * 100;
  if (value > 0 && value < 0.05) return "< 0.1 %";
  return `${value >= 10 || value === 0 ? value.toFixed(0) : value.toFixed(1)} %`;
}

class Card {
  constructor(file, wanted = {outputs: [], person: ""}) {
    this.file = file;
    this.wanted = wanted;
    this.job = null;
    this.photoUrl = URL.createObjectURL(file);
    this.el = $("#card-template").content.firstElementChild.cloneNode(true);
    this.history = [];
    $(".name", this.el).textContent = file.name || "photo";
    $(".cancel", this.el).setAttribute("aria-label", `Cancel ${file.name || "photo"}`);
    const asked = $(".asked", this.el);
    asked.textContent = describeChoices(wanted);
    asked.hidden = !asked.textContent;
    const photo = $(".photo", this.el);
    photo.addEventListener("error", () => {
      $("figcaption", photo.parentElement).textContent = "Photo (this browser cannot show its format)";
    });
    photo.src = this.photoUrl;
    $(".cancel", this.el).addEventListener("click", () => this.cancel());
    cards.prepend(this.el);
    this.setStatus("submitting", "Sending…");
  }

  setStatus(status, detail) {
    if (this.history[this.history.length - 1] !== status) this.history.push(status);
    this.el.dataset.status = status;
    this.el.dataset.history = this.history.join(" ");
    $(".badge", this.el).textContent = status.replace("_", " ");
    $(".detail", this.el).textContent = detail;
    const live = status === "queued" || status === "running";
    $(".cancel", this.el).hidden = !live || Boolean(this.job && this.job.cancel_requested);
  }

  show(job) {
    this.job = job;
    this.el.dataset.jobId = job.id;
    this.setStatus(job.status, describe(job));
    const watching = tracked.get(job.id) || new Set();
    if (TERMINAL.has(job.status)) {
      watching.delete(this);
      if (job.status === "succeeded") loadResult(this);
    } else {
      watching.add(this);
    }
    if (watching.size) tracked.set(job.id, watching);
    else tracked.delete(job.id);
  }

  async cancel() {
    try {
      this.show(await apiJson(`v1/jobs/${this.job.id}/cancel`, {method: "POST"}));
    } catch (error) {
      $(".detail", this.el).textContent = `Could not cancel: ${error.message}`;
    }
  }
}

function describe(job) {
  switch (job.status) {
    case "queued": {
      const q = job.queue;
      let text = "Waiting in the queue";
      if (q) {
        text += `: position ${q.position}, ${q.ahead} ${q.ahead === 1 ? "job" : "jobs"} ahead`;
        if (q.eta_seconds !== null && q.eta_seconds !== undefined) text += `, about ${Math.ceil(q.eta_seconds)} s`;
      }
      return withLastError(text + ".", job);
    }
    case "running":
      return withLastError(job.cancel_requested ? "Parsing; cancel requested, it stops at the next safe point."
                                                : "Parsing the photo…", job);
    case "succeeded": {
      const s = job.result.summary;
      const seconds = typeof s.inference_seconds === "number" ? ` in ${s.inference_seconds.toFixed(1)} s` : "";
      const persons = typeof s.persons === "number" ? `, ${s.persons} ${s.persons === 1 ? "person" : "persons"}` : "";
      return `Done${seconds}: ${s.classes.length} classes${persons}.`;
    }
    case "failed":
      return `Failed: ${job.error ? job.error.message : "no reason given"}`;
    case "canceled":
      return "Canceled.";
    default:
      return "This job is unknown to the service, or has expired.";
  }
}

function withLastError(text, job) {
  return job.last_error ? `${text} Trying again after: ${job.last_error.message}` : text;
}

// ---- submitting ----------------------------------------------------------------------

async function submit(card, failures = 0) {
  card.setStatus("submitting", "Sending…");
  const form = new FormData();
  form.append("image", card.file, card.file.name || "photo");
  form.append("labels_format", "grayscale");  // the default, asked for: readIds needs ids, not palette colors
  if (card.wanted.outputs.length) form.append("outputs", card.wanted.outputs.join(","));
  if (card.wanted.person) form.append("person", card.wanted.person);
  try {
    const job = await apiJson("v1/jobs", {method: "POST", body: form});
    clearProblem();
    card.show(job);
    nudge();
  } catch (error) {
    if (error.kind === "unauthorized") {
      waitingForKey.add(card);
      card.setStatus("needs_key", error.message);
      showProblem(error);
    } else if (error.transient) {
      const seconds = retryDelay(error, failures + 1);
      card.setStatus("waiting", `Not sent yet. ${error.message} Trying again in ${seconds} s.`);
      showProblem(error, seconds);
      setTimeout(() => submit(card, failures + 1), seconds * 1000);
    } else {
      card.setStatus("failed", `Failed: ${error.message}`);
    }
  }
}

function addFiles(files) {
  const wanted = currentChoices();
  for (const file of files) submit(new Card(file, wanted));
}

const fileInput = $("#file");
fileInput.addEventListener("change", () => {
  addFiles([...fileInput.files]);
  fileInput.value = "";
});
// Photos dropped anywhere on the page are sent: left to the browser, a file dropped
// outside the box would replace the page, and every card with it. The box is lit while
// files are dragged over the page; dragenter and dragleave fire for every element the
// pointer crosses, so the box goes dark only when as many leaves as enters were seen.
const drop = $("#drop");
let dragDepth = 0;
const carriesFiles = (event) => Boolean(event.dataTransfer) && [...event.dataTransfer.types].includes("Files");
window.addEventListener("dragenter", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  dragDepth += 1;
  drop.classList.add("over");
});
window.addEventListener("dragover", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = "copy";
});
window.addEventListener("dragleave", (event) => {
  if (!carriesFiles(event)) return;
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) drop.classList.remove("over");
});
window.addEventListener("drop", (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  dragDepth = 0;
  drop.classList.remove("over");
  addFiles([...event.dataTransfer.files]);
});

// ---- polling -------------------------------------------------------------------------

async function pollForever() {
  let failures = 0;
  for (;;) {
    if (tracked.size === 0) {
      await pause(60 * 1000);
      continue;
    }
    try {
      const ids = [...tracked.keys()];
      for (let start = 0; start < ids.length; start += MAX_IDS) {
        const chunk = ids.slice(start, start + MAX_IDS);
        const body = await apiJson(`v1/jobs?ids=${chunk.map(encodeURIComponent).join(",")}`, {cache: "no-store"});
        for (const job of body.jobs) {
          for (const card of [...(tracked.get(job.id) || [])]) card.show(job);
        }
      }
      if (failures) clearProblem();
      failures = 0;
      await pause(POLL_MS);
    } catch (error) {
      failures += 1;
      if (error.kind === "unauthorized") {
        showProblem(error);
        await pause(MAX_RETRY_S * 1000);  // or until a key is entered
        continue;
      }
      const seconds = retryDelay(error, failures);
      showProblem(error, seconds);
      await pause(seconds * 1000);
    }
  }
}

// ---- a finished job: outputs, legend, people, explorer -------------------------------

// Fetch an output through the API's own route (works for every store, sends the key,
// and keeps canvases untainted); retried while the service is unreachable or busy.
// An output's name in a URL: its folders ("masks/hat.png") stay folders, and everything else is escaped.
function outputPath(name) {
  return name.split("/").map(encodeURIComponent).join("/");
}

async function fetchOutput(card, name) {
  for (let failures = 1; ; failures += 1) {
    try {
      return await (await api(`v1/jobs/${card.job.id}/outputs/${outputPath(name)}`)).blob();
    } catch (error) {
      if (!error.transient) throw error;
      const seconds = retryDelay(error, failures);
      $(".detail", card.el).textContent = `Loading the results. ${error.message} Trying again in ${seconds} s.`;
      await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    }
  }
}

// Outputs fetched at once per card: a job with every group has forty and more, and each
// request holds one of the API's threads while it is served.
const OUTPUT_FETCHES = 4;

async function mapLimited(items, limit, work) {
  const results = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index]);
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

async function loadResult(card) {
  const job = card.job;
  const names = Object.keys(job.result.outputs);
  let blobs;
  try {
    blobs = Object.fromEntries(await mapLimited(names, OUTPUT_FETCHES, async (name) => [name, await fetchOutput(card, name)]));
  } catch (error) {
    $(".detail", card.el).textContent = `${describe(job)} The outputs could not be loaded: ${error.message}`;
    return;
  }
  card.urls = Object.fromEntries(names.map((name) => [name, URL.createObjectURL(blobs[name])]));
  const views = card.el.querySelectorAll(".view");
  for (const [view, name] of [[views[1], "colored.png"], [views[2], "overlay.jpg"]]) {
    if (!card.urls[name]) continue;
    $("img", view).src = card.urls[name];
    view.hidden = false;
  }
  buildTryon(card);
  buildMaskLinks(card);
  if (blobs["labels.png"]) {
    try {
      await explore(card, blobs);
    } catch (error) {
      $(".detail", card.el).textContent = `${describe(job)} The explorer could not draw: ${error.message}`;
    }
  }
  if (card.explorer) {
    try {
      showKeypoints(card, blobs["keypoints.json"] ? JSON.parse(await blobs["keypoints.json"].text()) : null);
    } catch (error) {
      $(".detail", card.el).textContent = `${describe(job)} The skeleton could not be drawn: ${error.message}`;
    }
  }
  // Every output is offered somewhere: those no section above linked, here.
  const linked = new Set([...card.el.querySelectorAll("a[data-output]")].map((link) => link.dataset.output));
  const files = $(".downloads .files", card.el);
  for (const name of names) {
    if (!linked.has(name)) files.append(outputLink(card, name, name), " ");
  }
  $(".downloads", card.el).hidden = false;
  card.el.dataset.ready = "true";
}

// A link that saves output `name` (fetched already, with the key) under the job's id.
function outputLink(card, name, text) {
  const link = document.createElement("a");
  link.href = card.urls[name];
  link.download = `${card.job.id}-${name.replaceAll("/", "-")}`;
  link.textContent = text;
  link.dataset.output = name;
  return link;
}

// The per-class masks (outputs masks), named by their classes.
function buildMaskLinks(card) {
  const masks = Object.keys(card.urls).filter((name) => name.startsWith("masks/"));
  if (!masks.length) return;
  const byslug = new Map(card.job.result.summary.classes.map((entry) => [slug(entry.name), entry.name]));
  const line = $(".downloads .masks", card.el);
  for (const name of masks) {
    const file = name.slice("masks/".length, -".png".length);
    line.append(outputLink(card, name, byslug.get(file) || file), " ");
  }
  line.hidden = false;
}

// A class name as the outputs' file names spell it (common.labels.class_slug).
function slug(name) {
  return name.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "");
}

// The try-on pack (outputs tryon): its files as thumbnails, by size, or why there is none.
function buildTryon(card) {
  const tryon = card.job.result.summary.tryon;
  if (!tryon) return;
  const section = $(".tryon", card.el);
  $("h3", section).textContent = `Try-on pack for person ${tryon.person}`;
  const note = $(".tryon-note", section);
  const files = (tryon.files || []).filter((name) => card.urls[name]);
  // Files left out of a pack that was made (both agnostic images at every size when a
  // hip was not found): named once each, with the reasons given.
  const omitted = Object.entries(tryon.omitted || {});
  const leftOut = [...new Set(omitted.map(([name]) => name.split("/").pop()))];
  const reasons = [...new Set(omitted.map(([, why]) => sentence(why)))];
  if (tryon.absent_reason) note.textContent = `Not made: ${sentence(tryon.absent_reason)}`;
  else if (leftOut.length) note.textContent = `Left out: ${leftOut.join(", ")}. ${reasons.join(" ")}`;
  else if (!files.length) note.textContent = "The pack holds no files.";
  note.hidden = !note.textContent;
  const bySize = new Map(Object.keys(TRYON_SIZES).map((size) => [size, []]));
  for (const name of files) {
    const size = name.split("/").slice(-2, -1)[0] || "photo";  // tryon/<size>/<file>
    if (!bySize.has(size)) bySize.set(size, []);
    bySize.get(size).push(name);
  }
  for (const [size, names] of bySize) {
    if (!names.length) continue;
    const group = document.createElement("div");
    group.className = "tryon-size";
    group.dataset.size = size;
    const heading = document.createElement("h4");
    heading.textContent = sizeTitle(size, (tryon.sizes || {})[size]);
    const list = document.createElement("ul");
    list.className = "thumbs";
    for (const name of names) {
      const item = document.createElement("li");
      const link = outputLink(card, name, name.split("/").pop());
      const thumb = document.createElement("img");
      thumb.src = card.urls[name];
      thumb.alt = "";  // the link's text names it
      link.prepend(thumb);
      item.append(link);
      list.append(item);
    }
    group.append(heading, list);
    section.append(group);
  }
  section.hidden = false;
}

function sizeTitle(size, info) {
  const title = TRYON_SIZES[size] || size;
  if (!info || !info.width) return title;
  if (size === "photo") return `${title}, ${info.width} × ${info.height}`;
  const scale = typeof info.scale === "number" ? `, the photo scaled by ${+info.scale.toFixed(3)}` : "";
  const padded = Array.isArray(info.pad) && info.pad.some((v) => v > 0) ? " and padded" : "";
  return `${title}${scale}${padded}`;
}

// A reason from the service as a sentence of its own.
function sentence(text) {
  const trimmed = String(text).trim();
  return /[.!?]$/.test(trimmed) ? trimmed : `${trimmed}.`;
}

// Exact pixel values of an 8-bit grayscale PNG (class or person ids), at width x height.
// It reads the red channel, which is the value only in grayscale: persons.png always is,
// and labels.png is because the page asks for it (explore refuses a palette one).
async function readIds(blob, width, height) {
  const bitmap = await createImageBitmap(blob, {
    colorSpaceConversion: "none", premultiplyAlpha: "none",
    resizeWidth: width, resizeHeight: height, resizeQuality: "pixelated"});
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", {willReadFrequently: true});
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = context.getImageData(0, 0, width, height).data;
  const ids = new Uint8Array(width * height);
  for (let i = 0; i < ids.length; i += 1) ids[i] = rgba[i * 4];
  return ids;
}

// The photo's pixels at width x height, EXIF orientation applied as the outputs have it;
// null when this browser cannot decode its format (TIFF): the explorer then draws on gray.
async function readPhoto(file, width, height) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, {imageOrientation: "from-image", resizeWidth: width,
                                            resizeHeight: height, resizeQuality: "high"});
  } catch (error) {
    return null;
  }
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", {willReadFrequently: true});
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  return context.getImageData(0, 0, width, height).data;
}

async function explore(card, blobs) {
  const summary = card.job.result.summary;
  const scale = Math.min(1, EXPLORE_MAX_SIDE / Math.max(summary.width, summary.height));
  const width = Math.max(1, Math.round(summary.width * scale));
  const height = Math.max(1, Math.round(summary.height * scale));
  if (card.job.labels_format && card.job.labels_format !== "grayscale") {
    throw new Error(`labels.png is in ${card.job.labels_format} format; the explorer reads grayscale ids.`);
  }
  const people = Array.isArray(summary.people) && blobs["persons.png"] ? summary.people : null;
  const [photo, labels, persons] = await Promise.all([
    readPhoto(card.file, width, height),
    readIds(blobs["labels.png"], width, height),
    people ? readIds(blobs["persons.png"], width, height) : null,
  ]);
  const canvas = $(".explorer", card.el);
  canvas.width = width;
  canvas.height = height;
  const state = {width, height, scale, photo, labels, persons, people: people || [],
                 colors: new Map(summary.classes.map((c) => [c.id, c.color])),
                 hidden: new Set(), highlight: null, pinned: null};
  card.explorer = state;
  const draw = () => drawExplorer(canvas, state);
  buildLegend(card, state, draw);
  buildPeople(card, state, draw);
  const personAt = (event) => {  // the person id under the pointer, or null
    const x = Math.floor(event.offsetX * width / canvas.clientWidth);
    const y = Math.floor(event.offsetY * height / canvas.clientHeight);
    return state.persons[Math.max(0, Math.min(height - 1, y)) * width + Math.max(0, Math.min(width - 1, x))] || null;
  };
  canvas.addEventListener("mousemove", (event) => {
    if (!state.persons || state.pinned !== null) return;
    const id = personAt(event);
    if (id !== state.highlight) highlight(card, state, id, draw);
  });
  canvas.addEventListener("mouseleave", () => highlight(card, state, state.pinned, draw));
  // A click keeps the person under the pointer picked out; a click on them again, or off
  // every person, lets go.
  canvas.addEventListener("click", (event) => {
    if (!state.persons) return;
    const id = personAt(event);
    pin(card, state, id !== null && id !== state.pinned ? id : null, draw, id);
  });
  $(".explore", card.el).hidden = false;
  draw();
}

// Each person's skeleton from keypoints.json (OpenPose BODY_25, in the photo's pixels) over
// the explorer, as SVG in the photo's own coordinates: it scales with the canvas, and
// leaves the canvas's pixels as the explorer drew them. A point with confidence 0 is
// missing (OpenPose writes 0, 0, 0), and so is every limb that touches it.
function showKeypoints(card, doc) {
  const summary = card.job.result.summary;
  const svg = $(".skeleton", card.el);
  const toggle = $(".skeleton-toggle", card.el);
  const note = $(".keypoints-note", card.el);
  let bodies = 0;
  if (doc) {
    svg.setAttribute("viewBox", `0 0 ${summary.width} ${summary.height}`);
    const radius = Math.max(2, Math.max(summary.width, summary.height) / 160);
    for (const person of doc.people || []) {
      const flat = person.pose_keypoints_2d || [];
      const points = [];
      for (let i = 0; i + 2 < flat.length; i += 3) points.push(flat[i + 2] > 0 ? [flat[i], flat[i + 1]] : null);
      if (!points.some(Boolean)) continue;
      const body = document.createElementNS(SVG_NS, "g");
      const id = Array.isArray(person.person_id) ? person.person_id[0] : person.person_id;
      body.dataset.personId = id;
      if (!(id > 0)) body.classList.add("unmatched");  // a submitted body that fell on nobody
      for (const [a, b] of BODY_25_LIMBS) {
        if (!points[a] || !points[b]) continue;
        const line = document.createElementNS(SVG_NS, "line");
        for (const [attribute, value] of [["x1", points[a][0]], ["y1", points[a][1]], ["x2", points[b][0]],
                                          ["y2", points[b][1]]]) line.setAttribute(attribute, value);
        body.append(line);
      }
      points.forEach((point, index) => {
        if (!point) return;
        const dot = document.createElementNS(SVG_NS, "circle");
        dot.setAttribute("cx", point[0]);
        dot.setAttribute("cy", point[1]);
        dot.setAttribute("r", radius);
        dot.dataset.point = index;
        body.append(dot);
      });
      svg.append(body);
      bodies += 1;
    }
    const box = $("input", toggle);
    const follow = () => svg.toggleAttribute("hidden", !box.checked);
    box.addEventListener("change", follow);
    follow();
    toggle.hidden = bodies === 0;
  }
  note.textContent = keypointsNote(summary.keypoints, doc !== null, bodies);
  note.hidden = !note.textContent;
}

// What the page says about the job's keypoints: where they came from, and why any are missing.
function keypointsNote(about, hasFile, bodies) {
  if (!about) return hasFile && bodies === 0 ? "keypoints.json holds no body to draw." : "";
  const model = typeof about.model === "string" ? about.model
    : about.model ? [about.model.engine, about.model.model, about.model.version].filter(Boolean).join(" ") : "";
  const source = about.source === "submitted" ? "the keypoints sent with the photo"
                                              : `the pose model${model ? ` (${model})` : ""}`;
  const count = `${bodies} ${bodies === 1 ? "body" : "bodies"}`;
  let text = bodies ? `Skeleton of ${count} from ${source}.` : `No skeleton to draw from ${source}.`;
  if (about.reason) text += ` Missing: ${sentence(about.reason)}`;
  if (about.unmatched) text += ` ${about.unmatched} submitted ${about.unmatched === 1 ? "body fell" : "bodies fell"} ` +
                               "on no person (drawn dashed).";
  return text;
}

function drawExplorer(canvas, state) {
  const {width, height, photo, labels, persons, colors, hidden, highlight: person} = state;
  const image = new ImageData(width, height);
  const out = image.data;
  for (let i = 0, p = 0; i < labels.length; i += 1, p += 4) {
    const id = labels[i];
    if (hidden.has(id)) continue;  // left transparent
    let r = photo ? photo[p] : 128, g = photo ? photo[p + 1] : 128, b = photo ? photo[p + 2] : 128;
    const color = id > 0 ? colors.get(id) : null;
    if (color) {
      r += (color[0] - r) * PART_ALPHA;
      g += (color[1] - g) * PART_ALPHA;
      b += (color[2] - b) * PART_ALPHA;
    }
    if (person !== null && persons[i] !== person) {
      r *= DIM; g *= DIM; b *= DIM;
    }
    out[p] = r; out[p + 1] = g; out[p + 2] = b; out[p + 3] = 255;
  }
  const context = canvas.getContext("2d");
  context.putImageData(image, 0, 0);
  const chosen = person !== null && state.people.find((entry) => entry.id === person);
  if (chosen && Array.isArray(chosen.bbox)) {
    const [x, y, w, h] = chosen.bbox.map((v) => v * state.scale);
    context.strokeStyle = "#ffd400";
    context.lineWidth = Math.max(2, Math.round(Math.max(width, height) / 300));
    context.strokeRect(x, y, w, h);
  }
}

function buildLegend(card, state, draw) {
  const list = $(".legend", card.el);
  for (const entry of card.job.result.summary.classes) {
    const item = document.createElement("li");
    item.dataset.classId = entry.id;
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = true;
    box.addEventListener("change", () => {
      if (box.checked) state.hidden.delete(entry.id);
      else state.hidden.add(entry.id);
      draw();
    });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${entry.color.join(",")})`;
    const name = document.createElement("span");
    name.className = "class-name";
    name.textContent = entry.name;
    const share = document.createElement("span");
    share.className = "share";
    const score = typeof entry.score === "number" ? ` · score ${entry.score.toFixed(2)}` : "";
    share.textContent = `${percent(entry.pixel_fraction)}${score}`;
    label.append(box, swatch, name, share);
    item.append(label);
    list.append(item);
  }
}

function buildPeople(card, state, draw) {
  const list = $(".people", card.el);
  const note = $(".people-note", card.el);
  note.textContent = peopleNote(card.job.result.summary, state.persons !== null);
  if (!state.persons) return;
  for (const person of state.people) {
    const item = document.createElement("li");
    item.dataset.personId = person.id;
    const button = document.createElement("button");
    button.type = "button";
    button.setAttribute("aria-pressed", "false");
    const parts = (person.parts || []).slice().sort((a, b) => b.pixel_fraction - a.pixel_fraction)
      .slice(0, 4).map((part) => `${part.name} ${percent(part.pixel_fraction)}`).join(", ");
    const score = typeof person.score === "number" ? `, score ${person.score.toFixed(2)}` : "";
    button.innerHTML = "<strong></strong> <span class=\"share\"></span><small></small>";
    $("strong", button).textContent = `Person ${person.id}`;
    $(".share", button).textContent = `${percent(person.pixel_fraction)} of the photo${score}`;
    $("small", button).textContent = parts;
    button.addEventListener("mouseenter", () => highlight(card, state, person.id, draw));
    button.addEventListener("focus", () => highlight(card, state, person.id, draw));
    button.addEventListener("mouseleave", () => highlight(card, state, state.pinned, draw));
    button.addEventListener("blur", () => highlight(card, state, state.pinned, draw));
    button.addEventListener("click", () => pin(card, state, state.pinned === person.id ? null : person.id, draw,
                                                person.id));
    item.append(button);
    if (Array.isArray(person.garments)) item.append(garmentList(card, person));
    list.append(item);
  }
}

// A person's garments (outputs garments): name, share, dominant colours, and the cut-out.
function garmentList(card, person) {
  const list = document.createElement("ul");
  list.className = "garments";
  list.setAttribute("aria-label", `Garments of person ${person.id}`);
  if (!person.garments.length) {
    const item = document.createElement("li");
    item.className = "none";
    item.textContent = "No garments found.";
    list.append(item);
  }
  for (const garment of person.garments) {
    const item = document.createElement("li");
    item.dataset.classId = garment.id;
    const name = document.createElement("span");
    name.className = "garment-name";
    name.textContent = garment.name;
    const share = document.createElement("span");
    share.className = "share";
    share.textContent = percent(garment.pixel_fraction);
    const colors = document.createElement("span");
    colors.className = "colors";
    for (const color of garment.colors || []) {
      const chip = document.createElement("span");
      chip.className = "color";
      const swatch = document.createElement("span");
      swatch.className = "color-swatch";
      swatch.setAttribute("role", "img");
      swatch.style.background = color.hex;
      swatch.dataset.hex = color.hex;
      const label = `${color.name}, ${percent(color.share)} of the ${garment.name.toLowerCase()}`;
      swatch.title = label;
      swatch.setAttribute("aria-label", label);
      chip.append(swatch, color.name);
      colors.append(chip, " ");
    }
    item.append(name, " ", share, " ", colors);
    if (card.urls[garment.cutout]) {
      const link = outputLink(card, garment.cutout, "cut-out");
      link.setAttribute("aria-label", `Cut-out of person ${person.id}'s ${garment.name}`);
      item.append(" ", link);
    }
    list.append(item);
  }
  return list;
}

// What the people list says above its entries (empty when the entries say it all).
function peopleNote(summary, hasMap) {
  const count = typeof summary.persons === "number" ? summary.persons : null;
  const some = `${count} ${count === 1 ? "person" : "persons"} detected`;
  if (summary.no_person_detected === true || count === 0) return "No person detected.";
  if (count === null) return "This model does not tell persons apart.";
  if (!hasMap || !Array.isArray(summary.people)) return `${some}; this job has no person map to outline them.`;
  if (summary.people.length === 0) return `${some}, but none covers a body part found in the photo: nobody to outline.`;
  if (summary.people_truncated) return `${some}; the ${summary.people.length} best-scoring are listed.`;
  return "";
}

// Keep person `id` picked out (null: none); `fallback` is highlighted when nobody is pinned.
function pin(card, state, id, draw, fallback = null) {
  state.pinned = id;
  for (const item of card.el.querySelectorAll(".people > li")) {
    $("button", item).setAttribute("aria-pressed", String(Number(item.dataset.personId) === id));
  }
  highlight(card, state, id ?? fallback, draw);
}

const EXPLORER_LABEL = "The photo with each class's color";
function highlight(card, state, id, draw) {
  if (state.highlight === id) return;
  state.highlight = id;
  $(".explorer", card.el).setAttribute("aria-label", id === null ? EXPLORER_LABEL
                                                                   : `${EXPLORER_LABEL}; person ${id} picked out`);
  for (const item of card.el.querySelectorAll(".people > li")) {
    item.classList.toggle("lit", Number(item.dataset.personId) === id);
  }
  for (const body of card.el.querySelectorAll(".skeleton g")) {
    body.classList.toggle("dim", id !== null && Number(body.dataset.personId) !== id);
  }
  if (id === null) delete card.el.dataset.highlight;
  else card.el.dataset.highlight = id;
  draw();
}

pollForever();
