// The Overview's live refresh: reloads its figures every 5 s while the tab is visible.
// Every page works without this script.
(function () {
  var live = document.getElementById("live");
  if (!live) return;
  var url = live.getAttribute("data-refresh");
  function refresh() {
    if (document.hidden) return;
    fetch(url, { credentials: "same-origin", redirect: "manual" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) live.innerHTML = html; })
      .catch(function () {});
  }
  setInterval(refresh, 5000);
  document.addEventListener("visibilitychange", refresh);
})();
