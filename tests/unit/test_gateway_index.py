"""The gateway's job index: text search over the joined texts, remembered rows, and the pre-encoded
list envelope, each checked against the plain way of doing the same thing."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from onair.api_gateway.auth import AuthError, VerifiedTokens, issue_token, parse_api_keys
from onair.api_gateway.cache import MAX_REMEMBERED_QUERIES, JobEntry, JobIndex
from onair.api_gateway.errors import EncodedJSON, envelope, json_response, list_body, list_response
from onair.api_gateway.mapping import search_needle, search_text


def entry(number: int, text: str) -> JobEntry:
    return JobEntry({"metadata": {"name": f"job-{number}"}},
                    {"name": f"job-{number}", "id": number, "created_at": 1_000 + number, "search": search_text(text)})


def test_search_finds_exactly_the_entries_whose_text_contains_the_needle() -> None:
    chooser = random.Random(7)
    index = JobIndex()
    for number in range(1, 400):
        index.put(entry(number, "".join(chooser.choice("ab c") for _ in range(chooser.randint(0, 12)))))
    needles = ["a", "ab", "b c", " ", "abab", "c a", "zz"] + ["".join(chooser.choice("abc ") for _ in range(3))
                                                              for _ in range(30)]
    for needle in needles:
        expected = [key for key, e in index.ordered() if needle in e.facts["search"]]
        found = [key for key, _ in index.matching(("search", needle), [], needle)]
        assert found == expected, needle


@pytest.mark.parametrize("loop_turns", [False, True], ids=["searched-before-the-loop-turns", "loop-turns-between"])
async def test_search_stays_exact_while_texts_change_and_jobs_go(loop_turns: bool) -> None:
    """Long needles come from the n-gram postings, short ones from the scan: both follow every change.
    In the event loop the postings catch up on its next turn, or at the next search if that comes first."""
    chooser = random.Random(11)
    index = JobIndex()

    def text() -> str:
        return "".join(chooser.choice("abc d") for _ in range(chooser.randint(0, 10)))

    needles = ["a", "ab", "abc", "b d", "abca", "c d a", "dd", "ddd", "dddd", "abcab"]
    for step in range(600):
        number = chooser.randint(1, 60)
        if chooser.random() < 0.2:
            index.drop(f"job-{number}")
        else:
            index.put(entry(number, text()))
        if loop_turns and step % 3 == 0:
            await asyncio.sleep(0)
        if step % 25 == 0:
            for needle in needles:
                expected = [key for key, e in index.ordered() if needle in e.facts["search"]]
                assert [key for key, _ in index.matching(("s", needle), [], needle)] == expected, (step, needle)


def test_search_never_matches_across_two_jobs_and_follows_changes() -> None:
    index = JobIndex()
    index.put(entry(1, "ends with ab"))
    index.put(entry(2, "cd starts the next"))
    assert index.matching("q1", [], "abcd") == []
    assert index.matching("q2", [], "ab\0cd") == []
    assert [e.name for _, e in index.matching("q3", [], "cd")] == ["job-2"]
    index.put(entry(3, "another cd"))
    index.drop("job-2")
    assert [e.name for _, e in index.matching("q3", [], "cd")] == ["job-3"]
    assert index.matching("q4", [], "\0") == []
    assert JobIndex().matching("q", [], "x") == []


def test_a_search_whose_ngrams_repeat_needs_them_in_a_row() -> None:
    """ "aaaa" has one n-gram, "aaa": a job holding "aaa" holds that n-gram without holding "aaaa"."""
    index = JobIndex()
    for number in range(1, 41):  # enough other jobs that the rare n-grams are looked up, not scanned
        index.put(entry(number, f"channel {number}"))
    index.put(entry(41, "aaa b"))
    index.put(entry(42, "baaaa"))
    index.put(entry(43, "xyzzy and xyz"))
    assert [e.name for _, e in index.matching("q1", [], "aaaa")] == ["job-42"]
    assert [e.name for _, e in index.matching("q2", [], "aaa")] == ["job-41", "job-42"]
    assert [e.name for _, e in index.matching("q3", [], "xyzx")] == []
    assert [e.name for _, e in index.matching("q4", [], "zy and xy")] == ["job-43"]


def test_a_polled_list_stays_remembered_while_many_other_searches_come_and_go() -> None:
    index = JobIndex()
    index.put(entry(1, "one job"))
    computed: list[str] = []

    def ask(query: str) -> str:
        return index.remembered(query, lambda: computed.append(query) or query.upper())

    assert ask("polled") == "POLLED"
    for number in range(3 * MAX_REMEMBERED_QUERIES):
        ask(f"search {number}")
        if number % 50 == 0:
            assert ask("polled") == "POLLED"
    assert computed.count("polled") == 1  # never forgotten: asked again before 256 others came
    ask("search 0")
    assert computed.count("search 0") == 2  # asked once, long ago: forgotten
    index.put(entry(2, "another job"))
    ask("polled")
    assert computed.count("polled") == 2  # the index changed: computed again


def test_search_follows_a_job_whose_text_changes_and_one_whose_text_does_not() -> None:
    index = JobIndex()
    for number in range(1, 6):
        index.put(entry(number, f"job {number} waiting"))
    assert [e.id for _, e in index.matching("q1", [], "live")] == []
    index.put(entry(3, "job 3 live"))  # the phase is in the search text
    changed = JobEntry({"metadata": {"name": "job-4", "changed": True}}, dict(index.entries["job-4"].facts))
    index.put(changed)  # same text, new version of the object
    assert [e.id for _, e in index.matching("q2", [], "live")] == [3]
    assert [e.obj for _, e in index.matching("q3", [], "job 4")] == [changed.obj]


def test_search_text_is_lower_case_without_nul_and_keeps_its_fields_apart() -> None:
    text = search_text(12, "Name\0X", None, "Live\x1f")
    assert text == "12\x1fnamex\x1f\x1flive"
    index = JobIndex()
    index.put(JobEntry({"metadata": {"name": "job-3"}}, {"id": 3, "name": "job-3", "created_at": 0,
                                                        "search": search_text(3, "00000000-abc", "Live")}))
    assert [e.id for _, e in index.matching("whole", [], search_needle("00000000"))] == [3]
    # Text that spans two fields (the id and the name) is neither the one nor the other.
    for spanning in ("3 00000000", "3\x1f00000000"):
        assert index.matching(spanning, [], search_needle(spanning)) == []


def test_search_ignores_case_beyond_ascii() -> None:
    """Case-folded, not only lower-cased: a final sigma and the German sharp s match their capitals."""
    index = JobIndex()
    for number, description in ((1, "Οδυσσέας live"), (2, "Hauptstraße cam"), (3, "plain")):
        index.put(entry(number, description))
    for needle, expected in (("ΟΔΥΣΣΈΑΣ", [1]), ("οδυσσέας", [1]), ("HAUPTSTRASSE", [2]), ("straße", [2]),
                             ("PLAIN", [3])):
        assert [e.id for _, e in index.matching(needle, [], search_needle(needle))] == expected, needle


def test_search_combines_with_predicates() -> None:
    index = JobIndex()
    for number in range(1, 21):
        index.put(entry(number, f"job {number}"))
    found = index.matching("q", [lambda facts: facts["id"] % 2 == 0], "1")
    assert [e.id for _, e in found] == [10, 12, 14, 16, 18]


def test_rows_are_rendered_once_per_version_and_what_they_depend_on() -> None:
    job = entry(1, "one")
    renders = []

    def render() -> dict[str, object]:
        renders.append(1)
        return {"id": 1, "key": f"k{len(renders)}", "text": "é"}

    first = job.row("key-a", render)
    assert job.row("key-a", render) == first
    assert len(renders) == 1
    second = job.row("key-b", render)
    assert len(renders) == 2 and second[0]["key"] == "k2"
    assert json.loads(second[1]) == second[0]


def test_encoded_list_envelope_equals_the_plain_one() -> None:
    rows = [{"id": 1, "name": "a \"quoted\" é"}, {"id": 2, "name": None}]
    info = {"page": 1, "count": 2}
    plain = json_response(envelope(rows, result_info=info))
    encoded = list_response(list_body(EncodedJSON(json.dumps(rows)), info))
    assert plain.text is not None and encoded.text is not None
    assert json.loads(encoded.text) == json.loads(plain.text) == json.loads(list_body(rows, info))
    assert list(json.loads(encoded.text)) == list(json.loads(plain.text))
    assert encoded.content_type == plain.content_type == "application/json"
    assert encoded.charset == plain.charset == "utf-8"


def test_verified_tokens_are_remembered_only_until_they_expire() -> None:
    secret = "unit-test-signing-key-of-32-bytes!"
    key = parse_api_keys([{"key": "reader-key-0123456789", "projects": ["*"], "role": "read"}])[0]
    token = issue_token(secret, key, 60, now=1_000_000_000)
    tokens = VerifiedTokens(secret, [key])
    with pytest.raises(AuthError, match="expired"):
        tokens.principal(token)
    fresh = issue_token(secret, key, 60)
    principal = tokens.principal(fresh)
    assert tokens.principal(fresh) is principal
    after_expiry = tokens._known[fresh][1] + 1
    assert tokens.principal(fresh, now=after_expiry) is not principal  # verified again, not remembered
    with pytest.raises(AuthError, match="invalid token"):
        VerifiedTokens("another-signing-key-of-32-bytes!!", [key]).principal(fresh)
