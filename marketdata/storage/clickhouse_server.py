"""The local ClickHouse server: the embedded engine (chdb), opened once for the life of one process,
behind ClickHouse's own HTTP interface on 127.0.0.1.

Every component of the platform talks to ClickHouse with clickhouse-connect over HTTP, exactly as
to a ClickHouse server or cluster; this module is what answers when the "server" is the embedded
default. It serves the part of the interface clickhouse-connect uses:

- ``/ping`` ("Ok."), ``/`` with GET or POST: the query in the ``query`` URL parameter or in the body
  (with a ``query`` parameter the body is the INSERT's data); ``database``, ``default_format``,
  ``query_id``, ``session_id``, ``param_<name>`` (server-side query parameters) and any other
  parameter as a setting of that query;
- inserts whose data follows ``FORMAT <name>`` in any input format the engine reads (Native,
  RowBinary, Arrow, Parquet, JSONEachRow, ...), streamed into the engine; ``INSERT ... SELECT ...
  FROM input('structure') FORMAT <name>`` with the data in the body (the persist worker's path);
- request bodies compressed with ``Content-Encoding`` lz4 (frame), zstd, gzip or deflate, and
  responses compressed the same way when the client asks (``enable_http_compression=1`` and
  ``Accept-Encoding``);
- errors as ClickHouse sends them: the HTTP status ClickHouse maps the error to,
  ``X-ClickHouse-Exception-Code`` and a ``Code: N. DB::Exception: ...`` body, so the client raises
  the same exception classes with the same codes;
- ``X-ClickHouse-Summary``, ``X-ClickHouse-Format``, ``X-ClickHouse-Query-Id``,
  ``X-ClickHouse-Timezone``; optional HTTP basic auth (user ``default``, the password from
  ``MARKETDATA_CLICKHOUSE_PASSWORD``).

Sessions: a ``SET`` sent with a ``session_id`` is remembered for later requests of that session
(until ``session_timeout``, 60 s by default); temporary tables are not kept across requests.

Concurrency: each request runs on its own engine connection (a pool of connections to the one
engine; measured here with chdb 4.4: an insert on a second connection took 7 ms while another ran
a 7 s query, where on one shared connection it waited for the query to end). Settings a request
applied are reset before the connection serves another request.

Memory: the engine's total is bounded by ``max_server_memory_usage`` (``--max-memory``, default
2 GiB), its mark cache by ``--mark-cache`` (256 MiB) and the uncompressed cache is off.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hmac
import logging
import os
import queue
import re
import shutil
import signal
import threading
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiohttp import web

log = logging.getLogger("marketdata.clickhouse")

DEFAULT_MAX_MEMORY = 2 << 30
DEFAULT_MARK_CACHE = 256 << 20
DEFAULT_POOL = 8

# URL parameters of ClickHouse's HTTP interface that are not settings of the query.
_NOT_SETTINGS = {"query", "database", "default_format", "session_id", "session_timeout", "session_check",
                 "query_id", "compress", "decompress", "user", "password", "quota_key", "buffer_size",
                 "stacktrace", "role", "default_database", "client_protocol_version",
                 "wait_end_of_query"}   # we always answer after the end of the query

# The HTTP status ClickHouse gives each error (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp),
# keyed by the error's name, which the engine puts at the end of every message.
_STATUS_BY_NAME: dict[str, int] = {"REQUIRED_PASSWORD": 401, "QUERY_IS_TOO_LARGE": 413, "NOT_IMPLEMENTED": 501,
                                   "SOCKET_TIMEOUT": 503, "CANNOT_OPEN_FILE": 503, "CANNOT_SCHEDULE_TASK": 503,
                                   "HTTP_LENGTH_REQUIRED": 411, "TIMEOUT_EXCEEDED": 408,
                                   "UNSUPPORTED_MEDIA_TYPE": 415}
for _n in ("UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE", "ACCESS_DENIED"):
    _STATUS_BY_NAME[_n] = 403
for _n in ("BAD_ARGUMENTS", "CANNOT_COMPILE_REGEXP", "CANNOT_PARSE_TEXT", "CANNOT_PARSE_ESCAPE_SEQUENCE",
           "CANNOT_PARSE_QUOTED_STRING", "CANNOT_PARSE_DATE", "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER",
           "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING", "CANNOT_PARSE_IPV4", "CANNOT_PARSE_IPV6",
           "CANNOT_PARSE_INPUT_ASSERTION_FAILED", "CANNOT_PARSE_UUID", "DUPLICATE_COLUMN", "ILLEGAL_COLUMN",
           "UNKNOWN_ELEMENT_IN_AST", "UNKNOWN_TYPE_OF_AST_NODE", "THERE_IS_NO_COLUMN", "TOO_DEEP_AST",
           "TOO_BIG_AST", "UNEXPECTED_AST_STRUCTURE", "SYNTAX_ERROR", "INCORRECT_DATA", "TYPE_MISMATCH",
           "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE"):
    _STATUS_BY_NAME[_n] = 400
for _n in ("UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE", "UNKNOWN_STORAGE",
           "UNKNOWN_DATABASE", "UNKNOWN_SETTING", "UNKNOWN_DIRECTION_OF_SORTING", "UNKNOWN_AGGREGATE_FUNCTION",
           "UNKNOWN_FORMAT", "UNKNOWN_DATABASE_ENGINE", "UNKNOWN_TYPE_OF_QUERY", "UNKNOWN_ROLE"):
    _STATUS_BY_NAME[_n] = 404

_CODE_RE = re.compile(r"Code: (\d+)\.")
_NAME_RE = re.compile(r"\(([A-Z][A-Z0-9_]+)\)(?: \(version [^)]*\))?\s*$")
# INSERT ... FORMAT <name>, then the data. The statement part never holds the data.
_INSERT_FORMAT_RE = re.compile(r"^\s*INSERT\s+INTO\s.*?\bFORMAT\s+([A-Za-z0-9_]+)[ \t]*\r?\n?", re.I | re.S)
_INPUT_FN_RE = re.compile(r"\binput\s*\(\s*('(?:[^'\\]|\\.)*')\s*\)", re.I)
_TRAILING_FORMAT_RE = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.I)
_SET_RE = re.compile(r"^\s*SET\s+(.*?);?\s*$", re.I | re.S)

_CONTENT_TYPES = {"TabSeparated": "text/tab-separated-values; charset=UTF-8",
                  "CSV": "text/csv; charset=UTF-8", "CSVWithNames": "text/csv; charset=UTF-8"}


class ServerError(Exception):
    """An error to answer as ClickHouse does: code, name, message."""

    def __init__(self, code: int, name: str, message: str):
        super().__init__(message)
        self.code = code
        self.name = name


@dataclass
class _Conn:
    """One engine connection and what the last request left set on it."""
    raw: object
    database: str = "default"
    applied: dict[str, str] = field(default_factory=dict)


@dataclass
class _Session:
    settings: dict[str, str]
    timeout_s: float
    last_used: float


def _quote(v: str) -> str:
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


# Magic bytes each body encoding starts with. A body labelled with an encoding but not starting with
# its magic is taken as sent uncompressed: clickhouse-connect 1.12 with compress="zstd" labels its
# (uncompressed) Native insert bodies zstd.
_MAGIC = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd", "lz4": b"\x04\x22\x4d\x18"}


def _decompress(body: bytes, encoding: str) -> bytes:
    enc = encoding.strip().lower()
    if not enc or enc == "identity" or not body:
        return body
    if enc in _MAGIC and not body.startswith(_MAGIC[enc]):
        return body
    if enc == "gzip":
        return gzip.decompress(body)
    if enc == "deflate":
        return zlib.decompress(body)
    if enc == "zstd":
        from backports import zstd
        return zstd.decompress(body)
    if enc == "lz4":
        import lz4.frame
        return lz4.frame.decompress(body)
    raise ServerError(415, "UNSUPPORTED_MEDIA_TYPE", f"Unsupported Content-Encoding: {encoding}")


def _compress(body: bytes, encoding: str) -> tuple[bytes, str | None]:
    for enc in (e.strip().split(";")[0].lower() for e in encoding.split(",")):
        if enc == "lz4":
            import lz4.frame
            return lz4.frame.compress(body), "lz4"
        if enc == "zstd":
            from backports import zstd
            return zstd.compress(body), "zstd"
        if enc == "gzip":
            return gzip.compress(body, compresslevel=1), "gzip"
        if enc == "deflate":
            return zlib.compress(body, 1), "deflate"
    return body, None


def engine_error(exc: BaseException) -> ServerError:
    """The engine's exception as ClickHouse's (code, name, message)."""
    msg = str(exc).strip()
    m = _CODE_RE.search(msg)
    code = int(m.group(1)) if m else 1001          # STD_EXCEPTION
    n = _NAME_RE.search(msg)
    name = n.group(1) if n else "STD_EXCEPTION"
    if m and m.start() > 0:
        msg = msg[m.start():]
    return ServerError(code, name, msg)


class Engine:
    """The chdb engine of one data dir, opened once, with a pool of connections to it."""

    def __init__(self, path: Path, *, max_memory: int = DEFAULT_MAX_MEMORY, mark_cache: int = DEFAULT_MARK_CACHE,
                 pool_size: int = DEFAULT_POOL):
        from chdb import _chdb

        self._chdb = _chdb
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.spool = self.path.parent / (self.path.name + ".input")    # bodies for input() queries
        shutil.rmtree(self.spool, ignore_errors=True)
        self.spool.mkdir(parents=True, exist_ok=True)
        self.dsn = (f"file:{self.path}?max_server_memory_usage={int(max_memory)}"
                    f"&mark_cache_size={int(mark_cache)}&uncompressed_cache_size=0")
        self.pool_size = pool_size
        self._idle: queue.SimpleQueue[_Conn] = queue.SimpleQueue()
        self._count = 0
        self._count_lock = threading.Lock()
        self._sem = threading.BoundedSemaphore(pool_size)
        first = self._open()
        self.version = first.raw.query("SELECT version()", "TSV").bytes().decode().strip()
        self.timezone = first.raw.query("SELECT timezone()", "TSV").bytes().decode().strip()
        # Settings the engine itself changes on every connection: a reset goes back to these.
        self.baseline: dict[str, str] = _changed_settings(first.raw)
        self._idle.put(first)

    def _open(self) -> _Conn:
        with self._count_lock:
            self._count += 1
        return _Conn(self._chdb.connect(self.dsn))

    def acquire(self) -> _Conn:
        self._sem.acquire()
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            try:
                return self._open()
            except BaseException:
                self._sem.release()
                raise

    def release(self, conn: _Conn) -> None:
        self._idle.put(conn)
        self._sem.release()

    def close(self) -> None:
        while True:
            try:
                c = self._idle.get_nowait()
            except queue.Empty:
                break
            try:
                c.raw.close()
            except Exception:
                pass
        shutil.rmtree(self.spool, ignore_errors=True)


@dataclass
class Result:
    body: bytes
    fmt: str
    summary: dict


class Handler:
    """Runs one ClickHouse HTTP request on an engine connection (called in a worker thread)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.sessions: dict[str, _Session] = {}
        self._sessions_lock = threading.Lock()

    # -------------------------------------------------------------- sessions

    def _session_settings(self, session_id: str | None, timeout: str | None) -> dict[str, str]:
        if not session_id:
            return {}
        now = time.monotonic()
        with self._sessions_lock:
            for sid in [k for k, s in self.sessions.items() if now - s.last_used > s.timeout_s]:
                del self.sessions[sid]
            s = self.sessions.get(session_id)
            if s is None:
                s = self.sessions[session_id] = _Session({}, float(timeout or 60), now)
            s.last_used = now
            if timeout:
                s.timeout_s = float(timeout)
            return dict(s.settings)

    def _remember_set(self, session_id: str, statement: str) -> None:
        conn = self.engine.acquire()
        try:
            self._reset(conn)
            # Let the engine parse (and refuse) it, then read back what it changed.
            try:
                conn.raw.query(statement, "TSV")
                out = conn.raw.query("SELECT name, value FROM system.settings WHERE changed "
                                     "FORMAT JSONCompact", "TSV")
            except RuntimeError as e:
                raise engine_error(e) from None
            changed = {n: v for n, v in orjson.loads(out.bytes())["data"]
                       if self.engine.baseline.get(n) != v and n != "database"}
            conn.applied = dict(changed)
            self._reset(conn)
        finally:
            self.engine.release(conn)
        with self._sessions_lock:
            s = self.sessions.get(session_id)
            if s is not None:
                s.settings.update(changed)

    # -------------------------------------------------------------- connection state

    def _prepare(self, conn: _Conn, database: str, wanted: dict[str, str]) -> None:
        stale = [k for k in conn.applied if k not in wanted]
        changed = {k: v for k, v in wanted.items() if conn.applied.get(k) != v}
        parts = [self._default(k) for k in stale] + [f"{k} = {_quote(v)}" for k, v in changed.items()]
        if parts:
            try:
                conn.raw.query("SET " + ", ".join(parts), "TSV")
            except RuntimeError as e:
                self._reset(conn)
                raise engine_error(e) from None
            conn.applied = dict(wanted)
        if database != conn.database:
            try:
                conn.raw.query(f"USE `{database.replace('`', '')}`", "TSV")
            except RuntimeError as e:
                raise engine_error(e) from None
            conn.database = database

    def _default(self, name: str) -> str:
        base = self.engine.baseline.get(name)
        return f"{name} = DEFAULT" if base is None else f"{name} = {_quote(base)}"

    def _reset(self, conn: _Conn) -> None:
        if conn.applied:
            try:
                conn.raw.query("SET " + ", ".join(self._default(k) for k in conn.applied), "TSV")
                conn.applied = {}
            except RuntimeError:
                log.exception("clickhouse: could not reset settings %s", list(conn.applied))

    # -------------------------------------------------------------- requests

    def run(self, sql: str, data: bytes | None, *, database: str, default_format: str,
            settings: dict[str, str], params: dict[str, str], session_id: str | None,
            session_timeout: str | None) -> Result:
        if data is not None and not data:
            data = None
        wanted = {**self._session_settings(session_id, session_timeout), **settings}
        if session_id and data is None and _SET_RE.match(sql):
            self._remember_set(session_id, sql)
            return Result(b"", default_format, _summary(0, 0, 0, 0, 0, 0))
        conn = self.engine.acquire()
        t0 = time.perf_counter_ns()
        try:
            self._prepare(conn, database, wanted)
            if data is not None:
                return self._insert(conn, sql, data, t0)
            try:
                r = conn.raw.query(sql, default_format, params=params)
            except RuntimeError as e:
                raise engine_error(e) from None
            body = r.bytes()
            m = _TRAILING_FORMAT_RE.search(sql)
            fmt = m.group(1) if m else default_format
            return Result(body, fmt, _summary(r.rows_read(), r.bytes_read(), 0, 0,
                                              len(body), time.perf_counter_ns() - t0))
        finally:
            self.engine.release(conn)

    def _insert(self, conn: _Conn, sql: str, data: bytes, t0: int) -> Result:
        m = _INSERT_FORMAT_RE.match(sql)
        if not m:
            raise ServerError(62, "SYNTAX_ERROR", "Code: 62. DB::Exception: a request with data must be "
                              "INSERT INTO ... FORMAT <format>, followed by the data. (SYNTAX_ERROR)")
        fmt = m.group(1)
        statement = sql[:m.start(1)]
        statement = re.sub(r"\bFORMAT\s*$", "", statement.rstrip(), flags=re.I).rstrip()
        fn = _INPUT_FN_RE.search(statement)
        if fn:
            # INSERT ... SELECT ... FROM input('structure'): the engine reads the body from a file.
            path = self.engine.spool / f"{uuid.uuid4().hex}.{fmt}"
            path.write_bytes(data)
            try:
                source = f"file({_quote(str(path))}, {_quote(fmt)}, {fn.group(1)})"
                try:
                    r = conn.raw.query(statement[:fn.start()] + source + statement[fn.end():], "TSV")
                except RuntimeError as e:
                    raise engine_error(e) from None
                return Result(b"", fmt, _summary(r.rows_read(), r.bytes_read(), r.rows_read(), r.bytes_read(),
                                                 0, time.perf_counter_ns() - t0))
            finally:
                path.unlink(missing_ok=True)
        try:
            h = conn.raw.send_insert(statement, fmt)
        except RuntimeError as e:
            raise engine_error(e) from None
        try:
            conn.raw.insert_append(h, data)
            done = conn.raw.insert_done(h)
        except RuntimeError as e:
            try:
                conn.raw.insert_cancel(h)
            except RuntimeError:
                pass
            raise engine_error(e) from None
        rows, nbytes = done.rows_written(), done.bytes_written()
        return Result(b"", fmt, _summary(rows, nbytes, rows, nbytes, 0, time.perf_counter_ns() - t0))


