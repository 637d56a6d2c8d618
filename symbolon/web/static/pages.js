// Small helpers for the uploads pages; every page works without them.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Whether a download URL answers now: a HEAD request, redirects not followed (a redirect to
  // the storage means the file is there).
  for (const place of document.querySelectorAll("[data-exists]")) {
    place.textContent = "Checking…";
    fetch(place.dataset.exists, { method: "HEAD", redirect: "manual", credentials: "omit" })
      .then((response) => {
        const found = response.type === "opaqueredirect" || response.ok;
        place.textContent = found ? "Available now" : `Not available (${response.status})`;
        place.className = `badge ${found ? "active" : "expired"}`;
        place.dataset.state = found ? "found" : "missing";
      })
      .catch(() => {
        place.textContent = "Could not check";
        place.dataset.state = "unknown";
      });
  }
});
