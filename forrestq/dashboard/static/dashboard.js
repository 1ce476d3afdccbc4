// forrestq dashboard: live updates of the page's <main> (its own HTML, escaped by the server) and
// confirmation of every action. No inline script anywhere: the page's CSP allows this file only.
"use strict";
(function () {
  const main = document.getElementById("live");
  const badge = document.getElementById("live-state");
  const every = Math.max(2000, parseInt(document.body.dataset.refresh || "2000", 10));
  let busy = false;

  // every action asks first; the question comes from the form (text, never markup)
  document.addEventListener("submit", function (ev) {
    const q = ev.target.dataset ? ev.target.dataset.confirm : "";
    if (q && !window.confirm(q)) { ev.preventDefault(); }
  });

  function editing() {
    const a = document.activeElement;
    return a && main.contains(a) && (a.tagName === "INPUT" || a.tagName === "SELECT" || a.tagName === "TEXTAREA");
  }

  async function refresh() {
    if (busy || !main || editing() || document.hidden) { return; }
    busy = true;
    const ctl = new AbortController();
    const timer = setTimeout(function () { ctl.abort(); }, 10000);
    try {
      const r = await fetch(window.location.href, {headers: {"X-Fragment": "1"}, signal: ctl.signal,
                                                   credentials: "same-origin"});
      if (r.ok) {
        const html = await r.text();
        if (html !== main.dataset.last) { main.innerHTML = html; main.dataset.last = html; }
        if (badge) { badge.className = "live"; badge.textContent = "live"; }
      } else if (badge) { badge.className = "live stale"; badge.textContent = "HTTP " + r.status; }
    } catch (e) {
      if (badge) { badge.className = "live stale"; badge.textContent = "offline"; }
    } finally {
      clearTimeout(timer);
      busy = false;
    }
  }
  if (main) { setInterval(refresh, every); }
})();
