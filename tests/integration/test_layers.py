# SPDX-License-Identifier: MIT
"""The layers of src/ as the README's architecture section draws them, read
from the #include lines: net/ knows no protocol, front ends do not reach
into one another, handlers carry no protocol, the include graph has no
cycle but the daemon's with its control socket, and no source file grows
past about 900 lines."""
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)

# Front ends, by the modules that make each one up. The HTTP request model
# (proto/http_msg.h) belongs to none: handlers, middleware and the
# WebSocket handshake read requests through it.
FRONT_ENDS = {
    "line": ("proto/line",),
    "udp": ("proto/udp",),
    "http": ("proto/http", "proto/http_conn", "proto/http_parse", "proto/router", "proto/middleware",
             "proto/gzip"),
    "ws": ("proto/ws", "proto/wsframe"),
}
SHARED_MODEL = ("proto/http_msg",)
ALLOWED_CYCLE = {"daemon", "control"}
# The config library is one module in the graph: its schema table is built
# from the config structs' offsets and the loader reads through the table,
# so config.c and schema.c refer to each other by design; the rest of the
# daemon sees config/config.h only.
ONE_MODULE = ("config/",)
MAX_LINES = 900
# Files that do one job that does not divide: a split would cut it apart.
LONG_FILES = {
    "config/tusk.c": "the TuskLang-style lexer and recursive-descent parser, one grammar",
    "config/yaml.c": "libyaml events to the value tree and back, one format",
    "config/schema.c": "the schema table: one row per key, nothing else",
}


def sources():
    return sorted(p for p in SRC.rglob("*") if p.suffix in (".c", ".h"))


def rel(p):
    return p.relative_to(SRC).as_posix()


def module(name):
    for prefix in ONE_MODULE:
        if name.startswith(prefix):
            return prefix.rstrip("/")
    return name.rsplit(".", 1)[0]


def includes():
    return {rel(p): INCLUDE.findall(p.read_text(errors="replace")) for p in sources()}


def front_end_of(mod):
    for fe, mods in FRONT_ENDS.items():
        if mod in mods:
            return fe
    # files added to a front end later are known by their name
    base = mod.split("/")[-1]
    if mod.startswith("proto/") and mod not in SHARED_MODEL:
        for fe in FRONT_ENDS:
            if base.startswith(fe):
                return fe
    return None


def test_the_include_reader_sees_the_tree():
    inc = includes()
    assert "proto/http.h" in inc["proto/http.c"]
    assert "net/conn.c" in inc


def test_net_includes_nothing_from_proto():
    bad = [f"{f} includes {i}" for f, incs in includes().items() if f.startswith("net/")
           for i in incs if i.startswith("proto/")]
    assert not bad, "\n".join(bad)


def test_no_front_end_includes_another():
    bad = []
    for f, incs in includes().items():
        mine = front_end_of(module(f))
        if not mine:
            continue
        for i in incs:
            theirs = front_end_of(module(i))
            if theirs and theirs != mine:
                bad.append(f"{f} ({mine}) includes {i} ({theirs})")
    assert not bad, "\n".join(bad)


def test_handlers_include_no_protocol_daemon_or_net():
    bad = [f"{f} includes {i}" for f, incs in includes().items() if f.startswith("handlers/")
           for i in incs if i in ("proto/http.h", "daemon.h") or i.startswith("net/")]
    assert not bad, "\n".join(bad)


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def module_graph():
    """Module A depends on module B when A.c or A.h includes B.h."""
    graph = {}
    for f, incs in includes().items():
        deps = graph.setdefault(module(f), set())
        for i in incs:
            if module(i) != module(f) and (SRC / i).exists():
                deps.add(module(i))
    return graph


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_include_cycle_but_daemon_and_control():
    graph = module_graph()
    bad = []
    for comp in cycles(graph):
        if comp == ALLOWED_CYCLE:
            continue
        edges = sorted(f"{a} -> {b}" for a in comp for b in graph[a] if b in comp)
        bad.append(f"cycle of {len(comp)}: {' '.join(sorted(comp))}; edges: {'; '.join(edges)}")
    assert not bad, "\n".join(bad)


def test_no_source_file_over_900_lines():
    long = []
    for p in sources():
        n = p.read_text(errors="replace").count("\n")
        if n > MAX_LINES and rel(p) not in LONG_FILES:
            long.append(f"{rel(p)}: {n} lines")
    assert not long, "\n".join(long)


def test_long_file_exceptions_are_still_long():
    # an exception nobody needs any more goes, so that it cannot cover a new file
    for name in LONG_FILES:
        assert (SRC / name).read_text().count("\n") > MAX_LINES, name
