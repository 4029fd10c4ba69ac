"""Synthetic main-table items: the realistic mix of kinds, apps, users, timestamps and malformed records."""

from __future__ import annotations

import datetime as dt
import random
import string
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from bubbly_metrics._time import iso

#: ``Sudoku`` beside ``sudoku`` on purpose: apps are case-sensitive as stored, so a table holding
#: both has two apps, and every output shows them apart (a real table can hold such a pair).
DEFAULT_APPS: tuple[str, ...] = ("sudoku", "chess", "wordsearch", "Sudoku")


_ALPHABET = string.ascii_letters + string.digits + "_-"


# Relative weights of record kinds in a realistic table.  Sessions dominate; the noise kinds
# (users, invites, puzzles, books) are real rows the metrics must ignore.
_KIND_WEIGHTS = {
    "session": 52,
    "party": 7,
    "member": 11,
    "user": 8,
    "invite": 6,
    "puzzle": 10,
    "book": 6,
}


# Malformed shapes the library must count and skip (docs/rules.md#records), with their expected reason.
MALFORMED_SHAPES: tuple[str, ...] = (
    "model_id_two_segments",
    "model_id_empty_app",
    "owner_without_user_prefix",
    "owner_empty_user",
    "member_owner_two_segments",
    "member_owner_not_a_party",
    "timestamp_missing",
    "timestamp_garbage_string",
    "timestamp_wrong_type",
    "timestamp_null",
)


def _nanoid(rng: random.Random, n: int = 12) -> str:
    return "".join(rng.choices(_ALPHABET, k=n))


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float | int | str) -> dict[str, str]:
    return {"N": str(value)}


def _payload(rng: random.Random, kind: str) -> dict[str, Any]:
    """Return a nested ``M`` payload of realistic size (most of each line's bytes).

    Payloads deliberately contain nested attributes named like the top-level ones
    (``updatedAt``, ``owner``, ``modelId``): a reader that does not respect nesting would
    pick them up.
    """
    board = "".join(rng.choices("0123456789", k=81))
    fields: dict[str, Any] = {
        "board": _s(board),
        "difficulty": _s(rng.choice(["easy", "medium", "hard", "expert"])),
        "moves": {"L": [_n(rng.randrange(1000)) for _ in range(rng.randrange(4, 16))]},
        "settings": {
            "M": {
                "sound": {"BOOL": rng.random() < 0.5},
                "theme": _s(rng.choice(["light", "dark", "sepia"])),
                "hints": _n(rng.randrange(5)),
                "lastOpened": {"M": {"updatedAt": _n(rng.randrange(1_600_000_000, 1_800_000_000))}},
            }
        },
        "tags": {"SS": sorted({_nanoid(rng, 6) for _ in range(3)})},
        "note": {"NULL": True},
    }
    if kind in ("party", "invite"):
        fields["invitee"] = {"M": {"owner": _s("user-" + _nanoid(rng)), "modelId": _s("x-y-z")}}
    return {"M": fields}


def _iso(ts: int) -> str:
    return iso(dt.datetime.fromtimestamp(ts, dt.UTC), timespec="milliseconds")


