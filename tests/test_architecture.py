"""The structure the code promises its readers: no import cycle (imports inside functions
included), dependencies pointing one way, commands at the top, short library functions."""
import ast
from pathlib import Path

from weights_convert.files import source_graph
from weights_convert.files.source_graph import imported_modules, project_modules

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("weights_convert", "reproduce")
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    return project_modules(ROOT, PACKAGES)


def _imported(module: str, node, mods: dict[str, Path]) -> list[str]:
    return imported_modules(module, node, mods)


def import_graph() -> dict[str, set[str]]:
    return source_graph.import_graph(ROOT, PACKAGES)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_sees_function_local_imports(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    tree = ast.parse("def f():\n    from weights_convert.graph import CaffeNet\n")
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    assert _imported("weights_convert.formats.wire", node, _modules()) == ["weights_convert.graph",
                                                                           "weights_convert.graph"]


def _imports_of(prefixes: tuple[str, ...], graph) -> dict[str, set[str]]:
    return {m: deps for m, deps in graph.items() if m.startswith(prefixes)}


def _violations(lower: tuple[str, ...], higher: tuple[str, ...], graph) -> list[str]:
    return sorted(f"{m} -> {d}" for m, deps in _imports_of(lower, graph).items() for d in deps
                  if d.startswith(higher))


def test_dependencies_point_one_way():
    graph = import_graph()
    # formats below layers below the graph; the model below loading; nothing below reaches up.
    assert _violations(("weights_convert.formats",), ("weights_convert.layers", "weights_convert.graph",
                                                      "weights_convert.oslsm", "weights_convert.convert",
                                                      "weights_convert.train"), graph) == []
    assert _violations(("weights_convert.layers",), ("weights_convert.graph", "weights_convert.oslsm",
                                                     "weights_convert.convert", "weights_convert.train"), graph) == []
    assert _violations(("weights_convert.oslsm",), ("weights_convert.graph", "weights_convert.convert",
                                                    "weights_convert.train"), graph) == []
    assert _violations(("weights_convert",), ("reproduce",), graph) == []
    # the run-time environment and file helpers sit below everything else in the toolkit
    toolkit = tuple(f"weights_convert.{p}" for p in ("formats", "layers", "graph", "oslsm", "train", "convert",
                                                     "export", "artifacts", "forward_pass", "netspec", "checks",
                                                     "commands", "cli"))
    assert _violations(("weights_convert.runtime", "weights_convert.files"), toolkit, graph) == []


def test_the_toolkit_root_holds_entry_points_and_the_net_alone():
    """Utilities live in sub-packages named for what they are for (runtime, files, checks)."""
    files = _modules()
    loose = sorted(m for m in files if m.startswith("weights_convert.") and m.count(".") == 1
                   and files[m].name != "__init__.py")
    assert loose == ["weights_convert.__main__", "weights_convert.artifacts", "weights_convert.cli",
                     "weights_convert.cli_frame", "weights_convert.convert", "weights_convert.errors",
                     "weights_convert.export", "weights_convert.forward_pass", "weights_convert.graph",
                     "weights_convert.netspec"]


def test_commands_are_thin():
    """A command parses, checks and calls a library function: its work lives below it."""
    files = _modules()
    long = sorted(f"{m}: {n} lines" for m, path in files.items() if ".commands." in m
                  and (n := len(path.read_text().splitlines())) > 120)
    assert long == []


# reproduce/ in the order of the data's way through it: a package imports only from those before it.
REPRODUCE_LAYERS = ("data", "evaluation", "training", "presentation", "workflows", "commands")


def test_reproduce_packages_import_only_packages_below_them():
    graph = import_graph()
    layer = {name: i for i, name in enumerate(REPRODUCE_LAYERS)}

    def package(module: str):
        parts = module.split(".")
        return parts[1] if len(parts) > 2 and parts[0] == "reproduce" and parts[1] in layer else None

    upward = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps
                    if package(m) and package(d) and layer[package(d)] > layer[package(m)])
    assert upward == []
    files = _modules()
    loose = sorted(m for m in graph if m.startswith("reproduce.") and m.count(".") == 1
                   and files[m].name != "__init__.py")
    assert loose == ["reproduce.__main__", "reproduce.cli", "reproduce.cli_arguments", "reproduce.errors",
                     "reproduce.numeric_options"]
    assert set(REPRODUCE_LAYERS) == {m.split(".")[1] for m in graph if m.count(".") >= 2 and m.startswith("reproduce.")}


def test_each_package_says_its_job():
    for name in REPRODUCE_LAYERS[:-1]:
        doc = ast.get_docstring(ast.parse((ROOT / "reproduce" / name / "__init__.py").read_text()))
        assert doc and len(doc.splitlines()) <= 2, name


def test_the_converter_knows_no_data_set():
    graph = import_graph()
    pascal = [m for m in graph if m.startswith("weights_convert")
              and any(part.startswith(("pascal", "fold_", "voc")) or part.endswith("_folds") for part in m.split("."))]
    assert pascal == []
    assert _violations(("weights_convert",), ("reproduce",), graph) == []


def test_commands_end_the_import_chains():
    graph = import_graph()
    commands = ("weights_convert.commands.", "reproduce.commands.")
    assert sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps if d.startswith(commands)) == []


def test_the_model_file_holds_the_architecture_only():
    graph = import_graph()
    # Its computing parts (the constant frame, shared with the graph's Convolution, and Caffe's
    # upsampling sums) are modules of their own.
    assert graph["weights_convert.oslsm.model"] <= {"weights_convert.oslsm.hashing", "weights_convert.oslsm.layout",
                                                    "weights_convert.oslsm.upsample", "weights_convert.layers.frame",
                                                    "weights_convert.layers.im2col"}


def test_feature_provenance_reads_sources_without_importing_them():
    graph = import_graph()
    assert graph["reproduce.evaluation.provenance"] <= {"weights_convert.files.provenance", "weights_convert.files.source_graph"}


def test_library_functions_are_short():
    long = []
    for module, path in _modules().items():
        if ".proto" in module:
            continue  # the protobuf schema is generated
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name}: {lines} lines")
    assert long == []
