"""The web dashboard in a real browser (issue 19): headless Chromium from the distribution's packages,
driven by Playwright (never a browser Playwright downloads), against a real ``forrestq dashboard``
process, a real server and real workers. Every wait is bounded; every process and browser started
here is torn down.

Skips, saying why, where Chromium or Playwright is missing (``.ci/run`` installs Chromium when it
runs as root on Debian/Ubuntu)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import tasks
from helpers import free_port, wait_for
from procs import worker, worker_env
from prometheus_client.parser import text_string_to_metric_families

from forrestq import Queue, defer, schema
from forrestq.server import ServerProcess

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra)")
playwright_api.expect.set_options(timeout=20_000)  # what a page may take to show what a test waits for

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FAST = ("--lease", "1")
UI_TIMEOUT = 20_000  # ms: the longest a page may take to show what a test waits for


def chromium() -> str:
    found = os.environ.get("FORRESTQ_CHROMIUM") or next((p for b in BROWSERS if (p := shutil.which(b))), None)
    if not found:
        pytest.skip("no Chromium found (apt-get install chromium; or set FORRESTQ_CHROMIUM)")
    return found


# --- task functions the workers run (this module is on their PYTHONPATH) -----------------------------


def talk_then_fail(flag: str, seconds: float = 0.0) -> str:
    """Prints, then fails unless ``flag`` exists (after sleeping ``seconds``)."""
    print("hello from the task <b>not bold</b>")
    if not os.path.exists(flag):
        raise ValueError("no flag yet: first attempt fails")
    time.sleep(seconds)
    return "ok"


def hostile(text: str) -> str:
    print(text)
    raise RuntimeError(text)


# --- processes ---------------------------------------------------------------------------------------


class Dashboard:
    """A ``forrestq dashboard`` process on a free port; ``stop()`` ends it (and waits)."""

    def __init__(self, redis_url: str, *args: str, bind: str = "127.0.0.1") -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "forrestq", "dashboard", "--url", redis_url,
                                      "--bind", bind, "--port", str(self.port), *args],
                                     env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def ready(self, headers: dict[str, str] | None = None) -> Dashboard:
        def up() -> bool:
            assert self.proc.poll() is None, self.proc.stdout.read().decode() if self.proc.stdout else ""
            return get(self.base + "/static/dashboard.css", headers)[0] == 200
        wait_for(up, timeout=20, interval=0.05, what="the dashboard to listen")
        return self

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)
        finally:
            if self.proc.stdout:
                self.proc.stdout.close()


def get(address: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(address, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


@pytest.fixture(scope="module")
def dashboard(server: ServerProcess) -> Iterator[Dashboard]:
    d = Dashboard(server.url).ready()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    path = chromium()
    with playwright_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox", "--disable-gpu"],
                                  timeout=60_000)
        except playwright_api.Error as e:  # a Chromium too old or broken for this Playwright: say so
            pytest.skip(f"{path} does not start under Playwright: {str(e).splitlines()[0]}")
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    context = browser.new_context()  # type: ignore[attr-defined]
    context.set_default_timeout(UI_TIMEOUT)
    p = context.new_page()
    p.on("dialog", lambda dialog: dialog.accept())  # every action asks for confirmation: yes
    try:
        yield p
    finally:
        context.close()


def expect(locator: object) -> object:
    return playwright_api.expect(locator)  # type: ignore[arg-type]


def stays(page: object) -> None:
    """Mark the loaded document: :func:`still_same` later proves no reload happened meanwhile."""
    page.evaluate("window.__fq_same = 1")  # type: ignore[attr-defined]


def still_same(page: object) -> bool:
    return page.evaluate("window.__fq_same") == 1  # type: ignore[attr-defined]


# --- tests -------------------------------------------------------------------------------------------


def test_the_overview_shows_a_queues_counts_and_they_change_as_a_worker_drains_it(url, dashboard, page):
    q = Queue("drained")
    refs = [q.schedule(defer(tasks.sleep_then, 0.2, i)) for i in range(6)]
    page.goto(dashboard.base + "/")
    box = page.locator('.queue[data-queue="drained"]')
    expect(box.locator('[data-count="ready"]')).to_have_text("6")
    expect(box.locator('[data-count="done"]')).to_have_text("0")
    stays(page)
    with worker(url, "drained", 2, *FAST):
        expect(page.locator("table.workers tr[data-worker]")).to_have_count(1)  # the worker appears
        expect(box.locator('[data-count="done"]')).to_have_text("6")
        for ref in refs:
            assert q.get(ref).state == "done"
    expect(box.locator('[data-count="ready"]')).to_have_text("0")
    assert still_same(page), "the page was reloaded: the counts must change in place"


def test_a_failed_tasks_page_shows_traceback_and_output_and_requeue_runs_it_again(url, dashboard, page, tmp_path):
    q = Queue("requeued")
    flag = tmp_path / "flag"
    ref = q.schedule(defer(talk_then_fail, str(flag), 1.5), metadata={"item": 17})
    with worker(url, "requeued", 1, *FAST):
        assert q.wait(ref, timeout=20).state == "failed"
        page.goto(f"{dashboard.base}/task/requeued/{ref.id}")
        expect(page.locator("h2 .state")).to_have_text("failed")
        expect(page.locator("#traceback")).to_contain_text("ValueError: no flag yet: first attempt fails")
        expect(page.locator("#traceback")).to_contain_text("talk_then_fail")
        expect(page.locator("#output")).to_contain_text("hello from the task <b>not bold</b>")
        expect(page.locator("#metadata")).to_have_text("{'item': 17}")
        flag.write_text("go")
        page.click('button[data-action="requeue"]')  # confirmed by the dialog handler
        expect(page.locator("#msg")).to_contain_text(f"requeued {ref.id}")
        stays(page)
        expect(page.locator("h2 .state")).to_have_text("done", timeout=UI_TIMEOUT)  # by the live update
        assert still_same(page)
    assert q.get(ref).state == "done" and q.get(ref).returnvalue == "ok"


def test_stop_makes_the_worker_exit_after_its_running_task(url, dashboard, page):
    q = Queue("stopped")
    running = q.schedule(defer(tasks.sleep_then, 3, "finished"))
    with worker(url, "stopped", 1, *FAST, "--grace", "30") as proc:
        wait_for(lambda: q.get(running).state == "running", timeout=20, what="the task to start")
        later = q.schedule(defer(tasks.identity, "never claimed"))
        page.goto(dashboard.base + "/")
        row = page.locator("table.workers tr[data-worker]")
        expect(row).to_have_count(1)
        row.locator('button[data-action="stop-worker"]').click()
        expect(page.locator("#msg")).to_contain_text("it finishes its running tasks, then exits")
        expect(row.locator(".state")).to_have_text("stopping")
        assert proc.wait(20) == 0
    task = q.get(running)
    assert task.state == "done" and task.returnvalue == "finished" and task.attempts == 1
    assert q.get(later).state == "ready" and q.get(later).attempts == 0
    expect(page.locator("table.workers tr[data-worker]")).to_have_count(0)  # it left (live update)


HOSTILE = ["<script>window.__fq_pwned=1</script>", "<img src=x onerror=window.__fq_pwned=2>",
           "\"><svg onload=window.__fq_pwned=3>"]  # no single quote: the repr of the metadata keeps them as they are


def test_hostile_user_text_renders_inert(url, dashboard, page):
    q = Queue("hostile")
    text = " ".join(HOSTILE)
    ref = q.schedule(defer(hostile, text), metadata={"note": text, "html": HOSTILE[1]})
    with worker(url, "hostile", 1, *FAST):
        assert q.wait(ref, timeout=20).state == "failed"
    for path in (f"/task/hostile/{ref.id}", "/tasks?queue=hostile&state=failed", "/failures?queue=hostile"):
        page.goto(dashboard.base + path)
        expect(page.locator("main")).to_contain_text("window.__fq_pwned")  # shown, as text
        page.wait_for_timeout(300)  # an onerror would fire on load of the bad image: let it have the chance
        assert page.evaluate("window.__fq_pwned") is None, path
        assert page.locator("main script, main img, main svg[onload]").count() == 0, path
        assert page.evaluate("[...document.querySelectorAll('main *')].filter(e => [...e.attributes]"
                             ".some(a => a.name.startsWith('on'))).length") == 0, path
    page.goto(f"{dashboard.base}/task/hostile/{ref.id}")
    assert HOSTILE[0] in page.locator("#metadata").text_content()
    assert HOSTILE[1] in page.locator("#output").text_content()
    assert HOSTILE[2] in page.locator("#traceback").text_content()


def test_metrics_parse_and_equal_the_queues_counts(url, dashboard):
    q = Queue("scraped")
    refs = [q.schedule(defer(tasks.add, i, 1)) for i in range(3)]
    with worker(url, "scraped", 1, *FAST):
        for ref in refs:
            q.wait(ref, timeout=20)
    q.schedule(defer(tasks.add, defer(tasks.identity, 1), 2))
    status, text = get(dashboard.base + "/metrics")
    assert status == 200
    found = {s.labels["state"]: s.value for family in text_string_to_metric_families(text)
             if family.name == "forrestq_tasks" for s in family.samples if s.labels["queue"] == "scraped"}
    assert found == {state: float(n) for state, n in q.counts().items()}
    assert found["done"] == 3 and found["ready"] == 1 and found["waiting"] == 1


def show(url: str, task_id: str) -> str:
    return subprocess.run([sys.executable, "-m", "forrestq", "show", task_id, "--url", url], capture_output=True,
                          text=True, env=worker_env(), timeout=30).stdout


def test_forrestq_show_prints_the_dashboard_url_of_the_task(url, server, dashboard, r):
    q = Queue("shown")
    ref = q.schedule(defer(tasks.identity, 1))
    expected = f"dashboard: {dashboard.base}/task/shown/{ref.id}"
    out = wait_for(lambda: (text := show(url, ref.id)) and expected in text.splitlines() and text, timeout=20,
                   what="show to name the dashboard (its URL is renewed every 3 s)")
    assert get(expected.split(" ", 1)[1])[0] == 200
    other = Dashboard(server.url).ready()
    wait_for(lambda: r.get(schema.DASHBOARD) == other.base.encode(), timeout=10, what="the second dashboard's URL")
    assert other.stop() == 0
    assert r.get(schema.DASHBOARD) != other.base.encode()  # a stopped dashboard takes its URL away
    assert out.index(ref.id) < out.index(expected)  # show's own output first


# --- who may use it ------------------------------------------------------------------------------------


def test_beyond_loopback_without_a_token_it_refuses_to_start(url):
    for bind in ("0.0.0.0", "::"):
        done = subprocess.run([sys.executable, "-m", "forrestq", "dashboard", "--url", url, "--bind", bind,
                               "--port", str(free_port())], capture_output=True, text=True, env=worker_env(),
                              timeout=30)
        assert done.returncode == 2, done.stderr
        assert "without a token" in done.stderr and "--token-file" in done.stderr


def test_with_a_token_every_request_needs_it_and_the_login_page_sets_a_cookie(url, server, page, tmp_path):
    token_file = tmp_path / "token"
    token = "s3cret-token-for-the-dashboard"
    token_file.write_text(token + "\n")
    d = Dashboard(server.url, "--token-file", str(token_file), bind="0.0.0.0")
    try:
        wait_for(lambda: get(d.base + "/")[0] == 401, timeout=20, what="the guarded dashboard")
        for path in ("/", "/tasks", "/metrics", "/task/x/y"):
            assert get(d.base + path)[0] == 401, path
        assert get(d.base + "/", {"Authorization": "Bearer wrong-token-wrong-token"})[0] == 401
        assert get(d.base + "/metrics", {"Authorization": f"Bearer {token}"})[0] == 200
        assert get(d.base + "/action/clean", data=b"queue=x&which=done")[0] == 401
        response = page.goto(d.base + "/tasks")
        assert response.status == 401
        page.fill('input[name="token"]', "not it, not it, not it")
        page.click('button[type="submit"]')
        expect(page.locator(".warn")).to_have_text("That is not the token.")
        page.fill('input[name="token"]', token)
        page.click('button[type="submit"]')
        expect(page.locator("h2")).to_have_text("Tasks")  # back where it was going
        assert page.goto(d.base + "/").status == 200  # the cookie carries it
    finally:
        d.stop()


def test_actions_need_the_csrf_token_and_read_only_has_none(url, server, dashboard, page):
    q = Queue("guarded")
    ref = q.schedule(defer(tasks.identity, 1))
    status, _ = get(dashboard.base + "/action/cancel", data=f"queue=guarded&id={ref.id}".encode())
    assert status == 403 and q.get(ref).state == "ready"  # no CSRF token: refused, nothing done
    # another site's name rebound to 127.0.0.1 (DNS rebinding): neither its pages nor its actions answer
    assert get(dashboard.base + "/", {"Host": f"evil.example:{dashboard.port}"})[0] == 403
    assert get(dashboard.base + "/", {"Host": f"localhost:{dashboard.port}"})[0] == 200
    ro = Dashboard(server.url, "--read-only").ready()
    try:
        page.goto(f"{ro.base}/task/guarded/{ref.id}")
        expect(page.locator("h2 .state")).to_have_text("ready")
        assert page.locator("form.action").count() == 0
        assert get(ro.base + "/action/cancel", data=f"queue=guarded&id={ref.id}".encode())[0] == 404
    finally:
        ro.stop()
    assert q.get(ref).state == "ready"


def test_the_tasks_page_filters_and_pages_through_the_sorted_sets(url, dashboard, page):
    q = Queue("listed")
    refs = [q.schedule(defer(tasks.identity, i), metadata={"item": f"item-{i}"}) for i in range(60)]
    bad = q.schedule(defer(tasks.crash, "needle in the reason"), metadata={"item": "the bad one"})
    with worker(url, "listed", 2, *FAST):
        for ref in [*refs, bad]:
            q.wait(ref, timeout=30)
    page.goto(dashboard.base + "/tasks?queue=listed&state=done")
    expect(page.locator("table.tasks tr[data-task]")).to_have_count(50)
    page.click("a[rel=next]")
    expect(page.locator("table.tasks tr[data-task]")).to_have_count(10)
    page.goto(dashboard.base + "/tasks?queue=listed&state=done&text=item-42")
    expect(page.locator("table.tasks tr[data-task]")).to_have_count(1)
    expect(page.locator("table.tasks tr[data-task] .md")).to_contain_text("item-42")
    page.goto(dashboard.base + "/tasks?queue=listed&state=failed&error=needle")
    expect(page.locator("table.tasks tr[data-task]")).to_have_count(1)
    page.locator("table.tasks tr[data-task] a").click()
    expect(page.locator("#task-id")).to_have_text(bad.id)
    page.goto(dashboard.base + "/failures?queue=listed")
    expect(page.locator(".group")).to_have_count(1)
    expect(page.locator(".group h3")).to_contain_text("ValueError")


def test_a_tasks_page_draws_its_dag_with_links(url, dashboard, page):
    q = Queue("drawn")
    a = defer(tasks.identity, 1)
    b = defer(tasks.add, a, 1)
    ref = q.schedule(defer(tasks.add, b, a))
    page.goto(f"{dashboard.base}/task/drawn/{b._id}")
    boxes = page.locator(".dag svg g.node")
    expect(boxes).to_have_count(3)
    expect(page.locator(".dag svg g.node.here")).to_have_count(1)
    assert page.locator(f'.dag svg a[href="/task/drawn/{ref.id}"]').count() == 1
    assert page.locator(".dag svg line.edge").count() == 3
