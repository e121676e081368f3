"""One module, indexed for the doctor: its functions, what each name holds, and where.

The index is built in one pass over the module's AST. Each function (and lambda) gets a
:class:`Func` record: its parameters, local names and the expressions assigned to them, and
every call made in its own body with the context of the call (inside a ``with lock:`` block,
inside a loop, awaited). Values are then inferred lazily and only as deep as the rules need:
"this expression is a sqlite3 connection made by that ``connect()`` call, stored in that
global / ``self`` attribute / ``app.state`` attribute, and created in that function".
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ("DROPIN_CONNECT", "Func", "Holder", "Module", "Val")

_LOCKISH = re.compile(r"lock|mutex|semaphore|(^|_)sem($|_)", re.IGNORECASE)
_LOCK_CTORS = frozenset(
    {
        "threading.Lock",
        "threading.RLock",
        "threading.Semaphore",
        "threading.BoundedSemaphore",
        "threading.Condition",
    }
)
_EXECUTORS = frozenset({"concurrent.futures.ThreadPoolExecutor", "multiprocessing.pool.ThreadPool"})
_PROC_EXECUTORS = frozenset(
    {"concurrent.futures.ProcessPoolExecutor", "multiprocessing.Pool", "multiprocessing.pool.Pool"}
)
_CONNECT = "sqlite3.connect"
# litegate's drop-in for the sqlite3 module: one connection may be shared by threads, each with
# its own transaction, so the cross-thread rules do not apply to the connections it makes.
DROPIN_CONNECT = "litegate.sqlite3.connect"
_CONNECTS = frozenset({_CONNECT, DROPIN_CONNECT})
_CURSOR_METHODS = frozenset({"cursor", "execute", "executemany", "executescript"})
_FUNC_NODES = (ast.FunctionDef, ast.AsyncFunctionDef)

# Origins that are never "made in this thread".
SHARED = "<shared>"
# The origin of ``self`` in the ``run()`` of a ``threading.Thread`` subclass (and in the methods
# it calls on ``self``): the object is made on the thread that creates it, where ``__init__``
# runs, but ``run()`` runs on the new thread. So each attribute takes the origin of the
# function that assigned it: made in ``__init__``, it crossed threads; made in ``run()``, not.
THREAD_SELF = "<thread-self>"


class CallSite(NamedTuple):
    """A call in a function's own body, with the context it runs in."""

    call: ast.Call
    locked: bool
    in_loop: bool
    awaited: bool


@dataclass(eq=False, slots=True)
class Holder:
    """Where a connection or cursor is kept: a global, an attribute, a local.

    :ivar display: how messages name it (``conn``, ``Store._conn``, ``app.state.db``)
    :ivar scope: ``global``, ``class``, ``attr``, ``state``, ``local``, or ``arg`` (made in the
        arguments that start a thread, ``args=(sqlite3.connect(...),)``: that thread's alone)
    :ivar kind: ``conn`` or ``cursor``
    :ivar site: the ``sqlite3.connect(...)`` call that made the connection, if known
    :ivar site_func: the function containing that call
    :ivar node: the assignment target (where the holder is reported)
    :ivar where: the place of creation in words (``at module level``, ``in Store.__init__``)
    :ivar dropin: the connection was made by ``litegate.sqlite3.connect`` (however imported)
    """

    display: str
    scope: str
    kind: str
    site: ast.Call | None
    site_func: Func | None
    node: ast.AST
    where: str
    dropin: bool = False

    def kwarg(self, name: str, position: int) -> ast.expr | None:
        """The argument given to the connect call for ``name``, or ``None``."""
        if self.site is None:
            return None
        return connect_arg(self.site, name, position)

    @property
    def shares_threads(self) -> bool:
        """``check_same_thread=False`` was passed, or may be (through ``**kwargs``), or the
        connection comes from the drop-in, which is made to be shared."""
        if self.dropin:
            return True
        arg = self.kwarg("check_same_thread", 4)
        if arg is None and self.site is not None:
            return any(kw.arg is None for kw in self.site.keywords)
        return not (isinstance(arg, ast.Constant) and arg.value is not False)


