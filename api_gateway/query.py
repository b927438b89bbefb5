"""List queries, pure functions: the Brightcove filter language, the Flussonic `select=` projection,
opaque keyset tokens and page parameters. Errors raise QueryError with field-named messages."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

T = TypeVar("T")
Kind = Literal["str", "int", "num", "bool", "time", "enum"]
MAX_PAGE_SIZE = 1000
OPERATORS = ("gt", "ge", "lt", "le")
# What other query languages spell as operators: unquoted before a colon (`ne:x`, `eq:5`) it is a
# mistaken operator, refused, not a text to match (which would quietly match nothing).
FOREIGN_OPERATORS = frozenset({"eq", "ne", "neq", "gte", "lte", "in", "nin", "not", "like", "ilike", "contains",
                               "startswith", "endswith", "regex"})
QUOTES = {"'": "'", '"': '"', "\u2018": "\u2019", "\u2019": "\u2019"}
_INT = re.compile(r"^-?\d{1,18}$")
_FLOAT = re.compile(r"^-?\d{1,18}\.\d{1,9}$")


class QueryError(ValueError):
    def __init__(self, *errors: str) -> None:
        super().__init__("; ".join(errors))
        self.errors = list(errors)


@dataclass(frozen=True)
class Literal_:
    """One filter value: its inferred type and whether it was quoted."""

    value: str | int | float | bool
    quoted: bool = False


@dataclass(frozen=True)
class Condition:
    op: str  # eq, gt, ge, lt, le
    literal: Literal_


@dataclass(frozen=True)
class FieldSpec:
    """A filterable field: its name in the query, its kind and the fact key it reads."""

    name: str
    kind: Kind
    fact: str
    choices: tuple[str, ...] = ()
    description: str = ""
    numbered: bool = False  # the API answers an enum as the index of its choice: that index is accepted too


def _split_list(body: str, param: str) -> list[str]:
    """Split `a,'b,c',d` on commas outside quotes."""
    parts, current, quote = [], "", ""
    for char in body:
        if quote:
            current += char
            if char == QUOTES.get(quote, quote) or (quote in "\u2018\u2019" and char in "\u2018\u2019"):
                quote = ""
        elif char in QUOTES and not current.strip():  # a quote opens an item; inside one it is text (Joe's)
            quote = char
            current += char
        elif char == ",":
            parts.append(current)
            current = ""
        else:
            current += char
    if quote:
        raise QueryError(f"{param}: unterminated quoted string")
    parts.append(current)
    return parts


def parse_literal(text: str, param: str) -> Literal_:
    text = text.strip()
    if len(text) >= 2 and text[0] in QUOTES and text[-1] in (QUOTES[text[0]], "\u2019"):
        return Literal_(text[1:-1], quoted=True)
    if text and text[0] in QUOTES:
        raise QueryError(f"{param}: unterminated quoted string")
    if _INT.match(text):
        return Literal_(int(text))
    if _FLOAT.match(text):
        return Literal_(float(text))
    if text.lower() in ("true", "false"):
        return Literal_(text.lower() == "true")
    return Literal_(text)


def parse_condition(text: str, param: str) -> Condition:
    head, sep, rest = text.partition(":")
    if sep and head.strip().lower() in OPERATORS and text.strip()[:1] not in QUOTES:
        if not rest.strip():
            raise QueryError(f"{param}: a value must follow {head}:")
        return Condition(head.strip().lower(), parse_literal(rest, param))
    if sep and head.strip().lower() in FOREIGN_OPERATORS and text.strip()[:1] not in QUOTES:
        raise QueryError(f"{param}: unknown operator {head.strip()}: (the operators are gt, ge, lt and le; quote "
                         f"the value to match it as text)")
    return Condition("eq", parse_literal(text, param))


def parse_filter(raw: str, param: str) -> list[Condition]:
    """`value`, `op:value`, `'quoted'` or `[v1,v2,...]` (OR) -> the OR-list of conditions."""
    raw = raw.strip()
    if not raw:
        raise QueryError(f"{param}: empty filter value")
    if raw.startswith("["):
        if not raw.endswith("]") or len(raw) < 2:
            raise QueryError(f"{param}: a list must look like [a,b]")
        items = [item for item in _split_list(raw[1:-1], param)]
        if not items or any(not item.strip() for item in items):
            raise QueryError(f"{param}: empty value in the list")
        if len(items) > 100:
            raise QueryError(f"{param}: at most 100 values in a list")
        return [parse_condition(item, param) for item in items]
    return [parse_condition(raw, param)]


def parse_time_value(value: str | int | float | bool, param: str) -> int:
    """Unix milliseconds, or an ISO 8601 time with a zone -> Unix milliseconds."""
    if isinstance(value, bool):
        raise QueryError(f"{param}: expected Unix milliseconds or an ISO 8601 time, got a boolean")
    if isinstance(value, int | float):
        return int(value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise QueryError(f"{param}: expected Unix milliseconds or an ISO 8601 time") from error
    if parsed.tzinfo is None:
        raise QueryError(f"{param}: the time needs a zone (e.g. Z)")
    return int(parsed.timestamp() * 1000)


Predicate = Callable[[Mapping[str, Any]], bool]


def contains(fact: str, needle: str) -> Predicate:
    """The fact (a lower-case text) contains `needle`."""
    return lambda facts: needle in facts[fact]


def _compare(op: str, left: Any, right: Any) -> bool:
    if left is None:
        return False
    if op == "eq":
        return bool(left == right)
    if op == "gt":
        return bool(left > right)
    if op == "ge":
        return bool(left >= right)
    if op == "lt":
        return bool(left < right)
    return bool(left <= right)


def _typed_value(spec: FieldSpec, condition: Condition, param: str) -> Any:
    value = condition.literal.value
    if spec.kind == "time":
        return parse_time_value(value, param)
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or condition.literal.quoted:
            raise QueryError(f"{param}: expected an integer")
        return value
    if spec.kind == "num":
        if isinstance(value, bool) or not isinstance(value, int | float) or condition.literal.quoted:
            raise QueryError(f"{param}: expected a number")
        return value
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise QueryError(f"{param}: expected true or false")
        if condition.op != "eq":
            raise QueryError(f"{param}: {condition.op}: does not apply to a boolean")
        return value
    if spec.kind == "enum" and condition.op != "eq":
        # Choices have no order a client could mean (names sort one way, the numbers rows give another).
        raise QueryError(f"{param}: {condition.op}: does not apply to a choice; list the ones wanted: [a,b]")
    if spec.numbered and isinstance(value, int) and not isinstance(value, bool) and not condition.literal.quoted:
        if not 0 <= value < len(spec.choices):
            raise QueryError(f"{param}: must be one of {', '.join(spec.choices)}, or 0 to {len(spec.choices) - 1}")
        value = spec.choices[value]
    text = str(value).casefold()
    if spec.kind == "enum":
        if spec.choices and text not in {c.casefold() for c in spec.choices}:
            raise QueryError(f"{param}: must be one of {', '.join(spec.choices)}")
    return text


def compile_filter(spec: FieldSpec, raw: str, param: str | None = None) -> Predicate:
    param = param or spec.name
    conditions = parse_filter(raw, param)
    typed = [(c.op, _typed_value(spec, c, param)) for c in conditions]
    fact = spec.fact
    if spec.kind in ("str", "enum"):
        def string_match(facts: Mapping[str, Any]) -> bool:
            value = facts.get(fact)
            if value is None:
                return False
            text = str(value).casefold()
            return any(_compare(op, text, wanted) for op, wanted in typed)
        return string_match

    def match(facts: Mapping[str, Any]) -> bool:
        value = facts.get(fact)
        return any(_compare(op, value, wanted) for op, wanted in typed)
    return match


def compile_filters(params: Sequence[tuple[str, str]], fields: Mapping[str, FieldSpec]) -> list[Predicate]:
    """(name, raw) pairs -> predicates, ANDed by the caller. Unknown names are errors."""
    predicates, errors = [], []
    for name, raw in params:
        spec = fields.get(name)
        if spec is None:
            errors.append(f"{name}: unknown query parameter or filter field")
            continue
        try:
            predicates.append(compile_filter(spec, raw, name))
        except QueryError as error:
            errors.extend(error.errors)
    if errors:
        raise QueryError(*errors)
    return predicates


# --- select= projection (Flussonic) ------------------------------------------------------------

# The fields select= may name: each with the fields below it ({} for a plain value), or None where
# anything below goes (a free-form object).
SelectTree = Mapping[str, "SelectTree | None"]


def parse_select(raw: str, allowed: SelectTree | Sequence[str]) -> list[tuple[str, ...]]:
    """The paths of select=; `allowed` a tree of the fields (or only the top-level names, with
    anything below them)."""
    tree: SelectTree = allowed if isinstance(allowed, Mapping) else dict.fromkeys(allowed)
    paths, errors = [], []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        path = tuple(part.split("."))
        if any(not p for p in path):
            errors.append(f"select: bad field path {part!r}")
        elif (unknown := _unknown_field(path, tree)) is not None:
            errors.append(f"select: unknown field {unknown!r}")
        else:
            paths.append(path)
    if errors:
        raise QueryError(*errors)
    if not paths:
        raise QueryError("select: name at least one field")
    return paths


def _unknown_field(path: tuple[str, ...], tree: SelectTree) -> str | None:
    """The first part of `path` that `tree` does not have, with the parts before it."""
    node: SelectTree | None = tree
    for depth, name in enumerate(path):
        if node is None:
            return None
        if name not in node:
            return ".".join(path[:depth + 1])
        node = node[name]
    return None


def project(item: Mapping[str, Any], paths: Sequence[tuple[str, ...]]) -> dict[str, Any]:
    """The fields `paths` name, nested as in `item`; a path through a list applies to each of its
    elements (input.serverTypeOptions.value keeps the value of every option). A path to nothing
    adds nothing."""
    out: dict[str, Any] = {}
    for path in paths:
        picked = _pick(item, path)
        if picked is not _MISSING:
            out = _merge(out, picked)
    return out


_MISSING = object()


def _pick(value: Any, path: tuple[str, ...]) -> Any:
    if not path:
        return value
    if isinstance(value, list):  # one entry per element, so that two paths into it line up
        picked = [_pick(element, path) for element in value]
        if all(inner is _MISSING for inner in picked):
            return _MISSING
        return [{} if inner is _MISSING else inner for inner in picked]
    if not isinstance(value, Mapping) or path[0] not in value:
        return _MISSING
    inner = _pick(value[path[0]], path[1:])
    return _MISSING if inner is _MISSING else {path[0]: inner}


def _merge(into: Any, more: Any) -> Any:
    if isinstance(into, dict) and isinstance(more, dict):
        return {**into, **{key: _merge(into[key], value) if key in into else value for key, value in more.items()}}
    if isinstance(into, list) and isinstance(more, list) and len(into) == len(more):
        return [_merge(a, b) for a, b in zip(into, more, strict=True)]
    return more


# --- keyset tokens (Brightcove start_token / next_token) ----------------------------------------

SortKey = tuple[int, int, str]


def fingerprint(parts: Sequence[tuple[str, str]]) -> str:
    digest = hashlib.sha256(json.dumps(sorted(parts)).encode()).hexdigest()
    return digest[:16]


@dataclass(frozen=True)
class DescendingWalk:
    """Where a walk down the jobs newest first (keyset paging by created_at or modified_at) stands,
    beyond its cursor. A job reaches the cache up to a settling time after its stamp (another
    replica's create, a slower one), so it can turn up below jobs the walk already gave: a later page
    gives it rather than pass it. Kept only while a job the walk gave is still settling."""

    top_ms: int  # the stamp of the first job the walk gave: late jobs are stamped up to it
    settled_ms: int  # when the token was issued, every job created up to here was in the cache
    # The jobs given that were still settling then, as (stamp ms, 48-bit hash of the name): they do
    # not come again, also after a change (short, so that a token holds many).
    seen: tuple[tuple[int, int], ...] = ()


def _walk_mark(key: SortKey) -> tuple[int, int]:
    return key[0], int.from_bytes(hashlib.blake2b(key[2].encode(), digest_size=6).digest())


# A token carries at most this many settling jobs the walk gave (see walk_state).
MAX_SEEN_IN_TOKEN = 32


def encode_token(sort: str, descending: bool, last: SortKey, query_fingerprint: str,
                 walk: DescendingWalk | None = None, backward: bool = False) -> str:
    """`backward`: a token to the page before the one that begins at `last` (Flussonic's prev)."""
    fields: dict[str, Any] = {"v": 1, "s": sort, "d": descending, "k": list(last), "f": query_fingerprint}
    if backward:
        fields["b"] = True
    if walk is not None:
        fields["w"] = [walk.top_ms, walk.settled_ms, [[ms - walk.settled_ms, ident] for ms, ident in walk.seen]]
    data = json.dumps(fields, separators=(",", ":"))
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


def decode_walk_token(token: str, sort: str, descending: bool, query_fingerprint: str, name: str = "start_token"
                      ) -> tuple[SortKey, DescendingWalk | None, bool]:
    """The key a token continues from, its walk, and whether it leads backward; `name`: the parameter
    it came in, for the errors."""
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if not isinstance(data, dict) or data.get("v") != 1:
            raise ValueError("version")
        key = data["k"]
        if (not isinstance(key, list) or len(key) != 3 or not _int64(key[0])
                or not _int64(key[1]) or not isinstance(key[2], str)):
            raise ValueError("key")
        walk = _walk(data["w"]) if "w" in data else None
        backward = data.get("b", False)
        if not isinstance(backward, bool) or (backward and walk is not None):
            raise ValueError("direction")
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeError, RecursionError) as error:
        raise QueryError(f"{name}: not a token this API gave out") from error
    if data.get("s") != sort or bool(data.get("d")) != descending or data.get("f") != query_fingerprint:
        raise QueryError(f"{name}: belongs to a query with other filters or sort; start again without it")
    return (key[0], key[1], key[2]), walk, backward


def _int64(value: Any) -> bool:
    """An integer a token may carry: any other (JSON allows thousands of digits) could not be encoded into
    the next token."""
    return isinstance(value, int) and -(2**63) <= value < 2**63


def _walk(raw: Any) -> DescendingWalk:
    top, settled, seen = raw
    if not (_int64(top) and _int64(settled) and isinstance(seen, list)
            and all(isinstance(pair, list) and len(pair) == 2 and all(_int64(n) for n in pair)
                    for pair in seen)):
        raise ValueError("walk")
    return DescendingWalk(top, settled, tuple((settled + offset, ident) for offset, ident in seen))


def descending_walk_page(items: Sequence[T], keys: Sequence[SortKey], after: SortKey | None,
                         walk: DescendingWalk | None, size: int, settled_ms: int, changes: bool = False
                         ) -> tuple[list[T], SortKey | None, DescendingWalk | None]:
    """A keyset page newest first (`keys` ascending, the stamp in ms first): the jobs that turned up
    among those already given since the last page, then those below the cursor. Returns the page, the
    cursor to continue from (None: the walk is done) and the walk's state. `changes`: the stamps are
    of the jobs' last change (modified_at), and one in the top's own second may be a change made after
    the walk began (a job that moved up, not a late one)."""
    cursor_at = len(keys) if after is None else bisect_left(keys, after)
    late: list[int] = []
    if walk is not None:
        seen = {name for _, name in walk.seen}
        # Created after the last page's settled time (so not in the cache then, unless given) and
        # not after the walk's first job (newer ones sort above everything it gave: not passed).
        late_from = max(cursor_at, bisect_right(keys, (walk.settled_ms, 2**63)))
        late_to = bisect_left(keys, (walk.top_ms,)) if changes else bisect_right(keys, (walk.top_ms, 2**63))
        late = [index for index in range(late_to - 1, late_from - 1, -1) if _walk_mark(keys[index])[1] not in seen]
    chosen = late[:size]
    late_left = len(late) > len(chosen)
    below_from = max(0, cursor_at - (size - len(chosen)))
    chosen += range(cursor_at - 1, below_from - 1, -1)
    page = [items[index] for index in chosen]
    cursor = keys[below_from] if below_from < cursor_at else after
    # Only a walk's first page starts one: further down, the jobs above the cursor are not known.
    state = walk_state(walk, [keys[index] for index in chosen], settled_ms, late_left) \
        if walk is not None or after is None else None
    if below_from == 0 and not late_left and state is None:
        return page, None, None  # nothing below, and no job can still turn up among those given
    return page, cursor or BEFORE_ALL, state


def walk_state(walk: DescendingWalk | None, given: Sequence[SortKey], settled_ms: int,
               late_left: bool = False) -> DescendingWalk | None:
    """The walk after a page newest first that gave `given` (a first page: `walk` None); None once
    every job it gave has settled, when none can turn up among them any more. `late_left`: late jobs
    the page had no room for, found again next time from the same settled time."""
    if late_left and walk is not None:
        settled_ms = walk.settled_ms
    top_ms = walk.top_ms if walk is not None else (given[0][0] if given else -1)
    if settled_ms >= top_ms:
        return None
    pairs = (*(walk.seen if walk else ()), *(_walk_mark(key) for key in given))
    settling = sorted({pair for pair in pairs if pair[0] > settled_ms})
    if len(settling) > MAX_SEEN_IN_TOKEN:
        # More jobs settling than a token holds (a burst of creates): the walk goes on as a plain
        # keyset walk, which may pass a late job, rather than give jobs again or never end.
        return None
    return DescendingWalk(top_ms, settled_ms, tuple(settling))


# Keys below and above every job's: where a token points when nothing has been given yet, and (in a
# backward token) from where the last page is counted, ascending (AFTER_ALL) or descending (BEFORE_ALL).
BEFORE_ALL: SortKey = (-1, -1, "")
AFTER_ALL: SortKey = (2**63 - 1, 0, "")


def keyset_page(items: Sequence[T], keys: Sequence[SortKey], after: SortKey | None, descending: bool,
                size: int, settled: int | None = None) -> tuple[list[T], SortKey | None]:
    """`items` sorted ascending by `keys`; the page after `after` in the given direction and the
    key to continue from (None at the end). Keys are unique, so nothing repeats or is skipped.

    `settled`: how many of the first items (ascending) may be returned yet. A job that becomes visible
    later can still sort before the rest, so an ascending page stops there and its token waits
    before them rather than passing them (see settled_count)."""
    if not descending:
        start = 0 if after is None else bisect_right(keys, after)
        end = len(items) if settled is None else max(start, settled)
        page = list(items[start:min(start + size, end)])
        if start + len(page) >= len(items):
            return page, None
        return page, keys[start + len(page) - 1] if page else (after or BEFORE_ALL)
    end = len(items) if after is None else bisect_left(keys, after)
    begin = max(0, end - size)
    page = list(reversed(items[begin:end]))
    last = keys[begin] if page and begin > 0 else None
    return page, last


def backward_page(items: Sequence[T], keys: Sequence[SortKey], before: SortKey, descending: bool, size: int
                  ) -> tuple[list[T], SortKey | None, bool]:
    """`items` sorted ascending by `keys`; the page that ends just before `before` in the given direction,
    in that direction, the key a forward token continues from after it (None: nothing after it), and
    whether anything comes before it."""
    if not descending:
        end = bisect_left(keys, before)
        begin = max(0, end - size)
        return list(items[begin:end]), keys[end - 1] if begin < end < len(keys) else None, begin > 0
    begin = bisect_right(keys, before)
    end = min(len(items), begin + size)
    return list(reversed(items[begin:end])), keys[begin] if 0 < begin < end else None, end < len(items)


def settled_count(matched: Sequence[tuple[SortKey, Any]], newest_settled_ms: int) -> int:
    """How many of `matched` (ascending by key, creation time in ms first) were created at
    `newest_settled_ms` or before."""
    return bisect_right(matched, newest_settled_ms, key=lambda pair: pair[0][0])


# --- plain parameters ----------------------------------------------------------------------------

def parse_int(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    text = raw.strip()
    if not _INT.match(text):
        raise QueryError(f"{name}: must be an integer from {low} to {high}")
    value = int(text)
    if not low <= value <= high:
        raise QueryError(f"{name}: must be an integer from {low} to {high}")
    return value


def parse_utc_time(raw: str, name: str) -> datetime:
    """Alibaba's yyyy-MM-ddTHH:mm:ssZ (UTC), also with fractional seconds."""
    if not re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$", raw.strip()):
        raise QueryError(f"{name}: must be a UTC time like 2022-07-15T08:00:00Z")
    text = raw.strip()[:-1]
    if "." in text:
        head, frac = text.split(".")
        text = f"{head}.{frac[:6]}"
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError as error:
        raise QueryError(f"{name}: not a valid date") from error


def to_millis(moment: datetime | None) -> int:
    return 0 if moment is None else int(moment.timestamp() * 1000)
