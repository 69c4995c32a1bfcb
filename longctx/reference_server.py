"""A reference OpenAI-compatible server that answers long-context tests by actually reading the prompt.

It tokenizes each prompt with the suite's tokenizer, keeps only the last `window_tokens` tokens (a model that
"sees" K tokens), and answers from what is in that window: the values of the needles whose keys the question
asks for (RULER's wording), the variables of a value's assignment chain, the most common words of a list. So the
expected scores follow exactly from each sample's length and depth, and a user can check their whole set-up
(suite, runner, network, report) before pointing it at a GPU server.

It serves `/v1/models`, `/v1/completions`, `/v1/chat/completions` (streamed too, with usage in the last event when
asked by `stream_options.include_usage`, as vLLM), `/tokenize` (vLLM's shape) and `/health`, and can inject
faults (seeded): replies 500 or 429, dropped connections, replies delayed or stalled past the client's limits.
Built on the standard library's ThreadingHTTPServer: no extra dependency, one thread per connection.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_NEEDLE = re.compile(r"One of the special magic (.+?) for (.+?) is: (\S+?)\.")
_NIAH_QUESTION = re.compile(
    r"What (?:are all|is) the special magic (.+?) for (.+?) mentioned in the provided text\?"
)
_VT_ASSIGN = re.compile(r"VAR (\w+) = (?:VAR (\w+)|(\d+))")
_VT_QUESTION = re.compile(r"Find all variables that are assigned the value (\d+)")
_CWE_QUESTION = re.compile(r"What are the (\d+) most common words in the above list\?")
_CWE_ITEM = re.compile(r"(?<!\S)\d+\. (\S+)")
_FWE_QUESTION = re.compile(r"three most frequently appeared (?:coded )?words")


@dataclass(frozen=True)
class Faults:
    """Seeded fault injection on the generation routes. Rates are fractions of requests."""

    error_rate: float = 0.0
    """Answered 500 or 429 (half each)."""
    drop_rate: float = 0.0
    """Connection closed without a reply, or in the middle of one."""
    delay_rate: float = 0.0
    """Reply held back `delay_s` seconds (set it past the client's timeout)."""
    delay_s: float = 5.0
    malformed_rate: float = 0.0
    """Answered 200 with a body that is not a completion (a proxy's error page, a truncated reply)."""
    stall_rate: float = 0.0
    """Reply started, then held `delay_s` seconds before the rest: after the first streamed event, or after the
    headers of a reply that is not streamed (a generation that stalls)."""
    seed: int = 0

    def __post_init__(self) -> None:
        rates = (self.error_rate, self.drop_rate, self.delay_rate, self.malformed_rate, self.stall_rate)
        if any(r < 0 for r in rates) or sum(rates) > 1:
            raise ValueError(f"fault rates must be >= 0 and sum to at most 1, got {rates}")

    def draw(self, key: str, attempt: int) -> str | None:
        """The fault for the `attempt`-th request of one prompt: same seed, same faults, run after run."""
        u = random.Random(f"{self.seed}|{key}|{attempt}").random()
        if u < self.error_rate:
            return "500" if u < self.error_rate / 2 else "429"
        u -= self.error_rate
        if u < self.drop_rate:
            return "drop"
        u -= self.drop_rate
        if u < self.delay_rate:
            return "delay"
        u -= self.delay_rate
        if u < self.malformed_rate:
            return "malformed"
        u -= self.malformed_rate
        if u < self.stall_rate:
            return "stall"
        return None


def _split_query(query: str) -> list[str]:
    """RULER joins several keys as 'a, b, and c' (or 'a and b')."""
    parts = re.split(r",\s*(?:and\s+)?|\s+and\s+", query.strip())
    return [p.strip() for p in parts if p.strip()]


class ReferenceModel:
    """The 'model': reads the last `window_tokens` tokens of a prompt and answers RULER-style questions."""

    def __init__(
        self, tokenizer: Any, *, window_tokens: int = 4096, max_model_len: int | None = None
    ) -> None:
        if window_tokens < 1:
            raise ValueError(f"window_tokens must be positive, got {window_tokens}")
        self.tokenizer = tokenizer
        self.window_tokens = window_tokens
        self.max_model_len = max_model_len

    def encode(self, text: str, *, special: bool = False) -> Any:
        """Token ids; `special` matches special-token strings (a rendered chat template), as servers do."""
        return self.tokenizer.encode(text, allow_special=True) if special else self.tokenizer.encode(text)

    def window(self, prompt: str, *, special: bool = False) -> tuple[str, int]:
        """The text of the last K tokens of the prompt, and the prompt's token count."""
        ids = self.encode(prompt, special=special)
        n = len(ids)
        if n <= self.window_tokens:
            return prompt, n
        return self.tokenizer.decode(ids[n - self.window_tokens :]), n

    def answer_text(self, visible: str) -> str:
        """What the model says after the answer prefix, from the visible text only."""
        questions = list(_NIAH_QUESTION.finditer(visible))
        if questions:
            context = visible[: questions[-1].start()]
            by_key: dict[str, list[str]] = defaultdict(list)
            for m in _NEEDLE.finditer(context):
                by_key[m.group(2)].append(m.group(3))
            values = [v for key in _split_query(questions[-1].group(2)) for v in by_key.get(key, [])]
            return " " + ", ".join(dict.fromkeys(values)) + "." if values else " not in the text I can see."
        vt = list(_VT_QUESTION.finditer(visible))
        if vt:
            context = visible[: vt[-1].start()]
            holders: set[str] = set()
            edges: list[tuple[str, str]] = []
            for m in _VT_ASSIGN.finditer(context):
                if m.group(3) == vt[-1].group(1):
                    holders.add(m.group(1))
                elif m.group(2):
                    edges.append((m.group(1), m.group(2)))
            changed = True
            while changed:
                changed = False
                for dst, src in edges:
                    if src in holders and dst not in holders:
                        holders.add(dst)
                        changed = True
            ordered = [m.group(1) for m in _VT_ASSIGN.finditer(context) if m.group(1) in holders]
            return " " + " ".join(dict.fromkeys(ordered))
        cwe = list(_CWE_QUESTION.finditer(visible))
        if cwe:
            # The task's own list follows its last instructions; an in-context example comes before them.
            start = visible.rfind("Memorize the ones that appear most often.", 0, cwe[-1].start())
            words = _CWE_ITEM.findall(visible[max(start, 0) : cwe[-1].start()])
            top = [w for w, _ in Counter(words).most_common(int(cwe[-1].group(1)))]
            return " " + " ".join(f"{i}. {w}" for i, w in enumerate(top, 1))
        fwe = list(_FWE_QUESTION.finditer(visible))
        if fwe:
            end = visible.rfind("Question:", 0, fwe[-1].start())
            marker = "appeared coded words."
            start = visible.rfind(marker, 0, end)
            words = re.findall(r"[^\s.]+", visible[start + len(marker) if start >= 0 else 0 : end])
            top = [w for w, _ in Counter(words).most_common(3)]
            return " " + " ".join(top)
        return " I cannot tell from the text I can see."

    def complete(self, prompt: str, max_tokens: int, *, special: bool = False) -> dict[str, Any]:
        """Answer one prompt; raises PromptTooLong past `max_model_len`, as vLLM answers 400."""
        visible, prompt_tokens = self.window(prompt, special=special)
        if self.max_model_len is not None and prompt_tokens + max_tokens > self.max_model_len:
            raise PromptTooLong(
                f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
                f"completion). Please reduce the length of the messages or completion."
            )
        text = self.answer_text(visible)
        ids = self.tokenizer.encode(text)
        finish = "stop"
        if len(ids) > max_tokens:
            text, finish = self.tokenizer.decode(ids[:max_tokens]), "length"
            ids = ids[:max_tokens]
        return {
            "text": text,
            "finish_reason": finish,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": int(len(ids)),
        }

    def render_chat(
        self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool, continue_final_message: bool
    ) -> str:
        """The prompt a chat request stands for, through the tokenizer's chat template (or plain concatenation)."""
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=add_generation_prompt and not continue_final_message
            )
            if continue_final_message and messages:
                final = messages[-1]["content"].strip()
                cut = text.rfind(final)
                if cut >= 0:
                    text = text[: cut + len(final)]
            return text
        return "\n".join(m["content"] for m in messages)