def connect_arg(call: ast.Call, name: str, position: int) -> ast.expr | None:
    """Argument ``name`` (or positional ``position``) of a ``sqlite3.connect`` call."""
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    if len(call.args) > position and not any(isinstance(a, ast.Starred) for a in call.args):
        return call.args[position]
    return None


@dataclass(frozen=True, slots=True)
class Val:
    """What an expression holds, as far as the doctor cares.

    :ivar kind: ``conn``, ``cursor``, ``inst`` (instance of a class of this module), ``tlocal``,
        ``executor``, ``procexec`` or ``lock``
    :ivar origin: qualified name of the function the object was made in, or ``"<shared>"``
    :ivar holder: for ``conn``/``cursor``, where it is kept
    :ivar site: for ``conn``/``cursor``, the connect call
    :ivar cls: for ``inst``, the class name
    """

    kind: str
    origin: str = SHARED
    holder: Holder | None = None
    site: ast.Call | None = None
    site_func: Func | None = None
    cls: str | None = None


@dataclass(eq=False, slots=True)
class Func:
    """A function, method, lambda, or the module body (``qualname == "<module>"``)."""

    node: ast.AST
    qualname: str
    cls: str | None
    parent: Func | None
    is_async: bool = False
    params: list[str] = field(default_factory=list)
    annotations: dict[str, ast.expr] = field(default_factory=dict)
    locals: set[str] = field(default_factory=set)
    # name -> [(target, value, function the assignment is in)]
    values: dict[str, list[tuple[ast.AST, ast.expr, Func]]] = field(default_factory=dict)
    declared_global: set[str] = field(default_factory=set)
    declared_nonlocal: set[str] = field(default_factory=set)
    calls: list[CallSite] = field(default_factory=list)
    withs: list[tuple[ast.expr, bool]] = field(default_factory=list)
    children: dict[str, Func] = field(default_factory=dict)
    returns: list[ast.expr] = field(default_factory=list)
    yields: list[ast.expr] = field(default_factory=list)
    self_name: str | None = None

    @property
    def name(self) -> str:
        """The short name (``add``), or the qualified name for lambdas."""
        node = self.node
        return node.name if isinstance(node, _FUNC_NODES) else self.qualname


