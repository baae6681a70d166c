// The page: log in, then the conversation list beside the open conversation.

import { ApiError, api, setUnauthorizedHandler } from "./api.js";
import { Chat } from "./chat.js";
import { askNewConversation } from "./dialogs.js";
import { Sidebar } from "./sidebar.js";
import { StatusLine } from "./status.js";
import { fillIcons } from "./ui.js";

const $ = (id) => document.getElementById(id);
const NARROW = window.matchMedia("(max-width: 799px)");

const status = new StatusLine($("status-connection"), $("status-generation"));
let chat = null;
let sidebar = null;

function show(view) {
  $("boot").hidden = true;
  $("login-view").hidden = view !== "login";
  $("app-view").hidden = view !== "app";
}

// ---- login ---------------------------------------------------------------

function loginMode() {
  return document.querySelector("input[name=mode]:checked").value;
}

function showLogin(message = "") {
  delete document.body.dataset.ready;
  chat?.clear();
  show("login");
  $("login-error").textContent = message;
  $(loginMode() === "key" ? "login-key" : "login-name").focus();
}

function wireLogin() {
  for (const radio of document.querySelectorAll("input[name=mode]")) {
    radio.addEventListener("change", () => {
      for (const box of document.querySelectorAll("[data-mode]")) {
        box.hidden = box.dataset.mode !== loginMode();
      }
    });
  }
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = event.target.querySelector("[type=submit]");
    const credentials =
      loginMode() === "key"
        ? { key: $("login-key").value.trim() }
        : { name: $("login-name").value.trim(), password: $("login-password").value };
    if (loginMode() === "key" ? !credentials.key : !credentials.name || !credentials.password) {
      $("login-error").textContent = "로그인 정보를 입력해 주세요.";
      return;
    }
    button.disabled = true;
    $("login-error").textContent = "";
    try {
      const { user } = await api.login(credentials);
      // Never keep the secret around once the cookie holds the session.
      $("login-key").value = "";
      $("login-password").value = "";
      await enter(user);
    } catch (error) {
      $("login-error").textContent =
        error instanceof ApiError && error.status === 401
          ? "API 키 또는 이름·비밀번호가 올바르지 않습니다."
          : error.message;
    } finally {
      button.disabled = false;
    }
  });
}

// ---- the app ---------------------------------------------------------------

function setSidebar(open) {
  const nav = $("sidebar");
  nav.classList.toggle("open", open);
  $("scrim").hidden = !(open && NARROW.matches);
  $("sidebar-toggle").setAttribute("aria-expanded", String(open));
  $("sidebar-toggle").setAttribute("aria-label", open ? "대화 목록 닫기" : "대화 목록 열기");
  // Off-screen on a narrow screen: keep it out of the tab order too.
  nav.inert = NARROW.matches && !open;
  if (open && NARROW.matches) nav.querySelector("button")?.focus();
}

function rememberOpen(id) {
  const url = id ? `#c=${encodeURIComponent(id)}` : location.pathname;
  history.replaceState(null, "", url);
}

function reportError(error) {
  if (error instanceof ApiError && error.status === 401) {
    showLogin("세션이 만료되었습니다. 다시 로그인해 주세요.");
    return;
  }
  status.connection(error instanceof ApiError && error.status === 0 ? "offline" : "online");
  const toast = $("toast");
  toast.textContent = error.detail ? `${error.message} (${error.detail})` : error.message;
  toast.hidden = false;
  clearTimeout(reportError.timer);
  reportError.timer = setTimeout(() => {
    toast.hidden = true;
  }, 5000);
}

async function openConversation(conversation, messageId = null) {
  if (NARROW.matches) setSidebar(false);
  let target = conversation;
  if (!sidebar.get(conversation.id) && !conversation.created_at) {
    target = await api.conversation(conversation.id);
  }
  sidebar.select(target.id);
  rememberOpen(target.id);
  try {
    await chat.open(target);
  } catch (error) {
    reportError(error);
    return;
  }
  if (messageId) chat.reveal(messageId);
  else $("composer-input").focus();
}

async function newConversation() {
  let created;
  try {
    created = await askNewConversation();
  } catch (error) {
    reportError(error);
    return;
  }
  if (!created) return;
  sidebar.touch(created);
  await openConversation(created);
}

function wireApp() {
  chat = new Chat({
    status,
    onConversation: (conversation) => {
      sidebar.touch(conversation);
      sidebar.select(conversation.id);
      rememberOpen(conversation.id);
    },
    onActivity: (conversation) => {
      sidebar.touch(conversation);
      sidebar.select(conversation.id);
    },
    onError: reportError,
  });
  sidebar = new Sidebar({
    onOpen: (conversation, messageId) => openConversation(conversation, messageId).catch(reportError),
    onRenamed: (conversation) => chat.renamed(conversation),
    onDeleted: (conversation) => {
      if (chat.conversation?.id === conversation.id) {
        chat.clear();
        rememberOpen(null);
      }
    },
    onError: reportError,
  });
  $("new-conversation").addEventListener("click", newConversation);
  $("sidebar-toggle").addEventListener("click", () =>
    setSidebar(!$("sidebar").classList.contains("open")),
  );
  $("scrim").addEventListener("click", () => setSidebar(false));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && NARROW.matches && $("sidebar").classList.contains("open")) {
      setSidebar(false);
      $("sidebar-toggle").focus();
    }
  });
  NARROW.addEventListener("change", () => setSidebar(false));
  $("logout").addEventListener("click", async () => {
    try {
      await api.logout();
    } catch {
      // The cookie is cleared server-side when reachable; show the login page either way.
    }
    rememberOpen(null);
    showLogin();
  });
}

async function enter(user) {
  $("user-name").textContent = user.name;
  show("app");
  setSidebar(!NARROW.matches);
  status.connection(navigator.onLine ? "online" : "offline");
  await sidebar.load();
  const wanted = new URLSearchParams(location.hash.slice(1)).get("c");
  let opened = false;
  if (wanted) {
    try {
      await openConversation(sidebar.get(wanted) ?? { id: wanted });
      opened = true;
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) throw error;
      rememberOpen(null);
    }
  }
  if (!opened) {
    chat.clear();
    $("composer-input").focus();
  }
  // The list and the open conversation are on screen (end-to-end tests wait for this).
  document.body.dataset.ready = "true";
}

async function boot() {
  fillIcons();
  wireLogin();
  wireApp();
  setUnauthorizedHandler(() => showLogin("세션이 만료되었습니다. 다시 로그인해 주세요."));
  try {
    const { user } = await api.me();
    await enter(user);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) showLogin();
    else {
      show("login");
      $("login-error").textContent = error.message;
    }
  }
}

boot();
