// The consent page's script (issue #12): records the visitor's choice with POST /consent (no id
// in the body: the service reads the visitor's own signed cookie) and shows the new state.
// Inside the banner's iframe it tells the embedding page whether the banner must show.
"use strict";
(function () {
  const form = document.getElementById("choices");
  const banner = document.getElementById("banner");
  function tell(message) {
    if (window.parent !== window) {
      window.parent.postMessage(Object.assign({type: "tailor-consent"}, message), "*");
    }
  }
  tell({needsBanner: document.body.dataset.needsBanner === "1"});
  if (!form) return;
  const toggles = Array.from(form.querySelectorAll("input[data-purpose]"));
  const status = document.getElementById("status");

  function show(state) {
    banner.hidden = !state.needs_banner;
    document.body.dataset.needsBanner = state.needs_banner ? "1" : "0";
    for (const [purpose, decision] of Object.entries(state.purposes)) {
      const toggle = document.getElementById("p-" + purpose);
      if (!toggle || toggle.disabled) continue;
      toggle.checked = decision.allowed;
      document.getElementById("now-" + purpose).textContent =
        decision.allowed ? form.dataset.on : form.dataset.off;
    }
  }

  async function save(all) {
    const purposes = {};
    for (const toggle of toggles) {
      if (all !== null) toggle.checked = all;
      purposes[toggle.dataset.purpose] = toggle.checked;
    }
    status.textContent = form.dataset.saving;
    delete document.body.dataset.saved;
    try {
      const response = await fetch(form.dataset.endpoint, {
        method: "POST",
        credentials: "same-origin",
        headers: {"content-type": "application/json"},
        body: JSON.stringify({
          purposes: purposes,
          policy_version: form.dataset.policyVersion,
          source: "banner",
          timestamp: new Date().toISOString(),
        }),
      });
      if (response.status !== 201) throw new Error("status " + response.status);
      show((await response.json()).state);
      status.textContent = form.dataset.saved;
      document.body.dataset.saved = "1";
      tell({needsBanner: false, saved: true});
    } catch (error) {
      status.textContent = form.dataset.failed;
      document.body.dataset.saved = "0";
    }
  }

  form.addEventListener("submit", function (event) { event.preventDefault(); save(null); });
  document.getElementById("accept-all").addEventListener("click", function () { save(true); });
  document.getElementById("reject-all").addEventListener("click", function () { save(false); });
})();
