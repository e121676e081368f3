"""The doctor's rules, run over one indexed module.

The analysis has three steps:

1. find the *entries*: functions that start running on another thread (or process) —
   targets of ``asyncio.to_thread``, ``run_in_executor``, ``threading.Thread``, executor
   ``submit``/``map``, the ``run()`` of ``threading.Thread`` subclasses, and sync route
   handlers, which frameworks run in a thread pool;
2. from each entry, follow calls through the module (functions, ``self.method()``,
   ``obj.method()`` when ``obj``'s class is known) to the set of functions that run on that
   thread, carrying what is known about parameters and ``self``;
3. in those functions, every use of a connection or cursor that was *not* made on that
   thread is a cross-thread use; the rules then look at how it is used.

Rules that do not depend on threads (blocking calls in ``async def``, DEFERRED write
transactions) look at each function on its own.
"""

from __future__ import annotations

import ast
import re
from collections import deque
from dataclasses import dataclass

from ._index import SHARED, THREAD_SELF, Func, Holder, Module, Val, connect_arg
from ._rules import Finding

__all__ = ("analyze_module",)

_TO_THREAD = {
    "asyncio.to_thread": "asyncio.to_thread",
    "anyio.to_thread.run_sync": "anyio.to_thread.run_sync",
    "starlette.concurrency.run_in_threadpool": "run_in_threadpool",
    "fastapi.concurrency.run_in_threadpool": "run_in_threadpool",
    "asgiref.sync.sync_to_async": "sync_to_async",
}
# constructor -> (position of the target argument, runs in another process)
_THREAD_CTORS = {
    "threading.Thread": (1, False),
    "threading.Timer": (1, False),
    "multiprocessing.Process": (1, True),
}
_ROUTE_DECORATORS = frozenset(
    {"get", "post", "put", "delete", "patch", "head", "options", "route", "api_route", "trace"}
)
_ROUTE_CALLS = {"add_route": (1, "endpoint"), "add_api_route": (1, "endpoint")}
_HTTP_METHODS = frozenset({"get", "post", "put", "patch", "delete", "head", "options"})
_POOL_PROCESS_METHODS = frozenset({"apply", "apply_async", "map_async", "starmap", "imap"})
_THREAD_SUBCLASS = "threading.Thread subclass"
_BLOCKING = frozenset(
    {
        "execute",
        "executemany",
        "executescript",
        "commit",
        "rollback",
        "close",
        "fetchone",
        "fetchall",
        "fetchmany",
        "backup",
        "iterdump",
    }
)
_FINISH = frozenset({"commit", "rollback", "close", "__enter__"})
_WRITE_SQL = re.compile(r"^\s*(insert|update|delete|replace|create|drop|alter)\b", re.I)
_DEFERRED_BEGIN = re.compile(r"^\s*begin(\s+deferred)?(\s+transaction)?\s*$", re.I)
_LIFESPAN_NAME = re.compile(r"lifespan|startup|shutdown", re.I)
_MAX_STATES = 400


@dataclass(frozen=True, slots=True)
class _Entry:
    func: Func
    self_origin: str
    bindings: tuple[tuple[str, Val], ...]
    how: str
    line: int
    multi: bool
    process: bool


@dataclass(frozen=True, slots=True)
class _Use:
    holder: Holder
    entry: _Entry
    func: Func
    node: ast.expr
    method: str
    locked: bool
    writes: bool


def analyze_module(tree: ast.Module, path: str) -> list[Finding]:
    """Run every rule over one parsed module; findings are unsorted and unfiltered."""
    return _Analysis(Module(tree), path).run()


def _sql_text(call: ast.Call) -> str | None:
    """The literal SQL of an ``execute``-style call (the constant part of an f-string)."""
    if not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr):
        head = []
        for part in arg.values:
            if not (isinstance(part, ast.Constant) and isinstance(part.value, str)):
                break
            head.append(part.value)
        return "".join(head) or None
    return None


def _is_write_call(call: ast.Call) -> bool:
    fn = call.func
    if not isinstance(fn, ast.Attribute):
        return False
    if fn.attr in ("commit", "executemany"):
        return True
    sql = _sql_text(call) if fn.attr in ("execute", "executescript") else None
    if sql is None:
        return False
    return any(_WRITE_SQL.match(part) for part in sql.split(";"))


