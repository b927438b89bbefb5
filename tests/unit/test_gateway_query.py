"""The Brightcove query language, select= projection, keyset tokens and page parameters."""

from __future__ import annotations

import base64
import itertools
import json
import random

import pytest

from onair.api_gateway import query
from onair.api_gateway.query import Condition, FieldSpec, Literal_, QueryError

FIELDS = {
    "state": FieldSpec("state", "enum", "status", ("Live", "Offline", "Pending")),
    "created_at": FieldSpec("created_at", "time", "created_at"),
    "id": FieldSpec("id", "int", "id"),
    "name": FieldSpec("name", "str", "name"),
    "online": FieldSpec("online", "bool", "online"),
}
ROWS = [
    {"status": "Live", "created_at": 1000, "id": 1, "name": "alpha", "online": True},
    {"status": "Offline", "created_at": 2000, "id": 2, "name": "1234", "online": False},
    {"status": "Pending", "created_at": 3000, "id": 3, "name": "gamma, delta", "online": True},
]


def matching(*pairs: tuple[str, str]) -> list[int]:
    predicates = query.compile_filters(list(pairs), FIELDS)
    return [int(str(row["id"])) for row in ROWS if all(p(row) for p in predicates)]


@pytest.mark.parametrize(("raw", "expected"), [
    ("live", [Condition("eq", Literal_("live"))]),
    ("gt:1514764800000", [Condition("gt", Literal_(1514764800000))]),
    ("[a,b]", [Condition("eq", Literal_("a")), Condition("eq", Literal_("b"))]),
    ("'1234'", [Condition("eq", Literal_("1234", quoted=True))]),
    ("\u20181234\u2019", [Condition("eq", Literal_("1234", quoted=True))]),
    ("true", [Condition("eq", Literal_(True))]),
    ("[le:5,'x,y']", [Condition("le", Literal_(5)), Condition("eq", Literal_("x,y", quoted=True))]),
    # An apostrophe inside an item is text: only one that opens the item quotes it.
    ("[Joe's show,Ann\u2019s show]",
     [Condition("eq", Literal_("Joe's show")), Condition("eq", Literal_("Ann\u2019s show"))]),
    ("[Joe's show,'a,b']", [Condition("eq", Literal_("Joe's show")), Condition("eq", Literal_("a,b", quoted=True))]),
])
def test_parse_filter(raw: str, expected: list[Condition]) -> None:
    assert query.parse_filter(raw, "f") == expected


@pytest.mark.parametrize("raw", ["", "[", "[a,", "[a,,b]", "[]", "'open", "gt:", "['a]"])
def test_parse_filter_rejects_malformed_values(raw: str) -> None:
    with pytest.raises(QueryError) as error:
        query.parse_filter(raw, "state")
    assert error.value.errors[0].startswith("state: ")


@pytest.mark.parametrize("raw", ["ne:live", "eq:5", "[live,NE:x]", "gte:10"])
def test_an_operator_of_another_query_language_is_refused_not_matched_as_text(raw: str) -> None:
    with pytest.raises(QueryError) as error:
        query.parse_filter(raw, "state")
    assert "unknown operator" in error.value.errors[0] and "gt, ge, lt and le" in error.value.errors[0]
    # Quoted, it is a text like any other; a colon elsewhere (a URL, a time) is text as before.
    assert query.parse_filter(f"'{raw}'", "state") == [Condition("eq", Literal_(raw, quoted=True))]
    assert query.parse_filter("rtmp://origin/live", "url") == [Condition("eq", Literal_("rtmp://origin/live"))]


def test_or_lists_and_across_filters() -> None:
    assert matching(("state", "[live,offline]")) == [1, 2]
    assert matching(("state", "[live,offline]"), ("online", "true")) == [1]
    assert matching(("created_at", "gt:1000")) == [2, 3]
    assert matching(("created_at", "ge:1000"), ("created_at", "lt:3000")) == [1, 2]
    assert matching(("id", "le:2"), ("state", "offline")) == [2]


def test_an_enum_the_api_answers_as_a_number_is_filtered_by_that_number_too() -> None:
    """serverType and inputClass: the API gives their index (0 RTMP, 1 SRT, 2 HLS); a filter takes
    either, the name in any case."""
    fields = {"serverType": FieldSpec("serverType", "enum", "server_type", ("RTMP", "SRT", "HLS"), numbered=True)}
    rows = [{"server_type": "RTMP"}, {"server_type": "SRT"}, {"server_type": "HLS"}]

    def matched(raw: str) -> list[int]:
        predicates = query.compile_filters([("serverType", raw)], fields)
        return [i for i, row in enumerate(rows) if all(p(row) for p in predicates)]

    assert matched("1") == matched("srt") == matched("SRT") == [1]
    assert matched("[0,hls]") == [0, 2]
    for refused in ("3", "'1'", "-1"):
        with pytest.raises(QueryError, match="serverType: must be one of RTMP, SRT, HLS"):
            matched(refused)


