from __future__ import annotations

import pytest

from litegate._connection import split_script


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        pytest.param("SELECT 1; SELECT 2;", ["SELECT 1;", " SELECT 2;"], id="two"),
        pytest.param(
            "INSERT INTO t VALUES ('a;b');", ["INSERT INTO t VALUES ('a;b');"], id="string"
        ),
        pytest.param("SELECT 1 -- no; end\n;", ["SELECT 1 -- no; end\n;"], id="line-comment"),
        pytest.param("SELECT 1; /* trailing */ ", ["SELECT 1;"], id="trailing-comment"),
        pytest.param("SELECT 1", ["SELECT 1"], id="no-semicolon"),
        pytest.param(";;  ;", [], id="empty"),
        pytest.param(
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET x = 1; DELETE FROM u; END; SELECT 2;",
            [
                "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET x = 1; DELETE FROM u; END;",
                " SELECT 2;",
            ],
            id="trigger",
        ),
    ],
)
def test_split_script(script: str, expected: list[str]) -> None:
    assert list(split_script(script)) == expected
