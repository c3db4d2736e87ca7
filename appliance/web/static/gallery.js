// Select many in the gallery: "select all on this page" and a running count.
"use strict";
(function () {
  const form = document.getElementById("selection");
  if (!form) return;
  const boxes = () => Array.from(form.querySelectorAll('input[name="ids"]'));
  const count = document.getElementById("selected-count");
  function update() {
    if (count) count.textContent = boxes().filter((b) => b.checked).length + " selected";
  }
  form.addEventListener("change", update);
  const all = document.getElementById("select-all");
  if (all) all.addEventListener("click", () => {
    const everything = boxes().every((b) => b.checked);
    boxes().forEach((b) => { b.checked = !everything; });
    update();
  });
  update();
})();