def test_quoted_numbers_stay_strings() -> None:
    assert matching(("name", "'1234'")) == [2]
    assert matching(("name", "'gamma, delta'")) == [3]
    with pytest.raises(QueryError, match="id: expected an integer"):
        matching(("id", "'2'"))


def test_times_accept_iso_8601() -> None:
    assert matching(("created_at", "ge:1970-01-01T00:00:02Z")) == [2, 3]
    with pytest.raises(QueryError, match="zone"):
        matching(("created_at", "gt:2020-01-01T00:00:00"))


def test_unknown_fields_and_bad_values_are_named() -> None:
    with pytest.raises(QueryError) as error:
        matching(("colour", "red"), ("state", "Sleeping"), ("online", "gt:true"))
    assert error.value.errors == [
        "colour: unknown query parameter or filter field",
        "state: must be one of Live, Offline, Pending",
        "online: gt: does not apply to a boolean",
    ]


def test_select_projection_keeps_nested_fields() -> None:
    item = {"id": 1, "name": "n", "input": {"serverType": 0, "url": None}, "stats": [1]}
    paths = query.parse_select("id,input.serverType,input.missing", list(item))
    assert query.project(item, paths) == {"id": 1, "input": {"serverType": 0}}
    # Flussonic: "including nested", through lists too: each element keeps what the paths name.
    options = {"input": {"serverTypeOptions": [{"id": 0, "value": "RTMP", "enabled": True},
                                               {"id": 1, "value": "SRT", "enabled": False}]}}
    paths = query.parse_select("input.serverTypeOptions.value,input.serverTypeOptions.enabled", ["input"])
    assert query.project(options, paths) == {"input": {"serverTypeOptions": [{"value": "RTMP", "enabled": True},
                                                                             {"value": "SRT", "enabled": False}]}}
    assert query.project(options, query.parse_select("input.serverTypeOptions.nope", ["input"])) == {}
    with pytest.raises(QueryError, match="unknown field 'nope'"):
        query.parse_select("id,nope", list(item))
    with pytest.raises(QueryError):
        query.parse_select(",", list(item))


def test_tokens_round_trip_and_refuse_tampering() -> None:
    token = query.encode_token("created_at", False, (5, 7, "x"), "f1")
    assert query.decode_walk_token(token, "created_at", False, "f1") == ((5, 7, "x"), None, False)
    with pytest.raises(QueryError, match="other filters"):
        query.decode_walk_token(token, "created_at", True, "f1")
    with pytest.raises(QueryError, match="other filters"):
        query.decode_walk_token(token, "created_at", False, "f2")
    nested = base64.urlsafe_b64encode(b"[" * 3000 + b"]" * 3000).decode()  # deeper than json.loads goes
    for garbage in ("", "!!!", "e30", token[:-3], "bnVsbA", nested):
        with pytest.raises(QueryError):
            query.decode_walk_token(garbage, "created_at", False, "f1")
    # Integers JSON allows but no key or walk holds: the next token could not even be encoded (a 500).
    huge = 9 * 10**4299
    for key, walk in ([huge, 7, "x"], None), ([5, 7, "x"], [huge, 0, []]), ([5, 7, "x"], [0, 0, [[huge, 1]]]):
        fields = {"v": 1, "s": "created_at", "d": True, "k": key, "f": "f1", **({"w": walk} if walk else {})}
        forged = base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")
        with pytest.raises(QueryError, match="not a token this API gave out"):
            query.decode_walk_token(forged, "created_at", True, "f1")
    fields = {"v": 1, "s": "created_at", "d": True, "k": [5, 7, "x"], "f": "f1", "w": [0, 0, [[1, 1]]]}
    sound = base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")
    assert query.decode_walk_token(sound, "created_at", True, "f1")[0] == (5, 7, "x")


