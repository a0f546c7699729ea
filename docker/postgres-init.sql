-- One PostgreSQL server, one database and one login role per component:
--   airflow  Airflow metadata database (also the Celery result backend)
--   mlflow   MLflow tracking store and model registry, and (database mlflow_auth) the users,
--            roles and grants of its basic-auth app
--   optuna   Optuna studies shared by tuning workers on different hosts
--
-- The official postgres image runs this file with psql once, when it initialises an empty
-- data directory (mounted into /docker-entrypoint-initdb.d/ by docker-compose.yaml). It does
-- not run again on an existing volume: to change a password later use ALTER ROLE, or remove
-- the postgres-data volume to start over.
--
-- Passwords come from the container's environment (AIRFLOW_DB_PASSWORD, MLFLOW_DB_PASSWORD,
-- OPTUNA_DB_PASSWORD, set by docker-compose.yaml) through psql's \getenv (psql 15 or newer),
-- so that no secret is written in this file. An unset variable stops the initialisation with
-- an error rather than creating a role without a password.

\set ON_ERROR_STOP on

\getenv airflow_password AIRFLOW_DB_PASSWORD
\getenv mlflow_password MLFLOW_DB_PASSWORD
\getenv optuna_password OPTUNA_DB_PASSWORD

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

CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;

CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
-- Kept apart from the tracking store: it holds password hashes, and is backed up and restored
-- on its own. A volume made before it existed needs: CREATE DATABASE mlflow_auth OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;

CREATE ROLE optuna LOGIN PASSWORD :'optuna_password';
CREATE DATABASE optuna OWNER optuna;

-- Since PostgreSQL 15 only the database owner may create objects in the public schema; make
-- that explicit so each role can create its tables whatever the server's defaults.
\connect airflow
GRANT ALL ON SCHEMA public TO airflow;
\connect mlflow
GRANT ALL ON SCHEMA public TO mlflow;
\connect mlflow_auth
GRANT ALL ON SCHEMA public TO mlflow;
\connect optuna
GRANT ALL ON SCHEMA public TO optuna;
