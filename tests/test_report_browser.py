"""BROWSER TESTS: the HTML report opened in a real headless Chromium (Debian's ``chromium``).

For a tiny run and a tiny two-method comparison, a copy of each page gets a probe script at the top of its
<head> (and the page's Content-Security-Policy one ``script-src 'unsafe-inline'`` more, for the probe alone).
Chromium loads the copy from a file:// URL with ``--dump-dom``; the probe records window errors, console.error
calls and CSP violations (the page may load nothing from outside), then, once the page has loaded, checks every
<img>: loaded, a size, and pixels that vary once drawn to a canvas (data: URIs do not taint it), and writes its
verdict as JSON into <pre id="verdict">. Chromium's own log (stderr) must hold no console message either.

Without chromium on PATH (.ci/run installs it where apt-get can) every test here is skipped, saying so.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vlcl.app.cli import main

PROBE = """<script>
(function () {
  var problems = [];
  window.addEventListener("error", function (e) {
    var target = e.target && e.target !== window ? " (" + (e.target.tagName || "") + " " + String(e.target.src || e.target.href || "").slice(0, 60) + ")" : "";
    problems.push("error: " + (e.message || "resource failed") + target);
  }, true);
  document.addEventListener("securitypolicyviolation", function (e) { problems.push("csp: " + e.violatedDirective + " " + e.blockedURI); });
  var error = console.error;
  console.error = function () { problems.push("console.error: " + Array.prototype.join.call(arguments, " ")); return error.apply(console, arguments); };
  window.addEventListener("load", function () {
    document.querySelectorAll("details").forEach(function (d) { d.open = true; });
    var images = Array.prototype.map.call(document.images, function (img) {
      var r = {plot: img.getAttribute("data-plot"), data_uri: img.src.indexOf("data:image/png;base64,") === 0, complete: img.complete,
               width: img.naturalWidth, height: img.naturalHeight, colours: 0};
      try {
        var canvas = document.createElement("canvas");
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        var context = canvas.getContext("2d");
        context.drawImage(img, 0, 0);
        var px = context.getImageData(0, 0, canvas.width, canvas.height).data, seen = {};
        for (var i = 0; i < px.length && r.colours < 50; i += 4) {
          var key = px[i] + "," + px[i + 1] + "," + px[i + 2];
          if (!seen[key]) { seen[key] = true; r.colours += 1; }
        }
      } catch (e) { r.error = String(e); }
      return r;
    });
    var board = document.querySelector("#leaderboard table");
    var verdict = {problems: problems, images: images, title: document.title,
                   leaderboard_rows: board ? board.querySelectorAll("tbody tr").length : null,
                   leaderboard_text: board ? board.innerText : ""};
    var pre = document.createElement("pre");
    pre.id = "verdict";
    pre.textContent = JSON.stringify(verdict);
    document.body.appendChild(pre);
  });
})();
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("browser test skipped: chromium could not be found on PATH (not installed, or .ci/run could not install it with apt-get)")


def open_in_chromium(page: Path, tmp: Path) -> tuple[dict, str]:
    """The probe's verdict on ``page`` and Chromium's console log lines."""
    browser = chromium()
    text = page.read_text(encoding="utf-8")
    csp = "default-src 'none';"
    assert csp in text, "the page lost its Content-Security-Policy"
    probed = tmp / f"probed-{page.name}"
    probed.write_text(text.replace(csp, csp + " script-src 'unsafe-inline';", 1).replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    command = [
        browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
        f"--user-data-dir={tmp / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
        "--virtual-time-budget=5000", "--dump-dom", probed.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90)
    match = re.search(r'<pre id="verdict">(.*?)</pre>', done.stdout, re.S)
    assert match, f"no verdict from chromium (exit {done.returncode}): {done.stderr[-2000:]}"
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(html.unescape(match.group(1))), "\n".join(console)


def check(verdict: dict, console: str, plots: int) -> None:
    assert verdict["problems"] == [], verdict["problems"]
    assert console == "", console
    images = verdict["images"]
    assert len(images) == plots, [i["plot"] for i in images]
    for image in images:
        assert image["data_uri"] and image["complete"] and image.get("error") is None, image
        assert image["width"] > 100 and image["height"] > 80, image
        assert image["colours"] > 5, f"{image['plot']} is blank in the browser: {image}"


@pytest.fixture(scope="module")
def reports(tmp_path_factory, world_clip_dir):
    """A tiny two-method comparison (its own report.html) and the report of one of its runs."""
    from test_run import quick_args

    chromium()  # skip before running anything
    root = tmp_path_factory.mktemp("browser")
    out = root / "cmp"
    argv = ["compare", *quick_args(world_clip_dir, "train.max_steps_per_task=2"), "--methods", "zeroshot,finetune", "-o", str(out)]
    assert main(argv) == 0
    assert main(["report", str(out / "finetune"), "-o", str(root / "run.html")]) == 0
    return root


@pytest.mark.slow
def test_browser_shows_a_run_report(reports):
    verdict, console = open_in_chromium(reports / "run.html", reports)
    check(verdict, console, plots=6)  # heatmap, tasks, zero-shot, alignment, two confusion matrices
    assert verdict["title"].startswith("vlcl report: finetune") and verdict["leaderboard_rows"] is None


def test_browser_shows_a_comparison_report(reports):
    verdict, console = open_in_chromium(reports / "cmp" / "report.html", reports)
    check(verdict, console, plots=3 + 2 * 6)
    assert verdict["leaderboard_rows"] == 2
    assert "zeroshot" in verdict["leaderboard_text"] and "finetune lr=0.001" in verdict["leaderboard_text"]


def test_browser_probe_catches_what_it_should(reports, tmp_path):
    """The probe itself, so that a pass means something: an image that does not decode, an image from the network
    (blocked by the page's policy) and a console error all fail the check."""
    page = (reports / "run.html").read_text(encoding="utf-8")
    page = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]{200}", "data:image/png;base64,AAAA", page, count=1)
    page = page.replace("</body>", '<img src="https://example.invalid/x.png"><script>console.error("boom")</script></body>')
    broken = tmp_path / "broken.html"
    broken.write_text(page, encoding="utf-8")
    verdict, console = open_in_chromium(broken, tmp_path)
    assert [i for i in verdict["images"] if i["plot"] and i["width"] == 0]  # the broken plot
    assert any(p.startswith("csp: img-src https://example.invalid") for p in verdict["problems"])
    assert "console.error: boom" in verdict["problems"] and '"boom"' in console
    with pytest.raises(AssertionError):
        check(verdict, console, plots=6)
