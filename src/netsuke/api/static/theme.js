// Applies the saved theme before the page paints (loaded synchronously in <head>).
"use strict";
(() => {
  try {
    const saved = localStorage.getItem("netsuke-theme");
    if (saved === "dark" || saved === "light") document.documentElement.dataset.theme = saved;
  } catch (e) { /* storage disabled: follow the system */ }
})();
