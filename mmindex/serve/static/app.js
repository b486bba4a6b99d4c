// The search page of `mmindex serve`: plain DOM code, no framework. Everything that comes from the server or
// the user goes into the page as text (textContent, attributes), never as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const MEDIA = ["image", "audio"];
  const PARTS = ["text", ...MEDIA];
  const SNIPPET = 280;

  const state = {
    info: null,
    parts: { image: null, audio: null }, // {name, file (a Blob) or link (a /media/ path), preview}
    weights: { text: 1, image: 1, audio: 1 },
    inflight: null,
  };

  /** An element with attributes and children; strings become text nodes, so data is never parsed as HTML. */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  /** A URL from the server or the address bar, kept only if it stays on this server (no javascript:, no hosts). */
  function ownUrl(value, prefix = "/") {
    if (typeof value !== "string" || !value) return null;
    try {
      const url = new URL(value, location.href);
      return url.origin === location.origin && url.pathname.startsWith(prefix) ? url.pathname + url.search : null;
    } catch {
      return null;
    }
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = !message;
  }

  /** The server's {"error": "..."} sentence, or the best readable line when the reply is not that. */
  async function replyError(response) {
    let text = "";
    try {
      text = await response.text();
      const body = JSON.parse(text);
      if (typeof body.error === "string") return body.error;
      if (typeof body.detail === "string") return body.detail;
    } catch {
      // not JSON: fall through to the status line
    }
    const status = `The server answered ${response.status} ${response.statusText || ""}`.trim();
    return text ? `${status}: ${text.slice(0, 200)}` : `${status}.`;
  }

  // ---- datasets and spaces (GET /info) ----

  function currentDataset() {
    return (state.info?.datasets || []).find((d) => d.name === $("dataset").value) || null;
  }

  function fillSpaces(wanted) {
    const spaces = currentDataset()?.spaces || [];
    $("space").replaceChildren(...spaces.map((s) => el("option", { value: s.name }, s.name)));
    if (wanted && spaces.some((s) => s.name === wanted)) $("space").value = wanted;
    describe();
  }

  function describe() {
    const dataset = currentDataset();
    const space = (dataset?.spaces || []).find((s) => s.name === $("space").value);
    $("about").hidden = !space;
    if (!dataset) {
      $("info").textContent = "No dataset is served.";
      return;
    }
    const parts = [`${dataset.name}: ${dataset.samples} samples`];
    if (space) parts.push(`space ${space.name}`, `queries by ${(space.query_modalities || []).join(", ")}`);
    $("info").textContent = parts.join(" · ");
    if (!space) return;
    $("description").textContent = space.description || "";
    $("indexes").replaceChildren(...(space.indexes || []).map((i) => {
      const recall = typeof i.recall === "number" ? `, measured recall ${i.recall.toFixed(2)}` : "";
      return el("li", {}, `${i.modality}: ${i.count} vectors, ${i.type} index${recall}`);
    }));
  }

  async function loadInfo() {
    const response = await fetch("/info");
    if (!response.ok) throw new Error(await replyError(response));
    state.info = await response.json();
    const names = (state.info.datasets || []).map((d) => d.name);
    $("dataset").replaceChildren(...names.map((n) => el("option", { value: n }, n)));
    const limits = state.info.limits || {};
    if (Number.isInteger(limits.max_k)) $("k").max = limits.max_k;
    if (Number.isInteger(limits.text_bytes)) $("q").maxLength = limits.text_bytes;
    fillSpaces();
  }

  // ---- the query: text, media parts, weights ----

  function setPart(modality, part) {
    const old = state.parts[modality];
    if (old?.preview?.startsWith("blob:")) URL.revokeObjectURL(old.preview);
    state.parts[modality] = part;
    renderParts();
  }

  function fromFile(file) {
    const kind = MEDIA.find((m) => file.type.startsWith(`${m}/`))
      || (/\.(jpe?g|png|webp|gif|bmp|tiff?)$/i.test(file.name) ? "image" : null)
      || (/\.(wav|flac|ogg|mp3|m4a|opus)$/i.test(file.name) ? "audio" : null);
    if (!kind) {
      showError(`${file.name || "That file"} is neither an image nor an audio clip.`);
      return false;
    }
    const limit = state.info?.limits?.upload_bytes;
    if (limit && file.size > limit) {
      const mb = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;
      showError(`${file.name} is ${mb(file.size)}; this server takes uploads up to ${mb(limit)}.`);
      return false;
    }
    const preview = kind === "image" ? URL.createObjectURL(file) : null;
    setPart(kind, { name: file.name || `pasted ${kind}`, file, preview });
    return true;
  }

  function activeParts() {
    const parts = MEDIA.filter((m) => state.parts[m]);
    return $("q").value.trim() ? ["text", ...parts] : parts;
  }

  function renderParts() {
    $("parts").replaceChildren(...MEDIA.filter((m) => state.parts[m]).map((m) => {
      const part = state.parts[m];
      return el("li", {},
        part.preview ? el("img", { src: part.preview, alt: "", class: "preview" }) : null,
        `${m}: ${part.name}`,
        el("button", { type: "button", "aria-label": `Remove the ${m} ${part.name}`, onclick: () => setPart(m, null) },
          "Remove"));
    }));
    renderSliders();
  }

  function renderSliders() {
    const parts = activeParts();
    $("weights").hidden = parts.length < 2;
    $("sliders").replaceChildren(...(parts.length < 2 ? [] : parts.map((m) => {
      const id = `weight-${m}`;
      const out = el("output", { for: id }, state.weights[m].toFixed(1));
      const input = el("input", {
        id, type: "range", min: 0, max: 2, step: 0.1, value: state.weights[m],
        oninput: (e) => { state.weights[m] = Number(e.target.value); out.textContent = state.weights[m].toFixed(1); },
      });
      return el("label", { for: id }, m, input, out);
    })));
  }

  // ---- the address bar: the query as a link that can be shared and reloaded ----

  function toParams() {
    const params = new URLSearchParams();
    const text = $("q").value.trim();
    if (text) params.set("q", text);
    for (const m of MEDIA) if (state.parts[m]?.link) params.set(m, state.parts[m].link);
    if ($("modality").value) params.set("modality", $("modality").value);
    if ($("k").value && $("k").value !== $("k").defaultValue) params.set("k", $("k").value);
    if ($("dedup").checked) params.set("dedup", "1");
    if ($("dataset").options.length > 1) params.set("dataset", $("dataset").value);
    if ($("space").options.length > 1) params.set("space", $("space").value);
    const parts = activeParts();
    if (parts.length > 1) for (const m of parts) if (state.weights[m] !== 1) params.set(`w_${m}`, state.weights[m]);
    return params;
  }

  /** Puts the address bar's query into the form; says whether there is anything to search for. */
  function fromParams(params) {
    $("q").value = params.get("q") || "";
    $("modality").value = ["image", "audio", "text"].includes(params.get("modality")) ? params.get("modality") : "";
    $("k").value = params.get("k") || $("k").defaultValue;
    $("dedup").checked = params.get("dedup") === "1";
    const dataset = params.get("dataset");
    if (dataset && !(state.info?.datasets || []).some((d) => d.name === dataset)) {
      showError(`This link asks for the dataset "${dataset}", which this server does not serve.`);
      return false;
    }
    if (dataset) $("dataset").value = dataset;
    const space = params.get("space");
    fillSpaces(space);
    if (space && $("space").value !== space) {
      showError(`This link asks for the space "${space}", which the dataset "${$("dataset").value}" does not have.`);
      return false;
    }
    for (const m of PARTS) {
      const weight = Number(params.get(`w_${m}`));
      state.weights[m] = params.has(`w_${m}`) && Number.isFinite(weight) ? Math.min(Math.max(weight, 0), 2) : 1;
    }
    for (const m of MEDIA) {
      const link = ownUrl(params.get(m), "/media/");
      setPart(m, link ? { name: sampleOf(link), link, preview: m === "image" ? link : null } : null);
    }
    return activeParts().length > 0;
  }

  /** The sample key in a /media/DATASET/KEY/MEMBER link, for naming a query part. */
  function sampleOf(link) {
    const key = link.split("/").slice(3, -1).join("/");
    try {
      return decodeURIComponent(key);
    } catch {
      return key; // a malformed %-escape: show it as it is
    }
  }

  // ---- searching (POST /search) and showing the hits ----

  async function partBlob(part) {
    if (part.file) return part.file;
    const response = await fetch(part.link);
    if (!response.ok) throw new Error(`Cannot fetch ${part.link}: ${await replyError(response)}`);
    part.file = await response.blob();
    return part.file;
  }

  async function search({ push = true } = {}) {
    showError("");
    const parts = activeParts();
    if (!parts.length) {
      showError("Type a text, or add an image or an audio clip, to search.");
      $("q").focus();
      return;
    }
    const params = toParams();
    const link = params.toString() ? `/?${params}` : "/";
    if (push && link !== location.pathname + location.search) history.pushState(null, "", link);
    document.title = `${$("q").value.trim() || parts.join(" + ")} · mmindex`;

    state.inflight?.abort();
    const inflight = new AbortController();
    state.inflight = inflight;
    $("status").textContent = "Searching…";
    $("results").setAttribute("aria-busy", "true");
    try {
      const form = new FormData();
      if (parts.includes("text")) form.set("text", $("q").value.trim());
      for (const m of MEDIA) if (state.parts[m]) form.set(m, await partBlob(state.parts[m]), state.parts[m].name);
      if (parts.length > 1) {
        form.set("weights", JSON.stringify(Object.fromEntries(parts.map((m) => [m, state.weights[m]]))));
      }
      if ($("modality").value) form.set("modality", $("modality").value);
      form.set("k", $("k").value || $("k").defaultValue);
      if ($("dedup").checked) form.set("dedup", "true");
      if ($("dataset").value) form.set("dataset", $("dataset").value);
      if ($("space").value) form.set("space", $("space").value);
      const response = await fetch("/search", { method: "POST", body: form, signal: inflight.signal });
      if (!response.ok) throw new Error(await replyError(response));
      render(await response.json());
    } catch (err) {
      if (err.name === "AbortError") return;
      $("status").textContent = "";
      showError(err instanceof TypeError ? "Cannot reach the server: is `mmindex serve` still running?" : err.message);
    } finally {
      if (state.inflight === inflight) {
        state.inflight = null;
        $("results").removeAttribute("aria-busy");
      }
    }
  }

  function render(reply) {
    const hits = reply.hits || [];
    const took = typeof reply.took_ms === "number" ? ` in ${Math.round(reply.took_ms)} ms` : "";
    $("status").textContent = hits.length ? `${hits.length} result${hits.length > 1 ? "s" : ""}${took}` : "No results.";
    $("results").replaceChildren(...hits.map(card));
  }

  function card(hit) {
    const media = hit.media || {};
    const caption = typeof hit.caption === "string" ? hit.caption.trim() : "";
    // a sample without a caption is named by its source's file name
    const label = caption || (typeof hit.name === "string" && hit.name) || hit.key;
    const image = ownUrl(media.image);
    const thumbnail = ownUrl(hit.thumbnail) || image;
    const audio = ownUrl(media.audio);
    const text = ownUrl(media.text);
    const item = el("li", { class: "hit", "data-modality": hit.modality, "data-key": hit.key });
    if (thumbnail) {
      item.append(el("a", { href: image || thumbnail, class: "thumb" },
        el("img", { src: thumbnail, alt: label, loading: "lazy", decoding: "async" })));
    }
    if (audio) {
      const player = el("audio", { controls: true, preload: "metadata", src: audio,
        "aria-label": `Play ${label}` });
      const note = el("p", { class: "note" }, "This clip cannot be played here.");
      player.addEventListener("error", () => player.replaceWith(note));
      item.append(player);
    }
    if (caption) {
      const short = caption.length > SNIPPET ? `${caption.slice(0, SNIPPET).trimEnd()}…` : caption;
      item.append(el("p", { class: "snippet" }, short));
    } else if (label !== hit.key) {
      item.append(el("p", { class: "snippet name" }, label));
    }
    if (text && caption.length > SNIPPET) item.append(el("a", { href: text }, "Full text"));
    item.append(el("p", { class: "meta" },
      el("span", { class: `badge ${hit.modality}` }, hit.modality),
      el("span", {}, `score ${Number(hit.score).toFixed(3)}`),
      el("span", { class: "key", title: hit.key }, `#${hit.rank} ${hit.key}`)));
    const query = hit.modality === "image" ? image : hit.modality === "audio" ? audio : null;
    if (query || hit.modality === "text") {
      item.append(el("button", { type: "button", onclick: () => searchWith(hit, query, caption) },
        `Search with this ${hit.modality}`));
    }
    return item;
  }

  /** "Search with this": the hit's own media become the whole next query. */
  async function searchWith(hit, link, caption) {
    $("q").value = "";
    for (const m of MEDIA) setPart(m, null);
    if (hit.modality === "text") {
      const full = ownUrl(hit.media?.text);
      const reply = full && caption.length > SNIPPET ? await fetch(full) : null;
      $("q").value = reply?.ok ? await reply.text() : caption;
    } else {
      setPart(hit.modality, { name: hit.key, link, preview: hit.modality === "image" ? link : null });
    }
    renderSliders();
    await search();
    window.scrollTo(0, 0);
    $("q").focus();
  }

  // ---- wiring ----

  function wire() {
    $("search").addEventListener("submit", (e) => { e.preventDefault(); search(); });
    $("q").addEventListener("input", renderSliders);
    $("dedup").addEventListener("change", () => { if (activeParts().length) search(); });
    for (const id of ["modality", "space"]) {
      $(id).addEventListener("change", () => { describe(); if (activeParts().length) search(); });
    }
    $("dataset").addEventListener("change", () => { fillSpaces(); if (activeParts().length) search(); });
    $("file").addEventListener("change", (e) => {
      const [file] = e.target.files;
      e.target.value = "";
      if (file && fromFile(file)) search();
    });
    const drop = $("drop");
    // Files dropped anywhere on the page become the query, so a miss never navigates away from the results.
    document.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) drop.classList.remove("over"); });
    document.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      const [file] = e.dataTransfer?.files || [];
      if (file && fromFile(file)) search();
    });
    document.addEventListener("paste", (e) => {
      const file = [...(e.clipboardData?.files || [])].find((f) => /^(image|audio)\//.test(f.type));
      if (file && fromFile(file)) search();
    });
    window.addEventListener("popstate", () => {
      if (fromParams(new URLSearchParams(location.search))) search({ push: false });
      else $("results").replaceChildren();
    });
  }

  async function start() {
    wire();
    try {
      await loadInfo();
    } catch (err) {
      $("info").textContent = "";
      const why = err instanceof TypeError ? "the server does not answer" : err.message;
      showError(`Cannot read this server's datasets: ${why}`);
      return;
    }
    const params = new URLSearchParams(location.search);
    if (params.has("token")) { // the server now holds it in a cookie: keep it out of links that get shared
      params.delete("token");
      history.replaceState(null, "", params.toString() ? `/?${params}` : "/");
    }
    if (fromParams(params)) search({ push: false });
  }

  start();
})();
