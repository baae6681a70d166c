// Modal dialogs (<dialog>: focus stays inside, Escape cancels): rename, confirm delete,
// and a new conversation with a persona and its variables.

import { ApiError, api } from "./api.js";
import { el } from "./ui.js";

/**
 * Run a dialog: `action(form)` runs on submit; its error is shown in the dialog and the
 * dialog stays open. Resolves to action's result, or null when cancelled.
 */
function runDialog(dialog, action, focus) {
  const form = dialog.querySelector("form");
  const error = dialog.querySelector(".error");
  const submit = form.querySelector("[type=submit]");
  error.textContent = "";
  return new Promise((resolve) => {
    let result = null;
    const onSubmit = async (event) => {
      event.preventDefault();
      error.textContent = "";
      submit.disabled = true;
      try {
        result = await action(form);
        dialog.close("ok");
      } catch (failure) {
        error.textContent =
          failure instanceof ApiError
            ? failure.detail
              ? `${failure.message} (${failure.detail})`
              : failure.message
            : String(failure.message ?? failure);
      } finally {
        submit.disabled = false;
      }
    };
    const onCancel = () => dialog.close("cancel");
    const closeButtons = dialog.querySelectorAll("[data-close]");
    form.addEventListener("submit", onSubmit);
    for (const button of closeButtons) button.addEventListener("click", onCancel);
    dialog.addEventListener(
      "close",
      () => {
        form.removeEventListener("submit", onSubmit);
        for (const button of closeButtons) button.removeEventListener("click", onCancel);
        resolve(dialog.returnValue === "ok" ? result : null);
      },
      { once: true },
    );
    dialog.returnValue = "";
    dialog.showModal();
    focus?.focus();
  });
}

/** Ask for a new title; `save(title)` stores it. Resolves to the title or null. */
export function askText(current, save) {
  const dialog = document.getElementById("rename-dialog");
  const input = document.getElementById("rename-input");
  input.value = current ?? "";
  input.select();
  return runDialog(
    dialog,
    async () => {
      const title = input.value.trim();
      if (!title) throw new Error("제목을 입력해 주세요.");
      await save(title);
      return title;
    },
    input,
  );
}

/** Ask before something that cannot be undone; `act()` does it. Resolves to true/false. */
export async function askConfirm(text, act) {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-text").textContent = text;
  const done = await runDialog(
    dialog,
    async () => {
      await act();
      return true;
    },
    dialog.querySelector("[data-close]"),
  );
  return done === true;
}

let personas = null; // loaded once per page: [{name, title, variables, first_message}]

async function loadPersonas() {
  if (personas) return personas;
  try {
    const body = await api.personas();
    personas = Array.isArray(body?.items) ? body.items : [];
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) throw error;
    personas = []; // a server without personas: the default assistant only
  }
  return personas;
}

function variableFields(persona) {
  const box = document.getElementById("new-variables");
  box.replaceChildren();
  for (const [index, name] of (persona?.variables ?? []).entries()) {
    const id = `new-variable-${index}`;
    box.append(
      el(
        "div",
        { class: "field" },
        el("label", { for: id, text: name }),
        el("input", { id, required: true, maxlength: "1000", autocomplete: "off", dataset: { name } }),
      ),
    );
  }
}

/** The new-conversation dialog. Resolves to the created conversation, or null. */
export async function askNewConversation() {
  const dialog = document.getElementById("new-dialog");
  const select = document.getElementById("new-persona");
  const note = document.getElementById("new-persona-note");
  const titleInput = document.getElementById("new-title");
  const list = await loadPersonas();
  select.replaceChildren(
    el("option", { value: "", text: "기본 비서" }),
    ...list.map((p) => el("option", { value: p.name, text: p.title || p.name })),
  );
  select.disabled = list.length === 0;
  titleInput.value = "";
  const chosen = () => list.find((p) => p.name === select.value) ?? null;
  const show = () => {
    const persona = chosen();
    variableFields(persona);
    note.textContent =
      list.length === 0
        ? "설정된 페르소나가 없습니다."
        : persona?.first_message
          ? "이 페르소나는 먼저 말을 겁니다."
          : "";
  };
  select.onchange = show;
  show();
  return runDialog(
    dialog,
    async (form) => {
      const persona = chosen();
      const variables = {};
      for (const input of form.querySelectorAll("#new-variables input")) {
        const value = input.value.trim();
        if (!value) {
          input.focus();
          throw new Error(`'${input.dataset.name}' 값을 입력해 주세요.`);
        }
        variables[input.dataset.name] = value;
      }
      const body = { title: titleInput.value.trim() };
      if (persona) {
        body.persona = persona.name;
        body.variables = variables;
      }
      return api.createConversation(body);
    },
    select.disabled ? titleInput : select,
  );
}
