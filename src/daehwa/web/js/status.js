// The status line: is the page connected, and is a reply being generated (and at which step).

const CONNECTION = {
  online: "연결됨",
  connecting: "연결 중…",
  streaming: "연결됨",
  reconnecting: "다시 연결하는 중…",
  offline: "오프라인",
};

const STEPS = {
  context: "문맥 준비 중",
  filter: "내용 검사 중",
  generate: "답변 작성 중",
  reasoning: "생각하는 중",
  tool: "도구 실행 중",
  search: "검색 중",
};

export class StatusLine {
  constructor(connectionNode, generationNode) {
    this.connectionNode = connectionNode;
    this.generationNode = generationNode;
    window.addEventListener("offline", () => this.connection("offline"));
    window.addEventListener("online", () => this.connection("online"));
    if (!navigator.onLine) this.connection("offline");
  }

  /** Show the connection state; `tries` counts reconnect attempts. */
  connection(state, tries = 0) {
    let text = CONNECTION[state] ?? state;
    if (state === "reconnecting" && tries > 1) text = `다시 연결하는 중… (${tries}번째)`;
    this.connectionNode.textContent = text;
    this.connectionNode.dataset.state = state;
  }

  /** Show what generation is doing; null hides it. */
  generation(step) {
    if (step === null) {
      this.generationNode.hidden = true;
      this.generationNode.textContent = "";
      return;
    }
    this.generationNode.textContent = STEPS[step] ?? "답변 중";
    this.generationNode.hidden = false;
  }
}
