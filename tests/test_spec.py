"""The spec itself: what each flavor must offer, checked on the resolved flavors.

Each flavor's checks are plain functions registered for that flavor; a flavor is checked with its
own checks and every ancestor's, so a child (gpu, spark) must keep what its parent promises.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable

import pytest

from generator.load import load_spec
from generator.model import ResolvedFlavor, Spec
from generator.render import render_all
from generator.resolve import resolve_all, tool_nixpkgs, tool_python

REPO = Path(__file__).resolve().parent.parent
WEB_TOOLS = {"jupyter", "vscode", "vnc", "ungit", "netdata", "glances", "filebrowser", "tensorboard"}


def find_reference_tsv() -> Path:
    """nixpkgs-python-libs.tsv from the project's shared reference folder."""
    candidates = [
        Path(os.environ["MLWS_REFERENCE_DIR"]) if os.environ.get("MLWS_REFERENCE_DIR") else None,
        REPO.parent / "shared" / "reference",
    ]
    for folder in candidates:
        if folder is not None and (folder / "nixpkgs-python-libs.tsv").is_file():
            return folder / "nixpkgs-python-libs.tsv"
    pytest.fail("nixpkgs-python-libs.tsv not found: set MLWS_REFERENCE_DIR to the shared/reference folder")


def python_found_in_nixpkgs() -> set[str]:
    found = set()
    for line in find_reference_tsv().read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) >= 3 and columns[2] == "yes" and not columns[1].startswith("pkgs."):
            found.add(columns[1])
    return found


@pytest.fixture(scope="module")
def spec() -> Spec:
    loaded, errors = load_spec(REPO)
    assert errors == []
    return loaded


@pytest.fixture(scope="module")
def flavors(spec) -> dict[str, ResolvedFlavor]:
    resolved, errors = resolve_all(spec)
    assert errors == []
    return resolved


# --- per-flavor checks ------------------------------------------------------------------------

FlavorCheck = Callable[[Spec, ResolvedFlavor], None]
CHECKS: dict[str, list[FlavorCheck]] = {}


def flavor_check(name: str):
    def register(function: FlavorCheck) -> FlavorCheck:
        CHECKS.setdefault(name, []).append(function)
        return function
    return register


@flavor_check("minimal")
def has_every_web_tool_and_the_base_tools(spec, flavor):
    assert WEB_TOOLS | {"ssh", "git-tools", "nginx", "supervisor"} <= set(flavor.tools)


@flavor_check("minimal")
def has_core_scientific_python(spec, flavor):
    assert {"numpy", "scipy", "pandas", "scikit-learn", "matplotlib"} <= set(flavor.python)
    assert {"jupyterlab", "notebook", "tensorboard", "jupytext", "nbdime", "jupyterlab-git"} <= set(tool_python(spec, flavor))


@flavor_check("minimal")
def jupyter_is_the_one_health_tool_and_the_catch_all(spec, flavor):
    assert [t for t in flavor.tools if spec.tools[t].health] == ["jupyter"]
    assert spec.tools["jupyter"].route.prefix == "/"


@flavor_check("minimal")
def tools_listen_on_private_sockets_or_require_a_secret(spec, flavor):
    # Every web backend is reachable by the workspace user only: a unix socket in the 0700 runtime
    # folder, or (Glances, which cannot) a TCP port with a per-start secret the gateway presents.
    sockets = {t for t in flavor.tools if spec.tools[t].socket}
    assert {"jupyter", "vnc", "netdata", "ungit", "vscode", "filebrowser", "tensorboard"} <= sockets
    tcp = {t: spec.tools[t] for t in flavor.tools if spec.tools[t].port is not None}
    assert set(tcp) == {"glances"} and tcp["glances"].port == 8053
    assert all(tool.secret is not None and tool.secret.scheme for tool in tcp.values())
    assert spec.tools["filebrowser"].route.prefix == "/shared/filebrowser/"
    assert spec.tools["ungit"].route.strip_prefix is False


@flavor_check("minimal")
def manifest_on_disk_lists_exactly_the_flavors_tools(spec, flavor):
    data = json.loads((REPO / f"flavors/{flavor.name}.manifest.json").read_text())
    assert data["schema"] == 1 and data["flavor"] == flavor.name and data["image"] == flavor.image
    assert [t["name"] for t in data["tools"]] == list(flavor.tools)
    assert data["env"] == flavor.env


@flavor_check("minimal")
def builds_for_x86_64(spec, flavor):
    assert "x86_64-linux" in flavor.systems


@flavor_check("full")
def has_cpu_or_cuda_builds_of_the_frameworks(spec, flavor):
    python = set(flavor.python)
    assert python & {"torch", "torch-bin"}
    assert python & {"torchvision", "torchvision-bin"}
    assert python & {"tensorflow", "tensorflow-bin"}
    assert "jax" in python


