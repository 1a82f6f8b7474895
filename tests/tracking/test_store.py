"""hwd_tune.tracking.store: tracking URIs, artifact locations and redaction (no store needed)."""

import pytest

from hwd_tune import tracking
from tests.tracking.helpers import PASSWORD


def test_default_uri_is_sqlite_under_output_dir_and_env_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    expected = f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"
    assert tracking.default_tracking_uri(tmp_path) == expected
    assert expected.startswith("sqlite:////")  # absolute path: four slashes
    assert tracking.resolve_tracking_uri(None, tmp_path) == expected
    assert tracking.resolve_tracking_uri("  ", tmp_path) == expected
    assert tracking.resolve_tracking_uri("http://mlflow:5000", tmp_path) == "http://mlflow:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    assert tracking.resolve_tracking_uri("http://mlflow:5000", tmp_path) == "http://from-env:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    assert tracking.resolve_tracking_uri(None, tmp_path) == expected


def test_artifact_location_sits_next_to_a_sqlite_store_only(tmp_path):
    uri = tracking.default_tracking_uri(tmp_path)
    assert tracking.default_artifact_location(uri) == (tmp_path.resolve() / "mlflow" / "artifacts").as_uri()
    assert tracking.default_artifact_location("http://mlflow:5000") is None
    assert tracking.default_artifact_location("postgresql://u:p@db/mlflow") is None
    assert tracking.default_artifact_location("sqlite:///:memory:") is None


@pytest.mark.parametrize(
    "uri, expected",
    [
        (f"http://alice:{PASSWORD}@mlflow:5000", "http://alice:***@mlflow:5000"),
        (
            f"postgresql://bob:{PASSWORD}@db:5432/mlflow?sslmode=require",
            "postgresql://bob:***@db:5432/mlflow?sslmode=require",
        ),
        (f"https://{PASSWORD}@host/path", "https://***@host/path"),  # a lone token is a secret too
        (f"mysql://carol:p@ss{PASSWORD}@db/x", "mysql://carol:***@db/x"),  # raw '@' in the password
        (f"https://host/api?user=dan&token={PASSWORD}&x=1", "https://host/api?user=dan&token=***&x=1"),
        ("sqlite:////tmp/out/mlflow/mlflow.db", "sqlite:////tmp/out/mlflow/mlflow.db"),
        ("http://mlflow:5000/a@b", "http://mlflow:5000/a@b"),  # '@' in the path is not userinfo
        (
            f"error: see http://u:{PASSWORD}@h:1/x and https://{PASSWORD}@g/y",  # URIs inside text
            "error: see http://u:***@h:1/x and https://***@g/y",
        ),
    ],
)
def test_redact_uri_hides_passwords_and_tokens(uri, expected):
    assert tracking.redact_uri(uri) == expected
    assert PASSWORD not in tracking.redact_uri(uri)
