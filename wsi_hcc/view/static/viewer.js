// The slide viewer: Deep Zoom tiles drawn on a canvas, pan (drag) and zoom (wheel, buttons, keys),
// overlay tiles and tumour-region polygons on top, a scale bar, the cursor's level-0 position and the
// values of the model tile under it. View state: the level-0 point at the canvas centre and the
// level-0 pixels per CSS pixel.
"use strict";

const slideId = decodeURIComponent(location.pathname.split("/").pop());
const canvas = document.getElementById("canvas");
const ctx = canvas.getContext("2d");
const view = { cx: 0, cy: 0, scale: 1 };
const images = new Map();          // url -> Image (loaded or loading)
const MAX_IMAGES = 2000;
let info = null, regions = [], pending = 0, idleWaiters = [], drawQueued = false;
const layerState = {};             // name -> {on, opacity}

function dzScale(level) { return 2 ** (info.levels - 1 - level); }
function levelSize(level) {
  const s = dzScale(level);
  return [Math.max(1, Math.ceil(info.width / s)), Math.max(1, Math.ceil(info.height / s))];
}
function fitScale() {
  return Math.max(info.width / canvas.clientWidth, info.height / canvas.clientHeight) * 1.02;
}

function image(url, request) {
  let img = images.get(url);
  if (img || !request) return img;
  img = new Image();
  pending++;
  const done = () => { pending--; img.done = true; queueDraw(); };
  img.onload = done;
  img.onerror = () => { img.failed = true; done(); };
  img.src = url;
  images.set(url, img);
  if (images.size > MAX_IMAGES) images.delete(images.keys().next().value);  // oldest first
  return img;
}

// Draw the tiles of one Deep Zoom level that intersect the view; `urlOf(col,row)` names each tile.
function drawLevel(level, urlOf, request, smooth) {
  const s = dzScale(level), tile = info.tile_px, dpr = window.devicePixelRatio || 1;
  const [lw, lh] = levelSize(level);
  const halfW = canvas.clientWidth / 2 * view.scale, halfH = canvas.clientHeight / 2 * view.scale;
  const x0 = view.cx - halfW, y0 = view.cy - halfH;
  const c0 = Math.max(0, Math.floor(x0 / (tile * s))), c1 = Math.min(Math.ceil(lw / tile) - 1, Math.floor((view.cx + halfW) / (tile * s)));
  const r0 = Math.max(0, Math.floor(y0 / (tile * s))), r1 = Math.min(Math.ceil(lh / tile) - 1, Math.floor((view.cy + halfH) / (tile * s)));
  const px = v => Math.round((v - x0) / view.scale * dpr), py = v => Math.round((v - y0) / view.scale * dpr);
  for (let row = r0; row <= r1; row++) {
    for (let col = c0; col <= c1; col++) {
      const img = image(urlOf(col, row), request);
      if (!img || !img.complete || img.failed || !img.naturalWidth) continue;
      const tx = col * tile * s, ty = row * tile * s;
      const dx = px(tx), dy = py(ty);
      const dw = px(tx + img.naturalWidth * s) - dx, dh = py(ty + img.naturalHeight * s) - dy;
      ctx.imageSmoothingEnabled = smooth && dw < img.naturalWidth;
      ctx.drawImage(img, dx, dy, dw, dh);
    }
  }
}

function draw() {
  drawQueued = false;
  const dpr = window.devicePixelRatio || 1;
  const w = Math.round(canvas.clientWidth * dpr), h = Math.round(canvas.clientHeight * dpr);
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  ctx.globalAlpha = 1;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, w, h);
  const wanted = Math.max(0, Math.min(info.levels - 1,
    info.levels - 1 - Math.floor(Math.log2(Math.max(1, view.scale / dpr)) + 1e-9)));
  const slideUrl = level => (c, r) => `/slides/${encodeURIComponent(slideId)}_files/${level}/${c}_${r}.jpeg`;
  for (let level = Math.max(0, wanted - 4); level < wanted; level++) drawLevel(level, slideUrl(level), false, true);
  drawLevel(wanted, slideUrl(wanted), true, true);
  for (const layer of info.layers) {
    const state = layerState[layer.name];
    if (!state.on) continue;
    ctx.globalAlpha = state.opacity;
    const url = level => (c, r) => `/overlays/${encodeURIComponent(slideId)}/${layer.name}/${level}/${c}_${r}.png`;
    for (let level = Math.max(0, wanted - 4); level < wanted; level++) drawLevel(level, url(level), false, false);
    drawLevel(wanted, url(wanted), true, false);
  }
  drawRegions(dpr);
  ctx.globalAlpha = 1;
  drawScaleBar();
  if (pending === 0) requestAnimationFrame(() => {
    if (pending === 0 && !drawQueued) { const waiters = idleWaiters; idleWaiters = []; waiters.forEach(f => f()); }
  });
}

