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


def test_the_table_keeps_its_columns_apart_and_its_notes_whole():
    from labkit.generate.setup_check import doctor

    button, _, table = _parts(welcome_panel())
    button.click()
    assert "labkit-scroll" in table.value and "padding:" in table.value
    assert "text-align: right" not in table.value  # headers sit over their (left) columns
    device = doctor().set_index("check").loc["device", "note"]
    assert device in table.value
