// One message on the screen: its bubble, status badge and token usage (on demand).

import { renderMarkdown } from "./markdown.js";
import { el, fullTime, shortTime } from "./ui.js";

const STATUS_LABELS = {
  streaming: "생성 중",
  incomplete: "미완성",
  stopped: "중지됨",
  fallback: "대체 응답",
  blocked: "차단됨",
  failed: "실패",
  sending: "보내는 중",
  error: "오류",
};

const ROLE_LABELS = { user: "나", assistant: "AI", tool: "도구", system: "시스템" };

/** A message in the list. Assistant text is markdown; user text is shown as typed. */
export class MessageView {
  constructor(message, { onSuggestion = () => {} } = {}) {
    this.id = message.id ?? "";
    this.role = message.role;
    this.text = message.content ?? "";
    this.status = message.status ?? "complete";
    this.usage = message.usage ?? null;
    this.model = message.model ?? "";
    this.createdAt = message.created_at ?? new Date().toISOString();
    this.onSuggestion = onSuggestion;
    this.errorText = "";
    this.renderQueued = false;

    this.body = el("div", { class: "content" });
    this.badge = el("span", { class: "badge", hidden: true });
    this.errorLine = el("p", { class: "message-error", role: "alert", hidden: true });
    this.extras = el("div", { class: "extras" });
    this.usageBox = el("details", { class: "usage", hidden: true });
    this.time = el("time", { class: "muted" });
    this.node = el(
      "li",
      { class: `message message-${this.role}`, dataset: { id: this.id } },
      el("span", { class: "sr-only", text: `${ROLE_LABELS[this.role] ?? this.role}: ` }),
      el("div", { class: "bubble" }, this.body, this.errorLine, this.extras),
      el("div", { class: "message-meta" }, this.badge, this.time, this.usageBox),
    );
    this.#renderText();
    this.#renderMeta();
  }

  setId(id) {
    this.id = id;
    this.node.dataset.id = id;
  }

  /** Start over (a resumed reply replays from its first event). */
  reset() {
    this.text = "";
    this.extras.replaceChildren();
    this.#scheduleText();
  }

  append(text) {
    this.text += text;
    this.#scheduleText();
  }

  setStatus(status) {
    this.status = status;
    this.#renderMeta();
  }

  setUsage(usage, model) {
    this.usage = usage ?? this.usage;
    if (model) this.model = model;
    this.#renderMeta();
  }

  setError(text) {
    this.errorText = text;
    this.errorLine.textContent = text;
    this.errorLine.hidden = !text;
  }

  /** Citations or tool results (`sources` event): titles, links when https, tool output. */
  setSources(items) {
    if (!Array.isArray(items) || items.length === 0) return;
    const list = el("ul", { class: "sources" });
    for (const item of items) {
      list.append(el("li", {}, sourceItem(item)));
    }
    this.extras.append(el("p", { class: "extras-title", text: "출처 · 도구 결과" }), list);
  }

  /** Follow-up suggestions: clicking one puts it in the composer (it is not sent). */
  setSuggestions(items) {
    if (!Array.isArray(items) || items.length === 0) return;
    const row = el("div", { class: "suggestions", role: "group", "aria-label": "추천 질문" });
    for (const item of items) {
      const text = typeof item === "string" ? item : String(item?.text ?? item?.title ?? "");
      if (!text) continue;
      row.append(
        el("button", { type: "button", class: "chip", text, onclick: () => this.onSuggestion(text) }),
      );
    }
    this.extras.append(row);
  }

  #scheduleText() {
    // Many deltas per frame are common: render at most once per animation frame.
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      this.#renderText();
    });
  }

  #renderText() {
    if (this.role === "tool") {
      this.body.replaceChildren(
        el("details", {}, el("summary", { text: "도구 결과" }), el("pre", { text: this.text })),
      );
    } else if (this.role === "assistant") {
      this.body.classList.add("markdown");
      this.body.replaceChildren(renderMarkdown(this.text));
    } else {
      this.body.textContent = this.text;
    }
    this.node.classList.toggle("empty-text", !this.text);
  }

  #renderMeta() {
    const streaming = this.status === "streaming";
    this.node.classList.toggle("streaming", streaming);
    this.node.dataset.status = this.status;
    this.node.setAttribute("aria-busy", streaming ? "true" : "false");
    const label = STATUS_LABELS[this.status];
    this.badge.hidden = !label;
    this.badge.textContent = label ?? "";
    this.badge.dataset.status = this.status;
    this.time.dateTime = this.createdAt;
    this.time.textContent = shortTime(this.createdAt);
    this.time.title = fullTime(this.createdAt);
    if (this.role === "assistant" && this.usage && !streaming) {
      const prompt = this.usage.prompt_tokens ?? 0;
      const completion = this.usage.completion_tokens ?? 0;
      this.usageBox.replaceChildren(
        el("summary", { text: "토큰", "aria-label": "토큰 사용량 보기" }),
        el(
          "dl",
          { class: "usage-list" },
          el("dt", { text: "입력" }),
          el("dd", { text: prompt.toLocaleString("ko-KR") }),
          el("dt", { text: "출력" }),
          el("dd", { text: completion.toLocaleString("ko-KR") }),
          el("dt", { text: "합계" }),
          el("dd", { text: (prompt + completion).toLocaleString("ko-KR") }),
          this.model ? el("dt", { text: "모델" }) : null,
          this.model ? el("dd", { text: this.model }) : null,
        ),
      );
      this.usageBox.hidden = false;
    } else {
      this.usageBox.hidden = true;
    }
  }
}

function sourceItem(item) {
  if (item && typeof item === "object" && ("result" in item || "error" in item)) {
    // A tool's result: its name, and the output as text on demand.
    const failed = item.ok === false;
    const output = failed ? String(item.error ?? "") : JSON.stringify(item.result, null, 2);
    return el(
      "details",
      { class: "tool-result" },
      el("summary", { text: `${item.name ?? "도구"}${failed ? " (실패)" : ""}` }),
      el("pre", { text: output ?? "" }),
    );
  }
  const title = String(item?.title ?? item?.name ?? item?.url ?? "출처");
  const url = typeof item?.url === "string" && /^https?:/i.test(item.url) ? item.url : null;
  return url
    ? el("a", { href: url, target: "_blank", rel: "noopener noreferrer nofollow", text: title })
    : el("span", { text: title });
}
