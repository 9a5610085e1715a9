"""The Swagger page BentoML serves at `/`, rendered by a real headless Chromium (`make test-browser`)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.helpers import running_server

pytestmark = pytest.mark.browser


def rendered_dom(url: str) -> str:
    """The page's DOM after its scripts ran, as Chromium builds it."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "make test-browser installs chromium (apt-get install chromium)"
    out = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-dev-shm-usage", "--virtual-time-budget=15000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.parametrize("task,api", [("video", "/classify"), ("speech", "/transcribe")])
def test_swagger_page_lists_the_api(artifacts, tmp_path, task, api):  # noqa: F811
    with running_server(artifacts[task], tmp_path) as url:
        dom = rendered_dom(url + "/")
    # Swagger UI renders one block per operation, with its method and path
    assert "swagger-ui" in dom and "opblock" in dom, dom[:500]
    assert api in dom and "/readyz" in dom