def generate_items(
    *,
    n_items: int,
    start: str | dt.date = "2025-01-17",
    days: int = 60,
    apps: Sequence[str] = DEFAULT_APPS,
    n_users: int | None = None,
    seed: int = 0,
    malformed_fraction: float = 0.01,
    iso_fraction: float = 0.01,
    population_seed: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield ``n_items`` main-table items as DynamoDB-JSON attribute maps.

    The mix is realistic: sessions, parties and members spread over ``days`` days from
    ``start`` and over ``apps`` with a skewed user population; noise kinds the metrics ignore;
    timestamps mostly as N epoch seconds (some fractional, a few in milliseconds by mistake),
    ``iso_fraction`` as ISO-8601 strings; and ``malformed_fraction`` malformed records of
    every shape in :data:`MALFORMED_SHAPES`.

    Parameters
    ----------
    n_items
        Number of items to yield.
    start, days
        The UTC date range activity falls in.
    apps
        App names; the first is the busiest.
    n_users
        Size of the user population (default: ``max(20, n_items // 15)``).
    seed
        Random seed: the same arguments give the same items.
    population_seed
        Seed of the user population (default: ``seed``).  Calls with different ``seed`` but
        the same ``population_seed`` and ``n_users`` draw from the same users, which is how
        :func:`write_generated_export` generates data files in parallel.
    malformed_fraction, iso_fraction
        Share of malformed records and of ISO-string timestamps.
    """
    if n_items < 0:
        raise ValueError(f"n_items must be >= 0, got {n_items}")
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    if not apps:
        raise ValueError("apps must name at least one app")
    rng = random.Random(seed)
    start_date = dt.date.fromisoformat(str(start))
    t0 = int(dt.datetime(start_date.year, start_date.month, start_date.day, tzinfo=dt.UTC).timestamp())
    span = days * 86_400
    # Without population_seed the users come from the main stream, as before that option
    # existed: the same seed keeps giving the same items (the shipped sample depends on it).
    pop_rng = rng if population_seed is None else random.Random(population_seed)
    users = [_nanoid(pop_rng) for _ in range(n_users or max(20, n_items // 15))]
    # Zipf-ish activity: a few heavy players, a long tail.
    user_weights = [1.0 / (i + 1) ** 0.8 for i in range(len(users))]
    app_weights = [1.0 / (i + 1) for i in range(len(apps))]
    kinds = list(_KIND_WEIGHTS)
    kind_weights = list(_KIND_WEIGHTS.values())
    parties: list[tuple[str, str]] = []
    batch = 4096
    user_pool = rng.choices(users, weights=user_weights, k=batch)
    for i in range(n_items):
        if i % batch == 0 and i:
            user_pool = rng.choices(users, weights=user_weights, k=batch)
        user = user_pool[i % batch]
        app = rng.choices(apps, weights=app_weights)[0]
        kind = rng.choices(kinds, weights=kind_weights)[0]
        created = t0 + rng.randrange(span)
        updated = min(created + rng.randrange(3 * 3600), t0 + span - 1)
        item = _keys(rng, kind, app, user, parties)
        _stamp(rng, item, created, updated, iso_fraction)
        if rng.random() < 0.3:
            item["expiresAt"] = _n(updated + 90 * 86_400)
        item["payload"] = _payload(rng, kind)
        if rng.random() < malformed_fraction:
            _make_malformed(item, rng.choice(MALFORMED_SHAPES), app, user)
        # Attribute order in real exports is not stable; do not let readers rely on it.
        keys = list(item)
        rng.shuffle(keys)
        yield {k: item[k] for k in keys}


def _keys(rng: random.Random, kind: str, app: str, user: str, parties: list[tuple[str, str]]) -> dict[str, Any]:
    """A new item's keys for its kind; a party joins ``parties``, a member joins one of them."""
    if kind == "session":
        return {"modelId": _s(f"session-{app}-{_nanoid(rng)}"), "owner": _s(f"user-{user}")}
    if kind == "party":
        pid = _nanoid(rng)
        parties.append((app, pid))
        return {"modelId": _s(f"party-{app}-{pid}"), "owner": _s(f"user-{user}")}
    if kind == "member":
        papp, pid = parties[rng.randrange(len(parties))] if parties else (app, _nanoid(rng))
        return {"modelId": _s(f"member-user-{user}"), "owner": _s(f"party-{papp}-{pid}")}
    if kind == "user":
        return {"modelId": _s(f"user-{user}"), "owner": _s(f"user-{user}")}
    if kind == "invite":
        return {"modelId": _s(f"invite-{app}-{_nanoid(rng)}"), "owner": _s(f"user-{user}")}
    if kind == "puzzle":
        return {"modelId": _s(f"sudoku-{_nanoid(rng)}"), "owner": _s("system")}
    return {"modelId": _s(f"sudoku-book-{_nanoid(rng)}"), "owner": _s("system")}


def _stamp(rng: random.Random, item: dict[str, Any], created: int, updated: int, iso_fraction: float) -> None:
    """Set ``createdAt``/``updatedAt``: mostly N epoch seconds, some fractional, ISO strings or milliseconds."""
    r = rng.random()
    if r < iso_fraction:
        item["createdAt"] = _s(_iso(created))
        item["updatedAt"] = _s(_iso(updated))
    elif r < iso_fraction + 0.02:
        item["createdAt"] = _n(f"{created}.{rng.randrange(1000):03d}")
        item["updatedAt"] = _n(f"{updated}.{rng.randrange(1000):03d}")
    elif r < iso_fraction + 0.025:
        item["createdAt"] = _n(created * 1000)  # milliseconds by mistake: out of range
        item["updatedAt"] = _n(updated * 1000)
    else:
        item["createdAt"] = _n(created)
        item["updatedAt"] = _n(updated)


def _make_malformed(item: dict[str, Any], shape: str, app: str, user: str) -> None:
    if shape == "model_id_two_segments":
        item["modelId"] = _s(f"session-{app}")
    elif shape == "model_id_empty_app":
        item["modelId"] = _s("party--abc")
    elif shape == "owner_without_user_prefix":
        item["modelId"] = _s(f"session-{app}-x1")
        item["owner"] = _s(f"User-{user}")
    elif shape == "owner_empty_user":
        item["modelId"] = _s(f"party-{app}-x2")
        item["owner"] = _s("user-")
    elif shape == "member_owner_two_segments":
        item["modelId"] = _s(f"member-user-{user}")
        item["owner"] = _s(f"party-{app}")
    elif shape == "member_owner_not_a_party":
        # A user key as a member's owner: it has three segments, but its second is no app.
        item["modelId"] = _s(f"member-user-{user}")
        item["owner"] = _s(f"user-{uuid.uuid5(uuid.NAMESPACE_URL, user)}")
    else:
        item["modelId"] = _s(f"session-{app}-x3")
        item["owner"] = _s(f"user-{user}")
        if shape == "timestamp_missing":
            item.pop("updatedAt", None)
        elif shape == "timestamp_garbage_string":
            item["updatedAt"] = _s("yesterday")
        elif shape == "timestamp_wrong_type":
            item["updatedAt"] = {"B": "MTIz"}
        else:
            item["updatedAt"] = {"NULL": True}


def generate_incremental_records(
    items: Iterable[dict[str, Any]],
    *,
    seed: int = 0,
    update_fraction: float = 0.2,
    delete_fraction: float = 0.1,
    window_end_micros: int = 0,
) -> Iterator[dict[str, Any]]:
    """Turn items into incremental-export records (inserts, updates and deletes).

    Inserts are ``Keys`` + ``NewImage``; updates add an ``OldImage`` (the item before the
    change); deletes carry ``Keys`` + ``OldImage`` only, exactly as AWS writes them.
    """
    rng = random.Random(seed)
    for item in items:
        keys = {k: item[k] for k in ("modelId", "owner") if k in item}
        record: dict[str, Any] = {
            "Metadata": {"WriteTimestampMicros": _n(window_end_micros - rng.randrange(86_400_000_000))},
            "Keys": keys,
        }
        r = rng.random()
        if r < delete_fraction:
            record["OldImage"] = item
        elif r < delete_fraction + update_fraction:
            old = dict(item)
            old["payload"] = {"M": {"stale": _s("yes")}}
            record["OldImage"] = old
            record["NewImage"] = item
        else:
            record["NewImage"] = item
        yield record
