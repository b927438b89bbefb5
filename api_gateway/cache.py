"""Watch-fed caches: each resource is LISTed once, then WATCHed from that resourceVersion (with
bookmarks); a 410 Gone relists. Reads never go to the API server. The gateway also puts the objects
its own writes return into the cache (`upsert`), so a client reads its own writes at once; an older
watch event never overwrites a newer object. The watch event that then brings a write the cache already
holds is recognised by its resourceVersion and not parsed (a create costs the gateway one JSON parse
of the job, not two).

`Store` keeps the indexes the handlers need: project id -> namespace, per-namespace jobs in a stable
order (creation time, id, name), integer id -> name, stream key -> job.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, chain
from typing import Any, TypeVar, cast

from onair.api_gateway import mapping
from onair.api_gateway.errors import dumps
from onair.api_gateway.query import SortKey
from onair.kubeclient import ApiError, KubeClient, parse_watch_event, resource_path
from onair.models import API_VERSION
from onair.namespaces import listed_namespaces, watches
from onair.streamkeys import derive_preview_key, derive_stream_key

# Distinct queries remembered per namespace index (a console's filters are few; a scanner's are not).
MAX_REMEMBERED_QUERIES = 256
# Joins the search texts of an index; the texts never contain it (see mapping.search_text).
SEPARATOR = "\0"
# Length of the substrings (n-grams) the index keeps the jobs of: a search at least this long reads
# only the jobs that hold all of its n-grams; a shorter one scans every job's text.
GRAM = 3
# Above this share of the jobs holding its rarest n-gram, a search scans the joined texts instead:
# reading a job through the postings costs more than passing it in the scan.
GRAM_SCAN_SHARE = 1 / 16
# Deleted objects remembered per cache, so that a late copy of one is not cached again.
MAX_TOMBSTONES = 10_000
# resourceVersions of objects `upsert` stored before their watch event came, per cache. An event that
# never comes (a watch resumed past it) leaves its entry until newer ones push it out.
MAX_STORED_AHEAD = 1024
# How the API server writes the start of an ADDED or MODIFIED event, and an object's resourceVersion.
CHANGE_EVENT_STARTS = (b'{"type":"ADDED",', b'{"type":"MODIFIED",')
RESOURCE_VERSION_KEY = b'"resourceVersion":"'

log = logging.getLogger("onair.gateway.cache")
Obj = dict[str, Any]
T = TypeVar("T")
Key = tuple[str, str]  # namespace, name


def rv_int(obj: Mapping[str, Any]) -> int:
    text = str((obj.get("metadata") or {}).get("resourceVersion") or "0")
    return int(text) if text.isdigit() else 0


def uid_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def obj_key(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name"))


def run_soon(callback: Callable[[], None]) -> bool:
    """`callback` on the event loop's next turn, after what runs now (a create's answer); outside a loop
    (tests feeding the caches), at once. True when it waits for the loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        callback()
        return False
    loop.call_soon(callback)
    return True


def sole_resource_version(line: bytes) -> str | None:
    """The resourceVersion in an ADDED or MODIFIED watch event's JSON line, without parsing it; None
    for other events and for a line that holds the key more than once (an annotation of that name)."""
    if not line.startswith(CHANGE_EVENT_STARTS):
        return None
    at = line.find(RESOURCE_VERSION_KEY)
    if at < 0 or line.find(RESOURCE_VERSION_KEY, at + 1) >= 0:
        return None
    start = at + len(RESOURCE_VERSION_KEY)
    version = line[start:line.find(b'"', start)]
    return version.decode() if version.isdigit() else None


def grams(text: str) -> set[str]:
    """The distinct substrings of GRAM characters in `text`."""
    return {text[i:i + GRAM] for i in range(len(text) - GRAM + 1)}


Listener = Callable[[str, Obj | None, Obj | None], None]  # (event, old, new)


