// Tailor's consent banner (issue #12). A site includes it once per page:
//   <script src="https://<tailor service>/privacy/banner.js" async></script>
// (optional data-lang="fr" on the tag picks the language; else the browser's Accept-Language).
// It adds the service's consent page as a hidden iframe; the page says whether the visitor must
// choose (no choice, or one made on an older policy_version) and the iframe shows until they
// have. window.tailorConsent.open() shows it again (for a "Privacy choices" link).
"use strict";
(function () {
  const script = document.currentScript;
  if (!script || window.tailorConsent) return;
  const origin = new URL(script.src, location.href).origin;
  const lang = script.dataset.lang || "";
  const frame = document.createElement("iframe");
  frame.src = origin + "/privacy?embed=1" + (lang ? "&lang=" + encodeURIComponent(lang) : "");
  frame.title = script.dataset.title || "Privacy choices";
  frame.id = "tailor-consent-banner";
  frame.hidden = true;
  frame.style.cssText = "position:fixed;left:0;right:0;bottom:0;width:100%;height:min(32rem,80vh);" +
    "border:0;border-top:2px solid #1b1b1b;background:#fff;z-index:2147483647;";
  function open() { frame.hidden = false; frame.focus(); }
  window.addEventListener("message", function (event) {
    if (event.origin !== origin || event.source !== frame.contentWindow) return;
    const data = event.data || {};
    if (data.type !== "tailor-consent") return;
    if (data.needsBanner) open();
    else if (data.saved) frame.hidden = true;
  });
  window.tailorConsent = {open: open};
  function add() { document.body.appendChild(frame); }
  if (document.body) add(); else document.addEventListener("DOMContentLoaded", add);
})();
