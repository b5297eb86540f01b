"""requirements.txt names every package the project imports, and only ranges that hold today."""

import ast
import importlib.metadata
import re
import sys

from helpers import REPO


def imported_modules() -> dict[str, str]:
    """Top-level modules imported by the project's Python files -> a file that imports each."""
    found: dict[str, str] = {}
    for path in sorted(REPO.glob("*.py")) + sorted(REPO.glob("tests/*.py")) + sorted(REPO.glob("benchmarks/*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(REPO)))
    return found


def requirement_names() -> set[str]:
    """The distributions requirements.txt asks for, normalised (PEP 503)."""
    names = set()
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(normalise(re.split(r"[<>=!~;\[ ]", line)[0]))
    return names


# Peers that benchmarks/speed.py times beside ours, installed by hand as its docstring says;
# nothing else may import them.
PEERS = {"openunmix": "benchmarks/speed.py", "demucs": "benchmarks/speed.py"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_a_requirement():
    local = {p.stem for p in [*REPO.glob("*.py"), *REPO.glob("tests/*.py"), *REPO.glob("benchmarks/*.py")]}
    providers = importlib.metadata.packages_distributions()  # module -> distributions that install it
    wanted = requirement_names()
    missing = []
    for module, where in imported_modules().items():
        if module in sys.stdlib_module_names or module in local or PEERS.get(module) == where:
            continue
        distributions = {normalise(d) for d in providers.get(module, [])}
        if not distributions & wanted:
            missing.append(f"{module} (imported by {where}; installed by {sorted(distributions) or 'nothing'})")
    assert not missing, "imported but not in requirements.txt: " + ", ".join(missing)


def test_the_check_sees_third_party_imports():
    """The scan finds what the project really imports (else the test above passes on nothing)."""
    modules = imported_modules()
    assert {"torch", "numpy", "scipy", "museval", "musdb", "soundfile", "soxr", "pytest"} <= set(modules)
    assert {"torch", "numpy", "scipy", "museval", "musdb", "soundfile", "soxr", "pytest"} <= requirement_names()


def test_installed_versions_are_within_the_ranges():
    """What pip installed satisfies requirements.txt (a stale environment fails here, not later)."""
    from packaging.requirements import Requirement

    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            installed = importlib.metadata.version(requirement.name)
            assert requirement.specifier.contains(installed, prereleases=True), (requirement, installed)
