"""The dashboard's parts without a browser (issue 19): what counts as loopback, the token file, the
grouping of failure reasons, the pictures' geometry, and that everything a page loads ships in the
package (no CDN, no address elsewhere)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from forrestq.dashboard import data, pictures, security
from forrestq.dashboard.config import DashboardConfig, task_url
from forrestq.errors import ConfigError, DashboardRefused

PACKAGE = Path(data.__file__).resolve().parent


@pytest.mark.parametrize("bind", ["127.0.0.1", "127.0.0.2", "127.255.0.9", "::1", "[::1]", "localhost"])
def test_every_loopback_address_is_loopback(bind):
    assert security.is_loopback(bind)
    security.check_bind(bind, None)  # no token needed


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "192.168.1.10", "10.0.0.1", "fe80::1", "no-such-host.invalid"])
def test_beyond_loopback_needs_a_token(bind):
    assert not security.is_loopback(bind)
    with pytest.raises(DashboardRefused, match="without a token"):
        security.check_bind(bind, None)
    security.check_bind(bind, "a-token-of-sixteen-or-more")


def test_the_token_file_holds_a_long_enough_token(tmp_path):
    f = tmp_path / "token"
    f.write_text("short\n")
    with pytest.raises(ConfigError, match="at least 16"):
        security.read_token(f)
    f.write_text("0123456789abcdef0123\nignored\n")
    assert security.read_token(f) == "0123456789abcdef0123"
    with pytest.raises(ConfigError, match="cannot read"):
        security.read_token(tmp_path / "missing")


def test_the_host_header_must_name_this_machine_without_a_token():
    def scope(host: str) -> dict:
        return {"headers": [(b"host", host.encode())]}

    names = frozenset({"node01"})
    for ok in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "node01:8765", "127.0.0.2"):
        assert security.host_ok(scope(ok), names), ok
    for bad in ("evil.example:8765", "evil.example", "10.0.0.1:8765", ""):
        assert not security.host_ok(scope(bad), names), bad


def test_failure_reasons_that_differ_in_numbers_group_together():
    assert data.reason_group("ValueError: no convergence for item 17 after 200.5 s") == \
        data.reason_group("ValueError: no convergence for item 3 after 9 s")
    assert data.reason_group("killed by signal 11 (SIGSEGV) at 0x7f3a") == "killed by signal N (SIGSEGV) at N"


def test_the_chart_and_the_dag_geometry():
    c = pictures.chart({"done": [0, 5, 10], "failed": [0, 0, 1]})
    assert c["top"] == 10 and len(c["done"].split()) == 3
    nodes = [data.Node("a", "m.prepare", "done", -1), data.Node("b", "m.fit", "failed", 0, ["a"]),
             data.Node("c", "m.combine", "failed", 1, ["b", "a"])]
    d = pictures.dag_picture(nodes, "b")
    assert [b.id for b in d["boxes"]] == ["a", "b", "c"] and [b.here for b in d["boxes"]] == [False, True, False]
    assert d["boxes"][0].x < d["boxes"][1].x < d["boxes"][2].x and len(d["edges"]) == 3
    assert pictures.dag_picture([], "x")["boxes"] == []


def test_task_urls_quote_queue_names_and_wildcard_binds_name_the_host():
    assert task_url("http://h:1/", "a/b", "id-1") == "http://h:1/task/a%2Fb/id-1"
    assert DashboardConfig(url="redis://x", bind="127.0.0.2", port=9).base_url() == "http://127.0.0.2:9"
    assert DashboardConfig(url="redis://x", public_url="https://fq.example/").base_url() == "https://fq.example"
    assert "0.0.0.0" not in DashboardConfig(url="redis://x", bind="0.0.0.0").base_url()


def test_everything_a_page_loads_ships_in_the_package():
    files = list((PACKAGE / "templates").glob("*.html")) + list((PACKAGE / "static").iterdir())
    assert {p.name for p in (PACKAGE / "static").iterdir()} >= {"dashboard.js", "dashboard.css"}
    for path in files:
        text = path.read_text()
        assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", text), path.name  # nothing from elsewhere
        assert "@import" not in text and "url(http" not in text, path.name
        if path.suffix == ".html":
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), f"inline script in {path.name}"
            assert not re.search(r"\son[a-z]+\s*=", text), f"inline event handler in {path.name}"
            assert "|safe" not in text and "autoescape false" not in text, path.name
