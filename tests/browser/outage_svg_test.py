#!/usr/bin/env python3
"""Opens the outage lab's timeline SVGs in headless Chromium and checks that they render.

It runs the outage_replay example into a temporary folder (or takes --svg files), then for each
SVG it writes:

- opens it as a file:// page and checks the root is an <svg> with a title naming the scenario and
  the configuration, a summary line, both axes' labels and ticks, the legend's items, the outcome
  areas and the p99 line, and a lane per breaker;
- checks the layout in the browser's own geometry (getBBox): every text lies inside the picture,
  the title, the summary, the plot, the breaker lanes and the legend do not overlap, and no two
  legend items overlap;
- takes a screenshot and decodes it (a small PNG reader, no imaging library): the picture is not
  blank, and the colours of the succeeded area, the breaker's open band and the p99 line are on it;
- the browser logged no error (a malformed SVG shows as an XML parse error page, and logs one).

Screenshots go to --out (and to --screenshots DIR when given, e.g. docs/, where the first one is
saved as outage-lab.png). Every wait has a timeout.

Usage: outage_svg_test.py --binary build/ci-gcc/examples/outage_replay
           [--svg FILE ...] [--chromium chromium] [--chromedriver chromedriver] [--out DIR]
           [--screenshots DIR]
Run it with a Python that has Selenium (Debian: /usr/bin/python3 and python3-selenium).
"""
import argparse
import glob
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

WAIT = 20  # seconds


def check(condition, message):
    if not condition:
        raise AssertionError(message)
    print("ok: " + message, flush=True)


def decode_png(data):
    """(width, height, rows of (r, g, b) tuples) of an 8-bit RGB/RGBA non-interlaced PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise AssertionError("the screenshot is not a PNG")
    at, idat, header = 8, b"", None
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in (2, 6) or interlace != 0:
        raise AssertionError("unexpected PNG format %r" % (header,))
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, previous, at = [], bytearray(stride), 0
    for _ in range(height):
        kind = raw[at]
        line = bytearray(raw[at + 1:at + 1 + stride])
        at += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            upper_left = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
            elif kind == 4:
                p = left + up - upper_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upper_left)
                predictor = left if pa <= pb and pa <= pc else (up if pb <= pc else upper_left)
                line[i] = (line[i] + predictor) & 0xFF
        rows.append([tuple(line[i:i + 3]) for i in range(0, stride, channels)])
        previous = line
    return width, height, rows


def near(colour, target, tolerance=40):
    return all(abs(a - b) <= tolerance for a, b in zip(colour, target))


def hex_colour(text):
    return tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))


def blend(colour, alpha, background):
    a, b = hex_colour(colour), hex_colour(background)
    return "#" + "".join("%02x" % round(alpha * x + (1 - alpha) * y) for x, y in zip(a, b))


GEOMETRY = """
const svg = document.documentElement;
const box = e => { const b = e.getBBox(); const m = e.getCTM();
  // The box in the picture's coordinates (rotated axis labels included).
  const pts = [[b.x, b.y], [b.x + b.width, b.y], [b.x, b.y + b.height],
               [b.x + b.width, b.y + b.height]].map(([x, y]) => {
      const p = svg.createSVGPoint(); p.x = x; p.y = y; return p.matrixTransform(m); });
  const xs = pts.map(p => p.x), ys = pts.map(p => p.y);
  return {x: Math.min(...xs), y: Math.min(...ys), right: Math.max(...xs), bottom: Math.max(...ys),
          text: (e.textContent || '').trim().slice(0, 80), cls: e.getAttribute('class') || ''}; };
const all = sel => Array.from(document.querySelectorAll(sel)).map(box);
const vb = svg.viewBox.baseVal;
return {root: svg.tagName, width: vb.width, height: vb.height,
        title: (document.querySelector('svg > title') || {}).textContent || '',
        texts: all('text'), legend: all('.legend-item'), areas: all('path.area'),
        p99: all('path.p99'), lanes: all('.breakers rect.state'),
        lane_labels: all('.breaker-label'), heading: all('text.title'),
        summary: all('text.summary'), plot: all('.plot-backdrop rect'),
        ticks_x: all('.tick.x').length, ticks_y: all('.tick.y').length,
        ticks_y2: all('.tick.y2').length,
        classes: Array.from(document.querySelectorAll('[class]')).map(e => e.getAttribute('class'))};
