"""``atlas env init``: find the agents in a project by reading its code (``ast``; nothing is imported or run) and
write a commented atlas.yaml that names them, says how to wrap each in one line, and points ``agent:`` at the
likeliest one for ``atlas run``.

Found: the graphs a LangGraph application's ``langgraph.json`` names (``"graphs": {"agent":
"./src/react_agent/graph.py:graph"}``, the LangGraph CLI's format); LangGraph builders (``StateGraph(...)``), compiled
graphs (``.compile()``), ``create_react_agent`` and ``create_agent`` results; OpenAI Agents SDK ``Agent(...)``
instances; classes with a ``run`` method (candidates for ``@atlas_agent``); MCP servers in JSON configs
(``mcpServers``) and ``MultiServerMCPClient({...})`` calls.

A graph ``langgraph.json`` names comes first, under its name there (``agent.name``), as the module the project's own
code imports it as: ``./src/react_agent/graph.py`` becomes ``react_agent.graph`` (a ``src/`` layout drops ``src``;
``atlas run`` puts the project root and its ``src/`` folder on the import path). An entry that cannot work (no such
file, no such module-level name, not JSON) stops the command with one line saying what to fix.
"""

from __future__ import annotations

import ast
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import typer

from ..errors import AtlasError
from ..redact import default_redactor
from ._common import echo_json

SKIP_DIRS = frozenset({
    ".git", ".hg", ".svn", ".venv", "venv", "env", ".env", "node_modules", "__pycache__", "site-packages", "build", "dist",
    ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".atlas", ".idea", ".eggs", "tests", "test",
})
#: Hidden folders that editors keep MCP configurations in.
HIDDEN_KEPT = frozenset({".vscode", ".cursor", ".claude", ".gemini"})
MAX_FILES = 5000
MAX_BYTES = 1_000_000
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PREFERRED_STEMS = frozenset({"agent", "agents", "graph", "app", "main", "bot", "assistant", "workflow"})
_NOT_AGENT_BASES = frozenset({"Thread", "Process", "TestCase", "Command", "Task", "Job"})

LANGGRAPH_IMPORT = "from atlas_plugins.langgraph import with_atlas"
MIDDLEWARE_IMPORT = "from atlas_plugins.langgraph import AtlasMiddleware"
OPENAI_IMPORT = "from atlas_plugins.openai_agents import with_atlas"
BYOA_IMPORT = "from atlas_plugins.byoa import atlas_agent"


@dataclass
class Finding:
    """One thing the scan found, where, and how to put it under Atlas."""

    group: str  # langgraph_json | langgraph | openai_agents | agent_class | mcp
    what: str  # a short description: "graph = builder.compile()"
    file: str  # relative to the scanned root, with forward slashes
    line: int
    wrap: str  # one line of code (or advice) that wraps it
    name: str | None = None
    import_path: str | None = None  # module:object, when it can be imported as it stands
    agent_kind: str | None = None  # the agent.kind it would run as
    agent_name: str | None = None
    score: int = 0
    note: str = ""
    servers: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


GROUP_TITLES = {
    "langgraph_json": "LangGraph application graphs (langgraph.json)",
    "langgraph": "LangGraph graphs and agents",
    "openai_agents": "OpenAI Agents SDK agents",
    "agent_class": "Agent classes (a run method: candidates for @atlas_agent)",
    "mcp": "MCP servers",
}


# ------------------------------------------------------------------------------------------------------ walking
def iter_files(root: Path) -> tuple[list[Path], list[Path]]:
    """Python files and JSON files under ``root`` worth reading, skipping environments, caches and tests."""
    python, configs = [], []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(
            d for d in dirs
            if d not in SKIP_DIRS and not d.endswith(".egg-info") and (not d.startswith(".") or d in HIDDEN_KEPT)
            and not (here / d / "pyvenv.cfg").exists()
        )
        for name in sorted(files):
            path = here / name
            if name.endswith(".py"):
                if name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py":
                    continue
                python.append(path)
            elif name.endswith(".json"):
                configs.append(path)
            if len(python) + len(configs) >= MAX_FILES:
                return python, configs
    return python, configs


