import pandas as pd

from labkit.panels.welcome import welcome_panel


def _parts(panel):
    _title, button, verdict, table = panel.children
    return button, verdict, table


def test_clicking_check_shows_the_table_and_a_verdict():
    button, verdict, table = _parts(welcome_panel())
    assert table.value == ""
    button.click()
    assert "<table" in table.value and "torch" in table.value
    assert "ready" in verdict.value or "Needs attention" in verdict.value


def test_a_failed_check_is_named_in_the_verdict(monkeypatch):
    fake = pd.DataFrame([("python", "3.11", True, ""), ("demo files", "0", False, "missing")],
                        columns=["check", "value", "ok", "note"])
    monkeypatch.setattr("labkit.panels.welcome.doctor", lambda: fake)
    button, verdict, _ = _parts(welcome_panel())
    button.click()
    assert "Needs attention: demo files" in verdict.value
