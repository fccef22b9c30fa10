"""The layers stay apart: the call and the simulator run without Flask, the connectors
without Flask or the ivr package."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO


def imported_after(module: str) -> set[str]:
    """Top-level package names in sys.modules after importing ``module`` in a fresh
    interpreter (this one has long since imported everything)."""
    code = (f"import sys, {module}\n"
            "print('\\n'.join(sorted({name.split('.')[0] for name in sys.modules})))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,  # noqa: S603
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


@pytest.mark.parametrize("module", ["ivr.calls.machine", "ivr.simulator", "ivr.instance",
                                    "ivr.simulator.demo"])
def test_imports_without_flask(module: str) -> None:
    loaded = imported_after(module)
    assert "ivr" in loaded  # the import itself happened
    assert "flask" not in loaded


def test_connectors_import_neither_flask_nor_ivr() -> None:
    modules = sorted(".".join(path.relative_to(REPO).with_suffix("").parts)
                     for path in (REPO / "connectors").rglob("*.py"))
    modules = [m.removesuffix(".__init__") for m in modules]
    assert "connectors.amounts" in modules
    loaded = imported_after(", ".join(modules))
    assert "connectors" in loaded
    assert not {"flask", "ivr"} & loaded



def _sources() -> list[tuple[str, str]]:
    paths = [*(REPO / "ivr").rglob("*.py"), *(REPO / "connectors").rglob("*.py")]
    return [(str(p.relative_to(REPO)), p.read_text(encoding="utf-8")) for p in sorted(paths)
            if "migrations/versions" not in p.as_posix()]


# A module a newcomer can read in one sitting; past this, split it by job.
MAX_MODULE_LINES = 600


def test_modules_stay_small_enough_to_read() -> None:
    sources = _sources()
    assert len(sources) > 50
    too_long = {path: text.count("\n") for path, text in sources
                if text.count("\n") > MAX_MODULE_LINES}
    assert too_long == {}


def test_comments_cite_only_what_is_in_the_repository() -> None:
    # The first design sketch lives outside the repository; docs/ is the contract now.
    outside = re.compile(r"design (section|§)|design\.md|\.\./shared", re.IGNORECASE)
    cited = [path for path, text in _sources() if outside.search(text)]
    assert cited == []


def test_the_served_app_leaves_the_file_readers_unloaded() -> None:
    # pyarrow and numpy (about 50 MB in every gunicorn process) are for reading account
    # files, Alembic for migrations: neither is for serving calls.
    loaded = imported_after("ivr.web.app, ivr.ops, ivr.ops.views_prompts, ivr.cli.serve")
    assert "ivr" in loaded
    assert not {"pyarrow", "numpy", "alembic"} & loaded
