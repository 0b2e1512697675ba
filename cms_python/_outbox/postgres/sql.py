"""The PostgreSQL store's SQL: its schema and the statements that are more than a line, apart from the Python
that runs them (`store.py`), and readable without the driver (`cms outbox migrate --sql`). Parameters are named
(`%(name)s`): the enqueue runs through the app's handles too, whose drivers all read them."""

from __future__ import annotations

from ..store import LONGEST_WAIT

#: The schema written here (`cms_outbox_schema.version`); a database with a higher one is refused.
SCHEMA_VERSION = 1

SCHEMA = f"""
CREATE TABLE cms_outbox_schema (
    version integer NOT NULL,
    outbox text NOT NULL DEFAULT md5(random()::text || clock_timestamp()::text)
);
INSERT INTO cms_outbox_schema (version) VALUES ({SCHEMA_VERSION});
CREATE SEQUENCE cms_outbox_seq;
CREATE TABLE cms_outbox_events (
    seq bigint PRIMARY KEY DEFAULT nextval('cms_outbox_seq'),
    scope text NOT NULL,
    kind text NOT NULL,
    idempotency_key text NOT NULL,
    customer text NOT NULL,
    body text NOT NULL,
    fingerprint text NOT NULL,
    stamped_at double precision,
    queued_at double precision NOT NULL,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'failed', 'delivered')),
    promoted boolean NOT NULL DEFAULT false,
    attempts integer NOT NULL DEFAULT 0,
    not_before double precision NOT NULL DEFAULT 0,
    claim_owner text,
    claim_expires double precision,
    result text,
    done_at double precision,
    UNIQUE (scope, idempotency_key)
);
ALTER SEQUENCE cms_outbox_seq OWNED BY cms_outbox_events.seq;
CREATE INDEX cms_outbox_events_new ON cms_outbox_events (scope, seq) WHERE NOT promoted;
CREATE INDEX cms_outbox_events_pending ON cms_outbox_events (scope, seq) WHERE state = 'pending';
CREATE INDEX cms_outbox_events_next ON cms_outbox_events (scope, customer, seq) WHERE state = 'pending' AND promoted;
CREATE INDEX cms_outbox_events_delivered ON cms_outbox_events (scope, done_at) WHERE state = 'delivered';
CREATE TABLE cms_outbox_heads (
    scope text NOT NULL,
    customer text NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (scope, customer)
);
CREATE INDEX cms_outbox_heads_order ON cms_outbox_heads (scope, seq);
CREATE TABLE cms_outbox_pace (
    scope text PRIMARY KEY,
    next_send_at double precision NOT NULL DEFAULT 0,
    hold_length double precision NOT NULL DEFAULT 0
);
CREATE TABLE cms_outbox_counts (
    scope text NOT NULL,
    owner text NOT NULL,
    promoted bigint NOT NULL DEFAULT 0,
    settled bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    delivered bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, owner)
);
"""  # noqa: S608 - constant text