class WatchCache:
    """One resource type (optionally label- or field-selected), kept current by list + watch."""

    def __init__(self, name: str, path: str, label_selector: str | None = None,
                 field_selector: str | None = None) -> None:
        self.name = name
        self.path = path
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.objects: dict[Key, Obj] = {}
        self.resource_version = ""
        self.synced = asyncio.Event()
        self.listeners: list[Listener] = []
        self.relists = 0
        self.events = 0
        # resourceVersion at which an object was deleted, and its uid: an older copy (a GET that crossed
        # the delete), or a later version of the same object (a delete through the gateway leaves it with
        # its finalizers a while, and a status write may still be on its way), must not bring it back. A
        # new object of that name has another uid. Bounded; a relist clears it.
        self.tombstones: dict[Key, tuple[int, str]] = {}
        # resourceVersions that `upsert` stored and the watch has not brought yet (insertion-ordered).
        # Each names one write of one object: etcd gives every write its own revision.
        self.stored_ahead: dict[str, None] = {}

    def get(self, namespace: str, name: str) -> Obj | None:
        return self.objects.get((namespace, name))

    def values(self) -> Iterator[Obj]:
        return iter(self.objects.values())

    def _notify(self, event: str, old: Obj | None, new: Obj | None) -> None:
        for listener in self.listeners:
            try:
                listener(event, old, new)
            except Exception:
                log.exception("cache %s: listener failed", self.name)

    def upsert(self, obj: Obj) -> bool:
        """Store `obj` (the answer to a write or a GET) unless the cache already has it or a newer
        version; True when stored. Its watch event, when it comes, is then skipped unparsed."""
        if not self._store(obj):
            return False
        version = rv_int(obj)
        if version:
            self.stored_ahead[str(version)] = None
            if len(self.stored_ahead) > MAX_STORED_AHEAD:
                del self.stored_ahead[next(iter(self.stored_ahead))]
        return True

    def _store(self, obj: Obj) -> bool:
        key = obj_key(obj)
        old = self.objects.get(key)
        if old is not None and rv_int(old) >= rv_int(obj) > 0:
            return False
        tombstone = self.tombstones.get(key)
        if tombstone is not None:
            deleted_at, uid = tombstone
            if rv_int(obj) <= deleted_at or (uid and uid_of(obj) == uid):
                return False
            del self.tombstones[key]
        self.objects[key] = obj
        self._notify("MODIFIED" if old is not None else "ADDED", old, obj)
        return True

    def remove(self, obj: Mapping[str, Any]) -> None:
        key = obj_key(obj)
        old = self.objects.pop(key, None)
        deleted_at = max(rv_int(obj), rv_int(old or {}))
        if deleted_at > 0:
            self.tombstones.pop(key, None)
            self.tombstones[key] = (deleted_at, uid_of(obj) or uid_of(old or {}))
            if len(self.tombstones) > MAX_TOMBSTONES:
                del self.tombstones[next(iter(self.tombstones))]
        if old is not None:
            self._notify("DELETED", old, None)

    def replace(self, items: list[Obj], resource_version: str) -> None:
        fresh = {obj_key(item): item for item in items}
        self.tombstones.clear()
        self.stored_ahead.clear()
        for key in [k for k in self.objects if k not in fresh]:
            self._notify("DELETED", self.objects.pop(key), None)
        for key, item in fresh.items():
            old = self.objects.get(key)
            if old is None or rv_int(old) <= rv_int(item):
                self.objects[key] = item
                self._notify("MODIFIED" if old is not None else "ADDED", old, item)
        self.resource_version = resource_version
        self.relists += 1
        self.synced.set()

    def apply_event(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            if rv:
                self.resource_version = rv
            return
        self.events += 1
        if kind == "DELETED":
            current = self.objects.get(obj_key(obj))
            if current is None or rv_int(current) <= rv_int(obj) or rv_int(obj) == 0:
                self.remove(obj)
        elif kind in ("ADDED", "MODIFIED"):
            self._store(obj)
        if rv:
            self.resource_version = rv

    def apply_line(self, line: bytes) -> None:
        """One watch event as the server's JSON line: skipped unparsed when it brings a write that
        `upsert` stored already (same resourceVersion), else parsed and applied."""
        if self.stored_ahead:
            version = sole_resource_version(line)
            if version is not None and version in self.stored_ahead:
                del self.stored_ahead[version]
                self.events += 1
                self.resource_version = version
                return
        self.apply_event(parse_watch_event(line))

    async def run(self, kube: KubeClient) -> None:
        """List, then watch forever; relist on 410 Gone, back off on other failures."""
        params = {name: value for name, value in (("labelSelector", self.label_selector),
                                                  ("fieldSelector", self.field_selector)) if value}
        backoff = 0.2
        need_list = True
        while True:
            try:
                if need_list:
                    page = await kube.list(self.path, **params)
                    self.replace(page.get("items", []), str(page.get("metadata", {}).get("resourceVersion", "")))
                    need_list = False
                async for line in kube.watch_lines(self.path, self.resource_version, timeout_seconds=240, **params):
                    self.apply_line(line)
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except ApiError as error:
                if error.status == 410:
                    need_list = True
                    continue
                log.warning("cache %s: %s; retrying in %.1fs", self.name, error, backoff)
                need_list = need_list or error.status >= 500
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5)
            except Exception as error:
                log.warning("cache %s: %r; retrying in %.1fs", self.name, error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5)


