"""A deliberately simple pure-Python reference for WAU, MAU, stickiness and retention (issue #28).

It shares no code with :mod:`bubbly_metrics.engagement`: the input is a set of
``(date, app, user_id)`` of active users, and every figure is counted with sets and loops, day
by day, the way the definitions read.  Slow and obvious on purpose.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

Triple = tuple[dt.date, str, str]
ONE_DAY = dt.timedelta(days=1)


def days_between(first: dt.date, last: dt.date) -> list[dt.date]:
    out = []
    day = first
    while day <= last:
        out.append(day)
        day += ONE_DAY
    return out


def engagement(
    active: Iterable[Triple],
    first: dt.date,
    last: dt.date,
    *,
    week_days: int = 7,
    month_days: int = 28,
    partial_windows: bool = False,
) -> list[dict[str, object]]:
    """One dict per (date, app) for every day first..last and every app with an active user."""
    users: dict[tuple[dt.date, str], set[str]] = {}
    for day, app, user in active:
        if first <= day <= last:
            users.setdefault((day, app), set()).add(user)
    apps = sorted({app for _, app in users})
    rows = []
    for day in days_between(first, last):
        for app in apps:
            counts: dict[int, int | None] = {}
            for length in (week_days, month_days):
                window_start = day - dt.timedelta(days=length - 1)
                if window_start < first and not partial_windows:
                    counts[length] = None
                    continue
                seen: set[str] = set()
                for back in range(length):
                    seen |= users.get((day - dt.timedelta(days=back), app), set())
                counts[length] = len(seen)
            dau = len(users.get((day, app), set()))
            mau = counts[month_days]
            rows.append(
                {
                    "date": day,
                    "app": app,
                    "active_users": dau,
                    "weekly_active_users": counts[week_days],
                    "monthly_active_users": mau,
                    "stickiness": dau / mau if mau else None,
                }
            )
    return rows


def retention(
    active: Iterable[Triple],
    first: dt.date,
    last: dt.date,
    *,
    days: Iterable[int] = (1, 7, 30),
    history_days: int = 28,
) -> list[dict[str, object]]:
    """One dict per (cohort day, app, N) that can be observed, cohorts after ``history_days`` of data."""
    active = {(d, a, u) for d, a, u in active if first <= d <= last}
    first_seen: dict[tuple[str, str], dt.date] = {}
    for day, app, user in sorted(active):
        if (app, user) not in first_seen:
            first_seen[(app, user)] = day
    cohorts: dict[tuple[dt.date, str], set[str]] = {}
    for (app, user), day in first_seen.items():
        cohorts.setdefault((day, app), set()).add(user)
    rows = []
    for (day, app), members in sorted(cohorts.items()):
        if day < first + dt.timedelta(days=history_days):
            continue
        for n in sorted(set(days)):
            target = day + dt.timedelta(days=n)
            if target > last:
                continue
            retained = 0
            for user in members:
                if (target, app, user) in active:
                    retained += 1
            rows.append(
                {
                    "cohort_date": day,
                    "app": app,
                    "day_n": n,
                    "cohort_size": len(members),
                    "retained": retained,
                    "rate": retained / len(members),
                }
            )
    return rows


def first_holder(parts: list[tuple[set[dt.date], set[Triple]]]) -> set[Triple]:
    """The active triples of parts that each hold some days: every day from the first part holding it."""
    taken: set[dt.date] = set()
    out: set[Triple] = set()
    for held, active in parts:
        for day, app, user in active:
            if day not in taken:
                out.add((day, app, user))
        taken |= held
    return out