@flavor_check("full")
def has_sixty_libraries_of_the_original_that_nixpkgs_has(spec, flavor):
    known = python_found_in_nixpkgs()
    missing = sorted(set(flavor.python) - known)
    assert missing == [], f"not found=yes in nixpkgs-python-libs.tsv: {missing}"
    assert len(flavor.python) >= 60
    assert {"xgboost", "lightgbm", "transformers", "spacy", "nltk", "opencv4", "numba", "statsmodels",
            "seaborn", "plotly"} <= set(flavor.python)


@flavor_check("full")
def is_the_main_image(spec, flavor):
    if flavor.name == "full":
        assert flavor.image == "ml-workspace"


@flavor_check("r")
def has_r_with_irkernel_and_rstudio(spec, flavor):
    # R comes wrapped with its packages (nix/r.nix), never as bare `R` beside loose rPackages.
    assert "IRkernel" in flavor.r
    assert not {"R", "rWrapper"} & set(tool_nixpkgs(spec, flavor))
    assert not any(name.startswith("rPackages.") for name in tool_nixpkgs(spec, flavor))
    assert "rstudio" in flavor.tools
    assert spec.tools["rstudio"].route.prefix == "/tools/rstudio/"
    assert "rstudio-server" in tool_nixpkgs(spec, flavor)


@flavor_check("spark")
def has_java_spark_and_pyspark(spec, flavor):
    assert {"jdk", "spark", "scala"} <= set(flavor.nixpkgs)
    assert "pyspark" in flavor.python
    if flavor.name == "spark":
        assert flavor.image == "ml-workspace-spark"


@flavor_check("gpu")
def has_cuda_and_the_nvidia_environment(spec, flavor):
    # nixpkgs' CUDA guide: cudaSupport, the default capability list (the one the CUDA cache
    # builds), unfree licences admitted by name.
    assert flavor.cuda is not None and flavor.cuda.enable and flavor.cuda.capabilities is None
    assert {"CUDA EULA", "cuDNN EULA"} <= set(flavor.unfree_licenses)
    assert flavor.env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert flavor.env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert flavor.env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert flavor.env["LD_LIBRARY_PATH"].split(":")[0] == "/run/opengl-driver/lib"
    # One torch: the source build, a CUDA build under cudaSupport; no wheels beside it.
    assert {"torch", "torchvision", "jax-cuda12-plugin"} <= set(flavor.python)
    assert not {"torch-bin", "torchvision-bin", "torchaudio-bin"} & set(flavor.python)
    # catboost is broken with cudaSupport in nixpkgs: left out.
    assert "catboost" not in flavor.python


def ancestors(spec: Spec, name: str) -> list[str]:
    chain = [name]
    while spec.flavors[chain[-1]].extends:
        chain.append(spec.flavors[chain[-1]].extends)
    return chain


def _all_checks() -> list[tuple[str, str, FlavorCheck]]:
    spec, _ = load_spec(REPO)
    cases = []
    for flavor in sorted(spec.flavors):
        for owner in ancestors(spec, flavor):
            for check in CHECKS.get(owner, []):
                cases.append((flavor, owner, check))
    return cases


@pytest.mark.parametrize(
    "flavor_name, owner, check", _all_checks(), ids=lambda v: v.__name__ if callable(v) else v
)
def test_flavor_passes_its_own_and_its_ancestors_checks(spec, flavors, flavor_name, owner, check):
    check(spec, flavors[flavor_name])


def test_every_flavor_and_every_check_owner_takes_part(spec):
    assert set(CHECKS) == set(spec.flavors) == {"minimal", "full", "r", "spark", "gpu"}
    pairs = {(f, o) for f, o, _ in _all_checks()}
    assert ("gpu", "full") in pairs and ("gpu", "minimal") in pairs and ("spark", "r") in pairs


# --- resolution -------------------------------------------------------------------------------


def test_gpu_has_everything_of_full_except_what_it_removes(flavors, spec):
    full, gpu = flavors["full"], flavors["gpu"]
    assert gpu.replaced_python == {}
    assert spec.flavors["gpu"].remove.python == ("catboost",)
    assert set(full.python) - {"catboost"} <= set(gpu.python)
    assert "catboost" not in gpu.python
    assert set(full.tools) <= set(gpu.tools) and set(full.nixpkgs) <= set(gpu.nixpkgs)
    assert full.env.items() <= gpu.env.items()


def test_spark_contains_everything_of_r(flavors):
    r, spark = flavors["r"], flavors["spark"]
    assert set(r.tools) <= set(spark.tools)
    assert set(r.python) <= set(spark.python)
    assert set(r.nixpkgs) <= set(spark.nixpkgs)
    assert set(r.r) <= set(spark.r)
    assert set(spark.systems) <= set(r.systems)


