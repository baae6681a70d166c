// The open conversation: its history (paged, oldest at the top), the composer, and the
// reply being streamed.

import { ApiError, api } from "./api.js";
import { MessageView } from "./messages.js";
import { followReply } from "./stream.js";
import { randomId } from "./ui.js";

const TITLE_CHARS = 40;
// Distance from the bottom (px) within which new text keeps the view pinned to the end.
const STICKY_PX = 80;

export class Chat {
  /**
   * hooks: status (StatusLine), onConversation(conversation) when one is created,
   * opened or renamed, onActivity(conversation) when a message was sent.
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.conversation = null;
    this.views = [];
    this.older = null; // cursor for the previous page, or null
    this.reply = null; // {view, replyId, controller, stopWanted}
    this.loadToken = 0;

    this.scroller = document.getElementById("messages");
    this.list = document.getElementById("message-list");
    this.olderButton = document.getElementById("older");
    this.welcome = document.getElementById("welcome");
    this.title = document.getElementById("chat-title");
    this.persona = document.getElementById("chat-persona");
    this.form = document.getElementById("composer");
    this.input = document.getElementById("composer-input");
    this.sendButton = document.getElementById("send");
    this.stopButton = document.getElementById("stop");

    this.#wireComposer();
    this.olderButton.addEventListener("click", () => this.loadOlder());
    this.stopButton.addEventListener("click", () => this.stop());
  }

  #wireComposer() {
    let composing = false;
    this.input.addEventListener("compositionstart", () => {
      composing = true;
    });
    this.input.addEventListener("compositionend", () => {
      composing = false;
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key !== "Enter" || event.shiftKey || event.altKey || event.ctrlKey) return;
      // Korean IME: this Enter commits the syllable being composed; sending now would
      // send the text without it and leave the syllable behind in the box.
      if (event.isComposing || event.keyCode === 229 || composing) return;
      event.preventDefault();
      this.submit();
    });
    this.input.addEventListener("input", () => this.#fitInput());
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
  }

  #fitInput() {
    this.input.style.height = "auto";
    this.input.style.height = `${this.input.scrollHeight}px`;
  }

  /** Put text in the composer (a suggestion) and focus it. */
  suggest(text) {
    this.input.value = text;
    this.#fitInput();
    this.input.focus();
  }

  get busy() {
    return this.reply !== null;
  }

