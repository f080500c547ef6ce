"""No code path unpickles: weights, caches and results are safetensors, npz without objects,
JSON or CSV, so opening a file somebody sent cannot run code."""
import ast
from helpers import ROOT

PACKAGES = ("weights_convert", "reproduce", "bench")
PICKLE_MODULES = ("pickle", "cPickle", "_pickle", "dill", "joblib", "shelve")


def violations(source: str, where: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            if any(n.split(".")[0] in PICKLE_MODULES for n in names):
                found.append(f"{where}:{node.lineno} imports a pickle module")
        elif isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func in ("torch.load", "torch.jit.load"):
                found.append(f"{where}:{node.lineno} calls {func}")
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    found.append(f"{where}:{node.lineno} passes allow_pickle")
    return found


def test_no_unpickling_anywhere():
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if not p.name.endswith("_pb2.py")]
    assert len(files) > 40
    found = [v for p in files for v in violations(p.read_text(), str(p.relative_to(ROOT)))]
    assert found == []


def test_the_scan_sees_what_it_forbids():
    source = "import pickle\nfrom joblib import load\ntorch.load('x')\nnp.load('y', allow_pickle=True)\nnp.load('z')\n"
    assert violations(source, "f.py") == ["f.py:1 imports a pickle module", "f.py:2 imports a pickle module",
                                          "f.py:3 calls torch.load", "f.py:4 passes allow_pickle"]
