"""The README documents every setting and every route."""

from pathlib import Path

from vlserve.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme():
    missing = [f"VLSERVE_{name.upper()}" for name in Settings.model_fields if f"VLSERVE_{name.upper()}" not in README]
    assert not missing, f"undocumented settings: {missing}"


def test_every_route_is_in_the_readme():
    from vlserve.api.app import create_app

    app = create_app(Settings(model_repo="/nonexistent"))
    routes = list(app.openapi()["paths"])
    assert routes and all(p in README for p in routes), routes
