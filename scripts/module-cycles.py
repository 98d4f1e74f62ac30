#!/usr/bin/env python3
"""Fails if the top-level modules of a crate import each other in a circle.

Cargo forbids circles between crates; inside a crate nothing does. This reads each
crate's `src/` (the crates of the workspace, or the directories given), takes every
top-level module (a file `src/NAME.rs` with its folder `src/NAME/`), and draws an edge
NAME -> OTHER for every `crate::OTHER` (or `super::OTHER` in a top-level file) outside
comments and outside `#[cfg(test)]` modules. A cycle is printed with the lines that make
it, and the exit code is 1.

    scripts/module-cycles.py [CRATE_DIR ...]
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
REF = re.compile(r"\b(crate|super)::(\{)?([a-z_][a-z0-9_]*)")
GROUP = re.compile(r"\b(crate|super)::\{([^}]*)\}")


def crates():
    text = (ROOT / "Cargo.toml").read_text()
    block = re.search(r"^members\s*=\s*\[(.*?)\]", text, re.S | re.M).group(1)
    return [ROOT / m for m in re.findall(r'"([^"]+)"', block)]


def code_lines(path):
    """(line number, text) of the lines outside comments and test modules."""
    skip_depth = None
    depth = 0
    pending_test = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("//"):
            continue
        if stripped.startswith("#[cfg(test)]"):
            pending_test = True
            continue
        opens, closes = line.count("{"), line.count("}")
        if skip_depth is None and pending_test and opens:
            skip_depth = depth
        if not stripped.startswith("#["):
            pending_test = False if opens or stripped.endswith(";") else pending_test
        depth += opens - closes
        if skip_depth is not None:
            if depth <= skip_depth:
                skip_depth = None
            continue
        yield number, line


def modules(src):
    names = {p.stem for p in src.glob("*.rs") if p.stem not in ("lib", "main")}
    names |= {p.name for p in src.iterdir() if p.is_dir() and (p / "mod.rs").exists()}
    return names


def files_of(src, name):
    single = src / f"{name}.rs"
    folder = src / name
    out = [single] if single.exists() else []
    if folder.is_dir():
        out += sorted(folder.rglob("*.rs"))
    return out


def edges(src):
    names = modules(src)
    graph = {n: {} for n in names}
    for name in names:
        for path in files_of(src, name):
            top_level = path.parent == src or path.name == "mod.rs" and path.parent.parent == src
            for number, line in code_lines(path):
                targets = []
                for kind, brace, first in REF.findall(line):
                    if kind == "super" and not top_level:
                        continue
                    if brace:
                        continue
                    targets.append(first)
                for kind, group in GROUP.findall(line):
                    if kind == "super" and not top_level:
                        continue
                    targets += [g.strip().split("::")[0] for g in group.split(",")]
                for target in targets:
                    if target in names and target != name:
                        where = f"{path.relative_to(ROOT)}:{number}"
                        graph[name].setdefault(target, where)
    return graph


def cycles(graph):
    found, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def main():
    dirs = [pathlib.Path(a).resolve() for a in sys.argv[1:]] or crates()
    bad = 0
    for crate in dirs:
        src = crate / "src"
        if not src.is_dir():
            continue
        graph = edges(src)
        for cycle in cycles(graph):
            bad += 1
            print(f"{crate.relative_to(ROOT)}: modules import each other in a circle: "
                  + " -> ".join(cycle))
            for a, b in zip(cycle, cycle[1:]):
                print(f"    {a} -> {b}: {graph[a][b]}")
    if bad:
        return 1
    print(f"module graph: no circles in {len(dirs)} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
