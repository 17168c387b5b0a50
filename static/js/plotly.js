// plotly.js — loads plotly.js (3.5 MB, served from the installed Python package) only
// once the page has asked the server for its data.
//
// Why: compiling plotly takes a second or two on a slow machine, and a page that loaded
// it first would only then start asking for a long run's series, which can take the
// server as long again to read the first time. Started after the first requests, the
// two overlap. The HTML preloads the file so its download starts at once.

let loading = null;

export function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  loading ??= new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = "/vendor/plotly.min.js";
    script.async = true;
    script.addEventListener("load", () => resolve(window.Plotly));
    script.addEventListener("error", () => reject(new Error("could not load /vendor/plotly.min.js")));
    document.head.append(script);
  });
  return loading;
}
