// Live updates: the server sends each page's parts (HTML it rendered) as server-sent events;
// swap them in by element id. No framework, nothing fetched from elsewhere.
(function () {
  "use strict";
  const url = document.body.dataset.events;
  const live = document.getElementById("live");
  if (!url || !window.EventSource) { live.textContent = "static"; return; }
  let ended = false;
  const source = new EventSource(url);
  source.addEventListener("open", function () { live.textContent = "live"; });
  source.addEventListener("parts", function (event) {
    const parts = JSON.parse(event.data);
    for (const [id, html] of Object.entries(parts)) {
      const element = document.getElementById(id);
      if (element) { element.innerHTML = html; }
    }
    live.textContent = "live · updated " + new Date().toLocaleTimeString();
  });
  source.addEventListener("end", function () {
    ended = true;
    source.close();
    live.textContent = "the dashboard stopped serving; this page shows its last state";
  });
  source.addEventListener("error", function () {
    if (!ended) { live.textContent = "reconnecting…"; }
  });
})();
