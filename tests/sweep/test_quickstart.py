"""hwd_tune.sweep.quickstart: what `hwd-tune quickstart` checks before it starts Ray."""

from hwd_tune.sweep.quickstart import check_quickstart


def test_a_fresh_quickstart_passes_its_checks_and_writes_nothing(tmp_path, monkeypatch):
    """The teacher the sweep distils from is trained by step 1: it is not required to exist yet."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    check_quickstart(str(tmp_path / "outputs"))
    assert list(tmp_path.iterdir()) == []
