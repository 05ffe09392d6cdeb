"""The PostgreSQL backend: the same tables as SQLite's (values as jsonb), claimed with
FOR UPDATE SKIP LOCKED by many workers, woken by LISTEN/NOTIFY. asyncpg is the driver
(bench/pg_drivers.py: about 4x less CPU per batched row than psycopg 3)."""
