// Small DOM helpers. Every node is built with createElement/textContent: no HTML strings.

const SVG_NS = "http://www.w3.org/2000/svg";

// Simple line icons drawn on a 24×24 grid (stroke only, currentColor).
const ICONS = {
  menu: ["M4 6h16", "M4 12h16", "M4 18h16"],
  plus: ["M12 5v14", "M5 12h14"],
  send: ["M5 12h13", "M12 6l6 6-6 6"],
  stop: ["M7 7h10v10H7z"],
  pencil: ["M4 20l4-1 11-11-3-3L5 16z", "M14 7l3 3"],
  trash: ["M5 7h14", "M10 7V4h4v3", "M7 7l1 13h8l1-13"],
  copy: ["M9 9h10v11H9z", "M5 15V4h10"],
  image: ["M4 5h16v14H4z", "M4 16l5-5 4 4 3-3 4 4"],
};

/** An inline SVG icon by name (decorative: hidden from assistive technology). */
export function icon(name) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", "icon");
  for (const d of ICONS[name] ?? []) {
    const path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}

/** Fill every `[data-icon]` placeholder under `root` with its icon. */
export function fillIcons(root = document) {
  for (const node of root.querySelectorAll("[data-icon]")) {
    if (!node.querySelector("svg")) node.prepend(icon(node.dataset.icon));
  }
}

/**
 * Build an element. `props`: `class`, `text`, `dataset`, `on<event>` listeners,
 * and plain attributes (true → empty attribute, false/null → omitted).
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

const timeFormat = new Intl.DateTimeFormat("ko-KR", { hour: "numeric", minute: "2-digit" });
const dayFormat = new Intl.DateTimeFormat("ko-KR", { month: "long", day: "numeric" });
const yearFormat = new Intl.DateTimeFormat("ko-KR", { dateStyle: "medium" });
const fullFormat = new Intl.DateTimeFormat("ko-KR", { dateStyle: "full", timeStyle: "short" });

/** A short Korean time label: today → "오후 3:04", this year → "5월 2일", else the date. */
export function shortTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const now = new Date();
  if (date.toDateString() === now.toDateString()) return timeFormat.format(date);
  if (date.getFullYear() === now.getFullYear()) return dayFormat.format(date);
  return yearFormat.format(date);
}

/** The full date and time, for a tooltip. */
export function fullTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : fullFormat.format(date);
}

/** A random id for `request_id` (crypto.randomUUID exists only in secure contexts). */
export function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Resolve after `ms`, or early (rejecting with AbortError) when `signal` aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason ?? new DOMException("aborted", "AbortError"));
      return;
    }
    const timer = setTimeout(done, ms);
    function done() {
      signal?.removeEventListener("abort", aborted);
      resolve();
    }
    function aborted() {
      clearTimeout(timer);
      reject(signal.reason ?? new DOMException("aborted", "AbortError"));
    }
    signal?.addEventListener("abort", aborted, { once: true });
  });
}
