// Refreshes the status page from /api/v1/status every two seconds, without reloading it.
"use strict";
(function () {
  const root = document.getElementById("status");
  if (!root) return;
  const url = root.dataset.url;

  function get(object, path) {
    return path.split(".").reduce((o, k) => (o == null ? undefined : o[k]), object);
  }
  function bytes(n) {
    if (n == null) return "—";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return n.toFixed(i ? 1 : 0) + " " + units[i];
  }
  function duration(s) {
    if (s == null) return "—";
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    return (d ? d + " d " : "") + (d || h ? h + " h " : "") + m + " min";
  }
  const formats = {
    text: (v) => (v == null || v === "" ? "—" : String(v)),
    ms: (v) => (v == null ? "—" : v.toFixed(1) + " ms"),
    bytes: bytes,
    quota: (v) => (v ? bytes(v) : "none"),
    duration: duration,
    celsius: (v) => (v == null ? "not available" : v.toFixed(1) + " °C"),
    score: (v) => (v == null ? "—" : v.toFixed(2)),
    time: (v) => (v ? new Date(v).toLocaleString() : "—"),
    state: (v) => v || "not running",
    link: (v) => (v ? "connected" : "not connected"),
  };

  function render(status) {
    document.getElementById("loop-missing").hidden = status.is_loop_running;
    // A stopped loop's last figures are history, not live: show its state, keep what still holds
    // (model, camera, storage, last keep) and blank the rates.
    const loop = Object.assign({}, status.loop);
    if (!status.is_loop_running) Object.assign(loop, { state: "not running", fps: null, inference_ms: {}, uptime_s: null });
    const view = Object.assign({}, status, { loop: loop });
    for (const el of root.querySelectorAll("[data-field]")) {
      const value = get(view, el.dataset.field);
      el.textContent = (formats[el.dataset.format] || formats.text)(value);
    }
    for (const el of root.querySelectorAll("[data-show]")) {
      el.hidden = !get(view, el.dataset.show);
    }
    for (const problem of root.querySelectorAll('.warning[data-field$=".problem"]')) {
      if (problem.textContent === "—") problem.textContent = "";
    }
    const keep = status.loop && status.loop.last_keep;
    const thumb = document.getElementById("last-keep-thumb");
    if (keep && keep.id) {
      thumb.src = "/captures/" + keep.id + "/thumb";
      thumb.hidden = false;
      document.getElementById("last-keep-link").href = "/captures/" + keep.id;
    }
    const level = status.loop && status.loop.storage && status.loop.storage.level;
    const warning = document.getElementById("storage-warning");
    warning.hidden = !(level === "low" || level === "full");
    warning.textContent = level === "full" ? "Storage is full: keeping has stopped. Offload, sync or delete images."
      : "Storage is nearly full.";
    const offload = status.offload;
    if (offload) {
      const el = document.getElementById("offload");
      if (offload.state === "running") {
        el.textContent = "copying " + (offload.items_done || 0) + " of " + (offload.items_total || "?") + " · " +
          bytes(offload.rate_bytes_s) + "/s" + (offload.eta_s != null ? " · " + Math.ceil(offload.eta_s) + " s left" : "");
      } else {
        el.textContent = (offload.state === "done" ? "done: " : "failed: ") + (offload.message || "");
      }
      el.className = offload.state === "failed" ? "warning" : "";
    }
    const tbody = document.querySelector("#reasons tbody");
    const counts = (status.loop && status.loop.frames && status.loop.frames.by_reason) || {};
    tbody.replaceChildren(...Object.entries(counts).sort((a, b) => b[1] - a[1]).map(([reason, n]) => {
      const tr = document.createElement("tr");
      const a = document.createElement("td"), b = document.createElement("td");
      a.textContent = reason; b.textContent = n; b.className = "num";
      tr.append(a, b);
      return tr;
    }));
  }

  async function refresh() {
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (response.ok) render(await response.json());
    } catch (e) { /* the device may be restarting: try again next time */ }
  }
  refresh();
  setInterval(refresh, 2000);
})();
