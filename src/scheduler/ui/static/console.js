// The console's only script, an enhancement: every page works without it. It shows times in the
// viewer's zone (in the server's one format), adds select-all to the jobs table, and refreshes the
// live parts of a page every few seconds while the tab is visible (it stops when the tab is hidden).
(function () {
  "use strict";
  var PERIOD_MS = 3000;
  var timer = null;
  var busy = false;

  function two(n) { return (n < 10 ? "0" : "") + n; }

  // One format everywhere, the server's: 2026-12-02 05:19:24 CET, here in the viewer's own zone.
  function inViewersZone(moment) {
    var zone = "";
    try {
      new Intl.DateTimeFormat(undefined, { timeZoneName: "short" }).formatToParts(moment)
        .forEach(function (part) { if (part.type === "timeZoneName") { zone = part.value; } });
    } catch (ignored) { /* an old browser: the time without its zone's name */ }
    return moment.getFullYear() + "-" + two(moment.getMonth() + 1) + "-" + two(moment.getDate()) + " " +
      two(moment.getHours()) + ":" + two(moment.getMinutes()) + ":" + two(moment.getSeconds()) +
      (zone ? " " + zone : "");
  }

  function localTimes(root) {
    root.querySelectorAll("time[data-local]").forEach(function (el) {
      var moment = new Date(el.getAttribute("datetime"));
      if (isNaN(moment.getTime())) { return; }
      el.textContent = inViewersZone(moment);
    });
    // Relative times ("in 4 min") keep the exact time on hover; add the viewer's own to it.
    root.querySelectorAll("time[data-when]").forEach(function (el) {
      var moment = new Date(el.getAttribute("datetime"));
      if (isNaN(moment.getTime()) || el.hasAttribute("data-yours")) { return; }
      el.setAttribute("data-yours", inViewersZone(moment));
      el.title = el.title + " · yours: " + inViewersZone(moment);
    });
  }

  function selectAll() {
    document.addEventListener("change", function (event) {
      var box = event.target;
      if (!box.matches || !box.matches("input[data-select-all]")) { return; }
      document.querySelectorAll("input[name=ids]").forEach(function (one) { one.checked = box.checked; });
    });
  }

  function typing() {
    var active = document.activeElement;
    return active && active.closest && active.closest("[data-live]") &&
      active.matches("input[type=text], input[type=search], textarea, select");
  }

  function refresh() {
    var regions = document.querySelectorAll("[data-live]");
    if (busy || !regions.length || document.visibilityState !== "visible" || typing()) { return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Console-Refresh": "1" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        regions.forEach(function (region) {
          var next = fresh.getElementById(region.id);
          if (!next) { return; }
          var checked = {};
          region.querySelectorAll("input[type=checkbox]:checked").forEach(function (box) {
            checked[box.value] = true;
          });
          region.replaceWith(next);
          next.querySelectorAll("input[type=checkbox]").forEach(function (box) {
            if (checked[box.value]) { box.checked = true; }
          });
          localTimes(next);
        });
        document.documentElement.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () { /* the next tick tries again */ })
      .then(function () { busy = false; });
  }

  function follow() {
    if (timer !== null) { window.clearInterval(timer); timer = null; }
    if (document.visibilityState === "visible") {
      timer = window.setInterval(refresh, PERIOD_MS);
    }
    document.documentElement.setAttribute("data-live-polling", timer === null ? "off" : "on");
  }

  document.addEventListener("visibilitychange", function () {
    follow();
    if (document.visibilityState === "visible") { refresh(); }
  });
  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    selectAll();
    follow();
  });
}());
