// Manage screens: the site's "waiting for the first hit" check and the page editor's live preview.
"use strict";
(() => {
  const firstHit = document.querySelector("[data-poll]");
  if (firstHit && firstHit.classList.contains("waiting")) {
    const poll = async () => {
      try {
        const answer = await fetch(firstHit.dataset.poll, { headers: { Accept: "application/json" } });
        if (answer.ok && (await answer.json()).received) {
          firstHit.classList.replace("waiting", "received");
          firstHit.textContent = "✓ The snippet works: visits are arriving.";
          return;
        }
      } catch (_) { /* offline for a moment: try again */ }
      setTimeout(poll, 3000);
    };
    setTimeout(poll, 3000);
  }

  // The editor's "Preview" button posts the unsaved form into the sandboxed frame; typing presses it for you.
  const preview = document.querySelector("button[data-live-preview]");
  if (preview && preview.form) {
    let timer = null;
    const refresh = () => preview.form.requestSubmit(preview);
    preview.form.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(refresh, 400); });
    preview.form.addEventListener("change", (event) => { if (event.target.name === "level") refresh(); });
  }
})();
