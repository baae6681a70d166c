// An incremental Server-Sent Events parser for fetch() bodies (EventSource cannot POST).
// Bytes are decoded with a streaming TextDecoder, so a UTF-8 character split across two
// network chunks (common with Hangul: 3 bytes each) is never broken.

/**
 * Feeds text in, gets complete events out: `{id, event, data}`.
 * Follows the WHATWG rules: CRLF/CR/LF line ends, `:` comments, one optional space
 * after the colon, several `data:` lines joined by "\n".
 */
export class EventStreamParser {
  #buffer = "";
  #data = [];
  #event = "";
  #id = null;

  /** Parse as much as `text` completes; returns the events it finished. */
  feed(text) {
    this.#buffer += text;
    const events = [];
    let start = 0;
    const buffer = this.#buffer;
    while (start < buffer.length) {
      let end = start;
      while (end < buffer.length && buffer[end] !== "\n" && buffer[end] !== "\r") end += 1;
      if (end >= buffer.length) break; // an unfinished line: wait for more
      // A lone CR at the very end may be the first half of CRLF: wait for the next chunk.
      if (buffer[end] === "\r" && end + 1 >= buffer.length) break;
      const line = buffer.slice(start, end);
      start = end + (buffer[end] === "\r" && buffer[end + 1] === "\n" ? 2 : 1);
      const event = this.#line(line);
      if (event) events.push(event);
    }
    this.#buffer = buffer.slice(start);
    return events;
  }

  #line(line) {
    if (line === "") {
      if (this.#data.length === 0) {
        this.#event = "";
        return null;
      }
      const event = { id: this.#id, event: this.#event || "message", data: this.#data.join("\n") };
      this.#data = [];
      this.#event = "";
      return event;
    }
    if (line.startsWith(":")) return null; // a comment: the server's keep-alive ping
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.#data.push(value);
    else if (field === "event") this.#event = value;
    else if (field === "id" && !value.includes("\0")) this.#id = value;
    return null;
  }
}

/**
 * Read an SSE response body, calling `onEvent` for each event and `onBytes` whenever
 * anything (even a keep-alive ping) arrives. Resolves when the body ends; rejects when
 * the connection breaks.
 */
export async function readEventStream(body, onEvent, onBytes = () => {}) {
  const reader = body.getReader();
  const decoder = new TextDecoder("utf-8");
  const parser = new EventStreamParser();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      onBytes();
      for (const event of parser.feed(decoder.decode(value, { stream: true }))) {
        if (onEvent(event) === false) return;
      }
    }
    for (const event of parser.feed(decoder.decode())) onEvent(event);
  } finally {
    reader.cancel().catch(() => {});
  }
}
