#!/usr/bin/env python3
"""DuckDB, the batch engine a user would reach for, on kappa's aggregates (issue 21,
item 4). scripts/bench runs it with the virtual environment it keeps in target/ (DuckDB from
PyPI, never installed system-wide).

Usage: bench-duckdb.py EVENTS.jsonl RUNS [THREADS]

Reads the JSON lines kappa's bench reads (the same events as its log) and computes, per
1-minute and 1-hour tumbling window, what kappa computes: sales by category (purchases,
units, revenue), the top 10 products by units and by revenue, events by type, the top 10
searches (queries lower-cased and trimmed). Duplicates (the same event_id) count once;
malformed lines are skipped. Batch semantics: late events are counted (kappa sets them
aside), which only makes DuckDB's work larger by 0.1 % of the events.

Prints one line per run and the median: "duckdb V: N records (M distinct valid events) in
S s: R events/s", R over the records read, as kappa counts them.
"""
import statistics
import sys
import time

import duckdb

path, runs = sys.argv[1], int(sys.argv[2])
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2

QUERIES = [
    # Read, type, dedup: every aggregate starts from this table.
    f"""CREATE OR REPLACE TEMP TABLE ev AS
        SELECT DISTINCT ON (event_id) event_id, event_type, TRY_CAST(ts AS TIMESTAMPTZ) AS ts,
               product_id, category, TRY_CAST(price AS DECIMAL(18, 2)) AS price,
               quantity, lower(trim(query)) AS query
        FROM read_json('{path}', format = 'newline_delimited', ignore_errors = true,
             columns = {{event_id: 'VARCHAR', event_type: 'VARCHAR', ts: 'VARCHAR',
                        product_id: 'VARCHAR', category: 'VARCHAR', price: 'VARCHAR',
                        quantity: 'BIGINT', query: 'VARCHAR'}})
        WHERE event_id IS NOT NULL AND TRY_CAST(ts AS TIMESTAMPTZ) IS NOT NULL""",
]
for size in ["1 minute", "1 hour"]:
    w = f"time_bucket(INTERVAL '{size}', ts)"
    t = size.replace(" ", "_")
    QUERIES += [
        f"""CREATE OR REPLACE TEMP TABLE sales_{t} AS
            SELECT {w} AS w, category, count(*) AS purchases, sum(quantity) AS units,
                   sum(price * quantity) AS revenue
            FROM ev WHERE event_type = 'purchase' GROUP BY ALL""",
        f"""CREATE OR REPLACE TEMP TABLE products_{t} AS
            SELECT {w} AS w, product_id, sum(quantity) AS units, sum(price * quantity) AS revenue
            FROM ev WHERE event_type = 'purchase' GROUP BY ALL""",
        f"""CREATE OR REPLACE TEMP TABLE top_units_{t} AS
            SELECT * FROM products_{t}
            QUALIFY row_number() OVER (PARTITION BY w ORDER BY units DESC, product_id) <= 10""",
        f"""CREATE OR REPLACE TEMP TABLE top_revenue_{t} AS
            SELECT * FROM products_{t}
            QUALIFY row_number() OVER (PARTITION BY w ORDER BY revenue DESC, product_id) <= 10""",
        f"""CREATE OR REPLACE TEMP TABLE types_{t} AS
            SELECT {w} AS w, event_type, count(*) AS n FROM ev GROUP BY ALL""",
        f"""CREATE OR REPLACE TEMP TABLE searches_{t} AS
            SELECT {w} AS w, query, count(*) AS n FROM ev
            WHERE event_type = 'search' AND query <> '' GROUP BY 1, 2
            QUALIFY row_number() OVER (PARTITION BY w ORDER BY n DESC, query) <= 10""",
    ]

# The rate is over the records read (lines), as kappa's is over the records of its log.
with open(path, "rb") as f:
    records = sum(1 for _ in f)
secs = []
for i in range(runs):
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute("SET TimeZone = 'UTC'")
    start = time.perf_counter()
    for q in QUERIES:
        con.execute(q)
    elapsed = time.perf_counter() - start
    n = con.execute("SELECT count(*) FROM ev").fetchone()[0]
    rows = sum(
        con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ["types_1_minute", "sales_1_hour", "top_units_1_minute", "searches_1_hour"]
    )
    con.close()
    secs.append(elapsed)
    print(f"  duckdb run {i + 1} ({threads} threads): {n} events in {elapsed:.3f} s ({rows} rows in four of its tables)", file=sys.stderr)
median = statistics.median(secs)
print(f"duckdb {duckdb.__version__}: {records} records ({n} distinct valid events) in {median:.3f} s: {records / median:.0f} events/s")
