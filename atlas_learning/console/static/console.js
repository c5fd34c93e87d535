// Atlas console: keyboard shortcuts, row selection. No library; every page works without it.
(function () {
  "use strict";
  var page = document.body.getAttribute("data-page");
  var pendingG = false;

  function typing(event) {
    var el = event.target;
    return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT" || el.isContentEditable);
  }
  function rows() { return Array.prototype.slice.call(document.querySelectorAll("tr.row")); }
  function selected() { return document.querySelector("tr.row.selected"); }
  function select(row) {
    rows().forEach(function (r) { r.classList.remove("selected"); });
    if (row) { row.classList.add("selected"); row.scrollIntoView({ block: "nearest" }); }
  }
  function move(step) {
    var all = rows();
    if (!all.length) { return; }
    var index = all.indexOf(selected());
    select(all[Math.max(0, Math.min(all.length - 1, index + step))]);
  }
  function review(action) {
    var button = document.querySelector('#review-form button[value="' + action + '"]');
    if (button) { button.click(); }
  }
  function toggleHelp() {
    var help = document.getElementById("shortcuts");
    if (help) { help.hidden = !help.hidden; }
  }

  document.addEventListener("click", function (event) {
    if (event.target.closest("[data-help]")) { toggleHelp(); return; }
    var row = event.target.closest("tr.row");
    if (row && !event.target.closest("a, input, button, label")) { window.location.href = row.getAttribute("data-href"); }
  });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (typing(event)) {
      if (event.key === "Escape") { event.target.blur(); }
      return;
    }
    var key = event.key;
    if (pendingG) {
      pendingG = false;
      var go = { s: "/sessions", p: "/playbook", l: "/learning", q: "/queue" }[key];
      if (go) { window.location.href = go; event.preventDefault(); }
      return;
    }
    if (key === "g") { pendingG = true; return; }
    if (key === "?") { toggleHelp(); event.preventDefault(); return; }
    if (page === "sessions") {
      if (key === "j") { move(1); event.preventDefault(); }
      else if (key === "k") { move(-1); event.preventDefault(); }
      else if ((key === "o" || key === "Enter") && selected()) { window.location.href = selected().getAttribute("data-href"); event.preventDefault(); }
      else if (key === "x" && selected()) { var box = selected().querySelector("input[type=checkbox]"); box.checked = !box.checked; event.preventDefault(); }
      else if (key === "/") { var f = document.getElementById("f-key"); if (f) { f.focus(); event.preventDefault(); } }
    } else if (page === "session") {
      if (key === "a") { review("approve"); event.preventDefault(); }
      else if (key === "q") { review("quarantine"); event.preventDefault(); }
      else if (key === "p") { review("pending"); event.preventDefault(); }
      else if (key === "n") { var next = document.getElementById("next-pending"); if (next) { next.click(); event.preventDefault(); } }
      else if (key === "/") { var note = document.getElementById("note"); if (note) { note.focus(); event.preventDefault(); } }
    }
  });
})();
