// Small improvements on pages that work without this script.
"use strict";
document.addEventListener("click", (event) => {
  const copy = event.target.closest("[data-copy]");
  if (copy) {
    const source = document.getElementById(copy.dataset.copy);
    if (source && navigator.clipboard) {
      navigator.clipboard.writeText(source.textContent.trim());
      copy.textContent = "Copied";
    }
  }
});
document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

// Reports: a filter link, a chip or the toolbar loads the same URL and swaps <main>, so the page filters without a
// reload; the address bar follows (pushState), and back/forward load the view they show.
const swapMain = async (url, push) => {
  const main = document.getElementById("main");
  main.setAttribute("aria-busy", "true");
  try {
    const answer = await fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin" });
    if (!answer.ok || answer.redirected) { window.location.href = url; return; }
    const fresh = new DOMParser().parseFromString(await answer.text(), "text/html").getElementById("main");
    if (!fresh) { window.location.href = url; return; }
    main.innerHTML = fresh.innerHTML;
    if (push) history.pushState({ swapped: true }, "", url);
    const heading = main.querySelector("h1");
    if (heading) { heading.setAttribute("tabindex", "-1"); heading.focus({ preventScroll: true }); }
  } catch (_) {
    window.location.href = url;
  } finally {
    main.removeAttribute("aria-busy");
  }
};
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-swap]");
  if (!link || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  swapMain(link.href, true);
});
const toolbarUrl = (form) => {
  const url = new URL(form.action, window.location.href);
  const fields = new FormData(form);
  if (fields.get("period") !== "custom") { fields.delete("from"); fields.delete("to"); }
  for (const [key, value] of fields) if (value !== "") url.searchParams.append(key, value);
  return url.toString();
};
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-swap]");
  if (!form) return;
  event.preventDefault();
  swapMain(toolbarUrl(form), true);
});
document.addEventListener("change", (event) => {
  const form = event.target.closest("form[data-swap]");
  // A custom range waits for both dates and the Apply button; every other control applies at once.
  if (form && !(event.target.type === "date")) {
    form.classList.toggle("is-custom", form.elements.period.value === "custom");
    if (event.target.name !== "period" || form.elements.period.value !== "custom") swapMain(toolbarUrl(form), true);
  }
});
window.addEventListener("popstate", () => swapMain(window.location.href, false));

// The live panel refreshes itself every 15 s from its fragment route while the tab is visible.
setInterval(async () => {
  const panel = document.querySelector("[data-live-src]");
  if (!panel || document.hidden) return;
  try {
    const answer = await fetch(panel.dataset.liveSrc, { credentials: "same-origin" });
    if (!answer.ok || answer.redirected) return;
    const fresh = new DOMParser().parseFromString(await answer.text(), "text/html").getElementById("live-panel");
    if (fresh) panel.replaceWith(document.importNode(fresh, true));
  } catch (_) {
    // Offline for a moment: the next tick tries again.
  }
}, 15000);

// Attribution: a row with children gets a toggle that folds them (without the script every row shows).
const foldRows = (row, open) => {
  const level = Number(row.dataset.level);
  for (let next = row.nextElementSibling; next && Number(next.dataset.level) > level; next = next.nextElementSibling) {
    next.hidden = !open;
    const toggle = next.querySelector("button.toggle");
    if (toggle) toggle.setAttribute("aria-expanded", String(open));
  }
};
const armToggles = () => {
  for (const toggle of document.querySelectorAll("table.attribution button.toggle[hidden]")) {
    toggle.hidden = false;
    const name = toggle.closest("th").textContent.trim();
    toggle.setAttribute("aria-label", `Show or hide the rows under ${name}`);
  }
};
document.addEventListener("click", (event) => {
  const toggle = event.target.closest("table.attribution button.toggle");
  if (!toggle) return;
  const open = toggle.getAttribute("aria-expanded") !== "true";
  toggle.setAttribute("aria-expanded", String(open));
  toggle.textContent = open ? "▾" : "▸";
  foldRows(toggle.closest("tr"), open);
});
armToggles();
new MutationObserver(armToggles).observe(document.getElementById("main") || document.body, { childList: true });
