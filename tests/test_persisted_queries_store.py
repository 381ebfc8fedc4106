"""The persisted-query store on its own: APQ resolution, registration, bounds, safelist."""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path

import pytest

from snapgraph.errors import (
    DocumentNotAllowed,
    PersistedQueryHashMismatch,
    PersistedQueryNotFound,
    PersistedQueryNotSupported,
)
from snapgraph.web.persisted_queries import (
    ENTRY_OVERHEAD_BYTES,
    PersistedQueries,
    Registration,
    document_hash,
    load_safelist,
    normalize,
    register_documents,
)
from snapgraph.web.protocol import GraphQLRequest

QUERY = "{ snapshots { id } }"
ROUTER_ENTITIES = (
    "query($representations:[_Any!]!){_entities(representations:$representations)"
    "{...on Snapshot{id name}}}"
)


def apq(document: str, query: str | None = None) -> GraphQLRequest:
    """An APQ request for `document`'s hash, sending `query` as the document (or none)."""
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": document_hash(document)}}
    return GraphQLRequest(query, None, None, extensions)


def full(query: str) -> GraphQLRequest:
    return GraphQLRequest(query, None, None, None)


def register(store: PersistedQueries, document: str) -> None:
    """What the endpoint does: resolve, prepare the document, then remember it."""
    pending = store.resolve(apq(document, document)).pending_registration
    assert pending is not None
    assert store.remember(*pending)


def stored(store: PersistedQueries, document: str) -> bool:
    try:
        store.resolve(apq(document))
    except PersistedQueryNotFound:
        return False
    return True


# APQ


def test_a_full_document_is_only_stored_once_the_caller_remembers_it() -> None:
    store = PersistedQueries(10)
    resolved = store.resolve(apq(QUERY, QUERY))
    assert resolved.request.query == QUERY
    assert resolved.pending_registration == Registration(document_hash(QUERY), QUERY)
    assert not stored(store, QUERY)  # e.g. it failed validation: never remembered
    assert store.remember(*resolved.pending_registration)
    assert store.resolve(apq(QUERY)).request.query == QUERY


def test_a_hash_only_request_for_an_unknown_document_is_not_found() -> None:
    with pytest.raises(PersistedQueryNotFound):
        PersistedQueries(10).resolve(apq(QUERY))


def test_a_document_sent_with_another_documents_hash_is_refused() -> None:
    with pytest.raises(PersistedQueryHashMismatch):
        PersistedQueries(10).resolve(apq("{ other }", QUERY))


def test_remember_refuses_a_hash_that_is_not_the_documents() -> None:
    store = PersistedQueries(10)
    with pytest.raises(ValueError, match="hash"):
        store.remember(document_hash("{ other }"), QUERY)
    assert store.stored_entries == 0


def test_with_apq_off_a_hash_is_not_supported_but_plain_requests_run() -> None:
    store = PersistedQueries(0)
    with pytest.raises(PersistedQueryNotSupported):
        store.resolve(apq(QUERY, QUERY))
    assert store.resolve(full(QUERY)).request.query == QUERY


def test_a_request_without_a_hash_is_passed_through_and_not_registered() -> None:
    resolved = PersistedQueries(10).resolve(full(QUERY))
    assert resolved.request == full(QUERY)
    assert resolved.pending_registration is None


def test_a_document_over_max_document_bytes_runs_but_is_never_stored() -> None:
    big = "{ snapshots { id } }" + " " * 100
    store = PersistedQueries(10, max_document_bytes=100)
    resolved = store.resolve(apq(big, big))
    assert resolved.request.query == big
    assert resolved.pending_registration is None
    assert store.remember(document_hash(big), big) is False
    assert store.stored_entries == 0 and store.stored_bytes == 0


def test_a_document_of_exactly_max_document_bytes_is_stored() -> None:
    document = "{ snapshots { id } }"
    store = PersistedQueries(10, max_document_bytes=len(document))
    register(store, document)
    assert stored(store, document)


def test_the_least_recently_used_entry_goes_first_when_entries_run_out() -> None:
    store = PersistedQueries(2)
    register(store, "{ a }")
    register(store, "{ b }")
    store.resolve(apq("{ a }"))  # a is now the most recently used
    register(store, "{ c }")
    assert [stored(store, d) for d in ("{ a }", "{ b }", "{ c }")] == [True, False, True]