"""


def overlaps(a, b, slack=0.5):
    return (a["x"] < b["right"] - slack and b["x"] < a["right"] - slack and
            a["y"] < b["bottom"] - slack and b["y"] < a["bottom"] - slack)


def check_svg(driver, path, shots, first):
    name = os.path.basename(path)
    driver.get("file://" + os.path.abspath(path))
    g = driver.execute_script(GEOMETRY)
    check(g["root"] == "svg", "%s: the document's root is <svg> (not an XML error page: %r)"
          % (name, g["root"]))
    check(" \u2014 " in g["title"], "%s: the title names scenario and configuration (%r)"
          % (name, g["title"]))
    check(g["heading"] and g["heading"][0]["text"] == g["title"],
          "%s: the visible title is the document's title" % name)
    check(g["summary"] and g["summary"][0]["text"].startswith("success "),
          "%s: the summary line is shown (%r)" % (name, g["summary"][0]["text"] if g["summary"] else None))
    texts = [t["text"] for t in g["texts"]]
    for label in ("calls per second", "caller p99 latency (", "time since the scenario began"):
        check(any(t.startswith(label) for t in texts), "%s: axis label %r" % (name, label))
    check(g["ticks_x"] >= 3 and g["ticks_y"] >= 3 and g["ticks_y2"] >= 3,
          "%s: ticks on the time axis (%d), the calls axis (%d) and the p99 axis (%d)"
          % (name, g["ticks_x"], g["ticks_y"], g["ticks_y2"]))
    legend = [t["text"] for t in g["legend"]]
    for item in ("succeeded", "failed: transient", "rejected by a policy", "caller p99 (right axis)"):
        check(item in legend, "%s: legend has %r" % (name, item))
    check(any(a["cls"] == "area succeeded" and a["right"] - a["x"] > 100 for a in g["areas"]),
          "%s: the succeeded area spans the plot" % name)
    check(g["p99"] and g["p99"][0]["right"] - g["p99"][0]["x"] > 100, "%s: the p99 line is drawn" % name)

    # Layout: everything inside the picture, and the blocks do not overlap.
    for t in g["texts"]:
        check_quiet(t["x"] >= -0.5 and t["right"] <= g["width"] + 0.5 and t["y"] >= -0.5
                    and t["bottom"] <= g["height"] + 0.5,
                    "%s: text %r lies inside the %gx%g picture (%r)"
                    % (name, t["text"], g["width"], g["height"], t))
    print("ok: %s: all %d texts lie inside the picture" % (name, len(g["texts"])), flush=True)
    plot = g["plot"][0]
    blocks = [("title", g["heading"][0]), ("summary", g["summary"][0]), ("plot", plot)]
    blocks += [("legend %r" % l["text"], l) for l in g["legend"]]
    blocks += [("lane %r" % l["text"], l) for l in g["lane_labels"]]
    for i, (na, a) in enumerate(blocks):
        for nb, b in blocks[i + 1:]:
            check_quiet(not overlaps(a, b), "%s: %s and %s do not overlap (%r, %r)" % (name, na, nb, a, b))
    print("ok: %s: title, summary, plot, lanes and %d legend items do not overlap"
          % (name, len(g["legend"])), flush=True)

    # The picture itself: not blank, and the key colours are on it.
    driver.set_window_size(int(g["width"]) + 40, int(g["height"]) + 160)
    png = driver.get_screenshot_as_png()
    width, height, rows = decode_png(png)
    pixels = [p for row in rows for p in row]
    white = sum(1 for p in pixels if p[0] > 245 and p[1] > 245 and p[2] > 245)
    check(white < 0.9 * len(pixels), "%s: the screenshot is not blank (%d of %d pixels white)"
          % (name, white, len(pixels)))
    # The areas are drawn at 85% opacity over the plot's #f8f9fa.
    colours = {"succeeded area": blend("#37b24d", 0.85, "#f8f9fa"), "p99 line": "#1c3f95"}
    if g["lanes"]:
        colours["breaker lane"] = "#b2f2bb"
    for label, colour in colours.items():
        target = hex_colour(colour)
        count = sum(1 for p in pixels if near(p, target, 24))
        check(count > 30, "%s: the %s's colour %s is on the screenshot (%d pixels)"
              % (name, label, colour, count))
    for folder in shots:
        os.makedirs(folder, exist_ok=True)
        out = os.path.join(folder, os.path.splitext(name)[0] + ".png")
        with open(out, "wb") as f:
            f.write(png)
        print("screenshot: %s (%dx%d, %d bytes)" % (out, width, height, len(png)), flush=True)


def check_quiet(condition, message):
    if not condition:
        raise AssertionError(message)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", help="the outage_replay example (run into a temp folder)")
    parser.add_argument("--svg", nargs="*", default=[], help="SVG files to check")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--chromedriver", default=shutil.which("chromedriver") or "chromedriver")
    parser.add_argument("--out", default=".", help="where the screenshots go")
    parser.add_argument("--screenshots", help="a second folder for the screenshots (docs/)")
    args = parser.parse_args()

    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="bulwark-outage-svg-")
    profile = tempfile.mkdtemp(prefix="bulwark-outage-svg-profile-")
    driver = None
    try:
        svgs = list(args.svg)
        if args.binary:
            run = subprocess.run([args.binary, work], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, timeout=120)
            check(run.returncode == 0, "the example ran (exit %d)" % run.returncode)
            svgs += sorted(glob.glob(os.path.join(work, "*.svg")))
        check(len(svgs) >= 1, "there are SVGs to check: %r" % [os.path.basename(s) for s in svgs])

        options = webdriver.ChromeOptions()
        options.binary_location = args.chromium
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1100,800", "--disable-gpu", "--no-first-run",
                     "--hide-scrollbars", "--force-device-scale-factor=1",
                     "--user-data-dir=" + profile):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(executable_path=args.chromedriver),
                                  options=options)
        driver.set_page_load_timeout(WAIT)
        driver.set_script_timeout(WAIT)
        shots = [args.out]
        for i, svg in enumerate(svgs):
            check_svg(driver, svg, shots, i == 0)
            if i == 0 and args.screenshots:
                os.makedirs(args.screenshots, exist_ok=True)
                shutil.copyfile(os.path.join(args.out, os.path.splitext(os.path.basename(svg))[0]
                                             + ".png"),
                                os.path.join(args.screenshots, "outage-lab.png"))
                print("screenshot: %s" % os.path.join(args.screenshots, "outage-lab.png"))
        logs = driver.get_log("browser")
        errors = [e["message"] for e in logs if e.get("level") == "SEVERE"]
        check(not errors, "no error in the browser's log (%d entries): %r" % (len(logs), errors))
    except AssertionError as e:
        print("FAILED: %s" % e, flush=True)
        return 1
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    print("browser test passed in %.1f s" % (time.monotonic() - started), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