# The enqueue, on the outbox's own connection or an app's (so: named parameters, no casts, one statement), as
# cheap as an insert gets: a delivered event stays in the table (its body emptied) for `DELIVERED_MEMORY`, so that
# the key's unique index alone says whether the event is known. It inserts nothing into another outbox's tables
# (`outbox`: the id of the outbox's own), which an app's connection to another database or search path reaches.
ENQUEUE = """
INSERT INTO cms_outbox_events (scope, kind, idempotency_key, customer, body, fingerprint, stamped_at, queued_at)
SELECT %(scope)s, %(kind)s, %(key)s, %(customer)s, %(body)s, %(fingerprint)s, %(stamped_at)s, %(now)s
FROM cms_outbox_schema WHERE outbox = %(outbox)s
ON CONFLICT (scope, idempotency_key) DO NOTHING
RETURNING seq
"""
# When the insert did not happen: whether the statement reached the outbox's own tables, then what holds the key.
OURS = "SELECT EXISTS (SELECT 1 FROM cms_outbox_schema WHERE outbox = %(outbox)s)"
OUTBOX = "SELECT outbox FROM cms_outbox_schema ORDER BY version LIMIT 1"
KNOWN = "SELECT seq, fingerprint FROM cms_outbox_events WHERE scope = %(scope)s AND idempotency_key = %(key)s"
COLUMNS = "seq, kind, idempotency_key, body, fingerprint, stamped_at, queued_at, attempts, result"
UNPROMOTED = "SELECT 1 FROM cms_outbox_events WHERE scope = %s AND NOT promoted"
PROMOTE = """
WITH fresh AS (
    SELECT seq, customer FROM cms_outbox_events WHERE scope = %(scope)s AND NOT promoted ORDER BY seq LIMIT %(limit)s
), marked AS (
    UPDATE cms_outbox_events AS e SET promoted = true FROM fresh WHERE e.seq = fresh.seq
), heads AS (
    INSERT INTO cms_outbox_heads (scope, customer, seq)
    SELECT DISTINCT ON (customer) %(scope)s, customer, seq FROM fresh ORDER BY customer, seq
    ON CONFLICT DO NOTHING
), counted AS (
    INSERT INTO cms_outbox_counts (scope, owner, promoted)
    SELECT %(scope)s, %(owner)s, count(*) FROM fresh HAVING count(*) > 0
    ON CONFLICT (scope, owner) DO UPDATE SET promoted = cms_outbox_counts.promoted + excluded.promoted
)
SELECT count(*) FROM fresh
"""
#: The seconds the server keeps a transaction of the store's own open while its process says nothing (`SET LOCAL`:
#: for that transaction only, which works through PgBouncer in transaction mode too).
IDLE_IN_TRANSACTION = 10
LIMIT_IDLE_IN_TRANSACTION = f"SET LOCAL idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION}s'"
#: What serialises, per scope, promotion, claims and count folding (outcomes wait for it: `SHARE_PACE`).
LOCK_PACE = "SELECT 1 FROM cms_outbox_pace WHERE scope = %(scope)s FOR UPDATE"
#: Taken by an outcome's statement: waits for a promotion under way (which moves heads too), not for other outcomes.
SHARE_PACE = "SELECT 1 FROM cms_outbox_pace WHERE scope = %(scope)s FOR SHARE"
PACE = """
SELECT next_send_at, hold_length,
       EXISTS (SELECT 1 FROM cms_outbox_events WHERE scope = %(scope)s AND state = 'pending')
FROM cms_outbox_pace WHERE scope = %(scope)s FOR UPDATE
"""
# Only heads can be sent: the scan skips, at most, the heads that wait for a retry or are claimed by another
# process, however long each customer's backlog.
CLAIM = f"""
WITH chosen AS (
    SELECT e.seq FROM cms_outbox_heads AS h JOIN cms_outbox_events AS e ON e.seq = h.seq
    WHERE h.scope = %(scope)s
      AND (e.not_before <= %(now)s OR e.not_before > %(now)s + {LONGEST_WAIT})
      AND (e.claim_expires IS NULL OR e.claim_expires <= %(now)s OR e.claim_owner = %(owner)s)
    ORDER BY h.seq LIMIT %(limit)s
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE cms_outbox_events AS e SET claim_owner = %(owner)s, claim_expires = %(expires)s
FROM chosen WHERE e.seq = chosen.seq
RETURNING {", ".join(f"e.{column}" for column in COLUMNS.split(", "))}
"""  # noqa: S608 - constant text
HOLD = """
UPDATE cms_outbox_pace SET next_send_at = %(until)s, hold_length = %(until)s - %(now)s
WHERE scope = %(scope)s AND next_send_at < %(until)s
"""


