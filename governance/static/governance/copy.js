// Copy buttons of the one-time secret page. Uses the Clipboard API when the page is served over
// HTTPS or from localhost, and falls back to selecting the text for Ctrl+C otherwise.
(function () {
  "use strict";
  function report(button, text) {
    var status = button.parentNode.querySelector(".gov-copy-status");
    if (status) { status.textContent = text; }
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy-target]");
    if (!button) { return; }
    var input = document.getElementById(button.getAttribute("data-copy-target"));
    if (!input) { return; }
    input.focus();
    input.select();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(
        function () { report(button, "Copied."); },
        function () { report(button, "Selected: press Ctrl+C to copy."); }
      );
    } else {
      var copied = false;
      try { copied = document.execCommand("copy"); } catch (e) { copied = false; }
      report(button, copied ? "Copied." : "Selected: press Ctrl+C to copy.");
    }
  });
})();
