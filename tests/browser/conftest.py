"""Reusable pytest fixtures for browser tests: a live uvicorn server and a headless Chromium.

Selenium + Debian's chromium/chromium-driver packages: chromium-driver is built from the same
source package as chromium, so browser and driver always match (Playwright ships for its own pinned
build). Kept as tests/browser/conftest.py, so it applies to the browser tests only.

Fixtures
  live_server_factory  (session) start(app, env=None, ...) -> LiveServer; one uvicorn subprocess
                       per distinct (app, env, cwd), reused for the session, SIGTERM'd at the end.
  live_server          (function) the server for this test, chosen by indirect parametrisation
                       (`parametrize("live_server", [{"app": ..., "env": ...}], indirect=True)`) or by
                       the nearest marker (`pytestmark = pytest.mark.live_app("pkg.mod:app", env={...})`).
  chromium_install     (session) the browser + driver paths; skips (or fails, with
                       BROWSER_TESTS_REQUIRED=1) with the reason when either is missing or they disagree.
  browser              (function) a Browser: a fresh Chromium with an empty profile, console + network
                       capture, screenshot helper. Its base_url is live_server's when the test uses
                       that fixture or has a live_app marker.
                       After a passing test it asserts no console errors and no off-host requests,
                       unless the test is marked `browser_lenient`. After a failing test it saves a
                       screenshot, the console log and the request list into browser_artifacts_dir.
  browser_artifacts_dir (session) where screenshots/logs go: $BROWSER_ARTIFACTS_DIR or a pytest tmp dir.

Environment knobs: CHROMIUM_BINARY (default /usr/bin/chromium), CHROMEDRIVER (default
/usr/bin/chromedriver), BROWSER_TESTS_REQUIRED=1 (turn "skip" into "fail", for CI), BROWSER_ARTIFACTS_DIR.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest

# Flags every Chromium launch gets. The first block is required here: without the background-
# networking ones Chromium tries to reach Google hosts (refused in this sandbox and in CI).
REQUIRED_FLAGS = (
    "--headless",
    "--no-sandbox",  # we run as root; the setuid/namespace sandbox refuses root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# Safety net and determinism.
EXTRA_FLAGS = (
    # Any host name other than 127.0.0.1 fails DNS inside Chromium (net::ERR_NAME_NOT_RESOLVED),
    # so a stray CDN/font/analytics URL can never leave the machine, even via Chromium internals.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    # Ignore http(s)_proxy from the environment: a proxy would resolve names itself and bypass the rule.
    "--no-proxy-server",
    # Debian's /usr/bin/chromium wrapper is meant to add this when /dev/shm is small (Docker: 64 MiB),
    # but its check breaks when findmnt prints two lines; always pass it (uses /tmp instead).
    "--disable-dev-shm-usage",
    # Fewer browser-internal fetches (measured with netlog_probe.py: these remove the network-time
    # and optimization-guide requests; Gaia ListAccounts, update.googleapis.com and a DuckDuckGo
    # preconnect remain and are stopped by the resolver rule above).
    "--disable-features=OptimizationHints,OptimizationGuideModelDownloading,OptimizationHintsFetching,"
    "OptimizationTargetPrediction,NetworkTimeServiceQuerying,MediaRouter,Translate,AutofillServerCommunication,"
    "CertificateTransparencyComponentUpdater",
    "--disable-client-side-phishing-detection",
    "--disable-domain-reliability",
    "--no-pings",
    "--disable-breakpad",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
    "--hide-scrollbars",  # stable screenshots
    "--force-device-scale-factor=1",
    "--lang=en-US",
    "--window-size=1280,800",
)
# Profile preferences for every launch.
PREFS = {
    "net.network_prediction_options": 2,  # no page-level preconnect/prefetch predictions
}
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
# Schemes that never touch the network.
_LOCAL_SCHEMES = frozenset({"data", "blob", "about", "chrome", "chrome-error", "devtools"})

DEFAULT_CHROMIUM = "/usr/bin/chromium"
DEFAULT_CHROMEDRIVER = "/usr/bin/chromedriver"
CI_INSTALL_HINT = "apt-get install -y chromium chromium-driver; selenium comes with make install"


# --------------------------------------------------------------------------------------------
# live server
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class LiveServer:
    app: str
    url: str
    port: int
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_live_server(
    app: str,
    env: dict[str, str] | None = None,
    *,
    cwd: str | Path | None = None,
    log_dir: Path,
    health_path: str = "/healthz",
    startup_timeout: float = 60,
    extra_args: tuple[str, ...] = (),
) -> LiveServer:
    """Run `python -m uvicorn APP --host 127.0.0.1 --port N` and wait until health_path answers 200."""
    cwd = Path(cwd or os.getcwd()).resolve()
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(cwd), full_env.get("PYTHONPATH", "")) if p)
    full_env["PYTHONUNBUFFERED"] = "1"
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", app)
    last_error = ""
    for attempt in range(3):  # free_port() -> bind is racy; retry on a fresh port
        port = free_port()
        log_path = log_dir / f"server-{safe_name}-{port}.log"
        command = [
            sys.executable, "-m", "uvicorn", app,
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *extra_args,
        ]  # fmt: skip
        with log_path.open("ab") as out:
            process = subprocess.Popen(command, cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT)
        server = LiveServer(app, f"http://127.0.0.1:{port}", port, process, log_path)
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                last_error = f"exited with {process.returncode} (attempt {attempt + 1}):\n{server.log_tail()}"
                break
            try:
                with _NO_PROXY_OPENER.open(server.url + health_path, timeout=2) as response:
                    if response.status == 200:
                        return server
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(
                    f"{app} did not answer {health_path} within {startup_timeout:.0f}s:\n{server.log_tail()}"
                )
            time.sleep(0.1)
        if "address already in use" not in last_error.lower():
            break
    raise RuntimeError(f"{app} failed to start: {last_error}")


@pytest.fixture(scope="session")
def browser_artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("BROWSER_ARTIFACTS_DIR")
    path = Path(configured) if configured else tmp_path_factory.mktemp("browser-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def live_server_factory(browser_artifacts_dir: Path) -> Iterator[Callable[..., LiveServer]]:
    servers: dict[tuple, LiveServer] = {}

    def start(app: str, env: dict[str, str] | None = None, **kwargs: Any) -> LiveServer:
        key = (app, tuple(sorted((env or {}).items())), repr(sorted(kwargs.items())))
        server = servers.get(key)
        if server is None or server.process.poll() is not None:
            server = start_live_server(app, env, log_dir=browser_artifacts_dir, **kwargs)
            servers[key] = server
        return server

    yield start
    for server in servers.values():
        server.stop()


@pytest.fixture
def live_server(request: pytest.FixtureRequest, live_server_factory: Callable[..., LiveServer]) -> LiveServer:
    spec = getattr(request, "param", None)
    if spec is None:
        marker = request.node.get_closest_marker("live_app")
        if marker is None:
            raise pytest.UsageError(
                "live_server needs an app: mark the test/module with "
                "pytest.mark.live_app('pkg.module:app', env={...}) or parametrize it indirectly"
            )
        spec = {"app": marker.args[0], **marker.kwargs}
    if isinstance(spec, str):
        spec = {"app": spec}
    spec = dict(spec)
    server = live_server_factory(spec.pop("app"), spec.pop("env", None), **spec)
    if server.process.poll() is not None:
        pytest.fail(f"server {server.app} died:\n{server.log_tail()}")
    return server


# --------------------------------------------------------------------------------------------
# browser
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChromiumInstall:
    binary: str
    driver: str
    browser_version: str
    driver_version: str


def _version(path: str) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"(\d+\.\d+\.\d+\.\d+)", out)
    return match.group(1) if match else out.strip()


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("BROWSER_TESTS_REQUIRED") == "1":
        pytest.fail(f"{reason} (BROWSER_TESTS_REQUIRED=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_install() -> ChromiumInstall:
    try:
        import selenium  # noqa: F401
    except ImportError:
        _skip_or_fail(f"browser tests need the selenium package ({CI_INSTALL_HINT})")
    binary = os.environ.get("CHROMIUM_BINARY") or DEFAULT_CHROMIUM
    driver = os.environ.get("CHROMEDRIVER") or DEFAULT_CHROMEDRIVER
    missing = [p for p in (binary, driver) if not (os.path.isfile(p) and os.access(p, os.X_OK))]
    if missing:
        _skip_or_fail(f"browser tests need {' and '.join(missing)} ({CI_INSTALL_HINT})")
    browser_version, driver_version = _version(binary), _version(driver)
    if browser_version.split(".")[0] != driver_version.split(".")[0]:
        _skip_or_fail(
            f"chromium {browser_version} and chromedriver {driver_version} differ in major version; "
            "install both from the same apt repository"
        )
    return ChromiumInstall(binary, driver, browser_version, driver_version)


@pytest.fixture(scope="session")
def selenium_offline_env() -> Iterator[None]:
    """Belt and braces: Selenium Manager is never run (the driver path is explicit), but if it ever
    were, it must not download, must not send usage stats, and chromedriver calls must not go via a proxy."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SE_OFFLINE", "true")
        mp.setenv("SE_AVOID_STATS", "true")
        for name in ("NO_PROXY", "no_proxy"):
            current = os.environ.get(name, "")
            mp.setenv(name, ",".join(p for p in (current, "127.0.0.1,localhost") if p))
        yield


