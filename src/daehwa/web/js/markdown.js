// Model output → safe DOM.
//
// Three layers, each enough on its own for script:
//  1. marked renders markdown, and any raw HTML in the text is escaped (shown as text);
//  2. DOMPurify (a maintained sanitiser) keeps only a small allow-list of tags,
//     attributes and URL schemes;
//  3. the page's Content-Security-Policy forbids inline script, inline style and
//     any script or connection to another origin, and Trusted Types guard the sinks.
// Images never load by themselves: each becomes a button, and only a click (consent)
// loads that one image.

import { Marked } from "../node_modules/marked/lib/marked.esm.js";
import DOMPurify from "../node_modules/dompurify/dist/purify.es.mjs";
import { el, icon } from "./ui.js";

function escapeHtml(text) {
  return text
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;")
    .replaceAll("'", "&#39;");
}

const marked = new Marked({
  async: false,
  gfm: true,
  breaks: true, // chat text: a single newline is a line break
  renderer: {
    // Raw HTML from the model is never HTML on the page.
    html: ({ text }) => escapeHtml(text),
    // Task lists as glyphs: no form controls in model output.
    checkbox: ({ checked }) => (checked ? "☑ " : "☐ "),
  },
});

const PURIFY = {
  ALLOWED_TAGS: [
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s",
    "code", "pre", "blockquote", "ul", "ol", "li", "a", "img", "table", "thead", "tbody",
    "tr", "th", "td", "sup", "sub", "kbd",
  ],
  ALLOWED_ATTR: ["href", "title", "alt", "src", "class", "start", "align", "colspan", "rowspan"],
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  // Absolute http(s) and mailto only: no javascript:, data:, or relative URLs into our API.
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
  RETURN_DOM_FRAGMENT: true,
};

const LANGUAGE_CLASS = /^language-[\w+#.-]{1,32}$/;
const EXTERNAL_SRC = "data-external-src";

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  // Runs inside DOMPurify's inert document, before anything reaches the page.
  if (node.nodeName === "IMG") {
    const src = node.getAttribute("src");
    node.removeAttribute("src");
    if (src) node.setAttribute(EXTERNAL_SRC, src);
  } else if (node.nodeName === "A") {
    if (node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer nofollow ugc");
    }
  }
  if (node.hasAttribute?.("class")) {
    const keep = node.nodeName === "CODE" && LANGUAGE_CLASS.test(node.getAttribute("class"));
    if (!keep) node.removeAttribute("class");
  }
});

// Image URLs the user agreed to load during this visit (so re-renders keep them).
const consented = new Set();

function imageHost(src) {
  try {
    return new URL(src).host;
  } catch {
    return "";
  }
}

function loadedImage(src, alt) {
  return el("img", { src, alt, loading: "lazy", referrerpolicy: "no-referrer", class: "md-image" });
}

function imagePlaceholder(img) {
  const src = img.getAttribute(EXTERNAL_SRC) ?? "";
  const alt = img.getAttribute("alt") ?? "";
  if (consented.has(src)) return loadedImage(src, alt);
  const host = imageHost(src);
  const label = alt ? `이미지: ${alt}` : "이미지";
  if (!src.startsWith("https:")) {
    // Only https images may load at all (the CSP agrees); the rest stay a labelled link.
    return el("span", { class: "ext-image", text: `${label} (${host || "주소 없음"}, 불러올 수 없음)` });
  }
  const box = el("span", { class: "ext-image" });
  const button = el(
    "button",
    {
      type: "button",
      class: "ext-image-button",
      title: src,
      onclick: () => {
        consented.add(src);
        box.replaceWith(loadedImage(src, alt));
      },
    },
    icon("image"),
    `${label} · ${host}에서 불러오기`,
  );
  box.append(button);
  return box;
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.lastChild.textContent = "복사됨";
  } catch {
    button.lastChild.textContent = "복사 실패";
  }
  setTimeout(() => {
    button.lastChild.textContent = "복사";
  }, 1500);
}

function codeBlock(pre) {
  const code = pre.querySelector("code");
  const language = code?.className.match(LANGUAGE_CLASS)?.[0].slice("language-".length) ?? "";
  const copy = el(
    "button",
    {
      type: "button",
      class: "code-copy",
      "aria-label": "코드 복사",
      onclick: () => copyText(code?.textContent ?? pre.textContent, copy),
    },
    icon("copy"),
    el("span", { text: "복사" }),
  );
  const header = el("div", { class: "code-header" }, el("span", { text: language || "코드" }), copy);
  pre.setAttribute("tabindex", "0"); // scrollable by keyboard
  const box = el("div", { class: "code-block" });
  pre.replaceWith(box);
  box.append(header, pre);
}

/** Render model markdown into a safe DocumentFragment for the page. */
export function renderMarkdown(text) {
  const html = marked.parse(text ?? "");
  const fragment = DOMPurify.sanitize(html, PURIFY);
  for (const img of fragment.querySelectorAll("img")) img.replaceWith(imagePlaceholder(img));
  for (const pre of fragment.querySelectorAll("pre")) codeBlock(pre);
  for (const table of fragment.querySelectorAll("table")) {
    const wrap = el("div", { class: "table-wrap", tabindex: "0" });
    table.replaceWith(wrap);
    wrap.append(table);
  }
  return fragment;
}