class Module:
    """The index of one module. Build it with ``Module(tree)``."""

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.aliases: dict[str, str] = {}
        self.funcs: list[Func] = []
        self.classes: dict[str, ast.ClassDef] = {}
        self.methods: dict[str, dict[str, Func]] = {}
        self.bases: dict[str, list[str]] = {}
        # (class, attr) -> [(target, value, func)] ; class body assignments use func=module
        self.attr_values: dict[tuple[str, str], list[tuple[ast.AST, ast.expr, Func]]] = {}
        self.class_values: dict[tuple[str, str], list[tuple[ast.AST, ast.expr]]] = {}
        self.attr_annotations: dict[tuple[str, str], ast.expr] = {}
        self.state_values: dict[str, list[tuple[ast.AST, ast.expr, Func]]] = {}
        self.holders: dict[tuple[str, ...], Holder] = {}
        self.lambdas: dict[int, Func] = {}
        self._returns_conn: dict[int, Val | None] = {}
        self.module = Func(tree, "<module>", None, None)
        self.funcs.append(self.module)
        _Builder(self, self.module).body(tree.body, locked=False, in_loop=False)

    # -- names -------------------------------------------------------------------------------

    def dotted(self, expr: ast.expr) -> str | None:
        """The imported dotted name an expression refers to (``sqlite3.connect``), if any."""
        parts: list[str] = []
        while isinstance(expr, ast.Attribute):
            parts.append(expr.attr)
            expr = expr.value
        if not isinstance(expr, ast.Name):
            return None
        base = self.aliases.get(expr.id)
        if base is None:
            return None
        parts.append(base)
        return ".".join(reversed(parts))

    def is_connect(self, call: ast.Call) -> bool:
        """Whether ``call`` opens a connection: ``sqlite3.connect`` or the drop-in's."""
        return self.dotted(call.func) in _CONNECTS

    def lookup(self, name: str, func: Func) -> Func:
        """The function whose scope defines ``name`` as seen from ``func``; module if global."""
        f: Func | None = func
        while f is not None and f is not self.module:
            if name in f.declared_global:
                break
            if name in f.params or name in f.locals:
                return f
            f = f.parent
        return self.module

    def resolve_function(self, name: str, func: Func) -> Func | None:
        """The function a bare name calls from ``func``: nested, enclosing, or module level."""
        f: Func | None = func
        while f is not None:
            if name in f.children:
                return f.children[name]
            if f is not self.module and (name in f.params or name in f.locals):
                return None
            f = f.parent
        return self.module.children.get(name)

    def method(self, cls: str, name: str, depth: int = 0) -> Func | None:
        """Method ``name`` of class ``cls`` of this module, looking through module bases."""
        found = self.methods.get(cls, {}).get(name)
        if found is not None or depth > 5:
            return found
        for base in self.bases.get(cls, ()):
            found = self.method(base, name, depth + 1)
            if found is not None:
                return found
        return None

    def class_of_annotation(self, ann: ast.expr | None) -> str | None:
        """The module class an annotation names (``Store``, ``"Store"``, ``Store | None``)."""
        if ann is None:
            return None
        if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
            return ann.value if ann.value in self.classes else None
        if isinstance(ann, ast.Name):
            return ann.id if ann.id in self.classes else None
        if isinstance(ann, ast.BinOp):
            return self.class_of_annotation(ann.left) or self.class_of_annotation(ann.right)
        if isinstance(ann, ast.Subscript):
            return self.class_of_annotation(ann.slice)
        return None

    def is_lock(self, expr: ast.expr, func: Func) -> bool:
        """Whether a ``with`` item looks like a lock shared between threads.

        Called while the index is being built, so it looks only at names and at what was
        assigned to them so far, never at inferred values.
        """
        if isinstance(expr, ast.Call):
            return False  # ``with threading.Lock():`` guards nothing
        if isinstance(expr, ast.Attribute):
            last = expr.attr
            if isinstance(expr.value, ast.Name) and expr.value.id == func.self_name:
                assigned = [v for _, v, _ in self.attr_values.get((func.cls or "", last), ())]
            else:
                assigned = []
        elif isinstance(expr, ast.Name):
            last = expr.id
            scope = self.lookup(last, func)
            assigned = [v for _, v, _ in scope.values.get(last, ())]
        else:
            return False
        if _LOCKISH.search(last):
            return True
        return any(isinstance(v, ast.Call) and self.dotted(v.func) in _LOCK_CTORS for v in assigned)

    # -- values ------------------------------------------------------------------------------

    def value(
        self,
        expr: ast.expr,
        func: Func,
        self_origin: str,
        bindings: tuple[tuple[str, Val], ...],
        depth: int = 0,
    ) -> Val | None:
        """What ``expr`` holds when evaluated in ``func``.

        :param self_origin: origin of the instance ``self`` is bound to
        :param bindings: values of parameters known from the caller
        """
        if depth > 8:
            return None
        if isinstance(expr, ast.Name):
            return self._name_value(expr.id, func, self_origin, bindings, depth)
        if isinstance(expr, ast.Attribute):
            return self._attr_value(expr, func, self_origin, bindings, depth)
        if isinstance(expr, ast.Call):
            return self._call_value(expr, func, self_origin, bindings, depth)
        if isinstance(expr, ast.Await):
            return None
        if isinstance(expr, ast.NamedExpr):
            src = self.value(expr.value, func, self_origin, bindings, depth + 1)
            if src is None or not isinstance(expr.target, ast.Name):
                return src
            # ``(c := sqlite3.connect(...))`` is held by ``c``, as after ``c = sqlite3.connect(...)``
            name = expr.target.id
            return self._assigned(src, name, self.lookup(name, func), expr.target, func)
        return None

    def handed(self, val: Val, param: str, arg: ast.expr, func: Func) -> Val:
        """``val``, evaluated in ``func`` as argument ``arg`` of a call that starts a thread, as
        the new thread's parameter ``param`` holds it.

        A connection made right there (``args=(sqlite3.connect(...),)``) has no name that holds
        it: it is held by ``param``. A value that has a holder (``args=(conn,)``) keeps it.
        """
        if val.kind not in ("conn", "cursor") or val.holder is not None:
            return val
        key = ("arg", func.qualname, str(arg.lineno), str(arg.col_offset))
        return self._stored(val, key, param, "arg", arg, None)

    def _name_value(
        self,
        name: str,
        func: Func,
        self_origin: str,
        bindings: tuple[tuple[str, Val], ...],
        depth: int,
    ) -> Val | None:
        owner = self.lookup(name, func)
        if owner is not self.module and name in owner.params:
            if owner is func:
                for bound_name, val in bindings:
                    if bound_name == name:
                        return val
            if name == owner.self_name and owner.cls is not None:
                # a closure sees ``self`` as shared, unless a thread's run() (or a method it
                # calls) calls it: then it runs on that thread (``_Analysis._callee``)
                mine = owner is func or self_origin == THREAD_SELF
                return Val("inst", self_origin if mine else SHARED, cls=owner.cls)
            cls = self.class_of_annotation(owner.annotations.get(name))
            return Val("inst", SHARED, cls=cls) if cls else None
        for target, value_expr, where in owner.values.get(name, ()):
            src = self.value(
                value_expr, where, self_origin if where is func else SHARED, (), depth + 1
            )
            if src is not None:
                return self._assigned(src, name, owner, target, where)
        return None

    def _assigned(self, src: Val, name: str, owner: Func, target: ast.AST, where: Func) -> Val:
        """The value of ``name`` (a name of ``owner``) once ``target`` in ``where`` assigned it
        ``src``."""
        if owner is self.module:
            return self._stored(src, ("global", name), name, "global", target, "<global>")
        # assigned by a nested function (``nonlocal``): shared by every thread running it
        origin = None if where is owner else SHARED
        key = ("local", owner.qualname, name)
        return self._stored(src, key, name, "local", target, origin)

    def _stored(
        self,
        src: Val,
        key: tuple[str, ...],
        display: str,
        scope: str,
        target: ast.AST,
        origin: str | None,
    ) -> Val:
        """The value of a holder (global, attribute, local) that was assigned ``src``."""
        new_origin = src.origin if origin is None else origin
        if src.kind not in ("conn", "cursor"):
            if src.kind == "inst" and origin is not None:
                return Val("inst", SHARED, cls=src.cls)
            return Val(src.kind, new_origin, cls=src.cls)
        if src.holder is not None and src.holder.scope != "local" and scope == "local":
            # ``c = self._conn``: an alias keeps the original holder
            return Val(src.kind, new_origin, src.holder, src.site, src.site_func)
        holder = self.holders.get(key)
        if holder is None:
            site_func = src.site_func
            if site_func is None or site_func is self.module:
                where = "at module level"
            else:
                where = f"in {site_func.qualname}"
            dropin = src.site is not None and self.dotted(src.site.func) == DROPIN_CONNECT
            holder = Holder(
                display, scope, src.kind, src.site, src.site_func, target, where, dropin
            )
            self.holders[key] = holder
        return Val(src.kind, new_origin, holder, src.site, src.site_func)

    def _attr_value(
        self,
        expr: ast.Attribute,
        func: Func,
        self_origin: str,
        bindings: tuple[tuple[str, Val], ...],
        depth: int,
    ) -> Val | None:
        attr = expr.attr
        base = expr.value
        if isinstance(base, ast.Attribute) and base.attr == "state":
            return self._state_value(attr, depth)
        if isinstance(base, ast.Name) and base.id in self.classes and base.id not in func.params:
            return self._member_value(base.id, attr, SHARED, depth)
        owner = self.value(base, func, self_origin, bindings, depth + 1)
        if owner is None or owner.kind != "inst" or owner.cls is None:
            return None
        return self._member_value(owner.cls, attr, owner.origin, depth)

    def _member_value(self, cls: str, attr: str, origin: str, depth: int) -> Val | None:
        own = origin == THREAD_SELF  # each attribute made where it was assigned
        for c in self._mro(cls):
            for target, value_expr in self.class_values.get((c, attr), ()):
                src = self.value(value_expr, self.module, SHARED, (), depth + 1)
                if src is not None:
                    key = ("class", c, attr)
                    return self._stored(src, key, f"{c}.{attr}", "class", target, "<global>")
            for target, value_expr, method in self.attr_values.get((c, attr), ()):
                src = self.value(value_expr, method, origin, (), depth + 1)
                if src is None:
                    continue
                if src.kind in ("conn", "cursor"):
                    key = ("attr", c, attr)
                    made = None if own else origin
                    return self._stored(src, key, f"{c}.{attr}", "attr", target, made)
                return Val(src.kind, src.origin if own else origin, cls=src.cls)
            ann_cls = self.class_of_annotation(self.attr_annotations.get((c, attr)))
            if ann_cls is not None:
                return Val("inst", SHARED if own else origin, cls=ann_cls)
        return None

    def _mro(self, cls: str) -> list[str]:
        out = [cls]
        for base in self.bases.get(cls, ()):
            if base not in out and len(out) < 8:
                out.extend(b for b in self._mro(base) if b not in out)
        return out

    def _state_value(self, attr: str, depth: int) -> Val | None:
        for target, value_expr, func in self.state_values.get(attr, ()):
            src = self.value(value_expr, func, SHARED, (), depth + 1)
            if src is not None:
                key = ("state", attr)
                return self._stored(src, key, f"app.state.{attr}", "state", target, "<global>")
        return None

    def _call_value(
        self,
        call: ast.Call,
        func: Func,
        self_origin: str,
        bindings: tuple[tuple[str, Val], ...],
        depth: int,
    ) -> Val | None:
        fn = call.func
        dotted = self.dotted(fn)
        here = func.qualname
        if dotted in _CONNECTS:
            return Val("conn", here, site=call, site_func=func)
        if dotted is not None:
            if dotted in ("threading.local", "_threading_local.local"):
                return Val("tlocal", here)
            if dotted in _EXECUTORS:
                return Val("executor", here)
            if dotted in _PROC_EXECUTORS:
                return Val("procexec", here)
            if dotted in _LOCK_CTORS:
                return Val("lock", here)
            if dotted == "contextlib.closing" and call.args:
                return self.value(call.args[0], func, self_origin, bindings, depth + 1)
        if isinstance(fn, ast.Attribute) and fn.attr in _CURSOR_METHODS:
            base = self.value(fn.value, func, self_origin, bindings, depth + 1)
            if base is not None and base.kind == "conn":
                return Val("cursor", base.origin, base.holder, base.site, base.site_func)
            if base is not None and base.kind == "cursor" and fn.attr != "cursor":
                return base
            return None
        if isinstance(fn, ast.Name):
            if fn.id in self.classes and self.lookup(fn.id, func) is self.module:
                return Val("inst", here, cls=fn.id)
            target = self.resolve_function(fn.id, func)
            if target is not None:
                made = self.returned_connection(target, depth)
                if made is not None:
                    return Val(made.kind, here, site=made.site, site_func=made.site_func)
        return None

    def returned_connection(self, func: Func, depth: int = 0) -> Val | None:
        """The connection a factory function returns (``return sqlite3.connect(...)``)."""
        key = id(func)
        if key in self._returns_conn:
            return self._returns_conn[key]
        self._returns_conn[key] = None  # cycle guard
        found: Val | None = None
        for ret in func.returns:
            val = self.value(ret, func, SHARED, (), depth + 1)
            if val is not None and val.kind == "conn":
                found = val
                break
        self._returns_conn[key] = found
        return found


