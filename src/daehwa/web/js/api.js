// The server's JSON API, as the page uses it. The session is the HttpOnly cookie the
// server sets at login: nothing secret is ever kept in JavaScript or localStorage.

/** An API failure, with a Korean message for the user. */
export class ApiError extends Error {
  constructor(status, code, message, detail = "") {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.detail = detail;
  }

  /** Worth trying again later: the network, or a server that is busy or restarting. */
  get retryable() {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

const MESSAGES = {
  0: "서버에 연결할 수 없습니다.",
  400: "요청을 처리할 수 없습니다. 입력을 확인해 주세요.",
  401: "로그인이 필요합니다.",
  403: "권한이 없습니다.",
  404: "찾을 수 없습니다. 삭제되었을 수 있습니다.",
  409: "이미 처리 중이거나 충돌이 있습니다.",
  413: "내용이 너무 깁니다.",
  422: "내용 필터에 걸려 보낼 수 없습니다.",
  429: "요청이 너무 많습니다. 잠시 후 다시 시도해 주세요.",
};

/** A Korean message for a status code (the server's own words go in `detail`). */
export function messageFor(status) {
  return MESSAGES[status] ?? (status >= 500 ? "서버 오류가 발생했습니다." : "요청이 실패했습니다.");
}

/** Turn a failed response into an ApiError. */
export async function errorFrom(response) {
  let code = "http_error";
  let detail = "";
  try {
    const body = await response.json();
    code = body?.error?.code ?? code;
    detail = body?.error?.message ?? "";
  } catch {
    // Not JSON (a proxy's page, say): the status says enough.
  }
  return new ApiError(response.status, code, messageFor(response.status), detail);
}

let onUnauthorized = () => {};

/** Called whenever the server says the session is gone (401). */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

/** One JSON request; resolves to the body (null for 204), rejects with ApiError. */
export async function request(method, path, body, { signal, quiet401 = false } = {}) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network", messageFor(0));
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    if (response.status === 401 && !quiet401) onUnauthorized();
    throw error;
  }
  if (response.status === 204) return null;
  return response.json();
}

const enc = encodeURIComponent;

export const api = {
  me: () => request("GET", "/v1/auth/me", undefined, { quiet401: true }),
  login: (credentials) => request("POST", "/v1/auth/login", credentials, { quiet401: true }),
  logout: () => request("POST", "/v1/auth/logout"),

  conversations: (before) =>
    request("GET", `/v1/conversations?limit=30${before ? `&before=${enc(before)}` : ""}`),
  conversation: (id) => request("GET", `/v1/conversations/${enc(id)}`),
  createConversation: (body) => request("POST", "/v1/conversations", body),
  rename: (id, title) => request("PATCH", `/v1/conversations/${enc(id)}`, { title }),
  remove: (id) => request("DELETE", `/v1/conversations/${enc(id)}`),
  messages: (id, before) =>
    request(
      "GET",
      `/v1/conversations/${enc(id)}/messages?limit=30${before ? `&before=${enc(before)}` : ""}`,
    ),
  stop: (id, messageId) =>
    request("POST", `/v1/conversations/${enc(id)}/messages/${enc(messageId)}/stop`),

  personas: () => request("GET", "/v1/personas"),
  search: (query, signal) => request("GET", `/v1/search?q=${enc(query)}`, undefined, { signal }),
};
