// Shows every <time datetime="...Z"> in the browser's local time with its zone; the server
// writes UTC with "UTC" in the text, which stays as it is without JavaScript.
(function () {
  var fmt = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
    hourCycle: "h23", timeZoneName: "short"
  });
  // 2026-12-07 17:49:12 CET whatever the browser's language: no day/month ambiguity.
  function format(d) {
    var p = {};
    fmt.formatToParts(d).forEach(function (x) { p[x.type] = x.value; });
    return p.year + "-" + p.month + "-" + p.day + " " + p.hour + ":" + p.minute + ":" +
      p.second + " " + (p.timeZoneName || "");
  }
  function localize(root) {
    var nodes = (root || document).querySelectorAll("time[datetime]");
    for (var i = 0; i < nodes.length; i++) {
      var t = nodes[i];
      if (t.dataset.local) continue;
      var d = new Date(t.getAttribute("datetime"));
      if (isNaN(d)) continue;
      t.title = t.textContent;
      t.textContent = format(d);
      t.dataset.local = "1";
    }
  }
  document.addEventListener("DOMContentLoaded", function () { localize(document); });
  document.addEventListener("htmx:load", function (e) { localize(e.target); });
  document.addEventListener("htmx:afterSwap", function (e) { localize(e.target); });
})();