class _Analysis:
    def __init__(self, module: Module, path: str) -> None:
        self.m = module
        self.path = path
        self.findings: list[Finding] = []
        self._blocking: dict[int, int | None] = {}

    def run(self) -> list[Finding]:
        entries = self._entries()
        uses: list[_Use] = []
        reached_connects: list[tuple[ast.Call, Func]] = []
        for entry in entries:
            states = self._reach(entry)
            on_thread = {f.qualname for f, *_ in states}
            for f, so, locked, bindings in states:
                for cs in f.calls:
                    if self.m.is_connect(cs.call):
                        reached_connects.append((cs.call, f))
                if not entry.process:
                    uses.extend(self._uses(entry, f, so, locked, bindings, on_thread))
        self._thread_rules(uses)
        self._timeout_rule(uses, reached_connects)
        self._async_rule()
        self._deferred_rule()
        return self.findings

    def _add(self, rule: str, node: ast.AST, message: str) -> None:
        line = getattr(node, "lineno", 1)
        col = getattr(node, "col_offset", 0) + 1
        self.findings.append(Finding(self.path, line, col, rule, message))

    # -- entries -----------------------------------------------------------------------------

    def _entries(self) -> list[_Entry]:
        m = self.m
        out: list[_Entry] = []
        for f in m.funcs:
            for cs in f.calls:
                entry = self._spawn(f, cs.call, multi=cs.in_loop or f.is_async)
                if entry is not None:
                    out.append(entry)
            node = f.node
            if not isinstance(node, ast.FunctionDef):
                continue
            for dec in node.decorator_list:
                if (
                    isinstance(dec, ast.Call)
                    and isinstance(dec.func, ast.Attribute)
                    and dec.func.attr in _ROUTE_DECORATORS
                ):
                    how = "sync route handler, run in a thread pool"
                    out.append(_Entry(f, SHARED, (), how, dec.lineno, True, False))
                    break
            if f.cls is not None and f.name in _HTTP_METHODS and self._is_endpoint(f.cls):
                how = "sync HTTPEndpoint method, run in a thread pool"
                out.append(_Entry(f, SHARED, (), how, node.lineno, True, False))
        # A Thread subclass that this module never starts is started by the code importing it:
        # its run() is still a thread's body, reported at the class.
        started = {id(e.func) for e in out if e.how == _THREAD_SUBCLASS}
        for cls, cls_node in m.classes.items():
            run = m.method(cls, "run") if self._is_thread_class(cls) else None
            if run is not None and id(run) not in started:
                started.add(id(run))
                out.append(
                    _Entry(run, THREAD_SELF, (), _THREAD_SUBCLASS, cls_node.lineno, False, False)
                )
        return out

    def _is_endpoint(self, cls: str, depth: int = 0) -> bool:
        node = self.m.classes.get(cls)
        if node is None or depth > 5:  # (``class A(A)``: a loop of bases)
            return False
        for base in node.bases:
            name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
            if name == "HTTPEndpoint" or (
                name in self.m.classes and self._is_endpoint(name, depth + 1)
            ):
                return True
        return False

    def _is_thread_class(self, cls: str, depth: int = 0) -> bool:
        """Whether module class ``cls`` subclasses ``threading.Thread``, itself or through
        module bases (``class Worker(Thread)`` after ``from threading import Thread``)."""
        node = self.m.classes.get(cls)
        if node is None or depth > 5:
            return False
        for base in node.bases:
            if self.m.dotted(base) == "threading.Thread":
                return True
            if isinstance(base, ast.Name) and self._is_thread_class(base.id, depth + 1):
                return True
        return False

    def _thread_start(self, f: Func, receiver: ast.expr, line: int, multi: bool) -> _Entry | None:
        """``receiver.start()`` on an instance of a ``threading.Thread`` subclass: its ``run()``
        runs on the new thread, ``self`` being the object made (and set up) before."""
        owner = self.m.value(receiver, f, SHARED, ())
        if owner is None or owner.kind != "inst" or owner.cls is None:
            return None
        if not self._is_thread_class(owner.cls):
            return None
        run = self.m.method(owner.cls, "run")
        if run is None:
            return None  # Thread.run: calls the target= given to the constructor
        return _Entry(run, THREAD_SELF, (), _THREAD_SUBCLASS, line, multi, False)

    def _spawn(self, f: Func, call: ast.Call, *, multi: bool) -> _Entry | None:
        m = self.m
        fn = call.func
        dotted = m.dotted(fn)
        attr = fn.attr if isinstance(fn, ast.Attribute) else None
        target: ast.expr | None = None
        args: list[ast.expr] = []
        process = False
        how: str
        if dotted in _TO_THREAD and call.args:
            how, target, args = _TO_THREAD[dotted], call.args[0], call.args[1:]
        elif attr == "run_in_executor" and len(call.args) >= 2:
            how, target, args = "loop.run_in_executor", call.args[1], call.args[2:]
            executor = m.value(call.args[0], f, SHARED, ())
            process = executor is not None and executor.kind == "procexec"
            multi = True
        elif dotted in _THREAD_CTORS:
            position, process = _THREAD_CTORS[dotted]
            how = dotted
            for kw in call.keywords:
                if kw.arg in ("target", "function"):
                    target = kw.value
                elif kw.arg == "args" and isinstance(kw.value, (ast.Tuple, ast.List)):
                    args = list(kw.value.elts)
            if target is None and len(call.args) > position:
                target = call.args[position]
                extra = call.args[position + 2 :] if dotted == "threading.Thread" else []
                if len(call.args) > position + 1 and dotted == "threading.Timer":
                    extra = [call.args[position + 1]]
                if extra and isinstance(extra[0], (ast.Tuple, ast.List)):
                    args = list(extra[0].elts)
        elif attr in ("submit", "map") and isinstance(fn, ast.Attribute) and call.args:
            executor = m.value(fn.value, f, SHARED, ())
            if executor is None or executor.kind not in ("executor", "procexec"):
                return None
            process = executor.kind == "procexec"
            how = f"executor.{attr}"
            target, args = call.args[0], (call.args[1:] if attr == "submit" else [])
            multi = True
        elif attr in _POOL_PROCESS_METHODS and isinstance(fn, ast.Attribute) and call.args:
            pool = m.value(fn.value, f, SHARED, ())
            if pool is None or pool.kind != "procexec":
                return None
            how, target, process, multi = f"pool.{attr}", call.args[0], True, True
        elif self._is_route_call(call, dotted, attr):
            target = self._route_target(call, attr)
            how, multi = "sync route handler, run in a thread pool", True
        elif attr == "start" and isinstance(fn, ast.Attribute) and not call.args:
            return self._thread_start(f, fn.value, call.lineno, multi)
        else:
            return None
        if target is None:
            return None
        resolved = self._target(f, target)
        if resolved is None:
            return None
        func, self_origin, bound_args, skip = resolved
        if how.startswith("sync route") and func.is_async:
            return None
        bindings = self._bind(func, [*bound_args, *args], [], f, SHARED, (), skip, handed=True)
        return _Entry(func, self_origin, bindings, how, call.lineno, multi, process)

    @staticmethod
    def _is_route_call(call: ast.Call, dotted: str | None, attr: str | None) -> bool:
        if attr in _ROUTE_CALLS or attr == "add_url_rule":
            return True
        name = dotted or (call.func.id if isinstance(call.func, ast.Name) else "")
        return name.rsplit(".", 1)[-1] in ("Route", "APIRoute")

    @staticmethod
    def _route_target(call: ast.Call, attr: str | None) -> ast.expr | None:
        keyword, position = ("view_func", 2) if attr == "add_url_rule" else ("endpoint", 1)
        for kw in call.keywords:
            if kw.arg == keyword:
                return kw.value
        return call.args[position] if len(call.args) > position else None

    def _target(self, f: Func, expr: ast.expr) -> tuple[Func, str, list[ast.expr], int] | None:
        """The function a spawn runs: (func, origin of self, pre-bound args, params to skip)."""
        m = self.m
        if isinstance(expr, ast.Lambda):
            lam = m.lambdas.get(id(expr))
            return (lam, SHARED, [], 0) if lam is not None else None
        if isinstance(expr, ast.Name):
            func = m.resolve_function(expr.id, f)
            return (func, SHARED, [], 0) if func is not None else None
        if isinstance(expr, ast.Attribute):
            owner = m.value(expr.value, f, SHARED, ())
            if owner is not None and owner.kind == "inst" and owner.cls is not None:
                method = m.method(owner.cls, expr.attr)
                # No such method in the class or its module bases: it comes from a base
                # outside this module, not from another class that happens to define it.
                return (method, owner.origin, [], 1) if method is not None else None
            # The receiver's class is unknown: accept a method name only one class defines.
            classes = [c for c, methods in m.methods.items() if expr.attr in methods]
            if len(classes) == 1:
                return m.methods[classes[0]][expr.attr], SHARED, [], 1
            return None
        if isinstance(expr, ast.Call) and expr.args:
            if m.dotted(expr.func) in ("functools.partial", "functools.partialmethod"):
                inner = self._target(f, expr.args[0])
                if inner is not None:
                    func, origin, bound, skip = inner
                    return func, origin, [*bound, *expr.args[1:]], skip
        return None

    def _bind(
        self,
        callee: Func,
        args: list[ast.expr],
        keywords: list[ast.keyword],
        caller: Func,
        self_origin: str,
        bindings: tuple[tuple[str, Val], ...],
        skip: int,
        *,
        handed: bool = False,
    ) -> tuple[tuple[str, Val], ...]:
        """What ``callee``'s parameters hold when ``caller`` calls it with ``args``.

        :param handed: ``callee`` starts another thread: a connection made in the arguments
            themselves is held by the parameter (:meth:`Module.handed`)
        """
        params = callee.params[skip:]
        out: list[tuple[str, Val]] = []
        for name, arg in zip(params, args, strict=False):
            if isinstance(arg, ast.Starred):
                break
            val = self.m.value(arg, caller, self_origin, bindings)
            if val is not None and val.kind in ("conn", "cursor", "inst"):
                out.append((name, self.m.handed(val, name, arg, caller) if handed else val))
        for kw in keywords:
            if kw.arg is not None and kw.arg in params:
                val = self.m.value(kw.value, caller, self_origin, bindings)
                if val is not None and val.kind in ("conn", "cursor", "inst"):
                    out.append((kw.arg, val))
        return tuple(out)

    # -- reachability ------------------------------------------------------------------------

    def _reach(self, entry: _Entry) -> list[tuple[Func, str, bool, tuple[tuple[str, Val], ...]]]:
        start = (entry.func, entry.self_origin, False, entry.bindings)
        seen = {(id(entry.func), entry.self_origin, False, entry.bindings)}
        order = [start]
        queue = deque([start])
        while queue:
            f, so, locked, bindings = queue.popleft()
            for cs in f.calls:
                callee = self._callee(f, so, bindings, cs.call)
                if callee is None:
                    continue
                g, g_origin, g_bindings = callee
                state = (g, g_origin, locked or cs.locked, g_bindings)
                key = (id(g), g_origin, state[2], g_bindings)
                if key in seen or len(seen) >= _MAX_STATES:
                    continue
                seen.add(key)
                order.append(state)
                queue.append(state)
        return order

    def _callee(
        self, f: Func, so: str, bindings: tuple[tuple[str, Val], ...], call: ast.Call
    ) -> tuple[Func, str, tuple[tuple[str, Val], ...]] | None:
        m = self.m
        fn = call.func
        if isinstance(fn, ast.Name):
            g = m.resolve_function(fn.id, f)
            if g is not None:
                # a closure that a Thread subclass's run() calls sees the thread's own ``self``
                g_origin = so if so == THREAD_SELF and g.parent is f else SHARED
                return g, g_origin, self._bind(g, call.args, call.keywords, f, so, bindings, 0)
            if fn.id in m.classes and m.lookup(fn.id, f) is m.module:
                init = m.method(fn.id, "__init__")
                if init is not None:
                    b = self._bind(init, call.args, call.keywords, f, so, bindings, 1)
                    return init, f.qualname, b
            return None
        if isinstance(fn, ast.Attribute):
            owner = m.value(fn.value, f, so, bindings)
            if owner is not None and owner.kind == "inst" and owner.cls is not None:
                g = m.method(owner.cls, fn.attr)
                if g is not None:
                    b = self._bind(g, call.args, call.keywords, f, so, bindings, 1)
                    return g, owner.origin, b
        return None

    def _uses(
        self,
        entry: _Entry,
        f: Func,
        so: str,
        locked: bool,
        bindings: tuple[tuple[str, Val], ...],
        on_thread: set[str],
    ) -> list[_Use]:
        out: list[_Use] = []
        sites: list[tuple[ast.expr, str, bool, bool]] = []
        for cs in f.calls:
            fn = cs.call.func
            if isinstance(fn, ast.Attribute):
                sites.append((fn.value, fn.attr, cs.locked, _is_write_call(cs.call)))
        for expr, with_locked in f.withs:
            sites.append((expr, "__enter__", with_locked, True))
        for expr, method, site_locked, writes in sites:
            val = self.m.value(expr, f, so, bindings)
            if val is None or val.kind not in ("conn", "cursor") or val.holder is None:
                continue
            if val.origin in on_thread:
                continue  # made on this thread: a per-thread connection
            out.append(_Use(val.holder, entry, f, expr, method, locked or site_locked, writes))
        return out

    # -- LG101, LG102, LG104, LG105 ----------------------------------------------------------

    def _thread_rules(self, uses: list[_Use]) -> None:
        by_holder: dict[Holder, list[_Use]] = {}
        for use in uses:
            by_holder.setdefault(use.holder, []).append(use)
        for holder, holder_uses in by_holder.items():
            self._per_function(holder, holder_uses)
            if holder.scope in ("global", "class"):
                self._global_rule(holder, holder_uses)

    def _per_function(self, holder: Holder, uses: list[_Use]) -> None:
        what = "cursor" if holder.kind == "cursor" else "connection"
        made = f"{what} `{holder.display}` is created {holder.where} (line {_line(holder)})"
        seen_sites: set[tuple[int, int]] = set()
        groups: dict[int, list[_Use]] = {}
        for use in uses:
            key = (use.node.lineno, use.node.col_offset)
            if key in seen_sites:
                continue
            seen_sites.add(key)
            groups.setdefault(id(use.func), []).append(use)
        for group in groups.values():
            group.sort(key=lambda u: (u.node.lineno, u.node.col_offset))
            first = group[0]
            where = (
                f"{first.func.qualname}, which runs on another thread "
                f"({first.entry.how}, line {first.entry.line})"
            )
            if holder.scope == "arg" and holder.shares_threads:
                continue  # made in the arguments that start the thread: no other thread has it
            if holder.dropin:
                self._dropin_close(holder, group, what, where)
                continue
            if not holder.shares_threads:
                self._add(
                    "LG101",
                    first.node,
                    f"{made} but used here in {where}: sqlite3 raises ProgrammingError "
                    "(objects created in a thread can only be used in that same thread)",
                )
                continue
            rest: list[_Use] = []
            for use in group:
                if use.method == "close" or (use.method in _FINISH and not use.locked):
                    verb = "with" if use.method == "__enter__" else f"{use.method}()"
                    self._add(
                        "LG105",
                        use.node,
                        f"{verb} on shared {what} `{holder.display}` from worker code in {where}",
                    )
                else:
                    rest.append(use)
            unlocked = [u for u in rest if not u.locked]
            if unlocked:
                self._add(
                    "LG102",
                    unlocked[0].node,
                    f"{made} with check_same_thread=False and used here in {where} "
                    "with no lock held: statements from different threads interleave "
                    "in one transaction",
                )

    def _dropin_close(self, holder: Holder, group: list[_Use], what: str, where: str) -> None:
        """The drop-in lets threads share a connection, each with its own transaction, but a
        worker's ``close()`` still closes it for every thread (a cursor still holds one query)."""
        for use in group:
            if use.method == "close":
                self._add(
                    "LG105",
                    use.node,
                    f"close() on shared {what} `{holder.display}` from worker code in {where}",
                )

    def _global_rule(self, holder: Holder, uses: list[_Use]) -> None:
        if holder.dropin and holder.kind == "conn":
            return  # made to be shared; a shared *cursor* still mixes threads' rows
        entries: dict[tuple[int, int], _Entry] = {}
        for use in uses:
            entries.setdefault((id(use.entry.func), use.entry.line), use.entry)
        several = len(entries) > 1 or any(e.multi for e in entries.values())
        if not several:
            return
        if holder.shares_threads and all(u.locked for u in uses):
            return
        names = sorted({e.func.qualname for e in entries.values()})
        what = "cursor" if holder.kind == "cursor" else "connection"
        count = f"{len(names)} thread targets" if len(names) > 1 else "several threads"
        self._add(
            "LG104",
            holder.node,
            f"global {what} `{holder.display}` is used by {count} ({', '.join(names)})",
        )

    # -- LG106 -------------------------------------------------------------------------------

    def _timeout_rule(self, uses: list[_Use], reached: list[tuple[ast.Call, Func]]) -> None:
        candidates: dict[int, tuple[ast.Call, Func, str]] = {}
        written = any(_is_write_call(cs.call) for f in self.m.funcs for cs in f.calls)
        by_holder: dict[Holder, list[_Use]] = {}
        for use in uses:
            by_holder.setdefault(use.holder, []).append(use)
        for holder, holder_uses in by_holder.items():
            if holder.site is None or holder.site_func is None or not holder.shares_threads:
                continue
            if holder.dropin:
                continue  # assumed: the drop-in, like litegate's engine, queues its threads' writes
            if holder.scope == "arg":
                continue  # each call that starts a thread makes its own: not shared
            entries = {(id(u.entry.func), u.entry.line) for u in holder_uses if u.writes}
            multi = any(u.entry.multi for u in holder_uses if u.writes)
            if len(entries) > 1 or (entries and multi):
                why = f"shared connection `{holder.display}` is written from several threads"
                candidates[id(holder.site)] = (holder.site, holder.site_func, why)
        if written:
            for call, f in reached:
                why = "each thread or process opens its own connection here and the module writes"
                candidates.setdefault(id(call), (call, f, why))
            for f in self.m.funcs:
                for cs in f.calls:
                    if cs.in_loop and self.m.is_connect(cs.call):
                        why = "connections opened in a loop (a pool) write to one file"
                        candidates.setdefault(id(cs.call), (cs.call, f, why))
        for call, f, why in candidates.values():
            database = connect_arg(call, "database", 0)
            if isinstance(database, ast.Constant) and ":memory:" in str(database.value):
                continue  # a private in-memory database: no other connection can lock it
            timeout = connect_arg(call, "timeout", 1)
            if timeout is not None and not (
                isinstance(timeout, ast.Constant) and timeout.value in (0, 0.0)
            ):
                continue
            if self._sets_busy_timeout(f):
                continue
            detail = "timeout=0" if timeout is not None else "no timeout= or busy_timeout"
            self._add(
                "LG106",
                call,
                f"sqlite3.connect() with {detail}: {why}; a writer that finds the file "
                "locked gives up with 'database is locked' after the default 5 s",
            )

    @staticmethod
    def _sets_busy_timeout(f: Func) -> bool:
        for cs in f.calls:
            sql = _sql_text(cs.call)
            if sql is not None and "busy_timeout" in sql.lower():
                return True
        return False

    # -- LG103 -------------------------------------------------------------------------------

    def _async_rule(self) -> None:
        m = self.m
        exempt = self._lifespan_names()
        for f in m.funcs:
            if not f.is_async or f.name in exempt or _LIFESPAN_NAME.search(f.name):
                continue
            if self._has_startup_decorator(f):
                continue
            seen: set[tuple[int, int]] = set()
            # innermost call first, so ``conn.execute(...).fetchall()`` reports execute()
            calls = sorted(
                f.calls, key=lambda cs: (cs.call.lineno, cs.call.col_offset, _end(cs.call))
            )
            for cs in calls:
                if cs.awaited:
                    continue
                message = self._blocking_message(f, cs.call)
                key = (cs.call.lineno, cs.call.col_offset)
                if message is not None and key not in seen:
                    seen.add(key)
                    self._add("LG103", cs.call, f"in async def {f.name}(): {message}")

    def _blocking_message(self, f: Func, call: ast.Call) -> str | None:
        m = self.m
        fn = call.func
        if m.is_connect(call):
            return "sqlite3.connect() blocks the event loop"
        if isinstance(fn, ast.Attribute) and fn.attr in _BLOCKING:
            val = m.value(fn.value, f, SHARED, ())
            if val is not None and val.kind in ("conn", "cursor"):
                return f"sqlite3 {fn.attr}() blocks the event loop"
        callee = self._callee(f, SHARED, (), call)
        if callee is not None and not callee[0].is_async:
            line = self._blocking_line(callee[0])
            if line is not None:
                return (
                    f"{callee[0].qualname}() runs sqlite3 (line {line}) and blocks the event loop"
                )
        return None

    def _blocking_line(self, f: Func) -> int | None:
        key = id(f)
        if key in self._blocking:
            return self._blocking[key]
        self._blocking[key] = None  # cycle guard
        found: int | None = None
        for cs in f.calls:
            fn = cs.call.func
            if self.m.is_connect(cs.call):
                found = cs.call.lineno
            elif isinstance(fn, ast.Attribute) and fn.attr in _BLOCKING:
                val = self.m.value(fn.value, f, SHARED, ())
                if val is not None and val.kind in ("conn", "cursor"):
                    found = cs.call.lineno
            if found is None:
                callee = self._callee(f, SHARED, (), cs.call)
                if callee is not None and not callee[0].is_async:
                    if self._blocking_line(callee[0]) is not None:
                        found = cs.call.lineno
            if found is not None:
                break
        self._blocking[key] = found
        return found

    def _lifespan_names(self) -> set[str]:
        names: set[str] = set()
        for f in self.m.funcs:
            for cs in f.calls:
                for kw in cs.call.keywords:
                    if kw.arg == "lifespan" and isinstance(kw.value, ast.Name):
                        names.add(kw.value.id)
                    elif kw.arg in ("on_startup", "on_shutdown") and isinstance(
                        kw.value, (ast.List, ast.Tuple)
                    ):
                        names.update(e.id for e in kw.value.elts if isinstance(e, ast.Name))
        return names

    @staticmethod
    def _has_startup_decorator(f: Func) -> bool:
        node = f.node
        if not isinstance(node, ast.AsyncFunctionDef):
            return False
        for dec in node.decorator_list:
            target = dec.func if isinstance(dec, ast.Call) else dec
            if isinstance(target, ast.Attribute) and target.attr in ("on_event", "listen"):
                return True
        return False

    # -- LG107 -------------------------------------------------------------------------------

    def _deferred_rule(self) -> None:
        for f in self.m.funcs:
            begin: ast.Call | None = None
            calls = sorted(f.calls, key=lambda cs: (cs.call.lineno, cs.call.col_offset))
            for cs in calls:
                fn = cs.call.func
                if not isinstance(fn, ast.Attribute) or fn.attr not in ("execute", "executescript"):
                    continue
                sql = _sql_text(cs.call)
                if sql is None:
                    continue
                parts = [p for p in sql.split(";") if p.strip()]
                for part in parts:
                    if begin is None and _DEFERRED_BEGIN.match(part):
                        begin = cs.call
                    elif begin is not None and _WRITE_SQL.match(part):
                        self._add(
                            "LG107",
                            begin,
                            f"transaction starts DEFERRED here and writes at line "
                            f"{cs.call.lineno}: if it reads first, the upgrade to a write "
                            "lock fails at once with 'database is locked'",
                        )
                        begin = None
                        break
                    elif re.match(r"^\s*(commit|end|rollback)\b", part, re.I):
                        begin = None


def _end(node: ast.AST) -> int:
    return getattr(node, "end_col_offset", 0) or 0


def _line(holder: Holder) -> int:
    return getattr(holder.node, "lineno", 0)