  #setBusy(busy) {
    const active = document.activeElement;
    const onButton = active === this.sendButton || active === this.stopButton;
    this.sendButton.hidden = busy;
    this.stopButton.hidden = !busy;
    if (!busy) this.hooks.status.generation(null);
    // The focused button may have just been hidden: keep the keyboard in the composer.
    if (onButton) this.input.focus();
  }

  #nearBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < STICKY_PX;
  }

  #scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  #keepPinned(action) {
    const pinned = this.#nearBottom();
    action();
    if (pinned) requestAnimationFrame(() => this.#scrollToEnd());
  }

  #view(message) {
    return new MessageView(message, {
      onSuggestion: (text) => this.suggest(text),
      keepPinned: (render) => this.#keepPinned(render),
    });
  }

  #showHeader() {
    const conversation = this.conversation;
    this.title.textContent = conversation ? conversation.title || "제목 없는 대화" : "새 대화";
    this.persona.textContent = conversation?.persona ? `페르소나: ${conversation.persona}` : "";
    document.title = conversation?.title ? `${conversation.title} · 대화` : "대화";
  }

  #leaveReply() {
    // Leaving the page view only stops listening; the server keeps generating.
    if (this.reply) this.reply.controller.abort(new DOMException("left", "AbortError"));
    this.reply = null;
    this.#setBusy(false);
  }

  /** Show no conversation: the next message starts a new one. */
  clear() {
    this.loadToken += 1;
    this.#leaveReply();
    this.conversation = null;
    this.views = [];
    this.older = null;
    this.list.replaceChildren();
    this.olderButton.hidden = true;
    this.welcome.hidden = false;
    this.#showHeader();
  }

  /** Open a conversation and its latest page of history. */
  async open(conversation) {
    this.clear();
    const token = this.loadToken;
    this.conversation = conversation;
    this.welcome.hidden = true;
    this.#showHeader();
    this.list.setAttribute("aria-busy", "true");
    try {
      const page = await api.messages(conversation.id);
      if (token !== this.loadToken) return;
      this.older = page.next;
      const views = page.items.filter((m) => m.role !== "system").map((m) => this.#view(m));
      this.views = views;
      this.list.replaceChildren(...views.map((v) => v.node));
      this.olderButton.hidden = !this.older;
      this.welcome.hidden = views.length > 0;
      this.#scrollToEnd();
      // A reply still being generated (say, the page was reloaded mid-reply): follow it.
      const running = views.findLast((v) => v.role === "assistant" && v.status === "streaming");
      if (running) this.#follow(running, { replyId: running.id, after: 0 });
    } finally {
      if (token === this.loadToken) this.list.removeAttribute("aria-busy");
    }
  }

  /** Prepend the previous page of history, keeping the reading position. */
  async loadOlder() {
    if (!this.conversation || !this.older) return;
    const token = this.loadToken;
    this.olderButton.disabled = true;
    try {
      const page = await api.messages(this.conversation.id, this.older);
      if (token !== this.loadToken) return;
      const views = page.items.filter((m) => m.role !== "system").map((m) => this.#view(m));
      const fromBottom = this.scroller.scrollHeight - this.scroller.scrollTop;
      this.views = [...views, ...this.views];
      this.list.prepend(...views.map((v) => v.node));
      this.scroller.scrollTop = this.scroller.scrollHeight - fromBottom;
      this.older = page.next;
      this.olderButton.hidden = !this.older;
    } finally {
      this.olderButton.disabled = false;
    }
  }

  /** Highlight a message if it is on screen (from a search result). */
  reveal(messageId) {
    const view = this.views.find((v) => v.id === messageId);
    if (!view) return false;
    view.node.scrollIntoView({ block: "center" });
    view.node.classList.add("flash");
    setTimeout(() => view.node.classList.remove("flash"), 2000);
    return true;
  }

  /** Send what is in the composer. */
  async submit() {
    const content = this.input.value;
    if (!content.trim() || this.busy) return;
    this.input.value = "";
    this.#fitInput();
    try {
      if (!this.conversation) {
        const created = await api.createConversation({ title: content.trim().slice(0, TITLE_CHARS) });
        await this.open(created);
        this.hooks.onConversation(created);
      }
    } catch (error) {
      this.input.value = content;
      this.#fitInput();
      this.hooks.onError(error);
      return;
    }
    const user = this.#view({ role: "user", content, status: "sending" });
    const assistant = this.#view({ role: "assistant", content: "", status: "streaming" });
    this.welcome.hidden = true;
    this.views.push(user, assistant);
    this.#keepPinned(() => this.list.append(user.node, assistant.node));
    this.#scrollToEnd();
    this.#follow(assistant, { content, requestId: randomId(), user });
  }

  async #follow(view, { replyId = null, after = 0, content, requestId, user = null }) {
    const conversation = this.conversation;
    const controller = new AbortController();
    const reply = { view, replyId, controller, stopWanted: false };
    this.reply = reply;
    this.#setBusy(true);
    this.hooks.status.generation("");
    let started = false;
    const onEvent = (type, data) => {
      if (type === "meta") {
        reply.replyId = data.message_id;
        view.setId(data.message_id);
        view.setUsage(null, data.model);
        if (user) {
          user.setId(data.user_message_id);
          user.setStatus("complete");
          if (!started) this.#sent(conversation, content);
        }
        started = true;
        if (reply.stopWanted) this.stop();
      } else if (type === "delta") {
        this.#keepPinned(() => view.append(data.text ?? ""));
      } else if (type === "step") {
        this.hooks.status.generation(data.name ?? "");
      } else if (type === "sources") {
        this.#keepPinned(() => view.setSources(data.items));
      } else if (type === "suggestions") {
        this.#keepPinned(() => view.setSuggestions(data.items));
      } else if (type === "done") {
        view.setStatus(data.status ?? "complete");
        view.setUsage(data.usage);
      } else if (type === "error") {
        if (user && !started) refused(data.code, data.message || errorText(data));
        else {
          view.setStatus(view.text ? "incomplete" : "failed");
          view.setError(errorText(data));
        }
      }
    };
    // Refused before it started (blocked by the filter, too long...): give the text back.
    const refused = (code, message) => {
      user.setStatus(code === "content_blocked" ? "blocked" : "error");
      user.setError(message);
      view.node.remove();
      this.views = this.views.filter((v) => v !== view);
      if (!this.input.value) {
        this.input.value = content;
        this.#fitInput();
      }
    };
    if (replyId) view.reset(); // the replay starts from the first event
    try {
      await followReply({
        conversationId: conversation.id,
        content,
        requestId,
        replyId,
        after,
        onEvent,
        onConnection: (state, tries) => this.hooks.status.connection(state, tries),
        signal: controller.signal,
      });
    } catch (error) {
      if (user && !started) {
        refused(error.code, error instanceof ApiError ? describe(error) : "보내지 못했습니다.");
      } else {
        view.setStatus("error");
        view.setError(error instanceof ApiError ? describe(error) : "답변을 불러오지 못했습니다.");
      }
      if (error instanceof ApiError && error.status === 401) this.hooks.onError(error);
    } finally {
      if (this.reply === reply) {
        this.reply = null;
        this.#setBusy(false);
        if (!controller.signal.aborted) this.hooks.status.connection("online");
      }
    }
  }

  #sent(conversation, content) {
    // The first message names an untitled conversation.
    if (!conversation.title) {
      const title = content.trim().replace(/\s+/g, " ").slice(0, TITLE_CHARS);
      conversation.title = title;
      api.rename(conversation.id, title).catch(() => {});
      if (conversation === this.conversation) this.#showHeader();
    }
    conversation.updated_at = new Date().toISOString();
    conversation.preview = { role: "user", content, status: "complete" };
    this.hooks.onActivity(conversation);
  }

  /** Ask the server to stop the running reply (it is kept, marked as stopped). */
  async stop() {
    const reply = this.reply;
    if (!reply) return;
    if (!reply.replyId) {
      reply.stopWanted = true; // stop as soon as the reply has an id
      return;
    }
    this.stopButton.disabled = true;
    try {
      await api.stop(this.conversation.id, reply.replyId);
    } catch (error) {
      this.hooks.onError(error);
    } finally {
      this.stopButton.disabled = false;
    }
  }

  /** The conversation was renamed elsewhere (the sidebar). */
  renamed(conversation) {
    if (this.conversation?.id === conversation.id) {
      this.conversation.title = conversation.title;
      this.#showHeader();
    }
  }
}

function describe(error) {
  return error.detail ? `${error.message} (${error.detail})` : error.message;
}

const ERROR_TEXT = {
  reply_unavailable: "답변이 중단되었습니다. 서버가 다시 시작되었을 수 있습니다.",
  reply_incomplete: "답변이 도중에 끊겼습니다.",
  reply_failed: "답변을 만들지 못했습니다.",
  not_found: "답변을 찾을 수 없습니다.",
};

function errorText(data) {
  const text = ERROR_TEXT[data.code] ?? "답변을 완료하지 못했습니다.";
  return data.message ? `${text} (${data.message})` : text;
}
