// The agent's call page: ask for the secure capture's progress every second and show it,
// without reloading. Only words come back (never a digit); the page reloads once the
// session has ended, to show the confirmation number or what went wrong.
(function () {
  "use strict";
  var table = document.getElementById("progress");
  if (!table) { return; }
  var url = table.getAttribute("data-url");
  var required = document.getElementById("required");
  var complete = document.getElementById("complete");
  function show(body) {
    if (body.status !== "open" && body.status !== "completing") {
      window.location.reload();
      return;
    }
    body.fields.forEach(function (row) {
      var line = table.querySelector('tr[data-field="' + row.field + '"] td.state');
      if (line && line.textContent !== row.text) {
        line.textContent = row.text;
        line.className = "state state-" + row.state;
      }
    });
    required.textContent = body.required.length
      ? "Still needed: " + body.required.join(", ") : "Every field is in.";
    if (complete) {
      complete.disabled = !body.can_complete;
      if (body.status === "completing") { complete.textContent = "Charging…"; }
    }
  }
  function poll() {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) { if (body) { show(body); } })
      .catch(function () {})
      .then(function () { window.setTimeout(poll, 1000); });
  }
  window.setTimeout(poll, 1000);
}());
