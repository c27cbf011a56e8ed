"""The package as a wheel installs it (pip install ., a Docker image): templates and jobs travel inside."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_carries_templates_jobs_and_samples_and_runs_from_them(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", str(ROOT), "-w", str(tmp_path)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    # Every data directory is declared: setuptools warns about importable directories it would leave out.
    assert "would be ignored" not in built.stdout + built.stderr, built.stdout + built.stderr
    [wheel] = tmp_path.glob("newsletter-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "newsletter/_templates/email/digest.mjml.j2",
        "newsletter/_templates/web/admin/subscribers.html.j2",
        "newsletter/_jobs/weekly-digest.toml",
        "newsletter/samples/arxiv_sample.xml",
        "newsletter/web/static/site.css",
    ):
        assert expected in names, expected
    target = tmp_path / "installed"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")} | {
        "PYTHONPATH": str(target)
    }
    probe = subprocess.run(
        [sys.executable, "-c", "import newsletter, newsletter.render as r, newsletter.settings as s; "
         "print(newsletter.__file__); print(r.templates_dir()); print(s.default_jobs_dir())"],
        cwd=work, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    module, templates, jobs = probe.stdout.split()
    assert module.startswith(str(target))
    assert templates == str(target / "newsletter" / "_templates") and jobs == str(
        target / "newsletter" / "_jobs"
    )
    demo = subprocess.run(
        [sys.executable, "-m", "newsletter", "demo", "--offline"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    assert "3 sent" in demo.stdout
    listed = subprocess.run(
        [sys.executable, "-m", "newsletter", "jobs", "list"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert "weekly-digest" in listed.stdout and "0 7 * * mon" in listed.stdout


def test_systemd_unit_is_valid(tmp_path):
    import shutil

    import pytest

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    unit = (ROOT / "deploy" / "newsletter.service").read_text()
    program = Path(sys.executable).with_name("newsletter")
    (tmp_path / "newsletter.service").write_text(
        unit.replace("/srv/newsletter/.venv/bin/newsletter", str(program))
    )
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / "newsletter.service")], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