def test_the_least_recently_used_entries_go_first_when_bytes_run_out() -> None:
    documents = [f"{{ f{i} }}" + " " * 94 for i in range(4)]  # 100 bytes each
    store = PersistedQueries(100, max_bytes=3 * (100 + ENTRY_OVERHEAD_BYTES))
    for document in documents[:3]:
        register(store, document)
    store.resolve(apq(documents[0]))
    register(store, documents[3])
    assert [stored(store, d) for d in documents] == [True, False, True, True]
    assert store.stored_bytes == 3 * (100 + ENTRY_OVERHEAD_BYTES)


def test_bytes_are_accounted_as_utf8_plus_a_fixed_overhead_once_per_document() -> None:
    document = '{ snapshot(id: "é🙂") { id } }'
    store = PersistedQueries(10)
    register(store, document)
    register(store, document)
    assert store.stored_bytes == len(document.encode()) + ENTRY_OVERHEAD_BYTES
    assert store.stored_entries == 1


def test_a_document_larger_than_the_whole_store_is_not_stored() -> None:
    store = PersistedQueries(10, max_bytes=ENTRY_OVERHEAD_BYTES + 5)
    register(store, "{ a }")  # 5 bytes: fits exactly
    resolved = store.resolve(apq("{ ab }", "{ ab }"))
    assert resolved.pending_registration is None
    assert stored(store, "{ a }")


def big_document(index: int) -> str:
    # ~30 KB of UTF-8; the emoji makes Python hold the str at 4 bytes per character, so a
    # store that kept str instead of UTF-8 bytes would use 4 times what it accounts.
    return f"# {index} 🙂 " + "x" * 30_000 + f"\n{{ f{index} }}"


def test_the_store_stays_within_its_bytes_however_many_documents_arrive() -> None:
    limit = 1 << 20
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = PersistedQueries(10_000, max_bytes=limit)
        for index in range(400):
            document = big_document(index)
            register(store, document)
            assert store.stored_bytes <= limit
        del document
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 30 <= store.stored_entries <= 35  # the store is full, not empty
    assert retained < 2 * limit
    assert stored(store, big_document(399)) and not stored(store, big_document(0))


# Safelist


def safelist_of(*documents: str) -> dict[str, str]:
    return {document_hash(document): document for document in documents}


REGISTERED = "# My snapshots\nquery Mine {\n  snapshots { id }\n}\n"


def test_the_safelist_runs_a_registered_document_sent_by_hash() -> None:
    store = PersistedQueries(10, safelist=safelist_of(REGISTERED))
    resolved = store.resolve(apq(REGISTERED))
    assert resolved.request.query == REGISTERED
    assert resolved.pending_registration is None


def test_the_safelist_refuses_unknown_hashes_and_requests_without_either() -> None:
    store = PersistedQueries(10, safelist=safelist_of(REGISTERED))
    with pytest.raises(DocumentNotAllowed):
        store.resolve(apq(QUERY))
    with pytest.raises(DocumentNotAllowed):
        store.resolve(GraphQLRequest(None, None, None, None))


def test_the_safelist_runs_a_registered_document_sent_in_full() -> None:
    store = PersistedQueries(10, safelist=safelist_of(REGISTERED))
    assert store.resolve(full(REGISTERED)).request.query == REGISTERED


@pytest.mark.parametrize(
    "variant",
    [
        "query Mine { snapshots { id } }",
        "query Mine {\n\tsnapshots {\n\t\tid,\n\t}\n}",
        "# another comment\nquery Mine { snapshots { id } } # trailing",
        REGISTERED.rstrip("\n"),
    ],
)
def test_the_safelist_matches_full_documents_after_normalizing(variant: str) -> None:
    store = PersistedQueries(10, safelist=safelist_of(REGISTERED))
    resolved = store.resolve(full(variant))
    assert resolved.request.query == REGISTERED  # the registered text is what runs


@pytest.mark.parametrize(
    "document",
    [
        "query Mine { snapshots { id name } }",
        "query Yours { snapshots { id } }",
        "query Mine { snapshots { id }",  # does not parse
        "",
    ],
)
def test_the_safelist_refuses_other_documents(document: str) -> None:
    store = PersistedQueries(10, safelist=safelist_of(REGISTERED))
    with pytest.raises(DocumentNotAllowed):
        store.resolve(full(document))