class NamespacedCaches:
    """One resource type watched cluster-wide, or in each of the given namespaces only (when RBAC grants
    it in those alone), read and fed as one cache."""

    def __init__(self, name: str, resource: str, label_selector: str | None, namespaces: Sequence[str]) -> None:
        self.caches: dict[str | None, WatchCache] = (
            {ns: WatchCache(f"{name}/{ns}", f"/api/v1/namespaces/{ns}/{resource}", label_selector) for ns in namespaces}
            or {None: WatchCache(name, f"/api/v1/{resource}", label_selector)})

    def _cache_of(self, namespace: str) -> WatchCache | None:
        return self.caches.get(namespace) or self.caches.get(None)

    def get(self, namespace: str, name: str) -> Obj | None:
        cache = self._cache_of(namespace)
        return cache.get(namespace, name) if cache else None

    def values(self) -> Iterator[Obj]:
        return chain.from_iterable(cache.values() for cache in self.caches.values())

    def upsert(self, obj: Obj) -> bool:
        cache = self._cache_of(obj_key(obj)[0])
        return cache.upsert(obj) if cache else False

    def replace(self, items: list[Obj], resource_version: str) -> None:
        for namespace, cache in self.caches.items():
            cache.replace([item for item in items if namespace in (None, obj_key(item)[0])], resource_version)


@dataclass
class JobEntry:
    """One version of a job as the lists see it; replaced, never changed, when the job changes."""

    obj: Obj
    facts: dict[str, Any]
    name: str = field(init=False)
    id: int = field(init=False)
    sort_key: SortKey = field(init=False)
    # The list row rendered from this version of the job, what else it was rendered from, and its JSON.
    _row: tuple[Hashable, dict[str, Any], str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        facts = self.facts
        self.name = str(facts["job_id"] if "job_id" in facts else facts["name"])
        self.id = int(facts["id"])
        self.sort_key = (int(facts["created_at"]), self.id, self.name)

    def row(self, depends_on: Hashable, render: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], str]:
        """The list row and its JSON text, made once per version of the job and of `depends_on` (what
        else goes into the row). Callers must not change it."""
        if self._row is None or self._row[0] != depends_on:
            row = render()
            self._row = (depends_on, row, dumps(row))
        return self._row[1], self._row[2]


