"""Build the demo model's training corpus from text that ships with Python itself.

The embedded demo model must be rebuildable offline, on any machine with the project's Python (3.11), so its corpus is
made only of what the interpreter carries:

1. `pydoc_data.topics`: the language reference pages that `help("for")` shows.
2. Docstrings of the standard library, found by walking the stdlib folders with `pkgutil.iter_modules`.
   Modules with source are read with `ast`, never imported, so no module code runs (`this` prints, `antigravity`
   opens a browser, `tkinter` wants a display); extension and builtin modules have no source, so those alone are
   imported, with stdout/stderr captured, and any that fail or print are skipped. Blocks of 3+ comment lines that
   read as prose are kept too: they are the stdlib's own English explanations.
3. Chat examples synthesised from the topics and module docstrings ("How does the `for` statement work?" → the
   topic's text), so the chat template's format is something the model has seen.

Output (JSON lines, UTF-8, deterministic order, exact duplicates removed):
    <out>/corpus.jsonl  {"source", "text"}                               one document per line
    <out>/chat.jsonl    {"source", "messages": [{"role", "content"}, ...]} one conversation per line
`source` ("topic:for", "module:email") names what the text came from, so that training can hold out whole
topics and top-level packages for validation: a chat answer repeats its document's text, and splitting per row
would leak training text into the validation set.
    <out>/manifest.json counts, sizes, sha256 and the Python version

Usage: python scripts/build_demo_corpus.py [--out build/demo_corpus]
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import importlib
import inspect
import io
import json
import os
import pkgutil
import platform
import re
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path

# Packages whose docstrings are tests or tooling rather than documentation.
SKIP_PREFIXES = ("test", "idlelib", "lib2to3.tests", "tkinter.test", "turtledemo", "ensurepip._bundled", "__phello__")
# Modules whose mere import misbehaves (prints, opens a browser, needs a display). Only relevant to the imported
# (extension/builtin) set, but listed so nobody "simplifies" the walk into importing everything.
NEVER_IMPORT = {"this", "antigravity", "tkinter", "_tkinter", "idlelib", "turtle", "__hello__", "__phello__"}
MIN_COMMENT_WORDS = 15  # below this a comment block is mostly code, licence headers or "XXX" notes
MIN_DOC_CHARS = 40  # shorter docstrings ("Return self.") teach nothing and crowd out real text
MAX_ANSWER_CHARS = 2400  # chat answers are cut at a paragraph boundary so a whole example fits the context window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("build/demo_corpus"))
    args = parser.parse_args()

    topics = topic_documents()
    modules = module_documents()
    docs = dedup([(f"topic:{key}", text) for key, text in topics]
                 + [(f"module:{source_of(name)}", text) for name, _, text in modules])
    chats = dedup_chats(list(topic_chats(topics)) + list(module_chats(modules)))

    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "corpus.jsonl", ({"source": src, "text": d} for src, d in docs))
    write_jsonl(args.out / "chat.jsonl", ({"source": src, "messages": m} for src, m in chats))
    manifest = {
        "python": platform.python_version(),
        "documents": len(docs),
        "document_chars": sum(len(d) for _, d in docs),
        "conversations": len(chats),
        "modules_with_docs": len({name for name, _, _ in modules}),
        "sha256": {name: sha256(args.out / name) for name in ("corpus.jsonl", "chat.jsonl")},
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest))


# ---------------------------------------------------------------- pydoc topics


def topic_documents() -> list[tuple[str, str]]:
    """(topic key, text) in sorted key order. The text starts with its own title line, e.g. 'The "for" statement'."""
    from pydoc_data.topics import topics

    return [(key, clean(topics[key])) for key in sorted(topics)]


def topic_title(text: str) -> str:
    # Titles are underlined with '*' or '=' in the topics' reStructuredText-derived layout.
    lines = text.splitlines()
    if len(lines) > 1 and lines[1] and set(lines[1]) <= set("*=-"):
        return lines[0].strip()
    return ""


def topic_chats(topics: list[tuple[str, str]]) -> Iterator[tuple[str, list[dict[str, str]]]]:
    import pydoc

    # keyword -> topic key, from the same table `help()` uses; only keywords whose entry names a topic.
    keywords: dict[str, list[str]] = {}
    for word, entry in sorted(pydoc.Helper.keywords.items()):
        key = entry[0] if isinstance(entry, tuple) else entry
        if key:
            keywords.setdefault(key, []).append(word)

    for i, (key, text) in enumerate(topics):
        answer = clip(text)
        title = topic_title(text)
        for word in keywords.get(key, []):
            question = f"How does the `{word}` statement work?" if key == word else f"What does `{word}` do in Python?"
            yield f"topic:{key}", turn(question, answer)
        if title:
            # Vary the phrasing deterministically so the model does not learn one fixed question.
            templates = ("Explain {t}.", "What does the Python documentation say about {t}?", "Tell me about {t}.")
            yield f"topic:{key}", turn(templates[i % len(templates)].format(t=lower_first(title)), answer)


# ---------------------------------------------------------------- stdlib docstrings


def module_documents() -> list[tuple[str, str, str]]:
    """(module name, object qualname or '', text) for every docstring worth keeping, in sorted module order."""
    out: list[tuple[str, str, str]] = []
    modules = dict(stdlib_modules())  # a name found twice (a folder and a builtin) is read once
    for name, path in sorted(modules.items(), key=lambda item: item[0]):
        if path is not None:
            out.extend((name, qual, text) for qual, text in source_docstrings(name, path))
        else:
            out.extend((name, qual, text) for qual, text in imported_docstrings(name))
    return out


def stdlib_modules() -> Iterator[tuple[str, Path | None]]:
    """(dotted name, source path or None) for the stdlib's modules, without importing anything from disk."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    dynload = stdlib / "lib-dynload"
    roots = [str(stdlib), str(dynload)]
    for info in walk(roots, prefix=""):
        if skipped(info.name):
            continue
        spec = info.module_finder.find_spec(info.name.rpartition(".")[2])  # type: ignore[call-arg]
        origin = Path(spec.origin) if spec is not None and spec.origin else None
        if origin is not None and origin.suffix == ".py":
            yield info.name, origin
        else:
            yield info.name, None
    for name in sorted(sys.builtin_module_names):
        if not skipped(name):
            yield name, None


