"""Airflow plugin: a cron schedule that never catches up on a time it missed.

``CronTriggerTimetable`` with ``catchup=False`` still starts the latest missed run: unpausing a DAG
whose midnight passed while it was paused (or that was never unpaused, since ``start_date``) creates
that midnight's run at once. With ``max_active_runs=1`` it runs first, and a run a person triggered
with "Unpause on trigger" (ticked by default in the trigger form) waits behind a run nobody asked
for. Its ``run_immediately`` does not help: it only applies to a DAG with no ``start_date`` and no
run yet, and Airflow 3.3 treats ``False`` like ``None`` (10% of the interval, at least 5 minutes).

``CronWithoutCatchUp`` schedules the next cron time after now, except a time passed within
``run_immediately`` (a timedelta; default ``GRACE``, 30 minutes, or ``VISIONOPS_SCHEDULE_GRACE_MIN``
when the DAG is parsed): the scheduler picks up its own midnight run a few seconds late, but a DAG
unpaused in the morning waits for the next midnight. With ``catchup=True`` it behaves as
``CronTriggerTimetable``. The class is registered below, so that the scheduler can deserialize it.
"""

from __future__ import annotations

import datetime
import os
from typing import TYPE_CHECKING

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk.timezone import coerce_datetime
from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction
from airflow.timetables.trigger import CronTriggerTimetable

if TYPE_CHECKING:
    from pendulum.tz.timezone import FixedTimezone, Timezone

# How late a scheduled time may still start its run: the scheduler and the DAG processor's refresh of
# the next run (every parse) are seconds late; a paused DAG's morning is hours. A deployment that
# wants the latest missed day run on unpausing (as Airflow's own catchup=False does) sets 1440.
GRACE = datetime.timedelta(minutes=float(os.environ.get("VISIONOPS_SCHEDULE_GRACE_MIN", "30")))


class CronWithoutCatchUp(CronTriggerTimetable):
    """``CronTriggerTimetable`` whose ``catchup=False`` skips every missed time, the latest included."""

    def __init__(
        self,
        cron: str,
        *,
        timezone: str | Timezone | FixedTimezone,
        interval: datetime.timedelta = datetime.timedelta(),
        run_immediately: bool | datetime.timedelta = GRACE,
    ) -> None:
        if not isinstance(run_immediately, datetime.timedelta):
            raise ValueError("run_immediately must be a timedelta: how late a run may still start")
        super().__init__(
            cron, timezone=timezone, interval=interval, run_immediately=run_immediately
        )
        if self.description:
            self.description += " (a time missed while paused does not run later)"

    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        restriction: TimeRestriction,
    ) -> DagRunInfo | None:
        if restriction.catchup:
            return super().next_dagrun_info(
                last_automated_data_interval=last_automated_data_interval,
                restriction=restriction,
            )
        # The core class puts the latest past time among the candidates; _calc_first_run() is that
        # time only when it passed within run_immediately, else the next one.
        candidates = [self._calc_first_run()]
        if last_automated_data_interval is not None:
            candidates.append(self._get_next(last_automated_data_interval.end))
        if restriction.earliest is not None:
            candidates.append(self._align_to_next(restriction.earliest))
        next_start_time = max(candidates)
        if restriction.latest is not None and restriction.latest < next_start_time:
            return None
        return DagRunInfo.interval(
            coerce_datetime(next_start_time - self._interval), next_start_time
        )


class VisionopsSchedulePlugin(AirflowPlugin):
    name = "visionops_schedule"
    timetables = [CronWithoutCatchUp]