def module_name(root: Path, path: Path) -> str | None:
    """The dotted module a file is imported as from ``root`` (a src/ layout drops ``src``), or None if it cannot be."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    if len(parts) > 1 and parts[0] == "src" and not (root / "src" / "__init__.py").exists():
        parts = parts[1:]
    if not parts or not all(_IDENTIFIER.match(p) for p in parts):
        return None
    return ".".join(parts)


# ------------------------------------------------------------------------------------------------ python files
class _Scanner(ast.NodeVisitor):
    """Collects findings from one module: knows its imports, which names are builders, and what is module-level."""

    def __init__(self, tree: ast.Module, rel: str, module: str | None) -> None:
        self.tree, self.rel, self.module = tree, rel, module
        self.aliases: dict[str, str] = {}
        self.defined: set[str] = set()
        self.builders: dict[str, int] = {}  # name -> line of its StateGraph(...)
        self.compiled_from: set[str] = set()
        self.findings: list[Finding] = []
        self.scope: list[str] = []
        self._module_level_assigns: dict[int, list[str]] = {}
        self._local_names: dict[int, str] = {}  # any assignment's value -> its one target name, for display
        self._collect(tree)

    def _collect(self, tree: ast.Module) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    local = alias.asname or alias.name.split(".")[0]
                    self.aliases[local] = alias.name if alias.asname else alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.defined.add(node.name)
        for statement in _module_statements(tree.body):
            targets = _assign_targets(statement)
            if targets:
                self._module_level_assigns[id(statement.value)] = targets  # type: ignore[attr-defined]
        for node in ast.walk(tree):
            if isinstance(node, ast.stmt):
                targets = _assign_targets(node)
                if len(targets) == 1:
                    self._local_names[id(node.value)] = targets[0]  # type: ignore[attr-defined]

    # names
    def qualified(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            if node.id in self.aliases:
                return self.aliases[node.id]
            return None if node.id in self.defined else node.id
        if isinstance(node, ast.Attribute):
            base = self.qualified(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def import_path(self, node: ast.expr) -> tuple[str | None, str | None]:
        """(module:name, name) when the call's value is bound to one module-level name."""
        targets = self._module_level_assigns.get(id(node))
        if not targets or len(targets) != 1:
            return None, self._local_names.get(id(node))
        name = targets[0]
        return (f"{self.module}:{name}" if self.module else None), name

    # visiting
    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._class(node)
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_Assign(self, node: ast.Assign) -> None:
        if isinstance(node.value, ast.Call) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if _is_state_graph(self.qualified(node.value.func)):
                self.builders[node.targets[0].id] = node.lineno
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        qualified = self.qualified(node.func)
        if _is_state_graph(qualified):
            self._state_graph(node)
        elif isinstance(node.func, ast.Attribute) and node.func.attr == "compile" and self._is_builder(node.func.value):
            self._compiled(node)
        elif qualified and qualified.split(".")[-1] == "create_react_agent" and (qualified.startswith("langgraph") or "." not in qualified):
            self._prebuilt(node, "create_react_agent")
        elif qualified and _is_create_agent(qualified):
            self._prebuilt(node, "create_agent")
        elif qualified and _is_openai_agent(qualified):
            self._openai_agent(node)
        elif qualified and qualified.split(".")[-1] == "MultiServerMCPClient":
            self._mcp_client(node)
        self.generic_visit(node)

    def _is_builder(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.builders
        return isinstance(node, ast.Call) and _is_state_graph(self.qualified(node.func))

    def _inside(self) -> str:
        return f" (inside {'.'.join(self.scope)}(); bind it to a module-level name to run it with `atlas run`)" if self.scope else ""

    def _state_graph(self, node: ast.Call) -> None:
        path, name = self.import_path(node)
        label = name or "builder"
        self.findings.append(Finding(
            "langgraph", f"{name + ' = ' if name else ''}StateGraph({_arg_text(node)})", self.rel, node.lineno,
            f"app = with_atlas({label})  # {LANGGRAPH_IMPORT}; a StateGraph or its compiled graph", name=name,
            import_path=path, agent_kind="langgraph", agent_name=name, score=35, note=self._inside() if not path else "",
        ))

    def _compiled(self, node: ast.Call) -> None:
        path, name = self.import_path(node)
        receiver = node.func.value  # type: ignore[attr-defined]
        builder = receiver.id if isinstance(receiver, ast.Name) else "StateGraph(...)"
        if isinstance(receiver, ast.Name):
            self.compiled_from.add(receiver.id)
        label = name or "graph"
        self.findings.append(Finding(
            "langgraph", f"{name + ' = ' if name else ''}{builder}.compile()", self.rel, node.lineno,
            f"app = with_atlas({label})  # {LANGGRAPH_IMPORT}", name=name, import_path=path, agent_kind="langgraph",
            agent_name=_keyword_text(node, "name") or name, score=50, note=self._inside() if not path else "",
        ))

    def _prebuilt(self, node: ast.Call, factory: str) -> None:
        path, name = self.import_path(node)
        label = name or "agent"
        if factory == "create_agent":
            wrap = f"{label} = create_agent(model, tools, middleware=[AtlasMiddleware()])  # {MIDDLEWARE_IMPORT}; or with_atlas({label})"
        else:
            wrap = f"app = with_atlas({label})  # {LANGGRAPH_IMPORT}"
        self.findings.append(Finding(
            "langgraph", f"{name + ' = ' if name else ''}{factory}(...)", self.rel, node.lineno, wrap, name=name, import_path=path,
            agent_kind="langgraph", agent_name=_keyword_text(node, "name") or name, score=50, note=self._inside() if not path else "",
        ))

    def _openai_agent(self, node: ast.Call) -> None:
        path, name = self.import_path(node)
        agent_name = _keyword_text(node, "name")
        label = name or "agent"
        shown = f'Agent(name="{agent_name}", ...)' if agent_name else "Agent(...)"
        self.findings.append(Finding(
            "openai_agents", f"{name + ' = ' if name else ''}{shown}", self.rel, node.lineno,
            f"runner = with_atlas({label}); runner.run_sync(task)  # {OPENAI_IMPORT}", name=name, import_path=path,
            agent_kind="openai_agents", agent_name=agent_name or name, score=45, note=self._inside() if not path else "",
        ))

    def _mcp_client(self, node: ast.Call) -> None:
        connections = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "connections"), None)
        servers = []
        if isinstance(connections, ast.Dict):
            for key, value in zip(connections.keys, connections.values, strict=True):
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    servers.append(key.value + _server_text_ast(value))
        described = ", ".join(servers) if servers else "servers built at run time"
        self.findings.append(Finding(
            "mcp", f"MultiServerMCPClient: {described}", self.rel, node.lineno,
            "their tool calls are recorded as steps once the agent given these tools is wrapped (with_atlas / AtlasMiddleware)",
            servers=servers,
        ))

    def _class(self, node: ast.ClassDef) -> None:
        methods = {n.name: n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        run = methods.get("run")
        if run is None:
            return
        bases = {(self.qualified(b) or "").split(".")[-1] for b in node.bases}
        if bases & _NOT_AGENT_BASES:
            return
        decorated = any((self.qualified(d.func if isinstance(d, ast.Call) else d) or "").endswith("atlas_agent") for d in node.decorator_list)
        module_level = not self.scope
        path = f"{self.module}:{node.name}" if module_level and self.module else None
        parameters = [a.arg for a in [*run.args.posonlyargs, *run.args.args]][1:]
        score = 20 + (5 if re.search(r"agent|bot|assistant", node.name, re.IGNORECASE) else 0) + (2 if parameters else 0)
        score += 10 if decorated else 0
        signature = f"{'async ' if isinstance(run, ast.AsyncFunctionDef) else ''}run(self{', ' if parameters else ''}{', '.join(parameters)})"
        wrap = "already decorated with @atlas_agent" if decorated else f"@atlas_agent  # above `class {node.name}`; {BYOA_IMPORT}"
        self.findings.append(Finding(
            "agent_class", f"class {node.name} with {signature}", self.rel, node.lineno, wrap, name=node.name, import_path=path,
            agent_kind="byoa", agent_name=node.name, score=score,
            note="" if path else " (nested; move it to module level to run it with `atlas run`)",
        ))


def _module_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements that run at import time: the module body and the bodies of its if/try/with blocks."""
    out: list[ast.stmt] = []
    for statement in body:
        out.append(statement)
        if isinstance(statement, ast.If):
            out.extend(_module_statements(statement.body) + _module_statements(statement.orelse))
        elif isinstance(statement, ast.Try):
            out.extend(_module_statements(statement.body) + _module_statements(statement.orelse))
        elif isinstance(statement, ast.With):
            out.extend(_module_statements(statement.body))
    return out


def _assign_targets(statement: ast.stmt) -> list[str]:
    if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Call):
        return [t.id for t in statement.targets if isinstance(t, ast.Name)]
    if isinstance(statement, ast.AnnAssign) and isinstance(statement.value, ast.Call) and isinstance(statement.target, ast.Name):
        return [statement.target.id]
    return []


def _is_state_graph(qualified: str | None) -> bool:
    return bool(qualified) and qualified.split(".")[-1] == "StateGraph" and (qualified.startswith("langgraph") or "." not in qualified)  # type: ignore[union-attr]


def _is_create_agent(qualified: str) -> bool:
    return qualified.split(".")[-1] == "create_agent" and (qualified.startswith(("langchain", "langgraph")) or qualified == "create_agent")


def _is_openai_agent(qualified: str) -> bool:
    return qualified.split(".")[-1] == "Agent" and qualified.split(".")[0] == "agents"


def _keyword_text(node: ast.Call, name: str) -> str | None:
    for keyword in node.keywords:
        if keyword.arg == name and isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, str):
            return keyword.value.value
    return None


def _arg_text(node: ast.Call) -> str:
    if node.args:
        try:
            text = ast.unparse(node.args[0])
        except Exception:  # noqa: BLE001 - display only
            return "..."
        return text if len(text) <= 40 else "..."
    return ""


def _server_text_ast(value: ast.expr) -> str:
    if not isinstance(value, ast.Dict):
        return ""
    fields = {k.value: v for k, v in zip(value.keys, value.values, strict=True) if isinstance(k, ast.Constant)}
    for key in ("command", "url"):
        if isinstance(fields.get(key), ast.Constant):
            return f" ({fields[key].value})"  # type: ignore[union-attr]
    return ""


def scan_python(root: Path, path: Path) -> list[Finding] | None:
    """Findings of one file; None when it does not parse."""
    try:
        if path.stat().st_size > MAX_BYTES:
            return []
        source = path.read_text(encoding="utf-8", errors="replace")
        tree = ast.parse(source, filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return None
    rel = path.relative_to(root).as_posix()
    scanner = _Scanner(tree, rel, module_name(root, path))
    scanner.visit(tree)
    for finding in scanner.findings:  # a builder compiled at module level: run the compiled graph, not the builder
        if finding.what.split(" = ")[0] in scanner.compiled_from and "StateGraph(" in finding.what:
            finding.score -= 15
        if Path(rel).stem in _PREFERRED_STEMS:
            finding.score += 3
        finding.score -= rel.count("/")
    return scanner.findings


# ------------------------------------------------------------------------------------------------ MCP configs
def scan_mcp_json(root: Path, path: Path) -> Finding | None:
    """An MCP configuration: a JSON file with ``mcpServers`` (Claude, Cursor, .mcp.json) or an mcp.json with ``servers``."""
    try:
        if path.stat().st_size > MAX_BYTES:
            return None
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    named_mcp = path.name in ("mcp.json", ".mcp.json")
    if "mcpServers" not in text and not (named_mcp and '"servers"' in text):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    servers = _find_servers(data)
    if servers is None:
        return None
    key = "mcpServers" if "mcpServers" in text else '"servers"'
    label = key.strip('"')
    line = text[: text.index(key)].count("\n") + 1
    names = []
    for name, spec in servers.items():
        detail = ""
        if isinstance(spec, dict):
            command = spec.get("command") or spec.get("url") or ""
            args = spec.get("args") if isinstance(spec.get("args"), list) else []
            detail = " ".join(str(p) for p in [command, *args[:3]] if p)
        names.append(f"{name} ({detail})" if detail else str(name))
    return Finding(
        "mcp", f"{label}: {', '.join(names) or 'no servers'}", path.relative_to(root).as_posix(), line,
        "their tool calls are recorded as steps once the agent given these tools is wrapped "
        "(langchain-mcp-adapters: MultiServerMCPClient(...).get_tools())",
        servers=names,
    )


def _find_servers(data: Any, depth: int = 0) -> dict[str, Any] | None:
    if not isinstance(data, dict) or depth > 3:
        return None
    for key in ("mcpServers", "servers"):
        if isinstance(data.get(key), dict):
            return data[key]
    for value in data.values():
        found = _find_servers(value, depth + 1)
        if found is not None:
            return found
    return None


# ------------------------------------------------------------------------------------------------ langgraph.json
LANGGRAPH_JSON = "langgraph.json"
_LANGGRAPH_JSON_SCORE = 100  # above anything the code scan finds: the project says which graphs it serves


def scan_langgraph_json(root: Path) -> list[Finding]:
    """The graphs ``root/langgraph.json`` names, in its order; [] without the file. AtlasError (one line) for an
    entry that cannot be run: not JSON, no such file or module-level name, a path that is not a Python module."""
    path = root / LANGGRAPH_JSON
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except OSError as exc:
        raise AtlasError(f"{LANGGRAPH_JSON}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        where = f"line {exc.lineno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise AtlasError(f"{LANGGRAPH_JSON}: not valid JSON ({where}); fix it (the LangGraph CLI cannot read it either)") from None
    graphs = data.get("graphs") if isinstance(data, dict) else None
    if graphs is None:
        return []
    if not isinstance(graphs, dict):
        raise AtlasError(f"{LANGGRAPH_JSON}: \"graphs\" must map graph names to \"./path/to/file.py:graph\"; fix it")
    findings = []
    start = text.find('"graphs"')
    for order, (name, spec) in enumerate(graphs.items()):
        line = _json_key_line(text, str(name), start)
        finding = _langgraph_json_graph(root, str(name), spec, line)
        if finding is not None:
            finding.score = _LANGGRAPH_JSON_SCORE - order
            findings.append(finding)
    return findings


def _json_key_line(text: str, key: str, start: int) -> int:
    match = re.compile(re.escape(json.dumps(key)) + r"\s*:").search(text, max(start, 0))
    return text[: match.start()].count("\n") + 1 if match else 1


def _langgraph_json_graph(root: Path, name: str, spec: Any, line: int) -> Finding | None:
    """One ``graphs`` entry: ``"./file.py:attr"``, ``"package.module:attr"`` or ``{"path": ..., "description": ...}``."""
    value = spec.get("path") if isinstance(spec, dict) else spec
    label = f"{LANGGRAPH_JSON}: graphs.{name}"
    if not isinstance(value, str) or not value.strip():
        raise AtlasError(f"{label}: expected \"./path/to/file.py:graph\" or {{\"path\": \"./path/to/file.py:graph\"}} "
                         f"(got {json.dumps(spec)[:80]}); fix the entry in {LANGGRAPH_JSON}")
    value = value.strip()
    label = f"{label} {value!r}"
    location, _, attribute = value.rpartition(":")
    if not location or not attribute:
        raise AtlasError(f"{label}: expected 'path/to/file.py:object' (the file and the name of its compiled graph); "
                         f"fix the entry in {LANGGRAPH_JSON}")
    as_file = location.endswith(".py") or "/" in location or "\\" in location
    if as_file and not location.endswith(".py"):
        return None  # a JavaScript or TypeScript graph: nothing atlas run can import
    if as_file:
        file = (root / location).resolve()
        try:
            rel = file.relative_to(root).as_posix()
        except ValueError:
            raise AtlasError(f"{label}: {location} is outside the project ({root}); run `atlas env init` on the folder "
                             f"that holds it, or fix the entry in {LANGGRAPH_JSON}") from None
        if not file.is_file():
            raise AtlasError(f"{label}: {rel} does not exist; fix the path in {LANGGRAPH_JSON} (it is relative to "
                             "the file's folder)")
        module = module_name(root, file)
        if module is None:
            raise AtlasError(f"{label}: {rel} cannot be imported as a Python module (a folder or file name is not an "
                             f"identifier); rename it, or fix the entry in {LANGGRAPH_JSON}")
    else:
        module = location
        if not all(_IDENTIFIER.match(p) for p in module.split(".")):
            raise AtlasError(f"{label}: {module!r} is neither a .py file nor a dotted module name; fix the entry in {LANGGRAPH_JSON}")
        file = _module_file(root, module)
        rel = file.relative_to(root).as_posix() if file is not None else None
        top = module.split(".")[0]
        if file is None and any((base / top).is_dir() or (base / f"{top}.py").is_file() for base in (root, root / "src")):
            raise AtlasError(f"{label}: the project has {top} but no module {module}; fix the module name in {LANGGRAPH_JSON}")
    target = attribute.split(".")[0]
    kind = _module_level_binding(file, target, label) if file is not None else "unknown"
    if kind is None:
        raise AtlasError(f"{label}: {rel} defines no module-level {attribute!r}; fix the name after ':' in {LANGGRAPH_JSON} "
                         "(it must be the module-level variable that holds the graph)")
    import_path = f"{module}:{attribute}"
    note = ""
    runnable_kind: str | None = "langgraph"
    if kind == "function":
        note = (f" (a graph factory: atlas run needs the graph itself; bind one to a module-level name, e.g. graph = "
                f"{target}(...), and point agent.import_path at it)")
        runnable_kind = None
    elif file is None:
        note = f" ({module} is not in this folder: it must be installed to import)"
    shown = f"graphs.{name}: {value}" + (f"  ({spec['description']})" if isinstance(spec, dict) and spec.get("description") else "")
    return Finding(
        "langgraph_json", shown, LANGGRAPH_JSON, line,
        f"app = with_atlas({target})  # {LANGGRAPH_IMPORT}; import path {import_path}", name=name,
        import_path=import_path if runnable_kind else None, agent_kind=runnable_kind, agent_name=name, note=note,
    )


def _module_file(root: Path, module: str) -> Path | None:
    """The file a dotted module name is, from the project root or its src/ folder; None when it is not here."""
    parts = module.split(".")
    for base in (root, root / "src"):
        for candidate in (base.joinpath(*parts).with_suffix(".py"), base.joinpath(*parts, "__init__.py")):
            if candidate.is_file():
                return candidate.resolve()
    return None


def _module_level_binding(file: Path, name: str, label: str) -> str | None:
    """How ``file`` binds ``name`` at module level: "function", "value", "unknown" (a star import or a name set in
    ``globals()``: it may be there), or None when it does not."""
    try:
        tree = ast.parse(file.read_text(encoding="utf-8", errors="replace"), filename=str(file))
    except SyntaxError as exc:
        raise AtlasError(f"{label}: {file.name} does not parse (line {exc.lineno}: {exc.msg}); fix the file") from None
    except (OSError, ValueError) as exc:
        raise AtlasError(f"{label}: cannot read {file.name} ({exc}); fix the file") from None
    found: str | None = None
    for statement in _module_statements(tree.body):
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)) and statement.name == name:
            found = "unknown" if statement.decorator_list else "function"  # @entrypoint() makes a graph of it
        elif isinstance(statement, ast.ClassDef) and statement.name == name:
            found = "value"
        elif isinstance(statement, (ast.Import, ast.ImportFrom)):
            for alias in statement.names:
                if alias.name == "*":
                    found = found or "unknown"
                elif (alias.asname or alias.name.split(".")[0]) == name:
                    found = "value"
        else:
            targets: list[ast.expr] = []
            if isinstance(statement, ast.Assign):
                targets = list(statement.targets)
            elif isinstance(statement, (ast.AnnAssign, ast.AugAssign)) and statement.value is not None:
                targets = [statement.target]
            for target in targets:
                if any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(target)):
                    found = "value"
    return found


# ---------------------------------------------------------------------------------------------------- scanning
@dataclass
class ScanResult:
    root: Path
    findings: list[Finding]
    python_files: int
    unparsable: list[str]

    def candidates(self) -> list[Finding]:
        """Runnable agents (importable as module:object), likeliest first; one per import path (a graph that
        langgraph.json names and the code scan found too is listed once, under its langgraph.json name)."""
        runnable = sorted((f for f in self.findings if f.import_path and f.agent_kind), key=lambda f: (-f.score, f.file, f.line))
        seen: set[str] = set()
        unique = []
        for finding in runnable:
            if finding.import_path not in seen:
                seen.add(finding.import_path)  # type: ignore[arg-type]
                unique.append(finding)
        return unique


def scan(root: Path) -> ScanResult:
    """Every finding under ``root``; AtlasError when its langgraph.json names a graph that cannot be run."""
    findings: list[Finding] = scan_langgraph_json(root)
    python, configs = iter_files(root)
    unparsable = []
    for path in python:
        found = scan_python(root, path)
        if found is None:
            unparsable.append(path.relative_to(root).as_posix())
        else:
            findings.extend(found)
    for path in configs:
        mcp = scan_mcp_json(root, path)
        if mcp is not None:
            findings.append(mcp)
    return ScanResult(root, findings, len(python), unparsable)


# ------------------------------------------------------------------------------------------------------ writing
def render_yaml(result: ScanResult) -> str:
    """The commented atlas.yaml for a scan."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# atlas.yaml written by `atlas env init` on {now} for {result.root}",
        f"# A static scan of {result.python_files} Python files and the project's JSON files (nothing was imported or run)",
        "# found the following. Each line: where, what, and one line that puts it under Atlas.",
        "#",
    ]
    if not result.findings:
        lines += ["#   nothing recognisable: no LangGraph graph, Agents SDK agent, class with run(), or MCP config.", "#"]
    for group, title in GROUP_TITLES.items():
        found = [f for f in result.findings if f.group == group]
        if not found:
            continue
        lines.append(f"#   {title}")
        for finding in sorted(found, key=lambda f: (f.file, f.line)):
            lines.append(f"#     {finding.where}  {_one_line(finding.what)}{finding.note}")
            lines.append(f"#         {finding.wrap}")
        lines.append("#")
    if result.unparsable:
        shown = ", ".join(result.unparsable[:5]) + (", ..." if len(result.unparsable) > 5 else "")
        lines += [f"#   not parsed (syntax errors): {shown}", "#"]
    candidates = result.candidates()
    lines.append("# `atlas run --config atlas.yaml --task \"...\"` runs the agent below once under supervision (from the")
    lines.append("# project root or anywhere with --config: the working folder, this file's folder and a src/ folder in either")
    lines.append("# are put on the import path, so a src/ layout package imports as it does once installed).")
    if candidates:
        best = candidates[0]
        source = f"graph {best.agent_name!r} in {best.where}" if best.group == "langgraph_json" else best.where
        lines += [
            "agent:",
            f"  import_path: {json.dumps(best.import_path)}   # {source}{_src_note(result.root, best)}",
            f"  kind: {best.agent_kind}",
        ]
        if best.agent_name:
            lines.append(f"  name: {json.dumps(best.agent_name)}")
        others = candidates[1:6]
        if others:
            lines.append("  # other candidates (swap import_path, kind and name to use one):")
            for other in others:
                named = f"   name: {json.dumps(other.agent_name)}" if other.agent_name else ""
                lines.append(f"  #   import_path: {json.dumps(other.import_path)}   kind: {other.agent_kind}{named}   # {other.where}")
    else:
        lines += [
            "# No agent object that can be imported as module:object was found; name yours here:",
            "agent:",
            "  import_path: null   # e.g. \"my_project.agent:graph\" (a compiled graph, an Agent, an agent class or f(task) -> str)",
            "  kind: auto",
        ]
    lines += [
        "",
        "# Every other section is optional; the defaults need no key and no network (the embedded SmolLM2 model, SQLite).",
        "# models:",
        "#   default: {provider: local, model: smollm2}",
        "#   teacher: {provider: openai, model: gpt-4.1-mini}   # OPENAI_API_KEY",
        "# storage:",
        "#   url: sqlite:///.atlas/atlas.db                      # or postgresql+psycopg://user@host:5432/db",
        "# review:",
        "#   auto_approve_min_reward: 0.9",
        "",
    ]
    return "\n".join(lines)


