// news-desk workspace: keyboard shortcuts and a remembered editor name. Pages work without it.
(() => {
  "use strict";
  const typing = (el) => el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  const rows = () => Array.from(document.querySelectorAll("[data-row]"));
  let selected = -1;
  let pendingG = false;

  function select(index) {
    const all = rows();
    if (!all.length) return;
    selected = Math.max(0, Math.min(index, all.length - 1));
    all.forEach((row, i) => row.classList.toggle("is-selected", i === selected));
    const row = all[selected];
    row.scrollIntoView({ block: "nearest" });
    const link = row.querySelector("a[href]");
    if (link) link.focus({ preventScroll: true });
  }

  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && typing(event.target)) {
      const form = event.target.form;
      if (form) { event.preventDefault(); form.requestSubmit(); }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    const help = document.getElementById("help");
    if (pendingG) {
      pendingG = false;
      const to = { t: "/", i: "/inbox", r: "/review" }[event.key];
      if (to) { event.preventDefault(); window.location.href = to; }
      return;
    }
    switch (event.key) {
      case "/": {
        const box = document.getElementById("f-q") || document.getElementById("q");
        if (box) { event.preventDefault(); box.focus(); box.select(); }
        break;
      }
      case "j": event.preventDefault(); select(selected + 1); break;
      case "k": event.preventDefault(); select(selected < 0 ? 0 : selected - 1); break;
      case "g": pendingG = true; break;
      case "?": if (help && !help.open) { event.preventDefault(); help.showModal(); } break;
      default: break;
    }
  });

  // The editor's name, typed once, fills every editor field (kept in this browser only).
  const KEY = "news-desk.editor";
  const remembered = window.localStorage.getItem(KEY) || "";
  document.querySelectorAll("[data-remember=editor]").forEach((input) => {
    if (!input.value) input.value = remembered;
    input.addEventListener("change", () => window.localStorage.setItem(KEY, input.value.trim()));
  });
  document.querySelectorAll("form").forEach((form) => {
    form.addEventListener("submit", () => {
      const typed = document.getElementById("editor");
      if (typed && typed.value.trim()) window.localStorage.setItem(KEY, typed.value.trim());
      form.querySelectorAll("input[type=hidden][data-remember=editor]").forEach((hidden) => {
        hidden.value = (typed && typed.value.trim()) || window.localStorage.getItem(KEY) || "";
      });
    });
  });
})();