def test_r_packages_are_inherited_and_written_as_r_packages_functions(repo_copy):
    # A child's own R packages are added to its parent's, sorted, in the generated `rPackages`.
    spark = repo_copy / "spec/flavors/spark.toml"
    spark.write_text(spark.read_text().replace('python = ["pyspark"', 'r = ["sparklyr"]\npython = ["pyspark"'))
    known = repo_copy / "spec/known-attributes.toml"
    known.write_text(known.read_text() + '\n[r.sparklyr]\nfile = "pkgs/development/r-modules/default.nix"\nchecked = "reference: test"\n')
    spec, errors = load_spec(repo_copy)
    assert errors == []
    resolved, errors = resolve_all(spec)
    assert errors == []
    assert resolved["r"].r == ("IRkernel",) and resolved["spark"].r == ("IRkernel", "sparklyr")
    assert resolved["minimal"].r == () and resolved["gpu"].r == ()
    files = render_all(spec, resolved)
    assert "  rPackages = rp: [ rp.IRkernel rp.sparklyr ];\n" in files["flavors/spark.nix"]
    assert "  rPackages = rp: [ rp.IRkernel ];\n" in files["flavors/r.nix"]
    assert "  rPackages = rp: [ ];\n" in files["flavors/minimal.nix"]


def test_unfree_licences_are_admitted_by_name_only_where_needed(flavors):
    """Only gpu admits the CUDA licences; every flavor with Netdata admits its dashboard's licence
    (spec/tools/netdata.toml); nothing is admitted wholesale (no allowUnfree)."""
    cuda = {"CUDA EULA", "cuDNN EULA", "cuSPARSELt EULA", "cuTENSOR EULA"}
    for name, flavor in flavors.items():
        expected = ({"ncul1"} if "netdata" in flavor.tools else set()) | (cuda if name == "gpu" else set())
        assert set(flavor.unfree_licenses) == expected, name
        text = (REPO / f"flavors/{name}.nix").read_text()
        assert "allowUnfree" not in text
        assert re.search(r"unfreeLicenses = \[", text)
        assert ("cudaSupport = true;" in text) == (name == "gpu")
        assert "cudaCapabilities" not in text


def test_needs_are_closed_transitively(repo_copy):
    (repo_copy / "spec/tools/alpha.toml").write_text('description = "a"\nneeds = ["beta"]\n')
    (repo_copy / "spec/tools/beta.toml").write_text('description = "b"\nneeds = ["gamma"]\n')
    (repo_copy / "spec/tools/gamma.toml").write_text('description = "g"\nnixpkgs = ["tini"]\n')
    minimal = repo_copy / "spec/flavors/minimal.toml"
    text = minimal.read_text()
    start = text.index("tools = [")
    end = text.index("]", start) + 1
    minimal.write_text(text[:start] + 'tools = ["jupyter", "alpha"]' + text[end:])
    spec, errors = load_spec(repo_copy)
    assert errors == []
    resolved, errors = resolve_all(spec)
    assert errors == []
    assert resolved["minimal"].tools == ("alpha", "beta", "gamma", "jupyter", "nginx", "supervisor")
    # r adds rstudio on top of the closure it inherits
    assert resolved["r"].tools == ("alpha", "beta", "gamma", "jupyter", "nginx", "rstudio", "supervisor")


def test_every_attribute_the_spec_names_is_known(spec):
    for tool in spec.tools.values():
        assert set(tool.nixpkgs) <= spec.known.nixpkgs and set(tool.python) <= spec.known.python
    for flavor in spec.flavors.values():
        assert set(flavor.nixpkgs) <= spec.known.nixpkgs and set(flavor.python) <= spec.known.python
        assert set(flavor.r) <= spec.known.r
    # and the known python list holds nothing the reference says nixpkgs lacks
    lacking = set()
    for line in find_reference_tsv().read_text().splitlines():
        columns = line.split("\t")
        if len(columns) >= 3 and columns[2] == "no":
            lacking.add(columns[1])
    assert not lacking & spec.known.python


def test_provenance_doc_lists_every_base_entry_as_the_base_records_it():
    """docs/nixpkgs-provenance.md says, for every entry of the package base, which nixpkgs file it
    was checked against and how: the same file and `checked` value as the base."""
    import tomllib

    base = tomllib.loads((REPO / "spec/known-attributes.toml").read_text())
    doc = (REPO / "docs/nixpkgs-provenance.md").read_text()
    rows = {}
    for line in doc.splitlines():
        match = re.match(r"\| `([^`]+)`(?: \([^)]*\))? \| (.+?) \| (.+) \|$", line)
        if match:
            rows.setdefault(match.group(1), []).append((match.group(2), match.group(3)))
    for section in ("nixpkgs", "python", "r"):
        for name, entry in base[section].items():
            assert (entry["file"], entry["checked"].replace("|", "/")) in rows.get(name, []), f"{section}.{name}"
    # The entries the spec's GPU and Spark decisions rest on were read in nixpkgs' source.
    for section, name in (("python", "catboost"), ("python", "torch"), ("python", "torch-bin"), ("python", "tensorflow-bin"),
                          ("python", "pyspark"), ("nixpkgs", "netdata"), ("nixpkgs", "spark")):
        assert base[section][name]["checked"].startswith("source: "), f"{section}.{name}"
