"""Extensions Index readiness: every check of the Index's CI that can run offline (Docs/ExtensionsIndex.md).

Ported from Slicer/ExtensionsIndex @07f1d1b (Apache-2.0/BSD-style Slicer licence), ``scripts/
check_description_files.py``: ``check_json_file_format`` (line 97), ``check_json_schema`` (116, against the
schema the entry names, kept in ``data/``: Slicer/Slicer ``Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json``
@cf2a70e633), ``check_category`` (169, ``ACCEPTED_EXTENSION_CATEGORIES`` at 802), ``check_scm_url_syntax`` (176),
``check_extension_name`` (189), ``check_git_repository_name`` (206), ``check_cmakelists_content`` (369: the
project name and its two URL patterns; that the URLs serve images needs the published repository),
``check_repository_size`` (463, 100 MB) and ``check_license_file`` (486). The repository topic, the clone and
the image downloads need GitHub and are listed in Docs/ExtensionsIndex.md as steps for the maintainers.
"""

import json
import re
import subprocess
import urllib.parse as urlparse
from pathlib import Path

import pytest

from medssl_slicer_helpers import REPO

HERE = Path(__file__).resolve().parent
ENTRY = REPO / "MedSSL.json"
EXTENSION_NAME = ENTRY.stem
CATEGORIES_IN_INDEX = {"Segmentation", "Active Learning", "Analysis", "Quantification", "Utilities"}  # of 802 ff.
LICENSE_FILE_NAMES = ["LICENSE", "LICENCE", "License.txt", "license.txt", "LICENSE.txt", "COPYING", "COPYING.txt"]
ALLOWED_PREFIXES = ["Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_"]


def metadata() -> dict:
    return json.loads(ENTRY.read_text(encoding="utf-8"))


def test_json_file_format_and_schema():
    content = ENTRY.read_bytes()
    assert b"\r\n" not in content and b"\r" not in content, "LF-only line endings"
    jsonschema = pytest.importorskip("jsonschema")  # the dev extra installs it
    entry = metadata()
    schemaName = entry["$schema"].split("#")[0].rsplit("/", 1)[1]
    schema = json.loads((HERE / "data" / schemaName).read_text(encoding="utf-8"))
    jsonschema.validate(entry, schema)
    broken = {**entry, "tier": 7, "homepage": "x"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_category_scm_url_and_names():
    entry = metadata()
    assert entry["category"] in CATEGORIES_IN_INDEX
    assert "://" in entry["scm_url"] and urlparse.urlsplit(entry["scm_url"]).scheme in ("git", "https")
    assert not EXTENSION_NAME.lower().startswith("slicer"), "the extension name must not start with Slicer"
    url = entry["scm_url"].strip().strip("/")
    repoName = Path(urlparse.urlsplit(url).path.split("/")[-1]).stem
    assert any(repoName.startswith(prefix) for prefix in ALLOWED_PREFIXES), repoName
    assert urlparse.urlsplit(url).netloc == "github.com"  # so the topic check applies (Docs/ExtensionsIndex.md)


def test_cmakelists_content_as_the_index_reads_it():
    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8", errors="ignore")
    matches = re.findall(r'project\s*\(\s*([^\s\)\n\r]+)', cmake, re.IGNORECASE | re.MULTILINE)
    assert matches and matches[0].strip().strip('"').strip("'") == EXTENSION_NAME
    icons = re.findall(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)', cmake, re.IGNORECASE | re.MULTILINE)
    shots = re.findall(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', cmake, re.IGNORECASE | re.MULTILINE)
    assert icons and shots
    prefix = f"https://raw.githubusercontent.com/{urlparse.urlsplit(metadata()['scm_url']).path.strip('/')}/" \
             f"{metadata()['scm_revision']}/"
    for url in [icons[0].strip(), *shots[0].split()]:
        assert url.startswith(prefix), f"{url} is not served from the repository and revision of MedSSL.json"
        local = REPO / url[len(prefix):]
        assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{local} must be a PNG in this repository"
    depends = re.search(r'set\s*\(EXTENSION_DEPENDS\s+"([^"]*)"\s*\)', cmake).group(1).split()
    assert metadata()["build_dependencies"] == depends == ["PyTorch"]  # PyTorch.json is in the Index @07f1d1b


def test_repository_size_and_licence_file():
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    files = [REPO / name for name in out.stdout.decode().split("\0") if name]
    size = sum(f.stat().st_size for f in files if f.is_file())
    assert size < 100 * 1024 * 1024, f"{size / 2**20:.1f} MB checked out; the Index allows 100 MB"
    assert any((REPO / name).is_file() for name in LICENSE_FILE_NAMES)


def test_the_checklist_names_every_check_and_the_maintainers_steps():
    text = (REPO / "Docs" / "ExtensionsIndex.md").read_text(encoding="utf-8")
    for check in ("check_json_file_format", "check_json_schema", "check_category", "check_scm_url_syntax",
                  "check_extension_name", "check_git_repository_name", "check_git_repository_topics",
                  "check_clone_repository", "check_cmakelists_content", "check_repository_size",
                  "check_license_file", "check_dependencies"):
        assert f"`{check}`" in text, check
    assert "3d-slicer-extension" in text and metadata()["scm_url"] in text