@dataclass
class JobIndex:
    """The jobs of one namespace in creation order, with lookups by name and integer id."""

    entries: dict[str, JobEntry] = field(default_factory=dict)
    keys: list[SortKey] = field(default_factory=list)
    by_id: dict[int, str] = field(default_factory=dict)
    version: int = 0  # bumped on every change; list results are remembered per version
    # The newest stamp (creation or change, ms) of any job put: while it has not settled, a list
    # answer depends on the time too (see handlers.page_of).
    newest_stamp_ms: int = -1
    # Bumped only when a search text or the order changes: a job's statistics or outputs changing
    # (the operator writes those all the time) does not rebuild the joined texts.
    text_version: int = 0
    _remembered: dict[Hashable, Any] = field(default_factory=dict)
    _remembered_version: int = -1
    _haystack: str = ""
    _starts: list[int] = field(default_factory=list)
    _haystack_version: int = -1
    # n-gram -> names of the jobs whose search text holds it
    _postings: dict[str, set[str]] = field(default_factory=dict)
    # name -> the search text the postings hold for it, for the jobs whose text changed since. Updating
    # the postings (about 0.1 ms a job) waits for the next search or the event loop's next turn, so that
    # a create through the gateway answers without it.
    _unposted: dict[str, str] = field(default_factory=dict)
    _posting_scheduled: bool = False

    def remembered(self, key: Hashable, compute: Callable[[], T]) -> T:
        """compute(), remembered until the index changes: a console polling the same list costs one
        computation per change, not one per request. The least recently used are forgotten first, so
        that a client trying many searches once does not push out the lists consoles keep asking for."""
        remembered = self._remembered
        if self._remembered_version != self.version:
            remembered.clear()
            self._remembered_version = self.version
        if key in remembered:
            value = remembered[key] = remembered.pop(key)  # now the most recently used
            return cast(T, value)
        value = compute()
        if len(remembered) >= MAX_REMEMBERED_QUERIES:
            del remembered[next(iter(remembered))]
        remembered[key] = value
        return value

    def matching(self, query_key: Hashable, predicates: Sequence[Callable[[dict[str, Any]], bool]],
                 search: str | None = None) -> list[tuple[SortKey, JobEntry]]:
        """The entries, in order, whose search text contains `search` (lower case) and that pass every
        predicate; remembered per `query_key`."""
        def scan() -> list[tuple[SortKey, JobEntry]]:
            entries = self.entries
            keys = self.keys if search is None else self._keys_containing(search)
            if not predicates:
                return [(key, entries[key[2]]) for key in keys]
            if len(predicates) == 1:
                accept = predicates[0]
                return [(key, entries[key[2]]) for key in keys if accept(entries[key[2]].facts)]
            return [(key, entries[key[2]]) for key in keys if all(p(entries[key[2]].facts) for p in predicates)]
        return self.remembered(("matching", query_key), scan)

    def _keys_containing(self, needle: str) -> list[SortKey]:
        """The keys, in order, of the entries whose search text contains `needle`. A needle of GRAM
        characters or more is looked up in the n-gram postings: only the jobs holding all its n-grams
        are read (a search matching 11 of 10,000 jobs reads about as many, instead of scanning all),
        unless even its rarest n-gram is common."""
        if SEPARATOR in needle:
            return []
        if len(needle) < GRAM:
            return self._scan(needle)
        if self._unposted:
            self.update_postings()
        postings = self._postings
        sets = []
        for gram in grams(needle):
            posting = postings.get(gram)
            if not posting:
                return []
            sets.append(posting)
        sets.sort(key=len)
        if len(sets[0]) > len(self.entries) * GRAM_SCAN_SHARE:
            return self._scan(needle)
        entries = self.entries
        # The two rarest n-grams narrow it down about as far as all of them, at a fraction of the cost;
        # the text itself decides (the n-grams may be there but not in a row).
        narrowed = sets[0] & sets[1] if len(sets) > 1 else sets[0]
        if len(needle) == GRAM:
            return sorted(entries[name].sort_key for name in narrowed)
        return sorted(entry.sort_key for name in narrowed if needle in (entry := entries[name]).facts["search"])

    def update_postings(self) -> None:
        """Bring the n-gram postings up to date with the jobs' search texts."""
        self._posting_scheduled = False
        unposted, self._unposted = self._unposted, {}
        for name, posted in unposted.items():
            entry = self.entries.get(name)
            self._index_text(name, posted, entry.facts["search"] if entry is not None else "")

    def _post_later(self, name: str, posted: str) -> None:
        self._unposted.setdefault(name, posted)
        if not self._posting_scheduled:
            self._posting_scheduled = run_soon(self.update_postings)

    def _index_text(self, name: str, old: str, new: str) -> None:
        postings = self._postings
        was, now = grams(old), grams(new)
        for gram in was - now:
            posting = postings[gram]
            posting.discard(name)
            if not posting:
                del postings[gram]
        for gram in now - was:
            holders = postings.get(gram)
            if holders is None:
                postings[gram] = {name}
            else:
                holders.add(name)

    def _scan(self, needle: str) -> list[SortKey]:
        """The keys, in order, of the entries whose search text contains `needle` (no SEPARATOR), by a
        scan of all of them. The texts are joined into one string so that str.find (C speed) does the
        scanning: a fresh search over 10,000 jobs takes well under a millisecond, where a Python loop over
        the entries takes about 15."""
        if self._haystack_version != self.text_version:
            texts = [self.entries[key[2]].facts["search"] for key in self.keys]
            self._haystack = SEPARATOR.join(texts)
            self._starts = list(accumulate((len(t) + 1 for t in texts[:-1]), initial=0)) if texts else []
            self._haystack_version = self.text_version
        haystack, starts, keys = self._haystack, self._starts, self.keys
        found: list[SortKey] = []
        position = haystack.find(needle)
        while position != -1:
            entry = bisect_right(starts, position) - 1
            found.append(keys[entry])
            if entry + 1 >= len(starts):
                break
            position = haystack.find(needle, starts[entry + 1])
        return found

    def put(self, entry: JobEntry) -> None:
        self.version += 1
        self.newest_stamp_ms = max(self.newest_stamp_ms, entry.sort_key[0], int(entry.facts.get("modified_at") or 0))
        old = self.entries.get(entry.name)
        text_changed = old is None or old.facts["search"] != entry.facts["search"]
        if old is not None:
            if old.sort_key != entry.sort_key:
                self._drop_key(old.sort_key)
                insort(self.keys, entry.sort_key)
            if old.sort_key != entry.sort_key or text_changed:
                self.text_version += 1
            if old.id != entry.id:
                self.by_id.pop(old.id, None)
        else:
            insort(self.keys, entry.sort_key)
            self.text_version += 1
        self.entries[entry.name] = entry
        self.by_id[entry.id] = entry.name
        if text_changed:
            self._post_later(entry.name, old.facts["search"] if old is not None else "")

    def drop(self, name: str) -> None:
        self.version += 1
        old = self.entries.pop(name, None)
        if old is not None:
            self.text_version += 1
            self._post_later(name, old.facts["search"])
            self._drop_key(old.sort_key)
            if self.by_id.get(old.id) == name:
                del self.by_id[old.id]

    def _drop_key(self, key: SortKey) -> None:
        index = bisect_left(self.keys, key)
        if index < len(self.keys) and self.keys[index] == key:
            del self.keys[index]

    def find(self, ident: str) -> JobEntry | None:
        if ident.isdigit():
            name = self.by_id.get(int(ident))
            return self.entries.get(name) if name else None
        return self.entries.get(ident.lower()) or self.entries.get(ident)

    def ordered(self) -> Iterator[tuple[SortKey, JobEntry]]:
        entries = self.entries
        for key in self.keys:
            yield key, entries[key[2]]