class _Builder:
    """Walks one function body and fills its :class:`Func` record (and the module's tables)."""

    def __init__(
        self, module: Module, func: Func, cls: str | None = None, cls_parent: Func | None = None
    ) -> None:
        self.m = module
        self.f = func
        # set when building the methods of a class body
        self._cls = cls
        self._cls_parent = cls_parent

    # -- statements --------------------------------------------------------------------------

    def body(self, stmts: list[ast.stmt], *, locked: bool, in_loop: bool) -> None:
        for stmt in stmts:
            toggle = self._lock_toggle(stmt)
            if toggle == "acquire":
                self.stmt(stmt, locked, in_loop)
                locked = True
                continue
            self.stmt(stmt, locked, in_loop)
            if toggle == "release":
                locked = False

    def _lock_toggle(self, stmt: ast.stmt) -> str | None:
        if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
            return None
        fn = stmt.value.func
        if isinstance(fn, ast.Attribute) and fn.attr in ("acquire", "release"):
            if self.m.is_lock(fn.value, self.f):
                return fn.attr
        return None

    def stmt(self, s: ast.stmt, locked: bool, in_loop: bool) -> None:
        if isinstance(s, _FUNC_NODES):
            self._function(s, locked, in_loop)
        elif isinstance(s, ast.ClassDef):
            self._class(s, locked, in_loop)
        elif isinstance(s, ast.Assign):
            self.expr(s.value, locked, in_loop)
            for target in s.targets:
                self._target(target, s.value, locked, in_loop)
        elif isinstance(s, ast.AnnAssign):
            if s.value is not None:
                self.expr(s.value, locked, in_loop)
            self._annotated(s)
            self._target(s.target, s.value, locked, in_loop)
        elif isinstance(s, ast.AugAssign):
            self.expr(s.value, locked, in_loop)
            self._target(s.target, None, locked, in_loop)
        elif isinstance(s, (ast.With, ast.AsyncWith)):
            holds_lock = False
            for item in s.items:
                self.expr(item.context_expr, locked, in_loop)
                if isinstance(s, ast.With):
                    self.f.withs.append((item.context_expr, locked))
                    holds_lock = holds_lock or self.m.is_lock(item.context_expr, self.f)
                if item.optional_vars is not None:
                    self._target(item.optional_vars, item.context_expr, locked, in_loop)
            self.body(s.body, locked=locked or holds_lock, in_loop=in_loop)
        elif isinstance(s, (ast.For, ast.AsyncFor)):
            self.expr(s.iter, locked, in_loop)
            self._target(s.target, None, locked, in_loop)
            self.body(s.body, locked=locked, in_loop=True)
            self.body(s.orelse, locked=locked, in_loop=in_loop)
        elif isinstance(s, ast.While):
            self.expr(s.test, locked, in_loop)
            self.body(s.body, locked=locked, in_loop=True)
            self.body(s.orelse, locked=locked, in_loop=in_loop)
        elif isinstance(s, ast.If):
            self.expr(s.test, locked, in_loop)
            self.body(s.body, locked=locked, in_loop=in_loop)
            self.body(s.orelse, locked=locked, in_loop=in_loop)
        elif isinstance(s, (ast.Try, ast.TryStar)):
            self.body(s.body, locked=locked, in_loop=in_loop)
            for handler in s.handlers:
                if handler.type is not None:
                    self.expr(handler.type, locked, in_loop)
                if handler.name:
                    self.f.locals.add(handler.name)
                self.body(handler.body, locked=locked, in_loop=in_loop)
            self.body(s.orelse, locked=locked, in_loop=in_loop)
            self.body(s.finalbody, locked=locked, in_loop=in_loop)
        elif isinstance(s, ast.Return):
            if s.value is not None:
                self.f.returns.append(s.value)
                self.expr(s.value, locked, in_loop)
        elif isinstance(s, ast.Global):
            self.f.declared_global.update(s.names)
        elif isinstance(s, ast.Nonlocal):
            self.f.declared_nonlocal.update(s.names)
        elif isinstance(s, (ast.Import, ast.ImportFrom)):
            self._import(s)
        elif isinstance(s, ast.Match):
            self.expr(s.subject, locked, in_loop)
            for case in s.cases:
                self.body(case.body, locked=locked, in_loop=in_loop)
        else:
            for child in ast.iter_child_nodes(s):
                if isinstance(child, ast.expr):
                    self.expr(child, locked, in_loop)
                elif isinstance(child, ast.stmt):
                    self.stmt(child, locked, in_loop)

    def _import(self, s: ast.Import | ast.ImportFrom) -> None:
        if isinstance(s, ast.Import):
            for alias in s.names:
                if alias.asname:
                    self.m.aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    self.m.aliases[top] = top
                self.f.locals.add(alias.asname or alias.name.split(".")[0])
            return
        if s.module is None or s.level:
            return
        for alias in s.names:
            local = alias.asname or alias.name
            self.m.aliases[local] = f"{s.module}.{alias.name}"
            if self.f is not self.m.module:
                self.f.locals.add(local)

    def _annotated(self, s: ast.AnnAssign) -> None:
        t = s.target
        if (
            isinstance(t, ast.Attribute)
            and isinstance(t.value, ast.Name)
            and t.value.id == self.f.self_name
            and self.f.cls is not None
        ):
            self.m.attr_annotations[(self.f.cls, t.attr)] = s.annotation

    def _target(self, t: ast.expr, value: ast.expr | None, locked: bool, in_loop: bool) -> None:
        f = self.f
        if isinstance(t, ast.Name):
            if t.id in f.declared_global or t.id in f.declared_nonlocal:
                # the name belongs to the module or to an enclosing function, not to ``f``
                if value is not None:
                    owner = self.m.module
                    if t.id in f.declared_nonlocal and f.parent is not None:
                        owner = self.m.lookup(t.id, f.parent)
                    owner.values.setdefault(t.id, []).append((t, value, f))
                return
            f.locals.add(t.id)
            if value is not None:
                f.values.setdefault(t.id, []).append((t, value, f))
        elif isinstance(t, ast.Attribute):
            self.expr(t.value, locked, in_loop)
            if value is None:
                return
            base = t.value
            if isinstance(base, ast.Name) and base.id == f.self_name and f.cls is not None:
                self.m.attr_values.setdefault((f.cls, t.attr), []).append((t, value, f))
            elif isinstance(base, ast.Attribute) and base.attr == "state":
                self.m.state_values.setdefault(t.attr, []).append((t, value, f))
        elif isinstance(t, (ast.Tuple, ast.List)):
            for elt in t.elts:
                self._target(elt, None, locked, in_loop)
        elif isinstance(t, ast.Starred):
            self._target(t.value, None, locked, in_loop)
        else:
            self.expr(t, locked, in_loop)

    # -- definitions -------------------------------------------------------------------------

    def _function(
        self, node: ast.FunctionDef | ast.AsyncFunctionDef, locked: bool, in_loop: bool
    ) -> None:
        for dec in node.decorator_list:
            self.expr(dec, locked, in_loop)
        self._defaults(node.args, locked, in_loop)
        f = self.f
        cls = self._cls
        prefix = f"{cls}." if cls else ("" if f is self.m.module else f"{f.qualname}.")
        child = Func(
            node,
            prefix + node.name,
            cls,
            f if cls is None else self._cls_parent,
            is_async=isinstance(node, ast.AsyncFunctionDef),
        )
        self._params(child, node.args)
        is_static = any(
            isinstance(d, ast.Name) and d.id in ("staticmethod", "classmethod")
            for d in node.decorator_list
        )
        if cls is not None and child.params and not is_static:
            child.self_name = child.params[0]
            self.m.methods.setdefault(cls, {})[node.name] = child
        else:
            f.children[node.name] = child
            if f is not self.m.module:
                f.locals.add(node.name)
        self.m.funcs.append(child)
        _Builder(self.m, child).body(node.body, locked=False, in_loop=False)

    def _defaults(self, args: ast.arguments, locked: bool, in_loop: bool) -> None:
        for default in [*args.defaults, *args.kw_defaults]:
            if default is not None:
                self.expr(default, locked, in_loop)

    @staticmethod
    def _params(func: Func, args: ast.arguments) -> None:
        all_args = [*args.posonlyargs, *args.args]
        if args.vararg:
            all_args.append(args.vararg)
        all_args.extend(args.kwonlyargs)
        if args.kwarg:
            all_args.append(args.kwarg)
        for a in all_args:
            func.params.append(a.arg)
            if a.annotation is not None:
                func.annotations[a.arg] = a.annotation

    def _class(self, node: ast.ClassDef, locked: bool, in_loop: bool) -> None:
        for dec in node.decorator_list:
            self.expr(dec, locked, in_loop)
        name = node.name
        self.m.classes.setdefault(name, node)
        self.m.bases[name] = [b.id for b in node.bases if isinstance(b, ast.Name)]
        self.m.methods.setdefault(name, {})
        if self.f is not self.m.module:
            self.f.locals.add(name)
        inner = _Builder(self.m, self.f, name, self.f if self.f is not self.m.module else None)
        for s in node.body:
            if isinstance(s, _FUNC_NODES):
                inner._function(s, locked, in_loop)
            elif isinstance(s, ast.Assign):
                self.expr(s.value, locked, in_loop)
                for t in s.targets:
                    if isinstance(t, ast.Name):
                        self.m.class_values.setdefault((name, t.id), []).append((t, s.value))
            elif isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name):
                if s.value is not None:
                    self.expr(s.value, locked, in_loop)
                    self.m.class_values.setdefault((name, s.target.id), []).append(
                        (s.target, s.value)
                    )
                else:
                    self.m.attr_annotations[(name, s.target.id)] = s.annotation
            elif isinstance(s, ast.ClassDef):
                self._class(s, locked, in_loop)

    # -- expressions -------------------------------------------------------------------------

    def expr(self, e: ast.expr, locked: bool, in_loop: bool, awaited: bool = False) -> None:
        # An explicit stack: deep expression trees must not hit the recursion limit.
        stack: list[tuple[ast.AST, bool, bool]] = [(e, in_loop, awaited)]
        f = self.f
        while stack:
            node, loop, aw = stack.pop()
            if isinstance(node, ast.Call):
                f.calls.append(CallSite(node, locked, loop, aw))
            elif isinstance(node, ast.Lambda):
                self._lambda(node, locked, loop)
                continue
            elif isinstance(node, ast.Await):
                stack.append((node.value, loop, True))
                continue
            elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
                for child in ast.iter_child_nodes(node):
                    stack.append((child, True, False))
                continue
            elif isinstance(node, ast.NamedExpr):
                if isinstance(node.target, ast.Name):
                    f.locals.add(node.target.id)
                    f.values.setdefault(node.target.id, []).append((node.target, node.value, f))
            elif isinstance(node, (ast.Yield, ast.YieldFrom)) and node.value is not None:
                f.yields.append(node.value)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.expr, ast.comprehension, ast.keyword)):
                    stack.append((child, loop, False))

    def _lambda(self, node: ast.Lambda, locked: bool, in_loop: bool) -> None:
        self._defaults(node.args, locked, in_loop)
        f = self.f
        child = Func(node, f"{f.qualname}.<lambda:{node.lineno}>", None, f)
        if f is self.m.module:
            child.qualname = f"<lambda:{node.lineno}>"
        self._params(child, node.args)
        self.m.funcs.append(child)
        self.m.lambdas[id(node)] = child
        child.returns.append(node.body)
        _Builder(self.m, child).expr(node.body, False, False)
