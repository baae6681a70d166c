// The conversation list (newest first), search, rename and delete.

import { api } from "./api.js";
import { askConfirm, askText } from "./dialogs.js";
import { el, icon, shortTime } from "./ui.js";

const SEARCH_DELAY_MS = 300;
const SNIPPET_CHARS = 80;

function titleOf(conversation) {
  return conversation.title || "제목 없는 대화";
}

/** A short piece of `text` around the first match of `query`, with the match marked. */
function snippet(text, query) {
  const at = text.toLowerCase().indexOf(query.toLowerCase());
  if (at === -1) return [text.slice(0, SNIPPET_CHARS)];
  const start = Math.max(0, at - 24);
  const end = Math.min(text.length, at + query.length + SNIPPET_CHARS - 24);
  return [
    (start > 0 ? "…" : "") + text.slice(start, at),
    el("mark", { text: text.slice(at, at + query.length) }),
    text.slice(at + query.length, end) + (end < text.length ? "…" : ""),
  ];
}

export class Sidebar {
  /** hooks: onOpen(conversation, messageId?), onRenamed(c), onDeleted(c), onError(e). */
  constructor(hooks) {
    this.hooks = hooks;
    this.items = [];
    this.next = null;
    this.currentId = null;
    this.searchTimer = null;
    this.searchAbort = null;

    this.nav = document.getElementById("sidebar");
    this.list = document.getElementById("conversation-list");
    this.empty = document.getElementById("conversation-empty");
    this.more = document.getElementById("more-conversations");
    this.searchInput = document.getElementById("search-input");
    this.results = document.getElementById("search-results");
    this.resultList = document.getElementById("search-list");
    this.searchNote = document.getElementById("search-note");

    this.more.addEventListener("click", () => this.loadMore());
    this.searchInput.addEventListener("input", () => this.#searchSoon());
    document.getElementById("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      clearTimeout(this.searchTimer);
      this.#search();
    });
    this.searchInput.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.searchInput.value) {
        event.stopPropagation();
        this.searchInput.value = "";
        this.#searchSoon();
      }
    });
  }

  async load() {
    const page = await api.conversations();
    this.items = page.items;
    this.next = page.next;
    this.render();
  }

  async loadMore() {
    if (!this.next) return;
    this.more.disabled = true;
    try {
      const page = await api.conversations(this.next);
      const known = new Set(this.items.map((c) => c.id));
      this.items.push(...page.items.filter((c) => !known.has(c.id)));
      this.next = page.next;
      this.render();
    } catch (error) {
      this.hooks.onError(error);
    } finally {
      this.more.disabled = false;
    }
  }

  get(id) {
    return this.items.find((c) => c.id === id) ?? null;
  }

  /** A conversation was created or has new activity: it goes to the top. */
  touch(conversation) {
    this.items = [conversation, ...this.items.filter((c) => c.id !== conversation.id)];
    this.render();
  }

  select(id) {
    this.currentId = id;
    for (const item of this.list.children) {
      if (item.dataset.id === id) item.querySelector(".conv-open").setAttribute("aria-current", "page");
      else item.querySelector(".conv-open").removeAttribute("aria-current");
    }
  }

  render() {
    const filter = this.searchInput.value.trim().toLowerCase();
    const rows = this.items
      .filter((c) => !filter || titleOf(c).toLowerCase().includes(filter))
      .map((c) => this.#row(c));
    this.list.replaceChildren(...rows);
    this.empty.hidden = rows.length > 0;
    this.empty.textContent = filter ? "제목이 일치하는 대화가 없습니다." : "아직 대화가 없습니다.";
    this.more.hidden = !this.next;
  }

  #row(conversation) {
    const title = titleOf(conversation);
    const open = el(
      "button",
      {
        type: "button",
        class: "conv-open",
        "aria-current": conversation.id === this.currentId ? "page" : null,
        onclick: () => this.hooks.onOpen(conversation),
      },
      el("span", { class: "conv-title", text: title }),
      el(
        "span",
        { class: "conv-sub" },
        el("span", { class: "conv-time", text: shortTime(conversation.updated_at) }),
        conversation.preview?.content
          ? el("span", { class: "conv-preview", text: conversation.preview.content })
          : null,
      ),
    );
    const rename = el(
      "button",
      {
        type: "button",
        class: "icon-button small",
        "aria-label": `'${title}' 이름 바꾸기`,
        title: "이름 바꾸기",
        onclick: () => this.rename(conversation),
      },
      icon("pencil"),
    );
    const remove = el(
      "button",
      {
        type: "button",
        class: "icon-button small",
        "aria-label": `'${title}' 삭제`,
        title: "삭제",
        onclick: () => this.remove(conversation),
      },
      icon("trash"),
    );
    return el(
      "li",
      { class: "conv", dataset: { id: conversation.id } },
      open,
      el("span", { class: "conv-actions" }, rename, remove),
    );
  }

  async rename(conversation) {
    const title = await askText(conversation.title, async (value) => {
      const updated = await api.rename(conversation.id, value);
      Object.assign(conversation, updated);
    });
    if (title === null) return;
    this.render();
    this.hooks.onRenamed(conversation);
    this.#focusRow(conversation.id);
  }

  async remove(conversation) {
    const index = this.items.indexOf(conversation);
    const done = await askConfirm(
      `'${titleOf(conversation)}' 대화와 모든 메시지를 삭제할까요? 되돌릴 수 없습니다.`,
      () => api.remove(conversation.id),
    );
    if (!done) return;
    this.items = this.items.filter((c) => c.id !== conversation.id);
    this.render();
    this.hooks.onDeleted(conversation);
    const neighbour = this.items[Math.min(index, this.items.length - 1)];
    if (neighbour) this.#focusRow(neighbour.id);
    else document.getElementById("new-conversation").focus();
  }

  #focusRow(id) {
    const row = [...this.list.children].find((item) => item.dataset.id === id);
    row?.querySelector(".conv-open").focus();
  }

  #searchSoon() {
    this.render();
    clearTimeout(this.searchTimer);
    this.searchTimer = setTimeout(() => this.#search(), SEARCH_DELAY_MS);
  }

  async #search() {
    const query = this.searchInput.value.trim();
    this.searchAbort?.abort();
    if (!query) {
      this.results.hidden = true;
      this.resultList.replaceChildren();
      return;
    }
    const controller = new AbortController();
    this.searchAbort = controller;
    this.results.hidden = false;
    this.searchNote.textContent = "검색 중…";
    try {
      const found = await api.search(query, controller.signal);
      const rows = found.items.map((message) => this.#result(message, query));
      this.resultList.replaceChildren(...rows);
      this.searchNote.textContent = rows.length ? `${rows.length}건` : "일치하는 메시지가 없습니다.";
    } catch (error) {
      if (error.name === "AbortError") return;
      this.resultList.replaceChildren();
      this.searchNote.textContent =
        error.status === 404 ? "메시지 검색을 쓸 수 없습니다. 제목으로만 찾습니다." : error.message;
    }
  }

  #result(message, query) {
    const conversation = this.get(message.conversation_id);
    const where = conversation ? titleOf(conversation) : "대화";
    return el(
      "li",
      {},
      el(
        "button",
        {
          type: "button",
          class: "search-hit",
          onclick: () =>
            this.hooks.onOpen(conversation ?? { id: message.conversation_id, title: "" }, message.id),
        },
        el("span", { class: "search-where", text: `${where} · ${shortTime(message.created_at)}` }),
        el("span", { class: "search-text" }, ...snippet(message.content ?? "", query)),
      ),
    );
  }
}