@pytest.mark.parametrize("descending", [False, True])
def test_keyset_pages_cover_everything_once(descending: bool) -> None:
    keys = [(t // 3, t, f"n{t}") for t in range(25)]
    items = list(range(25))
    seen: list[int] = []
    after = None
    while True:
        page, after = query.keyset_page(items, keys, after, descending, 7)
        seen.extend(page)
        if after is None:
            break
    assert seen == (list(reversed(items)) if descending else items)


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("size", [1, 4, 7, 25, 30])
def test_a_page_backward_is_the_page_before_and_continues_forward_where_it_ends(descending: bool, size: int) -> None:
    keys = [(t // 3, t, f"n{t}") for t in range(25)]
    items = list(range(25))
    pages: list[list[int]] = []
    after = None
    while True:
        page, after = query.keyset_page(items, keys, after, descending, size)
        pages.append(page)
        if after is None:
            break
    for earlier, later in itertools.pairwise(pages):
        back, forward_from, more_before = query.backward_page(items, keys, keys[later[0]], descending, size)
        assert back == earlier and more_before == (earlier is not pages[0])
        assert forward_from is not None
        assert query.keyset_page(items, keys, forward_from, descending, size)[0] == later
    # Before the first item there is nothing: an empty page, with nothing to continue from either way.
    assert query.backward_page(items, keys, keys[pages[0][0]], descending, size) == ([], None, False)
    token = query.encode_token("created_at", descending, keys[3], "f1", backward=True)
    assert query.decode_walk_token(token, "created_at", descending, "f1", "cursor") == (keys[3], None, True)


def test_keyset_paging_while_items_are_added() -> None:
    keys = [(t, t, "n") for t in range(10)]
    page, after = query.keyset_page(list(range(10)), keys, None, False, 4)
    assert page == [0, 1, 2, 3]
    # Items created meanwhile sort after the existing ones; the next pages neither repeat nor skip.
    keys = keys + [(t, t, "n") for t in range(10, 13)]
    seen = page
    while after is not None:
        page, after = query.keyset_page(list(range(13)), keys, after, False, 4)
        seen = seen + page
    assert seen == list(range(13))


@pytest.mark.parametrize("seed", range(40))
def test_a_walk_newest_first_gives_every_job_once_however_late_it_reaches_the_cache(seed: int) -> None:
    """Jobs stamped in whole seconds reach the cache up to SETTLE ms after their stamp, in any order.
    A client walks newest first, a page every few hundred ms, its token passed through text as a
    client would. Every job there when the walk began, and every later one stamped no later than the
    first job given, is given exactly once."""
    settle = 3000
    rng = random.Random(seed)
    start = 100_000
    jobs = []  # (stamp ms, id, name, arrival ms)
    for ident in range(rng.randint(5, 60)):
        stamp = rng.randint(start - 6000, start + 4000) // 1000 * 1000
        jobs.append((stamp, ident, f"job-{ident:03d}", stamp + rng.randint(0, settle - 1)))
    now, after, walk = start, None, None
    given: list[str] = []
    first_stamp = None
    for _ in range(500):
        present = sorted((stamp, ident, name) for stamp, ident, name, arrival in jobs if arrival <= now)
        page, after, walk = query.descending_walk_page([key[2] for key in present], present, after, walk,
                                                       rng.randint(1, 4), now - 1000 - settle + 1000)
        given += page
        if first_stamp is None and page:
            first_stamp = next(key[0] for key in present if key[2] == page[0])
        if after is None:
            break
        token = query.encode_token("created_at", True, after, "f", walk)
        after, walk, _ = query.decode_walk_token(token, "created_at", True, "f")
        now += rng.randint(50, 700)
    assert after is None, "the walk did not end"
    assert len(given) == len(set(given)), given
    owed = {name for stamp, _, name, arrival in jobs
            if arrival <= start or (first_stamp is not None and stamp <= first_stamp and arrival <= now)}
    assert owed <= set(given), sorted(owed - set(given))


@pytest.mark.parametrize(("raw", "ok"), [("1", True), ("1000", True), ("0", False), ("1001", False),
                                         ("-1", False), ("1.5", False), ("ten", False), (" 5", True)])
def test_page_sizes(raw: str, ok: bool) -> None:
    if ok:
        assert query.parse_int(raw, "pageSize", 10, 1, 1000) == int(raw)
    else:
        with pytest.raises(QueryError, match="pageSize: must be an integer from 1 to 1000"):
            query.parse_int(raw, "pageSize", 10, 1, 1000)


def test_utc_times_are_alibaba_format() -> None:
    assert query.parse_utc_time("2022-07-15T08:00:00Z", "StartTime").isoformat() == "2022-07-15T08:00:00+00:00"
    for bad in ("2022-07-15T08:00:00+08:00", "2022-07-15", "2022-13-15T08:00:00Z", "yesterday"):
        with pytest.raises(QueryError, match="StartTime"):
            query.parse_utc_time(bad, "StartTime")


def test_number_filters_take_integers_and_decimals_but_not_text() -> None:
    """Statistics such as framerate are decimals: gt:29.5 finds 29.97, [25,30] finds 30; '30' is text."""
    spec = {"framerate": FieldSpec("framerate", "num", "framerate")}
    rows = [{"framerate": 25}, {"framerate": 29.97}, {"framerate": 30}, {"framerate": None}]

    def found(raw: str) -> list[object]:
        (predicate,) = query.compile_filters([("framerate", raw)], spec)
        return [row["framerate"] for row in rows if predicate(row)]

    assert found("gt:29.5") == [29.97, 30]
    assert found("[25,30]") == [25, 30]
    assert found("le:25") == [25]
    for bad in ("'30'", "fast", "true"):
        with pytest.raises(QueryError, match=r"^framerate: expected a number"):
            found(bad)