def _src_note(root: Path, finding: Finding) -> str:
    """", imported from src/" when the module lives in the project's src/ folder (a src layout)."""
    module = (finding.import_path or "").partition(":")[0]
    if not module or module.split(".")[0] == "src" or not (root / "src").is_dir():
        return ""
    found = _module_file(root, module)
    return ", imported from src/" if found is not None and found.is_relative_to((root / "src").resolve()) else ""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def env_init(*, path: Path, output: Path | None, force: bool, as_json: bool = False) -> None:
    root = path.resolve()
    if not root.is_dir():
        raise AtlasError(f"{path}: not a folder; give the project's root folder")
    target = output if output is not None else root / "atlas.yaml"
    if target.exists() and not force:
        raise AtlasError(f"{target} already exists; pass --force to overwrite it")
    if target.is_dir():
        raise AtlasError(f"--output {target}: is a folder; name a file such as atlas.yaml")
    if not target.absolute().parent.is_dir():  # never made on the user's behalf
        raise AtlasError(f"--output {target}: folder {target.absolute().parent} does not exist; create it first")
    result = scan(root)
    text = default_redactor().text(render_yaml(result))  # an MCP server's args or URL can carry a key
    _check(text)
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise AtlasError(f"cannot write {target} ({exc.strerror})") from None
    candidates = result.candidates()
    counts = {group: sum(1 for f in result.findings if f.group == group) for group in GROUP_TITLES}
    found = ", ".join(f"{n} {label}" for label, n in zip(
        ("langgraph.json graphs", "LangGraph", "Agents SDK", "agent classes", "MCP configs"), counts.values(), strict=True) if n) or "no agents"
    if as_json:
        best = candidates[0] if candidates else None
        echo_json({"written": str(target), "found": counts,
                   "agent": None if best is None else {"import_path": best.import_path, "kind": best.agent_kind, "where": best.where},
                   "alternatives": [c.import_path for c in candidates[1:]]})
        return
    typer.echo(f"wrote {target}: {found}")
    if candidates:
        best = candidates[0]
        source = f"{LANGGRAPH_JSON} graph {best.agent_name!r}" if best.group == "langgraph_json" else best.where
        typer.echo(f"agent: {best.import_path} ({best.agent_kind}, {source}); try: atlas run --config {target} --task \"...\"")
    else:
        typer.echo("no importable agent found; set agent.import_path in the file")


def _check(text: str) -> None:
    """The file must load as a config: a scan never writes something `atlas run` rejects."""
    import yaml

    from ..config import AtlasConfig

    AtlasConfig.load(yaml.safe_load(text) or {}, environ={})
