// Updraft's one script: local times, live refresh of [data-live] parts, the live log tail,
// confirmations and forms sent on change. No build step, no dependency, and no inline
// script or handler in the pages: the Content-Security-Policy allows only this file.
"use strict";

// Times arrive as UTC in <time datetime>; show them in the viewer's zone, UTC on hover.
function localTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const when = new Date(el.getAttribute("datetime"));
    if (isNaN(when)) continue;
    el.title = el.getAttribute("datetime").replace("T", " ").replace("Z", " UTC");
    el.textContent = when.toLocaleString(undefined, {
      year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
  }
}

// Every few seconds, fetch this page again and swap in the parts marked data-live (by id),
// so that states move without a reload. Paused while the tab is hidden.
function liveRefresh() {
  const parts = document.querySelectorAll("[data-live][id]");
  if (!parts.length) return;
  setInterval(async () => {
    if (document.hidden) return;
    try {
      const response = await fetch(location.href, { headers: { "Accept": "text/html" } });
      if (!response.ok || response.redirected) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const part of parts) {
        const next = fresh.getElementById(part.id);
        if (next && next.innerHTML !== part.innerHTML) {
          part.innerHTML = next.innerHTML;
          localTimes(part);
        }
      }
    } catch (_) { /* the next round tries again */ }
  }, 4000);
}

// Follow a try's log: read from the last offset until the try has ended and all is read.
async function followLog(pre) {
  const status = document.getElementById("log-status");
  let offset = 0;
  for (;;) {
    let piece;
    try {
      const response = await fetch(pre.dataset.logUrl + "?offset=" + offset, { headers: { "Accept": "application/json" } });
      piece = await response.json();
      if (!response.ok) { status.textContent = piece.error || "cannot read the log"; return; }
    } catch (_) {
      status.textContent = "connection lost; retrying…";
      await new Promise((r) => setTimeout(r, 3000));
      continue;
    }
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    if (piece.text) pre.append(document.createTextNode(piece.text));
    if (atBottom) pre.scrollTop = pre.scrollHeight;
    offset = piece.next_offset;
    if (piece.complete) { status.textContent = pre.textContent ? "" : "The log is empty."; return; }
    status.textContent = piece.running ? "Running: following the log…" : "";
    if (piece.running) await new Promise((r) => setTimeout(r, 1000));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  liveRefresh();
  const log = document.getElementById("log");
  if (log) followLog(log);
  for (const field of document.querySelectorAll("[data-autosubmit]")) {
    field.addEventListener("change", () => field.form.submit());
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