def settling(change: str, *, delivered: int, failed: int) -> str:
    """One statement that takes claimed events out of `pending` (`change`: a CTE named `gone` returning their
    seq, customer and promoted), moves each customer's head to its next promoted pending event (the statement's
    snapshot still sees the events `gone` changed: they are left out by seq), and counts them; it returns the
    seconds until any process of the scope may send again."""
    return f"""
WITH gone AS ({change}),
nexts AS (
    SELECT g.customer, g.seq AS old, (
        SELECT e.seq FROM cms_outbox_events AS e
        WHERE e.scope = %(scope)s AND e.customer = g.customer AND e.state = 'pending' AND e.promoted
          AND e.seq <> ALL(%(seqs)s)
        ORDER BY e.seq LIMIT 1
    ) AS new
    FROM gone AS g
), moved AS (
    UPDATE cms_outbox_heads AS h SET seq = n.new FROM nexts AS n
    WHERE h.scope = %(scope)s AND h.customer = n.customer AND h.seq = n.old AND n.new IS NOT NULL
), dropped AS (
    DELETE FROM cms_outbox_heads AS h USING nexts AS n
    WHERE h.scope = %(scope)s AND h.customer = n.customer AND h.seq = n.old AND n.new IS NULL
), counted AS (
    INSERT INTO cms_outbox_counts (scope, owner, promoted, settled, failed, delivered)
    SELECT %(scope)s, %(owner)s, count(*) FILTER (WHERE NOT promoted), count(*), {failed} * count(*),
           {delivered} * count(*)
    FROM gone HAVING count(*) > 0
    ON CONFLICT (scope, owner) DO UPDATE SET
        promoted = cms_outbox_counts.promoted + excluded.promoted,
        settled = cms_outbox_counts.settled + excluded.settled,
        failed = cms_outbox_counts.failed + excluded.failed,
        delivered = cms_outbox_counts.delivered + excluded.delivered
)
SELECT greatest(least(next_send_at - %(now)s, hold_length), 0) FROM cms_outbox_pace WHERE scope = %(scope)s
"""  # noqa: S608 - constant text


DELIVERED = settling(
    """
    UPDATE cms_outbox_events SET state = 'delivered', body = '', result = NULL, done_at = %(now)s,
        claim_owner = NULL, claim_expires = NULL
    WHERE seq = ANY(%(seqs)s) AND scope = %(scope)s AND state = 'pending'
    RETURNING seq, customer, promoted
""",
    delivered=1,
    failed=0,
)
FAILED = settling(
    """
    UPDATE cms_outbox_events SET state = 'failed', result = %(result)s, attempts = attempts + %(attempted)s,
        claim_owner = NULL, claim_expires = NULL
    WHERE seq = ANY(%(seqs)s) AND scope = %(scope)s AND state = 'pending'
    RETURNING seq, customer, promoted
""",
    delivered=0,
    failed=1,
)
FORGET = """
DELETE FROM cms_outbox_events WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM cms_outbox_events
    WHERE scope = %(scope)s AND state = 'delivered' AND done_at < %(before)s LIMIT %(limit)s
))
"""
CHANGE_COUNTS = """
INSERT INTO cms_outbox_counts (scope, owner, failed) VALUES (%(scope)s, %(owner)s, %(failed)s)
ON CONFLICT (scope, owner) DO UPDATE SET failed = cms_outbox_counts.failed + excluded.failed
"""
FOLD_COUNTS = """
WITH others AS (
    DELETE FROM cms_outbox_counts WHERE scope = %(scope)s AND owner <> %(owner)s
    RETURNING promoted, settled, failed, delivered
)
INSERT INTO cms_outbox_counts (scope, owner, promoted, settled, failed, delivered)
SELECT %(scope)s, %(owner)s, sum(promoted), sum(settled), sum(failed), sum(delivered) FROM others
HAVING count(*) > 0
ON CONFLICT (scope, owner) DO UPDATE SET
    promoted = cms_outbox_counts.promoted + excluded.promoted,
    settled = cms_outbox_counts.settled + excluded.settled,
    failed = cms_outbox_counts.failed + excluded.failed,
    delivered = cms_outbox_counts.delivered + excluded.delivered
"""

MEND_HEADS = """
INSERT INTO cms_outbox_heads (scope, customer, seq)
SELECT %(scope)s, customer, min(seq) FROM cms_outbox_events AS e
WHERE scope = %(scope)s AND state = 'pending' AND promoted
  AND NOT EXISTS (SELECT 1 FROM cms_outbox_heads AS h WHERE h.scope = e.scope AND h.customer = e.customer)
GROUP BY customer
ON CONFLICT DO NOTHING
"""


def schema_sql() -> str:
    """The SQL that creates the outbox's tables, for a migration tool of your own."""
    return SCHEMA.strip() + "\n"
