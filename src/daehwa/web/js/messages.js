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

// The server sends what the model said in the last `[chat] delta_interval` as one
// delta. A streaming reply shows each delta's text over about the time until the
// next one is due (a running average of the gaps, at most REVEAL_MAX_MS), so it
// flows instead of jumping a phrase at a time; by then all that has arrived is shown.
const REVEAL_MAX_MS = 400;
const REVEAL_MIN_MS = 16;
const reducedMotion = () => window.matchMedia?.("(prefers-reduced-motion: reduce)").matches ?? false;

/** A message in the list. Assistant text is markdown; user text is shown as typed. */
export class MessageView {
  /**
   * `keepPinned(render)` runs each render of the text; the list passes one that keeps
   * itself scrolled to the end if it was, as the text grows frame by frame.
   */
  constructor(message, { onSuggestion = () => {}, keepPinned = (render) => render() } = {}) {
    this.id = message.id ?? "";
    this.role = message.role;
    this.text = message.content ?? "";
    this.status = message.status ?? "complete";
    this.usage = message.usage ?? null;
    this.model = message.model ?? "";
    this.createdAt = message.created_at ?? new Date().toISOString();
    this.onSuggestion = onSuggestion;
    this.keepPinned = keepPinned;
    this.errorText = "";
    this.renderQueued = false;
    this.#restartReveal(this.text.length);

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
    this.#restartReveal(0);
    this.extras.replaceChildren();
    this.#scheduleText();
  }

  append(text) {
    if (!text) return;
    const now = performance.now();
    if (this.lastArrival) {
      const gap = Math.min(Math.max(now - this.lastArrival, REVEAL_MIN_MS), REVEAL_MAX_MS);
      this.gap = this.gap ? (this.gap + gap) / 2 : gap;
    }
    this.lastArrival = now;
    this.text += text;
    this.#scheduleText();
  }

  setStatus(status) {
    this.status = status;
    if (status !== "streaming" && this.shown < this.text.length) this.#scheduleText();
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
    requestAnimationFrame((now) => {
      this.renderQueued = false;
      this.#reveal(now);
      this.keepPinned(() => this.#renderText());
      if (this.shown < this.text.length) this.#scheduleText();
    });
  }

  #restartReveal(shown) {
    this.shown = shown; // how much of `text` is on the screen
    this.lastArrival = 0; // performance.now() of the last delta
    this.gap = 0; // the usual time between deltas, in ms (0: not known yet)
    this.lastFrame = 0; // the animation frame that last revealed text
  }

  /** Move `shown` towards the end of the text that has arrived. */
  #reveal(now) {
    const end = this.text.length;
    const smooth = this.status === "streaming" && this.gap > 0 && !reducedMotion();
    const left = this.lastArrival + this.gap - now; // until the next delta is due
    if (!smooth || left <= REVEAL_MIN_MS || this.shown >= end) {
      this.shown = end;
      this.lastFrame = 0;
      return;
    }
    // A frame's share of the text left; after a pause, as if one frame had passed.
    const since = this.lastFrame ? now - this.lastFrame : REVEAL_MIN_MS;
    const frame = Math.min(since, 3 * REVEAL_MIN_MS, left);
    this.lastFrame = now;
    let shown = this.shown + Math.max(1, Math.round(((end - this.shown) * frame) / left));
    // Never split a surrogate pair (emoji and other characters outside the BMP).
    const code = this.text.charCodeAt(shown - 1);
    if (code >= 0xd800 && code <= 0xdbff) shown += 1;
    this.shown = Math.min(shown, end);
    if (this.shown === end) this.lastFrame = 0;
  }

  #renderText() {
    if (this.role === "tool") {
      this.body.replaceChildren(
        el("details", {}, el("summary", { text: "도구 결과" }), el("pre", { text: this.text })),
      );
    } else if (this.role === "assistant") {
      this.body.classList.add("markdown");
      this.body.replaceChildren(renderMarkdown(this.text.slice(0, this.shown)));
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
