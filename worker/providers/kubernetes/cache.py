"""An informer-style cache: one list + watch per resource kind, kept in memory by a background thread.

Why not GET per endpoint: with hundreds of endpoints a resync pass would cost hundreds of requests every few
seconds. A watch costs one long-lived request per kind however many endpoints there are; `observe()` then reads
memory. This is the client-go informer pattern (list, then watch from the list's resourceVersion, relist when the
server says 410 Gone), written small because the Python client has no informer of its own.

Objects are kept as plain JSON dicts (`_preload_content=False`): deserialising into the client's model classes
would cost more CPU than the whole reconcile pass.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

ListFn = Callable[..., Any]


def _rv(obj: dict) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except (KeyError, ValueError):
        return 0


class Reflector:
    """Mirror of one kind of object (optionally filtered by label selector) in one namespace or cluster-wide."""

    def __init__(self, name: str, list_fn: ListFn, *, index_label: str | None = None, label_selector: str | None = None,
                 field_selector: str | None = None, keep: Callable[[dict], bool] | None = None,
                 watch_timeout: int = 240) -> None:
        self.name = name
        self._list_fn = list_fn
        self._index_label = index_label
        self._label_selector = label_selector
        self._field_selector = field_selector
        self._keep = keep
        self._watch_timeout = watch_timeout
        self._lock = threading.RLock()  # re-entrant: wait_for's predicate reads the cache
        self._objects: dict[str, dict] = {}  # by metadata.name
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: urllib3.HTTPResponse | None = None
        self._changed = threading.Condition(self._lock)
        self.last_error: str | None = None
        self.last_status: int | None = None  # HTTP status of the last failed list/watch (403: not allowed)
        self.relists = 0

    # --- reading ---------------------------------------------------------------------------------------
    def get(self, name: str) -> dict | None:
        with self._lock:
            return self._objects.get(name)

    def by_index(self, value: str) -> list[dict]:
        with self._lock:
            return [o for o in self._objects.values()
                    if (o["metadata"].get("labels") or {}).get(self._index_label or "") == value]

    def items(self) -> list[dict]:
        with self._lock:
            return list(self._objects.values())

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until `predicate()` holds (re-checked on every change); used by tests and benchmarks."""
        end = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 1.0))
            return True

    # --- writing (write-through after our own requests) ------------------------------------------------
    def upsert(self, obj: dict) -> None:
        """Store an object we just wrote, unless the watch already delivered a newer version."""
        name = obj["metadata"]["name"]
        with self._lock:
            current = self._objects.get(name)
            if current is None or _rv(obj) >= _rv(current):
                self._objects[name] = obj
            self._changed.notify_all()

    def forget(self, name: str) -> None:
        with self._lock:
            self._objects.pop(name, None)
            self._changed.notify_all()

    # --- the loop --------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"k8s-reflector-{self.name}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        resp = self._response
        if resp is not None:
            try:
                resp.shutdown() if hasattr(resp, "shutdown") else resp.close()
            except Exception:  # noqa: BLE001 - best effort while tearing down a socket another thread reads
                log.debug("closing the %s watch failed", self.name, exc_info=True)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _kwargs(self) -> dict:
        kw: dict[str, Any] = {"_preload_content": False, "_request_timeout": (10, 120)}
        if self._label_selector:
            kw["label_selector"] = self._label_selector
        if self._field_selector:
            kw["field_selector"] = self._field_selector
        return kw

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                rv = self._list()
                backoff = 0.5
                while not self._stop.is_set():
                    rv = self._watch(rv)
                    if rv is None:
                        break  # 410 Gone: relist
            except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                if self._stop.is_set():
                    return
                self.last_error = f"{type(exc).__name__}: {exc}".replace("\n", " ").strip()
                self.last_status = getattr(exc, "status", None)
                log.warning("kubernetes %s watch failed (%s); retrying in %.1fs", self.name, self.last_error, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _list(self) -> str:
        resp = self._list_fn(**self._kwargs())
        body = json.loads(resp.data)
        objects = {}
        for item in body.get("items") or []:
            if self._keep is None or self._keep(item):
                objects[item["metadata"]["name"]] = item
        with self._lock:
            self._objects = objects
            self._changed.notify_all()
        self.relists += 1
        self.last_error = self.last_status = None
        self._synced.set()
        return body["metadata"]["resourceVersion"]

    def _watch(self, rv: str) -> str | None:
        # The server ends the watch after `timeout_seconds`; the client-side read timeout catches a dead peer.
        kwargs = {**self._kwargs(), "_request_timeout": (10, self._watch_timeout + 30)}
        resp = self._list_fn(watch=True, resource_version=rv, allow_watch_bookmarks=True,
                             timeout_seconds=self._watch_timeout, **kwargs)
        self._response = resp
        buffer = b""
        try:
            for chunk in resp.stream(amt=None, decode_content=False):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    etype, obj = event.get("type"), event.get("object") or {}
                    if etype == "ERROR":
                        if obj.get("code") == 410:
                            return None
                        raise ValueError(f"watch error: {obj.get('message')}")
                    new_rv = obj.get("metadata", {}).get("resourceVersion")
                    if new_rv:
                        rv = new_rv
                    if etype == "BOOKMARK":
                        continue
                    self._apply_event(etype, obj)
        finally:
            self._response = None
            resp.release_conn()
        return rv

    def _apply_event(self, etype: str, obj: dict) -> None:
        name = obj["metadata"]["name"]
        with self._lock:
            if etype == "DELETED" or (self._keep is not None and not self._keep(obj)):
                self._objects.pop(name, None)
            else:
                current = self._objects.get(name)
                if current is None or _rv(obj) >= _rv(current):
                    self._objects[name] = obj
            self._changed.notify_all()