def split_statement(body: bytes) -> tuple[str, bytes | None]:
    """A body holding the whole request: the statement, and for ``INSERT ... FORMAT x`` the data after it
    (binary formats stay bytes: the statement is found on a byte-for-byte decoding)."""
    m = _INSERT_FORMAT_RE.match(body[:65536].decode("latin-1"))
    if m and m.end() < len(body):
        return body[:m.end()].decode("utf-8", errors="replace"), body[m.end():]
    return body.decode("utf-8", errors="replace"), None


def _changed_settings(raw) -> dict[str, str]:
    out = raw.query("SELECT name, value FROM system.settings WHERE changed FORMAT JSONCompact", "TSV")
    return {n: v for n, v in orjson.loads(out.bytes())["data"]}


def _summary(read_rows: int, read_bytes: int, written_rows: int, written_bytes: int, result_bytes: int,
             elapsed_ns: int) -> dict:
    return {"read_rows": str(read_rows), "read_bytes": str(read_bytes), "written_rows": str(written_rows),
            "written_bytes": str(written_bytes), "total_rows_to_read": str(read_rows),
            "result_rows": "0", "result_bytes": str(result_bytes), "elapsed_ns": str(elapsed_ns)}


class Server:
    """The HTTP front: parses a request as ClickHouse does and hands it to a worker thread."""

    def __init__(self, engine: Engine, *, password: str | None = None):
        self.engine = engine
        self.handler = Handler(engine)
        self.password = password or None
        self.pool = ThreadPoolExecutor(max_workers=engine.pool_size, thread_name_prefix="ch-query")
        self.requests = 0
        self.errors = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 34)
        app.router.add_route("GET", "/ping", self.ping)
        app.router.add_route("HEAD", "/ping", self.ping)
        app.router.add_route("GET", "/", self.query)
        app.router.add_route("POST", "/", self.query)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        return app

    async def ping(self, request: web.Request) -> web.Response:
        return web.Response(body=b"Ok.\n", content_type="text/html", charset="UTF-8")

    async def not_found(self, request: web.Request) -> web.Response:
        return self._error(ServerError(
            0, "NOT_FOUND", f"There is no handle {request.path}\n\nUse / or /ping."), status=404)

    def _authorized(self, request: web.Request) -> bool:
        if self.password is None:
            return True
        q = request.query
        user, password = q.get("user"), q.get("password")
        if request.headers.get("X-ClickHouse-User") or request.headers.get("X-ClickHouse-Key"):
            user = request.headers.get("X-ClickHouse-User", user)
            password = request.headers.get("X-ClickHouse-Key", password)
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
        return (user or "default") == "default" and password is not None and \
            hmac.compare_digest(password.encode(), self.password.encode())

    def _error(self, e: ServerError, status: int | None = None) -> web.Response:
        self.errors += 1
        msg = str(e)
        if e.code and not msg.startswith("Code:"):
            msg = f"Code: {e.code}. DB::Exception: {msg} ({e.name})"
        if e.code and "(version " not in msg:
            msg += f" (version {self.engine.version})"
        headers = {"X-ClickHouse-Exception-Code": str(e.code), "X-ClickHouse-Timezone": self.engine.timezone}
        return web.Response(status=status or _STATUS_BY_NAME.get(e.name, 500), body=(msg + "\n").encode(),
                            content_type="text/plain", charset="UTF-8", headers=headers)

    async def query(self, request: web.Request) -> web.Response:
        self.requests += 1
        if not self._authorized(request):
            return self._error(ServerError(516, "AUTHENTICATION_FAILED",
                                           "default: Authentication failed: password is incorrect, "
                                           "or there is no user with such name."))
        q: dict[str, str] = dict(request.query)
        query_id = q.get("query_id") or str(uuid.uuid4())
        sql = q.get("query") or ""
        try:
            if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
                # A long query and its parameters as form fields (clickhouse-connect does this
                # when they would not fit in the URL).
                form = await request.post()
                q.update({k: v for k, v in form.items() if isinstance(v, str)})
                body = b""
            else:
                body = await request.read() if request.can_read_body else b""
                body = _decompress(body, request.headers.get("Content-Encoding", ""))
            sql = q.get("query")
            data: bytes | None = None
            if sql is None:
                sql, data = split_statement(body)
            elif body:
                data = body
            if not sql.strip():
                raise ServerError(62, "SYNTAX_ERROR", "Empty query")
            settings = {k: v for k, v in q.items() if k not in _NOT_SETTINGS and not k.startswith("param_")}
            settings.pop("enable_http_compression", None)
            params = {k[6:]: v for k, v in q.items() if k.startswith("param_")}
            default_format = q.get("default_format") or "TabSeparated"
            database = q.get("database") or q.get("default_database") or "default"
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(
                self.pool, lambda: self.handler.run(sql, data, database=database, default_format=default_format,
                                                    settings=settings, params=params,
                                                    session_id=q.get("session_id"),
                                                    session_timeout=q.get("session_timeout")))
        except ServerError as e:
            # As ClickHouse's own server log does: every failed query, with its code.
            log.info("query %s failed: code %d (%s): %s | %s", query_id, e.code, e.name,
                     str(e).splitlines()[0][:300], " ".join(sql.split())[:300])
            return self._error(e)
        except Exception as e:          # anything else is the server's own fault: 500, logged
            log.exception("clickhouse: request failed")
            return self._error(ServerError(1001, "STD_EXCEPTION", f"{type(e).__name__}: {e}"))
        headers = {"X-ClickHouse-Format": result.fmt, "X-ClickHouse-Query-Id": query_id,
                   "X-ClickHouse-Timezone": self.engine.timezone,
                   "X-ClickHouse-Summary": orjson.dumps(result.summary).decode(),
                   "X-ClickHouse-Server-Display-Name": "marketdata-local"}
        out = result.body
        if q.get("enable_http_compression") == "1" and out:
            out, enc = _compress(out, request.headers.get("Accept-Encoding", ""))
            if enc:
                headers["Content-Encoding"] = enc
        ctype = _CONTENT_TYPES.get(result.fmt, "application/json; charset=UTF-8" if result.fmt.startswith("JSON")
                                   else "application/octet-stream")
        headers["Content-Type"] = ctype
        return web.Response(body=out, headers=headers)