def walk(paths: list[str], prefix: str) -> Iterator[pkgutil.ModuleInfo]:
    # pkgutil.walk_packages imports every package to read its __path__; recursing on folders ourselves keeps the walk
    # import-free.
    for info in sorted(pkgutil.iter_modules(paths, prefix), key=lambda m: m.name):
        if info.name in ("site-packages",) or info.name.startswith(("config-", "__pycache__")):
            continue
        yield info
        if info.ispkg:
            sub = [os.path.join(p, info.name.rpartition(".")[2]) for p in paths]
            yield from walk([p for p in sub if os.path.isdir(p)], prefix=info.name + ".")


def skipped(name: str) -> bool:
    top = name.split(".")[0]
    return (
        top in NEVER_IMPORT
        or any(name == p or name.startswith(p + ".") for p in SKIP_PREFIXES)
        or ".test" in name
        or name.startswith(("_test", "xx", "_xx", "_ctypes_test"))  # C-API test fixtures, not documentation
        or name.startswith("_sysconfigdata")
    )


def source_docstrings(module: str, path: Path) -> Iterator[tuple[str, str]]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    doc = ast.get_docstring(tree)
    if doc and len(doc) >= MIN_DOC_CHARS:
        yield "", f"Module {module}\n\n{clean(doc)}"
    yield from _walk_defs(tree.body, module)
    for i, block in enumerate(comment_blocks(path.read_text(encoding="utf-8"))):
        yield f"{module}#comment{i}", block


def comment_blocks(source: str) -> Iterator[str]:
    """Runs of 3+ full-line comments that read as prose: the stdlib's maintainers explaining why, in English."""
    run: list[str] = []
    for line in source.splitlines() + [""]:
        stripped = line.strip()
        if stripped.startswith("#") and not stripped.startswith("#!"):
            run.append(stripped.lstrip("#").strip())
            continue
        text = " ".join(w for w in run if w)
        if len(run) >= 3 and len(re.findall(r"\b[a-z]{2,}\b", text)) >= MIN_COMMENT_WORDS:
            yield text
        run = []


def _walk_defs(body: list[ast.stmt], owner: str) -> Iterator[tuple[str, str]]:
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name.startswith("_") and not node.name.startswith("__"):
                continue  # private helpers: often terse notes to maintainers rather than documentation
            qual = f"{owner}.{node.name}"
            doc = ast.get_docstring(node)
            if doc and len(doc) >= MIN_DOC_CHARS:
                yield qual, f"{header(node, qual)}\n\n{clean(doc)}"
            if isinstance(node, ast.ClassDef):
                yield from _walk_defs(node.body, qual)


def header(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef, qual: str) -> str:
    """A pydoc-like first line: 'json.dumps(obj, *, skipkeys=False, ...)' or 'class json.JSONDecoder(object)'."""
    if isinstance(node, ast.ClassDef):
        bases = ", ".join(ast.unparse(b) for b in node.bases)
        return f"class {qual}({bases})" if bases else f"class {qual}"
    try:
        return f"{qual}({ast.unparse(node.args)})"
    except (ValueError, AttributeError):
        return f"{qual}(...)"


