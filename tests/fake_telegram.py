"""A loopback fake of the Telegram Bot API for tests.

`FakeTelegram` is a small stdlib HTTP server on 127.0.0.1 (ephemeral port) that speaks enough of
the Bot API for python-telegram-bot (or plain httpx) to run its real HTTP code against it:

    with FakeTelegram(token=TOKEN) as tg:
        # settings: TELEGRAM_API_URL=tg.url ; PTB: .base_url(tg.base_url).base_file_url(...)
        tg.push_message(CHAT, "/ping")              # an incoming Update for getUpdates
        tg.wait_for_sent(1, timeout=5)               # blocks until the bot answered
        assert tg.sent[0].text == "pong"
        tg.rate_limit("sendMessage", retry_after=3)  # next sendMessage answers 429

Served: `POST|GET /bot<TOKEN>/<method>` with form-encoded, JSON or multipart bodies. A wrong
token answers 401 and an unknown method 404, as Telegram does. `sendMessage` enforces the
4096-character limit and checks `parse_mode=HTML` (and, roughly, MarkdownV2) markup, so a bot
that forgets to escape `<` or sends an overlong report fails the test the way it would fail in
production. Faults (HTTP errors, 429 with retry_after, delays, dropped connections) can be
injected per method, once or N times.

All state is guarded by one lock; every public method is thread-safe. Blocking waits
(`wait_for_sent`, `wait_for`) must not be called from the event loop that runs the bot — use the
`*_async` variants there.
"""
from __future__ import annotations

import asyncio
import contextlib
import email.parser
import html
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["DEFAULT_TOKEN", "MAX_MESSAGE_LENGTH", "ApiError", "Fault", "FakeTelegram",
           "RequestRecord", "SentMessage", "check_html", "command_entities",
           "run_application_in_thread"]

DEFAULT_TOKEN = "123456789:TEST-fake-token_ABCdefGHIjklMNOpqrSTUvwxYZ"
MAX_MESSAGE_LENGTH = 4096

# Tags Telegram's HTML parse mode accepts (https://core.telegram.org/bots/api#html-style).
HTML_TAGS = frozenset({"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span",
                       "tg-spoiler", "a", "code", "pre", "blockquote", "tg-emoji"})
_ENTITY = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|lt|gt|amp|quot);")
_COMMAND = re.compile(r"(?<![\w/])/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")
# Values PTB sends JSON-encoded inside form fields.
_JSON_FIELDS = frozenset({"reply_markup", "entities", "caption_entities", "commands", "scope",
                          "allowed_updates", "link_preview_options", "reply_parameters",
                          "media", "results", "options", "menu_button"})
_BOOL_FIELD = re.compile(r"(disable|protect|allow|drop|is|has|show|remove|only)_")
_INT_FIELDS = frozenset({"offset", "limit", "message_id", "message_thread_id", "user_id"})
# Methods answered with `true` and otherwise ignored (recorded in the request log).
_TRUE_METHODS = frozenset({"close", "logout", "sendchataction", "answercallbackquery",
                           "setmydescription", "setmyshortdescription", "setmyname",
                           "setchatmenubutton", "setmydefaultadministratorrights"})


