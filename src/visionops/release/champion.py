"""Moving ``champion`` safely: one promotion at a time, decide again if it changed, smoke test, roll back.

Race safety. MLflow's registry has no compare-and-set on aliases, so two pipeline runs that finish
together could both read "champion is v1" and both move it. Promotions of one registered model
therefore hold a lock around "read champion -> decide again if it changed -> move alias -> smoke
test":

* SQLite store: a file lock (``filelock``) beside the database file; it serialises processes on
  this machine, which are the only ones that can open that database.
* PostgreSQL store: a session-level advisory lock (``pg_advisory_lock``) in the same database, so
  it holds across hosts.
* An MLflow tracking server (HTTP): MLflow's API has no lock, so the lock lives in a PostgreSQL
  database that every promoting process can reach, named by ``VISIONOPS_PROMOTION_LOCK_URL``
  (the multi-service setup points it at its PostgreSQL). Without it a promotion against a
  server is refused before anything moves: a guarantee that holds only sometimes is not one.

``VISIONOPS_PROMOTION_LOCK_URL`` (a ``postgresql://`` URL) also overrides the lock for the other
stores, e.g. to serialise promotions from several hosts that share one SQLite file over a network.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.tracking import MlflowClient

import mlflow
from visionops.core import tracking
from visionops.core.constants import CHAMPION, PREVIOUS_CHAMPION
from visionops.core.constants import TAG_PREFIX as T
from visionops.core.contracts import GateDecision
from visionops.core.errors import InputError
from visionops.release import registry

log = logging.getLogger("visionops")
HISTORY_ALIASES = (CHAMPION, PREVIOUS_CHAMPION)


class SmokeTestError(RuntimeError):
    """The promoted champion did not load or predict in a fresh process; the aliases were restored."""


@dataclass(frozen=True)
class PromotionResult:
    promoted: bool
    version: str
    replaced: str | None = None
    rechecked_against: str | None = None
    reasons: list[str] = field(default_factory=list)
    lock: str = "none"


def _lock_key(name: str) -> int:
    # A stable signed 63-bit key per registered model (pg advisory locks take a bigint).
    return int(hashlib.sha256(f"visionops-promote:{name}".encode()).hexdigest()[:15], 16)


LOCK_URL_ENV = "VISIONOPS_PROMOTION_LOCK_URL"


@contextmanager
def _advisory_lock(url: str, name: str, timeout_s: float) -> Iterator[None]:
    """A session-level PostgreSQL advisory lock keyed by the model name, held while the block runs."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    key = _lock_key(name)
    try:
        with engine.connect() as conn:
            deadline = time.monotonic() + timeout_s
            while not conn.execute(
                sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}
            ).scalar():
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"promotion lock of {name!r} not acquired in {timeout_s:.0f} s"
                    )
                time.sleep(0.2)
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
    finally:
        engine.dispose()


def _is_postgres(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


@contextmanager
def promotion_lock(name: str, timeout_s: float = 600.0) -> Iterator[str]:
    """Hold the promotion lock of ``name`` for the current registry; yields the kind of lock held.

    Raises InputError, before anything moves, when no lock can be had (an MLflow server without
    ``VISIONOPS_PROMOTION_LOCK_URL``, or a lock URL that is not PostgreSQL).
    """
    import os

    uri = mlflow.get_registry_uri()
    lock_url = os.environ.get(LOCK_URL_ENV, "").strip()
    if lock_url:
        if not _is_postgres(lock_url):
            raise InputError(
                f"{LOCK_URL_ENV} must be a postgresql:// URL (an advisory lock is taken there), "
                f"got {lock_url.split('@')[-1]!r}"
            )
        with _advisory_lock(lock_url, name, timeout_s):
            yield "postgres-advisory"
    elif uri.startswith("sqlite:///"):
        from filelock import FileLock

        db = Path(uri.removeprefix("sqlite:///"))
        lock_file = db.with_name(
            f"{db.name}.promote-{hashlib.sha256(name.encode()).hexdigest()[:12]}.lock"
        )
        with FileLock(str(lock_file), timeout=timeout_s):
            yield "file"
    elif _is_postgres(uri):
        with _advisory_lock(uri, name, timeout_s):
            yield "postgres-advisory"
    else:
        raise InputError(
            f"registry {uri}: promotions of {name!r} need a lock that MLflow's API does not offer; "
            f"set {LOCK_URL_ENV} to a PostgreSQL database every promoting process can reach "
            f"(the multi-service setup uses its own PostgreSQL)"
        )


def alias_snapshot(name: str) -> dict[str, str | None]:
    """Where the history aliases point now (to restore them if a promotion must be undone)."""
    return {
        alias: (str(mv.version) if (mv := registry.get_alias(name, alias)) else None)
        for alias in HISTORY_ALIASES
    }


def restore_aliases(name: str, snapshot: dict[str, str | None]) -> None:
    client = MlflowClient()
    for alias, version in snapshot.items():
        if version is None:
            try:
                client.delete_registered_model_alias(name, alias)
            except mlflow.exceptions.MlflowException:
                pass
        else:
            client.set_registered_model_alias(name, alias, version)


def promote_safely(
    name: str,
    version: str,
    *,
    evaluated_against: str | None,
    recheck: Callable[[str], GateDecision],
    run_key: str,
    smoke_test: Callable[[], None] | None = None,
    tags: dict[str, str] | None = None,
) -> PromotionResult:
    """Under the lock: re-read the champion, decide again if it is not the one evaluated against, move it.

    ``recheck(current_version)`` scores the candidate against the champion now in service and returns
    the gate's decision. ``smoke_test`` runs after the move, still under the lock; if it raises, the
    aliases go back to where they were and SmokeTestError is raised.
    """
    client = MlflowClient()
    with promotion_lock(name) as lock:
        snapshot = alias_snapshot(name)
        current = snapshot[CHAMPION]
        rechecked = None
        if current is not None and current not in (str(evaluated_against or ""), str(version)):
            rechecked = current
            decision = recheck(current)
            client.set_model_version_tag(name, version, f"{T}rechecked_against", current)
            if not decision.passed:
                client.set_model_version_tag(name, version, f"{T}gate", "rejected")
                client.set_model_version_tag(
                    name, version, f"{T}gate_reasons", tracking.reasons_text(decision.reasons)
                )
                log.warning(
                    "promote: champion changed to v%s since evaluation; %s",
                    current,
                    decision.summary(),
                )
                return PromotionResult(False, str(version), None, current, decision.reasons, lock)
        replaced = move_champion(name, str(version), snapshot, run_key, tags, smoke_test)
    return PromotionResult(True, str(version), replaced, rechecked, [], lock)


def move_champion(
    name: str,
    version: str,
    snapshot: dict[str, str | None],
    run_key: str,
    tags: dict[str, str] | None,
    smoke_test: Callable[[], None] | None,
) -> str | None:
    """The one place ``champion`` moves (promotion, approval, rollback), called under the promotion
    lock once the caller's rule allowed it: move the aliases, tag the version, run the smoke test;
    if the smoke test fails, put the aliases back as ``snapshot`` had them and raise
    SmokeTestError. Returns the replaced version."""
    client = MlflowClient()
    history = client.get_registered_model(name).tags.get(f"{T}champion_history")
    replaced = registry.promote_to_champion(name, version, run_key=run_key)
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, version, key, value)
    if smoke_test is not None:
        try:
            smoke_test()
        except Exception as exc:
            restore_aliases(name, snapshot)
            # A version that failed its smoke test was never champion: not a rollback target.
            if history is None:
                client.delete_registered_model_tag(name, f"{T}champion_history")
            else:
                client.set_registered_model_tag(name, f"{T}champion_history", history)
            client.set_model_version_tag(
                name, version, f"{T}smoke_test", tracking.clip(f"failed: {exc}")
            )
            raise SmokeTestError(
                f"{name} v{version} failed the smoke test after promotion; champion "
                f"restored to v{snapshot[CHAMPION]}: {exc}"
            ) from exc
        client.set_model_version_tag(name, version, f"{T}smoke_test", "passed")
    return replaced