def serve(data: Path, *, host: str = "127.0.0.1", port: int = 8123, max_memory: int = DEFAULT_MAX_MEMORY,
          mark_cache: int = DEFAULT_MARK_CACHE, pool_size: int = DEFAULT_POOL, url_file: Path | None = None) -> int:
    """Run the server until SIGTERM or SIGINT; writes its URL to ``url_file`` once it answers."""
    password = os.environ.get("MARKETDATA_CLICKHOUSE_PASSWORD") or None
    engine = Engine(data, max_memory=max_memory, mark_cache=mark_cache, pool_size=pool_size)
    server = Server(engine, password=password)

    async def main() -> None:
        # ClickHouse accepts URLs up to 1 MiB (http_max_uri_size); clickhouse-connect sends long ones.
        runner = web.AppRunner(server.app(), access_log=None, handle_signals=False,
                               max_line_size=1 << 20, max_field_size=1 << 20)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1] if port == 0 else port   # type: ignore[union-attr]
        url = f"http://{host}:{bound}"
        log.info("ClickHouse %s (embedded engine, data %s) serving HTTP on %s%s; memory bound %d MiB",
                 engine.version, data, url, " with password" if password else "", max_memory >> 20)
        if url_file is not None:
            url_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = url_file.with_suffix(".tmp")
            tmp.write_text(url)
            tmp.replace(url_file)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for s in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(s, stop.set)
        await stop.wait()
        log.info("ClickHouse server stopping (%d requests, %d errors)", server.requests, server.errors)
        await runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        if url_file is not None:
            url_file.unlink(missing_ok=True)
        server.pool.shutdown(wait=True)
        engine.close()
    return 0
