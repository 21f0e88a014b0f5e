from __future__ import annotations

import pytest

from nasplat.errors import StoreError
from nasplat.store import ExperimentStateStore, StudyIdentity, open_study, redact_text, redact_url


@pytest.mark.parametrize(
    "url, expected",
    [
        ("postgresql://bob:s3cret@127.0.0.1:5432/nas", "postgresql://bob:***@127.0.0.1:5432/nas"),
        ("postgresql+psycopg2://bob:p@ss@host/db", "postgresql+psycopg2://bob:***@host/db"),
        ("mysql://u:pa%40ss@h/db", "mysql://u:***@h/db"),
        ("sqlite:////tmp/study.db", "sqlite:////tmp/study.db"),
        ("postgresql://bob@host/db", "postgresql://bob@host/db"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_covers_dsn_and_literal_password() -> None:
    url = "postgresql://bob:hunter22@h/db"
    text = 'connect failed: dsn "host=h password=hunter22 user=bob"; retry hunter22 at postgresql://bob:hunter22@h/db'
    out = redact_text(text, url)
    assert "hunter22" not in out
    assert "postgresql://bob:***@h/db" in out


def test_unreachable_database_error_hides_password(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("NASPLAT_DB_RETRY_S", "0")  # give up at once (the retries: tests/store/test_resilience.py)
    url = "postgresql://bob:TopSecret99@127.0.0.1:1/nas"  # nothing listens on port 1
    with pytest.raises(StoreError) as info:
        open_study(url, "e", StudyIdentity("f", "analytic", "random", 0, None))
    assert "TopSecret99" not in str(info.value)
    assert info.value.__cause__ is None  # the driver's exception (with the URL) is not chained
    assert "***" in str(info.value)


def test_experiment_state_round_trip(tmp_path) -> None:  # noqa: ANN001
    states = ExperimentStateStore(f"sqlite:///{tmp_path}/s.db")
    assert states.get("e") is None
    states.update("e", phase="trained", checkpoint="/x/ckpt.pt")
    row = states.update("e", phase="searching")
    assert (row.phase, row.checkpoint) == ("searching", "/x/ckpt.pt")
    with pytest.raises(StoreError, match="unknown experiment state field"):
        states.update("e", colour="red")
