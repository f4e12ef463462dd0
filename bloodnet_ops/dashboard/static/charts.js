// Draws every Plotly figure the server embedded in the page as <script type="application/json">.
// No inline scripts: the page's Content-Security-Policy allows only scripts served from here.
(function () {
  "use strict";
  function draw() {
    var holders = document.querySelectorAll("[data-figure]");
    holders.forEach(function (el) {
      var spec = document.getElementById(el.getAttribute("data-figure"));
      if (!spec) { return; }
      var fig = JSON.parse(spec.textContent);
      window.Plotly.newPlot(el, fig.data, fig.layout, {
        displaylogo: false,
        responsive: true,
        modeBarButtonsToRemove: ["select2d", "lasso2d"]
      }).then(function () { el.setAttribute("data-rendered", "true"); });
    });
  }
  // Filter forms submit on change; the <noscript>-free fallback is the visible "Apply" button.
  function autoSubmit() {
    document.querySelectorAll("form.filters select").forEach(function (sel) {
      sel.addEventListener("change", function () { sel.form.submit(); });
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { draw(); autoSubmit(); });
  } else {
    draw();
    autoSubmit();
  }
})();