def test_the_safelist_refuses_a_document_over_max_tokens_before_normalizing() -> None:
    store = PersistedQueries(10, safelist=safelist_of(REGISTERED), max_tokens=5)
    with pytest.raises(DocumentNotAllowed):
        store.resolve(full("query Mine { snapshots { id } }"))


def test_the_safelist_never_registers_new_documents() -> None:
    store = PersistedQueries(10, safelist=safelist_of(REGISTERED))
    with pytest.raises(DocumentNotAllowed):
        store.resolve(apq(QUERY, QUERY))
    assert store.remember(document_hash(QUERY), QUERY) is False


def test_a_safelisted_document_that_does_not_parse_is_still_loaded() -> None:
    broken = "{ snapshots { id }"
    store = PersistedQueries(10, safelist=safelist_of(broken, REGISTERED))
    assert store.resolve(full(broken)).request.query == broken  # fails when run
    assert store.resolve(full("query Mine { snapshots { id } }")).request.query == REGISTERED


FEDERATION_DOCUMENTS = [
    ROUTER_ENTITIES,
    "{ _service { sdl } }",
    "query SubgraphIntrospectQuery { _service { sdl } }",
    "{ __typename _service { sdl } }",
    "query { ...Sdl } fragment Sdl on Query { _service { sdl } }",
    "query($r: [_Any!]!) { ... on Query { _entities(representations: $r) { ...S } } }"
    " fragment S on Snapshot { id }",
]


@pytest.mark.parametrize("document", FEDERATION_DOCUMENTS)
def test_the_safelist_admits_a_routers_queries_when_federation_is_allowed(document: str) -> None:
    store = PersistedQueries(10, safelist=safelist_of(REGISTERED), allow_federation=True)
    assert store.resolve(full(document)).request.query == document


@pytest.mark.parametrize("document", FEDERATION_DOCUMENTS[:2])
def test_the_safelist_refuses_a_routers_queries_by_default(document: str) -> None:
    store = PersistedQueries(10, safelist=safelist_of(REGISTERED))
    with pytest.raises(DocumentNotAllowed):
        store.resolve(full(document))


@pytest.mark.parametrize(
    "document",
    [
        "{ _service { sdl } snapshots { id } }",
        "{ ...R } fragment R on Query { _service { sdl } ... on Query { snapshots { id } } }",
        "query A { _service { sdl } } query B { snapshots { id } }",
        "mutation { _service { sdl } }",
        "fragment R on Query { _service { sdl } }",
        "{ ...A } fragment A on Query { ...B snapshots { id } } fragment B on Query { ...A }",
    ],
)
def test_allowing_federation_admits_nothing_else_at_the_root(document: str) -> None:
    store = PersistedQueries(10, safelist=safelist_of(REGISTERED), allow_federation=True)
    with pytest.raises(DocumentNotAllowed):
        store.resolve(full(document))


# Helpers the CLI uses


def test_normalize_ignores_comments_commas_and_layout() -> None:
    assert normalize("# hi\nquery Q {a,b}") == normalize("query Q {\n  a\n  b\n}\n")
    assert normalize("query Q { a }") != normalize("query Q { b }")


def test_a_registered_safelist_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "mine.graphql"
    path.write_text(REGISTERED, encoding="utf-8")
    safelist = register_documents([path])
    assert safelist == {document_hash(REGISTERED): REGISTERED}
    file = tmp_path / "safelist.json"
    file.write_text(json.dumps(safelist), encoding="utf-8")
    assert load_safelist(str(file)) == safelist


def test_a_safelist_whose_hash_is_not_its_documents_does_not_load(tmp_path: Path) -> None:
    file = tmp_path / "safelist.json"
    file.write_text(json.dumps({document_hash(QUERY): REGISTERED}), encoding="utf-8")
    with pytest.raises(ValueError, match="sha256"):
        load_safelist(str(file))


def test_a_boolean_version_is_not_version_1() -> None:
    from snapgraph.errors import PersistedQueryNotSupported

    store = PersistedQueries(10)
    extensions = {"persistedQuery": {"version": True, "sha256Hash": "0" * 64}}
    with pytest.raises(PersistedQueryNotSupported):
        store.resolve(GraphQLRequest(None, None, None, extensions))