@dataclass
class Request:
    url: str
    method: str
    resource_type: str
    error: str | None = None

    @property
    def is_local(self) -> bool:
        parts = urlsplit(self.url)
        if parts.scheme in _LOCAL_SCHEMES:
            return True
        return (parts.hostname or "") in LOCAL_HOSTS


@dataclass
class Browser:
    """A Selenium driver plus what the page logged and fetched since it started."""

    driver: Any
    artifacts_dir: Path
    base_url: str | None = None
    startup_s: float = 0.0
    console: list[dict] = field(default_factory=list)
    _requests: dict[str, Request] = field(default_factory=dict)
    _order: list[str] = field(default_factory=list)

    # ---- navigation / interaction -----------------------------------------------------------
    def url_for(self, path: str) -> str:
        if re.match(r"^[a-z][a-z0-9+.-]*:", path):
            return path
        if self.base_url is None:
            raise ValueError(
                f"relative URL {path!r} but no live_server (use the fixture or a live_app marker)"
            )
        return urljoin(self.base_url + "/", path.lstrip("/"))

    def open(self, path: str = "/") -> None:
        self.driver.get(self.url_for(path))

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def wait_for_text(self, css: str, text: str, timeout: float = 10) -> str:
        """Wait until the element matching css contains text; return its full text."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        # The page re-renders what it waits on: chromedriver reports a node replaced mid-read either
        # as a stale element or as "Node with given id does not belong to the document" (a plain
        # WebDriverException, seen in a CI run), so the wait retries on both until its timeout.
        WebDriverWait(self.driver, timeout, ignored_exceptions=(WebDriverException,)).until(
            ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text)
        )
        return self.find(css).text

    def press(self, *keys: str) -> None:
        """Send keys to whatever has focus (like a user typing), e.g. press("/") or press(Keys.TAB)."""
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.driver).send_keys(*keys).perform()

    def focused_id(self) -> str:
        return self.driver.switch_to.active_element.get_attribute("id") or ""

    # ---- console -----------------------------------------------------------------------------
    def console_entries(self) -> list[dict]:
        """All browser-log entries so far (get_log drains Chromium's buffer, so we accumulate)."""
        self.console.extend(self.driver.get_log("browser"))
        return list(self.console)

    def console_errors(self, ignore: tuple[str, ...] = ()) -> list[dict]:
        return [
            e
            for e in self.console_entries()
            if e.get("level") == "SEVERE" and not any(re.search(p, e.get("message", "")) for p in ignore)
        ]

    def assert_no_console_errors(self, ignore: tuple[str, ...] = ()) -> None:
        errors = self.console_errors(ignore)
        assert not errors, "browser console errors:\n" + "\n".join(
            f"  [{e.get('source')}] {e.get('message')}" for e in errors
        )

    # ---- network -----------------------------------------------------------------------------
    def requests(self) -> list[Request]:
        """Every request the page made so far, from the DevTools performance log."""
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            method, params = message.get("method"), message.get("params", {})
            if method == "Network.requestWillBeSent":
                request_id = params["requestId"]
                if request_id in self._requests:  # a redirect re-uses the id: keep the earlier hop too
                    hop = f"{request_id}:hop{len(self._order)}"
                    self._requests[hop] = self._requests[request_id]
                    self._order.insert(self._order.index(request_id), hop)
                else:
                    self._order.append(request_id)
                req = params["request"]
                self._requests[request_id] = Request(req["url"], req["method"], params.get("type", ""))
            elif method == "Network.webSocketCreated":
                self._order.append(params["requestId"])
                self._requests[params["requestId"]] = Request(params["url"], "GET", "WebSocket")
            elif method == "Network.loadingFailed" and params["requestId"] in self._requests:
                self._requests[params["requestId"]].error = params.get("errorText")
        return [self._requests[i] for i in self._order]

    def off_host_requests(self) -> list[Request]:
        return [r for r in self.requests() if not r.is_local]

    def assert_only_local_requests(self) -> None:
        off_host = self.off_host_requests()
        assert not off_host, "requests left 127.0.0.1:\n" + "\n".join(
            f"  {r.method} {r.url} ({r.resource_type}, {r.error or 'no error'})" for r in off_host
        )

    # ---- screenshots -------------------------------------------------------------------------
    def screenshot(
        self,
        name: str,
        width: int = 1280,
        height: int = 800,
        *,
        mobile: bool = False,
        directory: Path | None = None,
    ) -> Path:
        """Save a PNG of exactly width x height CSS px (device scale 1) and return its path."""
        directory = Path(directory or self.artifacts_dir)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / (name if name.endswith(".png") else f"{name}.png")
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )
        try:
            self.driver.execute_script("return new Promise(r => requestAnimationFrame(() => r()))")
            if not self.driver.save_screenshot(str(path)):
                raise RuntimeError(f"screenshot {path} failed")
        finally:
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        return path

    def save_debug_artifacts(self, stem: str) -> list[Path]:
        out: list[Path] = []
        with contextlib.suppress(Exception):
            out.append(self.screenshot(f"{stem}-failure"))
        with contextlib.suppress(Exception):
            path = self.artifacts_dir / f"{stem}-console.json"
            path.write_text(json.dumps(self.console_entries(), indent=1))
            out.append(path)
        with contextlib.suppress(Exception):
            path = self.artifacts_dir / f"{stem}-requests.json"
            path.write_text(json.dumps([r.__dict__ for r in self.requests()], indent=1))
            out.append(path)
        return out