def imported_docstrings(module: str) -> Iterator[tuple[str, str]]:
    """Docstrings of an extension or builtin module and its public functions and classes (members' own docs only)."""
    mod = quiet_import(module)
    if mod is None:
        return
    doc = inspect.getdoc(mod)
    if doc and len(doc) >= MIN_DOC_CHARS:
        yield "", f"Module {module}\n\n{clean(doc)}"
    for attr in sorted(vars(mod)):
        if attr.startswith("_"):
            continue
        obj = vars(mod)[attr]
        if getattr(obj, "__module__", module) != module.lstrip("_") and getattr(obj, "__module__", None) != module:
            continue  # re-exported from elsewhere: documented where it lives
        yield from _object_docs(obj, f"{module.lstrip('_')}.{attr}")
        if isinstance(obj, type):
            for meth in sorted(vars(obj)):
                if not meth.startswith("_"):
                    yield from _object_docs(vars(obj)[meth], f"{module.lstrip('_')}.{attr}.{meth}")


def _object_docs(obj: object, qual: str) -> Iterator[tuple[str, str]]:
    if not (inspect.isroutine(obj) or isinstance(obj, type)):
        return  # a constant's __doc__ is its type's (termios.B0 would repeat int's docstring hundreds of times)
    doc = getattr(obj, "__doc__", None)
    if not isinstance(doc, str) or len(doc) < MIN_DOC_CHARS:
        return
    doc = clean(inspect.cleandoc(doc))
    try:
        sig = str(inspect.signature(obj))  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - TypeError/ValueError usually; _curses even raises AttributeError
        sig = ""  # many builtins carry no __text_signature__; their docstring often starts with one instead
    first = f"class {qual}{sig}" if isinstance(obj, type) else f"{qual}{sig}"
    yield qual, f"{first}\n\n{doc}"


def quiet_import(name: str) -> object | None:
    """Import with output captured; a module that fails, prints or touches stdin is treated as unusable."""
    if name in sys.modules:
        return sys.modules[name]
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            mod = importlib.import_module(name)
    except BaseException:  # noqa: BLE001 - SystemExit/KeyboardInterrupt from a module body are failures too
        return None
    return None if out.getvalue() or err.getvalue() else mod


# ---------------------------------------------------------------- module chats


def module_chats(modules: list[tuple[str, str, str]]) -> Iterator[tuple[str, list[dict[str, str]]]]:
    questions = ("What does the `{q}` {kind} do?", "How do I use `{q}`?", "Explain `{q}`.")
    for i, (module, qual, text) in enumerate(modules):
        if "#comment" in qual:
            continue  # comments answer no question
        if not qual:
            body = text.split("\n\n", 1)[-1]
            yield f"module:{source_of(module)}", turn(f"What is the `{module}` module for?", clip(body))
        elif "." not in qual[len(module) + 1:] and i % 3 == 0:
            # Every third top-level function or class: enough to teach the format without doubling the corpus.
            kind = "class" if text.startswith("class ") else "function"
            question = questions[(i // 3) % len(questions)].format(q=qual, kind=kind)
            yield f"module:{source_of(module)}", turn(question, clip(text))


# ---------------------------------------------------------------- helpers


def turn(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def clean(text: str) -> str:
    # Normalise line ends and trailing blanks; collapse runs of blank lines (they carry no meaning, cost tokens).
    text = text.replace("\r\n", "\n").replace("\t", "    ")
    text = "\n".join(line.rstrip() for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def clip(text: str, limit: int = MAX_ANSWER_CHARS) -> str:
    if len(text) <= limit:
        return text
    cut = text.rfind("\n\n", 0, limit)
    return text[: cut if cut > limit // 3 else limit].rstrip()


def lower_first(title: str) -> str:
    return title[:1].lower() + title[1:] if title[:2] != title[:2].upper() else title


def source_of(module: str) -> str:
    # Private twins share a source with their public module (_json with json) so both land in the same split.
    return module.split(".")[0].lstrip("_")


def dedup(rows: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop repeated texts, keeping the first (source, text) in order."""
    seen: set[str] = set()
    out = []
    for src, text in rows:
        if text not in seen:
            seen.add(text)
            out.append((src, text))
    return out


def dedup_chats(chats: list[tuple[str, list[dict[str, str]]]]) -> list[tuple[str, list[dict[str, str]]]]:
    seen: set[str] = set()
    out = []
    for src, messages in chats:
        key = json.dumps(messages, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append((src, messages))
    return out


def write_jsonl(path: Path, rows: Iterable[dict[str, object]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


if __name__ == "__main__":
    main()