class PromptTooLong(ValueError):
    """The prompt and the completion budget exceed the model's context."""


@dataclass
class ServerStats:
    """What the server saw; tests read it to check what the runner sent and resent."""

    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    requests: Counter[str] = field(default_factory=Counter)
    """Generation requests per prompt key (sha256 of the prompt or messages), faulty ones included."""
    answered: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    """Each generation request's parameters (prompt and messages left out)."""
    tokenize_calls: int = 0
    authorization: set[str] = field(default_factory=set)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.answered.clear()
            self.faults.clear()
            self.bodies.clear()
            self.tokenize_calls = 0


def prompt_key(body: dict[str, Any]) -> str:
    """Identify a request by what it asks (its prompt, or its messages): the server's notion of a sample."""
    if "messages" in body:
        data = json.dumps(body["messages"], ensure_ascii=False, sort_keys=True)
    else:
        data = str(body.get("prompt", ""))
    return hashlib.sha256(data.encode()).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Answer headers and body go out at once, as production servers do (no delayed-ACK stalls).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests and benchmarks read stdout
        if self.server.verbose:
            super().log_message(format, *args)

    def _reply(
        self, status: int, payload: Any, headers: dict[str, str] | None = None, stall: float = 0.0
    ) -> None:
        """The reply in one write; `stall` holds the body back that long after the headers."""
        data = json.dumps(payload, ensure_ascii=False).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if stall:
                self.wfile.flush()
                time.sleep(stall)
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): nothing to do
            self.close_connection = True

    def _error(self, status: int, message: str, kind: str = "BadRequestError") -> None:
        self._reply(status, {"object": "error", "message": message, "type": kind, "code": status})

    def _read_json(self) -> dict[str, Any] | None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            self._error(400, f"request body is not valid JSON: {exc.msg}")
            return None
        if not isinstance(body, dict):
            self._error(400, "request body must be a JSON object")
            return None
        return body

    def _authorized(self) -> bool:
        key = self.server.api_key
        got = self.headers.get("Authorization", "")
        with self.server.stats.lock:
            self.server.stats.authorization.add(got)
        if key is None or got == f"Bearer {key}":
            return True
        self._error(401, "invalid or missing API key", "AuthenticationError")
        return False

    def do_GET(self) -> None:
        if self.path in ("/health", "/ping"):
            self._reply(200, {"status": "ok"})
        elif self.path == "/v1/models":
            if not self._authorized():
                return
            model = self.server.model
            self._reply(
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": self.server.model_name,
                            "object": "model",
                            "created": 0,
                            "owned_by": "longtrove",
                            "max_model_len": model.max_model_len,
                            "window_tokens": model.window_tokens,
                        }
                    ],
                },
            )
        else:
            self._error(404, f"no route {self.path}", "NotFoundError")

    def do_POST(self) -> None:
        if self.path not in ("/v1/completions", "/v1/chat/completions", "/tokenize"):
            self._read_json()
            self._error(404, f"no route {self.path}", "NotFoundError")
            return
        body = self._read_json()
        if body is None or not self._authorized():
            return
        if self.path == "/tokenize":
            self._tokenize(body)
            return
        if body.get("model") != self.server.model_name:
            self._error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
            return
        self._generate(body, chat=self.path == "/v1/chat/completions")

    def _prompt_of(self, body: dict[str, Any]) -> str:
        model = self.server.model
        if "messages" in body:
            return model.render_chat(
                body["messages"],
                add_generation_prompt=bool(body.get("add_generation_prompt", True)),
                continue_final_message=bool(body.get("continue_final_message", False)),
            )
        return str(body.get("prompt", ""))

    def _tokenize(self, body: dict[str, Any]) -> None:
        with self.server.stats.lock:
            self.server.stats.tokenize_calls += 1
        ids = self.server.model.encode(self._prompt_of(body), special="messages" in body)
        self._reply(
            200,
            {
                "count": int(len(ids)),
                "max_model_len": self.server.model.max_model_len,
                "tokens": [int(i) for i in ids],
            },
        )

    def _generate(self, body: dict[str, Any], *, chat: bool) -> None:
        server = self.server
        key = prompt_key(body)
        with server.stats.lock:
            attempt = server.stats.requests[key]
            server.stats.requests[key] += 1
            server.stats.bodies.append({k: v for k, v in body.items() if k not in ("prompt", "messages")})
        fault = server.faults.draw(key, attempt)
        if fault is not None:
            with server.stats.lock:
                server.stats.faults[fault] += 1
        if fault == "500":
            self._error(500, "injected fault: internal error", "InternalServerError")
            return
        if fault == "429":
            self._error(429, "injected fault: too many requests", "RateLimitError")
            return
        if fault == "drop":
            self._drop(half=attempt % 2 == 1)
            return
        if fault == "malformed":
            self._reply(200, {"object": "error", "message": "injected fault: not a completion"})
            return
        if fault == "delay":
            time.sleep(server.faults.delay_s)
        elif server.latency_s:
            time.sleep(server.latency_s)
        try:
            max_tokens = int(body.get("max_tokens") or 16)
            result = server.model.complete(self._prompt_of(body), max_tokens, special=chat)
        except PromptTooLong as exc:
            self._error(400, str(exc))
            return
        except (KeyError, TypeError, ValueError) as exc:
            self._error(400, f"bad request: {exc}")
            return
        usage = {
            "prompt_tokens": result["prompt_tokens"],
            "completion_tokens": result["completion_tokens"],
            "total_tokens": result["prompt_tokens"] + result["completion_tokens"],
        }
        if chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": result["text"]},
                "finish_reason": result["finish_reason"],
                "logprobs": None,
            }
            payload = {
                "id": f"chatcmpl-{key[:16]}",
                "object": "chat.completion",
                "created": 0,
                "model": server.model_name,
                "choices": [choice],
                "usage": usage,
            }
        else:
            choice = {
                "index": 0,
                "text": result["text"],
                "finish_reason": result["finish_reason"],
                "logprobs": None,
            }
            payload = {
                "id": f"cmpl-{key[:16]}",
                "object": "text_completion",
                "created": 0,
                "model": server.model_name,
                "choices": [choice],
                "usage": usage,
            }
        if not server.report_usage:  # as a server or proxy that leaves usage out of its replies
            del payload["usage"]
        with server.stats.lock:
            server.stats.answered[key] += 1
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(payload, chat=chat, include_usage=include_usage, stall=fault == "stall")
            return
        if fault == "stall":
            self._reply(200, payload, stall=server.faults.delay_s)
            return
        self._reply(200, payload)

    def _stream(self, payload: dict[str, Any], *, chat: bool, include_usage: bool, stall: bool) -> None:
        """The reply as server-sent events, one per word of the answer, then the finish reason, usage (when
        asked) and [DONE], in HTTP/1.1 chunks so the connection is kept; the first event is sent on its own."""
        choice = payload["choices"][0]
        text = choice["message"]["content"] if chat else choice["text"]
        head = {k: payload[k] for k in ("id", "created", "model")}
        head["object"] = "chat.completion.chunk" if chat else "text_completion"

        def event(content: str | None, finish: str | None) -> dict[str, Any]:
            part: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
            if chat:
                part["delta"] = {"content": content} if content is not None else {}
            else:
                part["text"] = content or ""
            return {**head, "choices": [part]}

        events = [event(piece, None) for piece in re.findall(r"\s*\S+|\s+$", text)]
        events.append(event(None, choice["finish_reason"]))
        if include_usage:
            events.append({**head, "choices": [], "usage": payload["usage"]})
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunks = []
            for item in [*events, "[DONE]"]:
                data = item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)
                chunk = f"data: {data}\n\n".encode()
                chunks.append(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            # The first event on its own (the first token), then the rest at once: the answer is already known.
            self.wfile.write(chunks[0])
            if stall:
                self.wfile.flush()
                time.sleep(self.server.faults.delay_s)
            self.wfile.write(b"".join(chunks[1:]) + b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _drop(self, *, half: bool) -> None:
        """Close the connection with no reply, or after half a reply (a crash mid-write)."""
        self.close_connection = True
        try:
            if half:
                self.wfile.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b'Content-Length: 1000\r\n\r\n{"choices": ['
                )
                self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        model: ReferenceModel,
        *,
        model_name: str,
        faults: Faults,
        api_key: str | None,
        verbose: bool,
        latency_s: float = 0.0,
    ) -> None:
        super().__init__(address, _Handler)
        self.latency_s = latency_s
        self.model = model
        self.model_name = model_name
        self.faults = faults
        self.api_key = api_key
        self.verbose = verbose
        self.stats = ServerStats()
        self.report_usage = True


class ReferenceServer:
    """The reference server on loopback (or any host); use as a context manager or call start/stop."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        model_name: str = "reference",
        window_tokens: int = 4096,
        max_model_len: int | None = None,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        verbose: bool = False,
        latency_s: float = 0.0,
    ) -> None:
        """`latency_s` holds every answer back that long, as a model's prefill and decode would."""
        model = ReferenceModel(tokenizer, window_tokens=window_tokens, max_model_len=max_model_len)
        self.httpd = _HTTPServer(
            (host, port),
            model,
            model_name=model_name,
            faults=faults or Faults(),
            api_key=api_key,
            verbose=verbose,
            latency_s=latency_s,
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def stats(self) -> ServerStats:
        return self.httpd.stats

    @property
    def model(self) -> ReferenceModel:
        return self.httpd.model

    def set_faults(self, faults: Faults) -> None:
        self.httpd.faults = faults

    def start(self) -> ReferenceServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="reference-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> ReferenceServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
