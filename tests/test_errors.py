"""The error tree's own contract: the code each error carries, and what its message says."""

from __future__ import annotations

from graphql import GraphQLError

from snapgraph.errors import AnswerTooLarge, ConfigError, DocumentInvalid


def test_a_request_error_carries_every_problem_each_with_a_code() -> None:
    chosen = GraphQLError("too deep", extensions={"code": "MAX_DEPTH_LIMIT", "limit": 15})
    plain = GraphQLError("no such field", extensions={"field": "nope"})
    error = DocumentInvalid([chosen, plain])
    # A rule's own code is kept; any other problem gets the error's code, beside what it says.
    assert [problem.extensions for problem in error.errors] == [
        {"code": "MAX_DEPTH_LIMIT", "limit": 15},
        {"field": "nope", "code": "GRAPHQL_VALIDATION_FAILED"},
    ]
    assert str(error) == error.message == "too deep"  # named by its first problem
    assert DocumentInvalid([]).errors == []


def test_an_answer_too_large_tells_the_limit_and_what_to_do() -> None:
    (problem,) = AnswerTooLarge.over(7).errors
    assert problem.extensions == {"code": "MAX_RESULT_VALUES_LIMIT", "limit": 7}
    assert problem.message == (
        "The answer would hold more than 7 values; select fewer fields or aliases, "
        "or narrow the list with `type`."
    )


def test_a_config_error_shows_the_value_it_got_when_there_is_one() -> None:
    shown = ConfigError("SNAPGRAPH_PORT", "must be a port number", "eighty")
    assert str(shown) == "SNAPGRAPH_PORT must be a port number (got 'eighty')"
    unset = ConfigError("SNAPGRAPH_UPSTREAM_URL", "must be set", None)
    assert str(unset) == "SNAPGRAPH_UPSTREAM_URL must be set"
