"""Regenerate docs/report.png, the picture of ``batchrun report`` in the README.

    python docs/make_screenshot.py [--output docs/report.png] [--keep DIR]

Runs the sample job (jobs/sample.toml) over the sample inputs (the texts of
sample_inputs/sample.jsonl and the media rows of sample_inputs/media.jsonl, five times over,
named by absolute path under ``--media-root``) against the emulator shipped with batchrun,
with answers taking 0.4 to 3 s and one request in fifteen answered 503 (retried), then writes
the run's report and has headless Chromium take a picture of it. Nothing leaves this machine.

Needs Debian's ``chromium`` (``apt-get install chromium``) and Pillow (the ``test`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops

from batchrun.emulator.server import EmulatorConfig, EmulatorServer

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_inputs"
ROUNDS = 5
WIDTH = 1280
# The emulator's conditions: slow enough that the charts over time have a shape, and a few
# 503s so that the report has retries to show.
EMULATOR = EmulatorConfig(latency_ms=400, jitter_ms=2600, fail_503=1 / 15, seed=16)


def _absolute(value: Any) -> Any:
    """Media references (``media/…``) as absolute paths under sample_inputs."""
    if isinstance(value, str) and value.startswith("media/"):
        return str(SAMPLES / value)
    if isinstance(value, list):
        return [_absolute(item) for item in value]
    if isinstance(value, dict):
        return {key: _absolute(item) for key, item in value.items()}
    return value


def write_manifest(path: Path) -> Path:
    """The sample rows, ``ROUNDS`` times over with ids made unique; batch lines cap their
    answer at 40 tokens (so some finish for ``length``)."""
    records = [json.loads(line) for name in ("sample.jsonl", "media.jsonl")
               for line in (SAMPLES / name).read_text().splitlines() if line.strip()]
    with open(path, "w", encoding="utf-8") as out:
        for round_no in range(1, ROUNDS + 1):
            for record in records:
                copy = _absolute(record)
                key = "custom_id" if "custom_id" in copy else "id"
                copy[key] = f"{copy[key]}-{round_no}"
                if "body" in copy:
                    copy["body"]["max_tokens"] = 40
                out.write(json.dumps(copy) + "\n")
    return path


def batchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BATCHRUN_API_KEY": "sk-screenshot-not-a-real-key"}
    return subprocess.run([sys.executable, "-m", "batchrun", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def screenshot(html: Path, png: Path, profile: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("make_screenshot: Debian's chromium is needed (apt-get install chromium)")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--no-first-run", "--disable-background-networking", "--disable-sync",
                    "--disable-component-update", f"--user-data-dir={profile}",
                    f"--window-size={WIDTH},4000", f"--screenshot={png}", html.as_uri()],
                   capture_output=True, timeout=180, check=True)


def crop_and_shrink(raw: Path, output: Path) -> None:
    """Cut the blank page below the report; a 256-colour palette keeps the file small."""
    image = Image.open(raw).convert("RGB")
    blank = Image.new("RGB", image.size, (255, 255, 255))
    box = ImageChops.difference(image, blank).getbbox()
    if box is not None:
        image = image.crop((0, 0, image.width, min(image.height, box[3] + 24)))
    image.quantize(colors=256, dither=Image.Dither.NONE).save(output, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "report.png")
    parser.add_argument("--keep", type=Path, help="leave the run and report in this folder")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="batchrun-report-")) if options.keep is None \
        else options.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        manifest = write_manifest(work / "sample-inputs.jsonl")
        with EmulatorServer(EMULATOR) as emulator:
            done = batchrun("run", str(manifest), "--job", str(ROOT / "jobs" / "sample.toml"),
                            "--out", "runs/sample", "--endpoint", emulator.base_url,
                            "--media-root", str(SAMPLES), "--yes", "--quiet", cwd=work)
        if done.returncode not in (0, 1):  # 1: some rows failed, which a report shows
            sys.exit(f"make_screenshot: the run failed ({done.returncode}):\n{done.stderr}")
        report = batchrun("report", "runs/sample", "--output", "report.html", cwd=work)
        if report.returncode != 0:
            sys.exit(f"make_screenshot: the report failed:\n{report.stderr}")
        screenshot(work / "report.html", work / "raw.png", work / "profile")
        crop_and_shrink(work / "raw.png", options.output)
        print(f"wrote {options.output}")
    finally:
        if options.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
