"""The tests of CPython's ``test_sqlite3`` that ``litegate.sqlite3`` fails on purpose, with why.

docs/sqlite3.md lists the same (tests/dropin/test_conformance.py checks both ways: every
failing test is listed here, every test listed here fails, and the docs name each).
Keys: ``module.Class.method`` (subtests share their method's entry).
"""

from __future__ import annotations

SHARED = (
    "connections are meant to be shared: another thread's use is allowed "
    "(check_same_thread is accepted and has no effect)"
)
THREADSAFETY = (
    "threadsafety is 2 (threads may share connections), the DB-API value that is true for "
    "this module; the test accepts only 0, 1 or 3"
)
EAGER = (
    "a cursor fetches its whole result when it executes, so it never pins a connection; "
    "'recursive use of cursors' from a converter or factory during a fetch cannot happen"
)
REINIT = (
    "calling __init__ again on an open connection is not supported: it is bound to its "
    "file's engine"
)
ATTACH = (
    "ATTACH is refused on the shared engine (it would apply to one of its connections); "
    "attach on every connection with litegate={'on_connect': ...}"
)
NESTED = (
    "a write from inside a callback (progress handler, user function) of a statement on an "
    "in-memory engine's single connection would wait for itself: it is refused"
)
PRAGMA = (
    "a PRAGMA that changes a connection setting to a value other than the shared engine's "
    "is refused with NotSupportedError"
)
VACUUM_MEMORY = "VACUUM of an in-memory database is refused (of a file it works)"
WAL = (
    "the file is kept in WAL mode: switching it needs a moment when no other process holds "
    "it in a transaction, and afterwards a reader no longer blocks a writer"
)
WARNING_SITE = (
    "a DeprecationWarning that sqlite3 raises while a statement runs (default date/time "
    "adapters and converters, named placeholders given a sequence) points at litegate's "
    "frame, not the caller's line"
)
ARGUMENT_FORMS = (
    "Python 3.13's DeprecationWarnings for argument forms (keyword arguments to "
    "create_function and the other hooks, positional connect arguments) are not emitted: "
    "litegate.sqlite3 accepts those forms"
)

DIFFERENCES: dict[str, str] = {
    "test_backup.BackupTests.test_database_source_name": ATTACH,
    "test_backup.BackupTests.test_modifying_progress": NESTED,
    "test_dbapi.ConnectionTests.test_connect_positional_arguments": ARGUMENT_FORMS,
    "test_dbapi.ConnectionTests.test_connection_bad_reinit": REINIT,
    "test_dbapi.ConnectionTests.test_connection_reinit": REINIT,
    "test_dbapi.CursorTests.test_execute_named_param_and_sequence": WARNING_SITE,
    "test_dbapi.CursorTests.test_rowcount_vaccuum": VACUUM_MEMORY,
    "test_dbapi.ModuleTests.test_thread_safety": THREADSAFETY,
    "test_dbapi.MultiprocessTests.test_ctx_mgr_rollback_if_commit_failed": WAL,
    "test_dbapi.ThreadTests.test_check_connection_thread": SHARED,
    "test_dbapi.ThreadTests.test_check_cursor_thread": SHARED,
    "test_factory.ConnectionFactoryTests.test_connection_factory_as_positional_arg": (
        ARGUMENT_FORMS
    ),
    "test_hooks.ProgressTests.test_progress_handler_keyword_args": ARGUMENT_FORMS,
    "test_hooks.TraceCallbackTests.test_trace_keyword_args": ARGUMENT_FORMS,
    "test_regression.RecursiveUseOfCursors.test_recursive_cursor_close": EAGER,
    "test_regression.RecursiveUseOfCursors.test_recursive_cursor_init": EAGER,
    "test_regression.RecursiveUseOfCursors.test_recursive_cursor_iter": EAGER,
    "test_regression.RegressionTests.test_convert_timestamp_microsecond_padding": WARNING_SITE,
    "test_regression.RegressionTests.test_recursive_cursor_use": EAGER,
    "test_regression.RegressionTests.test_table_lock_cursor_non_readonly_select": NESTED,
    "test_transactions.SpecialCommandTests.test_pragma": PRAGMA,
    "test_types.DateTimeTests.test_date_time_sub_seconds": WARNING_SITE,
    "test_types.DateTimeTests.test_date_time_sub_seconds_floating_point": WARNING_SITE,
    "test_types.DateTimeTests.test_sql_timestamp": WARNING_SITE,
    "test_types.DateTimeTests.test_sqlite_date": WARNING_SITE,
    "test_types.DateTimeTests.test_sqlite_timestamp": WARNING_SITE,
    "test_userfunctions.AggregateTests.test_agg_keyword_args": ARGUMENT_FORMS,
    "test_userfunctions.AuthorizerIllegalTypeTests.test_authorizer_keyword_args": ARGUMENT_FORMS,
    "test_userfunctions.AuthorizerLargeIntegerTests.test_authorizer_keyword_args": (ARGUMENT_FORMS),
    "test_userfunctions.AuthorizerRaiseExceptionTests.test_authorizer_keyword_args": (
        ARGUMENT_FORMS
    ),
    "test_userfunctions.AuthorizerTests.test_authorizer_keyword_args": ARGUMENT_FORMS,
    "test_userfunctions.FunctionTests.test_func_keyword_args": ARGUMENT_FORMS,
}

# Differences that begin with a Python version (its sqlite3 changed); on older ones these
# tests pass.
FROM_PYTHON: dict[str, tuple[int, int]] = {
    key: (3, 13) if reason is ARGUMENT_FORMS else (3, 12)
    for key, reason in DIFFERENCES.items()
    if reason in (ARGUMENT_FORMS, WARNING_SITE)
}