def champion_history(name: str) -> list[str]:
    """Every version that has been champion of ``name``, oldest first (repeats kept)."""
    history = MlflowClient().get_registered_model(name).tags.get(f"{T}champion_history", "")
    return [v for v in history.split(",") if v]


def rollback_refusal(name: str, version: str) -> str | None:
    """Why a rollback may not make ``version`` champion, or None where it may.

    A rollback goes back to a model that was trusted before: one that has been champion, or one
    whose gate passed. Anything else (rejected by its gate, never evaluated) is a promotion in
    disguise, and needs ``--force --reason``."""
    if str(version) in champion_history(name):
        return None
    gate = MlflowClient().get_model_version(name, version).tags.get(f"{T}gate")
    if gate == "passed":
        return None
    return (
        f"{name} v{version} has never been champion and "
        + (f"its gate said {gate!r}" if gate else "was never through the gate")
        + "; a rollback goes only to a former champion or a version that passed its gate "
        "(--force --reason WHY overrides, recorded on the version)"
    )


def rollback(
    name: str,
    to: str | None = None,
    *,
    reason: str | None = None,
    force: bool = False,
    smoke_test: Callable[[], None] | None = None,
) -> tuple[str, str]:
    """Move ``champion`` back to ``previous_champion`` (or to version ``to``); returns (from, to).

    The target must have been champion before or have passed its gate (``rollback_refusal``),
    unless ``force`` with a ``reason``, recorded on the version. The smoke test always runs (by
    default the version's own, ``version_gate.smoke_for_version``); if it fails, nothing moved."""
    if force and not (reason or "").strip():
        raise InputError(f"{name}: a forced rollback needs a reason (--reason WHY)")
    with promotion_lock(name):
        snapshot = alias_snapshot(name)
        current = snapshot[CHAMPION]
        target = str(to) if to else snapshot[PREVIOUS_CHAMPION]
        if target is None:
            raise InputError(
                f"{name}: no previous_champion alias to roll back to; name a version with --to"
            )
        if current is None:
            raise InputError(f"{name}: there is no champion to roll back")
        MlflowClient().get_model_version(name, target)  # fails clearly if it does not exist
        refusal = rollback_refusal(name, target)
        if refusal is not None and not force:
            raise InputError(refusal)
        tags = {f"{T}rolled_back_from": current}
        if refusal is not None:
            tags |= {f"{T}forced_rollback": "true", f"{T}force_reason": str(reason)}
        if smoke_test is None:
            from visionops.release.version_gate import smoke_for_version

            smoke_test = smoke_for_version(name, target)
        why = reason or "manual rollback"
        move_champion(name, target, snapshot, f"rollback:{why}", tags, smoke_test)
        client = MlflowClient()
        client.set_model_version_tag(name, current, f"{T}rolled_back_to", target)
        client.set_registered_model_tag(
            name, f"{T}last_rollback", f"v{current} -> v{target} ({why})"
        )
    return current, target
