"""A local fake of the Slack Web API for tests: a real HTTP server on 127.0.0.1 that slack_sdk talks to.

It implements what spendwatch calls (auth.test, chat.postMessage, chat.update, chat.postEphemeral,
files.getUploadURLExternal + the upload URL + files.completeUploadExternal, usergroups.users.list,
views.open), checks the bearer token and the arguments Slack requires, records every call, keeps the
messages it was sent (so a test can read a message as it now stands), and can answer the next N calls of a
method with HTTP 429 and a Retry-After header, as Slack does when rate limiting.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

TOKEN = "xoxb-test-token"


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    status: int


@dataclass
class FakeSlack:
    token: str = TOKEN
    groups: dict[str, list[str]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    uploads: dict[str, bytes] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[str, list[tuple[int, int]]] = {}
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # -- control -----------------------------------------------------------------------------------------

    def start(self) -> FakeSlack:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/api/"

    def fail_next(self, method: str, *, status: int = 429, retry_after: int = 1, times: int = 1) -> None:
        """Answer the next `times` calls of `method` with `status` (429: rate limited, with Retry-After)."""
        with self._lock:
            self._failures.setdefault(method, []).extend([(status, retry_after)] * times)

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def ok_calls(self, method: str) -> list[Call]:
        return [c for c in self.calls_to(method) if c.status == 200]

    # -- the API -----------------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        if url.path.startswith("/upload/"):  # the upload URL files.getUploadURLExternal handed out
            file_id = url.path.rsplit("/", 1)[-1]
            with self._lock:
                known = file_id in self.files
                if known:
                    self.uploads[file_id] = body
                self.calls.append(Call("upload", {"file_id": file_id, "bytes": len(body)}, 200 if known else 404))
            self._send(h, 200 if known else 404, f"OK - {len(body)}".encode(), "text/plain")
            return
        method = url.path.removeprefix("/api/")
        args: dict[str, Any] = dict(parse_qsl(url.query))
        ctype = h.headers.get("Content-Type", "")
        if body and ctype.startswith("application/json"):
            args.update(json.loads(body))
        elif body:
            args.update(parse_qsl(body.decode()))
        with self._lock:
            failures = self._failures.get(method)
            failure = failures.pop(0) if failures else None
        if failure is not None:
            status, retry_after = failure
            with self._lock:
                self.calls.append(Call(method, args, status))
            self._send(h, status, json.dumps({"ok": False, "error": "ratelimited"}).encode(), "application/json",
                       {"Retry-After": str(retry_after)} if status == 429 else {})
            return
        if h.headers.get("Authorization") != f"Bearer {self.token}":
            result: dict[str, Any] = {"ok": False, "error": "not_authed"}
        else:
            handler = getattr(self, "_api_" + method.replace(".", "_"), None)
            result = handler(args) if handler else {"ok": False, "error": "unknown_method"}
        with self._lock:
            self.calls.append(Call(method, args, 200))
        self._send(h, 200, json.dumps(result).encode(), "application/json")

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str,
              headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def _next_ts(self) -> str:
        return f"1790000000.{next(self._ts):06d}"

    def _api_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": "https://example.slack.com/", "team": "Example", "user": "spendwatch",
                "team_id": "T0EXAMPLE", "user_id": "U0SPENDWATCH", "bot_id": "B0SPENDWATCH"}

    @staticmethod
    def _blocks(args: dict[str, Any]) -> list[dict[str, Any]]:
        blocks = args.get("blocks") or []
        return json.loads(blocks) if isinstance(blocks, str) else list(blocks)

    def _api_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        if len(self._blocks(args)) > 50:
            return {"ok": False, "error": "invalid_blocks"}
        ts = self._next_ts()
        message = {"ts": ts, "text": args.get("text"), "blocks": self._blocks(args), "thread_ts": args.get("thread_ts")}
        with self._lock:
            if args.get("thread_ts") and (channel, args["thread_ts"]) not in self.messages:
                return {"ok": False, "error": "thread_not_found"}
            self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _api_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        key = (args.get("channel", ""), args.get("ts", ""))
        with self._lock:
            if key not in self.messages:
                return {"ok": False, "error": "message_not_found"}
            self.messages[key].update(text=args.get("text"), blocks=self._blocks(args))
        return {"ok": True, "channel": key[0], "ts": key[1], "text": args.get("text")}

    def _api_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel") or not args.get("user"):
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "message_ts": self._next_ts()}

    def _api_files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("filename") or not str(args.get("length", "")).isdigit():
            return {"ok": False, "error": "invalid_arguments"}
        file_id = f"F{next(self._ids):08d}"
        with self._lock:
            self.files[file_id] = {"id": file_id, "name": args["filename"], "length": int(args["length"])}
        return {"ok": True, "upload_url": f"{self.root}/upload/{file_id}", "file_id": file_id}

    def _api_files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        files = args.get("files")
        items = json.loads(files) if isinstance(files, str) else files or []
        out = []
        with self._lock:
            for item in items:
                meta = self.files.get(item.get("id", ""))
                if meta is None or item["id"] not in self.uploads:
                    return {"ok": False, "error": "file_not_found"}
                if len(self.uploads[item["id"]]) != meta["length"]:
                    return {"ok": False, "error": "file_upload_size_mismatch"}
                meta.update(title=item.get("title"), channel=args.get("channel_id"), thread_ts=args.get("thread_ts"))
                out.append(dict(meta))
        return {"ok": True, "files": out}

    def _api_usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        group = args.get("usergroup", "")
        if group not in self.groups:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(self.groups[group])}

    def _api_views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        view = args.get("view")
        view = json.loads(view) if isinstance(view, str) else view
        if not args.get("trigger_id") or not isinstance(view, dict):
            return {"ok": False, "error": "invalid_arguments"}
        return {"ok": True, "view": {**view, "id": f"V{next(self._ids):08d}"}}
