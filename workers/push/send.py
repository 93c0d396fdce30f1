"""Talking to the server and the push itself: batches out, answers in, the state saved after each accepted batch.

Sending a record twice is harmless: the server stores by (owner, host, path).
Per-file problems go to the report and the push goes on; a problem with the
whole push (bad token, bad request, server gone) raises a PushError (PURE).
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import requests

from workers.hash_cache import HashCache, HashCacheError
from workers.hashing import HashingError
from workers.push.collect import Pending, collect_units, prepare
from workers.push.defaults import (
    CONNECT_TIMEOUT_S,
    DEFAULT_BATCH,
    DEFAULT_RETRY,
    MAX_BATCH,
    MAX_BODY_BYTES,
    PUSH_ENDPOINT,
    READ_TIMEOUT_S,
    default_cache_path,
    default_state_path,
    normalise_server,
)
from workers.push.report import (
    PushAuthError,
    PushError,
    PushRefusedError,
    PushReport,
    PushUnavailableError,
    PushUsageError,
)
from workers.push.state import PushState, state_lock
from workers.sources.http import RetryPolicy, make_session, parse_retry_after

# --------------------------------------------------------------------------
# Talking to the server


class _Sender:
    def __init__(self, *, url: str, token: str, host: str, session: requests.Session, retry: RetryPolicy,
                 sleep: Callable[[float], None], report: PushReport, timeout: tuple[float, float]) -> None:
        self.url, self.token, self.host = url, token, host
        self.session, self.retry, self.sleep, self.report = session, retry, sleep, report
        self.timeout = timeout

    def post(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        body = json.dumps({"host": self.host, "files": records}, separators=(",", ":")).encode("utf-8")
        headers = {"Authorization": f"Token {self.token}", "Content-Type": "application/json"}
        attempt = 0
        while True:
            attempt += 1
            self.report.requests += 1
            retry_after = None
            try:
                response = self.session.post(self.url, data=body, headers=headers, timeout=self.timeout)
            except requests.exceptions.SSLError as exc:  # retrying cannot fix a certificate
                raise PushUnavailableError(f"TLS failed for {self.url}: {_short(exc)}", self.report) from exc
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem = f"cannot reach {self.url}: {_short(exc)}"
            except requests.RequestException as exc:
                raise PushUnavailableError(f"request to {self.url} failed: {_short(exc)}", self.report) from exc
            else:
                status = response.status_code
                if status == 200:
                    return self._answer(response, len(records))
                if status in (401, 403):
                    raise PushAuthError(
                        f"the server refused the token (HTTP {status}{_detail_suffix(response)})", self.report)
                if status == 429 or status >= 500:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    problem = f"the server answered HTTP {status}{_detail_suffix(response)}"
                else:
                    raise PushRefusedError(
                        f"the server refused the request (HTTP {status}): {_error_message(response)}", self.report)
            if attempt >= self.retry.max_attempts:
                raise PushUnavailableError(f"{problem}; gave up after {attempt} attempts", self.report)
            wait = self.retry.delay(attempt, retry_after)
            if wait > self.retry.max_wait:
                raise PushUnavailableError(f"{problem}; it asked to wait {wait:.0f} s, more than {self.retry.max_wait:.0f} s",
                                           self.report)
            self.sleep(wait)

    def _answer(self, response: requests.Response, count: int) -> dict[str, Any]:
        try:
            doc = response.json()
        except ValueError:
            raise PushUnavailableError(f"{self.url} answered 200 with something that is not JSON; "
                                       "is --server the ModelXRef site?", self.report) from None
        counts_ok = isinstance(doc, dict) and all(
            isinstance(doc.get(k), int) and not isinstance(doc.get(k), bool) for k in ("created", "updated", "unchanged"))
        errors = doc.get("errors", []) if isinstance(doc, dict) else None
        if not counts_ok or not isinstance(errors, list) or not all(
            isinstance(e, dict) and isinstance(e.get("index"), int) and 0 <= e["index"] < count for e in errors
        ):
            raise PushUnavailableError(f"{self.url} answered 200 without the push result it should send", self.report)
        return doc


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:300] + "..."


def _error_message(response: requests.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict) and err.get("message"):
            message = str(err["message"])
            if err.get("detail"):
                message += f" ({_short(json.dumps(err['detail']) if not isinstance(err['detail'], str) else err['detail'])})"
            return message
        if isinstance(doc.get("detail"), str):  # DRF's own error form
            return doc["detail"]
    text = (response.text or "").strip()
    return _short(text) if text and len(text) < 500 else f"no readable message ({len(response.content)} bytes)"


def _detail_suffix(response: requests.Response) -> str:
    message = _error_message(response)
    return "" if message.startswith("no readable message") else f": {message}"


# --------------------------------------------------------------------------
# The push


def push_paths(
    paths: Iterable[str | os.PathLike[str]],
    *,
    server: str,
    token: str,
    host: str | None = None,
    state_path: str | os.PathLike[str] | None = None,
    cache: HashCache | str | os.PathLike[str] | None = None,
    batch_size: int = DEFAULT_BATCH,
    analyse: bool = True,
    session: requests.Session | None = None,
    progress: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    retry: RetryPolicy = DEFAULT_RETRY,
    on_message: Callable[[str], None] | None = None,
    timeout: tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
) -> PushReport:
    """Hash, analyse and push every model file under `paths`; return what happened.

    `cache`: a HashCache, a path to one, or None for default_cache_path().
    Per-file problems (unreadable, FIFO, vanished, refused by the server) go to
    `report.failed` and the push goes on; a problem with the whole push (bad
    token, bad request, server gone) raises a PushError carrying the report so far.
    """
    server = normalise_server(server)
    if not token or not token.strip():
        raise PushUsageError("a token is required (--token, or MODELXREF_TOKEN)")
    if not 1 <= batch_size <= MAX_BATCH:
        raise PushUsageError(f"batch size must be between 1 and {MAX_BATCH}, got {batch_size}")
    host = (host or socket.gethostname()).strip()
    if not host:
        raise PushUsageError("this machine has no host name; pass --host NAME")
    say = on_message or (lambda text: print(text, file=sys.stderr))
    state_file = Path(state_path) if state_path is not None else default_state_path(server)
    report = PushReport()

    own_cache = not isinstance(cache, HashCache)
    try:
        hash_cache = cache if isinstance(cache, HashCache) else HashCache(Path(cache) if cache else default_cache_path())
    except HashCacheError as exc:
        raise PushUsageError(str(exc)) from exc
    own_session = session is None
    session = session or make_session()
    try:
        with state_lock(state_file):
            state = PushState(state_file, server=server, host=host, token=token, warn=say)
            sender = _Sender(url=server + PUSH_ENDPOINT, token=token, host=host, session=session, retry=retry,
                             sleep=sleep, report=report, timeout=timeout)
            _run(paths, state=state, sender=sender, cache=hash_cache, batch_size=batch_size, analyse=analyse,
                 report=report, say=say, show_progress=progress)
    except PushError as exc:
        exc.report = report
        raise
    finally:
        if own_cache:
            hash_cache.close()
        if own_session:
            session.close()
    return report


def _run(paths: Iterable[str | os.PathLike[str]], *, state: PushState, sender: _Sender, cache: HashCache,
         batch_size: int, analyse: bool, report: PushReport, say: Callable[[str], None], show_progress: bool) -> None:
    from tqdm import tqdm

    units = collect_units(paths, report=report)
    for path, why in report.failed:
        say(f"failed: {path}: {why}")
    for path, why in report.passed_over:
        say(f"not pushed: {path}: {why}")
    files_bar = tqdm(total=len(units), desc="files", unit="file", position=0, file=sys.stderr,
                     disable=not show_progress, leave=False)
    bytes_bar = tqdm(total=sum(u.size for u in units), desc="bytes", unit="B", unit_scale=True, unit_divisor=1024,
                     position=1, file=sys.stderr, disable=not show_progress, leave=False)
    if show_progress:
        say = _through_tqdm(say)
    batch: list[Pending] = []
    batch_bytes = 0

    def flush() -> None:
        nonlocal batch, batch_bytes
        if batch:
            _send_batch(batch, state=state, sender=sender, report=report, say=say)
        batch, batch_bytes = [], 0

    try:
        for unit in units:
            done_before = bytes_bar.n
            try:
                pending = prepare(unit, state=state, cache=cache, analyse=analyse, report=report,
                                  bytes_progress=lambda done, _total: _set_bar(bytes_bar, done_before + done))
            except HashingError as exc:
                report.failed.append((unit.path, _reason(exc, unit.path)))
                say(f"failed: {unit.path}: {_reason(exc, unit.path)}")
                pending = None
            _set_bar(bytes_bar, done_before + unit.size)
            files_bar.update(1)
            if pending is None:
                continue
            if batch and batch_bytes + pending.encoded_size > MAX_BODY_BYTES:
                flush()
            batch.append(pending)
            batch_bytes += pending.encoded_size
            if len(batch) >= batch_size:
                flush()
        flush()
    finally:
        files_bar.close()
        bytes_bar.close()
    if report.skipped_unchanged:
        say(f"{report.skipped_unchanged} file(s) skipped: unchanged since the server accepted them")


def _send_batch(batch: list[Pending], *, state: PushState, sender: _Sender, report: PushReport,
                say: Callable[[str], None]) -> None:
    answer = sender.post([p.record for p in batch])
    refused = {e["index"]: e for e in answer.get("errors", [])}
    report.sent += len(batch)
    report.created += answer["created"]
    report.updated += answer["updated"]
    report.unchanged += answer["unchanged"]
    for index, pending in enumerate(batch):
        if index in refused:
            why = f"refused by the server: {refused[index].get('error') or 'no reason given'}"
            report.failed.append((pending.path, why))
            say(f"failed: {pending.path}: {why}")
            state.forget(pending.path)
        else:
            pending.remember(state)
    state.save()


def _reason(exc: Exception, path: str) -> str:
    # Engine messages start with the path; the report already carries it.
    text = str(exc)
    return text[len(path) + 2:] if text.startswith(path + ": ") else text


def _set_bar(bar: Any, value: int) -> None:
    if value > bar.n:
        bar.update(value - bar.n)


def _through_tqdm(say: Callable[[str], None]) -> Callable[[str], None]:
    from tqdm import tqdm

    def write(text: str) -> None:
        with tqdm.external_write_mode(file=sys.stderr):
            say(text)

    return write
