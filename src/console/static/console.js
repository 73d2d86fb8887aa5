// Cedar console: keyboard shortcuts over plain forms (everything works without this file).
// j / k move between inbox items; a focuses the Approve button on a review page.
(function () {
  "use strict";
  function typing(el) {
    return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT" || el.isContentEditable);
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(document.activeElement)) return;
    var items = Array.prototype.slice.call(document.querySelectorAll("[data-nav]"));
    var at = items.indexOf(document.activeElement);
    if ((event.key === "j" || event.key === "k") && items.length) {
      var next = event.key === "j" ? Math.min(at + 1, items.length - 1) : Math.max(at - 1, 0);
      items[at === -1 ? 0 : next].focus();
      event.preventDefault();
    } else if (event.key === "a") {
      var approve = document.querySelector("#approve-form button[type=submit]");
      if (approve) { approve.focus(); event.preventDefault(); }
    }
  });
  // A form submits once: the button is disabled while the next page loads.
  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    if (button) setTimeout(function () { button.disabled = true; }, 0);
  });
})();