class Store:
    """All caches and indexes of the gateway."""

    def __init__(self, template_namespace: str, stream_key_seed: str, watch_namespaces: Sequence[str] = ()) -> None:
        self.template_namespace = template_namespace
        self.stream_key_seed = stream_key_seed
        self.watch_namespaces = tuple(watch_namespaces)
        self.namespaces = WatchCache("namespaces", "/api/v1/namespaces", mapping.LABEL_PROJECT)
        self.livejobs = WatchCache("livejobs", resource_path(API_VERSION, "livejobs"))
        self.recordjobs = WatchCache("recordjobs", resource_path(API_VERSION, "recordjobs"))
        self.templates = WatchCache("jobtemplates", resource_path(API_VERSION, "jobtemplates"))
        self.pods = NamespacedCaches("pods", "pods", "app.kubernetes.io/part-of=onair",
                                     [ns for ns in listed_namespaces(watch_namespaces) if ns is not None])
        self.nodes = WatchCache("nodes", "/api/v1/nodes")
        self.project_namespace: dict[str, str] = {}
        # project id -> the served namespaces labelled with it: a project is served only while exactly
        # one carries its id (another one labelled with it must not take its requests over).
        self.project_claims: dict[str, set[str]] = {}
        self.live: dict[str, JobIndex] = {}
        self.record: dict[str, JobIndex] = {}
        self.stream_keys: dict[Key, str] = {}
        self.by_stream_key: dict[str, Key] = {}
        self.preview_keys: dict[Key, str] = {}
        self.by_preview_key: dict[str, Key] = {}
        self._unrendered: dict[Key, None] = {}  # jobs whose list row is to be rendered, in arrival order
        self._render_scheduled = False
        self._ready = False
        self.namespaces.listeners.append(self._on_namespace)
        self.livejobs.listeners.append(self._job_listener(self.live, mapping.live_job_facts))
        self.livejobs.listeners.append(self._on_live_job)
        self.livejobs.listeners.append(self._render_live_row)
        self.recordjobs.listeners.append(self._job_listener(self.record, mapping.record_job_facts))

    @property
    def caches(self) -> list[WatchCache]:
        return [self.namespaces, self.livejobs, self.recordjobs, self.templates, *self.pods.caches.values(),
                self.nodes]

    @property
    def core_caches(self) -> list[WatchCache]:
        return [self.namespaces, self.livejobs, self.recordjobs, self.templates]

    def ready(self) -> bool:
        if not self._ready:  # a cache, once listed, stays synced: asked once per request until then
            self._ready = all(cache.synced.is_set() for cache in self.core_caches)
        return self._ready

    def _on_namespace(self, event: str, old: Obj | None, new: Obj | None) -> None:
        changed = set()  # the projects whose claims this event touches, each settled once
        if old is not None:
            project = (old["metadata"].get("labels") or {}).get(mapping.LABEL_PROJECT, "").lower()
            if project in self.project_claims:
                self.project_claims[project].discard(old["metadata"]["name"])
                changed.add(project)
        if new is not None:
            project = (new["metadata"].get("labels") or {}).get(mapping.LABEL_PROJECT, "").lower()
            # A project the operator does not watch is not served: its jobs would never run.
            served = watches(self.watch_namespaces, new["metadata"]["name"])
            if project and served:
                self.project_claims.setdefault(project, set()).add(new["metadata"]["name"])
                changed.add(project)
        for project in changed:
            self._serve(project)

    def _serve(self, project: str) -> None:
        claims = self.project_claims.get(project) or set()
        if len(claims) == 1:
            self.project_namespace[project] = next(iter(claims))
            return
        self.project_namespace.pop(project, None)
        if claims:
            log.warning("project %s is not served: namespaces %s all carry its id (%s); leave it on one",
                        project, ", ".join(sorted(claims)), mapping.LABEL_PROJECT)
        else:
            del self.project_claims[project]

    @staticmethod
    def _job_listener(indexes: dict[str, JobIndex], facts: Callable[[Obj], dict[str, Any]]) -> Listener:
        def listener(event: str, old: Obj | None, new: Obj | None) -> None:
            obj = new or old
            assert obj is not None
            namespace = obj["metadata"].get("namespace", "")
            index = indexes.setdefault(namespace, JobIndex())
            if new is None:
                index.drop(str(obj["metadata"]["name"]))
            else:
                index.put(JobEntry(new, facts(new)))
        return listener

    def _on_live_job(self, event: str, old: Obj | None, new: Obj | None) -> None:
        """Stream and preview keys are derived from the seed and the job's identity, as the operator
        derives them."""
        obj = new or old
        assert obj is not None
        meta = obj["metadata"]
        if old is not None and new is not None and old["metadata"].get("uid") == meta.get("uid"):
            return  # the same job changed (most often its status): its keys did not
        job: Key = (str(meta.get("namespace", "")), str(meta["name"]))
        for derive, keys, by_key in ((derive_stream_key, self.stream_keys, self.by_stream_key),
                                     (derive_preview_key, self.preview_keys, self.by_preview_key)):
            previous = keys.pop(job, None)
            if previous is not None and by_key.get(previous) == job:
                del by_key[previous]
            if new is not None and meta.get("uid"):
                key = derive(self.stream_key_seed, job[0], job[1], str(meta["uid"]))
                keys[job] = key
                by_key[key] = job

    def live_row(self, namespace: str, entry: JobEntry) -> tuple[dict[str, Any], str]:
        """The job's list row and its JSON (with its stream key), made once per version."""
        key = self.stream_keys.get((namespace, entry.name))
        return entry.row(key, lambda: mapping.live_job_summary(entry.obj, entry.facts, key))

    def _render_live_row(self, event: str, old: Obj | None, new: Obj | None) -> None:
        """Rows are rendered as the jobs arrive, so that a list request (above all a new search, which
        no remembered page answers) only joins rows already encoded. Rendering waits for the event
        loop's next turn: a create through the gateway answers first (its client is waiting), and a
        job changed many times in one burst of watch events is rendered once."""
        if new is None:
            return
        self._unrendered[obj_key(new)] = None
        if not self._render_scheduled:
            self._render_scheduled = run_soon(self._render_pending)

    def _render_pending(self) -> None:
        self._render_scheduled = False
        pending, self._unrendered = self._unrendered, {}
        for namespace, name in pending:
            entry = self.live_index(namespace).entries.get(name)
            if entry is not None:
                self.live_row(namespace, entry)

    def live_index(self, namespace: str) -> JobIndex:
        return self.live.get(namespace) or JobIndex()

    def record_index(self, namespace: str) -> JobIndex:
        return self.record.get(namespace) or JobIndex()

    def templates_for(self, namespace: str) -> dict[int, tuple[Obj, bool]]:
        """Template id -> (object, shared): the project's own override the platform-wide ones. Of two
        with one id in one namespace (which the operator runs no job of: ambiguous_template), the first
        by name, on every replica alike."""
        own: dict[int, Obj] = {}
        shared: dict[int, Obj] = {}
        for obj in sorted(self.templates.values(), key=lambda o: str(o["metadata"]["name"])):
            ns = obj["metadata"].get("namespace")
            template_id = (obj.get("spec") or {}).get("id")
            if isinstance(template_id, int) and ns in (namespace, self.template_namespace):
                (own if ns == namespace else shared).setdefault(template_id, obj)
        return {**{i: (obj, True) for i, obj in shared.items()}, **{i: (obj, False) for i, obj in own.items()}}

    def ambiguous_template(self, namespace: str, template_id: int) -> str | None:
        """Why a job of `template_id` would never run, as the operator judges it (controller.find_template):
        several JobTemplates with that id in the scope that has it. None when one decides."""
        for scope in (namespace, self.template_namespace):
            names = sorted(str(obj["metadata"]["name"]) for obj in self.templates.values()
                           if obj["metadata"].get("namespace") == scope
                           and (obj.get("spec") or {}).get("id") == template_id)
            if len(names) > 1:
                return (f"jobTemplateId: {len(names)} JobTemplates in {scope} have id {template_id} "
                        f"({', '.join(names)}); no job of it runs until only one has")
            if names:
                return None
        return None

    def max_label_id(self, namespace: str) -> int:
        ids = [i for i in self.live_index(namespace).by_id if i < mapping.HASHED_ID_BASE]
        ids += [i for i in self.record_index(namespace).by_id if i < mapping.HASHED_ID_BASE]
        return max(ids, default=0)
