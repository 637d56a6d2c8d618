// Small helpers; every page works without them.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Copy buttons: copy the text of the <code> (or [data-copy-source]) next to the button.
  for (const button of document.querySelectorAll("[data-copy]")) {
    if (!navigator.clipboard) continue;
    button.hidden = false;
    button.addEventListener("click", async () => {
      const box = button.closest(".copyable");
      const source = box && (box.querySelector("[data-copy-source]") || box.querySelector("code"));
      if (!source) return;
      const text = source.value !== undefined ? source.value : source.textContent;
      try {
        await navigator.clipboard.writeText(text.trim());
        button.textContent = "Copied";
      } catch (err) {
        button.textContent = "Copy failed: select the text";
      }
      setTimeout(() => { button.textContent = "Copy"; }, 2000);
    });
  }

  // Live checks: a form element with data-exclusive="a,b" shows its warning while both
  // checkboxes named by those values are ticked.
  for (const warning of document.querySelectorAll("[data-exclusive]")) {
    const values = warning.dataset.exclusive.split(",");
    const form = warning.closest("form");
    if (!form) continue;
    const boxes = values
      .map((v) => form.querySelector(`input[type=checkbox][value="${CSS.escape(v)}"]`))
      .filter(Boolean);
    const update = () => { warning.hidden = !boxes.every((b) => b.checked); };
    for (const box of boxes) box.addEventListener("change", update);
    update();
  }

  // Confirmations for buttons that delete: the form still posts without JavaScript.
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