def png_size(path: str | Path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    return struct.unpack(">II", head[16:24])


def start_chromium(
    install: ChromiumInstall,
    profile_dir: str,
    log_path: Path | None = None,
    flags: tuple[str, ...] = (*REQUIRED_FLAGS, *EXTRA_FLAGS),
    extra_flags: tuple[str, ...] = (),
) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = install.binary  # also stops Selenium Manager looking for a browser
    for flag in (*flags, *extra_flags, f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # performance log: network events only (page/timeline events are noise)
    options.add_experimental_option("perfLoggingPrefs", {"enableNetwork": True, "enablePage": False})
    options.add_experimental_option("prefs", dict(PREFS))
    options.page_load_strategy = "normal"
    # An explicit driver path means Selenium Manager is skipped entirely (selenium DriverFinder).
    service = Service(
        executable_path=install.driver, log_output=str(log_path) if log_path else subprocess.DEVNULL
    )
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[Any]:
    report = yield
    setattr(item, f"_browser_rep_{report.when}", report)
    return report


_STARTUPS = pytest.StashKey[list]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    startups = config.stash.get(_STARTUPS, [])
    if startups:
        terminalreporter.write_line(
            f"chromium: {len(startups)} launches, startup mean {sum(startups) / len(startups):.2f}s, "
            f"max {max(startups):.2f}s"
        )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives a headless Chromium (needs chromium + chromium-driver)"
    )
    config.addinivalue_line("markers", "live_app(app, env=None, **kw): which ASGI app live_server starts")
    config.addinivalue_line("markers", "browser_lenient: skip the post-test console-error / off-host checks")


@pytest.fixture
def browser(
    request: pytest.FixtureRequest,
    chromium_install: ChromiumInstall,
    browser_artifacts_dir: Path,
    selenium_offline_env: None,
) -> Iterator[Browser]:
    uses_server = "live_server" in request.fixturenames or request.node.get_closest_marker("live_app")
    base_url = request.getfixturevalue("live_server").url if uses_server else None
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.split("::", 1)[-1])[:120]
    profile_dir = tempfile.mkdtemp(prefix="chromium-profile-")
    started = time.monotonic()
    driver = start_chromium(chromium_install, profile_dir, browser_artifacts_dir / f"{stem}-chromedriver.log")
    wrapper = Browser(driver, browser_artifacts_dir, base_url, startup_s=time.monotonic() - started)
    request.config.stash.setdefault(_STARTUPS, []).append(wrapper.startup_s)
    try:
        yield wrapper
        call_report = getattr(request.node, "_browser_rep_call", None)
        if call_report is not None and call_report.failed:
            wrapper.save_debug_artifacts(stem)
        elif (
            call_report is not None
            and call_report.passed
            and not request.node.get_closest_marker("browser_lenient")
        ):
            problems = []
            for check in (wrapper.assert_no_console_errors, wrapper.assert_only_local_requests):
                try:
                    check()
                except AssertionError as error:
                    problems.append(str(error).split("\nassert ")[0])
            if problems:
                pytest.fail(
                    "after the test (mark it browser_lenient to skip):\n" + "\n".join(problems), pytrace=False
                )
    finally:
        with contextlib.suppress(Exception):
            driver.quit()
        shutil.rmtree(profile_dir, ignore_errors=True)
