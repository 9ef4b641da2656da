"""What ``postgresql+sessionbroker`` supports, for SQLAlchemy's dialect
compliance suite (``sqlalchemy.testing.suite``).

SuiteRequirements answers "closed" for most features by default; this class
opens every one PostgreSQL has, because the dialect is SQLAlchemy's own
PostgreSQL dialect and the broker runs the SQL on PostgreSQL unchanged. It
closes a feature only where the broker itself cannot offer it, and says why
in the property's docstring; docs/clients.md ("What is not supported") lists
the same exclusions. Read by SQLAlchemy's pytest plugin (setup.cfg,
[sqla_testing] requirement_cls); no state, thread-safe.
"""

from sqlalchemy.testing import exclusions
from sqlalchemy.testing.requirements import SuiteRequirements

_open = exclusions.open
_closed = exclusions.closed


class Requirements(SuiteRequirements):
    """The dialect's capabilities."""

    # ---- closed: what the broker does not offer (docs/clients.md) --------

    @property
    def two_phase_transactions(self):
        """PREPARE TRANSACTION is transaction control, refused by the broker
        (a prepared transaction would outlive the session that owns it)."""
        return _closed()

    @property
    def temp_table_reflection(self):
        """Temporary tables last until the broker resets the connection,
        i.e. the end of the transaction that made them; the suite creates
        them in one transaction and reflects them in another."""
        return _closed()

    @property
    def temp_table_names(self):
        """As temp_table_reflection."""
        return _closed()

    @property
    def temporary_tables(self):
        """As temp_table_reflection."""
        return _closed()

    @property
    def temporary_views(self):
        """As temp_table_reflection."""
        return _closed()

    @property
    def has_temp_table(self):
        """As temp_table_reflection."""
        return _closed()

    @property
    def default_schema_name_switch(self):
        """A SET search_path on a connection lasts only for its call or
        transaction (the broker resets connections: no state leaks); the
        schema path of a session is set with its settings instead
        (?setting.search_path=... in the URL)."""
        return _closed()

    @property
    def datetime_literals(self):
        """Not the broker's: SQLAlchemy 1.4's PostgreSQL dialect has no
        literal renderer for date/time values (it fails the same way over
        psycopg2)."""
        return _closed()

    @property
    def server_side_cursors(self):
        """Closed for the suite only: SQLAlchemy 1.4's ServerSideCursorsTest
        recognises server-side cursors of psycopg2 and the MySQL drivers
        alone (_is_server_side), so it fails any other driver's. The sync
        dialect streams stream_results / yield_per through StreamExecute
        (tests/sqlalchemy/test_dialect.py proves it); the async one does not."""
        return _closed()

    # ---- open: PostgreSQL's features, through the broker ------------------


    @property
    def savepoints(self):
        """SAVEPOINT / begin_nested(): the broker runs savepoint statements
        inside a session's transaction, with PostgreSQL's aborted state."""
        return _open()

    @property
    def table_ddl_if_exists(self):
        return _open()

    @property
    def index_ddl_if_exists(self):
        return _open()

    @property
    def table_value_constructor(self):
        return _open()

    @property
    def deferrable_fks(self):
        return _open()

    @property
    def boolean_col_expressions(self):
        return _open()

    @property
    def nullsordering(self):
        return _open()

    @property
    def standalone_binds(self):
        return _open()

    @property
    def intersect(self):
        return _open()

    @property
    def except_(self):
        return _open()

    @property
    def window_functions(self):
        return _open()

    @property
    def ctes(self):
        return _open()

    @property
    def ctes_with_update_delete(self):
        return _open()

    @property
    def ctes_on_dml(self):
        return _open()

    @property
    def tuple_in(self):
        return _open()

    @property
    def views(self):
        return _open()

    @property
    def cross_schema_fk_reflection(self):
        return _open()

    @property
    def foreign_key_constraint_name_reflection(self):
        return _open()

    @property
    def implicit_default_schema(self):
        return _open()

    @property
    def reflects_pk_names(self):
        return _open()

    @property
    def reflect_tables_no_columns(self):
        return _open()

    @property
    def comment_reflection(self):
        return _open()

    @property
    def foreign_key_constraint_option_reflection_ondelete(self):
        return _open()

    @property
    def fk_constraint_option_reflection_ondelete_restrict(self):
        return _open()

    @property
    def fk_constraint_option_reflection_ondelete_noaction(self):
        return _open()

    @property
    def foreign_key_constraint_option_reflection_onupdate(self):
        return _open()

    @property
    def fk_constraint_option_reflection_onupdate_restrict(self):
        return _open()

    @property
    def index_reflects_included_columns(self):
        return _open()

    @property
    def indexes_with_expressions(self):
        return _open()

    @property
    def check_constraint_reflection(self):
        return _open()

    @property
    def unicode_ddl(self):
        return _open()

    @property
    def datetime_timezone(self):
        return _open()

    @property
    def time_timezone(self):
        return _open()

    @property
    def timestamp_microseconds(self):
        return _open()

    @property
    def datetime_historic(self):
        return _open()

    @property
    def date_historic(self):
        return _open()

    @property
    def autocommit(self):
        return _open()

    @property
    def isolation_level(self):
        return _open()

    def get_isolation_levels(self, config):
        return {
            "default": "READ COMMITTED",
            "supported": [
                "SERIALIZABLE",
                "READ COMMITTED",
                "REPEATABLE READ",
                "AUTOCOMMIT",
            ],
        }

    @property
    def json_type(self):
        return _open()

    @property
    def json_index_supplementary_unicode_element(self):
        return _open()

    @property
    def legacy_unconditional_json_extract(self):
        return _open()

    @property
    def precision_numerics_enotation_small(self):
        return _open()

    @property
    def precision_numerics_enotation_large(self):
        return _open()

    @property
    def precision_numerics_many_significant_digits(self):
        return _open()

    @property
    def precision_numerics_retains_significant_digits(self):
        return _open()

    @property
    def infinity_floats(self):
        return _open()

    @property
    def update_from(self):
        return _open()

    @property
    def delete_from(self):
        return _open()

    @property
    def mod_operator_as_percent_sign(self):
        return _open()

    @property
    def percent_schema_names(self):
        return _open()

    @property
    def order_by_label_with_expression(self):
        return _open()

    def get_order_by_collation(self, config):
        return "POSIX"

    @property
    def computed_columns(self):
        return _open()

    @property
    def computed_columns_stored(self):
        return _open()

    @property
    def computed_columns_reflect_persisted(self):
        return _open()

    @property
    def computed_columns_default_persisted(self):
        return _open()

    @property
    def supports_distinct_on(self):
        return _open()

    @property
    def identity_columns(self):
        return _open()

    @property
    def identity_columns_standard(self):
        return _open()

    @property
    def regexp_match(self):
        return _open()

    @property
    def regexp_replace(self):
        return _open()

    @property
    def fetch_first(self):
        return _open()

    @property
    def fetch_ties(self):
        return _open()

    @property
    def fetch_no_order_by(self):
        return _open()

    @property
    def fetch_offset_with_options(self):
        return _open()

    @property
    def fetch_expression(self):
        return _open()

    @property
    def uuid_data_type(self):
        return _open()

    @property
    def array_type(self):
        return _open()