class ApiError(Exception):
    """Raised by a method handler to answer `{"ok": false, ...}` with this HTTP status."""

    def __init__(self, status: int, description: str,
                 parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.status, self.description, self.parameters = status, description, parameters


def bad_request(detail: str) -> ApiError:
    return ApiError(400, f"Bad Request: {detail}")


@dataclass(frozen=True)
class SentMessage:
    "One successful sendMessage call, as the fake recorded it."
    chat_id: int | str
    text: str                      # the text as sent (markup included)
    parse_mode: str | None
    time: float                    # time.monotonic() when it was accepted
    message_id: int
    plain_text: str                # text after entity parsing (what the user would read)
    params: dict[str, Any] = field(default_factory=dict)  # every decoded parameter


@dataclass(frozen=True)
class RequestRecord:
    "One request to /bot<token>/<method> (or anything else), in arrival order."
    method: str                    # as in the URL path ("sendMessage"); "" if the path was bad
    time: float                    # time.monotonic() when the request arrived
    status: int                    # HTTP status answered; 0 if the connection was dropped
    params: dict[str, Any] = field(default_factory=dict)
    fault: str | None = None       # the injected fault's kind, if one fired


@dataclass
class Fault:
    """An injected fault. `kind`: "status" (answer `status` + `description`), "delay" (sleep
    `delay` seconds, then answer normally — the request *is* processed, like a slow Telegram),
    "drop" (close the connection without answering; `deliver=True` processes the request first,
    like a response lost on the way back). `times=None` fires until `clear_faults()`."""
    kind: str
    times: int | None = 1
    status: int = 500
    description: str = "Internal Server Error"
    parameters: dict[str, Any] | None = None
    delay: float = 0.0
    deliver: bool = False


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def command_entities(text: str) -> list[dict[str, Any]]:
    "`bot_command` entities for each /command in `text`, offsets in UTF-16 units like Telegram."
    return [{"type": "bot_command", "offset": _utf16_len(text[:m.start()]),
             "length": _utf16_len(m.group())} for m in _COMMAND.finditer(text)]


def check_html(text: str) -> str:
    """Parse Telegram-HTML `text` and return its plain text; raise `ApiError` 400 "can't parse
    entities" for what Telegram rejects: an unsupported or unclosed tag (every `<` starts a
    tag, so an unescaped `a < b` fails), unbalanced or crossed end tags, a span that isn't a
    spoiler. Unknown `&...;` sequences are kept literally, as Telegram does."""
    def fail(detail: str) -> ApiError:
        return bad_request(f"can't parse entities: {detail}")

    def byte_offset(i: int) -> int:
        return len(text[:i].encode("utf-8"))

    out: list[str] = []
    stack: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "&":
            m = _ENTITY.match(text, i)
            if m:
                try:
                    out.append(html.unescape(m.group()))
                except (ValueError, OverflowError):
                    out.append(m.group())
                i = m.end()
            else:
                out.append(c)
                i += 1
            continue
        if c != "<":
            out.append(c)
            i += 1
            continue
        start = i
        close = text.find(">", i)
        if text.startswith("</", i):
            if close < 0:
                raise fail(f"Unclosed end tag at byte offset {byte_offset(start)}")
            name = text[i + 2:close].strip().lower()
            if not stack:
                raise fail(f'Unexpected end tag at byte offset {byte_offset(start)}')
            if name != stack[-1]:
                raise fail(f'Unmatched end tag at byte offset {byte_offset(start)}, expected '
                           f'"</{stack[-1]}>", found "</{name}>"')
            stack.pop()
            i = close + 1
            continue
        j = i + 1
        while j < n and not text[j].isspace() and text[j] not in ">":
            j += 1
        if j >= n:
            raise fail(f"Unclosed start tag at byte offset {byte_offset(start)}")
        name = text[i + 1:j].lower()
        if name not in HTML_TAGS:
            raise fail(f'Unsupported start tag "{name}" at byte offset {byte_offset(start)}')
        if close < 0:
            raise fail(f"Unclosed start tag at byte offset {byte_offset(start)}")
        attrs = text[j:close]
        if name == "span" and not re.search(r"""class\s*=\s*["']?tg-spoiler\b""", attrs):
            raise fail('Tag "span" must have class "tg-spoiler"')
        stack.append(name)
        i = close + 1
    if stack:
        raise fail(f'Can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return "".join(out)


_MDV2_CODE = re.compile(r"```.*?```|`[^`]*`", re.S)
_MDV2_LINK_TARGET = re.compile(r"\]\((?:\\.|[^)\\])*\)")
_MDV2_NEVER_MARKUP = ".-=+#{}!"


def check_markdown_v2(text: str) -> None:
    """A deliberately partial MarkdownV2 check: characters that are never markup
    (`. - = + # { } !` outside code and link targets) must be escaped with a backslash,
    else 400 "Character 'x' is reserved" as Telegram answers. Formatting itself isn't parsed."""
    stripped = _MDV2_LINK_TARGET.sub("]", _MDV2_CODE.sub("", text))
    i = 0
    while i < len(stripped):
        c = stripped[i]
        if c == "\\":
            i += 2
            continue
        if c in _MDV2_NEVER_MARKUP and not (c == "!" and stripped[i + 1:i + 2] == "["):
            raise bad_request(f"can't parse entities: Character '{c}' is reserved and must be "
                              "escaped with the preceding '\\'")
        i += 1


def _coerce(name: str, value: Any) -> Any:
    "Decode one form field the way Telegram would (PTB sends non-strings JSON-encoded)."
    if not isinstance(value, str):
        return value
    if name in _JSON_FIELDS:
        try:
            return json.loads(value)
        except ValueError:
            raise bad_request(f"can't parse {name} JSON object") from None
    if name == "chat_id" and re.fullmatch(r"-?\d+", value):
        return int(value)
    if name in _INT_FIELDS:
        try:
            return int(value)
        except ValueError:
            raise bad_request(f"invalid {name} specified") from None
    if name == "timeout":
        try:
            return float(value)
        except ValueError:
            raise bad_request("invalid timeout specified") from None
    if value in ("true", "false") and _BOOL_FIELD.match(name):
        return value == "true"
    return value


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False      # never join handler threads (long polls) on close
    allow_reuse_address = True
    fake: FakeTelegram


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, as httpx expects
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        "Silenced: the default writes the request line — with the bot token — to stderr."

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.fake._track(self.connection, False)

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except OSError:          # client went away (cancelled long poll, timed-out request)
            self.close_connection = True

    def do_POST(self) -> None:
        self.server.fake._serve(self)

    do_GET = do_POST

    def reply(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class FakeTelegram:
    """Loopback fake Bot API server. Use as a context manager (or `start()` / `close()`).

    `url` is the API root (the `TELEGRAM_API_URL` setting); `base_url` / `base_file_url` are
    what PTB's `.base_url()` / `.base_file_url()` want. `bot_username` is what getMe returns.
    `known_chats`, if given, makes sendMessage to any other chat answer 400 "chat not found".
    """

    def __init__(self, token: str = DEFAULT_TOKEN, *, bot_username: str = "stockstock_test_bot",
                 known_chats: set[int | str] | None = None,
                 max_message_length: int = MAX_MESSAGE_LENGTH) -> None:
        self.token = token
        self.bot_username = bot_username
        self.known_chats = known_chats
        self.max_message_length = max_message_length
        bot_id = int(token.split(":", 1)[0]) if token.split(":", 1)[0].isdigit() else 1
        self.bot_user: dict[str, Any] = {
            "id": bot_id, "is_bot": True, "first_name": "StockStock Test",
            "username": bot_username}
        self.sent: list[SentMessage] = []
        self.requests: list[RequestRecord] = []
        self.commands: list[dict[str, Any]] = []
        self.webhook_url = ""
        self._cond = threading.Condition(threading.RLock())
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._faults: dict[str, list[Fault]] = {}
        self._handlers: dict[str, Callable[[dict[str, Any]], Any]] = {}
        self._poll_generation = 0
        self._closing = threading.Event()
        self._conns: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeTelegram:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="FakeTelegram", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        "Stop serving: wakes long polls and delays, closes every open connection."
        self._closing.set()
        with self._cond:
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._cond:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        assert self._server is not None, "FakeTelegram is not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        "The API root, like https://api.telegram.org (the TELEGRAM_API_URL setting)."
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        return f"{self.url}/file/bot"

    # ------------------------------------------------------------------ test-side API
    def push_update(self, update: dict[str, Any]) -> dict[str, Any]:
        "Queue a raw Update (an `update_id` is assigned if missing); returns it."
        with self._cond:
            update = {"update_id": next(self._update_ids), **update}
            self._updates.append(update)
            self._cond.notify_all()
        return update

    def push_message(self, chat_id: int, text: str, user_id: int | None = None, *,
                     username: str | None = None) -> dict[str, Any]:
        """Queue an Update carrying a text message from `user_id` (default: the chat id for a
        private chat, else 1001) in `chat_id`, with `bot_command` entities for /commands."""
        if user_id is None:
            user_id = chat_id if chat_id > 0 else 1001
        chat: dict[str, Any] = {"id": chat_id}
        if chat_id > 0:
            chat |= {"type": "private", "first_name": f"User{user_id}"}
        else:
            chat |= {"type": "supergroup" if str(chat_id).startswith("-100") else "group",
                     "title": f"Chat {chat_id}"}
        sender: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"}
        if username:
            sender["username"] = username
        message: dict[str, Any] = {"message_id": next(self._message_ids), "from": sender,
                                   "chat": chat, "date": int(time.time()), "text": text}
        entities = command_entities(text)
        if entities:
            message["entities"] = entities
        return self.push_update({"message": message})

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        "Updates not yet confirmed by a getUpdates offset."
        with self._cond:
            return list(self._updates)

    def fault(self, method: str, fault: Fault) -> None:
        "Inject `fault` for `method` (case-insensitive; '*' = every method). Faults queue up."
        with self._cond:
            self._faults.setdefault(method.lower(), []).append(fault)

    def fail(self, method: str, status: int = 500, description: str | None = None, *,
             times: int | None = 1, parameters: dict[str, Any] | None = None) -> None:
        "Answer `status` with `description` (default: the HTTP phrase, as Telegram's 5xx)."
        if description is None:
            description = HTTPStatus(status).phrase
        self.fault(method, Fault("status", times, status, description, parameters))

    def rate_limit(self, method: str, retry_after: int, *, times: int | None = 1) -> None:
        "Answer 429 Too Many Requests with `parameters.retry_after`, exactly like Telegram."
        self.fail(method, 429, f"Too Many Requests: retry after {retry_after}", times=times,
                  parameters={"retry_after": retry_after})

    def delay(self, method: str, seconds: float, *, times: int | None = 1) -> None:
        "Sleep `seconds` before answering (normally) — to provoke client read timeouts."
        self.fault(method, Fault("delay", times, delay=seconds))

    def drop(self, method: str, *, times: int | None = 1, deliver: bool = False) -> None:
        "Close the connection without answering (`deliver`: after processing the request)."
        self.fault(method, Fault("drop", times, deliver=deliver))

    def clear_faults(self) -> None:
        with self._cond:
            self._faults.clear()

    def on(self, method: str, handler: Callable[[dict[str, Any]], Any]) -> None:
        """Serve (or override) `method` with `handler(params) -> result`; it may raise ApiError.
        Runs in a server thread, under no lock."""
        self._handlers[method.lower()] = handler

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        "Block until `predicate()` is truthy (checked after each request); return its value."
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"condition not met within {timeout}s; "
                                       f"sent={[m.text for m in self.sent]!r}")
                self._cond.wait(min(left, 0.1))

    def wait_for_sent(self, n: int = 1, timeout: float = 5.0) -> list[SentMessage]:
        "Block until at least `n` messages were sent; return a copy of `sent`."
        return self.wait_for(lambda: list(self.sent) if len(self.sent) >= n else None, timeout)

    async def wait_for_async(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        "Like `wait_for`, for use inside the event loop that runs the bot (never blocks it)."
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout}s; "
                                   f"sent={[m.text for m in self.sent]!r}")
            await asyncio.sleep(0.01)

    async def wait_for_sent_async(self, n: int = 1, timeout: float = 5.0) -> list[SentMessage]:
        return await self.wait_for_async(
            lambda: list(self.sent) if len(self.sent) >= n else None, timeout)

    def sent_to(self, chat_id: int | str) -> list[SentMessage]:
        with self._cond:
            return [m for m in self.sent if m.chat_id == chat_id]

    def calls(self, method: str) -> list[RequestRecord]:
        "Request-log records for `method` (case-insensitive)."
        with self._cond:
            return [r for r in self.requests if r.method.lower() == method.lower()]

    # ------------------------------------------------------------------ server side
    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._cond:
            (self._conns.add if add else self._conns.discard)(conn)

    def _log(self, method: str, arrived: float, status: int, params: dict[str, Any],
             fault: Fault | None) -> None:
        with self._cond:
            self.requests.append(RequestRecord(method, arrived, status, params,
                                               fault.kind if fault else None))
            self._cond.notify_all()

    def _take_fault(self, method: str) -> Fault | None:
        with self._cond:
            for key in (method.lower(), "*"):
                queue = self._faults.get(key)
                if queue:
                    fault = queue[0]
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            queue.pop(0)
                    return fault
        return None

    @staticmethod
    def _read_params(req: _Handler) -> dict[str, Any]:
        query = dict(parse_qsl(urlsplit(req.path).query))
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        ctype = req.headers.get("Content-Type", "")
        raw: dict[str, Any] = dict(query)
        if body:
            if ctype.startswith("application/json"):
                data = json.loads(body)
                if not isinstance(data, dict):
                    raise bad_request("invalid JSON body")
                raw |= data
            elif ctype.startswith("multipart/form-data"):
                msg = email.parser.BytesParser().parsebytes(
                    f"Content-Type: {ctype}\r\n\r\n".encode() + body)
                for part in msg.get_payload() or []:
                    name = part.get_param("name", header="content-disposition")
                    payload = part.get_payload(decode=True) or b""
                    if name and part.get_filename() is None:
                        raw[name] = payload.decode("utf-8", "replace")
                    elif name:
                        raw[name] = payload
            else:
                raw |= dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        return {k: _coerce(k, v) for k, v in raw.items()}

    def _serve(self, req: _Handler) -> None:
        arrived = time.monotonic()
        path = urlsplit(req.path).path
        m = re.fullmatch(r"/bot([^/]+)/([A-Za-z]+)", path)
        method = m.group(2) if m else ""
        try:
            params = self._read_params(req)
        except ApiError as exc:
            self._answer(req, method, arrived, {}, None, exc)
            return
        except ValueError:
            self._answer(req, method, arrived, {}, None, bad_request("invalid request body"))
            return
        if not m:
            self._answer(req, method, arrived, params, None, ApiError(404, "Not Found"))
            return
        if m.group(1) != self.token:
            self._answer(req, method, arrived, params, None, ApiError(401, "Unauthorized"))
            return
        fault = self._take_fault(method)
        if fault is not None and fault.kind == "status":
            self._answer(req, method, arrived, params, fault,
                         ApiError(fault.status, fault.description, fault.parameters))
            return
        if fault is not None and fault.kind == "delay":
            if self._closing.wait(fault.delay):
                req.drop()
                self._log(method, arrived, 0, params, fault)
                return
        if fault is not None and fault.kind == "drop" and not fault.deliver:
            req.drop()
            self._log(method, arrived, 0, params, fault)
            return
        try:
            result: Any = self._dispatch(method, params)
            error: ApiError | None = None
        except ApiError as exc:
            result, error = None, exc
        if fault is not None and fault.kind == "drop":
            req.drop()
            self._log(method, arrived, 0, params, fault)
            return
        self._answer(req, method, arrived, params, fault, error, result)

    def _answer(self, req: _Handler, method: str, arrived: float, params: dict[str, Any],
                fault: Fault | None, error: ApiError | None, result: Any = None) -> None:
        if error is None:
            status, payload = 200, {"ok": True, "result": result}
        else:
            status = error.status
            payload = {"ok": False, "error_code": error.status, "description": error.description}
            if error.parameters:
                payload["parameters"] = error.parameters
        self._log(method, arrived, status, params, fault)
        try:
            req.reply(status, payload)
        except OSError:
            req.close_connection = True

    def _dispatch(self, method: str, params: dict[str, Any]) -> Any:
        key = method.lower()
        if key in self._handlers:
            return self._handlers[key](params)
        if key == "getme":
            return {**self.bot_user, "can_join_groups": True,
                    "can_read_all_group_messages": False, "supports_inline_queries": False}
        if key == "getupdates":
            return self._get_updates(params)
        if key == "sendmessage":
            return self._send_message(params)
        if key == "deletewebhook":
            with self._cond:
                self.webhook_url = ""
                if params.get("drop_pending_updates"):
                    self._updates.clear()
            return True
        if key == "setwebhook":
            with self._cond:
                self.webhook_url = str(params.get("url", ""))
            return True
        if key == "getwebhookinfo":
            with self._cond:
                return {"url": self.webhook_url, "has_custom_certificate": False,
                        "pending_update_count": len(self._updates)}
        if key == "setmycommands":
            commands = params.get("commands")
            if not isinstance(commands, list):
                raise bad_request("parameter \"commands\" is required")
            with self._cond:
                self.commands = commands
            return True
        if key == "getmycommands":
            with self._cond:
                return list(self.commands)
        if key == "deletemycommands":
            with self._cond:
                self.commands = []
            return True
        if key in _TRUE_METHODS:
            return True
        raise ApiError(404, "Not Found")

    def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = params.get("offset")
        limit = max(1, min(100, int(params.get("limit") or 100)))
        timeout = max(0.0, float(params.get("timeout") or 0))
        deadline = time.monotonic() + timeout
        with self._cond:
            if self.webhook_url:
                raise ApiError(409, "Conflict: can't use getUpdates method while webhook is "
                                    "active; use deleteWebhook to delete the webhook first")
            self._poll_generation += 1
            generation = self._poll_generation
            self._cond.notify_all()
            if isinstance(offset, int) and offset < 0:
                self._updates = self._updates[offset:]
            elif isinstance(offset, int):
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
            while True:
                if self._updates:
                    return self._updates[:limit]
                if generation != self._poll_generation:
                    raise ApiError(409, "Conflict: terminated by other getUpdates request; "
                                        "make sure that only one bot instance is running")
                left = deadline - time.monotonic()
                if left <= 0 or self._closing.is_set():
                    return []
                self._cond.wait(min(left, 0.25))

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = params.get("chat_id")
        if chat_id in (None, ""):
            raise bad_request("chat_id is empty")
        if self.known_chats is not None and chat_id not in self.known_chats:
            raise bad_request("chat not found")
        text = params.get("text")
        if not isinstance(text, str):
            raise bad_request("message text is empty")
        parse_mode = params.get("parse_mode") or None
        mode = (parse_mode or "").lower()
        if mode == "html":
            plain = check_html(text)
        elif mode == "markdownv2":
            check_markdown_v2(text)
            plain = text
        elif mode in ("", "markdown"):
            plain = text
        else:
            raise bad_request(f"unsupported parse_mode {parse_mode}")
        if not plain.strip():
            raise bad_request("message text is empty")
        if len(plain) > self.max_message_length:
            raise bad_request("message is too long")
        with self._cond:
            message_id = next(self._message_ids)
            self.sent.append(SentMessage(chat_id, text, parse_mode, time.monotonic(),
                                         message_id, plain, dict(params)))
        chat: dict[str, Any] = {"id": chat_id, "type": "private"}
        if isinstance(chat_id, str) or chat_id < 0:
            chat = {"id": chat_id if isinstance(chat_id, int) else -1000000000001,
                    "type": "supergroup", "title": str(chat_id)}
        return {"message_id": message_id, "from": self.bot_user, "chat": chat,
                "date": int(time.time()), "text": plain}


@contextlib.contextmanager
def run_application_in_thread(app: Any, *, poll_timeout: int = 1,
                              start_timeout: float = 10.0) -> Iterator[asyncio.AbstractEventLoop]:
    """Run a python-telegram-bot `Application` (polling) in a background thread with its own
    event loop, for synchronous tests; stops and shuts it down on exit. Yields the loop (use
    `asyncio.run_coroutine_threadsafe(coro, loop)` to call into the bot).

    Uses the manual lifecycle — initialize, start, updater.start_polling — so no signal
    handlers are installed (run_polling would need `stop_signals=None` off the main thread)
    and the loop is closed only here."""
    loop = asyncio.new_event_loop()
    ready, stop = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    async def main() -> None:
        await app.initialize()
        try:
            await app.start()
            await app.updater.start_polling(poll_interval=0.0, timeout=poll_timeout)
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)
        finally:
            if app.updater.running:
                await app.updater.stop()
            if app.running:
                await app.stop()
            await app.shutdown()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)
        finally:
            ready.set()
            loop.close()

    thread = threading.Thread(target=run, name="ptb-application", daemon=True)
    thread.start()
    ready.wait(start_timeout)
    if errors:
        thread.join(5)
        raise errors[0]
    try:
        yield loop
    finally:
        stop.set()
        thread.join(start_timeout)
        if errors:
            raise errors[0]
