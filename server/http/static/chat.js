// The chat page: plain JS over the server's own OpenAI-compatible API (no build step, no CDN).
"use strict";

const $ = (id) => document.getElementById(id);
const NUMBERS = { temperature: parseFloat, top_p: parseFloat, top_k: (v) => parseInt(v, 10),
                  repetition_penalty: parseFloat, max_tokens: (v) => parseInt(v, 10), seed: (v) => parseInt(v, 10) };
let history = [];        // the conversation sent with each request: {role, content}
let controller = null;   // the running reply's AbortController (Stop aborts it; the server then cancels)
let modelName = null;

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api_key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function setStatus(text) { $("status").textContent = text || ""; }

async function loadModel() {
  try {
    const res = await fetch("/v1/models", { headers: headers() });
    if (res.status === 401) { $("model").textContent = "(API key needed)"; return; }
    const body = await res.json();
    modelName = body.data[0].id;
    $("model").textContent = modelName;
  } catch (e) {
    $("model").textContent = "(server unreachable)";
  }
}

function addMessage(role, text) {
  const el = document.createElement("div");
  el.className = "msg " + role;
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  el.appendChild(body);
  $("messages").appendChild(el);
  scrollDown();
  return el;
}

function scrollDown() { const c = $("conversation"); c.scrollTop = c.scrollHeight; }

function samplingSettings() {
  const out = {};
  for (const [name, parse] of Object.entries(NUMBERS)) {
    const raw = $(name).value.trim();
    if (raw !== "") out[name] = parse(raw);
  }
  return out;
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

// Server-sent events from a fetch body: calls onData with each `data:` payload.
async function readEvents(res, onData) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (line.startsWith("data: ")) onData(line.slice(6));
      }
    }
  }
}

async function send() {
  const text = $("prompt").value.trim();
  if (!text || controller) return;
  $("prompt").value = "";
  setStatus("");
  addMessage("user", text);
  history.push({ role: "user", content: text });
  const reply = addMessage("assistant", "");
  const replyText = reply.querySelector(".text");
  reply.dataset.state = "streaming";
  reply.dataset.pieces = "0";

  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...history);
  const body = { messages, stream: true, stream_options: { include_usage: true }, ...samplingSettings() };
  if (modelName) body.model = modelName;

  controller = new AbortController();
  setBusy(true);
  const started = performance.now();
  let first = null, last = null, content = "", pieces = 0, usage = null, finish = null, state = "done";
  try {
    const res = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body),
                                                       signal: controller.signal });
    if (!res.ok) {
      const err = await res.json().catch(() => null);
      throw new Error((err && err.error && err.error.message) || "HTTP " + res.status);
    }
    await readEvents(res, (data) => {
      if (data === "[DONE]") return;
      const msg = JSON.parse(data);
      if (msg.error) throw new Error(msg.error.message);
      if (msg.usage) usage = msg.usage;
      for (const choice of msg.choices || []) {
        const piece = choice.delta && choice.delta.content;
        if (piece) {
          const now = performance.now();
          if (first === null) first = now;
          last = now;
          content += piece;
          pieces += 1;
          replyText.textContent = content;
          reply.dataset.pieces = String(pieces);
          scrollDown();
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    });
  } catch (e) {
    if (e.name === "AbortError") {
      state = "stopped";
    } else {
      state = "error";
      setStatus(e.message);
    }
  } finally {
    controller = null;
    setBusy(false);
  }
  const ended = performance.now();
  reply.dataset.state = state;
  if (content) history.push({ role: "assistant", content });
  else if (state === "error") history.pop();  // the question got no answer: do not send it again

  // Latency of this reply, measured here: time to the first token and decoding speed after it.
  const tokens = usage ? usage.completion_tokens : pieces;  // without usage (stopped): one piece ~ one token
  const figures = [];
  if (first !== null) figures.push("first token " + Math.round(first - started) + " ms");
  if (tokens > 1 && last > first) figures.push((((tokens - 1) * 1000) / (last - first)).toFixed(1) + " tokens/s");
  figures.push((usage ? "" : "≈") + tokens + " tokens");
  figures.push("total " + ((ended - started) / 1000).toFixed(2) + " s");
  if (state === "stopped") figures.push("stopped");
  else if (finish) figures.push("finish: " + finish);
  const stats = document.createElement("div");
  stats.className = "stats";
  stats.textContent = figures.join(" · ");
  reply.appendChild(stats);
  scrollDown();
}

$("composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); }
});
$("stop").addEventListener("click", () => { if (controller) controller.abort(); });
$("new-chat").addEventListener("click", () => {
  if (controller) controller.abort();
  history = [];
  $("messages").textContent = "";
  setStatus("");
});
$("api_key").value = localStorage.getItem("llm_api_key") || "";
$("api_key").addEventListener("change", () => { localStorage.setItem("llm_api_key", $("api_key").value.trim()); loadModel(); });
loadModel();