function drawRegions(dpr) {
  const state = layerState.regions;
  if (!state || !state.on) return;
  const x0 = view.cx - canvas.clientWidth / 2 * view.scale, y0 = view.cy - canvas.clientHeight / 2 * view.scale;
  for (const group of regions) {
    ctx.beginPath();
    for (const polygon of group.polygons) {
      for (const ring of polygon) {
        ring.forEach(([x, y], i) => {
          const px = (x - x0) / view.scale * dpr, py = (y - y0) / view.scale * dpr;
          if (i === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
        });
        ctx.closePath();
      }
    }
    ctx.globalAlpha = state.opacity * 0.25;
    ctx.fillStyle = group.colour;
    ctx.fill("evenodd");
    ctx.globalAlpha = state.opacity;
    ctx.strokeStyle = group.colour;
    ctx.lineWidth = 2 * dpr;
    ctx.stroke();
  }
}

function drawScaleBar() {
  const bar = document.getElementById("scalebar");
  if (!info.mpp) { bar.style.display = "none"; return; }
  const umPerPx = info.mpp * view.scale;
  let length = 1e-3;
  for (const step of [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000]) {
    if (step / umPerPx <= 150) length = step;
  }
  if (length / umPerPx > 150) length = 150 * umPerPx;
  bar.firstElementChild.style.width = `${Math.round(length / umPerPx)}px`;
  bar.lastElementChild.textContent = length >= 1000 ? `${length / 1000} mm` : `${+length.toPrecision(3)} \u00b5m`;
}

function queueDraw() {
  if (!drawQueued) { drawQueued = true; requestAnimationFrame(draw); }
}

function clampView() {
  view.scale = Math.min(Math.max(view.scale, 1 / 16), fitScale() * 4);
  view.cx = Math.min(Math.max(view.cx, 0), info.width);
  view.cy = Math.min(Math.max(view.cy, 0), info.height);
}

function zoomAt(factor, sx, sy) {   // sx, sy: CSS px in the canvas, kept still
  const lx = view.cx + (sx - canvas.clientWidth / 2) * view.scale;
  const ly = view.cy + (sy - canvas.clientHeight / 2) * view.scale;
  view.scale /= factor;
  clampView();
  view.cx = lx - (sx - canvas.clientWidth / 2) * view.scale;
  view.cy = ly - (sy - canvas.clientHeight / 2) * view.scale;
  clampView();
  queueDraw();
}

function setView(cx, cy, scale) {
  view.cx = cx; view.cy = cy; view.scale = scale;
  clampView();
  queueDraw();
}

function fit() { setView(info.width / 2, info.height / 2, fitScale()); }

// Full resolution: one level-0 pixel per device pixel, centred on a whole pixel so tiles land on the pixel grid.
function fullResolution() {
  const dpr = window.devicePixelRatio || 1;
  setView(Math.round(view.cx), Math.round(view.cy), 1 / dpr);
}

let valuesTimer = null;
function showCursor(event) {
  const rect = canvas.getBoundingClientRect();
  const x = view.cx + (event.clientX - rect.left - canvas.clientWidth / 2) * view.scale;
  const y = view.cy + (event.clientY - rect.top - canvas.clientHeight / 2) * view.scale;
  const inside = x >= 0 && y >= 0 && x < info.width && y < info.height;
  document.getElementById("cursor").textContent = inside ? `x ${Math.floor(x)}  y ${Math.floor(y)}` : "outside the slide";
  clearTimeout(valuesTimer);
  if (inside) valuesTimer = setTimeout(() => showValues(x, y), 80);
}

async function showValues(x, y) {
  const data = await (await fetch(`/api/slides/${encodeURIComponent(slideId)}/values?x=${x}&y=${y}`)).json();
  const lines = [];
  if (data.tile) {
    const t = data.tile;
    lines.push(`tile #${t.index}: (${t.x0}, ${t.y0})-(${t.x1}, ${t.y1})`);
    for (const [name, value] of Object.entries(data.values))
      lines.push(`${name}: ${typeof value === "number" ? +value.toPrecision(4) : value}`);
  } else {
    lines.push("no model tile here");
  }
  if (data.tissue !== undefined) lines.push(`tissue mask: ${data.tissue ? "tissue" : "glass"}`);
  document.getElementById("values").textContent = lines.join("\n");
}

function legendElement(legend) {
  const box = document.createElement("div");
  if (legend.kind === "scale") {
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.background = `linear-gradient(to right, ${legend.stops.join(", ")})`;
    const labels = document.createElement("div");
    labels.className = "bar-labels";
    for (const v of [legend.vmin, (legend.vmin + legend.vmax) / 2, legend.vmax]) {
      const span = document.createElement("span");
      span.textContent = +v.toPrecision(3);
      labels.appendChild(span);
    }
    box.append(bar, labels);
  } else {
    for (const item of legend.items) {
      const row = document.createElement("div");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = item.colour;
      row.append(swatch, item.name);
      box.appendChild(row);
    }
  }
  return box;
}

function buildLayerPanel() {
  const panel = document.getElementById("layers");
  const entries = info.layers.slice();
  if (regions.length) entries.push({ name: "regions", label: "tumour regions (as in the GeoJSON)",
    legend: { kind: "classes", items: regions.map(r => ({ name: r.class, colour: r.colour })) } });
  if (!entries.length) panel.textContent = "none for this slide";
  for (const layer of entries) {
    layerState[layer.name] = { on: false, opacity: 0.5 };
    const div = document.createElement("div");
    div.className = "layer";
    div.innerHTML = `<label><input type="checkbox"> <span></span></label>
      <input type="range" min="0" max="1" step="0.05" value="0.5" title="opacity">`;
    div.querySelector("span").textContent = layer.label;
    div.querySelector("input[type=checkbox]").dataset.layer = layer.name;
    div.querySelector("input[type=range]").dataset.opacity = layer.name;
    div.querySelector("input[type=checkbox]").addEventListener("change", e => {
      layerState[layer.name].on = e.target.checked; queueDraw(); });
    div.querySelector("input[type=range]").addEventListener("input", e => {
      layerState[layer.name].opacity = Number(e.target.value); queueDraw(); });
    div.appendChild(legendElement(layer.legend));
    panel.appendChild(div);
  }
}

function setLayer(name, on, opacity) {   // for tests and scripts: same effect as the panel
  const box = [...document.querySelectorAll("input[data-layer]")].find(b => b.dataset.layer === name);
  if (!box) throw new Error(`no layer ${name}`);
  box.checked = on; layerState[name].on = on;
  if (opacity !== undefined) {
    [...document.querySelectorAll("input[data-opacity]")].find(b => b.dataset.opacity === name).value = opacity;
    layerState[name].opacity = opacity;
  }
  queueDraw();
}

function listen() {
  let drag = null;
  canvas.addEventListener("pointerdown", e => {
    drag = { x: e.clientX, y: e.clientY, cx: view.cx, cy: view.cy };
    canvas.setPointerCapture(e.pointerId); canvas.classList.add("dragging");
  });
  canvas.addEventListener("pointermove", e => {
    showCursor(e);
    if (!drag) return;
    view.cx = drag.cx - (e.clientX - drag.x) * view.scale;
    view.cy = drag.cy - (e.clientY - drag.y) * view.scale;
    clampView(); queueDraw();
  });
  const end = () => { drag = null; canvas.classList.remove("dragging"); };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  canvas.addEventListener("wheel", e => {
    e.preventDefault();
    const rect = canvas.getBoundingClientRect();
    zoomAt(Math.pow(1.0015, -e.deltaY), e.clientX - rect.left, e.clientY - rect.top);
  }, { passive: false });
  canvas.addEventListener("dblclick", e => {
    const rect = canvas.getBoundingClientRect();
    zoomAt(2, e.clientX - rect.left, e.clientY - rect.top);
  });
  const centre = () => [canvas.clientWidth / 2, canvas.clientHeight / 2];
  document.getElementById("zoom-in").onclick = () => zoomAt(2, ...centre());
  document.getElementById("zoom-out").onclick = () => zoomAt(0.5, ...centre());
  document.getElementById("zoom-fit").onclick = fit;
  document.getElementById("zoom-full").onclick = fullResolution;
  document.addEventListener("keydown", e => {
    if (e.target.tagName === "INPUT") return;
    if (e.key === "+" || e.key === "=") zoomAt(2, ...centre());
    else if (e.key === "-") zoomAt(0.5, ...centre());
    else if (e.key === "0") fit();
    else if (e.key === "1") fullResolution();
  });
  window.addEventListener("resize", queueDraw);
}

async function main() {
  const response = await fetch(`/api/slides/${encodeURIComponent(slideId)}`);
  if (!response.ok) {
    document.getElementById("title").textContent = `${slideId}: ${(await response.text())}`;
    return;
  }
  info = await response.json();
  regions = info.regions.length ? await (await fetch(`/api/slides/${encodeURIComponent(slideId)}/regions`)).json() : [];
  document.title = `${slideId} - wsi-hcc view`;
  document.getElementById("title").textContent = slideId;
  const row = info.row;
  document.getElementById("summary").textContent = ["predicted_label", "p_hcc", "predicted_grade", "n_tiles"]
    .filter(k => row[k] !== undefined && row[k] !== "").map(k => `${k} ${row[k]}`).join("  \u00b7  ");
  buildLayerPanel();
  listen();
  fit();
  window.wsiView.ready = true;
}

// What scripts and the browser tests drive: the same operations as the mouse and the panel.
window.wsiView = {
  ready: false,
  setView, fit, fullResolution, setLayer,
  state: () => ({ ...view, levels: info && info.levels, pending }),
  idle: () => new Promise(resolve => { idleWaiters.push(resolve); queueDraw(); }),
};
main();
