// tokenfleet console: small enhancements only; every page works without this script.
"use strict";
(function () {
  // A job's page follows the job live: the server sends the job's state and the
  // rendered live part of the page at each change (Server-Sent Events).
  function followJob() {
    var live = document.getElementById("job-live");
    if (!live || !window.EventSource) {
      return;
    }
    var url = live.getAttribute("data-events");
    if (!url) {
      return;
    }
    var source = new EventSource(url);
    // The live part is replaced only while the keyboard focus is elsewhere: a reason
    // being typed, or a button about to be pressed, is not swept away under the person.
    var pending = null;
    function apply(html) {
      if (live.contains(document.activeElement)) {
        pending = html;
        return;
      }
      pending = null;
      var doc = new DOMParser().parseFromString(html, "text/html");
      var fresh = doc.getElementById("job-live");
      if (fresh) {
        live.replaceChildren.apply(live, Array.prototype.slice.call(fresh.childNodes));
      }
    }
    live.addEventListener("focusout", function () {
      window.setTimeout(function () {
        if (pending !== null) {
          apply(pending);
        }
      }, 0);
    });
    source.addEventListener("job", function (ev) {
      var d;
      try {
        d = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      var state = document.getElementById("job-state");
      if (state) {
        state.textContent = d.state_label;
        state.className = "state state-" + d.state;
        state.setAttribute("data-state", d.state);
      }
      apply(d.html);
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }

  // The holder search of the request form filters the holder choices as one types;
  // without the script, the search button asks the server.
  function filterHolders() {
    var box = document.getElementById("holder-filter");
    var list = document.getElementById("holder-choices");
    if (!box || !list) {
      return;
    }
    box.hidden = false;
    var input = box.querySelector("input");
    input.addEventListener("input", function () {
      var q = input.value.trim().toLowerCase();
      list.querySelectorAll("[data-search]").forEach(function (el) {
        el.hidden = q !== "" && el.getAttribute("data-search").toLowerCase().indexOf(q) < 0;
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    followJob();
    filterHolders();
  });
})();
