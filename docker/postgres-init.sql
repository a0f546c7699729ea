-- One PostgreSQL server, one database and one login role per component:
--   airflow  Airflow metadata database (also the Celery result backend)
--   mlflow   MLflow tracking store and model registry, and (database mlflow_auth) the users,
--            roles and grants of its basic-auth app
--   optuna   Optuna studies shared by tuning workers on different hosts
--
-- Two callers, one file:
-- - the official postgres image runs it with psql once, when it initialises an empty data
--   directory (mounted into /docker-entrypoint-initdb.d/ by docker-compose.yaml);
-- - `visionops stack up` (`make stack`) runs it with psql against the local server on every start.
-- So it is idempotent: a missing role or database is created, an existing one kept, and the
-- passwords are set to the ones given (rotating a secret in .env takes effect on the next start).
--
-- Passwords come from the environment (AIRFLOW_DB_PASSWORD, MLFLOW_DB_PASSWORD,
-- OPTUNA_DB_PASSWORD) through psql's \getenv (psql 15 or newer), so that no secret is written in
-- this file. An unset variable stops with an error rather than creating a role without a password.
-- VISIONOPS_DB_PREFIX (empty in compose) is put before every role and database name, so that a
-- process stack on a shared server keeps to names of its own (`make stack`: visionops_).

\set ON_ERROR_STOP on

\getenv airflow_password AIRFLOW_DB_PASSWORD
\getenv mlflow_password MLFLOW_DB_PASSWORD
\getenv optuna_password OPTUNA_DB_PASSWORD
\getenv prefix VISIONOPS_DB_PREFIX

\if :{?airflow_password}
\else
\echo 'postgres-init.sql: AIRFLOW_DB_PASSWORD is not set'
SELECT 1 / 0 AS airflow_db_password_is_not_set;
\endif
\if :{?mlflow_password}
\else
\echo 'postgres-init.sql: MLFLOW_DB_PASSWORD is not set'
SELECT 1 / 0 AS mlflow_db_password_is_not_set;
\endif
\if :{?optuna_password}
\else
\echo 'postgres-init.sql: OPTUNA_DB_PASSWORD is not set'
SELECT 1 / 0 AS optuna_db_password_is_not_set;
\endif
\if :{?prefix}
\else
\set prefix ''
\endif

-- psql's \set joins its arguments: the prefixed names.
\set airflow :prefix airflow
\set mlflow :prefix mlflow
\set mlflow_auth :prefix mlflow_auth
\set optuna :prefix optuna

-- CREATE ROLE/DATABASE have no IF NOT EXISTS: each statement is made only when the name is free,
-- and run by \gexec; format() quotes the names and passwords.
SELECT format('CREATE ROLE %I LOGIN', r) FROM unnest(ARRAY[:'airflow', :'mlflow', :'optuna']) AS r
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'airflow', :'airflow_password') \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'mlflow', :'mlflow_password') \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'optuna', :'optuna_password') \gexec

-- mlflow_auth is kept apart from the tracking store: it holds password hashes, and is backed up
-- and restored on its own.
SELECT format('CREATE DATABASE %I OWNER %I', d, o)
FROM (VALUES (:'airflow', :'airflow'), (:'mlflow', :'mlflow'), (:'mlflow_auth', :'mlflow'),
             (:'optuna', :'optuna')) AS wanted(d, o)
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = d) \gexec

-- Since PostgreSQL 15 only the database owner may create objects in the public schema; make
-- that explicit so each role can create its tables whatever the server's defaults.
\connect :airflow
SELECT format('GRANT ALL ON SCHEMA public TO %I', :'airflow') \gexec
\connect :mlflow
SELECT format('GRANT ALL ON SCHEMA public TO %I', :'mlflow') \gexec
\connect :mlflow_auth
SELECT format('GRANT ALL ON SCHEMA public TO %I', :'mlflow') \gexec
\connect :optuna
SELECT format('GRANT ALL ON SCHEMA public TO %I', :'optuna') \gexec
